//! One run of a backup job: take the job's lock, back up, prune (only after a committed
//! snapshot), release the lock; and, when the run is cancelled, clean up within a deadline.
//!
//! The binary decides when a run is cancelled (signals) through a [`Cancel`]; the library
//! decides what a cancelled run must still do: stop renewing the lock so it expires, abort its
//! unfinished uploads, release the lock, all within [`CLEANUP_DEADLINE`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::backup::{backup, BackupOptions, BackupReport};
use crate::catalog;
use crate::config::Job;
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{self, Holder, LockGuard};
use crate::prune::{prune, PruneOptions, PruneReport};
use crate::report::Event;
use crate::store::Store;

/// How long the clean-up of a cancelled run may take (aborting uploads, releasing the lock)
/// before the run gives up on it: an unreachable store must not keep a stopped run alive.
pub const CLEANUP_DEADLINE: Duration = Duration::from_secs(30);

/// Tells a run that it must stop, and why (e.g. "SIGTERM").
#[derive(Clone)]
pub struct Cancel(watch::Receiver<Option<String>>);

/// The other end of a [`Cancel`].
pub struct CancelTrigger(watch::Sender<Option<String>>);

impl Cancel {
    /// A linked pair: `trigger.cancel(reason)` wakes every clone of the `Cancel`.
    pub fn pair() -> (CancelTrigger, Cancel) {
        let (tx, rx) = watch::channel(None);
        (CancelTrigger(tx), Cancel(rx))
    }

    /// A `Cancel` that never fires.
    pub fn never() -> Cancel {
        Cancel::pair().1
    }

    /// Waits until the run is cancelled; returns the reason.
    pub async fn cancelled(&self) -> String {
        let mut rx = self.0.clone();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            // The trigger is gone without firing: never cancelled.
            None => std::future::pending().await,
        }
    }

    /// Runs `work` unless the run is cancelled first (then `work` is dropped: children are
    /// killed and unfinished uploads aborted by their `Drop`, nothing is committed).
    pub async fn run<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            // Work that is done counts as done, even if a signal came in the same instant.
            biased;
            done = work => done,
            reason = self.cancelled() => Err(Error::new(
                ErrorKind::Cancelled,
                format!("interrupted by {reason}"),
            )),
        }
    }
}

impl CancelTrigger {
    /// Asks the run to stop; `reason` ends up in its error.
    pub fn cancel(&self, reason: impl Into<String>) {
        let _ = self.0.send(Some(reason.into()));
    }
}

/// What a run does besides the backup itself.
pub struct JobOptions {
    /// Who takes the lock.
    pub holder: Holder,
    /// See [`BackupOptions::leftover_grace`].
    pub leftover_grace: Duration,
    /// See [`PruneOptions::orphan_grace`](crate::prune::PruneOptions::orphan_grace).
    pub orphan_grace: Duration,
    /// See [`BackupOptions::compression_threads`].
    pub compression_threads: u32,
    /// Prune with the job's policy after a committed snapshot (`--no-prune` turns it off).
    pub prune: bool,
    /// See [`BackupOptions::same_source_only`].
    pub same_source_only: bool,
    /// Told what happens as it happens (progress, notifications, metrics).
    pub observers: crate::report::Observers,
    /// DR reports older than this are removed by the prune after a backup.
    pub report_keep: Duration,
}

/// A committed run.
#[derive(Debug, Serialize)]
pub struct JobReport {
    /// The backup.
    pub report: BackupReport,
    /// The prune that followed, if the job has a policy.
    pub prune: Option<PruneReport>,
    /// The snapshot is committed, but pruning failed (reported, and an exit code of its own).
    #[serde(skip)]
    pub prune_error: Option<Error>,
}

/// Runs one job: lock, backup, prune only after a commit, release. `clock` is read once the
/// lock is held (so runs of a job never overlap in time) and again before pruning.
pub async fn run<S: Store + Clone + 'static>(
    store: &S,
    job: &Job,
    options: &JobOptions,
    clock: &(dyn Fn() -> DateTime<Utc> + Sync),
    cancel: &Cancel,
) -> Result<JobReport> {
    crate::net::set_idle_timeout(job.idle_timeout);
    // The repository exists before the lock is taken, so `unlock` and the other commands find
    // it even when a first run never got further than its lock.
    catalog::ensure_repository(store, clock()).await?;
    let guard = cancel
        .run(lock::acquire(
            store,
            &job.name,
            &options.holder,
            lock::DEFAULT_LEASE,
            clock(),
        ))
        .await?;
    let observers = &options.observers;
    observers.emit(Event::Started { job: &job.name });
    // A host clock that is off the store's by more than the tolerance dates the snapshot by the
    // store's clock instead (so it is neither the "newest" of a future nor a past it never
    // was), and the run prunes nothing: retention must not act on a clock known to be wrong.
    let offset = guard.clock_offset();
    let skewed = offset.abs() > catalog::FUTURE_TOLERANCE;
    let backup_options = BackupOptions {
        now: clock() + offset,
        leftover_grace: options.leftover_grace,
        compression_threads: options.compression_threads,
        same_source_only: options.same_source_only,
        lease: Some(guard.lease()),
        clock_offset: if skewed {
            offset
        } else {
            chrono::Duration::zero()
        },
    };
    let report = match cancel.run(backup(store, job, &backup_options)).await {
        Ok(report) => report,
        Err(e) => {
            if e.kind() == ErrorKind::Cancelled {
                clean_up_cancelled(store, job, guard).await;
            } else {
                release(guard, job).await;
            }
            let e = e
                .within(format!("job {:?}", job.name))
                .with_context("job", &job.name)
                .or_hint("nothing was committed for this run");
            observers.emit(Event::Failed {
                job: &job.name,
                error: &e,
            });
            return Err(e);
        }
    };
    observers.emit(Event::Committed { report: &report });
    // Only after a committed snapshot: a failed backup never prunes.
    let mut pruned = None;
    let mut prune_error = None;
    if let (Some(policy), true) = (&job.retention, options.prune) {
        let pruning = async {
            if skewed {
                return Err(clock_skew_error(offset, store).with_context("job", &job.name));
            }
            // A snapshot dated far past the previous newest (a clock that jumped ahead, which a
            // directory store cannot measure) is not the reference of retention: the plan is
            // judged as of the previous newest, where the new snapshot is one dated in the
            // future (kept, and not counted), so the jump forgets nothing.
            let jump = date_jump(store, job, &report).await?;
            let prune_options = PruneOptions {
                now: jump
                    .as_ref()
                    .map_or_else(|| clock() + offset, |(previous, _)| *previous),
                dry_run: false,
                orphan_grace: options.orphan_grace,
                committed: Some(report.snapshot.clone()),
                report_keep: options.report_keep,
            };
            // A run that lost its lock prunes nothing (its snapshot is committed already).
            guard.confirm().await?;
            let p = prune(store, &job.name, policy, &prune_options).await?;
            Ok((p, jump.map(|(_, alarm)| alarm)))
        };
        match cancel.run(pruning).await {
            Ok((p, alarm)) => {
                observers.emit(Event::Pruned { report: &p });
                pruned = Some(p);
                // The run still fails (exit 1), so that a clock that jumped is noticed before
                // the next run takes this snapshot for the newest.
                if let Some(e) = alarm {
                    observers.emit(Event::Failed {
                        job: &job.name,
                        error: &e,
                    });
                    prune_error = Some(e);
                }
            }
            Err(e) => {
                let e = e
                    .within(format!(
                        "job {:?}: the snapshot was committed, but pruning failed",
                        job.name
                    ))
                    .or_hint("run `lifeboat-backup prune --dry-run` to see the plan");
                observers.emit(Event::Failed {
                    job: &job.name,
                    error: &e,
                });
                prune_error = Some(e);
            }
        }
    }
    release(guard, job).await;
    Ok(JobReport {
        report,
        prune: pruned,
        prune_error,
    })
}

/// Why a run whose clock is off the store's prunes nothing.
fn clock_skew_error(offset: chrono::Duration, store: &impl Store) -> Error {
    let minutes = (offset.abs().num_seconds().unsigned_abs() + 30) / 60;
    Error::new(
        ErrorKind::Clock,
        format!(
            "this host's clock is about {} {} the clock of {}; the snapshot was dated by the store's clock, and nothing was pruned",
            crate::text::format_duration(Duration::from_secs(minutes * 60)),
            if offset > chrono::Duration::zero() { "behind" } else { "ahead of" },
            store.describe()
        ),
    )
    .with_hint("fix this host's clock (NTP); the next run with a right clock prunes as usual")
}

/// The guard that does not need the store's clock (a directory's clock is this host's own):
/// a snapshot dated further past the previous newest than the job's runs are apart (twice the
/// schedule's longest interval, or a day without a schedule) may come from a clock that jumped
/// ahead. Returns the previous newest's time, as of which retention is then judged (so the new
/// snapshot forgets nothing), and the error the run ends with, so that it is noticed.
async fn date_jump<S: Store>(
    store: &S,
    job: &Job,
    report: &BackupReport,
) -> Result<Option<(DateTime<Utc>, Error)>> {
    let listing = catalog::list_snapshots(store, &job.name).await?;
    let this = report.consistent_at;
    let Some(previous) = listing
        .snapshots
        .iter()
        .filter(|m| m.id != report.snapshot)
        .map(|m| m.consistent_at)
        .max()
    else {
        return Ok(None);
    };
    let allowed = job
        .schedule
        .as_ref()
        .map_or(chrono::Duration::days(1), |s| {
            (s.longest_interval(previous) * 2).max(chrono::Duration::days(1))
        });
    if this - previous <= allowed {
        return Ok(None);
    }
    let gap = (this - previous).to_std().unwrap_or_default();
    let alarm = Error::new(
        ErrorKind::Clock,
        format!(
            "the new snapshot {} is dated {} after the previous newest ({}), more than the {} this job's runs are apart at most{}; retention was judged as of the previous newest, in case this host's clock jumped ahead, so nothing was pruned because of it",
            report.snapshot,
            crate::text::format_duration(Duration::from_secs(gap.as_secs())),
            previous.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            crate::text::format_duration(allowed.to_std().unwrap_or_default()),
            if job.schedule.is_none() {
                " (a day: the job has no schedule)"
            } else {
                ""
            },
        ),
    )
    .with_hint(
        "check this host's clock (`date -u`) before the next run: a clock that stays ahead would make the next run's retention count from the wrong date. If backups really were paused, nothing is wrong; a job that runs less often than daily should set its schedule",
    );
    Ok(Some((previous, alarm.with_context("job", &job.name))))
}

async fn release<S: Store + Clone + 'static>(guard: LockGuard<S>, job: &Job) {
    if let Err(e) = guard.release().await {
        tracing::warn!(
            "Could not release the lock of job {:?}: {e}; it expires by itself.",
            job.name
        );
    }
}

/// A cancelled run still holds the job's lock, so every unfinished upload of the job is its
/// own: abort them now rather than leave them to the next run. The lease is no longer renewed,
/// and the clean-up has a deadline.
async fn clean_up_cancelled<S: Store + Clone + 'static>(
    store: &S,
    job: &Job,
    mut guard: LockGuard<S>,
) {
    guard.stop_renewing();
    let prefix = catalog::job_prefix(&job.name);
    let cleanup = async {
        match store.remove_incomplete(&prefix, Duration::ZERO).await {
            Ok(aborted) if !aborted.is_empty() => tracing::info!(
                "Aborted {} unfinished upload(s) of job {:?}.",
                aborted.len(),
                job.name
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "Could not abort the unfinished upload of job {:?}: {e}",
                job.name
            ),
        }
        let _ = guard.release().await;
    };
    if tokio::time::timeout(CLEANUP_DEADLINE, cleanup)
        .await
        .is_err()
    {
        tracing::warn!(
            "The clean-up did not finish within {} s; exiting. The next run removes what is left, and the lock expires by itself.",
            CLEANUP_DEADLINE.as_secs()
        );
    }
}

/// How a run of several jobs is shown as it goes. The library decides what runs, in which
/// order, and what the outcome means; the binary only shows it (a progress line, the reports,
/// the errors on its terminal).
pub trait JobsView {
    /// `job` starts; what this returns is dropped when the job's run ends (a progress line).
    fn job_started(&self, job: &str) -> Box<dyn std::any::Any>;
    /// A job's report as text (the backup, its prune and its copies).
    fn show(&self, text: &str);
    /// An error of a job's run, its prune or one of its copies.
    fn show_error(&self, error: &Error);
}

/// The outcome of [`run_jobs`].
pub struct JobsRun {
    /// The exit code of the whole run (see [`run_jobs`]).
    pub exit_code: i32,
    /// One JSON report per job that ran, in order.
    pub reports: Vec<serde_json::Value>,
}

/// Runs `jobs` in order: each backup, then its copies to `copies`, with news (notifications,
/// metrics) of each. A cancelled run stops after the job it interrupted.
///
/// The exit code: a failed backup's code stands if it came first; after a commit, a failed
/// prune or copy raises the run's code.
pub async fn run_jobs(
    store: &crate::store::AnyStore,
    jobs: &[Job],
    options: &JobOptions,
    copies: &[crate::config::CopySpec],
    news: &mut crate::report::news::News,
    cancel: &Cancel,
    view: &dyn JobsView,
) -> JobsRun {
    use crate::report::{human, news};
    let mut outcome = JobsRun {
        exit_code: 0,
        reports: Vec::new(),
    };
    for job in jobs {
        news.started(&job.name).await;
        let started = std::time::Instant::now();
        let shown = view.job_started(&job.name);
        let ran = run(store, job, options, &Utc::now, cancel).await;
        drop(shown);
        let mut interrupted = false;
        let (job_exit, text, report, committed) = match ran {
            Ok(run) => {
                let mut text = human::backup(&run.report, &store.describe());
                run.prune
                    .iter()
                    .for_each(|p| text.push_str(&human::prune(p)));
                let (copied, copy_error) =
                    crate::copy::after_backup(copies, store, &job.name, &options.holder).await;
                copied.iter().for_each(|c| text.push_str(&human::copy(c)));
                view.show(&text);
                let mut job_exit = 0;
                for e in run.prune_error.iter().chain(&copy_error) {
                    view.show_error(e);
                    job_exit = job_exit.max(e.exit_code());
                    text.push_str(&news::error_text(e));
                }
                let report = serde_json::json!({
                    "ok": job_exit == 0,
                    "report": run.report,
                    "prune": run.prune,
                    "copies": copied,
                    "copy_error": copy_error.as_ref().map(news::error_json),
                    "prune_error": run.prune_error.as_ref().map(news::error_json),
                });
                (job_exit, text, report, true)
            }
            Err(e) => {
                view.show_error(&e);
                interrupted = e.kind() == ErrorKind::Cancelled;
                let report = serde_json::json!({"ok": false, "job": job.name, "error": news::error_json(&e)});
                (e.exit_code(), news::error_text(&e), report, false)
            }
        };
        outcome.exit_code = match (committed, outcome.exit_code) {
            (true, earlier) => earlier.max(job_exit),
            (false, 0) => job_exit,
            (false, earlier) => earlier,
        };
        outcome.reports.push(report.clone());
        news.finished(
            store,
            news::JobEnd {
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
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancel_stops_the_work_and_says_why() {
        let (trigger, cancel) = Cancel::pair();
        let never_ends = std::future::pending::<Result<()>>();
        trigger.cancel("SIGTERM");
        let e = cancel.run(never_ends).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled);
        assert_eq!(e.message(), "interrupted by SIGTERM");
        // Clones see it too; work that is already done stays done.
        assert_eq!(cancel.clone().cancelled().await, "SIGTERM");
        assert!(cancel.run(async { Ok(()) }).await.is_ok());
        assert!(Cancel::never().run(async { Ok(7) }).await.is_ok());
    }

    /// A backup that fails never prunes: the two snapshots a keep-last-1 policy would thin to
    /// one are both still there after the failed run.
    /// Records the events it hears, in words.
    #[derive(Default)]
    struct Seen(std::sync::Mutex<Vec<String>>);

    impl crate::report::Observer for Seen {
        fn event(&self, event: &Event<'_>) {
            let line = match event {
                Event::Started { job } => format!("started {job}"),
                Event::Committed { report } => format!("committed {}", report.snapshot),
                Event::Pruned { report } => format!("pruned {}", report.job),
                Event::Failed { job, .. } => format!("failed {job}"),
            };
            self.0.lock().unwrap().push(line);
        }
    }

    #[tokio::test]
    async fn prune_never_runs_after_a_failed_backup() {
        use crate::catalog::{manifest_key, Manifest};
        use crate::store::LocalStore;
        let seen = std::sync::Arc::new(Seen::default());
        let root = std::env::temp_dir().join(format!(
            "lifeboat-unit-job-{}-{}",
            std::process::id(),
            crate::catalog::SnapshotId::generate(chrono::Utc::now())
        ));
        let store = crate::store::AnyStore::Local(LocalStore::open(&root).unwrap());
        let now = chrono::Utc::now();
        for (i, age_h) in [(1u8, 48i64), (2, 24)] {
            let m: Manifest =
                crate::catalog::tests::manifest_at("app", now - chrono::Duration::hours(age_h), i);
            store
                .put(&manifest_key("app", &m.id).unwrap(), &m.to_json())
                .await
                .unwrap();
        }
        let spec = crate::config::JobSpec {
            name: "app".into(),
            engine: crate::engine::Engine::Files,
            // The source fails at once: the folder does not exist.
            paths: Some(vec![root.join("no-such-folder").display().to_string()]),
            retention: Some(toml::from_str::<toml::Value>("keep-last = 1").unwrap()),
            ..Default::default()
        };
        let job = crate::config::validate_job(&spec, &Default::default(), None).unwrap();
        assert!(job.retention.is_some());
        let options = JobOptions {
            holder: Holder {
                owner: "test".into(),
                host: "test".into(),
                pid: 1,
                process: None,
            },
            leftover_grace: Duration::from_secs(3600),
            orphan_grace: Duration::from_secs(3600),
            compression_threads: 1,
            prune: true,
            same_source_only: false,
            observers: crate::report::Observers::new(vec![
                seen.clone() as std::sync::Arc<dyn crate::report::Observer>
            ]),
            report_keep: Duration::from_secs(86_400),
        };
        let failed = run(&store, &job, &options, &chrono::Utc::now, &Cancel::never()).await;
        assert!(failed.is_err());
        // The observers heard the start and the failure, and of no commit or prune.
        assert_eq!(*seen.0.lock().unwrap(), vec!["started app", "failed app"]);
        let left = crate::catalog::list_snapshots(&store, "app").await.unwrap();
        assert_eq!(left.snapshots.len(), 2, "a failed backup pruned");
        let _ = std::fs::remove_dir_all(&root);
    }
}
