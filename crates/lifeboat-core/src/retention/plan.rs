//! The retention plan: for every snapshot, keep or forget, and the rules that decided it.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use super::{format_duration, Policy};
use crate::catalog::{self, SnapshotId};

/// What planning needs to know about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFacts {
    /// The snapshot.
    pub id: SnapshotId,
    /// The instant the data is consistent as of (bucketed in the policy's time zone).
    pub time: DateTime<Utc>,
    /// `Some("pinned: ...")` if an operator pinned it: kept whatever the rules say.
    pub pinned: Option<String>,
}

/// The newest snapshot that passed a content or drill verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The snapshot.
    pub id: SnapshotId,
    /// The level it passed (`content` or `drill`).
    pub level: String,
}

/// What the plan does with one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// The instant its data holds (what the buckets use).
    pub time: DateTime<Utc>,
    /// Kept (`true`) or forgotten.
    pub keep: bool,
    /// Why it is kept, e.g. `daily 3/7`; empty when forgotten.
    pub reasons: Vec<String>,
}

/// Keep or forget for every snapshot of a job, with the reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    /// The policy, in words.
    pub policy: String,
    /// Newest first.
    pub decisions: Vec<Decision>,
}

impl RetentionPlan {
    /// The snapshots kept.
    pub fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.keep)
    }

    /// The snapshots forgotten.
    pub fn forgotten(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }

    /// A table with one line per snapshot, newest first.
    pub fn render(&self) -> String {
        let mut out = format!("Policy: {}\n", self.policy);
        out.push_str(&format!(
            "{:<24} {:<20} {:<7} {}\n",
            "SNAPSHOT", "CONSISTENT AT (UTC)", "ACTION", "WHY"
        ));
        for d in &self.decisions {
            out.push_str(&format!(
                "{:<24} {:<20} {:<7} {}\n",
                d.id.as_str(),
                d.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                if d.keep { "keep" } else { "forget" },
                if d.reasons.is_empty() {
                    "-".to_string()
                } else {
                    d.reasons.join(", ")
                }
            ));
        }
        let kept = self.kept().count();
        out.push_str(&format!(
            "{kept} kept, {} forgotten\n",
            self.decisions.len() - kept
        ));
        out
    }
}

/// Calendar period of a snapshot for one rule; equal keys mean the same period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Each(usize),
    Hour(i32, u32, u32, u32),
    Day(i32, u32),
    Week(i32, u32),
    Month(i32, u32),
    Year(i32),
}

struct Rule {
    name: &'static str,
    count: u32,
    used: u32,
    last: Option<Period>,
    period: fn(&DateTime<chrono_tz::Tz>, usize) -> Period,
}

/// What the guards no policy can override need to know besides the snapshots.
#[derive(Debug, Clone, Copy)]
pub struct Guards<'a> {
    /// The current time: snapshots dated after it (beyond [`catalog::FUTURE_TOLERANCE`]) are
    /// kept, reported, and neither counted by the rules nor taken as the newest.
    pub now: DateTime<Utc>,
    /// The newest snapshot that passed a content or drill verification.
    pub newest_verified: Option<&'a Verified>,
    /// The snapshot the running backup has just committed: that run never forgets it.
    pub committed: Option<&'a SnapshotId>,
}

impl<'a> Guards<'a> {
    /// Guards at `now` with nothing verified or just committed.
    pub fn at(now: DateTime<Utc>) -> Guards<'a> {
        Guards {
            now,
            newest_verified: None,
            committed: None,
        }
    }
}

/// Plans retention for the snapshots of one job: pure, deterministic, and restic-compatible.
pub fn plan(policy: &Policy, snapshots: &[SnapshotFacts], guards: &Guards) -> RetentionPlan {
    let newest_verified = guards.newest_verified;
    // The rules walk the snapshots dated up to now, newest first; the future-dated ones come
    // first in the plan, kept and marked, so that a clock far ahead can neither age every real
    // snapshot out of `keep-within` nor use up the calendar rules' counts.
    let (mut future, mut sorted): (Vec<&SnapshotFacts>, Vec<&SnapshotFacts>) = snapshots
        .iter()
        .partition(|s| catalog::is_future_dated(s.time, guards.now));
    let newest_first =
        |a: &&SnapshotFacts, b: &&SnapshotFacts| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id));
    sorted.sort_by(newest_first);
    future.sort_by(newest_first);
    let newest = catalog::latest_of(snapshots, guards.now, |s| (s.time, &s.id)).map(|s| &s.id);
    let mut decisions = Vec::with_capacity(snapshots.len());
    for snapshot in future {
        let mut reasons = vec![format!(
            "dated in the future ({} ahead): check the clocks",
            format_duration((snapshot.time - guards.now).to_std().unwrap_or_default())
        )];
        if guards.committed == Some(&snapshot.id) {
            reasons.push("committed by this run".to_string());
        }
        reasons.extend(snapshot.pinned.clone());
        decisions.push(Decision {
            id: snapshot.id.clone(),
            time: snapshot.time,
            keep: true,
            reasons,
        });
    }
    let mut rules = [
        Rule {
            name: "last",
            count: policy.keep_last,
            used: 0,
            last: None,
            period: |_, i| Period::Each(i),
        },
        Rule {
            name: "hourly",
            count: policy.keep_hourly,
            used: 0,
            last: None,
            period: |t, _| Period::Hour(t.year(), t.month(), t.day(), t.hour()),
        },
        Rule {
            name: "daily",
            count: policy.keep_daily,
            used: 0,
            last: None,
            period: |t, _| Period::Day(t.year(), t.ordinal()),
        },
        Rule {
            name: "weekly",
            count: policy.keep_weekly,
            used: 0,
            last: None,
            period: |t, _| Period::Week(t.iso_week().year(), t.iso_week().week()),
        },
        Rule {
            name: "monthly",
            count: policy.keep_monthly,
            used: 0,
            last: None,
            period: |t, _| Period::Month(t.year(), t.month()),
        },
        Rule {
            name: "yearly",
            count: policy.keep_yearly,
            used: 0,
            last: None,
            period: |t, _| Period::Year(t.year()),
        },
    ];
    let newest_time = sorted.first().map(|s| s.time);
    for (i, snapshot) in sorted.iter().enumerate() {
        let local = snapshot.time.with_timezone(&policy.timezone);
        let mut reasons = Vec::new();
        if newest == Some(&snapshot.id) {
            reasons.push("newest snapshot".to_string());
        }
        if guards.committed == Some(&snapshot.id) {
            reasons.push("committed by this run".to_string());
        }
        if newest_verified.is_some_and(|v| v.id == snapshot.id) {
            reasons.push(format!(
                "newest verified ({})",
                newest_verified.map_or("", |v| v.level.as_str())
            ));
        }
        // A pinned snapshot still takes its place in the rules' counts: pinning one keeps it
        // in addition to what the policy keeps, never instead of it.
        reasons.extend(snapshot.pinned.clone());
        for rule in rules.iter_mut() {
            if rule.used >= rule.count {
                continue;
            }
            let period = (rule.period)(&local, i);
            if rule.last != Some(period) {
                rule.last = Some(period);
                rule.used += 1;
                reasons.push(format!("{} {}/{}", rule.name, rule.used, rule.count));
            }
        }
        if let (Some(within), Some(newest)) = (policy.keep_within, newest_time) {
            // As restic: strictly after (newest - within).
            let limit = chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
            if newest
                .checked_sub_signed(limit)
                .is_none_or(|cutoff| snapshot.time > cutoff)
            {
                reasons.push(format!("within {} of newest", format_duration(within)));
            }
        }
        decisions.push(Decision {
            id: snapshot.id.clone(),
            time: snapshot.time,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    RetentionPlan {
        policy: policy.describe(),
        decisions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::{parse_policy_text, PolicySpec};
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn snap(t: DateTime<Utc>) -> SnapshotFacts {
        SnapshotFacts {
            id: SnapshotId::new(t, [0, 0, 1]),
            time: t,
            pinned: None,
        }
    }

    /// Guards at a time after every snapshot of these tests.
    fn later() -> Guards<'static> {
        Guards::at(Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).unwrap())
    }

    fn policy(text: &str) -> Policy {
        parse_policy_text(text, "test").unwrap()
    }

    /// The plan as `time action reasons` lines, compact enough to compare by eye.
    fn lines(plan: &RetentionPlan) -> Vec<String> {
        plan.decisions
            .iter()
            .map(|d| {
                format!(
                    "{} {} {}",
                    d.time.format("%Y-%m-%d %H:%M"),
                    if d.keep { "keep" } else { "forget" },
                    d.reasons.join(", ")
                )
                .trim_end()
                .to_string()
            })
            .collect()
    }

    #[test]
    fn hourly_for_three_days() {
        let start = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let snaps: Vec<_> = (0..72)
            .map(|h| snap(start + chrono::Duration::hours(h)))
            .collect();
        let p = plan(&policy("keep-hourly = 4\nkeep-daily = 3"), &snaps, &later());
        let kept: Vec<String> = lines(&p)
            .into_iter()
            .filter(|l| l.contains(" keep"))
            .collect();
        assert_eq!(
            kept,
            [
                "2026-03-03 23:00 keep newest snapshot, hourly 1/4, daily 1/3",
                "2026-03-03 22:00 keep hourly 2/4",
                "2026-03-03 21:00 keep hourly 3/4",
                "2026-03-03 20:00 keep hourly 4/4",
                "2026-03-02 23:00 keep daily 2/3",
                "2026-03-01 23:00 keep daily 3/3",
            ]
        );
        assert_eq!(p.forgotten().count(), 66);
    }

    #[test]
    fn daily_for_two_years_with_gaps() {
        // Daily at 03:00 from 2024-01-01 to 2025-12-31, but nothing from 2025-03-10 to 2025-06-30
        // (backups silently stopped) and nothing in December 2025 after the 20th.
        let mut snaps = Vec::new();
        let mut day = Utc.with_ymd_and_hms(2024, 1, 1, 3, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2025, 12, 31, 3, 0, 0).unwrap();
        let gap = (
            Utc.with_ymd_and_hms(2025, 3, 10, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2025, 7, 1, 0, 0, 0).unwrap(),
        );
        let stop = Utc.with_ymd_and_hms(2025, 12, 21, 0, 0, 0).unwrap();
        while day <= end {
            if !(day >= gap.0 && day < gap.1) && day < stop {
                snaps.push(snap(day));
            }
            day += chrono::Duration::days(1);
        }
        let p = plan(&policy("keep-daily = 3\nkeep-weekly = 2\nkeep-monthly = 6\nkeep-yearly = 5\nkeep-within = \"2d\""), &snaps, &later());
        let kept: Vec<String> = lines(&p)
            .into_iter()
            .filter(|l| l.contains(" keep"))
            .collect();
        assert_eq!(
            kept,
            [
                // keep-within counts back from the newest snapshot (Dec 20), not from today.
                "2025-12-20 03:00 keep newest snapshot, daily 1/3, weekly 1/2, monthly 1/6, yearly 1/5, within 2d of newest",
                "2025-12-19 03:00 keep daily 2/3, within 2d of newest",
                "2025-12-18 03:00 keep daily 3/3",
                // Sunday of the previous ISO week.
                "2025-12-14 03:00 keep weekly 2/2",
                "2025-11-30 03:00 keep monthly 2/6",
                "2025-10-31 03:00 keep monthly 3/6",
                "2025-09-30 03:00 keep monthly 4/6",
                "2025-08-31 03:00 keep monthly 5/6",
                "2025-07-31 03:00 keep monthly 6/6",
                "2024-12-31 03:00 keep yearly 2/5",
            ]
        );
    }

    #[test]
    fn dst_change_in_the_policy_time_zone() {
        // Europe/Berlin falls back on 2026-10-25: 03:00 CEST becomes 02:00 CET, so the local hour
        // 02:00-03:00 happens twice. Hourly snapshots at 23:30..03:30 UTC.
        let snaps: Vec<_> = (0..5)
            .map(|h| {
                snap(
                    Utc.with_ymd_and_hms(2026, 10, 24, 23, 30, 0).unwrap()
                        + chrono::Duration::hours(h),
                )
            })
            .collect();
        let berlin = plan(
            &policy("keep-hourly = 10\ntimezone = \"Europe/Berlin\""),
            &snaps,
            &later(),
        );
        assert_eq!(
            lines(&berlin),
            [
                "2026-10-25 03:30 keep newest snapshot, hourly 1/10", // 04:30 CET
                "2026-10-25 02:30 keep hourly 2/10",                  // 03:30 CET
                "2026-10-25 01:30 keep hourly 3/10",                  // 02:30 CET (second 02:xx)
                "2026-10-25 00:30 forget",                            // 02:30 CEST: same local hour
                "2026-10-24 23:30 keep hourly 4/10",                  // 01:30 CEST
            ]
        );
        let utc = plan(&policy("keep-hourly = 10"), &snaps, &later());
        assert_eq!(utc.kept().count(), 5, "in UTC every hour is distinct");
        // Daily buckets follow the local date too: 23:30 UTC on the 24th is the 25th in Berlin.
        let daily = plan(
            &policy("keep-daily = 2\ntimezone = \"Europe/Berlin\""),
            &snaps,
            &later(),
        );
        assert_eq!(daily.kept().count(), 1, "{}", daily.render());
        let daily_utc = plan(&policy("keep-daily = 2"), &snaps, &later());
        assert_eq!(daily_utc.kept().count(), 2, "{}", daily_utc.render());
    }

    #[test]
    fn guards_keep_the_newest_and_the_newest_verified() {
        let t = |d| Utc.with_ymd_and_hms(2026, 1, d, 0, 0, 0).unwrap();
        let snaps = vec![snap(t(1)), snap(t(2)), snap(t(3))];
        let verified = Verified {
            id: snaps[0].id.clone(),
            level: "content".into(),
        };
        let p = plan(
            &policy("keep-last = 1"),
            &snaps,
            &Guards {
                newest_verified: Some(&verified),
                ..later()
            },
        );
        assert_eq!(
            lines(&p),
            [
                "2026-01-03 00:00 keep newest snapshot, last 1/1",
                "2026-01-02 00:00 forget",
                "2026-01-01 00:00 keep newest verified (content)",
            ]
        );
        assert!(p.render().contains("2 kept, 1 forgotten"));
    }

    fn arb_policy() -> impl Strategy<Value = PolicySpec> {
        (
            0u32..5,
            0u32..30,
            0u32..10,
            0u32..6,
            0u32..14,
            0u32..4,
            proptest::option::of(0u64..2000),
            any::<bool>(),
        )
            .prop_map(
                |(last, hourly, daily, weekly, monthly, yearly, within_h, berlin)| PolicySpec {
                    keep_last: Some(last.max(u32::from(
                        hourly + daily + weekly + monthly + yearly == 0 && within_h.is_none(),
                    ))),
                    keep_hourly: Some(hourly),
                    keep_daily: Some(daily),
                    keep_weekly: Some(weekly),
                    keep_monthly: Some(monthly),
                    keep_yearly: Some(yearly),
                    keep_within: within_h.map(|h| format!("{}h", h + 1)),
                    timezone: berlin.then(|| "Europe/Berlin".to_string()),
                },
            )
    }

    fn arb_history() -> impl Strategy<Value = Vec<SnapshotFacts>> {
        proptest::collection::vec((0i64..(3 * 365 * 86_400), any::<[u8; 3]>()), 1..120).prop_map(
            |offsets| {
                let base = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
                let mut seen = std::collections::BTreeSet::new();
                offsets
                    .into_iter()
                    .map(|(o, r)| {
                        let t = base + chrono::Duration::seconds(o);
                        SnapshotFacts {
                            id: SnapshotId::new(t, r),
                            time: t,
                            // About one in eight pinned.
                            pinned: (r[0] % 8 == 0).then(|| "pinned".to_string()),
                        }
                    })
                    .filter(|s| seen.insert(s.id.clone()))
                    .collect()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

        #[test]
        fn retention_properties(spec in arb_policy(), history in arb_history(), bump in 0usize..6) {
            let p = Policy::from_spec(&spec, "random").unwrap();
            let first = plan(&p, &history, &later());
            // The newest snapshot is always kept.
            let newest = history.iter().max_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id))).unwrap();
            prop_assert!(first.decisions.iter().any(|d| d.id == newest.id && d.keep));
            // Only the given snapshots are planned, each exactly once.
            prop_assert_eq!(first.decisions.len(), history.len());
            // Planning is deterministic.
            prop_assert_eq!(&plan(&p, &history, &later()), &first);
            // Applying the plan, then planning again, forgets nothing more.
            let kept: Vec<SnapshotFacts> = history.iter().filter(|s| first.kept().any(|d| d.id == s.id)).cloned().collect();
            prop_assert_eq!(plan(&p, &kept, &later()).forgotten().count(), 0);
            // Raising any count never forgets more.
            let mut more = p.clone();
            match bump {
                0 => more.keep_last += 1,
                1 => more.keep_hourly += 1,
                2 => more.keep_daily += 1,
                3 => more.keep_weekly += 1,
                4 => more.keep_monthly += 1,
                _ => more.keep_yearly += 1,
            }
            let wider = plan(&more, &history, &later());
            for d in first.kept() {
                prop_assert!(wider.decisions.iter().any(|w| w.id == d.id && w.keep));
            }
        }

        /// Whatever the clock says: the snapshot a run committed, the newest one dated up to
        /// now, and every future-dated one are kept.
        #[test]
        fn guards_hold_whatever_the_times_say(
            spec in arb_policy(),
            history in arb_history(),
            now_offset in -(400i64 * 86_400)..(4 * 365 * 86_400),
            committed in any::<prop::sample::Index>(),
        ) {
            let p = Policy::from_spec(&spec, "random").unwrap();
            let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(now_offset);
            let committed = &history[committed.index(history.len())].id;
            let plan = plan(&p, &history, &Guards { now, newest_verified: None, committed: Some(committed) });
            let kept = |id: &SnapshotId| plan.decisions.iter().any(|d| &d.id == id && d.keep);
            prop_assert!(kept(committed));
            for s in history.iter().filter(|s| catalog::is_future_dated(s.time, now)) {
                prop_assert!(kept(&s.id));
            }
            if let Some(newest) = catalog::latest_of(&history, now, |s| (s.time, &s.id)) {
                prop_assert!(kept(&newest.id));
            }
            for s in history.iter().filter(|s| s.pinned.is_some()) {
                prop_assert!(kept(&s.id));
            }
            // Pins keep in addition to the policy, never instead: without them, every other
            // snapshot gets the same decision.
            let unpinned: Vec<SnapshotFacts> = history.iter().map(|s| SnapshotFacts { pinned: None, ..s.clone() }).collect();
            let without = super::plan(&p, &unpinned, &Guards { now, newest_verified: None, committed: Some(committed) });
            for (a, b) in plan.decisions.iter().zip(&without.decisions) {
                prop_assert_eq!(&a.id, &b.id);
                let pinned = history.iter().any(|s| s.id == a.id && s.pinned.is_some());
                if !pinned {
                    prop_assert_eq!(a.keep, b.keep);
                }
            }
        }
    }

    /// Regression: one snapshot dated ten days ahead made the next backup with keep-7-days
    /// forget the snapshot it had just committed, and every real older one.
    #[test]
    fn a_future_dated_snapshot_does_not_make_a_backup_forget_itself() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 3, 0, 0).unwrap();
        let days = |d: i64| now + chrono::Duration::days(d);
        let snaps = vec![snap(days(-2)), snap(days(-1)), snap(days(10)), snap(now)];
        let committed = snaps[3].id.clone();
        let p = plan(
            &policy("keep-within = \"7d\""),
            &snaps,
            &Guards {
                now,
                newest_verified: None,
                committed: Some(&committed),
            },
        );
        assert_eq!(
            lines(&p),
            [
                "2026-12-09 03:00 keep dated in the future (10d ahead): check the clocks",
                "2026-11-29 03:00 keep newest snapshot, committed by this run, within 7d of newest",
                "2026-11-28 03:00 keep within 7d of newest",
                "2026-11-27 03:00 keep within 7d of newest",
            ]
        );
    }
}
