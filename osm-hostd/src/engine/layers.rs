//! Layers: read-only subvolumes under `layers/`, built from `overlays/` recipes as jobs,
//! each with a sidecar `<name>.toml` saying what it was built over. A layer never changes
//! once written; it is deleted only when no container and no other layer uses it.

use super::jobs::Job;
use super::{Engine, BUILDING_PREFIX};
use crate::base::BaseError;
use crate::error::{EngineError, EngineResult};
use crate::layer::{BuildDirs, LayerRecipe};
use crate::names::validate_image_name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub name: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// The base it was built over.
    pub base: String,
    /// The layers between that base and this one, lowest first.
    pub layers: Vec<String>,
    /// The build's cache key (recipe, keys, and what it was built over).
    pub key: String,
}

fn recipe_err(e: BaseError) -> EngineError {
    EngineError::invalid_argument(format!("layer recipe: {e}")).with_source(e)
}

impl Engine {
    pub(super) fn layer_sidecar(&self, name: &str) -> PathBuf {
        self.store.layers_dir().join(format!("{name}.toml"))
    }

    /// The layers in the store, by name. A layer without a readable sidecar (made by hand)
    /// is listed with an empty base and key.
    pub fn layer_list(&self) -> Vec<LayerInfo> {
        let dir = self.store.layers_dir();
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                || !entry.path().is_dir()
                || validate_image_name("layer", &name).is_err()
            {
                continue;
            }
            out.insert(name.clone(), self.load_layer_info(&name, &entry.path()));
        }
        out.into_values().collect()
    }

    fn load_layer_info(&self, name: &str, dir: &Path) -> LayerInfo {
        if let Some(info) = std::fs::read_to_string(self.layer_sidecar(name))
            .ok()
            .and_then(|t| toml::from_str::<LayerInfo>(&t).ok())
            .filter(|i| i.name == name)
        {
            return info;
        }
        let created = crate::fsutil::modified_secs(dir);
        LayerInfo {
            name: name.to_string(),
            created,
            base: String::new(),
            layers: vec![],
            key: String::new(),
        }
    }

    pub fn layer_info(&self, name: &str) -> EngineResult<LayerInfo> {
        validate_image_name("layer", name)?;
        let dir = self.store.layers_dir().join(name);
        if !dir.is_dir() {
            return Err(EngineError::not_found(format!(
                "no layer named {name:?}; `osm-hostctl layer list` shows the layers"
            )));
        }
        Ok(self.load_layer_info(name, &dir))
    }

    /// Containers and layers that stack on this layer.
    pub fn layer_users(&self, name: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .all_containers()
            .iter()
            .filter(|c| c.info().spec.layers.iter().any(|l| l == name))
            .map(|c| format!("container {}", c.name))
            .collect();
        users.extend(
            self.layer_list()
                .into_iter()
                .filter(|l| l.layers.iter().any(|x| x == name))
                .map(|l| format!("layer {}", l.name)),
        );
        users
    }

    /// Layers built over this base.
    pub fn layers_on_base(&self, base: &str) -> Vec<String> {
        self.layer_list()
            .into_iter()
            .filter(|l| l.base == base)
            .map(|l| l.name)
            .collect()
    }

    /// Starts a job that builds layer `name` from a recipe (TOML text); `key_texts` holds
    /// the text of each `key_file` the recipe names, by its path as written there.
    pub fn build_layer(
        self: &Arc<Self>,
        name: &str,
        recipe_text: &str,
        key_texts: &BTreeMap<String, String>,
    ) -> EngineResult<Arc<Job>> {
        validate_image_name("layer", name)?;
        let mut recipe = LayerRecipe::parse(recipe_text).map_err(recipe_err)?;
        if recipe.name != crate::names::image_base_name(name) {
            return Err(EngineError::invalid_argument(format!(
                "the recipe is for layer {:?}; build it under that name, optionally with @VERSION \
                 (or change its name field)",
                recipe.name
            )));
        }
        recipe.resolve_keys(key_texts).map_err(recipe_err)?;
        // The recipe names bases and layers without versions: build over the newest, and
        // record the exact versions in the sidecar.
        recipe.base = self.resolve_base(&recipe.base);
        recipe.layers = recipe
            .layers
            .iter()
            .map(|l| self.resolve_layer(l))
            .collect();
        let (lower_keys, lowers) = self.lower_stack(&recipe.base, &recipe.layers)?;
        self.require_new_layer(name)?;
        let key = recipe.cache_key(&lower_keys);
        let name = &super::versions::auto_version(name, &key, crate::fsutil::now_secs());
        self.require_new_layer(name)?;
        let reservation = self.reserve(name, "layer")?.into_key();
        let engine = self.clone();
        let job = self.jobs.start_blocking("build-layer", name, move |job| {
            let name = &job.target;
            let result = engine.make_layer(name, &recipe, &key, &lowers, job);
            engine.release(&reservation);
            result.map(|()| format!("layer {name} is ready"))
        });
        Ok(job)
    }

    fn require_new_layer(&self, name: &str) -> EngineResult<()> {
        if self.store.layers_dir().join(name).exists() {
            return Err(EngineError::already_exists(format!(
                "layer {name} already exists; layers never change: build or import under a new \
                 name, or delete it first"
            )));
        }
        Ok(())
    }

    /// For a layer over `base` and `layers` (lowest first): the identities of what it is
    /// built over (for the cache key) and the lower directories, top-most first.
    fn lower_stack(
        &self,
        base: &str,
        layers: &[String],
    ) -> EngineResult<(Vec<String>, Vec<PathBuf>)> {
        let info = self.base_info(base).map_err(|_| {
            EngineError::not_found(format!(
                "the layer builds on base {base:?}, which is not in the store; build or import \
                 it first (`osm-hostctl base list` shows the bases)"
            ))
        })?;
        let base_identity = match &info.source {
            super::BaseSource::Recipe(k) => format!("recipe:{k}"),
            other => format!("{}:{}:{}", other.describe(), info.name, info.created),
        };
        let mut keys = vec![base_identity];
        // overlayfs' lowerdir order: top-most first.
        let mut lowers = vec![self.store.bases_dir().join(base)];
        for l in layers {
            let info = self.layer_info(l).map_err(|_| {
                EngineError::not_found(format!(
                    "the layer builds on layer {l:?}, which is not in the store; build it first"
                ))
            })?;
            if info.base != base {
                return Err(EngineError::invalid_argument(format!(
                    "layer {l} was built over base {:?}, not {base:?}; a layer stacks only on the \
                     base it was built over",
                    info.base
                )));
            }
            keys.push(info.key);
            lowers.insert(0, self.store.layers_dir().join(l));
        }
        Ok((keys, lowers))
    }

    /// Starts a job that imports layer `name` (an upper layer over `base` and `layers`,
    /// lowest first) from an open tar, tar.gz or tar.zst; overlay whiteouts are kept.
    pub fn import_layer(
        self: &Arc<Self>,
        name: &str,
        base: &str,
        layers: &[String],
        mut archive: std::fs::File,
    ) -> EngineResult<Arc<Job>> {
        validate_image_name("layer", name)?;
        let md = archive
            .metadata()
            .map_err(|e| EngineError::io("inspecting the archive", &e))?;
        if !md.is_file() {
            return Err(EngineError::invalid_argument(
                "the archive must be a regular file (not a pipe or a device)".into(),
            ));
        }
        if layers.iter().any(|l| l == name) {
            return Err(EngineError::invalid_argument(format!(
                "layer {name} cannot be imported over itself"
            )));
        }
        let base = self.resolve_base(base);
        let layers: Vec<String> = layers.iter().map(|l| self.resolve_layer(l)).collect();
        self.lower_stack(&base, &layers)?;
        self.require_new_layer(name)?;
        let reservation = self.reserve(name, "layer")?.into_key();
        let engine = self.clone();
        let job = self.jobs.start_blocking("import-layer", name, move |job2| {
            let name = job2.target.clone();
            let staging = engine
                .store
                .layers_dir()
                .join(format!("{BUILDING_PREFIX}{name}"));
            let result = (|| {
                if staging.exists() {
                    engine.host.delete_subvolume(&staging)?;
                }
                engine.host.create_subvolume(&staging)?;
                engine
                    .host
                    .import_rootfs(&mut archive, &staging, &mut |f| {
                        job2.set_progress(f, "extracting")
                    })?;
                let created = crate::fsutil::now_secs();
                let info = LayerInfo {
                    key: format!("import:{name}:{created}"),
                    name: name.clone(),
                    created,
                    base,
                    layers,
                };
                engine.publish_layer(&staging, &info)
            })();
            engine.release(&reservation);
            if result.is_err() {
                let _ = std::fs::remove_file(engine.layer_sidecar(&name));
                if staging.exists() {
                    if let Err(cleanup) = engine.host.delete_subvolume(&staging) {
                        tracing::error!(path = %staging.display(), error = %cleanup, "cannot remove a failed layer import");
                    }
                }
            }
            result.map(|()| format!("layer {name} is ready"))
        });
        Ok(job)
    }

    /// Makes the staging subvolume read-only, writes the sidecar and renames it into place.
    pub(super) fn publish_layer(&self, staging: &Path, info: &LayerInfo) -> EngineResult<()> {
        self.host.set_readonly(staging, true)?;
        let text = toml::to_string(info).expect("layer info serializes");
        crate::fsutil::write_atomic(&self.layer_sidecar(&info.name), text.as_bytes(), 0o644)
            .map_err(|e| EngineError::io("writing the layer's sidecar", &e))?;
        let target = self.store.layers_dir().join(&info.name);
        std::fs::rename(staging, &target)
            .map_err(|e| EngineError::io(format!("publishing {}", target.display()), &e))
    }

    fn make_layer(
        &self,
        name: &str,
        recipe: &LayerRecipe,
        key: &str,
        lowers: &[PathBuf],
        job: &Job,
    ) -> EngineResult<()> {
        let dir = self.store.layers_dir();
        let staging = dir.join(format!("{BUILDING_PREFIX}{name}"));
        let scratch = dir.join(format!("{BUILDING_PREFIX}{name}.mnt"));
        if staging.exists() {
            self.host.delete_subvolume(&staging)?;
        }
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch)
                .map_err(|e| EngineError::io(format!("removing {}", scratch.display()), &e))?;
        }
        self.host.create_subvolume(&staging)?;
        let result = (|| {
            let dirs = BuildDirs {
                lowers,
                staging: &staging,
                mountpoint: &scratch,
            };
            let cache_dir = self.cfg.cache_dir.join("layers");
            let built = self
                .host
                .build_layer(recipe, key, &dirs, &cache_dir, &mut |f, msg| {
                    job.set_progress(f, msg)
                });
            let _ = std::fs::remove_dir_all(&scratch);
            built?;
            let info = LayerInfo {
                name: name.to_string(),
                created: crate::fsutil::now_secs(),
                base: recipe.base.clone(),
                layers: recipe.layers.clone(),
                key: key.to_string(),
            };
            self.publish_layer(&staging, &info)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(self.layer_sidecar(name));
            let _ = std::fs::remove_dir_all(&scratch);
            if let Err(cleanup) = self.host.delete_subvolume(&staging) {
                tracing::error!(path = %staging.display(), error = %cleanup, "cannot remove a failed layer build");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Checks that a container's layer stack (lowest first, as in its spec) fits
    /// together: each layer built by osm-hostd was built over `base`, with exactly its
    /// own lower layers below it. Layers without a sidecar (made by hand) are trusted.
    pub(super) fn check_layer_stack(&self, base: &str, layers: &[String]) -> EngineResult<()> {
        for (i, name) in layers.iter().enumerate() {
            let info = self.layer_info(name)?;
            if info.key.is_empty() {
                continue;
            }
            if info.base != base {
                return Err(EngineError::invalid_argument(format!(
                    "layer {name} was built over base {:?}, not {base:?}; create the container \
                     with --base {}, or build the layer over {base}",
                    info.base, info.base
                )));
            }
            let below = &layers[..i];
            if below != info.layers.as_slice() {
                return Err(EngineError::invalid_argument(format!(
                    "layer {name} was built over layers {:?} (lowest first) but would sit on \
                     {below:?}; give every layer of the stack, lowest first, each once",
                    info.layers,
                )));
            }
        }
        Ok(())
    }

    /// Deletes a layer no container and no other layer uses.
    pub async fn delete_layer(self: &Arc<Self>, name: &str) -> EngineResult<()> {
        self.layer_info(name)?;
        let _no_creates = self.base_use.write().await;
        let users = self.layer_users(name);
        if !users.is_empty() {
            return Err(EngineError::invalid_state(format!(
                "layer {name} is used by {}; delete them first",
                users.join(", ")
            )));
        }
        let _reservation = self.reserve(name, "layer")?;
        let engine = self.clone();
        let dir = self.store.layers_dir().join(name);
        super::blocking(move || engine.host.delete_subvolume(&dir)).await?;
        let _ = std::fs::remove_file(self.layer_sidecar(name));
        let _ = std::fs::remove_file(self.layer_archive_cache(name));
        tracing::info!(layer = %name, "layer deleted");
        Ok(())
    }
}

impl Engine {
    /// Starts a job writing layer `name` (its upper tree, whiteouts and overlay xattrs
    /// included) as a zstd-compressed tar to `out`, an open regular file the caller made;
    /// `layer import` reads it back. The layer is read-only, so it needs no snapshot.
    pub fn export_layer(
        self: &Arc<Self>,
        name: &str,
        mut out: std::fs::File,
    ) -> EngineResult<Arc<Job>> {
        let info = self.layer_info(name)?;
        let md = out
            .metadata()
            .map_err(|e| EngineError::io("inspecting the output file", &e))?;
        if !md.is_file() {
            return Err(EngineError::invalid_argument(
                "the output must be a regular file (not a pipe or a device)".into(),
            ));
        }
        let writable = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&out),
            nix::fcntl::FcntlArg::F_GETFL,
        )
        .map(|f| nix::fcntl::OFlag::from_bits_truncate(f) & nix::fcntl::OFlag::O_ACCMODE)
        .is_ok_and(|m| m != nix::fcntl::OFlag::O_RDONLY);
        if !writable {
            return Err(EngineError::invalid_argument(
                "the output file was opened read-only; open it for writing".into(),
            ));
        }
        let engine = self.clone();
        let job = self.jobs.start_blocking("export-layer", name, move |job2| {
            let dir = engine.store.layers_dir().join(&info.name);
            let size = crate::fsutil::disk_usage(&dir).unwrap_or(1).max(1);
            crate::base::write_tar_zst(&dir, &mut out, size, &mut |f| {
                job2.set_progress(f, "archiving")
            })
            .map_err(|e| format!("exporting layer {}: {e}", info.name))?;
            let mut over = vec![format!("--base {}", info.base)];
            over.extend(info.layers.iter().map(|l| format!("--over {l}")));
            Ok::<_, String>(format!(
                "exported layer {}; import it with `osm-hostctl layer import {} FILE {}`",
                info.name,
                info.name,
                over.join(" ")
            ))
        });
        Ok(job)
    }
}
