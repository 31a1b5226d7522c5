//! `lifeboat-restore`: list snapshots, or plan, confirm and apply a restore.

mod args;

use std::future::Future;
use std::process::ExitCode;

use args::{Command, ListArgs, RestoreArgs, RestoreFlags, RestoreMode};
use clap::Parser;
use lifeboat_cli::{print_json, report_error, usage, CommonArgs};
use lifeboat_core::catalog::Selector;
use lifeboat_core::config::Config;
use lifeboat_core::pipeline::Keys;
use lifeboat_core::report::{self, human};
use lifeboat_core::restore::{self, RestoreOptions};
use lifeboat_core::store::AnyStore;
use lifeboat_core::{Error, Result};

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
                    Some(Command::List(_)) if !args.restore.job.is_empty() => Err(usage(
                        "--job before `list` names a job to restore; write `list --job NAME`",
                    )),
                    Some(Command::List(list)) => run_list(&args.common, list).await.map(|()| 0),
                    None if args.restore.all_jobs || args.restore.job.len() > 1 => {
                        run_system(&args.common, &args.restore).await
                    }
                    None => run_restore(&args.common, &args.restore).await.map(|()| 0),
                }
            };
            match lifeboat_cli::until_signal(work).await {
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

async fn open_repository(common: &CommonArgs) -> Result<(AnyStore, Option<Config>)> {
    let config = lifeboat_cli::load_config(common)?;
    let store = lifeboat_cli::open_repository(common, config.as_ref()).await?;
    Ok((store, config))
}

async fn run_list(common: &CommonArgs, list: &ListArgs) -> Result<()> {
    let (store, config) = open_repository(common).await?;
    for job in &list.job {
        lifeboat_cli::known_job(&store, config.as_ref(), job).await?;
    }
    let statuses =
        report::job_statuses(&store, config.as_ref(), &list.job, chrono::Utc::now()).await?;
    if common.json {
        print_json(&serde_json::json!({"ok": true, "jobs": statuses}));
    } else {
        statuses
            .iter()
            .for_each(|s| lifeboat_cli::out!("{}", human::job_status(s)));
    }
    Ok(())
}

async fn run_restore(common: &CommonArgs, flags: &RestoreFlags) -> Result<()> {
    if flags.allow_missing {
        return Err(usage(
            "--allow-missing is for a whole-system restore: pass --all-jobs or several --job",
        ));
    }
    let single_to = match flags.to.as_slice() {
        [] => None,
        [to] => Some(to.as_str()),
        _ => {
            return Err(usage(
                "--to is given more than once: one job restores to one target",
            )
            .with_hint("to restore several jobs together, name each with --job and give --to JOB=URL for each"))
        }
    };
    let to =
        lifeboat_cli::url_flag(single_to, flags.to_env.as_deref(), "to")?.ok_or_else(|| {
            usage("where should it be restored? pass --to URL (or a directory for files)")
                .with_hint(
                    "e.g. --to postgres://user@host:5432/new_db (create it first with createdb)",
                )
        })?;
    let options = options_of(flags)?;
    let now = chrono::Utc::now();
    let (store, plan, keys, options) = match &flags.from_file {
        Some(file) => {
            if common.repo.is_some() || common.config.is_some() {
                return Err(usage(
                    "--from-file restores a file, not a repository: drop --repo and --config",
                ));
            }
            let (store, plan) =
                restore::plan_from_file(file, &to, flags.engine, &options, now).await?;
            (AnyStore::Local(store), plan, Keys::none(), options)
        }
        None => {
            let (store, config, job, selector) = repository_and_selection(common, flags).await?;
            let options = restore::with_job_settings(options, config.as_ref(), &job);
            let keys = flags.keys.keys(config.as_ref(), Some(&job))?;
            let plan = restore::plan(&store, &job, &selector, &to, &options, &keys, now).await?;
            (store, plan, keys, options)
        }
    };
    let consent = plan.needs_consent();
    lifeboat_cli::refuse_without_consent(consent.iter(), flags.dry_run, flags.yes)?;
    let question = if consent.is_some() {
        "Restore this older snapshot into the target now?"
    } else {
        "Restore into the target now?"
    };
    if !lifeboat_cli::show_plan_and_confirm(
        common,
        &plan,
        &human::restore_plan(&plan),
        flags.dry_run,
        flags.yes,
        question,
    )? {
        return Ok(());
    }
    let mut report = with_progress(
        common,
        &plan.job,
        restore::apply(&store, &plan, &options, &keys),
    )
    .await?;
    report
        .notes
        .extend(consent.map(|c| format!("warning: {c}")));
    if common.json {
        print_json(&serde_json::json!({"ok": true, "report": report}));
    } else {
        lifeboat_cli::outln!("{}", human::restore_done(&report));
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
    let job = lifeboat_cli::pick_job(
        &store,
        config.as_ref(),
        flags.job.first().map(String::as_str),
    )
    .await?;
    Ok((store, config, job, selector))
}

/// Runs `work` with a progress line for `what` on a terminal.
async fn with_progress<T>(common: &CommonArgs, what: &str, work: impl Future<Output = T>) -> T {
    let _progress = lifeboat_cli::progress::Progress::start(common, "restore", what);
    work.await
}

/// The restore options the flags give, before any job's own settings.
fn options_of(flags: &RestoreFlags) -> Result<RestoreOptions> {
    if flags.hold_back_mib == 0 {
        return Err(usage("--hold-back-mib must be at least 1"));
    }
    Ok(RestoreOptions {
        mode: match flags.mode {
            RestoreMode::Live => restore::RestoreMode::Load,
            RestoreMode::Swap => restore::RestoreMode::Swap,
            RestoreMode::File => restore::RestoreMode::File,
        },
        clean: flags.clean,
        replace: flags.replace,
        db_map: flags.db_map.iter().copied().collect(),
        no_owner: flags.no_owner,
        tables: flags.table.clone(),
        schemas: flags.schema.clone(),
        globals: flags.globals,
        rename: flags.rename.clone(),
        pg_bin_dir: flags.pg_bin_dir.clone(),
        hold_back: flags.hold_back_mib * 1024 * 1024,
    })
}

/// `--all-jobs` or several `--job`: every job as of one instant, one plan, one confirmation.
/// Returns the exit code: the failed job's, once every job's outcome is reported.
async fn run_system(common: &CommonArgs, flags: &RestoreFlags) -> Result<i32> {
    use lifeboat_core::restore::system;
    if flags.to_env.is_some() {
        return Err(usage(
            "--to-env names one target; a whole-system restore takes --to JOB=URL for each job",
        ));
    }
    let options = options_of(flags)?;
    system::refuse_single_job_flags(&options)?;
    if flags.snapshot.is_some() || (!flags.latest && flags.at.is_none()) {
        return Err(usage(
            "a whole-system restore picks every job's snapshot by time: pass --at TIME or --latest",
        )
        .with_hint(
            "`lifeboat-restore list` shows each job's snapshots and their consistent-at times",
        ));
    }
    let selector = Selector::from_flags(None, flags.latest, flags.at.as_deref())?;
    let (store, config) = open_repository(common).await?;
    let jobs = if flags.all_jobs {
        system::every_job(&store, config.as_ref()).await?
    } else {
        for job in &flags.job {
            lifeboat_cli::known_job(&store, config.as_ref(), job).await?;
        }
        flags.job.clone()
    };
    let requests = system::requests(config.as_ref(), &jobs, &flags.to, &options, |job| {
        flags.keys.keys(config.as_ref(), Some(job))
    })?;
    let now = chrono::Utc::now();
    let plan = system::plan(&store, requests, &selector, flags.allow_missing, now).await?;
    let consents: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| s.plan.needs_consent())
        .collect();
    lifeboat_cli::refuse_without_consent(consents.iter(), flags.dry_run, flags.yes)?;
    if !lifeboat_cli::show_plan_and_confirm(
        common,
        &plan,
        &human::system_plan(&plan),
        flags.dry_run,
        flags.yes,
        &format!("Restore these {} jobs now?", plan.steps.len()),
    )? {
        return Ok(0);
    }
    let jobs: Vec<&str> = plan.steps.iter().map(|s| s.plan.job.as_str()).collect();
    let report = with_progress(common, &jobs.join(", "), system::apply(&store, &plan)).await;
    if common.json {
        print_json(&serde_json::json!({
            "ok": report.error.is_none(),
            "outcomes": report.outcomes,
            "missing": plan.missing,
        }));
    } else {
        lifeboat_cli::out!("{}", human::system_report(&report, &plan.missing));
    }
    Ok(match &report.error {
        None => 0,
        // In JSON the failure is in the one document above, with every job's outcome.
        Some(e) if common.json => e.exit_code(),
        Some(e) => report_error(e, false),
    })
}
