//! Unprivileged containers in the engine: id ranges for new containers and the root
//! filesystem the daemon mounts before each start and unmounts after each stop.

use super::container::{Container, RunState};
use super::Engine;
use crate::error::{EngineError, EngineResult};
use crate::idmap::{IdMap, RootfsMount, SubIds};
use crate::spec::ContainerSpec;
use std::path::PathBuf;

/// An id range handed out for a container being created; released on drop (the
/// published container's spec then holds it).
pub(super) struct PendingIdMap<'a> {
    engine: &'a Engine,
    pub map: IdMap,
}

impl Drop for PendingIdMap<'_> {
    fn drop(&mut self) {
        let mut pending = self.engine.idmaps_pending.lock().expect("idmap lock");
        pending.retain(|m| *m != self.map);
    }
}

impl Engine {
    pub(super) fn subids(&self) -> SubIds {
        SubIds {
            subuid: self.cfg.isolation.subuid_file.clone(),
            subgid: self.cfg.isolation.subgid_file.clone(),
        }
    }

    /// A range no existing container and no create in progress holds.
    pub(super) fn allocate_idmap(&self) -> EngineResult<PendingIdMap<'_>> {
        let mut pending = self.idmaps_pending.lock().expect("idmap lock");
        let mut used: Vec<IdMap> = self
            .all_containers()
            .iter()
            .filter_map(|c| c.info().spec.idmap)
            .collect();
        used.extend(pending.iter().copied());
        let map = self
            .subids()
            .allocate(&used)
            .map_err(EngineError::invalid_state)?;
        pending.push(map);
        Ok(PendingIdMap { engine: self, map })
    }

    /// `<runtime_dir>/rootfs/<name>`: where an unprivileged container's tree is mounted.
    pub(super) fn rootfs_mount_point(&self, name: &str) -> PathBuf {
        self.cfg.runtime_dir.join("rootfs").join(name)
    }

    pub(super) fn rootfs_mount(&self, spec: &ContainerSpec) -> Option<RootfsMount> {
        let map = spec.unprivileged_map()?;
        let dir = self.store.container_dir(&spec.name);
        // Top-most first for overlayfs; the spec keeps them lowest first.
        let mut lowers: Vec<PathBuf> = spec
            .layers
            .iter()
            .rev()
            .map(|l| self.store.layers_dir().join(l))
            .collect();
        lowers.push(self.store.bases_dir().join(&spec.base));
        Some(RootfsMount {
            lowers,
            upper: dir.join("rootfs-layer"),
            work: dir.join("work"),
            merged: self.rootfs_mount_point(&spec.name),
            staging: self.cfg.runtime_dir.join("idmapped").join(&spec.name),
            map,
            lxc_path: self.store.containers_dir(),
        })
    }

    /// Unmounts the tree of a container that is stopped, if it is mounted. A start in
    /// progress (state `starting`, or holding the rootfs lock) keeps its mount.
    pub(super) fn release_rootfs(&self, c: &Container) {
        let _rootfs = c.rootfs.lock().expect("rootfs lock");
        let info = c.info();
        if info.state == RunState::Stopped {
            self.unmount_rootfs(&info.spec);
        }
    }

    /// Unmounts a container's tree, if it is mounted; failures are logged (the next
    /// start replaces a stale mount). The caller holds the container's rootfs lock.
    pub(super) fn unmount_rootfs(&self, spec: &ContainerSpec) {
        let Some(m) = self.rootfs_mount(spec) else {
            return;
        };
        if !m.merged.exists() && !m.staging.exists() {
            return;
        }
        match self.host.unmount_rootfs(&m) {
            Ok(()) => tracing::debug!(container = %spec.name, "root filesystem unmounted"),
            Err(e) => {
                tracing::warn!(container = %spec.name, error = %e, "cannot unmount the root filesystem")
            }
        }
    }
}
