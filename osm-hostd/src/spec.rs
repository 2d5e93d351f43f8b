//! `container.toml`: a container's spec and identity. The disk is the database: this
//! file, inside the container's subvolume, is everything the daemon knows about it, so a
//! snapshot or a backup of the subvolume is self-describing.

use serde::{Deserialize, Serialize};
use std::path::Path;

pub const SPEC_FILE: &str = "container.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    /// The base image under `os-bases/`; the upper dir is a delta against exactly it.
    pub base: String,
    /// Layers under `layers/`, lowest first: the order users see everywhere (CLI
    /// `--layer`, D-Bus, `info`, layer sidecars, recipes). overlayfs' lowerdir is the
    /// reverse; only the two places that mount it turn it round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    /// Locally administered MAC, chosen once at create and never changed.
    pub mac: String,
    /// Fixed IPv4 address on the bridge, chosen once at create (absent in specs written
    /// before networking; the daemon assigns one at its next start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// Whether the daemon starts it at host boot (`true`, `false` or `"last-state"`).
    #[serde(default)]
    pub autostart: Autostart,
    /// Boot order: higher starts first; equal priorities start in parallel.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub boot_priority: i32,
    /// Seconds to wait after starting it before the next priority group starts.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub boot_delay: u32,
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// CPU limit in whole CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Seconds since the epoch.
    pub created: u64,
    /// Identity that outlives the name (issue 12): chosen at create; specs written
    /// before it get one at the daemon's next start. Backup trees record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Snapshot schedule and retention overriding hostd.toml's `[snapshots]`.
    #[serde(default, skip_serializing_if = "SnapshotPolicy::is_default")]
    pub snapshots: SnapshotPolicy,
    /// HTTP vhosts and TLS streams published through the host's NGINX.
    #[serde(
        default,
        skip_serializing_if = "crate::publish::PublishSpec::is_default"
    )]
    pub publish: crate::publish::PublishSpec,
    /// Runs without a user namespace: uid 0 inside is uid 0 on the host. An explicit
    /// opt-in (`create --privileged`); specs written before unprivileged containers
    /// have neither this nor `idmap` and are privileged too.
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// The container's own id range (unprivileged containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap: Option<crate::idmap::IdMap>,
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl ContainerSpec {
    /// The id range it runs in, or `None` when it is privileged.
    pub fn unprivileged_map(&self) -> Option<crate::idmap::IdMap> {
        if self.privileged {
            None
        } else {
            self.idmap
        }
    }
}

/// A container's own snapshot settings; every field falls back to the host default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline_create: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<crate::snapper::NumberLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<crate::snapper::TimelineLimits>,
}

impl SnapshotPolicy {
    pub fn is_default(&self) -> bool {
        *self == SnapshotPolicy::default()
    }
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

pub use osm_host_bus::Autostart;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid container spec: {message}")]
    Parse { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl ContainerSpec {
    pub fn load(dir: &Path) -> Result<Self, SpecError> {
        let path = dir.join(SPEC_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| SpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SpecError::Parse {
            path: path.display().to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("a container spec always serializes");
        format!("# Container spec, owned by osm-hostd. Change it with osm-hostctl.\n{body}")
    }

    /// Writes the spec of a container being created into its (unpublished) directory.
    pub fn save_new(&self, dir: &Path) -> Result<(), SpecError> {
        let path = dir.join(SPEC_FILE);
        crate::fsutil::write_new(&path, self.to_toml().as_bytes(), 0o644, true).map_err(|source| {
            SpecError::Write {
                path: path.display().to_string(),
                source,
            }
        })
    }

    /// Writes the spec atomically (temp file, fsync, rename) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), SpecError> {
        let path = dir.join(SPEC_FILE);
        crate::fsutil::write_atomic(&path, self.to_toml().as_bytes(), 0o644).map_err(|source| {
            SpecError::Write {
                path: path.display().to_string(),
                source,
            }
        })
    }
}

/// A random, locally administered, unicast MAC (`x2:…`), as LXC and libvirt pick them.
pub fn random_mac() -> String {
    let mut b = [0u8; 6];
    crate::fsutil::random_bytes(&mut b);
    b[0] = (b[0] & 0xfc) | 0x02;
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ContainerSpec {
        ContainerSpec {
            name: "web1".into(),
            base: "bookworm".into(),
            layers: vec![],
            mac: "02:11:22:33:44:55".into(),
            ipv4: Some("10.0.3.2".into()),
            autostart: Autostart::Always,
            boot_priority: 0,
            boot_delay: 0,
            memory: Some(2 << 30),
            cpus: None,
            created: 1_790_000_000,
            uuid: None,
            snapshots: SnapshotPolicy::default(),
            publish: Default::default(),
            privileged: false,
            idmap: None,
        }
    }

    #[test]
    fn id_ranges_round_trip_and_old_specs_are_privileged() {
        let mut s = sample();
        assert_eq!(s.unprivileged_map(), None, "no idmap: privileged as before");
        let map = crate::idmap::IdMap {
            uid: 1_048_576,
            gid: 1_048_576,
            count: 65536,
        };
        s.idmap = Some(map);
        let text = s.to_toml();
        assert!(
            text.contains("[idmap]\nuid = 1048576\ngid = 1048576\ncount = 65536\n"),
            "{text}"
        );
        let back: ContainerSpec = toml::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.unprivileged_map(), Some(map));
        s.privileged = true;
        assert_eq!(s.unprivileged_map(), None, "privileged wins");
        assert!(s.to_toml().contains("privileged = true\n"));
    }

    #[test]
    fn snapshot_policy_is_optional_and_round_trips() {
        let old = "name = \"w\"\nbase = \"b\"\nmac = \"02:00:00:00:00:01\"\ncreated = 1\n";
        let s: ContainerSpec = toml::from_str(old).unwrap();
        assert!(s.snapshots.is_default());
        let mut s = sample();
        s.snapshots.timeline_create = Some(false);
        s.snapshots.number = Some(crate::snapper::NumberLimits {
            limit: 5,
            limit_important: 1,
            min_age: 0,
        });
        let back: ContainerSpec = toml::from_str(&s.to_toml()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn round_trips_through_toml() {
        let s = sample();
        let back: ContainerSpec = toml::from_str(&s.to_toml()).unwrap();
        assert_eq!(back, s);
        assert!(
            !s.to_toml().contains("cpus"),
            "unset limits are not written"
        );
    }

    #[test]
    fn specs_without_an_address_still_load() {
        let mut s = sample();
        s.ipv4 = None;
        let text = s.to_toml();
        assert!(!text.contains("ipv4"));
        assert_eq!(toml::from_str::<ContainerSpec>(&text).unwrap(), s);
    }

    #[test]
    fn autostart_accepts_old_booleans_and_last_state() {
        let base = sample().to_toml().replace("autostart = true\n", "");
        for (line, want) in [
            ("autostart = true", Autostart::Always),
            ("autostart = false", Autostart::Never),
            ("autostart = \"last-state\"", Autostart::LastState),
            ("", Autostart::Never),
        ] {
            let s: ContainerSpec = toml::from_str(&format!("{base}{line}\n")).unwrap();
            assert_eq!(s.autostart, want, "{line}");
            assert_eq!(s.boot_priority, 0);
        }
        assert!(
            toml::from_str::<ContainerSpec>(&format!("{base}autostart = \"sometimes\"\n")).is_err()
        );
        let mut s = sample();
        s.autostart = Autostart::LastState;
        s.boot_priority = -3;
        s.boot_delay = 5;
        let back: ContainerSpec = toml::from_str(&s.to_toml()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = sample().to_toml() + "colour = \"red\"\n";
        assert!(toml::from_str::<ContainerSpec>(&text).is_err());
    }

    #[test]
    fn macs_are_locally_administered_unicast() {
        for _ in 0..100 {
            let m = random_mac();
            let first = u8::from_str_radix(&m[..2], 16).unwrap();
            assert_eq!(first & 0x03, 0x02, "{m}");
            assert_eq!(m.len(), 17);
        }
        assert_ne!(random_mac(), random_mac());
    }
}
