//! Root integration: what a fleet reads from a host. Prometheus metrics of a real busybox
//! container whose memory and network traffic the test drives, checked by promtool; a
//! scrape while a backup runs; the capacity report; host health.

use rig::{require_root, test_tempdir, wait_until, Rig};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: f64 = 1024.0 * 1024.0;

/// `GET /metrics` over the daemon's unix socket; the body.
fn scrape(sock: &Path) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// Samples by `name{labels}` exactly as written.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get(body: &str, key: &str) -> f64 {
    *samples(body)
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in:\n{body}"))
}

fn promtool_check(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus; scripts/lib.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `osmhost_*` name the shipped dashboard and alert rules use is a family the
/// daemon serves (catches a renamed metric or a typo in the packaging files).
fn assert_packaged_names_served(body: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in [
        "packaging/grafana/osm-host-dashboard.json",
        "packaging/prometheus/osm-host-alerts.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut names: Vec<&str> = text
            .match_indices("osmhost_")
            .map(|(i, _)| {
                let rest = &text[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        names.sort();
        names.dedup();
        assert!(names.len() >= 5, "{file}: {names:?}");
        for n in names {
            assert!(
                body.contains(&format!("# TYPE {n} ")),
                "{file} uses {n}, which the daemon does not serve"
            );
        }
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A rig whose daemon serves metrics on a unix socket (reachable from any namespace).
struct MetricsRig {
    rig: Rig,
    sock: PathBuf,
    // Dropped after the rig (fields drop in order).
    _sock_dir: tempfile::TempDir,
}

fn metrics_rig(backup_target: Option<&Path>) -> MetricsRig {
    let sock_dir = test_tempdir("osm-metrics-");
    let sock = sock_dir.path().join("metrics.sock");
    let s = sock.to_string_lossy().into_owned();
    let target = backup_target.map(|p| p.to_string_lossy().into_owned());
    let rig = Rig::builder()
        .config(move |c| {
            c.set_str("metrics.listen", &s)
                .set("metrics.disk_usage_interval", "1");
            if let Some(t) = &target {
                c.set_str("backup.target", t);
            }
        })
        .start();
    let sock = rig.sandbox().host_path(&sock);
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()),
        "no metrics socket; daemon log:\n{}",
        rig.daemon().log_tail(30)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o666,
        "any local user may scrape, as any may read the bus API"
    );
    MetricsRig {
        rig,
        sock,
        _sock_dir: sock_dir,
    }
}

fn attach_ok(rig: &Rig, name: &str, script: &str) -> String {
    let out = rig.attach(name, script);
    assert!(out.status.success(), "attach {script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn metrics_follow_a_container_the_test_drives() {
    require_root();
    let MetricsRig { rig, sock, .. } = &metrics_rig(None);
    let (rig, sock) = (rig, sock.as_path());
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "m1", "--base", "bb", "--memory", "256M"]);
    rig.ctl_ok(&["create", "idle", "--base", "bb"]);

    let body = scrape(sock);
    promtool_check(&body);
    assert_eq!(get(&body, "osmhost_containers{state=\"stopped\"}"), 2.0);
    assert_eq!(get(&body, "osmhost_bases"), 1.0);
    assert_eq!(
        get(
            &body,
            "osmhost_container_state{container=\"m1\",state=\"stopped\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &body,
            "osmhost_container_memory_limit_bytes{container=\"m1\"}"
        ),
        256.0 * MIB
    );
    let started = get(&body, "osmhost_daemon_start_time_seconds");
    assert!(started <= now() && started > now() - 600.0, "{started}");
    let (size, used, free) = (
        get(&body, "osmhost_store_size_bytes"),
        get(&body, "osmhost_store_used_bytes"),
        get(&body, "osmhost_store_free_bytes"),
    );
    assert!(size > 5.0 * 1024.0 * MIB && used + free == size, "{body}");

    rig.ctl_ok(&["start", "m1"]);
    let body = scrape(sock);
    assert_eq!(
        get(
            &body,
            "osmhost_container_state{container=\"m1\",state=\"running\"}"
        ),
        1.0
    );
    assert_eq!(get(&body, "osmhost_containers{state=\"running\"}"), 1.0);
    assert!(get(&body, "osmhost_container_pids{container=\"m1\"}") >= 2.0);

    // Memory: 64 MiB in a tmpfs inside the container is charged to its cgroup.
    let mem_before = get(&body, "osmhost_container_memory_bytes{container=\"m1\"}");
    attach_ok(
        rig,
        "m1",
        "mkdir -p /mem && mount -t tmpfs tmpfs /mem && \
         dd if=/dev/zero of=/mem/fill bs=1M count=64 2>/dev/null",
    );
    let body = scrape(sock);
    let mem_after = get(&body, "osmhost_container_memory_bytes{container=\"m1\"}");
    assert!(
        mem_after >= mem_before + 60.0 * MIB,
        "memory {mem_before} -> {mem_after}"
    );
    assert_eq!(
        get(
            &body,
            "osmhost_container_memory_limit_bytes{container=\"m1\"}"
        ),
        256.0 * MIB,
        "the cgroup's limit"
    );

    // Network: 20 pings of 1000 bytes to the bridge once the lease is in.
    assert!(
        wait_until(Duration::from_secs(20), || {
            attach_ok(rig, "m1", "ip -4 addr show eth0").contains("inet ")
        }),
        "m1 got no address"
    );
    let tx = "osmhost_container_network_transmit_bytes_total{container=\"m1\",interface=\"eth0\"}";
    let rx = "osmhost_container_network_receive_bytes_total{container=\"m1\",interface=\"eth0\"}";
    let txp =
        "osmhost_container_network_transmit_packets_total{container=\"m1\",interface=\"eth0\"}";
    let body = scrape(sock);
    let (tx0, rx0, txp0) = (get(&body, tx), get(&body, rx), get(&body, txp));
    attach_ok(rig, "m1", "ping -c 20 -i 0.05 -s 1000 -q 10.0.3.1");
    let body = scrape(sock);
    assert!(get(&body, tx) >= tx0 + 20_000.0, "{body}");
    assert!(get(&body, rx) >= rx0 + 20_000.0, "{body}");
    assert!(get(&body, txp) >= txp0 + 20.0, "{body}");

    // CPU: a busy loop for two seconds inside the container (the machine may be shared,
    // so it is owed a fraction of that, not all of it).
    let cpu = "osmhost_container_cpu_seconds_total{container=\"m1\"}";
    let cpu0 = get(&body, cpu);
    let t = Instant::now();
    attach_ok(
        rig,
        "m1",
        "end=$(($(date +%s) + 2)); while [ $(date +%s) -lt $end ]; do :; done",
    );
    let wall = t.elapsed().as_secs_f64();
    let used = get(&scrape(sock), cpu) - cpu0;
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    assert!(
        used >= 0.1 && used <= wall * cores + 0.1,
        "CPU seconds grew by {used} over {wall} s"
    );

    // Disk usage is measured in the background (every second here).
    let disk = "osmhost_container_disk_used_bytes{container=\"m1\"}";
    attach_ok(
        rig,
        "m1",
        "dd if=/dev/urandom of=/root/blob bs=1M count=8 2>/dev/null && sync",
    );
    assert!(
        wait_until(Duration::from_secs(15), || get(&scrape(sock), disk)
            >= 8.0 * MIB),
        "{}",
        scrape(sock)
    );

    // Snapshots: count and newest time.
    let t0 = now().floor();
    rig.ctl_ok(&["snapshot", "create", "m1"]);
    let snaps = "osmhost_container_snapshots{container=\"m1\"}";
    assert!(
        wait_until(Duration::from_secs(5), || get(&scrape(sock), snaps) == 1.0),
        "{}",
        scrape(sock)
    );
    let newest = get(
        &scrape(sock),
        "osmhost_container_last_snapshot_timestamp_seconds{container=\"m1\"}",
    );
    assert!(newest >= t0 && newest <= now() + 1.0, "{newest} vs {t0}");

    let body = scrape(sock);
    promtool_check(&body);
    rig.ctl_ok(&["stop", "m1", "--timeout", "10"]);
    let body = scrape(sock);
    assert!(
        !body.contains("osmhost_container_cpu_seconds_total{container=\"m1\"}"),
        "a stopped container has no cgroup counters"
    );
    rig.ctl_ok(&["delete", "m1"]);
    rig.ctl_ok(&["delete", "idle"]);
    let body = scrape(sock);
    assert!(!body.contains("container=\"m1\""), "{body}");
    promtool_check(&body);
}

#[test]
fn a_scrape_during_a_backup_answers_at_once() {
    require_root();
    let target = test_tempdir("osm-metrics-backup-");
    let MetricsRig { rig, sock, .. } = &metrics_rig(Some(target.path()));
    let (rig, sock) = (rig, sock.as_path());
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "b1", "--base", "bb"]);
    rig.ctl_ok(&["start", "b1"]);
    // Enough data that the copy takes a while.
    attach_ok(
        rig,
        "b1",
        "mkdir -p /data && for i in 1 2 3 4 5 6; do \
         dd if=/dev/urandom of=/data/f$i bs=1M count=40 2>/dev/null; done && sync",
    );
    let mut backup = rig
        .ctl_command(&["backup", "run", "b1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut during = Vec::new();
    let mut saw_job = false;
    while backup.try_wait().unwrap().is_none() {
        let t = Instant::now();
        let body = scrape(sock);
        let took = t.elapsed();
        // Only scrapes taken while the job is known to run count.
        if body.contains("osmhost_jobs_running{kind=\"backup\"} 1")
            && backup.try_wait().unwrap().is_none()
        {
            saw_job = true;
            during.push(took);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = backup.wait().unwrap();
    assert!(status.success(), "backup failed");
    assert!(
        saw_job && !during.is_empty(),
        "no scrape while the backup ran"
    );
    let slowest = during.iter().max().unwrap();
    eprintln!(
        "{} scrapes during the backup, slowest {slowest:?}",
        during.len()
    );
    assert!(
        *slowest < Duration::from_millis(100),
        "a scrape during the backup took {slowest:?} ({} scrapes)",
        during.len()
    );
    let body = scrape(sock);
    let ok = get(
        &body,
        "osmhost_container_last_backup_success_timestamp_seconds{container=\"b1\"}",
    );
    assert!(ok > now() - 600.0 && ok <= now(), "{ok}");
    assert_eq!(
        get(
            &body,
            "osmhost_container_last_backup_failed{container=\"b1\"}"
        ),
        0.0
    );
    assert_eq!(
        get(&body, "osmhost_jobs_failed_total{kind=\"backup\"}"),
        0.0
    );
    promtool_check(&body);
    assert_packaged_names_served(&body);
    rig.ctl_ok(&["stop", "b1", "--timeout", "10"]);
    rig.ctl_ok(&["delete", "b1"]);
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus/osm-host-alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool (Debian package prometheus)");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("SUCCESS: 6 rules found"), "{said}");
}

fn meminfo_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

#[test]
fn capacity_reports_what_the_test_made() {
    require_root();
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&[
        "create", "c1", "--base", "bb", "--memory", "256M", "--cpus", "1",
    ]);
    rig.ctl_ok(&[
        "create", "c2", "--base", "bb", "--memory", "512M", "--cpus", "2",
    ]);
    rig.ctl_ok(&["create", "c3", "--base", "bb"]);
    rig.ctl_ok(&["start", "c1"]);

    let c: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["host", "capacity", "--json"])).unwrap();
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as u64;
    assert_eq!(c["cpus"], cpus, "{c}");
    assert_eq!(c["cpus_committed"], 3, "{c}");
    assert_eq!(c["memory_total"], meminfo_total(), "{c}");
    let used = c["memory_used"].as_u64().unwrap();
    assert!(used > 0 && used < meminfo_total(), "{c}");
    assert_eq!(c["memory_committed"], 768 * 1024 * 1024u64, "{c}");
    assert_eq!(c["containers_without_memory_limit"], 1, "{c}");
    assert_eq!(c["containers"]["running"], 1, "{c}");
    assert_eq!(c["containers"]["stopped"], 2, "{c}");
    assert_eq!(c["containers"]["starting"], 0, "{c}");
    // The default range 10.0.3.2-10.0.3.254 holds 253 addresses; three are taken.
    assert_eq!(c["addresses_used"], 3, "{c}");
    assert_eq!(c["addresses_free"], 250, "{c}");
    assert_eq!(c["published_ports"], serde_json::json!([]), "{c}");
    let st = nix::sys::statvfs::statvfs(&rig.sandbox().host_path(rig.store_root())).unwrap();
    let unit = st.fragment_size();
    assert_eq!(c["store_total"], st.blocks() * unit, "{c}");
    let (free, used) = (
        c["store_free"].as_u64().unwrap(),
        c["store_used"].as_u64().unwrap(),
    );
    assert_eq!(free + used, st.blocks() * unit, "{c}");
    let free_now = st.blocks_available() * unit;
    assert!(
        free.abs_diff(free_now) < 64 * 1024 * 1024,
        "{free} vs {free_now}"
    );

    let text = rig.ctl_ok(&["host", "capacity"]);
    assert!(
        text.contains("1 running") && text.contains("2 stopped"),
        "{text}"
    );
    assert!(text.contains("Published ports: none"), "{text}");
    // Anyone may read it.
    let out = rig.ctl_as_nobody(&["host", "capacity", "--json"]);
    assert!(out.status.success(), "{out:?}");

    // The default listener: 127.0.0.1:9477 in the daemon's network namespace.
    let wget = |url: &str| {
        rig.in_sandbox("/bin/busybox")
            .args(["timeout", "5", "wget", "-q", "-O", "-", url])
            .output()
            .unwrap()
    };
    let out = wget("http://127.0.0.1:9477/metrics");
    assert!(out.status.success(), "{out:?}");
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(get(&body, "osmhost_containers{state=\"running\"}"), 1.0);
    assert_eq!(
        get(&body, "osmhost_addresses_free"),
        c["addresses_free"].as_f64().unwrap()
    );
    assert!(!wget("http://127.0.0.1:9477/other").status.success());

    rig.ctl_ok(&["stop", "c1", "--timeout", "10"]);
    for n in ["c1", "c2", "c3"] {
        rig.ctl_ok(&["delete", n]);
    }
}

#[test]
fn host_health_follows_autostart_containers_and_backups() {
    require_root();
    let target = test_tempdir("osm-health-backup-");
    let rig = Rig::builder().backup_target(target.path()).start();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "h1", "--base", "bb", "--autostart"]);
    rig.ctl_ok(&["create", "manual", "--base", "bb"]);

    let health = |args: &[&str]| {
        let mut all = vec!["host", "health"];
        all.extend_from_slice(args);
        let out = rig.ctl(&all);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = health(&[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("container h1 should run (autostart = true) but is stopped"),
        "{out}"
    );
    assert!(
        !out.contains("manual"),
        "a container without autostart may stop: {out}"
    );
    assert!(err.contains("unhealthy: 1 problem(s)"), "{err}");

    rig.ctl_ok(&["start", "h1"]);
    let (code, out, err) = health(&[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "healthy");

    // Backups: fresh right after a run; stale once older than the allowed age, and a
    // container never backed up counts once backups are in use.
    rig.ctl_ok(&["backup", "run", "h1"]);
    let (code, out, _) = health(&[]);
    assert_eq!(code, Some(0), "{out}");
    std::thread::sleep(Duration::from_millis(2100));
    let (code, out, _) = health(&["--max-backup-age", "0.0005"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("container h1: the last good backup is"),
        "{out}"
    );
    assert!(
        out.contains("container manual has never been backed up"),
        "{out}"
    );
    let (code, _, err) = health(&["--max-backup-age=0"]);
    assert_eq!(code, Some(5), "{err}");

    rig.ctl_ok(&["stop", "h1", "--timeout", "10"]);
    rig.ctl_ok(&["delete", "h1"]);
    rig.ctl_ok(&["delete", "manual"]);
}

#[test]
fn dash_h_drives_a_daemon_in_another_namespace_over_ssh() {
    require_root();
    let rig = Rig::new();
    let keys = test_tempdir("osm-remote-ssh-");
    let peer = rig::SshPeer::start(&rig, keys.path());
    rig.import_busybox_base("bb");
    let remote = |args: &[&str]| {
        let out = peer.ctl_command(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // The client namespace has no bus of its own: without -H nothing answers.
    let out = peer
        .client
        .command(rig::ctl_bin())
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/osm-test-bus",
        )
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9), "{out:?}");

    let (code, out, err) = remote(&["create", "r1", "--base", "bb", "--memory", "128M"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "created r1");
    let (code, out, err) = remote(&["start", "r1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        rig.lxc_state("r1"),
        "RUNNING",
        "the daemon behind ssh started it"
    );
    // The same output as locally.
    let (code, out, err) = remote(&["list", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, rig.ctl_ok(&["list", "--json"]));
    let (code, out, _) = remote(&["host", "capacity", "--json"]);
    assert_eq!(code, Some(0));
    let c: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(c["containers"]["running"], 1, "{c}");
    assert_eq!(c["memory_committed"], 128 * 1024 * 1024u64, "{c}");
    // And the same exit codes: NotFound is 3, InvalidState/Busy 6.
    let (code, _, err) = remote(&["info", "nosuch"]);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(code, rig.ctl(&["info", "nosuch"]).status.code());
    let (code, _, err) = remote(&["base", "delete", "bb"]);
    assert_eq!(
        code,
        rig.ctl(&["base", "delete", "bb"]).status.code(),
        "{err}"
    );
    // A verb that waits for a job follows the job's signals through the tunnel.
    let (code, out, err) = remote(&["snapshot", "create", "r1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = remote(&["snapshot", "restore", "r1", "1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        rig.info_json("r1")["state"],
        "running",
        "restored and started again"
    );
    assert!(
        rig.ctl_ok(&["snapshot", "list", "r1"]).lines().count() >= 3,
        "the snapshot and the restore's safety snapshot"
    );
    let (code, out, err) = remote(&["stop", "r1", "--timeout", "10"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = remote(&["delete", "r1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(!rig.ctl_ok(&["list"]).contains("r1"));

    // A host that is not a host, and one that does not answer.
    let out = peer
        .client
        .command(rig::ctl_bin())
        .env("OSM_HOSTCTL_SSH", &peer.ssh_wrapper)
        .args(["--host=-oProxyCommand=sh", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let out = peer
        .client
        .command(rig::ctl_bin())
        .env("OSM_HOSTCTL_SSH", &peer.ssh_wrapper)
        .args(["-H", "root@198.51.100.77", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the system bus of root@198.51.100.77"),
        "{err}"
    );
}

#[test]
fn monitor_prints_the_events_of_a_container_life_in_order() {
    require_root();
    let target = test_tempdir("osm-monitor-backup-");
    let rig = Rig::builder()
        .ctl_outside_sandbox()
        .backup_target(target.path())
        .start();
    rig.import_busybox_base("bb");
    let mut child = rig
        .ctl_command(&["monitor", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("monitor --json printed {line:?}: {e}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    // The monitor is subscribed once it reports a container made after it started.
    let mut seen = Vec::new();
    let mut probe_seen = false;
    for i in 0..20 {
        let name = format!("probe{i}");
        rig.ctl_ok(&["create", &name, "--base", "bb"]);
        rig.ctl_ok(&["delete", &name]);
        while let Ok(v) = rx.recv_timeout(Duration::from_millis(300)) {
            probe_seen |= v["kind"] == "container-added";
        }
        if probe_seen {
            break;
        }
    }
    assert!(probe_seen, "the monitor printed nothing");

    rig.ctl_ok(&["create", "m1", "--base", "bb"]);
    rig.ctl_ok(&["start", "m1"]);
    rig.ctl_ok(&["snapshot", "create", "m1"]);
    rig.ctl_ok(&["backup", "run", "m1"]);
    rig.ctl_ok(&["stop", "m1", "--timeout", "10"]);
    rig.ctl_ok(&["delete", "m1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            let done = v["kind"] == "container-removed" && v["object"] == "container/m1";
            seen.push(v);
            if done {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let brief: Vec<String> = seen
        .iter()
        .filter(|v| v["object"] == "container/m1" || v["kind"].as_str().unwrap().starts_with("job"))
        .map(|v| {
            assert!(v["time"].as_u64().unwrap() > 1_600_000_000_000_000, "{v}");
            format!(
                "{} {} {}",
                v["kind"].as_str().unwrap(),
                v["object"].as_str().unwrap(),
                v["detail"].as_str().unwrap()
            )
        })
        .collect();
    let expected = [
        "container-added container/m1 stopped",
        "state container/m1 running",
        "snapshot-created container/m1 1",
        "job-started",
        "backup container/m1 ok",
        "job-finished",
        "state container/m1 stopped",
        "container-removed container/m1",
    ];
    let mut at = 0;
    for line in &brief {
        if at < expected.len() && line.starts_with(expected[at]) {
            at += 1;
        }
    }
    assert_eq!(
        at,
        expected.len(),
        "missing {:?} in order; the monitor printed:\n{}",
        expected.get(at),
        brief.join("\n")
    );
    assert!(
        brief
            .iter()
            .any(|l| l.starts_with("job-started") && l.ends_with("backup m1")),
        "{brief:?}"
    );
    assert!(
        brief
            .iter()
            .any(|l| l.starts_with("job-finished") && l.contains(" ok")),
        "{brief:?}"
    );
}
