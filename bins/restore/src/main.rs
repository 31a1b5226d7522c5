//! `lifeboat-restore`: list snapshots, or plan, confirm and apply a restore.

mod args;

use std::process::ExitCode;

use args::{Command, ListArgs, RestoreArgs, RestoreFlags, RestoreMode};
use clap::Parser;
use lifeboat_cli::{print_json, report_error, usage, CommonArgs};
use lifeboat_core::catalog::{self, Selector};
use lifeboat_core::config::Config;
use lifeboat_core::pipeline::Keys;
use lifeboat_core::report::{self, human};
use lifeboat_core::restore::{self, RestoreOptions};
use lifeboat_core::store::AnyStore;
use lifeboat_core::{Error, ErrorKind, Result};

fn main() -> ExitCode {
    let args = RestoreArgs::parse();
    if let Some(code) = lifeboat_cli::print_docs::<RestoreArgs>(&args.common) {
        return ExitCode::from(code as u8);
    }
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

async fn open_repository(common: &CommonArgs) -> Result<(AnyStore, Option<Config>)> {
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
    let mut statuses = Vec::new();
    for job in &jobs {
        let configured = config
            .as_ref()
            .and_then(|c| c.jobs.iter().find(|j| &j.name == job));
        let policy = configured.and_then(|j| j.retention.as_ref());
        let schedule = configured.and_then(|j| j.schedule.as_ref());
        let status = report::job_status(&store, job, policy, schedule, chrono::Utc::now()).await?;
        if !common.json {
            print!("{}", human::job_status(&status));
        }
        statuses.push(status);
    }
    if common.json {
        print_json(&serde_json::json!({"ok": true, "jobs": statuses}));
    }
    Ok(())
}

async fn run_restore(common: &CommonArgs, flags: &RestoreFlags) -> Result<()> {
    let to = lifeboat_cli::url_flag(flags.to.as_deref(), flags.to_env.as_deref(), "to")?
        .ok_or_else(|| {
            usage("where should it be restored? pass --to URL (or a directory for files)")
                .with_hint(
                    "e.g. --to postgres://user@host:5432/new_db (create it first with createdb)",
                )
        })?;
    if flags.hold_back_mib == 0 {
        return Err(usage("--hold-back-mib must be at least 1"));
    }
    let mut options = RestoreOptions {
        mode: match flags.mode {
            RestoreMode::Live => restore::RestoreMode::Load,
            RestoreMode::Swap => restore::RestoreMode::Swap,
            RestoreMode::File => restore::RestoreMode::File,
        },
        clean: flags.clean,
        replace: flags.replace,
        db_map: flags.db_map.iter().copied().collect(),
        no_owner: flags.no_owner,
        pg_bin_dir: flags.pg_bin_dir.clone(),
        hold_back: flags.hold_back_mib * 1024 * 1024,
    };
    let now = chrono::Utc::now();
    let (store, plan, keys) = match &flags.from_file {
        Some(file) => {
            if common.repo.is_some() || common.config.is_some() {
                return Err(usage(
                    "--from-file restores a file, not a repository: drop --repo and --config",
                ));
            }
            let (store, plan) =
                restore::plan_from_file(file, &to, flags.engine, &options, now).await?;
            (AnyStore::Local(store), plan, Keys::none())
        }
        None => {
            let (store, config, job, selector) = repository_and_selection(common, flags).await?;
            if options.pg_bin_dir.is_none() {
                options.pg_bin_dir = config
                    .as_ref()
                    .and_then(|c| c.jobs.iter().find(|j| j.name == job))
                    .and_then(|j| j.engine.pg_bin_dir());
            }
            let keys = flags.keys.keys(config.as_ref(), Some(&job))?;
            let plan = restore::plan(&store, &job, &selector, &to, &options, &keys, now).await?;
            (store, plan, keys)
        }
    };
    if flags.dry_run {
        if common.json {
            print_json(&serde_json::json!({"ok": true, "dry_run": true, "plan": plan}));
        } else {
            print!("{}", human::restore_plan(&plan));
            println!("Dry run: nothing was changed.");
        }
        return Ok(());
    }
    if !common.json {
        print!("{}", human::restore_plan(&plan));
    }
    if !flags.yes && !lifeboat_cli::confirm_on_terminal("Restore into the target now?")? {
        return Err(Error::new(
            ErrorKind::Refused,
            "restore cancelled at the prompt; nothing was changed",
        ));
    }
    let report = restore::apply(&store, &plan, &options, &keys).await?;
    if common.json {
        print_json(&serde_json::json!({"ok": true, "report": report}));
    } else {
        println!("{}", human::restore_done(&report));
    }
    Ok(())
}

/// The repository, its configuration, the job and which of its snapshots the flags select.
async fn repository_and_selection(
    common: &CommonArgs,
    flags: &RestoreFlags,
) -> Result<(AnyStore, Option<Config>, String, Selector)> {
    let selector =
        Selector::from_flags(flags.snapshot.as_deref(), flags.latest, flags.at.as_deref())?;
    let (store, config) = open_repository(common).await?;
    let job = lifeboat_cli::pick_job(&store, config.as_ref(), flags.job.as_deref()).await?;
    Ok((store, config, job, selector))
}
