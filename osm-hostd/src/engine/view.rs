//! A container as readers see it: its state and spec, its snapshots and its last
//! backups, and the newer versions of its base and layers, gathered in one pass so a
//! reader of every property (`GetAll`, `list`) scans `.snapshots` once, reads the backup
//! status once and lists the layer store at most once.

use super::{ContainerInfo, Engine, SnapshotSummary};
use crate::backup::status::ContainerBackup;
use crate::error::EngineResult;
use std::sync::atomic::Ordering;

#[derive(Debug, Clone)]
pub struct ContainerView {
    pub info: ContainerInfo,
    pub snapshots: SnapshotSummary,
    pub backup: ContainerBackup,
    /// A newer version of the pinned base, "" when none.
    pub newer_base: String,
    /// For each pinned layer, a newer version of it or "".
    pub newer_layers: Vec<String>,
}

impl Engine {
    /// One consistent read of a container; `NotFound` when there is none.
    pub fn container_view(&self, name: &str) -> EngineResult<ContainerView> {
        let info = self.container_info(name)?;
        Ok(ContainerView {
            newer_base: self.newer_base(&info.spec.base).unwrap_or_default(),
            newer_layers: self.newer_layers(&info.spec.layers),
            info,
            snapshots: self.snapshot_summary(name),
            backup: self
                .backup_status()
                .containers
                .remove(name)
                .unwrap_or_default(),
        })
    }

    /// Changes with every event the engine emits: a view read at one generation is
    /// still current while the generation is the same.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
