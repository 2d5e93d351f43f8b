//! Btrfs subvolume operations through the kernel's ioctls (no `btrfs` process per call).
//! PLACEHOLDER SIGNATURES: implemented by the storage work item.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct BtrfsError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub type Result<T> = std::result::Result<T, BtrfsError>;

/// True if `path` is on a Btrfs filesystem.
pub fn is_btrfs(_path: &Path) -> Result<bool> {
    unimplemented!()
}
/// True if `path` is the root directory of a Btrfs subvolume.
pub fn is_subvolume(_path: &Path) -> Result<bool> {
    unimplemented!()
}
/// Creates a new, empty subvolume at `path` (its parent must exist; `path` must not).
pub fn create_subvolume(_path: &Path) -> Result<()> {
    unimplemented!()
}
/// Snapshots subvolume `src` to the new path `dst`, read-only if asked.
pub fn snapshot(_src: &Path, _dst: &Path, _readonly: bool) -> Result<()> {
    unimplemented!()
}
pub fn set_readonly(_path: &Path, _readonly: bool) -> Result<()> {
    unimplemented!()
}
pub fn is_readonly(_path: &Path) -> Result<bool> {
    unimplemented!()
}
/// Deletes the subvolume at `path` and every subvolume nested below it, bottom-up.
pub fn delete_subvolume_recursive(_path: &Path) -> Result<()> {
    unimplemented!()
}
