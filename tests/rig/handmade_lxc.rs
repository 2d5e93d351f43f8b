//! LXC containers made by hand, without the daemon: for testing the rig itself and for
//! tests that need a container the daemon did not create (e.g. adoption).

use std::fs;
use std::path::{Path, PathBuf};

use super::sandbox_exec::SandboxHandle;

/// Creates (if missing) and brings up bridge `name` inside the sandbox.
pub fn add_bridge(inside: &SandboxHandle, name: &str) {
    let links = inside.run_ok("ip", &["-o", "link", "show"]);
    if !links.contains(&format!(": {name}:")) {
        inside.run_ok("ip", &["link", "add", name, "type", "bridge"]);
    }
    inside.run_ok("ip", &["link", "set", name, "up"]);
}

/// Unpacks `tar` into the existing dir `into`, inside the sandbox (so it works on
/// filesystems mounted only there).
pub fn unpack_tar(inside: &SandboxHandle, tar: &Path, into: &Path) {
    let (tar, into) = (tar.to_string_lossy(), into.to_string_lossy());
    inside.run_ok("tar", &["--numeric-owner", "-xpf", &tar, "-C", &into]);
}

/// A minimal privileged LXC config for a busybox root at `rootfs`, with a veth on
/// `lxcbr0` and its log at `<lxc_path>/<name>/lxc.log`. No AppArmor on the test
/// machines (a production Debian host has it; the daemon detects it), hence `unconfined`.
pub fn busybox_lxc_config(lxc_path: &Path, name: &str, rootfs: &Path) -> String {
    format!(
        "lxc.uts.name = {name}\n\
         lxc.rootfs.path = dir:{rootfs}\n\
         lxc.net.0.type = veth\n\
         lxc.net.0.link = lxcbr0\n\
         lxc.net.0.flags = up\n\
         lxc.apparmor.profile = unconfined\n\
         lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed\n\
         lxc.autodev = 1\n\
         lxc.log.file = {log}\n\
         lxc.log.level = INFO\n",
        rootfs = rootfs.display(),
        log = lxc_path.join(name).join("lxc.log").display(),
    )
}

/// The host cgroups LXC made for container `name` that still exist (LXC removes them
/// when it stops a container; a container killed with its namespaces leaves them).
pub fn lxc_cgroups_of(name: &str) -> Vec<PathBuf> {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for h in hierarchies.flatten() {
        for prefix in ["lxc.payload.", "lxc.monitor."] {
            let cg = h.path().join(format!("{prefix}{name}"));
            if cg.exists() {
                found.push(cg);
            }
        }
    }
    found
}
