//! osm-host: runs one LXC system container per customer on a Btrfs store, controlled
//! over D-Bus. `osm-hostd` is the root daemon, `osm-hostctl` its thin client.
//!
//! Layering (see `docs/architecture.md`): the engine owns the store, containers, bases
//! and jobs and knows nothing of D-Bus; its and the network service's effects on the host
//! go through the narrow traits of the [`host`] seam (summed by [`host::HostOps`]); the
//! `dbus` module owns object paths, caller checks and error mapping.

pub mod backup;
pub mod base;
pub mod btrfs;
pub mod config;
pub mod dbus;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod hardening;
pub mod host;
pub mod host_names;
pub mod idmap;
pub mod layer;
pub mod lxc;
pub mod lxcconf;
pub mod metrics;
pub mod names;
pub mod net;
pub mod privs;
pub mod publish;
pub mod shift;
pub mod snapper;
pub mod spec;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod threeway;
