//! What a fleet needs to know about the host: which containers ought to run, and what
//! the host has to spare (metrics, `host capacity`, `host health`).

use super::{ContainerInfo, Engine};
use crate::spec::Autostart;

impl Engine {
    /// Whether the container ought to be running: autostart, or `last-state` whose
    /// recorded state is running (what a boot would start).
    pub fn should_run(&self, info: &ContainerInfo) -> bool {
        match info.spec.autostart {
            Autostart::Never => false,
            Autostart::Always => true,
            Autostart::LastState => self.last_state(&info.spec.name) == Some(true),
        }
    }

    /// Layers in the store (`layers/<name>`, staging entries left out).
    pub fn layer_count(&self) -> usize {
        std::fs::read_dir(self.store.layers_dir())
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .filter(|e| e.path().is_dir())
                    .count()
            })
            .unwrap_or(0)
    }
}
