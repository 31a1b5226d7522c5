//! The disaster-recovery report of a verify run (`lifeboat-verify --report FILE`): for every
//! job, the snapshot checked and its consistent-at time, the measured restore time against the
//! RTO, the data's age against the RPO, the fingerprint comparison, and the history of earlier
//! verifications; as Markdown, JSON, or one self-contained HTML page (inline SVG charts, no
//! scripts or fonts from elsewhere) for an auditor. A copy is kept in the repository under
//! `reports/<job>/`, beside the backups it is evidence for.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::human::{bytes, duration, seconds};
use crate::catalog::{self, SnapshotId};
use crate::error::{Error, Result};
use crate::store::{ObjectKey, Store};
use crate::verify::{self, Target, VerifyReport};

/// The report's file format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.md`
    Markdown,
    /// `.json`
    Json,
    /// `.html`
    Html,
}

impl Format {
    /// The format `path`'s extension names.
    pub fn of(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("md") => Ok(Format::Markdown),
            Some("json") => Ok(Format::Json),
            Some("html" | "htm") => Ok(Format::Html),
            _ => Err(Error::config(format!(
                "--report {}: the file name must end in .md, .json or .html",
                path.display()
            ))),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Markdown => "md",
            Format::Json => "json",
            Format::Html => "html",
        }
    }
}

/// A whole report.
#[derive(Debug, Serialize)]
pub struct DrReport {
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// The verification level of the run (`drill` measures the RTO).
    pub level: String,
    /// One section per job.
    pub jobs: Vec<JobReport>,
}

/// One job's section.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The job.
    pub job: String,
    /// Everything passed, and no target was missed.
    pub ok: bool,
    /// The newest snapshot checked.
    pub snapshot: Option<SnapshotId>,
    /// Its consistent-at time.
    pub consistent_at: Option<DateTime<Utc>>,
    /// The drill's restore time (the measured RTO).
    pub restore_secs: Option<f64>,
    /// The RTO against the restore time.
    pub rto: Option<Target>,
    /// The RPO against the data's age.
    pub rpo: Option<Target>,
    /// `match`, the differences found, or what was not compared.
    pub fingerprint: String,
    /// Earlier verifications, newest first.
    pub history: Vec<verify::SnapshotCheck>,
    /// The job's snapshots over time (for the charts), oldest first.
    pub snapshots: Vec<SnapshotPoint>,
}

/// One snapshot in the charts.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotPoint {
    /// Its consistent-at time.
    pub consistent_at: DateTime<Utc>,
    /// Bytes stored.
    pub stored_size: u64,
    /// How long its backup took.
    pub backup_secs: f64,
}

/// One job's section from its verify report and the repository (manifests and records).
pub async fn job_report<S: Store>(store: &S, report: &VerifyReport) -> Result<JobReport> {
    let newest = report.checks.iter().max_by_key(|c| c.consistent_at);
    let listing = catalog::list_snapshots(store, &report.job).await?;
    let mut history = verify::records(store, &report.job).await?;
    history.reverse();
    let fingerprint = match newest {
        None => "no snapshot was checked".to_string(),
        Some(c) if c.level != verify::Level::Drill => {
            format!(
                "not compared (level {}; a drill compares it)",
                c.level.as_str()
            )
        }
        Some(c) if c.findings.is_empty() => "match".to_string(),
        Some(c) => c.findings.join("; "),
    };
    Ok(JobReport {
        job: report.job.clone(),
        ok: report.failure().is_none() && !report.targets.missed(),
        snapshot: newest.map(|c| c.snapshot.clone()),
        consistent_at: newest.map(|c| c.consistent_at),
        restore_secs: newest.and_then(|c| c.restore_secs),
        rto: report.targets.rto.clone(),
        rpo: report.targets.rpo.clone(),
        fingerprint,
        history,
        snapshots: listing
            .snapshots
            .iter()
            .map(|m| SnapshotPoint {
                consistent_at: m.consistent_at,
                stored_size: m.object.stored_size,
                backup_secs: (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0,
            })
            .collect(),
    })
}

/// The report as text in `format`.
pub fn render(report: &DrReport, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default(),
        Format::Markdown => markdown(report),
        Format::Html => html(report),
    }
}

fn target_text(target: &Option<Target>) -> (String, String, &'static str) {
    match target {
        None => ("-".into(), "-".into(), "no target"),
        Some(t) => (
            duration(t.target_secs as i64),
            t.measured_secs
                .map_or_else(|| "not measured".to_string(), seconds),
            match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            },
        ),
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn markdown(report: &DrReport) -> String {
    let mut out = format!(
        "# Lifeboat DR report\n\nGenerated {} (verify level {}).\n\n| job | result | snapshot | consistent at | RTO target | restore took | RTO | RPO target | data age | RPO |\n|---|---|---|---|---|---|---|---|---|---|\n",
        time(&report.generated_at),
        report.level
    );
    for j in &report.jobs {
        let (rto_t, rto_m, rto_r) = target_text(&j.rto);
        let (rpo_t, rpo_m, rpo_r) = target_text(&j.rpo);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {rto_t} | {rto_m} | {rto_r} | {rpo_t} | {rpo_m} | {rpo_r} |",
            j.job,
            if j.ok { "pass" } else { "FAIL" },
            j.snapshot.as_ref().map_or("-", |s| s.as_str()),
            j.consistent_at.as_ref().map_or_else(|| "-".into(), time),
        );
    }
    for j in &report.jobs {
        let _ = writeln!(out, "\n## {}\n\nFingerprint: {}.\n", j.job, j.fingerprint);
        out.push_str(
            "| checked at | snapshot | level | result | restore |\n|---|---|---|---|---|\n",
        );
        for c in &j.history {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                time(&c.checked_at),
                c.snapshot,
                c.level.as_str(),
                if c.ok { "ok" } else { "failed" },
                c.restore_secs
                    .map_or_else(|| "-".into(), |s| format!("{s:.1}s"))
            );
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart of `points` (x: time, y: value) as inline SVG, with its maximum labelled.
fn chart(title: &str, points: &[(DateTime<Utc>, f64)], label: impl Fn(f64) -> String) -> String {
    let (w, h, pad) = (480.0, 140.0, 28.0);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        escape(title),
        escape(title)
    );
    if points.is_empty() {
        svg.push_str("<text x=\"10\" y=\"70\">no data yet</text></svg></figure>");
        return svg;
    }
    let t0 = points
        .iter()
        .map(|p| p.0)
        .min()
        .unwrap_or_default()
        .timestamp() as f64;
    let t1 = points
        .iter()
        .map(|p| p.0)
        .max()
        .unwrap_or_default()
        .timestamp() as f64;
    let max = points
        .iter()
        .map(|p| p.1)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let x = |t: DateTime<Utc>| {
        if t1 > t0 {
            pad + (t.timestamp() as f64 - t0) / (t1 - t0) * (w - 2.0 * pad)
        } else {
            w / 2.0
        }
    };
    let y = |v: f64| h - pad - v / max * (h - 2.0 * pad);
    let path: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect();
    let _ = write!(
        svg,
        "<line x1=\"{pad}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#999\"/>\
         <polyline fill=\"none\" stroke=\"#2a6fdb\" stroke-width=\"2\" points=\"{2}\"/>",
        h - pad,
        w - pad,
        path.join(" ")
    );
    for (t, v) in points {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#2a6fdb\"/>",
            x(*t),
            y(*v)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{pad}\" y=\"14\" font-size=\"11\">max {}</text></svg></figure>",
        escape(&label(max))
    );
    svg
}

fn html(report: &DrReport) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Lifeboat DR report</title>\
         <style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.pass{color:#1a7f37}.fail{color:#c62828;font-weight:bold}\
         figure{display:inline-block;margin:0 1em 1em 0}figcaption{font-size:13px}</style></head><body>\n",
    );
    let _ = writeln!(
        out,
        "<h1>Lifeboat DR report</h1><p>Generated {} (verify level {}).</p>",
        escape(&time(&report.generated_at)),
        escape(&report.level)
    );
    out.push_str("<table><tr><th>job</th><th>result</th><th>snapshot</th><th>consistent at</th><th>RTO target</th><th>restore took</th><th>RTO</th><th>RPO target</th><th>data age</th><th>RPO</th></tr>\n");
    for j in &report.jobs {
        let (rto_t, rto_m, rto_r) = target_text(&j.rto);
        let (rpo_t, rpo_m, rpo_r) = target_text(&j.rpo);
        let class = |r: &str| if r == "MISSED" { "fail" } else { "pass" };
        let _ = writeln!(
            out,
            "<tr data-job=\"{job}\"><td>{job}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{rto_t}</td><td>{rto_m}</td><td class=\"{}\">{rto_r}</td><td>{rpo_t}</td><td>{rpo_m}</td><td class=\"{}\">{rpo_r}</td></tr>",
            if j.ok { "pass" } else { "fail" },
            if j.ok { "pass" } else { "FAIL" },
            escape(j.snapshot.as_ref().map_or("-", |s| s.as_str())),
            escape(&j.consistent_at.as_ref().map_or_else(|| "-".into(), time)),
            class(rto_r),
            class(rpo_r),
            job = escape(&j.job),
        );
    }
    out.push_str("</table>\n");
    for j in &report.jobs {
        let _ = writeln!(
            out,
            "<section id=\"job-{}\"><h2>{}</h2><p>Fingerprint: {}.</p>",
            escape(&j.job),
            escape(&j.job),
            escape(&j.fingerprint)
        );
        let sizes: Vec<_> = j
            .snapshots
            .iter()
            .map(|s| (s.consistent_at, s.stored_size as f64))
            .collect();
        let backups: Vec<_> = j
            .snapshots
            .iter()
            .map(|s| (s.consistent_at, s.backup_secs))
            .collect();
        let drills: Vec<_> = j
            .history
            .iter()
            .rev()
            .filter_map(|c| c.restore_secs.map(|r| (c.checked_at, r)))
            .collect();
        out.push_str(&chart("Stored size of each snapshot", &sizes, |v| {
            bytes(v as u64)
        }));
        out.push_str(&chart("Backup duration", &backups, |v| format!("{v:.1}s")));
        out.push_str(&chart("Drill restore time", &drills, |v| {
            format!("{v:.1}s")
        }));
        out.push_str("<table><tr><th>checked at</th><th>snapshot</th><th>level</th><th>result</th><th>restore</th></tr>\n");
        for c in &j.history {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                escape(&time(&c.checked_at)),
                escape(c.snapshot.as_str()),
                c.level.as_str(),
                if c.ok { "pass" } else { "fail" },
                if c.ok { "ok" } else { "failed" },
                c.restore_secs
                    .map_or_else(|| "-".into(), |s| format!("{s:.1}s"))
            );
        }
        out.push_str("</table></section>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// Writes the DR report of a verify run's `reports` to `path` (beside it first, then renamed
/// into place) and keeps each job's section in the repository; returns the keys kept.
pub async fn write<S: Store>(
    store: &S,
    reports: &[VerifyReport],
    level: verify::Level,
    path: &Path,
    format: Format,
) -> Result<Vec<String>> {
    let mut jobs = Vec::new();
    for report in reports {
        jobs.push(job_report(store, report).await?);
    }
    let report = DrReport {
        generated_at: Utc::now(),
        level: level.as_str().to_string(),
        jobs,
    };
    let temp = path.with_file_name(format!(
        ".{}.lifeboat-tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&temp, render(&report, format))
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            Error::new(
                crate::error::ErrorKind::Store,
                format!("cannot write the report {}: {e}", path.display()),
            )
            .with_hint("check that its directory exists and is writable")
        })?;
    keep(store, &report, format).await
}

pub use crate::catalog::reports_prefix;

/// Keeps each job's section in the repository: `reports/<job>/<time>.<ext>`.
pub async fn keep<S: Store>(store: &S, report: &DrReport, format: Format) -> Result<Vec<String>> {
    let mut kept = Vec::new();
    for job in &report.jobs {
        let single = DrReport {
            generated_at: report.generated_at,
            level: report.level.clone(),
            jobs: vec![job.clone()],
        };
        let key = ObjectKey::new(format!(
            "{}{}.{}",
            reports_prefix(&job.job),
            report.generated_at.format("%Y%m%dT%H%M%SZ"),
            format.extension()
        ))?;
        store.put(&key, render(&single, format).as_bytes()).await?;
        kept.push(key.to_string());
    }
    Ok(kept)
}
