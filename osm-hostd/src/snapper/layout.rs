//! A container's `.snapshots` directory: reading the valid snapshots as snapper does
//! (all-digit name, a valid `info.xml` whose num matches, a `snapshot` subvolume),
//! allocating numbers by the daemon rule (one more than every numeric entry, never
//! reused) and removing one snapshot's directory the way `snapper delete` does.

use super::info::SnapshotInfo;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub const SNAPSHOTS_DIR: &str = ".snapshots";
pub const INFO_FILE: &str = "info.xml";
pub const SNAPSHOT_SUBVOL: &str = "snapshot";
/// The highest number ever allocated, so numbers are never reused even after snapper
/// deletes the top snapshot. Not all digits, so snapper skips it silently.
pub const LAST_NUMBER_FILE: &str = ".osm-hostd-last-number";

pub fn snapshots_dir(container_dir: &Path) -> PathBuf {
    container_dir.join(SNAPSHOTS_DIR)
}

pub fn number_dir(container_dir: &Path, num: u32) -> PathBuf {
    snapshots_dir(container_dir).join(num.to_string())
}

pub fn snapshot_subvol(container_dir: &Path, num: u32) -> PathBuf {
    number_dir(container_dir, num).join(SNAPSHOT_SUBVOL)
}

fn numeric(name: &str) -> Option<u32> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|n| *n != 0)
}

/// Every numeric entry of `.snapshots`, ascending.
pub fn numeric_entries(container_dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(snapshots_dir(container_dir))? {
        let entry = entry?;
        if let Some(n) = numeric(&entry.file_name().to_string_lossy()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What a numeric entry holds.
#[derive(Debug)]
pub enum Entry {
    Valid(SnapshotInfo),
    /// Skipped by snapper; the reason.
    Invalid(String),
}

pub fn read_entry(container_dir: &Path, num: u32, is_subvolume: &dyn Fn(&Path) -> bool) -> Entry {
    let dir = number_dir(container_dir, num);
    let text = match std::fs::read_to_string(dir.join(INFO_FILE)) {
        Ok(t) => t,
        Err(e) => return Entry::Invalid(format!("no readable info.xml ({e})")),
    };
    let info = match SnapshotInfo::from_xml(&text) {
        Ok(i) => i,
        Err(e) => return Entry::Invalid(format!("info.xml: {e}")),
    };
    if info.num != num {
        return Entry::Invalid(format!("num mismatch ({} in info.xml)", info.num));
    }
    if !is_subvolume(&dir.join(SNAPSHOT_SUBVOL)) {
        return Entry::Invalid("snapshot subvolume missing".into());
    }
    Entry::Valid(info)
}

/// The snapshots snapper would list, ascending by number.
pub fn read_snapshots(
    container_dir: &Path,
    is_subvolume: &dyn Fn(&Path) -> bool,
) -> io::Result<Vec<SnapshotInfo>> {
    Ok(numeric_entries(container_dir)?
        .into_iter()
        .filter_map(|n| match read_entry(container_dir, n, is_subvolume) {
            Entry::Valid(i) => Some(i),
            Entry::Invalid(_) => None,
        })
        .collect())
}

fn read_last_number(container_dir: &Path) -> u32 {
    std::fs::read_to_string(snapshots_dir(container_dir).join(LAST_NUMBER_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Allocates the next number: 1 + max(every numeric entry, the highest number ever
/// allocated), claimed with `mkdir` (retrying on EEXIST, as snapper does), and recorded
/// so it is never reused.
pub fn allocate(container_dir: &Path) -> io::Result<u32> {
    let top = numeric_entries(container_dir)?.last().copied().unwrap_or(0);
    let mut n = top.max(read_last_number(container_dir)) + 1;
    loop {
        match std::fs::DirBuilder::new()
            .mode(0o755)
            .create(number_dir(container_dir, n))
        {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(e),
        }
    }
    note_number(container_dir, n)?;
    Ok(n)
}

/// Records that number `n` has been used (by anyone), so it is never allocated again.
pub fn note_number(container_dir: &Path, n: u32) -> io::Result<()> {
    if n <= read_last_number(container_dir) {
        return Ok(());
    }
    crate::fsutil::write_atomic(
        &snapshots_dir(container_dir).join(LAST_NUMBER_FILE),
        format!("{n}\n").as_bytes(),
        0o644,
    )
}

/// Writes `<N>/info.xml` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_info(container_dir: &Path, info: &SnapshotInfo) -> io::Result<()> {
    let path = number_dir(container_dir, info.num).join(INFO_FILE);
    crate::fsutil::write_atomic(&path, info.to_xml().as_bytes(), 0o644)
}

/// Removes what `snapper delete` removes after the subvolume: info.xml, filelists and
/// the number directory (the caller deletes `<N>/snapshot` first).
pub fn remove_number_dir(container_dir: &Path, num: u32) -> io::Result<()> {
    let dir = number_dir(container_dir, num);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == INFO_FILE || name.starts_with("filelist-") || name.starts_with(".info.xml.tmp") {
            std::fs::remove_file(entry.path())?;
        }
    }
    std::fs::remove_dir(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(snapshots_dir(dir.path())).unwrap();
        assert_eq!(allocate(dir.path()).unwrap(), 1);
        assert_eq!(allocate(dir.path()).unwrap(), 2);
        std::fs::create_dir(number_dir(dir.path(), 7)).unwrap();
        assert_eq!(allocate(dir.path()).unwrap(), 8);
        for n in [1, 2, 7, 8] {
            remove_number_dir(dir.path(), n).unwrap();
        }
        assert_eq!(
            allocate(dir.path()).unwrap(),
            9,
            "the top number is not reused"
        );
    }

    #[test]
    fn only_valid_snapshots_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(snapshots_dir(dir.path())).unwrap();
        for n in [1, 2, 3] {
            std::fs::create_dir_all(snapshot_subvol(dir.path(), n)).unwrap();
        }
        write_info(dir.path(), &SnapshotInfo::single(1, 1_790_000_000)).unwrap();
        write_info(
            dir.path(),
            &SnapshotInfo {
                num: 2,
                ..SnapshotInfo::single(1, 0)
            },
        )
        .unwrap();
        std::fs::write(
            number_dir(dir.path(), 2).join(INFO_FILE),
            SnapshotInfo::single(5, 0).to_xml(),
        )
        .unwrap();
        let list = read_snapshots(dir.path(), &|p: &Path| p.is_dir()).unwrap();
        assert_eq!(list.iter().map(|s| s.num).collect::<Vec<_>>(), vec![1]);
    }
}
