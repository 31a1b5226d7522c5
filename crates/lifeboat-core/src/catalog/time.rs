//! Parsing the times an operator types for `--at`.
//!
//! Accepted, in order: RFC 3339 (`2026-11-25T02:00:00+01:00`), `YYYY-MM-DD[ HH:MM[:SS]]` with an
//! optional `T` separator and an optional `Z` or `±HH:MM` offset (UTC when none is given; a date
//! alone means 00:00:00), and `YYYYMMDD_HHMMSS` / `YYYYMMDDTHHMMSSZ`, the forms old backup
//! scripts and snapshot ids put in names.
//!
//! A time is given to a precision, and means the end of that unit: `02:29:20` is every instant
//! up to the last nanosecond of that second, `02:29` the whole minute, a date the whole day.
//! So a time copied from `list` (which shows whole seconds) selects the snapshot it shows,
//! although the stored time has fractions of a second.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};

/// Parses `--at` and similar times: RFC 3339, a date with an optional time (read as UTC), or
/// the compact forms above, as the last instant of the unit given (see the module's notes);
/// the error lists the forms accepted.
pub fn parse_time(input: &str) -> Result<DateTime<Utc>, String> {
    let (start, unit) = parse_time_start(input)?;
    Ok(start + unit - chrono::Duration::nanoseconds(1))
}

/// The precision of a time as written: a second, or less with a fraction (`02:00:00.25` is a
/// hundredth of a second).
fn second_or_fraction(s: &str) -> chrono::Duration {
    let fraction_digits = s
        .rsplit_once('.')
        .map_or(0, |(_, f)| f.bytes().take_while(u8::is_ascii_digit).count())
        .min(9);
    chrono::Duration::nanoseconds(10i64.pow(9 - fraction_digits as u32))
}

/// The first instant of the time written and the length of its unit.
fn parse_time_start(input: &str) -> Result<(DateTime<Utc>, chrono::Duration), String> {
    let s = input.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok((t.with_timezone(&Utc), second_or_fraction(s)));
    }
    for fmt in ["%Y%m%d_%H%M%S", "%Y%m%dT%H%M%SZ", "%Y%m%d-%H%M%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok((t.and_utc(), chrono::Duration::seconds(1)));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok((
            d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
            chrono::Duration::days(1),
        ));
    }
    let (body, offset) = split_offset(s);
    let body = body.replacen('T', " ", 1);
    for (fmt, unit) in [
        ("%Y-%m-%d %H:%M:%S", chrono::Duration::seconds(1)),
        ("%Y-%m-%d %H:%M", chrono::Duration::minutes(1)),
        ("%Y-%m-%d %H:%M:%S%.f", second_or_fraction(body.trim())),
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(body.trim(), fmt) {
            return match offset {
                None => Ok((t.and_utc(), unit)),
                Some(off) => t
                    .and_local_timezone(off)
                    .single()
                    .map(|t| (t.with_timezone(&Utc), unit))
                    .ok_or_else(|| format!("{input:?} is not a valid time")),
            };
        }
    }
    Err(format!(
        "{input:?} is not a time Lifeboat understands; use RFC 3339 (2026-11-25T02:00:00Z), \
         \"2026-11-25 02:00\" (UTC unless an offset like +01:00 follows), or 20261125_020000"
    ))
}

fn split_offset(s: &str) -> (&str, Option<FixedOffset>) {
    if let Some(body) = s.strip_suffix('Z').or_else(|| s.strip_suffix(" UTC")) {
        return (body, FixedOffset::east_opt(0));
    }
    // An offset is a sign after the time part: "... 02:00+01:00" or "... 02:00 -0500".
    if s.len() > 16 {
        let tail_start = 16; // past "YYYY-MM-DD HH:MM"
        if let Some(pos) = s[tail_start..].find(['+', '-']) {
            let (body, off) = s.split_at(tail_start + pos);
            if let Some(o) = parse_offset(off.trim()) {
                return (body.trim_end(), Some(o));
            }
        }
    }
    (s, None)
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = s[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn accepted_forms() {
        let cases = [
            ("2026-11-25T02:00:00Z", utc(2026, 11, 25, 2, 0, 0)),
            ("2026-11-25T02:00:00+01:00", utc(2026, 11, 25, 1, 0, 0)),
            ("2026-11-25", utc(2026, 11, 25, 0, 0, 0)),
            ("2026-11-25 02:00", utc(2026, 11, 25, 2, 0, 0)),
            ("2026-11-25 02:00:30", utc(2026, 11, 25, 2, 0, 30)),
            ("2026-11-25 02:00+01:00", utc(2026, 11, 25, 1, 0, 0)),
            ("2026-11-25 02:00:00 -0500", utc(2026, 11, 25, 7, 0, 0)),
            ("2026-11-25T02:00", utc(2026, 11, 25, 2, 0, 0)),
            ("20261125_020000", utc(2026, 11, 25, 2, 0, 0)),
            ("20261125T020000Z", utc(2026, 11, 25, 2, 0, 0)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_time_start(input).map(|(t, _)| t), Ok(want), "{input}");
        }
    }

    /// Regression (Trust III, 9): `list` shows `2026-12-07 02:29:20Z`, and `--at` with that
    /// text picked the snapshot before, whose stored time had fractions of a second. A time
    /// means the end of the unit it is written to.
    #[test]
    fn a_time_means_the_end_of_the_unit_it_is_written_to() {
        let stored = utc(2026, 12, 7, 2, 29, 20) + chrono::Duration::nanoseconds(347_920_657);
        for to_the_second in [
            "2026-12-07 02:29:20Z",
            "2026-12-07 02:29:20",
            "2026-12-07T02:29:20Z",
            "20261207_022920",
            "2026-12-07 02:29:20+00:00",
        ] {
            let at = parse_time(to_the_second).unwrap();
            assert!(at >= stored, "{to_the_second}");
            assert_eq!(
                at,
                utc(2026, 12, 7, 2, 29, 21) - chrono::Duration::nanoseconds(1),
                "{to_the_second}"
            );
        }
        assert_eq!(
            parse_time("2026-12-07 02:29").unwrap(),
            utc(2026, 12, 7, 2, 30, 0) - chrono::Duration::nanoseconds(1)
        );
        assert_eq!(
            parse_time("2026-12-07").unwrap(),
            utc(2026, 12, 8, 0, 0, 0) - chrono::Duration::nanoseconds(1)
        );
        // A fraction is a precision too: .3 is the tenth of a second that starts there.
        assert_eq!(
            parse_time("2026-12-07T02:29:20.3Z").unwrap(),
            utc(2026, 12, 7, 2, 29, 20) + chrono::Duration::milliseconds(400)
                - chrono::Duration::nanoseconds(1)
        );
        assert_eq!(parse_time("2026-12-07 02:29:20.347920657").unwrap(), stored);
        // The second before is before the stored time.
        assert!(parse_time("2026-12-07 02:29:19Z").unwrap() < stored);
    }

    #[test]
    fn rejected_forms_explain_the_accepted_ones() {
        for bad in ["yesterday", "2026-13-01", "25/11/2026", "2026-11-25 25:00"] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.contains("RFC 3339"), "{err}");
        }
    }
}
