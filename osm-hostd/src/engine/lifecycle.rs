//! Start, stop and restart. Each verb takes the container's operation lock, asks the
//! current state whether it may run, and reports the state in its refusal.

use super::container::{Container, RunState};
use super::{blocking, Engine, Event};
use crate::error::{EngineError, EngineResult};
use crate::lxcconf::{self, ConfPaths};
use crate::spec::ContainerSpec;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a clean shutdown may take before the container is killed, by default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Done,
    /// The container was already in the requested state; nothing changed.
    AlreadyThere,
}

impl Engine {
    /// Starts a stopped container; a running one is left as it is (`AlreadyThere`).
    pub async fn start_container(self: &Arc<Self>, name: &str) -> EngineResult<Transition> {
        let c = self.container(name)?;
        let _op = c.begin("start")?;
        self.start_locked(&c).await
    }

    /// Stops a running container: init is asked to power off, and killed after
    /// `timeout` (or at once with `force`). A stopped one is `AlreadyThere`.
    pub async fn stop_container(
        self: &Arc<Self>,
        name: &str,
        timeout: Option<Duration>,
        force: bool,
    ) -> EngineResult<Transition> {
        let c = self.container(name)?;
        let _op = c.begin("stop")?;
        self.stop_locked(&c, timeout.unwrap_or(DEFAULT_STOP_TIMEOUT), force)
            .await
    }

    /// Stops (if running) and starts again, under one lock.
    pub async fn restart_container(
        self: &Arc<Self>,
        name: &str,
        timeout: Option<Duration>,
    ) -> EngineResult<()> {
        let c = self.container(name)?;
        let _op = c.begin("restart")?;
        self.stop_locked(&c, timeout.unwrap_or(DEFAULT_STOP_TIMEOUT), false)
            .await?;
        self.start_locked(&c).await.map(|_| ())
    }

    pub(super) async fn start_locked(
        self: &Arc<Self>,
        c: &Arc<Container>,
    ) -> EngineResult<Transition> {
        // A container we saw stop is not asked about again (that costs an lxc-info on
        // every start); if it was started behind our back, lxc-start fails and the
        // state is re-read below.
        if c.info().state != RunState::Stopped {
            self.refresh_state(c);
        }
        let info = c.info();
        if info.state == RunState::Running {
            return Ok(Transition::AlreadyThere);
        }
        self.require_base(&info.spec.base).map_err(|e| {
            EngineError::invalid_state(format!(
                "container {} cannot start: {}",
                c.name,
                e.message()
            ))
        })?;
        self.set_state(c, RunState::Starting, None);
        let engine = self.clone();
        let spec = info.spec.clone();
        let c2 = c.clone();
        let started = blocking(move || {
            let _rootfs = c2.rootfs.lock().expect("rootfs lock");
            let dir = engine.store.container_dir(&spec.name);
            let started = engine
                .prepare_for_start(&dir, &spec)
                .and_then(|()| engine.host.lxc_start(&spec.name));
            if !matches!(started, Ok(ref st) if st.running) {
                // A container that failed to start leaves no mounts behind.
                engine.unmount_rootfs(&spec);
            }
            started
        })
        .await;
        match started {
            Ok(st) if st.running => {
                c.update(|s| {
                    s.started_at = crate::fsutil::now_usecs();
                    s.warning.clear();
                });
                self.set_state(c, RunState::Running, st.init_pid);
                if let Some(pid) = st.init_pid {
                    self.watch_init(c.name.clone(), pid);
                }
                tracing::info!(container = %c.name, pid = ?st.init_pid, "container started");
                Ok(Transition::Done)
            }
            Ok(_) => {
                self.set_state(c, RunState::Stopped, None);
                let log = self.lxc_log(&c.name);
                tracing::warn!(container = %c.name, "container stopped right after starting");
                Err(EngineError::failed(format!(
                    "container {} stopped right after starting; its init exited (see {})",
                    c.name,
                    log.display()
                )))
            }
            Err(e) => {
                self.set_state(c, RunState::Stopped, None);
                self.refresh_state(c);
                if c.info().state == RunState::Running {
                    return Ok(Transition::AlreadyThere);
                }
                tracing::warn!(container = %c.name, error = %e, "container failed to start");
                Err(e)
            }
        }
    }

    pub(super) async fn stop_locked(
        self: &Arc<Self>,
        c: &Arc<Container>,
        timeout: Duration,
        force: bool,
    ) -> EngineResult<Transition> {
        self.refresh_state(c);
        if c.info().state == RunState::Stopped {
            return Ok(Transition::AlreadyThere);
        }
        self.set_state(c, RunState::Stopping, c.info().init_pid);
        let engine = self.clone();
        let name = c.name.clone();
        let result = blocking(move || {
            engine.host.lxc_stop(&name, timeout, force)?;
            engine.host.lxc_state(&name)
        })
        .await;
        match result {
            Ok(st) if !st.running => {
                self.set_state(c, RunState::Stopped, None);
                self.release_rootfs(c);
                tracing::info!(container = %c.name, force, "container stopped");
                Ok(Transition::Done)
            }
            Ok(st) => {
                self.set_state(c, RunState::Running, st.init_pid);
                Err(EngineError::failed(format!(
                    "container {} is still running after lxc-stop",
                    c.name
                )))
            }
            Err(e) => {
                self.refresh_state(c);
                tracing::warn!(container = %c.name, error = %e, "container failed to stop");
                Err(e)
            }
        }
    }

    pub(super) fn set_state(&self, c: &Container, state: RunState, pid: Option<u32>) {
        let changed = c.update(|s| {
            s.state = state;
            s.init_pid = pid;
            if state == RunState::Stopped {
                s.started_at = 0;
            }
        });
        if changed {
            self.emit(Event::ContainerChanged(c.name.clone()));
        }
    }

    /// Asks LXC for the container's real state and records it. Containers outlive the
    /// daemon, so this is how a new daemon adopts the running ones.
    pub(super) fn refresh_state(self: &Arc<Self>, c: &Arc<Container>) {
        let Ok(st) = self.host.lxc_state(&c.name) else {
            return;
        };
        let before = c.info();
        if st.running {
            if before.state != RunState::Running || before.init_pid != st.init_pid {
                if before.started_at == 0 {
                    let started = st
                        .init_pid
                        .and_then(|pid| self.host.process_started_at(pid))
                        .unwrap_or_else(crate::fsutil::now_usecs);
                    c.update(|s| s.started_at = started);
                }
                self.set_state(c, RunState::Running, st.init_pid);
                if let Some(pid) = st.init_pid {
                    self.watch_init(c.name.clone(), pid);
                }
            }
        } else {
            if before.state == RunState::Running {
                self.set_state(c, RunState::Stopped, None);
            }
            // Stopped (on its own, behind our back, or while the daemon was away).
            self.release_rootfs(c);
        }
    }

    fn lxc_log(&self, name: &str) -> PathBuf {
        self.cfg.runtime_dir.join("lxc").join(format!("{name}.log"))
    }

    /// Regenerates the LXC config (the bridge may have appeared or gone) and makes sure
    /// overlayfs has its upper and work dirs.
    pub(super) fn prepare_for_start(&self, dir: &Path, spec: &ContainerSpec) -> EngineResult<()> {
        for sub in ["rootfs-layer", "work"] {
            let p = dir.join(sub);
            if !p.is_dir() {
                std::fs::create_dir(&p)
                    .map_err(|e| EngineError::io(format!("creating {}", p.display()), &e))?;
            }
        }
        self.write_lxc_config_in(dir, spec)?;
        if let Some(m) = self.rootfs_mount(spec) {
            self.host.mount_rootfs(&m)?;
        }
        Ok(())
    }

    pub(super) fn render_lxc_config(&self, spec: &ContainerSpec) -> String {
        // Top-most first for overlayfs; the spec keeps them lowest first.
        let layer_dirs: Vec<PathBuf> = spec
            .layers
            .iter()
            .rev()
            .map(|l| self.store.layers_dir().join(l))
            .collect();
        let bridge = self.cfg.network.bridge.as_str();
        let paths = ConfPaths {
            common_conf: &self.common_conf_path(),
            base_dir: &self.store.bases_dir().join(&spec.base),
            layer_dirs: &layer_dirs,
            upper_dir: &self.store.container_dir(&spec.name).join("rootfs-layer"),
            bridge: self.host.bridge_exists(bridge).then_some(bridge),
            merged: &self.rootfs_mount_point(&spec.name),
            pids_max: self.cfg.isolation.pids_max,
        };
        lxcconf::render_container(spec, &paths, &self.facts)
    }

    fn write_lxc_config_in(&self, dir: &Path, spec: &ContainerSpec) -> EngineResult<()> {
        let text = self.render_lxc_config(spec);
        let path = dir.join(lxcconf::CONTAINER_CONF);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        crate::fsutil::write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(|e| EngineError::io(format!("writing {}", path.display()), &e))
    }
}
