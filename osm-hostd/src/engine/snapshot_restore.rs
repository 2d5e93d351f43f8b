//! Restoring a container to one of its snapshots by swapping subvolumes (the order below
//! was tried by hand: snapper still lists every snapshot afterwards), as
//! a job. Nothing is copied, so the time does not grow with the container's size:
//!
//! 1. journal `containers/.restore-<name>.toml` (snapshot, whether it ran);
//! 2. stop the container (the engine's own stop);
//! 3. safety snapshot of the current state (kept: no cleanup value, `safety=yes`);
//! 4. writable snapshot of `<N>/snapshot` as `containers/.restore-<name>`, its
//!    `.snapshots` placeholder removed, `work/` emptied, a marker file added;
//! 5. move `<name>/.snapshots` into the staging subvolume;
//! 6. exchange `<name>` and the staging subvolume atomically (`RENAME_EXCHANGE`);
//! 7. delete the old data, remove the marker, start the container again if it ran,
//!    remove the journal.
//!
//! The container directory always exists, and `.snapshots` is always in exactly one of
//! the two subvolumes, so a daemon killed at any step finds on its next start either the
//! old data (roll back: drop the staging subvolume) or `.snapshots` in the staging
//! subvolume (roll forward: exchange), and finishes from there ([`Engine::recover_restores`]).
//!
//! The safety snapshot follows the stop, so it holds everything the
//! container wrote until it stopped.

use super::container::{Container, RunState};
use super::jobs::Job;
use super::lifecycle::DEFAULT_STOP_TIMEOUT;
use super::snapshots::SnapshotRequest;
use super::{blocking, Engine, Event};
use crate::error::{EngineError, EngineResult};
use crate::snapper::layout::{self, SNAPSHOTS_DIR};
use crate::spec::ContainerSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const RESTORE_PREFIX: &str = ".restore-";
/// In the store's `lxc/`: replaced container data being deleted in the background.
pub const TRASH_DIR: &str = ".trash";
/// Present in the staging subvolume; after the exchange, in the container: tells
/// recovery which side of the exchange it is on.
pub(super) const MARKER: &str = ".osm-restore-staging";
/// Test hook: the daemon kills itself (SIGKILL) when a restore reaches this step.
pub const CRASH_ENV: &str = "OSM_HOSTD_RESTORE_CRASH_AT";
/// The steps [`CRASH_ENV`] may name, in order; restores, conversions and rebases pass
/// each of them.
pub const CRASH_STEPS: [&str; 7] = [
    "journal",
    "stopped",
    "safety",
    "staged",
    "moved",
    "exchanged",
    "cleaned",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Journal {
    /// The snapshot restored; 0 for a restore from a backup.
    pub(super) snapshot: u32,
    pub(super) was_running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) safety: Option<u32>,
}

pub(super) fn crash_point(step: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == step) {
        tracing::warn!(step, "{CRASH_ENV}: killing the daemon");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> EngineError {
    EngineError::io(format!("{what} {}", path.display()), &e)
}

impl Engine {
    pub(super) fn journal_path(&self, name: &str) -> PathBuf {
        self.store
            .containers_dir()
            .join(format!("{RESTORE_PREFIX}{name}.toml"))
    }

    pub(super) fn staging_path(&self, name: &str) -> PathBuf {
        self.store
            .containers_dir()
            .join(format!("{RESTORE_PREFIX}{name}"))
    }

    pub(super) fn write_journal(&self, name: &str, j: &Journal) -> EngineResult<()> {
        let path = self.journal_path(name);
        let text = toml::to_string(j).expect("a journal always serializes");
        crate::fsutil::write_atomic(&path, text.as_bytes(), 0o600)
            .map_err(|e| io_err("writing", &path, e))
    }

    /// Starts a job restoring container `name` to snapshot `num`. Refused at once when
    /// the container or snapshot does not exist or another operation holds the container.
    pub fn restore_snapshot(self: &Arc<Self>, name: &str, num: u32) -> EngineResult<Arc<Job>> {
        let c = self.container(name)?;
        self.require_snapshot(name, num)?;
        // The snapshot's upper dir is a delta against the base its container.toml names.
        let snap = layout::snapshot_subvol(&self.store.container_dir(name), num);
        if let Ok(spec) = ContainerSpec::load(&snap) {
            let now = c.info().spec.unprivileged_map();
            if now.is_some() && spec.unprivileged_map() != now {
                return Err(EngineError::invalid_state(format!(
                    "snapshot {num} of {name} was taken before {name} was converted to unprivileged \
                     (its files belong to another id range); restoring it would undo the conversion. \
                     Pick a snapshot taken since, or restore a backup (`osm-hostctl backup restore`), which is shifted"
                )));
            }
            self.require_base(&spec.base).map_err(|e| {
                EngineError::invalid_state(format!(
                    "snapshot {num} of {name} was taken on base {:?}, which is not here any more: {}",
                    spec.base,
                    e.message()
                ))
            })?;
        }
        let guard = c.begin_owned("restore")?;
        let engine = self.clone();
        let job = self.jobs.start("restore", name, |job2| async move {
            let safety = engine.run_restore(&c, num, &job2).await;
            drop(guard);
            let safety = safety?;
            engine.emit(Event::Restored(c.name.clone(), num));
            Ok::<_, EngineError>(format!(
                "restored {} to snapshot {num}; the state before is snapshot {safety}",
                c.name
            ))
        });
        Ok(job)
    }

    async fn run_restore(
        self: &Arc<Self>,
        c: &Arc<Container>,
        num: u32,
        job: &Job,
    ) -> EngineResult<u32> {
        self.refresh_state(c);
        let mut journal = Journal {
            snapshot: num,
            was_running: c.info().state != RunState::Stopped,
            safety: None,
        };
        self.write_journal(&c.name, &journal)?;
        let was_running = journal.was_running;
        crash_point("journal");
        if journal.was_running {
            job.set_progress(0.1, "stopping the container");
            if let Err(e) = self.stop_locked(c, DEFAULT_STOP_TIMEOUT, false).await {
                let _ = std::fs::remove_file(self.journal_path(&c.name));
                return Err(e);
            }
        }
        crash_point("stopped");
        job.set_progress(0.3, "taking a safety snapshot");
        let engine = self.clone();
        let c2 = c.clone();
        let prepared = blocking(move || {
            let mut userdata = BTreeMap::new();
            userdata.insert("restore_of".to_string(), num.to_string());
            userdata.insert("safety".to_string(), "yes".to_string());
            let req = SnapshotRequest {
                description: format!("before restore to {num}"),
                cleanup: String::new(),
                userdata,
            };
            let safety = engine.snapshot_locked(&c2, &req)?;
            engine.emit(Event::SnapshotCreated(c2.name.clone(), safety));
            journal.safety = Some(safety);
            engine.write_journal(&c2.name, &journal)?;
            crash_point("safety");
            engine.stage_restore(&c2.name, num)?;
            crash_point("staged");
            Ok(journal)
        })
        .await;
        let journal = match prepared {
            Ok(j) => j,
            Err(e) => {
                self.abandon_staged_restore(c, was_running).await;
                return Err(e);
            }
        };
        job.set_progress(0.6, "swapping in the snapshot");
        self.swap_staged_restore(c, &journal).await?;
        crash_point("cleaned");
        self.reload_spec(c);
        let started = if journal.was_running {
            job.set_progress(0.9, "starting the container");
            self.start_locked(c).await.map(|_| ())
        } else {
            Ok(())
        };
        let _ = std::fs::remove_file(self.journal_path(&c.name));
        started.map_err(|e| {
            EngineError::failed(format!(
                "{} was restored to snapshot {num}, but did not start again: {}",
                c.name,
                e.message()
            ))
        })?;
        tracing::info!(container = %c.name, num, safety = ?journal.safety, "container restored");
        Ok(journal.safety.unwrap_or(0))
    }

    /// After a failed preparation nothing of the container changed: drops the staging
    /// copy, starts the container again if it ran, and drops the journal. Shared with the
    /// restore of a backup over a container.
    pub(super) async fn abandon_staged_restore(
        self: &Arc<Self>,
        c: &Arc<Container>,
        was_running: bool,
    ) {
        let engine = self.clone();
        let n = c.name.clone();
        let _ = blocking(move || {
            engine.roll_back_restore(&n);
            Ok(())
        })
        .await;
        if was_running {
            let _ = self.start_locked(c).await;
        }
        let _ = std::fs::remove_file(self.journal_path(&c.name));
    }

    /// Step 5: exchanges the staged copy with the container. On failure it settles it now
    /// as the next start would (forward if `.snapshots` moved, back otherwise; the
    /// container runs again if it ran), drops the journal and returns the error. Shared
    /// with the restore of a backup over a container.
    pub(super) async fn swap_staged_restore(
        self: &Arc<Self>,
        c: &Arc<Container>,
        journal: &Journal,
    ) -> EngineResult<()> {
        let engine = self.clone();
        let n = c.name.clone();
        let j2 = journal.clone();
        let swapped = blocking(move || match engine.swap_restore(&n) {
            Ok(()) => {
                engine.finish_restore_files(&n, true);
                Ok(())
            }
            Err(e) => {
                engine.recover_restore(&n, Some(&j2));
                Err(e)
            }
        })
        .await;
        if let Err(e) = swapped {
            self.reload_spec(c);
            self.refresh_state(c);
            let _ = std::fs::remove_file(self.journal_path(&c.name));
            return Err(e);
        }
        Ok(())
    }

    /// Step 4: a writable snapshot of snapshot `num`, ready to take `.snapshots`.
    fn stage_restore(&self, name: &str, num: u32) -> EngineResult<()> {
        let dir = self.store.container_dir(name);
        let staging = self.stage_from(name, &layout::snapshot_subvol(&dir, num))?;
        // A snapshot taken before the store was made private keeps its old mode.
        crate::hardening::private_dir(&staging).map_err(|e| io_err("closing", &staging, e))?;
        self.write_restore_marker(name, num)
    }

    /// A writable snapshot of `source` (the container itself, or one of its snapshots)
    /// as `name`'s staging subvolume, any earlier one dropped first, without the
    /// `.snapshots` placeholder (the container's `.snapshots` moves in at the swap) and
    /// with overlayfs' `work/` emptied. Shared by snapshot restore, rebase and the move
    /// to unprivileged. Returns the staging path.
    pub(super) fn stage_from(&self, name: &str, source: &Path) -> EngineResult<PathBuf> {
        let staging = self.staging_path(name);
        if staging.exists() {
            self.roll_back_restore(name);
        }
        self.host.snapshot(source, &staging, false)?;
        let placeholder = staging.join(SNAPSHOTS_DIR);
        if placeholder.exists() {
            std::fs::remove_dir(&placeholder).map_err(|e| io_err("removing", &placeholder, e))?;
        }
        let work = staging.join("work");
        if work.is_dir() {
            crate::fsutil::empty_dir(&work).map_err(|e| io_err("emptying", &work, e))?;
        }
        Ok(staging)
    }

    /// The marker that tells recovery which side of the exchange it is on.
    pub(super) fn write_restore_marker(&self, name: &str, num: u32) -> EngineResult<()> {
        let marker = self.staging_path(name).join(MARKER);
        std::fs::write(&marker, format!("{num}\n")).map_err(|e| io_err("writing", &marker, e))
    }

    /// Steps 5 and 6: `.snapshots` into the staging subvolume, then the exchange.
    pub(super) fn swap_restore(&self, name: &str) -> EngineResult<()> {
        let dir = self.store.container_dir(name);
        let staging = self.staging_path(name);
        let from = dir.join(SNAPSHOTS_DIR);
        let to = staging.join(SNAPSHOTS_DIR);
        std::fs::rename(&from, &to).map_err(|e| io_err("moving", &from, e))?;
        crash_point("moved");
        if let Err(e) = self.host.exchange(&staging, &dir) {
            // Put .snapshots back where it was; recovery at the next start would too.
            if let Err(back) = std::fs::rename(&to, &from) {
                tracing::error!(container = %name, error = %back, "cannot move .snapshots back; the next daemon start finishes the restore");
            }
            return Err(e);
        }
        crash_point("exchanged");
        Ok(())
    }

    /// Step 7's file work: the marker goes, `work/` is emptied (only ever while the
    /// container is stopped: overlayfs owns it while mounted), the old data is deleted
    /// in the background ([`Engine::discard_replaced`]).
    pub(super) fn finish_restore_files(&self, name: &str, empty_work: bool) {
        let dir = self.store.container_dir(name);
        let _ = std::fs::remove_file(dir.join(MARKER));
        let work = dir.join("work");
        if empty_work && work.is_dir() {
            if let Err(e) = crate::fsutil::empty_dir(&work) {
                tracing::warn!(container = %name, error = %e, "cannot empty work/");
            }
        }
        let staging = self.staging_path(name);
        if !staging.exists() || self.host.is_subvolume(&staging.join(SNAPSHOTS_DIR)) {
            // Nothing to drop, or .snapshots is in it: roll_back_restore says which.
            self.roll_back_restore(name);
            return;
        }
        self.discard_replaced(name, &staging);
    }

    /// Where replaced container data waits for its deletion: beside `containers/` on the
    /// same filesystem, outside every listing of containers.
    pub(super) fn trash_dir(&self) -> PathBuf {
        self.store.lxc_dir().join(TRASH_DIR)
    }

    /// Moves the replaced data of container `name` (the subvolume at `old`, without
    /// `.snapshots`) into the trash and deletes it on a thread of its own. Deleting a
    /// subvolume drops its cached pages there and then, which takes time in proportion to
    /// how much of the old data was in memory (35 ms for 1 GB here): no restore waits for
    /// that. A daemon stopped before it is done deletes the rest at its next start.
    fn discard_replaced(&self, name: &str, old: &Path) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let trash = self.trash_dir();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let target = trash.join(format!("{name}-replaced-{}-{n}", std::process::id()));
        let moved = std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&trash)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .and_then(|()| std::fs::rename(old, &target));
        if let Err(e) = moved {
            tracing::warn!(container = %name, error = %e, "cannot move the replaced data to the trash; deleting it now");
            self.roll_back_restore(name);
            return;
        }
        self.delete_in_background(vec![target]);
    }

    fn delete_in_background(&self, paths: Vec<PathBuf>) {
        let host = self.host.clone();
        std::thread::spawn(move || {
            for path in paths {
                if let Err(e) = host.delete_subvolume(&path) {
                    tracing::error!(path = %path.display(), error = %e, "cannot delete replaced data");
                }
            }
        });
    }

    /// Deletes what an earlier daemon left in the trash, in the background.
    pub(super) fn empty_trash(&self) {
        let Ok(entries) = std::fs::read_dir(self.trash_dir()) else {
            return;
        };
        let doomed: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| self.host.is_subvolume(p))
            .collect();
        if !doomed.is_empty() {
            tracing::info!(
                count = doomed.len(),
                "deleting replaced data an earlier daemon left"
            );
            self.delete_in_background(doomed);
        }
    }

    /// Deletes the staging subvolume, unless `.snapshots` is in it (never lose those).
    pub(super) fn roll_back_restore(&self, name: &str) {
        let staging = self.staging_path(name);
        if !staging.exists() {
            return;
        }
        if self.host.is_subvolume(&staging.join(SNAPSHOTS_DIR)) {
            tracing::error!(path = %staging.display(), "staging subvolume holds .snapshots; not deleting it");
            return;
        }
        if let Err(e) = self.host.delete_subvolume(&staging) {
            tracing::error!(path = %staging.display(), error = %e, "cannot delete the restore's staging subvolume");
        }
    }

    pub(super) fn reload_spec(&self, c: &Container) {
        let dir = self.store.container_dir(&c.name);
        match ContainerSpec::load(&dir) {
            Ok(mut spec) if spec.name == c.name => {
                // What a container publishes is the host's routing, not its content:
                // a restore keeps the current entries (an old one could clash).
                let published = c.info().spec.publish;
                if spec.publish != published {
                    spec.publish = published;
                    if let Err(e) = spec.save(&dir) {
                        tracing::error!(container = %c.name, error = %e, "cannot keep the published entries in the restored container.toml");
                    }
                }
                c.update(|s| s.spec = spec);
            }
            Ok(_) => {
                tracing::error!(container = %c.name, "restored container.toml names another container")
            }
            Err(e) => {
                tracing::error!(container = %c.name, error = %e, "cannot read the restored container.toml")
            }
        }
    }

    /// Finishes or rolls back restores a killed daemon left (called by [`Engine::open`]
    /// before the containers are scanned).
    pub(super) fn recover_restores(&self) {
        let dir = self.store.containers_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file
                .strip_prefix(RESTORE_PREFIX)
                .and_then(|f| f.strip_suffix(".toml"))
            else {
                continue;
            };
            let journal: Option<Journal> = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| toml::from_str(&t).ok());
            self.recover_restore(name, journal.as_ref());
            let _ = std::fs::remove_file(entry.path());
        }
        // A staging subvolume without a journal (killed while the journal was removed).
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                if let Some(name) = file.strip_prefix(RESTORE_PREFIX) {
                    if !name.ends_with(".toml") && !file.contains(".tmp-") {
                        self.recover_restore(name, None);
                    }
                }
            }
        }
    }

    pub(super) fn recover_restore(&self, name: &str, journal: Option<&Journal>) {
        let dir = self.store.container_dir(name);
        let staging = self.staging_path(name);
        // Killed before the stop, or started by hand since: its data was never touched.
        let running = self.host.lxc_state(name).is_ok_and(|s| s.running);
        let moved = staging.exists()
            && self.host.is_subvolume(&staging.join(SNAPSHOTS_DIR))
            && !dir.join(SNAPSHOTS_DIR).exists();
        if moved && running {
            // Someone started the old data by hand: keep what it runs, give it back its
            // snapshots, and drop the restore.
            tracing::warn!(container = %name, "the container was started during an interrupted restore; rolling the restore back");
            let (from, to) = (staging.join(SNAPSHOTS_DIR), dir.join(SNAPSHOTS_DIR));
            if let Err(e) = std::fs::rename(&from, &to) {
                tracing::error!(container = %name, error = %e, "cannot move .snapshots back; it is in {}", staging.display());
                return;
            }
        } else if moved {
            tracing::info!(container = %name, "finishing an interrupted restore");
            if let Err(e) = self.host.exchange(&staging, &dir) {
                tracing::error!(container = %name, error = %e, "cannot finish the interrupted restore; .snapshots is in {}", staging.display());
                return;
            }
        } else if staging.exists() && !dir.join(MARKER).exists() {
            tracing::info!(container = %name, "rolling back an interrupted restore");
        } else {
            tracing::info!(container = %name, "finishing an interrupted restore");
        }
        self.finish_restore_files(name, !running);
        if journal.is_some_and(|j| j.was_running) && !running {
            let started = ContainerSpec::load(&dir)
                .map_err(|e| EngineError::failed(e.to_string()))
                .and_then(|spec| {
                    self.prepare_for_start(&dir, &spec)?;
                    self.host.lxc_start(name)
                });
            if let Err(e) = started {
                tracing::error!(container = %name, error = %e, "cannot start the container again after the interrupted restore");
            }
        }
    }
}
