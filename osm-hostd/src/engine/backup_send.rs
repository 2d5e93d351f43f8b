//! Backups with `btrfs send | btrfs receive` (issue 12, `[backup] transport =
//! "btrfs-send"`; pure pieces and the target layout in [`crate::backup::send`]).
//!
//! A run takes a read-only snapshot of the container into
//! `containers/.send-parents/<uuid>/<tree>` (writable first, to leave out `.snapshots` and
//! `work/`'s contents as rsync does, then made read-only), sends it, incrementally from
//! the newest tree both sides have, into `<target>/<host>/<name>/.incomplete-<tree>/`,
//! verifies the received copy, writes the manifest and listing beside it, renames the
//! directory to `<tree>`, prunes, and keeps only the newest snapshot on the host side as
//! the next run's parent. A failed run deletes what it received and its own snapshot.
//!
//! This file holds the run; `backup_send_trees.rs` the send-mode trees on the target
//! (transport checks, deleting, pruning, fetching one back for a restore).

use super::backup_target::check_ok;
use super::Engine;
use crate::backup::send::{self, common_parent, PARENTS_DIR, TREE_SUBVOLUME};
use crate::backup::verify::{compare_trees, count_printed, differences, markers_of, tree_entries};
use crate::backup::{self, identity, rsync_args, RsyncJob, Target};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

const INCOMPLETE_PREFIX: &str = ".incomplete-";

impl Engine {
    /// Whether backups use `btrfs send` (`[backup] transport`).
    pub(super) fn send_mode(&self) -> bool {
        self.cfg.backup.transport == send::Transport::BtrfsSend
    }

    /// Whether a container's backups are dated trees (history mode, or any send mode).
    pub(super) fn dated_trees(&self) -> bool {
        self.cfg.backup.mode == crate::backup::Mode::History || self.send_mode()
    }

    fn parents_dir(&self, uuid: &str) -> PathBuf {
        self.store.containers_dir().join(PARENTS_DIR).join(uuid)
    }

    /// One container's send-mode backup; returns bytes sent and the tree's name.
    pub(super) fn backup_send(
        &self,
        name: &str,
        target: &Target,
        time: u64,
        shipped: &super::backup_bases::Shipments,
    ) -> Result<(u64, String), String> {
        let (spec, snap, tree) = {
            let c = self.container(name).map_err(|e| e.to_string())?;
            let spec = c.info().spec;
            let uuid = spec
                .uuid
                .clone()
                .ok_or_else(|| format!("{name} has no uuid yet; restart the daemon"))?;
            let dir = self.parents_dir(&uuid);
            // Snapshots of every customer's files: closed to other users.
            std::fs::create_dir_all(&dir)
                .and_then(|()| crate::hardening::private_dir(dir.parent().expect("parent")))
                .and_then(|_| crate::hardening::private_dir(&dir))
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let _op = c.begin("backup").map_err(|e| e.to_string())?;
            // Tree names sort by time and are never reused: a run within the second of
            // the last one (whose snapshot is kept as the parent) takes the next second.
            let newest = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| backup::parse_history_name(n).is_some())
                        .max()
                })
                .unwrap_or_default();
            let mut t = time;
            while newest
                .as_ref()
                .is_some_and(|n| backup::history_name(t) <= *n)
            {
                t += 1;
            }
            let tree = backup::history_name(t);
            let snap = dir.join(&tree);
            self.host
                .snapshot(&self.store.container_dir(name), &snap, false)
                .map_err(|e| e.to_string())?;
            (spec, snap, tree)
        };
        let result = self
            .prepare_source(&snap)
            .and_then(|()| self.claim_backup_dir(target, &spec))
            .and_then(|()| self.check_tree_transport(target, name))
            .and_then(|()| {
                let archive = self.ship_base_once(target, &spec.base, shipped)?;
                self.ship_layers_once(target, &spec, shipped)?;
                self.send_and_verify(&spec, target, &snap, &tree, time, &archive)
            });
        let keep = if result.is_ok() { Some(&snap) } else { None };
        self.prune_parents(&snap, keep);
        result.map(|b| (b, tree))
    }

    /// The snapshot as a backup holds it: no `.snapshots` placeholder, `work/` empty;
    /// then read-only, as `btrfs send` requires.
    fn prepare_source(&self, snap: &Path) -> Result<(), String> {
        let placeholder = snap.join(crate::snapper::layout::SNAPSHOTS_DIR);
        if placeholder.is_dir() {
            std::fs::remove_dir(&placeholder)
                .map_err(|e| format!("removing {}: {e}", placeholder.display()))?;
        }
        let work = snap.join("work");
        if work.is_dir() {
            crate::fsutil::empty_dir(&work)
                .map_err(|e| format!("emptying {}: {e}", work.display()))?;
        }
        self.host
            .set_readonly(snap, true)
            .map_err(|e| e.to_string())
    }

    /// Keeps `keep` (the snapshot just sent) as the next run's parent and deletes the
    /// container's other host-side snapshots; without `keep` (a failed run) only `snap`
    /// goes, so the previous parent stays.
    fn prune_parents(&self, snap: &Path, keep: Option<&PathBuf>) {
        let Some(dir) = snap.parent() else { return };
        let doomed: Vec<PathBuf> = match keep {
            None => vec![snap.to_path_buf()],
            Some(k) => std::fs::read_dir(dir)
                .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p != k).collect())
                .unwrap_or_default(),
        };
        for p in doomed {
            if let Err(e) = self.host.delete_subvolume(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot delete an old backup source snapshot");
            }
        }
    }

    /// At the start of a run: the kept parents of containers that no longer exist are
    /// deleted, and in rsync mode all of them (they only pin disk space; switching back
    /// to send mode then starts with a full send).
    pub(super) fn prune_send_parent_dirs(&self) {
        let top = self.store.containers_dir().join(PARENTS_DIR);
        let Ok(rd) = std::fs::read_dir(&top) else {
            return;
        };
        let uuids: Vec<String> = self
            .all_containers()
            .iter()
            .filter_map(|c| c.info().spec.uuid)
            .collect();
        let send = self.send_mode();
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !identity::is_uuid(&id) || (send && uuids.contains(&id)) {
                continue;
            }
            tracing::info!(uuid = %id, "removing kept btrfs send parents no longer needed");
            for s in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                if let Err(err) = self.host.delete_subvolume(&s.path()) {
                    tracing::warn!(path = %s.path().display(), error = %err, "cannot delete a kept send parent");
                }
            }
            let _ = std::fs::remove_dir(e.path());
        }
    }

    fn send_and_verify(
        &self,
        spec: &crate::spec::ContainerSpec,
        target: &Target,
        snap: &Path,
        tree: &str,
        time: u64,
        base_archive: &str,
    ) -> Result<u64, String> {
        let name = spec.name.as_str();
        let crel = self.backup_rel(&self.host_id, name);
        let trees = self.trees_on_target(target, &crel)?;
        let parent = common_parent(&host_parents(snap, tree), &trees);
        let prev_listing = trees
            .iter()
            .max()
            .map(|p| format!("{crel}/{p}/{}", identity::LISTING_FILE));
        let incomplete = format!("{crel}/{INCOMPLETE_PREFIX}{tree}");
        self.target_mkdir(target, &incomplete)?;
        let result = (|| {
            // The snapshot is frozen: its listing and (local target) its entries are read
            // while the stream is sent.
            let (sent, listing, want) = std::thread::scope(|scope| {
                let lister = scope.spawn(|| self.listing_of(target, snap, prev_listing.as_deref()));
                let entries = scope.spawn(|| {
                    matches!(target, Target::Local(_)).then(|| {
                        tree_entries(snap)
                            .map_err(|e| format!("reading the snapshot for verification: {e}"))
                    })
                });
                let sent =
                    self.send_with_fallback(name, target, snap, parent.as_deref(), &incomplete);
                let listing = lister
                    .join()
                    .unwrap_or_else(|_| Err("listing the snapshot panicked".into()));
                let want = entries
                    .join()
                    .unwrap_or_else(|_| Some(Err("reading the snapshot panicked".into())));
                (sent, listing, want)
            });
            let bytes = sent?;
            let listing = listing?;
            let want = want.transpose()?;
            let received = format!("{incomplete}/{TREE_SUBVOLUME}");
            self.target_rename_dir(
                target,
                &target.path_of(&format!("{incomplete}/{tree}")),
                &target.path_of(&received),
            )?;
            self.verify_received(
                target,
                snap,
                want.as_ref(),
                &received,
                &listing,
                prev_listing.as_deref(),
            )?;
            let at = super::backup_identity::TreeAt {
                rel: &incomplete,
                tree,
                time,
                base_archive,
            };
            let manifest = self.write_manifest(target, spec, &listing, &at)?;
            self.publish_send_tree(target, &crel, &incomplete, tree, &manifest)?;
            Ok(bytes)
        })();
        match result {
            Ok(bytes) => {
                tracing::info!(container = %name, tree = %tree, parent = %parent.as_deref().unwrap_or("none (full send)"), bytes, "btrfs send verified");
                self.prune_send_trees(target, &crel);
                Ok(bytes)
            }
            Err(e) => {
                if let Err(d) = self.delete_send_tree(target, &incomplete) {
                    tracing::error!(container = %name, error = %d, "cannot delete a failed receive on the target");
                }
                Err(e)
            }
        }
    }

    /// The complete trees of a container on the target (`crel`), after deleting what an
    /// interrupted run received.
    fn trees_on_target(&self, target: &Target, crel: &str) -> Result<Vec<String>, String> {
        let entries = self.list_target(target, crel)?;
        for stale in entries.iter().filter(|n| n.starts_with(INCOMPLETE_PREFIX)) {
            self.delete_send_tree(target, &format!("{crel}/{stale}"))?;
        }
        Ok(entries
            .iter()
            .filter(|n| backup::parse_history_name(n).is_some())
            .cloned()
            .collect())
    }

    /// Sends `snap` incrementally from `parent` when there is one; if that fails (the
    /// target may have lost or changed the parent), starts over with one full send.
    fn send_with_fallback(
        &self,
        name: &str,
        target: &Target,
        snap: &Path,
        parent: Option<&str>,
        incomplete: &str,
    ) -> Result<u64, String> {
        let mut sent = self.send_to(target, snap, parent, incomplete);
        if let (Err(e), Some(p)) = (&sent, parent) {
            tracing::warn!(container = %name, parent = %p, error = %e, "incremental send failed; sending in full");
            sent = self
                .delete_send_tree(target, incomplete)
                .and_then(|()| self.target_mkdir(target, incomplete))
                .and_then(|()| self.send_to(target, snap, None, incomplete));
        }
        sent
    }

    /// Renames a verified `incomplete` directory to `tree` and puts the newest manifest
    /// beside the trees (the owner check).
    fn publish_send_tree(
        &self,
        target: &Target,
        crel: &str,
        incomplete: &str,
        tree: &str,
        manifest: &identity::Manifest,
    ) -> Result<(), String> {
        self.target_rename_dir(
            target,
            &target.path_of(incomplete),
            &target.path_of(&format!("{crel}/{tree}")),
        )?;
        self.target_write(
            target,
            &format!("{crel}/{}", identity::MANIFEST_FILE),
            manifest.to_toml().as_bytes(),
        )
    }

    /// `btrfs send` of `snap` into the target directory `dir_rel` (`btrfs receive` there,
    /// through ssh for a remote target); returns the stream's size.
    fn send_to(
        &self,
        target: &Target,
        snap: &Path,
        parent: Option<&str>,
        dir_rel: &str,
    ) -> Result<u64, String> {
        let parent_path = parent.map(|p| snap.with_file_name(p).display().to_string());
        let sender = local_command(
            "btrfs",
            &send::send_args(&snap.display().to_string(), parent_path.as_deref()),
        );
        let recv = send::receive_args(&target.path_of(dir_rel));
        let receiver = self.target_command(target, "btrfs", &recv);
        self.host.pipe(&sender, &receiver)
    }

    /// `program args` on the target: locally, or through ssh.
    pub(super) fn target_command(
        &self,
        target: &Target,
        program: &str,
        args: &[String],
    ) -> Vec<OsString> {
        match target {
            Target::Local(_) => local_command(program, args),
            Target::Ssh { host, .. } => {
                let mut words = vec![program.to_string()];
                words.extend(args.iter().cloned());
                let mut c: Vec<OsString> = vec!["ssh".into()];
                c.extend(
                    backup::rsync::ssh_options(&self.cfg.backup)
                        .into_iter()
                        .map(OsString::from),
                );
                c.extend([
                    "--".into(),
                    host.into(),
                    send::remote_command(&words).into(),
                ]);
                c
            }
        }
    }

    /// The received copy against the snapshot: every entry's metadata, xattrs and the
    /// overlay markers (local), or the marker count and rsync's itemized comparison
    /// (ssh); locally also the content of every file that changed since the previous
    /// tree, re-read from the copy and compared with the snapshot's checksum.
    fn verify_received(
        &self,
        target: &Target,
        snap: &Path,
        want: Option<&std::collections::BTreeMap<String, crate::backup::verify::Entry>>,
        received: &str,
        listing: &identity::Listing,
        prev_listing: Option<&str>,
    ) -> Result<(), String> {
        match target {
            Target::Local(_) => {
                let want = want.ok_or("the snapshot's entries were not read")?;
                self.verify_received_locally(target, want, received, listing, prev_listing)
            }
            Target::Ssh { .. } => self.verify_received_over_ssh(target, snap, received, listing),
        }
    }

    /// [`Self::verify_received`] on a local target.
    fn verify_received_locally(
        &self,
        target: &Target,
        want: &std::collections::BTreeMap<String, crate::backup::verify::Entry>,
        received: &str,
        listing: &identity::Listing,
        prev_listing: Option<&str>,
    ) -> Result<(), String> {
        let copy = target.path_of(received);
        // Two walks of the copy at once: entries with xattrs, and the checksums.
        let (got, sums) = std::thread::scope(|scope| {
            let sums = scope.spawn(|| self.listing_of(target, Path::new(&copy), prev_listing));
            let got = tree_entries(Path::new(&copy))
                .map_err(|e| format!("reading the copy for verification: {e}"));
            (
                got,
                sums.join()
                    .unwrap_or_else(|_| Err("listing the copy panicked".into())),
            )
        });
        let (got, sums) = (got?, sums?);
        let (mw, mg) = (markers_of(want), markers_of(&got));
        if mw != mg {
            return Err(format!(
                "verification failed: {} whiteouts and {} opaque directories in the container, {} and {} in the backup",
                mw.whiteouts, mw.opaque_dirs, mg.whiteouts, mg.opaque_dirs
            ));
        }
        let diffs = compare_trees(want, &got, 3);
        if !diffs.is_empty() {
            return Err(format!(
                "verification failed: the copy differs from the snapshot: {}",
                diffs.join("; ")
            ));
        }
        let diffs = listing.differences(&sums, 3);
        if !diffs.is_empty() {
            return Err(format!(
                "verification failed: the copy's contents differ from the snapshot: {}",
                diffs.join("; ")
            ));
        }
        Ok(())
    }

    /// [`Self::verify_received`] on an ssh target.
    fn verify_received_over_ssh(
        &self,
        target: &Target,
        snap: &Path,
        received: &str,
        listing: &identity::Listing,
    ) -> Result<(), String> {
        let path = target.path_of(received);
        let out = self.ssh(
            target,
            &["find", &path, "-xdev", "-type", "c", "-printf", "c"],
        )?;
        check_ok(&out)?;
        let want = listing.0.values().filter(|l| l.content == "c:0").count() as u64;
        let have = count_printed(&out.stdout);
        if have != want {
            return Err(format!(
                "verification failed: {want} whiteouts in the container, {have} in the backup"
            ));
        }
        let job = RsyncJob {
            src: snap.display().to_string(),
            dest: target.container_dir(received),
            link_dest: None,
            check_only: true,
            excludes: true,
            checksum: false,
        };
        let out = self.rsync(&rsync_args(&self.cfg.backup, &job))?;
        super::backup_target::check_exit(&out)?;
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
}

/// The snapshots kept on the host beside `snap` (other than `tree`): candidate parents.
fn host_parents(snap: &Path, tree: &str) -> Vec<String> {
    std::fs::read_dir(snap.parent().expect("parent dir"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != tree)
                .collect()
        })
        .unwrap_or_default()
}

/// `program args` as one argument vector, the program first.
pub(super) fn local_command(program: &str, args: &[String]) -> Vec<OsString> {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(OsString::from)
        .collect()
}
