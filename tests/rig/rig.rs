//! [`Rig`]: temp dir + sandbox + private bus + daemon, torn down in order: daemon,
//! running containers (`lxc-stop -k`), bus, sandbox (namespaces, mounts, loop
//! devices), temp dir.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::bus::{BusPolicy, PrivateBus};
use super::daemon::{Daemon, DaemonConfig};
use super::daemon_config::TEST_CACHE_DIR;
use super::sandbox::Sandbox;
use super::{busybox_rootfs_tar, keep_requested, require_root, test_tempdir};

pub const NOBODY: u32 = 65534;

type ConfigEdit = Box<dyn FnOnce(&mut DaemonConfig)>;

pub struct RigBuilder {
    policy: BusPolicy,
    new_net: bool,
    start_daemon: bool,
    ctl_in_sandbox: bool,
    edits: Vec<ConfigEdit>,
}

impl RigBuilder {
    /// The bus lets anyone call any method, so only the daemon can refuse.
    pub fn permissive_policy(mut self) -> Self {
        self.policy = BusPolicy::Permissive;
        self
    }

    /// Share the host's network namespace (only to build a Debian base with
    /// debootstrap). The daemon then runs with `network.manage = false`, so no bridge,
    /// NAT or dnsmasq lands on the host.
    pub fn host_network(mut self) -> Self {
        self.new_net = false;
        self
    }

    /// Write the config but leave starting the daemon to the test.
    pub fn no_daemon_start(mut self) -> Self {
        self.start_daemon = false;
        self
    }

    /// Run `osm-hostctl` in the host's namespaces instead of the sandbox's.
    pub fn ctl_outside_sandbox(mut self) -> Self {
        self.ctl_in_sandbox = false;
        self
    }

    /// Back up to the local directory `target` (`[backup] target`).
    pub fn backup_target(self, target: &Path) -> Self {
        let t = target.display().to_string();
        self.config(move |c| {
            c.set_str("backup.target", &t);
        })
    }

    /// Edit the daemon config before it is written.
    pub fn config(mut self, edit: impl FnOnce(&mut DaemonConfig) + 'static) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    pub fn start(self) -> Rig {
        require_root();
        let dir = test_tempdir("osm-rig-");
        let sandbox = Sandbox::builder()
            .new_net(self.new_net)
            .scratch_in(dir.path())
            .start();
        sandbox.track_loop_files_under(dir.path());
        sandbox.track_lxc_path(&dir.path().join("store/lxc/containers"));
        let bus = PrivateBus::start_in(&sandbox.handle(), dir.path(), self.policy);

        prepare_host_files(dir.path());
        let mut config = DaemonConfig::for_test_dir(dir.path());
        if !self.new_net {
            // The host's own network: never let the daemon put a bridge, NAT or a
            // dnsmasq there.
            config.set("network.manage", "false");
            // Nor a metrics listener on the host's loopback.
            config.set_str("metrics.listen", "");
        }
        for edit in self.edits {
            edit(&mut config);
        }
        let daemon = Daemon::new(sandbox.handle(), bus.address(), dir.path(), &config);
        let mut rig = Rig {
            daemon,
            bus,
            sandbox,
            dir,
            ctl_in_sandbox: self.ctl_in_sandbox,
        };
        if self.start_daemon {
            rig.daemon.start();
        }
        rig
    }
}

/// What the daemon expects to find on a host: a hosts file, snapper's config dir and
/// defaults file, its runtime dir (systemd's RuntimeDirectory=), the base cache.
fn prepare_host_files(dir: &Path) {
    fs::write(dir.join("hosts"), "127.0.0.1\tlocalhost\n").expect("write hosts");
    fs::create_dir_all(dir.join("snapper/configs")).expect("create snapper configs dir");
    fs::write(dir.join("snapper/default"), "SNAPPER_CONFIGS=\"\"\n").expect("snapper default");
    fs::create_dir_all(dir.join("run")).expect("create runtime dir");
    fs::create_dir_all(TEST_CACHE_DIR).expect("create shared base cache dir");
}

pub struct Rig {
    // Field order is drop order.
    daemon: Daemon,
    bus: PrivateBus,
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    ctl_in_sandbox: bool,
}

impl Rig {
    /// Sandbox, real bus policy, daemon started.
    pub fn new() -> Rig {
        Self::builder().start()
    }

    pub fn builder() -> RigBuilder {
        RigBuilder {
            policy: BusPolicy::Real,
            new_net: true,
            start_daemon: true,
            ctl_in_sandbox: true,
            edits: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn store_root(&self) -> PathBuf {
        self.dir().join("store")
    }

    /// LXC's `-P` for the daemon's containers.
    pub fn lxc_path(&self) -> PathBuf {
        self.store_root().join("lxc/containers")
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub fn bus(&self) -> &PrivateBus {
        &self.bus
    }

    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    pub fn daemon_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }

    /// A command running `program` inside the sandbox.
    pub fn in_sandbox(&self, program: impl AsRef<OsStr>) -> Command {
        self.sandbox.command(program)
    }

    /// LXC's state of container `name` (`RUNNING`, `STOPPED`, …), asked inside the
    /// sandbox.
    pub fn lxc_state(&self, name: &str) -> String {
        self.sandbox.lxc_state(&self.lxc_path(), name)
    }

    /// Runs `/bin/sh -c script` inside container `name` with lxc-attach.
    pub fn attach(&self, name: &str, script: &str) -> Output {
        let lxc_path = self.lxc_path();
        self.in_sandbox("lxc-attach")
            .args([
                "-P",
                &lxc_path.to_string_lossy(),
                "-n",
                name,
                "--",
                "/bin/sh",
                "-c",
                script,
            ])
            .output()
            .expect("run lxc-attach")
    }

    /// The daemon's host id (`host info --json`), its directory on a backup target.
    pub fn host_id(&self) -> String {
        let info: serde_json::Value =
            serde_json::from_str(&self.ctl_ok(&["host", "info", "--json"])).unwrap();
        info["host_id"]
            .as_str()
            .expect("host info has host_id")
            .to_string()
    }

    /// `osm-hostctl info NAME --json`, parsed.
    pub fn info_json(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ctl_ok(&["info", name, "--json"])).expect("info --json is JSON")
    }

    /// Builds (once) the busybox image tarball in the rig's dir.
    pub fn busybox_tar(&self) -> PathBuf {
        let tar = self.dir().join("images/busybox-rootfs.tar");
        if !tar.exists() {
            fs::create_dir_all(self.dir().join("images")).expect("create images dir");
            busybox_rootfs_tar(&self.dir().join("images"));
        }
        tar
    }

    /// `osm-hostctl base import <name> <busybox tar>`.
    pub fn import_busybox_base(&self, name: &str) -> String {
        let tar = self.busybox_tar();
        self.ctl_ok(&["base", "import", name, &tar.to_string_lossy()])
    }

    /// The `osm-hostctl args...` command as root, pointed at the private bus.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        self.ctl_command_as(None, args)
    }

    /// Like [`Self::ctl_command`] but as `uid`/`gid` with exactly `groups`, via setpriv.
    pub fn ctl_command_as(&self, who: Option<(u32, u32, &[u32])>, args: &[&str]) -> Command {
        let mut argv: Vec<String> = Vec::new();
        if let Some((uid, gid, groups)) = who {
            argv.push(format!("--reuid={uid}"));
            argv.push(format!("--regid={gid}"));
            if groups.is_empty() {
                argv.push("--clear-groups".into());
            } else {
                let list: Vec<String> = groups.iter().map(u32::to_string).collect();
                argv.push(format!("--groups={}", list.join(",")));
            }
            argv.push(super::ctl_bin().into());
        }
        let program = if who.is_some() {
            "setpriv"
        } else {
            super::ctl_bin()
        };
        let mut cmd = if self.ctl_in_sandbox {
            self.sandbox.command(program)
        } else {
            Command::new(program)
        };
        cmd.args(&argv)
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus.address());
        cmd
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        run(self.ctl_command(args))
    }

    /// Runs the CLI as uid/gid 65534 with no supplementary groups.
    pub fn ctl_as_nobody(&self, args: &[&str]) -> Output {
        run(self.ctl_command_as(Some((NOBODY, NOBODY, &[])), args))
    }

    pub fn ctl_as(&self, uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> Output {
        run(self.ctl_command_as(Some((uid, gid, groups)), args))
    }

    /// Asserts the CLI succeeds and returns its stdout; on failure panics with its
    /// output and the daemon's log tail.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        if !out.status.success() {
            panic!("{}", self.describe_failure(args, &out, "failed"));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Asserts the CLI fails and returns its stderr.
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        if out.status.success() {
            panic!(
                "{}",
                self.describe_failure(args, &out, "succeeded unexpectedly")
            );
        }
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn describe_failure(&self, args: &[&str], out: &Output, what: &str) -> String {
        format!(
            "osm-hostctl {} {what} ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n\
             --- osm-hostd log (tail) ---\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.daemon.log_tail(60)
        )
    }
}

fn run(mut cmd: Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

impl Default for Rig {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if keep_requested() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "OSM_TEST_KEEP: rig kept in {} (config hostd.toml, log osm-hostd.log); \
                 CLI: DBUS_SYSTEM_BUS_ADDRESS={} nsenter --target {} --mount --net --pid {}",
                self.dir().display(),
                self.bus.address(),
                self.sandbox.holder_pid(),
                super::ctl_bin()
            );
        }
        // The fields now drop in order: daemon, bus, sandbox (stops containers, then
        // kills the namespaces), temp dir.
    }
}
