//! Host boot and host shutdown.
//!
//! **Boot versus daemon restart.** `runtime_dir` is on tmpfs (`/run/osm-host`), so it is
//! empty after a host boot. The first daemon start after a boot finds no
//! [`BOOT_MARKER`] there, creates it and starts every container that should run. Any
//! later start (a crash, `systemctl restart`, a package upgrade) finds the marker: it
//! adopts what is running and starts nothing, because a stopped container may have been
//! stopped on purpose by an operator.
//!
//! **Order.** Containers start by `boot_priority`, highest first. A priority group
//! starts in parallel (at most `[boot] parallel` at a time); the next group starts when
//! every container of this one has had its first attempt and its `boot_delay`. A failed
//! start is retried in the background (`[boot] retries`, delay doubling from
//! `retry_delay`) so one broken container never holds up the others; when it still
//! fails it keeps a warning (`Warning` over D-Bus) until it starts.
//!
//! **Shutdown.** [`Engine::shutdown_host`] records for every container whether it was
//! running (`last-state` in its directory, for `autostart = "last-state"`), then stops
//! the running ones in reverse priority order, a group at a time, each with a clean
//! shutdown of at most `[boot] stop_timeout` seconds.

use super::container::{Container, RunState};
use super::lifecycle::Transition;
use super::{Engine, Event};
use crate::error::{EngineError, EngineResult};
use crate::spec::Autostart;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Created in `runtime_dir` by the first daemon start after a host boot.
pub const BOOT_MARKER: &str = "booted";
/// In a container's directory: `running` or `stopped`, as at the last host shutdown.
pub const LAST_STATE_FILE: &str = "last-state";

impl Engine {
    /// Whether this is the first daemon start since the host booted (no marker in
    /// `runtime_dir`); creates the marker, so it answers `true` once per boot.
    pub fn claim_boot(&self) -> std::io::Result<bool> {
        let dir = &self.cfg.runtime_dir;
        std::fs::create_dir_all(dir)?;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(BOOT_MARKER))
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes back [`Engine::claim_boot`]'s marker, for a daemon that fails before it is
    /// ready: its next start is then still the first after the boot.
    pub fn unclaim_boot(&self) {
        let _ = std::fs::remove_file(self.cfg.runtime_dir.join(BOOT_MARKER));
    }

    /// Runs [`Engine::autostart`] in the background.
    pub fn spawn_autostart(self: &Arc<Self>, boot: bool) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move { engine.autostart(boot).await })
    }

    /// At a host boot, starts every container that should run, in priority groups;
    /// returns when all of them have started or given up. At a daemon restart, nothing.
    pub async fn autostart(self: &Arc<Self>, boot: bool) {
        if !boot {
            tracing::info!("daemon restart, not a host boot: running containers adopted, stopped ones left stopped");
            return;
        }
        self.wait_for_host().await;
        let groups = self.boot_groups();
        let total: usize = groups.values().map(Vec::len).sum();
        tracing::info!(
            containers = total,
            groups = groups.len(),
            "host boot: starting autostart containers"
        );
        let permits = Arc::new(Semaphore::new(self.cfg.boot.parallel.max(1) as usize));
        let mut retries = JoinSet::new();
        for (std::cmp::Reverse(priority), group) in groups {
            if self.shutting_down.load(Ordering::SeqCst) {
                break;
            }
            tracing::info!(
                priority,
                containers = group.len(),
                "starting a priority group"
            );
            let mut tasks = JoinSet::new();
            for c in group {
                let engine = self.clone();
                let permits = permits.clone();
                tasks.spawn(async move {
                    let permit = permits.acquire_owned().await;
                    let result = engine.boot_attempt(&c).await;
                    drop(permit);
                    let delay = c.info().spec.boot_delay;
                    (c, result, delay)
                });
            }
            let mut delay = 0;
            while let Some(joined) = tasks.join_next().await {
                let Ok((c, result, d)) = joined else { continue };
                match result {
                    Ok(()) => delay = delay.max(d),
                    Err(e) => {
                        retries.spawn(self.clone().retry_start(c, e));
                    }
                }
            }
            if delay > 0 {
                tokio::time::sleep(Duration::from_secs(delay.into())).await;
            }
        }
        while retries.join_next().await.is_some() {}
        tracing::info!("autostart finished");
    }

    /// The containers to start at this boot, highest priority first.
    fn boot_groups(&self) -> BTreeMap<std::cmp::Reverse<i32>, Vec<Arc<Container>>> {
        let mut groups: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for c in self.all_containers() {
            let spec = c.info().spec;
            let wanted = match spec.autostart {
                Autostart::Never => false,
                Autostart::Always => true,
                Autostart::LastState => self.last_state(&c.name) == Some(true),
            };
            if wanted {
                groups
                    .entry(std::cmp::Reverse(spec.boot_priority))
                    .or_default()
                    .push(c);
            }
        }
        groups
    }

    /// Waits (up to `[boot] wait_timeout`) until the store is there and, when the daemon
    /// manages networking, the bridge exists; starts anyway after that.
    async fn wait_for_host(&self) {
        let deadline = Instant::now() + Duration::from_secs(self.cfg.boot.wait_timeout.into());
        loop {
            let store = self.store.containers_dir().is_dir();
            let bridge =
                !self.cfg.network.manage || self.host.bridge_exists(&self.cfg.network.bridge);
            if store && bridge {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    store,
                    bridge,
                    "store or bridge still missing; starting containers anyway"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn boot_attempt(self: &Arc<Self>, c: &Arc<Container>) -> EngineResult<()> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(EngineError::invalid_state(
                "the host is shutting down".to_string(),
            ));
        }
        let _op = c.begin("autostart")?;
        self.start_locked(c).await.map(|_| ())
    }

    async fn retry_start(self: Arc<Self>, c: Arc<Container>, first: EngineError) {
        let retries = self.cfg.boot.retries;
        let mut delay = self.cfg.boot.retry_delay;
        let mut err = first;
        for attempt in 1..=retries {
            tracing::warn!(container = %c.name, attempt, retry_in_s = delay, error = %err, "autostart failed; retrying");
            tokio::time::sleep(Duration::from_secs_f64(delay)).await;
            if self.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            match self.boot_attempt(&c).await {
                Ok(()) => return,
                Err(e) => err = e,
            }
            delay *= 2.0;
        }
        let warning = format!(
            "autostart gave up after {} attempts: {}",
            retries + 1,
            err.message()
        );
        tracing::error!(container = %c.name, %warning, "container left stopped");
        if c.update(|s| s.warning = warning) {
            self.emit(Event::ContainerChanged(c.name.clone()));
        }
    }

    /// What `last-state` says: `Some(true)` if the container ran at the last host
    /// shutdown, `None` if it was never recorded.
    pub fn last_state(&self, name: &str) -> Option<bool> {
        let path = self.store.container_dir(name).join(LAST_STATE_FILE);
        match std::fs::read_to_string(path).ok()?.trim() {
            "running" => Some(true),
            "stopped" => Some(false),
            _ => None,
        }
    }

    fn record_last_state(&self, name: &str, running: bool) {
        let path = self.store.container_dir(name).join(LAST_STATE_FILE);
        let text = if running { "running\n" } else { "stopped\n" };
        if let Err(e) = crate::fsutil::write_atomic(&path, text.as_bytes(), 0o644) {
            tracing::error!(container = %name, error = %e, "cannot record the last state");
        }
    }

    /// Host shutdown: records each container's state, then stops the running ones in
    /// reverse priority order (lowest first, a group in parallel). Returns the stopped
    /// containers in the order they stopped; fails listing those that did not stop.
    /// Autostart starts nothing after this has begun.
    pub async fn shutdown_host(self: &Arc<Self>) -> EngineResult<Vec<String>> {
        self.shutting_down.store(true, Ordering::SeqCst);
        let timeout = Duration::from_secs(self.cfg.boot.stop_timeout.into());
        let mut groups: BTreeMap<i32, Vec<Arc<Container>>> = BTreeMap::new();
        for c in self.all_containers() {
            let info = c.info();
            let running = if c.is_busy() {
                info.state != RunState::Stopped
            } else {
                self.refresh_state(&c);
                c.info().state != RunState::Stopped
            };
            self.record_last_state(&c.name, running);
            if running {
                groups.entry(info.spec.boot_priority).or_default().push(c);
            }
        }
        tracing::info!(groups = groups.len(), "host shutdown: stopping containers");
        let mut stopped = Vec::new();
        let mut failed = Vec::new();
        for (priority, group) in groups {
            tracing::info!(
                priority,
                containers = group.len(),
                "stopping a priority group"
            );
            let mut tasks = JoinSet::new();
            for c in group {
                let engine = self.clone();
                tasks.spawn(async move {
                    let r = engine.stop_for_shutdown(&c, timeout).await;
                    (c.name.clone(), r)
                });
            }
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((name, Ok(_))) => stopped.push(name),
                    Ok((name, Err(e))) => failed.push(format!("{name}: {}", e.message())),
                    Err(e) => failed.push(format!("internal task failed: {e}")),
                }
            }
        }
        if failed.is_empty() {
            Ok(stopped)
        } else {
            Err(EngineError::failed(format!(
                "some containers did not stop: {}",
                failed.join("; ")
            )))
        }
    }

    async fn stop_for_shutdown(
        self: &Arc<Self>,
        c: &Arc<Container>,
        timeout: Duration,
    ) -> EngineResult<Transition> {
        let deadline = Instant::now() + timeout;
        let _op = loop {
            match c.begin("host shutdown") {
                Ok(op) => break op,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        self.stop_locked(c, timeout, false).await
    }
}
