//! What keeps local users away from customers' files: the store root, `lxc/`,
//! `containers/` and every container directory, and a local backup target, are owned
//! by root and closed to others (0700); the store is mounted `nosuid,nodev`, so a setuid
//! file or a device node that a container's root planted means nothing on the host.
//! Everything here is idempotent and runs at every daemon start, so existing stores are
//! fixed too.

use crate::store::{read_mountinfo, Store, StoreError};
use nix::mount::MsFlags;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Makes `dir` root-owned and closed to group and others, keeping the owner's bits.
/// Returns whether anything changed. A symlink or a non-directory is left alone.
pub fn private_dir(dir: &Path) -> io::Result<bool> {
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Ok(false);
    }
    let mut changed = false;
    // Only root can give a directory to root (the daemon always is; unit tests may not be).
    if (meta.uid() != 0 || meta.gid() != 0) && nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(dir, Some(0), Some(0))?;
        changed = true;
    }
    let mode = meta.mode() & 0o7777;
    // With a POSIX ACL the group bits are its mask: the search-only entries that let
    // unprivileged containers' roots reach the lxcpath (idmap) need its x to stay.
    let keep = if has_access_acl(dir) { 0o010 } else { 0 };
    let want = (mode & !0o077) | (mode & keep) | 0o700;
    if mode != want {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(want))?;
        changed = true;
    }
    Ok(changed)
}

/// Whether `dir` carries an access ACL beyond its mode bits.
fn has_access_acl(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: valid C strings; a null buffer of size 0 only asks for the value's length.
    let len = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    len > 0
}

/// Closes the store root, `lxc/`, `containers/` and each container directory.
pub fn secure_store(store: &Store) -> Result<(), StoreError> {
    let containers = store.containers_dir();
    let mut dirs: Vec<PathBuf> = vec![
        store.root().to_path_buf(),
        store.lxc_dir(),
        containers.clone(),
    ];
    let entries = std::fs::read_dir(&containers).map_err(|e| StoreError::Io {
        action: "read directory",
        path: containers.clone(),
        source: e,
    })?;
    dirs.extend(entries.flatten().map(|e| e.path()));
    for dir in dirs {
        match private_dir(&dir) {
            Ok(true) => tracing::info!(dir = %dir.display(), "closed to other users (0700, root)"),
            Ok(false) => {}
            Err(e) => {
                return Err(StoreError::Io {
                    action: "make private (0700, root)",
                    path: dir,
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// The options of the mount that holds `path` (its mount point and per-mount options).
fn covering_mount(path: &Path) -> io::Result<(PathBuf, String)> {
    let canon = std::fs::canonicalize(path)?;
    let mounts = read_mountinfo()?;
    // Later entries are mounted on top of earlier ones at the same point.
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| canon.starts_with(&m.mount_point))
        .max_by_key(|(i, m)| (m.mount_point.components().count(), *i))
        .map(|(_, m)| (m.mount_point.clone(), m.options.clone()))
        .ok_or_else(|| io::Error::other(format!("no mount holds {}", canon.display())))
}

fn has_options(options: &str, wanted: &[&str]) -> bool {
    wanted.iter().all(|w| options.split(',').any(|o| o == *w))
}

/// Makes the mount at `root` carry `nosuid,nodev`. A store that is a mount of its own
/// (the loop image, a dedicated Btrfs) is remounted with them; a store that is a
/// directory or subvolume inside a larger mount is first bind-mounted onto itself, so
/// only the store changes, not the filesystem around it. Returns whether it changed.
pub fn ensure_nosuid_nodev(root: &Path) -> io::Result<bool> {
    let (point, options) = covering_mount(root)?;
    if has_options(&options, &["nosuid", "nodev"]) {
        return Ok(false);
    }
    let root = std::fs::canonicalize(root)?;
    if point != root {
        nix::mount::mount(
            Some(&root),
            &root,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            io::Error::other(format!("bind-mounting {} onto itself: {e}", root.display()))
        })?;
    }
    // A bind remount sets the per-mount flags only; the rest of them are carried over
    // (atime flags are kept by the kernel when none is given).
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if has_options(&options, &["ro"]) {
        flags |= MsFlags::MS_RDONLY;
    }
    if has_options(&options, &["noexec"]) {
        flags |= MsFlags::MS_NOEXEC;
    }
    nix::mount::mount(None::<&str>, &root, None::<&str>, flags, None::<&str>).map_err(|e| {
        io::Error::other(format!("remounting {} nosuid,nodev: {e}", root.display()))
    })?;
    tracing::info!(store_root = %root.display(), bind = point != root, "store mounted nosuid,nodev");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_closes_group_and_others_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("c");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        if nix::unistd::geteuid().is_root() {
            assert!(private_dir(&d).unwrap());
            let mode = std::fs::metadata(&d).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o700);
            assert!(!private_dir(&d).unwrap(), "a second run changes nothing");
        }
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        assert!(!private_dir(&f).unwrap(), "files are left alone");
    }

    #[test]
    fn options_are_matched_whole() {
        assert!(has_options(
            "rw,nosuid,nodev,relatime",
            &["nosuid", "nodev"]
        ));
        assert!(!has_options("rw,nosuid,relatime", &["nosuid", "nodev"]));
        assert!(!has_options("rw,nodevx", &["nodev"]));
    }
}
