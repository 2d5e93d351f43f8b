//! Identity of backups (issue 12): the host id, container uuids, where a container's
//! trees live on the target (`<target>/<host-id>/<name>/`, a seed layout
//! `<target>/<name>/` adopted), the manifest that guards them, and `backup verify`.

use super::backup_target::check_ok;
use super::jobs::Job;
use super::{BaseSource, Engine};
use crate::backup::identity::{self, ImageRef, Listing, Manifest, LISTING_FILE, MANIFEST_FILE};
use crate::backup::status::StatusFile;
use crate::backup::{self, Target};
use crate::error::{EngineError, EngineResult};
use crate::spec::ContainerSpec;
use std::path::Path;
use std::sync::Arc;

/// Where a new tree is being written: its target-relative directory, its name, start
/// time and the base's archive.
#[derive(Clone, Copy)]
pub(super) struct TreeAt<'a> {
    pub rel: &'a str,
    pub tree: &'a str,
    pub time: u64,
    /// The base's archive at the target (`bases/<sha256>.tar.zst`).
    pub base_archive: &'a str,
}

impl Engine {
    /// This host's id (a uuid kept in the store).
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// Gives a uuid to containers whose spec predates them.
    pub(super) fn assign_missing_uuids(&self) {
        for c in self.all_containers() {
            let mut spec = c.info().spec;
            if spec.uuid.as_deref().is_some_and(identity::is_uuid) {
                continue;
            }
            let Ok(id) = identity::new_uuid() else {
                tracing::error!(container = %c.name, "cannot choose a uuid for the container");
                continue;
            };
            tracing::info!(container = %c.name, uuid = %id, "assigning the container a uuid");
            spec.uuid = Some(id);
            if let Err(e) = spec.save(&self.store.container_dir(&c.name)) {
                tracing::error!(container = %c.name, error = %e, "cannot record the container's uuid");
                continue;
            }
            c.update(|s| s.spec = spec);
        }
    }

    /// Attempts a killed daemon left marked as running are recorded as failed, and
    /// the base and layer archives it was making or fetching are removed.
    pub(super) fn record_interrupted_backups(&self) {
        let lxc_dir = self.store.lxc_dir();
        if let Ok(entries) = std::fs::read_dir(&lxc_dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(".base-export-")
                    || n.starts_with(".import-base-")
                    || n.starts_with(".import-layer-")
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        self.drop_stale_fetches();
        let mut status = StatusFile::load(&lxc_dir);
        let stuck = status.fail_interrupted();
        if stuck.is_empty() {
            return;
        }
        tracing::warn!(containers = ?stuck, "backups were interrupted by the daemon stopping; recorded as failed");
        if let Err(e) = status.save(&lxc_dir) {
            tracing::error!(error = %e, "cannot write the backup status");
        }
    }

    /// The host whose backups to read: `""` is this host; another host is named by its
    /// id (`osm-hostctl host info` on it shows it; the target's top-level directories).
    pub(super) fn backup_host(&self, host: &str) -> EngineResult<String> {
        if host.is_empty() {
            return Ok(self.host_id.clone());
        }
        if !identity::is_uuid(host) {
            return Err(EngineError::invalid_argument(format!(
                "{host:?} is not a host id: give the uuid `osm-hostctl host info` shows on that host (the directories at the top of the backup target)"
            )));
        }
        Ok(host.to_string())
    }

    /// The target-relative directory of `name`'s backups made by `host`.
    pub(super) fn backup_rel(&self, host: &str, name: &str) -> String {
        format!("{host}/{name}")
    }

    /// Where to read `name`'s backups from: `<host>/<name>`, or for this host the seed
    /// layout `<name>` while it has not been adopted yet (no run since the upgrade).
    pub(super) fn backup_read_rel(
        &self,
        target: &Target,
        host: &str,
        name: &str,
    ) -> Result<String, String> {
        let rel = self.backup_rel(host, name);
        if host == self.host_id
            && self.list_target(target, &rel)?.is_empty()
            && !self.list_target(target, name)?.is_empty()
        {
            return Ok(name.to_string());
        }
        Ok(rel)
    }

    pub(super) fn image_refs(&self, spec: &ContainerSpec) -> (ImageRef, Vec<ImageRef>) {
        let base = ImageRef {
            name: spec.base.clone(),
            version: match self.base_info(&spec.base) {
                Ok(i) => match i.source {
                    BaseSource::Recipe(k) => format!("recipe:{k}"),
                    BaseSource::Import => format!("import:{}", i.created),
                    BaseSource::Unknown => format!("unknown:{}", i.created),
                },
                Err(_) => "missing".into(),
            },
            archive: None,
        };
        let layers = spec
            .layers
            .iter()
            .map(|l| ImageRef {
                name: l.clone(),
                version: match self.layer_info(l) {
                    Ok(i) if !i.key.is_empty() => i.key,
                    Ok(i) => format!("unknown:{}", i.created),
                    Err(_) => "missing".into(),
                },
                archive: self.layer_archive(l),
            })
            .collect();
        (base, layers)
    }

    /// Before a run writes `<host>/<name>`: refuses a tree whose manifest names another
    /// host or container, and adopts a seed tree `<name>` of this container.
    pub(super) fn claim_backup_dir(
        &self,
        target: &Target,
        spec: &ContainerSpec,
    ) -> Result<(), String> {
        let name = &spec.name;
        let uuid = spec.uuid.clone().unwrap_or_default();
        let rel = self.backup_rel(&self.host_id, name);
        let shown = target.container_dir(&rel);
        if let Some(text) = self.target_read(target, &format!("{rel}/{MANIFEST_FILE}"))? {
            let m = Manifest::parse(&text).map_err(|e| {
                format!("{shown}/{MANIFEST_FILE}: {e}; move that tree away on the target to back {name} up again")
            })?;
            return m.check_owner(&self.host_id, name, &uuid, &shown);
        }
        if !self.list_target(target, &rel)?.is_empty() {
            // Ours, from a run that stopped before its manifest was written.
            return Ok(());
        }
        let seed = self.list_target(target, name)?;
        if seed.is_empty() {
            return Ok(());
        }
        // A seed tree has no manifest; its container.toml's MAC (chosen once at create)
        // tells whether it is this container's.
        let spec_rel = if seed.iter().any(|n| n == crate::spec::SPEC_FILE) {
            format!("{name}/{}", crate::spec::SPEC_FILE)
        } else {
            match seed
                .iter()
                .filter(|n| backup::parse_history_name(n).is_some())
                .max()
            {
                Some(t) => format!("{name}/{t}/{}", crate::spec::SPEC_FILE),
                None => return Ok(()),
            }
        };
        let theirs = self
            .target_read(target, &spec_rel)?
            .and_then(|t| toml::from_str::<ContainerSpec>(&t).ok());
        match theirs {
            Some(s) if s.mac == spec.mac && s.uuid.as_ref().map_or(true, |u| *u == uuid) => {
                tracing::info!(container = %name, from = %target.path_of(name), to = %target.path_of(&rel), "adopting the seed backup layout");
                self.target_mkdir(target, &self.host_id.clone())?;
                self.target_rename_dir(target, &target.path_of(name), &target.path_of(&rel))
            }
            _ => {
                tracing::warn!(container = %name, dir = %target.path_of(name), "a seed backup tree of another container of this name is left as it is");
                Ok(())
            }
        }
    }

    /// The snapshot's listing, reusing the checksums of the previous tree's listing
    /// (`prev_listing_rel` on the target) for files whose path and metadata are unchanged.
    pub(super) fn listing_of(
        &self,
        target: &Target,
        snap: &Path,
        prev_listing_rel: Option<&str>,
    ) -> Result<Listing, String> {
        let prev = match prev_listing_rel {
            Some(p) => self
                .target_read(target, p)?
                .and_then(|t| Listing::parse(&t).ok()),
            None => None,
        };
        Listing::of_tree(snap, prev.as_ref()).map_err(|e| format!("listing the snapshot: {e}"))
    }

    /// After a verified transfer: the listing (checksums, reusing the previous tree's for
    /// unchanged files) and the manifest, written into the tree `tree_rel`.
    pub(super) fn write_manifest(
        &self,
        target: &Target,
        spec: &ContainerSpec,
        listing: &Listing,
        at: &TreeAt<'_>,
    ) -> Result<Manifest, String> {
        let TreeAt {
            rel: tree_rel,
            tree,
            time,
            base_archive,
        } = *at;
        let text = listing.to_text();
        let (mut base, layers) = self.image_refs(spec);
        base.archive = Some(base_archive.to_string());
        let m = Manifest {
            format: 1,
            host_id: self.host_id.clone(),
            hostname: self.host.hostname().unwrap_or_default(),
            container: spec.name.clone(),
            container_uuid: spec.uuid.clone().unwrap_or_default(),
            base,
            layers,
            osm_host_version: env!("CARGO_PKG_VERSION").to_string(),
            time,
            tree: tree.to_string(),
            listing_sha256: identity::sha256_hex(text.as_bytes()),
        };
        self.target_write(
            target,
            &format!("{tree_rel}/{LISTING_FILE}"),
            text.as_bytes(),
        )?;
        self.target_write(
            target,
            &format!("{tree_rel}/{MANIFEST_FILE}"),
            m.to_toml().as_bytes(),
        )?;
        Ok(m)
    }

    /// Starts a job re-checking backup trees against their manifests and listings:
    /// every file re-read and its checksum compared, entries missing or added, the
    /// manifest's owner. `names` empty with `all`: every container this host backed up.
    pub fn verify_backups(
        self: &Arc<Self>,
        names: Vec<String>,
        all: bool,
    ) -> EngineResult<Arc<Job>> {
        let target = self.cfg.backup.target.clone();
        if !all && names.is_empty() {
            return Err(EngineError::invalid_argument(
                "name the containers whose backups to verify, or ask for all of them".into(),
            ));
        }
        for n in &names {
            crate::names::validate_container_name(n)?;
        }
        let engine = self.clone();
        let label = names.join(",");
        let job = self
            .jobs
            .start_blocking("backup-verify", &label, move |job2| {
                let names = if all {
                    engine
                        .list_target(&target, &engine.host_id.clone())?
                        .into_iter()
                        .filter(|n| !n.starts_with('.'))
                        .collect()
                } else {
                    names
                };
                let mut problems = Vec::new();
                let mut trees = 0;
                for (i, name) in names.iter().enumerate() {
                    job2.set_progress(
                        i as f64 / names.len().max(1) as f64,
                        &format!("verifying {name}"),
                    );
                    match engine.verify_one(&target, name) {
                        Ok(n) => trees += n,
                        Err(e) => problems.push(format!("{name}: {e}")),
                    }
                }
                if problems.is_empty() {
                    Ok(format!(
                        "verified {trees} backup tree(s) of {} container(s)",
                        names.len()
                    ))
                } else {
                    Err(format!("verification failed: {}", problems.join("; ")))
                }
            });
        Ok(job)
    }

    /// Verifies every tree of one container; returns how many.
    fn verify_one(&self, target: &Target, name: &str) -> Result<usize, String> {
        let rel = self.backup_rel(&self.host_id, name);
        let top = self
            .target_read(target, &format!("{rel}/{MANIFEST_FILE}"))?
            .ok_or_else(|| {
                format!(
                    "{} has no manifest (no backup by this host, or one made before manifests); run a backup first",
                    target.container_dir(&rel)
                )
            })?;
        let top = Manifest::parse(&top)?;
        let uuid = self
            .container(name)
            .ok()
            .and_then(|c| c.info().spec.uuid)
            .unwrap_or_else(|| top.container_uuid.clone());
        top.check_owner(&self.host_id, name, &uuid, &target.container_dir(&rel))?;
        let trees: Vec<String> = if self.dated_trees() {
            self.list_target(target, &rel)?
                .into_iter()
                .filter(|n| backup::parse_history_name(n).is_some())
                .map(|t| format!("{rel}/{t}"))
                .collect()
        } else {
            vec![rel.clone()]
        };
        for tree in &trees {
            self.verify_tree(target, tree, &top)?;
        }
        Ok(trees.len())
    }

    fn verify_tree(&self, target: &Target, tree: &str, top: &Manifest) -> Result<(), String> {
        let shown = target.container_dir(tree);
        let m = self
            .target_read(target, &format!("{tree}/{MANIFEST_FILE}"))?
            .ok_or_else(|| format!("{shown}: no manifest"))?;
        let m = Manifest::parse(&m).map_err(|e| format!("{shown}: {e}"))?;
        if m.host_id != top.host_id || m.container_uuid != top.container_uuid {
            return Err(format!(
                "{shown}: its manifest names another host or container"
            ));
        }
        let text = self
            .target_read(target, &format!("{tree}/{LISTING_FILE}"))?
            .ok_or_else(|| format!("{shown}: no {LISTING_FILE}"))?;
        if identity::sha256_hex(text.as_bytes()) != m.listing_sha256 {
            return Err(format!(
                "{shown}: {LISTING_FILE} does not match its manifest"
            ));
        }
        let want = Listing::parse(&text).map_err(|e| format!("{shown}: {e}"))?;
        let tree = &self.tree_data_rel(target, tree)?;
        match target {
            Target::Local(_) => {
                let got = Listing::of_tree(Path::new(&target.path_of(tree)), None)
                    .map_err(|e| format!("reading {shown}: {e}"))?;
                let diffs = want.differences(&got, 5);
                if !diffs.is_empty() {
                    return Err(format!(
                        "{shown} differs from its manifest: {}",
                        diffs.join(", ")
                    ));
                }
            }
            Target::Ssh { .. } => {
                let path = target.path_of(tree);
                let q = backup::rsync::shell_quote(&path);
                let cmd = format!(
                    "cd {q} && find . -xdev \\( -path ./.snapshots -o -path './work/*' -o -path './.osm-backup*' \\) -prune -o -type f -print0 | xargs -0r sha256sum"
                );
                let out = self.ssh(target, &["sh", "-c", &cmd])?;
                check_ok(&out)?;
                let got = identity::parse_sha256sum(&String::from_utf8_lossy(&out.stdout));
                let want_sums = want.file_sums();
                let mut diffs: Vec<String> = want_sums
                    .iter()
                    .filter(|(p, s)| got.get(*p) != Some(*s))
                    .map(|(p, _)| format!("{p}: content changed or missing"))
                    .chain(
                        got.keys()
                            .filter(|p| !want_sums.contains_key(*p))
                            .map(|p| format!("{p}: not in the backup's listing")),
                    )
                    .collect();
                let whiteouts = want.0.values().filter(|l| l.content == "c:0").count() as u64;
                let out = self.ssh(
                    target,
                    &["find", &path, "-xdev", "-type", "c", "-printf", "c"],
                )?;
                check_ok(&out)?;
                let have = crate::backup::verify::count_printed(&out.stdout);
                if have != whiteouts {
                    diffs.push(format!(
                        "{whiteouts} whiteouts recorded, {have} in the tree"
                    ));
                }
                diffs.truncate(5);
                if !diffs.is_empty() {
                    return Err(format!(
                        "{shown} differs from its manifest: {}",
                        diffs.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}
