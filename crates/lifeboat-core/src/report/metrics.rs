//! Prometheus metrics of job runs (`[metrics]`): written to node_exporter's textfile
//! collector (`<binary>.prom`, atomically, keeping the series of jobs the run did not touch)
//! and/or pushed to a Pushgateway, grouped by binary and job so that backup and verify never
//! overwrite each other. Names follow backup exporters' conventions
//! (`*_last_success_timestamp_seconds`, `*_duration_seconds`); the job is the `lifeboat_job`
//! label (Prometheus keeps `job` for the scrape target).
//!
//! The last success is read from the repository (the newest committed snapshot), never
//! remembered by the process: a failed run cannot erase it, whichever way metrics travel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::catalog;
use crate::config::observe::Metrics;
use crate::error::Result;
use crate::store::Store;
use crate::verify::{self, Level};

/// Every metric Lifeboat writes: name, type, help.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "lifeboat_last_success_timestamp_seconds",
        "gauge",
        "Finish time of the newest committed snapshot of the job (from the repository).",
    ),
    (
        "lifeboat_last_run_timestamp_seconds",
        "gauge",
        "When the last run of this binary for the job ended.",
    ),
    (
        "lifeboat_last_run_success",
        "gauge",
        "1 if the last run of this binary for the job succeeded (exit 0), else 0.",
    ),
    (
        "lifeboat_backup_duration_seconds",
        "gauge",
        "Wall-clock duration of the last backup run of the job.",
    ),
    (
        "lifeboat_backup_raw_bytes",
        "gauge",
        "Raw (uncompressed) size of the newest snapshot.",
    ),
    (
        "lifeboat_backup_stored_bytes",
        "gauge",
        "Stored size of the newest snapshot.",
    ),
    (
        "lifeboat_snapshots",
        "gauge",
        "Committed snapshots of the job in the repository.",
    ),
    (
        "lifeboat_last_verified_timestamp_seconds",
        "gauge",
        "When a snapshot of the job last passed verification, per level.",
    ),
    (
        "lifeboat_restore_drill_duration_seconds",
        "gauge",
        "Restore time of the newest passed drill (the measured RTO).",
    ),
    (
        "lifeboat_newest_snapshot_age_seconds",
        "gauge",
        "Age of the newest snapshot's data when verify ran (the RPO now).",
    ),
];

/// One sample: a metric of one job, with its labels besides `lifeboat_job`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name (one of [`FAMILIES`]).
    pub name: &'static str,
    /// The job.
    pub job: String,
    /// Other labels (`level`).
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    fn new(name: &'static str, job: &str, value: f64) -> Sample {
        Sample {
            name,
            job: job.to_string(),
            labels: Vec::new(),
            value,
        }
    }

    fn line(&self) -> String {
        let mut labels = format!("lifeboat_job=\"{}\"", escape(&self.job));
        for (k, v) in &self.labels {
            let _ = write!(labels, ",{k}=\"{}\"", escape(v));
        }
        format!("{}{{{labels}}} {}", self.name, self.value)
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// What a run of `binary` for `job` came to, and what the repository says about the job.
pub struct RunMetrics {
    /// When the run ended.
    pub ended: DateTime<Utc>,
    /// Exit 0.
    pub success: bool,
    /// The backup's duration (backup runs only).
    pub backup_secs: Option<f64>,
    /// Write the newest snapshot's age (verify runs).
    pub snapshot_age: bool,
}

/// The samples of one job after a run: the run's own, and the repository's facts (newest
/// snapshot, verifications, drills). A repository that cannot be read leaves those out.
pub async fn job_samples<S: Store>(store: &S, job: &str, run: &RunMetrics) -> Vec<Sample> {
    let mut samples = vec![
        Sample::new(
            "lifeboat_last_run_timestamp_seconds",
            job,
            seconds(run.ended),
        ),
        Sample::new(
            "lifeboat_last_run_success",
            job,
            if run.success { 1.0 } else { 0.0 },
        ),
    ];
    if let Some(secs) = run.backup_secs {
        samples.push(Sample::new("lifeboat_backup_duration_seconds", job, secs));
    }
    match repository_samples(store, job, run).await {
        Ok(more) => samples.extend(more),
        Err(e) => {
            tracing::warn!("The metrics of job {job:?} leave out the repository's figures: {e}")
        }
    }
    samples
}

async fn repository_samples<S: Store>(
    store: &S,
    job: &str,
    run: &RunMetrics,
) -> Result<Vec<Sample>> {
    let listing = catalog::list_snapshots(store, job).await?;
    let mut samples = vec![Sample::new(
        "lifeboat_snapshots",
        job,
        listing.snapshots.len() as f64,
    )];
    if let Some(newest) = catalog::latest(&listing.snapshots, run.ended) {
        samples.push(Sample::new(
            "lifeboat_last_success_timestamp_seconds",
            job,
            seconds(newest.finished_at),
        ));
        samples.push(Sample::new(
            "lifeboat_backup_raw_bytes",
            job,
            newest.object.raw_size as f64,
        ));
        samples.push(Sample::new(
            "lifeboat_backup_stored_bytes",
            job,
            newest.object.stored_size as f64,
        ));
        if run.snapshot_age {
            samples.push(Sample::new(
                "lifeboat_newest_snapshot_age_seconds",
                job,
                (run.ended - newest.consistent_at).num_milliseconds().max(0) as f64 / 1000.0,
            ));
        }
    }
    let records = verify::records(store, job).await?;
    for level in [Level::Stored, Level::Content, Level::Drill] {
        if let Some(newest) = records
            .iter()
            .filter(|r| r.ok && r.level == level)
            .max_by_key(|r| r.checked_at)
        {
            let mut sample = Sample::new(
                "lifeboat_last_verified_timestamp_seconds",
                job,
                seconds(newest.checked_at),
            );
            sample.labels.push(("level", level.as_str().to_string()));
            samples.push(sample);
            if let (Level::Drill, Some(secs)) = (level, newest.restore_secs) {
                samples.push(Sample::new(
                    "lifeboat_restore_drill_duration_seconds",
                    job,
                    secs,
                ));
            }
        }
    }
    Ok(samples)
}

/// The text exposition of `samples`, grouped by metric with HELP and TYPE lines.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for (name, kind, help) in FAMILIES {
        let mut lines: Vec<String> = samples
            .iter()
            .filter(|s| s.name == *name)
            .map(Sample::line)
            .collect();
        if lines.is_empty() {
            continue;
        }
        lines.sort();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// The samples of a file this module wrote, as lines by job (`None`: a line without the job
/// label, which is kept as it is).
fn existing_lines(text: &str) -> Vec<(Option<String>, &'static str, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let name = FAMILIES
                .iter()
                .map(|f| f.0)
                .find(|n| line.starts_with(&format!("{n}{{")))?;
            let job = line
                .split_once("lifeboat_job=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(job, _)| job.replace("\\\"", "\"").replace("\\\\", "\\"));
            Some((job, name, line.to_string()))
        })
        .collect()
}

/// Writes `<dir>/<binary>.prom`: the series of `samples`' jobs replaced, every other job's
/// kept; a temporary file renamed over the old one, so the collector never reads half a file.
pub fn write_textfile(dir: &Path, binary: &str, samples: &[Sample]) -> std::io::Result<()> {
    let path = dir.join(format!("{binary}.prom"));
    let touched: BTreeSet<&str> = samples.iter().map(|s| s.job.as_str()).collect();
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (job, name, line) in existing_lines(&old) {
        if job.as_deref().is_some_and(|j| touched.contains(j)) {
            continue;
        }
        by_name.entry(name).or_default().push(line);
    }
    for sample in samples {
        by_name.entry(sample.name).or_default().push(sample.line());
    }
    let mut text = String::new();
    for (name, kind, help) in FAMILIES {
        let Some(lines) = by_name.get_mut(name) else {
            continue;
        };
        lines.sort();
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for line in lines.iter() {
            text.push_str(line);
            text.push('\n');
        }
    }
    let temp = dir.join(format!(".{binary}.prom.{}", std::process::id()));
    let written = std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Pushes each job's samples to the Pushgateway, grouped by `job=<binary>` and
/// `lifeboat_job=<job>` (a PUT replaces exactly that group).
async fn push(
    gateway: &url::Url,
    binary: &str,
    samples: &[Sample],
) -> std::result::Result<(), String> {
    let client = super::notify::http_client()?;
    let jobs: BTreeSet<&str> = samples.iter().map(|s| s.job.as_str()).collect();
    for job in jobs {
        let mut url = gateway.clone();
        url.path_segments_mut()
            .map_err(|()| "the Pushgateway URL cannot take a path".to_string())?
            .pop_if_empty()
            .extend(["metrics", "job", binary, "lifeboat_job", job]);
        let mine: Vec<Sample> = samples.iter().filter(|s| s.job == job).cloned().collect();
        let answer = client
            .put(url)
            .timeout(std::time::Duration::from_secs(10))
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(render(&mine))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "no answer within 10s".to_string()
                } else {
                    "cannot connect".to_string()
                }
            })?;
        if !answer.status().is_success() {
            let status = answer.status();
            let text = answer.text().await.unwrap_or_default();
            return Err(format!("it answered {status}: {}", text.trim()));
        }
    }
    Ok(())
}

/// Delivers the samples of a run wherever `[metrics]` says; failures are warnings and never
/// change the run's exit code.
pub async fn deliver(metrics: &Metrics, binary: &str, samples: &[Sample]) {
    if samples.is_empty() {
        return;
    }
    if let Some(dir) = &metrics.textfile_dir {
        if let Err(e) = write_textfile(dir, binary, samples) {
            tracing::warn!(
                "The metrics were not written to {}/{binary}.prom: {e}. The run's exit code is unchanged.",
                dir.display()
            );
        }
    }
    if let Some(gateway) = &metrics.pushgateway {
        if let Err(e) = push(gateway, binary, samples).await {
            tracing::warn!(
                "The metrics were not pushed to the Pushgateway at {}://{}: {e}. The run's exit code is unchanged.",
                gateway.scheme(),
                gateway.host_str().unwrap_or("?")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_textfile_keeps_other_jobs_and_replaces_the_touched_ones() {
        let dir = std::env::temp_dir().join(format!("lifeboat-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = vec![
            Sample::new("lifeboat_last_run_success", "a", 1.0),
            Sample::new("lifeboat_last_run_success", "b", 1.0),
        ];
        write_textfile(&dir, "lifeboat-backup", &first).unwrap();
        write_textfile(
            &dir,
            "lifeboat-backup",
            &[Sample::new("lifeboat_last_run_success", "b", 0.0)],
        )
        .unwrap();
        let text = std::fs::read_to_string(dir.join("lifeboat-backup.prom")).unwrap();
        assert!(
            text.contains("lifeboat_last_run_success{lifeboat_job=\"a\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_last_run_success{lifeboat_job=\"b\"} 0\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE lifeboat_last_run_success gauge")
                .count(),
            1,
            "{text}"
        );
        assert!(!text.contains("{lifeboat_job=\"b\"} 1"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
