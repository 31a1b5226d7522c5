//! Verification levels, from cheap to thorough:
//! - `stored`: the data object exists and has the size the manifest records;
//! - `content`: download everything, both digests match, and the dump's own structure parses
//!   (`pg_restore --list` reads the custom format's table of contents; a plain dump ends with
//!   pg_dump's completion line);
//! - `drill`: restore into a scratch database, compare its fingerprint with the manifest's,
//!   time it, drop the scratch database.
//!
//! Results are recorded under `jobs/<job>/verifications/<id>/<time>.json`. With a maximum age,
//! a verify run is also the freshness alarm.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{self, DamagedSnapshot, Fingerprint, Manifest, SnapshotId};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::read_snapshot;
use crate::restore::{restore_into, RestoreOptions};
use crate::secret::SecretUrl;
use crate::sink::postgres::{self as pg_sink, PgStructureCheck, PgTools};
use crate::source::postgres as pg_source;
use crate::store::{ObjectKey, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Stored,
    Content,
    Drill,
}

impl Level {
    /// The name the flags use: `stored`, `content`, `drill`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Stored => "stored",
            Level::Content => "content",
            Level::Drill => "drill",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "stored" => Ok(Level::Stored),
            "content" => Ok(Level::Content),
            "drill" => Ok(Level::Drill),
            _ => Err(format!(
                "unknown level {s:?}; expected stored, content or drill"
            )),
        }
    }
}

/// Which snapshots of a job to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    Latest,
    All,
    Id(SnapshotId),
}

pub struct VerifyOptions {
    pub level: Level,
    pub which: Which,
    /// A PostgreSQL server URL (maintenance database) where drills may create databases.
    pub scratch_url: Option<SecretUrl>,
    pub tools: PgTools,
    pub max_age: Option<Duration>,
    pub now: DateTime<Utc>,
    /// Write the results into the repository.
    pub record: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotCheck {
    pub snapshot: SnapshotId,
    pub consistent_at: DateTime<Utc>,
    pub level: Level,
    pub ok: bool,
    /// What is wrong (empty when ok).
    pub findings: Vec<String>,
    /// `true` when the findings are about the data (exit 3), not the checking machinery.
    pub damaged: bool,
    pub duration_secs: f64,
    /// Drills: how long the restore took.
    pub restore_secs: Option<f64>,
    pub checked_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct Freshness {
    pub newest_good: Option<SnapshotId>,
    pub age_secs: Option<i64>,
    pub max_age_secs: u64,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub job: String,
    pub level: Level,
    pub checks: Vec<SnapshotCheck>,
    pub damaged_manifests: Vec<DamagedSnapshot>,
    pub freshness: Option<Freshness>,
}

impl VerifyReport {
    /// The failure this report amounts to, if any: damage (3) outranks staleness (5).
    pub fn failure(&self) -> Option<ErrorKind> {
        if !self.damaged_manifests.is_empty() || self.checks.iter().any(|c| !c.ok && c.damaged) {
            Some(ErrorKind::Integrity)
        } else if self.checks.iter().any(|c| !c.ok) {
            Some(ErrorKind::Sink)
        } else if self.freshness.as_ref().is_some_and(|f| !f.ok) {
            Some(ErrorKind::Freshness)
        } else {
            None
        }
    }
}

/// Verifies the chosen snapshots of one job.
pub async fn verify<S: Store>(
    store: &S,
    job: &str,
    options: &VerifyOptions,
) -> Result<VerifyReport> {
    if options.level == Level::Drill && options.scratch_url.is_none() {
        return Err(Error::config("--level drill needs --scratch-url-env VAR or --scratch-url URL").with_hint(
            "pass a PostgreSQL URL whose user may create databases, e.g. --scratch-url postgres://admin@db:5432/postgres",
        ));
    }
    let listing = catalog::list_snapshots(store, job).await?;
    let chosen: Vec<&Manifest> = match &options.which {
        Which::All => listing.snapshots.iter().collect(),
        Which::Latest if listing.snapshots.is_empty() => Vec::new(),
        Which::Latest => vec![catalog::select(
            &listing.snapshots,
            job,
            &catalog::Selector::Latest,
            options.now,
        )?],
        Which::Id(id) => vec![catalog::select(
            &listing.snapshots,
            job,
            &catalog::Selector::Id(id.clone()),
            options.now,
        )?],
    };
    if chosen.is_empty() && listing.damaged.is_empty() && options.max_age.is_none() {
        return Err(Error::not_found(format!(
            "job {job:?} has no committed snapshots in {}",
            store.describe()
        ))
        .with_hint("run lifeboat-backup first, or check --repo and --job"));
    }
    let mut checks = Vec::new();
    for manifest in chosen {
        let check = check_snapshot(store, manifest, options).await;
        if options.record {
            record(store, &check, job).await?;
        }
        checks.push(check);
    }
    let freshness = options.max_age.map(|max_age| {
        // A snapshot dated in the future would look fresh forever.
        let newest_good = checks
            .iter()
            .filter(|c| c.ok && !catalog::is_future_dated(c.consistent_at, options.now))
            .max_by_key(|c| c.consistent_at);
        let age = newest_good.map(|c| (options.now - c.consistent_at).num_seconds());
        Freshness {
            newest_good: newest_good.map(|c| c.snapshot.clone()),
            age_secs: age,
            max_age_secs: max_age.as_secs(),
            ok: age.is_some_and(|a| a <= max_age.as_secs() as i64),
        }
    });
    Ok(VerifyReport {
        job: job.to_string(),
        level: options.level,
        checks,
        damaged_manifests: listing.damaged,
        freshness,
    })
}

/// Every readable verification record of a job, oldest first (unreadable ones are skipped:
/// they only ever add protection).
pub async fn records<S: Store>(store: &S, job: &str) -> Result<Vec<SnapshotCheck>> {
    let mut out = Vec::new();
    for object in store.list(&format!("jobs/{job}/verifications/")).await? {
        if let Some(bytes) = store.get(&object.key).await? {
            if let Ok(check) = serde_json::from_slice::<SnapshotCheck>(&bytes) {
                out.push(check);
            }
        }
    }
    out.sort_by_key(|c| c.checked_at);
    Ok(out)
}

/// The newest snapshot (among `snapshots`) that passed a content or drill verification.
pub fn newest_verified(
    records: &[SnapshotCheck],
    snapshots: &[Manifest],
) -> Option<crate::retention::Verified> {
    snapshots.iter().rev().find_map(|m| {
        records
            .iter()
            .rev()
            .find(|r| r.snapshot == m.id && r.ok && r.level >= Level::Content)
            .map(|r| crate::retention::Verified {
                id: m.id.clone(),
                level: r.level.as_str().to_string(),
            })
    })
}

async fn record<S: Store>(store: &S, check: &SnapshotCheck, job: &str) -> Result<()> {
    let key = ObjectKey::new(format!(
        "jobs/{job}/verifications/{}/{}.json",
        check.snapshot,
        check.checked_at.format("%Y%m%dT%H%M%S%.3fZ")
    ))?;
    store
        .put(&key, &serde_json::to_vec_pretty(check).unwrap_or_default())
        .await
}

async fn check_snapshot<S: Store>(
    store: &S,
    manifest: &Manifest,
    options: &VerifyOptions,
) -> SnapshotCheck {
    let started = Instant::now();
    let mut restore_secs = None;
    let result = match options.level {
        Level::Stored => check_stored(store, manifest).await,
        Level::Content => check_content(store, manifest, &options.tools).await,
        Level::Drill => match &options.scratch_url {
            Some(scratch) => {
                drill(store, manifest, scratch, &options.tools, &mut restore_secs).await
            }
            None => Err(Error::config(
                "--level drill needs --scratch-url-env VAR or --scratch-url URL",
            )),
        },
    };
    let (findings, damaged) = match result {
        Ok(findings) => {
            let damaged = !findings.is_empty();
            (findings, damaged)
        }
        Err(e) => (vec![e.to_string()], e.kind() == ErrorKind::Integrity),
    };
    SnapshotCheck {
        snapshot: manifest.id.clone(),
        consistent_at: manifest.consistent_at,
        level: options.level,
        ok: findings.is_empty(),
        findings,
        damaged,
        duration_secs: started.elapsed().as_secs_f64(),
        restore_secs,
        checked_at: options.now,
    }
}

/// Findings about the data; `Err` for failures of the check itself (or integrity errors).
async fn check_stored<S: Store>(store: &S, manifest: &Manifest) -> Result<Vec<String>> {
    let key = ObjectKey::new(manifest.object.key.clone())?;
    Ok(match store.head(&key).await? {
        None => vec![format!("the data object {key} is missing")],
        Some(meta) if meta.size != manifest.object.stored_size => vec![format!(
            "the data object {key} has {} bytes, the manifest records {}",
            meta.size, manifest.object.stored_size
        )],
        Some(_) => Vec::new(),
    })
}

async fn check_content<S: Store>(
    store: &S,
    manifest: &Manifest,
    tools: &PgTools,
) -> Result<Vec<String>> {
    let mut findings = check_stored(store, manifest).await?;
    if !findings.is_empty() {
        return Ok(findings);
    }
    if let Fingerprint::Redis(recorded) = &manifest.fingerprint {
        let mut rdb = crate::sink::redis::RdbCheck::default();
        read_snapshot(store, manifest, &mut rdb).await?;
        findings.extend(rdb.finish(recorded));
        return Ok(findings);
    }
    let mut structure = PgStructureCheck::start(tools, manifest)?;
    let read = read_snapshot(store, manifest, &mut structure).await;
    let structure_findings = structure.finish().await;
    read?;
    findings.extend(structure_findings);
    Ok(findings)
}

/// A Redis drill: load the snapshot into empty databases of a scratch server, count keys per
/// database and type, compare with the manifest, and empty those databases again. A scratch
/// server whose databases hold keys is refused: a drill never deletes data it did not write.
async fn redis_drill<S: Store>(
    store: &S,
    manifest: &Manifest,
    recorded: &crate::catalog::RedisFingerprint,
    scratch: &SecretUrl,
    restore_secs: &mut Option<f64>,
) -> Result<Vec<String>> {
    use crate::sink::redis as redis_sink;
    let dbs = crate::restore::target_dbs(recorded, &Default::default());
    let state = redis_sink::inspect_target(scratch, &dbs).await?;
    if state.objects > 0 {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "the scratch server {scratch} holds {} keys in databases the drill needs ({})",
                state.objects,
                dbs.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_hint("point --scratch-url at a throwaway Redis whose databases are empty"));
    }
    // The databases are empty (checked above); REPLACE only matters for function libraries,
    // which are server-wide and may remain from an earlier drill.
    let options = RestoreOptions {
        clean: false,
        replace: true,
        db_map: Default::default(),
        swap: false,
        no_owner: false,
        tools: PgTools::default(),
        hold_back: crate::pipeline::holdback::DEFAULT_HOLD_BACK,
        // Only restore planning picks snapshots by time; a drill names its snapshot.
        now: manifest.finished_at,
    };
    let started = Instant::now();
    let loaded = crate::restore::restore_redis(store, manifest, recorded, scratch, &options).await;
    let result = async {
        let load = loaded?;
        *restore_secs = Some(started.elapsed().as_secs_f64());
        let found = redis_sink::count_keys(scratch, &dbs).await?;
        // Keys that expired before the drill could load them are not a loss, nor are empty
        // collections, which Redis cannot hold.
        let mut expected = recorded.clone();
        for (db, types) in load.expired.iter().chain(&load.skipped_empty) {
            for (t, n) in types {
                if let Some(c) = expected
                    .keys
                    .get_mut(&db.to_string())
                    .and_then(|m| m.get_mut(t))
                {
                    *c = c.saturating_sub(*n);
                }
            }
        }
        for types in expected.keys.values_mut() {
            types.retain(|_, n| *n > 0);
        }
        expected.keys.retain(|_, t| !t.is_empty());
        let mut findings = expected.differences(&found);
        if let Some(recorded_digest) = &recorded.debug_digest {
            findings.extend(
                compare_debug_digest(scratch, recorded_digest, &dbs, load.expired.is_empty())
                    .await?,
            );
        }
        Ok::<_, Error>(findings)
    }
    .await;
    if let Err(e) = redis_sink::flush(scratch, &dbs).await {
        tracing::warn!("The drill's keys could not be removed from {scratch}: {e}");
    }
    result
}

/// Compares the scratch server's `DEBUG DIGEST` with the one recorded at backup time, where
/// that comparison means something: no key expired on the way (expiries are in the digest) and
/// the scratch server holds nothing but the drill's databases (the digest is server-wide).
async fn compare_debug_digest(
    scratch: &SecretUrl,
    recorded: &str,
    dbs: &[u64],
    nothing_expired: bool,
) -> Result<Vec<String>> {
    if !nothing_expired {
        tracing::info!(
            "Keys expired during the drill, so DEBUG DIGEST is not compared (key counts are)."
        );
        return Ok(Vec::new());
    }
    let mut conn = crate::resp::Connection::open(scratch, ErrorKind::Sink).await?;
    let others = crate::source::redis::databases_with_keys(&mut conn)
        .await?
        .into_iter()
        .filter(|db| !dbs.contains(db))
        .count();
    if others > 0 {
        tracing::info!(
            "The scratch server {scratch} holds keys in other databases, so DEBUG DIGEST is not compared (key counts are)."
        );
        return Ok(Vec::new());
    }
    match crate::source::redis::debug_digest(&mut conn).await {
        Ok(found) if found == recorded => {
            tracing::info!("DEBUG DIGEST of the restored data matches the source's ({found}).");
            Ok(Vec::new())
        }
        Ok(found) => Ok(vec![format!(
            "DEBUG DIGEST of the restored data is {found}, the source's was {recorded}"
        )]),
        Err(e) => {
            tracing::warn!(
                "{}; DEBUG DIGEST is not compared (key counts are).",
                e.message()
            );
            Ok(Vec::new())
        }
    }
}

async fn drill<S: Store>(
    store: &S,
    manifest: &Manifest,
    scratch: &SecretUrl,
    tools: &PgTools,
    restore_secs: &mut Option<f64>,
) -> Result<Vec<String>> {
    let recorded = match &manifest.fingerprint {
        Fingerprint::Postgres(recorded) => recorded,
        Fingerprint::Redis(recorded) => {
            return redis_drill(store, manifest, recorded, scratch, restore_secs).await
        }
    };
    let name = pg_sink::scratch_database_name(manifest);
    pg_sink::create_database(scratch, &name).await?;
    let target = scratch.with_database(&name);
    let result = async {
        let started = Instant::now();
        let options = RestoreOptions {
            clean: false,
            replace: false,
            db_map: Default::default(),
            swap: false,
            // The scratch server's user is often not a superuser and not the dump's owner:
            // `ALTER ... OWNER TO` would fail the drill ("must be member of role").
            no_owner: true,
            tools: tools.clone(),
            hold_back: crate::pipeline::holdback::DEFAULT_HOLD_BACK,
            // Only restore planning picks snapshots by time; a drill names its snapshot.
            now: manifest.finished_at,
        };
        restore_into(store, manifest, &target, &options).await?;
        *restore_secs = Some(started.elapsed().as_secs_f64());
        let conn = pg_source::connect(&target, ErrorKind::Sink).await?;
        let found = pg_source::fingerprint(&conn.client, &target, ErrorKind::Sink).await?;
        Ok::<_, Error>(recorded.differences(&found))
    }
    .await;
    let dropped = pg_sink::drop_database(scratch, &name).await;
    let findings = result?;
    if let Err(e) = dropped {
        tracing::warn!("The drill database {name} could not be dropped: {e}");
    }
    Ok(findings)
}
