//! Backups of containers with rsync (issue 5): `-aHAXS --numeric-ids -x` from a read-only
//! snapshot, as root on both sides without rrsync (which drops whiteouts), and a check
//! of every copy because rsync's exit code 0 does not prove the overlay markers arrived.
//!
//! Pure pieces live here so they are unit-tested without root: the target, the rsync and
//! ssh argument vectors (never a shell string), the exit-code policy, history names and
//! pruning. [`verify`] counts overlay markers on both sides; [`status`] persists the
//! per-container results; the engine's `backup` verb sequences them.

pub mod identity;
pub mod rsync;
pub mod send;
pub mod settings;
pub mod status;
pub mod verify;

pub use rsync::{classify_exit, rsync_args, ssh_command, ExitClass, RsyncJob};
pub use settings::{Mode, Settings, SshKey, SshOption};

use std::path::PathBuf;

/// Where backups go: a local directory, or `user@host:/path` over ssh.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Target {
    Local(PathBuf),
    Ssh { host: String, path: String },
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        if text.starts_with('/') {
            if text.contains(':') {
                return Err(format!(
                    "{text:?}: a local target must not contain ':' (rsync would read it as a host)"
                ));
            }
            return Ok(Target::Local(PathBuf::from(text)));
        }
        let Some((host, path)) = text.split_once(':') else {
            return Err(format!(
                "{text:?} is neither an absolute directory nor user@host:/path"
            ));
        };
        let host_ok = !host.is_empty()
            && !host.starts_with('-')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "@.-_[]".contains(c));
        if !host_ok {
            return Err(format!("{text:?}: {host:?} is not a valid [user@]host"));
        }
        if !path.starts_with('/') || path.contains('\'') || path.contains('\n') {
            return Err(format!(
                "{text:?}: the remote path must be absolute and contain no quote or newline"
            ));
        }
        Ok(Target::Ssh {
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Target::Ssh { .. })
    }

    /// The directory of one container's backups on the target, as rsync names it.
    pub fn container_dir(&self, name: &str) -> String {
        match self {
            Target::Local(p) => p.join(name).display().to_string(),
            Target::Ssh { host, path } => {
                format!("{host}:{}/{name}", path.trim_end_matches('/'))
            }
        }
    }

    /// The path on the target's own file system (no `host:` part).
    pub fn path_of(&self, name: &str) -> String {
        match self {
            Target::Local(p) => p.join(name).display().to_string(),
            Target::Ssh { path, .. } => format!("{}/{name}", path.trim_end_matches('/')),
        }
    }
}

/// History mode names each tree by its UTC start time; names sort chronologically.
pub fn history_name(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Parses a [`history_name`] back to (year, month, day); `None` for anything else.
pub fn parse_history_name(name: &str) -> Option<(u32, u32, u32)> {
    let b = name.as_bytes();
    if b.len() != 18 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[17] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| name.get(r)?.parse::<u32>().ok();
    num(11..17)?;
    Some((num(0..4)?, num(5..7)?, num(8..10)?))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// How many history trees pruning keeps (`[backup] keep_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// The newest `last` trees, whatever their dates.
    pub last: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

/// Which history trees a policy prunes, as backup servers do: the newest `last` trees,
/// and the newest tree of each of the newest `daily` days, `weekly` weeks (Monday-based),
/// `monthly` months and `yearly` years are kept (one tree may count in several). The
/// newest tree is always kept. Names that are not history names are kept.
pub fn prune_plan_with(names: &[String], keep: KeepPolicy) -> Vec<String> {
    let KeepPolicy {
        last,
        daily,
        weekly,
        monthly,
        yearly,
    } = keep;
    let mut dated: Vec<(&String, (u32, u32, u32))> = names
        .iter()
        .filter_map(|n| parse_history_name(n).map(|d| (n, d)))
        .collect();
    dated.sort_by(|a, b| b.0.cmp(a.0)); // newest first
    let mut keep = std::collections::HashSet::new();
    for (n, _) in dated.iter().take((last as usize).max(1)) {
        keep.insert((*n).clone());
    }
    let mut pick = |key: &dyn Fn((u32, u32, u32)) -> i64, count: u32| {
        let mut seen = Vec::new();
        for (n, d) in &dated {
            let k = key(*d);
            if seen.contains(&k) {
                continue;
            }
            if seen.len() as u32 >= count {
                break;
            }
            seen.push(k);
            keep.insert((*n).clone());
        }
    };
    pick(&|(y, m, d)| days_from_civil(y as i64, m, d), daily);
    // 1970-01-01 was a Thursday: shift so weeks start on Monday.
    pick(
        &|(y, m, d)| (days_from_civil(y as i64, m, d) + 3).div_euclid(7),
        weekly,
    );
    pick(&|(y, m, _)| y as i64 * 12 + m as i64, monthly);
    pick(&|(y, _, _)| y as i64, yearly);
    dated
        .iter()
        .filter(|(n, _)| !keep.contains(*n))
        .map(|(n, _)| (*n).clone())
        .collect()
}

/// [`prune_plan_with`] keeping daily, weekly and monthly trees only.
pub fn prune_plan(names: &[String], daily: u32, weekly: u32, monthly: u32) -> Vec<String> {
    prune_plan_with(
        names,
        KeepPolicy {
            daily,
            weekly,
            monthly,
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("/srv/backups/lxc").unwrap(),
            Target::Local("/srv/backups/lxc".into())
        );
        assert_eq!(
            Target::parse("backup@10.0.0.5:/srv/backups/lxc").unwrap(),
            Target::Ssh {
                host: "backup@10.0.0.5".into(),
                path: "/srv/backups/lxc".into()
            }
        );
        for bad in [
            "relative",
            "-oProxyCommand=x:/p",
            "h:rel",
            "/a:b",
            "h:/it's",
            "a b:/x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        let t = Target::parse("root@h:/b/").unwrap();
        assert_eq!(t.container_dir("web1"), "root@h:/b/web1");
        assert_eq!(t.path_of("web1"), "/b/web1");
    }

    #[test]
    fn history_names_round_trip_and_sort() {
        assert_eq!(history_name(0), "1970-01-01T000000Z");
        assert_eq!(history_name(1_795_000_000), "2026-11-18T110640Z");
        assert_eq!(
            parse_history_name("2026-11-18T081320Z"),
            Some((2026, 11, 18))
        );
        assert_eq!(parse_history_name("latest"), None);
        assert!(history_name(86_400 * 400) > history_name(86_400 * 399));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
    }

    #[test]
    fn pruning_keeps_daily_weekly_monthly() {
        // One tree a day for 120 days, two on the newest day.
        let day = 86_400;
        let start = days_from_civil(2026, 1, 1) as u64 * day;
        let mut names: Vec<String> = (0..120)
            .map(|i| history_name(start + i * day + 3600))
            .collect();
        names.push(history_name(start + 119 * day + 7200));
        let doomed = prune_plan(&names, 3, 2, 3);
        let kept: Vec<&String> = names.iter().filter(|n| !doomed.contains(n)).collect();
        // Newest day: only its newest tree; 2 more days; weeks and months add a few.
        assert!(kept.contains(&&history_name(start + 119 * day + 7200)));
        assert!(!kept.contains(&&history_name(start + 119 * day + 3600)));
        assert!(kept.contains(&&history_name(start + 118 * day + 3600)));
        assert!(kept.contains(&&history_name(start + 117 * day + 3600)));
        assert!(!kept.contains(&&history_name(start + 116 * day + 3600)) || kept.len() <= 8);
        // 2026-04-30 is the 120th day: months April, March, February are kept by their newest.
        assert!(
            kept.contains(&&history_name(start + 58 * day + 3600)),
            "end of February"
        );
        assert!(
            kept.contains(&&history_name(start + 89 * day + 3600)),
            "end of March"
        );
        assert!(kept.len() <= 1 + 3 + 2 + 3, "{kept:?}");
        assert!(prune_plan(&["other".into()], 0, 0, 0).is_empty());
        // Yearly: the newest of each year; last: the newest N whatever their dates.
        let years: Vec<String> = (0..4u64)
            .flat_map(|y| {
                let jan = days_from_civil(2022 + y as i64, 1, 10) as u64 * day;
                [history_name(jan), history_name(jan + 40 * day)]
            })
            .collect();
        let keep = KeepPolicy {
            yearly: 3,
            ..Default::default()
        };
        let doomed = prune_plan_with(&years, keep);
        let kept: Vec<&String> = years.iter().filter(|n| !doomed.contains(n)).collect();
        assert_eq!(kept, vec![&years[3], &years[5], &years[7]], "{kept:?}");
        let keep = KeepPolicy {
            last: 3,
            ..Default::default()
        };
        let mut doomed = prune_plan_with(&years, keep);
        doomed.sort();
        assert_eq!(doomed, years[..5].to_vec());
        assert_eq!(prune_plan(&names[..1], 0, 0, 0), Vec::<String>::new());
    }
}
