//! Making the store's Btrfs available: `store_root` as it is, or the configured loop
//! image created (`mkfs.btrfs`) and loop-mounted (real implementation: [`crate::store`]).

use super::RealHost;
use crate::config::HostConfig;
use crate::store::{Store, StoreError};

pub trait StoreMount {
    /// Makes sure `cfg.store_root` is on Btrfs (mounting or creating the loop image if
    /// configured), hardened, with the layout directories; returns the store.
    fn open_store(&self, cfg: &HostConfig) -> Result<Store, StoreError>;
}

impl StoreMount for RealHost {
    fn open_store(&self, cfg: &HostConfig) -> Result<Store, StoreError> {
        Store::open_or_create(cfg)
    }
}
