//! `set`: change a container's autostart policy, boot order and limits. The spec is
//! rewritten atomically under the container's operation lock; limits apply at the next
//! start (the LXC config is regenerated at every start).

use super::create::CreateRequest;
use super::{blocking, Engine, Event};
use crate::error::{EngineError, EngineResult};
use crate::spec::Autostart;
use std::sync::Arc;

/// The settings to change; `None` leaves a setting as it is. A limit of `Some(0)`
/// removes that limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetRequest {
    pub autostart: Option<Autostart>,
    pub boot_priority: Option<i32>,
    pub boot_delay: Option<u32>,
    pub memory: Option<u64>,
    pub cpus: Option<u32>,
    /// Convert a privileged container to its own id range (`set --unprivileged`).
    pub unprivileged: bool,
}

impl SetRequest {
    pub fn is_empty(&self) -> bool {
        *self == SetRequest::default()
    }
}

/// Longest `boot_delay` accepted: an hour holds up the rest of the boot already.
pub const MAX_BOOT_DELAY: u32 = 3600;

impl Engine {
    /// Changes a container's settings in any run state; `Busy` while another operation
    /// holds it. Setting what is already set is a no-op.
    pub async fn set_container(self: &Arc<Self>, name: &str, req: SetRequest) -> EngineResult<()> {
        if req.is_empty() {
            return Err(EngineError::invalid_argument(
                "nothing to change; give at least one setting".to_string(),
            ));
        }
        if let Some(d) = req.boot_delay {
            if d > MAX_BOOT_DELAY {
                return Err(EngineError::invalid_argument(format!(
                    "boot delay {d} s is too long; give 0 to {MAX_BOOT_DELAY} seconds"
                )));
            }
        }
        self.validate_limits(&CreateRequest {
            memory: req.memory.filter(|m| *m != 0),
            cpus: req.cpus.filter(|c| *c != 0),
            ..Default::default()
        })?;
        let c = self.container(name)?;
        let _op = c.begin("set")?;
        if req.unprivileged {
            self.convert_unprivileged(&c).await?;
        }
        let mut spec = c.info().spec;
        let before = spec.clone();
        if let Some(a) = req.autostart {
            spec.autostart = a;
        }
        if let Some(p) = req.boot_priority {
            spec.boot_priority = p;
        }
        if let Some(d) = req.boot_delay {
            spec.boot_delay = d;
        }
        if let Some(m) = req.memory {
            spec.memory = (m != 0).then_some(m);
        }
        if let Some(n) = req.cpus {
            spec.cpus = (n != 0).then_some(n);
        }
        if spec == before {
            return Ok(());
        }
        let engine = self.clone();
        let spec2 = spec.clone();
        blocking(move || {
            let dir = engine.store.container_dir(&spec2.name);
            spec2
                .save(&dir)
                .map_err(|e| EngineError::failed(e.to_string()))
        })
        .await?;
        c.update(|s| s.spec = spec);
        tracing::info!(container = %name, "container settings changed");
        self.emit(Event::ContainerSpecChanged(name.to_string()));
        Ok(())
    }
}
