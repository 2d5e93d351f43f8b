//! LXC containers and their root filesystem mounts (real implementation: the `lxc-*`
//! tools through [`crate::lxc`], idmapped mounts through [`crate::idmap`]).

use super::{HostResult, RealHost};
use crate::error::EngineError;
use crate::idmap::RootfsMount;
use crate::lxc::LxcState;
use crate::shift::Range;
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

/// Resolves once the watched process has exited.
pub type ExitWatch = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

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
    /// Watches process `pid` (a container's init). The returned future must be polled
    /// inside the runtime.
    fn watch_exit(&self, pid: u32) -> io::Result<ExitWatch>;
    /// When process `pid` started, in µs since the epoch (for adopted containers).
    fn process_started_at(&self, pid: u32) -> Option<u64>;
    /// Checks that every owner, ACL and file capability under `root` is inside id range
    /// `from`; returns the entries seen. Changes nothing.
    fn check_owners(&self, root: &Path, from: &Range) -> Result<u64, String>;
    /// Moves every owner, ACL and file capability under `root` from id range `from` to
    /// `to` (see [`crate::shift`]); [`Containers::check_owners`] first.
    fn shift_owners(&self, root: &Path, from: &Range, to: &Range) -> Result<(), String>;
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// From /proc/<pid>/stat's start time (clock ticks since boot) and /proc/stat's btime.
fn process_start_usecs(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let start_ticks: u64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    if hz <= 0 {
        return None;
    }
    Some(btime * 1_000_000 + start_ticks * 1_000_000 / hz as u64)
}

fn lxc_err(e: crate::lxc::LxcError) -> EngineError {
    EngineError::from(e)
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
        m.mount().map_err(EngineError::failed)
    }
    fn unmount_rootfs(&self, m: &RootfsMount) -> HostResult<()> {
        m.unmount().map_err(EngineError::failed)
    }
    /// A pidfd turns readable when the process exits.
    fn watch_exit(&self, pid: u32) -> io::Result<ExitWatch> {
        let fd = pidfd_open(pid)?;
        Ok(Box::pin(async move {
            // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, which owns it until
            // it is dropped; nothing else closes or reuses the descriptor meanwhile.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            if let Ok(afd) = registered {
                let _ = afd.readable().await;
            }
        }))
    }
    fn process_started_at(&self, pid: u32) -> Option<u64> {
        process_start_usecs(pid)
    }
    fn check_owners(&self, root: &Path, from: &Range) -> Result<u64, String> {
        crate::shift::check(root, from)
    }
    fn shift_owners(&self, root: &Path, from: &Range, to: &Range) -> Result<(), String> {
        crate::shift::shift(root, from, to)
    }
}
