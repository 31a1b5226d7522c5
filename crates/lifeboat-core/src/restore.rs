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
    /// Redis: load into spare databases, then SWAPDB each with its target.
    pub swap: bool,
    pub no_owner: bool,
    pub tools: PgTools,
    /// Bytes held back from the sink until the digests match.
    pub hold_back: usize,
    /// The current time, for picking the latest snapshot (future-dated ones never are).
    pub now: chrono::DateTime<chrono::Utc>,
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
    /// Redis `--mode swap`.
    pub swap: bool,
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
    /// Redis: empty collections in the snapshot, skipped as redis-server skips them on load.
    pub skipped_empty_keys: u64,
}

/// Refuses options that do not apply to the snapshot's engine: the same checks for a dry run
/// and a real one, before anything is inspected.
fn check_options_fit(snapshot: &Manifest, options: &RestoreOptions) -> Result<()> {
    let redis_only = [
        ("--db-map", !options.db_map.is_empty()),
        ("--replace", options.replace),
        ("--mode swap", options.swap),
    ];
    let postgres_only = [("--no-owner", options.no_owner)];
    let (misfits, for_engine) = match snapshot.fingerprint {
        Fingerprint::Redis(_) => (&postgres_only[..], "PostgreSQL"),
        Fingerprint::Postgres(_) => (&redis_only[..], "Redis"),
    };
    match misfits.iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(Error::config(format!(
            "{flag} applies to {for_engine} snapshots; snapshot {} is a {} backup",
            snapshot.id, snapshot.engine
        ))
        .with_hint(format!("drop {flag}"))),
        None => Ok(()),
    }
}

/// `--mode file`: picks the snapshot and checks that it can be written to `path`; changes
/// nothing. A dry run and the real run (see [`redis_to_file`]) go through the same checks.
pub async fn plan_file<S: Store>(
    store: &S,
    job: &str,
    selector: &Selector,
    path: &std::path::Path,
    overwrite: bool,
    now: DateTime<Utc>,
) -> Result<Manifest> {
    let listing = catalog::list_snapshots(store, job).await?;
    let manifest = catalog::select(&listing.snapshots, job, selector, now)?.clone();
    check_file_target(&manifest, path, overwrite)?;
    Ok(manifest)
}

fn check_file_target(manifest: &Manifest, path: &std::path::Path, overwrite: bool) -> Result<()> {
    if !matches!(manifest.fingerprint, Fingerprint::Redis(_)) {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "snapshot {} is a {} backup; --mode file writes Redis snapshots only",
                manifest.id, manifest.engine
            ),
        ));
    }
    if path.exists() && !overwrite {
        return Err(
            Error::new(ErrorKind::Refused, format!("{} exists", path.display())).with_hint(
                "stop the server, move the old file aside, or add --clean to replace it",
            ),
        );
    }
    let folder = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !folder.is_dir() {
        return Err(Error::config(format!(
            "{} is not a directory, so {} cannot be written",
            folder.display(),
            path.display()
        )));
    }
    Ok(())
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
    let snapshot = catalog::select(&listing.snapshots, job, selector, options.now)?.clone();
    check_options_fit(&snapshot, options)?;
    if let Fingerprint::Redis(fingerprint) = &snapshot.fingerprint {
        if !matches!(target.scheme(), "redis" | "rediss") {
            return Err(Error::config(format!(
                "snapshot {} is a Redis backup; --to must be a redis:// or rediss:// URL, got {}://",
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
                    "the target {} already holds {} in the databases this snapshot restores into ({})",
                    target,
                    crate::backup::counted(target_state.objects as u64, "key"),
                    dbs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                ),
            )
            .with_hint(if options.swap {
                "--mode swap replaces those databases whole: add --clean (or --replace) to confirm, or restore into empty databases (--db-map SRC:DST)"
            } else {
                "restore into empty databases (--db-map SRC:DST), add --replace to overwrite keys of the same name, or --clean to empty those databases first"
            }));
        }
        return Ok(RestorePlan {
            job: job.to_string(),
            snapshot,
            target: target.to_string(),
            target_url: target.clone(),
            target_state,
            clean: options.clean,
            swap: options.swap,
        });
    }
    if options.swap {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "snapshot {} is a {} backup; --mode swap is for Redis",
                snapshot.id, snapshot.engine
            ),
        ));
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
                "the target database {} is not empty: it holds {} (tables, views, sequences, functions or large objects)",
                target,
                crate::backup::counted(target_state.objects as u64, "object")
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
        swap: false,
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
    let (stored_bytes, raw_bytes, skipped_empty_keys) = match &manifest.fingerprint {
        Fingerprint::Redis(fingerprint) => {
            let load =
                restore_redis(store, manifest, fingerprint, &plan.target_url, options).await?;
            let skipped = load.skipped_empty.values().flat_map(|t| t.values()).sum();
            (load.stored_bytes, load.raw_bytes, skipped)
        }
        Fingerprint::Postgres(_) => {
            let (stored, raw) = restore_into(store, manifest, &plan.target_url, options).await?;
            (stored, raw, 0)
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
        skipped_empty_keys,
    })
}

/// The target databases a Redis snapshot is written to.
pub fn target_dbs(
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

/// Reads a whole Redis snapshot: both digests, the RDB's structure and CRC64, and its key
/// counts against the manifest. Nothing is written anywhere.
async fn check_redis_snapshot<S: Store>(
    store: &S,
    manifest: &Manifest,
    fingerprint: &RedisFingerprint,
) -> Result<()> {
    let mut check = redis_sink::RdbCheck::default();
    read_snapshot(store, manifest, &mut check).await?;
    let findings = check.finish(fingerprint);
    if !findings.is_empty() {
        return Err(Error::integrity(format!(
            "snapshot {} does not match its manifest: {}",
            manifest.id,
            findings.join("; ")
        ))
        .with_hint("nothing was written; restore an older snapshot (lifeboat-restore list)"));
    }
    Ok(())
}

/// What a Redis load did.
pub struct RedisLoad {
    pub stored_bytes: u64,
    pub raw_bytes: u64,
    pub restored: u64,
    /// Keys whose expiry had passed when they were sent, per target database and type.
    pub expired: redis_sink::KeyCounts,
    /// Empty collections skipped (redis-server skips them on load too).
    pub skipped_empty: redis_sink::KeyCounts,
}

/// Checks the whole snapshot first (both digests, RDB structure and CRC64, key counts), then
/// loads it: Redis cannot roll a partial load back, so nothing is written before the check.
pub async fn restore_redis<S: Store>(
    store: &S,
    manifest: &Manifest,
    fingerprint: &RedisFingerprint,
    target: &SecretUrl,
    options: &RestoreOptions,
) -> Result<RedisLoad> {
    check_redis_snapshot(store, manifest, fingerprint).await?;
    let targets = target_dbs(fingerprint, &options.db_map);
    // --mode swap: load into empty spare databases, swap them in at the end.
    let spares = if options.swap {
        Some(redis_sink::pick_spares(target, &targets).await?)
    } else {
        None
    };
    let db_map = match &spares {
        Some(spares) => fingerprint
            .databases()
            .into_iter()
            .map(|db| {
                let t = redis_sink::target_db(&options.db_map, db);
                (db, spares.get(&t).copied().unwrap_or(t))
            })
            .collect(),
        None => options.db_map.clone(),
    };
    if options.clean && spares.is_none() {
        redis_sink::flush(target, &targets).await?;
    }
    let mut loader = redis_sink::RedisLoader::open(
        target,
        options.replace,
        options.replace || options.clean || options.swap,
        db_map,
        &manifest.source.server_version,
    )
    .await?;
    let read = read_snapshot(store, manifest, &mut loader).await.map_err(|e| {
        e.with_hint("the snapshot changed between the check and the load; the target may hold part of it")
    })?;
    let loaded = loader.finish_counted().await;
    if let Some(e) = read.sink_error {
        if loaded.is_ok() {
            return Err(Error::new(
                ErrorKind::Sink,
                format!("restoring into {target} failed: {e}"),
            ));
        }
    }
    let redis_sink::Loaded {
        restored,
        expired,
        skipped_empty,
    } = match loaded {
        Ok(v) => v,
        Err(e) => {
            if let Some(spares) = &spares {
                // The spares were empty: emptying them again leaves the target as it was.
                let used: Vec<u64> = spares.values().copied().collect();
                let _ = redis_sink::flush(target, &used).await;
                return Err(e.with_hint("--mode swap: the target databases were not touched"));
            }
            return Err(e);
        }
    };
    if let Some(spares) = &spares {
        redis_sink::swap_in(target, spares).await?;
    }
    tracing::info!(
        "Restored {restored} keys of snapshot {} into {target}.",
        manifest.id
    );
    Ok(RedisLoad {
        stored_bytes: read.stored_bytes,
        raw_bytes: read.raw_bytes,
        restored,
        expired,
        skipped_empty,
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

/// Writes a Redis snapshot as an RDB file (`--mode file`), for a stopped self-hosted server to
/// load at start. The snapshot is checked whole first; the file appears under `path` only when
/// complete (written beside it, synced, renamed).
pub async fn redis_to_file<S: Store>(
    store: &S,
    manifest: &Manifest,
    path: &std::path::Path,
    overwrite: bool,
) -> Result<(u64, u64)> {
    check_file_target(manifest, path, overwrite)?;
    let Fingerprint::Redis(fingerprint) = &manifest.fingerprint else {
        return Err(Error::integrity(
            "the snapshot's engine changed under the check",
        ));
    };
    check_redis_snapshot(store, manifest, fingerprint).await?;
    let temp = path.with_file_name(format!(
        ".{}.lifeboat-tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dump.rdb".into())
    ));
    let io = |what: &str, p: &std::path::Path, e: std::io::Error| {
        Error::new(
            ErrorKind::Sink,
            format!("cannot {what} {}: {e}", p.display()),
        )
    };
    let file = tokio::fs::File::create(&temp)
        .await
        .map_err(|e| io("create", &temp, e))?;
    let mut sink = FileSink(file);
    let read = read_snapshot(store, manifest, &mut sink).await;
    let written = match read {
        Ok(r) if r.sink_error.is_none() => sink.commit(r.raw_bytes).await.map(|_| r),
        Ok(r) => Err(r
            .sink_error
            .unwrap_or_else(|| std::io::Error::other("write failed"))),
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
    };
    let read = match written {
        Ok(r) => r,
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(io("write", &temp, e));
        }
    };
    tokio::fs::rename(&temp, path)
        .await
        .map_err(|e| io("rename into place", path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let folder = async { tokio::fs::File::open(dir).await?.sync_all().await };
        folder
            .await
            .map_err(|e| io("fsync the folder of", path, e))?;
    }
    Ok((read.stored_bytes, read.raw_bytes))
}

struct FileSink(tokio::fs::File);

impl FileSink {
    /// Makes what was written durable and checks that all of it reached the file. tokio's
    /// `File` writes in a background thread: without the `flush`, the error of the last write
    /// (a full disk) is never seen and `sync_all` succeeds on a truncated file.
    async fn commit(&mut self, expected: u64) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.0.flush().await?;
        self.0.sync_all().await?;
        let len = self.0.metadata().await?.len();
        if len != expected {
            return Err(std::io::Error::other(format!(
                "the file has {len} bytes, the snapshot {expected}"
            )));
        }
        Ok(())
    }
}

impl crate::pipeline::RawSink for FileSink {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.0.write_all(chunk).await
    }
}

/// Loads an RDB file made elsewhere (e.g. by `redis-cli --rdb`) into a live server: the whole
/// file is read and its CRC64 checked first, then it is loaded like a snapshot.
/// With `dry_run`, stops after the checks (the whole file, and the target's state): a dry run
/// refuses exactly what the real run would.
pub async fn rdb_file_into_redis(
    path: &std::path::Path,
    target: &SecretUrl,
    options: &RestoreOptions,
    dry_run: bool,
) -> Result<(lifeboat_rdb::Summary, u64)> {
    use tokio::io::AsyncReadExt;
    let open = || async {
        tokio::fs::File::open(path).await.map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("cannot open {}: {e}", path.display()),
            )
        })
    };
    let read_error = |e: std::io::Error| {
        Error::new(
            ErrorKind::Sink,
            format!("cannot read {}: {e}", path.display()),
        )
    };
    // Pass 1: the whole file, structure and checksum.
    let mut file = open().await?;
    let mut reader = lifeboat_rdb::RdbReader::counting();
    let mut buf = vec![0u8; crate::pipeline::CHUNK_SIZE];
    let damaged = |e: lifeboat_rdb::RdbError| {
        Error::integrity(format!("{} is not a valid RDB file: {e}", path.display()))
            .with_hint("the target was not touched")
    };
    loop {
        let n = file.read(&mut buf).await.map_err(read_error)?;
        if n == 0 {
            break;
        }
        reader.feed(&buf[..n], &mut |_| {}).map_err(damaged)?;
    }
    let summary = reader.finish(&mut |_| {}).map_err(damaged)?;
    let fingerprint = RedisFingerprint {
        keys: RedisFingerprint::keys_from(&summary.keys),
        ..Default::default()
    };
    let dbs = target_dbs(&fingerprint, &options.db_map);
    let state = redis_sink::inspect_target(target, &dbs).await?;
    if state.objects > 0 && !options.clean && !options.replace {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "the target {target} already holds {} in the databases this file restores into",
                crate::backup::counted(state.objects as u64, "key")
            ),
        )
        .with_hint("add --replace to overwrite keys of the same name, --clean to empty those databases first, or --db-map SRC:DST"));
    }
    if dry_run {
        return Ok((summary, 0));
    }
    if options.clean {
        redis_sink::flush(target, &dbs).await?;
    }
    // Pass 2: load.
    let source_version = summary
        .aux
        .get("redis-ver")
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    let mut loader = redis_sink::RedisLoader::open(
        target,
        options.replace,
        options.replace || options.clean,
        options.db_map.clone(),
        &source_version,
    )
    .await?;
    let mut file = open().await?;
    loop {
        let n = file.read(&mut buf).await.map_err(read_error)?;
        if n == 0 {
            break;
        }
        if let Err(e) = crate::pipeline::RawSink::write(&mut loader, &buf[..n]).await {
            // The loader keeps the real error; finish() reports it.
            tracing::debug!("loading stopped: {e}");
            break;
        }
    }
    let restored = loader.finish().await?;
    Ok((summary, restored))
}
