//! Carrying out a rebase's plan on the upper (removing, merging dpkg's status, writing
//! `.osm-new` copies, shifted into the container's range) and dropping stale overlay
//! origins.

use super::{Conflict, Rule, Stack};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Copied-up entries record a file handle of their lower origin (for inode numbers);
/// after a rebase it would name a file of the old lower.
const ORIGIN_XATTR: &str = "trusted.overlay.origin";

/// Removes every [`ORIGIN_XATTR`] below `upper` (the entries stay, now plain files of
/// the upper); returns how many there were.
pub fn strip_origins(upper: &Path) -> io::Result<u64> {
    let mut n = 0;
    let mut stack = vec![upper.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            let c = crate::shift::cpath(&p);
            if crate::shift::get_xattr(&c, ORIGIN_XATTR).is_some() {
                let name = std::ffi::CString::new(ORIGIN_XATTR).expect("static name");
                // SAFETY: valid C strings.
                if unsafe { libc::lremovexattr(c.as_ptr(), name.as_ptr()) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                n += 1;
            }
            if fs::symlink_metadata(&p)?.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(n)
}
/// Applies `conflicts` (from [`plan`]) to `upper` over `old`/`new`; `shift` is the
/// (uid, gid) offset of the container's id range (0, 0 for a privileged one).
pub fn apply(
    upper: &Path,
    old: &Stack,
    new: &Stack,
    conflicts: &[Conflict],
    shift: (u32, u32),
) -> io::Result<()> {
    for c in conflicts {
        let rel = PathBuf::from(c.path.trim_start_matches('/'));
        let full = upper.join(&rel);
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", c.path));
        match c.rule {
            Rule::NewLower => remove_entry(&full).map_err(ctx)?,
            Rule::MergedStatus => {
                let read = |p: Option<PathBuf>| {
                    p.and_then(|p| fs::read_to_string(p).ok())
                        .unwrap_or_default()
                };
                let ours = fs::read_to_string(&full).map_err(ctx)?;
                let merged = merge_status(&read(old.lookup(&rel)), &read(new.lookup(&rel)), &ours);
                // Written in place: the file keeps the container's owner and mode.
                fs::write(&full, merged).map_err(ctx)?;
            }
            Rule::KeepWithOsmNew => {
                if let Some(src) = new.lookup(&rel) {
                    let mut name = full.as_os_str().to_owned();
                    name.push(".osm-new");
                    copy_entry(&src, Path::new(&name), shift).map_err(ctx)?;
                }
            }
            Rule::Keep => {}
        }
    }
    Ok(())
}

fn remove_entry(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies a regular file or symlink of a lower to `dest` in the upper, owned as in the
/// lower plus the container's id offset.
fn copy_entry(src: &Path, dest: &Path, shift: (u32, u32)) -> io::Result<()> {
    let md = fs::symlink_metadata(src)?;
    remove_entry(dest)?;
    if md.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dest)?;
    } else if md.is_file() {
        fs::copy(src, dest)?;
        fs::set_permissions(dest, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    } else {
        return Ok(());
    }
    std::os::unix::fs::lchown(
        dest,
        Some(md.uid().saturating_add(shift.0)),
        Some(md.gid().saturating_add(shift.1)),
    )
}

/// dpkg's status after a rebase: the new lower's, plus the stanzas of packages the
/// container installed itself (in its own status, in neither lower's).
pub fn merge_status(old: &str, new: &str, ours: &str) -> String {
    fn stanzas(text: &str) -> Vec<(String, &str)> {
        text.split("\n\n")
            .map(|s| s.trim_matches('\n'))
            .filter(|s| !s.is_empty())
            .map(|s| {
                let field = |f: &str| {
                    s.lines()
                        .find_map(|l| l.strip_prefix(f))
                        .map(str::trim)
                        .unwrap_or("")
                };
                (
                    format!("{}:{}", field("Package:"), field("Architecture:")),
                    s,
                )
            })
            .collect()
    }
    let known: HashSet<String> = stanzas(old)
        .into_iter()
        .chain(stanzas(new))
        .map(|(k, _)| k)
        .collect();
    let mut out = String::new();
    for (_, s) in stanzas(new) {
        out.push_str(s);
        out.push_str("\n\n");
    }
    for (k, s) in stanzas(ours) {
        if !known.contains(&k) {
            out.push_str(s);
            out.push_str("\n\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keeps_the_packages_the_container_installed() {
        let old = "Package: a\nArchitecture: amd64\nVersion: 1\n\nPackage: b\nArchitecture: all\nVersion: 1\n";
        let new = "Package: a\nArchitecture: amd64\nVersion: 2\n\nPackage: b\nArchitecture: all\nVersion: 1\n\nPackage: n\nArchitecture: all\nVersion: 1\n";
        let ours = "Package: a\nArchitecture: amd64\nVersion: 1\n\nPackage: b\nArchitecture: all\nVersion: 1\n\nPackage: mine\nArchitecture: all\nVersion: 3\n";
        let merged = merge_status(old, new, ours);
        assert!(merged.contains("Package: a\nArchitecture: amd64\nVersion: 2\n"));
        assert!(merged.contains("Package: n\n"));
        assert!(merged.contains("Package: mine\nArchitecture: all\nVersion: 3\n"));
        assert_eq!(merged.matches("Package: a\n").count(), 1);
    }
}
