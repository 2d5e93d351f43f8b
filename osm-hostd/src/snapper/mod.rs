//! Snapper compatibility: the on-disk snapshot format (`.snapshots/<N>/info.xml` plus
//! `<N>/snapshot`), number allocation, the config files snapper reads, and snapper's
//! number and timeline cleanup algorithms as pure functions.
//!
//! Checked against snapper 0.10.4's behaviour. Everything here is plain data and files; the
//! engine's Btrfs effects go through [`crate::host::Subvolumes`] and its writes of
//! snapper's config files through [`crate::host::SystemFiles`].

pub mod cleanup;
pub mod config;
pub mod info;
pub mod layout;
pub mod time;

pub use cleanup::{number_cleanup, timeline_cleanup, NumberLimits, TimelineLimits};
pub use info::{SnapshotInfo, SnapshotKind};
