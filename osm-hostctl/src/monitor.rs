//! `osm-hostctl monitor [--json]`: the daemon's signals as a stream of events, one line
//! each (time, kind, object, detail), until interrupted.
//!
//! Subscribes before reading the current objects, so nothing falls between the two.
//! Property signals carry values, not changes (a container's `PropertiesChanged` lists
//! every state and backup property whenever one changes), so the monitor keeps the last
//! known values and prints only what really changed.

use std::collections::HashMap;

use futures_util::stream::StreamExt;
use serde::Serialize;
use zbus::message::Type;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{MatchRule, Message, MessageStream};

use super::calls::Daemon;
use super::exit::{CliError, ExitCode};
use super::format::format_timestamp;
use osm_host_bus::{BASE_IFACE, BUS_NAME, CONTAINER_IFACE, JOB_IFACE};

const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// One line of `monitor`; `--json` prints it as an object (time in µs since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub time: u64,
    /// container-added, container-removed, state, warning, snapshot-created,
    /// snapshot-deleted, snapshot-restored, backup, job-started, job-finished,
    /// base-added, base-removed.
    pub kind: String,
    /// `container/<name>`, `base/<name>` or `job/<id>`.
    pub object: String,
    pub detail: String,
}

/// What the monitor knows of an object, to name it and to tell changes from repeats.
#[derive(Debug, Default, Clone)]
struct Known {
    object: String,
    state: String,
    warning: String,
    backup_attempt: u64,
    /// The attempt already printed (a result arrives in its own signal after it).
    backup_reported: u64,
}

#[derive(Default)]
struct Monitor {
    objects: HashMap<String, Known>,
}

type Props = HashMap<String, OwnedValue>;

fn get<T: TryFrom<OwnedValue>>(p: &Props, key: &str) -> Option<T> {
    p.get(key)
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| T::try_from(v).ok())
}

fn known_from(iface: &str, p: &Props) -> Option<Known> {
    let name: String = get(p, "Name").unwrap_or_default();
    let object = if iface == CONTAINER_IFACE {
        format!("container/{name}")
    } else if iface == BASE_IFACE {
        format!("base/{name}")
    } else if iface == JOB_IFACE {
        format!("job/{}", get::<u64>(p, "Id").unwrap_or(0))
    } else {
        return None;
    };
    Some(Known {
        object,
        state: get(p, "State").unwrap_or_default(),
        warning: get(p, "Warning").unwrap_or_default(),
        backup_attempt: get(p, "LastBackupAttempt").unwrap_or(0),
        backup_reported: get(p, "LastBackupAttempt").unwrap_or(0),
    })
}

impl Monitor {
    fn seed(&mut self, objects: zbus::fdo::ManagedObjects) {
        for (path, ifaces) in objects {
            for (iface, props) in ifaces {
                if let Some(k) = known_from(iface.as_str(), &props) {
                    self.objects.insert(path.to_string(), k);
                }
            }
        }
    }

    /// The events one signal stands for (often none: a repeat).
    fn events(&mut self, msg: &Message, now: u64) -> Vec<Event> {
        let hdr = msg.header();
        let (Some(iface), Some(member), Some(path)) = (hdr.interface(), hdr.member(), hdr.path())
        else {
            return Vec::new();
        };
        let path = path.to_string();
        let ev = |kind: &str, object: &str, detail: String| Event {
            time: now,
            kind: kind.into(),
            object: object.into(),
            detail,
        };
        let object_of = |m: &Monitor, p: &str| {
            m.objects
                .get(p)
                .map(|k| k.object.clone())
                .unwrap_or_else(|| p.to_string())
        };
        let mut out = Vec::new();
        match (iface.as_str(), member.as_str()) {
            (OBJECT_MANAGER, "InterfacesAdded") => {
                let Ok((added, ifaces)) = msg
                    .body()
                    .deserialize::<(OwnedObjectPath, HashMap<String, Props>)>()
                else {
                    return out;
                };
                for (iface, props) in ifaces {
                    let Some(k) = known_from(&iface, &props) else {
                        continue;
                    };
                    let kind_detail = if iface == CONTAINER_IFACE {
                        Some(("container-added", k.state.clone()))
                    } else if iface == BASE_IFACE {
                        Some(("base-added", String::new()))
                    } else {
                        let kind: String = get(&props, "Kind").unwrap_or_default();
                        let target: String = get(&props, "Target").unwrap_or_default();
                        Some(("job-started", format!("{kind} {target}").trim().to_string()))
                    };
                    let existed = self.objects.contains_key(added.as_str());
                    if let (Some((kind, detail)), false) = (kind_detail, existed) {
                        out.push(ev(kind, &k.object, detail));
                    }
                    self.objects.insert(added.to_string(), k);
                }
            }
            (OBJECT_MANAGER, "InterfacesRemoved") => {
                let Ok((removed, _)) = msg.body().deserialize::<(OwnedObjectPath, Vec<String>)>()
                else {
                    return out;
                };
                if let Some(k) = self.objects.remove(removed.as_str()) {
                    if let Some(kind) = if k.object.starts_with("container/") {
                        Some("container-removed")
                    } else if k.object.starts_with("base/") {
                        Some("base-removed")
                    } else {
                        None // jobs linger a while after Finished; their removal is noise
                    } {
                        out.push(ev(kind, &k.object, String::new()));
                    }
                }
            }
            (PROPERTIES, "PropertiesChanged") => {
                let Ok((iface, changed, _)) =
                    msg.body().deserialize::<(String, Props, Vec<String>)>()
                else {
                    return out;
                };
                if iface != CONTAINER_IFACE {
                    return out;
                }
                let k = self.objects.entry(path.clone()).or_default();
                if k.object.is_empty() {
                    k.object = path.clone();
                }
                if let Some(state) = get::<String>(&changed, "State") {
                    if state != k.state {
                        k.state = state.clone();
                        out.push(ev("state", &k.object, state));
                    }
                }
                if let Some(w) = get::<String>(&changed, "Warning") {
                    if w != k.warning {
                        k.warning = w.clone();
                        if !w.is_empty() {
                            out.push(ev("warning", &k.object, w));
                        }
                    }
                }
                if let Some(t) = get::<u64>(&changed, "LastBackupAttempt") {
                    k.backup_attempt = t;
                }
                if let Some(result) = get::<String>(&changed, "LastBackupResult") {
                    if k.backup_attempt != k.backup_reported && k.backup_attempt != 0 {
                        k.backup_reported = k.backup_attempt;
                        out.push(ev("backup", &k.object, result));
                    }
                }
            }
            (CONTAINER_IFACE, m @ ("SnapshotCreated" | "SnapshotDeleted" | "Restored")) => {
                let num: u32 = msg.body().deserialize().unwrap_or(0);
                let kind = match m {
                    "SnapshotCreated" => "snapshot-created",
                    "SnapshotDeleted" => "snapshot-deleted",
                    _ => "snapshot-restored",
                };
                out.push(ev(kind, &object_of(self, &path), num.to_string()));
            }
            (JOB_IFACE, "Finished") => {
                let (ok, message): (bool, String) =
                    msg.body().deserialize().unwrap_or((false, String::new()));
                let detail = if ok {
                    format!("ok {message}")
                } else {
                    format!("failed {message}")
                };
                out.push(ev(
                    "job-finished",
                    &object_of(self, &path),
                    detail.trim().into(),
                ));
            }
            _ => {}
        }
        out
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn line(e: &Event) -> String {
    let detail = e.detail.replace(['\n', '\r'], " ");
    format!(
        "{}  {:<17} {:<24} {detail}",
        format_timestamp(e.time),
        e.kind,
        e.object
    )
    .trim_end()
    .to_string()
}

/// Prints events until the daemon leaves the bus (exit 9) or the user interrupts.
pub async fn run(daemon: &Daemon, json: bool) -> Result<(), CliError> {
    let signals = MatchRule::builder()
        .msg_type(Type::Signal)
        .sender(BUS_NAME)?
        .build();
    let owner = MatchRule::builder()
        .msg_type(Type::Signal)
        .sender("org.freedesktop.DBus")?
        .interface("org.freedesktop.DBus")?
        .member("NameOwnerChanged")?
        .arg(0, BUS_NAME)?
        .build();
    let mut stream = futures_util::stream::select(
        MessageStream::for_match_rule(signals, &daemon.conn, Some(4096)).await?,
        MessageStream::for_match_rule(owner, &daemon.conn, Some(16)).await?,
    );
    let mut monitor = Monitor::default();
    monitor.seed(daemon.managed_objects().await?);
    use std::io::Write;
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        if msg
            .header()
            .member()
            .is_some_and(|m| m == "NameOwnerChanged")
        {
            return Err(CliError::new(
                ExitCode::Unreachable,
                "osm-hostd left the bus; monitor stopped",
            ));
        }
        for e in monitor.events(&msg, now_us()) {
            let text = if json {
                serde_json::to_string(&e)
                    .map_err(|err| CliError::failed(format!("cannot encode JSON: {err}")))?
            } else {
                line(&e)
            };
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
                // The reader went away (e.g. `| head`): that is the end.
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_time_kind_object_detail() {
        let e = Event {
            time: 1_700_000_000_000_000,
            kind: "state".into(),
            object: "container/web1".into(),
            detail: "running\nx".into(),
        };
        assert_eq!(
            line(&e),
            "2023-11-14T22:13:20Z  state             container/web1           running x"
        );
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(
            j,
            r#"{"time":1700000000000000,"kind":"state","object":"container/web1","detail":"running\nx"}"#
        );
    }
}
