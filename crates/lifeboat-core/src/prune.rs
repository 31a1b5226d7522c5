//! The prune operation: plan retention for one job, then forget what the plan forgets.
//!
//! Deletion order makes an interrupted prune harmless: a snapshot's manifest goes first (the
//! snapshot disappears in one step), then its data objects and verification records. What an
//! interruption leaves behind is data without a manifest, which the next prune removes once it
//! is older than the grace period (so a backup that is still uploading is never hit).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{self, Catalog, DamagedSnapshot, SnapshotId};
use crate::error::{Error, Result};
use crate::retention::{self, Guards, Policy, RetentionPlan, SnapshotFacts};
use crate::store::{ObjectKey, ObjectMeta, Protection, Store};
use crate::verify::{self, SnapshotCheck};

/// How a prune runs.
pub struct PruneOptions {
    /// The time retention is judged at (the caller reads the clock).
    pub now: DateTime<Utc>,
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Data without a manifest is removed only once it is older than this.
    pub orphan_grace: Duration,
    /// The snapshot the backup that runs this prune has just committed: never forgotten.
    pub committed: Option<SnapshotId>,
    /// DR reports (`reports/<job>/`) older than this are removed.
    pub report_keep: Duration,
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Serialize)]
pub struct PruneReport {
    /// The job's name.
    pub job: String,
    /// Nothing was changed: the plan is all there is.
    pub dry_run: bool,
    /// Keep or forget, for every snapshot, with reasons.
    pub plan: RetentionPlan,
    /// Snapshots whose manifests were deleted.
    pub forgotten: Vec<SnapshotId>,
    /// Objects removed because no manifest refers to them (earlier interrupted runs).
    pub orphans_removed: Vec<String>,
    /// Snapshots with unreadable manifests: never touched, reported.
    pub damaged: Vec<DamagedSnapshot>,
    /// Snapshots the plan forgets but the store refuses to delete yet (object lock, legal
    /// hold): left whole, so they stay restorable; a later prune forgets them.
    pub protected: Vec<ProtectedSnapshot>,
    /// DR reports older than the report retention (with `dry_run`: that would be removed).
    pub reports_removed: Vec<String>,
}

/// A snapshot the plan forgets that the store refuses to delete yet.
#[derive(Debug, Serialize)]
pub struct ProtectedSnapshot {
    /// The snapshot.
    pub id: SnapshotId,
    /// The first object found protected.
    pub object: String,
    /// Why the store refused (retention until, legal hold).
    pub protection: Protection,
}

/// The jobs a prune covers with their policies, and the configured jobs without a policy.
pub type Targets = (Vec<(String, Policy)>, Vec<String>);

/// Which jobs a `prune` run covers, and with which policy: the named jobs (each needs a policy,
/// `override_policy` or its own), or, with none named, every configured job that has one.
/// Returns the targets and the configured jobs skipped for want of a policy.
pub fn targets(
    configured: &[(String, Option<Policy>)],
    named: &[String],
    override_policy: Option<&Policy>,
) -> Result<Targets> {
    let policy_of = |name: &str| {
        override_policy.cloned().or_else(|| {
            configured
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, p)| p.clone())
        })
    };
    if named.is_empty() {
        if configured.is_empty() {
            return Err(Error::config("which jobs? name them (lifeboat-backup prune JOB --retention POLICY) or use a configuration file"));
        }
        let (with, without): (Vec<_>, Vec<_>) =
            configured.iter().partition(|(n, _)| policy_of(n).is_some());
        let targets = with
            .into_iter()
            .filter_map(|(n, _)| policy_of(n).map(|p| (n.clone(), p)))
            .collect();
        return Ok((
            targets,
            without.into_iter().map(|(n, _)| n.clone()).collect(),
        ));
    }
    let mut targets = Vec::new();
    for name in named {
        crate::config::validate_job_name(name)?;
        let policy = policy_of(name).ok_or_else(|| {
            Error::config(format!("job {name:?} has no retention policy")).with_hint(
                "set retention = \"gfs\" (or another preset) in its [[job]], or pass --retention",
            )
        })?;
        targets.push((name.clone(), policy));
    }
    Ok((targets, Vec::new()))
}

/// Prunes one job under its lock (a dry run takes none: it changes nothing).
pub async fn prune_locked(
    store: &(impl Store + Clone + 'static),
    job: &str,
    policy: &Policy,
    options: &PruneOptions,
    holder: &crate::lock::Holder,
) -> Result<PruneReport> {
    let work = prune(store, job, policy, options);
    if options.dry_run {
        work.await
    } else {
        crate::lock::holding(store, job, holder, options.now, work).await
    }
}

/// The retention plan of a job's snapshots, with the guards no policy overrides (the newest
/// verified snapshot from `records`, the one a running backup just `committed`, the pinned
/// ones): what prune
/// applies and what `lifeboat-restore list` shows.
pub fn plan_for(
    policy: &Policy,
    listing: &Catalog,
    records: &[SnapshotCheck],
    now: DateTime<Utc>,
    committed: Option<&SnapshotId>,
) -> RetentionPlan {
    let snapshots = &listing.snapshots;
    let facts: Vec<SnapshotFacts> = snapshots
        .iter()
        .map(|m| SnapshotFacts {
            id: m.id.clone(),
            time: m.consistent_at,
            pinned: listing.pins.get(&m.id).map(catalog::Pin::describe),
        })
        .collect();
    let verified = verify::newest_verified(records, snapshots);
    retention::plan(
        policy,
        &facts,
        &Guards {
            now,
            newest_verified: verified.as_ref(),
            committed,
        },
    )
}

/// Plans and (unless dry-run) applies retention to the snapshots of `job` only.
pub async fn prune<S: Store>(
    store: &S,
    job: &str,
    policy: &Policy,
    options: &PruneOptions,
) -> Result<PruneReport> {
    let listing = catalog::list_snapshots(store, job).await?;
    let records = verify::records(store, job).await?;
    let plan = plan_for(
        policy,
        &listing,
        &records,
        options.now,
        options.committed.as_ref(),
    );
    for m in &listing.snapshots {
        if catalog::is_future_dated(m.consistent_at, options.now) {
            tracing::warn!(
                "Snapshot {} of job {job:?} is dated in the future (consistent at {}): it is kept, and not taken as the latest; check the clocks of the backup host and the source.",
                m.id,
                m.consistent_at.to_rfc3339()
            );
        }
    }
    let mut report = PruneReport {
        job: job.to_string(),
        dry_run: options.dry_run,
        plan,
        forgotten: Vec::new(),
        orphans_removed: Vec::new(),
        damaged: listing.damaged,
        protected: Vec::new(),
        reports_removed: Vec::new(),
    };
    let forget: Vec<SnapshotId> = report.plan.forgotten().map(|d| d.id.clone()).collect();
    for id in forget {
        match forget_snapshot(store, job, &id, options.dry_run).await? {
            Some(protected) => report.protected.push(protected),
            None if options.dry_run => {}
            None => report.forgotten.push(id),
        }
    }
    report.reports_removed = prune_reports(store, job, options).await?;
    if options.dry_run {
        return Ok(report);
    }
    report.orphans_removed = remove_orphans(store, job, options).await?;
    Ok(report)
}

/// DR reports have their own retention: prune forgets snapshots and their verification
/// records, but a report is the evidence of what was verified and must outlive them. Reports
/// older than `report_keep` go (with `dry_run`: are listed).
async fn prune_reports<S: Store>(
    store: &S,
    job: &str,
    options: &PruneOptions,
) -> Result<Vec<String>> {
    // A retention longer than the clock can count back keeps everything.
    let Some(cutoff) = std::time::SystemTime::from(options.now).checked_sub(options.report_keep)
    else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for report in store.list(&catalog::reports_prefix(job)).await? {
        if report.modified >= cutoff {
            continue;
        }
        if !options.dry_run {
            store.delete(&report.key).await?;
        }
        removed.push(report.key.to_string());
    }
    Ok(removed)
}

/// Forgets one snapshot: its manifest first (from then on the snapshot does not exist), then
/// its data, pin and verification records. A snapshot the store protects (object lock, legal
/// hold) is left whole and returned; with `dry_run` nothing is deleted either way.
async fn forget_snapshot<S: Store>(
    store: &S,
    job: &str,
    id: &SnapshotId,
    dry_run: bool,
) -> Result<Option<ProtectedSnapshot>> {
    let objects = store.list(&catalog::snapshot_prefix(job, id)).await?;
    // Checked before anything is deleted: in a versioned bucket a plain delete of a locked
    // object "succeeds" with a delete marker, which would hide a snapshot the lock keeps.
    if let Some(protected) = first_protected(store, &objects).await? {
        tracing::info!(
            "Kept snapshot {id} of job {job:?}: {} is protected by {}.",
            protected.0,
            protected.1
        );
        return Ok(Some(ProtectedSnapshot {
            id: id.clone(),
            object: protected.0.to_string(),
            protection: protected.1,
        }));
    }
    if dry_run {
        return Ok(None);
    }
    store.delete(&catalog::manifest_key(job, id)?).await?;
    tracing::info!("Forgot snapshot {id} of job {job:?}.");
    for object in objects
        .iter()
        .filter(|o| o.key.file_name() != "manifest.json")
    {
        store.delete(&object.key).await?;
    }
    delete_all(
        store,
        &catalog::snapshot_verifications_prefix(job, id.as_str()),
    )
    .await?;
    Ok(None)
}

/// What `lifeboat-backup forget JOB SNAPSHOT` did (or, with `dry_run`, would do).
#[derive(Debug, Serialize)]
pub struct ForgetReport {
    /// The job's name.
    pub job: String,
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Nothing was changed.
    pub dry_run: bool,
    /// The guards `--force` overrode ("the newest snapshot", "pinned: ..."), empty if none.
    pub overridden: Vec<String>,
}

/// Why a snapshot must not be forgotten by hand without `--force`: the newest, the newest
/// verified, a pinned one. Empty: nothing guards it.
pub async fn forget_guards<S: Store>(
    store: &S,
    job: &str,
    id: &SnapshotId,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let listing = catalog::list_snapshots(store, job).await?;
    if !listing.snapshots.iter().any(|m| &m.id == id) {
        return Err(Error::new(
            crate::error::ErrorKind::NotFound,
            format!("job {job:?} has no snapshot {id}"),
        )
        .with_hint(format!(
            "run `lifeboat-restore list --job {job}` to see its snapshots"
        )));
    }
    let records = verify::records(store, job).await?;
    let mut guards = Vec::new();
    if catalog::latest(&listing.snapshots, now).is_some_and(|m| &m.id == id) {
        guards.push("it is the newest snapshot".to_string());
    }
    if let Some(v) = verify::newest_verified(&records, &listing.snapshots) {
        if &v.id == id {
            guards.push(format!(
                "it is the newest snapshot that passed a {} verification",
                v.level
            ));
        }
    }
    if let Some(pin) = listing.pins.get(id) {
        guards.push(format!("it is {}", pin.describe()));
    }
    Ok(guards)
}

/// Forgets one snapshot by id under the job's lock (a dry run takes none). Refuses one that a
/// guard protects (see [`forget_guards`]) unless `force`, and one the store protects always.
pub async fn forget_by_id(
    store: &(impl Store + Clone + 'static),
    job: &str,
    id: &SnapshotId,
    force: bool,
    dry_run: bool,
    holder: &crate::lock::Holder,
    now: DateTime<Utc>,
) -> Result<ForgetReport> {
    let work = async {
        let guards = forget_guards(store, job, id, now).await?;
        if !guards.is_empty() && !force {
            return Err(Error::new(
                crate::error::ErrorKind::Refused,
                format!(
                    "snapshot {id} of job {job:?} was not forgotten: {}",
                    guards.join("; ")
                ),
            )
            .with_hint(
                "forget an older snapshot, unpin it first (lifeboat-backup unpin), or pass --force if you are sure",
            ));
        }
        if let Some(protected) = forget_snapshot(store, job, id, dry_run).await? {
            return Err(Error::new(
                crate::error::ErrorKind::Refused,
                format!(
                    "snapshot {id} of job {job:?} cannot be forgotten yet: {} is protected by {}",
                    protected.object, protected.protection
                ),
            )
            .with_hint("the store keeps it until its protection ends; nothing was deleted"));
        }
        Ok(ForgetReport {
            job: job.to_string(),
            snapshot: id.clone(),
            dry_run,
            overridden: guards,
        })
    };
    if dry_run {
        work.await
    } else {
        crate::lock::holding(store, job, holder, now, work).await
    }
}

async fn first_protected<S: Store>(
    store: &S,
    objects: &[ObjectMeta],
) -> Result<Option<(ObjectKey, Protection)>> {
    for object in objects {
        if let Some(p) = store.protection(&object.key).await? {
            return Ok(Some((object.key.clone(), p)));
        }
    }
    Ok(None)
}

async fn delete_all<S: Store>(store: &S, prefix: &str) -> Result<()> {
    for object in store.list(prefix).await? {
        store.delete(&object.key).await?;
    }
    Ok(())
}

/// Removes what runs that ended left in the job's snapshot folders, older than `grace`:
/// unfinished uploads and data without a manifest, each said in the log. A run that holds the
/// job's lock passes zero: only lock-holders write there.
pub async fn remove_leftovers<S: Store>(
    store: &S,
    job: &str,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<Vec<String>> {
    let mut removed = store
        .remove_incomplete(&catalog::snapshots_prefix(job), grace)
        .await?;
    for path in &removed {
        tracing::warn!("Removed the unfinished upload {path} left by an earlier run.");
    }
    let orphans = PruneOptions {
        now,
        dry_run: false,
        orphan_grace: grace,
        committed: None,
        report_keep: Duration::MAX,
    };
    removed.extend(remove_orphans(store, job, &orphans).await?);
    Ok(removed)
}

/// Removes data objects that have no manifest and are older than the grace period, and
/// verification records of snapshots that no longer exist.
pub async fn remove_orphans<S: Store>(
    store: &S,
    job: &str,
    options: &PruneOptions,
) -> Result<Vec<String>> {
    let objects = store.list(&catalog::snapshots_prefix(job)).await?;
    let cutoff = std::time::SystemTime::from(options.now) - options.orphan_grace;
    let has_manifest = |folder: &str| {
        objects
            .iter()
            .any(|o| o.key.as_str() == format!("{folder}/manifest.json"))
    };
    let mut removed = Vec::new();
    for object in &objects {
        let folder = object.key.as_str().rsplit_once('/').map_or("", |(d, _)| d);
        if !has_manifest(folder) && object.modified > cutoff {
            tracing::info!(
                "Left {} (data without a manifest) in place: it is younger than the grace period, so a run may still be writing it.",
                object.key
            );
            continue;
        }
        if !has_manifest(folder) {
            if let Some(p) = store.protection(&object.key).await? {
                tracing::info!(
                    "Left {} (data without a manifest) in place: {p}.",
                    object.key
                );
                continue;
            }
            store.delete(&object.key).await?;
            tracing::warn!(
                "Removed {} (data without a manifest, left by an interrupted run).",
                object.key
            );
            removed.push(object.key.to_string());
        }
    }
    let snapshot_ids: Vec<String> = objects
        .iter()
        .filter(|o| o.key.file_name() == "manifest.json")
        .filter_map(|o| o.key.as_str().split('/').nth(3).map(str::to_string))
        .collect();
    for record in store.list(&catalog::verifications_prefix(job)).await? {
        let id = catalog::verification_snapshot(&record.key).unwrap_or_default();
        if !snapshot_ids.iter().any(|s| s == id) {
            store.delete(&record.key).await?;
            removed.push(record.key.to_string());
        }
    }
    Ok(removed)
}
