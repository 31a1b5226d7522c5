//! The maintenance subcommands of `lifeboat-backup`: `prune`, `copy`, `forget`, `pin`,
//! `unpin`, `unlock`, `keygen` and `schedule`.

use std::time::Duration;

use lifeboat_cli::{print_json, usage};
use lifeboat_core::config;
use lifeboat_core::prune::{self, PruneOptions};
use lifeboat_core::report::human;
use lifeboat_core::{lock, retention, Error, ErrorKind, Result};

use crate::args::{
    BackupArgs, CopyArgs, ForgetArgs, KeygenArgs, PinArgs, PruneArgs, ScheduleArgs, UnlockArgs,
    UnpinArgs,
};
use lifeboat_core::catalog::{self, SnapshotId};
use lifeboat_core::store::AnyStore;

/// `lifeboat-backup schedule --print FORMAT`: deployment files for the configured schedules.
pub fn schedule(args: &BackupArgs, schedule: &ScheduleArgs) -> Result<i32> {
    use lifeboat_core::deploy;
    let config = lifeboat_cli::load_config(&args.common)?.ok_or_else(|| {
        usage("schedule needs a configuration: there is no ./lifeboat.toml and no --config")
            .with_hint("pass --config FILE; its jobs' schedule keys and [verify]/[drill] tables say what runs when")
    })?;
    let config_path = match &schedule.config_path {
        Some(path) => path.clone(),
        None => config
            .file
            .as_deref()
            .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf()))
            .unwrap_or_else(|| deploy::Target::default().config),
    };
    let bin_dir = match &schedule.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf))
            .unwrap_or_else(|| deploy::Target::default().bin_dir),
    };
    let target = deploy::Target {
        config: config_path,
        bin_dir,
        log_dir: schedule.log_dir.clone(),
        env_file: schedule.env_file.clone(),
        image: schedule.image.clone(),
        ..deploy::Target::default()
    };
    let generated = deploy::generate(&config, schedule.print, &target)?;
    for job in &generated.unscheduled {
        tracing::warn!("Job {job:?} has no schedule, so nothing generated here runs it.");
    }
    match &schedule.output_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::new(
                    ErrorKind::Store,
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
            for file in &generated.files {
                let path = dir.join(&file.name);
                std::fs::write(&path, &file.contents).map_err(|e| {
                    Error::new(
                        ErrorKind::Store,
                        format!("cannot write {}: {e}", path.display()),
                    )
                    .with_hint("check that the directory exists and is writable")
                })?;
                eprintln!("Wrote {}", path.display());
            }
        }
        None => {
            let several = generated.files.len() > 1;
            for file in &generated.files {
                if several {
                    lifeboat_cli::outln!("# ==> {} <==", file.name);
                }
                lifeboat_cli::out!("{}", file.contents);
                if several {
                    lifeboat_cli::outln!();
                }
            }
        }
    }
    Ok(0)
}

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
        lifeboat_cli::outln!("{public}");
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
        without_policy.iter().for_each(|n| {
            lifeboat_cli::outln!("Job {n:?} has no retention policy: nothing to prune.")
        });
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
        report_keep: config
            .as_ref()
            .map_or_else(Default::default, |c| c.defaults.clone())
            .report_keep(),
    };
    let holder = lifeboat_cli::holder("lifeboat-backup");
    let mut reports = Vec::new();
    for (job, policy) in &targets {
        let report = prune::prune_locked(&store, job, policy, &options, &holder).await?;
        if !json {
            lifeboat_cli::out!(
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
            lifeboat_cli::outln!("Job {:?} is not locked.", unlock.job);
            return Ok(0);
        }
        Some(Ok(held)) => {
            lifeboat_cli::outln!("Job {:?} is locked by {}.", unlock.job, held.describe())
        }
        Some(Err(unreadable)) => lifeboat_cli::outln!(
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
    lifeboat_cli::outln!("Removed the lock of job {:?}.", unlock.job);
    Ok(0)
}

/// The repository and the snapshot id that `forget`, `pin` and `unpin` name.
async fn named_snapshot(args: &BackupArgs, job: &str, id: &str) -> Result<(AnyStore, SnapshotId)> {
    config::validate_job_name(job)?;
    let id: SnapshotId = id.parse().map_err(usage)?;
    let config = lifeboat_cli::load_config(&args.common)?;
    let store = lifeboat_cli::open_repository(&args.common, config.as_ref()).await?;
    lifeboat_cli::known_job(&store, config.as_ref(), job).await?;
    Ok((store, id))
}

/// `lifeboat-backup forget JOB SNAPSHOT`: forget one snapshot, with the guards retention has.
pub async fn forget(args: &BackupArgs, forget: &ForgetArgs) -> Result<i32> {
    let (store, id) = named_snapshot(args, &forget.job, &forget.snapshot).await?;
    let now = chrono::Utc::now();
    if forget.force && !forget.dry_run && !forget.yes {
        let guards = prune::forget_guards(&store, &forget.job, &id, now).await?;
        if !guards.is_empty()
            && !lifeboat_cli::confirm_on_terminal(&format!(
                "Snapshot {id} is guarded: {}. Forget it anyway?",
                guards.join("; ")
            ))?
        {
            return Err(Error::new(ErrorKind::Refused, "nothing was forgotten"));
        }
    }
    let holder = lifeboat_cli::holder("lifeboat-backup");
    let report = prune::forget_by_id(
        &store,
        &forget.job,
        &id,
        forget.force,
        forget.dry_run,
        &holder,
        now,
    )
    .await?;
    if args.common.json {
        print_json(&serde_json::json!({"ok": true, "forget": report}));
        return Ok(0);
    }
    let overridden = if report.overridden.is_empty() {
        String::new()
    } else {
        format!(" (--force: {})", report.overridden.join("; "))
    };
    if report.dry_run {
        lifeboat_cli::outln!(
            "Would forget snapshot {id} of job {:?}{overridden}. Dry run: nothing was changed.",
            forget.job
        );
    } else {
        lifeboat_cli::outln!("Forgot snapshot {id} of job {:?}{overridden}.", forget.job);
    }
    Ok(0)
}

/// `lifeboat-backup pin JOB SNAPSHOT [--note TEXT]`.
pub async fn pin(args: &BackupArgs, pin: &PinArgs) -> Result<i32> {
    let (store, id) = named_snapshot(args, &pin.job, &pin.snapshot).await?;
    let now = chrono::Utc::now();
    let holder = lifeboat_cli::holder("lifeboat-backup");
    let record = catalog::Pin {
        pinned_at: now,
        pinned_by: format!(
            "{}@{}",
            std::env::var("USER").unwrap_or_else(|_| "someone".into()),
            holder.host
        ),
        note: pin.note.clone(),
    };
    lock::holding(
        &store,
        &pin.job,
        &holder,
        now,
        catalog::pin(&store, &pin.job, &id, &record),
    )
    .await?;
    if args.common.json {
        print_json(&serde_json::json!({"ok": true, "job": pin.job, "snapshot": id, "pin": record}));
    } else {
        lifeboat_cli::outln!(
            "Pinned snapshot {id} of job {:?}: retention keeps it until `lifeboat-backup unpin {} {id}`.",
            pin.job, pin.job
        );
    }
    Ok(0)
}

/// `lifeboat-backup unpin JOB SNAPSHOT`.
pub async fn unpin(args: &BackupArgs, unpin: &UnpinArgs) -> Result<i32> {
    let (store, id) = named_snapshot(args, &unpin.job, &unpin.snapshot).await?;
    let now = chrono::Utc::now();
    let holder = lifeboat_cli::holder("lifeboat-backup");
    let released = lock::holding(
        &store,
        &unpin.job,
        &holder,
        now,
        catalog::unpin(&store, &unpin.job, &id),
    )
    .await?;
    if args.common.json {
        print_json(
            &serde_json::json!({"ok": true, "job": unpin.job, "snapshot": id, "was_pinned": released}),
        );
    } else if released {
        lifeboat_cli::outln!(
            "Unpinned snapshot {id} of job {:?}: its retention policy applies again.",
            unpin.job
        );
    } else {
        lifeboat_cli::outln!("Snapshot {id} of job {:?} was not pinned.", unpin.job);
    }
    Ok(0)
}

/// `lifeboat-backup copy`: into `--to-repo`, or into each `[[copy]]` destination.
pub async fn copy(args: &BackupArgs, copy: &CopyArgs) -> Result<i32> {
    let config = lifeboat_cli::load_config(&args.common)?;
    let source = lifeboat_cli::open_repository(&args.common, config.as_ref()).await?;
    for job in &copy.jobs {
        lifeboat_cli::known_job(&source, config.as_ref(), job).await?;
    }
    let targets: Vec<(config::StoreSpec, Vec<String>)> = match &copy.to_repo {
        Some(url) => vec![(
            config::StoreSpec {
                url: Some(url.clone()),
                endpoint: copy.to_endpoint.clone(),
                region: copy.to_region.clone(),
                path_style: copy.to_path_style.then_some(true),
                profile: copy.to_profile.clone(),
                ..Default::default()
            },
            copy.jobs.clone(),
        )],
        None => {
            let copies = config
                .as_ref()
                .map(|c| c.copies.clone())
                .unwrap_or_default();
            if copies.is_empty() {
                return Err(usage("copy to where? pass --to-repo REPO, or add a [[copy]] table to the configuration")
                    .with_hint("e.g. lifeboat-backup copy --to-repo s3://offsite-bucket/lifeboat"));
            }
            copies
                .into_iter()
                .map(|c| {
                    let jobs = if copy.jobs.is_empty() {
                        c.jobs
                    } else {
                        copy.jobs.clone()
                    };
                    (c.to, jobs)
                })
                .collect()
        }
    };
    let mut reports = Vec::new();
    for (to, jobs) in &targets {
        let destination = lifeboat_core::copy::open_destination(to, &source).await?;
        let holder = lifeboat_cli::holder("lifeboat-backup");
        for report in
            lifeboat_core::copy::copy_jobs(&source, &destination, jobs, &holder, copy.dry_run)
                .await?
        {
            if !args.common.json {
                lifeboat_cli::out!("{}", human::copy(&report));
            }
            reports.push(report);
        }
    }
    // Damaged snapshots were left out and every other one copied; the run still fails with 3.
    let damage = reports
        .iter()
        .find_map(lifeboat_core::copy::CopyReport::damage);
    if args.common.json {
        print_json(&serde_json::json!({
            "ok": damage.is_none(),
            "dry_run": copy.dry_run,
            "copies": reports,
            "error": damage.as_ref().map(lifeboat_core::Error::to_json),
        }));
        return Ok(damage.map_or(0, |e| e.exit_code()));
    }
    match damage {
        Some(e) => Err(e),
        None => Ok(0),
    }
}
