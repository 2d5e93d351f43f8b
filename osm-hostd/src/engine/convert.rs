//! `set NAME --unprivileged`: converting a privileged container (one made before
//! unprivileged containers, or with `--privileged`) to its own id range. It rides on the
//! snapshot restore's crash-safe swap (see `snapshot_restore.rs`): the same journal, staging
//! subvolume, marker and recovery, so a daemon killed at any step leaves the old
//! container or the converted one:
//!
//! 1. refuse unless stopped; check every owner, ACL and capability of the upper layer is
//!    inside 0-65535 (nothing is changed otherwise);
//! 2. journal, then a safety snapshot (kept);
//! 3. a writable snapshot of the container as the staging subvolume; its upper layer
//!    shifted into the new range, `work/` emptied, its `container.toml` given the range;
//! 4. `.snapshots` moved into it, the two exchanged (`RENAME_EXCHANGE`), the old data
//!    deleted.

use super::container::{Container, RunState};
use super::snapshots::SnapshotRequest;
use super::{blocking, Engine, Event};
use crate::error::{EngineError, EngineResult};
use crate::idmap::IdMap;
use crate::shift::Range;
use crate::spec::ContainerSpec;
use std::collections::BTreeMap;
use std::sync::Arc;

impl Engine {
    /// Converts stopped container `c` (its operation lock held) to an unprivileged one.
    pub(super) async fn convert_unprivileged(
        self: &Arc<Self>,
        c: &Arc<Container>,
    ) -> EngineResult<()> {
        self.refresh_state(c);
        let info = c.info();
        if info.spec.unprivileged_map().is_some() {
            return Ok(());
        }
        if info.state != RunState::Stopped {
            return Err(EngineError::invalid_state(format!(
                "container {} is {}; stop it first (`osm-hostctl stop {}`), then convert it",
                c.name,
                info.state.as_str(),
                c.name
            )));
        }
        let pending = self.allocate_idmap()?;
        let map = pending.map;
        let engine = self.clone();
        let c2 = c.clone();
        blocking(move || engine.convert_blocking(&c2, map)).await?;
        self.reload_spec(c);
        drop(pending);
        tracing::info!(container = %c.name, uid = map.uid, "container converted to unprivileged");
        self.emit(Event::ContainerSpecChanged(c.name.clone()));
        Ok(())
    }

    fn convert_blocking(&self, c: &Container, map: IdMap) -> EngineResult<()> {
        let name = &c.name;
        let dir = self.store.container_dir(name);
        let upper = dir.join("rootfs-layer");
        let from = Range::of(None);
        let to = Range::of(Some(map));
        self.host.check_owners(&upper, &from).map_err(|e| {
            EngineError::invalid_state(format!("cannot convert {name} to unprivileged: {e}"))
        })?;
        self.write_journal(
            name,
            &super::snapshot_restore::Journal {
                snapshot: 0,
                was_running: false,
                safety: None,
            },
        )?;
        super::snapshot_restore::crash_point("journal");
        let result = (|| {
            let mut userdata = BTreeMap::new();
            userdata.insert("safety".to_string(), "yes".to_string());
            userdata.insert("before".to_string(), "unprivileged".to_string());
            let safety = self.snapshot_locked(
                c,
                &SnapshotRequest {
                    description: "before the conversion to unprivileged".into(),
                    cleanup: String::new(),
                    userdata,
                },
            )?;
            self.emit(Event::SnapshotCreated(name.clone(), safety));
            super::snapshot_restore::crash_point("safety");
            self.stage_convert(name, &from, &to, map)?;
            super::snapshot_restore::crash_point("staged");
            Ok(())
        })();
        if let Err(e) = result {
            self.roll_back_restore(name);
            let _ = std::fs::remove_file(self.journal_path(name));
            return Err(e);
        }
        if let Err(e) = self.swap_restore(name) {
            self.recover_restore(name, None);
            let _ = std::fs::remove_file(self.journal_path(name));
            return Err(e);
        }
        self.finish_restore_files(name, true);
        super::snapshot_restore::crash_point("cleaned");
        let _ = std::fs::remove_file(self.journal_path(name));
        Ok(())
    }

    /// Step 3: the converted copy in the staging subvolume.
    fn stage_convert(&self, name: &str, from: &Range, to: &Range, map: IdMap) -> EngineResult<()> {
        let staging = self.stage_from(name, &self.store.container_dir(name))?;
        self.host
            .shift_owners(&staging.join("rootfs-layer"), from, to)
            .map_err(|e| EngineError::failed(format!("shifting the upper layer of {name}: {e}")))?;
        let mut spec =
            ContainerSpec::load(&staging).map_err(|e| EngineError::failed(e.to_string()))?;
        spec.privileged = false;
        spec.idmap = Some(map);
        spec.save(&staging)
            .map_err(|e| EngineError::failed(e.to_string()))?;
        self.write_restore_marker(name, 0)
    }
}
