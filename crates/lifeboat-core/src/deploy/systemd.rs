//! systemd units: a oneshot `.service` and a `.timer` per run. The cron schedule becomes an
//! `OnCalendar=` expression with the time zone at its end; `Persistent=true` runs a schedule
//! missed while the machine was off, and `RandomizedDelaySec=` spreads machines that share a
//! schedule.

use super::{command_words, header, unit_name, File, Run, Target};
use crate::error::{Error, Result};

pub(super) fn generate(runs: &[Run], target: &Target) -> Result<Vec<File>> {
    let mut files = Vec::new();
    for run in runs {
        let unit = format!("lifeboat-{}", unit_name(&run.name));
        let calendar = on_calendar(&run.schedule.fields(), &run.schedule.timezone().to_string())
            .map_err(|e| {
                Error::config(format!(
                    "the schedule {:?} of the {} run cannot be a systemd timer: {e}",
                    run.schedule.expression(),
                    run.name
                ))
                .with_hint("use --print crontab for this schedule, or write it differently")
            })?;
        let program = target.bin_dir.join(run.program).display().to_string();
        let exec = command_words(run, program, target)
            .iter()
            .map(|w| systemd_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        // A tenth of the interval, at most five minutes: an every-ten-minutes run is not
        // delayed into the next one.
        let interval = run.schedule.longest_interval(chrono::Utc::now());
        let delay = (interval.num_seconds() / 10).clamp(0, 300);
        let mut service = header("#", &format!("Lifeboat: {}.", run.description));
        service.push_str(&format!(
            "[Unit]\n\
             Description=Lifeboat: {description}\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             # NAME=value lines with the secrets lifeboat.toml names as ${{VAR}} (root only).\n\
             EnvironmentFile={env}\n\
             ExecStart={exec}\n\
             # A failed run exits non-zero and the unit is marked failed (OnFailure= can notify).\n",
            description = run.description,
            env = target.env_file.display(),
        ));
        let mut timer = header("#", &format!("Lifeboat: when to {}.", run.description));
        timer.push_str(&format!(
            "[Unit]\n\
             Description=Lifeboat: {description} ({schedule})\n\
             \n\
             [Timer]\n\
             OnCalendar={calendar}\n\
             Persistent=true\n\
             RandomizedDelaySec={delay}s\n\
             Unit={unit}.service\n\
             \n\
             [Install]\n\
             WantedBy=timers.target\n",
            description = run.description,
            schedule = run.schedule.describe(),
        ));
        files.push(File {
            name: format!("{unit}.service"),
            contents: service,
        });
        files.push(File {
            name: format!("{unit}.timer"),
            contents: timer,
        });
    }
    Ok(files)
}

/// A word for `ExecStart=`: quoted when it has a space or a quote; `%` and `$` doubled, since
/// systemd expands specifiers and variables there.
fn systemd_quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if escaped
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\')
    {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// Cron's five fields as `OnCalendar=` (systemd.time(7)): `DOW *-MONTH-DAY HOUR:MINUTE:00 TZ`.
pub(super) fn on_calendar(
    fields: &[String],
    timezone: &str,
) -> std::result::Result<String, String> {
    let [minute, hour, day, month, weekday] = fields else {
        return Err("a schedule has five fields".into());
    };
    if day != "*" && weekday != "*" {
        // cron runs when either matches; a timer would need both.
        return Err(
            "it restricts both the day of the month and the day of the week, which cron reads as \
             either and systemd as both"
                .into(),
        );
    }
    let minute = component(minute, 0, 59, &|v| Ok(v.parse::<u32>().ok()))?;
    let hour = component(hour, 0, 23, &|v| Ok(v.parse::<u32>().ok()))?;
    let day = component(day, 1, 31, &|v| Ok(v.parse::<u32>().ok()))?;
    let month = component(month, 1, 12, &|v| {
        Ok(v.parse::<u32>().ok().or_else(|| {
            MONTHS
                .iter()
                .position(|m| m.eq_ignore_ascii_case(v))
                .map(|i| i as u32 + 1)
        }))
    })?;
    let weekday = if weekday == "*" {
        None
    } else {
        let numbers = expand(weekday, 0, 7, &|v| {
            Ok(v.parse::<u32>().ok().or_else(|| {
                DAYS.iter()
                    .position(|d| d.eq_ignore_ascii_case(v))
                    .map(|i| i as u32)
            }))
        })?;
        let mut names: Vec<u32> = numbers.into_iter().map(|n| n % 7).collect();
        names.sort_unstable();
        names.dedup();
        Some(
            names
                .iter()
                .map(|n| DAYS[*n as usize])
                .collect::<Vec<_>>()
                .join(","),
        )
    };
    let date_time = format!("*-{month}-{day} {hour}:{minute}:00 {timezone}");
    Ok(match weekday {
        Some(days) => format!("{days} {date_time}"),
        None => date_time,
    })
}

type Value<'a> = &'a dyn Fn(&str) -> std::result::Result<Option<u32>, String>;

/// One component: `*`, or the values listed (ranges and steps written out), zero-padded.
fn component(
    field: &str,
    min: u32,
    max: u32,
    value: Value<'_>,
) -> std::result::Result<String, String> {
    if field == "*" {
        return Ok("*".into());
    }
    Ok(expand(field, min, max, value)?
        .iter()
        .map(|v| format!("{v:02}"))
        .collect::<Vec<_>>()
        .join(","))
}

/// Every value a cron field names: lists, ranges `a-b`, steps `*/n` and `a-b/n`.
fn expand(
    field: &str,
    min: u32,
    max: u32,
    value: Value<'_>,
) -> std::result::Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad step in {item:?}"))?,
            ),
            None => (item, 1),
        };
        let parse = |v: &str| -> std::result::Result<u32, String> {
            value(v)?
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| format!("{v:?} is out of range in {field:?}"))
        };
        let (from, to) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (parse(a)?, parse(b)?),
                None if step > 1 => (parse(r)?, max),
                None => (parse(r)?, parse(r)?),
            },
        };
        out.extend((from..=to).step_by(step as usize));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(expr: &str) -> String {
        let fields: Vec<String> = expr.split_whitespace().map(str::to_string).collect();
        on_calendar(&fields, "UTC").unwrap()
    }

    #[test]
    fn cron_fields_become_calendar_events() {
        assert_eq!(cal("0 3 * * *"), "*-*-* 03:00:00 UTC");
        assert_eq!(
            cal("30 1 * * 1-5"),
            "Mon,Tue,Wed,Thu,Fri *-*-* 01:30:00 UTC"
        );
        assert_eq!(cal("*/15 * * * *"), "*-*-* *:00,15,30,45:00 UTC");
        assert_eq!(cal("0 6 * * 0"), "Sun *-*-* 06:00:00 UTC");
        assert_eq!(cal("0 6 * * 7"), "Sun *-*-* 06:00:00 UTC");
        assert_eq!(cal("0 2 1 JAN,jul *"), "*-01,07-01 02:00:00 UTC");
        assert!(on_calendar(&["0", "3", "1", "*", "1"].map(String::from), "UTC").is_err());
    }
}
