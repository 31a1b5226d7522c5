//! The restore operation: a [`RestorePlan`] is computed and shown first (and is all `--dry-run`
//! does), then applied: store -> hash(stored) -> decompress -> hash(raw) -> hold back -> sink.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{self, Fingerprint, Manifest, RedisFingerprint, Selector};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{read_snapshot, HoldBackWriter};
use crate::secret::SecretUrl;
use crate::sink::postgres::{self as pg_sink, PgRestoreOptions, PgTools, TargetState};
use crate::sink::redis as redis_sink;
use crate::store::Store;

pub struct RestoreOptions {
    /// PostgreSQL: drop and replace the dump's objects. Redis: empty the target databases.
    pub clean: bool,
    /// Redis: overwrite keys that exist in the target (RESTORE ... REPLACE).
    pub replace: bool,
    /// Redis: source database -> target database (`--db-map 0:3`).
    pub db_map: std::collections::BTreeMap<u64, u64>,
    pub no_owner: bool,
    pub tools: PgTools,
    /// Bytes held back from the sink until the digests match.
    pub hold_back: usize,
}

/// What a restore will do; printed before anything is touched.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub job: String,
    pub snapshot: Manifest,
    /// The target URL with its password hidden.
    pub target: String,
    #[serde(skip)]
    pub target_url: SecretUrl,
    pub target_state: TargetState,
    pub clean: bool,
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub job: String,
    pub snapshot: String,
    pub consistent_at: DateTime<Utc>,
    pub target: String,
    pub stored_bytes: u64,
    pub raw_bytes: u64,
    pub duration_secs: f64,
}

/// Picks the snapshot and inspects the target; changes nothing.
pub async fn plan<S: Store>(
    store: &S,
    job: &str,
    selector: &Selector,
    target: &SecretUrl,
    options: &RestoreOptions,
) -> Result<RestorePlan> {
    let listing = catalog::list_snapshots(store, job).await?;
    let snapshot = catalog::select(&listing.snapshots, job, selector)?.clone();
    if let Fingerprint::Redis(fingerprint) = &snapshot.fingerprint {
        if target.scheme() != "redis" {
            return Err(Error::config(format!(
                "snapshot {} is a Redis backup; --to must be a redis:// URL, got {}://",
                snapshot.id,
                target.scheme()
            )));
        }
        let dbs = target_dbs(fingerprint, &options.db_map);
        let target_state = redis_sink::inspect_target(target, &dbs).await?;
        if target_state.objects > 0 && !options.clean && !options.replace {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "the target {} already holds {} keys in the databases this snapshot restores into ({})",
                    target,
                    target_state.objects,
                    dbs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                ),
            )
            .with_hint("restore into empty databases (--db-map SRC:DST), add --replace to overwrite keys of the same name, or --clean to empty those databases first"));
        }
        return Ok(RestorePlan {
            job: job.to_string(),
            snapshot,
            target: target.to_string(),
            target_url: target.clone(),
            target_state,
            clean: options.clean,
        });
    }
    if snapshot.engine != "postgres" {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "snapshot {} is a {} backup, which this Lifeboat cannot restore",
                snapshot.id, snapshot.engine
            ),
        ));
    }
    if options.clean && snapshot.dump_format == "pg_plain" {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "snapshot {} is a plain SQL dump, which cannot --clean a database",
                snapshot.id
            ),
        )
        .with_hint("restore it into a new, empty database (createdb NAME) instead"));
    }
    let target_state = pg_sink::inspect_target(target).await?;
    if target_state.objects > 0 && !options.clean {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "the target database {} is not empty ({} tables, views, functions or large objects)",
                target, target_state.objects
            ),
        )
        .with_hint("restore into a new empty database (createdb NAME), or add --clean to drop and replace the objects in the dump"));
    }
    Ok(RestorePlan {
        job: job.to_string(),
        snapshot,
        target: target.to_string(),
        target_url: target.clone(),
        target_state,
        clean: options.clean,
    })
}

/// Applies a plan. On any failure the target is left as it was: the child's single transaction
/// never sees the end of a stream whose digests do not match, and is killed (rolled back).
pub async fn apply<S: Store>(
    store: &S,
    plan: &RestorePlan,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let manifest = &plan.snapshot;
    let (stored_bytes, raw_bytes) = match &manifest.fingerprint {
        Fingerprint::Redis(fingerprint) => {
            restore_redis(store, manifest, fingerprint, &plan.target_url, options).await?
        }
        Fingerprint::Postgres(_) => {
            restore_into(store, manifest, &plan.target_url, options).await?
        }
    };
    Ok(RestoreReport {
        job: plan.job.clone(),
        snapshot: manifest.id.to_string(),
        consistent_at: manifest.consistent_at,
        target: plan.target.clone(),
        stored_bytes,
        raw_bytes,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// The target databases a Redis snapshot is written to.
fn target_dbs(
    fingerprint: &RedisFingerprint,
    db_map: &std::collections::BTreeMap<u64, u64>,
) -> Vec<u64> {
    let mut dbs: Vec<u64> = fingerprint
        .databases()
        .into_iter()
        .map(|db| redis_sink::target_db(db_map, db))
        .collect();
    dbs.sort_unstable();
    dbs.dedup();
    dbs
}

/// Checks the whole snapshot first (both digests, RDB structure and CRC64, key counts), then
/// loads it: Redis cannot roll a partial load back, so nothing is written before the check.
pub async fn restore_redis<S: Store>(
    store: &S,
    manifest: &Manifest,
    fingerprint: &RedisFingerprint,
    target: &SecretUrl,
    options: &RestoreOptions,
) -> Result<(u64, u64)> {
    let mut check = redis_sink::RdbCheck::default();
    read_snapshot(store, manifest, &mut check).await?;
    let findings = check.finish(fingerprint);
    if !findings.is_empty() {
        return Err(Error::integrity(format!(
            "snapshot {} does not match its manifest: {}",
            manifest.id,
            findings.join("; ")
        ))
        .with_hint(
            "the target was not touched; restore an older snapshot (lifeboat-restore list)",
        ));
    }
    if options.clean {
        redis_sink::flush(target, &target_dbs(fingerprint, &options.db_map)).await?;
    }
    let mut loader = redis_sink::RedisLoader::open(
        target,
        options.replace,
        options.db_map.clone(),
        &manifest.source.server_version,
    )
    .await?;
    let read = read_snapshot(store, manifest, &mut loader).await.map_err(|e| {
        e.with_hint("the snapshot changed between the check and the load; the target may hold part of it")
    })?;
    let restored = loader.finish().await;
    if let Some(e) = read.sink_error {
        if restored.is_ok() {
            return Err(Error::new(
                ErrorKind::Sink,
                format!("restoring into {target} failed: {e}"),
            ));
        }
    }
    let restored = restored?;
    tracing::info!(
        "Restored {restored} keys of snapshot {} into {target}.",
        manifest.id
    );
    Ok((read.stored_bytes, read.raw_bytes))
}

/// Streams a snapshot into a PostgreSQL database (also used by drills).
pub async fn restore_into<S: Store>(
    store: &S,
    manifest: &Manifest,
    target: &SecretUrl,
    options: &RestoreOptions,
) -> Result<(u64, u64)> {
    let (child, stdin) = pg_sink::start_restore(
        &options.tools,
        manifest,
        target,
        &PgRestoreOptions {
            clean: options.clean,
            no_owner: options.no_owner,
        },
    )?;
    let mut sink = HoldBackWriter::new(stdin, options.hold_back);
    let read = match read_snapshot(store, manifest, &mut sink).await {
        Ok(r) => r,
        Err(e) => {
            // Damaged or unreadable: kill the child before it can commit.
            drop(sink.discard());
            child.kill().await;
            return Err(e);
        }
    };
    let released = match read.sink_error {
        None => sink.release().await.map(|_| ()),
        Some(e) => {
            drop(sink.discard());
            Err(e)
        }
    };
    let child_result = child.finish().await;
    let failed = |detail: String| {
        Error::new(
            ErrorKind::Sink,
            format!(
                "restoring snapshot {} into {target} failed: {detail}",
                manifest.id
            ),
        )
        .with_hint(
            "the restore ran in a single transaction and was rolled back; the target is as it was",
        )
    };
    match (child_result, released) {
        (Err(e), _) => Err(failed(e.message().to_string())),
        (Ok(_), Err(e)) => Err(failed(format!("cannot write to the restore program: {e}"))),
        (Ok(_), Ok(())) => Ok((read.stored_bytes, read.raw_bytes)),
    }
}
