//! `lifeboat-backup`: parse flags, build the jobs, run them, map the outcome to an exit code.

mod args;

use std::process::ExitCode;
use std::time::Duration;

use args::{BackupArgs, EngineArg};
use clap::Parser;
use lifeboat_cli::{human_bytes, print_json, report_error, usage, CommonArgs};
use lifeboat_core::backup::{backup, BackupOptions, BackupReport};
use lifeboat_core::config::{self, Config, EngineJob, EngineName, Job, JobSpec};
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
    let json = args.common.json;
    let (config, jobs) = match resolve_jobs(&args) {
        Ok(v) => v,
        Err(e) => return report_error(&e, json),
    };
    if args.print_config {
        print_config(&args.common, config.as_ref(), &jobs);
        return 0;
    }
    let store = match lifeboat_cli::open_store(&args.common, config.as_ref()) {
        Ok(s) => s,
        Err(e) => return report_error(&e, json),
    };
    let mut exit = 0;
    let mut reports = Vec::new();
    for job in &jobs {
        let options = BackupOptions {
            now: chrono::Utc::now(),
            leftover_grace: Duration::from_secs(args.leftover_grace_mins * 60),
            compression_threads: args.compression_threads,
        };
        match lifeboat_cli::until_signal(backup(&store, job, &options)).await {
            Ok(report) => {
                if !json {
                    print_report(&report, job, &store);
                }
                reports.push(serde_json::json!({"ok": true, "report": report}));
            }
            Err(e) => {
                let e = Error::new(e.kind(), format!("job {:?}: {}", job.name, e.message()))
                    .with_hint(
                        e.hint()
                            .unwrap_or("nothing was committed for this run")
                            .to_string(),
                    );
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
        "Snapshot {} of job {:?} committed to {}: {} tables, {} rows; raw {} -> stored {} ({}) in {:.1}s; consistent at {}.",
        r.snapshot,
        r.job,
        store.describe(),
        r.tables,
        r.rows,
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
    if let (Some(engine), Some(url)) = (args.engine, &args.url) {
        if !args.jobs.is_empty() {
            return Err(usage(
                "JOB names select jobs of a configuration file; with --engine use --job NAME",
            ));
        }
        let url = config::interpolate::expand(url, &lifeboat_cli::env_lookup).map_err(|m| {
            usage(format!(
                "--url: environment variable {} is not set (or is empty)",
                m.name
            ))
        })?;
        let name = match &args.job {
            Some(n) => n.clone(),
            None => default_job_name(&url),
        };
        let spec = JobSpec {
            name,
            engine: match engine {
                EngineArg::Postgres => EngineName::Postgres,
            },
            url,
            format: args.format,
            compression: args.compression,
            compression_level: args.compression_level,
            pg_bin_dir: args.pg_bin_dir.as_ref().map(|p| p.display().to_string()),
            retention: None,
            schedule: None,
            max_age: None,
        };
        let job = config::validate_job(&spec, &Default::default())?;
        return Ok((None, vec![job]));
    }
    let config = lifeboat_cli::load_config(&args.common)?.ok_or_else(|| {
        usage("no jobs to run: there is no ./lifeboat.toml and no --config or --engine/--url")
            .with_hint("pass --config FILE, or back up one database with --engine postgres --url \"$DATABASE_URL\" --repo DIR")
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
    for job in &mut jobs {
        apply_overrides(job, args)?;
    }
    Ok((Some(config), jobs))
}

/// Flags say how this run behaves; they override the file.
fn apply_overrides(job: &mut Job, args: &BackupArgs) -> Result<()> {
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
    let EngineJob::Postgres(pg) = &mut job.engine;
    if let Some(f) = args.format {
        pg.format = f;
    }
    if let Some(dir) = &args.pg_bin_dir {
        pg.bin_dir = Some(dir.clone());
    }
    Ok(())
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
        .or_else(|| config.and_then(|c| c.store.clone()))
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
            config::default_repo(home.as_deref()).display().to_string()
        });
    let jobs: Vec<_> = jobs
        .iter()
        .map(|j| {
            let EngineJob::Postgres(pg) = &j.engine;
            serde_json::json!({
                "name": j.name,
                "engine": "postgres",
                "url": pg.url.to_string(),
                "format": pg.format,
                "compression": j.compression,
                "pg-bin-dir": pg.bin_dir,
                "max-age-secs": j.max_age.map(|d| d.as_secs()),
            })
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
