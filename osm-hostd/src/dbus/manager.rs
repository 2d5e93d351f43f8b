//! `uk.co.devtank.OsmHost1.Manager`: containers and bases by name, and job creation.

use super::auth::require_admin;
use super::error::{logged, Error, Result};
use super::{register_base, register_container, register_job, timeout_arg};
use crate::engine::{CreateRequest, Engine, SetRequest};
use osm_host_bus as api;
use std::collections::HashMap;
use std::sync::Arc;
use zbus::message::Header;
use zbus::object_server::ObjectServer;
use zbus::zvariant::{OwnedFd, OwnedObjectPath, OwnedValue};
use zbus::Connection;

pub struct Manager {
    pub engine: Arc<Engine>,
}

fn path(p: String) -> OwnedObjectPath {
    OwnedObjectPath::try_from(p).expect("paths built from validated names are valid")
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
            "autostart" => req.autostart = autostart_arg(&value).map_err(|_| bad(AUTOSTART_TYPE))?,
            "boot_priority" => {
                req.boot_priority = i32::try_from(&value).map_err(|_| bad("an integer (i)"))?
            }
            "boot_delay" => {
                req.boot_delay = u32::try_from(&value).map_err(|_| bad("seconds (u)"))?
            }
            "memory" => {
                req.memory = Some(u64::try_from(&value).map_err(|_| bad("a byte count (t)"))?)
            }
            "cpus" => req.cpus = Some(u32::try_from(&value).map_err(|_| bad("a CPU count (u)"))?),
            "ip" => req.ip = Some(String::try_from(value).map_err(|_| bad("an IPv4 address (s)"))?),
            "layers" => {
                req.layers =
                    <Vec<String>>::try_from(value).map_err(|_| bad("a list of layer names (as)"))?
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown option {key:?}; known options: autostart, boot_priority, boot_delay, memory, cpus, layers, ip"
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
            "autostart" => {
                req.autostart = Some(autostart_arg(&value).map_err(|_| bad(AUTOSTART_TYPE))?)
            }
            "boot_priority" => {
                req.boot_priority = Some(i32::try_from(&value).map_err(|_| bad("an integer (i)"))?)
            }
            "boot_delay" => {
                req.boot_delay = Some(u32::try_from(&value).map_err(|_| bad("seconds (u)"))?)
            }
            "memory" => {
                req.memory = Some(
                    u64::try_from(&value).map_err(|_| bad("a byte count (t), 0 for no limit"))?,
                )
            }
            "cpus" => {
                req.cpus =
                    Some(u32::try_from(&value).map_err(|_| bad("a CPU count (u), 0 for no limit"))?)
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown setting {key:?}; known settings: autostart, boot_priority, boot_delay, memory, cpus"
                )))
            }
        }
    }
    Ok(req)
}

fn network_info_map(info: &crate::engine::NetworkInfo) -> HashMap<String, OwnedValue> {
    use zbus::zvariant::Value;
    let mut m: HashMap<String, OwnedValue> = HashMap::new();
    let mut put = |k: &str, v: Value<'_>| {
        if let Ok(v) = v.try_to_owned() {
            m.insert(k.to_string(), v);
        }
    };
    put("Bridge", Value::from(info.bridge.as_str()));
    put("Address", Value::from(info.address.as_str()));
    put("Subnet", Value::from(info.subnet.as_str()));
    put("RangeFirst", Value::from(info.range_first.as_str()));
    put("RangeLast", Value::from(info.range_last.as_str()));
    put("Used", Value::from(info.used));
    put("Free", Value::from(info.free));
    put("Nat", Value::from(info.nat));
    put("Managed", Value::from(info.managed));
    let (state, pid, restarts) = match &info.dnsmasq {
        Some(d) => (d.state.as_str(), d.pid.unwrap_or(0), d.restarts),
        None => ("unmanaged", 0, 0),
    };
    put("DnsmasqState", Value::from(state));
    put("DnsmasqPid", Value::from(pid));
    put("DnsmasqRestarts", Value::from(restarts));
    m
}

type BackupRow = (String, u64, u64, u64, String, u64, u64, u64);

fn backup_rows(status: &crate::backup::status::StatusFile, names: &[String]) -> Vec<BackupRow> {
    let mut all: Vec<String> = names.to_vec();
    for n in status.containers.keys() {
        if !all.contains(n) {
            all.push(n.clone());
        }
    }
    all.sort();
    all.into_iter()
        .map(|n| {
            let e = status.containers.get(&n).cloned().unwrap_or_default();
            let a = e.last_attempt.unwrap_or_default();
            let s = e.last_success.unwrap_or_default();
            (
                n,
                a.time,
                a.duration_ms,
                a.bytes_sent,
                a.result,
                s.time,
                s.duration_ms,
                s.bytes_sent,
            )
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
        require_admin(conn, &hdr).await?;
        let req = create_request(name.clone(), base, options)?;
        logged("create", &name, self.engine.create_container(req).await)?;
        register_container(server, &self.engine, &name).await;
        Ok(path(api::container_path(&name)))
    }

    async fn start_container(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged("start", &name, self.engine.start_container(&name).await)?;
        Ok(())
    }

    async fn stop_container(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        force: bool,
        timeout: u32,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged(
            "stop",
            &name,
            self.engine
                .stop_container(&name, timeout_arg(timeout), force)
                .await,
        )?;
        Ok(())
    }

    async fn restart_container(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        timeout: u32,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged(
            "restart",
            &name,
            self.engine
                .restart_container(&name, timeout_arg(timeout))
                .await,
        )
    }

    async fn delete_container(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        force: bool,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged(
            "delete",
            &name,
            self.engine.delete_container(&name, force).await,
        )
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
        require_admin(conn, &hdr).await?;
        let job = logged("build base", &name, self.engine.build_base(&name, &recipe))?;
        register_job(server, &self.engine, job.id).await;
        Ok(path(api::job_path(job.id)))
    }

    async fn import_base(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        archive: OwnedFd,
    ) -> Result<OwnedObjectPath> {
        require_admin(conn, &hdr).await?;
        let fd: std::os::fd::OwnedFd = archive.into();
        let job = logged(
            "import base",
            &name,
            self.engine.import_base(&name, std::fs::File::from(fd)),
        )?;
        register_job(server, &self.engine, job.id).await;
        Ok(path(api::job_path(job.id)))
    }

    async fn delete_base(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged("delete base", &name, self.engine.delete_base(&name).await)
    }

    async fn get_base(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
    ) -> Result<OwnedObjectPath> {
        self.engine.base_info(&name)?;
        register_base(server, &self.engine, &name).await;
        Ok(path(api::base_path(&name)))
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
        require_admin(conn, &hdr).await?;
        let keys = key_files.into_iter().collect();
        let job = logged(
            "build layer",
            &name,
            self.engine.build_layer(&name, &recipe, &keys),
        )?;
        register_job(server, &self.engine, job.id).await;
        Ok(path(api::job_path(job.id)))
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
        require_admin(conn, &hdr).await?;
        let fd: std::os::fd::OwnedFd = archive.into();
        let job = logged(
            "import layer",
            &name,
            self.engine
                .import_layer(&name, &base, &layers, std::fs::File::from(fd)),
        )?;
        register_job(server, &self.engine, job.id).await;
        Ok(path(api::job_path(job.id)))
    }

    async fn prune_bases(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<Vec<String>> {
        require_admin(conn, &hdr).await?;
        logged("prune bases", &name, self.engine.prune_bases(&name).await)
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
        require_admin(conn, &hdr).await?;
        logged("delete layer", &name, self.engine.delete_layer(&name).await)
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
        require_admin(conn, &hdr).await?;
        let target = if all {
            "all".to_string()
        } else {
            names.join(",")
        };
        let job = logged("backup", &target, self.engine.run_backup(names, all))?;
        register_job(server, &self.engine, job.id).await;
        Ok(path(api::job_path(job.id)))
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
        require_admin(conn, &hdr).await?;
        let job = logged(
            "restore",
            &name,
            self.engine.restore_backup(&name, &from, &as_name).await,
        )?;
        register_job(server, &self.engine, job.id).await;
        Ok(path(api::job_path(job.id)))
    }

    /// Per container: name, last attempt (time s, duration ms, bytes sent, result),
    /// last success (time s, duration ms, bytes sent); zeros when there is none.
    async fn get_backup_status(&self) -> Vec<BackupRow> {
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
    async fn get_network_info(&self) -> HashMap<String, OwnedValue> {
        network_info_map(&self.engine.network_info())
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
        require_admin(conn, &hdr).await?;
        let req = super::snapshots::request(description, cleanup, userdata);
        logged(
            "create snapshot",
            &name,
            self.engine.create_snapshot(&name, req).await,
        )
    }

    async fn list_snapshots(&self, name: String) -> Result<Vec<super::snapshots::SnapshotWire>> {
        Ok(self
            .engine
            .list_snapshots(&name)?
            .iter()
            .map(super::snapshots::to_wire)
            .collect())
    }

    async fn delete_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        num: u32,
    ) -> Result<()> {
        require_admin(conn, &hdr).await?;
        logged(
            "delete snapshot",
            &name,
            self.engine.delete_snapshot(&name, num).await,
        )
    }

    async fn cleanup_snapshots(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<Vec<u32>> {
        require_admin(conn, &hdr).await?;
        logged(
            "cleanup snapshots",
            &name,
            self.engine.cleanup_snapshots(&name).await,
        )
    }

    async fn restore_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        num: u32,
    ) -> Result<OwnedObjectPath> {
        require_admin(conn, &hdr).await?;
        let job = logged(
            "restore snapshot",
            &name,
            self.engine.restore_snapshot(&name, num),
        )?;
        register_job(server, &self.engine, job.id).await;
        Ok(path(api::job_path(job.id)))
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
        require_admin(conn, &hdr).await?;
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
        require_admin(conn, &hdr).await?;
        logged("host shutdown", "host", self.engine.shutdown_host().await)
    }

    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
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
}
