//! `lifeboat-restore`: list snapshots, or plan, confirm and apply a restore.

mod args;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use args::{Command, ListArgs, RestoreArgs, RestoreFlags, RestoreMode};
use clap::Parser;
use lifeboat_cli::{human_bytes, print_json, report_error, usage, CommonArgs};
use lifeboat_core::catalog::{self, parse_time, Selector, SnapshotId};
use lifeboat_core::restore::{self, RestoreOptions, RestorePlan};
use lifeboat_core::secret::SecretUrl;
use lifeboat_core::sink::postgres::tools_dir;
use lifeboat_core::store::{AnyStore, Store};
use lifeboat_core::verify;
use lifeboat_core::{Error, ErrorKind, Result};

fn main() -> ExitCode {
    let args = RestoreArgs::parse();
    lifeboat_cli::init_logging(&args.common);
    let json = args.common.json;
    let code = match lifeboat_cli::runtime() {
        Ok(rt) => rt.block_on(async {
            let work = async {
                match &args.command {
                    Some(Command::List(list)) => run_list(&args.common, list).await,
                    None => run_restore(&args.common, &args.restore).await,
                }
            };
            match lifeboat_cli::until_signal(work).await {
                Ok(()) => 0,
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

async fn open_repository(
    common: &CommonArgs,
) -> Result<(AnyStore, Option<lifeboat_core::config::Config>)> {
    let config = lifeboat_cli::load_config(common)?;
    let store = lifeboat_cli::open_repository(common, config.as_ref()).await?;
    Ok((store, config))
}

async fn run_list(common: &CommonArgs, list: &ListArgs) -> Result<()> {
    let (store, config) = open_repository(common).await?;
    let jobs = if list.job.is_empty() {
        catalog::list_jobs(&store).await?
    } else {
        for job in &list.job {
            lifeboat_cli::known_job(&store, config.as_ref(), job).await?;
        }
        list.job.clone()
    };
    let mut out = Vec::new();
    for job in &jobs {
        let listing = catalog::list_snapshots(&store, job).await?;
        let records = verify::records(&store, job).await?;
        let policy = config
            .as_ref()
            .and_then(|c| c.jobs.iter().find(|j| &j.name == job))
            .and_then(|j| j.retention.clone());
        let plan = policy.as_ref().map(|p| {
            lifeboat_core::prune::plan_for(
                p,
                &listing.snapshots,
                &records,
                chrono::Utc::now(),
                None,
            )
        });
        let verified = |id: &SnapshotId| records.iter().rev().find(|r| &r.snapshot == id);
        let action = |id: &SnapshotId| {
            plan.as_ref()
                .and_then(|p| p.decisions.iter().find(|d| &d.id == id))
                .map(|d| {
                    if d.keep {
                        format!("keep: {}", d.reasons.join(", "))
                    } else {
                        "forget".to_string()
                    }
                })
        };
        if !common.json {
            println!(
                "Job {job:?} ({}; retention: {}):",
                lifeboat_core::backup::counted(listing.snapshots.len() as u64, "snapshot"),
                policy
                    .as_ref()
                    .map_or_else(|| "none configured".to_string(), |p| p.describe())
            );
            println!(
                "  {:<24} {:<21} {:<10} {:>10} {:>10} {:<6} {:<22} POLICY",
                "ID", "CONSISTENT AT", "FORMAT", "STORED", "RAW", "COMP", "VERIFIED"
            );
            for m in listing.snapshots.iter().rev() {
                let v = verified(&m.id).map_or_else(
                    || "-".to_string(),
                    |r| {
                        format!(
                            "{} {} {}",
                            if r.ok { "ok" } else { "FAILED" },
                            r.level.as_str(),
                            r.checked_at.format("%Y-%m-%d %H:%M")
                        )
                        .to_lowercase()
                    },
                );
                println!(
                    "  {:<24} {:<21} {:<10} {:>10} {:>10} {:<6} {:<22} {}",
                    m.id.as_str(),
                    m.consistent_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
                    m.dump_format,
                    human_bytes(m.object.stored_size),
                    human_bytes(m.object.raw_size),
                    compression_name(m),
                    v,
                    action(&m.id).unwrap_or_else(|| "-".to_string()),
                );
            }
            for d in &listing.damaged {
                println!("  DAMAGED {}: {}", d.key, d.error);
            }
        }
        out.push(serde_json::json!({
            "job": job,
            "retention": policy.as_ref().map(|p| p.describe()),
            "snapshots": listing.snapshots.iter().rev().map(|m| serde_json::json!({
                "id": m.id,
                "consistent_at": m.consistent_at,
                "engine": m.engine,
                "dump_format": m.dump_format,
                "stored_size": m.object.stored_size,
                "raw_size": m.object.raw_size,
                "compression": m.compression,
                "key": m.object.key,
                "verified": verified(&m.id).map(|r| serde_json::json!({"ok": r.ok, "level": r.level, "at": r.checked_at})),
                "policy": plan.as_ref().and_then(|p| p.decisions.iter().find(|d| d.id == m.id)),
            })).collect::<Vec<_>>(),
            "damaged": listing.damaged,
        }));
    }
    if common.json {
        print_json(&serde_json::json!({"ok": true, "jobs": out}));
    }
    Ok(())
}

fn compression_name(m: &lifeboat_core::catalog::Manifest) -> &'static str {
    match m.compression {
        lifeboat_core::pipeline::Compression::Zstd { .. } => "zstd",
        lifeboat_core::pipeline::Compression::Gzip { .. } => "gzip",
        lifeboat_core::pipeline::Compression::None => "none",
    }
}

async fn run_restore(common: &CommonArgs, flags: &RestoreFlags) -> Result<()> {
    let target = lifeboat_cli::url_flag(flags.to.as_deref(), flags.to_env.as_deref(), "to")?;
    let target = target.as_deref().ok_or_else(|| {
        usage("which database should be restored into? pass --to URL")
            .with_hint("e.g. --to postgres://user@host:5432/new_db (create it first with createdb)")
    })?;
    if let Some(file) = &flags.from_file {
        return run_from_file(common, flags, file, target).await;
    }
    if flags.mode == RestoreMode::File {
        return run_to_file(common, flags, std::path::Path::new(target)).await;
    }
    let target = SecretUrl::parse(target).map_err(|e| usage(format!("--to: {e}")))?;
    let postgres = matches!(target.scheme(), "postgres" | "postgresql");
    if !(postgres && target.database().is_some() || matches!(target.scheme(), "redis" | "rediss")) {
        return Err(usage(format!(
            "--to {target}: expected postgres://user@host:port/dbname or redis://[:password@]host:port"
        )));
    }
    let (store, config, job, selector) = repository_and_selection(common, flags).await?;
    let pg_bin_dir = flags.pg_bin_dir.clone().or_else(|| {
        let c = config.as_ref()?;
        let j = c.jobs.iter().find(|j| j.name == job)?;
        j.engine.pg_bin_dir()
    });
    let options = RestoreOptions {
        clean: flags.clean,
        replace: flags.replace,
        db_map: flags.db_map.iter().copied().collect(),
        swap: flags.mode == RestoreMode::Swap,
        no_owner: flags.no_owner,
        tools: tools_dir(pg_bin_dir.as_deref()),
        hold_back: flags.hold_back_mib * 1024 * 1024,
        now: chrono::Utc::now(),
    };
    let plan = restore::plan(&store, &job, &selector, &target, &options).await?;
    if flags.dry_run {
        if common.json {
            print_json(&serde_json::json!({"ok": true, "dry_run": true, "plan": plan_json(&plan)}));
        } else {
            print_plan(&plan);
            println!("Dry run: nothing was changed.");
        }
        return Ok(());
    }
    if !common.json {
        print_plan(&plan);
    }
    if std::io::stdin().is_terminal() && !flags.yes && !confirm()? {
        return Err(Error::new(
            ErrorKind::Refused,
            "restore cancelled at the prompt; nothing was changed",
        ));
    }
    let report = restore::apply(&store, &plan, &options).await?;
    if common.json {
        print_json(&serde_json::json!({"ok": true, "report": report}));
    } else {
        println!(
            "Restored snapshot {} (consistent at {}) into {}: {} read, {} applied, both digests verified, in {:.1}s.",
            report.snapshot,
            report.consistent_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            report.target,
            human_bytes(report.stored_bytes),
            human_bytes(report.raw_bytes),
            report.duration_secs
        );
        if report.skipped_empty_keys > 0 {
            println!(
                "  skipped {} empty collection key(s), as redis-server does when it loads such a file",
                report.skipped_empty_keys
            );
        }
    }
    Ok(())
}

/// The repository, its configuration, the job and which of its snapshots the flags select.
async fn repository_and_selection(
    common: &CommonArgs,
    flags: &RestoreFlags,
) -> Result<(
    AnyStore,
    Option<lifeboat_core::config::Config>,
    String,
    Selector,
)> {
    let selector = match (&flags.snapshot, flags.latest, &flags.at) {
        (Some(id), _, _) => Selector::Id(id.parse::<SnapshotId>().map_err(usage)?),
        (None, true, _) => Selector::Latest,
        (None, false, Some(at)) => {
            Selector::At(parse_time(at).map_err(|e| usage(format!("--at: {e}")))?)
        }
        (None, false, None) => {
            return Err(
                usage("which snapshot? pass --snapshot ID, --latest or --at TIME")
                    .with_hint("`lifeboat-restore list` shows the snapshots"),
            )
        }
    };
    if flags.hold_back_mib == 0 {
        return Err(usage("--hold-back-mib must be at least 1"));
    }
    let (store, config) = open_repository(common).await?;
    let job = match &flags.job {
        Some(j) => {
            lifeboat_cli::known_job(&store, config.as_ref(), j).await?;
            j.clone()
        }
        None => {
            let jobs = catalog::list_jobs(&store).await?;
            match jobs.as_slice() {
                [only] => only.clone(),
                _ => {
                    return Err(usage("which job? pass --job NAME").with_hint(format!(
                        "jobs in {}: {}",
                        store.describe(),
                        if jobs.is_empty() {
                            "none".to_string()
                        } else {
                            jobs.join(", ")
                        }
                    )))
                }
            }
        }
    };
    Ok((store, config, job, selector))
}

/// `--mode file`: a Redis snapshot written as an RDB file.
async fn run_to_file(
    common: &CommonArgs,
    flags: &RestoreFlags,
    path: &std::path::Path,
) -> Result<()> {
    let (store, _config, job, selector) = repository_and_selection(common, flags).await?;
    let manifest = restore::plan_file(
        &store,
        &job,
        &selector,
        path,
        flags.clean,
        chrono::Utc::now(),
    )
    .await?;
    if !common.json {
        println!(
            "Restore plan: snapshot {} of job {:?} (consistent at {}) written as an RDB file to {}.",
            manifest.id,
            job,
            manifest.consistent_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            path.display()
        );
    }
    if flags.dry_run {
        println!("Dry run: nothing was changed.");
        return Ok(());
    }
    if std::io::stdin().is_terminal() && !flags.yes && !confirm()? {
        return Err(Error::new(
            ErrorKind::Refused,
            "restore cancelled at the prompt; nothing was changed",
        ));
    }
    let (stored, raw) = restore::redis_to_file(&store, &manifest, path, flags.clean).await?;
    if common.json {
        print_json(
            &serde_json::json!({"ok": true, "snapshot": manifest.id, "file": path, "bytes": raw}),
        );
    } else {
        println!(
            "Wrote snapshot {} to {} ({} read, {} written, both digests and the RDB checksum verified). Start the stopped server with this file as its dbfilename.",
            manifest.id,
            path.display(),
            human_bytes(stored),
            human_bytes(raw)
        );
    }
    Ok(())
}

/// `--from-file`: an RDB file made elsewhere, into a live Redis.
async fn run_from_file(
    common: &CommonArgs,
    flags: &RestoreFlags,
    file: &std::path::Path,
    target: &str,
) -> Result<()> {
    let target = SecretUrl::parse(target).map_err(|e| usage(format!("--to: {e}")))?;
    if !matches!(target.scheme(), "redis" | "rediss") {
        return Err(usage(format!(
            "--from-file loads an RDB file into Redis; --to must be redis:// or rediss://..., got {target}"
        )));
    }
    if std::io::stdin().is_terminal() && !flags.yes && !flags.dry_run && !confirm()? {
        return Err(Error::new(
            ErrorKind::Refused,
            "restore cancelled at the prompt; nothing was changed",
        ));
    }
    let options = RestoreOptions {
        clean: flags.clean,
        replace: flags.replace,
        db_map: flags.db_map.iter().copied().collect(),
        swap: false,
        no_owner: false,
        tools: tools_dir(None),
        hold_back: flags.hold_back_mib * 1024 * 1024,
        now: chrono::Utc::now(),
    };
    let (summary, restored) =
        restore::rdb_file_into_redis(file, &target, &options, flags.dry_run).await?;
    if flags.dry_run {
        if common.json {
            print_json(
                &serde_json::json!({"ok": true, "dry_run": true, "file": file, "rdb_version": summary.rdb_version, "keys": summary.total_keys()}),
            );
        } else {
            println!(
                "Dry run: {} is a valid RDB file (version {}, {}, checksum verified) and {target} can take it; nothing was changed.",
                file.display(),
                summary.rdb_version,
                lifeboat_core::backup::counted(summary.total_keys(), "key")
            );
        }
        return Ok(());
    }
    if common.json {
        print_json(
            &serde_json::json!({"ok": true, "file": file, "keys": restored, "rdb_version": summary.rdb_version}),
        );
    } else {
        println!(
            "Loaded {} from {} (RDB version {}, checksum verified) into {target}.",
            lifeboat_core::backup::counted(restored, "key"),
            file.display(),
            summary.rdb_version
        );
    }
    Ok(())
}

fn plan_json(plan: &RestorePlan) -> serde_json::Value {
    serde_json::json!({
        "job": plan.job,
        "snapshot": plan.snapshot.id,
        "consistent_at": plan.snapshot.consistent_at,
        "dump_format": plan.snapshot.dump_format,
        "stored_size": plan.snapshot.object.stored_size,
        "raw_size": plan.snapshot.object.raw_size,
        "target": plan.target,
        "target_server_version": plan.target_state.server_version,
        "target_objects": plan.target_state.objects,
        "clean": plan.clean,
    })
}

fn print_plan(plan: &RestorePlan) {
    let m = &plan.snapshot;
    println!("Restore plan:");
    println!("  job            {}", plan.job);
    println!("  snapshot       {} ({})", m.id, m.dump_format);
    println!(
        "  consistent at  {}",
        m.consistent_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let product = if m.engine == "redis" {
        "Redis"
    } else {
        "PostgreSQL"
    };
    println!(
        "  source         {} ({product} {})",
        m.source.url, m.source.server_version
    );
    println!(
        "  size           {} stored, {} raw",
        human_bytes(m.object.stored_size),
        human_bytes(m.object.raw_size)
    );
    println!(
        "  target         {} ({product} {})",
        plan.target, plan.target_state.server_version
    );
    if m.engine == "redis" {
        println!(
            "  existing keys  {} in the databases restored into{}",
            plan.target_state.objects,
            if plan.swap {
                " (--mode swap: loaded into empty spare databases, then swapped in with SWAPDB; the previous data is then removed)"
            } else if plan.clean {
                " (--clean empties them first)"
            } else {
                ""
            }
        );
        println!("  safety         the whole snapshot is checked (digests, RDB CRC64) before any key is written");
        return;
    }
    if plan.clean {
        println!(
            "  --clean        objects of the dump that exist in the target are dropped and replaced ({} objects there now)",
            plan.target_state.objects
        );
    }
    println!("  safety         one transaction; committed only after both SHA-256 digests match");
}

fn confirm() -> Result<bool> {
    eprint!("Restore into the target now? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| usage(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}
