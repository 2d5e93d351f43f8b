//! Prometheus metrics at `/metrics` (`[metrics] listen`).
//!
//! A scrape reads a copy of the engine's state (each container's status is one short
//! lock) and a few small files per container (cgroup counters, `/proc/<pid>/net/dev`);
//! it never takes a container's operation lock, so it neither waits for nor holds up a
//! state-changing call. What is costly to measure (disk usage, a walk of the upper dir;
//! snapshot lists) is cached and refreshed in the background and on events.

mod cgroup;
mod collect;
mod http;
mod text;

use crate::engine::{Engine, Event, SnapshotSummary};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `address:port`, an absolute unix socket path, or "" for no metrics.
    pub listen: Listen,
    /// Seconds between background measurements of each container's disk usage.
    pub disk_usage_interval: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 9477))),
            disk_usage_interval: 300,
        }
    }
}

/// Where the metrics are served (`metrics.listen`, parsed when the config is loaded).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Listen {
    Off,
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl TryFrom<String> for Listen {
    type Error = String;
    fn try_from(text: String) -> Result<Listen, String> {
        let l = text.trim();
        if l.is_empty() {
            return Ok(Listen::Off);
        }
        if l.starts_with('/') {
            return Ok(Listen::Unix(PathBuf::from(l)));
        }
        l.parse().map(Listen::Tcp).map_err(|_| {
            format!(
                "metrics.listen = {l:?} must be ADDRESS:PORT (e.g. \"127.0.0.1:9477\" or \
                 \"[::1]:9477\"), an absolute unix socket path, or \"\" to turn metrics off"
            )
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Off => f.write_str(""),
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

impl MetricsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.disk_usage_interval == 0 {
            return Err("metrics.disk_usage_interval must be at least 1 second".into());
        }
        Ok(())
    }
}

/// The collector's own state: caches and counters kept between scrapes.
pub struct Metrics {
    engine: Arc<Engine>,
    /// Seconds since the epoch when the daemon started.
    started: f64,
    cgroups: cgroup::Mounts,
    disk: Mutex<HashMap<String, u64>>,
    snapshots: Mutex<HashMap<String, SnapshotSummary>>,
    /// Job kind -> (started, failed).
    jobs: Mutex<BTreeMap<&'static str, (u64, u64)>>,
}

impl Metrics {
    pub fn new(engine: Arc<Engine>) -> Arc<Metrics> {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Arc::new(Metrics {
            engine,
            started,
            cgroups: cgroup::Mounts::detect(),
            disk: Default::default(),
            snapshots: Default::default(),
            jobs: Default::default(),
        })
    }

    /// The current exposition (blocking: run it off the async executor).
    pub fn render(&self) -> String {
        collect::render(self)
    }

    fn refresh_snapshots(&self, name: &str) {
        let s = self.engine.snapshot_summary(name);
        self.snapshots
            .lock()
            .expect("metrics lock")
            .insert(name.to_string(), s);
    }

    fn refresh_disk(&self, name: &str) {
        if let Ok(bytes) = self.engine.container_disk_usage(name) {
            self.disk
                .lock()
                .expect("metrics lock")
                .insert(name.to_string(), bytes);
        }
    }

    fn forget(&self, name: &str) {
        self.disk.lock().expect("metrics lock").remove(name);
        self.snapshots.lock().expect("metrics lock").remove(name);
    }

    fn on_event(self: &Arc<Self>, ev: Event) {
        match ev {
            Event::ContainerAdded(n) => {
                let m = self.clone();
                tokio::task::spawn_blocking(move || {
                    m.refresh_snapshots(&n);
                    m.refresh_disk(&n);
                });
            }
            Event::ContainerRemoved(n) => self.forget(&n),
            Event::SnapshotCreated(n, _) | Event::SnapshotDeleted(n, _) | Event::Restored(n, _) => {
                let m = self.clone();
                tokio::task::spawn_blocking(move || m.refresh_snapshots(&n));
            }
            Event::JobAdded(id) => {
                if let Some(job) = self.engine.jobs.get(id) {
                    self.jobs
                        .lock()
                        .expect("metrics lock")
                        .entry(job.kind)
                        .or_default()
                        .0 += 1;
                }
            }
            Event::JobFinished(id) => {
                if let Some(job) = self.engine.jobs.get(id) {
                    if job.status().state == crate::engine::jobs::JobState::Failed {
                        self.jobs
                            .lock()
                            .expect("metrics lock")
                            .entry(job.kind)
                            .or_default()
                            .1 += 1;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Starts the collector (event listener, background refresh) and serves it on
/// `[metrics] listen`. A listen address that cannot be bound is logged, not fatal:
/// the containers matter more than their graphs, and Prometheus reports the target down.
pub async fn start(engine: &Arc<Engine>) -> Option<Arc<Metrics>> {
    let cfg = engine.config().metrics.clone();
    let listen = match &cfg.listen {
        Listen::Off => return None,
        l => l.clone(),
    };
    let metrics = Metrics::new(engine.clone());
    let mut events = engine.subscribe();
    let m = metrics.clone();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(ev) => m.on_event(ev),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    });
    let m = metrics.clone();
    let interval = Duration::from_secs(cfg.disk_usage_interval);
    tokio::spawn(async move {
        loop {
            let m2 = m.clone();
            // One container at a time: the walk is I/O the containers also need.
            let _ = tokio::task::spawn_blocking(move || {
                for name in m2.engine.container_names() {
                    m2.refresh_snapshots(&name);
                    m2.refresh_disk(&name);
                }
            })
            .await;
            tokio::time::sleep(interval).await;
        }
    });
    match http::serve(&listen, metrics.clone()).await {
        Ok(()) => tracing::info!(listen = %cfg.listen, "serving metrics at /metrics"),
        Err(e) => {
            tracing::error!(listen = %cfg.listen, error = %e, "cannot serve metrics; going on without them")
        }
    }
    Some(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        let c = |l: &str| Listen::try_from(l.to_string());
        assert_eq!(c("").unwrap(), Listen::Off);
        assert_eq!(
            c("127.0.0.1:9477").unwrap(),
            Listen::Tcp("127.0.0.1:9477".parse().unwrap())
        );
        assert_eq!(
            c("/run/osm-host/metrics.sock").unwrap(),
            Listen::Unix("/run/osm-host/metrics.sock".into())
        );
        let e = c("localhost").unwrap_err();
        assert!(e.contains("ADDRESS:PORT"), "{e}");
        assert!(c("9477").is_err());
        assert_eq!(
            MetricsConfig::default().listen.to_string(),
            "127.0.0.1:9477"
        );
    }
}
