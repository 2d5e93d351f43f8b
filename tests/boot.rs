//! Root integration: boot-time autostart and host shutdown with 20 busybox containers.
//! A host boot is simulated by killing the daemon, stopping the containers and removing
//! the boot marker from the runtime dir (what a reboot does to tmpfs `/run`).

use rig::{require_root, wait_until, Rig};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

const N: usize = 20;
const PRIORITIES: [i32; 4] = [30, 20, 10, 0];
/// Starts last in the top group and makes the next group wait this long.
const DELAYED: &str = "b04";
const DELAY_S: u64 = 2;
const BROKEN: &str = "b18";
const LAST_STATE: &str = "b17";
const MANUAL: [&str; 2] = ["b16", "b19"];

fn name(i: usize) -> String {
    format!("b{i:02}")
}

fn info(rig: &Rig, name: &str) -> serde_json::Value {
    serde_json::from_str(&rig.ctl_ok(&["info", name, "--json"])).expect("info --json is JSON")
}

fn container_dir(rig: &Rig, name: &str) -> PathBuf {
    rig.sandbox()
        .host_path(rig.store_root().join("lxc/containers").join(name))
}

/// The autostart containers (every one but the manual, last-state and broken ones).
fn autostarted() -> Vec<String> {
    (0..N)
        .map(name)
        .filter(|n| n != BROKEN && n != LAST_STATE && !MANUAL.contains(&n.as_str()))
        .collect()
}

fn priority(name: &str) -> i32 {
    let i: usize = name[1..].parse().unwrap();
    match name {
        LAST_STATE => 10,
        BROKEN => 30,
        _ => PRIORITIES[i % 4],
    }
}

/// As at a host boot: no daemon, no running container, an empty runtime dir.
fn simulate_boot(rig: &mut Rig) {
    rig.daemon_mut().kill9();
    let lxc_path = rig.lxc_path();
    for i in 0..N {
        let n = name(i);
        if rig.lxc_state(&n) == "RUNNING" {
            let out = rig
                .in_sandbox("lxc-stop")
                .args(["-P", lxc_path.to_str().unwrap(), "-n", &n, "-k"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    }
    let marker = rig.sandbox().host_path(rig.dir().join("run/booted"));
    std::fs::remove_file(&marker).expect("the daemon left a boot marker");
    rig.daemon_mut().start();
}

fn wait_running(rig: &Rig, names: &[String]) {
    let ok = wait_until(Duration::from_secs(90), || {
        names.iter().all(|n| rig.lxc_state(n) == "RUNNING")
    });
    let states: Vec<_> = names.iter().map(|n| (n, rig.lxc_state(n))).collect();
    assert!(
        ok,
        "not all running: {states:?}\n{}",
        rig.daemon().log_tail(80)
    );
}

#[test]
fn boot_starts_by_priority_retries_the_broken_one_and_shutdown_reverses() {
    require_root();
    let mut rig = Rig::builder()
        .config(|c| {
            c.set("boot.parallel", "4")
                .set("boot.retry_delay", "0.3")
                .set("boot.stop_timeout", "10");
        })
        .start();
    rig.import_busybox_base("bb");

    // Half get their policy at create, half through `set`.
    for i in 0..N {
        let n = name(i);
        let prio = priority(&n).to_string();
        if MANUAL.contains(&n.as_str()) {
            rig.ctl_ok(&["create", &n, "--base", "bb", "--boot-priority", "40"]);
        } else if n == LAST_STATE {
            rig.ctl_ok(&["create", &n, "--base", "bb"]);
            rig.ctl_ok(&[
                "set",
                &n,
                "--autostart",
                "last-state",
                "--boot-priority",
                &prio,
            ]);
        } else if i % 2 == 0 {
            rig.ctl_ok(&[
                "create",
                &n,
                "--base",
                "bb",
                "--autostart",
                "--boot-priority",
                &prio,
            ]);
        } else {
            rig.ctl_ok(&["create", &n, "--base", "bb"]);
            rig.ctl_ok(&["set", &n, "--autostart", "true", "--boot-priority", &prio]);
        }
    }
    rig.ctl_ok(&["set", DELAYED, "--boot-delay", &DELAY_S.to_string()]);
    let spec =
        std::fs::read_to_string(container_dir(&rig, LAST_STATE).join("container.toml")).unwrap();
    assert!(spec.contains("autostart = \"last-state\""), "{spec}");
    let i = info(&rig, DELAYED);
    assert_eq!(
        (
            i["autostart_policy"].as_str(),
            i["boot_priority"].as_i64(),
            i["boot_delay"].as_u64()
        ),
        (Some("true"), Some(30), Some(DELAY_S))
    );
    // Bad settings are refused.
    for bad in [
        vec!["set", "b00", "--autostart", "sometimes"],
        vec!["set", "b00"],
        vec!["set", "b00", "--memory", "1K"],
    ] {
        assert!(!rig.ctl(&bad).status.success(), "{bad:?}");
    }

    // Break one: its upper dir becomes a file, so every start fails.
    let upper = container_dir(&rig, BROKEN).join("rootfs-layer");
    std::fs::remove_dir_all(&upper).unwrap();
    std::fs::write(&upper, "not a directory").unwrap();

    // Boot 1: every autostart container comes up, group by group.
    simulate_boot(&mut rig);
    let want = autostarted();
    wait_running(&rig, &want);
    let started: HashMap<String, u64> = want
        .iter()
        .map(|n| (n.clone(), info(&rig, n)["started_at"].as_u64().unwrap()))
        .collect();
    for w in PRIORITIES.windows(2) {
        let (hi, lo) = (w[0], w[1]);
        let last_hi = want
            .iter()
            .filter(|n| priority(n) == hi)
            .map(|n| started[n])
            .max()
            .unwrap();
        let first_lo = want
            .iter()
            .filter(|n| priority(n) == lo)
            .map(|n| started[n])
            .min()
            .unwrap();
        assert!(
            last_hi <= first_lo,
            "priority {hi} group finished starting before {lo} began: {started:?}"
        );
    }
    let first_20 = want
        .iter()
        .filter(|n| priority(n) == 20)
        .map(|n| started[n])
        .min()
        .unwrap();
    assert!(
        first_20 >= started[DELAYED] + DELAY_S * 1_000_000,
        "boot_delay of {DELAYED} held the next group: {started:?}"
    );
    // The broken one is retried, then carries a warning; the others were not held up.
    assert!(
        wait_until(Duration::from_secs(30), || info(&rig, BROKEN)["warning"]
            .as_str()
            .is_some_and(|w| !w.is_empty())),
        "{}",
        rig.daemon().log_tail(40)
    );
    let warning = info(&rig, BROKEN)["warning"].as_str().unwrap().to_string();
    assert!(warning.contains("4 attempts"), "{warning}");
    let log = rig.daemon().log();
    assert_eq!(
        log.matches("autostart failed; retrying")
            .filter(|_| true)
            .count(),
        3,
        "three retries:\n{}",
        rig.daemon().log_tail(60)
    );
    let list = rig.ctl_ok(&["list"]);
    let line = list.lines().find(|l| l.starts_with(BROKEN)).unwrap();
    assert!(line.contains("(!)"), "{list}");
    assert!(rig.ctl_ok(&["info", BROKEN]).contains("autostart gave up"));
    for n in MANUAL.iter().chain([&LAST_STATE]) {
        assert_eq!(rig.lxc_state(n), "STOPPED", "{n} must not autostart");
    }

    // A daemon restart is not a boot: a container stopped by hand stays stopped.
    rig.ctl_ok(&["stop", "b01", "--force"]);
    rig.daemon_mut().stop();
    rig.daemon_mut().start();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rig.lxc_state("b01"), "STOPPED");
    assert_eq!(rig.lxc_state("b00"), "RUNNING", "adopted, not restarted");
    // A fixed container starts and loses its warning.
    std::fs::remove_file(&upper).unwrap();
    rig.ctl_ok(&["start", BROKEN]);
    assert_eq!(info(&rig, BROKEN)["warning"], "");
    rig.ctl_ok(&["start", "b01"]);
    rig.ctl_ok(&["start", LAST_STATE]);

    // Host shutdown: lowest priority first, everything stopped, last state recorded.
    let out = rig.ctl_ok(&["host", "shutdown"]);
    let order: Vec<&str> = out
        .trim()
        .split_once(": ")
        .map(|(_, names)| names.split(' ').collect())
        .unwrap_or_default();
    assert_eq!(order.len(), N - MANUAL.len(), "{out}");
    for (i, a) in order.iter().enumerate() {
        for b in &order[i + 1..] {
            assert!(priority(a) <= priority(b), "{a} stopped before {b}: {out}");
        }
    }
    for i in 0..N {
        assert_eq!(rig.lxc_state(&name(i)), "STOPPED", "{}", name(i));
    }
    let last =
        |n: &str| std::fs::read_to_string(container_dir(&rig, n).join("last-state")).unwrap();
    assert_eq!(last(LAST_STATE).trim(), "running");
    assert_eq!(last(MANUAL[0]).trim(), "stopped");

    // Boot 2: last-state brings back what ran.
    simulate_boot(&mut rig);
    let mut want = autostarted();
    want.push(LAST_STATE.to_string());
    want.push(BROKEN.to_string());
    wait_running(&rig, &want);
    for n in MANUAL {
        assert_eq!(rig.lxc_state(n), "STOPPED", "{n} must not autostart");
    }
    rig.ctl_ok(&["host", "shutdown"]);
}
