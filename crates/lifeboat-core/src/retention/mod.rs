//! Retention: which snapshots to keep. [`plan`] is a pure function of the policy and the
//! snapshots; the prune operation ([`crate::prune`]) applies its result.
//!
//! Semantics are restic's `forget --keep-*`: snapshots are walked newest first; for each
//! calendar rule (hourly, daily, weekly, monthly, yearly, in the policy's time zone) a snapshot is
//! kept if it is the newest of a period that rule has not counted yet and the rule's count is not
//! used up; `keep-last N` keeps the N newest; `keep-within D` keeps everything within D of the
//! *newest snapshot* (not of now, so stopped backups never age the last good ones away).
//! Guards no policy can override: the newest snapshot, the newest verified snapshot and the
//! snapshot the running backup just committed are always kept; snapshots dated in the future
//! are kept and reported, and are never the "newest" that `keep-within` counts from. See `policies/README.md` for worked examples.

mod plan;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use plan::{plan, Decision, Guards, RetentionPlan, SnapshotFacts, Verified};

pub use crate::text::format_duration;
use crate::text::parse_duration;

/// What a policy file or inline table says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicySpec {
    /// Keep the newest N snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot younger than this (`14d`, `36h`), counted from the newest.
    pub keep_within: Option<String>,
    /// IANA time zone for calendar buckets, e.g. "Europe/Berlin"; default UTC.
    pub timezone: Option<String>,
}

/// A validated retention policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Where it came from: a preset name, a path, or "inline".
    pub source: String,
    /// See [`PolicySpec::keep_last`].
    pub keep_last: u32,
    /// See [`PolicySpec::keep_hourly`].
    pub keep_hourly: u32,
    /// See [`PolicySpec::keep_daily`].
    pub keep_daily: u32,
    /// See [`PolicySpec::keep_weekly`].
    pub keep_weekly: u32,
    /// See [`PolicySpec::keep_monthly`].
    pub keep_monthly: u32,
    /// See [`PolicySpec::keep_yearly`].
    pub keep_yearly: u32,
    /// See [`PolicySpec::keep_within`].
    pub keep_within: Option<Duration>,
    /// The time zone calendar buckets are cut in.
    pub timezone: chrono_tz::Tz,
}

/// The presets in `policies/`, built into the binary so they work anywhere.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "keep-7-days",
        include_str!("../../../../policies/keep-7-days.toml"),
    ),
    (
        "keep-30-days",
        include_str!("../../../../policies/keep-30-days.toml"),
    ),
    ("gfs", include_str!("../../../../policies/gfs.toml")),
    ("hourly", include_str!("../../../../policies/hourly.toml")),
];

impl Policy {
    /// Validates a spec. A policy that keeps nothing is refused.
    pub fn from_spec(spec: &PolicySpec, source: &str) -> Result<Policy, String> {
        let keep_within = spec
            .keep_within
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| format!("keep-within: {e}"))?;
        let timezone = match spec.timezone.as_deref() {
            None => chrono_tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                format!("timezone {name:?} is not an IANA time zone name (e.g. \"Europe/Berlin\", \"UTC\")")
            })?,
        };
        let policy = Policy {
            source: source.to_string(),
            keep_last: spec.keep_last.unwrap_or(0),
            keep_hourly: spec.keep_hourly.unwrap_or(0),
            keep_daily: spec.keep_daily.unwrap_or(0),
            keep_weekly: spec.keep_weekly.unwrap_or(0),
            keep_monthly: spec.keep_monthly.unwrap_or(0),
            keep_yearly: spec.keep_yearly.unwrap_or(0),
            keep_within,
            timezone,
        };
        if policy.keeps_nothing() {
            return Err(format!(
                "the retention policy {source} keeps nothing: every keep-* count is 0 and there is no keep-within; \
                 set at least one, e.g. keep-daily = 7"
            ));
        }
        Ok(policy)
    }

    fn keeps_nothing(&self) -> bool {
        self.keep_last == 0
            && self.keep_hourly == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
            && self.keep_yearly == 0
            && self.keep_within.is_none_or(|d| d.is_zero())
    }

    /// A one-line description, e.g. `gfs (last 3, daily 7, weekly 4, monthly 12, yearly 3)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (name, n) in [
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        ] {
            if n > 0 {
                parts.push(format!("{name} {n}"));
            }
        }
        if let Some(d) = self.keep_within {
            parts.push(format!("within {}", format_duration(d)));
        }
        if self.timezone != chrono_tz::UTC {
            parts.push(format!("timezone {}", self.timezone.name()));
        }
        format!("{} ({})", self.source, parts.join(", "))
    }
}

/// Parses policy TOML text.
pub fn parse_policy_text(text: &str, source: &str) -> Result<Policy, String> {
    let spec: PolicySpec = toml::from_str(text).map_err(|e| {
        let place = e.span().map_or_else(String::new, |s| {
            let (line, col) = crate::text::line_col(text, s.start);
            format!(":{line}:{col}")
        });
        format!("{source}{place}: {}", e.message().trim_end())
    })?;
    Policy::from_spec(&spec, source)
}

/// Resolves a job's `retention` value: a preset name, a path to a TOML file (relative to the
/// configuration file's folder), or an inline table.
pub fn resolve(value: &toml::Value, config_dir: Option<&Path>) -> Result<Policy, String> {
    match value {
        toml::Value::String(name) => {
            if let Some((_, text)) = PRESETS.iter().find(|(n, _)| n == name) {
                return parse_policy_text(text, name);
            }
            if name.ends_with(".toml") || name.contains('/') {
                let path = match config_dir {
                    Some(dir) => dir.join(name),
                    None => Path::new(name).to_path_buf(),
                };
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!("cannot read the retention policy {}: {e}", path.display())
                })?;
                return parse_policy_text(&text, &path.display().to_string());
            }
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "{name:?} is not a retention preset ({}) nor a path to a .toml file",
                names.join(", ")
            ))
        }
        toml::Value::Table(_) => {
            let spec = PolicySpec::deserialize(value.clone())
                .map_err(|e| format!("retention: {}", e.message()))?;
            Policy::from_spec(&spec, "inline")
        }
        _ => Err(
            "retention must be a preset name, a path, or a table like { keep-daily = 7 }"
                .to_string(),
        ),
    }
}

/// Resolves a policy named on the command line (a preset or a path).
pub fn resolve_name(name: &str, dir: Option<&Path>) -> Result<Policy, String> {
    resolve(&toml::Value::String(name.to_string()), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        for (name, text) in PRESETS {
            let p = parse_policy_text(text, name).unwrap();
            assert!(!p.keeps_nothing(), "{name}");
        }
        let gfs = resolve(&toml::Value::String("gfs".into()), None).unwrap();
        assert_eq!(
            gfs.describe(),
            "gfs (last 3, daily 7, weekly 4, monthly 12, yearly 3)"
        );
    }

    #[test]
    fn every_file_in_policies_is_a_preset() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
                assert!(
                    PRESETS.iter().any(|(n, _)| *n == stem),
                    "{stem} is not built in"
                );
                parse_policy_text(&std::fs::read_to_string(&path).unwrap(), &stem).unwrap();
            }
        }
    }

    #[test]
    fn a_policy_that_keeps_nothing_is_refused() {
        let empty = toml::Value::Table(Default::default());
        assert!(resolve(&empty, None).unwrap_err().contains("keeps nothing"));
        let zeros: toml::Value = toml::from_str("keep-daily = 0\nkeep-last = 0").unwrap();
        assert!(resolve(&zeros, None).unwrap_err().contains("keeps nothing"));
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        let e = resolve(&toml::Value::String("weekly-ish".into()), None).unwrap_err();
        assert!(e.contains("gfs"), "{e}");
        let bad: toml::Value = toml::from_str("keep-dayly = 3").unwrap();
        assert!(resolve(&bad, None).unwrap_err().contains("keep-dayly"));
        let tz: toml::Value =
            toml::from_str("keep-daily = 3\ntimezone = \"Mars/Olympus\"").unwrap();
        assert!(resolve(&tz, None).unwrap_err().contains("IANA"));
        let e = parse_policy_text("keep-daily = \"seven\"\n", "p.toml").unwrap_err();
        assert!(e.starts_with("p.toml:1:14"), "{e}");
    }
}
