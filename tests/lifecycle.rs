//! Root integration: the real daemon on a private bus in private namespaces, driving real
//! busybox LXC containers on a loop-mounted Btrfs store, through the real CLI.

use rig::{require_root, wait_until, Rig};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

fn container_dir(rig: &Rig, name: &str) -> PathBuf {
    rig.sandbox()
        .host_path(rig.store_root().join("lxc/containers").join(name))
}

fn info_json(rig: &Rig, name: &str) -> serde_json::Value {
    rig.info_json(name)
}

fn exit_code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn create_start_stop_restart_delete_a_busybox_container() {
    require_root();
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    assert!(rig.ctl_ok(&["base", "list"]).contains("bb"));

    rig.ctl_ok(&[
        "create", "web1", "--base", "bb", "--memory", "256M", "--cpus", "1",
    ]);
    let dir = container_dir(&rig, "web1");
    let spec = std::fs::read_to_string(dir.join("container.toml")).unwrap();
    assert!(
        spec.contains("base = \"bb\"") && spec.contains("memory = 268435456"),
        "{spec}"
    );
    let conf = std::fs::read_to_string(dir.join("lxc.container.conf")).unwrap();
    assert!(conf.contains("lxc/include/common.conf"), "{conf}");
    // Unprivileged by default: its own id range, over a tree the daemon mounts.
    assert!(conf.contains("lxc.idmap = u 0 "), "{conf}");
    assert!(conf.contains("lxc.rootfs.path = dir:"), "{conf}");
    assert!(dir.join("rootfs-layer").is_dir() && dir.join("work").is_dir());
    assert_eq!(
        dir.metadata().unwrap().ino(),
        256,
        "the container is a subvolume"
    );
    assert_eq!(
        dir.join(".snapshots").metadata().unwrap().ino(),
        256,
        ".snapshots is a subvolume"
    );
    assert_eq!(info_json(&rig, "web1")["state"], "stopped");

    // The objects are introspectable, as `busctl introspect` shows them.
    let introspect = |path: &str| {
        let out = rig.bus().dbus_send(&[
            "--print-reply",
            "--dest=uk.co.devtank.OsmHost1",
            path,
            "org.freedesktop.DBus.Introspectable.Introspect",
        ]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let manager = introspect("/uk/co/devtank/OsmHost1");
    for iface in [
        "uk.co.devtank.OsmHost1.Manager",
        "org.freedesktop.DBus.ObjectManager",
    ] {
        assert!(manager.contains(iface), "{iface} missing: {manager}");
    }
    let container = introspect("/uk/co/devtank/OsmHost1/container/web1");
    assert!(
        container.contains("uk.co.devtank.OsmHost1.Container"),
        "{container}"
    );
    assert!(container.contains("name=\"State\""), "{container}");

    rig.ctl_ok(&["start", "web1"]);
    assert_eq!(rig.lxc_state("web1"), "RUNNING");
    let info = info_json(&rig, "web1");
    assert_eq!(info["state"], "running");
    assert!(info["init_pid"].as_u64().unwrap() > 0, "{info}");
    assert!(rig.ctl_ok(&["list"]).contains("running"));

    // What the customer writes lands in the container's own upper dir.
    let lxc_path = rig.lxc_path();
    let attach = rig
        .in_sandbox("lxc-attach")
        .args([
            "-P",
            lxc_path.to_str().unwrap(),
            "-n",
            "web1",
            "--",
            "/bin/sh",
            "-c",
            "echo hello > /root/note",
        ])
        .output()
        .unwrap();
    assert!(attach.status.success(), "{attach:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("rootfs-layer/root/note")).unwrap(),
        "hello\n"
    );

    // Starting a running container is a no-op, not an error.
    rig.ctl_ok(&["start", "web1"]);
    let pid_before = info_json(&rig, "web1")["init_pid"].clone();
    rig.ctl_ok(&["restart", "web1", "--timeout", "10"]);
    let after = info_json(&rig, "web1");
    assert_eq!(after["state"], "running");
    assert_ne!(after["init_pid"], pid_before, "restart gave a new init");

    rig.ctl_ok(&["stop", "web1", "--timeout", "10"]);
    assert_eq!(rig.lxc_state("web1"), "STOPPED");
    assert_eq!(info_json(&rig, "web1")["state"], "stopped");

    rig.ctl_ok(&["delete", "web1"]);
    assert!(!dir.exists(), "the container's subvolume is gone");
    let out = rig.ctl(&["info", "web1"]);
    assert_eq!(
        exit_code(&out),
        3,
        "info of a deleted container is NotFound"
    );
}

#[test]
fn refusals_are_clear_and_change_nothing() {
    require_root();
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    let containers = rig
        .sandbox()
        .host_path(rig.store_root().join("lxc/containers"));

    for bad in ["Web1", "web-", "a_b", "web.1"] {
        let out = rig.ctl(&["create", bad, "--base", "bb"]);
        assert_eq!(exit_code(&out), 5, "{bad}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid container name"),
            "{out:?}"
        );
    }
    let out = rig.ctl(&["create", "web1", "--base", "missing"]);
    assert_eq!(exit_code(&out), 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("base \"missing\" not found"));
    let out = rig.ctl(&["create", "web1", "--base", "bb", "--memory", "1K"]);
    assert_eq!(exit_code(&out), 5, "{out:?}");
    assert_eq!(
        std::fs::read_dir(&containers).unwrap().count(),
        0,
        "refused creates left nothing"
    );

    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    // The same create again is idempotent; a different one is refused.
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    let out = rig.ctl(&["create", "web1", "--base", "bb", "--autostart"]);
    assert_eq!(exit_code(&out), 4, "{out:?}");

    let out = rig.ctl(&["base", "delete", "bb"]);
    assert_eq!(exit_code(&out), 6, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("web1"),
        "{out:?}"
    );

    rig.ctl_ok(&["start", "web1"]);
    let out = rig.ctl(&["delete", "web1"]);
    assert_eq!(exit_code(&out), 6, "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(rig.lxc_state("web1"), "RUNNING");

    // An unprivileged caller is turned away by the bus policy, with one line saying
    // which permission is needed; reading is allowed.
    let out = rig.ctl_as_nobody(&["stop", "web1", "--force"]);
    assert_eq!(exit_code(&out), 7, "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "osm-hostctl: StopContainer needs root or membership of group osm-admin \
         (add a user with `sudo usermod -aG osm-admin USER`, then log in again)\n"
    );
    assert_eq!(rig.lxc_state("web1"), "RUNNING");
    for read in [
        &["list", "--json"][..],
        &["info", "web1"],
        &["host", "info"],
        &["host", "info", "--json"],
        &["snapshot", "list", "web1"],
        &["backup", "status"],
        &["base", "list"],
    ] {
        let out = rig.ctl_as_nobody(read);
        assert!(out.status.success(), "{read:?}: {out:?}");
    }

    rig.ctl_ok(&["delete", "web1", "--force"]);
    assert_ne!(rig.lxc_state("web1"), "RUNNING");
    assert!(!container_dir(&rig, "web1").exists());
    rig.ctl_ok(&["base", "delete", "bb"]);
}

#[test]
fn the_daemon_itself_refuses_unprivileged_callers() {
    require_root();
    // A bus that lets anyone call anything: the daemon's own check must hold.
    let rig = Rig::builder().permissive_policy().start();
    rig.import_busybox_base("bb");
    let out = rig.ctl_as_nobody(&["create", "web1", "--base", "bb"]);
    assert_eq!(exit_code(&out), 7, "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "osm-hostctl: changing osm-host needs root or membership of group osm-admin"
        ) && err.contains("usermod -aG osm-admin")
            && err.contains("uid 65534"),
        "{err}"
    );
    assert_eq!(exit_code(&rig.ctl(&["info", "web1"])), 3);
}

#[test]
fn unsafe_archives_are_refused_and_leave_no_base() {
    require_root();
    let rig = Rig::new();
    let evil = rig.dir().join("evil.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&evil).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    builder
        .append_link(&mut header, "etc/escape", "../../../../etc")
        .unwrap();
    builder.finish().unwrap();
    drop(builder);
    let out = rig.ctl(&["base", "import", "evil", evil.to_str().unwrap()]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("etc/escape"),
        "{out:?}"
    );
    let bases = rig
        .sandbox()
        .host_path(rig.store_root().join("lxc/os-bases"));
    assert_eq!(
        std::fs::read_dir(&bases).unwrap().count(),
        0,
        "nothing left in os-bases"
    );
}

#[test]
fn containers_outlive_the_daemon_and_are_adopted() {
    require_root();
    let mut rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["create", "web2", "--base", "bb"]);
    rig.ctl_ok(&["start", "web1"]);
    let pid = info_json(&rig, "web1")["init_pid"].as_u64().unwrap();

    // A clean stop of the daemon leaves the container running...
    rig.daemon_mut().stop();
    assert_eq!(rig.lxc_state("web1"), "RUNNING");
    rig.daemon_mut().start();
    let info = info_json(&rig, "web1");
    assert_eq!(
        (info["state"].as_str(), info["init_pid"].as_u64()),
        (Some("running"), Some(pid))
    );
    assert_eq!(info_json(&rig, "web2")["state"], "stopped");

    // ...and so does a crash.
    rig.daemon_mut().kill9();
    assert_eq!(rig.lxc_state("web1"), "RUNNING");
    rig.daemon_mut().start();
    assert_eq!(info_json(&rig, "web1")["init_pid"].as_u64(), Some(pid));

    // The adopted container is watched: stopping it behind the daemon's back is noticed.
    let lxc_path = rig.lxc_path();
    let out = rig
        .in_sandbox("lxc-stop")
        .args(["-P", lxc_path.to_str().unwrap(), "-n", "web1", "-k"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(5), || info_json(&rig, "web1")["state"]
            == "stopped"),
        "the daemon noticed the container stopped"
    );
    rig.ctl_ok(&["start", "web1"]);
    rig.ctl_ok(&["stop", "web1", "--force"]);
}
