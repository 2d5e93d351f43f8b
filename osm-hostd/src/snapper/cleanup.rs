//! Snapper's number and timeline cleanup (snapper's client/cleanup.cc), as pure functions
//! of the snapshot set, the limits, `now` and a time-zone conversion. Only plain limits
//! are supported (no `min-max` ranges), so snapper's quota and free-space passes never
//! apply, exactly as in snapper when every limit is a plain number.

use super::info::{SnapshotInfo, SnapshotKind};
use super::time::{Tm, ToTm};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NumberLimits {
    pub limit: u32,
    pub limit_important: u32,
    /// Seconds; younger snapshots are never deleted.
    pub min_age: u64,
}

impl Default for NumberLimits {
    /// Snapper 0.10.4's compiled-in defaults.
    fn default() -> Self {
        NumberLimits {
            limit: 50,
            limit_important: 10,
            min_age: 1800,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimelineLimits {
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub min_age: u64,
}

impl Default for TimelineLimits {
    /// Snapper 0.10.4's compiled-in defaults.
    fn default() -> Self {
        TimelineLimits {
            hourly: 10,
            daily: 10,
            weekly: 0,
            monthly: 10,
            yearly: 10,
            min_age: 1800,
        }
    }
}

/// The `cleanup=<algorithm>` snapshots, newest (highest number) first.
fn newest_first<'a>(snaps: &'a [SnapshotInfo], algorithm: &str) -> Vec<&'a SnapshotInfo> {
    let mut v: Vec<&SnapshotInfo> = snaps.iter().filter(|s| s.cleanup == algorithm).collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.num));
    v
}

/// Snapper's filters: drop candidates younger than `min_age`, then pre/post snapshots
/// whose partner exists but is not itself a candidate. Returns ascending numbers.
fn filter(
    all: &[SnapshotInfo],
    candidates: Vec<&SnapshotInfo>,
    min_age: u64,
    now: i64,
) -> Vec<u32> {
    let limit = now.saturating_sub(min_age as i64);
    let tmp: Vec<&SnapshotInfo> = candidates.into_iter().filter(|s| s.date <= limit).collect();
    let in_tmp = |n: u32| tmp.iter().any(|s| s.num == n);
    let mut out: Vec<u32> = tmp
        .iter()
        .filter(|s| {
            let partner = match s.kind {
                SnapshotKind::Pre => all
                    .iter()
                    .find(|p| p.kind == SnapshotKind::Post && p.pre_num == Some(s.num)),
                SnapshotKind::Post => s.pre_num.and_then(|pre| {
                    all.iter()
                        .find(|p| p.kind == SnapshotKind::Pre && p.num == pre)
                }),
                SnapshotKind::Single => None,
            };
            match partner {
                Some(p) => in_tmp(p.num),
                None => true,
            }
        })
        .map(|s| s.num)
        .collect();
    out.sort_unstable();
    out
}

/// The snapshots snapper's `cleanup number` would delete.
pub fn number_cleanup(snaps: &[SnapshotInfo], limits: &NumberLimits, now: i64) -> Vec<u32> {
    let (mut n, mut i) = (0u32, 0u32);
    let candidates = newest_first(snaps, "number")
        .into_iter()
        .filter(|s| {
            let mut keep = false;
            // Both tests run: important snapshots also use NUMBER_LIMIT slots.
            if i < limits.limit_important && s.is_important() {
                i += 1;
                keep = true;
            }
            if n < limits.limit {
                n += 1;
                keep = true;
            }
            !keep
        })
        .collect();
    filter(snaps, candidates, limits.min_age, now)
}

fn equal_year(a: &Tm, b: &Tm) -> bool {
    a.year == b.year
}
fn equal_month(a: &Tm, b: &Tm) -> bool {
    equal_year(a, b) && a.mon == b.mon
}
fn equal_day(a: &Tm, b: &Tm) -> bool {
    equal_month(a, b) && a.mday == b.mday
}
fn equal_hour(a: &Tm, b: &Tm) -> bool {
    equal_day(a, b) && a.hour == b.hour
}
fn yday_of_weeks_monday(t: &Tm) -> i32 {
    t.yday - if t.wday != 0 { t.wday } else { 7 }
}
/// Snapper tests `tm_year` (years since 1900) for leap years; kept for identical results.
fn days_in_year(t: &Tm) -> i32 {
    let y = t.year;
    if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) {
        366
    } else {
        365
    }
}
fn equal_week(a: &Tm, b: &Tm) -> bool {
    if a.year == b.year {
        yday_of_weeks_monday(a) == yday_of_weeks_monday(b)
    } else if a.year + 1 == b.year {
        yday_of_weeks_monday(a) == yday_of_weeks_monday(b) + days_in_year(a)
    } else if a.year == b.year + 1 {
        yday_of_weeks_monday(a) + days_in_year(b) == yday_of_weeks_monday(b)
    } else {
        false
    }
}

/// Whether `list[idx]` is the first (oldest) of its period among itself and the older
/// snapshots after it, as snapper's `is_first` decides it.
fn is_first(list: &[(i64, Tm)], idx: usize, same: fn(&Tm, &Tm) -> bool) -> bool {
    let (t1, tm1) = &list[idx];
    for (t2, tm2) in &list[idx + 1..] {
        if !same(tm1, tm2) {
            return true;
        }
        if t1 > t2 {
            return false;
        }
    }
    true
}

/// The snapshots snapper's `cleanup timeline` would delete; `to_tm` is the zone of the
/// process running the cleanup (snapper uses `localtime_r`).
pub fn timeline_cleanup(
    snaps: &[SnapshotInfo],
    limits: &TimelineLimits,
    now: i64,
    to_tm: ToTm<'_>,
) -> Vec<u32> {
    let list: Vec<&SnapshotInfo> = newest_first(snaps, "timeline");
    let dated: Vec<(i64, Tm)> = list.iter().map(|s| (s.date, to_tm(s.date))).collect();
    let mut counts = [0u32; 5];
    let caps = [
        limits.hourly,
        limits.daily,
        limits.weekly,
        limits.monthly,
        limits.yearly,
    ];
    let preds: [fn(&Tm, &Tm) -> bool; 5] =
        [equal_hour, equal_day, equal_week, equal_month, equal_year];
    let mut candidates = Vec::new();
    // Walking newest to oldest, each snapshot is compared with the older ones only.
    for (idx, s) in list.iter().enumerate() {
        let mut keep = false;
        for k in 0..5 {
            if counts[k] < caps[k] && is_first(&dated, idx, preds[k]) {
                counts[k] += 1;
                keep = true;
            }
        }
        if !keep {
            candidates.push(*s);
        }
    }
    filter(snaps, candidates, limits.min_age, now)
}

#[cfg(test)]
mod tests {
    use super::super::time::{parse_date, utc_tm};
    use super::*;

    fn snap(num: u32, kind: SnapshotKind, date: &str, cleanup: &str) -> SnapshotInfo {
        let mut s = SnapshotInfo::single(num, parse_date(date).unwrap());
        s.kind = kind;
        s.cleanup = cleanup.into();
        s
    }

    /// A case run through snapper itself (LIMIT=3, LIMIT_IMPORTANT=2, 1 a pre paired with
    /// post 10, 2, 4, 6 and 9 important): snapper left {1,6,8,9,10}.
    #[test]
    fn number_cleanup_matches_the_worked_example() {
        let mut snaps = vec![snap(1, SnapshotKind::Pre, "2026-11-22 01:00:00", "number")];
        for n in 2..=9 {
            let mut s = snap(n, SnapshotKind::Single, "2026-11-22 01:00:00", "number");
            if [2, 4, 6, 9].contains(&n) {
                s.userdata.insert("important".into(), "yes".into());
            }
            snaps.push(s);
        }
        let mut post = snap(10, SnapshotKind::Post, "2026-11-22 01:00:00", "number");
        post.pre_num = Some(1);
        snaps.push(post);
        let limits = NumberLimits {
            limit: 3,
            limit_important: 2,
            min_age: 0,
        };
        let now = parse_date("2026-11-22 02:00:00").unwrap();
        assert_eq!(number_cleanup(&snaps, &limits, now), vec![2, 3, 4, 5, 7]);
        // MIN_AGE protects young snapshots; snapshots without a cleanup value are never
        // candidates.
        let young = NumberLimits {
            min_age: 7200,
            ..limits
        };
        assert!(number_cleanup(&snaps, &young, now).is_empty());
        for s in &mut snaps {
            s.cleanup.clear();
        }
        assert!(number_cleanup(&snaps, &limits, now).is_empty());
    }

    /// A case run through snapper itself (TZ=UTC, H=2 D=2 W=1 M=1, min age 10000 s):
    /// k, j (too young), i, f and c stay.
    #[test]
    fn timeline_cleanup_matches_the_worked_example() {
        let dates = [
            "2026-10-15 10:00:00", // a
            "2026-10-31 12:00:00", // b
            "2026-11-16 08:00:00", // c (Monday)
            "2026-11-20 09:10:00", // d
            "2026-11-20 09:40:00", // e
            "2026-11-21 10:05:00", // f
            "2026-11-21 10:30:00", // g
            "2026-11-21 11:15:00", // h
            "2026-11-22 00:05:00", // i
            "2026-11-22 00:20:00", // j
            "2026-11-22 01:00:00", // k
        ];
        let mut snaps: Vec<SnapshotInfo> = dates
            .iter()
            .enumerate()
            .map(|(i, d)| snap(i as u32 + 1, SnapshotKind::Single, d, "timeline"))
            .collect();
        snaps.push(snap(12, SnapshotKind::Single, "2026-10-01 00:00:00", ""));
        let limits = TimelineLimits {
            hourly: 2,
            daily: 2,
            weekly: 1,
            monthly: 1,
            yearly: 0,
            min_age: 10_000,
        };
        let now = parse_date("2026-11-22 02:46:00").unwrap();
        // a b d e g h
        assert_eq!(
            timeline_cleanup(&snaps, &limits, now, &utc_tm),
            vec![1, 2, 4, 5, 7, 8]
        );
    }

    /// As with snapper (TZ=UTC kept A, TZ=America/New_York kept B): the zone decides
    /// which snapshot is first of its day.
    #[test]
    fn timeline_cleanup_uses_the_given_zone() {
        let snaps = vec![
            snap(1, SnapshotKind::Single, "2026-11-21 03:00:00", "timeline"),
            snap(2, SnapshotKind::Single, "2026-11-21 06:00:00", "timeline"),
        ];
        let limits = TimelineLimits {
            hourly: 0,
            daily: 1,
            weekly: 0,
            monthly: 0,
            yearly: 0,
            min_age: 0,
        };
        let now = parse_date("2026-11-22 00:00:00").unwrap();
        assert_eq!(timeline_cleanup(&snaps, &limits, now, &utc_tm), vec![2]);
        let new_york = |s: i64| utc_tm(s - 5 * 3600);
        assert_eq!(timeline_cleanup(&snaps, &limits, now, &new_york), vec![1]);
    }

    #[test]
    fn weeks_span_new_year() {
        // 2026-12-31 is a Thursday, 2027-01-03 the Sunday of the same week.
        let a = utc_tm(parse_date("2026-12-31 12:00:00").unwrap());
        let b = utc_tm(parse_date("2027-01-03 12:00:00").unwrap());
        let c = utc_tm(parse_date("2027-01-04 12:00:00").unwrap());
        assert!(equal_week(&a, &b) && equal_week(&b, &a));
        assert!(!equal_week(&b, &c));
    }
}
