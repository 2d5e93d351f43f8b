//! End to end: the Debian bookworm base built from `base-images/debian-bookworm.toml`
//! boots systemd to `running` in an unprivileged container run by the real daemon.
//!
//! debootstrap needs Debian's mirror, so a first daemon in a sandbox that shares the
//! host's network builds the base once (filling the shared build cache); the container
//! then runs in a sandbox with its own network namespace, whose daemon builds the same
//! recipe again from that cache.

use rig::{project_path, require_root, wait_until, Rig};
use std::time::{Duration, Instant};

const RECIPE: &str = "base-images/debian-bookworm.toml";

fn cache_is_warm() -> bool {
    let text = std::fs::read_to_string(project_path(RECIPE)).unwrap();
    let key = osm_hostd::base::Recipe::parse(&text).unwrap().cache_key();
    std::path::Path::new("/var/cache/osm-host-tests/bases")
        .join(format!("{key}.tar.zst"))
        .exists()
}

#[test]
fn debian_base_boots_systemd_to_running() {
    require_root();
    let recipe = project_path(RECIPE);
    let recipe = recipe.to_str().unwrap();
    if !cache_is_warm() {
        let builder = Rig::builder().host_network().start();
        let t = Instant::now();
        builder.ctl_ok(&["base", "build", "bookworm", "--recipe", recipe]);
        eprintln!("debootstrap build took {:?}", t.elapsed());
        assert!(cache_is_warm(), "a successful build fills the cache");
    }

    let rig = Rig::new();
    let t = Instant::now();
    rig.ctl_ok(&["base", "build", "bookworm", "--recipe", recipe]);
    eprintln!("cached build took {:?}", t.elapsed());
    let base = rig
        .sandbox()
        .host_path(rig.store_root().join("lxc/os-bases/bookworm"));
    assert!(base.join("usr/lib/systemd/systemd").exists());
    assert!(
        !base.join("etc/hostname").exists(),
        "LXC's hostname applies"
    );
    // A base is read-only once built.
    assert!(
        std::fs::write(base.join("probe"), b"x").is_err(),
        "the base is read-only"
    );

    rig.ctl_ok(&["create", "deb1", "--base", "bookworm", "--memory", "512M"]);
    rig.ctl_ok(&["start", "deb1"]);
    let lxc_path = rig.lxc_path();
    let attach = |args: &[&str]| {
        rig.in_sandbox("lxc-attach")
            .args(["-P", lxc_path.to_str().unwrap(), "-n", "deb1", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    let mut last = String::new();
    let booted = wait_until(Duration::from_secs(90), || {
        let out = attach(&["systemctl", "is-system-running"]);
        last = String::from_utf8_lossy(&out.stdout).trim().to_string();
        last == "running" || last == "degraded"
    });
    if last != "running" {
        let failed = attach(&["systemctl", "--failed", "--no-pager"]);
        panic!(
            "systemd did not reach running (booted={booted}, state {last:?}); failed units:\n{}",
            String::from_utf8_lossy(&failed.stdout)
        );
    }
    // Unprivileged (the default): systemd runs as root of its own id range.
    let info = rig.info_json("deb1");
    assert_eq!(info["privileged"], false, "{info}");
    assert!(info["id_map_base"].as_u64().unwrap() >= 100_000, "{info}");
    let hostname = attach(&["hostname"]);
    assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "deb1");
    // systemd-networkd gets the address reserved for the container's MAC by DHCP.
    let info: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["info", "deb1", "--json"])).unwrap();
    let ip = info["ipv4_address"].as_str().unwrap().to_string();
    assert!(!ip.is_empty(), "{info}");
    let mut addrs = String::new();
    let leased = wait_until(Duration::from_secs(30), || {
        addrs =
            String::from_utf8_lossy(&attach(&["ip", "-4", "-br", "addr", "show", "eth0"]).stdout)
                .into_owned();
        addrs.contains(&format!("{ip}/"))
    });
    assert!(leased, "eth0 did not get {ip}: {addrs}");
    let networkd = attach(&["systemctl", "is-active", "systemd-networkd"]);
    assert_eq!(String::from_utf8_lossy(&networkd.stdout).trim(), "active");

    // A clean stop: systemd powers off within the timeout instead of being killed.
    let t = Instant::now();
    rig.ctl_ok(&["stop", "deb1", "--timeout", "30"]);
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "systemd shut down cleanly in {:?}",
        t.elapsed()
    );
    rig.ctl_ok(&["delete", "deb1"]);
    rig.ctl_ok(&["base", "delete", "bookworm"]);
}
