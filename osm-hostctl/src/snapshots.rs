//! `osm-hostctl snapshot …`: create, list, delete and restore a container's snapshots.

use std::collections::{BTreeMap, HashMap};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::calls::Daemon;
use super::exit::CliError;
use super::format::{format_timestamp, table};
use super::job::JobWatch;
use osm_host_bus::wire::Snapshot;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a read-only snapshot of a container (snapper-compatible)
    Create(CreateSnapshotArgs),
    /// List a container's snapshots, snapper's own included
    List {
        /// Container name
        name: String,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Delete one snapshot
    Delete {
        /// Container name
        name: String,
        /// Snapshot number
        num: u32,
    },
    /// Run the number and timeline cleanups now (the daemon also runs them on schedule)
    Cleanup {
        /// Container name
        name: String,
    },
    /// Restore a container to a snapshot (a safety snapshot of the current state is
    /// taken first); waits for the restore job
    Restore {
        /// Container name
        name: String,
        /// Snapshot number
        num: u32,
    },
}

#[derive(Debug, Args)]
pub struct CreateSnapshotArgs {
    /// Container name
    pub name: String,
    /// Free text shown by `snapshot list` and `snapper list`
    #[arg(long, default_value = "")]
    pub description: String,
    /// Cleanup algorithm that may delete it later: number or timeline [default: never]
    #[arg(long, value_parser = ["number", "timeline"])]
    pub cleanup: Option<String>,
    /// key=value metadata; repeat for several (no ',' or '=' in keys or values)
    #[arg(long = "userdata", value_name = "K=V", value_parser = parse_userdata)]
    pub userdata: Vec<(String, String)>,
}

fn parse_userdata(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    if k.is_empty() || v.contains('=') {
        return Err(format!("{text:?} is not key=value"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// One snapshot as `snapshot list --json` prints it (date in µs since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotEntry {
    pub num: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub pre_num: Option<u32>,
    pub date: u64,
    pub uid: u32,
    pub description: String,
    pub cleanup: String,
    pub userdata: BTreeMap<String, String>,
}

impl SnapshotEntry {
    fn from_wire(w: Snapshot) -> SnapshotEntry {
        SnapshotEntry {
            num: w.num,
            kind: w.kind,
            pre_num: (w.pre_num != 0).then_some(w.pre_num),
            date: w.date,
            uid: w.uid,
            description: w.description,
            cleanup: w.cleanup,
            userdata: w.userdata.into_iter().collect(),
        }
    }
}

pub fn snapshots_table(list: &[SnapshotEntry]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.num.to_string(),
                s.kind.clone(),
                s.pre_num.map(|n| n.to_string()).unwrap_or_default(),
                format_timestamp(s.date),
                s.cleanup.clone(),
                s.description.clone(),
                s.userdata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    table(
        &[
            "#",
            "TYPE",
            "PRE",
            "DATE",
            "CLEANUP",
            "DESCRIPTION",
            "USERDATA",
        ],
        &rows,
    )
}

pub async fn run(daemon: &Daemon, cmd: SnapshotCommand) -> Result<(), CliError> {
    let m = &daemon.manager;
    match cmd {
        SnapshotCommand::Create(a) => {
            let userdata: HashMap<&str, &str> = a
                .userdata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let num = m
                .create_snapshot(
                    &a.name,
                    &a.description,
                    a.cleanup.as_deref().unwrap_or(""),
                    userdata,
                )
                .await?;
            super::run::say(&num.to_string());
        }
        SnapshotCommand::List { name, json } => {
            let list: Vec<SnapshotEntry> = m
                .list_snapshots(&name)
                .await?
                .into_iter()
                .map(SnapshotEntry::from_wire)
                .collect();
            if json {
                super::run::print_json(&list)?;
            } else {
                super::run::say(snapshots_table(&list).trim_end());
            }
        }
        SnapshotCommand::Delete { name, num } => {
            m.delete_snapshot(&name, num).await?;
            super::run::say(&format!("deleted snapshot {num} of {name}"));
        }
        SnapshotCommand::Cleanup { name } => {
            let deleted = m.cleanup_snapshots(&name).await?;
            if deleted.is_empty() {
                super::run::say(&format!("nothing to clean up in {name}"));
            } else {
                let list: Vec<String> = deleted.iter().map(u32::to_string).collect();
                super::run::say(&format!("deleted snapshots {} of {name}", list.join(" ")));
            }
        }
        SnapshotCommand::Restore { name, num } => {
            let watch = JobWatch::subscribe(daemon).await?;
            let job = m.restore_snapshot(&name, num).await?;
            watch.follow(daemon, &job).await?;
            super::run::say(&format!("restored {name} to snapshot {num}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    #[test]
    fn create_parses_userdata_and_cleanup() {
        let cli = Cli::try_parse_from([
            "osm-hostctl",
            "snapshot",
            "create",
            "web1",
            "--description",
            "before upgrade",
            "--cleanup",
            "number",
            "--userdata",
            "important=yes",
            "--userdata",
            "ticket=42",
        ])
        .unwrap();
        let Command::Snapshot(SnapshotCommand::Create(a)) = cli.command else {
            panic!("not snapshot create")
        };
        assert_eq!(a.cleanup.as_deref(), Some("number"));
        assert_eq!(
            a.userdata,
            vec![
                ("important".into(), "yes".into()),
                ("ticket".into(), "42".into())
            ]
        );
        for bad in [
            ["--cleanup", "weekly"],
            ["--userdata", "novalue"],
            ["--userdata", "=x"],
        ] {
            let mut argv = vec!["osm-hostctl", "snapshot", "create", "web1"];
            argv.extend(bad);
            assert_eq!(
                Cli::try_parse_from(argv).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn list_table_and_json() {
        let mut ud = HashMap::new();
        ud.insert("created_by".to_string(), "osm-hostd".to_string());
        let e = SnapshotEntry::from_wire(Snapshot {
            num: 3,
            kind: "single".into(),
            pre_num: 0,
            date: 1_714_566_896_000_000,
            uid: 0,
            description: "d".into(),
            cleanup: "number".into(),
            userdata: ud,
        });
        let t = snapshots_table(std::slice::from_ref(&e));
        assert!(
            t.contains("2024-05-01T12:34:56Z") && t.contains("created_by=osm-hostd"),
            "{t}"
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "single");
        assert_eq!(v["pre_num"], serde_json::Value::Null);
    }
}
