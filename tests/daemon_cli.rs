//! `osm-hostd` as an operator meets it: config checking, and refusing to run twice.

use rig::{require_root, Rig};
use std::process::Command;

fn check_config(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostd.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(rig::daemon_bin())
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_the_shipped_default_and_the_design_example() {
    let shipped = std::fs::read_to_string(rig::project_path("packaging/hostd.toml")).unwrap();
    let out = check_config(&shipped);
    assert!(out.status.success(), "{out:?}");
    let out = check_config("store_root = \"/srv/osm-lxc\"\n[network]\nbridge = \"lxcbr0\"\n");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn check_config_names_the_unknown_key_and_fails() {
    let out = check_config("store_root = \"/srv/osm-lxc\"\nlop_image = \"/x.img\"\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lop_image"), "{err}");
    let out = check_config("[network]\nbridge = \"an-interface-name-too-long\"\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("network.bridge"));
}

#[test]
fn a_missing_config_file_is_an_error_unless_it_is_the_default_path() {
    let out = Command::new(rig::daemon_bin())
        .args(["--config", "/nonexistent/hostd.toml", "--check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/hostd.toml"));
}

#[test]
fn a_second_daemon_on_the_same_bus_refuses_to_start() {
    require_root();
    let rig = Rig::new();
    let out = rig
        .in_sandbox(rig::daemon_bin())
        .arg("--config")
        .arg(rig.daemon().config_path())
        .env("DBUS_SYSTEM_BUS_ADDRESS", rig.bus().address())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    // The first one is unharmed.
    rig.ctl_ok(&["list"]);
}
