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
//!
//! This file holds the store's layout and [`Store`]; `prepare.rs` makes `store_root`
//! (the Btrfs checks and the loop image), `mountinfo.rs` reads the mount table.

mod mountinfo;
mod prepare;

pub use mountinfo::{parse_mountinfo, read_mountinfo, MountEntry};
use prepare::{ensure_dir, prepare_root};

use crate::btrfs::BtrfsError;
use crate::config::HostConfig;
use std::io;
use std::path::{Path, PathBuf};

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
