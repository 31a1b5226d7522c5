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
use lifeboat_core::report::news::News;
use lifeboat_core::{Error, Result};

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
        return Ok(lifeboat_cli::print_line(
            &serde_json::to_string_pretty(&value).unwrap_or_default(),
        ));
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
    let mut news = News::new("lifeboat-backup", config.as_ref());
    let copies = config.as_ref().map_or(&[][..], |c| &c.copies[..]);
    let view = Terminal { args };
    let run = job::run_jobs(&store, &jobs, &options, copies, &mut news, cancel, &view).await;
    if json {
        print_json(&serde_json::json!({"ok": run.exit_code == 0, "jobs": run.reports}));
    }
    Ok(run.exit_code)
}

/// The run as this terminal shows it: a progress line per job, the reports (not with --json,
/// whose report comes at the end), the errors on stderr.
struct Terminal<'a> {
    args: &'a BackupArgs,
}

impl job::JobsView for Terminal<'_> {
    fn job_started(&self, job: &str) -> Box<dyn std::any::Any> {
        Box::new(lifeboat_cli::progress::Progress::start(
            &self.args.common,
            "backup",
            job,
        ))
    }

    fn show(&self, text: &str) {
        if !self.args.common.json {
            lifeboat_cli::out!("{text}");
        }
    }

    fn show_error(&self, error: &Error) {
        report_error(error, false);
    }
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
