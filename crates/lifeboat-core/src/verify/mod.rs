//! Verification levels, from cheap to thorough:
//! - `stored`: the data object exists and has the size the manifest records;
//! - `content`: download everything, both digests match, and the dump's own structure checks out
//!   against the manifest (the engine's [`Sink::check`]); an encrypted snapshot checked without
//!   its identity gets the keyless part of it: the stored digest, the size and the age header;
//! - `drill`: restore into a scratch target, compare its fingerprint with the manifest's, time
//!   it, remove what it wrote (the engine's [`Sink::drill`]).
//!
//! Results are recorded under `jobs/<job>/verifications/<id>/<time>.json`. With a maximum age,
//! a verify run is also the freshness alarm.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{self, DamagedSnapshot, Manifest, SnapshotId};
use crate::engine::AnySink;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Keys;
use crate::sink::{Scratch, Sink};
use crate::store::{ObjectKey, Store};

pub use crate::catalog::Level;

/// Which snapshots of a job to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// The newest snapshot.
    Latest,
    /// Every snapshot.
    All,
    /// One snapshot by id.
    Id(SnapshotId),
}

/// What a verification run checks, and how.
pub struct VerifyOptions {
    /// How deep.
    pub level: Level,
    /// Which snapshots.
    pub which: Which,
    /// Where drills restore to.
    pub scratch: Scratch,
    /// The RPO: the newest good snapshot must be younger (exit 5 otherwise).
    pub max_age: Option<Duration>,
    /// Where `max_age` came from, in words (`--max-age`, the job's `max-age`, or the schedule).
    pub max_age_from: String,
    /// The job's recovery time objective: a drill's restore time is held against it.
    pub rto: Option<Duration>,
    /// The job's recovery point objective: the drilled data's age is held against it.
    pub rpo: Option<Duration>,
    /// A missed RTO or RPO fails the run (exit 5), as a breached freshness limit does.
    pub fail_on_target: bool,
    /// The time ages are measured at (the caller reads the clock).
    pub now: DateTime<Utc>,
    /// Write the results into the repository.
    pub record: bool,
    /// Identities (or a passphrase) for encrypted snapshots; without them a content check of
    /// an encrypted snapshot is keyless, and a drill is refused.
    pub keys: Keys,
}

/// The result of checking one snapshot (also stored as a verification record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotCheck {
    /// The snapshot checked.
    pub snapshot: SnapshotId,
    /// The instant its data holds.
    pub consistent_at: DateTime<Utc>,
    /// How deep the check went.
    pub level: Level,
    /// It passed.
    pub ok: bool,
    /// What is wrong (empty when ok).
    pub findings: Vec<String>,
    /// `true` when the findings are about the data (exit 3), not the checking machinery.
    pub damaged: bool,
    /// Wall-clock seconds the check took.
    pub duration_secs: f64,
    /// Drills: how long the restore took.
    pub restore_secs: Option<f64>,
    /// When it ran.
    pub checked_at: DateTime<Utc>,
    /// A content check of an encrypted snapshot made without its identity: the stored digest,
    /// the size and the age header were checked; the raw digest and the dump's structure were
    /// not. It does not count as verified for retention.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keyless: bool,
    /// The snapshot was forgotten (a concurrent prune) while it was checked: nothing is
    /// recorded for a snapshot that no longer exists.
    #[serde(skip)]
    pub gone: bool,
}

/// How old the newest good snapshot is, against the job's `max-age`.
#[derive(Debug, Serialize)]
pub struct Freshness {
    /// The newest snapshot that passed (`None`: none did).
    pub newest_good: Option<SnapshotId>,
    /// Its age in seconds.
    pub age_secs: Option<i64>,
    /// The allowed age in seconds.
    pub max_age_secs: u64,
    /// Where that limit came from (`--max-age`, `max-age`, or the job's schedule).
    pub limit_from: String,
    /// Young enough.
    pub ok: bool,
}

/// What a verification run found, as `lifeboat-verify` reports it.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// The job's name.
    pub job: String,
    /// How deep the checks went.
    pub level: Level,
    /// One result per snapshot checked.
    pub checks: Vec<SnapshotCheck>,
    /// Manifests that could not be read (damage: exit 3).
    pub damaged_manifests: Vec<DamagedSnapshot>,
    /// Set when the job has a `max-age`.
    pub freshness: Option<Freshness>,
    /// The job's RTO and RPO against what this run measured (drills measure the RTO).
    #[serde(skip_serializing_if = "Targets::is_empty")]
    pub targets: Targets,
    /// Missed targets fail the run (`--fail-on-target`).
    #[serde(skip)]
    pub fail_on_target: bool,
}

/// A job's recovery objectives against what a verify run measured.
#[derive(Debug, Default, Serialize)]
pub struct Targets {
    /// The restore time of the newest drilled snapshot against the RTO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto: Option<Target>,
    /// The age of the newest good snapshot's data against the RPO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo: Option<Target>,
}

/// One objective.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The objective, in seconds.
    pub target_secs: u64,
    /// What was measured (`None`: nothing to measure, e.g. no drill ran).
    pub measured_secs: Option<f64>,
    /// Met (`None`: not measured).
    pub met: Option<bool>,
}

impl Target {
    fn new(target: Duration, measured: Option<f64>) -> Target {
        Target {
            target_secs: target.as_secs(),
            measured_secs: measured,
            met: measured.map(|m| m <= target.as_secs_f64()),
        }
    }
}

impl Targets {
    /// No objective set.
    pub fn is_empty(&self) -> bool {
        self.rto.is_none() && self.rpo.is_none()
    }

    /// An objective was measured and missed.
    pub fn missed(&self) -> bool {
        [&self.rto, &self.rpo]
            .into_iter()
            .flatten()
            .any(|t| t.met == Some(false))
    }
}

impl VerifyReport {
    /// The failure this report amounts to, if any: damage (3) outranks staleness (5).
    pub fn failure(&self) -> Option<ErrorKind> {
        if !self.damaged_manifests.is_empty() || self.checks.iter().any(|c| !c.ok && c.damaged) {
            Some(ErrorKind::Integrity)
        } else if self.checks.iter().any(|c| !c.ok) {
            Some(ErrorKind::Sink)
        } else if self.freshness.as_ref().is_some_and(|f| !f.ok)
            || (self.fail_on_target && self.targets.missed())
        {
            Some(ErrorKind::Freshness)
        } else {
            None
        }
    }
}

/// A job's freshness limit and where it came from, in words: the `--max-age` flag, else the
/// job's `max-age`, else its `rpo`, else twice its schedule's longest interval plus an hour.
pub fn freshness_limit(
    flag: Option<Duration>,
    job: Option<&crate::config::Job>,
    now: DateTime<Utc>,
) -> (Option<Duration>, String) {
    match (flag, job) {
        (Some(d), _) => (Some(d), "--max-age".to_string()),
        (None, Some(j)) if j.max_age.is_some() => (j.max_age, "the job's max-age".to_string()),
        (None, Some(j)) if j.rpo.is_some() => (j.rpo, "the job's rpo".to_string()),
        (
            None,
            Some(crate::config::Job {
                schedule: Some(s), ..
            }),
        ) => (
            s.freshness_limit(now).to_std().ok(),
            format!(
                "the schedule {}: twice its longest interval of {} plus an hour",
                s.describe(),
                crate::text::format_duration(s.longest_interval(now).to_std().unwrap_or_default())
            ),
        ),
        _ => (None, String::new()),
    }
}

/// Verifies the chosen snapshots of one job.
pub async fn verify<S: Store>(
    store: &S,
    job: &str,
    options: &VerifyOptions,
) -> Result<VerifyReport> {
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
    if options.level == Level::Drill {
        // A drill that cannot run is a usage error (exit 2) before anything is read.
        for manifest in &chosen {
            AnySink::for_snapshot(manifest, options.scratch.pg_bin_dir.as_deref())?
                .check_scratch(&options.scratch)?;
        }
    }
    if options.level >= Level::Content {
        // A missing identity (for a drill) or a wrong one: exit 2 before anything is checked.
        // A content check without a key for the snapshot's scheme is keyless instead.
        for manifest in &chosen {
            let Some(info) = &manifest.encryption else {
                continue;
            };
            if options.level == Level::Drill || options.keys.require(info, "").is_ok() {
                crate::readback::unlock(store, manifest, &options.keys).await?;
            }
        }
    }
    let mut checks = Vec::new();
    for manifest in chosen {
        let check = check_snapshot(store, manifest, options).await;
        if options.record && !check.gone {
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
            limit_from: options.max_age_from.clone(),
            ok: age.is_some_and(|a| a <= max_age.as_secs() as i64),
        }
    });
    // The RTO is measured by drills (the newest drilled snapshot's restore); the RPO is the
    // age of the newest good snapshot's data now.
    let newest_good = checks
        .iter()
        .filter(|c| c.ok && !catalog::is_future_dated(c.consistent_at, options.now))
        .max_by_key(|c| c.consistent_at);
    let restore_secs = checks
        .iter()
        .filter(|c| c.level == Level::Drill)
        .max_by_key(|c| c.consistent_at)
        .and_then(|c| c.restore_secs);
    let targets = Targets {
        rto: options.rto.map(|t| Target::new(t, restore_secs)),
        rpo: options.rpo.map(|t| {
            Target::new(
                t,
                newest_good
                    .map(|c| (options.now - c.consistent_at).num_milliseconds() as f64 / 1000.0),
            )
        }),
    };
    Ok(VerifyReport {
        job: job.to_string(),
        level: options.level,
        checks,
        damaged_manifests: listing.damaged,
        freshness,
        targets,
        fail_on_target: options.fail_on_target,
    })
}

/// Every readable verification record of a job, oldest first (unreadable ones are skipped:
/// they only ever add protection).
pub async fn records<S: Store>(store: &S, job: &str) -> Result<Vec<SnapshotCheck>> {
    let mut out = Vec::new();
    for object in store.list(&catalog::verifications_prefix(job)).await? {
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
            .find(|r| r.snapshot == m.id && r.ok && !r.keyless && r.level >= Level::Content)
            .map(|r| crate::retention::Verified {
                id: m.id.clone(),
                level: r.level.as_str().to_string(),
            })
    })
}

async fn record<S: Store>(store: &S, check: &SnapshotCheck, job: &str) -> Result<()> {
    let key = catalog::verification_key(job, &check.snapshot, check.checked_at)?;
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
    let keyless = options.level == Level::Content
        && manifest
            .encryption
            .as_ref()
            .is_some_and(|info| options.keys.require(info, "").is_err());
    let result = match options.level {
        Level::Stored => check_stored(store, manifest).await,
        Level::Content if keyless => check_keyless(store, manifest).await,
        Level::Content => check_content(store, manifest, &options.scratch, &options.keys).await,
        Level::Drill => drill(store, manifest, &options.scratch, &options.keys)
            .await
            .map(|drilled| {
                restore_secs = drilled.restore_secs;
                drilled.findings
            }),
    };
    // The snapshot's other objects (PostgreSQL roles) are checked to the same level.
    let result = match result {
        Ok(mut findings) if options.level < Level::Drill => {
            check_companions(store, manifest, options, keyless)
                .await
                .map(|more| {
                    findings.extend(more);
                    findings
                })
        }
        other => other,
    };
    let gone = matches!(&result, Err(e) if e.kind() == ErrorKind::NotFound);
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
        keyless,
        gone,
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
    scratch: &Scratch,
    keys: &Keys,
) -> Result<Vec<String>> {
    let findings = check_stored(store, manifest).await?;
    if !findings.is_empty() {
        return Ok(findings);
    }
    AnySink::for_snapshot(manifest, scratch.pg_bin_dir.as_deref())?
        .check(store, keys, manifest)
        .await
}

/// The companion objects of a snapshot (see [`Manifest::companion`]): present with their
/// recorded size, and at the content level read whole with both digests (or, keyless, their
/// ciphertext checked).
async fn check_companions<S: Store>(
    store: &S,
    manifest: &Manifest,
    options: &VerifyOptions,
    keyless: bool,
) -> Result<Vec<String>> {
    let mut findings = Vec::new();
    for name in manifest.companions.keys() {
        let Some(view) = manifest.companion(name) else {
            continue;
        };
        let stored = check_stored(store, &view).await?;
        if !stored.is_empty() || options.level == Level::Stored {
            findings.extend(stored.into_iter().map(|f| format!("{name}: {f}")));
            continue;
        }
        let read = if keyless {
            crate::readback::check_ciphertext(store, &view).await
        } else {
            crate::readback::read_snapshot(
                store,
                &view,
                &options.keys,
                &mut crate::pipeline::Discard,
            )
            .await
            .map(|_| Vec::new())
        };
        match read {
            Ok(found) => findings.extend(found.into_iter().map(|f| format!("{name}: {f}"))),
            Err(e) if e.kind() == ErrorKind::Integrity => findings.push(format!("{name}: {e}")),
            Err(e) => return Err(e),
        }
    }
    Ok(findings)
}

/// The content level of an encrypted snapshot without its identity (see
/// [`SnapshotCheck::keyless`]).
async fn check_keyless<S: Store>(store: &S, manifest: &Manifest) -> Result<Vec<String>> {
    let findings = check_stored(store, manifest).await?;
    if !findings.is_empty() {
        return Ok(findings);
    }
    crate::readback::check_ciphertext(store, manifest).await
}

async fn drill<S: Store>(
    store: &S,
    manifest: &Manifest,
    scratch: &Scratch,
    keys: &Keys,
) -> Result<crate::sink::Drilled> {
    AnySink::for_snapshot(manifest, scratch.pg_bin_dir.as_deref())?
        .drill(store, keys, manifest, scratch)
        .await
}
