//! `lifeboat-backup`: parse flags, build the jobs, run them, map the outcome to an exit code.

mod args;
mod maintenance;

use std::process::ExitCode;
use std::time::Duration;

use args::{BackupArgs, BackupCommand};
use clap::Parser;
use lifeboat_cli::{print_json, report_error, usage};
use lifeboat_core::config::{self, Config, Job, OneLiner, Overrides};
use lifeboat_core::job::{self, JobOptions};
use lifeboat_core::report::{human, metrics, notify};
use lifeboat_core::store::Store;
use lifeboat_core::{Error, ErrorKind, Result};

fn main() -> ExitCode {
    let args = BackupArgs::parse();
    if let Some(code) = lifeboat_cli::print_docs::<BackupArgs>(&args.common) {
        return ExitCode::from(code as u8);
    }
    lifeboat_cli::init_logging(&args.common);
    let code = match lifeboat_cli::runtime() {
        Ok(rt) => rt.block_on(async {
            let cancel = lifeboat_cli::watch_signals();
            let done = match &args.command {
                Some(BackupCommand::Prune(p)) => {
                    lifeboat_cli::until_signal(maintenance::prune(&args, p)).await
                }
                Some(BackupCommand::Unlock(u)) => maintenance::unlock(&args, u).await,
                Some(BackupCommand::Forget(f)) => maintenance::forget(&args, f).await,
                Some(BackupCommand::Pin(p)) => maintenance::pin(&args, p).await,
                Some(BackupCommand::Unpin(u)) => maintenance::unpin(&args, u).await,
                Some(BackupCommand::Copy(c)) => {
                    lifeboat_cli::until_signal(maintenance::copy(&args, c)).await
                }
                Some(BackupCommand::Keygen(k)) => maintenance::keygen(&args, k),
                Some(BackupCommand::Schedule(s)) => maintenance::schedule(&args, s),
                Some(BackupCommand::Completions(c)) => {
                    lifeboat_cli::print_completions::<BackupArgs>(c.shell);
                    Ok(0)
                }
                None => run_jobs(&args, &cancel).await,
            };
            done.unwrap_or_else(|e| report_error(&e, args.common.json))
        }),
        Err(e) => report_error(
            &Error::store(format!("cannot start the async runtime: {e}")),
            args.common.json,
        ),
    };
    ExitCode::from(code as u8)
}

async fn run_jobs(args: &BackupArgs, cancel: &job::Cancel) -> Result<i32> {
    let json = args.common.json;
    let (config, jobs) = resolve_jobs(args)?;
    if args.print_config {
        let store = lifeboat_cli::repository_url(&args.common, config.as_ref());
        let jobs: Vec<_> = jobs.iter().map(Job::to_json).collect();
        let file = config.as_ref().and_then(|c| c.file.clone());
        let value = serde_json::json!({"file": file, "store": store, "jobs": jobs});
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(0);
    }
    let store = lifeboat_cli::open_store(&args.common, config.as_ref()).await?;
    let options = JobOptions {
        holder: lifeboat_cli::holder("lifeboat-backup"),
        leftover_grace: Duration::from_secs(args.leftover_grace_mins * 60),
        orphan_grace: Duration::from_secs(args.orphan_grace_hours * 3600),
        compression_threads: args.compression_threads,
        prune: !args.no_prune,
        // A one-liner without --job backs up into a job named for its source: that history
        // must stay one source's.
        same_source_only: args.engine.is_some() && args.job.is_none(),
        observers: Default::default(),
        report_keep: config
            .as_ref()
            .map_or_else(Default::default, |c| c.defaults.clone())
            .report_keep(),
    };
    let (mut exit, mut reports) = (0, Vec::new());
    let (notifiers, metrics) = config
        .as_ref()
        .map(|c| (c.notifiers.clone(), c.metrics.clone()))
        .unwrap_or_default();
    let mut samples = Vec::new();
    let mut interrupted = false;
    for job in &jobs {
        notify::started(&notifiers, &job.name).await;
        let started = std::time::Instant::now();
        let progress = lifeboat_cli::progress::Progress::start(&args.common, "backup", &job.name);
        let ran = job::run(&store, job, &options, &chrono::Utc::now, cancel).await;
        drop(progress);
        let (job_exit, text) = match ran {
            Ok(run) => {
                let mut text = human::backup(&run.report, &store.describe());
                run.prune
                    .iter()
                    .for_each(|p| text.push_str(&human::prune(p)));
                if !json {
                    print!("{text}");
                }
                let mut job_exit = 0;
                if let Some(e) = &run.prune_error {
                    job_exit = job_exit.max(report_error(e, false));
                    text.push_str(&error_text(e));
                }
                let (copies, copy_error) =
                    copy_after_backup(config.as_ref(), &store, &job.name).await;
                copies.iter().for_each(|c| text.push_str(&human::copy(c)));
                if !json {
                    copies.iter().for_each(|c| print!("{}", human::copy(c)));
                }
                if let Some(e) = &copy_error {
                    job_exit = job_exit.max(report_error(e, false));
                    text.push_str(&error_text(e));
                }
                exit = exit.max(job_exit);
                reports.push(serde_json::json!({
                    "ok": run.prune_error.is_none() && copy_error.is_none(),
                    "report": run.report,
                    "prune": run.prune,
                    "copies": copies,
                    "copy_error": copy_error.as_ref().map(|e| serde_json::json!({"kind": e.kind().as_str(), "message": e.message(), "hint": e.hint()})),
                }));
                (job_exit, text)
            }
            Err(e) => {
                let code = report_error(&e, false);
                reports.push(serde_json::json!({"ok": false, "job": job.name,
                    "error": {"kind": e.kind().as_str(), "message": e.message(), "hint": e.hint()}}));
                exit = if exit == 0 { code } else { exit };
                interrupted = e.kind() == ErrorKind::Cancelled;
                (code, error_text(&e))
            }
        };
        let outcome = notify::RunOutcome {
            binary: "lifeboat-backup",
            job: &job.name,
            exit_code: job_exit,
            report: reports.last().cloned().unwrap_or_default(),
            text,
        };
        notify::finished(&notifiers, &outcome).await;
        if !metrics.is_empty() {
            let run = metrics::RunMetrics {
                ended: chrono::Utc::now(),
                success: job_exit == 0,
                backup_secs: Some(started.elapsed().as_secs_f64()),
                snapshot_age: false,
            };
            samples.extend(metrics::job_samples(&store, &job.name, &run).await);
        }
        if interrupted {
            break;
        }
    }
    metrics::deliver(&metrics, "lifeboat-backup", &samples).await;
    if json {
        print_json(&serde_json::json!({"ok": exit == 0, "jobs": reports}));
    }
    Ok(exit)
}

/// An error as notifications carry it: the message and the hint.
fn error_text(e: &Error) -> String {
    match e.hint() {
        Some(hint) => format!("error: {}\n  hint: {hint}\n", e.message()),
        None => format!("error: {}\n", e.message()),
    }
}

/// The `[[copy]]` tables that include `job`, run after its backup committed: the snapshot is
/// safe in the first repository whatever happens here, but a failed copy fails the run (the
/// second copy is what 3-2-1 promises).
async fn copy_after_backup(
    config: Option<&Config>,
    store: &lifeboat_core::store::AnyStore,
    job: &str,
) -> (Vec<lifeboat_core::copy::CopyReport>, Option<Error>) {
    let mut reports = Vec::new();
    for copy in config.iter().flat_map(|c| &c.copies) {
        if !copy.jobs.is_empty() && !copy.jobs.iter().any(|j| j == job) {
            continue;
        }
        let copied = async {
            let to = maintenance::open_copy_target(&copy.to, store).await?;
            maintenance::copy_into(store, &to, &[job.to_string()], false).await
        }
        .await;
        match copied {
            Ok(r) => reports.extend(r),
            Err(e) => {
                return (
                    reports,
                    Some(e.with_hint(format!(
                        "the snapshot is committed in the first repository; `lifeboat-backup copy {job}` copies what is missing once the destination is reachable"
                    ))),
                )
            }
        }
    }
    (reports, None)
}

/// Jobs from the one-liner flags, or from the file (all, or those named).
fn resolve_jobs(args: &BackupArgs) -> Result<(Option<Config>, Vec<Job>)> {
    let overrides = Overrides {
        retention: args.retention.clone(),
        compression: args.compression,
        compression_level: args.compression_level,
        idle_timeout: args.idle_timeout.clone(),
        timeout: args.timeout.clone(),
        format: args.format,
        pg_bin_dir: args.pg_bin_dir.clone(),
        recipients: args.recipient.clone(),
    };
    if let Some(engine) = args.engine {
        if !args.jobs.is_empty() {
            return Err(usage(
                "JOB names select jobs of a configuration file; with --engine use --job NAME",
            ));
        }
        let url = lifeboat_cli::url_flag(args.url.as_deref(), args.url_env.as_deref(), "url")?;
        let one_liner = OneLiner {
            engine,
            name: args.job.clone(),
            url,
            paths: args.path.clone(),
            exclude: args.exclude.clone(),
            format: args.format,
        };
        let spec = one_liner.spec(&lifeboat_cli::env_lookup)?;
        let mut job = config::validate_job(&spec, &Default::default(), None)?;
        overrides.apply(&mut job, None)?;
        return Ok((None, vec![job]));
    }
    let config = lifeboat_cli::load_config(&args.common)?.ok_or_else(|| {
        usage("no jobs to run: there is no ./lifeboat.toml, no --config, and no --engine with --url-env or --url")
            .with_hint("pass --config FILE, or back up one database with --engine postgres --url-env DATABASE_URL --repo DIR")
    })?;
    // `--job NAME` without --engine names a configured job, as it does for verify and restore.
    let named: Vec<&String> = args.jobs.iter().chain(&args.job).collect();
    let mut jobs = if named.is_empty() {
        config.jobs.clone()
    } else {
        named
            .iter()
            .map(|n| config.job(n).cloned())
            .collect::<Result<Vec<_>>>()?
    };
    if jobs.is_empty() {
        let file = config
            .file
            .as_ref()
            .map_or("the configuration".into(), |p| p.display().to_string());
        return Err(usage(format!("{file} defines no jobs"))
            .with_hint("add a [[job]] table with name, engine and url (or paths)"));
    }
    let dir = config.file.as_deref().and_then(std::path::Path::parent);
    for job in &mut jobs {
        overrides.apply(job, dir)?;
    }
    Ok((Some(config), jobs))
}
