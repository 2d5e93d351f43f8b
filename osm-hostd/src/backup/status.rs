//! Per-container backup results, persisted in one store-level file
//! (`<store>/lxc/backup-status.toml`), written atomically. Not inside the container
//! subvolume, where it would end up in the container's own snapshots and backups.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const STATUS_FILE: &str = "backup-status.toml";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
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

impl Attempt {
    pub fn ok(&self) -> bool {
        self.result == "ok"
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerBackup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Attempt>,
    /// Set (to the start time) while an attempt runs: still set at the daemon's next
    /// start means that attempt was interrupted, and it is recorded as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<u64>,
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

    /// As [`StatusFile::save`] without waiting for the disk (a crash keeps the old file
    /// or the new one): for each container's result within a run, which ends with one
    /// [`StatusFile::save`]. A host crash before that loses at most the run's results,
    /// and its start marks (saved durably) then record the attempts as interrupted.
    pub fn save_quick(&self, lxc_dir: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).expect("status serializes");
        crate::fsutil::replace_file(&lxc_dir.join(STATUS_FILE), text.as_bytes(), 0o644)
    }

    pub fn record(&mut self, name: &str, outcome: Attempt) {
        let e = self.containers.entry(name.to_string()).or_default();
        e.in_progress = None;
        if outcome.ok() {
            e.last_success = Some(outcome.clone());
        }
        e.last_attempt = Some(outcome);
    }
}

impl StatusFile {
    /// Marks an attempt of `name` as started at `time`.
    pub fn begin(&mut self, name: &str, time: u64) {
        self.containers
            .entry(name.to_string())
            .or_default()
            .in_progress = Some(time);
    }

    /// Records every attempt still marked as running as failed (the daemon stopped
    /// during it). Returns the containers concerned.
    pub fn fail_interrupted(&mut self) -> Vec<String> {
        let stuck: Vec<(String, u64)> = self
            .containers
            .iter()
            .filter_map(|(n, e)| e.in_progress.map(|t| (n.clone(), t)))
            .collect();
        for (name, time) in &stuck {
            self.record(
                name,
                Attempt {
                    time: *time,
                    result: "interrupted: the daemon stopped during this backup; the next run starts afresh".into(),
                    ..Default::default()
                },
            );
        }
        stuck.into_iter().map(|(n, _)| n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_last_success() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StatusFile::load(d.path());
        let ok = Attempt {
            time: 10,
            duration_ms: 5,
            bytes_sent: 100,
            result: "ok".into(),
            tree: "mirror".into(),
        };
        s.record("web1", ok.clone());
        s.record(
            "web1",
            Attempt {
                time: 20,
                result: "rsync exit 255".into(),
                ..Default::default()
            },
        );
        s.save(d.path()).unwrap();
        let back = StatusFile::load(d.path());
        let w = &back.containers["web1"];
        let mut s = back.clone();
        s.begin("web1", 30);
        assert!(s.fail_interrupted() == vec!["web1".to_string()]);
        let w2 = &s.containers["web1"];
        assert_eq!(w2.last_attempt.as_ref().unwrap().time, 30);
        assert!(w2
            .last_attempt
            .as_ref()
            .unwrap()
            .result
            .contains("interrupted"));
        assert_eq!(w2.last_success.as_ref(), Some(&ok));
        assert!(s.fail_interrupted().is_empty());
        assert_eq!(w.last_success.as_ref(), Some(&ok));
        assert_eq!(w.last_attempt.as_ref().unwrap().time, 20);
    }
}
