//! LXC containers and their root filesystem mounts (real implementation: the `lxc-*`
//! tools through [`crate::lxc`], idmapped mounts through [`crate::idmap`]).

use super::{HostResult, RealHost};
use crate::error::EngineError;
use crate::idmap::RootfsMount;
use crate::lxc::LxcState;
use std::time::Duration;

pub trait Containers {
    /// Starts a container; returns its state afterwards (running, with init's pid).
    fn lxc_start(&self, name: &str) -> HostResult<LxcState>;
    fn lxc_stop(&self, name: &str, timeout: Duration, force: bool) -> HostResult<()>;
    fn lxc_state(&self, name: &str) -> HostResult<LxcState>;
    /// Addresses inside a running container, given its init's pid.
    fn lxc_addresses(&self, init_pid: u32) -> Vec<String>;
    /// Mounts an unprivileged container's root filesystem (see [`crate::idmap`]).
    fn mount_rootfs(&self, m: &RootfsMount) -> HostResult<()>;
    /// Unmounts it again; nothing mounted is not an error.
    fn unmount_rootfs(&self, m: &RootfsMount) -> HostResult<()>;
}

fn lxc_err(e: crate::lxc::LxcError) -> EngineError {
    EngineError::Failed(e.to_string())
}

impl Containers for RealHost {
    fn lxc_start(&self, name: &str) -> HostResult<LxcState> {
        self.lxc.start(name).map_err(lxc_err)
    }
    fn lxc_stop(&self, name: &str, timeout: Duration, force: bool) -> HostResult<()> {
        self.lxc.stop(name, timeout, force).map_err(lxc_err)
    }
    fn lxc_state(&self, name: &str) -> HostResult<LxcState> {
        self.lxc.state(name).map_err(lxc_err)
    }
    fn lxc_addresses(&self, init_pid: u32) -> Vec<String> {
        crate::lxc::addresses_of(init_pid)
    }
    fn mount_rootfs(&self, m: &RootfsMount) -> HostResult<()> {
        m.mount().map_err(EngineError::Failed)
    }
    fn unmount_rootfs(&self, m: &RootfsMount) -> HostResult<()> {
        m.unmount().map_err(EngineError::Failed)
    }
}
