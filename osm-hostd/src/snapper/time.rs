//! Dates as snapper writes them (`YYYY-MM-DD HH:MM:SS`, UTC) and broken-down local time
//! for the timeline cleanup (the zone of the process, as snapper's `localtime_r`).

/// The fields of `struct tm` the timeline cleanup compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tm {
    /// Years since 1900, as in `struct tm` (snapper's leap-year test uses it raw).
    pub year: i32,
    /// 0-11.
    pub mon: i32,
    pub mday: i32,
    pub hour: i32,
    /// 0-365.
    pub yday: i32,
    /// 0 = Sunday.
    pub wday: i32,
}

/// Converts seconds since the epoch to broken-down time.
pub type ToTm<'a> = &'a dyn Fn(i64) -> Tm;

fn from_libc(t: &libc::tm) -> Tm {
    Tm {
        year: t.tm_year,
        mon: t.tm_mon,
        mday: t.tm_mday,
        hour: t.tm_hour,
        yday: t.tm_yday,
        wday: t.tm_wday,
    }
}

/// Local time in the system's zone (TZ or /etc/localtime), like snapper's cleanup.
pub fn local_tm(secs: i64) -> Tm {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: an all-zero `struct tm` is a valid value (integers and a null pointer).
    let mut out: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call; localtime_r is
    // the reentrant variant and writes only into `out`.
    unsafe { libc::localtime_r(&t, &mut out) };
    from_libc(&out)
}

/// UTC broken-down time (computed, no libc), for tests and fixed-zone use.
pub fn utc_tm(secs: i64) -> Tm {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let jan1 = days_from_civil(y, 1, 1);
    Tm {
        year: (y - 1900) as i32,
        mon: m as i32 - 1,
        mday: d as i32,
        hour: (rem / 3600) as i32,
        yday: (days - jan1) as i32,
        // 1970-01-01 was a Thursday.
        wday: (days + 4).rem_euclid(7) as i32,
    }
}

/// Howard Hinnant's days-from-civil.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, snapper's info.xml date.
pub fn format_date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses snapper's date format exactly (no `T`, no zone), as UTC.
pub fn parse_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = &text[r];
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_in_snapper_format() {
        let t = parse_date("2026-11-22 02:50:00").unwrap();
        assert_eq!(format_date(t), "2026-11-22 02:50:00");
        assert_eq!(parse_date("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_date("2026-11-22T02:55:00Z"), None);
        assert_eq!(parse_date("2026-11-22 02:55"), None);
    }

    #[test]
    fn utc_tm_matches_libc_gmtime() {
        for secs in [
            0i64,
            951_782_400,
            1_795_000_000,
            1_798_675_200,
            1_830_211_199,
        ] {
            // SAFETY: zeroed tm is valid; gmtime_r writes into it.
            let mut out: libc::tm = unsafe { std::mem::zeroed() };
            let t = secs as libc::time_t;
            // SAFETY: valid pointers for the duration of the call.
            unsafe { libc::gmtime_r(&t, &mut out) };
            assert_eq!(utc_tm(secs), from_libc(&out), "{secs}");
        }
    }
}
