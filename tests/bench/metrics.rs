//! `cargo bench --bench metrics`: the cost of a Prometheus scrape of osm-hostd with 100
//! busybox containers defined and 30 running, and the daemon's resident memory then.
//! The baseline is what a shell exporter would do today: one `lxc-info` per container.
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it uses 4 containers with
//! 2 running, so the benchmark itself stays tested.

use rig::{require_root, test_tempdir, wait_until, Rig};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

fn scrape(sock: &Path) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect to metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    resp
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

fn main() {
    require_root();
    let bench = std::env::args().any(|a| a == "--bench");
    let (defined, running, rounds) = if bench { (100, 30, 21) } else { (4, 2, 3) };
    let sock_dir = test_tempdir("osm-bench-metrics-");
    let sock = sock_dir.path().join("metrics.sock");
    let s = sock.to_string_lossy().into_owned();
    let rig = Rig::builder()
        .config(move |c| {
            c.set_str("metrics.listen", &s);
        })
        .start();
    let sock = rig.sandbox().host_path(&sock);
    rig.import_busybox_base("bb");
    let names: Vec<String> = (0..defined).map(|i| format!("m{i:03}")).collect();
    for n in &names {
        rig.ctl_ok(&["create", n, "--base", "bb", "--memory", "64M"]);
    }
    for n in &names[..running] {
        rig.ctl_ok(&["start", n]);
    }
    let body = scrape(&sock);
    let want = format!("osmhost_containers{{state=\"running\"}} {running}");
    assert!(
        wait_until(Duration::from_secs(30), || scrape(&sock).contains(&want)),
        "{body}"
    );
    // Let the background disk measurement of every container finish once.
    std::thread::sleep(Duration::from_secs(if bench { 5 } else { 1 }));

    let mut scrapes = Vec::new();
    let mut size = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        size = scrape(&sock).len();
        scrapes.push(t.elapsed());
    }
    // `osm-hostctl list` through the bus, the same {defined} containers.
    let mut lists = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let out = rig.ctl_ok(&["list"]);
        lists.push(t.elapsed());
        assert_eq!(
            out.lines().filter(|l| l.starts_with('m')).count(),
            defined,
            "{out}"
        );
    }
    let path = rig.lxc_path();
    let mut baseline = Vec::new();
    for _ in 0..rounds.min(5) {
        let t = Instant::now();
        for n in &names {
            let out = rig
                .in_sandbox("lxc-info")
                .args(["-P", path.to_str().unwrap(), "-n", n, "-S", "-s", "-p"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
        baseline.push(t.elapsed());
    }
    let pid = rig.daemon().pid().expect("daemon running");
    let rss = rss_bytes(pid);

    let (scrape_med, base_med) = (median(scrapes), median(baseline));
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "metrics: {defined} containers defined, {running} running; median of {rounds} scrapes \
         ({size} bytes each) against one `lxc-info -S -s -p` per container"
    );
    println!("{:>14} {:>18} {:>8}", "scrape", "lxc-info loop", "ratio");
    println!(
        "{:>14} {:>18} {:>7.3}x",
        ms(scrape_med),
        ms(base_med),
        scrape_med.as_secs_f64() / base_med.as_secs_f64()
    );
    println!(
        "osm-hostctl list of {defined} containers: {} (median of {rounds})",
        ms(median(lists))
    );
    println!(
        "daemon resident memory: {:.1} MB",
        rss as f64 / 1024.0 / 1024.0
    );
    println!("targets: scrape and list of 100 containers under 50 ms; resident memory under 25 MB");

    for n in &names[..running] {
        rig.ctl_ok(&["stop", n, "--force"]);
    }
    drop(rig);
    drop(sock_dir);
}
