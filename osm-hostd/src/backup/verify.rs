//! Verification of a copy: rsync exits 0 even when the receiver drops device files (rrsync
//! does, and a non-root receiver drops `trusted.*` xattrs silently), so the overlay
//! markers are counted on both sides independently.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Overlay markers in an upper dir tree.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Markers {
    /// Whiteouts: character devices 0:0.
    pub whiteouts: u64,
    /// Directories with `trusted.overlay.opaque` = `y`.
    pub opaque_dirs: u64,
}

/// Counts the markers under `root`, skipping what backups exclude (the contents of the
/// top-level `.snapshots` and `work`) and never crossing into another file system.
pub fn count_markers(root: &Path) -> io::Result<Markers> {
    let root_dev = fs::symlink_metadata(root)?.dev();
    let mut m = Markers::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let md = fs::symlink_metadata(&path)?;
            let ft = md.file_type();
            if ft.is_char_device() && md.rdev() == 0 {
                m.whiteouts += 1;
            } else if ft.is_dir() {
                if md.dev() != root_dev {
                    continue;
                }
                if is_opaque(&path) {
                    m.opaque_dirs += 1;
                }
                let top_excluded =
                    dir == root && matches!(entry.file_name().as_bytes(), b".snapshots" | b"work");
                if !top_excluded {
                    stack.push(path);
                }
            }
        }
    }
    Ok(m)
}

/// What a copy must keep of one entry: type and permission bits, owners, size and
/// modification time of files, device numbers, and every extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub rdev: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Every entry under `root` as a backup copies it: the top-level `.snapshots` left out,
/// `work/` without its contents, not crossing into another file system.
pub fn tree_entries(root: &Path) -> io::Result<std::collections::BTreeMap<String, Entry>> {
    let root_dev = fs::symlink_metadata(root)?.dev();
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let at_top = dir == root;
            let fname = entry.file_name();
            if at_top
                && (fname.as_bytes() == b".snapshots"
                    || fname.as_bytes().starts_with(b".osm-backup"))
            {
                continue;
            }
            let md = fs::symlink_metadata(&path)?;
            let ft = md.file_type();
            let file = ft.is_file();
            if ft.is_dir()
                && md.dev() == root_dev
                && !(at_top && entry.file_name().as_bytes() == b"work")
            {
                stack.push(path.clone());
            }
            let rel = path
                .strip_prefix(root)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.insert(
                rel,
                Entry {
                    mode: md.mode(),
                    uid: md.uid(),
                    gid: md.gid(),
                    size: if file { md.size() } else { 0 },
                    mtime: if file { md.mtime() } else { 0 },
                    rdev: if ft.is_char_device() || ft.is_block_device() {
                        md.rdev()
                    } else {
                        0
                    },
                    xattrs: all_xattrs(&path),
                },
            );
        }
    }
    Ok(out)
}

/// The markers among [`tree_entries`].
pub fn markers_of(entries: &std::collections::BTreeMap<String, Entry>) -> Markers {
    let mut m = Markers::default();
    for e in entries.values() {
        let kind = e.mode & libc::S_IFMT;
        if kind == libc::S_IFCHR && e.rdev == 0 {
            m.whiteouts += 1;
        } else if kind == libc::S_IFDIR
            && e.xattrs
                .iter()
                .any(|(n, v)| n == "trusted.overlay.opaque" && v == b"y")
        {
            m.opaque_dirs += 1;
        }
    }
    m
}

/// Entries that differ between two trees (missing, extra, or with other metadata), up
/// to `limit` of them, each as `path: what`.
pub fn compare_trees(
    want: &std::collections::BTreeMap<String, Entry>,
    got: &std::collections::BTreeMap<String, Entry>,
    limit: usize,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (path, w) in want {
        match got.get(path) {
            None => diffs.push(format!("{path}: missing")),
            Some(g) if g != w => diffs.push(format!("{path}: {}", what_differs(w, g))),
            _ => {}
        }
        if diffs.len() >= limit {
            return diffs;
        }
    }
    for path in got.keys().filter(|p| !want.contains_key(*p)) {
        diffs.push(format!("{path}: not in the container"));
        if diffs.len() >= limit {
            break;
        }
    }
    diffs
}

fn what_differs(w: &Entry, g: &Entry) -> String {
    let mut parts = Vec::new();
    if w.mode != g.mode {
        parts.push(format!("mode {:o} != {:o}", g.mode, w.mode));
    }
    if (w.uid, w.gid) != (g.uid, g.gid) {
        parts.push(format!("owner {}:{} != {}:{}", g.uid, g.gid, w.uid, w.gid));
    }
    if (w.size, w.mtime) != (g.size, g.mtime) {
        parts.push("size or mtime".to_string());
    }
    if w.rdev != g.rdev {
        parts.push("device".to_string());
    }
    if w.xattrs != g.xattrs {
        parts.push("xattrs".to_string());
    }
    parts.join(", ")
}

/// All extended attributes of `path` itself, sorted by name.
pub fn all_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(p) = CString::new(path.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; 1024];
    // SAFETY: `p` is a valid NUL-terminated string and `buf` is writable for its length.
    let mut len = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) {
        buf = vec![0u8; 65536];
        // SAFETY: as above, with the larger buffer.
        len = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    }
    if len <= 0 {
        return Vec::new();
    }
    let mut out: Vec<(String, Vec<u8>)> = buf[..len as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| {
            let name = String::from_utf8_lossy(n).into_owned();
            let value = get_xattr(path, &name).unwrap_or_default();
            (name, value)
        })
        .collect();
    out.sort();
    out
}

/// Whether a directory carries `trusted.overlay.opaque="y"`.
pub fn is_opaque(path: &Path) -> bool {
    get_xattr(path, "trusted.overlay.opaque").as_deref() == Some(b"y".as_slice())
}

/// One extended attribute of `path` itself (not following a symlink).
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 65536];
    // SAFETY: both names are valid NUL-terminated strings and `buf` is writable for
    // `buf.len()` bytes for the duration of the call.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

/// Parses the output of `find DIR -type c -printf c` (one byte per device file) run on a
/// remote target: the count of character devices.
pub fn count_printed(out: &[u8]) -> u64 {
    out.iter().filter(|b| **b == b'c').count() as u64
}

/// Lines of an `rsync --dry-run --itemize-changes` comparison that show a difference
/// (content, owner, group, mode, ACL, xattr, a missing or extra entry).
pub fn differences(itemized: &str) -> Vec<String> {
    itemized
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_skip_excluded_top_dirs() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("rootfs-layer/etc")).unwrap();
        fs::create_dir_all(r.join("work/work")).unwrap();
        fs::create_dir_all(r.join(".snapshots/1")).unwrap();
        let m = count_markers(r).unwrap();
        assert_eq!(m, Markers::default());
        // Making whiteouts needs root (mknod): the root integration test covers them.
        if nix::unistd::geteuid().is_root() {
            use nix::sys::stat::{mknod, Mode, SFlag};
            mknod(
                &r.join("rootfs-layer/etc/gone"),
                SFlag::S_IFCHR,
                Mode::empty(),
                0,
            )
            .unwrap();
            mknod(&r.join("work/work/#1"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
            assert_eq!(count_markers(r).unwrap().whiteouts, 1);
        }
    }

    #[test]
    fn tree_comparison_names_what_differs() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        for r in [&a, &b] {
            fs::create_dir_all(r.join("rootfs-layer/etc")).unwrap();
            fs::create_dir_all(r.join("work/work")).unwrap();
            fs::create_dir_all(r.join(".snapshots/1")).unwrap();
            fs::write(r.join("rootfs-layer/etc/f"), "x").unwrap();
        }
        fs::write(a.join("work/work/junk"), "j").unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for r in [&a, &b] {
            fs::File::options()
                .write(true)
                .open(r.join("rootfs-layer/etc/f"))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        let (ea, eb) = (tree_entries(&a).unwrap(), tree_entries(&b).unwrap());
        assert!(!ea.contains_key(".snapshots") && ea.contains_key("work"));
        assert!(!ea.contains_key("work/work"));
        assert!(
            compare_trees(&ea, &eb, 5).is_empty(),
            "{:?}",
            compare_trees(&ea, &eb, 5)
        );
        fs::write(b.join("rootfs-layer/etc/extra"), "e").unwrap();
        fs::remove_file(b.join("rootfs-layer/etc/f")).unwrap();
        let diffs = compare_trees(&ea, &tree_entries(&b).unwrap(), 5);
        assert!(
            diffs.iter().any(|d| d == "rootfs-layer/etc/f: missing"),
            "{diffs:?}"
        );
        assert!(
            diffs
                .iter()
                .any(|d| d.starts_with("rootfs-layer/etc/extra")),
            "{diffs:?}"
        );
        assert_eq!(markers_of(&ea), Markers::default());
    }

    #[test]
    fn printed_counts_and_differences() {
        assert_eq!(count_printed(b"ccc"), 3);
        assert_eq!(count_printed(b""), 0);
        assert_eq!(differences("\n"), Vec::<String>::new());
        assert_eq!(differences(".f...p..... a\n").len(), 1);
    }
}
