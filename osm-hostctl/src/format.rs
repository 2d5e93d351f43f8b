//! Output for people: tables, the `info` page, times and sizes. Pure functions; the
//! caller passes "now" so that the results are testable.

use super::model::{BaseInfo, ContainerDetail, ContainerInfo, NetworkInfo};
use osm_host_bus::size::format_size;
use osm_host_bus::STATE_RUNNING;

/// Left-aligned columns two spaces apart, no trailing blanks. Empty cells show `-`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    lines.extend(rows.iter().map(|r| r.iter().map(|c| cell(c)).collect()));
    let mut widths = vec![0; header.len()];
    for line in &lines {
        for (w, c) in widths.iter_mut().zip(line) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, (c, w)) in line.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(c);
            text.push_str(&" ".repeat(w - c.chars().count()));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

pub fn containers_table(list: &[ContainerInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                if c.privileged {
                    format!("{} {PRIVILEGED_MARK}", c.name)
                } else {
                    c.name.clone()
                },
                if c.warning.is_empty() {
                    c.state.clone()
                } else {
                    format!("{} {WARNING_MARK}", c.state)
                },
                if has_newer_version(c) {
                    format!("{}{NEWER_MARK}", c.base)
                } else {
                    c.base.clone()
                },
                c.ipv4_address.clone(),
                autostart_text(c),
            ]
        })
        .collect();
    let mut out = table(&["NAME", "STATE", "BASE", "ADDRESS", "AUTOSTART"], &rows);
    if list.iter().any(|c| !c.warning.is_empty()) {
        out.push_str(&format!(
            "{WARNING_MARK} has a warning: see `osm-hostctl info NAME`\n"
        ));
    }
    if list.iter().any(|c| c.privileged) {
        out.push_str(&format!(
            "{PRIVILEGED_MARK} privileged: root inside is root on the host\n"
        ));
    }
    if list.iter().any(has_newer_version) {
        out.push_str(&format!(
            "{NEWER_MARK} a newer version exists; see osm-hostctl info NAME and osm-hostctl rebase\n"
        ));
    }
    out
}

/// Marks, after the base in `list`, a container whose pinned base or a pinned layer has
/// a newer version.
pub const NEWER_MARK: &str = "*";

fn has_newer_version(c: &ContainerInfo) -> bool {
    !c.newer_base.is_empty() || c.newer_layers.iter().any(|l| !l.is_empty())
}

/// The pinned layers, each followed by its newer version when there is one.
fn layers_text(c: &ContainerInfo) -> String {
    if c.layers.is_empty() {
        return "-".to_string();
    }
    c.layers
        .iter()
        .enumerate()
        .map(
            |(i, l)| match c.newer_layers.get(i).filter(|n| !n.is_empty()) {
                Some(n) => format!("{l} (newer: {n})"),
                None => l.clone(),
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// Marks a privileged container in `list`.
pub const PRIVILEGED_MARK: &str = "[privileged]";

/// Marks a container with a warning in `list`.
pub const WARNING_MARK: &str = "(!)";

/// Unprivileged with its id range, or the privileged warning.
fn isolation_text(c: &ContainerInfo) -> String {
    if c.privileged {
        "PRIVILEGED (warning: root inside is root on the host)".to_string()
    } else {
        format!(
            "unprivileged (host ids {}-{})",
            c.id_map_base,
            u64::from(c.id_map_base) + 65535
        )
    }
}

/// `yes`/`no` as before, `last-state` for that policy; the boot priority when set.
fn autostart_text(c: &ContainerInfo) -> String {
    let policy = match c.autostart_policy.as_str() {
        "" => yes_no(c.autostart).to_string(),
        "true" => "yes".to_string(),
        "false" => "no".to_string(),
        other => other.to_string(),
    };
    if c.boot_priority != 0 && c.autostart {
        format!("{policy} (priority {})", c.boot_priority)
    } else {
        policy
    }
}

pub fn bases_table(list: &[BaseInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                format_timestamp(b.created_at),
                b.source.clone(),
                b.used_by.join(","),
            ]
        })
        .collect();
    table(&["NAME", "CREATED", "SOURCE", "USED-BY"], &rows)
}

/// `host info`: the bridge and dnsmasq, one "label: value" line each.
pub fn network_info(n: &NetworkInfo) -> String {
    let dnsmasq = match (n.dnsmasq_state.as_str(), n.dnsmasq_pid) {
        (state, 0) => state.to_string(),
        (state, pid) => format!("{state} (pid {pid})"),
    };
    let fields = [
        ("bridge", n.bridge.clone()),
        ("address", n.address.clone()),
        ("subnet", n.subnet.clone()),
        ("range", format!("{} - {}", n.range_first, n.range_last)),
        ("addresses used", n.used.to_string()),
        ("addresses free", n.free.to_string()),
        ("nat", if n.nat { "on" } else { "off" }.to_string()),
        ("managed", yes_no(n.managed).to_string()),
        ("dnsmasq", dnsmasq),
        ("dnsmasq restarts", n.dnsmasq_restarts.to_string()),
        ("host id", n.host_id.clone()),
    ];
    fields
        .iter()
        .map(|(label, value)| format!("{:<17} {value}\n", format!("{label}:")))
        .collect()
}

/// The `info` page: one "label: value" line per field.
pub fn container_detail(d: &ContainerDetail, now_us: u64) -> String {
    let c = &d.info;
    let none_if_zero = |v: u64, text: String| if v == 0 { "none".to_string() } else { text };
    let list = |l: &[String]| {
        if l.is_empty() {
            "-".to_string()
        } else {
            l.join(", ")
        }
    };
    let mut fields: Vec<(&str, String)> = vec![
        ("name", c.name.clone()),
        ("state", c.state.clone()),
        (
            "init pid",
            if c.init_pid == 0 {
                "-".into()
            } else {
                c.init_pid.to_string()
            },
        ),
        (
            "base",
            if c.newer_base.is_empty() {
                c.base.clone()
            } else {
                format!("{} (newer: {})", c.base, c.newer_base)
            },
        ),
        ("layers", layers_text(c)),
        ("ipv4 address", c.ipv4_address.clone()),
        ("addresses", list(&c.addresses)),
        ("mac address", c.mac_address.clone()),
        ("autostart", autostart_text(c)),
        ("isolation", isolation_text(c)),
        (
            "memory limit",
            none_if_zero(c.memory_limit, format_size(c.memory_limit)),
        ),
        (
            "cpu limit",
            none_if_zero(c.cpu_limit.into(), cpus(c.cpu_limit)),
        ),
        (
            "disk used",
            d.disk_usage
                .map_or_else(|| "unknown".to_string(), format_size),
        ),
        ("created", format_timestamp(c.created_at)),
        (
            "snapshots",
            if c.snapshot_count == 0 {
                "none".to_string()
            } else {
                format!(
                    "{}, newest {}",
                    c.snapshot_count,
                    format_timestamp(c.newest_snapshot)
                )
            },
        ),
        (
            "last backup",
            if c.last_backup_attempt == 0 {
                "never".to_string()
            } else {
                format!(
                    "{}, {}",
                    format_timestamp(c.last_backup_attempt),
                    c.last_backup_result
                )
            },
        ),
        (
            "last success",
            if c.last_backup_success == 0 {
                "never".to_string()
            } else {
                format_timestamp(c.last_backup_success)
            },
        ),
    ];
    if c.boot_priority != 0 || c.boot_delay != 0 {
        fields.push((
            "boot order",
            format!("priority {}, delay {}s", c.boot_priority, c.boot_delay),
        ));
    }
    if !c.warning.is_empty() {
        fields.push(("warning", c.warning.clone()));
    }
    for r in &c.published.http {
        fields.push((
            "published",
            format!("https://{} -> port {}", r.host, r.port),
        ));
    }
    for t in &c.published.tls_streams {
        fields.push(("published", format!("tls :{} -> port {}", t.public, t.port)));
    }
    if c.state == STATE_RUNNING && c.started_at != 0 {
        let since = format_timestamp(c.started_at);
        fields.push((
            "uptime",
            format!("{} (since {since})", format_uptime(c.started_at, now_us)),
        ));
    }
    let width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    fields
        .iter()
        .map(|(label, value)| {
            let value = if value.is_empty() { "-" } else { value };
            format!("{:<width$} {value}\n", format!("{label}:"))
        })
        .collect()
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn cpus(n: u32) -> String {
    if n == 1 {
        "1 CPU".to_string()
    } else {
        format!("{n} CPUs")
    }
}

/// Time since `started_us` (µs since the epoch), two most significant units: `3d 4h`,
/// `2h 5m`, `7m 30s`, `45s`. A start "in the future" (clock skew) reads `0s`.
pub fn format_uptime(started_us: u64, now_us: u64) -> String {
    let secs = now_us.saturating_sub(started_us) / 1_000_000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// µs since the epoch as UTC RFC 3339 to the second (`2024-05-01T12:34:56Z`); 0 is `-`.
pub fn format_timestamp(us: u64) -> String {
    if us == 0 {
        return "-".to_string();
    }
    let secs = us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, mo, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(name: &str, state: &str) -> ContainerInfo {
        ContainerInfo {
            name: name.into(),
            state: state.into(),
            base: "debian12".into(),
            addresses: vec!["10.0.3.12".into()],
            ipv4_address: "10.0.3.12".into(),
            autostart: true,
            ..Default::default()
        }
    }

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let out = containers_table(&[web("web1", "running"), web("customer-long", "stopped")]);
        assert_eq!(
            out,
            "NAME           STATE    BASE      ADDRESS    AUTOSTART\n\
             web1           running  debian12  10.0.3.12  yes\n\
             customer-long  stopped  debian12  10.0.3.12  yes\n"
        );
    }

    #[test]
    fn empty_cells_show_a_dash_and_empty_table_keeps_header() {
        let mut c = web("a", "stopped");
        c.ipv4_address.clear();
        c.autostart = false;
        assert_eq!(
            containers_table(&[c]),
            "NAME  STATE    BASE      ADDRESS  AUTOSTART\na     stopped  debian12  -        no\n"
        );
        assert_eq!(bases_table(&[]), "NAME  CREATED  SOURCE  USED-BY\n");
    }

    #[test]
    fn newer_versions_are_marked_in_list_and_named_in_info() {
        let plain = web("a", "running");
        let mut base = web("b", "running");
        base.base = "bookworm@1".into();
        base.newer_base = "bookworm@2".into();
        let mut layer = web("c", "stopped");
        layer.layers = vec!["mqtt@1".into(), "extra@1".into()];
        layer.newer_layers = vec!["".into(), "extra@2".into()];
        let mut current = web("d", "stopped");
        current.layers = vec!["mqtt@1".into()];
        current.newer_layers = vec!["".into()];
        let out = containers_table(&[plain.clone(), base.clone(), current.clone()]);
        assert!(out.contains("  bookworm@1*  "), "{out}");
        assert!(out.contains("\na     running  debian12     10"), "{out}");
        assert!(out.contains("\nd     stopped  debian12     10"), "{out}");
        assert!(
            out.ends_with(
                "* a newer version exists; see osm-hostctl info NAME and osm-hostctl rebase\n"
            ),
            "{out}"
        );
        let out = containers_table(&[layer.clone()]);
        assert!(out.contains("  debian12*  "), "{out}");
        let out = containers_table(&[plain, current.clone()]);
        assert!(!out.contains('*'), "{out}");
        let detail = |info| ContainerDetail {
            info,
            disk_usage: None,
        };
        let page = container_detail(&detail(layer), 0);
        assert!(
            page.contains("layers:") && page.contains(" mqtt@1, extra@1 (newer: extra@2)\n"),
            "{page}"
        );
        let page = container_detail(&detail(base), 0);
        assert!(page.contains(" bookworm@1 (newer: bookworm@2)\n"), "{page}");
        let page = container_detail(&detail(current), 0);
        assert!(page.contains(" mqtt@1\n"), "{page}");
    }

    #[test]
    fn privileged_containers_are_marked_in_list_and_info() {
        let mut p = web("old", "running");
        p.privileged = true;
        let mut u = web("new", "running");
        u.id_map_base = 1_065_536;
        let out = containers_table(&[p.clone(), u.clone()]);
        assert!(out.contains("old [privileged]  running"), "{out}");
        assert!(out.contains("\nnew  "), "{out}");
        assert!(out.ends_with("[privileged] privileged: root inside is root on the host\n"));
        let detail = |info| ContainerDetail {
            info,
            disk_usage: None,
        };
        let page = container_detail(&detail(p), 0);
        assert!(page.contains("PRIVILEGED (warning: root inside is root on the host)"));
        let page = container_detail(&detail(u), 0);
        assert!(
            page.contains("unprivileged (host ids 1065536-1131071)"),
            "{page}"
        );
    }

    #[test]
    fn bases_table_shows_date_and_users() {
        let b = BaseInfo {
            name: "debian12".into(),
            created_at: 1_714_566_896_000_000,
            source: "recipe debian12.toml".into(),
            used_by: vec!["web1".into(), "web2".into()],
        };
        assert_eq!(
            bases_table(&[b]),
            "NAME      CREATED               SOURCE                USED-BY\n\
             debian12  2024-05-01T12:34:56Z  recipe debian12.toml  web1,web2\n"
        );
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(format_timestamp(0), "-");
        assert_eq!(format_timestamp(1), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_timestamp(951_782_400_000_000),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            format_timestamp(1_714_566_896_999_999),
            "2024-05-01T12:34:56Z"
        );
        assert_eq!(
            format_timestamp(4_102_444_799_000_000),
            "2099-12-31T23:59:59Z"
        );
    }

    #[test]
    fn uptime_uses_two_units() {
        let s = 1_000_000u64;
        let t0 = 1_700_000_000 * s;
        assert_eq!(format_uptime(t0, t0 + 45 * s), "45s");
        assert_eq!(format_uptime(t0, t0 + 450 * s), "7m 30s");
        assert_eq!(format_uptime(t0, t0 + 7500 * s), "2h 5m");
        assert_eq!(
            format_uptime(t0, t0 + (3 * 86_400 + 4 * 3600 + 59) * s),
            "3d 4h"
        );
        assert_eq!(format_uptime(t0, t0 - s), "0s");
    }

    #[test]
    fn detail_page() {
        let mut c = web("web1", "running");
        c.init_pid = 4242;
        c.layers = vec!["osm-stack".into()];
        c.mac_address = "00:16:3e:00:00:01".into();
        c.memory_limit = 2 << 30;
        c.created_at = 1_714_566_896_000_000;
        c.started_at = 1_714_566_900_000_000;
        c.id_map_base = 1_000_000;
        let d = ContainerDetail {
            info: c,
            disk_usage: Some(1536 << 20),
        };
        let out = container_detail(&d, 1_714_566_900_000_000 + 7_500_000_000);
        assert_eq!(
            out,
            "name:         web1\n\
             state:        running\n\
             init pid:     4242\n\
             base:         debian12\n\
             layers:       osm-stack\n\
             ipv4 address: 10.0.3.12\n\
             addresses:    10.0.3.12\n\
             mac address:  00:16:3e:00:00:01\n\
             autostart:    yes\n\
             isolation:    unprivileged (host ids 1000000-1065535)\n\
             memory limit: 2G\n\
             cpu limit:    none\n\
             disk used:    1.5G\n\
             created:      2024-05-01T12:34:56Z\n\
             snapshots:    none\n\
             last backup:  never\n\
             last success: never\n\
             uptime:       2h 5m (since 2024-05-01T12:35:00Z)\n"
        );
    }

    #[test]
    fn network_page() {
        let n = NetworkInfo {
            bridge: "lxcbr0".into(),
            address: "10.0.3.1/24".into(),
            subnet: "10.0.3.0/24".into(),
            range_first: "10.0.3.2".into(),
            range_last: "10.0.3.254".into(),
            used: 2,
            free: 251,
            nat: true,
            managed: true,
            dnsmasq_state: "running".into(),
            dnsmasq_pid: 77,
            dnsmasq_restarts: 0,
            host_id: "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3".into(),
        };
        let out = network_info(&n);
        assert!(
            out.contains("host id:          0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3\n"),
            "{out}"
        );
        assert!(out.starts_with("bridge:           lxcbr0\n"), "{out}");
        assert!(
            out.contains("range:            10.0.3.2 - 10.0.3.254\n"),
            "{out}"
        );
        assert!(
            out.contains("dnsmasq:          running (pid 77)\n"),
            "{out}"
        );
    }

    #[test]
    fn stopped_container_has_no_uptime_or_pid() {
        let mut c = web("web1", "stopped");
        c.cpu_limit = 1;
        let out = container_detail(
            &ContainerDetail {
                info: c,
                disk_usage: None,
            },
            0,
        );
        assert!(!out.contains("uptime"));
        assert!(out.contains("init pid:     -\n"));
        assert!(out.contains("cpu limit:    1 CPU\n"));
        assert!(out.contains("disk used:    unknown\n"));
    }

    #[test]
    fn detail_page_counts_snapshots() {
        let mut c = web("web1", "stopped");
        c.snapshot_count = 3;
        c.newest_snapshot = 1_714_566_896_000_000;
        c.last_backup_attempt = 1_714_566_900_000_000;
        c.last_backup_success = 1_714_566_896_000_000;
        c.last_backup_result = "target unreachable".into();
        let d = ContainerDetail {
            info: c,
            disk_usage: None,
        };
        let out = container_detail(&d, 0);
        assert!(
            out.contains("snapshots:    3, newest 2024-05-01T12:34:56Z\n"),
            "{out}"
        );
        assert!(
            out.contains("last backup:  2024-05-01T12:35:00Z, target unreachable\n"),
            "{out}"
        );
        assert!(
            out.contains("last success: 2024-05-01T12:34:56Z\n"),
            "{out}"
        );
    }
}
