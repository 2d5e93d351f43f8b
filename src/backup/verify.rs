//! Verification of a copy (spec §4.2): exit code 0 proves nothing when a receiver drops
//! device files, so the overlay markers are counted on both sides independently.

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

/// Whether a directory carries `trusted.overlay.opaque="y"`.
pub fn is_opaque(path: &Path) -> bool {
    get_xattr(path, "trusted.overlay.opaque").as_deref() == Some(b"y".as_slice())
}

/// One extended attribute of `path` itself (not following a symlink).
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
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
    fn printed_counts_and_differences() {
        assert_eq!(count_printed(b"ccc"), 3);
        assert_eq!(count_printed(b""), 0);
        assert_eq!(differences("\n"), Vec::<String>::new());
        assert_eq!(differences(".f...p..... a\n").len(), 1);
    }
}
