//! The news of a run, job by job: the `[[notify]]` notifications at each job's start and end,
//! and the `[metrics]` samples delivered once the run is over. Backup and verify share it, so
//! both report the same way.

use crate::config::observe::{Metrics, Notifier};
use crate::config::Config;
use crate::error::Error;
use crate::store::Store;

use super::{metrics, notify};

/// Where a run's news goes, and the metric samples gathered so far.
pub struct News {
    binary: &'static str,
    notifiers: Vec<Notifier>,
    metrics: Metrics,
    samples: Vec<metrics::Sample>,
}

/// How one job's run ended, for its news.
pub struct JobEnd<'a> {
    /// The job.
    pub job: &'a str,
    /// Its exit code (0 ok, 1 to 5 failed).
    pub exit_code: i32,
    /// Its JSON report, as `--json` prints it.
    pub report: serde_json::Value,
    /// Its text for people: the human report, or the error with its hint.
    pub text: String,
    /// A backup's duration (backup runs only).
    pub backup_secs: Option<f64>,
}

impl News {
    /// The news of a run of `binary` (`lifeboat-backup`, `lifeboat-verify`) with `config`'s
    /// notifiers and metrics (none without a configuration).
    pub fn new(binary: &'static str, config: Option<&Config>) -> News {
        News {
            binary,
            notifiers: config.map(|c| c.notifiers.clone()).unwrap_or_default(),
            metrics: config.map(|c| c.metrics.clone()).unwrap_or_default(),
            samples: Vec::new(),
        }
    }

    /// A job's run starts.
    pub async fn started(&self, job: &str) {
        notify::started(&self.notifiers, job).await;
    }

    /// A job's run ended: its notifications now, its metric samples for [`News::deliver`].
    pub async fn finished<S: Store>(&mut self, store: &S, end: JobEnd<'_>) {
        let outcome = notify::RunOutcome {
            binary: self.binary,
            job: end.job,
            exit_code: end.exit_code,
            report: end.report,
            text: end.text,
        };
        notify::finished(&self.notifiers, &outcome).await;
        if self.metrics.is_empty() {
            return;
        }
        let run = metrics::RunMetrics {
            ended: chrono::Utc::now(),
            success: end.exit_code == 0,
            backup_secs: end.backup_secs,
            // The RPO now is verify's figure.
            snapshot_age: end.backup_secs.is_none(),
        };
        self.samples
            .extend(metrics::job_samples(store, end.job, &run).await);
    }

    /// Delivers the run's metrics (once, at its end).
    pub async fn deliver(&self) {
        metrics::deliver(&self.metrics, self.binary, &self.samples).await;
    }
}

/// An error as notifications and reports carry it: the message, then the hint.
pub fn error_text(e: &Error) -> String {
    match e.hint() {
        Some(hint) => format!("error: {}\n  hint: {hint}\n", e.message()),
        None => format!("error: {}\n", e.message()),
    }
}

/// An error as a job's entry of a `--json` report carries it.
pub fn error_json(e: &Error) -> serde_json::Value {
    e.to_json()
}
