//! The build cache: writing `<cache_dir>/<key>.tar.zst` under a temporary name renamed
//! into place, and removing temporary files of builds that died.

use crate::base::archive::write_tar_zst;
use crate::base::BaseError;
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Removes the temporary file unless the rename into place happened.
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub(crate) fn write_cache(
    dest: &Path,
    cache_dir: &Path,
    key: &str,
    progress: &mut dyn FnMut(f64),
) -> Result<(), BaseError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)
        .map_err(|e| {
            BaseError::io(
                format!("creating the cache directory {}", cache_dir.display()),
                e,
            )
        })?;
    // Cached images hold whole systems (and set-id binaries): only root may read them.
    std::fs::set_permissions(cache_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| BaseError::io(format!("setting the mode of {}", cache_dir.display()), e))?;
    remove_stale_tmp_files(cache_dir);

    let final_path = cache_dir.join(format!("{key}.tar.zst"));
    let tmp_path = cache_dir.join(format!(
        "{key}.tar.zst.tmp-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp_path)
        .map_err(|e| BaseError::io(format!("creating {}", tmp_path.display()), e))?;
    let mut guard = TmpGuard(Some(tmp_path.clone()));
    write_tar_zst(dest, &mut file, tree_size(dest), progress)?;
    drop(file);
    std::fs::rename(&tmp_path, &final_path).map_err(|e| {
        BaseError::io(
            format!("moving the cache archive to {}", final_path.display()),
            e,
        )
    })?;
    guard.0 = None;
    File::open(cache_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BaseError::io(format!("flushing {}", cache_dir.display()), e))?;
    Ok(())
}

/// `<key>.tar.zst.tmp-<pid>-<n>` files left by a build that died (its pid is gone).
fn remove_stale_tmp_files(cache_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((_, suffix)) = name.split_once(".tar.zst.tmp-") else {
            continue;
        };
        let Some(pid) = suffix.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Approximate size of the uncompressed tar of `root` (file data plus a header per entry),
/// for progress only; never follows symlinks.
fn tree_size(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(md) = entry.metadata() else { continue };
            total += 512;
            if md.is_dir() {
                stack.push(entry.path());
            } else if md.is_file() && md.nlink() == 1 {
                total += md.len().div_ceil(512) * 512;
            } else if md.is_file() {
                // Hard links are stored once; count an equal share per name.
                total += md.len().div_ceil(512) * 512 / md.nlink();
            }
        }
    }
    total.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_tmp_files_of_dead_builds_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let dead = t.path().join("k.tar.zst.tmp-4000000000-0");
        let live = t
            .path()
            .join(format!("k.tar.zst.tmp-{}-0", std::process::id()));
        let other = t.path().join("k.tar.zst");
        for p in [&dead, &live, &other] {
            std::fs::write(p, "").unwrap();
        }
        remove_stale_tmp_files(t.path());
        assert!(!dead.exists() && live.exists() && other.exists());
    }
}
