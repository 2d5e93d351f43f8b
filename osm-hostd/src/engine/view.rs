//! A container as readers see it: its state and spec, its snapshots and its last
//! backups, gathered in one pass so a reader of every property (`GetAll`, `list`)
//! scans `.snapshots` once and reads the backup status once.

use super::{ContainerInfo, Engine, SnapshotSummary};
use crate::backup::status::ContainerBackup;
use crate::error::EngineResult;
use std::sync::atomic::Ordering;

#[derive(Debug, Clone)]
pub struct ContainerView {
    pub info: ContainerInfo,
    pub snapshots: SnapshotSummary,
    pub backup: ContainerBackup,
}

impl Engine {
    /// One consistent read of a container; `NotFound` when there is none.
    pub fn container_view(&self, name: &str) -> EngineResult<ContainerView> {
        let info = self.container_info(name)?;
        Ok(ContainerView {
            info,
            snapshots: self.snapshot_summary(name),
            backup: self
                .backup_status()
                .containers
                .remove(name)
                .unwrap_or_default(),
        })
    }

    /// Changes with every event the engine emits: a view read at one generation is
    /// still current while the generation is the same.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
