//! Send-mode trees on the target, outside a run's send itself: checking the target can
//! receive them, finding a tree's data, deleting and pruning trees, and fetching one back
//! with `btrfs send` for a restore from an ssh target.

use super::backup_send::local_command;
use super::backup_target::check_ok;
use super::Engine;
use crate::backup::send::{self, PARENTS_DIR, TREE_SUBVOLUME};
use crate::backup::{self, Target};
use crate::error::{EngineError, EngineResult};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

impl Engine {
    /// In send mode, the target must be a Btrfs file system (checked once per run, after
    /// the target answered); the error says what to change.
    pub(super) fn check_send_target(&self, target: &Target) -> Result<(), String> {
        if !self.send_mode() {
            return Ok(());
        }
        let top = target.path_of("");
        let top = top.trim_end_matches('/');
        let out = match target {
            Target::Local(_) => self
                .host
                .run_local(&argv(["stat", "-f", "-c", "%T", "--", top]))
                .map_err(|e| format!("cannot run stat: {e}"))?,
            Target::Ssh { .. } => {
                let q = backup::rsync::shell_quote(top);
                self.ssh(
                    target,
                    &[
                        "sh",
                        "-c",
                        &format!("mkdir -p -- {q} && stat -f -c %T -- {q}"),
                    ],
                )?
            }
        };
        check_ok(&out).map_err(|e| format!("checking the target's file system: {e}"))?;
        match send::not_btrfs(
            target.container_dir("").trim_end_matches('/'),
            &String::from_utf8_lossy(&out.stdout),
        ) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The directory holding a tree's files: `<rel>/snapshot` for a send-mode tree (a
    /// plain directory holding the received subvolume), else `rel` itself.
    pub(super) fn tree_data_rel(&self, target: &Target, rel: &str) -> Result<String, String> {
        let entries = self.list_target(target, rel)?;
        if entries.iter().any(|n| n == TREE_SUBVOLUME)
            && !entries.iter().any(|n| n == crate::spec::SPEC_FILE)
        {
            Ok(format!("{rel}/{TREE_SUBVOLUME}"))
        } else {
            Ok(rel.to_string())
        }
    }

    /// A container's backup directory holds the trees of one transport: an rsync tree
    /// cannot be continued with btrfs send or the other way round (rsync cannot delete
    /// inside read-only subvolumes; a send tree is not a mirror). The error says what to do.
    pub(super) fn check_tree_transport(&self, target: &Target, name: &str) -> Result<(), String> {
        let crel = self.backup_rel(&self.host_id, name);
        let entries = self.list_target(target, &crel)?;
        let newest = entries
            .iter()
            .filter(|n| backup::parse_history_name(n).is_some())
            .max();
        let send_tree = match newest {
            Some(t) => {
                let rel = format!("{crel}/{t}");
                Some(self.tree_data_rel(target, &rel)? != rel)
            }
            None => None,
        };
        let mirror = entries.iter().any(|n| n == crate::spec::SPEC_FILE);
        let (made_with, wrong) = if self.send_mode() {
            ("rsync", mirror || send_tree == Some(false))
        } else {
            ("btrfs-send", send_tree == Some(true))
        };
        if wrong {
            return Err(format!(
                "{} holds backups made with transport = \"{made_with}\", which this transport cannot continue; move that directory away on the target to start afresh, or set [backup] transport back to \"{made_with}\"",
                target.container_dir(&crel)
            ));
        }
        Ok(())
    }

    /// Deletes a send-mode tree directory on the target: its received subvolumes first
    /// (a read-only subvolume cannot be emptied file by file), then the directory.
    pub(super) fn delete_send_tree(&self, target: &Target, rel: &str) -> Result<(), String> {
        let path = target.path_of(rel);
        match target {
            Target::Local(_) => {
                let dir = Path::new(&path);
                if !dir.exists() {
                    return Ok(());
                }
                for e in std::fs::read_dir(dir)
                    .map_err(|e| format!("reading {path}: {e}"))?
                    .flatten()
                {
                    if self.host.is_subvolume(&e.path()) {
                        self.host
                            .delete_subvolume(&e.path())
                            .map_err(|e| e.to_string())?;
                    }
                }
                std::fs::remove_dir_all(dir).map_err(|e| format!("removing {path}: {e}"))
            }
            Target::Ssh { .. } => {
                let q = backup::rsync::shell_quote(&path);
                let cmd = format!(
                    "d={q}; [ -d \"$d\" ] || exit 0; for s in \"$d\"/*; do \
                     if btrfs subvolume show \"$s\" >/dev/null 2>&1; then \
                     btrfs subvolume delete -- \"$s\" >/dev/null || exit 1; fi; done; rm -rf -- \"$d\""
                );
                check_ok(&self.ssh(target, &["sh", "-c", &cmd])?)
            }
        }
    }

    /// Prunes send-mode trees by the history policy; mirror mode keeps only the newest.
    /// The newest tree (the next run's parent) is always kept.
    pub(super) fn prune_send_trees(&self, target: &Target, crel: &str) {
        let cfg = &self.cfg.backup;
        let keep = if cfg.mode == crate::backup::Mode::History {
            backup::KeepPolicy {
                last: cfg.keep_last,
                daily: cfg.keep_daily,
                weekly: cfg.keep_weekly,
                monthly: cfg.keep_monthly,
                yearly: cfg.keep_yearly,
            }
        } else {
            backup::KeepPolicy {
                last: 1,
                ..Default::default()
            }
        };
        let Ok(entries) = self.list_target(target, crel) else {
            return;
        };
        for doomed in backup::prune_plan_with(&entries, keep) {
            tracing::info!(dir = %crel, tree = %doomed, "pruning backup tree");
            if let Err(e) = self.delete_send_tree(target, &format!("{crel}/{doomed}")) {
                tracing::warn!(dir = %crel, tree = %doomed, error = %e, "cannot prune backup tree");
            }
        }
    }

    /// A send-mode tree on an ssh target brought to this host with `btrfs send` there
    /// and `btrfs receive` here, for a restore to copy from; returns the local copy.
    pub(super) fn fetch_send_tree(
        &self,
        target: &Target,
        remote: &str,
        name: &str,
    ) -> EngineResult<PathBuf> {
        let dir = self
            .store
            .containers_dir()
            .join(PARENTS_DIR)
            .join(format!(".restore-{name}"));
        self.drop_fetched(&dir);
        std::fs::create_dir_all(&dir)
            .and_then(|()| crate::hardening::private_dir(dir.parent().expect("parent")))
            .and_then(|_| crate::hardening::private_dir(&dir))
            .map_err(|e| EngineError::io(format!("creating {}", dir.display()), &e))?;
        let sender = self.target_command(target, "btrfs", &send::send_args(remote, None));
        let receiver = local_command("btrfs", &send::receive_args(&dir.display().to_string()));
        let fetched = self.host.pipe(&sender, &receiver).and_then(|_| {
            let base = Path::new(remote)
                .file_name()
                .map(|n| dir.join(n))
                .ok_or_else(|| format!("{remote} names no subvolume"))?;
            Ok(base)
        });
        match fetched {
            Ok(p) => Ok(p),
            Err(e) => {
                self.drop_fetched(&dir);
                Err(EngineError::failed(format!(
                    "fetching the backup of {name} with btrfs send: {e}"
                )))
            }
        }
    }

    /// At daemon start (no restore runs): copies fetched by restores that a killed daemon
    /// left behind.
    pub(super) fn drop_stale_fetches(&self) {
        let top = self.store.containers_dir().join(PARENTS_DIR);
        for e in std::fs::read_dir(top).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(".restore-") {
                tracing::info!(path = %e.path().display(), "removing a backup copy an interrupted restore fetched");
                self.drop_fetched(&e.path());
            }
        }
    }

    /// Deletes a directory [`Engine::fetch_send_tree`] made, received subvolumes included.
    pub(super) fn drop_fetched(&self, dir: &Path) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if self.host.is_subvolume(&e.path()) {
                if let Err(err) = self.host.delete_subvolume(&e.path()) {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot delete a fetched backup");
                }
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn argv<const N: usize>(words: [&str; N]) -> Vec<OsString> {
    words.iter().map(OsString::from).collect()
}
