//! `lifeboat-backup`: parse flags, build the jobs, run them, map the outcome to an exit code.

mod args;
mod maintenance;

use std::process::ExitCode;
use std::time::Duration;

use args::{BackupArgs, BackupCommand};
use clap::Parser;
use lifeboat_cli::{print_json, report_error, usage};
use lifeboat_core::config::{self, Config, Job, OneLiner, Overrides};
use lifeboat_core::copy;
use lifeboat_core::job::{self, JobOptions};
use lifeboat_core::report::human;
use lifeboat_core::report::news::{self, JobEnd, News};
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
    let mut news = News::new("lifeboat-backup", config.as_ref());
    let copies = config.as_ref().map_or(&[][..], |c| &c.copies[..]);
    let mut interrupted = false;
    for job in &jobs {
        news.started(&job.name).await;
        let started = std::time::Instant::now();
        let progress = lifeboat_cli::progress::Progress::start(&args.common, "backup", &job.name);
        let ran = job::run(&store, job, &options, &chrono::Utc::now, cancel).await;
        drop(progress);
        let (job_exit, text, report, committed) = match ran {
            Ok(run) => {
                let mut text = human::backup(&run.report, &store.describe());
                run.prune
                    .iter()
                    .for_each(|p| text.push_str(&human::prune(p)));
                let (copied, copy_error) =
                    copy::after_backup(copies, &store, &job.name, &options.holder).await;
                copied.iter().for_each(|c| text.push_str(&human::copy(c)));
                if !json {
                    print!("{text}");
                }
                let mut job_exit = 0;
                for e in run.prune_error.iter().chain(&copy_error) {
                    job_exit = job_exit.max(report_error(e, false));
                    text.push_str(&news::error_text(e));
                }
                let report = serde_json::json!({
                    "ok": job_exit == 0,
                    "report": run.report,
                    "prune": run.prune,
                    "copies": copied,
                    "copy_error": copy_error.as_ref().map(news::error_json),
                });
                (job_exit, text, report, true)
            }
            Err(e) => {
                let code = report_error(&e, false);
                interrupted = e.kind() == ErrorKind::Cancelled;
                let report = serde_json::json!({"ok": false, "job": job.name, "error": news::error_json(&e)});
                (code, news::error_text(&e), report, false)
            }
        };
        // A failed backup's code stands if it came first; after a commit, a failed prune or
        // copy raises the run's code.
        exit = match (committed, exit) {
            (true, _) => exit.max(job_exit),
            (false, 0) => job_exit,
            (false, earlier) => earlier,
        };
        reports.push(report.clone());
        news.finished(
            &store,
            JobEnd {
                job: &job.name,
                exit_code: job_exit,
                report,
                text,
                backup_secs: Some(started.elapsed().as_secs_f64()),
            },
        )
        .await;
        if interrupted {
            break;
        }
    }
    news.deliver().await;
    if json {
        print_json(&serde_json::json!({"ok": exit == 0, "jobs": reports}));
    }
    Ok(exit)
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
