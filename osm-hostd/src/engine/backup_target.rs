//! File operations on the backup target, local or over ssh, as one set: list, read,
//! write (renamed into place), mkdir, rename, exists, sha256, marker count; and the
//! rsync and ssh runners (through the host seam) with their exit-status checks.

use super::Engine;
use crate::backup::verify::{count_markers, count_printed, Markers};
use crate::backup::{self, classify_exit, identity, ExitClass, Target};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Output;

impl Engine {
    /// Entries of `<target>/<name>/` (empty when it does not exist yet).
    pub(super) fn list_target(&self, target: &Target, name: &str) -> Result<Vec<String>, String> {
        let dir = target.path_of(name);
        let mut names = match target {
            Target::Local(_) => match std::fs::read_dir(&dir) {
                Ok(rd) => rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(format!("cannot list {dir}: {e}")),
            },
            Target::Ssh { .. } => {
                let q = backup::rsync::shell_quote(&dir);
                let cmd = format!("if [ -d {q} ]; then ls -1A {q}; fi");
                let out = self.ssh(target, &["sh", "-c", &cmd])?;
                check_ok(&out)?;
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            }
        };
        names.sort();
        Ok(names)
    }

    pub(super) fn count_target_markers(
        &self,
        target: &Target,
        rel: &str,
    ) -> Result<Markers, String> {
        let path = target.path_of(rel);
        match target {
            Target::Local(_) => count_markers(Path::new(&path))
                .map_err(|e| format!("counting markers in {path}: {e}")),
            Target::Ssh { .. } => {
                let out = self.ssh(
                    target,
                    &["find", &path, "-xdev", "-type", "c", "-printf", "c"],
                )?;
                check_ok(&out)?;
                Ok(Markers {
                    whiteouts: count_printed(&out.stdout),
                    opaque_dirs: 0,
                })
            }
        }
    }

    pub(super) fn target_rename(
        &self,
        target: &Target,
        from: &str,
        to: &str,
    ) -> Result<(), String> {
        match target {
            Target::Local(_) => {
                std::fs::rename(from, to).map_err(|e| format!("renaming {from}: {e}"))
            }
            Target::Ssh { .. } => check_ok(&self.ssh(target, &["mv", "-T", "--", from, to])?),
        }
    }

    /// Runs a command on an ssh target. ssh hands the remote shell one string, so every
    /// word is quoted here.
    pub(super) fn ssh(&self, target: &Target, words: &[&str]) -> Result<Output, String> {
        let Target::Ssh { host, .. } = target else {
            return Err("not an ssh target".into());
        };
        let remote: Vec<String> = words
            .iter()
            .map(|w| backup::rsync::shell_quote(w))
            .collect();
        let mut args: Vec<OsString> = backup::rsync::ssh_options(&self.cfg.backup)
            .into_iter()
            .map(OsString::from)
            .collect();
        args.extend(["--".into(), host.into(), remote.join(" ").into()]);
        self.host
            .ssh(&args, None)
            .map_err(|e| format!("cannot run \"ssh\": {e}"))
    }

    /// Runs rsync with `args` through the host seam.
    pub(super) fn rsync<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output, String> {
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        self.host
            .rsync(&args)
            .map_err(|e| format!("cannot run \"rsync\": {e}"))
    }

    /// A file on the target; `None` when it does not exist.
    pub(super) fn target_read(&self, target: &Target, rel: &str) -> Result<Option<String>, String> {
        let path = target.path_of(rel);
        match target {
            Target::Local(_) => match std::fs::read_to_string(&path) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("cannot read {path}: {e}")),
            },
            Target::Ssh { .. } => {
                let q = backup::rsync::shell_quote(&path);
                let out = self.ssh(
                    target,
                    &[
                        "sh",
                        "-c",
                        &format!("if [ -e {q} ]; then cat {q}; else echo absent >&2; exit 3; fi"),
                    ],
                )?;
                if out.status.code() == Some(3) {
                    return Ok(None);
                }
                check_ok(&out)?;
                Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
            }
        }
    }

    /// Writes a file on the target under a temporary name, then renames it.
    pub(super) fn target_write(
        &self,
        target: &Target,
        rel: &str,
        data: &[u8],
    ) -> Result<(), String> {
        let path = target.path_of(rel);
        match target {
            // Written as rsync writes the tree itself: renamed into place, not fsynced.
            Target::Local(_) => {
                let tmp = format!("{path}.tmp");
                std::fs::write(&tmp, data)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| format!("cannot write {path}: {e}"))
            }
            Target::Ssh { host, .. } => {
                let q = backup::rsync::shell_quote(&path);
                let tq = backup::rsync::shell_quote(&format!("{path}.tmp"));
                let mut args: Vec<OsString> = backup::rsync::ssh_options(&self.cfg.backup)
                    .into_iter()
                    .map(OsString::from)
                    .collect();
                args.extend([
                    "--".into(),
                    host.into(),
                    format!("cat > {tq} && mv -f {tq} {q}").into(),
                ]);
                let out = self
                    .host
                    .ssh(&args, Some(data))
                    .map_err(|e| format!("writing {path} over ssh: {e}"))?;
                check_ok(&out)
            }
        }
    }

    pub(super) fn target_mkdir(&self, target: &Target, rel: &str) -> Result<(), String> {
        let path = target.path_of(rel);
        match target {
            Target::Local(_) => {
                std::fs::create_dir_all(&path).map_err(|e| format!("cannot create {path}: {e}"))
            }
            Target::Ssh { .. } => check_ok(&self.ssh(target, &["mkdir", "-p", "--", &path])?),
        }
    }

    pub(super) fn target_rename_dir(
        &self,
        target: &Target,
        from: &str,
        to: &str,
    ) -> Result<(), String> {
        match target {
            Target::Local(_) => {
                std::fs::rename(from, to).map_err(|e| format!("renaming {from} to {to}: {e}"))
            }
            Target::Ssh { .. } => check_ok(&self.ssh(target, &["mv", "-T", "--", from, to])?),
        }
    }

    pub(super) fn target_exists(&self, target: &Target, rel: &str) -> Result<bool, String> {
        let path = target.path_of(rel);
        match target {
            Target::Local(_) => Ok(Path::new(&path).is_file()),
            Target::Ssh { .. } => {
                let out = self.ssh(target, &["test", "-f", &path])?;
                match out.status.code() {
                    Some(0) => Ok(true),
                    Some(1) => Ok(false),
                    _ => check_ok(&out).map(|()| false),
                }
            }
        }
    }

    pub(super) fn target_sha256(&self, target: &Target, rel: &str) -> Result<String, String> {
        let path = target.path_of(rel);
        match target {
            Target::Local(_) => {
                identity::sha256_file(Path::new(&path)).map_err(|e| format!("reading {path}: {e}"))
            }
            Target::Ssh { .. } => {
                let out = self.ssh(target, &["sha256sum", "--", &path])?;
                check_ok(&out)?;
                Ok(String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string())
            }
        }
    }
}

fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

pub(super) fn check_exit(out: &Output) -> Result<(), String> {
    match classify_exit(out.status.code()) {
        ExitClass::Ok => Ok(()),
        ExitClass::Retry(m) | ExitClass::Fail(m) => Err(format!("{m} ({})", last_line(out))),
    }
}

pub(super) fn check_ok(out: &Output) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else if out.status.code() == Some(255) {
        Err(format!(
            "ssh failed: the target is unreachable or refused the key ({})",
            last_line(out)
        ))
    } else {
        Err(format!("remote command failed: {}", last_line(out)))
    }
}

impl Engine {
    /// Opens the content-addressed archive `rel` (`<dir>/<sha256>.tar.zst`) of image
    /// `what` `name` at the target (fetched into the store first from an ssh target),
    /// checks its content against the hash its name gives, and hands the open file to
    /// `import`; a fetched copy is removed afterwards, whatever happened.
    pub(super) fn with_target_archive<T>(
        &self,
        target: &Target,
        dir: &str,
        rel: &str,
        what: &str,
        name: &str,
        import: impl FnOnce(std::fs::File) -> crate::error::EngineResult<T>,
    ) -> crate::error::EngineResult<T> {
        let fail =
            |m: String| crate::error::EngineError::failed(format!("importing {what} {name}: {m}"));
        let hash = rel
            .strip_prefix(&format!("{dir}/"))
            .and_then(|f| f.strip_suffix(".tar.zst"))
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| fail(format!("{rel:?} is not a {what} archive's name")))?
            .to_string();
        let local = match target {
            Target::Local(_) => std::path::PathBuf::from(target.path_of(rel)),
            Target::Ssh { host, .. } => {
                let tmp = self
                    .store
                    .lxc_dir()
                    .join(format!(".import-{what}-{name}.tar.zst"));
                let args: Vec<OsString> = vec![
                    format!("--timeout={}", self.cfg.backup.timeout.max(1)).into(),
                    "-e".into(),
                    backup::ssh_command(&self.cfg.backup).into(),
                    "--".into(),
                    format!("{host}:{}", target.path_of(rel)).into(),
                    tmp.clone().into(),
                ];
                let out = self.rsync(&args).map_err(fail)?;
                check_exit(&out).map_err(fail)?;
                tmp
            }
        };
        let result = (|| {
            let got = identity::sha256_file(&local)
                .map_err(|e| fail(format!("reading {}: {e}", local.display())))?;
            if got != hash {
                return Err(fail(format!(
                    "{} is damaged: its sha256 is {got}, its name says {hash}",
                    target.path_of(rel)
                )));
            }
            let file = std::fs::File::open(&local)
                .map_err(|e| fail(format!("opening {}: {e}", local.display())))?;
            import(file)
        })();
        if target.is_remote() {
            let _ = std::fs::remove_file(&local);
        }
        result
    }
}
