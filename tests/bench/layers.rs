//! `cargo bench --bench layers`: what stacking costs and what a rebase costs.
//!
//! 1. Start time (to RUNNING, through the CLI) of an unprivileged bookworm container with
//!    the `overlays/mqtt.toml` layer against one on the base alone (goal: within 1.2x).
//!    Base and layer come from the rig's shared build cache; a first run builds them
//!    (Debian's mirror) in a sandbox on the host's network.
//! 2. `rebase` time of a stopped container between two busybox base versions, for uppers
//!    of 10 MB and 1 GB in a few large files, 10 MB in many small files, and the same
//!    few-files upper over a base with 20,000 more files: the time follows the number of
//!    entries in the upper, not its bytes nor the size of the base. Uppers are synced
//!    before timing (a Btrfs snapshot of unsynced data would flush it first).
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it does one quick round on
//! busybox images only (a small imported layer, 20 MB instead of 1 GB), so the benchmark
//! stays tested without the mirror.

use rig::{project_path, require_root, Rig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn ok(c: &mut Command) {
    let out = c.output().expect("spawn");
    assert!(out.status.success(), "{c:?}: {out:?}");
}

/// A busybox root plus `extra` files of `size` bytes under `dir`, as a tar.
fn busybox_variant(rig: &Rig, name: &str, motd: &str, extra: usize, size: usize) -> PathBuf {
    let root = rig.dir().join("images").join(name);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    ok(Command::new("tar")
        .arg("-xf")
        .arg(rig.busybox_tar())
        .arg("-C")
        .arg(&root));
    std::fs::write(root.join("etc/motd"), motd).unwrap();
    fill(&root.join("usr/share/pad"), extra, size);
    let tar = rig.dir().join("images").join(format!("{name}.tar"));
    ok(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .arg("."));
    std::fs::remove_dir_all(&root).unwrap();
    tar
}

/// `count` files of `size` bytes (not compressible to nothing) in `dir`, 1000 per subdir.
fn fill(dir: &Path, count: usize, size: usize) {
    let mut block = vec![0u8; size.min(1 << 20)];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    for i in 0..count {
        let sub = dir.join(format!("{}", i / 1000));
        std::fs::create_dir_all(&sub).unwrap();
        let mut f = std::fs::File::create(sub.join(format!("f{i}"))).unwrap();
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len());
            block[0] = i as u8;
            f.write_all(&block[..n]).unwrap();
            left -= n;
        }
    }
}

fn sync() {
    ok(&mut Command::new("sync"));
}

/// Median time of `rebase NAME` back and forth between `a` and `b` (stopped container).
fn rebase_rounds(rig: &Rig, name: &str, a: &str, b: &str, rounds: usize) -> Duration {
    // One untimed round trip first: the first rebase of a container pays for caches.
    rig.ctl_ok(&["rebase", name, "--base", b]);
    rig.ctl_ok(&["rebase", name, "--base", a]);
    let mut times = Vec::new();
    for i in 0..rounds {
        let to = if i % 2 == 0 { b } else { a };
        times.push(timed(|| {
            rig.ctl_ok(&["rebase", name, "--base", to]);
        }));
        // Each rebase keeps a safety snapshot; drop them so they do not pile up.
        let list: serde_json::Value =
            serde_json::from_str(&rig.ctl_ok(&["snapshot", "list", name, "--json"])).unwrap();
        for s in list.as_array().unwrap() {
            let n = s["num"].as_u64().unwrap().to_string();
            rig.ctl_ok(&["snapshot", "delete", name, &n]);
        }
    }
    if rounds % 2 == 1 {
        rig.ctl_ok(&["rebase", name, "--base", a]);
    }
    median(times)
}

fn start_rounds(rig: &Rig, name: &str, rounds: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..rounds {
        times.push(timed(|| {
            rig.ctl_ok(&["start", name]);
        }));
        rig.ctl_ok(&["stop", name, "--force"]);
    }
    median(times)
}

fn bench_start(bench: bool, rounds: usize) {
    let (base, layer, rig) = if bench {
        let base_recipe = project_path("base-images/debian-bookworm.toml");
        let layer_recipe = project_path("overlays/mqtt.toml");
        let (b, l) = (
            base_recipe.to_str().unwrap(),
            layer_recipe.to_str().unwrap(),
        );
        {
            // Fills the shared cache if need be (Debian's mirror); instant once cached.
            let builder = Rig::builder().host_network().start();
            builder.ctl_ok(&["base", "build", "bookworm", "--recipe", b]);
            builder.ctl_ok(&["layer", "build", "mqtt", "--recipe", l]);
        }
        let rig = Rig::new();
        rig.ctl_ok(&["base", "build", "bookworm", "--recipe", b]);
        rig.ctl_ok(&["layer", "build", "mqtt", "--recipe", l]);
        ("bookworm", "mqtt", rig)
    } else {
        let rig = Rig::new();
        rig.import_busybox_base("bb");
        let up = rig.dir().join("images/layer");
        fill(&up.join("usr/share/layer"), 500, 4096);
        let tar = rig.dir().join("images/layer.tar");
        ok(Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&up)
            .arg("."));
        rig.ctl_ok(&[
            "layer",
            "import",
            "small",
            tar.to_str().unwrap(),
            "--base",
            "bb",
        ]);
        ("bb", "small", rig)
    };
    rig.ctl_ok(&["create", "plain", "--base", base]);
    rig.ctl_ok(&["create", "stacked", "--base", base, "--layer", layer]);
    // A first boot of each (first-boot work, page cache) before timing.
    start_rounds(&rig, "plain", 1);
    start_rounds(&rig, "stacked", 1);
    let mut plain = Vec::new();
    let mut stacked = Vec::new();
    for i in 0..rounds {
        if i % 2 == 0 {
            plain.push(start_rounds(&rig, "plain", 1));
            stacked.push(start_rounds(&rig, "stacked", 1));
        } else {
            stacked.push(start_rounds(&rig, "stacked", 1));
            plain.push(start_rounds(&rig, "plain", 1));
        }
    }
    let (p, s) = (median(plain), median(stacked));
    let ratio = s.as_secs_f64() / p.as_secs_f64();
    println!("start to RUNNING, unprivileged, median of {rounds} round(s)");
    println!("{:<28} {:>10}", "container", "start");
    println!("{:<28} {:>10}", format!("{base} only"), ms(p));
    println!("{:<28} {:>10}", format!("{base} + {layer} layer"), ms(s));
    println!("ratio {ratio:.2}x (goal: at most 1.20x)");
}

fn bench_rebase(bench: bool, rounds: usize) {
    let rig = Rig::new();
    let big_base_files = if bench { 20_000 } else { 2_000 };
    let gb = if bench { 1 << 30 } else { 20 << 20 };
    let many = if bench { 10_000 } else { 1_000 };
    for (name, motd, extra) in [
        ("bb@1", "v1\n", 0),
        ("bb@2", "v2\n", 0),
        ("big@1", "v1\n", big_base_files),
        ("big@2", "v2\n", big_base_files),
    ] {
        let tar = busybox_variant(&rig, name, motd, extra, 4096);
        rig.ctl_ok(&["base", "import", name, tar.to_str().unwrap()]);
    }
    // (label, base, files, bytes per file)
    let cases: [(String, &str, usize, usize); 4] = [
        ("10 MB in 10 files".into(), "bb", 10, 1 << 20),
        (format!("{} MB in 10 files", gb >> 20), "bb", 10, gb / 10),
        (
            format!("10 MB in {many} files"),
            "bb",
            many,
            (10 << 20) / many,
        ),
        (
            format!("10 MB in 10 files, base +{big_base_files} files"),
            "big",
            10,
            1 << 20,
        ),
    ];
    let mut rows = Vec::new();
    for (i, (label, base, files, size)) in cases.iter().enumerate() {
        let name = format!("r{i}");
        let (a, b) = (format!("{base}@1"), format!("{base}@2"));
        rig.ctl_ok(&["create", &name, "--base", &a]);
        let upper = rig
            .sandbox()
            .host_path(rig.store_root().join("lxc/containers").join(&name))
            .join("rootfs-layer");
        fill(&upper.join("var/lib/data"), *files, *size);
        // One conflict too, as a customer has: its own /etc/motd.
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/motd"), "mine\n").unwrap();
        sync();
        let t = rebase_rounds(&rig, &name, &a, &b, rounds);
        rows.push((label.clone(), t));
        rig.ctl_ok(&["delete", &name]);
    }
    println!("rebase of a stopped container (safety snapshot, check, swap), median of {rounds}");
    println!("{:<40} {:>10} {:>8}", "upper", "rebase", "ratio");
    let first = rows[0].1;
    for (label, t) in &rows {
        println!(
            "{:<40} {:>10} {:>7.2}x",
            label,
            ms(*t),
            t.as_secs_f64() / first.as_secs_f64()
        );
    }
}

fn main() {
    require_root();
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds = if bench { 7 } else { 1 };
    bench_start(bench, rounds);
    bench_rebase(bench, rounds);
}
