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
///
/// The record is not fsynced here: the caller creates the snapshot next, and creating a
/// Btrfs snapshot commits the transaction, which makes the `mkdir` and the record's
/// rename durable. Should the record's content be lost in a crash, it reads as 0 and
/// the number's directory, made durable by the same commit, still counts. A caller whose
/// snapshot fails calls [`sync_last_number`] before removing the directory.
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
    if n > read_last_number(container_dir) {
        crate::fsutil::replace_file(
            &snapshots_dir(container_dir).join(LAST_NUMBER_FILE),
            format!("{n}\n").as_bytes(),
            0o644,
        )?;
    }
    Ok(n)
}

/// Makes the record of the highest number durable (after an [`allocate`] whose snapshot
/// was not taken, so no transaction commit followed it).
pub fn sync_last_number(container_dir: &Path) -> io::Result<()> {
    let path = snapshots_dir(container_dir).join(LAST_NUMBER_FILE);
    std::fs::File::open(&path)?.sync_all()?;
    crate::fsutil::sync_dir(&snapshots_dir(container_dir))
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

/// Writes `<N>/info.xml` (temp file, fsync, rename) before `<N>/snapshot` is created:
/// the snapshot's creation commits the transaction, which makes the rename durable, so
/// the directory needs no fsync of its own. Until the snapshot exists, snapper and the
/// daemon skip the entry (no subvolume); a crash in between leaves an info.xml of
/// osm-hostd's without a snapshot, which [`interrupted_create`] recognises.
pub fn write_info_before_snapshot(container_dir: &Path, info: &SnapshotInfo) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = number_dir(container_dir, info.num);
    let tmp = dir.join(format!(".{INFO_FILE}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(info.to_xml().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(INFO_FILE))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// True if `<N>` holds what a create killed before its snapshot leaves: an info.xml
/// written by osm-hostd and no `snapshot` at all.
pub fn interrupted_create(container_dir: &Path, num: u32) -> bool {
    let dir = number_dir(container_dir, num);
    if std::fs::symlink_metadata(dir.join(SNAPSHOT_SUBVOL)).is_ok() {
        return false;
    }
    std::fs::read_to_string(dir.join(INFO_FILE))
        .ok()
        .and_then(|t| SnapshotInfo::from_xml(&t).ok())
        .is_some_and(|i| {
            i.num == num && i.userdata.get("created_by").map(String::as_str) == Some("osm-hostd")
        })
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
    fn an_info_xml_of_ours_without_a_snapshot_is_an_interrupted_create() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(snapshots_dir(dir.path())).unwrap();
        let n = allocate(dir.path()).unwrap();
        assert_eq!(read_last_number(dir.path()), n);
        let mut info = SnapshotInfo::single(n, 1_790_000_000);
        write_info_before_snapshot(dir.path(), &info).unwrap();
        assert!(
            !interrupted_create(dir.path(), n),
            "not written by osm-hostd"
        );
        info.userdata
            .insert("created_by".into(), "osm-hostd".into());
        write_info_before_snapshot(dir.path(), &info).unwrap();
        assert!(interrupted_create(dir.path(), n));
        std::fs::create_dir(snapshot_subvol(dir.path(), n)).unwrap();
        assert!(!interrupted_create(dir.path(), n), "the snapshot is there");
        sync_last_number(dir.path()).unwrap();
        remove_number_dir(dir.path(), n).unwrap_err();
        std::fs::remove_dir(snapshot_subvol(dir.path(), n)).unwrap();
        remove_number_dir(dir.path(), n).unwrap();
        assert_eq!(allocate(dir.path()).unwrap(), n + 1, "never reused");
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
