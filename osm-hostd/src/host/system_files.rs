//! Files other programs read: snapper's per-container configs and its list of them,
//! and the managed block of the hosts file (real implementation:
//! [`crate::snapper::config`], [`crate::net::hosts_file`]). What goes in them is
//! decided by the engine and the network service.

use super::RealHost;
use crate::config::SnapperConfig;
use crate::idmap::SubIds;
use crate::snapper::config as sconf;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

pub trait SystemFiles {
    /// Writes container `name`'s snapper config (`text`) and lists it in
    /// SNAPPER_CONFIGS.
    fn write_snapper_config(
        &self,
        snapper: &SnapperConfig,
        name: &str,
        text: &str,
    ) -> io::Result<()>;
    /// Removes container `name`'s snapper config and unlists it; `false` (nothing
    /// changed) when the config there was not written by osm-hostd.
    fn remove_snapper_config(&self, snapper: &SnapperConfig, name: &str) -> io::Result<bool>;
    /// Makes the managed block of the hosts file at `path` list `entries`; `true` when
    /// the file changed.
    fn sync_hosts_file(&self, path: &Path, entries: &[(String, Ipv4Addr)]) -> io::Result<bool>;
    /// Makes sure root has a pool of subordinate ids in /etc/subuid and /etc/subgid
    /// (the files `subids` names), adding one when it has none.
    fn ensure_subid_pool(&self, subids: &SubIds) -> Result<(), String>;
    /// The host's hostname, as the daemon's UTS namespace has it (/proc).
    fn hostname(&self) -> Option<String>;
    /// (MemTotal, MemAvailable) in bytes (/proc/meminfo).
    fn memory(&self) -> (u64, u64);
}

impl SystemFiles for RealHost {
    fn write_snapper_config(
        &self,
        snapper: &SnapperConfig,
        name: &str,
        text: &str,
    ) -> io::Result<()> {
        write_snapper_config(snapper, name, text)
    }
    fn remove_snapper_config(&self, snapper: &SnapperConfig, name: &str) -> io::Result<bool> {
        remove_snapper_config(snapper, name)
    }
    fn sync_hosts_file(&self, path: &Path, entries: &[(String, Ipv4Addr)]) -> io::Result<bool> {
        crate::net::hosts_file::sync(path, entries)
    }
    fn ensure_subid_pool(&self, subids: &SubIds) -> Result<(), String> {
        subids.ensure_pool()
    }
    fn hostname(&self) -> Option<String> {
        crate::host_names::hostname()
    }
    fn memory(&self) -> (u64, u64) {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        crate::engine::fleet::parse_meminfo(&text)
    }
}

/// The file work behind [`SystemFiles::write_snapper_config`] (the fake runs it too,
/// on its test's own directories).
pub(crate) fn write_snapper_config(
    snapper: &SnapperConfig,
    name: &str,
    text: &str,
) -> io::Result<()> {
    sconf::write_config(&snapper.configs_dir, name, text)
        .and_then(|()| sconf::set_listed(&snapper.defaults_file, name, true))
}

/// The file work behind [`SystemFiles::remove_snapper_config`].
pub(crate) fn remove_snapper_config(snapper: &SnapperConfig, name: &str) -> io::Result<bool> {
    let ours = sconf::remove_config(&snapper.configs_dir, name)?;
    if ours {
        sconf::set_listed(&snapper.defaults_file, name, false)?;
    }
    Ok(ours)
}
