//! The per-object interfaces: Container, Base and Job. Their verbs are the Manager's
//! (`methods`); a container's properties all come from one view of it per read.

use super::auth::Auth;
use super::error::Result;
use super::methods::{self, admit};
use super::snapshots::SnapshotWire;
use super::Exports;
use crate::engine::{ContainerView, Engine};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zbus::message::Header;
use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

/// How long a view may serve reads when no event came: long enough for one `list` to
/// read every property of an object, short enough that a change made behind the
/// daemon's back (a snapshot taken with snapper) shows at once.
pub(super) const VIEW_MAX_AGE: Duration = Duration::from_millis(20);

struct CachedView {
    /// The message's (sender, serial), or `None` for reads without one.
    key: Option<(String, u32)>,
    /// The engine's generation when read.
    generation: u64,
    at: Instant,
    view: Arc<ContainerView>,
}

pub struct ContainerObject {
    pub engine: Arc<Engine>,
    pub auth: Auth,
    exports: Exports,
    pub name: String,
    /// The last view read: every property of one `GetAll` (or `list`) comes from it.
    view: Mutex<Option<CachedView>>,
    /// How many times the view was read from the engine.
    views_read: std::sync::atomic::AtomicU64,
}

impl ContainerObject {
    pub(super) fn new(engine: Arc<Engine>, auth: Auth, exports: Exports, name: &str) -> Self {
        ContainerObject {
            engine,
            auth,
            exports,
            name: name.to_string(),
            view: Mutex::new(None),
            views_read: Default::default(),
        }
    }

    /// The container as it is now. One message reading several properties (`GetAll`)
    /// reads it once; reads without a message (the object manager's `list`, signals)
    /// share one read within [`VIEW_MAX_AGE`]; any engine event makes the next read fresh.
    fn view(&self, hdr: Option<&Header<'_>>) -> zbus::fdo::Result<Arc<ContainerView>> {
        let key = hdr.map(|h| {
            (
                h.sender().map(|s| s.to_string()).unwrap_or_default(),
                h.primary().serial_num().get(),
            )
        });
        let generation = self.engine.generation();
        let mut cached = self.view.lock().expect("view lock");
        if let Some(c) = cached.as_ref() {
            if c.generation == generation && c.key == key && c.at.elapsed() < VIEW_MAX_AGE {
                return Ok(c.view.clone());
            }
        }
        let view = Arc::new(
            self.engine
                .container_view(&self.name)
                .map_err(|e| zbus::fdo::Error::UnknownObject(e.to_string()))?,
        );
        *cached = Some(CachedView {
            key,
            generation,
            at: Instant::now(),
            view: view.clone(),
        });
        self.views_read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(view)
    }

    #[cfg(test)]
    pub(super) fn views_read(&self) -> u64 {
        self.views_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Signals the properties that follow the container's state and backups.
    pub(super) async fn signal_changed(&self, emitter: &SignalEmitter<'_>) -> zbus::Result<()> {
        self.state_changed(emitter).await?;
        self.init_pid_changed(emitter).await?;
        self.started_at_changed(emitter).await?;
        self.warning_changed(emitter).await?;
        self.last_backup_attempt_changed(emitter).await?;
        self.last_backup_success_changed(emitter).await?;
        self.last_backup_result_changed(emitter).await
    }

    /// Signals the properties that follow `container.toml`.
    pub(super) async fn signal_spec_changed(
        &self,
        emitter: &SignalEmitter<'_>,
    ) -> zbus::Result<()> {
        self.autostart_changed(emitter).await?;
        self.autostart_policy_changed(emitter).await?;
        self.boot_priority_changed(emitter).await?;
        self.boot_delay_changed(emitter).await?;
        self.memory_limit_changed(emitter).await?;
        self.cpu_limit_changed(emitter).await?;
        self.published_http_changed(emitter).await?;
        self.published_streams_changed(emitter).await?;
        self.preset_changed(emitter).await?;
        self.privileged_changed(emitter).await?;
        self.id_map_base_changed(emitter).await
    }

    pub(super) async fn signal_snapshots_changed(
        &self,
        emitter: &SignalEmitter<'_>,
    ) -> zbus::Result<()> {
        self.snapshot_count_changed(emitter).await?;
        self.newest_snapshot_changed(emitter).await
    }
}

/// Every verb is the Manager's, for this container (see `methods`).
#[zbus::interface(name = "uk.co.devtank.OsmHost1.Container")]
impl ContainerObject {
    async fn start(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.start(&self.name).await
    }

    async fn stop(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        force: bool,
        timeout: u32,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.stop(&self.name, force, timeout).await
    }

    async fn restart(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        timeout: u32,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.restart(&self.name, timeout).await
    }

    async fn delete(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        force: bool,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.delete(&self.name, force).await
    }

    /// Bytes used by the container's own data (upper dir and files), not its base.
    async fn get_disk_usage(&self) -> Result<u64> {
        methods::disk_usage(&self.engine, &self.name).await
    }

    /// Takes a read-only snapshot; returns its number. `cleanup` is "", "number" or
    /// "timeline".
    async fn create_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        description: String,
        cleanup: String,
        userdata: HashMap<String, String>,
    ) -> Result<u32> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted
            .create_snapshot(&self.name, description, cleanup, userdata)
            .await
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotWire>> {
        methods::list_snapshots(&self.engine, &self.name)
    }

    async fn delete_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        num: u32,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.delete_snapshot(&self.name, num).await
    }

    /// Runs the number and timeline cleanups now; returns the deleted numbers.
    async fn cleanup_snapshots(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<u32>> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.cleanup_snapshots(&self.name).await
    }

    /// Restores the container to snapshot `num`; returns the job.
    async fn restore_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        num: u32,
    ) -> Result<OwnedObjectPath> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted
            .restore_snapshot(server, &self.exports, &self.name, num)
            .await
    }

    #[zbus(signal)]
    pub async fn snapshot_created(emitter: &SignalEmitter<'_>, num: u32) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn snapshot_deleted(emitter: &SignalEmitter<'_>, num: u32) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn restored(emitter: &SignalEmitter<'_>, num: u32) -> zbus::Result<()>;

    #[zbus(property)]
    fn snapshot_count(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<u32> {
        Ok(self.view(hdr.as_ref())?.snapshots.count)
    }

    /// Date of the newest snapshot, µs since the epoch; 0 when there is none.
    #[zbus(property)]
    fn newest_snapshot(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<u64> {
        Ok((self.view(hdr.as_ref())?.snapshots.newest.max(0) as u64) * 1_000_000)
    }

    #[zbus(property)]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property)]
    fn state(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        Ok(self.view(hdr.as_ref())?.info.state.as_str().to_string())
    }

    #[zbus(property)]
    fn init_pid(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<u32> {
        Ok(self.view(hdr.as_ref())?.info.init_pid.unwrap_or(0))
    }

    #[zbus(property)]
    fn base(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        Ok(self.view(hdr.as_ref())?.info.spec.base.clone())
    }

    #[zbus(property)]
    fn layers(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<Vec<String>> {
        Ok(self.view(hdr.as_ref())?.info.spec.layers.clone())
    }

    /// The newest version of the container's base when it is newer than the pinned one;
    /// "" when none (or the base has no version).
    #[zbus(property)]
    fn newer_base(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        Ok(self.view(hdr.as_ref())?.newer_base.clone())
    }

    /// For each pinned layer, the newest version of it built over the same base and
    /// lower layers when that is newer; "" when none.
    #[zbus(property)]
    fn newer_layers(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<Vec<String>> {
        Ok(self.view(hdr.as_ref())?.newer_layers.clone())
    }

    #[zbus(property)]
    async fn addresses(&self) -> Vec<String> {
        let engine = self.engine.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || engine.container_addresses(&name))
            .await
            .unwrap_or_default()
    }

    /// The container's fixed address on the bridge ("" if it has none).
    #[zbus(property, name = "IPv4Address")]
    fn ipv4_address(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        Ok(self
            .view(hdr.as_ref())?
            .info
            .spec
            .ipv4
            .clone()
            .unwrap_or_default())
    }

    #[zbus(property)]
    fn mac_address(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        Ok(self.view(hdr.as_ref())?.info.spec.mac.clone())
    }

    #[zbus(property)]
    fn autostart(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<bool> {
        Ok(self.view(hdr.as_ref())?.info.spec.autostart.enabled())
    }

    /// `true`, `false` or `last-state`.
    #[zbus(property)]
    fn autostart_policy(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<String> {
        Ok(self
            .view(hdr.as_ref())?
            .info
            .spec
            .autostart
            .as_str()
            .to_string())
    }

    #[zbus(property)]
    fn boot_priority(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<i32> {
        Ok(self.view(hdr.as_ref())?.info.spec.boot_priority)
    }

    #[zbus(property)]
    fn boot_delay(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<u32> {
        Ok(self.view(hdr.as_ref())?.info.spec.boot_delay)
    }

    /// A problem that needs an operator ("" when none), e.g. autostart gave up.
    #[zbus(property)]
    fn warning(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        Ok(self.view(hdr.as_ref())?.info.warning.clone())
    }

    #[zbus(property)]
    fn memory_limit(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<u64> {
        Ok(self.view(hdr.as_ref())?.info.spec.memory.unwrap_or(0))
    }

    #[zbus(property)]
    fn cpu_limit(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<u32> {
        Ok(self.view(hdr.as_ref())?.info.spec.cpus.unwrap_or(0))
    }

    /// True when it runs without a user namespace (root inside is root on the host).
    #[zbus(property)]
    fn privileged(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<bool> {
        Ok(self
            .view(hdr.as_ref())?
            .info
            .spec
            .unprivileged_map()
            .is_none())
    }

    /// The host uid its root runs as (its range is 65536 ids from there); 0 when
    /// privileged.
    #[zbus(property)]
    fn id_map_base(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<u32> {
        Ok(self
            .view(hdr.as_ref())?
            .info
            .spec
            .unprivileged_map()
            .map_or(0, |m| m.uid))
    }

    #[zbus(property)]
    fn created_at(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<u64> {
        Ok(self.view(hdr.as_ref())?.info.spec.created * 1_000_000)
    }

    #[zbus(property)]
    fn started_at(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<u64> {
        Ok(self.view(hdr.as_ref())?.info.started_at)
    }

    /// HTTPS vhosts through the host's NGINX: (host, container port).
    #[zbus(property)]
    fn published_http(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<super::publish::HttpWire> {
        Ok(super::publish::http_wire(
            &self.view(hdr.as_ref())?.info.spec.publish,
        ))
    }

    /// TLS streams through the host's NGINX: (public port, container port).
    #[zbus(property)]
    fn published_streams(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<super::publish::StreamWire> {
        Ok(super::publish::stream_wire(
            &self.view(hdr.as_ref())?.info.spec.publish,
        ))
    }

    /// `customer` for containers made by `customer add`, else "".
    #[zbus(property)]
    fn preset(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        Ok(self
            .view(hdr.as_ref())?
            .info
            .spec
            .publish
            .preset
            .clone()
            .unwrap_or_default())
    }

    /// µs since the epoch of the last backup attempt (0 = never).
    #[zbus(property)]
    fn last_backup_attempt(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<u64> {
        let view = self.view(hdr.as_ref())?;
        Ok(view
            .backup
            .last_attempt
            .as_ref()
            .map_or(0, |o| o.time * 1_000_000))
    }

    /// µs since the epoch of the last verified backup (0 = never): alert when stale.
    #[zbus(property)]
    fn last_backup_success(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<u64> {
        let view = self.view(hdr.as_ref())?;
        Ok(view
            .backup
            .last_success
            .as_ref()
            .map_or(0, |o| o.time * 1_000_000))
    }

    /// `ok`, why the last attempt failed, or "" when never attempted.
    #[zbus(property)]
    fn last_backup_result(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<String> {
        let view = self.view(hdr.as_ref())?;
        Ok(view
            .backup
            .last_attempt
            .as_ref()
            .map(|o| o.result.clone())
            .unwrap_or_default())
    }
}

pub struct BaseObject {
    pub engine: Arc<Engine>,
    pub auth: Auth,
    pub name: String,
}

#[zbus::interface(name = "uk.co.devtank.OsmHost1.Base")]
impl BaseObject {
    async fn delete(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.delete_base(&self.name).await
    }

    #[zbus(property)]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property)]
    fn created_at(&self) -> zbus::fdo::Result<u64> {
        let info = self
            .engine
            .base_info(&self.name)
            .map_err(|e| zbus::fdo::Error::UnknownObject(e.to_string()))?;
        Ok(info.created * 1_000_000)
    }

    #[zbus(property)]
    fn source(&self) -> zbus::fdo::Result<String> {
        let info = self
            .engine
            .base_info(&self.name)
            .map_err(|e| zbus::fdo::Error::UnknownObject(e.to_string()))?;
        Ok(info.source.describe())
    }

    #[zbus(property)]
    fn used_by(&self) -> Vec<String> {
        self.engine.base_users(&self.name)
    }
}

pub struct JobObject {
    pub engine: Arc<Engine>,
    pub id: u64,
}

impl JobObject {
    fn job(&self) -> zbus::fdo::Result<Arc<crate::engine::jobs::Job>> {
        self.engine
            .jobs
            .get(self.id)
            .ok_or_else(|| zbus::fdo::Error::UnknownObject(format!("job {} is gone", self.id)))
    }
}

#[zbus::interface(name = "uk.co.devtank.OsmHost1.Job")]
impl JobObject {
    #[zbus(property)]
    fn id(&self) -> u64 {
        self.id
    }

    #[zbus(property)]
    fn kind(&self) -> zbus::fdo::Result<String> {
        Ok(self.job()?.kind.to_string())
    }

    #[zbus(property)]
    fn target(&self) -> zbus::fdo::Result<String> {
        Ok(self.job()?.target.clone())
    }

    #[zbus(property)]
    fn progress(&self) -> zbus::fdo::Result<f64> {
        Ok(self.job()?.status().progress)
    }

    #[zbus(property)]
    fn state(&self) -> zbus::fdo::Result<String> {
        Ok(self.job()?.status().state.as_str().to_string())
    }

    #[zbus(property)]
    fn message(&self) -> zbus::fdo::Result<String> {
        Ok(self.job()?.status().message)
    }

    /// A machine-readable result (JSON) once the job is over, for jobs that have one
    /// (a rebase: its conflicts and the rules applied); "" otherwise.
    #[zbus(property)]
    fn output(&self) -> zbus::fdo::Result<String> {
        Ok(self.job()?.output())
    }

    #[zbus(signal)]
    pub async fn finished(
        emitter: &SignalEmitter<'_>,
        success: bool,
        message: &str,
    ) -> zbus::Result<()>;
}
