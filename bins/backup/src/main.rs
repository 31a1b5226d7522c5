//! `lifeboat-backup`: parse flags, build the jobs, run them, map the outcome to an exit code.

mod args;

use std::process::ExitCode;
use std::time::Duration;

use args::{BackupArgs, BackupCommand, PruneArgs, UnlockArgs};
use clap::Parser;
use lifeboat_cli::{human_bytes, print_json, report_error, usage, CommonArgs};
use lifeboat_core::backup::BackupReport;
use lifeboat_core::config::{self, Config, EngineJob, EngineName, Job, JobSpec};
use lifeboat_core::job::{self, JobOptions};
use lifeboat_core::lock::{self, Holder};
use lifeboat_core::prune::{prune, PruneOptions, PruneReport};
use lifeboat_core::retention::{self, Policy};
use lifeboat_core::store::Store;
use lifeboat_core::{Error, Result};

fn main() -> ExitCode {
    let args = BackupArgs::parse();
    lifeboat_cli::init_logging(&args.common);
    let json = args.common.json;
    let code = match lifeboat_cli::runtime() {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => report_error(
            &Error::store(format!("cannot start the async runtime: {e}")),
            json,
        ),
    };
    ExitCode::from(code as u8)
}

async fn run(args: BackupArgs) -> i32 {
    lifeboat_cli::watch_signals();
    let json = args.common.json;
    let sub = match &args.command {
        Some(BackupCommand::Prune(prune_args)) => {
            Some(lifeboat_cli::until_signal(run_prune(&args, prune_args)).await)
        }
        Some(BackupCommand::Unlock(unlock_args)) => Some(run_unlock(&args, unlock_args).await),
        None => None,
    };
    if let Some(result) = sub {
        return match result {
            Ok(code) => code,
            Err(e) => report_error(&e, json),
        };
    }
    let (config, jobs) = match resolve_jobs(&args) {
        Ok(v) => v,
        Err(e) => return report_error(&e, json),
    };
    if args.print_config {
        print_config(&args.common, config.as_ref(), &jobs);
        return 0;
    }
    let store = match lifeboat_cli::open_store(&args.common, config.as_ref()).await {
        Ok(s) => s,
        Err(e) => return report_error(&e, json),
    };
    let options = JobOptions {
        holder: holder(),
        leftover_grace: Duration::from_secs(args.leftover_grace_mins * 60),
        orphan_grace: Duration::from_secs(args.orphan_grace_hours * 3600),
        compression_threads: args.compression_threads,
        prune: !args.no_prune,
        // A one-liner without --job backs up into a job named for the database (or `redis`):
        // that history must stay one source's.
        same_source_only: args.engine.is_some() && args.job.is_none(),
    };
    let cancel = lifeboat_cli::watch_signals();
    let mut exit = 0;
    let mut reports = Vec::new();
    for job in &jobs {
        match job::run(&store, job, &options, &chrono::Utc::now, &cancel).await {
            Ok(run) => {
                if !json {
                    print_report(&run.report, job, &store);
                    if let Some(p) = &run.prune {
                        print_prune_summary(p);
                    }
                }
                if let Some(e) = &run.prune_error {
                    let code = report_error(e, false);
                    if exit == 0 {
                        exit = code;
                    }
                }
                reports.push(
                    serde_json::json!({"ok": true, "report": run.report, "prune": run.prune}),
                );
            }
            Err(e) => {
                let code = report_error(&e, false);
                reports.push(serde_json::json!({
                    "ok": false,
                    "job": job.name,
                    "error": {"kind": e.kind().as_str(), "message": e.message(), "hint": e.hint()}
                }));
                if exit == 0 {
                    exit = code;
                }
                if e.kind() == lifeboat_core::ErrorKind::Cancelled {
                    break;
                }
            }
        }
    }
    if json {
        print_json(&serde_json::json!({"ok": exit == 0, "jobs": reports}));
    }
    exit
}

fn print_report(r: &BackupReport, job: &Job, store: &impl Store) {
    println!(
        "Snapshot {} of job {:?} committed to {}: {}; raw {} -> stored {} ({}) in {:.1}s; consistent at {}.",
        r.snapshot,
        r.job,
        store.describe(),
        r.contents,
        human_bytes(r.raw_size),
        human_bytes(r.stored_size),
        describe_compression(job),
        r.duration_secs,
        r.consistent_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    println!(
        "  raw sha256    {}\n  stored sha256 {}",
        r.raw_sha256, r.stored_sha256
    );
}

fn describe_compression(job: &Job) -> String {
    match job.compression {
        lifeboat_core::pipeline::Compression::Zstd { level } => format!("zstd level {level}"),
        lifeboat_core::pipeline::Compression::Gzip { level } => format!("gzip level {level}"),
        lifeboat_core::pipeline::Compression::None => "uncompressed".into(),
    }
}

/// Jobs from the one-liner flags, or from the file (all, or those named).
fn resolve_jobs(args: &BackupArgs) -> Result<(Option<Config>, Vec<Job>)> {
    if let Some(engine) = args.engine {
        if !args.jobs.is_empty() {
            return Err(usage(
                "JOB names select jobs of a configuration file; with --engine use --job NAME",
            ));
        }
        let spec = one_liner(args, engine)?;
        let mut job = config::validate_job(&spec, &Default::default(), None)?;
        apply_overrides(&mut job, args, None)?;
        return Ok((None, vec![job]));
    }
    let config = lifeboat_cli::load_config(&args.common)?.ok_or_else(|| {
        usage("no jobs to run: there is no ./lifeboat.toml, no --config, and no --engine with --url-env or --url")
            .with_hint("pass --config FILE, or back up one database with --engine postgres --url-env DATABASE_URL --repo DIR")
    })?;
    let mut jobs = if args.jobs.is_empty() {
        config.jobs.clone()
    } else {
        args.jobs
            .iter()
            .map(|n| config.job(n).cloned())
            .collect::<Result<Vec<_>>>()?
    };
    if jobs.is_empty() {
        return Err(usage(format!(
            "{} defines no jobs",
            config
                .file
                .as_ref()
                .map_or("the configuration".into(), |p| p.display().to_string())
        ))
        .with_hint("add a [[job]] table with name, engine and url"));
    }
    let dir = config.file.as_deref().and_then(std::path::Path::parent);
    for job in &mut jobs {
        apply_overrides(job, args, dir)?;
    }
    Ok((Some(config), jobs))
}

/// The job of a one-liner (`--engine ... --url-env VAR` or `--engine files --path DIR`).
fn one_liner(args: &BackupArgs, engine: EngineName) -> Result<JobSpec> {
    let mut spec = JobSpec {
        engine,
        format: args.format,
        compression: args.compression,
        compression_level: args.compression_level,
        pg_bin_dir: args.pg_bin_dir.as_ref().map(|p| p.display().to_string()),
        ..Default::default()
    };
    if engine == EngineName::Files {
        if args.path.is_empty() || args.url.is_some() || args.url_env.is_some() {
            return Err(usage("--engine files takes --path DIR (repeatable), not a URL")
                .with_hint("e.g. lifeboat-backup --engine files --path /data/uploads --repo /var/backups/lifeboat"));
        }
        spec.paths = Some(
            args.path
                .iter()
                .map(|p| {
                    std::path::absolute(p)
                        .unwrap_or_else(|_| p.clone())
                        .display()
                        .to_string()
                })
                .collect(),
        );
        spec.exclude = Some(args.exclude.clone());
        spec.name = args.job.clone().unwrap_or_else(|| {
            args.path[0]
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| config::validate_job_name(n).is_ok())
                .unwrap_or_else(|| "files".to_string())
        });
        return Ok(spec);
    }
    if !args.path.is_empty() {
        return Err(usage(format!("--path is for --engine files, not {engine}")));
    }
    let url = lifeboat_cli::url_flag(args.url.as_deref(), args.url_env.as_deref(), "url")?
        .ok_or_else(|| {
            usage(format!(
                "--engine {engine} needs --url-env VAR (or --url URL)"
            ))
            .with_hint("e.g. --url-env DATABASE_URL")
        })?;
    let url = config::interpolate::expand(&url, &lifeboat_cli::env_lookup).map_err(|m| {
        if m.unclosed {
            usage(format!("--url: \"${{{}\" has no closing brace", m.name))
        } else {
            usage(format!(
                "--url: environment variable {} is not set (or is empty)",
                m.name
            ))
        }
    })?;
    spec.name = match (&args.job, engine) {
        (Some(n), _) => n.clone(),
        (None, EngineName::Postgres) => default_job_name(&url),
        (None, _) => engine.as_str().to_string(),
    };
    spec.url = Some(url);
    Ok(spec)
}

/// Flags say how this run behaves; they override the file.
fn apply_overrides(
    job: &mut Job,
    args: &BackupArgs,
    config_dir: Option<&std::path::Path>,
) -> Result<()> {
    if let Some(name) = &args.retention {
        job.retention = Some(
            retention::resolve_name(name, config_dir)
                .map_err(|e| usage(format!("--retention: {e}")))?,
        );
    }
    if args.compression.is_some() || args.compression_level.is_some() {
        let name = args.compression.unwrap_or(match job.compression {
            lifeboat_core::pipeline::Compression::Zstd { .. } => config::CompressionName::Zstd,
            lifeboat_core::pipeline::Compression::Gzip { .. } => config::CompressionName::Gzip,
            lifeboat_core::pipeline::Compression::None => config::CompressionName::None,
        });
        job.compression =
            lifeboat_core::pipeline::Compression::from_spec(name, args.compression_level)
                .map_err(|e| usage(format!("--compression-level: {e}")))?;
    }
    let duration = |flag: &str, value: &str| {
        match config::parse_duration(value) {
            Ok(d) if d.is_zero() => Err(format!("{value:?} is zero")),
            other => other,
        }
        .map_err(|e| usage(format!("{flag}: {e}")))
    };
    if let Some(v) = &args.idle_timeout {
        job.idle_timeout = duration("--idle-timeout", v)?;
    }
    if let Some(v) = &args.timeout {
        job.timeout = Some(duration("--timeout", v)?);
    }
    if let EngineJob::Postgres(pg) = &mut job.engine {
        if let Some(f) = args.format {
            pg.format = f;
        }
        if let Some(dir) = &args.pg_bin_dir {
            pg.bin_dir = Some(dir.clone());
        }
    }
    Ok(())
}

/// `lifeboat-backup prune`: plan (and apply) retention for the chosen jobs.
async fn run_prune(args: &BackupArgs, prune_args: &PruneArgs) -> Result<i32> {
    let json = args.common.json;
    let config = lifeboat_cli::load_config(&args.common)?;
    let dir = config
        .as_ref()
        .and_then(|c| c.file.as_deref())
        .and_then(std::path::Path::parent);
    let override_policy = prune_args
        .retention
        .as_deref()
        .map(|n| retention::resolve_name(n, dir))
        .transpose()
        .map_err(|e| usage(format!("--retention: {e}")))?;
    let configured: Vec<(String, Option<Policy>)> = config
        .as_ref()
        .map(|c| {
            c.jobs
                .iter()
                .map(|j| (j.name.clone(), j.retention.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut targets: Vec<(String, Policy)> = Vec::new();
    if prune_args.jobs.is_empty() {
        for (name, policy) in &configured {
            match (override_policy.clone().or_else(|| policy.clone()), json) {
                (Some(p), _) => targets.push((name.clone(), p)),
                (None, false) => {
                    println!("Job {name:?} has no retention policy: nothing to prune.")
                }
                (None, true) => {}
            }
        }
        if configured.is_empty() {
            return Err(usage("which jobs? name them (lifeboat-backup prune JOB --retention POLICY) or use a configuration file"));
        }
    } else {
        for name in &prune_args.jobs {
            config::validate_job_name(name)?;
            let policy = override_policy
                .clone()
                .or_else(|| configured.iter().find(|(n, _)| n == name).and_then(|(_, p)| p.clone()))
                .ok_or_else(|| {
                    usage(format!("job {name:?} has no retention policy"))
                        .with_hint("set retention = \"gfs\" (or another preset) in its [[job]], or pass --retention")
                })?;
            targets.push((name.clone(), policy));
        }
    }
    let store = lifeboat_cli::open_repository(&args.common, config.as_ref()).await?;
    for (job, _) in &targets {
        lifeboat_cli::known_job(&store, config.as_ref(), job).await?;
    }
    let options = PruneOptions {
        now: chrono::Utc::now(),
        dry_run: prune_args.dry_run,
        orphan_grace: Duration::from_secs(prune_args.orphan_grace_hours * 3600),
        committed: None,
    };
    let mut reports = Vec::new();
    for (job, policy) in &targets {
        let guard = if prune_args.dry_run {
            None
        } else {
            Some(
                lock::acquire(
                    &store,
                    job,
                    &holder(),
                    lock::DEFAULT_LEASE,
                    chrono::Utc::now(),
                )
                .await?,
            )
        };
        let report = prune(&store, job, policy, &options).await;
        if let Some(g) = guard {
            let _ = g.release().await;
        }
        let report = report?;
        if !json {
            print!("Job {job:?}:\n{}", report.plan.render());
            print_prune_summary(&report);
        }
        reports.push(report);
    }
    if json {
        print_json(
            &serde_json::json!({"ok": true, "dry_run": prune_args.dry_run, "jobs": reports}),
        );
    }
    Ok(0)
}

/// Who this run is, for the lock.
fn holder() -> Holder {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_string());
    Holder {
        owner: "lifeboat-backup".to_string(),
        host,
        pid: std::process::id(),
    }
}

/// `lifeboat-backup unlock JOB`: remove a lock left by a crashed run, after asking.
async fn run_unlock(args: &BackupArgs, unlock: &UnlockArgs) -> Result<i32> {
    use std::io::{BufRead, IsTerminal, Write};
    config::validate_job_name(&unlock.job)?;
    let config = lifeboat_cli::load_config(&args.common)?;
    let store = lifeboat_cli::open_repository(&args.common, config.as_ref()).await?;
    lifeboat_cli::known_job(&store, config.as_ref(), &unlock.job).await?;
    match lock::inspect(&store, &unlock.job).await? {
        None => {
            println!("Job {:?} is not locked.", unlock.job);
            return Ok(0);
        }
        Some(Ok(held)) => println!("Job {:?} is locked by {}.", unlock.job, held.describe()),
        Some(Err(unreadable)) => println!(
            "Job {:?} has a lock nobody can read: {unreadable}.",
            unlock.job
        ),
    }
    if std::io::stdin().is_terminal() && !unlock.yes {
        eprint!("Remove the lock? Only do this if that run is not active. [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Error::new(
                lifeboat_core::ErrorKind::Refused,
                "the lock was left in place",
            ));
        }
    }
    lock::force_unlock(&store, &unlock.job).await?;
    println!("Removed the lock of job {:?}.", unlock.job);
    Ok(0)
}

fn print_protected(report: &PruneReport) {
    for p in &report.protected {
        println!(
            "  kept {} although the policy forgets it: {} is protected by {}",
            p.id, p.object, p.protection
        );
    }
}

fn print_prune_summary(report: &PruneReport) {
    let kept = report.plan.kept().count();
    if report.dry_run {
        println!(
            "Dry run: job {:?} would keep {kept} and forget {}; nothing was changed.",
            report.job,
            lifeboat_core::backup::counted(report.plan.forgotten().count() as u64, "snapshot")
        );
        print_protected(report);
        return;
    }
    println!(
        "Pruned job {:?} with {}: kept {kept}, forgot {}{}.",
        report.job,
        report.plan.policy,
        report.forgotten.len(),
        if report.forgotten.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                report
                    .forgotten
                    .iter()
                    .map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if !report.orphans_removed.is_empty() {
        println!(
            "  removed {} of interrupted runs",
            lifeboat_core::backup::counted(report.orphans_removed.len() as u64, "leftover object")
        );
    }
    print_protected(report);
    for d in &report.damaged {
        println!(
            "  not touched (unreadable manifest): {}: {}",
            d.key, d.error
        );
    }
}

/// The database name when it is a valid job name, else `postgres`.
fn default_job_name(url: &str) -> String {
    lifeboat_core::secret::SecretUrl::parse(url)
        .ok()
        .and_then(|u| u.database())
        .filter(|d| config::validate_job_name(d).is_ok())
        .unwrap_or_else(|| "postgres".to_string())
}

fn print_config(common: &CommonArgs, config: Option<&Config>, jobs: &[Job]) {
    let store = common
        .repo
        .clone()
        .or_else(|| config.and_then(|c| c.store.url.clone()))
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
            config::default_repo(home.as_deref()).display().to_string()
        });
    let jobs: Vec<_> = jobs
        .iter()
        .map(|j| {
            let mut job = serde_json::json!({
                "name": j.name,
                "engine": j.engine.name(),
                "url": j.engine.describe_source(),
                "compression": j.compression,
                "max-age-secs": j.max_age.map(|d| d.as_secs()),
                "idle-timeout-secs": j.idle_timeout.as_secs(),
                "timeout-secs": j.timeout.map(|d| d.as_secs()),
                "retention": j.retention.as_ref().map(Policy::describe),
            });
            match &j.engine {
                EngineJob::Postgres(pg) => {
                    job["format"] = serde_json::json!(pg.format);
                    job["pg-bin-dir"] = serde_json::json!(pg.bin_dir);
                }
                EngineJob::Redis(r) => {
                    job["mode"] = serde_json::json!(r.mode);
                    job["debug-digest"] = serde_json::json!(r.debug_digest);
                }
                EngineJob::Files(f) => {
                    job["paths"] = serde_json::json!(f.paths);
                    job["exclude"] = serde_json::json!(f.exclude);
                    job["strict"] = serde_json::json!(f.strict);
                }
            }
            job
        })
        .collect();
    let value = serde_json::json!({
        "file": config.and_then(|c| c.file.clone()),
        "store": store,
        "jobs": jobs,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
}
