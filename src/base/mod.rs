//! Base images: recipes built with debootstrap, and imports of root filesystem archives.
//! PLACEHOLDER SIGNATURES: implemented by the base-image work item.

use std::fs::File;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("{0}")]
    InvalidRecipe(String),
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {}

impl Recipe {
    pub fn parse(_text: &str) -> Result<Recipe, BaseError> {
        unimplemented!()
    }
    /// Hex SHA-256 of everything in the recipe that affects the result.
    pub fn cache_key(&self) -> String {
        unimplemented!()
    }
}

/// Fills the empty directory `dest` with the recipe's root filesystem, reusing
/// `cache_dir/<cache_key>.tar.zst` when present and writing it when not.
/// `progress(fraction 0..1, what is happening)` is called as work proceeds.
pub fn build_rootfs(
    _recipe: &Recipe,
    _dest: &Path,
    _cache_dir: &Path,
    _progress: &mut dyn FnMut(f64, &str),
) -> Result<(), BaseError> {
    unimplemented!()
}

/// Checks every entry of a tar, tar.gz or tar.zst archive (compression detected from
/// its magic bytes) and refuses absolute paths, `..` components and links that
/// escape the root. Reads from the start of `file` whatever its current offset.
pub fn validate_archive(_file: &mut File) -> Result<(), BaseError> {
    unimplemented!()
}

/// Extracts a validated archive into `dest`, preserving owners (numeric), modes,
/// xattrs, ACLs, hard links and device nodes.
pub fn extract_archive(
    _file: &mut File,
    _dest: &Path,
    _progress: &mut dyn FnMut(f64),
) -> Result<(), BaseError> {
    unimplemented!()
}
