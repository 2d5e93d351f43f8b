//! The one seam for privileged effects: Btrfs subvolumes, LXC and filling base images.
//! The engine's sequencing is tested against a recording fake of this trait; the real
//! implementation is [`RealHost`].

use crate::base::{self, Recipe};
use crate::btrfs;
use crate::error::EngineError;
use crate::lxc::{Lxc, LxcState};
use std::fs::File;
use std::path::Path;
use std::time::Duration;

pub type HostResult<T> = Result<T, EngineError>;

pub trait HostOps: Send + Sync + 'static {
    fn create_subvolume(&self, path: &Path) -> HostResult<()>;
    fn snapshot(&self, src: &Path, dst: &Path, readonly: bool) -> HostResult<()>;
    /// Deletes a subvolume and every subvolume nested in it.
    fn delete_subvolume(&self, path: &Path) -> HostResult<()>;
    fn set_readonly(&self, path: &Path, readonly: bool) -> HostResult<()>;
    fn is_subvolume(&self, path: &Path) -> bool;

    /// Starts a container; returns its state afterwards (running, with init's pid).
    fn lxc_start(&self, name: &str) -> HostResult<LxcState>;
    fn lxc_stop(&self, name: &str, timeout: Duration, force: bool) -> HostResult<()>;
    fn lxc_state(&self, name: &str) -> HostResult<LxcState>;
    /// Addresses inside a running container, given its init's pid.
    fn lxc_addresses(&self, init_pid: u32) -> Vec<String>;
    fn bridge_exists(&self, bridge: &str) -> bool;
    /// Mounts an unprivileged container's root filesystem (see [`crate::idmap`]).
    fn mount_rootfs(&self, m: &crate::idmap::RootfsMount) -> HostResult<()>;
    /// Unmounts it again; nothing mounted is not an error.
    fn unmount_rootfs(&self, m: &crate::idmap::RootfsMount) -> HostResult<()>;

    /// Fills the empty directory `dest` from a recipe (debootstrap, or the cache).
    fn build_rootfs(
        &self,
        recipe: &Recipe,
        dest: &Path,
        cache_dir: &Path,
        progress: &mut dyn FnMut(f64, &str),
    ) -> HostResult<()>;
    /// Checks and extracts a root filesystem archive into the empty directory `dest`.
    fn import_rootfs(
        &self,
        archive: &mut File,
        dest: &Path,
        progress: &mut dyn FnMut(f64),
    ) -> HostResult<()>;
    /// Fills the empty upper `dirs.upper` with a layer built from `recipe` over
    /// `dirs.lowers` (or from `cache_dir/<key>.tar.zst`).
    fn build_layer(
        &self,
        recipe: &crate::layer::LayerRecipe,
        key: &str,
        dirs: &crate::layer::BuildDirs<'_>,
        cache_dir: &Path,
        progress: &mut dyn FnMut(f64, &str),
    ) -> HostResult<()> {
        let _ = (recipe, key, dirs, cache_dir, progress);
        Err(EngineError::failed(
            "building layers is not supported by this host".into(),
        ))
    }
}

/// The real host: ioctls for Btrfs, the `lxc-*` tools for containers.
pub struct RealHost {
    lxc: Lxc,
}

impl RealHost {
    pub fn new(lxc: Lxc) -> RealHost {
        RealHost { lxc }
    }
}

fn btrfs_err(e: btrfs::BtrfsError) -> EngineError {
    EngineError::from(e)
}

fn lxc_err(e: crate::lxc::LxcError) -> EngineError {
    EngineError::from(e)
}

fn base_err(e: base::BaseError) -> EngineError {
    EngineError::from(e)
}

impl HostOps for RealHost {
    fn create_subvolume(&self, path: &Path) -> HostResult<()> {
        btrfs::create_subvolume(path).map_err(btrfs_err)
    }
    fn snapshot(&self, src: &Path, dst: &Path, readonly: bool) -> HostResult<()> {
        btrfs::snapshot(src, dst, readonly).map_err(btrfs_err)
    }
    fn delete_subvolume(&self, path: &Path) -> HostResult<()> {
        btrfs::delete_subvolume_recursive(path).map_err(btrfs_err)
    }
    fn set_readonly(&self, path: &Path, readonly: bool) -> HostResult<()> {
        btrfs::set_readonly(path, readonly).map_err(btrfs_err)
    }
    fn is_subvolume(&self, path: &Path) -> bool {
        btrfs::is_subvolume(path).unwrap_or(false)
    }
    fn lxc_start(&self, name: &str) -> HostResult<LxcState> {
        self.lxc.start(name).map_err(lxc_err)
    }
    fn lxc_stop(&self, name: &str, timeout: Duration, force: bool) -> HostResult<()> {
        self.lxc.stop(name, timeout, force).map_err(lxc_err)
    }
    fn lxc_state(&self, name: &str) -> HostResult<LxcState> {
        self.lxc.state(name).map_err(lxc_err)
    }
    fn lxc_addresses(&self, init_pid: u32) -> Vec<String> {
        crate::lxc::addresses_of(init_pid)
    }
    fn mount_rootfs(&self, m: &crate::idmap::RootfsMount) -> HostResult<()> {
        m.mount().map_err(EngineError::failed)
    }

    fn unmount_rootfs(&self, m: &crate::idmap::RootfsMount) -> HostResult<()> {
        m.unmount().map_err(EngineError::failed)
    }

    fn bridge_exists(&self, bridge: &str) -> bool {
        Path::new("/sys/class/net")
            .join(bridge)
            .join("bridge")
            .exists()
    }
    fn build_rootfs(
        &self,
        recipe: &Recipe,
        dest: &Path,
        cache_dir: &Path,
        progress: &mut dyn FnMut(f64, &str),
    ) -> HostResult<()> {
        base::build_rootfs(recipe, dest, cache_dir, progress).map_err(base_err)
    }
    fn import_rootfs(
        &self,
        archive: &mut File,
        dest: &Path,
        progress: &mut dyn FnMut(f64),
    ) -> HostResult<()> {
        // The caller keeps its own descriptor: validate and extract a private copy, so
        // the archive cannot change between the check and the extraction.
        let tmp_dir = dest.parent().unwrap_or(dest);
        let mut copy = base::private_copy(archive, tmp_dir).map_err(base_err)?;
        base::validate_archive(&mut copy).map_err(base_err)?;
        base::extract_archive(&mut copy, dest, progress).map_err(base_err)
    }
    fn build_layer(
        &self,
        recipe: &crate::layer::LayerRecipe,
        key: &str,
        dirs: &crate::layer::BuildDirs<'_>,
        cache_dir: &Path,
        progress: &mut dyn FnMut(f64, &str),
    ) -> HostResult<()> {
        crate::layer::build_layer(recipe, key, dirs, cache_dir, progress).map_err(base_err)
    }
}
