//! The seam for privileged effects. Every effect the engine and the network service have
//! on the host goes through one of these narrow traits; [`HostOps`] is their sum, held by
//! the engine as `Arc<dyn HostOps>`:
//!
//! - [`Subvolumes`]: Btrfs subvolumes, snapshots, read-only flags, atomic exchange;
//! - [`Containers`]: `lxc-*`, the idmapped root filesystem mounts, watching a
//!   container's init (pidfd, /proc) and shifting the owners of an upper layer;
//! - [`Images`]: filling base and layer images (build, import);
//! - [`Transfer`]: `rsync` and `ssh` processes (backups, restores, base archives);
//! - [`Networking`]: the bridge, forwarding, nftables and the dnsmasq process;
//! - [`SystemFiles`]: files other programs read (snapper's configs, the hosts file,
//!   /etc/subuid and /etc/subgid), and the hostname and memory the kernel reports;
//! - [`StoreMount`]: making the store's Btrfs available (the loop image).
//!
//! Outside it, on purpose: the daemon's own files in the store and the runtime directory,
//! the D-Bus caller lookup, metrics counters and NGINX (`docs/architecture.md`, "The host
//! seam"). The real implementations are all in this module ([`RealHost`]; they call the
//! lower modules `crate::btrfs`, `crate::lxc`, `crate::net::*`, ...). Unit tests use the
//! recording fake in `host/fake/`, which logs typed calls and injects failures.

mod containers;
#[cfg(test)]
pub mod fake;
mod images;
mod networking;
mod store_mount;
mod subvolumes;
mod system_files;
mod transfer;

pub use containers::{Containers, ExitWatch};
pub use images::Images;
pub use networking::{NetFuture, Networking};
pub use store_mount::StoreMount;
pub use subvolumes::Subvolumes;
pub use system_files::SystemFiles;
pub use transfer::Transfer;

use crate::error::EngineError;
use crate::lxc::Lxc;

pub type HostResult<T> = Result<T, EngineError>;

/// Everything the engine needs from the host. Implemented for every type that
/// implements each narrow trait, so `self.host.snapshot(..)` reads as before.
pub trait HostOps:
    Subvolumes
    + Containers
    + Images
    + Transfer
    + Networking
    + SystemFiles
    + StoreMount
    + Send
    + Sync
    + 'static
{
}

impl<T> HostOps for T where
    T: Subvolumes
        + Containers
        + Images
        + Transfer
        + Networking
        + SystemFiles
        + StoreMount
        + Send
        + Sync
        + 'static
{
}

/// The real host: libbtrfsutil for Btrfs, the `lxc-*` tools for containers, the tools and
/// kernel interfaces named in each trait's implementation.
pub struct RealHost {
    lxc: Lxc,
}

impl RealHost {
    pub fn new(lxc: Lxc) -> RealHost {
        RealHost { lxc }
    }
}
