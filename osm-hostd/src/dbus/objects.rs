//! The per-object interfaces: Container, Base and Job. Each reads the engine when asked,
//! so properties are never stale copies.

use super::auth::require_admin;
use super::error::{logged, Result};
use super::snapshots::{request, to_wire, SnapshotWire};
use super::{register_job, timeout_arg};
use crate::engine::Engine;
use std::collections::HashMap;
use std::sync::Arc;
use zbus::message::Header;
use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

pub struct ContainerObject {
    pub engine: Arc<Engine>,
    pub name: String,
}

impl ContainerObject {
    fn info(&self) -> zbus::fdo::Result<crate::engine::ContainerInfo> {
        self.engine
            .container_info(&self.name)
            .map_err(|e| zbus::fdo::Error::UnknownObject(e.to_string()))
    }
}

#[zbus::interface(name = "uk.co.devtank.OsmHost1.Container")]
impl ContainerObject {
    async fn start(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged(
            "start",
            &self.name,
            self.engine.start_container(&self.name).await,
        )?;
        Ok(())
    }

    async fn stop(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        force: bool,
        timeout: u32,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged(
            "stop",
            &self.name,
            self.engine
                .stop_container(&self.name, timeout_arg(timeout), force)
                .await,
        )?;
        Ok(())
    }

    async fn restart(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        timeout: u32,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged(
            "restart",
            &self.name,
            self.engine
                .restart_container(&self.name, timeout_arg(timeout))
                .await,
        )
    }

    async fn delete(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        force: bool,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged(
            "delete",
            &self.name,
            self.engine.delete_container(&self.name, force).await,
        )
    }

    /// Bytes used by the container's own data (upper dir and files), not its base.
    async fn get_disk_usage(&self) -> Result<u64> {
        let engine = self.engine.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || engine.container_disk_usage(&name))
            .await
            .map_err(|e| super::error::Error::Failed(e.to_string()))?
            .map_err(Into::into)
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
        require_admin(conn, &hdr).await?;
        let req = request(description, cleanup, userdata);
        logged(
            "create snapshot",
            &self.name,
            self.engine.create_snapshot(&self.name, req).await,
        )
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotWire>> {
        Ok(self
            .engine
            .list_snapshots(&self.name)?
            .iter()
            .map(to_wire)
            .collect())
    }

    async fn delete_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        num: u32,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged(
            "delete snapshot",
            &self.name,
            self.engine.delete_snapshot(&self.name, num).await,
        )
    }

    /// Runs the number and timeline cleanups now; returns the deleted numbers.
    async fn cleanup_snapshots(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<u32>> {
        require_admin(conn, &hdr).await?;
        logged(
            "cleanup snapshots",
            &self.name,
            self.engine.cleanup_snapshots(&self.name).await,
        )
    }

    /// Restores the container to snapshot `num`; returns the job.
    async fn restore_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        num: u32,
    ) -> Result<OwnedObjectPath> {
        require_admin(conn, &hdr).await?;
        let job = logged(
            "restore snapshot",
            &self.name,
            self.engine.restore_snapshot(&self.name, num),
        )?;
        register_job(server, &self.engine, job.id).await;
        Ok(OwnedObjectPath::try_from(osm_host_bus::job_path(job.id)).expect("job paths are valid"))
    }

    #[zbus(signal)]
    pub async fn snapshot_created(emitter: &SignalEmitter<'_>, num: u32) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn snapshot_deleted(emitter: &SignalEmitter<'_>, num: u32) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn restored(emitter: &SignalEmitter<'_>, num: u32) -> zbus::Result<()>;

    #[zbus(property)]
    fn snapshot_count(&self) -> u32 {
        self.engine.snapshot_summary(&self.name).count
    }

    /// Date of the newest snapshot, µs since the epoch; 0 when there is none.
    #[zbus(property)]
    fn newest_snapshot(&self) -> u64 {
        (self.engine.snapshot_summary(&self.name).newest.max(0) as u64) * 1_000_000
    }

    #[zbus(property)]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property)]
    fn state(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.state.as_str().to_string())
    }

    #[zbus(property)]
    fn init_pid(&self) -> zbus::fdo::Result<u32> {
        Ok(self.info()?.init_pid.unwrap_or(0))
    }

    #[zbus(property)]
    fn base(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.spec.base)
    }

    #[zbus(property)]
    fn layers(&self) -> zbus::fdo::Result<Vec<String>> {
        Ok(self.info()?.spec.layers)
    }

    /// The newest version of the container's base when it is newer than the pinned one;
    /// "" when none (or the base has no version).
    #[zbus(property)]
    fn newer_base(&self) -> zbus::fdo::Result<String> {
        let base = self.info()?.spec.base;
        Ok(self.engine.newer_base(&base).unwrap_or_default())
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
    fn ipv4_address(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.spec.ipv4.unwrap_or_default())
    }

    #[zbus(property)]
    fn mac_address(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.spec.mac)
    }

    #[zbus(property)]
    fn autostart(&self) -> zbus::fdo::Result<bool> {
        Ok(self.info()?.spec.autostart.enabled())
    }

    /// `true`, `false` or `last-state`.
    #[zbus(property)]
    fn autostart_policy(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.spec.autostart.as_str().to_string())
    }

    #[zbus(property)]
    fn boot_priority(&self) -> zbus::fdo::Result<i32> {
        Ok(self.info()?.spec.boot_priority)
    }

    #[zbus(property)]
    fn boot_delay(&self) -> zbus::fdo::Result<u32> {
        Ok(self.info()?.spec.boot_delay)
    }

    /// A problem that needs an operator ("" when none), e.g. autostart gave up.
    #[zbus(property)]
    fn warning(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.warning)
    }

    #[zbus(property)]
    fn memory_limit(&self) -> zbus::fdo::Result<u64> {
        Ok(self.info()?.spec.memory.unwrap_or(0))
    }

    #[zbus(property)]
    fn cpu_limit(&self) -> zbus::fdo::Result<u32> {
        Ok(self.info()?.spec.cpus.unwrap_or(0))
    }

    #[zbus(property)]
    fn created_at(&self) -> zbus::fdo::Result<u64> {
        Ok(self.info()?.spec.created * 1_000_000)
    }

    #[zbus(property)]
    fn started_at(&self) -> zbus::fdo::Result<u64> {
        Ok(self.info()?.started_at)
    }

    /// µs since the epoch of the last backup attempt (0 = never).
    #[zbus(property)]
    fn last_backup_attempt(&self) -> u64 {
        self.backup().last_attempt.map_or(0, |o| o.time * 1_000_000)
    }

    /// µs since the epoch of the last verified backup (0 = never): alert when stale.
    #[zbus(property)]
    fn last_backup_success(&self) -> u64 {
        self.backup().last_success.map_or(0, |o| o.time * 1_000_000)
    }

    /// `ok`, why the last attempt failed, or "" when never attempted.
    #[zbus(property)]
    fn last_backup_result(&self) -> String {
        self.backup()
            .last_attempt
            .map(|o| o.result)
            .unwrap_or_default()
    }
}

impl ContainerObject {
    fn backup(&self) -> crate::backup::status::ContainerBackup {
        self.engine
            .backup_status()
            .containers
            .remove(&self.name)
            .unwrap_or_default()
    }
}

pub struct BaseObject {
    pub engine: Arc<Engine>,
    pub name: String,
}

#[zbus::interface(name = "uk.co.devtank.OsmHost1.Base")]
impl BaseObject {
    async fn delete(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged(
            "delete base",
            &self.name,
            self.engine.delete_base(&self.name).await,
        )
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

    #[zbus(signal)]
    pub async fn finished(
        emitter: &SignalEmitter<'_>,
        success: bool,
        message: &str,
    ) -> zbus::Result<()>;
}
