//! [`Sandbox`]: throwaway mount + network + PID namespaces held open by a holder
//! process (see `holder.sh`). Dropping it kills the holder, which as PID 1 of the PID
//! namespace takes every process inside with it (daemon, LXC monitors, containers);
//! the mount namespace then dies and releases its mounts and loop devices.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::leftovers::{detach_loop_devices_under, loop_devices_under};
use super::pidfd::PidFd;
pub use super::sandbox_exec::{SandboxChild, SandboxHandle};
use super::{file_tail, keep_requested, procs, require_root, wait_until};

const HOLDER_SCRIPT: &str = include_str!("holder.sh");

pub struct SandboxBuilder {
    new_net: bool,
    scratch_in: Option<PathBuf>,
}

impl SandboxBuilder {
    /// `false` shares the host's network namespace: only for building a Debian base
    /// with debootstrap, which needs the mirror. Anything network-related the test
    /// creates then lands on the host.
    pub fn new_net(mut self, new_net: bool) -> Self {
        self.new_net = new_net;
        self
    }

    /// Put the holder's log and staging dir in `<dir>/sandbox` instead of a temp dir
    /// of its own.
    pub fn scratch_in(mut self, dir: &Path) -> Self {
        self.scratch_in = Some(dir.to_path_buf());
        self
    }

    pub fn start(self) -> Sandbox {
        Sandbox::start(self)
    }
}

enum Scratch {
    Own(tempfile::TempDir),
    Given(PathBuf),
}

impl Scratch {
    fn path(&self) -> &Path {
        match self {
            Scratch::Own(t) => t.path(),
            Scratch::Given(p) => p,
        }
    }
}

pub struct Sandbox {
    handle: SandboxHandle,
    holder: PidFd,
    unshare: Child,
    /// Closing it (drop or test-process death) makes the holder exit.
    holder_stdin: Option<ChildStdin>,
    new_net: bool,
    net_ns: String,
    mnt_ns: String,
    scratch: Scratch,
    lxc_paths: Mutex<Vec<PathBuf>>,
    loop_dirs: Mutex<Vec<PathBuf>>,
    keep: bool,
}

impl Sandbox {
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder {
            new_net: true,
            scratch_in: None,
        }
    }

    /// A sandbox with its own network namespace.
    pub fn new() -> Sandbox {
        Self::builder().start()
    }

    fn start(opts: SandboxBuilder) -> Sandbox {
        require_root();
        let keep = keep_requested();
        let scratch = match opts.scratch_in {
            Some(dir) => {
                let path = dir.join("sandbox");
                fs::create_dir_all(&path).expect("create sandbox scratch dir");
                Scratch::Given(path)
            }
            None => Scratch::Own(
                tempfile::Builder::new()
                    .prefix("osm-sandbox-")
                    .tempdir()
                    .expect("create sandbox scratch dir"),
            ),
        };
        let log_path = scratch.path().join("holder.log");
        let log = fs::File::create(&log_path).expect("create holder log");
        let stage = scratch.path().join("cgroup-stage");

        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--pid", "--fork", "--mount-proc"])
            .args(["--propagation", "private", "--kill-child"]);
        if opts.new_net {
            cmd.arg("--net");
        }
        // A script file (not `bash -c`) keeps `ps` readable: bash <path> args.
        let script = scratch.path().join("osm-sandbox-holder.sh");
        fs::write(&script, HOLDER_SCRIPT).expect("write holder script");
        cmd.arg("bash")
            .arg(&script)
            .arg(&stage)
            .arg(if opts.new_net { "1" } else { "0" })
            .arg(if keep { "1" } else { "0" })
            .stdin(if keep { Stdio::null() } else { Stdio::piped() })
            .stdout(log.try_clone().expect("dup holder log"))
            .stderr(log);
        let mut unshare = cmd.spawn().expect("spawn unshare (util-linux)");
        let holder_stdin = unshare.stdin.take();

        let ready = wait_until(Duration::from_secs(15), || {
            let up = fs::read_to_string(&log_path).is_ok_and(|l| l.contains("READY\n"));
            up || matches!(unshare.try_wait(), Ok(Some(_)))
        });
        let exited = unshare.try_wait().expect("wait for unshare");
        if !ready || exited.is_some() {
            let _ = unshare.kill();
            let _ = unshare.wait();
            panic!(
                "sandbox holder did not come up ({}):\n{}",
                exited.map_or("timed out".to_string(), |s| s.to_string()),
                file_tail(&log_path, 40)
            );
        }

        let unshare_pid = unshare.id() as i32;
        let holder_pid = procs::children_of(unshare_pid)
            .into_iter()
            .next()
            .expect("find the sandbox holder (unshare's child)");
        let holder = PidFd::open(holder_pid).expect("pidfd_open on the sandbox holder");
        let net_ns = procs::ns_id(holder_pid, "net").expect("holder net ns");
        let mnt_ns = procs::ns_id(holder_pid, "mnt").expect("holder mnt ns");
        Sandbox {
            handle: SandboxHandle { holder_pid },
            holder,
            unshare,
            holder_stdin,
            new_net: opts.new_net,
            net_ns,
            mnt_ns,
            scratch,
            lxc_paths: Mutex::new(Vec::new()),
            loop_dirs: Mutex::new(Vec::new()),
            keep,
        }
    }

    pub fn handle(&self) -> SandboxHandle {
        self.handle.clone()
    }

    pub fn holder_pid(&self) -> i32 {
        self.handle.holder_pid
    }

    /// Identity of the sandbox's network namespace, e.g. `net:[4026532301]`.
    pub fn net_ns(&self) -> &str {
        &self.net_ns
    }

    pub fn mnt_ns(&self) -> &str {
        &self.mnt_ns
    }

    /// See [`SandboxHandle::command`].
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.handle.command(program)
    }

    /// See [`SandboxHandle::spawn`].
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<SandboxChild> {
        self.handle.spawn(cmd)
    }

    pub fn run<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Output {
        self.handle.run(program, args)
    }

    pub fn run_ok<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> String {
        self.handle.run_ok(program, args)
    }

    pub fn host_path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.handle.host_path(path)
    }

    pub fn lxc_state(&self, lxc_path: &Path, name: &str) -> String {
        self.handle.lxc_state(lxc_path, name)
    }

    /// On drop, containers still running under `lxc_path` are stopped with
    /// `lxc-stop -k` before the namespaces go, so LXC removes their cgroups.
    pub fn track_lxc_path(&self, lxc_path: &Path) {
        self.lxc_paths.lock().unwrap().push(lxc_path.to_path_buf());
    }

    /// On drop, wait for loop devices backed by files under `dir` to auto-detach and
    /// detach any that do not.
    pub fn track_loop_files_under(&self, dir: &Path) {
        self.loop_dirs.lock().unwrap().push(dir.to_path_buf());
    }

    fn print_kept(&self) {
        eprintln!(
            "OSM_TEST_KEEP: sandbox kept: holder pid {pid}; enter it with \
             `nsenter --target {pid} --mount --net --pid`; scratch {scratch}; \
             kill it with `kill -9 {pid}`",
            pid = self.holder_pid(),
            scratch = self.scratch.path().display()
        );
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.keep {
            self.print_kept();
            if let Scratch::Own(t) = &mut self.scratch {
                t.disable_cleanup(true);
            }
            return;
        }
        let stragglers =
            super::sandbox_teardown::stop_containers(&self.handle, &self.lxc_paths.lock().unwrap());

        let _ = self.holder.signal(Signal::SIGKILL);
        drop(self.holder_stdin.take());
        if !wait_until(Duration::from_secs(20), || {
            matches!(self.unshare.try_wait(), Ok(Some(_)))
        }) {
            eprintln!("sandbox: unshare did not exit after its holder was killed");
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
        let mut spaces = vec![("mnt", self.mnt_ns.clone())];
        if self.new_net {
            spaces.push(("net", self.net_ns.clone()));
        }
        for (kind, id) in spaces {
            if !wait_until(Duration::from_secs(10), || {
                procs::pids_in_ns(kind, &id).is_empty()
            }) {
                eprintln!(
                    "sandbox: processes still in {id}: {:?}",
                    procs::pids_in_ns(kind, &id)
                );
            }
        }
        super::sandbox_teardown::remove_stale_cgroups(&stragglers);
        for dir in self.loop_dirs.lock().unwrap().iter() {
            if !wait_until(Duration::from_secs(10), || {
                loop_devices_under(dir).is_empty()
            }) {
                let detached = detach_loop_devices_under(dir);
                eprintln!("sandbox: loop devices did not auto-detach: {detached:?}");
            }
        }
    }
}
