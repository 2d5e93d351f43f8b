//! Snapshots of a container in snapper's layout: create, list, delete and cleanup, plus
//! the snapper config files that let `snapper -c <name>` see the same snapshots.
//! Numbers are allocated by the daemon rule (never reused); cleanup is snapper's number
//! and timeline algorithms, run only by the daemon.

use super::container::Container;
use super::{blocking, Engine, Event};
use crate::error::{EngineError, EngineResult};
use crate::snapper::layout::{self, Entry};
use crate::snapper::{self, config as sconf, NumberLimits, SnapshotInfo, TimelineLimits};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub const CLEANUP_NUMBER: &str = "number";
pub const CLEANUP_TIMELINE: &str = "timeline";

/// What a caller asks for in a new snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub description: String,
    /// `""`, `number` or `timeline`.
    pub cleanup: String,
    pub userdata: BTreeMap<String, String>,
}

impl SnapshotRequest {
    fn validate(&self) -> EngineResult<()> {
        if !matches!(
            self.cleanup.as_str(),
            "" | CLEANUP_NUMBER | CLEANUP_TIMELINE
        ) {
            return Err(EngineError::invalid_argument(format!(
                "cleanup {:?} is not known; use \"number\", \"timeline\" or nothing",
                self.cleanup
            )));
        }
        if self.description.chars().any(|c| c.is_control()) {
            return Err(EngineError::invalid_argument(
                "the description must not contain control characters".into(),
            ));
        }
        for (k, v) in &self.userdata {
            snapper::info::validate_userdata(k, v).map_err(EngineError::invalid_argument)?;
        }
        Ok(())
    }
}

/// Count and newest date of a container's snapshots (for `info` and the properties).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub count: u32,
    /// Seconds since the epoch of the newest snapshot; 0 when there is none.
    pub newest: i64,
}

impl Engine {
    fn subvol_check(&self) -> impl Fn(&Path) -> bool + '_ {
        move |p: &Path| self.host.is_subvolume(p)
    }

    pub(super) fn number_limits(&self, c: &Container) -> NumberLimits {
        c.info()
            .spec
            .snapshots
            .number
            .unwrap_or(self.cfg.snapshots.number)
    }

    pub(super) fn timeline_limits(&self, c: &Container) -> TimelineLimits {
        c.info()
            .spec
            .snapshots
            .timeline
            .unwrap_or(self.cfg.snapshots.timeline)
    }

    pub(super) fn timeline_enabled(&self, c: &Container) -> bool {
        c.info()
            .spec
            .snapshots
            .timeline_create
            .unwrap_or(self.cfg.snapshots.timeline_create)
    }

    /// Writes the container's snapper config and lists it in SNAPPER_CONFIGS. Failures
    /// are logged, not fatal: the snapshots themselves do not depend on snapper.
    pub(super) fn write_snapper_config(&self, c: &Container) {
        let dir = self.store.container_dir(&c.name);
        let text = sconf::render_config(
            &c.name,
            &dir,
            &self.number_limits(c),
            &self.timeline_limits(c),
        );
        let result = self
            .host
            .write_snapper_config(&self.cfg.snapper, &c.name, &text);
        if let Err(e) = result {
            tracing::warn!(container = %c.name, error = %e, "cannot write the snapper config");
        }
    }

    /// Removes the configs osm-hostd wrote for containers that no longer exist (deleted
    /// while the daemon was down, or by hand).
    pub(super) fn prune_snapper_configs(&self) {
        let dir = &self.cfg.snapper.configs_dir;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let names = self.container_names();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours =
                std::fs::read_to_string(entry.path()).is_ok_and(|t| t.starts_with(sconf::MARKER));
            if ours && !names.contains(&name) {
                tracing::info!(container = %name, "removing the snapper config of a container that is gone");
                self.remove_snapper_config(&name);
            }
        }
    }

    pub(super) fn remove_snapper_config(&self, name: &str) {
        match self.host.remove_snapper_config(&self.cfg.snapper, name) {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(container = %name, "keeping a snapper config osm-hostd did not write")
            }
            Err(e) => {
                tracing::warn!(container = %name, error = %e, "cannot remove the snapper config")
            }
        }
    }

    /// Removes half-made snapshots an interrupted create left: numbers with a snapshot
    /// subvolume but no valid info.xml, and empty number directories.
    pub(super) fn recover_snapshots(&self, name: &str) {
        let dir = self.store.container_dir(name);
        let Ok(nums) = layout::numeric_entries(&dir) else {
            return;
        };
        let check = self.subvol_check();
        for n in nums {
            let Entry::Invalid(why) = layout::read_entry(&dir, n, &check) else {
                continue;
            };
            let ndir = layout::number_dir(&dir, n);
            let info_exists = ndir.join(layout::INFO_FILE).exists();
            if info_exists && !layout::interrupted_create(&dir, n) {
                // Someone else's (or a damaged) snapshot: leave it for a person.
                tracing::warn!(container = %name, num = n, reason = %why, "snapshot skipped");
                continue;
            }
            tracing::info!(container = %name, num = n, "removing a snapshot an interrupted create left");
            let sub = ndir.join(layout::SNAPSHOT_SUBVOL);
            if self.host.is_subvolume(&sub) {
                if let Err(e) = self.host.delete_subvolume(&sub) {
                    tracing::error!(container = %name, num = n, error = %e, "cannot remove it");
                    continue;
                }
            }
            let _ = layout::remove_number_dir(&dir, n);
        }
    }

    /// The container's valid snapshots, ascending by number (what `snapper list` shows).
    pub fn list_snapshots(&self, name: &str) -> EngineResult<Vec<SnapshotInfo>> {
        self.container(name)?;
        let dir = self.store.container_dir(name);
        let list = layout::read_snapshots(&dir, &self.subvol_check()).map_err(|e| {
            EngineError::io(
                format!("reading {}", layout::snapshots_dir(&dir).display()),
                &e,
            )
        })?;
        // Snapper's numbers seen here are never handed out again, even once deleted.
        if let Some(top) = list.last() {
            let _ = layout::note_number(&dir, top.num);
        }
        Ok(list)
    }

    pub fn snapshot_summary(&self, name: &str) -> SnapshotSummary {
        let list = self.list_snapshots(name).unwrap_or_default();
        SnapshotSummary {
            count: list.len() as u32,
            newest: list.iter().map(|s| s.date).max().unwrap_or(0),
        }
    }

    /// Takes a read-only snapshot of a container; returns its number. Refused with
    /// `NoSpace` when the store is below `snapshots.min_free` even after a cleanup.
    pub async fn create_snapshot(
        self: &Arc<Self>,
        name: &str,
        req: SnapshotRequest,
    ) -> EngineResult<u32> {
        req.validate()?;
        let c = self.container(name)?;
        let _op = c.begin("snapshot")?;
        let engine = self.clone();
        let c2 = c.clone();
        let num = blocking(move || {
            engine.ensure_free_space(&c2)?;
            engine.snapshot_locked(&c2, &req)
        })
        .await?;
        self.emit(Event::SnapshotCreated(name.to_string(), num));
        Ok(num)
    }

    fn ensure_free_space(self: &Arc<Self>, c: &Arc<Container>) -> EngineResult<()> {
        let floor = self.cfg.snapshots.min_free;
        if floor == 0 {
            return Ok(());
        }
        let free = || {
            self.store
                .space()
                .map(|(_, avail)| avail)
                .unwrap_or(u64::MAX)
        };
        if free() >= floor {
            return Ok(());
        }
        tracing::info!(container = %c.name, "free space below the floor; cleaning up first");
        let deleted = self.cleanup_locked(c)?;
        // Btrfs frees a deleted subvolume's space in the background: give it a moment.
        let mut avail = free();
        let mut waits = if deleted.is_empty() { 0 } else { 10 };
        while avail < floor && waits > 0 {
            std::thread::sleep(std::time::Duration::from_millis(500));
            avail = free();
            waits -= 1;
        }
        if avail >= floor {
            return Ok(());
        }
        Err(EngineError::no_space(format!(
            "not taking a snapshot of {}: {} free in the store after cleanup, below the floor of {} \
             (snapshots.min_free); delete snapshots or containers to free space",
            c.name,
            crate::config::format_size(avail),
            crate::config::format_size(floor)
        )))
    }

    /// Allocates a number, snapshots the subvolume read-only and writes info.xml; on
    /// failure removes what it made, as snapper does: the subvolume, then `<N>/`.
    pub(super) fn snapshot_locked(
        &self,
        c: &Container,
        req: &SnapshotRequest,
    ) -> EngineResult<u32> {
        let dir = self.store.container_dir(&c.name);
        let num = layout::allocate(&dir).map_err(|e| {
            EngineError::io(
                format!("allocating a snapshot number in {}", dir.display()),
                &e,
            )
        })?;
        let sub = layout::snapshot_subvol(&dir, num);
        let mut info = SnapshotInfo::single(num, crate::fsutil::now_secs() as i64);
        info.description = req.description.clone();
        info.cleanup = req.cleanup.clone();
        info.userdata = req.userdata.clone();
        info.userdata
            .insert("created_by".into(), "osm-hostd".into());
        // info.xml first, then the snapshot: creating the snapshot commits the Btrfs
        // transaction, which makes the number directory, the number record and the
        // info.xml rename durable with it (one fsync, of info.xml's data, instead of four).
        let result = layout::write_info_before_snapshot(&dir, &info)
            .map_err(|e| EngineError::io(format!("writing info.xml of snapshot {num}"), &e))
            .and_then(|()| self.host.snapshot(&dir, &sub, true));
        if let Err(e) = result {
            if self.host.is_subvolume(&sub) {
                let _ = self.host.delete_subvolume(&sub);
            }
            // No commit followed the allocation: keep the number from being reused.
            let _ = layout::sync_last_number(&dir);
            let _ = layout::remove_number_dir(&dir, num);
            return Err(e);
        }
        tracing::info!(container = %c.name, num, cleanup = %info.cleanup, "snapshot taken");
        Ok(num)
    }

    /// Deletes one snapshot (its subvolume, info.xml and directory).
    pub async fn delete_snapshot(self: &Arc<Self>, name: &str, num: u32) -> EngineResult<()> {
        let c = self.container(name)?;
        let _op = c.begin("snapshot delete")?;
        let engine = self.clone();
        let n = name.to_string();
        blocking(move || {
            engine.require_snapshot(&n, num)?;
            engine.delete_snapshot_locked(&n, num)
        })
        .await?;
        self.emit(Event::SnapshotDeleted(name.to_string(), num));
        Ok(())
    }

    pub(super) fn require_snapshot(&self, name: &str, num: u32) -> EngineResult<SnapshotInfo> {
        let dir = self.store.container_dir(name);
        match layout::read_entry(&dir, num, &self.subvol_check()) {
            Entry::Valid(info) if num != 0 => Ok(info),
            _ => Err(EngineError::not_found(format!(
                "container {name} has no snapshot {num}; `osm-hostctl snapshot list {name}` shows them"
            ))),
        }
    }

    fn delete_snapshot_locked(&self, name: &str, num: u32) -> EngineResult<()> {
        let dir = self.store.container_dir(name);
        let sub = layout::snapshot_subvol(&dir, num);
        let _ = layout::note_number(&dir, num);
        if self.host.is_subvolume(&sub) {
            self.host.delete_subvolume(&sub)?;
        }
        layout::remove_number_dir(&dir, num)
            .map_err(|e| EngineError::io(format!("removing snapshot {num} of {name}"), &e))?;
        tracing::info!(container = %name, num, "snapshot deleted");
        Ok(())
    }

    /// Runs the number and timeline cleanups on a container; returns what was deleted.
    pub async fn cleanup_snapshots(self: &Arc<Self>, name: &str) -> EngineResult<Vec<u32>> {
        let c = self.container(name)?;
        let _op = c.begin("snapshot cleanup")?;
        let engine = self.clone();
        let c2 = c.clone();
        blocking(move || engine.cleanup_locked(&c2)).await
    }

    fn cleanup_locked(&self, c: &Container) -> EngineResult<Vec<u32>> {
        let dir = self.store.container_dir(&c.name);
        let snaps = layout::read_snapshots(&dir, &self.subvol_check())
            .map_err(|e| EngineError::io(format!("reading snapshots of {}", c.name), &e))?;
        let now = crate::fsutil::now_secs() as i64;
        let mut doomed = snapper::number_cleanup(&snaps, &self.number_limits(c), now);
        doomed.extend(snapper::timeline_cleanup(
            &snaps,
            &self.timeline_limits(c),
            now,
            &snapper::time::local_tm,
        ));
        doomed.sort_unstable();
        let mut deleted = Vec::new();
        let mut first_error = None;
        for num in doomed {
            match self.delete_snapshot_locked(&c.name, num) {
                Ok(()) => {
                    deleted.push(num);
                    self.emit(Event::SnapshotDeleted(c.name.clone(), num));
                }
                Err(e) => {
                    tracing::error!(container = %c.name, num, error = %e, "cleanup could not delete a snapshot");
                    first_error.get_or_insert(e);
                }
            }
        }
        if !deleted.is_empty() {
            tracing::info!(container = %c.name, ?deleted, "snapshot cleanup");
        }
        match first_error {
            Some(e) if deleted.is_empty() => Err(e),
            _ => Ok(deleted),
        }
    }

    /// One scheduled run: a timeline snapshot of every container that wants one, then
    /// cleanup of every container. Busy containers are skipped until the next run.
    pub async fn scheduled_snapshots(self: &Arc<Self>) {
        for c in self.all_containers() {
            if self.timeline_enabled(&c) {
                let req = SnapshotRequest {
                    description: "timeline".into(),
                    cleanup: CLEANUP_TIMELINE.into(),
                    userdata: BTreeMap::new(),
                };
                if let Err(e) = self.create_snapshot(&c.name, req).await {
                    tracing::warn!(container = %c.name, error = %e, "scheduled snapshot not taken");
                }
            }
            if let Err(e) = self.cleanup_snapshots(&c.name).await {
                tracing::warn!(container = %c.name, error = %e, "scheduled cleanup failed");
            }
        }
    }

    /// Runs [`Engine::scheduled_snapshots`] every `snapshots.interval` seconds, aligned
    /// to the wall clock (on the hour by default).
    pub fn spawn_snapshot_scheduler(self: &Arc<Self>) {
        let engine = Arc::downgrade(self);
        let interval = self.cfg.snapshots.interval.max(1);
        tokio::spawn(async move {
            loop {
                let now = crate::fsutil::now_secs();
                let wait = interval - now % interval;
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.scheduled_snapshots().await;
            }
        });
    }
}
