//! The restore operation: a [`RestorePlan`] is computed and shown first (and is all `--dry-run`
//! does), then applied: store -> hash(stored) -> decrypt -> decompress -> hash(raw) -> the
//! engine's sink,
//! which can undo what it did until both digests match. Every mode goes through one plan: into a
//! live target, swapped in, written to a file, or from a file made elsewhere (`--from-file`).

pub mod system;

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{self, Manifest, ObjectInfo, Selector};
use crate::engine::{AnySink, Engine};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Compression, Keys};
use crate::readback::survey_object;
pub use crate::sink::{RestoreMode, RestoreOptions};
use crate::sink::{Sink, SinkPlan};
use crate::store::{LocalStore, ObjectKey, Store};

/// What a restore will do; printed before anything is touched.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// The job, or `--from-file` for a file made elsewhere.
    pub job: String,
    /// The snapshot to restore.
    pub snapshot: Manifest,
    /// What the engine restores, for messages: `PostgreSQL`, `Redis`, `files`.
    pub product: &'static str,
    /// How the data reaches the target (load, swap, file).
    pub mode: RestoreMode,
    /// The target as the user may see it (no password).
    pub target: String,
    /// What the engine found at the target and will do there.
    pub sink: SinkPlan,
    /// `--clean`: the target's current content is replaced.
    pub clean: bool,
    /// Snapshots newer than the one picked (by `--latest` or `--at`) whose manifests are
    /// damaged: the operator must know that the restore is not of the newest snapshot.
    pub passed_over: Vec<catalog::DamagedSnapshot>,
}

impl RestorePlan {
    /// What the operator must accept before this plan is applied (a newer snapshot is
    /// damaged, so an older one is restored), in one sentence; `None` when nothing is.
    pub fn needs_consent(&self) -> Option<String> {
        let newest = self.passed_over.last()?;
        Some(format!(
            "the newest snapshot {} of job {:?} is damaged ({}); the newest good one is {} from {}",
            catalog::snapshot_id_of_key(&newest.key).unwrap_or(&newest.key),
            self.job,
            newest.error,
            self.snapshot.id,
            self.snapshot
                .consistent_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))
    }
}

/// The plan as `--json` shows it: the snapshot by id, its size, the target and what is there.
impl Serialize for RestorePlan {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let m = &self.snapshot;
        serde_json::json!({
            "job": self.job,
            "snapshot": m.id,
            "engine": m.engine,
            "consistent_at": m.consistent_at,
            "dump_format": m.dump_format,
            "stored_size": m.object.stored_size,
            "raw_size": m.object.raw_size,
            "mode": self.mode,
            "target": self.target,
            "target_server_version": self.sink.target_state.server_version,
            "target_objects": self.sink.target_state.objects,
            "clean": self.clean,
            "notes": self.sink.notes.iter().map(|(label, text)| serde_json::json!({"label": label, "text": text})).collect::<Vec<_>>(),
            "encryption": m.encryption,
            "warnings": m.warnings,
            "passed_over_damaged": self.passed_over,
            "needs_consent": self.needs_consent(),
        })
        .serialize(serializer)
    }
}

/// A finished restore, as `lifeboat-restore` reports it (human or `--json`).
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    /// The job, or `--from-file`.
    pub job: String,
    /// The snapshot's id (or the file's name).
    pub snapshot: String,
    /// Where the data came from (the manifest's source, or the `--from-file` path).
    pub snapshot_source: String,
    /// The instant the restored data holds.
    pub consistent_at: DateTime<Utc>,
    /// Where it went (no password).
    pub target: String,
    /// How it got there.
    pub mode: RestoreMode,
    /// Bytes read from the store.
    pub stored_bytes: u64,
    /// Bytes after decompression, as the engine received them.
    pub raw_bytes: u64,
    /// Wall-clock seconds.
    pub duration_secs: f64,
    /// What is worth telling that is not a failure (e.g. empty Redis collections skipped).
    pub notes: Vec<String>,
}

/// `options` with the job's own settings where the flags left them unset: its `pg-bin-dir`.
pub fn with_job_settings(
    mut options: RestoreOptions,
    config: Option<&crate::config::Config>,
    job: &str,
) -> RestoreOptions {
    if options.pg_bin_dir.is_none() {
        options.pg_bin_dir = config
            .and_then(|c| c.job(job).ok())
            .and_then(|j| j.engine.pg_bin_dir());
    }
    options
}

/// Picks the snapshot, checks that `keys` open it if it is encrypted (its header only), and
/// inspects the target; changes nothing.
pub async fn plan<S: Store>(
    store: &S,
    job: &str,
    selector: &Selector,
    to: &str,
    options: &RestoreOptions,
    keys: &Keys,
    now: DateTime<Utc>,
) -> Result<RestorePlan> {
    let listing = catalog::list_snapshots(store, job).await?;
    let snapshot = catalog::select(&listing.snapshots, job, selector, now)?.clone();
    let passed_over = catalog::damaged_newer_than(&listing, &snapshot, selector, now);
    crate::readback::unlock(store, &snapshot, keys).await?;
    let mut plan = plan_snapshot(job, snapshot, to, options).await?;
    plan.passed_over = passed_over;
    Ok(plan)
}

async fn plan_snapshot(
    job: &str,
    snapshot: Manifest,
    to: &str,
    options: &RestoreOptions,
) -> Result<RestorePlan> {
    let sink = AnySink::for_snapshot(&snapshot, options.pg_bin_dir.as_deref())?;
    let planned = sink.plan(&snapshot, to, options).await?;
    Ok(RestorePlan {
        job: job.to_string(),
        product: sink.product(),
        mode: options.mode,
        target: planned.target.to_string(),
        snapshot,
        sink: planned,
        clean: options.clean,
        passed_over: Vec::new(),
    })
}

/// Applies a plan. On any failure the target is left as it was.
pub async fn apply<S: Store>(
    store: &S,
    plan: &RestorePlan,
    options: &RestoreOptions,
    keys: &Keys,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let sink = AnySink::for_snapshot(&plan.snapshot, options.pg_bin_dir.as_deref())?;
    let applied = sink
        .apply(store, keys, &plan.snapshot, &plan.sink, options)
        .await
        .map_err(|e| {
            e.with_context("job", &plan.job)
                .with_context("snapshot", &plan.snapshot.id)
                .with_context("object", &plan.snapshot.object.key)
                .with_context("target", &plan.target)
        })?;
    Ok(RestoreReport {
        job: plan.job.clone(),
        snapshot: plan.snapshot.id.to_string(),
        snapshot_source: plan.snapshot.source.url.clone(),
        consistent_at: plan.snapshot.consistent_at,
        target: plan.target.clone(),
        mode: plan.mode,
        stored_bytes: applied.stored_bytes,
        raw_bytes: applied.raw_bytes,
        duration_secs: started.elapsed().as_secs_f64(),
        notes: applied.notes,
    })
}

/// The job name `--from-file` plans carry.
pub use crate::catalog::FROM_FILE;

/// `--from-file`: a dump made elsewhere (an old script's `pg_dump`, `redis-cli --rdb` or
/// `tar -czf`, plain, gzip or zstd) restored through the same checks as a snapshot. The file is
/// read whole first (its compression's own checks, both digests, the engine's survey of the
/// dump); the restore then reads it again and must find the same digests, so a file that
/// changes in between is refused before it is committed. Returns the store the plan reads from.
pub async fn plan_from_file(
    path: &Path,
    to: &str,
    engine: Option<Engine>,
    options: &RestoreOptions,
    now: DateTime<Utc>,
) -> Result<(LocalStore, RestorePlan)> {
    let (store, key) = file_as_store(path)?;
    let head = read_head(path).await?;
    let compression = Compression::detect(&head);
    let survey = survey_object(&store, &key, compression)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Integrity => Error::integrity(format!(
                "{} cannot be read whole: {}",
                path.display(),
                e.message()
            ))
            .with_hint("the file is damaged or truncated; the target was not touched"),
            _ => e,
        })?;
    let engine = match engine
        .or_else(|| Engine::detect(&survey.head))
        .or_else(|| Engine::for_target(to))
    {
        Some(engine) => engine,
        None => {
            return Err(Error::config(format!(
                "cannot tell what {} holds: it is not an RDB file, a pg_dump custom archive or a tar archive{}",
                path.display(),
                if compression == Compression::None { "" } else { " (after decompression)" }
            ))
            .with_hint("a plain SQL dump restores into a postgres:// target, or pass --engine postgres"))
        }
    };
    let sink = AnySink::new(engine, options.pg_bin_dir.as_deref());
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(DateTime::<Utc>::from)
        .unwrap_or(now);
    let object = ObjectInfo {
        key: key.to_string(),
        stored_size: survey.stored_size,
        stored_sha256: survey.stored_sha256,
        raw_size: survey.raw_size,
        raw_digest: survey.raw_digest,
    };
    let mut snapshot = Manifest::of_file(
        &path.display().to_string(),
        engine.as_str(),
        dump_format_of(engine, &survey.head),
        compression,
        object,
        modified,
    );
    let surveyed = sink.survey(&store, &snapshot).await.map_err(|e| {
        if e.kind() == ErrorKind::Integrity {
            e.with_hint("the target was not touched")
        } else {
            e
        }
    })?;
    snapshot.fingerprint = surveyed.fingerprint;
    if let Some(version) = surveyed.server_version {
        snapshot.source.server_version = version;
    }
    let plan = plan_snapshot(FROM_FILE, snapshot, to, options).await?;
    Ok((store, plan))
}

/// The dump format names manifests use, for a file's dump.
fn dump_format_of(engine: Engine, head: &[u8]) -> &'static str {
    match engine {
        Engine::Postgres if head.starts_with(b"PGDMP") => "pg_custom",
        Engine::Postgres => "pg_plain",
        Engine::Redis => "redis_rdb",
        Engine::Files => "tar",
        Engine::Mongo => "mongodump_archive",
    }
}

/// A file outside any repository, read through the store interface (its folder as a store).
fn file_as_store(path: &Path) -> Result<(LocalStore, ObjectKey)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::config(format!("--from-file {}: not a file name", path.display())))?;
    let folder = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !path.is_file() {
        return Err(Error::config(format!(
            "--from-file {}: there is no such file",
            path.display()
        )));
    }
    let key = ObjectKey::new(name).map_err(|_| {
        Error::config(format!(
            "--from-file {}: Lifeboat cannot read a file whose name starts with a dot",
            path.display()
        ))
        .with_hint("rename or link it to a name without the leading dot")
    })?;
    Ok((LocalStore::open_existing(folder)?, key))
}

async fn read_head(path: &Path) -> Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(16);
    tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::config(format!("cannot open {}: {e}", path.display())))?
        .take(16)
        .read_to_end(&mut head)
        .await
        .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_formats_follow_the_first_bytes() {
        assert_eq!(dump_format_of(Engine::Postgres, b"PGDMP\x01"), "pg_custom");
        assert_eq!(dump_format_of(Engine::Postgres, b"--\n-- SQL"), "pg_plain");
        assert_eq!(dump_format_of(Engine::Redis, b"REDIS0011"), "redis_rdb");
    }
}
