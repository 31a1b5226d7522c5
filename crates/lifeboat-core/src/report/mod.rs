//! What runs report, for people and for machines: the status of a job's snapshots (`list`),
//! and the human renderings of restore plans, restore reports and verify reports. The
//! operations return typed reports; the binaries print them here as text, or as JSON (every
//! report is `Serialize`).

pub mod dr;
pub mod human;
pub mod metrics;
pub mod news;
pub mod notify;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{self, DamagedSnapshot, Manifest};
use crate::error::Result;
use crate::retention::{Decision, Policy};
use crate::store::Store;
use crate::verify::{self, SnapshotCheck};

/// What happens during a job run, as it happens: the hook that progress lines, notifications
/// and metrics attach to.
#[derive(Debug)]
pub enum Event<'a> {
    /// The job's lock is held and the backup begins.
    Started {
        /// The job's name.
        job: &'a str,
    },
    /// The snapshot is committed.
    Committed {
        /// What was committed.
        report: &'a crate::backup::BackupReport,
    },
    /// The prune that followed the commit.
    Pruned {
        /// What the prune did.
        report: &'a crate::prune::PruneReport,
    },
    /// The run failed; nothing was committed by it (or, after a commit, pruning failed).
    Failed {
        /// The job's name.
        job: &'a str,
        /// Why.
        error: &'a crate::Error,
    },
}

/// Something that wants to know what a run does. Called inline: keep it quick.
pub trait Observer: Send + Sync {
    /// Told one thing that happened.
    fn event(&self, event: &Event<'_>);
}

/// The observers of a run (none: the default).
#[derive(Clone, Default)]
pub struct Observers(Vec<Arc<dyn Observer>>);

impl Observers {
    /// Observers called in this order.
    pub fn new(observers: Vec<Arc<dyn Observer>>) -> Observers {
        Observers(observers)
    }

    /// Tells every observer.
    pub fn emit(&self, event: Event<'_>) {
        for o in &self.0 {
            o.event(&event);
        }
    }
}

/// A job's snapshots as `lifeboat-restore list` shows them: newest first, each with its last
/// verification and what the retention policy would do with it.
#[derive(Debug, Serialize)]
pub struct JobStatus {
    /// The job's name.
    pub job: String,
    /// The retention policy, in words (`None`: none configured).
    pub retention: Option<String>,
    /// The job's schedule, in words (`None`: none configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// When the schedule next runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run: Option<DateTime<Utc>>,
    /// A scheduled run that was due over an hour ago and left no snapshot newer than it (or,
    /// with no snapshot at all, nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overdue_since: Option<DateTime<Utc>>,
    /// Newest first.
    pub snapshots: Vec<SnapshotStatus>,
    /// Manifests that could not be read.
    pub damaged: Vec<DamagedSnapshot>,
}

/// One snapshot in a listing.
#[derive(Debug, Serialize)]
pub struct SnapshotStatus {
    /// What the manifest says.
    #[serde(flatten)]
    pub summary: SnapshotSummary,
    /// The newest verification record.
    pub verified: Option<Verified>,
    /// What the job's retention policy decides (keep, with reasons; or forget).
    pub policy: Option<Decision>,
    /// The snapshot's pin, if an operator pinned it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<catalog::Pin>,
}

/// The fields of a manifest that a listing shows.
#[derive(Debug, Serialize)]
pub struct SnapshotSummary {
    /// The snapshot's id.
    pub id: catalog::SnapshotId,
    /// The instant its data holds.
    pub consistent_at: DateTime<Utc>,
    /// The engine's name.
    pub engine: String,
    /// `pg_custom`, `pg_plain`, `redis_rdb`, `tar`...
    pub dump_format: String,
    /// Bytes stored.
    pub stored_size: u64,
    /// Bytes after decompression.
    pub raw_size: u64,
    /// How it is compressed.
    pub compression: crate::pipeline::Compression,
    /// How it is encrypted: the recipients whose identity a restore needs (`None`: not
    /// encrypted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::pipeline::EncryptionInfo>,
    /// The data object's key.
    pub key: String,
}

impl From<&Manifest> for SnapshotSummary {
    fn from(m: &Manifest) -> Self {
        SnapshotSummary {
            id: m.id.clone(),
            consistent_at: m.consistent_at,
            engine: m.engine.clone(),
            dump_format: m.dump_format.clone(),
            stored_size: m.object.stored_size,
            raw_size: m.object.raw_size,
            compression: m.compression,
            encryption: m.encryption.clone(),
            key: m.object.key.clone(),
        }
    }
}

/// A snapshot's newest verification record.
#[derive(Debug, Serialize)]
pub struct Verified {
    /// It passed.
    pub ok: bool,
    /// How deep the check went.
    pub level: verify::Level,
    /// When it ran.
    pub at: DateTime<Utc>,
    /// A content check made without the identity (see `verify::SnapshotCheck::keyless`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keyless: bool,
}

/// The status of each of `jobs` (every job in the repository when empty), with the retention
/// policy and schedule `config` gives it: what `lifeboat-restore list` shows.
pub async fn job_statuses<S: Store>(
    store: &S,
    config: Option<&crate::config::Config>,
    jobs: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<JobStatus>> {
    let jobs = if jobs.is_empty() {
        catalog::list_jobs(store).await?
    } else {
        jobs.to_vec()
    };
    let mut statuses = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let configured = config.and_then(|c| c.jobs.iter().find(|j| &j.name == job));
        let policy = configured.and_then(|j| j.retention.as_ref());
        let schedule = configured.and_then(|j| j.schedule.as_ref());
        statuses.push(job_status(store, job, policy, schedule, now).await?);
    }
    Ok(statuses)
}

/// The status of one job in the repository.
pub async fn job_status<S: Store>(
    store: &S,
    job: &str,
    policy: Option<&Policy>,
    schedule: Option<&crate::schedule::Schedule>,
    now: DateTime<Utc>,
) -> Result<JobStatus> {
    let listing = catalog::list_snapshots(store, job).await?;
    let records = verify::records(store, job).await?;
    let plan = policy.map(|p| crate::prune::plan_for(p, &listing, &records, now, None));
    let verified = |m: &Manifest| -> Option<&SnapshotCheck> {
        records.iter().rev().find(|r| r.snapshot == m.id)
    };
    let snapshots = listing
        .snapshots
        .iter()
        .rev()
        .map(|m| SnapshotStatus {
            summary: m.into(),
            verified: verified(m).map(|r| Verified {
                ok: r.ok,
                level: r.level,
                at: r.checked_at,
                keyless: r.keyless,
            }),
            policy: plan
                .as_ref()
                .and_then(|p| p.decisions.iter().find(|d| d.id == m.id).cloned()),
            pin: listing.pins.get(&m.id).cloned(),
        })
        .collect();
    let newest = catalog::latest(&listing.snapshots, now).map(|m| m.consistent_at);
    Ok(JobStatus {
        job: job.to_string(),
        retention: policy.map(Policy::describe),
        schedule: schedule.map(crate::schedule::Schedule::describe),
        next_run: schedule.and_then(|s| s.next_after(now)),
        overdue_since: schedule.and_then(|s| newest.and_then(|t| s.overdue(t, now))),
        snapshots,
        damaged: listing.damaged,
    })
}
