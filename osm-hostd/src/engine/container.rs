//! One container's in-memory handle: its spec, run state and the lock that allows one
//! operation at a time (a second conflicting call gets `Busy`).

use crate::error::{EngineError, EngineResult};
use crate::spec::ContainerSpec;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Stopped,
    Starting,
    Running,
    Stopping,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Stopped => osm_host_bus::STATE_STOPPED,
            RunState::Starting => osm_host_bus::STATE_STARTING,
            RunState::Running => osm_host_bus::STATE_RUNNING,
            RunState::Stopping => osm_host_bus::STATE_STOPPING,
        }
    }
}

/// A consistent copy of what is known about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub spec: ContainerSpec,
    pub state: RunState,
    pub init_pid: Option<u32>,
    /// µs since the epoch when it was seen starting; 0 when not running.
    pub started_at: u64,
    /// A problem that needs an operator (e.g. autostart gave up); "" when none. Cleared
    /// by a successful start.
    pub warning: String,
}

#[derive(Debug)]
pub(super) struct Container {
    pub name: String,
    op: Arc<tokio::sync::Mutex<()>>,
    current_op: Mutex<Option<&'static str>>,
    status: Mutex<ContainerInfo>,
    /// Held while its root filesystem is mounted for a start or unmounted after a stop,
    /// so a late watcher cannot unmount what a start just mounted.
    pub rootfs: Mutex<()>,
}

/// Held for the duration of one operation on a container.
pub(super) struct OpGuard<'a> {
    container: &'a Container,
    _lock: OwnedMutexGuard<()>,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        *self.container.current_op.lock().expect("op lock") = None;
    }
}

/// An [`OpGuard`] that owns its container, to move into a job's task.
pub(super) struct OwnedOpGuard {
    container: Arc<Container>,
    _lock: OwnedMutexGuard<()>,
}

impl Drop for OwnedOpGuard {
    fn drop(&mut self) {
        *self.container.current_op.lock().expect("op lock") = None;
    }
}

impl Container {
    pub fn new(spec: ContainerSpec) -> Container {
        Container {
            name: spec.name.clone(),
            op: Arc::new(tokio::sync::Mutex::new(())),
            current_op: Mutex::new(None),
            rootfs: Mutex::new(()),
            status: Mutex::new(ContainerInfo {
                spec,
                state: RunState::Stopped,
                init_pid: None,
                started_at: 0,
                warning: String::new(),
            }),
        }
    }

    /// Takes the container's operation lock, or says which operation holds it.
    pub fn begin(&self, op: &'static str) -> EngineResult<OpGuard<'_>> {
        match self.op.clone().try_lock_owned() {
            Ok(lock) => {
                *self.current_op.lock().expect("op lock") = Some(op);
                Ok(OpGuard {
                    container: self,
                    _lock: lock,
                })
            }
            Err(_) => {
                let running = self
                    .current_op
                    .lock()
                    .expect("op lock")
                    .unwrap_or("another operation");
                Err(EngineError::busy(format!(
                    "container {} is busy ({running} in progress); retry when it has finished",
                    self.name
                )))
            }
        }
    }

    /// Like [`Container::begin`], for an operation that outlives the caller (a job).
    pub fn begin_owned(self: &Arc<Self>, op: &'static str) -> EngineResult<OwnedOpGuard> {
        let lock = self.op.clone().try_lock_owned().map_err(|_| {
            let running = self
                .current_op
                .lock()
                .expect("op lock")
                .unwrap_or("another operation");
            EngineError::busy(format!(
                "container {} is busy ({running} in progress); retry when it has finished",
                self.name
            ))
        })?;
        *self.current_op.lock().expect("op lock") = Some(op);
        Ok(OwnedOpGuard {
            container: self.clone(),
            _lock: lock,
        })
    }

    /// True while an operation holds the lock (the reconciler leaves such containers alone).
    pub fn is_busy(&self) -> bool {
        self.op.try_lock().is_err()
    }

    pub fn info(&self) -> ContainerInfo {
        self.status.lock().expect("status lock").clone()
    }

    /// Updates the status; returns whether anything visible changed.
    pub fn update(&self, f: impl FnOnce(&mut ContainerInfo)) -> bool {
        let mut s = self.status.lock().expect("status lock");
        let before = s.clone();
        f(&mut s);
        *s != before
    }
}
