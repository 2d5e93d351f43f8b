//! Root integration: customers' containers are unprivileged and confined. A root shell
//! inside a busybox container (lxc-attach) tries to break out and fails; from the
//! host, its processes run in its own id range, apart from every other container's.

use rig::{require_root, wait_until, Rig};
use std::process::Output;
use std::time::Duration;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `script` as root inside `name`; returns (exit code, stdout + stderr).
fn inside(rig: &Rig, name: &str, script: &str) -> (i32, String) {
    let out = rig.attach(name, script);
    (out.status.code().unwrap_or(-1), text(&out))
}

/// Asserts `script` fails inside `name`, and returns what it printed.
fn refused(rig: &Rig, name: &str, what: &str, script: &str) -> String {
    let (code, out) = inside(rig, name, script);
    assert_ne!(code, 0, "{what} succeeded inside {name}: {out}");
    out
}

/// A field of `/proc/<pid>/status` (e.g. `Uid`), read in the sandbox's pid namespace.
fn proc_status(rig: &Rig, pid: u64, field: &str) -> Vec<u64> {
    let out = rig
        .in_sandbox("cat")
        .arg(format!("/proc/{pid}/status"))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status: {status}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

fn start_two(rig: &Rig) {
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "c1", "--base", "bb"]);
    rig.ctl_ok(&["create", "c2", "--base", "bb"]);
    rig.ctl_ok(&["start", "c1"]);
    rig.ctl_ok(&["start", "c2"]);
}

#[test]
fn root_in_a_container_cannot_reach_the_host() {
    require_root();
    let rig = Rig::new();
    start_two(&rig);
    let host_core = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();

    // The kernel's core pattern is the host's: not writable, directly or via a new /proc.
    refused(
        &rig,
        "c1",
        "writing core_pattern",
        "echo '|/bin/sh -c id' > /proc/sys/kernel/core_pattern",
    );
    // Root of its own user namespace may mount a proc of its own pid namespace (as in
    // every unprivileged container); what it shows is still not the host's to change.
    for (what, script) in [
        (
            "writing core_pattern through a new proc",
            "mkdir -p /tmp/q; mount -t proc proc /tmp/q; echo '|/bin/sh' > /tmp/q/sys/kernel/core_pattern",
        ),
        (
            "triggering sysrq through a new proc",
            "mkdir -p /tmp/q; mount -t proc proc /tmp/q 2>/dev/null; echo h > /tmp/q/sysrq-trigger",
        ),
        (
            "setting a uevent helper through a new sysfs",
            "mkdir -p /tmp/s; mount -t sysfs sysfs /tmp/s; echo /bin/sh > /tmp/s/kernel/uevent_helper",
        ),
        (
            "remounting /proc/sys writable",
            "mount -o remount,rw /proc/sys && echo '|/bin/sh' > /proc/sys/kernel/core_pattern",
        ),
    ] {
        refused(&rig, "c1", what, script);
    }
    let (_, seen) = inside(&rig, "c1", "ls -d /tmp/q/[0-9]* | wc -l");
    assert!(
        seen.trim().parse::<u32>().unwrap_or(0) < 10,
        "a new proc shows host processes: {seen}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        host_core
    );

    // No block devices, no kernel modules, no kernel log.
    let out = refused(
        &rig,
        "c1",
        "mknod of a block device",
        "mknod /tmp/sda b 8 0",
    );
    assert!(out.contains("not permitted"), "{out}");
    let out = refused(
        &rig,
        "c1",
        "loading a module",
        "head -c 64 /dev/zero > /tmp/m.ko && insmod /tmp/m.ko",
    );
    assert!(out.contains("not permitted"), "{out}");
    refused(&rig, "c1", "reading /dev/kmsg", "head -c 1 /dev/kmsg");
    refused(&rig, "c1", "reading the kernel log", "dmesg");

    // Only its own processes: its init is pid 1 and the daemon is not there.
    let (code, procs) = inside(
        &rig,
        "c1",
        "for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done",
    );
    assert_eq!(code, 0, "{procs}");
    assert!(
        !procs.contains("osm-hostd") && !procs.contains("dbus-daemon"),
        "{procs}"
    );
    let (_, count) = inside(&rig, "c1", "ls -d /proc/[0-9]* | wc -l");
    assert!(count.trim().parse::<u32>().unwrap() < 10, "{count}");

    // Root inside is root of its own tree: the shared base shows as its own files.
    let (_, owner) = inside(&rig, "c1", "stat -c %u:%g /bin/busybox");
    assert_eq!(owner.trim(), "0:0");
}

#[test]
fn containers_run_in_separate_unprivileged_id_ranges_and_reach_the_host() {
    require_root();
    let rig = Rig::new();
    start_two(&rig);
    let mut ranges = Vec::new();
    for name in ["c1", "c2"] {
        let info = rig.info_json(name);
        assert_eq!(info["privileged"], false, "{info}");
        let base = info["id_map_base"].as_u64().unwrap();
        assert!(base >= 100_000, "{info}");
        let pid = info["init_pid"].as_u64().unwrap();
        // Its init runs as host uid/gid `base`: the container's root.
        assert_eq!(proc_status(&rig, pid, "Uid"), vec![base; 4], "{name}");
        assert_eq!(proc_status(&rig, pid, "Gid"), vec![base; 4], "{name}");
        // A file root creates inside is stored in its range on the host.
        let (code, out) = inside(
            &rig,
            name,
            "echo hi > /root/mine && chown 1000:1000 /root/mine",
        );
        assert_eq!(code, 0, "{out}");
        let upper = rig
            .sandbox()
            .host_path(rig.lxc_path().join(name).join("rootfs-layer/root/mine"));
        let md = std::fs::metadata(&upper).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (md.uid(), md.gid()),
            (base as u32 + 1000, base as u32 + 1000)
        );
        ranges.push(base);
    }
    assert!(ranges[0].abs_diff(ranges[1]) >= 65536, "{ranges:?} overlap");

    // list and info say they are unprivileged; a privileged one is marked.
    rig.ctl_ok(&["create", "old", "--base", "bb", "--privileged"]);
    let list = rig.ctl_ok(&["list"]);
    assert!(list.contains("old [privileged]"), "{list}");
    assert!(!list.contains("c1 [privileged]"), "{list}");
    assert!(rig.ctl_ok(&["info", "old"]).contains("PRIVILEGED"));
    assert!(rig
        .ctl_ok(&["info", "c1"])
        .contains("unprivileged (host ids"));

    // The network still works: a DHCP lease, then the host's bridge address.
    for name in ["c1", "c2"] {
        let ip = rig.info_json(name)["ipv4_address"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            wait_until(Duration::from_secs(15), || inside(
                &rig,
                name,
                "ip -4 addr show dev eth0"
            )
            .1
            .contains(&format!("inet {ip}/24"))),
            "{name} got no address: {}",
            inside(&rig, name, "ip addr").1
        );
        let (code, out) = inside(&rig, name, "ping -c 1 -W 3 10.0.3.1");
        assert_eq!(code, 0, "{name} cannot reach the bridge: {out}");
    }

    // Stopping unmounts its tree; the stopped container leaves no mount behind.
    rig.ctl_ok(&["stop", "c1", "--force"]);
    let mounts = rig.sandbox().run_ok("cat", &["/proc/self/mountinfo"]);
    assert!(!mounts.contains("/run/rootfs/c1"), "{mounts}");
    assert!(mounts.contains("/run/rootfs/c2"), "{mounts}");
    rig.ctl_ok(&["delete", "c2", "--force"]);
    let mounts = rig.sandbox().run_ok("cat", &["/proc/self/mountinfo"]);
    assert!(!mounts.contains("/run/rootfs/"), "{mounts}");
}

#[test]
fn snapshots_restore_the_ownership_the_container_sees() {
    require_root();
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["start", "web1"]);
    let (code, out) = inside(
        &rig,
        "web1",
        "mkdir -p /srv/site && echo v1 > /srv/site/index && chown -R 33:33 /srv/site && rm /bin/vi",
    );
    assert_eq!(code, 0, "{out}");
    let num = rig
        .ctl_ok(&["snapshot", "create", "web1"])
        .trim()
        .to_string();
    let (code, out) = inside(
        &rig,
        "web1",
        "echo v2 > /srv/site/index && chown -R 0:0 /srv/site",
    );
    assert_eq!(code, 0, "{out}");
    rig.ctl_ok(&["snapshot", "restore", "web1", &num]);
    assert!(wait_until(Duration::from_secs(10), || rig
        .info_json("web1")["state"]
        == "running"));
    let (code, out) = inside(
        &rig,
        "web1",
        "cat /srv/site/index; stat -c %u:%g /srv/site /srv/site/index; test -e /bin/vi || echo gone",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "v1\n33:33\n33:33\ngone\n");
}

#[test]
fn mounts_follow_the_container_not_the_daemon() {
    require_root();
    let mut rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["start", "web1"]);
    let pid = rig.info_json("web1")["init_pid"].as_u64().unwrap();
    rig.daemon_mut().restart();
    // Adopted, not unmounted: it keeps working and writing.
    assert_eq!(rig.info_json("web1")["init_pid"].as_u64(), Some(pid));
    let (code, out) = inside(&rig, "web1", "echo ok > /root/after && cat /root/after");
    assert_eq!((code, out.as_str()), (0, "ok\n"));
    // It stops behind the daemon's back: the reconcile or the pidfd watch unmounts.
    let lxc_path = rig.lxc_path();
    rig.sandbox().run_ok(
        "lxc-stop",
        &["-P", &lxc_path.to_string_lossy(), "-n", "web1", "-k"],
    );
    assert!(
        wait_until(Duration::from_secs(15), || !rig
            .sandbox()
            .run_ok("cat", &["/proc/self/mountinfo"])
            .contains("/run/rootfs/web1")),
        "the tree of a stopped container stayed mounted"
    );
    // It stops while the daemon is away: the next daemon unmounts what it left.
    rig.ctl_ok(&["start", "web1"]);
    rig.daemon_mut().stop();
    rig.sandbox().run_ok(
        "lxc-stop",
        &["-P", &lxc_path.to_string_lossy(), "-n", "web1", "-k"],
    );
    let mounted = |rig: &Rig| {
        rig.sandbox()
            .run_ok("cat", &["/proc/self/mountinfo"])
            .contains("/run/rootfs/web1")
    };
    assert!(
        mounted(&rig),
        "nothing unmounted it while the daemon was away"
    );
    rig.daemon_mut().start();
    assert!(wait_until(Duration::from_secs(10), || !mounted(&rig)));
    rig.ctl_ok(&["start", "web1"]);
    let (_, out) = inside(&rig, "web1", "cat /root/after");
    assert_eq!(out, "ok\n");
}
