//! Per-container backup results, persisted in one store-level file
//! (`<store>/lxc/backup-status.toml`), written atomically. Not inside the container
//! subvolume, where it would end up in the container's own snapshots and backups.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const STATUS_FILE: &str = "backup-status.toml";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Seconds since the epoch when the attempt started.
    pub time: u64,
    pub duration_ms: u64,
    pub bytes_sent: u64,
    /// `ok`, or why it failed.
    pub result: String,
    /// The tree written (history mode) or `mirror`.
    #[serde(default)]
    pub tree: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.result == "ok"
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerBackup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Outcome>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFile {
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerBackup>,
}

impl StatusFile {
    /// Reads the file; a missing or unreadable file is an empty status (logged).
    pub fn load(lxc_dir: &Path) -> StatusFile {
        let path = lxc_dir.join(STATUS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(t) => toml::from_str(&t).unwrap_or_else(|e| {
                tracing::error!(path = %path.display(), error = %e, "backup status unreadable; starting afresh");
                StatusFile::default()
            }),
            Err(_) => StatusFile::default(),
        }
    }

    pub fn save(&self, lxc_dir: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).expect("status serializes");
        crate::fsutil::write_atomic(&lxc_dir.join(STATUS_FILE), text.as_bytes(), 0o644)
    }

    pub fn record(&mut self, name: &str, outcome: Outcome) {
        let e = self.containers.entry(name.to_string()).or_default();
        if outcome.ok() {
            e.last_success = Some(outcome.clone());
        }
        e.last_attempt = Some(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_last_success() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StatusFile::load(d.path());
        let ok = Outcome {
            time: 10,
            duration_ms: 5,
            bytes_sent: 100,
            result: "ok".into(),
            tree: "mirror".into(),
        };
        s.record("web1", ok.clone());
        s.record(
            "web1",
            Outcome {
                time: 20,
                result: "rsync exit 255".into(),
                ..Default::default()
            },
        );
        s.save(d.path()).unwrap();
        let back = StatusFile::load(d.path());
        let w = &back.containers["web1"];
        assert_eq!(w.last_success.as_ref(), Some(&ok));
        assert_eq!(w.last_attempt.as_ref().unwrap().time, 20);
    }
}
