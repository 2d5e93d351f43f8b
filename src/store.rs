//! The store: `<store_root>/lxc` on Btrfs, optionally an embedded loop-backed image.
//! PLACEHOLDER SIGNATURES: implemented by the storage work item.

use crate::config::HostConfig;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Setup(String),
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Makes sure the store exists and is usable (see the storage work item).
    pub fn open_or_create(_cfg: &HostConfig) -> Result<Store, StoreError> {
        unimplemented!()
    }
    /// A store at an existing directory, without any checks (for tests with fakes).
    pub fn at(store_root: &Path) -> Store {
        Store { root: store_root.to_path_buf() }
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
}
