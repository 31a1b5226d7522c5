//! Snapshots in a repository: ids, manifests, listing, and picking one by id or by time.
//!
//! Layout (README.md, "The repository"): `lifeboat.json` at the root, then
//! `jobs/<job>/snapshots/<id>/data.<ext>` and `jobs/<job>/snapshots/<id>/manifest.json`.

mod id;
mod level;
mod manifest;
mod pin;
mod time;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use id::SnapshotId;
pub use level::Level;
pub use manifest::{
    Contents, FilesFingerprint, Fingerprint, Manifest, MongoCollectionPrint, MongoFingerprint,
    ObjectInfo, OplogPrint, PgFingerprint, RedisFingerprint, SourceInfo, CLOCK_SKEW_RECORDED,
    FROM_FILE, GLOBALS, MANIFEST_FORMAT,
};
pub use pin::{is_pin, pin, pin_key, unpin, Pin, PIN_FILE};
pub use time::parse_time;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{ObjectKey, Store};

/// Version of the repository layout, in `lifeboat.json`.
pub const REPOSITORY_FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct RepositoryMarker {
    format: u32,
    created_at: DateTime<Utc>,
}

/// `jobs/<job>/`: everything of one job.
pub fn job_prefix(job: &str) -> String {
    format!("jobs/{job}/")
}

/// `jobs/<job>/snapshots/`: the job's snapshots.
pub fn snapshots_prefix(job: &str) -> String {
    format!("jobs/{job}/snapshots/")
}

/// `jobs/<job>/snapshots/<id>/`: one snapshot's data and manifest.
pub fn snapshot_prefix(job: &str, id: &SnapshotId) -> String {
    format!("jobs/{job}/snapshots/{id}/")
}

/// A snapshot's data or manifest (`jobs/<job>/snapshots/<id>/...`): what object lock protects.
/// Locks, pins and verification records are not: they must stay deletable.
pub fn is_snapshot_object(key: &ObjectKey) -> bool {
    let parts: Vec<&str> = key.as_str().split('/').collect();
    parts.len() == 5 && parts[0] == "jobs" && parts[2] == "snapshots" && !is_pin(key)
}

/// The job's lock (`jobs/<job>/lock`).
pub fn lock_key(job: &str) -> Result<ObjectKey> {
    ObjectKey::new(format!("{}lock", job_prefix(job)))
}

/// A throwaway object beside the lock, to test the store's conditional create.
pub fn lock_probe_key(job: &str, token: &str) -> Result<ObjectKey> {
    ObjectKey::new(format!("{}lock-probe-{token}", job_prefix(job)))
}

/// `reports/<job>/`: where a job's DR reports are kept.
pub fn reports_prefix(job: &str) -> String {
    format!("reports/{job}/")
}

/// Where verify records its results: `jobs/<job>/verifications/`.
pub fn verifications_prefix(job: &str) -> String {
    format!("{}verifications/", job_prefix(job))
}

/// The verification records of one snapshot.
pub fn snapshot_verifications_prefix(job: &str, id: &str) -> String {
    format!("{}{id}/", verifications_prefix(job))
}

/// One verification record: `jobs/<job>/verifications/<id>/<time>.json`.
pub fn verification_key(job: &str, id: &SnapshotId, at: DateTime<Utc>) -> Result<ObjectKey> {
    ObjectKey::new(format!(
        "{}{}.json",
        snapshot_verifications_prefix(job, id.as_str()),
        at.format("%Y%m%dT%H%M%S%.3fZ")
    ))
}

/// The snapshot id a verification record's key belongs to.
pub fn verification_snapshot(key: &ObjectKey) -> Option<&str> {
    key.as_str().split('/').nth(3)
}

/// `jobs/<job>/snapshots/<id>/manifest.json`: the commit point of a snapshot.
pub fn manifest_key(job: &str, id: &SnapshotId) -> Result<ObjectKey> {
    ObjectKey::new(format!("{}manifest.json", snapshot_prefix(job, id)))
}

fn marker_key() -> Result<ObjectKey> {
    ObjectKey::new("lifeboat.json")
}

/// Creates `lifeboat.json` if the store has none; refuses a repository of a newer format.
pub async fn ensure_repository(store: &impl Store, now: DateTime<Utc>) -> Result<()> {
    match check_repository(store).await? {
        true => Ok(()),
        false => {
            let marker = RepositoryMarker {
                format: REPOSITORY_FORMAT,
                created_at: now,
            };
            let bytes = serde_json::to_vec_pretty(&marker).unwrap_or_default();
            store.put(&marker_key()?, &bytes).await
        }
    }
}

/// `true` if the store holds a Lifeboat repository this version can read.
pub async fn check_repository(store: &impl Store) -> Result<bool> {
    let Some(bytes) = store.get(&marker_key()?).await? else {
        return Ok(false);
    };
    let marker: RepositoryMarker = serde_json::from_slice(&bytes).map_err(|e| {
        Error::integrity(format!(
            "{}/lifeboat.json is damaged: {e}",
            store.describe()
        ))
    })?;
    if marker.format > REPOSITORY_FORMAT {
        return Err(Error::config(format!(
            "the repository at {} has format {}, this Lifeboat reads format {REPOSITORY_FORMAT}",
            store.describe(),
            marker.format
        ))
        .with_hint("upgrade Lifeboat"));
    }
    Ok(true)
}

/// A snapshot whose manifest could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedSnapshot {
    /// The manifest's key.
    pub key: String,
    /// Why it could not be read.
    pub error: String,
}

/// The snapshot id in a manifest's key (`jobs/<job>/snapshots/<id>/manifest.json`).
pub fn snapshot_id_of_key(key: &str) -> Option<&str> {
    let mut parts = key.rsplit('/');
    parts.next()?; // manifest.json
    parts.next()
}

/// The damaged manifests of snapshots that `selector` would have picked over `picked` had they
/// been readable (started after it; for `--at T`, not after `T`; none for an id), oldest first.
/// A snapshot id starts with its UTC start time, which is all a damaged manifest still tells.
pub fn damaged_newer_than(
    listing: &Catalog,
    picked: &Manifest,
    selector: &Selector,
    now: DateTime<Utc>,
) -> Vec<DamagedSnapshot> {
    let limit = match selector {
        Selector::Id(_) => return Vec::new(),
        Selector::Latest => now + FUTURE_TOLERANCE,
        Selector::At(t) => *t,
    };
    let mut newer: Vec<DamagedSnapshot> = listing
        .damaged
        .iter()
        .filter(|d| {
            snapshot_id_of_key(&d.key)
                .and_then(|id| id.parse::<SnapshotId>().ok())
                .is_some_and(|id| id > picked.id && id.started_at() <= limit)
        })
        .cloned()
        .collect();
    newer.sort_by(|a, b| a.key.cmp(&b.key));
    newer
}

/// The committed snapshots of one job, oldest first, and any unreadable manifests.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Committed snapshots, oldest first.
    pub snapshots: Vec<Manifest>,
    /// Manifests that could not be read: never touched, reported.
    pub damaged: Vec<DamagedSnapshot>,
    /// The pinned snapshots (see [`Pin`]): retention keeps them whatever its rules say.
    pub pins: std::collections::BTreeMap<SnapshotId, Pin>,
}

/// Reads every manifest of `job`. Snapshots without a manifest do not exist.
pub async fn list_snapshots(store: &impl Store, job: &str) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    let objects = store.list(&snapshots_prefix(job)).await?;
    for object in &objects {
        if object.key.file_name() != "manifest.json" {
            continue;
        }
        let damaged = |error: String| DamagedSnapshot {
            key: object.key.to_string(),
            error,
        };
        match store.get(&object.key).await? {
            None => continue, // deleted meanwhile
            Some(bytes) => match Manifest::from_json(&bytes) {
                Ok(m) if m.format > MANIFEST_FORMAT => catalog.damaged.push(damaged(format!(
                    "manifest format {} was written by a newer Lifeboat (this one reads format {MANIFEST_FORMAT}); upgrade Lifeboat",
                    m.format
                ))),
                Ok(m) if object.key.as_str().split('/').nth(3) != Some(m.id.as_str()) => {
                    catalog.damaged.push(damaged(format!(
                        "the manifest names snapshot {}, not the folder it is in",
                        m.id
                    )))
                }
                Ok(m) if m.job == job => catalog.snapshots.push(m),
                Ok(m) => catalog.damaged.push(damaged(format!(
                    "the manifest names job {:?}, not {job:?}",
                    m.job
                ))),
                Err(e) => catalog
                    .damaged
                    .push(damaged(format!("unreadable manifest: {e}"))),
            },
        }
    }
    catalog.snapshots.sort_by(|a, b| a.id.cmp(&b.id));
    for object in objects.iter().filter(|o| is_pin(&o.key)) {
        let committed = catalog
            .snapshots
            .iter()
            .find(|m| object.key.as_str().split('/').nth(3) == Some(m.id.as_str()));
        if let (Some(m), Some(pin)) = (committed, pin::read(store, &object.key).await?) {
            catalog.pins.insert(m.id.clone(), pin);
        }
    }
    Ok(catalog)
}

/// The jobs that have anything in the repository.
pub async fn list_jobs(store: &impl Store) -> Result<Vec<String>> {
    let mut jobs: Vec<String> = store
        .list("jobs/")
        .await?
        .into_iter()
        .filter_map(|o| o.key.as_str().split('/').nth(1).map(str::to_string))
        .collect();
    jobs.dedup();
    Ok(jobs)
}

/// How the operator picks a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// By id (`--snapshot ID`).
    Id(SnapshotId),
    /// The newest (`--snapshot latest`, the default).
    Latest,
    /// The newest snapshot consistent at or before this instant.
    At(DateTime<Utc>),
}

impl Selector {
    /// The selector the flags name: `--snapshot ID`, `--latest` or `--at TIME`.
    pub fn from_flags(snapshot: Option<&str>, latest: bool, at: Option<&str>) -> Result<Selector> {
        match (snapshot, latest, at) {
            (Some(id), _, _) => id
                .parse::<SnapshotId>()
                .map(Selector::Id)
                .map_err(Error::config),
            (None, true, _) => Ok(Selector::Latest),
            (None, false, Some(at)) => parse_time(at)
                .map(Selector::At)
                .map_err(|e| Error::config(format!("--at: {e}"))),
            (None, false, None) => Err(Error::config(
                "which snapshot? pass --snapshot ID, --latest or --at TIME",
            )
            .with_hint("`lifeboat-restore list` shows the snapshots")),
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Id(id) => write!(f, "snapshot {id}"),
            Selector::Latest => f.write_str("latest snapshot"),
            Selector::At(t) => write!(f, "snapshot consistent at or before {}", t.to_rfc3339()),
        }
    }
}

/// How far ahead of the local clock a snapshot may be dated before it counts as dated in the
/// future: clocks of healthy machines agree within seconds, and a few minutes leave room for
/// a source server whose clock drifts a little.
pub const FUTURE_TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

/// Whether a snapshot consistent at `time` is dated in the future (beyond the tolerance):
/// a source or a host whose clock was ahead, or a hand-edited manifest. Such snapshots are
/// reported, kept, and never taken as the latest.
pub fn is_future_dated(time: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    time > now + FUTURE_TOLERANCE
}

/// The one definition of "latest" that verify, restore, prune and list share: the snapshot
/// with the newest `consistent_at` (ties broken by id) among those not dated in the future.
pub fn latest_of<T>(
    items: &[T],
    now: DateTime<Utc>,
    key: impl Fn(&T) -> (DateTime<Utc>, &SnapshotId),
) -> Option<&T> {
    items
        .iter()
        .filter(|item| !is_future_dated(key(item).0, now))
        .max_by(|a, b| key(a).cmp(&key(b)))
}

/// The latest snapshot of a catalog (see [`latest_of`]).
pub fn latest(snapshots: &[Manifest], now: DateTime<Utc>) -> Option<&Manifest> {
    latest_of(snapshots, now, |m| (m.consistent_at, &m.id))
}

/// Picks one snapshot; a pure function of the catalog and the current time.
pub fn select<'a>(
    snapshots: &'a [Manifest],
    job: &str,
    selector: &Selector,
    now: DateTime<Utc>,
) -> Result<&'a Manifest> {
    let found = match selector {
        Selector::Id(id) => snapshots.iter().find(|m| &m.id == id),
        Selector::Latest => latest(snapshots, now),
        Selector::At(t) => {
            let before: Vec<&Manifest> =
                snapshots.iter().filter(|m| m.consistent_at <= *t).collect();
            latest_of(&before, now, |m| (m.consistent_at, &m.id)).copied()
        }
    };
    found.ok_or_else(|| {
        let future: Vec<&str> = snapshots
            .iter()
            .filter(|m| is_future_dated(m.consistent_at, now))
            .map(|m| m.id.as_str())
            .collect();
        let hint = match (selector, snapshots.first()) {
            (_, None) => {
                format!("job {job:?} has no committed snapshots; run lifeboat-backup first")
            }
            (Selector::Latest | Selector::At(_), Some(_)) if future.len() == snapshots.len() => {
                format!(
                    "every snapshot of job {job:?} is dated in the future ({}): check the clocks of this host and of the source; pick one by id with --snapshot if you trust it",
                    future.join(", ")
                )
            }
            (Selector::At(_), Some(oldest)) => format!(
                "the oldest snapshot of job {job:?} is {} (consistent at {})",
                oldest.id,
                oldest.consistent_at.to_rfc3339()
            ),
            _ => format!("run `lifeboat-restore list --job {job}` to see the snapshots"),
        };
        Error::new(ErrorKind::NotFound, format!("job {job:?} has no {selector}")).with_hint(hint)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pipeline::{Compression, Digest};
    use chrono::TimeZone;

    pub(crate) fn manifest_at(job: &str, t: DateTime<Utc>, suffix: u8) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            id: SnapshotId::new(t, [0, 0, suffix]),
            job: job.into(),
            engine: "postgres".into(),
            tool_version: "test".into(),
            started_at: t,
            finished_at: t,
            consistent_at: t,
            source: SourceInfo {
                url: "postgres://h/db".into(),
                server_version: "15".into(),
                databases: vec!["db".into()],
                dump_tool: "pg_dump".into(),
                server_clock_at: None,
            },
            dump_format: "pg_custom".into(),
            compression: Compression::None,
            encryption: None,
            object: ObjectInfo {
                key: "k".into(),
                stored_size: 1,
                stored_sha256: Digest::of(b""),
                raw_size: 1,
                raw_digest: crate::pipeline::RawDigest::Sha256(Digest::of(b"")),
            },
            fingerprint: Fingerprint::Postgres(PgFingerprint::default()),
            warnings: Vec::new(),
            companions: Default::default(),
        }
    }

    #[test]
    fn select_by_time_takes_the_newest_at_or_before() {
        let t = |h| Utc.with_ymd_and_hms(2026, 11, 25, h, 0, 0).unwrap();
        let snaps = vec![
            manifest_at("j", t(1), 1),
            manifest_at("j", t(2), 2),
            manifest_at("j", t(3), 3),
        ];
        assert_eq!(
            select(&snaps, "j", &Selector::At(t(2)), t(23)).unwrap().id,
            snaps[1].id
        );
        assert_eq!(
            select(
                &snaps,
                "j",
                &Selector::At(t(2) + chrono::Duration::minutes(59)),
                t(23)
            )
            .unwrap()
            .id,
            snaps[1].id
        );
        assert_eq!(
            select(&snaps, "j", &Selector::Latest, t(23)).unwrap().id,
            snaps[2].id
        );
        let e = select(&snaps, "j", &Selector::At(t(0)), t(23)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.hint().unwrap().contains("oldest"), "{:?}", e.hint());
        assert_eq!(
            select(&snaps, "j", &Selector::Id(snaps[0].id.clone()), t(23))
                .unwrap()
                .id,
            snaps[0].id
        );
        assert!(select(&[], "j", &Selector::Latest, t(23)).is_err());
    }

    /// Regression: `verify --latest` picked by id and `restore --latest` by time, and both
    /// would take a snapshot dated ten days ahead.
    #[test]
    fn latest_is_one_definition_and_never_a_future_dated_snapshot() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 3, 0, 0).unwrap();
        let snaps = vec![
            manifest_at("j", now - chrono::Duration::days(1), 1),
            manifest_at("j", now + chrono::Duration::days(10), 2),
            manifest_at("j", now + chrono::Duration::minutes(1), 3),
        ];
        // A minute ahead is within the tolerance; ten days is not.
        assert_eq!(latest(&snaps, now).unwrap().id, snaps[2].id);
        assert_eq!(
            select(&snaps, "j", &Selector::Latest, now).unwrap().id,
            snaps[2].id
        );
        let far = Selector::At(now + chrono::Duration::days(30));
        assert_eq!(select(&snaps, "j", &far, now).unwrap().id, snaps[2].id);
        // Picked by id, it can still be restored on purpose.
        assert_eq!(
            select(&snaps, "j", &Selector::Id(snaps[1].id.clone()), now)
                .unwrap()
                .id,
            snaps[1].id
        );
        let only_future = vec![snaps[1].clone()];
        let e = select(&only_future, "j", &Selector::Latest, now).unwrap_err();
        assert_eq!(e.message(), "job \"j\" has no latest snapshot");
        assert!(
            e.hint().unwrap().contains("dated in the future"),
            "{:?}",
            e.hint()
        );
    }

    #[test]
    fn manifests_ignore_unknown_fields() {
        let m = manifest_at("j", Utc::now(), 1);
        let mut v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        v["some_future_field"] = serde_json::json!({"x": 1});
        let back = Manifest::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
