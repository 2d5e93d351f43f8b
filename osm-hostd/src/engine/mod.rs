//! The engine: containers, base images and jobs on the store. It knows nothing of D-Bus;
//! it reports changes as [`Event`]s and its errors are [`EngineError`]s.
//!
//! Every multi-step operation that changes the store works under a staging name
//! (`.creating-<name>`, `.deleting-<name>`, `.building-<name>`; backups read from a
//! temporary `.backup-<name>` snapshot) and publishes with one
//! rename, so a daemon killed half-way leaves either the old or the new state, and the
//! next start removes what is left of the staging entry ([`Engine::open`]).

mod backup;
mod backup_bases;
mod backup_identity;
mod backup_layers;
mod backup_restore;
mod backup_send;
mod backup_send_trees;
mod backup_target;
mod bases;
mod boot;
mod container;
mod convert;
mod create;
mod customer;
mod delete;
pub mod fleet;
mod isolation;
pub mod jobs;
mod layers;
mod lifecycle;
mod network;
mod publish;
mod rebase;
mod rebase_all;
mod set;
mod snapshot_restore;
mod snapshots;
mod versions;
mod view;
mod watch;

pub use bases::{BaseInfo, BaseSource};
pub use boot::BOOT_MARKER;
pub use container::{ContainerInfo, RunState};
pub use create::{CreateOutcome, CreateRequest};
pub use customer::CustomerInfo;
pub use layers::LayerInfo;
pub use network::NetworkInfo;
pub use rebase::{RebaseReport, StackRef};
pub use rebase_all::RebaseAllReport;
pub use set::SetRequest;
pub use snapshot_restore::CRASH_ENV as RESTORE_CRASH_ENV;
pub use snapshot_restore::CRASH_STEPS as RESTORE_CRASH_STEPS;
pub use snapshots::{SnapshotRequest, SnapshotSummary};
pub use view::ContainerView;

use crate::config::HostConfig;
use crate::error::{EngineError, EngineResult};
use crate::host::HostOps;
use crate::lxcconf::{self, HostFacts};
use crate::spec::ContainerSpec;
use crate::store::Store;
use container::Container;
use jobs::Jobs;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::broadcast;

pub const CREATING_PREFIX: &str = ".creating-";
pub const DELETING_PREFIX: &str = ".deleting-";
pub const BUILDING_PREFIX: &str = ".building-";
/// The temporary read-only snapshot a backup reads from (never kept across restarts).
pub const BACKUP_PREFIX: &str = ".backup-";

/// What changed, for the D-Bus layer to turn into objects and signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ContainerAdded(String),
    ContainerRemoved(String),
    ContainerChanged(String),
    /// Its settings (`container.toml`) changed.
    ContainerSpecChanged(String),
    BaseAdded(String),
    BaseRemoved(String),
    JobAdded(u64),
    JobChanged(u64),
    JobFinished(u64),
    /// A finished job was forgotten, [`jobs::JOB_LINGER`] after it finished.
    JobRemoved(u64),
    /// A snapshot (container, number) was taken or deleted; a container was restored
    /// to a snapshot.
    SnapshotCreated(String, u32),
    SnapshotDeleted(String, u32),
    Restored(String, u32),
}

pub struct Engine {
    cfg: HostConfig,
    store: Store,
    facts: HostFacts,
    host: Arc<dyn HostOps>,
    containers: RwLock<BTreeMap<String, Arc<Container>>>,
    bases: RwLock<BTreeMap<String, BaseInfo>>,
    /// Names being created (containers) or built (bases), reserved until published.
    reserved: Mutex<HashSet<String>>,
    /// Shared by creates while they depend on their base existing; taken exclusively by
    /// a base delete, so a base cannot vanish under a container being created.
    base_use: tokio::sync::RwLock<()>,
    pub jobs: Jobs,
    events: broadcast::Sender<Event>,
    /// Bumped before every event is sent (see `view`).
    generation: std::sync::atomic::AtomicU64,
    /// dnsmasq's supervisor, when the daemon manages networking.
    dnsmasq: OnceLock<Arc<crate::net::supervisor::Supervisor>>,
    /// Set once `host shutdown` has begun: autostart starts nothing more.
    shutting_down: std::sync::atomic::AtomicBool,
    /// One publish change at a time on the host (host names and ports are host-wide).
    publish_lock: tokio::sync::Mutex<()>,
    /// Id ranges handed to containers being created, until they are published.
    idmaps_pending: Mutex<Vec<crate::idmap::IdMap>>,
    /// This host's identity in backup trees (`<store>/lxc/host-id`).
    host_id: String,
}

impl Engine {
    /// Opens the engine on a prepared store: writes `include/common.conf`, finishes or
    /// rolls back interrupted operations, scans bases and containers, and adopts the
    /// containers that are running.
    pub fn open(
        cfg: HostConfig,
        store: Store,
        facts: HostFacts,
        host: Arc<dyn HostOps>,
    ) -> EngineResult<Arc<Engine>> {
        let (events, _) = broadcast::channel(1024);
        let host_id = crate::backup::identity::load_or_create_host_id(&store.lxc_dir())
            .map_err(|e| EngineError::io("reading the host id", &e))?;
        let engine = Arc::new(Engine {
            cfg,
            store,
            facts,
            host,
            containers: RwLock::new(BTreeMap::new()),
            bases: RwLock::new(BTreeMap::new()),
            reserved: Mutex::new(HashSet::new()),
            base_use: tokio::sync::RwLock::new(()),
            jobs: Jobs::new(events.clone()),
            events,
            generation: Default::default(),
            dnsmasq: OnceLock::new(),
            shutting_down: Default::default(),
            publish_lock: Default::default(),
            idmaps_pending: Mutex::new(Vec::new()),
            host_id,
        });
        engine
            .host
            .ensure_subid_pool(&engine.subids())
            .map_err(EngineError::failed)?;
        engine.write_common_conf()?;
        engine.recover()?;
        engine.recover_restores();
        engine.empty_trash();
        engine.scan_bases()?;
        engine.scan_containers()?;
        engine.assign_missing_addresses();
        engine.assign_missing_uuids();
        engine.record_interrupted_backups();
        for c in engine.all_containers() {
            engine.recover_snapshots(&c.name);
            engine.write_snapper_config(&c);
        }
        engine.prune_snapper_configs();
        engine.secure_backup_target();
        Ok(engine)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The host seam the engine's effects go through (the network service uses it too).
    pub fn host(&self) -> &dyn HostOps {
        self.host.as_ref()
    }

    pub fn config(&self) -> &HostConfig {
        &self.cfg
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn emit(&self, event: Event) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _ = self.events.send(event);
    }

    fn common_conf_path(&self) -> PathBuf {
        self.store.include_dir().join("common.conf")
    }

    fn write_common_conf(&self) -> EngineResult<()> {
        let seccomp = self.store.include_dir().join("seccomp");
        let profile = lxcconf::render_seccomp();
        if std::fs::read_to_string(&seccomp).ok().as_deref() != Some(profile.as_str()) {
            crate::fsutil::write_atomic(&seccomp, profile.as_bytes(), 0o644)
                .map_err(|e| EngineError::io(format!("writing {}", seccomp.display()), &e))?;
        }
        let path = self.common_conf_path();
        let text = lxcconf::render_common(&self.facts, &seccomp);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        crate::fsutil::write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(|e| EngineError::io(format!("writing {}", path.display()), &e))
    }

    /// Removes what interrupted creates, deletes and builds left behind.
    fn recover(&self) -> EngineResult<()> {
        for dir in [
            self.store.containers_dir(),
            self.store.bases_dir(),
            self.store.layers_dir(),
        ] {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| EngineError::io(format!("reading {}", dir.display()), &e))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let staged = [
                    CREATING_PREFIX,
                    DELETING_PREFIX,
                    BUILDING_PREFIX,
                    BACKUP_PREFIX,
                ]
                .iter()
                .any(|p| name.starts_with(p));
                if !staged {
                    continue;
                }
                let path = entry.path();
                tracing::info!(path = %path.display(), "removing what an interrupted operation left");
                let result = if self.host.is_subvolume(&path) {
                    self.host.delete_subvolume(&path)
                } else {
                    std::fs::remove_dir_all(&path)
                        .map_err(|e| EngineError::io(format!("removing {}", path.display()), &e))
                };
                if let Err(e) = result {
                    tracing::error!(path = %path.display(), error = %e, "cannot remove leftover of an interrupted operation");
                }
            }
        }
        Ok(())
    }

    fn scan_containers(self: &Arc<Self>) -> EngineResult<()> {
        let dir = self.store.containers_dir();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| EngineError::io(format!("reading {}", dir.display()), &e))?;
        let mut found = BTreeMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            match ContainerSpec::load(&entry.path()) {
                Ok(spec) if spec.name == name => {
                    found.insert(name.clone(), Arc::new(Container::new(spec)));
                }
                Ok(spec) => {
                    tracing::error!(container = %name, spec_name = %spec.name, "container.toml names another container; skipped")
                }
                Err(e) => {
                    tracing::error!(container = %name, error = %e, "cannot load container; skipped")
                }
            }
        }
        *self.containers.write().expect("containers lock") = found;
        self.refresh_all_states();
        Ok(())
    }

    /// Asks LXC about every container (one `lxc-info` each) from a few threads, so a
    /// host with dozens of containers is ready, and starts them at boot, sooner.
    fn refresh_all_states(self: &Arc<Self>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let all = self.all_containers();
        // The watchers of adopted containers are tasks on the daemon's runtime.
        let handle = tokio::runtime::Handle::try_current().ok();
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..all.len().clamp(1, 8) {
                s.spawn(|| {
                    let _runtime = handle.as_ref().map(|h| h.enter());
                    while let Some(c) = all.get(next.fetch_add(1, Ordering::Relaxed)) {
                        self.refresh_state(c);
                    }
                });
            }
        });
    }

    fn all_containers(&self) -> Vec<Arc<Container>> {
        self.containers
            .read()
            .expect("containers lock")
            .values()
            .cloned()
            .collect()
    }

    fn container(&self, name: &str) -> EngineResult<Arc<Container>> {
        self.containers
            .read()
            .expect("containers lock")
            .get(name)
            .cloned()
            .ok_or_else(|| {
                EngineError::not_found(format!(
                    "no container named {name:?}; `osm-hostctl list` shows the containers"
                ))
            })
    }

    pub fn container_names(&self) -> Vec<String> {
        self.containers
            .read()
            .expect("containers lock")
            .keys()
            .cloned()
            .collect()
    }

    pub fn container_info(&self, name: &str) -> EngineResult<ContainerInfo> {
        Ok(self.container(name)?.info())
    }

    /// Addresses LXC sees inside a running container (empty when stopped).
    pub fn container_addresses(&self, name: &str) -> Vec<String> {
        match self.container(name) {
            Ok(c) => match c.info() {
                info if info.state == RunState::Running => info
                    .init_pid
                    .map(|pid| self.host.lxc_addresses(pid))
                    .unwrap_or_default(),
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }

    /// Bytes used by what the customer changed (the container's upper dir and files).
    pub fn container_disk_usage(&self, name: &str) -> EngineResult<u64> {
        self.container(name)?;
        let dir = self.store.container_dir(name);
        crate::fsutil::disk_usage(&dir)
            .map_err(|e| EngineError::io(format!("measuring {}", dir.display()), &e))
    }

    fn reserve(&self, name: &str, what: &str) -> EngineResult<NameClaim<'_>> {
        let key = format!("{what}:{name}");
        let mut r = self.reserved.lock().expect("reserved lock");
        if !r.insert(key.clone()) {
            return Err(EngineError::busy(format!(
                "{what} {name:?} is being created right now; wait for that to finish"
            )));
        }
        Ok(NameClaim { engine: self, key })
    }
}

/// A name held while it is being created; released on drop.
struct NameClaim<'a> {
    engine: &'a Engine,
    key: String,
}

impl NameClaim<'_> {
    /// Keeps the name reserved beyond this guard; release it with [`Engine::release`].
    fn into_key(self) -> String {
        let key = self.key.clone();
        std::mem::forget(self);
        key
    }
}

impl Engine {
    fn release(&self, key: &str) {
        self.reserved.lock().expect("reserved lock").remove(key);
    }
}

impl Drop for NameClaim<'_> {
    fn drop(&mut self) {
        self.engine.release(&self.key);
    }
}

/// Runs blocking host work off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> EngineResult<T> + Send + 'static,
) -> EngineResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::failed(format!("internal task failed: {e}")))?
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod boot_tests;

#[cfg(test)]
mod seam_tests;
