//! The backup operation: source -> hash(raw) -> compress -> encrypt (optional) -> hash(stored)
//! -> store, manifest last.
//!
//! The dump is read by one task (which digests the raw bytes) and compressed and written by
//! another, so reading, hashing and compression overlap; memory is bounded by the chunk size
//! times the channel depth, never by the size of the database.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{self, Contents, Manifest, ObjectInfo, SnapshotId, MANIFEST_FORMAT};
use crate::config::Job;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{
    Compression, Digest, EncryptionInfo, RawDigest, Sealing, Streamed, WritePipeline,
};
use crate::secret::SecretUrl;
use crate::source::Capture;
use crate::source::Finished;
use crate::store::{ObjectKey, ObjectWriter, Store};

/// How one backup runs, besides the job itself.
pub struct BackupOptions {
    /// The start time (the caller reads the clock).
    pub now: DateTime<Utc>,
    /// Unfinished uploads older than this are removed at the start of a run.
    pub leftover_grace: Duration,
    /// Worker threads for zstd (1: compress inline).
    pub compression_threads: u32,
    /// The job name was chosen for the user (a one-liner without `--job`): refuse to add to a
    /// history whose snapshots came from another source (two servers' databases called `app`
    /// would otherwise share one history, and its retention, silently).
    pub same_source_only: bool,
    /// The job's lock, proved still held right before the manifest is written: a run that
    /// lost it commits nothing (`None`: a backup run without a lock, as in unit tests).
    pub lease: Option<std::sync::Arc<dyn crate::lock::Lease>>,
    /// Added to the times this host's clock gives (the source's `consistent_at`) so that a
    /// snapshot is dated by the store's clock when this host's is known to be off (zero
    /// otherwise; `now` is corrected by the caller).
    pub clock_offset: chrono::Duration,
}

/// A committed snapshot, as `lifeboat-backup` reports it (human or `--json`).
#[derive(Debug, Serialize)]
pub struct BackupReport {
    /// The job's name.
    pub job: String,
    /// The new snapshot's id.
    pub snapshot: SnapshotId,
    /// The instant the snapshot holds the source as it was.
    pub consistent_at: DateTime<Utc>,
    /// When the run started (with the job's lock held) and committed, as in the manifest.
    pub started_at: DateTime<Utc>,
    /// When the manifest was written.
    pub finished_at: DateTime<Utc>,
    /// Wall-clock seconds from start to commit.
    pub duration_secs: f64,
    /// Bytes the source produced (before compression).
    pub raw_size: u64,
    /// Bytes stored (after compression).
    pub stored_size: u64,
    /// The digest of the raw stream (`raw_blake3`, or `raw_sha256` for an object stored as
    /// dumped).
    #[serde(flatten)]
    pub raw_digest: RawDigest,
    /// SHA-256 of the stored object.
    pub stored_sha256: Digest,
    /// What the snapshot holds, in words and counts (e.g. "12 tables, 3400 rows").
    #[serde(flatten)]
    pub contents: Contents,
    /// What went wrong without failing the backup (files: a file changed while it was read).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// How the data object is compressed, as the manifest records it.
    pub compression: Compression,
    /// How it is encrypted, as the manifest records it (`None`: unencrypted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// The data object's key in the repository.
    pub object_key: String,
    /// Unfinished uploads of earlier runs removed at the start.
    pub leftovers_removed: Vec<String>,
}

/// Runs one backup job to a committed snapshot, or fails leaving nothing visible; a job with a
/// `timeout` is stopped (nothing committed) when it takes longer.
pub async fn backup<S: Store>(
    store: &S,
    job: &Job,
    options: &BackupOptions,
) -> Result<BackupReport> {
    let Some(limit) = job.timeout else {
        return backup_unbounded(store, job, options).await;
    };
    match tokio::time::timeout(limit, backup_unbounded(store, job, options)).await {
        Ok(done) => done,
        Err(_) => Err(Error::new(
            ErrorKind::Source,
            format!(
                "the backup of job {:?} took longer than its timeout of {}; it was stopped and nothing was committed",
                job.name,
                crate::text::format_duration(limit)
            ),
        )
        .with_hint("raise the job's timeout (or --timeout), or find out why the dump is slower than usual")),
    }
}

async fn backup_unbounded<S: Store>(
    store: &S,
    job: &Job,
    options: &BackupOptions,
) -> Result<BackupReport> {
    let started = std::time::Instant::now();
    // Usually done already by the job run; a backup called on its own needs it too.
    catalog::ensure_repository(store, options.now).await?;
    // Snapshot folders are written only under the job's lock (backup, copy into the
    // repository, pin, prune, forget): a run that holds it (`lease`) knows that whatever is
    // unfinished there belongs to no live run, however young. Elsewhere (verification records,
    // written without the lock) and without the lock, the grace period decides.
    let in_snapshots = if options.lease.is_some() {
        Duration::ZERO
    } else {
        options.leftover_grace
    };
    let mut leftovers_removed =
        crate::prune::remove_leftovers(store, &job.name, options.now, in_snapshots).await?;
    leftovers_removed.extend(
        store
            .remove_incomplete(
                &catalog::verifications_prefix(&job.name),
                options.leftover_grace,
            )
            .await?,
    );

    let history = catalog::list_snapshots(store, &job.name).await?.snapshots;
    if options.same_source_only {
        check_same_source(job, &history)?;
    }
    // The previous snapshot's size sizes the upload's parts (S3 allows 10,000 per upload).
    let size_hint = history.last().map(|m| m.object.stored_size);
    let id = SnapshotId::generate(options.now);
    // The file key is wrapped (and a passphrase read) before the source is touched.
    let sealing = job.encryption.as_ref().map(|e| e.seal()).transpose()?;
    let context = Context {
        sealing,
        started,
        id,
        size_hint,
        leftovers_removed,
    };
    let capture = crate::engine::capture(&job.engine).await?;
    capture_and_commit(store, job, options, context, capture).await
}

/// What every engine's backup shares.
struct Context {
    /// The encryption of this snapshot's data object, if the job encrypts.
    sealing: Option<Sealing>,
    started: std::time::Instant,
    id: SnapshotId,
    size_hint: Option<u64>,
    leftovers_removed: Vec<String>,
}

/// Streams a capture of the job's source into the store, and commits it only when the source
/// ended well (its own verdict after the last byte) and the store kept every byte.
async fn capture_and_commit<S: Store>(
    store: &S,
    job: &Job,
    options: &BackupOptions,
    mut context: Context,
    capture: Capture,
) -> Result<BackupReport> {
    let Capture { stream, info, end } = capture;
    let pipeline = WritePipeline::new(
        job.compression,
        options.compression_threads,
        job.idle_timeout,
    )
    .encrypted(context.sealing.take());
    let id = &context.id;
    let key = ObjectKey::new(format!(
        "{}{}",
        catalog::snapshot_prefix(&job.name, id),
        pipeline.object_name(info.extension)
    ))?;
    tracing::info!(
        "Backing up job {:?} ({}) to {} as snapshot {id}.",
        job.name,
        info.description,
        store.describe()
    );
    // The previous snapshot's size, or on a first run the source's estimate (larger than the
    // stored size, so the parts err on the large side).
    let size_hint = context.size_hint.or(info.size_estimate);
    // The progress line's total: the source's estimate of the dump (PostgreSQL's database
    // size, Redis's dataset memory, MongoDB's collection sizes), in raw bytes.
    let meter = crate::pipeline::meter::meter();
    meter.reset();
    if let Some(estimate) = info.size_estimate {
        meter.expect(estimate, false);
    }
    let mut writer = store.create_sized(&key, size_hint).await?;
    let streamed = pipeline.run(stream, &mut writer).await;
    // A failed stream is the cause (a full store, a source that went silent): the capture is
    // stopped, since its process may never end by itself. A stream that ended cleanly is
    // judged by the source's own verdict: a failed dump explains a short stream best.
    let outcome = match streamed {
        Err(e) => {
            end.abort().await;
            Err(e)
        }
        Ok(streamed) => end.finish().await.map(|finished| (streamed, finished)),
    };
    let (streamed, finished) = match outcome {
        Ok(v) => v,
        Err(e) => return Err(abandon(writer, e).await),
    };
    let stored = writer.finish().await?;
    let mut companions = std::collections::BTreeMap::new();
    for companion in &finished.companions {
        let object = store_companion(store, job, options, &context.id, companion).await?;
        companions.insert(companion.name.to_string(), object);
    }
    let captured = Captured {
        engine: info.engine,
        consistent_at: finished.consistent_at.unwrap_or(info.consistent_at) + options.clock_offset,
        dump_format: info.dump_format,
        streamed,
        finished,
        companions,
    };
    commit_snapshot(store, job, options, context, &key, stored.size, captured).await
}

/// Stores a companion object of the snapshot beside its data object, through the same
/// compression and encryption; before the manifest, which records its digests.
async fn store_companion<S: Store>(
    store: &S,
    job: &Job,
    options: &BackupOptions,
    id: &SnapshotId,
    companion: &crate::source::Companion,
) -> Result<ObjectInfo> {
    let sealing = job.encryption.as_ref().map(|e| e.seal()).transpose()?;
    let pipeline = WritePipeline::new(
        job.compression,
        options.compression_threads,
        job.idle_timeout,
    )
    .encrypted(sealing);
    let key = ObjectKey::new(format!(
        "{}{}",
        catalog::snapshot_prefix(&job.name, id),
        pipeline.named_object(companion.name, companion.extension)
    ))?;
    let mut writer = store.create(&key).await?;
    match pipeline
        .run(std::io::Cursor::new(companion.bytes.clone()), &mut writer)
        .await
    {
        Ok(streamed) => {
            writer.finish().await?;
            Ok(ObjectInfo {
                key: key.to_string(),
                stored_size: streamed.stored_size,
                stored_sha256: streamed.stored_sha256,
                raw_size: streamed.raw_size,
                raw_digest: streamed.raw_digest,
            })
        }
        Err(e) => Err(abandon(writer, e).await),
    }
}

/// Refuses to add a snapshot of one source to the history of another (see
/// [`BackupOptions::same_source_only`]).
fn check_same_source(job: &Job, history: &[crate::catalog::Manifest]) -> Result<()> {
    let this = job.engine.identity();
    // A URL's identity (scheme, host, port, database); a files job's paths as written.
    let identity =
        |url: &str| SecretUrl::parse(url).map_or_else(|_| url.to_string(), |u| u.identity());
    let Some(other) = history
        .iter()
        .rev()
        .map(|m| &m.source.url)
        .find(|url| identity(url) != this)
    else {
        return Ok(());
    };
    Err(Error::config(format!(
        "job {:?} holds snapshots of {other}, not of {this}: two sources would share one history",
        job.name
    ))
    .with_hint(format!(
        "give this source its own job with --job NAME; or, if it is the same database that moved, name the job on purpose: --job {}",
        job.name
    )))
}

/// Throws an upload away after `failure`. When the store had stopped the upload itself, its
/// error (an S3 status, a lost connection) is the real cause, and replaces the write error
/// that could only say the upload had ended.
async fn abandon<W: ObjectWriter>(writer: W, failure: Error) -> Error {
    match writer.abort().await {
        Err(store_error) if failure.kind() == ErrorKind::Store => store_error,
        Err(store_error) => {
            tracing::warn!("The upload was abandoned after the failure below; the store also reported: {store_error}");
            failure
        }
        Ok(()) => failure,
    }
}

/// What an engine's capture produced, ready to be committed as a snapshot.
struct Captured {
    engine: &'static str,
    consistent_at: DateTime<Utc>,
    dump_format: &'static str,
    streamed: Streamed,
    finished: Finished,
    companions: std::collections::BTreeMap<String, ObjectInfo>,
}

/// Writes the manifest of a fully stored data object (see [`commit`]) and reports the snapshot.
async fn commit_snapshot<S: Store>(
    store: &S,
    job: &Job,
    options: &BackupOptions,
    context: Context,
    key: &ObjectKey,
    reported_size: u64,
    captured: Captured,
) -> Result<BackupReport> {
    let Context {
        started,
        id,
        leftovers_removed,
        ..
    } = context;
    let Streamed {
        raw_digest,
        raw_size,
        stored_sha256,
        stored_size,
        compression,
        encryption,
    } = captured.streamed;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: id.clone(),
        job: job.name.clone(),
        engine: captured.engine.into(),
        tool_version: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
        started_at: options.now,
        finished_at: options.now
            + chrono::Duration::from_std(started.elapsed()).unwrap_or_default(),
        consistent_at: captured.consistent_at,
        source: captured.finished.source,
        dump_format: captured.dump_format.into(),
        compression,
        encryption,
        object: ObjectInfo {
            key: key.to_string(),
            stored_size,
            stored_sha256,
            raw_size,
            raw_digest,
        },
        fingerprint: captured.finished.fingerprint,
        warnings: captured.finished.warnings,
        companions: captured.companions,
    };
    commit(
        store,
        key,
        reported_size,
        &manifest,
        options.lease.as_deref(),
    )
    .await?;
    let contents = manifest.fingerprint.contents();
    Ok(BackupReport {
        job: job.name.clone(),
        snapshot: id,
        consistent_at: manifest.consistent_at,
        started_at: manifest.started_at,
        finished_at: manifest.finished_at,
        duration_secs: started.elapsed().as_secs_f64(),
        raw_size,
        stored_size,
        raw_digest,
        stored_sha256,
        contents,
        warnings: manifest.warnings.clone(),
        compression,
        encryption: manifest.encryption.clone(),
        object_key: key.to_string(),
        leftovers_removed,
    })
}

/// Checks what the store kept and that the job's lock is still this run's, then writes the
/// manifest: the commit, last and in one step. On failure the snapshot's objects are removed
/// again.
async fn commit<S: Store>(
    store: &S,
    key: &ObjectKey,
    stored_size: u64,
    manifest: &Manifest,
    lease: Option<&dyn crate::lock::Lease>,
) -> Result<()> {
    let uncommitted = async || {
        let _ = store.delete(key).await;
        for companion in manifest.companions.values() {
            if let Ok(k) = ObjectKey::new(companion.key.clone()) {
                let _ = store.delete(&k).await;
            }
        }
    };
    if stored_size != manifest.object.stored_size {
        uncommitted().await;
        return Err(Error::store(format!(
            "the store reports {stored_size} bytes for {key}, but {} were written",
            manifest.object.stored_size
        )));
    }
    if let Some(lease) = lease {
        if let Err(e) = lease.confirm().await {
            uncommitted().await;
            return Err(e.with_context("snapshot", manifest.id.to_string()));
        }
    }
    if let Err(e) = store
        .put(
            &catalog::manifest_key(&manifest.job, &manifest.id)?,
            &manifest.to_json(),
        )
        .await
    {
        uncommitted().await;
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::source::fake::capture;
    use crate::source::Capture;
    use crate::store::LocalStore;
    use tokio::io::AsyncRead;

    fn new_store() -> (LocalStore, std::path::PathBuf) {
        let root = std::env::temp_dir().join(format!(
            "lifeboat-unit-backup-{}-{}",
            std::process::id(),
            SnapshotId::generate(Utc::now())
        ));
        (LocalStore::open(&root).unwrap(), root)
    }

    async fn run(capture: Capture) -> (Result<BackupReport>, LocalStore, std::path::PathBuf) {
        let (store, root) = new_store();
        run_in(store, root, capture, None).await
    }

    /// [`run`] into `store`, proving `lease` before the commit.
    async fn run_in(
        store: LocalStore,
        root: std::path::PathBuf,
        capture: Capture,
        lease: Option<std::sync::Arc<dyn crate::lock::Lease>>,
    ) -> (Result<BackupReport>, LocalStore, std::path::PathBuf) {
        let spec = crate::config::JobSpec {
            name: "app".into(),
            engine: crate::config::EngineName::Postgres,
            url: Some("postgres://h/db".into()),
            ..Default::default()
        };
        let job = crate::config::validate_job(&spec, &Default::default(), None).unwrap();
        let options = BackupOptions {
            now: Utc::now(),
            leftover_grace: std::time::Duration::from_secs(3600),
            compression_threads: 1,
            same_source_only: false,
            lease,
            clock_offset: chrono::Duration::zero(),
        };
        let context = Context {
            sealing: None,
            started: std::time::Instant::now(),
            id: SnapshotId::generate(options.now),
            size_hint: None,
            leftovers_removed: Vec::new(),
        };
        let result = capture_and_commit(&store, &job, &options, context, capture).await;
        (result, store, root)
    }

    async fn objects(store: &LocalStore) -> Vec<String> {
        store
            .list("jobs/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key.to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_dump_that_fails_after_its_last_byte_commits_nothing() {
        let bytes: &'static [u8] = b"PGDMP a whole dump, then a failed exit status";
        let (capture, aborted) =
            capture(Box::new(bytes), Err("pg_dump exited with status 1".into()));
        let (result, store, root) = run(capture).await;
        let e = result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Source);
        assert!(e.message().contains("status 1"), "{}", e.message());
        assert!(
            !aborted.load(Ordering::SeqCst),
            "a stream that ended is judged, not aborted"
        );
        assert_eq!(objects(&store).await, Vec::<String>::new());
        let _ = std::fs::remove_dir_all(root);
    }

    #[tokio::test]
    async fn a_stream_that_fails_stops_the_source_and_commits_nothing() {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Err(std::io::Error::other("the connection broke")))
            }
        }
        let (capture, aborted) = capture(Box::new(Broken), Ok(()));
        let (result, store, root) = run(capture).await;
        assert!(result
            .unwrap_err()
            .message()
            .contains("the connection broke"));
        assert!(aborted.load(Ordering::SeqCst), "the source was not stopped");
        assert_eq!(objects(&store).await, Vec::<String>::new());
        let _ = std::fs::remove_dir_all(root);
    }

    /// Regression (Trust III, 2): a run whose lock another host replaced during the run still
    /// committed its snapshot (and pruned). Before the manifest, the run proves it still holds
    /// the lease; one that lost it commits nothing, removes its data object, says who holds
    /// the lock now (exit 4) and leaves that lock alone.
    #[tokio::test]
    async fn a_run_that_lost_its_lock_still_commits() {
        use crate::lock::{acquire, lock_key, Holder, LockInfo};
        let bytes: &'static [u8] = b"PGDMP a whole dump";
        let (capture, _) = capture(Box::new(bytes), Ok(()));
        let other = LockInfo {
            owner: "lifeboat-backup".into(),
            host: "other-host".into(),
            pid: 4242,
            token: "theirs".into(),
            started_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::minutes(10),
            process: None,
        };
        let (store, root) = new_store();
        let holder = Holder {
            owner: "test".into(),
            host: "here".into(),
            pid: 1,
            process: None,
        };
        let lease = std::time::Duration::from_secs(600);
        let guard = acquire(&store, "app", &holder, lease, Utc::now())
            .await
            .unwrap();
        // Another host takes the lock over while this run dumps.
        store
            .put(
                &lock_key("app").unwrap(),
                &serde_json::to_vec(&other).unwrap(),
            )
            .await
            .unwrap();
        let (result, store, root) = run_in(store, root, capture, Some(guard.lease())).await;
        let e = result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Lock, "{e}");
        assert!(e.message().contains("other-host"), "{}", e.message());
        assert_eq!(e.exit_code(), 4);
        // Only the other host's lock is left, untouched.
        assert_eq!(objects(&store).await, vec!["jobs/app/lock".to_string()]);
        let lock = crate::lock::current(&store, "app").await.unwrap().unwrap();
        assert_eq!(lock.token, "theirs");
        drop(guard);
        let _ = std::fs::remove_dir_all(root);
    }

    #[tokio::test]
    async fn a_good_capture_commits_its_manifest_last() {
        let bytes: &'static [u8] = b"PGDMP a whole dump";
        let (capture, _) = capture(Box::new(bytes), Ok(()));
        let (result, store, root) = run(capture).await;
        let report = result.unwrap();
        // Compressed, so the raw digest is BLAKE3's.
        assert_eq!(
            report.raw_digest,
            RawDigest::of(crate::pipeline::Algorithm::Blake3, bytes)
        );
        let keys = objects(&store).await;
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.iter().any(|k| k.ends_with("/manifest.json")));
        let _ = std::fs::remove_dir_all(root);
    }
}
