//! Benchmark: snapshot create and restore of containers holding 300 MB and 1 GB, beside
//! today's shell way (`snapper create`, and a restore with `rsync --delete` from the
//! snapshot). Prints medians and ratios. Needs root; run with
//! `cargo bench --bench snapshots` (it is not part of `cargo test`).
//!
//! Data is synced before every timed step, so the numbers measure the operations, not
//! flushing freshly written data (a read-only snapshot flushes it first: about 0.8 s for
//! 200 MB unsynced, 5 ms once synced). Before each restore, 10 % of the
//! files are rewritten so the rsync baseline has real work to undo.

use rig::Rig;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RUNS: usize = 3;
const FILE_MB: usize = 4;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `sh -c script` in the sandbox with `args` as `$1`, `$2`, …; every path must
/// be inside the rig's directory.
fn sh(rig: &Rig, script: &str, args: &[&Path]) {
    for a in args {
        assert!(
            a.starts_with(rig.dir()),
            "{} is outside the rig",
            a.display()
        );
    }
    let out = rig
        .in_sandbox("sh")
        .args(["-c", script, "sh"])
        .args(args)
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{script}: {out:?}");
}

fn snapper(rig: &Rig, args: &[&str]) -> String {
    let cfg = rig.dir().join("snapper/configs");
    let def = rig.dir().join("snapper/default");
    let script =
        "mount --bind \"$0\" /etc/snapper/configs && mount --bind \"$1\" /etc/default/snapper \
                  && shift 2 && exec snapper --no-dbus \"$@\"";
    let out = rig
        .in_sandbox("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .arg(&cfg)
        .arg(&def)
        .arg("_")
        .args(args)
        .output()
        .expect("run snapper");
    assert!(out.status.success(), "snapper {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

struct Row {
    size: &'static str,
    create: Duration,
    snapper_create: Duration,
    btrfs_create: Duration,
    restore: Duration,
    rsync_restore: Duration,
}

fn bench_size(rig: &Rig, name: &str, size: &'static str, mb: usize) -> Row {
    rig.ctl_ok(&["create", name, "--base", "bb"]);
    let dir: PathBuf = rig.store_root().join("lxc/containers").join(name);
    let data = dir.join("rootfs-layer/data");
    let files = mb / FILE_MB;
    sh(
        rig,
        &format!(
            "mkdir -p \"$1\" && for i in $(seq 1 {files}); do head -c {}M /dev/urandom > \"$1/f$i\"; done && sync",
            FILE_MB
        ),
        &[&data],
    );

    let mut create = Vec::new();
    let mut snapper_create = Vec::new();
    let mut btrfs_create = Vec::new();
    let plain = rig.store_root().join(format!("bench-plain-{name}"));
    for _ in 0..RUNS {
        sh(rig, "sync", &[]);
        create.push(timed(|| {
            rig.ctl_ok(&["snapshot", "create", name]);
        }));
        sh(rig, "sync", &[]);
        snapper_create.push(timed(|| {
            snapper(rig, &["-c", name, "create"]);
        }));
        sh(rig, "sync", &[]);
        btrfs_create.push(timed(|| {
            sh(
                rig,
                "btrfs -q subvolume snapshot -r \"$1\" \"$2\"",
                &[&dir, &plain],
            );
        }));
        sh(rig, "btrfs -q subvolume delete \"$1\"", &[&plain]);
    }
    let good = rig.ctl_ok(&["snapshot", "create", name, "--description", "bench"]);
    let good = good.trim().to_string();
    let snap = dir.join(".snapshots").join(&good).join("snapshot");
    let rewrite = format!(
        "for i in $(seq 1 10 {files}); do head -c {FILE_MB}M /dev/urandom > \"$1/f$i\"; done && sync"
    );
    let mut restore = Vec::new();
    let mut rsync_restore = Vec::new();
    for _ in 0..RUNS {
        sh(rig, &rewrite, &[&data]);
        restore.push(timed(|| {
            rig.ctl_ok(&["snapshot", "restore", name, &good]);
        }));
        sh(rig, &rewrite, &[&data]);
        rsync_restore.push(timed(|| {
            sh(
                rig,
                "rsync -aHAXS --numeric-ids --delete -x --exclude=/.snapshots/ --exclude=/work/* \"$1/\" \"$2/\" && sync",
                &[&snap, &dir],
            );
        }));
    }
    rig.ctl_ok(&["delete", name]);
    Row {
        size,
        create: median(create),
        snapper_create: median(snapper_create),
        btrfs_create: median(btrfs_create),
        restore: median(restore),
        rsync_restore: median(rsync_restore),
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and a benchmark must not run as part of the tests.
    if !std::env::args().any(|a| a == "--bench") {
        println!("snapshots benchmark: run it with `cargo bench --bench snapshots`");
        return;
    }
    rig::require_root();
    let rig = Rig::builder()
        .config(|c| {
            c.set_str("loop_size", "8G")
                .set_str("snapshots.min_free", "0");
        })
        .start();
    rig.import_busybox_base("bb");
    let rows = vec![
        bench_size(&rig, "bench300", "300 MB", 300),
        bench_size(&rig, "bench1g", "1 GB", 1024),
    ];
    println!("\nsnapshots: medians of {RUNS} runs (data synced before each step)\n");
    println!(
        "{:<7} | {:>12} | {:>14} | {:>7} | {:>12} | {:>7} | {:>12} | {:>13} | {:>7}",
        "size",
        "osm create",
        "snapper create",
        "ratio",
        "btrfs snap -r",
        "ratio",
        "osm restore",
        "rsync restore",
        "ratio"
    );
    println!("{}", "-".repeat(118));
    for r in &rows {
        println!(
            "{:<7} | {:>12} | {:>14} | {:>7.2} | {:>13} | {:>7.2} | {:>12} | {:>13} | {:>7.2}",
            r.size,
            ms(r.create),
            ms(r.snapper_create),
            r.create.as_secs_f64() / r.snapper_create.as_secs_f64(),
            ms(r.btrfs_create),
            r.create.as_secs_f64() / r.btrfs_create.as_secs_f64(),
            ms(r.restore),
            ms(r.rsync_restore),
            r.restore.as_secs_f64() / r.rsync_restore.as_secs_f64(),
        );
    }
    println!(
        "\nrestore 1 GB / 300 MB: {:.2} (target at most 1.20: the swap does not copy)",
        rows[1].restore.as_secs_f64() / rows[0].restore.as_secs_f64()
    );
    println!("ratio = osm-hostd / baseline (below 1 is faster). osm create and restore go");
    println!("through osm-hostctl and D-Bus; `btrfs subvolume snapshot -r` is the bare");
    println!(
        "snapshot (target: osm create at most 1.00x it); rsync restores 10 % rewritten files."
    );
}
