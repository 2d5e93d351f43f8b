//! The values the methods carry, each declared once and derived with zvariant, so the
//! daemon that encodes them and the CLI that decodes them cannot disagree. Times are µs
//! since the epoch everywhere, as in every property.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use zbus::zvariant::{DeserializeDict, SerializeDict, Type};

/// `Manager.GetNetworkInfo() -> a{sv}`: the bridge, its subnet, address use and dnsmasq.
#[derive(Debug, Clone, Default, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zvariant(
    signature = "a{sv}",
    rename_all = "PascalCase",
    crate = "zbus::zvariant"
)]
pub struct NetworkInfo {
    pub bridge: String,
    /// The bridge's address in CIDR form.
    pub address: String,
    pub subnet: String,
    pub range_first: String,
    pub range_last: String,
    pub used: u32,
    pub free: u32,
    pub nat: bool,
    pub managed: bool,
    /// running, starting, restarting, failed or unmanaged.
    pub dnsmasq_state: String,
    /// 0 when not running.
    pub dnsmasq_pid: u32,
    pub dnsmasq_restarts: u32,
    /// The host's stable identity (a uuid kept in the store; its directory on the backup
    /// target).
    pub host_id: String,
}

/// One snapshot, `(usutussa{ss})`: `ListSnapshots` returns a list of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
#[zvariant(crate = "zbus::zvariant")]
pub struct Snapshot {
    pub num: u32,
    /// single, pre or post.
    pub kind: String,
    /// 0 when none.
    pub pre_num: u32,
    /// µs since the epoch.
    pub date: u64,
    pub uid: u32,
    pub description: String,
    pub cleanup: String,
    pub userdata: HashMap<String, String>,
}

/// One container's backups, `(stttsttt)`: `GetBackupStatus` returns a list of them.
/// Zeros and "" when there is none. Its serde form is also `backup status --json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
#[zvariant(crate = "zbus::zvariant")]
pub struct BackupStatus {
    pub name: String,
    /// µs since the epoch of the last attempt.
    pub last_attempt: u64,
    pub last_attempt_duration_ms: u64,
    pub last_attempt_bytes_sent: u64,
    /// `ok`, or why the last attempt failed.
    pub last_result: String,
    /// µs since the epoch of the last verified backup.
    pub last_success: u64,
    pub last_success_duration_ms: u64,
    pub last_success_bytes_sent: u64,
}

/// The keys of `CreateContainer`'s options and `SetContainer`'s settings (`a{sv}`).
pub mod option {
    /// b, or s: "true", "false" or "last-state".
    pub const AUTOSTART: &str = "autostart";
    /// i.
    pub const BOOT_PRIORITY: &str = "boot_priority";
    /// u, seconds.
    pub const BOOT_DELAY: &str = "boot_delay";
    /// t, bytes (0 removes the limit in SetContainer).
    pub const MEMORY: &str = "memory";
    /// u (0 removes the limit in SetContainer).
    pub const CPUS: &str = "cpus";
    /// as, create only.
    pub const LAYERS: &str = "layers";
    /// s, an IPv4 address in the range; create only.
    pub const IP: &str = "ip";
    /// b, create only: no user namespace (an explicit opt-in).
    pub const PRIVILEGED: &str = "privileged";
    /// b (true only), set only: converts a privileged container.
    pub const UNPRIVILEGED: &str = "unprivileged";

    /// What `CreateContainer` accepts.
    pub const CREATE: &[&str] = &[
        AUTOSTART,
        BOOT_PRIORITY,
        BOOT_DELAY,
        MEMORY,
        CPUS,
        LAYERS,
        IP,
        PRIVILEGED,
    ];
    /// What `SetContainer` accepts.
    pub const SET: &[&str] = &[
        AUTOSTART,
        BOOT_PRIORITY,
        BOOT_DELAY,
        MEMORY,
        CPUS,
        UNPRIVILEGED,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::{serialized::Context, to_bytes, Value, LE};

    #[test]
    fn signatures_are_the_contracts() {
        assert_eq!(NetworkInfo::SIGNATURE.to_string(), "a{sv}");
        assert_eq!(Snapshot::SIGNATURE.to_string(), "(usutussa{ss})");
        assert_eq!(BackupStatus::SIGNATURE.to_string(), "(stttsttt)");
    }

    #[test]
    fn network_info_keys_are_the_documented_names() {
        let info = NetworkInfo {
            bridge: "lxcbr0".into(),
            range_first: "10.0.3.2".into(),
            dnsmasq_pid: 7,
            ..Default::default()
        };
        let ctxt = Context::new_dbus(LE, 0);
        let bytes = to_bytes(ctxt, &info).unwrap();
        let (map, _): (HashMap<String, zbus::zvariant::OwnedValue>, _) =
            bytes.deserialize().unwrap();
        let mut keys: Vec<_> = map.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "Address",
                "Bridge",
                "DnsmasqPid",
                "DnsmasqRestarts",
                "DnsmasqState",
                "Free",
                "HostId",
                "Managed",
                "Nat",
                "RangeFirst",
                "RangeLast",
                "Subnet",
                "Used"
            ]
        );
        assert_eq!(
            map["RangeFirst"],
            Value::from("10.0.3.2").try_into().unwrap()
        );
        let (back, _): (NetworkInfo, _) = bytes.deserialize().unwrap();
        assert_eq!(back, info);
    }
}
