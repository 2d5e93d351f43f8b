//! One scrape: a copy of the state, O(containers) small reads, then the exposition.

use super::text::{Exposition, Kind};
use super::{cgroup::Usage, Metrics};
use crate::engine::{RunState, SnapshotSummary};
use std::collections::BTreeMap;

const STATES: [RunState; 4] = [
    RunState::Stopped,
    RunState::Starting,
    RunState::Running,
    RunState::Stopping,
];

/// What one scrape knows of one container.
struct Row {
    name: String,
    state: RunState,
    should_run: bool,
    started: Option<f64>,
    warning: bool,
    usage: Usage,
    memory_limit: Option<u64>,
    net: Vec<NetDev>,
    disk: Option<u64>,
    snaps: Option<SnapshotSummary>,
    backup_attempt: Option<(u64, bool)>,
    backup_success: Option<u64>,
}

#[derive(Debug, Default, PartialEq)]
struct NetDev {
    name: String,
    rx_bytes: u64,
    rx_packets: u64,
    tx_bytes: u64,
    tx_packets: u64,
}

pub(super) fn render(m: &Metrics) -> String {
    let e = &m.engine;
    let backups = e.backup_status();
    let rows: Vec<Row> = e
        .container_names()
        .into_iter()
        .filter_map(|name| {
            let info = e.container_info(&name).ok()?;
            let running = info.state == RunState::Running;
            let pid = info.init_pid.filter(|_| running);
            let usage = pid.map(|p| m.cgroups.usage(p)).unwrap_or_default();
            let b = backups.containers.get(&name);
            Some(Row {
                should_run: e.should_run(&info),
                state: info.state,
                started: (running && info.started_at > 0).then(|| info.started_at as f64 / 1e6),
                warning: !info.warning.is_empty(),
                memory_limit: usage.memory_limit_bytes.or(info.spec.memory),
                usage,
                net: pid.map(net_dev).unwrap_or_default(),
                disk: m.disk.lock().expect("metrics lock").get(&name).copied(),
                snaps: m
                    .snapshots
                    .lock()
                    .expect("metrics lock")
                    .get(&name)
                    .copied(),
                backup_attempt: b
                    .and_then(|b| b.last_attempt.as_ref())
                    .map(|o| (o.time, o.ok())),
                backup_success: b.and_then(|b| b.last_success.as_ref()).map(|o| o.time),
                name,
            })
        })
        .collect();

    let mut x = Exposition::default();
    host(m, &rows, &mut x);
    containers(&rows, &mut x);
    x.finish()
}

fn host(m: &Metrics, rows: &[Row], x: &mut Exposition) {
    let e = &m.engine;
    x.family(
        "osmhost_daemon_start_time_seconds",
        Kind::Gauge,
        "When osm-hostd started, in seconds since the epoch.",
    )
    .sample("osmhost_daemon_start_time_seconds", &[], m.started);
    if let Ok((total, avail)) = e.store().space() {
        x.family(
            "osmhost_store_size_bytes",
            Kind::Gauge,
            "Size of the filesystem holding the store.",
        )
        .sample("osmhost_store_size_bytes", &[], total as f64);
        x.family(
            "osmhost_store_used_bytes",
            Kind::Gauge,
            "Bytes of the store's filesystem not available to the daemon (size - free).",
        )
        .sample(
            "osmhost_store_used_bytes",
            &[],
            total.saturating_sub(avail) as f64,
        );
        x.family(
            "osmhost_store_free_bytes",
            Kind::Gauge,
            "Bytes available for new data in the store's filesystem.",
        )
        .sample("osmhost_store_free_bytes", &[], avail as f64);
    }
    x.family("osmhost_bases", Kind::Gauge, "Base images in the store.")
        .sample("osmhost_bases", &[], e.base_names().len() as f64);
    x.family("osmhost_layers", Kind::Gauge, "Layers in the store.")
        .sample("osmhost_layers", &[], e.layer_count() as f64);
    x.family(
        "osmhost_containers",
        Kind::Gauge,
        "Containers defined on the host, by state.",
    );
    for s in STATES {
        let n = rows.iter().filter(|r| r.state == s).count();
        x.sample("osmhost_containers", &[("state", s.as_str())], n as f64);
    }
    let net = e.network_info();
    x.family(
        "osmhost_addresses_free",
        Kind::Gauge,
        "Container addresses still free in the DHCP range.",
    )
    .sample("osmhost_addresses_free", &[], net.free as f64);
    if let Some(d) = net.dnsmasq {
        x.family(
            "osmhost_dnsmasq_up",
            Kind::Gauge,
            "1 when the daemon's dnsmasq is running.",
        )
        .sample(
            "osmhost_dnsmasq_up",
            &[],
            f64::from(u8::from(d.state == "running")),
        );
        x.family(
            "osmhost_dnsmasq_restarts_total",
            Kind::Counter,
            "Times the daemon restarted dnsmasq after it died.",
        )
        .sample("osmhost_dnsmasq_restarts_total", &[], f64::from(d.restarts));
    }
    let jobs = m.jobs.lock().expect("metrics lock").clone();
    x.family(
        "osmhost_jobs_total",
        Kind::Counter,
        "Jobs started since the daemon started, by kind.",
    );
    for (kind, (n, _)) in &jobs {
        x.sample("osmhost_jobs_total", &[("kind", kind)], *n as f64);
    }
    let mut running: BTreeMap<&str, u32> = jobs.keys().map(|k| (*k, 0)).collect();
    for kind in e.jobs.running_kinds() {
        *running.entry(kind).or_default() += 1;
    }
    x.family(
        "osmhost_jobs_running",
        Kind::Gauge,
        "Jobs running now, by kind.",
    );
    for (kind, n) in &running {
        x.sample("osmhost_jobs_running", &[("kind", kind)], f64::from(*n));
    }
    x.family(
        "osmhost_jobs_failed_total",
        Kind::Counter,
        "Jobs that failed since the daemon started, by kind.",
    );
    for (kind, (_, n)) in &jobs {
        x.sample("osmhost_jobs_failed_total", &[("kind", kind)], *n as f64);
    }
}

fn containers(rows: &[Row], x: &mut Exposition) {
    fn c(r: &Row) -> [(&'static str, &str); 1] {
        [("container", r.name.as_str())]
    }
    x.family(
        "osmhost_container_state",
        Kind::Gauge,
        "1 for the state the container is in, 0 for the others.",
    );
    for r in rows {
        for s in STATES {
            x.sample(
                "osmhost_container_state",
                &[("container", &r.name), ("state", s.as_str())],
                f64::from(u8::from(r.state == s)),
            );
        }
    }
    gauge(
        x,
        rows,
        "osmhost_container_should_run",
        "1 when the container ought to run (autostart, or last-state recorded running).",
        |r| Some(f64::from(u8::from(r.should_run))),
    );
    gauge(
        x,
        rows,
        "osmhost_container_boot_failed",
        "1 when starting the container at boot failed and it was left stopped with a warning.",
        |r| Some(f64::from(u8::from(r.warning))),
    );
    gauge(
        x,
        rows,
        "osmhost_container_start_time_seconds",
        "When the running container started, in seconds since the epoch.",
        |r| r.started,
    );
    x.family(
        "osmhost_container_cpu_seconds_total",
        Kind::Counter,
        "CPU time used by the running container (its cgroup).",
    );
    for r in rows {
        if let Some(v) = r.usage.cpu_seconds {
            x.sample("osmhost_container_cpu_seconds_total", &c(r), v);
        }
    }
    gauge(
        x,
        rows,
        "osmhost_container_memory_bytes",
        "Memory used by the running container (its cgroup).",
        |r| r.usage.memory_bytes.map(|v| v as f64),
    );
    gauge(
        x,
        rows,
        "osmhost_container_memory_limit_bytes",
        "The container's memory limit, when it has one.",
        |r| r.memory_limit.map(|v| v as f64),
    );
    gauge(
        x,
        rows,
        "osmhost_container_pids",
        "Processes and threads in the running container.",
        |r| r.usage.pids.map(|v| v as f64),
    );
    type NetField = fn(&NetDev) -> u64;
    let net: [(&str, &str, NetField); 4] = [
        (
            "osmhost_container_network_receive_bytes_total",
            "Bytes received by the container's interface.",
            |d| d.rx_bytes,
        ),
        (
            "osmhost_container_network_receive_packets_total",
            "Packets received by the container's interface.",
            |d| d.rx_packets,
        ),
        (
            "osmhost_container_network_transmit_bytes_total",
            "Bytes sent by the container's interface.",
            |d| d.tx_bytes,
        ),
        (
            "osmhost_container_network_transmit_packets_total",
            "Packets sent by the container's interface.",
            |d| d.tx_packets,
        ),
    ];
    for (name, help, field) in net {
        x.family(name, Kind::Counter, help);
        for r in rows {
            for d in &r.net {
                x.sample(
                    name,
                    &[("container", &r.name), ("interface", &d.name)],
                    field(d) as f64,
                );
            }
        }
    }
    gauge(
        x,
        rows,
        "osmhost_container_disk_used_bytes",
        "Disk used by what the customer changed (upper dir and files; measured in the background).",
        |r| r.disk.map(|v| v as f64),
    );
    gauge(
        x,
        rows,
        "osmhost_container_snapshots",
        "Snapshots the container has.",
        |r| r.snaps.map(|s| f64::from(s.count)),
    );
    gauge(
        x,
        rows,
        "osmhost_container_last_snapshot_timestamp_seconds",
        "When the newest snapshot was taken, in seconds since the epoch.",
        |r| r.snaps.filter(|s| s.count > 0).map(|s| s.newest as f64),
    );
    gauge(
        x,
        rows,
        "osmhost_container_last_backup_attempt_timestamp_seconds",
        "When the last backup of the container started, in seconds since the epoch.",
        |r| r.backup_attempt.map(|(t, _)| t as f64),
    );
    gauge(
        x,
        rows,
        "osmhost_container_last_backup_failed",
        "1 when the last backup attempt failed.",
        |r| r.backup_attempt.map(|(_, ok)| f64::from(u8::from(!ok))),
    );
    gauge(
        x,
        rows,
        "osmhost_container_last_backup_success_timestamp_seconds",
        "When the last successful backup of the container started, in seconds since the epoch.",
        |r| r.backup_success.map(|t| t as f64),
    );
}

/// A per-container gauge; containers for which `value` is `None` have no sample.
fn gauge(
    x: &mut Exposition,
    rows: &[Row],
    name: &str,
    help: &str,
    value: impl Fn(&Row) -> Option<f64>,
) {
    x.family(name, Kind::Gauge, help);
    for r in rows {
        if let Some(v) = value(r) {
            x.sample(name, &[("container", &r.name)], v);
        }
    }
}

/// The interfaces of the network namespace of `pid`, loopback left out.
fn net_dev(pid: u32) -> Vec<NetDev> {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|t| parse_net_dev(&t))
        .unwrap_or_default()
}

fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            (name != "lo" && f.len() >= 10).then(|| NetDev {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                tx_bytes: f[8],
                tx_packets: f[9],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let t = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 1234567    890    0    0    0     0          0         0    54321      76    0    0    0     0       0          0
";
        assert_eq!(
            parse_net_dev(t),
            vec![NetDev {
                name: "eth0".into(),
                rx_bytes: 1234567,
                rx_packets: 890,
                tx_bytes: 54321,
                tx_packets: 76,
            }]
        );
    }
}
