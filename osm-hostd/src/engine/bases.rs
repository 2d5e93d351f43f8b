//! Base images: read-only subvolumes under `os-bases/`, built from a recipe or imported
//! from an archive as jobs, each with a small sidecar `<name>.toml` saying where it came
//! from. A base never changes once written.

use super::jobs::Job;
use super::{Engine, Event, BUILDING_PREFIX};
use crate::base::Recipe;
use crate::error::{EngineError, EngineResult};
use crate::names::validate_image_name;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaseSource {
    /// Built from a recipe; the recipe's cache key.
    Recipe(String),
    Import,
    /// Found in the store without a sidecar (made before osm-hostd, or by hand).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseInfo {
    pub name: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub source: BaseSource,
}

impl BaseSource {
    pub fn describe(&self) -> String {
        match self {
            BaseSource::Recipe(key) => format!("recipe {}", &key[..key.len().min(12)]),
            BaseSource::Import => "import".into(),
            BaseSource::Unknown => "unknown".into(),
        }
    }
}

impl Engine {
    pub(super) fn scan_bases(&self) -> EngineResult<()> {
        let dir = self.store.bases_dir();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| EngineError::io(format!("reading {}", dir.display()), &e))?;
        let mut found = std::collections::BTreeMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                || !entry.path().is_dir()
                || validate_image_name("base", &name).is_err()
            {
                continue;
            }
            found.insert(name.clone(), self.load_base_info(&name, &entry.path()));
        }
        *self.bases.write().expect("bases lock") = found;
        Ok(())
    }

    fn sidecar(&self, name: &str) -> PathBuf {
        self.store.bases_dir().join(format!("{name}.toml"))
    }

    fn load_base_info(&self, name: &str, dir: &Path) -> BaseInfo {
        if let Some(info) = std::fs::read_to_string(self.sidecar(name))
            .ok()
            .and_then(|t| toml::from_str::<BaseInfo>(&t).ok())
            .filter(|i| i.name == name)
        {
            return info;
        }
        let created = crate::fsutil::modified_secs(dir);
        BaseInfo {
            name: name.to_string(),
            created,
            source: BaseSource::Unknown,
        }
    }

    pub fn base_names(&self) -> Vec<String> {
        self.bases
            .read()
            .expect("bases lock")
            .keys()
            .cloned()
            .collect()
    }

    pub fn base_info(&self, name: &str) -> EngineResult<BaseInfo> {
        self.bases
            .read()
            .expect("bases lock")
            .get(name)
            .cloned()
            .ok_or_else(|| {
                EngineError::not_found(format!(
                    "no base named {name:?}; `osm-hostctl base list` shows the bases"
                ))
            })
    }

    /// Containers whose overlay stack uses this base.
    pub fn base_users(&self, name: &str) -> Vec<String> {
        self.all_containers()
            .iter()
            .filter(|c| c.info().spec.base == name)
            .map(|c| c.name.clone())
            .collect()
    }

    /// Starts a job that builds base `name` from a recipe (TOML text).
    pub fn build_base(self: &Arc<Self>, name: &str, recipe_text: &str) -> EngineResult<Arc<Job>> {
        validate_image_name("base", name)?;
        let recipe = Recipe::parse(recipe_text)
            .map_err(|e| EngineError::invalid_argument(format!("recipe: {e}")))?;
        let source = BaseSource::Recipe(recipe.cache_key());
        let name =
            &super::versions::auto_version(name, &recipe.cache_key(), crate::fsutil::now_secs());
        let cache_dir = self.cfg.cache_dir.join("bases");
        self.spawn_base_job("build-base", name, source, move |host, dest, job| {
            host.build_rootfs(&recipe, dest, &cache_dir, &mut |f, msg| {
                job.set_progress(f, msg)
            })
        })
    }

    /// Starts a job that imports base `name` from an open tar, tar.gz or tar.zst.
    pub fn import_base(self: &Arc<Self>, name: &str, mut archive: File) -> EngineResult<Arc<Job>> {
        validate_image_name("base", name)?;
        let md = archive
            .metadata()
            .map_err(|e| EngineError::io("inspecting the archive", &e))?;
        if !md.is_file() {
            return Err(EngineError::invalid_argument(
                "the archive must be a regular file (not a pipe or a device)".into(),
            ));
        }
        self.spawn_base_job(
            "import-base",
            name,
            BaseSource::Import,
            move |host, dest, job| {
                host.import_rootfs(&mut archive, dest, &mut |f| {
                    job.set_progress(f, "extracting")
                })
            },
        )
    }

    fn spawn_base_job<F>(
        self: &Arc<Self>,
        kind: &'static str,
        name: &str,
        source: BaseSource,
        fill: F,
    ) -> EngineResult<Arc<Job>>
    where
        F: FnOnce(&dyn crate::host::HostOps, &Path, &Job) -> EngineResult<()> + Send + 'static,
    {
        if self.bases.read().expect("bases lock").contains_key(name) {
            return Err(EngineError::already_exists(format!(
                "base {name} already exists; bases never change: build or import under a new name, or delete it first"
            )));
        }
        // Held until the job ends, so a second build of the same name is Busy.
        let reservation = self.reserve(name, "base")?.into_key();
        let engine = self.clone();
        let job = self.jobs.start_blocking(kind, name, move |job| {
            let result = engine.make_base(&job.target, source, job, fill);
            engine.release(&reservation);
            result.map(|()| format!("base {} is ready", job.target))
        });
        Ok(job)
    }

    pub(super) fn make_base<F>(
        &self,
        name: &str,
        source: BaseSource,
        job: &Job,
        fill: F,
    ) -> EngineResult<()>
    where
        F: FnOnce(&dyn crate::host::HostOps, &Path, &Job) -> EngineResult<()>,
    {
        let staging = self
            .store
            .bases_dir()
            .join(format!("{BUILDING_PREFIX}{name}"));
        if staging.exists() {
            self.host.delete_subvolume(&staging)?;
        }
        self.host.create_subvolume(&staging)?;
        let result = (|| {
            fill(self.host.as_ref(), &staging, job)?;
            self.host.set_readonly(&staging, true)?;
            let info = BaseInfo {
                name: name.to_string(),
                created: crate::fsutil::now_secs(),
                source,
            };
            let text = toml::to_string(&info).expect("base info serializes");
            crate::fsutil::write_atomic(&self.sidecar(name), text.as_bytes(), 0o644)
                .map_err(|e| EngineError::io("writing the base's sidecar", &e))?;
            let target = self.store.bases_dir().join(name);
            std::fs::rename(&staging, &target)
                .map_err(|e| EngineError::io(format!("publishing {}", target.display()), &e))?;
            self.bases
                .write()
                .expect("bases lock")
                .insert(name.to_string(), info);
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(self.sidecar(name));
            if let Err(cleanup) = self.host.delete_subvolume(&staging) {
                tracing::error!(path = %staging.display(), error = %cleanup, "cannot remove a failed base build");
            }
            return Err(e);
        }
        self.emit(Event::BaseAdded(name.to_string()));
        Ok(())
    }

    /// Deletes a base no container uses.
    pub async fn delete_base(self: &Arc<Self>, name: &str) -> EngineResult<()> {
        self.base_info(name)?;
        let _no_creates = self.base_use.write().await;
        let users = self.base_users(name);
        if !users.is_empty() {
            return Err(EngineError::invalid_state(format!(
                "base {name} is used by container(s) {}; delete them first",
                users.join(", ")
            )));
        }
        let layers = self.layers_on_base(name);
        if !layers.is_empty() {
            return Err(EngineError::invalid_state(format!(
                "base {name} has layer(s) {} built over it; delete them first",
                layers.join(", ")
            )));
        }
        let _reservation = self.reserve(name, "base")?;
        let engine = self.clone();
        let dir = self.store.bases_dir().join(name);
        super::blocking(move || engine.host.delete_subvolume(&dir)).await?;
        let _ = std::fs::remove_file(self.sidecar(name));
        // The archives recorded for it are of this base only, not of a later one.
        let _ = std::fs::remove_file(self.archive_cache(name));
        self.bases.write().expect("bases lock").remove(name);
        tracing::info!(base = %name, "base deleted");
        self.emit(Event::BaseRemoved(name.to_string()));
        Ok(())
    }
}
