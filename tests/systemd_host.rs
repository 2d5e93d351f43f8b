//! End to end under systemd as PID 1: the project's Debian package installed with apt
//! into a "test host" (a bookworm machine booted as a privileged LXC container, see
//! `rig::test_host`), used the three ways the product exists for:
//!
//! 1. an operator in group osm-admin (not root) snapshots, breaks and restores a
//!    container over the real system bus and the installed policy; others are refused;
//! 2. the nightly backup timer is scheduled, and its service backs up every container;
//! 3. `systemctl restart osm-hostd`, an upgrade of the package and `systemctl stop
//!    osm-hostd` leave every container running and adopted (and any user's call
//!    brings a stopped daemon back through bus activation);
//! 4. powering the test host off stops the containers in reverse priority order and
//!    records their last state; booting it starts them by priority through the unit,
//!    the `last-state` one only if it ran.
//!
//! All of it in one test host (one boot, one power cycle) to keep the suite within a
//! few minutes. The package is `target/debian/osm-host_<version>-*.deb`, built by
//! `scripts/build-deb.sh` (scripts/test.sh builds it before the tests run; this suite
//! builds it when it is missing or older than the sources).

use rig::test_host::{project_deb, repack_deb_with_version};
use rig::{busybox_rootfs_tar, require_root, wait_until, TestHost};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const LXC_PATH: &str = "/srv/osm-lxc/lxc/containers";
/// name, boot priority, autostart policy.
const CONTAINERS: [(&str, i32, &str); 4] = [
    ("alpha", 30, "true"),
    ("bravo", 20, "true"),
    ("charlie", 10, "last-state"),
    ("delta", 10, "last-state"),
];
/// delta stays stopped: last-state must not start it at the next boot.
const RUN_BEFORE_POWER_OFF: [&str; 3] = ["alpha", "bravo", "charlie"];

const HOSTD_TOML: &str = r#"# Written by tests/systemd_host.rs: the store is the test host's Btrfs at the default
# store_root; everything else is the packaged default but for short timeouts.
[backup]
target = "/srv/backups/lxc"
mode = "mirror"

[boot]
stop_timeout = 10
"#;

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ctl(host: &TestHost, args: &[&str]) -> String {
    let mut argv = vec!["osm-hostctl"];
    argv.extend_from_slice(args);
    let out = host.run(&argv);
    assert!(
        out.status.success(),
        "osm-hostctl {} failed ({}):\n{}{}\n--- journal ---\n{}",
        args.join(" "),
        out.status,
        text(&out),
        String::from_utf8_lossy(&out.stderr),
        host.journal_tail(40)
    );
    text(&out)
}

/// `osm-hostctl args...` as a login user of the test host (uid, gid and groups from
/// its passwd and group files), as `su - user -c` would run it.
fn ctl_as(host: &TestHost, user: &str, args: &[&str]) -> Output {
    let mut argv = vec![
        "setpriv",
        "--reuid",
        user,
        "--regid",
        user,
        "--init-groups",
        "--reset-env",
        "osm-hostctl",
    ];
    argv.extend_from_slice(args);
    host.run(&argv)
}

fn info(host: &TestHost, name: &str) -> serde_json::Value {
    serde_json::from_str(&ctl(host, &["info", name, "--json"])).expect("info --json is JSON")
}

/// LXC's own view, which needs no daemon (osm-hostctl would bus-activate it).
fn lxc_state(host: &TestHost, name: &str) -> String {
    let out = host.run(&["lxc-info", "-P", LXC_PATH, "-n", name, "-s", "-H"]);
    text(&out).trim().to_string()
}

fn in_container(host: &TestHost, name: &str, script: &str) -> String {
    let out = host.run(&[
        "lxc-attach",
        "-P",
        LXC_PATH,
        "-n",
        name,
        "--",
        "/bin/sh",
        "-c",
        script,
    ]);
    assert!(
        out.status.success(),
        "in {name}: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text(&out)
}

fn init_pids(host: &TestHost, names: &[&str]) -> BTreeMap<String, u64> {
    names
        .iter()
        .map(|n| {
            let i = info(host, n);
            assert_eq!(i["state"], "running", "{n}: {i}");
            (n.to_string(), i["init_pid"].as_u64().unwrap())
        })
        .collect()
}

fn main_pid(host: &TestHost) -> String {
    host.sh_ok("systemctl show -P MainPID osm-hostd")
        .trim()
        .to_string()
}

#[test]
fn the_package_under_systemd_boots_restores_backs_up_and_shuts_down() {
    require_root();
    let deb = project_deb();
    let host = TestHost::create("6G");
    let rootfs = host.rootfs();
    std::fs::copy(&deb, rootfs.join("root/osm-host.deb")).expect("copy the package in");
    let upgrade = repack_deb_with_version(&deb, "+systemd-host-test1", host.dir());
    std::fs::copy(&upgrade, rootfs.join("root/osm-host-upgrade.deb")).unwrap();
    let images = host.dir().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let tar = busybox_rootfs_tar(&images);
    std::fs::copy(&tar, rootfs.join("root/busybox-rootfs.tar")).unwrap();
    host.boot();

    // ---- Install as an operator would: apt with the dependencies already there. ----
    let out = host.sh_ok("apt-get install -y /root/osm-host.deb 2>&1");
    assert!(out.contains("Setting up osm-host"), "{out}");
    assert!(
        out.contains("0 upgraded, 1 newly installed, 0 to remove"),
        "every dependency was already there: {out}"
    );
    assert!(
        out.contains("set store_root in /etc/osm-host/hostd.toml"),
        "a fresh install says what to do next: {out}"
    );
    host.sh_ok("getent group osm-admin");
    assert_eq!(
        host.sh_ok("systemctl is-enabled osm-hostd.service osm-hostd-backup.timer"),
        "enabled\nenabled\n"
    );
    // Debian's lxc-net would bring up its own lxcbr0 and dnsmasq at boot, on the
    // daemon's bridge and address: the package masks it.
    assert!(out.contains("masking lxc-net.service"), "{out}");
    assert_eq!(
        host.sh_ok("systemctl is-enabled lxc-net.service || true"),
        "masked\n"
    );
    std::fs::write(rootfs.join("etc/osm-host/hostd.toml"), HOSTD_TOML).unwrap();
    host.sh_ok(
        "mkdir -p /srv/backups/lxc && osm-hostd --config /etc/osm-host/hostd.toml --check-config",
    );
    host.sh_ok("systemctl start osm-hostd");
    assert_eq!(host.sh_ok("systemctl is-active osm-hostd"), "active\n");

    ctl(&host, &["base", "import", "bb", "/root/busybox-rootfs.tar"]);
    for (name, prio, autostart) in CONTAINERS {
        let prio = prio.to_string();
        ctl(
            &host,
            &[
                "create",
                name,
                "--base",
                "bb",
                "--boot-priority",
                &prio,
                "--autostart",
                autostart,
            ],
        );
    }
    for name in RUN_BEFORE_POWER_OFF {
        ctl(&host, &["start", name]);
    }

    operator_restores_through_the_system_bus(&host);
    nightly_timer_backs_up_every_container(&host);
    daemon_restart_upgrade_and_stop_keep_containers(&host);
    power_cycle_stops_and_starts_by_priority(&host);
}

/// Scenario 2: alice (group osm-admin) snapshots, breaks and restores; bob is refused.
fn operator_restores_through_the_system_bus(host: &TestHost) {
    host.sh_ok("useradd -m -G osm-admin alice && useradd -m bob");
    in_container(host, "alpha", "echo original > /root/customer.conf");

    let out = ctl_as(
        host,
        "alice",
        &[
            "snapshot",
            "create",
            "alpha",
            "--description",
            "before change",
        ],
    );
    assert!(out.status.success(), "alice snapshots: {out:?}");
    let num = text(&out).trim().to_string();
    assert!(num.parse::<u32>().is_ok(), "snapshot number: {num:?}");

    in_container(host, "alpha", "echo broken > /root/customer.conf");
    let out = ctl_as(host, "bob", &["snapshot", "restore", "alpha", &num]);
    assert_eq!(out.status.code(), Some(7), "bob must be refused: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("denied") || err.contains("not allowed") || err.contains("osm-admin"),
        "bob's refusal says why: {err}"
    );
    let out = ctl_as(host, "bob", &["snapshot", "create", "alpha"]);
    assert_eq!(out.status.code(), Some(7), "bob must be refused: {out:?}");
    let snapshots = ctl(host, &["snapshot", "list", "alpha", "--json"]);
    let count = serde_json::from_str::<serde_json::Value>(&snapshots)
        .unwrap()
        .as_array()
        .map(Vec::len);
    assert_eq!(
        count,
        Some(1),
        "bob's refused calls changed nothing: {snapshots}"
    );
    // Reading is open to every local user.
    let out = ctl_as(host, "bob", &["list"]);
    assert!(
        out.status.success() && text(&out).contains("alpha"),
        "{out:?}"
    );
    assert_eq!(
        in_container(host, "alpha", "cat /root/customer.conf"),
        "broken\n"
    );

    let out = ctl_as(host, "alice", &["snapshot", "restore", "alpha", &num]);
    assert!(out.status.success(), "alice restores: {out:?}");
    assert_eq!(
        lxc_state(host, "alpha"),
        "RUNNING",
        "a running container runs again"
    );
    assert_eq!(
        in_container(host, "alpha", "cat /root/customer.conf"),
        "original\n"
    );
}

/// Scenario 3: the timer is scheduled; its service backs up every container.
fn nightly_timer_backs_up_every_container(host: &TestHost) {
    let timers = host.sh_ok("systemctl list-timers --all --no-pager osm-hostd-backup.timer");
    let line = timers
        .lines()
        .find(|l| l.contains("osm-hostd-backup.timer"))
        .unwrap_or_else(|| panic!("the timer is not listed:\n{timers}"));
    assert!(!line.trim_start().starts_with("n/a"), "no next run: {line}");
    assert!(line.contains("osm-hostd-backup.service"), "{line}");
    let next = host.sh_ok("systemctl show -P NextElapseUSecRealtime osm-hostd-backup.timer");
    assert!(!next.trim().is_empty(), "no next elapse: {timers}");

    in_container(host, "bravo", "echo nightly > /root/bravo.data");
    // What the timer does when it elapses.
    host.sh_ok("systemctl start osm-hostd-backup.service");
    assert_eq!(
        host.sh_ok("systemctl show -P Result osm-hostd-backup.service"),
        "success\n"
    );
    let status = ctl(host, &["backup", "status"]);
    let all: serde_json::Value =
        serde_json::from_str(&ctl(host, &["backup", "status", "--json"])).unwrap();
    // Backup trees live under the host's id on the target.
    let info: serde_json::Value =
        serde_json::from_str(&host.sh_ok("osm-hostctl host info --json")).unwrap();
    let trees = format!("/srv/backups/lxc/{}", info["host_id"].as_str().unwrap());
    for (name, _, _) in CONTAINERS {
        assert!(status.contains(name), "{name} in backup status:\n{status}");
        let st = all
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {all}"));
        assert_eq!(st["last_result"], "ok", "{st}");
        assert!(st["last_success"].as_u64().unwrap() > 0, "{st}");
        host.sh_ok(&format!("test -f {trees}/{name}/container.toml"));
    }
    assert_eq!(
        host.sh_ok(&format!("cat {trees}/bravo/rootfs-layer/root/bravo.data")),
        "nightly\n"
    );
}

/// Scenario 4 (daemon life): restart, upgrade and stop leave containers running.
fn daemon_restart_upgrade_and_stop_keep_containers(host: &TestHost) {
    let before = init_pids(host, &RUN_BEFORE_POWER_OFF);

    let pid = main_pid(host);
    host.sh_ok("systemctl restart osm-hostd");
    assert_ne!(main_pid(host), pid, "a new daemon runs");
    assert_eq!(
        init_pids(host, &RUN_BEFORE_POWER_OFF),
        before,
        "restart adopted them"
    );

    let pid = main_pid(host);
    let out = host.sh_ok("apt-get install -y /root/osm-host-upgrade.deb 2>&1");
    assert!(
        out.contains("Unpacking osm-host") && out.contains("over ("),
        "an upgrade: {out}"
    );
    assert!(
        host.sh_ok("dpkg-query -W -f '${Version}' osm-host")
            .ends_with("+systemd-host-test1"),
        "the newer version is installed"
    );
    assert_ne!(main_pid(host), pid, "the upgrade restarted the daemon");
    assert_eq!(host.sh_ok("systemctl is-active osm-hostd"), "active\n");
    assert_eq!(
        init_pids(host, &RUN_BEFORE_POWER_OFF),
        before,
        "the upgrade adopted them"
    );
    // Adopted means managed: the new daemon can stop and start one.
    ctl(host, &["restart", "bravo"]);
    assert_eq!(info(host, "bravo")["state"], "running");
    let before = init_pids(host, &RUN_BEFORE_POWER_OFF);

    host.sh_ok("systemctl stop osm-hostd");
    assert_eq!(
        host.sh_ok("systemctl is-active osm-hostd || true"),
        "inactive\n"
    );
    for name in RUN_BEFORE_POWER_OFF {
        assert_eq!(
            lxc_state(host, name),
            "RUNNING",
            "{name} outlives a stopped daemon"
        );
    }
    assert_eq!(lxc_state(host, "delta"), "STOPPED");
    // The unit's ExecStop saw no host shutdown, so `host shutdown` did not run.
    for (name, _, _) in CONTAINERS {
        let file = host
            .store()
            .join("lxc/containers")
            .join(name)
            .join("last-state");
        assert!(!file.exists(), "a plain stop recorded {}", file.display());
    }
    // Any user's call brings the daemon back: the bus activates osm-hostd.service.
    let out = ctl_as(host, "bob", &["list"]);
    assert!(
        out.status.success() && text(&out).contains("alpha"),
        "bus activation: {out:?}\n{}",
        host.journal_tail(30)
    );
    assert_eq!(host.sh_ok("systemctl is-active osm-hostd"), "active\n");
    assert_eq!(init_pids(host, &RUN_BEFORE_POWER_OFF), before);
}

/// Scenarios 1 and 4 (power): off stops by reverse priority and records last-state;
/// on starts by priority, the last-state container only if it ran.
fn power_cycle_stops_and_starts_by_priority(host: &TestHost) {
    host.power_off();

    let containers = host.store().join("lxc/containers");
    let last_state = |name: &str| {
        std::fs::read_to_string(containers.join(name).join("last-state"))
            .unwrap_or_else(|e| panic!("{name}'s last-state: {e}"))
    };
    for name in RUN_BEFORE_POWER_OFF {
        assert_eq!(last_state(name), "running\n", "{name}");
    }
    assert_eq!(last_state("delta"), "stopped\n");
    let journal = journal_of_powered_off_host(&host.rootfs().join("var/log/journal"));
    let stopped: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("stopped 3 container(s):"))
        .collect();
    assert_eq!(
        stopped,
        ["stopped 3 container(s): charlie bravo alpha"],
        "the unit's ExecStop stopped them lowest priority first; journal:\n{journal}"
    );

    host.boot();
    let booted = wait_until(Duration::from_secs(60), || {
        RUN_BEFORE_POWER_OFF
            .iter()
            .all(|n| lxc_state(host, n) == "RUNNING")
    });
    assert!(
        booted,
        "the unit did not start every container at boot:\n{}",
        host.journal_tail(60)
    );
    // Started by the enabled unit at boot, which says so in its journal.
    assert_eq!(host.sh_ok("systemctl is-active osm-hostd"), "active\n");
    let journal = host.sh_ok(
        "journalctl -o cat --no-pager \
         _SYSTEMD_INVOCATION_ID=$(systemctl show -P InvocationID osm-hostd)",
    );
    assert!(
        journal.contains("host boot: starting autostart containers")
            && journal.contains("containers=3"),
        "this boot's osm-hostd started 3 containers:\n{journal}"
    );
    let started: Vec<(u64, &str)> = {
        let mut v: Vec<_> = RUN_BEFORE_POWER_OFF
            .iter()
            .map(|n| (info(host, n)["started_at"].as_u64().unwrap(), *n))
            .collect();
        v.sort();
        v
    };
    let order: Vec<&str> = started.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        order,
        ["alpha", "bravo", "charlie"],
        "by priority: {started:?}"
    );
    assert_eq!(
        info(host, "delta")["state"],
        "stopped",
        "delta did not run before"
    );
    assert_eq!(lxc_state(host, "delta"), "STOPPED");

    // `osm-hostctl list` shows them running with their addresses, which they really
    // got from the daemon's dnsmasq in the test host.
    let list = ctl(host, &["list"]);
    for name in RUN_BEFORE_POWER_OFF {
        let ip = info(host, name)["ipv4_address"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!ip.is_empty());
        let row = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} in list:\n{list}"));
        assert!(row.contains("running") && row.contains(&ip), "{row}");
        let mut addrs = String::new();
        let leased = wait_until(Duration::from_secs(30), || {
            addrs = in_container(host, name, "ip -4 -o addr show eth0");
            addrs.contains(&format!("{ip}/"))
        });
        assert!(leased, "{name} has no lease for {ip}: {addrs}");
    }
    // The data restored by alice survived the power cycle.
    assert_eq!(
        in_container(host, "alpha", "cat /root/customer.conf"),
        "original\n"
    );
}

/// The journal the powered-off test host left in its root filesystem, read with the
/// machine's own journalctl (the messages of osm-hostd.service, text only).
fn journal_of_powered_off_host(dir: &Path) -> String {
    let out = std::process::Command::new("journalctl")
        .arg("-D")
        .arg(dir)
        .args(["-u", "osm-hostd.service", "-o", "cat", "--no-pager"])
        .output()
        .expect("run journalctl (package systemd)");
    assert!(out.status.success(), "journalctl -D: {out:?}");
    text(&out)
}
