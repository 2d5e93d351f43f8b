//! Noticing containers that stop on their own: a pidfd on each running container's init
//! wakes us when it exits, and a slow reconcile catches changes made with LXC's own
//! tools behind the daemon's back.

use super::Engine;
use std::sync::Arc;
use std::time::Duration;

const RECONCILE_EVERY: Duration = Duration::from_secs(10);

impl Engine {
    /// Watches the init process of a running container; when it exits, the container's
    /// state is refreshed (and `State` changes are signalled).
    pub(super) fn watch_init(self: &Arc<Self>, name: String, pid: u32) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let exited = match self.host.watch_exit(pid) {
            Ok(exited) => exited,
            Err(e) => {
                tracing::debug!(container = %name, pid, error = %e, "cannot watch init");
                return;
            }
        };
        let engine = Arc::downgrade(self);
        handle.spawn(async move {
            exited.await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let Ok(c) = engine.container(&name) else {
                return;
            };
            if c.info().init_pid == Some(pid) && !c.is_busy() {
                let engine2 = engine.clone();
                let _ = tokio::task::spawn_blocking(move || engine2.refresh_state(&c)).await;
            }
        });
    }

    /// Re-reads every idle container's state now and then.
    pub fn spawn_reconciler(self: &Arc<Self>) {
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECONCILE_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let _ = tokio::task::spawn_blocking(move || {
                    for c in engine.all_containers() {
                        if !c.is_busy() {
                            engine.refresh_state(&c);
                        }
                    }
                })
                .await;
            }
        });
    }
}
