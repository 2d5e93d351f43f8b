//! Bases travel with backups (issue 12): every base a backed-up container uses is kept
//! at the target once, as `<target>/bases/<sha256>.tar.zst` (addressed by its content,
//! uploaded under a temporary name, checked by its hash, then renamed), and named in the
//! trees' manifests. A restore on a host that lacks the base imports it from there; a
//! whole host's containers come back with `backup restore --all --from-host H`.

use super::jobs::Job;
use super::{blocking, BaseSource, Engine};
use crate::backup::identity::{self, Manifest};
use crate::backup::{self, Target};
use crate::error::{EngineError, EngineResult};
use crate::spec::ContainerSpec;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const BASES_DIR: &str = "bases";

/// Bases shipped during one run: each at most once, its archive or why not.
pub(super) type Shipments = Mutex<HashMap<String, Result<String, String>>>;

impl Engine {
    /// `<store>/lxc/base-archive-<name>`: "<sha256> <created>" of the base's archive
    /// made earlier (a base never changes; a new base of the name has another time).
    pub(super) fn archive_cache(&self, name: &str) -> PathBuf {
        self.store.lxc_dir().join(format!("base-archive-{name}"))
    }

    fn export_tmp(&self, name: &str) -> PathBuf {
        self.store
            .lxc_dir()
            .join(format!(".base-export-{name}.tar.zst"))
    }

    /// Makes sure base `name` is at the target once per run; returns its archive's
    /// target-relative path.
    pub(super) fn ship_base_once(
        &self,
        target: &Target,
        name: &str,
        shipped: &Shipments,
    ) -> Result<String, String> {
        let mut done = shipped.lock().expect("shipments lock");
        if let Some(r) = done.get(name) {
            return r.clone();
        }
        let r = self
            .ship_base(target, name)
            .map_err(|e| format!("cannot store base {name} at the backup target: {e}"));
        if let Err(e) = &r {
            tracing::warn!(base = %name, error = %e, "base not stored at the backup target");
        }
        done.insert(name.to_string(), r.clone());
        r
    }

    fn ship_base(&self, target: &Target, name: &str) -> Result<String, String> {
        let info = self.base_info(name).map_err(|e| e.to_string())?;
        let cache = self.archive_cache(name);
        let cached = archives_of(&cache, info.created).pop();
        if let Some(h) = &cached {
            if self.target_exists(target, &archive_rel(h))? {
                return Ok(archive_rel(h));
            }
        }
        // Make the archive (again), hash it, upload it under a temporary name.
        let tmp = self.export_tmp(name);
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)
                .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
            crate::base::write_tar_zst(&self.store.bases_dir().join(name), &mut f, 1, &mut |_| {})
                .map_err(|e| e.to_string())?;
            drop(f);
            let hash = identity::sha256_file(&tmp)
                .map_err(|e| format!("reading {}: {e}", tmp.display()))?;
            remember_archive(&cache, &hash, info.created);
            let rel = archive_rel(&hash);
            if !self.target_exists(target, &rel)? {
                self.upload_archive(target, &tmp, &hash)?;
                tracing::info!(base = %name, archive = %target.path_of(&rel), "base stored at the backup target");
            }
            Ok(rel)
        })();
        let _ = std::fs::remove_file(&tmp);
        result
    }

    fn upload_archive(&self, target: &Target, file: &Path, hash: &str) -> Result<(), String> {
        self.upload_archive_to(target, BASES_DIR, file, hash)
    }

    /// Stores `file` as `<dir>/<hash>.tar.zst` at the target, checked by its hash.
    pub(super) fn upload_archive_to(
        &self,
        target: &Target,
        dir: &str,
        file: &Path,
        hash: &str,
    ) -> Result<(), String> {
        // Per host: two hosts storing the same archive at once do not share a file.
        let tmp_rel = format!("{dir}/.tmp-{hash}-{}", self.host_id);
        let tmp = target.path_of(&tmp_rel);
        let fin = target.path_of(&format!("{dir}/{hash}.tar.zst"));
        match target {
            Target::Local(_) => {
                std::fs::create_dir_all(target.path_of(dir))
                    .map_err(|e| format!("cannot create {}: {e}", target.path_of(dir)))?;
                std::fs::copy(file, &tmp).map_err(|e| format!("copying to {tmp}: {e}"))?;
                std::fs::File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| format!("flushing {tmp}: {e}"))?;
            }
            Target::Ssh { host, .. } => {
                super::backup_target::check_ok(
                    &self.ssh(target, &["mkdir", "-p", "--", &target.path_of(dir)])?,
                )?;
                let mut args: Vec<OsString> =
                    vec![format!("--timeout={}", self.cfg.backup.timeout.max(1)).into()];
                args.extend(["-e".into(), backup::ssh_command(&self.cfg.backup).into()]);
                args.extend(["--".into(), file.into(), format!("{host}:{tmp}").into()]);
                let out = self.rsync(&args)?;
                super::backup_target::check_exit(&out)?;
            }
        }
        let got = self.target_sha256(target, &tmp_rel)?;
        if got != hash {
            return Err(format!(
                "the archive stored at {tmp} reads back as {got}, not {hash}"
            ));
        }
        match target {
            Target::Local(_) => {
                std::fs::rename(&tmp, &fin).map_err(|e| format!("renaming {tmp}: {e}"))
            }
            Target::Ssh { .. } => {
                super::backup_target::check_ok(&self.ssh(target, &["mv", "-f", "--", &tmp, &fin])?)
            }
        }
    }

    /// Imports base `name` from its archive at the target (`rel`, `bases/<sha256>...`),
    /// checking the archive's hash first. Blocking; a no-op when the base exists.
    pub(super) fn import_base_from_target(
        &self,
        target: &Target,
        name: &str,
        rel: &str,
        job: &Job,
    ) -> EngineResult<()> {
        if self.require_base(name).is_ok() {
            return Ok(());
        }
        crate::names::validate_image_name("base", name)?;
        self.with_target_archive(target, BASES_DIR, rel, "base", name, |mut file| {
            let _reservation = self.reserve(name, "base")?;
            job.set_progress(0.02, &format!("importing base {name}"));
            self.make_base(name, BaseSource::Import, job, move |host, dest, job| {
                host.import_rootfs(&mut file, dest, &mut |f| {
                    job.set_progress(f * 0.5, "importing the base")
                })
            })?;
            // The archive it came from is this base's: the next run need not make it again,
            // and a later restore can tell it is the base its backup names.
            if let (Ok(info), Some(hash)) = (self.base_info(name), archive_hash(rel)) {
                remember_archive(&self.archive_cache(name), hash, info.created);
            }
            tracing::info!(base = %name, archive = %target.path_of(rel), "base imported from the backup target");
            Ok(())
        })
    }

    /// Every archive this host made or fetched of base `name` (as it is now), oldest
    /// first.
    fn base_archives(&self, name: &str) -> Vec<String> {
        let Ok(info) = self.base_info(name) else {
            return Vec::new();
        };
        archives_of(&self.archive_cache(name), info.created)
            .iter()
            .map(|h| archive_rel(h))
            .collect()
    }

    /// Refuses to restore this host's backup of `spec` onto a base or layer of the same
    /// name that is not the one the backup was made on (none of the archives this host
    /// made or fetched of it is the one the manifest names): the restored upper layer
    /// would sit on other files. Names are trusted where either side does not know the
    /// archive, and for other hosts' backups.
    pub(super) fn check_backed_up_images(
        &self,
        spec: &ContainerSpec,
        manifest: Option<&Manifest>,
    ) -> EngineResult<()> {
        // Archives are compared only against this host's own: two hosts' archives of
        // one image (the same recipe or tarball) differ in their bytes.
        let Some(m) = manifest.filter(|m| m.host_id == self.host_id) else {
            return Ok(());
        };
        let mut pairs = vec![(
            "base",
            &spec.base,
            self.base_archives(&spec.base),
            m.base.archive.clone(),
        )];
        for l in &spec.layers {
            let named = m
                .layers
                .iter()
                .find(|r| r.name == *l)
                .and_then(|r| r.archive.clone());
            pairs.push(("layer", l, self.layer_archives(l), named));
        }
        for (what, name, here, backed_up) in pairs {
            let Some(backed_up) = backed_up else { continue };
            if !here.is_empty() && !here.contains(&backed_up) {
                return Err(EngineError::invalid_state(format!(
                    "{what} {name} on this host is not the one this backup was made on (its archives here are {}, the backup names {backed_up}); the restored files would sit on another {what}. Delete this host's {what} {name} if nothing uses it, and restore again: the backup's {what} is then imported from the target",
                    here.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Starts a job bringing back every container host `host` backed up (a disaster
    /// recovery): bases imported from the target as needed, each container created with
    /// its backed-up settings and address (when free here), its data restored, started.
    /// Containers of a name that already exists here are left out (named in the result).
    pub fn restore_all_backups(self: &Arc<Self>, host: &str) -> EngineResult<Arc<Job>> {
        let host = self.backup_host(host)?;
        let target = self.cfg.backup.target.clone();
        let engine = self.clone();
        let label = format!("all of {host}");
        let job = self.jobs.start("backup-restore", &label, |job| async move {
            engine.restore_all(&target, &host, &job).await
        });
        Ok(job)
    }

    async fn restore_all(
        self: &Arc<Self>,
        target: &Target,
        host: &str,
        job: &Arc<Job>,
    ) -> Result<String, String> {
        let engine = self.clone();
        let (t, h) = (target.clone(), host.to_string());
        let names: Vec<String> =
            blocking(move || engine.list_target(&t, &h).map_err(EngineError::failed))
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|n| !n.starts_with('.') && crate::names::validate_container_name(n).is_ok())
                .collect();
        if names.is_empty() {
            return Err(format!(
                "no backups of host {host} at {}",
                target.container_dir(host)
            ));
        }
        let (mut restored, mut skipped, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for (i, name) in names.iter().enumerate() {
            job.set_progress(i as f64 / names.len() as f64, &format!("restoring {name}"));
            if self.container(name).is_ok() {
                skipped.push(name.clone());
                continue;
            }
            match self.restore_one_from(target, host, name, job).await {
                Ok(()) => restored.push(name.clone()),
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
        let mut msg = format!("restored {} container(s) of host {host}", restored.len());
        if !skipped.is_empty() {
            msg.push_str(&format!(
                "; left out (a container of the name exists here): {}",
                skipped.join(", ")
            ));
        }
        if failed.is_empty() {
            Ok(msg)
        } else {
            Err(format!("{msg}; failed: {}", failed.join("; ")))
        }
    }

    async fn restore_one_from(
        self: &Arc<Self>,
        target: &Target,
        host: &str,
        name: &str,
        job: &Arc<Job>,
    ) -> EngineResult<()> {
        let engine = self.clone();
        let (t, h, n) = (target.clone(), host.to_string(), name.to_string());
        let (tree, spec, manifest) = blocking(move || engine.find_tree(&n, "", &h)).await?;
        self.check_backed_up_images(&spec, manifest.as_ref())?;
        if self.require_base(&spec.base).is_err() {
            let Some(rel) = manifest.as_ref().and_then(|m| m.base.archive.clone()) else {
                return Err(EngineError::not_found(format!(
                    "base {} is not here and the backup names no archive of it; import or build it first",
                    spec.base
                )));
            };
            let engine = self.clone();
            let base = spec.base.clone();
            let job_ref = job.clone();
            blocking(move || engine.import_base_from_target(&t, &base, &rel, &job_ref)).await?;
        }
        let (engine, t, s, j) = (self.clone(), target.clone(), spec.clone(), job.clone());
        blocking(move || engine.import_layers_from_target(&t, &s, manifest.as_ref(), &j)).await?;
        let from = crate::shift::Range::of(spec.unprivileged_map());
        self.restore_new(
            name,
            spec,
            target,
            format!("{tree}/rootfs-layer"),
            from,
            job,
            true,
        )
        .await
        .map(|_| ())
    }
}

/// The hashes of the archives recorded in `cache` (one "<sha256> <created>" line per
/// archive made or fetched of an image) for the image made at `created`, oldest first:
/// the last is the one to reuse; all of them are that image's.
pub(super) fn archives_of(cache: &Path, created: u64) -> Vec<String> {
    let created = created.to_string();
    std::fs::read_to_string(cache)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .filter(|(h, c)| *c == created && h.len() == 64)
        .map(|(h, _)| h.to_string())
        .collect()
}

/// Adds `hash` to `cache` for the image made at `created` (lines of an older image of
/// the name are dropped). Best effort: a lost record only means the archive is made
/// again and names are trusted at restore.
pub(super) fn remember_archive(cache: &Path, hash: &str, created: u64) {
    let mut known = archives_of(cache, created);
    known.retain(|h| h != hash);
    known.push(hash.to_string());
    let text: String = known.iter().map(|h| format!("{h} {created}\n")).collect();
    let _ = crate::fsutil::write_atomic(cache, text.as_bytes(), 0o644);
}

/// The sha256 a content-addressed archive's path names.
fn archive_hash(rel: &str) -> Option<&str> {
    rel.rsplit('/')
        .next()?
        .strip_suffix(".tar.zst")
        .filter(|h| h.len() == 64)
}

fn archive_rel(hash: &str) -> String {
    format!("{BASES_DIR}/{hash}.tar.zst")
}

#[cfg(test)]
mod tests {
    use super::{archive_hash, archives_of, remember_archive};

    #[test]
    fn archives_are_remembered_per_image_and_the_last_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("base-archive-bb");
        let (h1, h2) = ("a".repeat(64), "b".repeat(64));
        assert!(archives_of(&cache, 10).is_empty(), "nothing recorded yet");
        remember_archive(&cache, &h1, 10);
        remember_archive(&cache, &h2, 10);
        remember_archive(&cache, &h1, 10);
        assert_eq!(archives_of(&cache, 10), vec![h2.clone(), h1.clone()]);
        // A new image of the name (made at another time) starts afresh.
        assert!(archives_of(&cache, 11).is_empty());
        remember_archive(&cache, &h2, 11);
        assert_eq!(archives_of(&cache, 11), vec![h2.clone()]);
        assert!(
            archives_of(&cache, 10).is_empty(),
            "the old image's lines are gone"
        );
        assert_eq!(
            archive_hash(&format!("bases/{h1}.tar.zst")),
            Some(h1.as_str())
        );
        assert_eq!(archive_hash("bases/short.tar.zst"), None);
    }
}
