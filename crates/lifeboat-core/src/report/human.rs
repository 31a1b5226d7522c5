//! Reports as text for a terminal or a cron mail: one `String` per report, so the binaries
//! only print.

use std::fmt::Write as _;

pub use crate::text::{bytes, counted};

use super::JobStatus;
use crate::backup::BackupReport;
use crate::pipeline::Compression;
use crate::prune::PruneReport;
use crate::restore::system::{Missing, Outcome, SystemPlan, SystemReport};
use crate::restore::{RestorePlan, RestoreReport, FROM_FILE};
use crate::verify::VerifyReport;

/// `45s`, `12m`, `3h05m`, `2d04h`.
pub fn duration(secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    match (d, h) {
        (0, 0) if secs < 60 => format!("{secs}s"),
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

/// `0.6s`, `42.0s`, then as [`duration`].
pub fn seconds(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        duration(secs.round() as i64)
    }
}

fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn compression_name(c: &Compression) -> &'static str {
    match c {
        Compression::Zstd { .. } => "zstd",
        Compression::Gzip { .. } => "gzip",
        Compression::None => "none",
    }
}

/// `zstd level 3`, `gzip level 6`, `uncompressed`.
pub fn compression(c: &Compression) -> String {
    match c {
        Compression::Zstd {
            levels_used: Some((low, high)),
            ..
        } if low != high => format!("zstd levels {low}-{high} (adaptive)"),
        Compression::Zstd {
            levels_used: Some((level, _)),
            ..
        }
        | Compression::Zstd { level, .. } => format!("zstd level {level}"),
        Compression::Gzip { level } => format!("gzip level {level}"),
        Compression::None => "uncompressed".into(),
    }
}

/// The lines after a committed backup.
pub fn backup(r: &BackupReport, store: &str) -> String {
    let mut out = format!(
        "Snapshot {} of job {:?} committed to {store}: {}; raw {} -> stored {} ({}) in {:.1}s; consistent at {}.\n  raw {:<9} {}\n  stored sha256 {}\n",
        r.snapshot,
        r.job,
        r.contents,
        bytes(r.raw_size),
        bytes(r.stored_size),
        compression(&r.compression),
        r.duration_secs,
        rfc3339(&r.consistent_at),
        r.raw_digest.algorithm().field_name(),
        r.raw_digest.digest(),
        r.stored_sha256
    );
    if let Some(encryption) = &r.encryption {
        let _ = writeln!(
            out,
            "  encrypted     age, to {}",
            match encryption {
                crate::pipeline::EncryptionInfo::Age { recipients } => recipients.join(", "),
                crate::pipeline::EncryptionInfo::AgePassphrase { .. } => "the passphrase".into(),
            }
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    out
}

/// What a prune did (or, in a dry run, would do).
pub fn prune(report: &PruneReport) -> String {
    let mut out = String::new();
    let kept = report.plan.kept().count();
    if report.dry_run {
        let _ = writeln!(
            out,
            "Dry run: job {:?} would keep {kept} and forget {}; nothing was changed.",
            report.job,
            counted(report.plan.forgotten().count() as u64, "snapshot")
        );
    } else {
        let forgotten = if report.forgotten.is_empty() {
            String::new()
        } else {
            let ids: Vec<&str> = report.forgotten.iter().map(|i| i.as_str()).collect();
            format!(" ({})", ids.join(", "))
        };
        let _ = writeln!(
            out,
            "Pruned job {:?} with {}: kept {kept}, forgot {}{forgotten}.",
            report.job,
            report.plan.policy,
            report.forgotten.len(),
        );
        if !report.orphans_removed.is_empty() {
            let _ = writeln!(
                out,
                "  removed {} of interrupted runs",
                counted(report.orphans_removed.len() as u64, "leftover object")
            );
        }
    }
    if !report.reports_removed.is_empty() {
        let _ = writeln!(
            out,
            "  {} {} older than the report retention ([defaults] report-keep-days)",
            if report.dry_run {
                "would remove"
            } else {
                "removed"
            },
            counted(report.reports_removed.len() as u64, "DR report")
        );
    }
    for p in &report.protected {
        let _ = writeln!(
            out,
            "  kept {} although the policy forgets it: {} is protected by {}",
            p.id, p.object, p.protection
        );
    }
    if !report.dry_run {
        for d in &report.damaged {
            let _ = writeln!(
                out,
                "  not touched (unreadable manifest): {}: {}",
                d.key, d.error
            );
        }
    }
    out
}

/// The plan shown before a restore (and all a dry run shows).
pub fn restore_plan(plan: &RestorePlan) -> String {
    let m = &plan.snapshot;
    let product = plan.product;
    let mut out = String::from("Restore plan:\n");
    if plan.job == FROM_FILE {
        let _ = writeln!(
            out,
            "  file           {} ({}, {product})",
            m.source.url, m.dump_format
        );
    } else {
        let _ = writeln!(out, "  job            {}", plan.job);
        let _ = writeln!(out, "  snapshot       {} ({})", m.id, m.dump_format);
        let _ = writeln!(out, "  consistent at  {}", rfc3339(&m.consistent_at));
        let _ = writeln!(
            out,
            "  source         {} ({product}{}{})",
            m.source.url,
            if m.source.server_version.is_empty() {
                ""
            } else {
                " "
            },
            m.source.server_version
        );
    }
    let _ = writeln!(
        out,
        "  size           {} stored, {} raw",
        bytes(m.object.stored_size),
        bytes(m.object.raw_size)
    );
    if let Some(encryption) = &m.encryption {
        let _ = writeln!(
            out,
            "  encrypted      age, {} (the identity given opens it)",
            encryption.summary()
        );
    }
    let _ = writeln!(
        out,
        "  target         {} ({})",
        plan.target, plan.sink.target_state.server_version
    );
    for (label, text) in &plan.sink.notes {
        let _ = writeln!(out, "  {label:<14} {text}");
    }
    for w in &m.warnings {
        let _ = writeln!(out, "  warning        {w}");
    }
    if let Some(consent) = plan.needs_consent() {
        let _ = writeln!(out, "  WARNING        {consent}");
    }
    out
}

/// A whole-system restore's plan: one line per job in restore order, the skew between them,
/// the jobs missing, then each job's own plan.
pub fn system_plan(plan: &SystemPlan) -> String {
    let mut out = format!(
        "Whole-system restore plan ({}), in this order:\n",
        plan.selector
    );
    for (i, step) in plan.steps.iter().enumerate() {
        let p = &step.plan;
        let _ = writeln!(
            out,
            "  {}. {:<16} {:<10} snapshot {} consistent at {} -> {}",
            i + 1,
            p.job,
            p.product,
            p.snapshot.id,
            rfc3339(&p.snapshot.consistent_at),
            p.target
        );
    }
    let skew = plan.skew().num_seconds();
    let _ = writeln!(
        out,
        "  skew: {} between the oldest and the newest consistent-at",
        duration(skew)
    );
    for m in &plan.missing {
        let _ = writeln!(
            out,
            "  MISSING {}: {} (--allow-missing: not restored)",
            m.job, m.reason
        );
    }
    for step in &plan.steps {
        out.push('\n');
        out.push_str(&restore_plan(&step.plan));
    }
    out
}

/// Every job's outcome of a whole-system restore.
pub fn system_report(report: &SystemReport, missing: &[Missing]) -> String {
    let mut out = String::new();
    for outcome in &report.outcomes {
        match outcome {
            Outcome::Restored { job, report } => {
                let _ = writeln!(out, "ok          {job}: {}", restore_done(report));
            }
            Outcome::Failed { job, message, .. } => {
                let _ = writeln!(
                    out,
                    "FAILED      {job}: {message} (its target was left as it was)"
                );
            }
            Outcome::NotStarted { job } => {
                let _ = writeln!(out, "not started {job}: an earlier job failed");
            }
        }
    }
    for m in missing {
        let _ = writeln!(out, "missing     {}: no snapshot to restore", m.job);
    }
    out
}

/// What a copy of one job did.
pub fn copy(report: &crate::copy::CopyReport) -> String {
    let verb = if report.dry_run {
        "Would copy"
    } else {
        "Copied"
    };
    let mut out = format!(
        "{verb} {} ({}) of job {:?} to {}; {} already there.\n",
        counted(report.copied.len() as u64, "snapshot"),
        bytes(report.bytes),
        report.job,
        report.to,
        report.already_there
    );
    for d in &report.damaged {
        let _ = writeln!(out, "  not copied, DAMAGED {}: {}", d.key, d.error);
    }
    for n in &report.not_copied {
        let _ = writeln!(out, "  not copied, DAMAGED snapshot {}: {}", n.id, n.error);
    }
    out
}

/// The line after a restore succeeded.
pub fn restore_done(report: &RestoreReport) -> String {
    let mut out = if report.job == FROM_FILE {
        format!(
            "Restored {} into {}: {} read, {} applied, in {:.1}s.",
            report.snapshot_source,
            report.target,
            bytes(report.stored_bytes),
            bytes(report.raw_bytes),
            report.duration_secs
        )
    } else {
        format!(
            "Restored snapshot {} (consistent at {}) into {}: {} read, {} applied, both digests verified, in {:.1}s.",
            report.snapshot,
            rfc3339(&report.consistent_at),
            report.target,
            bytes(report.stored_bytes),
            bytes(report.raw_bytes),
            report.duration_secs
        )
    };
    for note in &report.notes {
        let _ = write!(out, "\n  {note}");
    }
    out
}

/// A job's snapshots, newest first (`lifeboat-restore list`).
pub fn job_status(status: &JobStatus) -> String {
    let mut out = String::new();
    let n = status.snapshots.len();
    let _ = writeln!(
        out,
        "Job {:?} ({n} snapshot{}; retention: {}{}):",
        status.job,
        if n == 1 { "" } else { "s" },
        status.retention.as_deref().unwrap_or("none configured"),
        match (&status.schedule, &status.next_run) {
            (Some(s), Some(next)) => format!("; schedule {s}, next run {}", rfc3339(next)),
            _ => String::new(),
        }
    );
    if let Some(due) = &status.overdue_since {
        let _ = writeln!(
            out,
            "  OVERDUE: a run was due at {} and no snapshot has been committed since; check the \
             backup's logs and its timer or crontab",
            rfc3339(due)
        );
    }
    // As wide as the longest format named (`mongodump_archive`), at least 10.
    let format_width = status
        .snapshots
        .iter()
        .map(|s| s.summary.dump_format.len())
        .max()
        .unwrap_or(0)
        .max(10);
    let _ = writeln!(
        out,
        "  {:<24} {:<21} {:<format_width$} {:>10} {:>10} {:<6} {:<22} POLICY",
        "ID", "CONSISTENT AT", "FORMAT", "STORED", "RAW", "COMP", "VERIFIED"
    );
    for s in &status.snapshots {
        let m = &s.summary;
        let verified = s.verified.as_ref().map_or_else(
            || "-".to_string(),
            |v| {
                format!(
                    "{} {} {}",
                    if v.ok { "ok" } else { "failed" },
                    if v.keyless {
                        "keyless"
                    } else {
                        v.level.as_str()
                    },
                    v.at.format("%Y-%m-%d %H:%M")
                )
            },
        );
        let policy = s.policy.as_ref().map_or_else(
            || "-".to_string(),
            |d| {
                if d.keep {
                    format!("keep: {}", d.reasons.join(", "))
                } else {
                    "forget".to_string()
                }
            },
        );
        let _ = writeln!(
            out,
            "  {:<24} {:<21} {:<format_width$} {:>10} {:>10} {:<6} {:<22} {policy}",
            m.id.as_str(),
            m.consistent_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            m.dump_format,
            bytes(m.stored_size),
            bytes(m.raw_size),
            compression_name(&m.compression),
            verified,
        );
        if let Some(encryption) = &m.encryption {
            let _ = writeln!(out, "    encrypted, restore needs {}", encryption.needs());
        }
        if let Some(pin) = &s.pin {
            let _ = writeln!(
                out,
                "    {} (by {} at {}); retention keeps it until `lifeboat-backup unpin {} {}`",
                pin.describe(),
                pin.pinned_by,
                pin.pinned_at.format("%Y-%m-%d %H:%M"),
                status.job,
                m.id
            );
        }
    }
    for d in &status.damaged {
        let _ = writeln!(out, "  DAMAGED {}: {}", d.key, d.error);
    }
    out
}

/// A verify run of one job: a line per snapshot checked, its findings, and freshness.
pub fn verify(report: &VerifyReport) -> String {
    let mut out = String::new();
    if report.checks.is_empty() {
        let _ = writeln!(out, "Job {:?}: no snapshots to verify.", report.job);
    }
    for c in &report.checks {
        let status = if c.ok {
            "ok"
        } else if c.damaged {
            "DAMAGED"
        } else {
            "FAILED"
        };
        let restore = c
            .restore_secs
            .map(|s| format!(", restore took {s:.1}s"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{status:7} {} job {:?} snapshot {} (consistent at {}) level {} in {:.1}s{restore}",
            if c.ok { "✓" } else { "✗" },
            report.job,
            c.snapshot,
            rfc3339(&c.consistent_at),
            c.level.as_str(),
            c.duration_secs,
        );
        if c.keyless && c.ok {
            let _ = writeln!(
                out,
                "        keyless: the stored SHA-256, the size and the age header match; the raw digest \
                 and the dump's structure need the identity (--identity FILE)"
            );
        }
        for f in &c.findings {
            let _ = writeln!(out, "        - {f}");
        }
    }
    for d in &report.damaged_manifests {
        let _ = writeln!(
            out,
            "DAMAGED ✗ job {:?}: {}: {}",
            report.job, d.key, d.error
        );
    }
    if let Some(f) = &report.freshness {
        let _ = match (&f.newest_good, f.age_secs) {
            (Some(id), Some(age)) => writeln!(
                out,
                "{} job {:?}: newest good snapshot {id} is {} old (max {}, from {})",
                if f.ok { "fresh  " } else { "STALE  " },
                report.job,
                duration(age),
                duration(f.max_age_secs as i64),
                f.limit_from
            ),
            _ => writeln!(
                out,
                "STALE   job {:?}: no good snapshot was found (max age {}, from {})",
                report.job,
                duration(f.max_age_secs as i64),
                f.limit_from
            ),
        };
    }
    for (name, what, target) in [
        ("RTO", "the drill's restore took", &report.targets.rto),
        (
            "RPO",
            "the newest good snapshot's data is",
            &report.targets.rpo,
        ),
    ] {
        let Some(t) = target else { continue };
        let goal = duration(t.target_secs as i64);
        let _ = match (t.measured_secs, t.met) {
            (Some(m), Some(met)) => writeln!(
                out,
                "{} job {:?}: {name} {goal}: {what} {}",
                if met { "met    " } else { "MISSED " },
                report.job,
                seconds(m)
            ),
            _ => writeln!(
                out,
                "target  job {:?}: {name} {goal}: not measured by this run{}",
                report.job,
                if name == "RTO" {
                    " (a drill measures it: --level drill)"
                } else {
                    ""
                }
            ),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(counted(1, "entry"), "1 entry");
        assert_eq!(counted(3, "entry"), "3 entries");
        assert_eq!(counted(2, "key"), "2 keys");
        assert_eq!(counted(0, "day"), "0 days");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3h05m");
        assert_eq!(duration(2 * 86_400 + 4 * 3600), "2d04h");
    }
}
