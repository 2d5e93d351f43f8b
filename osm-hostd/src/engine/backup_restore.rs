//! Restoring a container from a backup tree, as a job: into a new container (created
//! from the backed-up spec's base, layers and limits; the new container gets its own MAC
//! and address), or over the existing one after a read-only safety snapshot kept at
//! `containers/.pre-restore-<name>-<YYYY-MM-DDTHHMMSSZ>` (recovery never deletes it),
//! journaled and swapped in as a snapshot restore is (issue 12).

use super::jobs::Job;
use super::snapshot_restore::{crash_point, Journal, MARKER};
use super::{blocking, CreateRequest, Engine, RunState};
use crate::backup::identity::{Manifest, MANIFEST_FILE};
use crate::backup::verify::{count_markers, count_printed, differences};
use crate::backup::{self, rsync_args, RsyncJob, Target};
use crate::error::{EngineError, EngineResult};
use crate::snapper::layout::SNAPSHOTS_DIR;
use crate::spec::ContainerSpec;
use std::path::PathBuf;
use std::sync::Arc;

/// Safety snapshots taken before a restore over a container.
pub const PRE_RESTORE_PREFIX: &str = ".pre-restore-";

impl Engine {
    /// Starts a job restoring `name`'s backup tree `from` (history mode: a tree name or a
    /// prefix of one such as a date, default the newest; ignored in mirror mode) into
    /// `as_name`, or over `name` itself when `as_name` is empty or equal to it.
    pub async fn restore_backup(
        self: &Arc<Self>,
        name: &str,
        from: &str,
        as_name: &str,
    ) -> EngineResult<Arc<Job>> {
        self.restore_backup_from(name, from, as_name, "").await
    }

    /// As [`Engine::restore_backup`], from the backups host `from_host` made ("" = this
    /// host): the explicit way to bring back another host's container.
    pub async fn restore_backup_from(
        self: &Arc<Self>,
        name: &str,
        from: &str,
        as_name: &str,
        from_host: &str,
    ) -> EngineResult<Arc<Job>> {
        crate::names::validate_container_name(name)?;
        let host = self.backup_host(from_host)?;
        let into = if as_name.is_empty() { name } else { as_name }.to_string();
        crate::names::validate_container_name(&into)?;
        let target = self.cfg.backup.target.clone();
        let engine = self.clone();
        let (n, f) = (name.to_string(), from.to_string());
        let (tree, spec, manifest) = blocking(move || engine.find_tree(&n, &f, &host)).await?;
        self.check_backed_up_images(&spec, manifest.as_ref())?;
        let import = self.base_to_import(&spec, manifest.as_ref())?;
        let over = self.check_restore_destination(name, &into, &spec, manifest.as_ref())?;
        let engine = self.clone();
        let mut src = format!("{}/rootfs-layer", tree);
        let from = crate::shift::Range::of(spec.unprivileged_map());
        // A send-mode tree on an ssh target comes back by `btrfs send` there.
        let fetch = target.is_remote()
            && tree.ends_with(&format!("/{}", crate::backup::send::TREE_SUBVOLUME));
        let label = into.clone();
        let job = self
            .jobs
            .start("backup-restore", &label, |job2| async move {
                // The tree is copied from `copy_from`; bases and layers come from `target`.
                let mut copy_from = target.clone();
                let mut fetched = None;
                if fetch {
                    job2.set_progress(0.02, "receiving the backup with btrfs send");
                    let (e2, t2, n2) = (engine.clone(), target.clone(), into.clone());
                    let local = blocking(move || e2.fetch_send_tree(&t2, &tree, &n2)).await?;
                    src = format!("{}/rootfs-layer", local.display());
                    copy_from = Target::Local(local.clone());
                    fetched = local.parent().map(|p| p.to_path_buf());
                }
                let result = async {
                    if let Some(rel) = import {
                        let (e2, t2, j3, base) = (
                            engine.clone(),
                            target.clone(),
                            job2.clone(),
                            spec.base.clone(),
                        );
                        blocking(move || e2.import_base_from_target(&t2, &base, &rel, &j3)).await?;
                    }
                    let (e2, t2, s2, j3) =
                        (engine.clone(), target.clone(), spec.clone(), job2.clone());
                    blocking(move || {
                        e2.import_layers_from_target(&t2, &s2, manifest.as_ref(), &j3)
                    })
                    .await?;
                    if over {
                        engine
                            .restore_over(&into, &copy_from, src, from, &job2)
                            .await
                    } else {
                        engine
                            .restore_new(&into, spec, &copy_from, src, from, &job2, false)
                            .await
                    }
                }
                .await;
                if let Some(dir) = fetched {
                    engine.drop_fetched(&dir);
                }
                result
            });
        Ok(job)
    }

    /// The base archive to import from the target (relative to it) when this host lacks
    /// the backup's base and the backup names its archive; an error when it names none.
    fn base_to_import(
        &self,
        spec: &ContainerSpec,
        manifest: Option<&Manifest>,
    ) -> EngineResult<Option<String>> {
        match self.require_base(&spec.base) {
            Ok(()) => Ok(None),
            Err(e) => match manifest.and_then(|m| m.base.archive.clone()) {
                Some(rel) => Ok(Some(rel)),
                None => Err(e),
            },
        }
    }

    /// Whether the restore goes over the existing container `name` (same name, same
    /// container, same lower stack) or makes `into` new (a free name); an error says why
    /// neither fits.
    fn check_restore_destination(
        &self,
        name: &str,
        into: &str,
        spec: &ContainerSpec,
        manifest: Option<&Manifest>,
    ) -> EngineResult<bool> {
        let over = into == name && self.container(name).is_ok();
        if over {
            let have = self.container(name)?.info().spec;
            if let (Some(m), Some(uuid)) = (manifest, &have.uuid) {
                if m.container_uuid != *uuid {
                    return Err(EngineError::invalid_state(format!(
                        "that backup is of another container named {name} (uuid {}; this one is {uuid}, made since); restore it as a new container with --as",
                        m.container_uuid
                    )));
                }
            }
            if have.base != spec.base || have.layers != spec.layers {
                return Err(EngineError::invalid_state(format!(
                    "the backup of {name} is a delta against base {} (layers {:?}) but the container now uses base {} (layers {:?}); restore it as a new container with --as",
                    spec.base, spec.layers, have.base, have.layers
                )));
            }
        } else if self.container(into).is_ok() {
            return Err(EngineError::already_exists(format!(
                "container {into} already exists; choose another name with --as"
            )));
        } else {
            self.check_host_name_collision(into)?;
        }
        Ok(over)
    }

    /// The tree's path on the target (without `host:`), its container.toml and its
    /// manifest (`None` for trees made before manifests).
    pub(super) fn find_tree(
        &self,
        name: &str,
        from: &str,
        host: &str,
    ) -> EngineResult<(String, ContainerSpec, Option<Manifest>)> {
        let target = self.cfg.backup.target.clone();
        let trees = self.list_backups_of(name, host)?;
        let crel = self
            .backup_read_rel(&target, host, name)
            .map_err(EngineError::failed)?;
        let tree = if self.dated_trees() {
            trees
                .iter()
                .rev()
                .find(|t| t.starts_with(from))
                .cloned()
                .ok_or_else(|| {
                    EngineError::not_found(format!(
                        "no backup of {name} matches {from:?}; `osm-hostctl backup list {name}` shows them"
                    ))
                })?
        } else if trees.is_empty() {
            return Err(EngineError::not_found(format!(
                "no backup of {name} on the target"
            )));
        } else {
            String::new()
        };
        let rel = if tree.is_empty() {
            crel
        } else {
            format!("{crel}/{tree}")
        };
        let manifest = self
            .target_read(&target, &format!("{rel}/{MANIFEST_FILE}"))
            .map_err(EngineError::failed)?
            .map(|t| Manifest::parse(&t))
            .transpose()
            .map_err(|e| EngineError::failed(format!("{}: {e}", target.container_dir(&rel))))?;
        let path = target.path_of(
            &self
                .tree_data_rel(&target, &rel)
                .map_err(EngineError::failed)?,
        );
        let toml_path = format!("{path}/{}", crate::spec::SPEC_FILE);
        let text = match &target {
            Target::Local(_) => std::fs::read_to_string(&toml_path)
                .map_err(|e| EngineError::failed(format!("cannot read {toml_path}: {e}")))?,
            Target::Ssh { .. } => {
                let out = self
                    .ssh(&target, &["cat", "--", &toml_path])
                    .map_err(EngineError::failed)?;
                if !out.status.success() {
                    return Err(EngineError::failed(format!(
                        "cannot read {toml_path} on the backup host: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        };
        let spec: ContainerSpec = toml::from_str(&text).map_err(|e| {
            EngineError::failed(format!("{toml_path} is not a container spec: {e}"))
        })?;
        Ok((path, spec, manifest))
    }

    /// Into a new container; `keep_ip`: with the backed-up address when it is free here
    /// (a host brought back), else a new one.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn restore_new(
        self: &Arc<Self>,
        into: &str,
        spec: ContainerSpec,
        target: &Target,
        src: String,
        from: crate::shift::Range,
        job: &Job,
        keep_ip: bool,
    ) -> EngineResult<String> {
        job.set_progress(0.05, "creating the container");
        // Only an explicit opt-in carries over: a backup of a container made before
        // unprivileged containers becomes an unprivileged one (its upper is shifted).
        let privileged = spec.privileged;
        let ip = if keep_ip { spec.ipv4.clone() } else { None };
        let req = CreateRequest {
            name: into.to_string(),
            base: spec.base,
            layers: spec.layers,
            autostart: spec.autostart,
            boot_priority: spec.boot_priority,
            boot_delay: spec.boot_delay,
            memory: spec.memory,
            cpus: spec.cpus,
            ip,
            privileged,
        };
        if let Err(e) = self.create_container(req.clone()).await {
            if req.ip.is_none() || self.container(into).is_ok() {
                return Err(e);
            }
            tracing::warn!(container = %into, error = %e, "the backed-up address is not free here; taking another");
            self.create_container(CreateRequest { ip: None, ..req })
                .await?;
        }
        let c = self.container(into)?;
        let copied = {
            let _op = c.begin("backup-restore")?;
            job.set_progress(0.2, "copying the backup");
            let engine = self.clone();
            let (t, n) = (target.clone(), into.to_string());
            blocking(move || {
                let dir = engine.store.container_dir(&n);
                engine.copy_upper(&t, &src, &n, &dir, from)
            })
            .await
        };
        if let Err(e) = copied {
            // Nothing half-restored is left behind under the new name.
            if let Err(d) = self.delete_container(into, true).await {
                tracing::error!(container = %into, error = %d, "cannot remove a failed restore");
            }
            return Err(e);
        }
        job.set_progress(0.9, "starting");
        self.start_container(into).await?;
        Ok(format!("restored into new container {into}, running"))
    }

    /// Over the existing container, journaled like a snapshot restore (restore.rs):
    /// journal, stop, safety snapshot, a writable snapshot of the container as the
    /// staging subvolume with the backup's upper dir copied in and verified, then
    /// `.snapshots` moved and the two exchanged by RENAME_EXCHANGE; started if it ran.
    /// A daemon killed at any step finds the old container or the restored one at its
    /// next start, and rolls back or finishes ([`Engine::recover_restores`]).
    async fn restore_over(
        self: &Arc<Self>,
        name: &str,
        target: &Target,
        src: String,
        from: crate::shift::Range,
        job: &Job,
    ) -> EngineResult<String> {
        let c = self.container(name)?;
        let _op = c.begin("backup-restore")?;
        self.refresh_state(&c);
        let journal = Journal {
            snapshot: 0,
            was_running: c.info().state != RunState::Stopped,
            safety: None,
        };
        self.write_journal(name, &journal)?;
        crash_point("journal");
        let was_running = journal.was_running;
        if was_running {
            job.set_progress(0.05, "stopping");
            if let Err(e) = self
                .stop_locked(&c, super::lifecycle::DEFAULT_STOP_TIMEOUT, false)
                .await
            {
                let _ = std::fs::remove_file(self.journal_path(name));
                return Err(e);
            }
        }
        crash_point("stopped");
        let safety = self.store.containers_dir().join(format!(
            "{PRE_RESTORE_PREFIX}{name}-{}",
            backup::history_name(crate::fsutil::now_secs())
        ));
        job.set_progress(0.1, "taking a safety snapshot, copying the backup");
        let engine = self.clone();
        let (t, n, s2) = (target.clone(), name.to_string(), safety.clone());
        let prepared = blocking(move || {
            engine
                .host
                .snapshot(&engine.store.container_dir(&n), &s2, true)?;
            tracing::info!(container = %n, safety = %s2.display(), "safety snapshot before restore");
            crash_point("safety");
            engine.stage_backup_restore(&t, &src, &n, from)?;
            crash_point("staged");
            Ok(())
        })
        .await;
        if let Err(e) = prepared {
            self.abandon_staged_restore(&c, was_running).await;
            return Err(e);
        }
        job.set_progress(0.85, "swapping in the restored copy");
        self.swap_staged_restore(&c, &journal).await?;
        crash_point("cleaned");
        self.reload_spec(&c);
        let started = if was_running {
            job.set_progress(0.9, "starting");
            self.start_locked(&c).await.map(|_| ())
        } else {
            Ok(())
        };
        let _ = std::fs::remove_file(self.journal_path(name));
        started.map_err(|e| {
            EngineError::failed(format!(
                "{name} was restored from its backup, but did not start again: {}",
                e.message()
            ))
        })?;
        Ok(format!(
            "restored {name}; its previous state is kept in {}",
            safety.display()
        ))
    }

    /// The staging subvolume: a writable snapshot of the stopped container (its spec,
    /// address and MAC stay), the backup's `rootfs-layer/` copied into it and verified,
    /// the marker written last.
    fn stage_backup_restore(
        &self,
        target: &Target,
        src: &str,
        name: &str,
        from: crate::shift::Range,
    ) -> EngineResult<()> {
        let staging = self.staging_path(name);
        if staging.exists() {
            self.roll_back_restore(name);
        }
        self.host
            .snapshot(&self.store.container_dir(name), &staging, false)?;
        let placeholder = staging.join(SNAPSHOTS_DIR);
        if placeholder.exists() {
            std::fs::remove_dir(&placeholder)
                .map_err(|e| EngineError::io(format!("removing {}", placeholder.display()), &e))?;
        }
        self.copy_upper(target, src, name, &staging, from)?;
        let marker = staging.join(MARKER);
        std::fs::write(&marker, "backup\n")
            .map_err(|e| EngineError::io(format!("writing {}", marker.display()), &e))
    }

    /// rsync of a backup's `rootfs-layer/` into the stopped container's upper dir (with
    /// `--delete`), `work/` emptied, then the same verification as a backup; last, its
    /// ownership is shifted from the backup's id range (`from`) to the container's.
    fn copy_upper(
        &self,
        target: &Target,
        src_path: &str,
        name: &str,
        dir: &std::path::Path,
        from: crate::shift::Range,
    ) -> EngineResult<()> {
        let cfg = &self.cfg.backup;
        let upper: PathBuf = dir.join("rootfs-layer");
        let src = match target {
            Target::Local(_) => src_path.to_string(),
            Target::Ssh { host, .. } => format!("{host}:{src_path}"),
        };
        let mut job = RsyncJob {
            src,
            dest: upper.display().to_string(),
            link_dest: None,
            check_only: false,
            excludes: false,
            checksum: true,
        };
        let fail = |m: String| EngineError::failed(format!("restoring {name}: {m}"));
        let out = self.rsync(&rsync_args(cfg, &job)).map_err(fail)?;
        super::backup_target::check_exit(&out).map_err(fail)?;
        let work = dir.join("work");
        crate::fsutil::empty_dir(&work)
            .map_err(|e| EngineError::io(format!("emptying {}", work.display()), &e))?;
        let got = count_markers(&upper).map_err(|e| fail(format!("counting markers: {e}")))?;
        let want = match target {
            Target::Local(_) => {
                count_markers(std::path::Path::new(src_path))
                    .map_err(|e| fail(format!("counting markers: {e}")))?
                    .whiteouts
            }
            Target::Ssh { .. } => {
                let out = self
                    .ssh(
                        target,
                        &["find", src_path, "-xdev", "-type", "c", "-printf", "c"],
                    )
                    .map_err(fail)?;
                count_printed(&out.stdout)
            }
        };
        if got.whiteouts != want {
            return Err(fail(format!(
                "verification failed: {want} whiteouts in the backup, {} restored",
                got.whiteouts
            )));
        }
        job.check_only = true;
        let out = self.rsync(&rsync_args(cfg, &job)).map_err(fail)?;
        super::backup_target::check_exit(&out).map_err(fail)?;
        let diffs = differences(&String::from_utf8_lossy(&out.stdout));
        if !diffs.is_empty() {
            return Err(fail(format!(
                "verification failed: {} entries differ from the backup, e.g. {}",
                diffs.len(),
                diffs.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let to = crate::shift::Range::of(self.container(name)?.info().spec.unprivileged_map());
        if from != to {
            self.host.check_owners(&upper, &from).map_err(fail)?;
            self.host.shift_owners(&upper, &from, &to).map_err(fail)?;
            tracing::info!(container = %name, from = from.uid, to = to.uid, "restored upper layer shifted into the container's id range");
        }
        Ok(())
    }
}
