//! `lifeboat-verify`: parse flags, verify each job, print findings, exit 0/1/3/5.

mod args;

use std::process::ExitCode;

use args::VerifyArgs;
use clap::Parser;
use lifeboat_cli::{print_json, report_error, usage};
use lifeboat_core::catalog::{self, SnapshotId};
use lifeboat_core::config::{self, Config};
use lifeboat_core::report::{metrics, notify};
use lifeboat_core::secret::SecretUrl;
use lifeboat_core::sink::Scratch;
use lifeboat_core::verify::{verify, VerifyOptions, Which};
use lifeboat_core::{Error, ErrorKind, Result};

fn main() -> ExitCode {
    let args = VerifyArgs::parse();
    if let Some(code) = lifeboat_cli::print_docs::<VerifyArgs>(&args.common) {
        return ExitCode::from(code as u8);
    }
    lifeboat_cli::init_logging(&args.common);
    let json = args.common.json;
    let code = match lifeboat_cli::runtime() {
        Ok(rt) => rt.block_on(async {
            match lifeboat_cli::until_signal(run(&args)).await {
                Ok(code) => code,
                Err(e) => report_error(&e, json),
            }
        }),
        Err(e) => report_error(
            &Error::store(format!("cannot start the async runtime: {e}")),
            json,
        ),
    };
    ExitCode::from(code as u8)
}

async fn run(args: &VerifyArgs) -> Result<i32> {
    // A report that cannot be written is refused before anything is verified.
    let report_format = args
        .report
        .as_deref()
        .map(lifeboat_core::report::dr::Format::of)
        .transpose()?;
    let config = lifeboat_cli::load_config(&args.common)?;
    let store = lifeboat_cli::open_repository(&args.common, config.as_ref()).await?;
    let jobs = jobs_to_verify(args, config.as_ref(), &store).await?;
    let which = match (&args.snapshot, args.all) {
        (Some(id), _) => Which::Id(id.parse::<SnapshotId>().map_err(usage)?),
        (None, true) => Which::All,
        (None, false) => Which::Latest,
    };
    let scratch_url = lifeboat_cli::url_flag(
        args.scratch_url.as_deref(),
        args.scratch_url_env.as_deref(),
        "scratch-url",
    )?;
    let scratch_url = scratch_url
        .as_deref()
        .map(SecretUrl::parse)
        .transpose()
        .map_err(|e| usage(format!("--scratch-url: {e}")))?;
    let flag_max_age = args
        .max_age
        .as_deref()
        .map(config::parse_duration)
        .transpose()
        .map_err(|e| usage(format!("--max-age: {e}")))?;

    let mut worst: Option<ErrorKind> = None;
    let mut reports = Vec::new();
    let (notifiers, metrics) = config
        .as_ref()
        .map(|c| (c.notifiers.clone(), c.metrics.clone()))
        .unwrap_or_default();
    let mut samples = Vec::new();
    for job in &jobs {
        notify::started(&notifiers, job).await;
        // The freshness limit: --max-age, else the job's max-age, else what its schedule
        // implies (twice its longest interval plus an hour), said in the report.
        let configured = config
            .as_ref()
            .and_then(|c| c.jobs.iter().find(|j| &j.name == job));
        let now = chrono::Utc::now();
        let (max_age, max_age_from) = match (flag_max_age, configured) {
            (Some(d), _) => (Some(d), "--max-age".to_string()),
            (None, Some(j)) if j.max_age.is_some() => (j.max_age, "the job's max-age".to_string()),
            (None, Some(j)) if j.rpo.is_some() => (j.rpo, "the job's rpo".to_string()),
            (None, Some(j)) => match &j.schedule {
                Some(s) => {
                    let limit = s.freshness_limit(now);
                    (
                        limit.to_std().ok(),
                        format!(
                            "the schedule {}: twice its longest interval of {} plus an hour",
                            s.describe(),
                            lifeboat_core::retention::format_duration(
                                s.longest_interval(now).to_std().unwrap_or_default()
                            )
                        ),
                    )
                }
                None => (None, String::new()),
            },
            (None, None) => (None, String::new()),
        };
        let pg_bin_dir = args.pg_bin_dir.clone().or_else(|| {
            config
                .as_ref()
                .and_then(|c| c.jobs.iter().find(|j| &j.name == job))
                .and_then(|j| j.engine.pg_bin_dir())
        });
        let options = VerifyOptions {
            level: args.level,
            which: which.clone(),
            scratch: Scratch {
                url: scratch_url.clone().or_else(|| {
                    config
                        .as_ref()
                        .and_then(|c| c.drill_runs.as_ref())
                        .and_then(|d| d.scratch_url.clone())
                }),
                dir: args.scratch_dir.clone(),
                pg_bin_dir,
            },
            max_age,
            max_age_from,
            rto: configured.and_then(|j| j.rto),
            rpo: configured.and_then(|j| j.rpo),
            fail_on_target: args.fail_on_target,
            now,
            record: !args.no_record,
            keys: args.keys.keys(config.as_ref(), Some(job))?,
        };
        let progress = lifeboat_cli::progress::Progress::start(&args.common, "verify", job);
        let verified = verify(&store, job, &options).await;
        drop(progress);
        // Every verify run of a job is news: a breached freshness limit (exit 5) or a damaged
        // snapshot (exit 3) must reach a person, and so must a verify that could not run.
        let (exit_code, report_json, text) = match &verified {
            Ok(report) => (
                report.failure().map_or(0, ErrorKind::exit_code),
                serde_json::to_value(report).unwrap_or_default(),
                lifeboat_core::report::human::verify(report),
            ),
            Err(e) => (
                e.exit_code(),
                serde_json::json!({"ok": false, "job": job, "error": {"kind": e.kind().as_str(), "message": e.message(), "hint": e.hint()}}),
                format!(
                    "error: {}\n{}",
                    e.message(),
                    e.hint()
                        .map(|h| format!("  hint: {h}\n"))
                        .unwrap_or_default()
                ),
            ),
        };
        let outcome = notify::RunOutcome {
            binary: "lifeboat-verify",
            job,
            exit_code,
            report: report_json,
            text,
        };
        notify::finished(&notifiers, &outcome).await;
        if !metrics.is_empty() {
            let run = metrics::RunMetrics {
                ended: chrono::Utc::now(),
                success: exit_code == 0,
                backup_secs: None,
                snapshot_age: true,
            };
            samples.extend(metrics::job_samples(&store, job, &run).await);
        }
        let report = match verified {
            Ok(report) => report,
            Err(e) => {
                metrics::deliver(&metrics, "lifeboat-verify", &samples).await;
                return Err(e);
            }
        };
        if !args.common.json {
            print!("{}", outcome.text);
        }
        if let Some(kind) = report.failure() {
            worst = Some(match worst {
                Some(w) if rank(w) >= rank(kind) => w,
                _ => kind,
            });
        }
        reports.push(report);
    }
    metrics::deliver(&metrics, "lifeboat-verify", &samples).await;
    if let (Some(path), Some(format)) = (&args.report, report_format) {
        write_report(&store, &reports, args, path, format).await?;
    }
    if args.common.json {
        print_json(&serde_json::json!({"ok": worst.is_none(), "jobs": reports}));
    }
    Ok(worst.map_or(0, ErrorKind::exit_code))
}

/// `--report FILE`: the DR report of this run, written beside FILE and renamed into place, and
/// each job's section kept in the repository.
async fn write_report(
    store: &lifeboat_core::store::AnyStore,
    reports: &[lifeboat_core::verify::VerifyReport],
    args: &VerifyArgs,
    path: &std::path::Path,
    format: lifeboat_core::report::dr::Format,
) -> Result<()> {
    use lifeboat_core::report::dr;
    let mut jobs = Vec::new();
    for report in reports {
        jobs.push(dr::job_report(store, report).await?);
    }
    let report = dr::DrReport {
        generated_at: chrono::Utc::now(),
        level: args.level.as_str().to_string(),
        jobs,
    };
    let text = dr::render(&report, format);
    let temp = path.with_file_name(format!(
        ".{}.lifeboat-tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            Error::new(
                ErrorKind::Store,
                format!("cannot write the report {}: {e}", path.display()),
            )
            .with_hint("check that its directory exists and is writable")
        })?;
    let kept = dr::keep(store, &report, format).await?;
    if !args.common.json {
        println!(
            "Wrote the DR report {} (kept in the repository as {}).",
            path.display(),
            kept.join(", ")
        );
    }
    Ok(())
}

/// Which failure decides the exit code when jobs fail differently.
fn rank(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Integrity => 3,
        ErrorKind::Freshness => 2,
        _ => 1,
    }
}

async fn jobs_to_verify(
    args: &VerifyArgs,
    config: Option<&Config>,
    store: &lifeboat_core::store::AnyStore,
) -> Result<Vec<String>> {
    if !args.job.is_empty() {
        for j in &args.job {
            lifeboat_cli::known_job(store, config, j).await?;
        }
        return Ok(args.job.clone());
    }
    if let Some(c) = config {
        if !c.jobs.is_empty() {
            return Ok(c.jobs.iter().map(|j| j.name.clone()).collect());
        }
    }
    let jobs = catalog::list_jobs(store).await?;
    if jobs.is_empty() {
        return Err(Error::not_found("the repository holds no jobs yet")
            .with_hint("run lifeboat-backup first"));
    }
    Ok(jobs)
}
