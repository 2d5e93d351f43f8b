//! The store: `<store_root>/lxc` on Btrfs, optionally an embedded loop-backed image.
//!
//! [`Store::open_or_create`] accepts a `store_root` that is already on Btrfs; otherwise,
//! when `loop_image` is configured, it creates (sparse, `mkfs.btrfs`) and loop-mounts that
//! image at `store_root`, and without one it creates a missing `store_root` as a new
//! subvolume if its parent is on Btrfs. It never mounts over a non-empty directory. Every
//! step is idempotent, so the daemon runs it on each start.
//!
//! The loop mount is made in the daemon's mount namespace, so the daemon must share the
//! host's (no systemd `PrivateMounts=`/`ProtectSystem=`) for LXC and operators to see it.

use crate::btrfs::{self, BtrfsError};
use crate::config::HostConfig;
use std::ffi::OsStr;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store_root {path} is not on Btrfs (it is {fstype}); put it on a Btrfs filesystem or \
         subvolume, or set loop_image (and loop_size) in hostd.toml to use an embedded \
         loop-backed store"
    )]
    NotBtrfs { path: PathBuf, fstype: String },
    #[error(
        "store_root {path} is a non-empty directory on {fstype}; refusing to mount loop_image \
         {image} over it, which would hide its contents: empty or move it, or choose another \
         store_root"
    )]
    WouldHide {
        path: PathBuf,
        fstype: String,
        image: PathBuf,
    },
    #[error("{path} exists but is not a directory; {what} must be a directory")]
    NotADirectory { path: PathBuf, what: &'static str },
    #[error("loop_image {image} exists but is not a regular file")]
    ImageNotAFile { image: PathBuf },
    #[error(
        "loop_image {image} is already attached to {device} ({mounted}), but not mounted at \
         store_root {store_root}; unmount it (the loop device then detaches, or detach it with \
         `losetup -d {device}`) and retry"
    )]
    ImageInUse {
        image: PathBuf,
        device: String,
        mounted: String,
        store_root: PathBuf,
    },
    #[error("mounted {image} at {path}, but {path} is still not on Btrfs (it is {fstype})")]
    MountNotVisible {
        image: PathBuf,
        path: PathBuf,
        fstype: String,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}){}", stderr_suffix(.stderr))]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Btrfs(#[from] BtrfsError),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Makes sure `store_root` is on Btrfs (mounting or creating the configured loop image
    /// if needed) and that the layout directories exist. Idempotent: safe on every start.
    pub fn open_or_create(cfg: &HostConfig) -> Result<Store, StoreError> {
        prepare_root(cfg)?;
        crate::hardening::ensure_nosuid_nodev(&cfg.store_root).map_err(|e| StoreError::Io {
            action: "mount nosuid,nodev",
            path: cfg.store_root.clone(),
            source: e,
        })?;
        let store = Store::at(&cfg.store_root);
        store.create_layout()?;
        crate::hardening::secure_store(&store)?;
        Ok(store)
    }
    /// A store at an existing directory, without any checks (for tests with fakes).
    pub fn at(store_root: &Path) -> Store {
        Store {
            root: store_root.to_path_buf(),
        }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn lxc_dir(&self) -> PathBuf {
        self.root.join("lxc")
    }
    pub fn bases_dir(&self) -> PathBuf {
        self.lxc_dir().join("os-bases")
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.lxc_dir().join("layers")
    }
    pub fn include_dir(&self) -> PathBuf {
        self.lxc_dir().join("include")
    }
    pub fn containers_dir(&self) -> PathBuf {
        self.lxc_dir().join("containers")
    }
    pub fn container_dir(&self, name: &str) -> PathBuf {
        self.containers_dir().join(name)
    }

    /// Total and available bytes of the filesystem holding the store (statvfs; on Btrfs
    /// an estimate that depends on the RAID profile).
    // The statvfs field types are only u64 on 64-bit targets.
    #[allow(clippy::useless_conversion)]
    pub fn space(&self) -> Result<(u64, u64), StoreError> {
        let st = nix::sys::statvfs::statvfs(&self.root).map_err(|e| StoreError::Io {
            action: "statvfs",
            path: self.root.clone(),
            source: e.into(),
        })?;
        let unit = u64::from(st.fragment_size());
        let total = u64::from(st.blocks()).saturating_mul(unit);
        let available = u64::from(st.blocks_available()).saturating_mul(unit);
        Ok((total, available))
    }

    /// Creates `lxc/{os-bases,layers,include,containers}` as plain 0755 directories.
    fn create_layout(&self) -> Result<(), StoreError> {
        for dir in [
            self.lxc_dir(),
            self.bases_dir(),
            self.layers_dir(),
            self.include_dir(),
            self.containers_dir(),
        ] {
            ensure_dir(&dir, "a store layout directory")?;
        }
        Ok(())
    }
}

fn prepare_root(cfg: &HostConfig) -> Result<(), StoreError> {
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
fn ensure_dir(dir: &Path, what: &'static str) -> Result<(), StoreError> {
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

/// The calling thread's mount table: a thread that unshared its mount namespace (as the
/// root tests do) sees different mounts from the process's main thread (`/proc/self`).
const MOUNTINFO: &str = "/proc/thread-self/mountinfo";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths_follow_the_design() {
        let s = Store::at(Path::new("/srv/osm-lxc"));
        assert_eq!(s.bases_dir(), Path::new("/srv/osm-lxc/lxc/os-bases"));
        assert_eq!(s.layers_dir(), Path::new("/srv/osm-lxc/lxc/layers"));
        assert_eq!(s.include_dir(), Path::new("/srv/osm-lxc/lxc/include"));
        assert_eq!(
            s.container_dir("c1"),
            Path::new("/srv/osm-lxc/lxc/containers/c1")
        );
    }

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

    #[test]
    fn not_btrfs_error_names_both_fixes() {
        let e = StoreError::NotBtrfs {
            path: "/x".into(),
            fstype: "ext4".into(),
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("store_root /x is not on Btrfs (it is ext4);"),
            "{msg}"
        );
        assert!(msg.contains("Btrfs filesystem or subvolume"), "{msg}");
        assert!(
            msg.contains("set loop_image (and loop_size) in hostd.toml"),
            "{msg}"
        );
    }

    #[test]
    fn command_errors_show_stderr_when_there_is_some() {
        let e = StoreError::Command {
            command: "mount -o loop a b".into(),
            status: "exit status: 32".into(),
            stderr: "mount: b: wrong fs type".into(),
        };
        assert_eq!(
            e.to_string(),
            "`mount -o loop a b` failed (exit status: 32): mount: b: wrong fs type"
        );
    }
}
