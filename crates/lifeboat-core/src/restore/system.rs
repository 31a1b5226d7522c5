//! Whole-system restore: every job of an application (its database, its Redis, its uploads)
//! brought back as of one instant, in one plan with one confirmation.
//!
//! Each job keeps its own restore and its own safety (one transaction, staging then swap,
//! staging then rename): a whole-system restore is the single-job restore run in order, with
//! the snapshots picked together and every outcome reported, including those that completed
//! before one failed.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{plan_snapshot, RestoreOptions, RestorePlan, RestoreReport};
use crate::catalog::{self, Selector};
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Keys;
use crate::store::Store;

/// One job of a whole-system restore, as the caller resolved it.
pub struct JobRequest {
    /// The job.
    pub job: String,
    /// Where it goes (`--to JOB=URL`, or the job's `restore-to`).
    pub to: String,
    /// Its restore options (the shared flags with the job's own `pg-bin-dir`).
    pub options: RestoreOptions,
    /// What decrypts its snapshots.
    pub keys: Keys,
}

/// One planned step.
pub struct Step {
    /// The single-job plan.
    pub plan: RestorePlan,
    /// Its options.
    pub options: RestoreOptions,
    /// Its keys.
    pub keys: Keys,
}

/// A job without a snapshot at or before the instant.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    /// The job.
    pub job: String,
    /// Why (the selection's error, e.g. its oldest snapshot).
    pub reason: String,
}

/// Every job's snapshot and target, in the order they will be restored.
pub struct SystemPlan {
    /// Which snapshots were asked for (`--at T` or `--latest`).
    pub selector: Selector,
    /// The steps, databases first, then files.
    pub steps: Vec<Step>,
    /// Jobs without a snapshot (only with `allow_missing`; otherwise the plan is refused).
    pub missing: Vec<Missing>,
}

impl SystemPlan {
    /// The newest consistent-at minus the oldest: how far apart the restored jobs' data is.
    pub fn skew(&self) -> chrono::Duration {
        let times = self.steps.iter().map(|s| s.plan.snapshot.consistent_at);
        match (times.clone().min(), times.max()) {
            (Some(oldest), Some(newest)) => newest - oldest,
            _ => chrono::Duration::zero(),
        }
    }
}

impl Serialize for SystemPlan {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serde_json::json!({
            "selector": self.selector.to_string(),
            "skew_secs": self.skew().num_seconds(),
            "jobs": self.steps.iter().map(|s| &s.plan).collect::<Vec<_>>(),
            "missing": self.missing,
        })
        .serialize(serializer)
    }
}

/// The jobs `--all-jobs` restores: the configured ones, or, without a configuration (or one
/// with no jobs), every job in the repository.
pub async fn every_job<S: Store>(
    store: &S,
    config: Option<&crate::config::Config>,
) -> Result<Vec<String>> {
    match config {
        Some(c) if !c.jobs.is_empty() => Ok(c.jobs.iter().map(|j| j.name.clone()).collect()),
        _ => catalog::list_jobs(store).await,
    }
}

/// Refuses the flags of one engine's restore (`--db-map`, `--mode`, `--table`...): they belong
/// to a single job.
pub fn refuse_single_job_flags(options: &RestoreOptions) -> Result<()> {
    match options.choices().first() {
        Some(choice) => Err(Error::config(format!(
            "{} applies to one job's restore, not to a whole-system restore",
            choice.flag()
        ))
        .with_hint("restore that job on its own with --job NAME, or leave the flag out")),
        None => Ok(()),
    }
}

/// The restore of each of `jobs`: its target from `--to JOB=URL` (`to`) or its `restore-to`,
/// `options` with its own `pg-bin-dir`, and `keys_for` its keys.
pub fn requests(
    config: Option<&crate::config::Config>,
    jobs: &[String],
    to: &[String],
    options: &RestoreOptions,
    keys_for: impl Fn(&str) -> Result<Keys>,
) -> Result<Vec<JobRequest>> {
    let mut targets = targets_by_job(to)?;
    if let Some(stray) = targets.keys().find(|j| !jobs.contains(j)) {
        return Err(Error::config(format!(
            "--to names job {stray:?}, which this restore does not include"
        ))
        .with_hint(format!("the jobs restored: {}", jobs.join(", "))));
    }
    jobs.iter()
        .map(|job| {
            let configured = config.and_then(|c| c.jobs.iter().find(|j| &j.name == job));
            let to = targets
                .remove(job)
                .or_else(|| configured.and_then(|j| j.restore_to.clone()))
                .ok_or_else(|| {
                    Error::config(format!("job {job:?} has no restore target")).with_hint(format!(
                        "pass --to {job}=URL, or set restore-to in its [[job]] table (and the variable it names, if it names one)"
                    ))
                })?;
            let options = super::with_job_settings(options.clone(), config, job);
            Ok(JobRequest {
                job: job.clone(),
                to,
                options,
                keys: keys_for(job)?,
            })
        })
        .collect()
}

/// `--to JOB=URL` values by job; a value without `JOB=` (or whose part before `=` is not a job
/// name, like `postgres://h/db?sslmode=require`) is refused: with several jobs each target
/// must say whose it is.
fn targets_by_job(values: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    let mut targets = std::collections::BTreeMap::new();
    for value in values {
        let named = value
            .split_once('=')
            .filter(|(job, _)| crate::config::validate_job_name(job).is_ok());
        let Some((job, to)) = named else {
            return Err(Error::config(format!(
                "--to {value:?}: with several jobs, each --to is JOB=URL (e.g. --to app-db=postgres://...)"
            )));
        };
        if targets.insert(job.to_string(), to.to_string()).is_some() {
            return Err(Error::config(format!("--to names job {job:?} twice")));
        }
    }
    Ok(targets)
}

/// Picks every job's snapshot at or before the instant (or its latest), checks its keys and
/// inspects its target; changes nothing. A job without a snapshot refuses the whole plan
/// unless `allow_missing`.
pub async fn plan<S: Store>(
    store: &S,
    requests: Vec<JobRequest>,
    selector: &Selector,
    allow_missing: bool,
    now: DateTime<Utc>,
) -> Result<SystemPlan> {
    if matches!(selector, Selector::Id(_)) {
        return Err(Error::config(
            "a whole-system restore picks every job's snapshot by time: pass --at TIME or --latest, not --snapshot",
        ));
    }
    let mut picked = Vec::new();
    let mut missing = Vec::new();
    for request in requests {
        let listing = catalog::list_snapshots(store, &request.job).await?;
        match catalog::select(&listing.snapshots, &request.job, selector, now) {
            Ok(snapshot) => {
                let passed_over = catalog::damaged_newer_than(&listing, snapshot, selector, now);
                picked.push((request, snapshot.clone(), passed_over));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => missing.push(Missing {
                job: request.job.clone(),
                reason: match e.hint() {
                    Some(hint) => format!("{}; {hint}", e.message()),
                    None => e.message().to_string(),
                },
            }),
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() && !allow_missing {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "no whole-system restore: {}",
                missing
                    .iter()
                    .map(|m| m.reason.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
        .with_hint(
            "pick an instant every job has a snapshot at or before, or pass --allow-missing to restore the others",
        ));
    }
    if picked.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            "no job has a snapshot to restore",
        ));
    }
    // Databases first, then files; jobs of one engine keep the order they were named in.
    picked.sort_by_key(|(_, snapshot, _)| {
        Engine::of(snapshot).map_or(u8::MAX, Engine::restore_order)
    });
    let mut steps = Vec::new();
    for (request, snapshot, passed_over) in picked {
        crate::readback::unlock(store, &snapshot, &request.keys)
            .await
            .map_err(|e| e.with_context("job", &request.job))?;
        let mut plan = plan_snapshot(&request.job, snapshot, &request.to, &request.options)
            .await
            .map_err(|e| e.with_context("job", &request.job))?;
        plan.passed_over = passed_over;
        steps.push(Step {
            plan,
            options: request.options,
            keys: request.keys,
        });
    }
    Ok(SystemPlan {
        selector: selector.clone(),
        steps,
        missing,
    })
}

/// What became of one job.
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Restored and verified.
    Restored {
        /// The job.
        job: String,
        /// Its restore.
        report: RestoreReport,
    },
    /// Its restore failed; its target was left as it was.
    Failed {
        /// The job.
        job: String,
        /// What went wrong.
        kind: String,
        /// The error.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// Not started, because an earlier job failed.
    NotStarted {
        /// The job.
        job: String,
    },
}

/// Every job's outcome, and the error of the one that failed.
pub struct SystemReport {
    /// One per step, in order.
    pub outcomes: Vec<Outcome>,
    /// The failure that stopped the restore, if one did.
    pub error: Option<Error>,
}

/// Restores the steps in order; the first failure stops the ones after it, and what completed
/// before it stays reported.
pub async fn apply<S: Store>(store: &S, plan: &SystemPlan) -> SystemReport {
    let mut outcomes = Vec::new();
    let mut error = None;
    for step in &plan.steps {
        let job = step.plan.job.clone();
        if error.is_some() {
            outcomes.push(Outcome::NotStarted { job });
            continue;
        }
        match super::apply(store, &step.plan, &step.options, &step.keys).await {
            Ok(report) => outcomes.push(Outcome::Restored { job, report }),
            Err(e) => {
                outcomes.push(Outcome::Failed {
                    job,
                    kind: e.kind().as_str().to_string(),
                    message: e.message().to_string(),
                    hint: e.hint().map(str::to_string),
                });
                error = Some(e);
            }
        }
    }
    SystemReport { outcomes, error }
}
