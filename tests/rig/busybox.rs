//! A tiny busybox root filesystem as a tarball, built in milliseconds, for tests that
//! need a real container but not a real distribution.
//!
//! Its init is busybox init. It halts on SIGPWR (LXC's default `lxc.signal.halt`) and
//! SIGUSR1, powers off on SIGUSR2 and reboots on SIGTERM; halting takes about 2 s
//! because busybox init sleeps 1 s after its SIGTERM round and 1 s before `reboot()`.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const BUSYBOX: &str = "/bin/busybox";

const INITTAB: &str = "\
::sysinit:/etc/init.d/rcS
::respawn:/bin/sleep 86400
::shutdown:/bin/sync
";

const RCS: &str = r#"#!/bin/sh
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/class ] || mount -t sysfs sysfs /sys
mkdir -p /run /tmp /var/run
ip link set lo up 2>/dev/null
# Ask for a DHCP lease (the daemon's dnsmasq answers, if any) without holding up
# init: sysinit must finish before the respawn entries start.
if [ -e /sys/class/net/eth0 ]; then
    udhcpc -f -i eth0 -s /etc/udhcpc.script -x "hostname:$(hostname)" >/dev/null 2>&1 &
fi
exit 0
"#;

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
    deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
        : > /etc/resolv.conf
        for s in $dns; do echo "nameserver $s" >> /etc/resolv.conf; done
        ;;
esac
exit 0
"#;

/// Builds `<dir>/busybox-rootfs.tar` (GNU tar, numeric owners) from `/bin/busybox`
/// of busybox-static and returns its path. The unpacked tree stays in
/// `<dir>/busybox-rootfs/`.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let root = dir.join("busybox-rootfs");
    let tar = dir.join("busybox-rootfs.tar");
    build_tree(&root);
    let mut entries: Vec<String> = fs::read_dir(&root)
        .expect("read busybox tree")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let out = Command::new("tar")
        .args([
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--sort=name",
            "-cf",
        ])
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .args(&entries)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar of the busybox tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tar
}

fn build_tree(root: &Path) {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install busybox-static"
    );
    if root.exists() {
        fs::remove_dir_all(root).expect("remove old busybox tree");
    }
    for d in [
        "bin",
        "sbin",
        "etc/init.d",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "var",
        "root",
    ] {
        fs::create_dir_all(root.join(d)).expect("create busybox tree dir");
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copy busybox");

    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet == "busybox" || applet.contains('/') || applet.is_empty() {
            continue;
        }
        symlink("busybox", root.join("bin").join(applet)).expect("applet symlink");
    }
    symlink("../bin/busybox", root.join("sbin/init")).expect("sbin/init symlink");

    write(root, "etc/inittab", INITTAB, 0o644);
    write(root, "etc/init.d/rcS", RCS, 0o755);
    write(root, "etc/udhcpc.script", UDHCPC_SCRIPT, 0o755);
    write(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    );
    write(root, "etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644);
}

fn write(root: &Path, rel: &str, text: &str, mode: u32) {
    let path = root.join(rel);
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
}
