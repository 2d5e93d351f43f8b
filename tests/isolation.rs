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
    // The store is root's alone (0700): a container's mapped root never needs it.
    use std::os::unix::fs::PermissionsExt;
    for p in [
        rig.store_root(),
        rig.lxc_path(),
        rig.lxc_path().join("c1"),
        rig.lxc_path().join("c2"),
    ] {
        let p = rig.sandbox().host_path(p);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
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

fn container_dir(rig: &Rig, name: &str) -> std::path::PathBuf {
    rig.sandbox().host_path(rig.lxc_path().join(name))
}

fn xattr(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings; buf is writable for its length.
    let len =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn set_xattr(p: &std::path::Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings; value is readable for its length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name} on {}", p.display());
}

/// A POSIX ACL (xattr layout, version 2) giving user `uid` read access.
fn acl_for_user(uid: u32) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, uid),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A privileged container whose upper layer holds every kind of marker: owners, a
/// set-uid file, a whiteout, an opaque dir, an ACL and a file capability; stopped.
fn privileged_with_markers(rig: &Rig, name: &str) {
    rig.ctl_ok(&["create", name, "--base", "bb", "--privileged"]);
    rig.ctl_ok(&["start", name]);
    let (code, out) = inside(
        rig,
        name,
        "mkdir -p /srv/site && echo hi > /srv/site/index && chown -R 33:33 /srv/site && \
         mkdir -p /usr/bin && cp /bin/busybox /usr/bin/suid && chmod 4755 /usr/bin/suid && \
         cp /bin/busybox /usr/bin/capped && rm /bin/vi && rm -rf /etc/init.d && \
         mkdir /etc/init.d && echo new > /etc/init.d/rcS && sync",
    );
    assert_eq!(code, 0, "{out}");
    rig.ctl_ok(&["stop", name, "--force"]);
    let upper = container_dir(rig, name).join("rootfs-layer");
    set_xattr(
        &upper.join("srv/site/index"),
        "system.posix_acl_access",
        &acl_for_user(1000),
    );
    // cap_net_bind_service, permitted + effective, revision 2.
    let mut caps = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
    caps.extend_from_slice(&[0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    set_xattr(&upper.join("usr/bin/capped"), "security.capability", &caps);
}

fn is_converted(rig: &Rig, name: &str) -> bool {
    let spec = std::fs::read_to_string(container_dir(rig, name).join("container.toml")).unwrap();
    spec.contains("[idmap]")
}

/// The converted container shows every marker as before, from inside and on disk.
fn assert_converted(rig: &Rig, name: &str) {
    use std::os::unix::fs::MetadataExt;
    let info = rig.info_json(name);
    assert_eq!(info["privileged"], false, "{info}");
    let base = info["id_map_base"].as_u64().unwrap() as u32;
    let upper = container_dir(rig, name).join("rootfs-layer");
    let md = std::fs::metadata(upper.join("srv/site/index")).unwrap();
    assert_eq!((md.uid(), md.gid()), (base + 33, base + 33));
    assert_eq!(
        xattr(&upper.join("srv/site/index"), "system.posix_acl_access").unwrap(),
        acl_for_user(base + 1000),
        "the ACL's user entry moved with the range"
    );
    let caps = xattr(&upper.join("usr/bin/capped"), "security.capability").unwrap();
    assert_eq!(caps.len(), 24, "revision 3");
    assert_eq!(
        &caps[20..],
        &base.to_le_bytes(),
        "owned by the container's root"
    );
    let wo = std::fs::symlink_metadata(upper.join("bin/vi")).unwrap();
    assert_eq!(wo.rdev(), 0, "whiteout kept");
    assert_eq!(
        xattr(&upper.join("etc/init.d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    rig.ctl_ok(&["start", name]);
    let (code, out) = inside(
        rig,
        name,
        "stat -c %u:%g /srv/site/index; stat -c %a /usr/bin/suid; ls /etc/init.d; \
         test -e /bin/vi || echo gone; cat /srv/site/index",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "33:33\n4755\nrcS\ngone\nhi\n");
    rig.ctl_ok(&["stop", name, "--force"]);
}

fn assert_unconverted(rig: &Rig, name: &str) {
    use std::os::unix::fs::MetadataExt;
    assert_eq!(rig.info_json(name)["privileged"], true);
    let upper = container_dir(rig, name).join("rootfs-layer");
    let md = std::fs::metadata(upper.join("srv/site/index")).unwrap();
    assert_eq!((md.uid(), md.gid()), (33, 33), "untouched");
    assert_eq!(
        xattr(&upper.join("srv/site/index"), "system.posix_acl_access").unwrap(),
        acl_for_user(1000)
    );
    assert_eq!(
        std::fs::metadata(upper.join("usr/bin/suid"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );
}

#[test]
fn a_privileged_container_is_converted_keeping_what_it_sees() {
    require_root();
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    privileged_with_markers(&rig, "old");
    let list = rig.ctl_ok(&["list"]);
    assert!(list.contains("old [privileged]"), "{list}");
    let before = rig
        .ctl_ok(&["snapshot", "create", "old"])
        .trim()
        .to_string();

    // Running: refused, nothing changes.
    rig.ctl_ok(&["start", "old"]);
    let out = rig.ctl(&["set", "old", "--unprivileged"]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert!(text(&out).contains("stop it first"), "{out:?}");
    rig.ctl_ok(&["stop", "old", "--force"]);

    rig.ctl_ok(&["set", "old", "--unprivileged"]);
    assert!(!rig.ctl_ok(&["list"]).contains("[privileged]"));
    assert_converted(&rig, "old");
    // A safety snapshot of the privileged state was kept.
    let snaps = rig.ctl_ok(&["snapshot", "list", "old"]);
    assert!(
        snaps.contains("before the conversion to unprivileged"),
        "{snaps}"
    );
    // A snapshot from before the conversion is refused, not restored half-right.
    let out = rig.ctl(&["snapshot", "restore", "old", &before]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert!(text(&out).contains("before old was converted"), "{out:?}");
    assert!(is_converted(&rig, "old"));
    // Converting again changes nothing.
    rig.ctl_ok(&["set", "old", "--unprivileged"]);

    // An upper layer with an id outside 0-65535: a clear error, nothing done.
    rig.ctl_ok(&["create", "odd", "--base", "bb", "--privileged"]);
    rig.ctl_ok(&["start", "odd"]);
    inside(
        &rig,
        "odd",
        "echo x > /root/far && chown 70000 /root/far && sync",
    );
    rig.ctl_ok(&["stop", "odd", "--force"]);
    let out = rig.ctl(&["set", "odd", "--unprivileged"]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert!(
        text(&out).contains("owned by 70000") && text(&out).contains("outside"),
        "{out:?}"
    );
    assert_eq!(rig.info_json("odd")["privileged"], true);
    assert!(rig.ctl_ok(&["snapshot", "list", "odd"]).lines().count() <= 1);
}

#[test]
fn a_daemon_killed_at_any_conversion_step_leaves_the_old_or_the_converted_container() {
    require_root();
    let mut rig = Rig::new();
    rig.import_busybox_base("bb");
    for step in [
        "journal",
        "safety",
        "staged",
        "moved",
        "exchanged",
        "cleaned",
    ] {
        let name = format!("m-{step}");
        privileged_with_markers(&rig, &name);
        rig.kill_daemon_at(step, &["set", &name, "--unprivileged"]);

        let containers = container_dir(&rig, &name).parent().unwrap().to_path_buf();
        let leftovers: Vec<String> = std::fs::read_dir(&containers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("m-"))
            .collect();
        assert!(leftovers.is_empty(), "{step}: {leftovers:?}");
        let snaps = rig.ctl_ok(&["snapshot", "list", &name]);
        if ["moved", "exchanged", "cleaned"].contains(&step) {
            assert!(
                is_converted(&rig, &name),
                "{step}: the conversion was finished"
            );
            assert_converted(&rig, &name);
        } else {
            assert!(
                !is_converted(&rig, &name),
                "{step}: the conversion was rolled back"
            );
            assert_unconverted(&rig, &name);
            // And it converts cleanly afterwards.
            rig.ctl_ok(&["set", &name, "--unprivileged"]);
            assert_converted(&rig, &name);
        }
        if step != "journal" {
            assert!(snaps.contains("before the conversion"), "{step}: {snaps}");
        }
        rig.ctl_ok(&["delete", &name]);
    }
}

#[test]
fn subordinate_id_files_that_cannot_be_written_stop_the_daemon_with_their_name() {
    require_root();
    let mut rig = Rig::builder()
        .no_daemon_start()
        .config(|c| {
            c.set_str("isolation.subuid_file", "/nonexistent-osm-dir/subuid");
        })
        .start();
    let err = rig.daemon_mut().try_start().unwrap_err();
    assert!(
        err.contains("/nonexistent-osm-dir/subuid"),
        "the error names the file: {err}"
    );
}

#[test]
fn a_container_that_fails_to_start_leaves_no_mount_behind() {
    require_root();
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "broken", "--base", "bb"]);
    let base = rig.info_json("broken")["id_map_base"].as_u64().unwrap() as u32;
    // Its init is a file that cannot be executed.
    let sbin = container_dir(&rig, "broken").join("rootfs-layer/sbin");
    std::fs::create_dir_all(&sbin).unwrap();
    std::fs::remove_file(sbin.join("init")).ok();
    std::fs::write(sbin.join("init"), "not a program\n").unwrap();
    std::os::unix::fs::lchown(&sbin, Some(base), Some(base)).unwrap();
    std::os::unix::fs::lchown(sbin.join("init"), Some(base), Some(base)).unwrap();
    let out = rig.ctl(&["start", "broken"]);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(rig.info_json("broken")["state"], "stopped");
    let mounts = rig.sandbox().run_ok("cat", &["/proc/self/mountinfo"]);
    assert!(
        !mounts.contains("/run/rootfs/") && !mounts.contains("/run/idmapped/"),
        "{mounts}"
    );
    // Nor cgroups: LXC leaves its monitor's behind after an aborted unprivileged start.
    let cgroups = rig::handmade_lxc::lxc_cgroups_of("broken");
    assert!(cgroups.is_empty(), "{cgroups:?}");
}

#[test]
fn a_backup_taken_before_the_conversion_restores_with_the_owners_the_container_sees() {
    require_root();
    let target_dir = rig::test_tempdir("osm-iso-backup-");
    let rig = Rig::builder()
        .backup_target(&target_dir.path().join("lxc"))
        .start();
    rig.import_busybox_base("bb");
    privileged_with_markers(&rig, "old");
    rig.ctl_ok(&["backup", "run", "old"]);
    rig.ctl_ok(&["set", "old", "--unprivileged"]);
    rig.ctl_ok(&["start", "old"]);
    let (code, out) = inside(
        &rig,
        "old",
        "echo changed > /srv/site/index && chown 0:0 /srv/site/index",
    );
    assert_eq!(code, 0, "{out}");
    let check = "stat -c %u:%g /srv/site/index; stat -c %a /usr/bin/suid; cat /srv/site/index";
    // Over the converted container: shifted into its range on the way.
    rig.ctl_ok(&["backup", "restore", "old"]);
    assert_eq!(rig.info_json("old")["privileged"], false);
    assert_eq!(inside(&rig, "old", check), (0, "33:33\n4755\nhi\n".into()));
    // As a new container: an explicit `privileged = true` would carry over; a backup
    // from before unprivileged containers (no such key) becomes unprivileged, in a
    // range of its own.
    let spec = target_dir
        .path()
        .join("lxc")
        .join(rig.host_id())
        .join("old/container.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(text.contains("privileged = true\n"), "{text}");
    std::fs::write(&spec, text.replace("privileged = true\n", "")).unwrap();
    rig.ctl_ok(&["backup", "restore", "old", "--as", "copy"]);
    let info = rig.info_json("copy");
    assert_eq!(info["privileged"], false, "{info}");
    assert_ne!(info["id_map_base"], rig.info_json("old")["id_map_base"]);
    assert_eq!(inside(&rig, "copy", check), (0, "33:33\n4755\nhi\n".into()));
}
