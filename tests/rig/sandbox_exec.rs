//! Running programs inside a sandbox's namespaces with `nsenter`.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::pidfd::PidFd;
use super::procs;

/// A cheap, cloneable way into a [`super::Sandbox`]'s namespaces. It stays valid only
/// while the sandbox lives (nsenter fails once the holder is gone).
#[derive(Clone, Debug)]
pub struct SandboxHandle {
    pub(super) holder_pid: i32,
}

impl SandboxHandle {
    /// The holder's pid as the host sees it (PID 1 inside the sandbox).
    pub fn holder_pid(&self) -> i32 {
        self.holder_pid
    }

    /// A command that runs `program` inside the sandbox's mount, network and PID
    /// namespaces, in the test's current directory. Add args, env and stdio as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.holder_pid))
            .args(["--mount", "--net", "--pid"]);
        if let Ok(cwd) = std::env::current_dir() {
            // nsenter lands in / after entering the mount namespace; the test's cwd
            // exists inside too (the sandbox shares the host's filesystems).
            cmd.arg(format!("--wd={}", cwd.display()));
        }
        cmd.arg("--").arg(program);
        cmd
    }

    /// Spawns a command made by [`Self::command`] and finds the real program behind
    /// nsenter, so it can be signalled (nsenter does not forward signals).
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<SandboxChild> {
        let mut outer = cmd.spawn()?;
        let nsenter = outer.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for pid in procs::children_of(nsenter) {
                // Re-check the parent after opening: the pidfd then surely names
                // nsenter's child, not a process that reused its pid.
                if let Ok(fd) = PidFd::open(pid) {
                    if procs::ppid(pid) == Some(nsenter) {
                        return Ok(SandboxChild {
                            outer,
                            inner: Some(fd),
                        });
                    }
                }
            }
            if outer.try_wait()?.is_some() {
                return Ok(SandboxChild { outer, inner: None });
            }
            if Instant::now() > deadline {
                let _ = outer.kill();
                let _ = outer.wait();
                return Err(io::Error::other("nsenter never started its child"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs `program args...` inside and collects its output (success not checked).
    pub fn run<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter for {program}: {e}"))
    }

    /// Runs `program args...` inside, panics with its output unless it succeeds, and
    /// returns its stdout.
    pub fn run_ok<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> String {
        let out = self.run(program, args);
        let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        assert!(
            out.status.success(),
            "in sandbox: {program} {} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `path` as seen in the sandbox's mount namespace, reachable from the host through
    /// `/proc/<holder>/root` (e.g. files on the store mounted only inside).
    pub fn host_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let rel = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
        PathBuf::from(format!("/proc/{}/root", self.holder_pid)).join(rel)
    }

    /// LXC's view of container `name` under `lxc_path`: `RUNNING`, `STOPPED`, … or a
    /// description of why `lxc-info` failed. LXC tools must run inside the sandbox:
    /// their command socket is scoped to the network namespace.
    pub fn lxc_state(&self, lxc_path: &Path, name: &str) -> String {
        let out = self
            .command("lxc-info")
            .arg("-P")
            .arg(lxc_path)
            .args(["-n", name, "-s", "-H"])
            .output()
            .expect("run lxc-info in sandbox");
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            format!(
                "lxc-info failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        }
    }
}

/// A program running inside a sandbox: the `nsenter` we spawned (`outer`) and a pidfd
/// on the program itself (`inner`, absent if it exited before we could see it).
pub struct SandboxChild {
    outer: Child,
    inner: Option<PidFd>,
}

impl SandboxChild {
    /// The program's pid in the host's PID namespace.
    pub fn pid(&self) -> Option<i32> {
        self.inner.as_ref().map(PidFd::pid)
    }

    /// The nsenter process (for its stdio pipes); signal the program with `signal`.
    pub fn nsenter(&mut self) -> &mut Child {
        &mut self.outer
    }

    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        match &self.inner {
            Some(fd) => fd.signal(sig),
            None => Ok(()),
        }
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.outer.try_wait().expect("wait for nsenter")
    }

    /// Waits up to `timeout`; nsenter exits with the program's status (or re-raises
    /// the signal that killed it).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the program (and nsenter) and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.signal(Signal::SIGKILL);
        if let Some(status) = self.wait_timeout(Duration::from_secs(10)) {
            return status;
        }
        let _ = self.outer.kill();
        self.outer.wait().expect("wait for nsenter")
    }

    /// Leaves the program running after the test (for `OSM_TEST_KEEP`).
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for SandboxChild {
    fn drop(&mut self) {
        if matches!(self.outer.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}
