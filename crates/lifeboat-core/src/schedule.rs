//! A job's schedule: five-field cron (`0 3 * * *`, or `@daily`), read in the job's time zone.
//! It says when the job next runs, how far apart its runs are at most, and so the freshness
//! limit that follows from it; the deployment files (`deploy/`) are generated from it.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// Runs looked at to find the longest interval: a year of a weekly schedule, a month of a
/// daily one with weekday exceptions, two days of one every half hour.
const RUNS_SURVEYED: usize = 96;

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    timezone: Tz,
}

impl Schedule {
    /// Parses a five-field expression (or a nickname such as `@daily`) read in `timezone` (an
    /// IANA name such as `Europe/Berlin`, or `UTC`). The error says what is wrong.
    pub fn parse(expression: &str, timezone: &str) -> Result<Schedule, String> {
        let expression = expression.trim();
        let fields = expression.split_whitespace().count();
        if !expression.starts_with('@') && fields != 5 {
            return Err(format!(
                "{expression:?} has {fields} fields; a schedule has five: minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\""
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| format!("{expression:?} is not a cron schedule: {e}"))?;
        let timezone: Tz = timezone.parse().map_err(|_| {
            format!("{timezone:?} is not a time zone; write an IANA name such as \"UTC\" or \"Europe/Berlin\"")
        })?;
        let schedule = Schedule {
            expression: expression.to_string(),
            cron,
            timezone,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(format!("{expression:?} never runs"));
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The five fields, nicknames spelled out (`@daily` is `0 0 * * *`).
    pub fn fields(&self) -> Vec<String> {
        let expanded = match self.expression.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ => self.expression.as_str(),
        };
        expanded.split_whitespace().map(str::to_string).collect()
    }

    /// The time zone the expression is read in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The first run strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.timezone), false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    /// The longest time between two consecutive runs, over the runs after `from`.
    pub fn longest_interval(&self, from: DateTime<Utc>) -> Duration {
        let mut longest = Duration::zero();
        let mut previous = self.next_after(from);
        for _ in 0..RUNS_SURVEYED {
            let Some(run) = previous else { break };
            let Some(next) = self.next_after(run) else {
                break;
            };
            longest = longest.max(next - run);
            previous = Some(next);
        }
        longest
    }

    /// The freshness limit a schedule implies when none is configured: twice its longest
    /// interval plus an hour, so one missed run is tolerated and two are not.
    pub fn freshness_limit(&self, now: DateTime<Utc>) -> Duration {
        self.longest_interval(now) * 2 + Duration::hours(1)
    }

    /// Whether a run was due after `newest` and has not produced a snapshot by `now` (an hour
    /// of grace for the run to finish): the run after `newest`, if it is more than an hour ago.
    pub fn overdue(&self, newest: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after(newest)
            .filter(|due| *due + Duration::hours(1) < now)
    }

    /// "0 3 * * * (UTC)".
    pub fn describe(&self) -> String {
        format!("{} ({})", self.expression, self.timezone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn runs_intervals_and_limits() {
        let daily = Schedule::parse("0 3 * * *", "UTC").unwrap();
        assert_eq!(
            daily.next_after(at("2026-12-03T02:00:00Z")),
            Some(at("2026-12-03T03:00:00Z"))
        );
        assert_eq!(
            daily.longest_interval(at("2026-12-03T00:00:00Z")),
            Duration::hours(24)
        );
        assert_eq!(
            daily.freshness_limit(at("2026-12-03T00:00:00Z")),
            Duration::hours(49)
        );
        // Weekdays only: the weekend makes the longest gap three days.
        let weekdays = Schedule::parse("30 1 * * 1-5", "UTC").unwrap();
        assert_eq!(
            weekdays.longest_interval(at("2026-12-03T00:00:00Z")),
            Duration::hours(72)
        );
        assert_eq!(
            Schedule::parse("@daily", "UTC").unwrap().fields(),
            ["0", "0", "*", "*", "*"]
        );
    }

    #[test]
    fn a_time_zone_moves_the_run_with_daylight_saving() {
        let berlin = Schedule::parse("0 3 * * *", "Europe/Berlin").unwrap();
        // 03:00 in Berlin is 02:00 UTC in winter and 01:00 UTC in summer.
        assert_eq!(
            berlin.next_after(at("2026-12-03T00:00:00Z")),
            Some(Utc.with_ymd_and_hms(2026, 12, 3, 2, 0, 0).unwrap())
        );
        assert_eq!(
            berlin.next_after(at("2026-07-03T00:00:00Z")),
            Some(Utc.with_ymd_and_hms(2026, 7, 3, 1, 0, 0).unwrap())
        );
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        assert!(Schedule::parse("0 3 * *", "UTC")
            .unwrap_err()
            .contains("five"));
        assert!(Schedule::parse("0 3 * * * *", "UTC")
            .unwrap_err()
            .contains("five"));
        assert!(Schedule::parse("61 3 * * *", "UTC").is_err());
        assert!(Schedule::parse("0 3 * * *", "Mars/Olympus")
            .unwrap_err()
            .contains("time zone"));
        assert!(Schedule::parse("0 0 30 2 *", "UTC").is_err());
    }

    #[test]
    fn an_overdue_run_is_one_that_was_due_more_than_an_hour_ago() {
        let daily = Schedule::parse("0 3 * * *", "UTC").unwrap();
        let newest = at("2026-12-02T03:00:00Z");
        assert_eq!(daily.overdue(newest, at("2026-12-03T03:30:00Z")), None);
        assert_eq!(
            daily.overdue(newest, at("2026-12-03T04:30:00Z")),
            Some(at("2026-12-03T03:00:00Z"))
        );
    }
}
