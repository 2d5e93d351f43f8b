//! Deleting a container: everything in its subvolume goes, nested `.snapshots` included.

use super::container::RunState;
use super::{blocking, Engine, Event, DELETING_PREFIX};
use crate::error::{EngineError, EngineResult};
use std::sync::Arc;
use std::time::Duration;

impl Engine {
    /// Deletes a stopped container; a running one only with `force` (it is killed).
    /// The subvolume is renamed out of the way first, so a daemon killed half-way
    /// finishes the deletion at its next start.
    pub async fn delete_container(self: &Arc<Self>, name: &str, force: bool) -> EngineResult<()> {
        let c = self.container(name)?;
        let _op = c.begin("delete")?;
        self.refresh_state(&c);
        if c.info().state != RunState::Stopped {
            if !force {
                return Err(EngineError::invalid_state(format!(
                    "container {name} is running; stop it first, or delete with --force to kill it"
                )));
            }
            let engine = self.clone();
            let n = name.to_string();
            blocking(move || engine.host.lxc_stop(&n, Duration::from_secs(1), true)).await?;
            self.refresh_state(&c);
            if c.info().state != RunState::Stopped {
                return Err(EngineError::failed(format!(
                    "container {name} could not be killed; not deleted"
                )));
            }
        }
        let published = c.info().spec.publish;
        let dir = self.store.container_dir(name);
        let doomed = self
            .store
            .containers_dir()
            .join(format!("{DELETING_PREFIX}{name}"));
        std::fs::rename(&dir, &doomed)
            .map_err(|e| EngineError::io(format!("moving {} aside", dir.display()), &e))?;
        self.containers
            .write()
            .expect("containers lock")
            .remove(name);
        self.remove_snapper_config(name);
        self.drop_published(name, &published).await;
        self.emit(Event::ContainerRemoved(name.to_string()));
        let engine = self.clone();
        let result = blocking(move || engine.host.delete_subvolume(&doomed)).await;
        match result {
            Ok(()) => {
                tracing::info!(container = %name, "container deleted");
                Ok(())
            }
            Err(e) => {
                tracing::error!(container = %name, error = %e, "container removed but its subvolume was not deleted");
                Err(EngineError::failed(format!(
                    "container {name} is removed, but deleting its data failed ({e}); osm-hostd retries at its next start"
                )))
            }
        }
    }
}
