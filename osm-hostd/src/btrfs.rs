//! Btrfs subvolume operations through libbtrfsutil (the `libbtrfsutil` crate, 0.7.1, over
//! Debian 12's C library 1.2): no `btrfs` process per call.
//!
//! Every function takes a path and reports failures as [`BtrfsError`] carrying the
//! operation and the path. Create, snapshot (read-only or not), read-only flag get/set,
//! "is a subvolume", the walk over nested subvolumes and the recursive delete are the
//! library's calls. No Btrfs ioctl is issued here any more; what is not libbtrfsutil is:
//! - `statfs(2)` in [`is_btrfs`] (the library has no "is this Btrfs" call of its own);
//! - `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV` before a
//!   recursive delete: libbtrfsutil resolves nested subvolumes with plain `openat`, so
//!   every nested subvolume is checked first to lie below the deleted one, through no
//!   symlink and no mount, and the delete is refused otherwise (nothing deleted).

use libbtrfsutil::{CreateSnapshotOptions, DeleteSubvolumeOptions, ErrorKind, IterateSubvolume};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct BtrfsError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub type Result<T> = std::result::Result<T, BtrfsError>;

/// The inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
pub const SUBVOLUME_ROOT_INO: u64 = 256;

/// True if `path` is on a Btrfs filesystem.
pub fn is_btrfs(path: &Path) -> Result<bool> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| err("statfs", path, e.into()))?;
    Ok(st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

/// True if `path` is the root directory of a Btrfs subvolume.
pub fn is_subvolume(path: &Path) -> Result<bool> {
    let path_c = c_path("stat", path)?;
    libbtrfsutil::is_subvolume(path_c).map_err(|e| lib_err("stat", path, e))
}

/// Creates a new, empty subvolume at `path` (its parent must exist; `path` must not).
pub fn create_subvolume(path: &Path) -> Result<()> {
    const OP: &str = "create subvolume";
    check_name(OP, path)?;
    libbtrfsutil::create_subvolume(c_path(OP, path)?).map_err(|e| lib_err(OP, path, e))
}

/// Snapshots subvolume `src` to the new path `dst`, read-only if asked.
///
/// A read-only snapshot of unsynced data makes the kernel flush it first.
pub fn snapshot(src: &Path, dst: &Path, readonly: bool) -> Result<()> {
    const OP: &str = "snapshot";
    if !is_subvolume(src)? {
        return Err(not_a_subvolume(OP, src));
    }
    check_name(OP, dst)?;
    CreateSnapshotOptions::new()
        .readonly(readonly)
        .create(c_path(OP, src)?, c_path(OP, dst)?)
        .map_err(|e| lib_err(OP, dst, e))
}

/// Makes the subvolume at `path` read-only or writable. Idempotent.
pub fn set_readonly(path: &Path, readonly: bool) -> Result<()> {
    const OP: &str = "set read-only flag of";
    if !is_subvolume(path)? {
        return Err(not_a_subvolume(OP, path));
    }
    libbtrfsutil::set_subvolume_read_only(c_path(OP, path)?, readonly)
        .map_err(|e| lib_err(OP, path, e))
}

/// True if the subvolume containing `path` is read-only.
pub fn is_readonly(path: &Path) -> Result<bool> {
    const OP: &str = "get flags of";
    libbtrfsutil::subvolume_read_only(c_path(OP, path)?).map_err(|e| lib_err(OP, path, e))
}

/// Deletes the subvolume at `path` and every subvolume nested below it, bottom-up.
///
/// Read-only subvolumes are deleted too (this needs CAP_SYS_ADMIN); a read-only
/// subvolume that holds nested ones is made writable first so they can be unlinked.
/// A path that is not a subvolume is refused, so a plain directory is never removed; so
/// are a symlink, and a tree where a nested subvolume is reached through a symlink or
/// across a mount (then nothing is deleted).
pub fn delete_subvolume_recursive(path: &Path) -> Result<()> {
    const OP: &str = "delete subvolume";
    let (parent, name) = split_parent(OP, path)?;
    let parent_dir = open_dir(OP, parent)?;
    // The subvolume itself, opened from its parent without following a symlink.
    let dir = open_beneath(&parent_dir, Path::new(name)).map_err(|e| err(OP, path, e))?;
    let meta = dir.metadata().map_err(|e| err(OP, path, e))?;
    if meta.ino() != SUBVOLUME_ROOT_INO || !is_btrfs(path)? {
        return Err(not_a_subvolume(OP, path));
    }
    let nested = walk(OP, path)?;
    // Every nested subvolume must be reachable below `dir` the way the kernel names it:
    // a symlink or a mount in between would send libbtrfsutil's deletion elsewhere.
    for sub in &nested {
        let child_path = path.join(&sub.rel);
        let child = open_beneath(&dir, &sub.rel).map_err(|e| err(OP, &child_path, e))?;
        let ino = child.metadata().map_err(|e| err(OP, &child_path, e))?.ino();
        if ino != SUBVOLUME_ROOT_INO {
            return Err(not_a_subvolume(OP, &child_path));
        }
    }
    // Unlinking a child modifies its parent, which a read-only one refuses.
    let parents: HashSet<u64> = nested.iter().map(|s| s.parent_id).collect();
    if !nested.is_empty() && is_readonly(path)? {
        set_readonly(path, false).map_err(|e| err(OP, path, e.source))?;
    }
    for sub in nested.iter().filter(|s| parents.contains(&s.id)) {
        let p = path.join(&sub.rel);
        if is_readonly(&p)? {
            set_readonly(&p, false).map_err(|e| err(OP, &p, e.source))?;
        }
    }
    DeleteSubvolumeOptions::new()
        .recursive(true)
        .delete(c_path(OP, path)?)
        .map_err(|e| lib_err(OP, path, e))
}

/// The subvolumes directly below the subvolume at `path`, as paths under `path`.
///
/// Only direct children are listed; call again on each to walk deeper.
pub fn nested_subvolumes(path: &Path) -> Result<Vec<PathBuf>> {
    const OP: &str = "list subvolumes below";
    if !is_subvolume(path)? {
        return Err(not_a_subvolume(OP, path));
    }
    let id = libbtrfsutil::subvolume_id(c_path(OP, path)?).map_err(|e| lib_err(OP, path, e))?;
    Ok(walk(OP, path)?
        .into_iter()
        .filter(|s| s.parent_id == id)
        .map(|s| path.join(s.rel))
        .collect())
}

/// One subvolume below another, as libbtrfsutil's iterator reports it.
struct Nested {
    /// Relative to the subvolume walked.
    rel: PathBuf,
    id: u64,
    parent_id: u64,
}

/// Every subvolume below the subvolume at `path`, at any depth, parents before children.
fn walk(op: &'static str, path: &Path) -> Result<Vec<Nested>> {
    let iter = IterateSubvolume::new(c_path(op, path)?)
        .iter_with_info()
        .map_err(|e| lib_err(op, path, e))?;
    let mut found = Vec::new();
    for item in iter {
        let (rel, info) = item.map_err(|e| lib_err(op, path, e))?;
        found.push(Nested {
            rel,
            id: info.id(),
            parent_id: info.parent_id().map_or(0, |p| p.get()),
        });
    }
    Ok(found)
}

/// Opens directory `rel` below `dir` without following symlinks, leaving `dir`, or
/// crossing a mount point (subvolume boundaries are not mount points).
fn open_beneath(dir: &File, rel: &Path) -> io::Result<File> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd = nix::fcntl::openat2(dir.as_raw_fd(), rel, how)?;
    // SAFETY: openat2 just returned `fd` as a new open descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn open_dir(op: &'static str, path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| err(op, path, e))
}

/// Splits `path` into the directory holding it and the entry name in it.
fn split_parent<'a>(op: &'static str, path: &'a Path) -> Result<(&'a Path, &'a OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if parent.as_os_str().is_empty() => Ok((Path::new("."), name)),
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(err(
            op,
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path must end in a file name"),
        )),
    }
}

/// Checks that `path` ends in a name a new subvolume can have.
fn check_name(op: &'static str, path: &Path) -> Result<()> {
    let (_, name) = split_parent(op, path)?;
    valid_name(name).map_err(|e| err(op, path, e))
}

fn valid_name(name: &OsStr) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.len() > 255 {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    if bytes.is_empty() || bytes.contains(&0) || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid subvolume name",
        ));
    }
    Ok(())
}

/// `path` as the library takes it; the crate panics on an inner NUL, so refuse it here.
fn c_path<'a>(op: &'static str, path: &'a Path) -> Result<&'a Path> {
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(err(
            op,
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        ));
    }
    Ok(path)
}

/// A libbtrfsutil failure as an I/O error: the errno when the library set one (so callers
/// can match `AlreadyExists`, `EROFS`...), else the library's own message.
fn lib_err(op: &'static str, path: &Path, e: libbtrfsutil::Error) -> BtrfsError {
    match e.kind() {
        ErrorKind::NOT_SUBVOLUME => not_a_subvolume(op, path),
        ErrorKind::NOT_BTRFS => err(
            op,
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not on a Btrfs filesystem"),
        ),
        _ if e.errno() != 0 => err(op, path, e.os_error()),
        _ => err(op, path, io::Error::other(e.to_string())),
    }
}

fn err(op: &'static str, path: &Path, source: io::Error) -> BtrfsError {
    BtrfsError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn not_a_subvolume(op: &'static str, path: &Path) -> BtrfsError {
    err(
        op,
        path,
        io::Error::new(io::ErrorKind::InvalidInput, "not a Btrfs subvolume"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_parent_and_name() {
        let (p, n) = split_parent("t", Path::new("/srv/osm-lxc/lxc/containers/c1")).unwrap();
        assert_eq!(
            (p, n),
            (Path::new("/srv/osm-lxc/lxc/containers"), OsStr::new("c1"))
        );
        let (p, n) = split_parent("t", Path::new("c1")).unwrap();
        assert_eq!((p, n), (Path::new("."), OsStr::new("c1")));
        let (p, n) = split_parent("t", Path::new("/a/b/")).unwrap();
        assert_eq!((p, n), (Path::new("/a"), OsStr::new("b")));
        for bad in ["/", "/a/..", ".."] {
            assert!(split_parent("t", Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn subvolume_names_are_checked() {
        valid_name(OsStr::new("snapshot")).unwrap();
        valid_name(OsStr::new(&"x".repeat(255))).unwrap();
        assert!(valid_name(OsStr::new(&"x".repeat(256))).is_err());
        assert!(valid_name(OsStr::new("")).is_err());
        assert!(valid_name(OsStr::from_bytes(b"a\0b")).is_err());
        let e = create_subvolume(Path::new("/tmp/a\0b")).unwrap_err();
        assert!(e.to_string().contains("invalid subvolume name"), "{e}");
        let e = is_subvolume(Path::new("/tmp/a\0b/c")).unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
    }

    #[test]
    fn errors_name_operation_and_path() {
        let e = not_a_subvolume("delete subvolume", Path::new("/srv/x"));
        assert_eq!(
            e.to_string(),
            "delete subvolume /srv/x: not a Btrfs subvolume"
        );
    }
}
