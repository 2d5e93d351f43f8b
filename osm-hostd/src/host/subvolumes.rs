//! Btrfs subvolumes (real implementation: [`crate::btrfs`]).

use super::{HostResult, RealHost};
use crate::btrfs;
use crate::error::EngineError;
use std::path::Path;

pub trait Subvolumes {
    fn create_subvolume(&self, path: &Path) -> HostResult<()>;
    fn snapshot(&self, src: &Path, dst: &Path, readonly: bool) -> HostResult<()>;
    /// Deletes a subvolume and every subvolume nested in it.
    fn delete_subvolume(&self, path: &Path) -> HostResult<()>;
    fn set_readonly(&self, path: &Path, readonly: bool) -> HostResult<()>;
    fn is_subvolume(&self, path: &Path) -> bool;
    /// Swaps the two paths atomically (`renameat2(RENAME_EXCHANGE)`): each name then
    /// refers to what the other did. Both must exist on the same filesystem.
    fn exchange(&self, a: &Path, b: &Path) -> HostResult<()>;
}

fn btrfs_err(e: btrfs::BtrfsError) -> EngineError {
    EngineError::from(e)
}

impl Subvolumes for RealHost {
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
    fn exchange(&self, a: &Path, b: &Path) -> HostResult<()> {
        nix::fcntl::renameat2(None, a, None, b, nix::fcntl::RenameFlags::RENAME_EXCHANGE)
            .map_err(|e| EngineError::io(format!("exchanging with {}", b.display()), &e.into()))
    }
}
