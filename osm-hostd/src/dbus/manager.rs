//! `uk.co.devtank.OsmHost1.Manager`: containers and bases by name, and job creation.

use super::auth::Auth;
use super::error::{logged, Error, Result};
use super::methods::{self, admit, path};
use super::Exports;
use crate::engine::{CreateRequest, Engine, SetRequest};
use osm_host_bus as api;
use osm_host_bus::wire::option;
use std::collections::HashMap;
use std::sync::Arc;
use zbus::message::Header;
use zbus::object_server::ObjectServer;
use zbus::zvariant::{OwnedFd, OwnedObjectPath, OwnedValue};
use zbus::Connection;

pub struct Manager {
    pub engine: Arc<Engine>,
    pub auth: Auth,
    pub exports: Exports,
}

/// Reads the `a{sv}` options of CreateContainer, refusing unknown keys and wrong types.
fn create_request(
    name: String,
    base: String,
    options: HashMap<String, OwnedValue>,
) -> Result<CreateRequest> {
    let mut req = CreateRequest {
        name,
        base,
        ..Default::default()
    };
    for (key, value) in options {
        let bad = |want: &str| Error::InvalidArgument(format!("option {key:?} must be {want}"));
        match key.as_str() {
            option::AUTOSTART => {
                req.autostart = autostart_arg(&value).map_err(|_| bad(AUTOSTART_TYPE))?
            }
            option::BOOT_PRIORITY => {
                req.boot_priority = i32::try_from(&value).map_err(|_| bad("an integer (i)"))?
            }
            option::BOOT_DELAY => {
                req.boot_delay = u32::try_from(&value).map_err(|_| bad("seconds (u)"))?
            }
            option::MEMORY => {
                req.memory = Some(u64::try_from(&value).map_err(|_| bad("a byte count (t)"))?)
            }
            option::CPUS => {
                req.cpus = Some(u32::try_from(&value).map_err(|_| bad("a CPU count (u)"))?)
            }
            option::IP => {
                req.ip = Some(String::try_from(value).map_err(|_| bad("an IPv4 address (s)"))?)
            }
            option::PRIVILEGED => {
                req.privileged = bool::try_from(&value).map_err(|_| bad("a boolean (b)"))?
            }
            option::LAYERS => {
                req.layers =
                    <Vec<String>>::try_from(value).map_err(|_| bad("a list of layer names (as)"))?
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown option {key:?}; known options: {}",
                    option::CREATE.join(", ")
                )))
            }
        }
    }
    Ok(req)
}

const AUTOSTART_TYPE: &str = "a boolean (b) or \"true\", \"false\" or \"last-state\" (s)";

/// `autostart` as a boolean (the original form) or a policy string.
fn autostart_arg(value: &OwnedValue) -> std::result::Result<crate::spec::Autostart, ()> {
    if let Ok(b) = bool::try_from(value) {
        return Ok(if b {
            crate::spec::Autostart::Always
        } else {
            crate::spec::Autostart::Never
        });
    }
    let text = <&str>::try_from(value).map_err(|_| ())?;
    text.parse().map_err(|_| ())
}

/// Reads the `a{sv}` settings of SetContainer, refusing unknown keys and wrong types.
fn set_request(settings: HashMap<String, OwnedValue>) -> Result<SetRequest> {
    let mut req = SetRequest::default();
    for (key, value) in settings {
        let bad = |want: &str| Error::InvalidArgument(format!("setting {key:?} must be {want}"));
        match key.as_str() {
            option::AUTOSTART => {
                req.autostart = Some(autostart_arg(&value).map_err(|_| bad(AUTOSTART_TYPE))?)
            }
            option::BOOT_PRIORITY => {
                req.boot_priority = Some(i32::try_from(&value).map_err(|_| bad("an integer (i)"))?)
            }
            option::BOOT_DELAY => {
                req.boot_delay = Some(u32::try_from(&value).map_err(|_| bad("seconds (u)"))?)
            }
            option::MEMORY => {
                req.memory = Some(
                    u64::try_from(&value).map_err(|_| bad("a byte count (t), 0 for no limit"))?,
                )
            }
            option::CPUS => {
                req.cpus = Some(
                    u32::try_from(&value).map_err(|_| bad("a CPU count (u), 0 for no limit"))?,
                )
            }
            option::UNPRIVILEGED => {
                if !bool::try_from(&value).map_err(|_| bad("true (b)"))? {
                    return Err(Error::InvalidArgument(
                        "unprivileged = false is not supported: a container is not converted back to privileged".into(),
                    ));
                }
                req.unprivileged = true;
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown setting {key:?}; known settings: {}",
                    option::SET.join(", ")
                )))
            }
        }
    }
    Ok(req)
}

fn network_info(info: &crate::engine::NetworkInfo, host_id: &str) -> api::wire::NetworkInfo {
    let (state, pid, restarts) = match &info.dnsmasq {
        Some(d) => (d.state.as_str(), d.pid.unwrap_or(0), d.restarts),
        None => ("unmanaged", 0, 0),
    };
    api::wire::NetworkInfo {
        bridge: info.bridge.clone(),
        address: info.address.clone(),
        subnet: info.subnet.clone(),
        range_first: info.range_first.clone(),
        range_last: info.range_last.clone(),
        used: info.used,
        free: info.free,
        nat: info.nat,
        managed: info.managed,
        dnsmasq_state: state.to_string(),
        dnsmasq_pid: pid,
        dnsmasq_restarts: restarts,
        host_id: host_id.to_string(),
    }
}

/// Every container's backup status, and the status of backups of containers since
/// deleted; sorted by name.
fn backup_rows(
    status: &crate::backup::status::StatusFile,
    names: &[String],
) -> Vec<api::wire::BackupStatus> {
    let mut all: Vec<String> = names.to_vec();
    for n in status.containers.keys() {
        if !all.contains(n) {
            all.push(n.clone());
        }
    }
    all.sort();
    all.into_iter()
        .map(|name| {
            let e = status.containers.get(&name).cloned().unwrap_or_default();
            let a = e.last_attempt.unwrap_or_default();
            let s = e.last_success.unwrap_or_default();
            api::wire::BackupStatus {
                name,
                last_attempt: a.time * 1_000_000,
                last_attempt_duration_ms: a.duration_ms,
                last_attempt_bytes_sent: a.bytes_sent,
                last_result: a.result,
                last_success: s.time * 1_000_000,
                last_success_duration_ms: s.duration_ms,
                last_success_bytes_sent: s.bytes_sent,
            }
        })
        .collect()
}

#[zbus::interface(name = "uk.co.devtank.OsmHost1.Manager")]
impl Manager {
    async fn create_container(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        base: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let req = create_request(name.clone(), base, options)?;
        logged("create", &name, self.engine.create_container(req).await)?;
        Ok(self.exports.container(server, &name).await)
    }

    async fn start_container(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.start(&name).await
    }

    async fn stop_container(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        force: bool,
        timeout: u32,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.stop(&name, force, timeout).await
    }

    async fn restart_container(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        timeout: u32,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.restart(&name, timeout).await
    }

    async fn delete_container(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        force: bool,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.delete(&name, force).await
    }

    async fn get_container(&self, name: String) -> Result<OwnedObjectPath> {
        self.engine.container_info(&name)?;
        Ok(path(api::container_path(&name)))
    }

    async fn build_base(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        recipe: String,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let job = logged("build base", &name, self.engine.build_base(&name, &recipe))?;
        Ok(self.exports.job(server, job.id).await)
    }

    async fn import_base(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        archive: OwnedFd,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let fd: std::os::fd::OwnedFd = archive.into();
        let job = logged(
            "import base",
            &name,
            self.engine.import_base(&name, std::fs::File::from(fd)),
        )?;
        Ok(self.exports.job(server, job.id).await)
    }

    async fn delete_base(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.delete_base(&name).await
    }

    async fn get_base(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
    ) -> Result<OwnedObjectPath> {
        self.engine.base_info(&name)?;
        Ok(self.exports.base(server, &name).await)
    }

    async fn build_layer(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        recipe: String,
        key_files: HashMap<String, String>,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let keys = key_files.into_iter().collect();
        let job = logged(
            "build layer",
            &name,
            self.engine.build_layer(&name, &recipe, &keys),
        )?;
        Ok(self.exports.job(server, job.id).await)
    }

    #[allow(clippy::too_many_arguments)] // zbus passes the header, connection and server
    async fn import_layer(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        base: String,
        layers: Vec<String>,
        archive: OwnedFd,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let fd: std::os::fd::OwnedFd = archive.into();
        let job = logged(
            "import layer",
            &name,
            self.engine
                .import_layer(&name, &base, &layers, std::fs::File::from(fd)),
        )?;
        Ok(self.exports.job(server, job.id).await)
    }

    async fn prune_bases(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<Vec<String>> {
        self.auth.require_admin(conn, &hdr).await?;
        logged("prune bases", &name, self.engine.prune_bases(&name).await)
    }

    /// Starts a job writing layer `name` as a tar.zst to `archive` (open for writing).
    async fn export_layer(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        archive: OwnedFd,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let fd: std::os::fd::OwnedFd = archive.into();
        let job = logged(
            "export layer",
            &name,
            self.engine.export_layer(&name, std::fs::File::from(fd)),
        )?;
        Ok(self.exports.job(server, job.id).await)
    }

    /// Starts a job moving `name` onto `base` and `layers` (lowest first); `dry_run`
    /// only reports the conflicts (the job's `Output`).
    #[allow(clippy::too_many_arguments)] // zbus passes the header, connection and server
    async fn rebase(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        base: String,
        layers: Vec<String>,
        dry_run: bool,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let job = logged(
            "rebase",
            &name,
            self.engine.rebase(&name, &base, &layers, dry_run),
        )?;
        Ok(self.exports.job(server, job.id).await)
    }

    /// Starts a job moving every container on base `from` to base `to`, one at a time.
    async fn rebase_all(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        from: String,
        to: String,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let job = logged("rebase all", &from, self.engine.rebase_all(&from, &to))?;
        Ok(self.exports.job(server, job.id).await)
    }

    async fn list_layers(&self) -> Result<Vec<api::proxies::LayerWire>> {
        Ok(self
            .engine
            .layer_list()
            .into_iter()
            .map(|l| (l.name, l.created, l.base, l.layers, l.key))
            .collect())
    }

    async fn delete_layer(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<()> {
        self.auth.require_admin(conn, &hdr).await?;
        logged("delete layer", &name, self.engine.delete_layer(&name).await)
    }

    /// Deletes the unused older `NAME@VERSION` layers (of `name`, or of every layer when
    /// `name` is ""); returns their names.
    async fn prune_layers(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<Vec<String>> {
        self.auth.require_admin(conn, &hdr).await?;
        logged("prune layers", &name, self.engine.prune_layers(&name).await)
    }

    /// Starts a backup job of `names`, or of every container with `all`.
    async fn run_backup(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        names: Vec<String>,
        all: bool,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let target = if all {
            "all".to_string()
        } else {
            names.join(",")
        };
        let job = logged("backup", &target, self.engine.run_backup(names, all))?;
        Ok(self.exports.job(server, job.id).await)
    }

    /// Starts a job restoring `name` from its backup tree `from` ("" = newest) into
    /// `as_name` ("" = over `name` itself, after a safety snapshot).
    async fn restore_backup(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        from: String,
        as_name: String,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let job = logged(
            "restore",
            &name,
            self.engine.restore_backup(&name, &from, &as_name).await,
        )?;
        Ok(self.exports.job(server, job.id).await)
    }

    /// Per container: name, last attempt (time µs, duration ms, bytes sent, result),
    /// last success (time µs, duration ms, bytes sent); zeros when there is none.
    async fn get_backup_status(&self) -> Vec<api::wire::BackupStatus> {
        backup_rows(&self.engine.backup_status(), &self.engine.container_names())
    }

    /// The backup trees of one container on the target (`mirror` or dated names).
    async fn list_backups(&self, name: String) -> Result<Vec<String>> {
        let engine = self.engine.clone();
        let r = tokio::task::spawn_blocking(move || engine.list_backups(&name))
            .await
            .map_err(|e| Error::Failed(e.to_string()))?;
        Ok(r?)
    }

    /// The bridge, its subnet, address usage and dnsmasq's state (see `client.rs`).
    async fn get_network_info(&self) -> api::wire::NetworkInfo {
        network_info(&self.engine.network_info(), self.engine.host_id())
    }

    /// What the host has and what is taken, for placement (see the bus crate's docs).
    async fn get_capacity(&self) -> HashMap<String, OwnedValue> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || super::fleet::capacity_map(&engine.capacity()))
            .await
            .unwrap_or_default()
    }

    /// Problems that need an operator, one sentence each; empty when healthy.
    async fn check_health(&self, max_backup_age: u64) -> Vec<String> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.health(max_backup_age))
            .await
            .unwrap_or_else(|e| vec![format!("the health check failed inside the daemon: {e}")])
    }

    /// As `RestoreBackup`, from the backups host `host` (its id; "" = this host) made.
    #[allow(clippy::too_many_arguments)]
    async fn restore_backup_from_host(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        from: String,
        as_name: String,
        host: String,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let job = logged(
            "restore",
            &name,
            self.engine
                .restore_backup_from(&name, &from, &as_name, &host)
                .await,
        )?;
        Ok(self.exports.job(server, job.id).await)
    }

    /// The backup trees host `host` (its id; "" = this host) made of container `name`.
    async fn list_backups_from_host(&self, name: String, host: String) -> Result<Vec<String>> {
        let engine = self.engine.clone();
        let r = tokio::task::spawn_blocking(move || engine.list_backups_of(&name, &host))
            .await
            .map_err(|e| Error::Failed(e.to_string()))?;
        Ok(r?)
    }

    /// Starts a job bringing back every container host `host` ("" = this host) backed up.
    async fn restore_all_backups(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        host: String,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let job = logged("restore all", &host, self.engine.restore_all_backups(&host))?;
        Ok(self.exports.job(server, job.id).await)
    }

    /// Starts a job re-checking backup trees against their manifests.
    async fn verify_backups(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        names: Vec<String>,
        all: bool,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let target = if all {
            "all".to_string()
        } else {
            names.join(",")
        };
        let job = logged(
            "backup verify",
            &target,
            self.engine.verify_backups(names, all),
        )?;
        Ok(self.exports.job(server, job.id).await)
    }

    async fn create_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        description: String,
        cleanup: String,
        userdata: HashMap<String, String>,
    ) -> Result<u32> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted
            .create_snapshot(&name, description, cleanup, userdata)
            .await
    }

    async fn list_snapshots(&self, name: String) -> Result<Vec<super::snapshots::SnapshotWire>> {
        methods::list_snapshots(&self.engine, &name)
    }

    async fn delete_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        num: u32,
    ) -> Result<()> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.delete_snapshot(&name, num).await
    }

    async fn cleanup_snapshots(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<Vec<u32>> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted.cleanup_snapshots(&name).await
    }

    async fn restore_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        num: u32,
    ) -> Result<OwnedObjectPath> {
        let admitted = admit(&self.engine, &self.auth, conn, &hdr).await?;
        admitted
            .restore_snapshot(server, &self.exports, &name, num)
            .await
    }

    /// Changes a container's settings (`autostart` b or s, `boot_priority` i,
    /// `boot_delay` u, `memory` t, `cpus` u; 0 removes a limit).
    async fn set_container(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        settings: HashMap<String, OwnedValue>,
    ) -> Result<()> {
        self.auth.require_admin(conn, &hdr).await?;
        let req = set_request(settings)?;
        logged("set", &name, self.engine.set_container(&name, req).await)
    }

    /// Host shutdown: stops every running container in reverse boot order and records
    /// which ran (for `autostart = "last-state"`). Returns them in the order they stopped.
    async fn shutdown(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<String>> {
        self.auth.require_admin(conn, &hdr).await?;
        logged("host shutdown", "host", self.engine.shutdown_host().await)
    }

    /// Publishes HTTPS vhosts `a(sq)` (host, container port) and TLS streams `a(qq)`
    /// (public port, container port) of a container through the host's NGINX.
    /// Returns whether anything changed.
    async fn publish(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        http: super::publish::HttpWire,
        tls_streams: super::publish::StreamWire,
    ) -> Result<bool> {
        self.auth.require_admin(conn, &hdr).await?;
        let (http, streams) = (
            super::publish::routes(http),
            super::publish::streams(tls_streams),
        );
        logged(
            "publish",
            &name,
            self.engine.publish(&name, http, streams).await,
        )
    }

    /// Removes vhosts by host name and TLS streams by public port, or everything with
    /// `all`. Returns whether anything changed.
    async fn unpublish(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        hosts: Vec<String>,
        tls_streams: Vec<u16>,
        all: bool,
    ) -> Result<bool> {
        self.auth.require_admin(conn, &hdr).await?;
        logged(
            "unpublish",
            &name,
            self.engine.unpublish(&name, hosts, tls_streams, all).await,
        )
    }

    /// Adds a customer: creates the container (options as CreateContainer's, plus
    /// `base` s; default the newest base and the `osm-stack` layer if there is one,
    /// autostart on), publishes its three vhosts and the MQTT TLS stream on `mqtt_port`,
    /// and starts it. Returns the container's path.
    async fn add_customer(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        mqtt_port: u16,
        mut options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath> {
        self.auth.require_admin(conn, &hdr).await?;
        let base = match options.remove("base") {
            Some(v) => String::try_from(v).map_err(|_| {
                Error::InvalidArgument("option \"base\" must be a base name (s)".into())
            })?,
            None => String::new(),
        };
        if !options.contains_key("autostart") {
            options.insert("autostart".into(), OwnedValue::from(true));
        }
        let req = create_request(name.clone(), base, options)?;
        logged(
            "customer add",
            &name,
            self.engine.add_customer(req, mqtt_port).await,
        )?;
        Ok(self.exports.container(server, &name).await)
    }

    /// Stops a customer's container, removes its vhosts and port, and deletes it.
    async fn delete_customer(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<()> {
        self.auth.require_admin(conn, &hdr).await?;
        logged(
            "customer delete",
            &name,
            self.engine.delete_customer(&name).await,
        )
    }

    /// The customers: (name, host names, MQTT ports, state).
    async fn list_customers(&self) -> Vec<(String, Vec<String>, Vec<u16>, String)> {
        self.engine
            .customers()
            .into_iter()
            .map(|c| (c.name, c.hosts, c.mqtt_ports, c.state))
            .collect()
    }

    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// This host's id in backup trees (a uuid kept in the store).
    #[zbus(property)]
    fn host_id(&self) -> String {
        self.engine.host_id().to_string()
    }

    #[zbus(property)]
    fn store_root(&self) -> String {
        self.engine.config().store_root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Value;

    fn opts(pairs: Vec<(&str, Value<'_>)>) -> HashMap<String, OwnedValue> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.try_to_owned().unwrap()))
            .collect()
    }

    #[test]
    fn set_settings_are_typed_and_checked() {
        let r = set_request(opts(vec![
            ("autostart", Value::from("last-state")),
            ("boot_priority", Value::from(-2i32)),
            ("boot_delay", Value::from(5u32)),
        ]))
        .unwrap();
        assert_eq!(r.autostart, Some(crate::spec::Autostart::LastState));
        assert_eq!(r.boot_priority, Some(-2));
        assert_eq!(r.boot_delay, Some(5));
        assert_eq!(
            set_request(opts(vec![("autostart", Value::from(true))]))
                .unwrap()
                .autostart,
            Some(crate::spec::Autostart::Always)
        );
        for bad in [
            opts(vec![("autostart", Value::from("sometimes"))]),
            opts(vec![("boot_priority", Value::from("high"))]),
            opts(vec![("colour", Value::from("red"))]),
        ] {
            assert!(set_request(bad).is_err());
        }
    }

    #[test]
    fn create_options_are_typed_and_checked() {
        let r = create_request(
            "web1".into(),
            "bb".into(),
            opts(vec![
                ("autostart", Value::from(true)),
                ("memory", Value::from(1u64 << 30)),
                ("cpus", Value::from(2u32)),
                ("layers", Value::from(vec!["stack".to_string()])),
            ]),
        )
        .unwrap();
        assert!(r.autostart.enabled());
        assert_eq!((r.memory, r.cpus), (Some(1 << 30), Some(2)));
        assert_eq!(r.layers, vec!["stack"]);
        let err = create_request(
            "w".into(),
            "b".into(),
            opts(vec![("memory", Value::from("2G"))]),
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(m) if m.contains("memory")));
        let err = create_request(
            "w".into(),
            "b".into(),
            opts(vec![("colour", Value::from(1u32))]),
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(m) if m.contains("colour")));
    }

    #[test]
    fn isolation_options_are_checked() {
        let r = create_request("w".into(), "b".into(), opts(vec![])).unwrap();
        assert!(!r.privileged, "unprivileged unless asked");
        let r = create_request(
            "w".into(),
            "b".into(),
            opts(vec![("privileged", Value::from(true))]),
        )
        .unwrap();
        assert!(r.privileged);
        assert!(create_request(
            "w".into(),
            "b".into(),
            opts(vec![("privileged", Value::from("yes"))])
        )
        .is_err());
        let r = set_request(opts(vec![("unprivileged", Value::from(true))])).unwrap();
        assert!(r.unprivileged && !r.is_empty());
        let err = set_request(opts(vec![("unprivileged", Value::from(false))])).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(m) if m.contains("not converted back")));
    }
}
