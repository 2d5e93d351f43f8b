//! Plain structs for what the daemon reports, decoded from D-Bus property maps.
//!
//! Their serde form is the `--json` output: snake_case keys, times in microseconds since
//! the epoch, sizes in bytes, 0 meaning "no limit" / "not running", exactly as the
//! properties carry them.

use std::collections::HashMap;

use serde::Serialize;
use zbus::fdo::ManagedObjects;
use zbus::zvariant::OwnedValue;

use super::exit::CliError;
use osm_host_bus::{BASE_IFACE, CONTAINER_IFACE};

pub type Properties = HashMap<String, OwnedValue>;

/// A container's properties (the `uk.co.devtank.OsmHost1.Container` interface).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    pub name: String,
    pub state: String,
    pub init_pid: u32,
    pub base: String,
    /// A newer version of the pinned base (`NewerBase`); "" when none.
    pub newer_base: String,
    pub layers: Vec<String>,
    /// For each pinned layer, a newer version of it (`NewerLayers`), "" when none.
    pub newer_layers: Vec<String>,
    pub addresses: Vec<String>,
    /// The fixed address on the bridge (`IPv4Address`).
    pub ipv4_address: String,
    pub mac_address: String,
    pub autostart: bool,
    /// `true`, `false` or `last-state`.
    pub autostart_policy: String,
    pub boot_priority: i32,
    pub boot_delay: u32,
    /// "" when none.
    pub warning: String,
    pub memory_limit: u64,
    pub cpu_limit: u32,
    /// No user namespace: root inside is root on the host.
    pub privileged: bool,
    /// The host uid of its root (0 when privileged).
    pub id_map_base: u32,
    pub created_at: u64,
    pub started_at: u64,
    pub snapshot_count: u32,
    /// Date of the newest snapshot (µs since the epoch), 0 when there is none.
    pub newest_snapshot: u64,
    /// What it publishes through the host's NGINX.
    pub published: Published,
    /// `customer` for containers made by `customer add`, else "".
    pub preset: String,
    /// µs since the epoch of the last backup attempt, 0 = never.
    pub last_backup_attempt: u64,
    /// µs since the epoch of the last verified backup, 0 = never.
    pub last_backup_success: u64,
    /// `ok`, why the last attempt failed, or "" when never attempted.
    pub last_backup_result: String,
}

/// A container's vhosts and TLS streams (`PublishedHttp`, `PublishedStreams`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Published {
    pub http: Vec<PublishedHttp>,
    pub tls_streams: Vec<PublishedStream>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PublishedHttp {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PublishedStream {
    pub public: u16,
    pub port: u16,
}

impl Published {
    fn from_properties(p: &Properties) -> Result<Self, CliError> {
        let http: Vec<(String, u16)> = prop(p, "PublishedHttp")?;
        let streams: Vec<(u16, u16)> = prop(p, "PublishedStreams")?;
        Ok(Published {
            http: http
                .into_iter()
                .map(|(host, port)| PublishedHttp { host, port })
                .collect(),
            tls_streams: streams
                .into_iter()
                .map(|(public, port)| PublishedStream { public, port })
                .collect(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.tls_streams.is_empty()
    }
}

/// `info`: the properties plus the disk usage (`null` in JSON when the daemon could not
/// measure it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerDetail {
    #[serde(flatten)]
    pub info: ContainerInfo,
    pub disk_usage: Option<u64>,
}

/// `host info --json`: the bridge, its subnet and dnsmasq (Manager `GetNetworkInfo`,
/// whose wire form is `osm_host_bus::wire::NetworkInfo`), with snake_case names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetworkInfo {
    pub bridge: String,
    pub address: String,
    pub subnet: String,
    pub range_first: String,
    pub range_last: String,
    pub used: u32,
    pub free: u32,
    pub nat: bool,
    pub managed: bool,
    pub dnsmasq_state: String,
    pub dnsmasq_pid: u32,
    pub dnsmasq_restarts: u32,
    /// This host's id in backup trees.
    pub host_id: String,
}

impl From<osm_host_bus::wire::NetworkInfo> for NetworkInfo {
    fn from(w: osm_host_bus::wire::NetworkInfo) -> Self {
        NetworkInfo {
            bridge: w.bridge,
            address: w.address,
            subnet: w.subnet,
            range_first: w.range_first,
            range_last: w.range_last,
            used: w.used,
            free: w.free,
            nat: w.nat,
            managed: w.managed,
            dnsmasq_state: w.dnsmasq_state,
            dnsmasq_pid: w.dnsmasq_pid,
            dnsmasq_restarts: w.dnsmasq_restarts,
            host_id: w.host_id,
        }
    }
}

/// A base image's properties (the `uk.co.devtank.OsmHost1.Base` interface).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BaseInfo {
    pub name: String,
    pub created_at: u64,
    pub source: String,
    pub used_by: Vec<String>,
}

/// A job's properties (the `uk.co.devtank.OsmHost1.Job` interface), as far as we know them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobStatus {
    pub kind: String,
    pub target: String,
    pub progress: f64,
    pub state: String,
    pub message: String,
}

/// Reads one property. A missing property takes its default, so a client keeps working
/// against a daemon that predates it; a property of the wrong type is a daemon bug.
pub(crate) fn prop<T>(props: &Properties, key: &str) -> Result<T, CliError>
where
    T: TryFrom<OwnedValue> + Default,
{
    let Some(value) = props.get(key) else {
        return Ok(T::default());
    };
    let sig = value.value_signature().to_string();
    value
        .try_clone()
        .ok()
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| {
            CliError::failed(format!(
                "osm-hostd sent property {key} with unexpected type {sig}"
            ))
        })
}

impl ContainerInfo {
    pub fn from_properties(p: &Properties) -> Result<Self, CliError> {
        Ok(ContainerInfo {
            name: prop(p, "Name")?,
            state: prop(p, "State")?,
            init_pid: prop(p, "InitPid")?,
            base: prop(p, "Base")?,
            newer_base: prop(p, "NewerBase")?,
            layers: prop(p, "Layers")?,
            newer_layers: prop(p, "NewerLayers")?,
            addresses: prop(p, "Addresses")?,
            ipv4_address: prop(p, "IPv4Address")?,
            mac_address: prop(p, "MacAddress")?,
            autostart: prop(p, "Autostart")?,
            autostart_policy: prop(p, "AutostartPolicy")?,
            boot_priority: prop(p, "BootPriority")?,
            boot_delay: prop(p, "BootDelay")?,
            warning: prop(p, "Warning")?,
            memory_limit: prop(p, "MemoryLimit")?,
            cpu_limit: prop(p, "CpuLimit")?,
            privileged: prop(p, "Privileged")?,
            id_map_base: prop(p, "IdMapBase")?,
            created_at: prop(p, "CreatedAt")?,
            started_at: prop(p, "StartedAt")?,
            snapshot_count: prop(p, "SnapshotCount")?,
            newest_snapshot: prop(p, "NewestSnapshot")?,
            published: Published::from_properties(p)?,
            preset: prop(p, "Preset")?,
            last_backup_attempt: prop(p, "LastBackupAttempt")?,
            last_backup_success: prop(p, "LastBackupSuccess")?,
            last_backup_result: prop(p, "LastBackupResult")?,
        })
    }
}

impl BaseInfo {
    pub fn from_properties(p: &Properties) -> Result<Self, CliError> {
        Ok(BaseInfo {
            name: prop(p, "Name")?,
            created_at: prop(p, "CreatedAt")?,
            source: prop(p, "Source")?,
            used_by: prop(p, "UsedBy")?,
        })
    }
}

impl JobStatus {
    pub fn from_properties(p: &Properties) -> Result<Self, CliError> {
        Ok(JobStatus {
            kind: prop(p, "Kind")?,
            target: prop(p, "Target")?,
            progress: prop(p, "Progress")?,
            state: prop(p, "State")?,
            message: prop(p, "Message")?,
        })
    }

    /// Applies a `PropertiesChanged` update.
    pub fn update(&mut self, changed: &Properties) -> Result<(), CliError> {
        let mut merged = Properties::new();
        for key in ["Kind", "Target", "Progress", "State", "Message"] {
            if let Some(v) = changed.get(key) {
                merged.insert(
                    key.to_string(),
                    v.try_clone().map_err(|e| CliError::failed(e.to_string()))?,
                );
            }
        }
        let new = JobStatus::from_properties(&merged)?;
        let has = |k: &str| merged.contains_key(k);
        if has("Kind") {
            self.kind = new.kind;
        }
        if has("Target") {
            self.target = new.target;
        }
        if has("Progress") {
            self.progress = new.progress;
        }
        if has("State") {
            self.state = new.state;
        }
        if has("Message") {
            self.message = new.message;
        }
        Ok(())
    }
}

/// Every object in a `GetManagedObjects` answer that has `interface`, as its properties.
fn objects_with<'a>(
    objects: &'a ManagedObjects,
    interface: &'a str,
) -> impl Iterator<Item = &'a Properties> + 'a {
    objects.values().filter_map(move |ifaces| {
        ifaces
            .iter()
            .find(|(name, _)| name.as_str() == interface)
            .map(|(_, props)| props)
    })
}

/// The containers in a `GetManagedObjects` answer, sorted by name.
pub fn containers_from(objects: &ManagedObjects) -> Result<Vec<ContainerInfo>, CliError> {
    let mut list = objects_with(objects, CONTAINER_IFACE)
        .map(ContainerInfo::from_properties)
        .collect::<Result<Vec<_>, _>>()?;
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

/// The base images in a `GetManagedObjects` answer, sorted by name.
pub fn bases_from(objects: &ManagedObjects) -> Result<Vec<BaseInfo>, CliError> {
    let mut list = objects_with(objects, BASE_IFACE)
        .map(BaseInfo::from_properties)
        .collect::<Result<Vec<_>, _>>()?;
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use zbus::names::OwnedInterfaceName;
    use zbus::zvariant::{OwnedObjectPath, Value};

    pub(crate) fn props(pairs: Vec<(&str, Value<'static>)>) -> Properties {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), OwnedValue::try_from(v).unwrap()))
            .collect()
    }

    fn container_props(name: &str) -> Properties {
        props(vec![
            ("Name", Value::from(name.to_string())),
            ("State", Value::from("running")),
            ("InitPid", Value::from(4242u32)),
            ("Base", Value::from("debian12")),
            ("Layers", Value::from(vec!["osm-stack".to_string()])),
            ("NewerLayers", Value::from(vec!["osm-stack@2".to_string()])),
            ("Addresses", Value::from(vec!["10.0.3.12".to_string()])),
            ("MacAddress", Value::from("00:16:3e:00:00:01")),
            ("Autostart", Value::from(true)),
            ("MemoryLimit", Value::from(2u64 << 30)),
            ("CpuLimit", Value::from(2u32)),
            ("CreatedAt", Value::from(1_700_000_000_000_000u64)),
            ("StartedAt", Value::from(1_700_000_100_000_000u64)),
            (
                "PublishedHttp",
                Value::from(vec![("acme.example.test".to_string(), 3000u16)]),
            ),
            ("PublishedStreams", Value::from(vec![(8883u16, 1883u16)])),
            ("LastBackupAttempt", Value::from(1_700_000_200_000_000u64)),
            ("LastBackupSuccess", Value::from(1_700_000_000_000_000u64)),
            ("LastBackupResult", Value::from("rsync exited 23")),
        ])
    }

    #[test]
    fn decodes_container_properties() {
        let c = ContainerInfo::from_properties(&container_props("web1")).unwrap();
        assert_eq!(c.name, "web1");
        assert_eq!(c.init_pid, 4242);
        assert_eq!(c.layers, vec!["osm-stack"]);
        assert_eq!(c.newer_layers, vec!["osm-stack@2"]);
        assert_eq!(c.memory_limit, 2 << 30);
        assert!(c.autostart);
        assert_eq!(c.last_backup_attempt, 1_700_000_200_000_000);
        assert_eq!(c.last_backup_success, 1_700_000_000_000_000);
        assert_eq!(c.last_backup_result, "rsync exited 23");
    }

    #[test]
    fn missing_property_defaults_wrong_type_fails() {
        let c = ContainerInfo::from_properties(&props(vec![("Name", Value::from("a"))])).unwrap();
        assert_eq!(c.layers, Vec::<String>::new());
        assert_eq!(c.cpu_limit, 0);
        let bad = props(vec![("CpuLimit", Value::from("two"))]);
        let err = ContainerInfo::from_properties(&bad).unwrap_err();
        assert!(err.message.contains("CpuLimit"), "{}", err.message);
    }

    #[test]
    fn managed_objects_are_split_by_interface_and_sorted() {
        let mut objects = ManagedObjects::new();
        let mut add = |path: &str, iface: &str, p: Properties| {
            let mut m = HashMap::new();
            m.insert(OwnedInterfaceName::try_from(iface).unwrap(), p);
            objects.insert(OwnedObjectPath::try_from(path).unwrap(), m);
        };
        add(
            "/uk/co/devtank/OsmHost1/container/web2",
            CONTAINER_IFACE,
            container_props("web2"),
        );
        add(
            "/uk/co/devtank/OsmHost1/container/web1",
            CONTAINER_IFACE,
            container_props("web1"),
        );
        add(
            "/uk/co/devtank/OsmHost1/base/debian12",
            BASE_IFACE,
            props(vec![
                ("Name", Value::from("debian12")),
                ("Source", Value::from("recipe")),
                (
                    "UsedBy",
                    Value::from(vec!["web1".to_string(), "web2".to_string()]),
                ),
            ]),
        );
        add(
            "/uk/co/devtank/OsmHost1/job/7",
            osm_host_bus::JOB_IFACE,
            Properties::new(),
        );
        let names: Vec<_> = containers_from(&objects)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["web1", "web2"]);
        let bases = bases_from(&objects).unwrap();
        assert_eq!(bases.len(), 1);
        assert_eq!(bases[0].used_by, ["web1", "web2"]);
    }

    #[test]
    fn job_status_takes_partial_updates() {
        let mut job = JobStatus::from_properties(&props(vec![
            ("Kind", Value::from("build-base")),
            ("Target", Value::from("debian12")),
            ("State", Value::from("running")),
        ]))
        .unwrap();
        job.update(&props(vec![
            ("Progress", Value::from(0.5f64)),
            ("Message", Value::from("unpacking")),
        ]))
        .unwrap();
        assert_eq!(job.kind, "build-base");
        assert_eq!(job.state, "running");
        assert_eq!(job.progress, 0.5);
        assert_eq!(job.message, "unpacking");
    }

    #[test]
    fn json_shapes() {
        let c = ContainerInfo::from_properties(&container_props("web1")).unwrap();
        let detail = ContainerDetail {
            info: c,
            disk_usage: Some(1024),
        };
        let v = serde_json::to_value(&detail).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "addresses",
                "autostart",
                "autostart_policy",
                "base",
                "boot_delay",
                "boot_priority",
                "cpu_limit",
                "created_at",
                "disk_usage",
                "id_map_base",
                "init_pid",
                "ipv4_address",
                "last_backup_attempt",
                "last_backup_result",
                "last_backup_success",
                "layers",
                "mac_address",
                "memory_limit",
                "name",
                "newer_base",
                "newer_layers",
                "newest_snapshot",
                "preset",
                "privileged",
                "published",
                "snapshot_count",
                "started_at",
                "state",
                "warning"
            ]
        );
        assert_eq!(v["memory_limit"], 2u64 << 30);
        assert_eq!(v["layers"], serde_json::json!(["osm-stack"]));
        assert_eq!(
            v["published"],
            serde_json::json!({"http": [{"host": "acme.example.test", "port": 3000}],
                               "tls_streams": [{"public": 8883, "port": 1883}]})
        );
        let b = BaseInfo {
            name: "debian12".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::json!({"name": "debian12", "created_at": 0, "source": "", "used_by": []})
        );
    }
}
