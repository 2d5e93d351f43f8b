//! Best-effort container teardown before a sandbox's namespaces are killed.

use std::fs;
use std::path::{Path, PathBuf};

use super::handmade_lxc::lxc_cgroups_of;
use super::sandbox_exec::SandboxHandle;

/// Stops (`lxc-stop -k`) every running container under `lxc_paths`, inside the
/// sandbox. Returns the names that would not stop; killing the namespaces will take
/// them down, but LXC then leaves their cgroups behind.
pub fn stop_containers(inside: &SandboxHandle, lxc_paths: &[PathBuf]) -> Vec<String> {
    let mut stragglers = Vec::new();
    for path in lxc_paths {
        for name in running(inside, path) {
            let out = inside
                .command("lxc-stop")
                .arg("-P")
                .arg(path)
                .args(["-n", &name, "-k"])
                .output();
            let ok = out.as_ref().is_ok_and(|o| o.status.success());
            if !ok || inside.lxc_state(path, &name) != "STOPPED" {
                eprintln!("sandbox teardown: lxc-stop -k {name} failed: {out:?}");
                stragglers.push(name);
            }
        }
    }
    stragglers
}

fn running(inside: &SandboxHandle, lxc_path: &Path) -> Vec<String> {
    let out = inside
        .command("lxc-ls")
        .arg("-P")
        .arg(lxc_path)
        .args(["--running", "-1"])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Removes the (now empty) LXC cgroups of containers that died with the namespaces
/// instead of being stopped by LXC.
pub fn remove_stale_cgroups(names: &[String]) {
    for name in names {
        for cg in lxc_cgroups_of(name) {
            remove_cgroup_tree(&cg);
            eprintln!("sandbox teardown: removed stale cgroup {}", cg.display());
        }
    }
}

/// cgroupfs only lets empty leaves go: remove children first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}
