//! What a test may have left behind on the host: mounts, loop devices and processes
//! that mention its temp dir. Parallel tests use other temp dirs, so they never match.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::procs;

/// Loop devices (`/dev/loopN`, backing file) whose backing file lies under `dir`.
pub fn loop_devices_under(dir: &Path) -> Vec<(String, String)> {
    let prefix = dir.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim().to_string();
        if is_under(&backing, &prefix) {
            found.push((format!("/dev/{name}"), backing));
        }
    }
    found
}

/// Detaches loop devices left over under `dir`; returns what it had to detach.
pub fn detach_loop_devices_under(dir: &Path) -> Vec<String> {
    let mut detached = Vec::new();
    for (dev, backing) in loop_devices_under(dir) {
        let ok = std::process::Command::new("losetup")
            .args(["-d", &dev])
            .status()
            .is_ok_and(|s| s.success());
        detached.push(format!(
            "{dev} ({backing}){}",
            if ok { "" } else { " FAILED" }
        ));
    }
    detached
}

/// Everything on the host that still refers to `dir`: mounts in the host's mount
/// namespace, loop devices backed by files under it, and processes (LXC monitors, the
/// daemon, dnsmasq) whose command line names it.
pub fn leftovers_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
        for line in mounts.lines().filter(|l| l.contains(prefix.as_str())) {
            found.push(format!("mount: {line}"));
        }
    }
    for (dev, backing) in loop_devices_under(dir) {
        found.push(format!("loop device: {dev} -> {backing}"));
    }
    for pid in procs::all_pids() {
        if let Some(cmd) = procs::cmdline(pid) {
            if cmd.contains(prefix.as_str()) {
                found.push(format!("process {pid}: {cmd}"));
            }
        }
    }
    found
}

/// Panics unless nothing under `dir` is left within a few seconds (loop devices detach
/// asynchronously once the last mount of their filesystem is gone).
pub fn assert_no_leftovers(dir: &Path) {
    let mut last = Vec::new();
    let clean = super::wait_until(Duration::from_secs(10), || {
        last = leftovers_under(dir);
        last.is_empty()
    });
    assert!(
        clean,
        "left behind under {}:\n{}",
        dir.display(),
        last.join("\n")
    );
}

fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}
