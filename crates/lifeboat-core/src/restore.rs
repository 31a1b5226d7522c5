//! The restore operation: a [`RestorePlan`] is computed and shown first (and is all `--dry-run`
//! does), then applied: store -> hash(stored) -> decompress -> hash(raw) -> hold back -> sink.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{self, Manifest, Selector};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{read_snapshot, HoldBackWriter};
use crate::secret::SecretUrl;
use crate::sink::postgres::{self as pg_sink, PgRestoreOptions, PgTools, TargetState};
use crate::store::Store;

pub struct RestoreOptions {
    pub clean: bool,
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
    if snapshot.engine != "postgres" {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "snapshot {} is a {} backup; this Lifeboat restores postgres only",
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
    let (stored_bytes, raw_bytes) =
        restore_into(store, manifest, &plan.target_url, options).await?;
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
