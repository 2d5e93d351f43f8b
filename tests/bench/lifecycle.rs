//! `cargo bench --bench lifecycle`: medians of create, start (to RUNNING), stop and delete
//! of a busybox container through osm-hostd (CLI + D-Bus + daemon), unprivileged (the
//! default: its tree mounted by the daemon over idmapped lowers) and `--privileged`
//! (LXC's own overlay), beside the same steps
//! done by hand the way hosts are run today (btrfs subvolume create, a written LXC config,
//! lxc-start), in the same private namespaces on the same loop-mounted store.
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it does one quick round, so
//! the benchmark itself stays tested.

use rig::{require_root, Rig};
use std::path::Path;
use std::time::{Duration, Instant};

const STEPS: [&str; 4] = ["create", "start", "stop", "delete"];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn run_ok(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn osm_round(rig: &Rig, name: &str, privileged: bool) -> [Duration; 4] {
    let mut create = vec!["create", name, "--base", "bb"];
    if privileged {
        create.push("--privileged");
    }
    [
        timed(|| {
            rig.ctl_ok(&create);
        }),
        timed(|| {
            rig.ctl_ok(&["start", name]);
        }),
        timed(|| {
            rig.ctl_ok(&["stop", name]);
        }),
        timed(|| {
            rig.ctl_ok(&["delete", name]);
        }),
    ]
}

/// By hand, with no network (`veth = false`) or, like the daemon's containers, a veth
/// on the bridge.
fn by_hand_round(rig: &Rig, name: &str, veth: bool) -> [Duration; 4] {
    let lxc = rig.store_root().join("lxc");
    let containers = lxc.join("containers");
    let dir = containers.join(name);
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let create = timed(|| {
        run_ok(
            rig.in_sandbox("btrfs")
                .args(["-q", "subvolume", "create", &p(&dir)]),
        );
        let host_dir = rig.sandbox().host_path(&dir);
        std::fs::create_dir(host_dir.join("rootfs-layer")).unwrap();
        std::fs::create_dir(host_dir.join("work")).unwrap();
        let conf = format!(
            "lxc.include = {common}\nlxc.uts.name = {name}\nlxc.rootfs.path = overlay:{base}:{upper}\n{net}",
            common = p(&lxc.join("include/common.conf")),
            base = p(&lxc.join("os-bases/bb")),
            upper = p(&dir.join("rootfs-layer")),
            net = if veth {
                "lxc.net.0.type = veth\nlxc.net.0.link = lxcbr0\nlxc.net.0.flags = up\n"
            } else {
                "lxc.net.0.type = empty\n"
            },
        );
        std::fs::write(host_dir.join("config"), conf).unwrap();
    });
    let start = timed(|| {
        run_ok(
            rig.in_sandbox("lxc-start")
                .args(["-n", name, "-P", &p(&containers), "-d"]),
        )
    });
    let stop = timed(|| {
        run_ok(
            rig.in_sandbox("lxc-stop")
                .args(["-n", name, "-P", &p(&containers), "-t", "30"]),
        )
    });
    let delete = timed(|| {
        run_ok(
            rig.in_sandbox("btrfs")
                .args(["-q", "subvolume", "delete", &p(&dir)]),
        )
    });
    [create, start, stop, delete]
}

fn main() {
    require_root();
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds = if bench { 7 } else { 1 };
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    let mut osm: Vec<[Duration; 4]> = Vec::new();
    let mut privileged: Vec<[Duration; 4]> = Vec::new();
    let mut hand: Vec<[Duration; 4]> = Vec::new();
    let mut hand_veth: Vec<[Duration; 4]> = Vec::new();
    for i in 0..rounds {
        // Alternate which goes first so caches and timers favour neither.
        if i % 2 == 0 {
            osm.push(osm_round(&rig, &format!("osm{i}"), false));
            privileged.push(osm_round(&rig, &format!("priv{i}"), true));
            hand.push(by_hand_round(&rig, &format!("hand{i}"), false));
            hand_veth.push(by_hand_round(&rig, &format!("veth{i}"), true));
        } else {
            hand_veth.push(by_hand_round(&rig, &format!("veth{i}"), true));
            hand.push(by_hand_round(&rig, &format!("hand{i}"), false));
            privileged.push(osm_round(&rig, &format!("priv{i}"), true));
            osm.push(osm_round(&rig, &format!("osm{i}"), false));
        }
    }
    let col = |v: &[[Duration; 4]], k: usize| median(v.iter().map(|r| r[k]).collect());
    println!("lifecycle of a busybox container, median of {rounds} round(s)");
    println!(
        "{:<14} {:>13} {:>12} {:>12} {:>8} {:>10}",
        "step", "unprivileged", "privileged", "by hand", "ratio", "unpriv/priv"
    );
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    for (k, step) in STEPS.iter().enumerate() {
        let (a, p, b) = (col(&osm, k), col(&privileged, k), col(&hand, k));
        println!(
            "{:<14} {:>13} {:>12} {:>12} {:>7.2}x {:>10.2}x",
            step,
            ms(a),
            ms(p),
            ms(b),
            ratio(a, b),
            ratio(a, p)
        );
    }
    let sum = |v: &[[Duration; 4]]| median(v.iter().map(|r| r[0] + r[1]).collect());
    let (a, p, b) = (sum(&osm), sum(&privileged), sum(&hand));
    println!(
        "{:<14} {:>13} {:>12} {:>12} {:>7.2}x {:>10.2}x   (targets: at most 1.50x by hand, 1.20x privileged)",
        "create+start",
        ms(a),
        ms(p),
        ms(b),
        ratio(a, b),
        ratio(a, p)
    );
    // The daemon's containers have a veth on the bridge; the by-hand ones above none.
    let v = sum(&hand_veth);
    println!(
        "by hand with a veth on the bridge: create+start {}; unprivileged {:.2}x, privileged {:.2}x of it",
        ms(v),
        ratio(a, v),
        ratio(p, v)
    );
}
