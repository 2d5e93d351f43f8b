//! Layers travel with backups as bases do (issue 12): every layer a backed-up container
//! uses is kept at the target once, as `<target>/layers/<sha256>.tar.zst` (addressed by
//! content, uploaded under a temporary name, checked by its hash, renamed), and named
//! with its archive in the trees' manifests. A restore on a host that lacks a layer
//! imports it from there, lowest first, over the base and lower layers the container's
//! stack puts below it.

use super::backup_bases::{archives_of, remember_archive};
use super::jobs::Job;
use super::{Engine, BUILDING_PREFIX};
use crate::backup::identity::{self, Manifest};
use crate::backup::Target;
use crate::error::{EngineError, EngineResult};
use crate::spec::ContainerSpec;
use std::path::PathBuf;

pub const LAYERS_DIR: &str = "layers";

impl Engine {
    /// `<store>/lxc/layer-archive-<name>`: "<sha256> <created>" of the layer's archive
    /// (a layer never changes; a new layer of the name has another time).
    pub(super) fn layer_archive_cache(&self, name: &str) -> PathBuf {
        self.store.lxc_dir().join(format!("layer-archive-{name}"))
    }

    /// The archive at the target of layer `name` as this host last stored it (what the
    /// manifest names), while the layer is the one it was made of.
    pub(super) fn layer_archive(&self, name: &str) -> Option<String> {
        self.layer_archives(name).pop()
    }

    /// Every archive this host made or fetched of layer `name` (as it is now), oldest
    /// first.
    pub(super) fn layer_archives(&self, name: &str) -> Vec<String> {
        let Ok(info) = self.layer_info(name) else {
            return Vec::new();
        };
        archives_of(&self.layer_archive_cache(name), info.created)
            .iter()
            .map(|h| layer_rel(h))
            .collect()
    }

    /// Makes sure every layer of `spec` is at the target, once per run.
    pub(super) fn ship_layers_once(
        &self,
        target: &Target,
        spec: &ContainerSpec,
        shipped: &super::backup_bases::Shipments,
    ) -> Result<(), String> {
        for name in &spec.layers {
            let mut done = shipped.lock().expect("shipments lock");
            let key = format!("layer:{name}");
            let r = match done.get(&key) {
                Some(r) => r.clone(),
                None => {
                    let r = self.ship_layer(target, name).map_err(|e| {
                        format!("cannot store layer {name} at the backup target: {e}")
                    });
                    if let Err(e) = &r {
                        tracing::warn!(layer = %name, error = %e, "layer not stored at the backup target");
                    }
                    done.insert(key, r.clone());
                    r
                }
            };
            r?;
        }
        Ok(())
    }

    fn ship_layer(&self, target: &Target, name: &str) -> Result<String, String> {
        let info = self.layer_info(name).map_err(|e| e.to_string())?;
        if let Some(rel) = self.layer_archive(name) {
            if self.target_exists(target, &rel)? {
                return Ok(rel);
            }
        }
        let tmp = self
            .store
            .lxc_dir()
            .join(format!(".base-export-layer-{name}.tar.zst"));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)
                .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
            crate::base::write_tar_zst(&self.store.layers_dir().join(name), &mut f, 1, &mut |_| {})
                .map_err(|e| e.to_string())?;
            drop(f);
            let hash = identity::sha256_file(&tmp)
                .map_err(|e| format!("reading {}: {e}", tmp.display()))?;
            let rel = layer_rel(&hash);
            if !self.target_exists(target, &rel)? {
                self.upload_archive_to(target, LAYERS_DIR, &tmp, &hash)?;
                tracing::info!(layer = %name, archive = %target.path_of(&rel), "layer stored at the backup target");
            }
            remember_archive(&self.layer_archive_cache(name), &hash, info.created);
            Ok(rel)
        })();
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Imports the layers of `spec` this host lacks from their archives at the target
    /// (named in `manifest`), lowest first. Blocking; a no-op when all are here.
    pub(super) fn import_layers_from_target(
        &self,
        target: &Target,
        spec: &ContainerSpec,
        manifest: Option<&Manifest>,
        job: &Job,
    ) -> EngineResult<()> {
        // spec.layers is lowest first: a layer's lowers are the ones before it.
        for (i, name) in spec.layers.iter().enumerate() {
            if self.layer_info(name).is_ok() {
                continue;
            }
            let rel = manifest
                .and_then(|m| m.layers.iter().find(|l| l.name == *name))
                .and_then(|l| l.archive.clone())
                .ok_or_else(|| {
                    EngineError::not_found(format!(
                        "layer {name} is not here and the backup names no archive of it; import or build it first"
                    ))
                })?;
            let lowers: Vec<String> = spec.layers[..i].to_vec();
            job.set_progress(0.02, &format!("importing layer {name}"));
            self.import_layer_from_target(target, name, &spec.base, &lowers, &rel)?;
        }
        Ok(())
    }

    fn import_layer_from_target(
        &self,
        target: &Target,
        name: &str,
        base: &str,
        lowers: &[String],
        rel: &str,
    ) -> EngineResult<()> {
        crate::names::validate_image_name("layer", name)?;
        let hash = rel
            .strip_prefix(&format!("{LAYERS_DIR}/"))
            .and_then(|f| f.strip_suffix(".tar.zst"))
            .unwrap_or_default()
            .to_string();
        self.with_target_archive(target, LAYERS_DIR, rel, "layer", name, |mut file| {
            let _reservation = self.reserve(name, "layer")?;
            let staging = self
                .store
                .layers_dir()
                .join(format!("{BUILDING_PREFIX}{name}"));
            let made = (|| {
                if staging.exists() {
                    self.host.delete_subvolume(&staging)?;
                }
                self.host.create_subvolume(&staging)?;
                self.host.import_rootfs(&mut file, &staging, &mut |_| {})?;
                let created = crate::fsutil::now_secs();
                let info = super::layers::LayerInfo {
                    key: format!("import:{name}:{created}"),
                    name: name.to_string(),
                    created,
                    base: base.to_string(),
                    layers: lowers.to_vec(),
                };
                self.publish_layer(&staging, &info)?;
                // The archive it came from is this layer's: no need to store it again.
                remember_archive(&self.layer_archive_cache(name), &hash, created);
                Ok(())
            })();
            if let Err(e) = made {
                let _ = std::fs::remove_file(self.layer_sidecar(name));
                if staging.exists() {
                    let _ = self.host.delete_subvolume(&staging);
                }
                return Err(e);
            }
            tracing::info!(layer = %name, archive = %target.path_of(rel), "layer imported from the backup target");
            Ok(())
        })
    }
}

fn layer_rel(hash: &str) -> String {
    format!("{LAYERS_DIR}/{hash}.tar.zst")
}
