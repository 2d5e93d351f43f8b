//! Race-free handles on processes we did not fork ourselves (the real program behind an
//! `nsenter`): a pidfd cannot be fooled by pid reuse.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::Signal;

pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall succeeded, so `ret` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(ret as i32) };
        Ok(PidFd { fd, pid })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig`; sending to a process that already exited is not an error.
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        // SAFETY: the fd is a live pidfd owned by self; a null siginfo is allowed.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(err);
        }
        Ok(())
    }
}
