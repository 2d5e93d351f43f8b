//! `cargo bench --bench boot`: time from a host boot until N busybox containers are
//! RUNNING (N = 10 and 30), osm-hostd's autostart (daemon start included) against
//! today's way, a sequential `lxc-start` loop over the same containers (what
//! `/opt/devtank/start-containers.sh` does), and LXD where it is installed. osm-hostd
//! boots unprivileged containers (the default) and, in a column of their own,
//! `--privileged` ones; the `lxc-start` loop runs the privileged set, as hosts do today.
//!
//! A boot is simulated as in `tests/boot.rs`: no daemon, every container stopped, no
//! boot marker in the runtime dir. Both ways are timed the same way: from the first
//! step until one watcher, polling `lxc-ls --running` from the start, sees all N
//! running (its runs share the 2 cores with either way). Run without `--bench` (as `cargo test --all-targets`
//! does) it does one round with N = 3, so the benchmark itself stays tested.
//!
//! `OSM_BENCH_PARALLEL=n` sets `[boot] parallel` (default 16, the shipped default);
//! `OSM_BENCH_LOG=1` prints the daemon's log after each of its boots.

use rig::{require_root, wait_until, Rig};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

/// Autostart on for `want`, off for the rest of `all`.
fn autostart_only(rig: &Rig, all: &[String], want: &[String]) {
    for name in all {
        let on = if want.contains(name) { "true" } else { "false" };
        // A daemon started after a simulated boot may still be autostarting (busy).
        let set = || rig.ctl(&["set", name, "--autostart", on]).status.success();
        if !wait_until(Duration::from_secs(60), set) {
            rig.ctl_ok(&["set", name, "--autostart", on]);
        }
    }
}

fn lxc(rig: &Rig, tool: &str, name: &str, extra: &[&str]) {
    let path = rig.lxc_path();
    let out = rig
        .in_sandbox(tool)
        .args(["-P", path.to_str().unwrap(), "-n", name])
        .args(extra)
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{tool} {name}: {out:?}");
}

/// No daemon, every container stopped, no boot marker, and none of the mounts the
/// daemon made in its runtime dir: after a real power cycle `/run` is a fresh tmpfs, so
/// a booting daemon never finds the trees of the last boot still mounted.
fn power_off(rig: &mut Rig, all: &[String]) {
    rig.daemon_mut().kill9();
    for n in all {
        if rig.lxc_state(n) != "STOPPED" {
            lxc(rig, "lxc-stop", n, &["-k"]);
        }
    }
    let run = rig.dir().join("run");
    let out = rig
        .in_sandbox("sh")
        .args([
            "-c",
            "awk -v run=\"$1\" 'index($5, run \"/rootfs/\") == 1 || index($5, run \"/idmapped/\") == 1 { print $5 }' \
             /proc/self/mountinfo | sort -r | while read -r m; do umount -l \"$m\"; done",
            "sh",
        ])
        .arg(&run)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "unmounting the daemon's trees: {out:?}"
    );
    let marker = rig.sandbox().host_path(run.join("booted"));
    let _ = std::fs::remove_file(marker);
}

/// Whether LXC reports every container of `want` running: one `lxc-ls --running`, the
/// same check for both ways, and cheap enough not to slow down what it watches.
fn all_running(rig: &Rig, want: &[String]) -> bool {
    let path = rig.lxc_path();
    let out = rig
        .in_sandbox("lxc-ls")
        .args(["-P", path.to_str().unwrap(), "--running", "-1"])
        .output()
        .expect("spawn lxc-ls");
    let text = String::from_utf8_lossy(&out.stdout);
    let running: Vec<&str> = text.split_whitespace().collect();
    want.iter().all(|n| running.contains(&n.as_str()))
}

fn osm_boot(rig: &mut Rig, all: &[String], want: &[String]) -> Duration {
    power_off(rig, all);
    let t = Instant::now();
    rig.daemon_mut().start();
    assert!(
        wait_until(Duration::from_secs(120), || all_running(rig, want)),
        "{}",
        rig.daemon().log_tail(40)
    );
    let elapsed = t.elapsed();
    if std::env::var_os("OSM_BENCH_LOG").is_some() {
        let log = rig.daemon().log();
        let tail: Vec<_> = log
            .lines()
            .filter(|l| l.contains(" INFO ") || l.contains("=== rig"))
            .collect();
        eprintln!("{}", tail[tail.len().saturating_sub(60)..].join("\n"));
    }
    for n in want {
        assert_eq!(rig.lxc_state(n), "RUNNING", "{n}");
    }
    elapsed
}

fn sequential_boot(rig: &mut Rig, all: &[String], want: &[String]) -> Duration {
    power_off(rig, all);
    let shared: &Rig = rig;
    let t = Instant::now();
    // Watched from the start, as the daemon's boot is: the watcher's lxc-ls runs take
    // their share of the 2 cores from both ways alike.
    let elapsed = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            assert!(wait_until(Duration::from_secs(120), || all_running(
                shared, want
            )));
            t.elapsed()
        });
        for n in want {
            lxc(shared, "lxc-start", n, &["-d"]);
        }
        watcher.join().expect("the watcher thread")
    });
    // Leave the daemon running for the next round's setup.
    rig.daemon_mut().start();
    elapsed
}

fn main() {
    require_root();
    let bench = std::env::args().any(|a| a == "--bench");
    let (sizes, rounds): (&[usize], usize) = if bench { (&[10, 30], 5) } else { (&[3], 1) };
    let max = *sizes.iter().max().unwrap();
    let parallel: u32 = std::env::var("OSM_BENCH_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut rig = Rig::builder()
        .config(move |c| {
            c.set("boot.parallel", &parallel.to_string());
        })
        .start();
    rig.import_busybox_base("bb");
    let unprivileged = names("boot", max);
    let privileged = names("pboot", max);
    for n in &unprivileged {
        rig.ctl_ok(&["create", n, "--base", "bb", "--autostart"]);
    }
    for n in &privileged {
        rig.ctl_ok(&["create", n, "--base", "bb", "--privileged"]);
    }
    let all: Vec<String> = unprivileged.iter().chain(&privileged).cloned().collect();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let lxd = std::process::Command::new("sh")
        .args(["-c", "command -v lxd"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut results = Vec::new();
    for &n in sizes {
        // Only the first n of one set autostart; the rest are switched off.
        let (want_u, want_p) = (&unprivileged[..n], &privileged[..n]);
        let mut osm = Vec::new();
        let mut osm_p = Vec::new();
        let mut seq = Vec::new();
        for r in 0..rounds {
            // Alternate which goes first so caches favour neither.
            let mut boot_u = |rig: &mut Rig| {
                autostart_only(rig, &all, want_u);
                osm.push(osm_boot(rig, &all, want_u));
            };
            if r % 2 == 0 {
                boot_u(&mut rig);
                seq.push(sequential_boot(&mut rig, &all, want_p));
            } else {
                seq.push(sequential_boot(&mut rig, &all, want_p));
                boot_u(&mut rig);
            }
            autostart_only(&rig, &all, want_p);
            osm_p.push(osm_boot(&mut rig, &all, want_p));
        }
        results.push((n, median(osm), median(osm_p), median(seq)));
    }
    println!(
        "boot: time until N busybox containers are RUNNING, median of {rounds} round(s); \
         osm-hostd includes its own start, [boot] parallel = {parallel}"
    );
    println!(
        "{:>4} {:>14} {:>12} {:>16} {:>8} {:>12} {:>10}",
        "N", "unprivileged", "privileged", "lxc-start loop", "ratio", "unpriv/priv", "LXD"
    );
    for (n, a, p, b) in &results {
        println!(
            "{:>4} {:>14} {:>12} {:>16} {:>7.2}x {:>11.2}x {:>10}",
            n,
            ms(*a),
            ms(*p),
            ms(*b),
            a.as_secs_f64() / b.as_secs_f64(),
            a.as_secs_f64() / p.as_secs_f64(),
            if lxd { "not run" } else { "not installed" }
        );
    }
    println!(
        "targets: unprivileged at most 0.50x the sequential loop and 1.20x privileged at N = 30"
    );
    power_off(&mut rig, &all);
}
