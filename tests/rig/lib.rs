//! The root integration test rig: every `tests/*.rs` suite that needs real containers
//! does `mod common;` and builds a [`Rig`] (or its parts) from here.
//!
//! Each piece is an RAII fixture that cleans up on success, failure and panic:
//!
//! * [`Sandbox`]: a holder process in fresh mount + network + PID namespaces; LXC tools
//!   and the daemon run inside it (LXC's command socket is scoped to the network
//!   namespace: run elsewhere, `lxc-info` reports STOPPED).
//! * [`PrivateBus`]: a `dbus-daemon` with a system-bus-like policy on a path socket.
//! * [`Daemon`]: the real `osm-hostd` binary, started inside the sandbox.
//! * [`Rig`]: all of the above plus a temp dir and CLI helpers, torn down in order.
//!
//! `OSM_TEST_KEEP=1` keeps every fixture alive after the test and prints where it is.
//!
//! Every suite compiles this whole module but uses only part of it, hence the allows.
#![allow(dead_code, unused_imports)]

mod bus;
mod bus_probe;
mod busybox;
mod crash;
mod daemon;
mod daemon_config;
pub mod handmade_lxc;
pub mod leftovers;
pub mod nginx;
mod pidfd;
pub mod procs;
mod rig;
mod sandbox;
mod sandbox_exec;
mod sandbox_teardown;
mod ssh_peer;
pub mod test_host;

pub use bus::{BusPolicy, PrivateBus, BUS_NAME};
pub use bus_probe::{list_names, StandInService};
pub use busybox::busybox_rootfs_tar;
pub use daemon::{Daemon, DaemonConfig};
pub use leftovers::{assert_no_leftovers, leftovers_under};
pub use rig::{Rig, RigBuilder};
pub use sandbox::{Sandbox, SandboxBuilder, SandboxChild, SandboxHandle};
pub use ssh_peer::{SshPeer, SSH_PEER_CLIENT_ADDR, SSH_PEER_SERVER_ADDR};
pub use test_host::{CgroupLayout, TestHost};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Fails the test (never skips it) when it does not run as root.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "root integration tests need root; run them as root (sudo cargo test), \
             they create namespaces, loop devices, bridges and LXC containers. \
             A root test run without root fails on purpose instead of passing by skipping."
        );
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `OSM_TEST_KEEP=1` asks fixtures to leave their state behind for debugging.
pub fn keep_requested() -> bool {
    std::env::var("OSM_TEST_KEEP").is_ok_and(|v| v == "1")
}

/// A fresh temp dir for a test, world-searchable (mode 0755) so that processes running
/// as uid 65534 can reach the bus socket inside it. Kept under `OSM_TEST_KEEP=1`.
pub fn test_tempdir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create test temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod test temp dir");
    if keep_requested() {
        dir.disable_cleanup(true);
        eprintln!(
            "OSM_TEST_KEEP: test dir {} will be kept",
            dir.path().display()
        );
    }
    dir
}

/// The last `lines` lines of a text file, or a note saying why it could not be read.
pub fn file_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// `path` inside the project (`packaging/...`, `base-images/...`).
pub fn project_path(rel: &str) -> PathBuf {
    // This package lives in `<project>/tests`.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package is inside the project")
        .join(rel)
}

/// The `osm-hostd` binary that `cargo build --workspace` put beside this test binary.
pub fn daemon_bin() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| workspace_bin("osm-hostd"))
}

/// The `osm-hostctl` binary that `cargo build --workspace` put beside this test binary.
pub fn ctl_bin() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| workspace_bin("osm-hostctl"))
}

/// Test and bench binaries run from `target/<profile>/deps/`; the workspace's programs
/// are in `target/<profile>/`. A missing one is a setup mistake, said plainly.
fn workspace_bin(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries run from target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace, or --release \
         for benches), as scripts/test.sh does",
        path.display()
    );
    path.to_string_lossy().into_owned()
}
