//! dnsmasq as a supervised child of the daemon: started on the bridge, restarted with
//! back-off when it dies, reloaded with SIGHUP when reservations change, and restarted
//! on purpose (with the lease file purged while it is down) when a container is
//! deleted, because dnsmasq keeps leases in memory and writes them back.
//!
//! dnsmasq outlives the daemon (it is not killed on shutdown, like the containers). A
//! new daemon adopts the one that is running when its pid file names a live dnsmasq
//! with exactly our arguments, and watches it through a pidfd; otherwise it stops it and
//! starts its own. Leases survive either way in the lease file.

use super::dnsmasq::{self, DhcpHost, DnsmasqPaths, DNSMASQ};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A dnsmasq that ran this long resets the back-off.
const STABLE_AFTER: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqStatus {
    /// `running`, `starting`, `restarting` (waiting out a back-off) or `failed`.
    pub state: String,
    pub pid: Option<u32>,
    /// How often it died and was started again since the daemon started.
    pub restarts: u32,
}

enum Cmd {
    Reload,
    Restart,
}

pub struct Supervisor {
    args: Vec<String>,
    paths: DnsmasqPaths,
    status: Mutex<DnsmasqStatus>,
    reservations: Mutex<Vec<DhcpHost>>,
    tx: mpsc::UnboundedSender<Cmd>,
}

enum Proc {
    Child(tokio::process::Child),
    Adopted(u32, AsyncFd<OwnedFd>),
}

impl Proc {
    fn pid(&self) -> Option<u32> {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Adopted(pid, _) => Some(*pid),
        }
    }

    async fn exited(&mut self) {
        match self {
            Proc::Child(c) => {
                let _ = c.wait().await;
            }
            Proc::Adopted(_, fd) => {
                let _ = fd.readable().await;
            }
        }
    }
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn watch_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, which owns it until it is
    // dropped; nothing else closes or reuses the descriptor meanwhile.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

impl Supervisor {
    /// Starts supervising (adopting a running dnsmasq when it is ours).
    pub fn spawn(args: Vec<String>, paths: DnsmasqPaths, rs: Vec<DhcpHost>) -> Arc<Supervisor> {
        let (tx, rx) = mpsc::unbounded_channel();
        let sup = Arc::new(Supervisor {
            args,
            paths,
            status: Mutex::new(DnsmasqStatus {
                state: "starting".into(),
                pid: None,
                restarts: 0,
            }),
            reservations: Mutex::new(rs),
            tx,
        });
        tokio::spawn(sup.clone().run(rx));
        sup
    }

    /// A supervisor that runs nothing (the fake host's dnsmasq): reloads and restarts
    /// are queued and never carried out.
    #[cfg(test)]
    pub(crate) fn detached(
        args: Vec<String>,
        paths: DnsmasqPaths,
        rs: Vec<DhcpHost>,
    ) -> Arc<Supervisor> {
        let (tx, _rx) = mpsc::unbounded_channel();
        Arc::new(Supervisor {
            args,
            paths,
            status: Mutex::new(DnsmasqStatus {
                state: "running".into(),
                pid: None,
                restarts: 0,
            }),
            reservations: Mutex::new(rs),
            tx,
        })
    }

    pub fn status(&self) -> DnsmasqStatus {
        self.status.lock().expect("dnsmasq status lock").clone()
    }

    pub fn paths(&self) -> &DnsmasqPaths {
        &self.paths
    }

    /// New reservations: dnsmasq re-reads its files on SIGHUP.
    pub fn reload(&self, rs: Vec<DhcpHost>) {
        *self.reservations.lock().expect("reservations lock") = rs;
        let _ = self.tx.send(Cmd::Reload);
    }

    /// Reservations were removed: restart dnsmasq with the stale leases purged.
    pub fn restart(&self, rs: Vec<DhcpHost>) {
        *self.reservations.lock().expect("reservations lock") = rs;
        let _ = self.tx.send(Cmd::Restart);
    }

    fn set(&self, state: &str, pid: Option<u32>, restarted: bool) {
        let mut s = self.status.lock().expect("dnsmasq status lock");
        s.state = state.into();
        s.pid = pid;
        if restarted {
            s.restarts += 1;
        }
    }

    fn purge(&self) {
        let rs = self.reservations.lock().expect("reservations lock").clone();
        match dnsmasq::purge_lease_file(&self.paths, &rs) {
            Ok(0) => {}
            Ok(n) => tracing::info!(dropped = n, "purged stale DHCP leases"),
            Err(e) => tracing::warn!(error = %e, "cannot purge the DHCP lease file"),
        }
    }

    /// The dnsmasq our pid file names, if it is alive and runs with our arguments.
    fn adoptable(&self) -> Option<(u32, bool)> {
        let pid: u32 = std::fs::read_to_string(&self.paths.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let (prog, rest) = argv.split_first()?;
        if !prog.ends_with("dnsmasq") {
            return None;
        }
        let leasefile = format!("--dhcp-leasefile={}", self.paths.leases.display());
        if !rest.contains(&leasefile) {
            return None;
        }
        Some((pid, rest == self.args.as_slice()))
    }

    async fn start(&self, first: bool) -> std::io::Result<Proc> {
        if first {
            if let Some((pid, same_args)) = self.adoptable() {
                if same_args {
                    let fd = pidfd_open(pid)?;
                    tracing::info!(pid, "adopted the running dnsmasq");
                    return Ok(Proc::Adopted(pid, watch_fd(fd)?));
                }
                tracing::info!(pid, "stopping a dnsmasq started with other settings");
                if let Ok(fd) = pidfd_open(pid) {
                    let mut old = Proc::Adopted(pid, watch_fd(fd)?);
                    stop(&mut old).await;
                }
            }
        }
        self.purge();
        let child = tokio::process::Command::new(DNSMASQ)
            .args(&self.args)
            .stdin(std::process::Stdio::null())
            .spawn()?;
        if let Some(pid) = child.id() {
            let _ = crate::fsutil::write_atomic(
                &self.paths.pid_file,
                format!("{pid}\n").as_bytes(),
                0o644,
            );
        }
        tracing::info!(pid = ?child.id(), "dnsmasq started");
        Ok(Proc::Child(child))
    }

    async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut backoff = BACKOFF_FIRST;
        let mut first = true;
        let mut restarted = false;
        loop {
            let mut proc = match self.start(first).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start dnsmasq");
                    self.set("failed", None, false);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            first = false;
            self.set("running", proc.pid(), restarted);
            restarted = false;
            let since = Instant::now();
            loop {
                tokio::select! {
                    _ = proc.exited() => {
                        tracing::warn!(pid = ?proc.pid(), "dnsmasq exited; restarting it");
                        if since.elapsed() > STABLE_AFTER {
                            backoff = BACKOFF_FIRST;
                        }
                        self.set("restarting", None, false);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        restarted = true;
                        break;
                    }
                    cmd = rx.recv() => match cmd {
                        Some(Cmd::Reload) => {
                            if let Some(pid) = proc.pid() {
                                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
                                tracing::debug!(pid, "dnsmasq reloaded");
                            }
                        }
                        Some(Cmd::Restart) => {
                            // Collapse queued requests into this one restart.
                            while rx.try_recv().is_ok() {}
                            stop(&mut proc).await;
                            break;
                        }
                        // Every sender is gone (cannot happen while this task holds the
                        // supervisor); dnsmasq stays, like the containers.
                        None => return,
                    }
                }
            }
        }
    }
}

/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; returns once it has exited.
async fn stop(proc: &mut Proc) {
    let Some(pid) = proc.pid() else { return };
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    if tokio::time::timeout(STOP_TIMEOUT, proc.exited())
        .await
        .is_err()
    {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        proc.exited().await;
    }
}
