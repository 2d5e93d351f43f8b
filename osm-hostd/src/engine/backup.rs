//! Backups (issue 5): for each container, a read-only snapshot under the staging name
//! `.backup-<name>`, rsync of it to the target, verification, then the snapshot is
//! dropped. One run at a time; one container's failure does not stop the others.

use super::backup_target::{check_exit, check_ok};
use super::jobs::Job;
use super::{Engine, BACKUP_PREFIX};
use crate::backup::status::{Attempt, StatusFile};
use crate::backup::verify::{
    compare_trees, count_markers, differences, markers_of, tree_entries, Entry, Markers,
};
use crate::backup::{self, classify_exit, rsync_args, ExitClass, RsyncJob, Target};
use crate::error::{EngineError, EngineResult};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const RUN_KEY: &str = "backup:run";
/// Pause before the one retry of a transfer that failed for network reasons.
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(5);
/// Workers record results one at a time (read, change, write the status file).
static STATUS_LOCK: Mutex<()> = Mutex::new(());
/// History trees are written under this prefix and renamed once verified.
const INCOMPLETE_PREFIX: &str = ".incomplete-";

impl Engine {
    /// Starts a backup job for `names` (or every container with `all`). `Busy` while
    /// another run is in progress; `NotFound` for an unknown name.
    pub fn run_backup(self: &Arc<Self>, names: Vec<String>, all: bool) -> EngineResult<Arc<Job>> {
        let names = if all {
            self.container_names()
        } else {
            if names.is_empty() {
                return Err(EngineError::invalid_argument(
                    "name the containers to back up, or ask for all of them".into(),
                ));
            }
            for n in &names {
                self.container(n)?;
            }
            names
        };
        let target = self.cfg.backup.target.clone();
        {
            let mut r = self.reserved.lock().expect("reserved lock");
            if !r.insert(RUN_KEY.to_string()) {
                return Err(EngineError::busy(
                    "a backup run is already in progress; wait for it to finish".into(),
                ));
            }
        }
        let engine = self.clone();
        let label = names.join(",");
        let job = self.jobs.start_blocking("backup", &label, move |job2| {
            engine.mark_attempts_started(&names);
            engine.prune_send_parent_dirs();
            // One connection first: an unreachable host gets a clear reason, not
            // rsync's "error in protocol data stream" once per container.
            let reachable = engine
                .probe_target(&target)
                .and_then(|()| engine.check_send_target(&target));
            let failed = engine.back_up_each(&names, &target, reachable.as_ref().err(), job2);
            engine.rewrite_backup_status();
            engine.release(RUN_KEY);
            if failed.is_empty() {
                Ok(format!("backed up {} container(s)", names.len()))
            } else {
                Err(format!(
                    "backup failed for {} of {} container(s): {}",
                    failed.len(),
                    names.len(),
                    failed.join("; ")
                ))
            }
        });
        Ok(job)
    }

    /// Marks every attempt of the run as started (one write): one still marked at the next
    /// daemon start was interrupted and is recorded as failed then.
    fn mark_attempts_started(&self, names: &[String]) {
        let lxc_dir = self.store.lxc_dir();
        let _serialised = STATUS_LOCK.lock().expect("status lock");
        let mut status = StatusFile::load(&lxc_dir);
        let now = crate::fsutil::now_secs();
        for n in names {
            status.begin(n, now);
        }
        if let Err(e) = status.save(&lxc_dir) {
            tracing::error!(error = %e, "cannot write the backup status");
        }
    }

    /// Rewrites the status file once the run is over (a load and save, as at the start).
    fn rewrite_backup_status(&self) {
        let lxc_dir = self.store.lxc_dir();
        let _serialised = STATUS_LOCK.lock().expect("status lock");
        if let Err(e) = StatusFile::load(&lxc_dir).save(&lxc_dir) {
            tracing::error!(error = %e, "cannot write the backup status");
        }
    }

    /// Backs up `names`, a few containers at a time: a small incremental run is bound by
    /// rsync's file-list walk and the snapshot commits, not by the disk. Returns one
    /// "name: why" per failed container, in the order of `names`.
    fn back_up_each(
        &self,
        names: &[String],
        target: &Target,
        unreachable: Option<&String>,
        job: &Arc<Job>,
    ) -> Vec<String> {
        let total = names.len().max(1) as f64;
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let failures = Mutex::new(BTreeMap::new());
        let shipped = super::backup_bases::Shipments::default();
        let workers = (self.cfg.backup.parallel as usize).clamp(1, names.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    job.set_progress(
                        done.load(Ordering::Relaxed) as f64 / total,
                        &format!("backing up {name}"),
                    );
                    if let Err(why) = self.backup_one(name, target, unreachable, &shipped) {
                        failures
                            .lock()
                            .expect("failures lock")
                            .insert(i, format!("{name}: {why}"));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        failures
            .into_inner()
            .expect("failures lock")
            .into_values()
            .collect()
    }

    /// The persisted results of every container's last attempt and last success.
    /// Whether a backup run is in progress.
    pub fn backup_running(&self) -> bool {
        self.reserved
            .lock()
            .expect("reserved lock")
            .contains(RUN_KEY)
    }

    pub fn backup_status(&self) -> StatusFile {
        StatusFile::load(&self.store.lxc_dir())
    }

    /// The trees on the target for one container: `mirror`, or history names.
    pub fn list_backups(&self, name: &str) -> EngineResult<Vec<String>> {
        self.list_backups_of(name, "")
    }

    /// As [`Engine::list_backups`], for the backups another host (`host`, "" = this
    /// one) made.
    pub fn list_backups_of(&self, name: &str, host: &str) -> EngineResult<Vec<String>> {
        crate::names::validate_container_name(name)?;
        let host = self.backup_host(host)?;
        let target = self.cfg.backup.target.clone();
        let rel = self
            .backup_read_rel(&target, &host, name)
            .map_err(EngineError::failed)?;
        let entries = self
            .list_target(&target, &rel)
            .map_err(EngineError::failed)?;
        if self.dated_trees() {
            Ok(entries
                .into_iter()
                .filter(|n| backup::parse_history_name(n).is_some())
                .collect())
        } else if entries.iter().any(|n| n == "container.toml") {
            Ok(vec!["mirror".into()])
        } else {
            Ok(Vec::new())
        }
    }

    /// Closes an existing local backup target to other users (run at daemon start; a
    /// missing one is made private when the first backup creates it).
    pub(super) fn secure_backup_target(&self) {
        if let Target::Local(dir) = &self.cfg.backup.target {
            if dir.is_dir() {
                if let Err(e) = crate::hardening::private_dir(dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot close the backup target to other users");
                }
            }
        }
    }

    /// Whether an ssh target answers (`ssh host true`); local targets always do.
    fn probe_target(&self, target: &Target) -> Result<(), String> {
        match target {
            Target::Local(dir) => {
                // The tree holds every customer's files: closed to other users (issue 9).
                std::fs::create_dir_all(dir)
                    .and_then(|()| crate::hardening::private_dir(dir))
                    .map(|_| ())
                    .map_err(|e| format!("preparing the backup target {}: {e}", dir.display()))
            }
            Target::Ssh { host, .. } => check_ok(&self.ssh(target, &["true"])?)
                .map_err(|e| format!("backup host {host}: {e}")),
        }
    }

    fn backup_one(
        &self,
        name: &str,
        target: &Target,
        unreachable: Option<&String>,
        shipped: &super::backup_bases::Shipments,
    ) -> Result<(), String> {
        let started = Instant::now();
        let time = crate::fsutil::now_secs();
        let result = match unreachable {
            Some(why) => Err(why.clone()),
            None => self.backup_transfer(name, target, time, shipped),
        };
        let outcome = match &result {
            Ok((bytes, tree)) => Attempt {
                time,
                duration_ms: started.elapsed().as_millis() as u64,
                bytes_sent: *bytes,
                result: "ok".into(),
                tree: tree.clone(),
            },
            Err(why) => Attempt {
                time,
                duration_ms: started.elapsed().as_millis() as u64,
                bytes_sent: 0,
                result: why.clone(),
                tree: String::new(),
            },
        };
        match &result {
            Ok(_) => {
                tracing::info!(container = %name, ms = outcome.duration_ms, bytes = outcome.bytes_sent, "backup verified")
            }
            Err(why) => tracing::warn!(container = %name, error = %why, "backup failed"),
        }
        let lxc_dir = self.store.lxc_dir();
        let _serialised = STATUS_LOCK.lock().expect("status lock");
        let mut status = StatusFile::load(&lxc_dir);
        status.record(name, outcome);
        // Each result is visible at once; the run ends with one durable save.
        if let Err(e) = status.save_quick(&lxc_dir) {
            tracing::error!(error = %e, "cannot write the backup status");
        }
        self.emit(super::Event::ContainerChanged(name.to_string()));
        result.map(|_| ())
    }

    /// Snapshot, transfer, verify, drop the snapshot. Returns bytes sent and the tree.
    fn backup_transfer(
        &self,
        name: &str,
        target: &Target,
        time: u64,
        shipped: &super::backup_bases::Shipments,
    ) -> Result<(u64, String), String> {
        if self.send_mode() {
            return self.backup_send(name, target, time, shipped);
        }
        let staging = self
            .store
            .containers_dir()
            .join(format!("{BACKUP_PREFIX}{name}"));
        let spec = {
            // The lock only covers the snapshot: the copy reads the frozen snapshot, so
            // the container can be used while it runs.
            let c = self.container(name).map_err(|e| e.to_string())?;
            let _op = c.begin("backup").map_err(|e| e.to_string())?;
            if staging.exists() {
                self.host
                    .delete_subvolume(&staging)
                    .map_err(|e| e.to_string())?;
            }
            self.host
                .snapshot(&self.store.container_dir(name), &staging, true)
                .map_err(|e| e.to_string())?;
            c.info().spec
        };
        let result = self
            .claim_backup_dir(target, &spec)
            .and_then(|()| self.check_tree_transport(target, name))
            .and_then(|()| {
                let archive = self.ship_base_once(target, &spec.base, shipped)?;
                self.ship_layers_once(target, &spec, shipped)?;
                self.copy_and_verify(&spec, target, &staging, time, &archive)
            });
        if let Err(e) = self.host.delete_subvolume(&staging) {
            tracing::error!(path = %staging.display(), error = %e, "cannot drop the backup snapshot; the next start removes it");
        }
        result
    }

    fn copy_and_verify(
        &self,
        spec: &crate::spec::ContainerSpec,
        target: &Target,
        snap: &Path,
        time: u64,
        base_archive: &str,
    ) -> Result<(u64, String), String> {
        let name = spec.name.as_str();
        let cfg = &self.cfg.backup;
        let history = cfg.mode == backup::Mode::History;
        let crel = self.backup_rel(&self.host_id, name);
        let plan = self.plan_tree(target, &crel, time, history)?;
        let dest = target.container_dir(&plan.dest_rel);
        let src = snap.display().to_string();
        let mut job = RsyncJob {
            src: src.clone(),
            dest: dest.clone(),
            link_dest: plan.link_dest.clone(),
            check_only: false,
            excludes: true,
            checksum: false,
        };
        // The listing (every file's checksum) is made while rsync copies: both read the
        // same frozen snapshot.
        let (copied, listing) = std::thread::scope(|scope| {
            let lister =
                scope.spawn(|| self.listing_of(target, snap, plan.prev_listing.as_deref()));
            // The snapshot's entries too (local verification), off the critical path.
            let entries = scope.spawn(|| {
                matches!(target, Target::Local(_)).then(|| {
                    tree_entries(snap)
                        .map_err(|e| format!("reading the snapshot for verification: {e}"))
                })
            });
            let copied = (|| -> Result<u64, String> {
                let out = self.rsync_with_retry(name, &rsync_args(cfg, &job))?;
                check_exit(&out)?;
                let bytes = backup::rsync::parse_bytes_sent(&String::from_utf8_lossy(&out.stdout));

                // Verification. Local: every entry's metadata and the marker counts from one
                // walk of each side. ssh: whiteouts counted remotely, then an itemized dry run.
                if let Target::Local(_) = target {
                    let want = entries
                        .join()
                        .unwrap_or_else(|_| Some(Err("reading the snapshot panicked".into())))
                        .ok_or("the snapshot's entries were not read")??;
                    verify_local_copy(&want, target, &plan.dest_rel)?;
                } else {
                    self.verify_remote_copy(snap, target, &plan.dest_rel, &mut job)?;
                }
                Ok(bytes)
            })();
            let listing = lister
                .join()
                .unwrap_or_else(|_| Err("listing the snapshot panicked".into()));
            (copied, listing)
        });
        let bytes = copied?;
        let listing = listing?;
        let at = super::backup_identity::TreeAt {
            rel: &plan.dest_rel,
            tree: &plan.tree,
            time,
            base_archive,
        };
        let manifest = self.write_manifest(target, spec, &listing, &at)?;
        if history {
            self.publish_history_tree(target, &crel, &plan, &manifest)?;
        }
        Ok((bytes, plan.tree))
    }

    /// Where this run's tree goes: in history mode a new `.incomplete-` tree hard-linked
    /// against the newest complete one, in mirror mode the container's directory itself.
    fn plan_tree(
        &self,
        target: &Target,
        crel: &str,
        time: u64,
        history: bool,
    ) -> Result<TreePlan, String> {
        Ok(if history {
            let existing = self.list_target(target, crel)?;
            let prev = existing
                .iter()
                .filter(|n| backup::parse_history_name(n).is_some())
                .max()
                .cloned();
            let tree = backup::history_name(time);
            TreePlan {
                dest_rel: format!("{crel}/{INCOMPLETE_PREFIX}{tree}"),
                tree,
                link_dest: prev.as_ref().map(|p| format!("../{p}")),
                prev_listing: prev
                    .map(|p| format!("{crel}/{p}/{}", backup::identity::LISTING_FILE)),
            }
        } else {
            TreePlan {
                tree: "mirror".to_string(),
                dest_rel: crel.to_string(),
                link_dest: None,
                prev_listing: Some(format!("{crel}/{}", backup::identity::LISTING_FILE)),
            }
        })
    }

    /// Runs rsync; network trouble (socket, timeout, ssh: spec §4.3 "retry") gets one more
    /// try, and the second run only sends what the first did not.
    fn rsync_with_retry<S: AsRef<OsStr>>(&self, name: &str, args: &[S]) -> Result<Output, String> {
        let mut out = self.rsync(args)?;
        if let ExitClass::Retry(why) = classify_exit(out.status.code()) {
            tracing::warn!(container = %name, error = %why, "rsync failed; retrying once");
            std::thread::sleep(RETRY_DELAY);
            out = self.rsync(args)?;
        }
        Ok(out)
    }

    /// Verifies a copy on an ssh target: whiteouts counted remotely, then an itemized
    /// dry run of `job` that must list no difference.
    fn verify_remote_copy(
        &self,
        snap: &Path,
        target: &Target,
        dest_rel: &str,
        job: &mut RsyncJob,
    ) -> Result<(), String> {
        let want =
            count_markers(snap).map_err(|e| format!("counting markers in the snapshot: {e}"))?;
        let got = self.count_target_markers(target, dest_rel)?;
        check_markers(want, got, false)?;
        job.check_only = true;
        job.link_dest = None;
        let out = self.rsync(&rsync_args(&self.cfg.backup, job))?;
        check_exit(&out)?;
        let diffs = differences(&String::from_utf8_lossy(&out.stdout));
        if !diffs.is_empty() {
            return Err(format!(
                "verification failed: {} entries differ from the snapshot, e.g. {}",
                diffs.len(),
                diffs.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
    }

    /// Renames a verified history tree to its final name, puts the newest manifest beside
    /// the trees (the owner check) and prunes old trees.
    fn publish_history_tree(
        &self,
        target: &Target,
        crel: &str,
        plan: &TreePlan,
        manifest: &backup::identity::Manifest,
    ) -> Result<(), String> {
        let from = target.path_of(&plan.dest_rel);
        let to = target.path_of(&format!("{crel}/{}", plan.tree));
        self.target_rename(target, &from, &to)?;
        // The directory of trees carries the newest manifest: the owner check.
        self.target_write(
            target,
            &format!("{crel}/{}", backup::identity::MANIFEST_FILE),
            manifest.to_toml().as_bytes(),
        )?;
        self.prune(target, crel);
        Ok(())
    }

    /// Prunes the history trees in `rel` (`<host>/<name>`).
    fn prune(&self, target: &Target, rel: &str) {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let cfg = &self.cfg.backup;
        let Ok(entries) = self.list_target(target, rel) else {
            return;
        };
        for doomed in backup::prune_plan_with(
            &entries,
            backup::KeepPolicy {
                last: cfg.keep_last,
                daily: cfg.keep_daily,
                weekly: cfg.keep_weekly,
                monthly: cfg.keep_monthly,
                yearly: cfg.keep_yearly,
            },
        ) {
            let path = target.path_of(&format!("{rel}/{doomed}"));
            tracing::info!(container = %name, tree = %doomed, "pruning backup tree");
            let r = match target {
                Target::Local(_) => std::fs::remove_dir_all(&path).map_err(|e| e.to_string()),
                Target::Ssh { .. } => self
                    .ssh(target, &["rm", "-rf", "--", &path])
                    .and_then(|o| check_ok(&o)),
            };
            if let Err(e) = r {
                tracing::warn!(container = %name, tree = %doomed, error = %e, "cannot prune backup tree");
            }
        }
    }
}

/// Where one run's tree goes on the target (see [`Engine::plan_tree`]).
struct TreePlan {
    /// The tree's final name: a history name, or `mirror`.
    tree: String,
    /// Where rsync writes, relative to the target.
    dest_rel: String,
    /// `--link-dest` for rsync, relative to `dest_rel`.
    link_dest: Option<String>,
    /// The previous tree's listing, whose checksums can be reused.
    prev_listing: Option<String>,
}

/// Verifies a copy on a local target: every entry's metadata and the marker counts,
/// from one walk of each side (`want` is the snapshot's walk).
fn verify_local_copy(
    want: &BTreeMap<String, Entry>,
    target: &Target,
    dest_rel: &str,
) -> Result<(), String> {
    let copy = target.path_of(dest_rel);
    let got = tree_entries(Path::new(&copy))
        .map_err(|e| format!("reading the copy for verification: {e}"))?;
    let (mw, mg) = (markers_of(want), markers_of(&got));
    check_markers(mw, mg, true)?;
    let diffs = compare_trees(want, &got, 3);
    if !diffs.is_empty() {
        return Err(format!(
            "verification failed: the copy differs from the snapshot: {}",
            diffs.join("; ")
        ));
    }
    Ok(())
}

fn check_markers(want: Markers, got: Markers, opaque: bool) -> Result<(), String> {
    if got.whiteouts != want.whiteouts {
        return Err(format!(
            "verification failed: {} whiteouts in the container, {} in the backup (the receiver dropped device files)",
            want.whiteouts, got.whiteouts
        ));
    }
    if opaque && got.opaque_dirs != want.opaque_dirs {
        return Err(format!(
            "verification failed: {} opaque directories in the container, {} in the backup (trusted.* xattrs lost)",
            want.opaque_dirs, got.opaque_dirs
        ));
    }
    Ok(())
}
