//! Unprivileged containers: each one's 65536-id range, allocated from root's ranges in
//! `/etc/subuid` and `/etc/subgid`, and the root filesystem the daemon assembles for it:
//! the shared read-only base and layers behind idmapped mounts (unshifted on disk), an
//! upper layer stored shifted into the range, merged by overlayfs and handed to LXC as a
//! `dir:` rootfs (LXC 5.0 refuses `idmap=` with an overlay rootfs).
//!
//! This file holds the id ranges (allocation from the subid files); `mount.rs` builds
//! the idmapped, overlaid root filesystem.

mod mount;

pub use mount::{is_mount_point, probe, RootfsMount};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Ids per container: a full 16-bit range, as a Debian userland expects.
pub const RANGE: u32 = 65536;
/// Where the pool added to `/etc/subuid` and `/etc/subgid` starts when root has none.
pub const POOL_START: u32 = 1_048_576;
/// How many containers the pool added for root holds.
pub const POOL_CONTAINERS: u32 = 1000;

/// A container's id range, recorded as `[idmap]` in `container.toml`: container uid 0
/// is host uid `uid`, and so on for `count` ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    pub uid: u32,
    pub gid: u32,
    pub count: u32,
}

impl IdMap {
    fn overlaps(&self, start: u32, count: u32) -> bool {
        let hit = |a: u32| {
            u64::from(a) < u64::from(start) + u64::from(count)
                && u64::from(start) < u64::from(a) + u64::from(self.count)
        };
        hit(self.uid) || hit(self.gid)
    }
}

/// One `name:start:count` line of a subordinate id file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubRange {
    start: u32,
    count: u32,
}

fn parse_subids(text: &str, owner: &str) -> (Vec<SubRange>, Vec<SubRange>) {
    let (mut mine, mut all) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let mut f = line.trim().split(':');
        let (Some(name), Some(start), Some(count)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Ok(start), Ok(count)) = (start.parse::<u32>(), count.parse::<u32>()) else {
            continue;
        };
        let r = SubRange { start, count };
        all.push(r);
        if name == owner || name == "0" {
            mine.push(r);
        }
    }
    (mine, all)
}

/// The subordinate id files and what the daemon may take from them.
#[derive(Debug, Clone)]
pub struct SubIds {
    pub subuid: PathBuf,
    pub subgid: PathBuf,
}

impl SubIds {
    /// Adds a pool for root (`root:<start>:<1000 × 65536>`) to each file that has no
    /// range for root, after every range already there.
    pub fn ensure_pool(&self) -> Result<(), String> {
        for path in [&self.subuid, &self.subgid] {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            };
            let (mine, all) = parse_subids(&text, "root");
            if !mine.is_empty() {
                continue;
            }
            let end = all
                .iter()
                .map(|r| u64::from(r.start) + u64::from(r.count))
                .max()
                .unwrap_or(0);
            let start =
                end.max(u64::from(POOL_START)).div_ceil(u64::from(RANGE)) * u64::from(RANGE);
            let count = u64::from(POOL_CONTAINERS) * u64::from(RANGE);
            if start + count > u64::from(u32::MAX) {
                return Err(format!(
                    "{} has no room for a pool of subordinate ids for root; add a line like root:{POOL_START}:{count}",
                    path.display()
                ));
            }
            let mut new = text.clone();
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str(&format!("root:{start}:{count}\n"));
            crate::fsutil::write_atomic(path, new.as_bytes(), 0o644)
                .map_err(|e| format!("cannot add a pool for root to {}: {e}", path.display()))?;
            tracing::info!(file = %path.display(), start, count, "added subordinate ids for root's containers");
        }
        Ok(())
    }

    /// The lowest free block of [`RANGE`] ids inside root's ranges in both files
    /// (the same number for uids and gids) that overlaps no range in `used`.
    pub fn allocate(&self, used: &[IdMap]) -> Result<IdMap, String> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let (uids, _) = parse_subids(&read(&self.subuid)?, "root");
        let (gids, _) = parse_subids(&read(&self.subgid)?, "root");
        allocate_in(&uids, &gids, used).ok_or_else(|| {
            format!(
                "subordinate ids exhausted: root's ranges in {} and {} have no free block of {RANGE} ids \
                 for another container ({} in use); add a range for root to both files, e.g. root:{}:{}",
                self.subuid.display(),
                self.subgid.display(),
                used.len(),
                suggest_start(&uids, &gids),
                u64::from(POOL_CONTAINERS) * u64::from(RANGE)
            )
        })
    }
}

fn suggest_start(uids: &[SubRange], gids: &[SubRange]) -> u64 {
    let end = uids
        .iter()
        .chain(gids)
        .map(|r| u64::from(r.start) + u64::from(r.count))
        .max()
        .unwrap_or(0);
    end.max(u64::from(POOL_START)).div_ceil(u64::from(RANGE)) * u64::from(RANGE)
}

fn allocate_in(uids: &[SubRange], gids: &[SubRange], used: &[IdMap]) -> Option<IdMap> {
    let inside = |ranges: &[SubRange], s: u64| {
        ranges.iter().any(|r| {
            u64::from(r.start) <= s
                && s + u64::from(RANGE) <= u64::from(r.start) + u64::from(r.count)
        })
    };
    let mut candidates: Vec<u64> = uids
        .iter()
        .map(|r| u64::from(r.start).div_ceil(u64::from(RANGE)) * u64::from(RANGE))
        .collect();
    candidates.sort_unstable();
    for first in candidates {
        let mut s = first;
        while inside(uids, s) {
            let taken = used.iter().any(|m| m.overlaps(s as u32, RANGE));
            if !taken && inside(gids, s) {
                return Some(IdMap {
                    uid: s as u32,
                    gid: s as u32,
                    count: RANGE,
                });
            }
            s += u64::from(RANGE);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(uid: &str, gid: &str) -> (tempfile::TempDir, SubIds) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("subuid"), uid).unwrap();
        std::fs::write(d.path().join("subgid"), gid).unwrap();
        let s = SubIds {
            subuid: d.path().join("subuid"),
            subgid: d.path().join("subgid"),
        };
        (d, s)
    }

    #[test]
    fn a_pool_is_added_after_existing_ranges_only_when_root_has_none() {
        let (_d, s) = files("debian:100000:65536\n", "root:1000000:65536\n");
        s.ensure_pool().unwrap();
        let uid = std::fs::read_to_string(&s.subuid).unwrap();
        assert_eq!(uid, "debian:100000:65536\nroot:1048576:65536000\n");
        let gid = std::fs::read_to_string(&s.subgid).unwrap();
        assert_eq!(
            gid, "root:1000000:65536\n",
            "root's own range is kept as it is"
        );
        let (_d, s) = files("x:2000000:100\n", "");
        s.ensure_pool().unwrap();
        let uid = std::fs::read_to_string(&s.subuid).unwrap();
        assert!(uid.ends_with("root:2031616:65536000\n"), "{uid}");
    }

    #[test]
    fn ranges_never_overlap_and_exhaustion_is_a_clear_error() {
        let (_d, s) = files("root:100000:196608\n", "root:100000:196608\n");
        let a = s.allocate(&[]).unwrap();
        assert_eq!((a.uid, a.gid, a.count), (131072, 131072, RANGE));
        let b = s.allocate(&[a]).unwrap();
        assert_eq!(b.uid, 196608);
        let err = s.allocate(&[a, b]).unwrap_err();
        assert!(err.contains("subordinate ids exhausted"), "{err}");
        assert!(err.contains("root:"), "says what to add: {err}");
        // A block must be root's in both files.
        let (_d, s) = files("root:131072:131072\n", "root:196608:65536\n");
        assert_eq!(s.allocate(&[]).unwrap().uid, 196608);
        // An odd-sized neighbour overlapping a block makes it taken.
        let odd = IdMap {
            uid: 200000,
            gid: 200000,
            count: 10,
        };
        assert!(s.allocate(&[odd]).is_err());
    }
}
