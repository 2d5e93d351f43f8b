//! [`TestHost`]: a whole Debian 12 machine with systemd as PID 1, run as a privileged
//! LXC container inside a [`Sandbox`], for end-to-end tests of the installed package.
//!
//! * Its root filesystem comes from `tests/recipes/test-host.toml`, built once with
//!   debootstrap (through the daemon's own `build_rootfs`) and cached by the recipe's
//!   hash in the shared test cache; every run unpacks a fresh copy.
//! * Its store is a Btrfs image loop-mounted in the sandbox and bind-mounted at
//!   `/srv/osm-lxc` inside, so no loop device is needed in the test host; the files on
//!   it stay readable from the test while the test host is powered off.
//! * It has no network interface but loopback: the bridge, dnsmasq and the nested
//!   containers the installed daemon makes live in the test host's own network
//!   namespace, inside the sandbox's.
//! * Nesting: see [`CgroupLayout`] for how the test host sees cgroups.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::daemon_config::TEST_CACHE_DIR;
use super::sandbox::Sandbox;
use super::{file_tail, keep_requested, project_path, test_tempdir, wait_until};

pub const TEST_HOST_RECIPE: &str = "tests/recipes/test-host.toml";
const NAME: &str = "osm-test-host";

/// How the machine running the tests mounts cgroups, which decides what the test host
/// (and the containers nested in it) can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupLayout {
    /// Only cgroup2 at `/sys/fs/cgroup` (Debian 12's default): the test host gets its
    /// own delegated cgroup2 subtree, controllers included (`lxc.mount.auto = cgroup:rw`).
    Unified,
    /// cgroup v1 controllers plus cgroup2 at `/sys/fs/cgroup/unified` (our machines).
    /// The test host gets a cgroup2 mount only (of its own cgroup namespace): systemd
    /// inside runs in unified mode and the nested LXC uses cgroup2 alone. Every v1
    /// controller is bound to a v1 hierarchy on such a machine, so that cgroup2 has no
    /// controllers: nested containers run, without memory or CPU limits.
    Hybrid,
}

impl CgroupLayout {
    pub fn of_this_machine() -> CgroupLayout {
        match nix::sys::statfs::statfs("/sys/fs/cgroup") {
            Ok(s) if s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => {
                CgroupLayout::Unified
            }
            _ => CgroupLayout::Hybrid,
        }
    }
}

/// The test host's root filesystem from the cached recipe build, unpacked into the empty
/// dir `dest`. On a cold cache debootstrap runs here, in the machine's own network
/// namespace, to reach Debian's mirror (a few minutes, once).
pub fn unpack_test_host_rootfs(dest: &Path) {
    let bases = Path::new(TEST_CACHE_DIR).join("bases");
    let text = fs::read_to_string(project_path(TEST_HOST_RECIPE)).expect("read test host recipe");
    let recipe = osm_hostd::base::Recipe::parse(&text).expect("test host recipe parses");
    let cached = bases.join(format!("{}.tar.zst", recipe.cache_key()));
    fs::create_dir_all(&bases).expect("create test base cache");
    let t = Instant::now();
    let mut last = String::new();
    osm_hostd::base::build_rootfs(&recipe, dest, &bases, &mut |_, msg| {
        if msg != last {
            eprintln!("test host rootfs: {msg}");
            last = msg.to_string();
        }
    })
    .unwrap_or_else(|e| panic!("building the test host rootfs from {TEST_HOST_RECIPE}: {e}"));
    eprintln!(
        "test host rootfs ready in {:?} (cache {})",
        t.elapsed(),
        cached.display()
    );
}

pub struct TestHost {
    // Field order is drop order: the sandbox stops the test host, then goes.
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    layout: CgroupLayout,
}

impl TestHost {
    /// Unpacks the root filesystem, makes a Btrfs store of `store_size`, writes the LXC
    /// config; does not boot. Add files (the package, test images) under
    /// [`Self::rootfs`] before [`Self::boot`].
    pub fn create(store_size: &str) -> TestHost {
        super::require_root();
        let dir = test_tempdir("osm-test-host-");
        let rootfs = dir.path().join("rootfs");
        unpack_test_host_rootfs(&rootfs);
        let sandbox = Sandbox::builder().scratch_in(dir.path()).start();
        sandbox.track_loop_files_under(dir.path());
        sandbox.track_lxc_path(&dir.path().join("lxc"));

        let img = dir.path().join("store.img");
        let store = dir.path().join("store");
        fs::create_dir_all(&store).expect("create store mount point");
        let out = Command::new("truncate")
            .args(["-s", store_size])
            .arg(&img)
            .output()
            .expect("truncate");
        assert!(out.status.success(), "truncate: {out:?}");
        sandbox.run_ok("mkfs.btrfs", &["-q".as_ref(), img.as_os_str()]);
        sandbox.run_ok(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                img.as_os_str(),
                store.as_os_str(),
            ],
        );

        let layout = CgroupLayout::of_this_machine();
        let host = TestHost {
            sandbox,
            dir,
            layout,
        };
        fs::create_dir_all(host.lxc_path().join(NAME)).expect("create test host lxc dir");
        fs::write(host.lxc_path().join(NAME).join("config"), host.lxc_config())
            .expect("write test host LXC config");
        host
    }

    pub fn layout(&self) -> CgroupLayout {
        self.layout
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The test host's `/`, as a directory of the machine running the tests.
    pub fn rootfs(&self) -> PathBuf {
        self.dir().join("rootfs")
    }

    /// The test host's `/srv/osm-lxc` (its store), readable from the test (through the
    /// sandbox's mount namespace) whether the test host runs or not.
    pub fn store(&self) -> PathBuf {
        self.sandbox.host_path(self.dir().join("store"))
    }

    fn lxc_path(&self) -> PathBuf {
        self.dir().join("lxc")
    }

    fn lxc_config(&self) -> String {
        let cgroups = match self.layout {
            CgroupLayout::Unified => "lxc.mount.auto = proc:rw sys:rw cgroup:rw\n".to_string(),
            CgroupLayout::Hybrid => "lxc.mount.auto = proc:rw sys:rw\n\
                 lxc.mount.entry = cgroup2 sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
                .to_string(),
        };
        format!(
            "lxc.uts.name = {NAME}\n\
             lxc.rootfs.path = dir:{rootfs}\n\
             lxc.net.0.type = empty\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.apparmor.allow_nesting = 1\n\
             {cgroups}\
             lxc.autodev = 1\n\
             lxc.tty.max = 0\n\
             lxc.pty.max = 64\n\
             lxc.signal.halt = SIGRTMIN+3\n\
             lxc.signal.reboot = SIGTERM\n\
             lxc.mount.entry = {store} srv/osm-lxc none bind,create=dir 0 0\n\
             lxc.mount.entry = /dev/net/tun dev/net/tun none bind,create=file,optional 0 0\n\
             lxc.log.file = {log}\n\
             lxc.log.level = INFO\n",
            rootfs = self.rootfs().display(),
            store = self.dir().join("store").display(),
            log = self.dir().join("test-host-lxc.log").display(),
        )
    }

    /// Boots the test host and waits until systemd says the system is up
    /// (`running`, or `degraded` with the failed units printed).
    pub fn boot(&self) {
        let t = Instant::now();
        let out = self.lxc("lxc-start").args(["-n", NAME]).output().unwrap();
        assert!(
            out.status.success(),
            "lxc-start of the test host failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            file_tail(&self.dir().join("test-host-lxc.log"), 40)
        );
        let mut state = String::new();
        let up = wait_until(Duration::from_secs(120), || {
            let out = self.run(&["systemctl", "is-system-running"]);
            state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            state == "running" || state == "degraded"
        });
        if !up || state != "running" {
            let failed = self.run(&["systemctl", "--failed", "--no-pager"]);
            eprintln!(
                "test host boot: systemd is {state:?}; failed units:\n{}",
                String::from_utf8_lossy(&failed.stdout)
            );
        }
        assert!(
            up,
            "the test host did not boot in 120 s (systemd: {state:?})"
        );
        eprintln!("test host booted in {:?} ({state})", t.elapsed());
    }

    /// `systemctl poweroff` inside, then waits for LXC to see the test host stopped.
    pub fn power_off(&self) {
        let t = Instant::now();
        let _ = self.run(&["systemctl", "poweroff"]);
        let off = wait_until(Duration::from_secs(180), || self.state() == "STOPPED");
        assert!(
            off,
            "the test host did not power off in 180 s: {}",
            self.state()
        );
        eprintln!("test host powered off in {:?}", t.elapsed());
    }

    /// LXC's state of the test host (`RUNNING`, `STOPPED`, ...).
    pub fn state(&self) -> String {
        self.sandbox.lxc_state(&self.lxc_path(), NAME)
    }

    fn lxc(&self, tool: &str) -> Command {
        let mut cmd = self.sandbox.command(tool);
        cmd.arg("-P").arg(self.lxc_path());
        cmd
    }

    /// A command running `argv` inside the test host as root, with a clean login-like
    /// environment (what an operator's shell would have).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = self.lxc("lxc-attach");
        cmd.args(["-n", NAME, "--clear-env"])
            .args([
                "--set-var",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ])
            .args(["--set-var", "LANG=C.UTF-8"])
            .arg("--")
            .args(argv);
        cmd
    }

    pub fn run(&self, argv: &[&str]) -> Output {
        self.command(argv)
            .output()
            .unwrap_or_else(|e| panic!("cannot run lxc-attach {argv:?}: {e}"))
    }

    /// `sh -c script` inside the test host as root.
    pub fn sh(&self, script: &str) -> Output {
        self.run(&["/bin/sh", "-c", script])
    }

    /// Like [`Self::sh`], panicking with its output unless it succeeds; returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in the test host: {script}\nfailed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n\
             --- journal (tail) ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.journal_tail(40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last `lines` lines of the test host's journal (for failure messages).
    pub fn journal_tail(&self, lines: usize) -> String {
        let out = self.run(&[
            "journalctl",
            "--no-pager",
            "-o",
            "short-precise",
            "-n",
            &lines.to_string(),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if keep_requested() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "OSM_TEST_KEEP: test host kept in {}; enter it with `nsenter --target {} \
                 --mount --net --pid lxc-attach -P {} -n {NAME}`",
                self.dir().display(),
                self.sandbox.holder_pid(),
                self.lxc_path().display()
            );
        }
    }
}

/// The project's Debian package for this version, `target/debian/osm-host_<version>-*.deb`
/// as `scripts/build-deb.sh` leaves it (scripts/test.sh builds it before the tests);
/// built here when missing or older than the daemon's, the CLI's or the packaging's
/// sources. `OSM_TEST_DEB=<path>` picks another file.
pub fn project_deb() -> PathBuf {
    if let Some(path) = std::env::var_os("OSM_TEST_DEB") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "OSM_TEST_DEB={} is not a file",
            path.display()
        );
        return path;
    }
    let dir = project_path("target/debian");
    let prefix = format!("osm-host_{}-", env!("CARGO_PKG_VERSION"));
    let find = || {
        fs::read_dir(&dir).ok().and_then(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.starts_with(&prefix) && n.ends_with(".deb")
                    })
                })
                .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        })
    };
    let sources = newest_mtime(&[
        "packaging",
        "osm-hostd/src",
        "osm-hostd/bus/src",
        "osm-hostd/Cargo.toml",
        "osm-hostctl/src",
    ]);
    match find() {
        Some(deb) if fs::metadata(&deb).and_then(|m| m.modified()).ok() >= sources => {
            eprintln!("package under test: {}", deb.display());
            return deb;
        }
        Some(deb) => eprintln!(
            "{} is older than the sources: running scripts/build-deb.sh",
            deb.display()
        ),
        None => eprintln!(
            "no {prefix}*.deb in {}: running scripts/build-deb.sh",
            dir.display()
        ),
    }
    let out = Command::new("bash")
        .arg(project_path("scripts/build-deb.sh"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run scripts/build-deb.sh");
    assert!(
        out.status.success(),
        "scripts/build-deb.sh failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    find().expect("scripts/build-deb.sh built the package into target/debian")
}

/// The newest modification time of the files under the project paths `rels`.
fn newest_mtime(rels: &[&str]) -> Option<std::time::SystemTime> {
    fn walk(path: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(md) = fs::symlink_metadata(path) else {
            return;
        };
        if md.is_dir() {
            for e in fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&e.path(), newest);
            }
        } else if let Ok(t) = md.modified() {
            *newest = (*newest).max(Some(t));
        }
    }
    let mut newest = None;
    for rel in rels {
        walk(&project_path(rel), &mut newest);
    }
    newest
}

/// A copy of `deb` whose version has `suffix` appended (so apt takes it as an upgrade),
/// written into `dir`: the same build repacked with `dpkg-deb`.
pub fn repack_deb_with_version(deb: &Path, suffix: &str, dir: &Path) -> PathBuf {
    let tree = dir.join("repack");
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run dpkg-deb");
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    };
    run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control_path = tree.join("DEBIAN/control");
    let control = fs::read_to_string(&control_path).expect("read DEBIAN/control");
    let control: String = control
        .lines()
        .map(|l| match l.strip_prefix("Version: ") {
            Some(v) => format!("Version: {v}{suffix}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    fs::write(&control_path, control).expect("write DEBIAN/control");
    let out = dir.join("osm-host-upgrade.deb");
    run(Command::new("dpkg-deb")
        .args(["-b", "-Zgzip"])
        .arg(&tree)
        .arg(&out));
    fs::remove_dir_all(&tree).expect("remove repack tree");
    out
}
