//! Moving data to and from a backup target: the `rsync` and `ssh` processes.
//! The engine builds every argument vector (`crate::backup::rsync`); this seam only runs
//! them, so the fake sees exactly what would have been run.

use super::RealHost;
use std::ffi::OsString;
use std::io::{self, Write};
use std::process::{Command, Output, Stdio};

pub trait Transfer {
    /// Runs `rsync` with `args`, stdin closed; returns its exit status and output.
    fn rsync(&self, args: &[OsString]) -> io::Result<Output>;
    /// Runs `ssh` with `args` (options, `--`, host, remote command), `input` on its
    /// stdin (closed when `None`); returns its exit status and output.
    fn ssh(&self, args: &[OsString], input: Option<&[u8]>) -> io::Result<Output>;
}

impl Transfer for RealHost {
    fn rsync(&self, args: &[OsString]) -> io::Result<Output> {
        Command::new("rsync")
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    fn ssh(&self, args: &[OsString], input: Option<&[u8]>) -> io::Result<Output> {
        let Some(data) = input else {
            return Command::new("ssh").args(args).stdin(Stdio::null()).output();
        };
        let mut child = Command::new("ssh")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let wrote = child.stdin.take().expect("piped stdin").write_all(data);
        let out = child.wait_with_output()?;
        wrote.map(|()| out)
    }
}
