//! Making `store_root` usable: checking it is on Btrfs, or creating a missing one as a
//! subvolume, or creating and loop-mounting the configured image; idempotent.

use super::mountinfo::{read_mountinfo, MOUNTINFO};
use super::StoreError;
use crate::btrfs;
use crate::config::HostConfig;
use std::ffi::OsStr;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(super) fn prepare_root(cfg: &HostConfig) -> Result<(), StoreError> {
    let root = &cfg.store_root;
    let exists = root.try_exists().map_err(io_err("look at", root))?;
    if let Some(image) = &cfg.loop_image {
        // An existing image holds the store: a Btrfs store_root that is not its mount
        // (say the empty mount point on a Btrfs root filesystem after a reboot) is not it.
        if image.try_exists().map_err(io_err("look at", image))? {
            if image_mounted_at(image, root)? {
                return Ok(());
            }
            return mount_loop_image(root, exists, image, cfg.loop_size);
        }
    }
    if exists && btrfs::is_btrfs(root)? {
        return Ok(());
    }
    let Some(image) = &cfg.loop_image else {
        // A missing store_root below a Btrfs directory becomes its own subvolume.
        if !exists {
            let ancestor = nearest_existing_ancestor(root)?;
            if btrfs::is_btrfs(&ancestor)? {
                if let Some(parent) = root.parent() {
                    create_dirs(parent)?;
                }
                tracing::info!(store_root = %root.display(), "creating the store as a new subvolume");
                return Ok(btrfs::create_subvolume(root)?);
            }
        }
        return Err(StoreError::NotBtrfs {
            path: root.clone(),
            fstype: fs_type_of(root),
        });
    };
    mount_loop_image(root, exists, image, cfg.loop_size)
}

/// True if the topmost mount at `root` is a loop device backed by `image`.
fn image_mounted_at(image: &Path, root: &Path) -> Result<bool, StoreError> {
    let devices = loop_devices_backing(image);
    if devices.is_empty() {
        return Ok(false);
    }
    let Ok(root) = std::fs::canonicalize(root) else {
        return Ok(false);
    };
    let mounts = read_mountinfo().map_err(io_err("read", Path::new(MOUNTINFO)))?;
    let top = mounts.iter().rev().find(|m| m.mount_point == root);
    Ok(top.is_some_and(|m| devices.contains(&m.source)))
}

/// Mounts `image` (creating it first if missing) at `root`, which must be missing or an
/// empty directory.
fn mount_loop_image(
    root: &Path,
    root_exists: bool,
    image: &Path,
    bytes: u64,
) -> Result<(), StoreError> {
    // Check everything that could refuse before creating anything.
    if root_exists {
        if !root.is_dir() {
            return Err(StoreError::NotADirectory {
                path: root.to_path_buf(),
                what: "store_root",
            });
        }
        let mut entries = std::fs::read_dir(root).map_err(io_err("read directory", root))?;
        if entries.next().is_some() {
            return Err(StoreError::WouldHide {
                path: root.to_path_buf(),
                fstype: fs_type_of(root),
                image: image.to_path_buf(),
            });
        }
    }

    if image.try_exists().map_err(io_err("look at", image))? {
        if !image.is_file() {
            return Err(StoreError::ImageNotAFile {
                image: image.to_path_buf(),
            });
        }
        // Attaching the image a second time would show the kernel one Btrfs on two
        // devices; refuse instead.
        if let Some(device) = loop_devices_backing(image).into_iter().next() {
            let mounts = read_mountinfo().map_err(io_err("read", Path::new(MOUNTINFO)))?;
            let points: Vec<String> = mounts
                .iter()
                .filter(|m| m.source == device)
                .map(|m| m.mount_point.display().to_string())
                .collect();
            let mounted = if points.is_empty() {
                "not mounted here".to_string()
            } else {
                format!("mounted at {}", points.join(", "))
            };
            return Err(StoreError::ImageInUse {
                image: image.to_path_buf(),
                device,
                mounted,
                store_root: root.to_path_buf(),
            });
        }
    } else {
        create_image(image, bytes)?;
    }

    create_dirs(root)?;
    tracing::info!(image = %image.display(), store_root = %root.display(), "mounting the loop-backed store");
    // mount(8) sets LO_FLAGS_AUTOCLEAR on the loop device it allocates, so unmounting
    // the store also detaches the device.
    run(Command::new(tool("mount"))
        .args(["-t", "btrfs", "-o", "loop,nosuid,nodev"])
        .arg(image)
        .arg(root))?;
    if !btrfs::is_btrfs(root)? {
        return Err(StoreError::MountNotVisible {
            image: image.to_path_buf(),
            path: root.to_path_buf(),
            fstype: fs_type_of(root),
        });
    }
    Ok(())
}

/// Creates a sparse image of `bytes` and formats it, under a temporary name first so a
/// crash half-way never leaves an unformatted file at `image`.
fn create_image(image: &Path, bytes: u64) -> Result<(), StoreError> {
    if let Some(parent) = image.parent() {
        create_dirs(parent)?;
    }
    let mut partial = image.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    tracing::info!(image = %image.display(), bytes, "creating the loop-backed store image");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io_err("create", &partial))?;
    file.set_len(bytes).map_err(io_err("size", &partial))?;
    drop(file);
    run(Command::new(tool("mkfs.btrfs"))
        .args(["-q", "-L", "osm-store"])
        .arg(&partial))?;
    let file = OpenOptions::new()
        .write(true)
        .open(&partial)
        .map_err(io_err("open", &partial))?;
    file.sync_all().map_err(io_err("sync", &partial))?;
    std::fs::rename(&partial, image).map_err(io_err("rename into place", image))?;
    Ok(())
}

/// `mkdir -p` with 0755 for the directories it creates.
fn create_dirs(path: &Path) -> Result<(), StoreError> {
    let mut missing = Vec::new();
    let mut p = path;
    while !p.as_os_str().is_empty() && !p.try_exists().map_err(io_err("look at", p))? {
        missing.push(p);
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    for dir in missing.into_iter().rev() {
        ensure_dir(dir, "a parent directory")?;
    }
    Ok(())
}

/// Creates one 0755 directory (whatever the umask), or accepts an existing directory.
pub(super) fn ensure_dir(dir: &Path, what: &'static str) -> Result<(), StoreError> {
    match DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, Permissions::from_mode(0o755))
            .map_err(io_err("set permissions of", dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if dir.is_dir() {
                Ok(())
            } else {
                Err(StoreError::NotADirectory {
                    path: dir.to_path_buf(),
                    what,
                })
            }
        }
        Err(e) => Err(StoreError::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

fn nearest_existing_ancestor(path: &Path) -> Result<PathBuf, StoreError> {
    for p in path.ancestors() {
        if !p.as_os_str().is_empty() && p.try_exists().map_err(io_err("look at", p))? {
            return Ok(p.to_path_buf());
        }
    }
    Ok(PathBuf::from("/"))
}

fn run(cmd: &mut Command) -> Result<(), StoreError> {
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd.output().map_err(|e| StoreError::Io {
        action: "run",
        path: PathBuf::from(cmd.get_program()),
        source: e,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(StoreError::Command {
        command,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// The absolute path of a system tool, so a cleared `PATH` (systemd, tests) still works.
fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The filesystem type of the mount holding `path` (or its nearest existing ancestor),
/// for error messages: "ext4", "xfs", …
fn fs_type_of(path: &Path) -> String {
    let existing = nearest_existing_ancestor(path).unwrap_or_else(|_| PathBuf::from("/"));
    let canon = std::fs::canonicalize(&existing).unwrap_or(existing);
    let mounts = read_mountinfo().unwrap_or_default();
    // Later entries are mounted on top of earlier ones at the same point.
    mounts
        .iter()
        .filter(|m| canon.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
        .map(|m| m.fstype.clone())
        .unwrap_or_else(|| "an unknown filesystem".to_string())
}

/// Loop devices (`/dev/loopN`) whose backing file is `image`.
fn loop_devices_backing(image: &Path) -> Vec<String> {
    let Ok(image) = std::fs::canonicalize(image) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut devices = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(backing.trim_end_matches('\n')) == image {
            devices.push(format!("/dev/{name}"));
        }
    }
    devices.sort();
    devices
}
