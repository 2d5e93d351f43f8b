//! `cargo bench --bench backup`: `osm-hostctl backup run --all` (read-only snapshot,
//! rsync, verification, per container) against plain `rsync -aHAX --numeric-ids` of the
//! same container trees to a local directory: a full run, then incremental runs with 1%
//! of the files changed. Target: osm-hostd within 1.2x of plain rsync, verification
//! included.
//!
//! Then the same containers with `transport = "btrfs-send"` to a loop-backed Btrfs
//! target: a full send, then incremental sends with 1% changed, against plain rsync's
//! incremental in the same rounds. Target: at most 0.6x of plain rsync.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it does one tiny round:
//! 2 containers of 1 MB.

use rig::{require_root, test_tempdir, DaemonConfig, Rig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Size {
    containers: usize,
    files: usize,
    file_size: usize,
    incremental_rounds: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// Cheap pseudo-random bytes (xorshift), so files do not deduplicate or compress.
fn fill(buf: &mut [u8], mut seed: u64) {
    seed |= 1;
    for chunk in buf.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let b = seed.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn write_file(path: &Path, size: usize, seed: u64) {
    let mut buf = vec![0u8; size];
    fill(&mut buf, seed);
    std::fs::write(path, buf).unwrap();
}

fn data_dir(rig: &Rig, name: &str) -> PathBuf {
    rig.sandbox().host_path(
        rig.store_root()
            .join("lxc/containers")
            .join(name)
            .join("rootfs-layer/srv/data"),
    )
}

fn plain_rsync(rig: &Rig, names: &[String], dest: &Path) {
    for n in names {
        let src = rig.store_root().join("lxc/containers").join(n);
        let out = rig
            .in_sandbox("rsync")
            .args(["-aHAX", "--numeric-ids"])
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", dest.join(n).display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "plain rsync: {out:?}");
    }
}

/// Rewrites 1% of each container's files (round `round` picks which).
fn change_files(rig: &Rig, names: &[String], size: &Size, round: usize) {
    let changed = (size.files / 100).max(1);
    for (i, n) in names.iter().enumerate() {
        let d = data_dir(rig, n);
        for f in 0..changed {
            let file = (round * changed + f) % size.files;
            write_file(
                &d.join(format!("f{file}")),
                size.file_size,
                (round * 7 + i * 100_000 + file + 1_000_000) as u64,
            );
        }
    }
    sync();
}

/// A loop-backed Btrfs of `size` mounted at `<dir>/btrfs` in the rig's sandbox.
fn btrfs_target(rig: &Rig, dir: &Path, size: &str) -> PathBuf {
    let img = dir.join("target.img");
    let mnt = dir.join("btrfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = std::process::Command::new("truncate")
        .args(["-s", size])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    rig.sandbox().track_loop_files_under(dir);
    rig.sandbox()
        .run_ok("mkfs.btrfs", &["-q".as_ref(), img.as_os_str()]);
    rig.sandbox().run_ok(
        "mount",
        &[
            "-o".as_ref(),
            "loop".as_ref(),
            img.as_os_str(),
            mnt.as_os_str(),
        ],
    );
    mnt
}

fn sync() {
    let _ = std::process::Command::new("sync").status();
}

fn main() {
    require_root();
    let bench = std::env::args().any(|a| a == "--bench");
    let size = if bench {
        Size {
            containers: 10,
            files: 400,
            file_size: 256 << 10,
            incremental_rounds: 3,
        }
    } else {
        Size {
            containers: 2,
            files: 16,
            file_size: 64 << 10,
            incremental_rounds: 1,
        }
    };
    let targets = test_tempdir("osm-bench-backup-");
    let osm_target = targets.path().join("osm");
    let plain_target = targets.path().join("plain");
    std::fs::create_dir_all(&plain_target).unwrap();
    let mut rig = Rig::builder().backup_target(&osm_target).start();
    rig.import_busybox_base("bb");
    let names: Vec<String> = (0..size.containers).map(|i| format!("ct{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        rig.ctl_ok(&["create", n, "--base", "bb"]);
        let d = data_dir(&rig, n);
        std::fs::create_dir_all(&d).unwrap();
        for f in 0..size.files {
            write_file(
                &d.join(format!("f{f}")),
                size.file_size,
                (i * 100_000 + f) as u64,
            );
        }
    }
    sync();

    let osm_full = timed(|| {
        rig.ctl_ok(&["backup", "run", "--all"]);
    });
    let plain_full = timed(|| plain_rsync(&rig, &names, &plain_target));

    let changed = (size.files / 100).max(1);
    let (mut osm_inc, mut plain_inc) = (Vec::new(), Vec::new());
    for round in 0..size.incremental_rounds {
        change_files(&rig, &names, &size, round);
        // Alternate which goes first so caches favour neither.
        let mut osm = || {
            osm_inc.push(timed(|| {
                rig.ctl_ok(&["backup", "run", "--all"]);
            }))
        };
        if round % 2 == 0 {
            osm();
            plain_inc.push(timed(|| plain_rsync(&rig, &names, &plain_target)));
        } else {
            plain_inc.push(timed(|| plain_rsync(&rig, &names, &plain_target)));
            osm();
        }
    }

    // The same containers with btrfs send to a Btrfs target.
    let send_dir = targets.path().join("send");
    std::fs::create_dir_all(&send_dir).unwrap();
    let mnt = btrfs_target(&rig, &send_dir, if bench { "4G" } else { "1G" });
    let mut cfg = DaemonConfig::for_test_dir(rig.dir());
    cfg.set_str("backup.target", &mnt.join("lxc").display().to_string())
        .set_str("backup.transport", "btrfs-send");
    rig.daemon().write_config(&cfg);
    rig.daemon_mut().restart();
    let send_full = timed(|| {
        rig.ctl_ok(&["backup", "run", "--all"]);
    });
    let (mut send_inc, mut plain_inc2) = (Vec::new(), Vec::new());
    for round in 0..size.incremental_rounds {
        change_files(&rig, &names, &size, size.incremental_rounds + round);
        let mut send = || {
            send_inc.push(timed(|| {
                rig.ctl_ok(&["backup", "run", "--all"]);
            }))
        };
        if round % 2 == 0 {
            send();
            plain_inc2.push(timed(|| plain_rsync(&rig, &names, &plain_target)));
        } else {
            plain_inc2.push(timed(|| plain_rsync(&rig, &names, &plain_target)));
            send();
        }
    }

    let mb = (size.containers * size.files * size.file_size) >> 20;
    println!(
        "backup of {} containers ({} MB in {} files), local target; incremental: {} file(s) per container changed, median of {} round(s)",
        size.containers,
        mb,
        size.containers * size.files,
        changed,
        size.incremental_rounds
    );
    println!(
        "{:<14} {:>12} {:>12} {:>8}",
        "run", "osm-hostd", "plain rsync", "ratio"
    );
    let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    for (label, a, b, goal) in [
        ("full", osm_full, plain_full, "at most 1.20x"),
        (
            "incremental",
            median(osm_inc),
            median(plain_inc),
            "at most 1.20x",
        ),
        ("send full", send_full, plain_full, "none"),
        (
            "send incr.",
            median(send_inc),
            median(plain_inc2),
            "at most 0.60x",
        ),
    ] {
        println!(
            "{:<14} {:>12} {:>12} {:>7.2}x   (target: {goal})",
            label,
            s(a),
            s(b),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}
