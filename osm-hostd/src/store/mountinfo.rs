//! The calling thread's mount table (`/proc/thread-self/mountinfo`), parsed.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The calling thread's mount table: a thread that unshared its mount namespace (as the
/// root tests do) sees different mounts from the process's main thread (`/proc/self`).
pub(super) const MOUNTINFO: &str = "/proc/thread-self/mountinfo";

/// One line of `/proc/self/mountinfo`, the fields used here.
#[derive(Debug, Clone, PartialEq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,nodev,relatime`).
    pub options: String,
    pub fstype: String,
    pub source: String,
}

/// Reads the calling thread's mount table.
pub fn read_mountinfo() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(MOUNTINFO)?))
}

/// Parses mountinfo text: `id parent maj:min root mount_point options [optional...] -
/// fstype source super_options`, with octal escapes (`\040`) in paths.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < 5 || fields.len() < dash + 3 {
            continue;
        }
        entries.push(MountEntry {
            mount_point: PathBuf::from(OsStr::from_bytes(&unescape(fields[4]))),
            options: fields.get(5).copied().unwrap_or_default().to_string(),
            fstype: fields[dash + 1].to_string(),
            source: String::from_utf8_lossy(&unescape(fields[dash + 2])).into_owned(),
        });
    }
    entries
}

fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn mountinfo_lines_parse_with_escapes_and_optional_fields() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
90 22 0:50 / /srv/osm\\040lxc rw,relatime shared:40 master:2 - btrfs /dev/loop3 rw,space_cache=v2,subvolid=5,subvol=/\n\
91 22 0:51 / /tmp rw - tmpfs tmpfs rw\n\
garbage line\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, Path::new("/"));
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[1].mount_point, Path::new("/srv/osm lxc"));
        assert_eq!(m[1].fstype, "btrfs");
        assert_eq!(m[1].source, "/dev/loop3");
        assert_eq!(m[2].source, "tmpfs");
    }

    #[test]
    fn unescape_leaves_other_backslashes() {
        assert_eq!(unescape("a\\134b\\011c"), b"a\\b\tc");
        assert_eq!(unescape("a\\9"), b"a\\9");
        assert_eq!(unescape("end\\"), b"end\\");
    }
}
