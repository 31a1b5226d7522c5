//! The copy operation (3-2-1): committed snapshots of one repository into another that lacks
//! them, as restic's `copy` does. One region's outage or one deleted bucket then no longer
//! takes every backup with it.
//!
//! A snapshot is copied as a backup writes one: its data object first, streamed with its
//! stored SHA-256 and size checked on the way (a damaged source object is never copied), then
//! its manifest, the commit point. An interrupted copy leaves nothing visible: an unfinished
//! upload shows under no key, and data without a manifest is no snapshot (the destination's
//! prune removes it after the grace period). The bytes are copied as stored, so an encrypted
//! snapshot stays encrypted and needs no key here. Pins and verification records are the
//! destination's own, as is its retention.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::catalog::{self, Manifest, SnapshotId};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::hash::Hasher;
use crate::store::{ObjectKey, ObjectWriter, Store};

/// Bytes read from the source per step.
const CHUNK: usize = 1 << 20;

/// What a copy of one job did (or, with `dry_run`, would do).
#[derive(Debug, Serialize)]
pub struct CopyReport {
    /// The job.
    pub job: String,
    /// Where the snapshots went (no secrets).
    pub to: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// Snapshots copied (with `dry_run`: to be copied), oldest first.
    pub copied: Vec<SnapshotId>,
    /// Bytes of data copied.
    pub bytes: u64,
    /// Snapshots the destination already had.
    pub already_there: usize,
    /// Source manifests that could not be read: not copied, reported.
    pub damaged: Vec<catalog::DamagedSnapshot>,
    /// Snapshots whose data turned out damaged on the way: not copied, reported, and the copy
    /// went on with the next one (a damaged old snapshot must not keep newer good ones from
    /// their second copy).
    pub not_copied: Vec<NotCopied>,
}

/// A snapshot a copy found damaged.
#[derive(Debug, Serialize)]
pub struct NotCopied {
    /// The snapshot.
    pub id: SnapshotId,
    /// What is wrong with it.
    pub error: String,
}

impl CopyReport {
    /// The copy's verdict on what it found damaged (exit 3), once everything else was copied.
    pub fn damage(&self) -> Option<Error> {
        let mut named: Vec<String> = self
            .not_copied
            .iter()
            .map(|n| format!("snapshot {} ({})", n.id, n.error))
            .collect();
        named.extend(
            self.damaged
                .iter()
                .map(|d| format!("{} ({})", d.key, d.error)),
        );
        if named.is_empty() {
            return None;
        }
        Some(
            Error::integrity(format!(
                "job {:?}: damaged in the source, so it was not copied to {}: {}",
                self.job,
                self.to,
                named.join("; ")
            ))
            .with_hint("every other snapshot was copied; run lifeboat-verify on the source to see what is wrong, and copy again from a good copy"),
        )
    }
}

/// Copies the committed snapshots of `job` that `to` lacks, under `to`'s lock of the job (a
/// dry run takes none and writes nothing).
pub async fn copy_job<S: Store, D: Store + Clone + 'static>(
    from: &S,
    to: &D,
    job: &str,
    holder: &crate::lock::Holder,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<CopyReport> {
    if dry_run {
        return copy_unlocked(from, to, job, true).await;
    }
    catalog::ensure_repository(to, now).await?;
    let work = async {
        // The destination's snapshot folders are written only under the job's lock, which this
        // copy holds: what a killed copy left there (unfinished uploads, data without a
        // manifest) belongs to no live run, as a backup treats its own repository.
        crate::prune::remove_leftovers(to, job, now, std::time::Duration::ZERO).await?;
        copy_unlocked(from, to, job, false).await
    };
    crate::lock::holding(to, job, holder, now, work).await
}

async fn copy_unlocked<S: Store, D: Store>(
    from: &S,
    to: &D,
    job: &str,
    dry_run: bool,
) -> Result<CopyReport> {
    let source = catalog::list_snapshots(from, job).await?;
    // A destination that does not exist yet (a dry run creates nothing) has no snapshots.
    let present: Vec<SnapshotId> = match catalog::check_repository(to).await {
        Ok(true) => {
            let listing = catalog::list_snapshots(to, job).await?;
            let damaged_ids = listing.damaged.iter().filter_map(|d| {
                d.key
                    .split('/')
                    .nth(3)
                    .and_then(|id| id.parse::<SnapshotId>().ok())
            });
            listing
                .snapshots
                .iter()
                .map(|m| m.id.clone())
                .chain(damaged_ids)
                .collect()
        }
        Ok(false) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut report = CopyReport {
        job: job.to_string(),
        to: to.describe(),
        dry_run,
        copied: Vec::new(),
        bytes: 0,
        already_there: 0,
        damaged: source.damaged,
        not_copied: Vec::new(),
    };
    for manifest in &source.snapshots {
        if present.contains(&manifest.id) {
            report.already_there += 1;
            continue;
        }
        if !dry_run {
            match copy_snapshot(from, to, manifest).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Integrity => {
                    tracing::error!(
                        "Snapshot {} of job {job:?} was not copied: {e}",
                        manifest.id
                    );
                    report.not_copied.push(NotCopied {
                        id: manifest.id.clone(),
                        error: e.to_string(),
                    });
                    continue;
                }
                Err(e) => {
                    return Err(e
                        .with_context("job", job)
                        .with_context("snapshot", &manifest.id)
                        .with_context("from", from.describe())
                        .with_context("to", to.describe()))
                }
            }
            tracing::info!(
                "Copied snapshot {} of job {job:?} to {}.",
                manifest.id,
                to.describe()
            );
        }
        report.bytes += manifest.object.stored_size;
        report.copied.push(manifest.id.clone());
    }
    Ok(report)
}

/// The data object and any companions (each checked on the way), then the manifest's own
/// bytes.
async fn copy_snapshot<S: Store, D: Store>(from: &S, to: &D, manifest: &Manifest) -> Result<()> {
    let manifest_key = catalog::manifest_key(&manifest.job, &manifest.id)?;
    // Read before anything is written: a manifest deleted meanwhile (a prune) stops the copy.
    let manifest_bytes = from.get(&manifest_key).await?.ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "snapshot {} disappeared from {} during the copy (a prune?)",
                manifest.id,
                from.describe()
            ),
        )
    })?;
    for object in std::iter::once(&manifest.object).chain(manifest.companions.values()) {
        copy_object(from, to, manifest, object).await?;
    }
    to.put(&manifest_key, &manifest_bytes).await
}

/// One object of a snapshot, its stored SHA-256 and size checked on the way; a damaged one is
/// not copied (the upload is aborted, so nothing shows under its key).
async fn copy_object<S: Store, D: Store>(
    from: &S,
    to: &D,
    manifest: &Manifest,
    object: &crate::catalog::ObjectInfo,
) -> Result<()> {
    let key = ObjectKey::new(object.key.clone())?;
    if !key
        .as_str()
        .starts_with(&catalog::snapshot_prefix(&manifest.job, &manifest.id))
    {
        return Err(Error::integrity(format!(
            "the manifest of snapshot {} names a data object outside its folder ({key})",
            manifest.id
        )));
    }
    let mut reader = from.open(&key, 0).await?;
    let mut writer = to.create_sized(&key, Some(object.stored_size)).await?;
    let mut hasher = Hasher::default();
    let streamed: std::result::Result<(), (bool, std::io::Error)> = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| (true, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            writer.write_all(&buf[..n]).await.map_err(|e| (false, e))?;
        }
        writer.flush().await.map_err(|e| (false, e))
    }
    .await;
    let failed = match streamed {
        Err((true, e)) => Some(Error::store(format!(
            "reading {key} from {} failed: {e}",
            from.describe()
        ))),
        Err((false, e)) => Some(
            Error::store(format!("writing {key} to {} failed: {e}", to.describe()))
                .with_hint("check free space and permissions of the destination"),
        ),
        Ok(()) => {
            let (digest, size) = std::mem::take(&mut hasher).finish();
            (digest != object.stored_sha256 || size != object.stored_size)
                .then(|| {
                    Error::integrity(format!(
                        "{key} in {} is damaged: {size} bytes with SHA-256 {digest}, the manifest says {} bytes with {}",
                        from.describe(),
                        object.stored_size,
                        object.stored_sha256
                    ))
                    .with_hint("it was not copied; run lifeboat-verify on the source, and copy again from a good copy")
                })
        }
    };
    if let Some(e) = failed {
        // The store's own error, if it stopped the upload, is the cause.
        return Err(match writer.abort().await {
            Err(store_error) => store_error,
            Ok(()) => e,
        });
    }
    writer.finish().await.map(|_| ())
}

/// A second repository (`[[copy]] to`, or `--to-repo` with its flags), created if missing as a
/// backup creates its repository; the source repository itself is refused.
pub async fn open_destination(
    to: &crate::config::StoreSpec,
    source: &crate::store::AnyStore,
) -> Result<crate::store::AnyStore> {
    let url = to.url.as_deref().unwrap_or_default();
    let store = crate::store::open(url, &to.s3_options()?).await?;
    if store.describe() == source.describe() {
        return Err(Error::config(format!(
            "the copy's destination {} is the repository itself",
            store.describe()
        ))
        .with_hint("name a second repository: another bucket, prefix or directory"));
    }
    Ok(store)
}

/// Copies `jobs` (every job of the source if empty) into `to`, a report per job; the first job
/// that fails stops the run with its error, after the jobs before it were copied.
pub async fn copy_jobs<S: Store, D: Store + Clone + 'static>(
    source: &S,
    to: &D,
    jobs: &[String],
    holder: &crate::lock::Holder,
    dry_run: bool,
) -> Result<Vec<CopyReport>> {
    let jobs = if jobs.is_empty() {
        catalog::list_jobs(source).await?
    } else {
        jobs.to_vec()
    };
    let mut reports = Vec::new();
    for job in &jobs {
        reports.push(copy_job(source, to, job, holder, Utc::now(), dry_run).await?);
    }
    Ok(reports)
}

/// The `[[copy]]` tables that include `job`, run after its backup committed: the snapshot is
/// safe in the first repository whatever happens here, but a failed copy fails the run (the
/// second copy is what 3-2-1 promises). Returns what was copied and the failure, if any.
pub async fn after_backup(
    copies: &[crate::config::CopySpec],
    store: &crate::store::AnyStore,
    job: &str,
    holder: &crate::lock::Holder,
) -> (Vec<CopyReport>, Option<Error>) {
    let mut reports = Vec::new();
    for copy in copies {
        if !copy.jobs.is_empty() && !copy.jobs.iter().any(|j| j == job) {
            continue;
        }
        let copied = async {
            let to = open_destination(&copy.to, store).await?;
            copy_jobs(store, &to, &[job.to_string()], holder, false).await
        }
        .await;
        match copied {
            Ok(r) => {
                let damage = r.iter().find_map(CopyReport::damage);
                reports.extend(r);
                if let Some(e) = damage {
                    return (reports, Some(e));
                }
            }
            Err(e) => {
                return (
                    reports,
                    Some(e.with_hint(format!(
                        "the snapshot is committed in the first repository; `lifeboat-backup copy {job}` copies what is missing once the destination is reachable"
                    ))),
                )
            }
        }
    }
    (reports, None)
}
