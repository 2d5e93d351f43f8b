//! The daemon's configuration, `/etc/osm-host/hostd.toml`.
//!
//! Every key is optional and unknown keys are an error, so a typo never silently falls
//! back to a default. Values with a structure (backup target and mode, the subnet,
//! sizes, the metrics address) are parsed here, once, into the types the modules use;
//! the types live in those modules (`backup`, `net::ipam`, `metrics`), which never
//! depend on this one.

use crate::backup::{self, SshKey, SshOption, Target};
use crate::net::ipam::Subnet;
pub use crate::publish::settings::{CertPair, PublishConfig};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/osm-host/hostd.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// The store: a Btrfs filesystem or subvolume holding `lxc/`.
    pub store_root: PathBuf,
    /// A sparse image formatted and loop-mounted at `store_root` when that is not Btrfs.
    pub loop_image: Option<PathBuf>,
    /// Size in bytes of `loop_image` when it has to be created; written as e.g. "20G".
    #[serde(deserialize_with = "loop_size")]
    pub loop_size: u64,
    /// The file whose managed block lists container names and addresses.
    pub hosts_file: PathBuf,
    /// Runtime-only state (logs of LXC, pids, leases); emptied at boot.
    pub runtime_dir: PathBuf,
    /// Cache of built base root filesystems, keyed by the recipe's hash.
    pub cache_dir: PathBuf,
    pub network: NetworkConfig,
    pub snapper: SnapperConfig,
    pub backup: BackupConfig,
    pub snapshots: SnapshotsConfig,
    pub boot: BootConfig,
    pub publish: PublishConfig,
    pub metrics: crate::metrics::MetricsConfig,
    pub isolation: IsolationConfig,
}

/// `[isolation]`: how containers are confined.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IsolationConfig {
    /// Root's subordinate uids: each unprivileged container gets 65536 of them.
    pub subuid_file: PathBuf,
    /// Root's subordinate gids (the same numbers as the uids).
    pub subgid_file: PathBuf,
    /// Most processes (and threads) a container may run; 0 for no limit.
    pub pids_max: u32,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        IsolationConfig {
            subuid_file: PathBuf::from("/etc/subuid"),
            subgid_file: PathBuf::from("/etc/subgid"),
            pids_max: 4096,
        }
    }
}

/// `[boot]`: how the daemon starts containers at host boot and stops them at shutdown.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BootConfig {
    /// Containers of one priority group started at the same time.
    pub parallel: u32,
    /// Attempts after a failed start before the container is left with a warning.
    pub retries: u32,
    /// Seconds before the first retry; doubled for each further one.
    pub retry_delay: f64,
    /// Seconds to wait for the store and the bridge before starting anything.
    pub wait_timeout: u32,
    /// Seconds each container gets to shut down cleanly at host shutdown.
    pub stop_timeout: u32,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            parallel: 16,
            retries: 3,
            retry_delay: 1.0,
            wait_timeout: 60,
            stop_timeout: 30,
        }
    }
}

/// `[network]`, with `address` and `dhcp_range` parsed together into [`Subnet`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "NetworkKeys")]
pub struct NetworkConfig {
    pub bridge: String,
    /// From `address` (the bridge's address in CIDR form: the containers' gateway, DNS
    /// and DHCP server) and `dhcp_range` (`first-last`; unset means every host address
    /// of the subnet).
    pub subnet: Subnet,
    pub nat: bool,
    /// Whether the daemon sets up the bridge, forwarding, NAT and dnsmasq.
    pub manage: bool,
    /// Customers cannot see each other: isolated bridge ports, per-veth anti-spoofing,
    /// nothing forwarded into a container (false: the old flat bridge).
    pub isolate: bool,
}

/// `[network]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NetworkKeys {
    bridge: String,
    address: String,
    dhcp_range: Option<String>,
    nat: bool,
    manage: bool,
    isolate: bool,
}

impl Default for NetworkKeys {
    fn default() -> Self {
        NetworkKeys {
            bridge: "lxcbr0".into(),
            address: "10.0.3.1/24".into(),
            dhcp_range: None,
            nat: true,
            manage: true,
            isolate: true,
        }
    }
}

impl TryFrom<NetworkKeys> for NetworkConfig {
    type Error = String;
    fn try_from(k: NetworkKeys) -> Result<NetworkConfig, String> {
        if k.bridge.is_empty() || k.bridge.len() > 15 {
            return Err(format!(
                "network.bridge = {:?} must be an interface name of 1-15 characters",
                k.bridge
            ));
        }
        Ok(NetworkConfig {
            subnet: Subnet::parse(&k.address, k.dhcp_range.as_deref())?,
            bridge: k.bridge,
            nat: k.nat,
            manage: k.manage,
            isolate: k.isolate,
        })
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SnapperConfig {
    pub configs_dir: PathBuf,
    pub defaults_file: PathBuf,
}

/// Host-wide snapshot defaults; a container's `container.toml` may override them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotsConfig {
    /// Take scheduled `timeline` snapshots of every container.
    pub timeline_create: bool,
    /// Seconds between scheduled runs (timeline snapshots, then cleanup); hourly.
    pub interval: u64,
    /// A snapshot is refused when less than this many bytes are free in the store after
    /// a cleanup; written as e.g. "1G" ("0" for no floor).
    #[serde(deserialize_with = "min_free")]
    pub min_free: u64,
    pub number: crate::snapper::NumberLimits,
    pub timeline: crate::snapper::TimelineLimits,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        SnapshotsConfig {
            timeline_create: true,
            interval: 3600,
            min_free: 1 << 30,
            number: Default::default(),
            timeline: Default::default(),
        }
    }
}

/// A size such as "20G" (see [`parse_size`]) for `key`, in bytes; "0" only if `zero_ok`.
fn size<'de, D: Deserializer<'de>>(d: D, key: &str, zero_ok: bool) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    if zero_ok && text.trim() == "0" {
        return Ok(0);
    }
    parse_size(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{key} = {text:?}: {e}; give a size such as \"512M\" or \"20G\"{}",
            if zero_ok { " (\"0\" for none)" } else { "" }
        ))
    })
}

fn loop_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    size(d, "loop_size", false)
}

fn min_free<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    size(d, "snapshots.min_free", true)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    pub target: Target,
    pub mode: backup::Mode,
    /// ssh targets: the private key (`ssh -i`); unset means ssh's own default.
    pub ssh_key: Option<SshKey>,
    /// ssh targets: extra `-o` options, e.g. `"StrictHostKeyChecking=accept-new"`.
    pub ssh_options: Vec<SshOption>,
    /// History mode: how many daily, weekly, monthly and yearly trees to keep, and how
    /// many of the newest whatever their dates (`keep_last`).
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    pub keep_last: u32,
    /// Seconds of network silence before rsync and ssh give up (`--timeout`, ConnectTimeout).
    pub timeout: u32,
    /// Containers backed up at the same time.
    pub parallel: u32,
    /// `rsync` (the default) or `btrfs-send` (incremental `btrfs send | btrfs receive`;
    /// the target must be on Btrfs, see `backup::send`).
    pub transport: crate::backup::send::Transport,
}

impl backup::Settings for BackupConfig {
    fn target(&self) -> &Target {
        &self.target
    }
    fn timeout(&self) -> u32 {
        self.timeout
    }
    fn ssh_key(&self) -> Option<&SshKey> {
        self.ssh_key.as_ref()
    }
    fn ssh_options(&self) -> &[SshOption] {
        &self.ssh_options
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            store_root: PathBuf::from("/srv/osm-lxc"),
            loop_image: None,
            loop_size: 20 << 30,
            hosts_file: PathBuf::from("/etc/hosts"),
            runtime_dir: PathBuf::from("/run/osm-host"),
            cache_dir: PathBuf::from("/var/cache/osm-host"),
            network: NetworkConfig::default(),
            snapper: SnapperConfig::default(),
            backup: BackupConfig::default(),
            snapshots: SnapshotsConfig::default(),
            boot: BootConfig::default(),
            publish: PublishConfig::default(),
            metrics: Default::default(),
            isolation: IsolationConfig::default(),
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig::try_from(NetworkKeys::default()).expect("the default network is valid")
    }
}

impl Default for SnapperConfig {
    fn default() -> Self {
        SnapperConfig {
            configs_dir: PathBuf::from("/etc/snapper/configs"),
            defaults_file: PathBuf::from("/etc/default/snapper"),
        }
    }
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            target: Target::Local(PathBuf::from("/srv/backups/lxc")),
            mode: backup::Mode::Mirror,
            ssh_key: None,
            ssh_options: Vec::new(),
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            keep_yearly: 0,
            keep_last: 1,
            timeout: 300,
            parallel: 2,
            transport: crate::backup::send::Transport::Rsync,
        }
    }
}

impl HostConfig {
    /// Loads and validates a config file. A missing file at the default path means
    /// "all defaults"; a missing file anywhere else is an error.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new(DEFAULT_CONFIG_PATH) =>
            {
                String::new()
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: HostConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        for (key, p) in [
            ("store_root", &self.store_root),
            ("runtime_dir", &self.runtime_dir),
            ("cache_dir", &self.cache_dir),
            ("hosts_file", &self.hosts_file),
            ("isolation.subuid_file", &self.isolation.subuid_file),
            ("isolation.subgid_file", &self.isolation.subgid_file),
        ] {
            if !p.is_absolute() {
                return Err(format!("{key} = {p:?} must be an absolute path"));
            }
        }
        // LXC's overlay rootfs syntax separates layers with ':'.
        if self.store_root.to_string_lossy().contains(':') {
            return Err(format!(
                "store_root = {:?} must not contain ':' (LXC uses it to separate overlay layers)",
                self.store_root
            ));
        }
        if let Some(img) = &self.loop_image {
            if !img.is_absolute() {
                return Err(format!("loop_image = {img:?} must be an absolute path"));
            }
            if img.starts_with(&self.store_root) {
                return Err(format!(
                    "loop_image = {img:?} must not be inside store_root"
                ));
            }
        }
        if self.snapshots.interval < 1 {
            return Err("snapshots.interval must be at least 1 second".into());
        }
        if self.boot.parallel == 0 || self.boot.parallel > 64 {
            return Err(format!(
                "boot.parallel = {} must be between 1 and 64",
                self.boot.parallel
            ));
        }
        if !(self.boot.retry_delay.is_finite() && (0.0..=600.0).contains(&self.boot.retry_delay)) {
            return Err(format!(
                "boot.retry_delay = {} must be between 0 and 600 seconds",
                self.boot.retry_delay
            ));
        }
        if self.backup.parallel == 0 || self.backup.parallel > 16 {
            return Err("backup.parallel must be between 1 and 16".into());
        }
        if self.backup.timeout == 0 {
            return Err("backup.timeout must be at least 1 second".into());
        }
        self.publish.validate()?;
        self.metrics.validate()?;
        Ok(())
    }

    /// `<store_root>/lxc`, the root of the on-disk layout.
    pub fn lxc_root(&self) -> PathBuf {
        self.store_root.join("lxc")
    }
}

pub use osm_host_bus::size::{format_size, parse_size};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_design_defaults() {
        let c = HostConfig::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(c.store_root, PathBuf::from("/srv/osm-lxc"));
        assert_eq!(c.network.bridge, "lxcbr0");
        assert_eq!(c.network.subnet.cidr(), "10.0.3.0/24");
        assert_eq!(c.network.subnet.gateway.to_string(), "10.0.3.1");
        assert!(c.network.nat);
        assert_eq!(c.backup.mode, backup::Mode::Mirror);
        assert_eq!(c.loop_size, 20 << 30);
        assert_eq!(c.boot.parallel, 16);
        assert_eq!(c.boot.retries, 3);
    }

    #[test]
    fn publish_keys_default_validate_and_override_per_host() {
        let c = HostConfig::parse("", Path::new("h.toml")).unwrap();
        assert_eq!(c.publish.nginx_conf, PathBuf::from("/etc/nginx/nginx.conf"));
        assert_eq!(c.publish.nginx_dir, PathBuf::from("/etc/nginx/osm-host"));
        assert!(c.publish.domain.is_empty());
        let text = "[publish]\ndomain = \"example.test\"\ntls_cert = \"/t/c.pem\"\n\
                    [publish.certs.\"a.example.test\"]\ntls_cert = \"/t/a.pem\"\ntls_key = \"/t/a.key\"\n";
        let c = HostConfig::parse(text, Path::new("h.toml")).unwrap();
        assert_eq!(
            c.publish.cert_for("a.example.test").0,
            Path::new("/t/a.pem")
        );
        assert_eq!(
            c.publish.cert_for("b.example.test").0,
            Path::new("/t/c.pem")
        );
        for bad in [
            "[publish]\ndomain = \"not a domain\"",
            "[publish]\nnginx_dir = \"rel\"",
            "[publish]\nnginx = \"x\"",
        ] {
            assert!(
                HostConfig::parse(bad, Path::new("h.toml")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = HostConfig::parse("store_rot = \"/x\"", Path::new("h.toml")).unwrap_err();
        assert!(err.to_string().contains("store_rot"), "{err}");
        let err = HostConfig::parse("[network]\nbrige = \"x\"", Path::new("h.toml")).unwrap_err();
        assert!(err.to_string().contains("brige"), "{err}");
    }

    #[test]
    fn backup_transport_is_rsync_or_btrfs_send() {
        let c = HostConfig::parse("", Path::new("h.toml")).unwrap();
        assert_eq!(c.backup.transport, crate::backup::send::Transport::Rsync);
        let c =
            HostConfig::parse("[backup]\ntransport = \"btrfs-send\"", Path::new("h.toml")).unwrap();
        assert_eq!(
            c.backup.transport,
            crate::backup::send::Transport::BtrfsSend
        );
        let err = HostConfig::parse("[backup]\ntransport = \"send\"", Path::new("h.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("backup.transport") && err.contains("btrfs-send"),
            "{err}"
        );
    }

    #[test]
    fn design_example_parses() {
        let text = r#"
store_root = "/srv/osm-lxc"
loop_image = "/var/lib/osm-host/store.img"
loop_size = "20G"
hosts_file = "/etc/hosts"
[network]
bridge = "lxcbr0"
address = "10.0.3.1/24"
dhcp_range = "10.0.3.2-10.0.3.254"
nat = true
[snapper]
configs_dir = "/etc/snapper/configs"
defaults_file = "/etc/default/snapper"
[backup]
target = "/srv/backups/lxc"
mode = "history"
"#;
        let c = HostConfig::parse(text, Path::new("h.toml")).unwrap();
        assert_eq!(
            c.loop_image,
            Some(PathBuf::from("/var/lib/osm-host/store.img"))
        );
        assert_eq!(c.backup.mode, backup::Mode::History);
        assert_eq!(c.network.subnet.last.to_string(), "10.0.3.254");
    }

    #[test]
    fn snapshot_defaults_and_overrides() {
        let c = HostConfig::parse("", Path::new("h.toml")).unwrap();
        assert!(c.snapshots.timeline_create);
        assert_eq!(c.snapshots.number.limit, 50);
        assert_eq!(c.snapshots.min_free, 1 << 30);
        let text = "[snapshots]\nmin_free = \"0\"\n[snapshots.timeline]\nhourly = 24\n";
        let c = HostConfig::parse(text, Path::new("h.toml")).unwrap();
        assert_eq!(
            (c.snapshots.timeline.hourly, c.snapshots.timeline.daily),
            (24, 10)
        );
        assert_eq!(c.snapshots.min_free, 0);
        assert!(HostConfig::parse("[snapshots.number]\nlimt = 1\n", Path::new("h.toml")).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        for text in [
            "store_root = \"relative\"",
            "store_root = \"/a:/b\"",
            "loop_size = \"lots\"",
            "[backup]\nmode = \"sometimes\"",
            "[network]\nbridge = \"a-very-long-bridge-name\"",
            "[network]\naddress = \"10.0.3.1\"",
            "[network]\ndhcp_range = \"10.0.4.2-10.0.4.9\"",
            "store_root = \"/srv/x\"\nloop_image = \"/srv/x/img\"",
            "[boot]\nparallel = 0",
            "[boot]\nretry_delay = -1.0",
            "[boot]\nparalel = 2",
        ] {
            assert!(
                HostConfig::parse(text, Path::new("h.toml")).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn backup_keys_parse_and_are_checked() {
        let c = HostConfig::parse(
            "[backup]\ntarget = \"root@198.51.100.2:/srv/b\"\nmode = \"history\"\n\
             ssh_key = \"/etc/osm-host/k\"\nssh_options = [\"StrictHostKeyChecking=yes\"]\n\
             keep_daily = 3\nkeep_weekly = 2\nkeep_monthly = 1\nkeep_yearly = 2\nkeep_last = 4\ntimeout = 10\n",
            Path::new("h.toml"),
        )
        .unwrap();
        assert_eq!((c.backup.keep_daily, c.backup.timeout), (3, 10));
        assert_eq!((c.backup.keep_yearly, c.backup.keep_last), (2, 4));
        assert_eq!(
            c.backup.ssh_key.as_ref().map(|k| k.path()),
            Some(Path::new("/etc/osm-host/k"))
        );
        assert_eq!(
            c.backup.target,
            Target::Ssh {
                host: "root@198.51.100.2".into(),
                path: "/srv/b".into()
            }
        );
        for text in [
            "[backup]\ntarget = \"relative/dir\"",
            "[backup]\ntarget = \"-oProxyCommand=x:/p\"",
            "[backup]\nssh_options = [\"-oProxyCommand=x\"]",
            "[backup]\nssh_options = [\"ProxyCommand='x y'\"]",
            "[backup]\nssh_key = \"/k'ey\"",
            "[backup]\ntimeout = 0",
            "[backup]\nparallel = 0",
            "[backup]\nkeep_hourly = 3",
        ] {
            assert!(
                HostConfig::parse(text, Path::new("h.toml")).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn refusals_name_the_key_and_what_is_accepted() {
        for (text, key, accepted) in [
            (
                "[backup]\nmode = \"sometimes\"",
                "backup.mode",
                "\"history\"",
            ),
            (
                "[backup]\ntarget = \"rel\"",
                "backup.target",
                "user@host:/path",
            ),
            (
                "[backup]\nssh_options = [\"-oX=y\"]",
                "backup.ssh_options",
                "Key=value",
            ),
            (
                "[network]\naddress = \"10.0.3.1\"",
                "network.address",
                "10.0.3.1/24",
            ),
            (
                "[network]\ndhcp_range = \"x\"",
                "network.dhcp_range",
                "10.0.3.2-10.0.3.254",
            ),
            ("loop_size = \"lots\"", "loop_size", "\"20G\""),
            (
                "[snapshots]\nmin_free = \"-1\"",
                "snapshots.min_free",
                "\"0\" for none",
            ),
            (
                "[metrics]\nlisten = \"9477\"",
                "metrics.listen",
                "ADDRESS:PORT",
            ),
        ] {
            let e = HostConfig::parse(text, Path::new("h.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(accepted), "{text}: {e}");
        }
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("2X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(format_size(2 << 30), "2G");
        assert_eq!(format_size(3 << 29), "1.5G");
        assert_eq!(format_size(100), "100B");
    }
}
