//! The maintenance subcommands of `lifeboat-backup`: `prune`, `unlock` and `keygen`.

use std::time::Duration;

use lifeboat_cli::{print_json, usage};
use lifeboat_core::config;
use lifeboat_core::prune::{self, PruneOptions};
use lifeboat_core::report::human;
use lifeboat_core::{lock, retention, Error, ErrorKind, Result};

use crate::args::{BackupArgs, KeygenArgs, PruneArgs, UnlockArgs};

/// `lifeboat-backup keygen --output FILE`: a new identity, and its public key on stdout.
pub fn keygen(args: &BackupArgs, keygen: &KeygenArgs) -> Result<i32> {
    let public =
        lifeboat_core::pipeline::encrypt::write_new_identity(&keygen.output, chrono::Utc::now())?;
    if args.common.json {
        print_json(&serde_json::json!({
            "ok": true,
            "identity_file": keygen.output,
            "public_key": public,
        }));
    } else {
        println!("{public}");
        eprintln!(
            "Wrote the identity to {} (readable by you only). Put the public key above in \
             [encryption] recipients; keep the identity where restores run, not on the backup host, \
             and keep a copy somewhere safe: without it, its snapshots cannot be restored.",
            keygen.output.display()
        );
    }
    Ok(0)
}

/// `lifeboat-backup prune`: plan (and apply) retention for the chosen jobs.
pub async fn prune(args: &BackupArgs, prune_args: &PruneArgs) -> Result<i32> {
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
    let configured: Vec<_> = config
        .iter()
        .flat_map(|c| &c.jobs)
        .map(|j| (j.name.clone(), j.retention.clone()))
        .collect();
    let (targets, without_policy) =
        prune::targets(&configured, &prune_args.jobs, override_policy.as_ref())?;
    if !json {
        without_policy
            .iter()
            .for_each(|n| println!("Job {n:?} has no retention policy: nothing to prune."));
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
    let holder = lifeboat_cli::holder("lifeboat-backup");
    let mut reports = Vec::new();
    for (job, policy) in &targets {
        let report = prune::prune_locked(&store, job, policy, &options, &holder).await?;
        if !json {
            print!(
                "Job {job:?}:\n{}{}",
                report.plan.render(),
                human::prune(&report)
            );
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

/// `lifeboat-backup unlock JOB`: remove a lock left by a crashed run, after asking.
pub async fn unlock(args: &BackupArgs, unlock: &UnlockArgs) -> Result<i32> {
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
    if !unlock.yes
        && !lifeboat_cli::confirm_on_terminal(
            "Remove the lock? Only do this if that run is not active.",
        )?
    {
        return Err(Error::new(ErrorKind::Refused, "the lock was left in place"));
    }
    lock::force_unlock(&store, &unlock.job).await?;
    println!("Removed the lock of job {:?}.", unlock.job);
    Ok(0)
}
