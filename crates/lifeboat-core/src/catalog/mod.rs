//! Snapshots in a repository: ids, manifests, listing, and picking one by id or by time.
//!
//! Layout (DESIGN.md): `lifeboat.json` at the root, then
//! `jobs/<job>/snapshots/<id>/data.<ext>` and `jobs/<job>/snapshots/<id>/manifest.json`.

mod id;
mod manifest;
mod time;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use id::SnapshotId;
pub use manifest::{
    Fingerprint, Manifest, ObjectInfo, PgFingerprint, RedisFingerprint, SourceInfo, MANIFEST_FORMAT,
};
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

pub fn job_prefix(job: &str) -> String {
    format!("jobs/{job}/")
}

pub fn snapshots_prefix(job: &str) -> String {
    format!("jobs/{job}/snapshots/")
}

pub fn snapshot_prefix(job: &str, id: &SnapshotId) -> String {
    format!("jobs/{job}/snapshots/{id}/")
}

/// A snapshot's data or manifest (`jobs/<job>/snapshots/<id>/...`): what object lock protects.
/// Locks and verification records are not: they must stay deletable.
pub fn is_snapshot_object(key: &ObjectKey) -> bool {
    let parts: Vec<&str> = key.as_str().split('/').collect();
    parts.len() == 5 && parts[0] == "jobs" && parts[2] == "snapshots"
}

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
    pub key: String,
    pub error: String,
}

/// The committed snapshots of one job, oldest first, and any unreadable manifests.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub snapshots: Vec<Manifest>,
    pub damaged: Vec<DamagedSnapshot>,
}

/// Reads every manifest of `job`. Snapshots without a manifest do not exist.
pub async fn list_snapshots(store: &impl Store, job: &str) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    for object in store.list(&snapshots_prefix(job)).await? {
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
    Id(SnapshotId),
    Latest,
    /// The newest snapshot consistent at or before this instant.
    At(DateTime<Utc>),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Id(id) => write!(f, "snapshot {id}"),
            Selector::Latest => f.write_str("the latest snapshot"),
            Selector::At(t) => write!(
                f,
                "the newest snapshot consistent at or before {}",
                t.to_rfc3339()
            ),
        }
    }
}

/// Picks one snapshot; a pure function of the catalog.
pub fn select<'a>(
    snapshots: &'a [Manifest],
    job: &str,
    selector: &Selector,
) -> Result<&'a Manifest> {
    let found = match selector {
        Selector::Id(id) => snapshots.iter().find(|m| &m.id == id),
        Selector::Latest => snapshots
            .iter()
            .max_by(|a, b| a.consistent_at.cmp(&b.consistent_at).then(a.id.cmp(&b.id))),
        Selector::At(t) => snapshots
            .iter()
            .filter(|m| m.consistent_at <= *t)
            .max_by(|a, b| a.consistent_at.cmp(&b.consistent_at).then(a.id.cmp(&b.id))),
    };
    found.ok_or_else(|| {
        let hint = match (selector, snapshots.first()) {
            (_, None) => {
                format!("job {job:?} has no committed snapshots; run lifeboat-backup first")
            }
            (Selector::At(_), Some(oldest)) => format!(
                "the oldest snapshot of job {job:?} is {} (consistent at {})",
                oldest.id,
                oldest.consistent_at.to_rfc3339()
            ),
            _ => format!("run `lifeboat-restore list --job {job}` to see the snapshots"),
        };
        Error::new(ErrorKind::NotFound, format!("job {job:?}: no {selector}")).with_hint(hint)
    })
}

#[cfg(test)]
mod tests {
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
            },
            dump_format: "pg_custom".into(),
            compression: Compression::None,
            encryption: None,
            object: ObjectInfo {
                key: "k".into(),
                stored_size: 1,
                stored_sha256: Digest::of(b""),
                raw_size: 1,
                raw_sha256: Digest::of(b""),
            },
            fingerprint: Fingerprint::Postgres(PgFingerprint::default()),
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
            select(&snaps, "j", &Selector::At(t(2))).unwrap().id,
            snaps[1].id
        );
        assert_eq!(
            select(
                &snaps,
                "j",
                &Selector::At(t(2) + chrono::Duration::minutes(59))
            )
            .unwrap()
            .id,
            snaps[1].id
        );
        assert_eq!(
            select(&snaps, "j", &Selector::Latest).unwrap().id,
            snaps[2].id
        );
        let e = select(&snaps, "j", &Selector::At(t(0))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.hint().unwrap().contains("oldest"), "{:?}", e.hint());
        assert_eq!(
            select(&snaps, "j", &Selector::Id(snaps[0].id.clone()))
                .unwrap()
                .id,
            snaps[0].id
        );
        assert!(select(&[], "j", &Selector::Latest).is_err());
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
