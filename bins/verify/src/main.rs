//! `lifeboat-verify`: parse flags, verify each job, print findings, exit 0/1/3/5.

mod args;

use std::process::ExitCode;

use args::VerifyArgs;
use clap::Parser;
use lifeboat_cli::{print_json, report_error, usage};
use lifeboat_core::catalog::{self, SnapshotId};
use lifeboat_core::config::{self, Config};
use lifeboat_core::report::news::{self, JobEnd, News};
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
    let mut scratch_urls = args.scratch_url.clone();
    for var in &args.scratch_url_env {
        scratch_urls.extend(lifeboat_cli::url_flag(None, Some(var), "scratch-url")?);
    }
    let scratch_urls = scratch_urls
        .iter()
        .map(|u| SecretUrl::parse(u))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| usage(format!("--scratch-url: {e}")))?;
    let flag_max_age = args
        .max_age
        .as_deref()
        .map(config::parse_duration)
        .transpose()
        .map_err(|e| usage(format!("--max-age: {e}")))?;

    let mut worst: Option<ErrorKind> = None;
    let mut reports = Vec::new();
    let mut news = News::new("lifeboat-verify", config.as_ref());
    for job in &jobs {
        news.started(job).await;
        let configured = config
            .as_ref()
            .and_then(|c| c.jobs.iter().find(|j| &j.name == job));
        let now = chrono::Utc::now();
        let (max_age, max_age_from) =
            lifeboat_core::verify::freshness_limit(flag_max_age, configured, now);
        let options = VerifyOptions {
            level: args.level,
            which: which.clone(),
            scratch: Scratch {
                urls: if scratch_urls.is_empty() {
                    config
                        .as_ref()
                        .and_then(|c| c.drill_runs.as_ref())
                        .and_then(|d| d.scratch_url.clone())
                        .into_iter()
                        .collect()
                } else {
                    scratch_urls.clone()
                },
                dir: args.scratch_dir.clone(),
                pg_bin_dir: args
                    .pg_bin_dir
                    .clone()
                    .or_else(|| configured.and_then(|j| j.engine.pg_bin_dir())),
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
        let end = match &verified {
            Ok(report) => JobEnd {
                job,
                exit_code: report.failure().map_or(0, ErrorKind::exit_code),
                report: serde_json::to_value(report).unwrap_or_default(),
                text: lifeboat_core::report::human::verify(report),
                backup_secs: None,
            },
            Err(e) => JobEnd {
                job,
                exit_code: e.exit_code(),
                report: serde_json::json!({"ok": false, "job": job, "error": news::error_json(e)}),
                text: news::error_text(e),
                backup_secs: None,
            },
        };
        if !args.common.json && verified.is_ok() {
            lifeboat_cli::out!("{}", end.text);
        }
        news.finished(&store, end).await;
        let report = match verified {
            Ok(report) => report,
            Err(e) => {
                news.deliver().await;
                return Err(e);
            }
        };
        if let Some(kind) = report.failure() {
            worst = Some(match worst {
                Some(w) if rank(w) >= rank(kind) => w,
                _ => kind,
            });
        }
        reports.push(report);
    }
    news.deliver().await;
    if let (Some(path), Some(format)) = (&args.report, report_format) {
        let kept =
            lifeboat_core::report::dr::write(&store, &reports, args.level, path, format).await?;
        if !args.common.json {
            lifeboat_cli::outln!(
                "Wrote the DR report {} (kept in the repository as {}).",
                path.display(),
                kept.join(", ")
            );
        }
    }
    if args.common.json {
        print_json(&serde_json::json!({"ok": worst.is_none(), "jobs": reports}));
    }
    Ok(worst.map_or(0, ErrorKind::exit_code))
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
