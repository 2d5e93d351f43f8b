//! `cargo bench --bench publish`: medians of publish and unpublish of an HTTPS vhost and
//! a TLS stream through osm-hostd (CLI + D-Bus + fragments + `nginx -t` + reload +
//! nftables), beside the same change made by hand the way hosts are run today (write the
//! NGINX fragment, `nginx -t`, `nginx -s reload`), against a real NGINX in the sandbox.
//! Target: publish and unpublish each under 300 ms.
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it does one quick round, so
//! the benchmark itself stays tested.

use rig::nginx::{publish_rig, NginxPaths};
use rig::Rig;
use std::time::{Duration, Instant};

const DOMAIN: &str = "bench.test";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn nginx_ok(rig: &Rig, p: &NginxPaths, args: &[&str]) {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.push("-c".into());
    all.push(p.conf.to_string_lossy().into_owned());
    rig.sandbox().run_ok("nginx", &all);
}

fn osm_round(rig: &Rig, i: usize) -> [Duration; 2] {
    let host = format!("osm{i}.{DOMAIN}");
    let stream = format!("{}:1883", 20000 + i);
    [
        timed(|| {
            rig.ctl_ok(&[
                "publish",
                "web",
                "--http",
                &format!("{host}:3000"),
                "--tls-stream",
                &stream,
            ]);
        }),
        timed(|| {
            rig.ctl_ok(&["unpublish", "web", "--all"]);
        }),
    ]
}

fn by_hand_round(rig: &Rig, p: &NginxPaths, i: usize) -> [Duration; 2] {
    let http = p.fragment("http", "byhand");
    let stream = p.fragment("stream", "byhand");
    let cert = p.cert.display();
    let key = p.key.display();
    let publish = timed(|| {
        std::fs::write(
            &http,
            format!(
                "server {{ listen 80; server_name hand{i}.{DOMAIN}; return 308 https://$host$request_uri; }}\n\
                 server {{ listen 443 ssl; server_name hand{i}.{DOMAIN}; ssl_certificate {cert}; \
                 ssl_certificate_key {key}; location / {{ proxy_pass http://10.0.3.2:3000; }} }}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            &stream,
            format!(
                "server {{ listen {} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; proxy_pass 10.0.3.2:1883; }}\n",
                21000 + i
            ),
        )
        .unwrap();
        nginx_ok(rig, p, &["-t", "-q"]);
        nginx_ok(rig, p, &["-s", "reload"]);
    });
    let unpublish = timed(|| {
        std::fs::remove_file(&http).unwrap();
        std::fs::remove_file(&stream).unwrap();
        nginx_ok(rig, p, &["-t", "-q"]);
        nginx_ok(rig, p, &["-s", "reload"]);
    });
    [publish, unpublish]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds = if bench { 9 } else { 1 };
    let (rig, p) = publish_rig(DOMAIN);
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web", "--base", "bb"]);
    let mut osm = Vec::new();
    let mut hand = Vec::new();
    for i in 0..rounds {
        // Alternate which goes first so caches and timers favour neither.
        if i % 2 == 0 {
            osm.push(osm_round(&rig, i));
            hand.push(by_hand_round(&rig, &p, i));
        } else {
            hand.push(by_hand_round(&rig, &p, i));
            osm.push(osm_round(&rig, i));
        }
    }
    let col = |v: &[[Duration; 2]], k: usize| median(v.iter().map(|r| r[k]).collect());
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!("publish/unpublish (HTTPS vhost + TLS stream, NGINX reload included), median of {rounds} round(s)");
    println!(
        "{:<12} {:>12} {:>12} {:>8}",
        "step", "osm-hostd", "by hand", "ratio"
    );
    for (k, step) in ["publish", "unpublish"].iter().enumerate() {
        let (a, b) = (col(&osm, k), col(&hand, k));
        println!(
            "{:<12} {:>12} {:>12} {:>7.2}x   (target: under 300 ms)",
            step,
            ms(a),
            ms(b),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}
