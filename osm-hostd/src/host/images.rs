//! Filling base and layer images: debootstrap and recipe builds, archive import
//! (real implementation: [`crate::base`] and [`crate::layer`]).

use super::{HostResult, RealHost};
use crate::base::{self, Recipe};
use crate::error::EngineError;
use std::fs::File;
use std::path::Path;

pub trait Images {
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

fn base_err(e: base::BaseError) -> EngineError {
    EngineError::from(e)
}

impl Images for RealHost {
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
