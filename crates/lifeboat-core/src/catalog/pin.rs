//! Pins: a snapshot an operator wants kept whatever retention says (the one taken before a
//! migration, say). A pin is a small object beside the manifest
//! (`jobs/<job>/snapshots/<id>/pin.json`), never a change to the manifest: a manifest is
//! written once, may sit under object lock, and its digests are what restores trust.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{manifest_key, snapshot_prefix, SnapshotId};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{ObjectKey, Store};

/// The pin object's name inside a snapshot's folder.
pub const PIN_FILE: &str = "pin.json";

/// Why a snapshot is pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// When it was pinned.
    pub pinned_at: DateTime<Utc>,
    /// Who pinned it (`user@host`).
    pub pinned_by: String,
    /// The operator's words, e.g. "before the v2 migration".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Pin {
    /// "pinned" or "pinned: before the v2 migration", as plans and listings show it.
    pub fn describe(&self) -> String {
        match &self.note {
            Some(note) => format!("pinned: {note}"),
            None => "pinned".to_string(),
        }
    }

    /// A pin whose object could not be read still keeps its snapshot: a damaged pin must
    /// never let retention forget what someone meant to keep.
    pub(crate) fn unreadable(error: impl std::fmt::Display) -> Pin {
        Pin {
            pinned_at: DateTime::<Utc>::MIN_UTC,
            pinned_by: String::new(),
            note: Some(format!("unreadable pin ({error}); unpin to release it")),
        }
    }
}

/// `jobs/<job>/snapshots/<id>/pin.json`.
pub fn pin_key(job: &str, id: &SnapshotId) -> Result<ObjectKey> {
    ObjectKey::new(format!("{}{PIN_FILE}", snapshot_prefix(job, id)))
}

/// Whether a key is a pin (and so not part of the snapshot's data, nor under object lock).
pub fn is_pin(key: &ObjectKey) -> bool {
    key.file_name() == PIN_FILE
}

/// Pins a committed snapshot (replacing an earlier pin's note). Refuses a snapshot that does
/// not exist: a pin without a manifest would keep nothing.
pub async fn pin(store: &impl Store, job: &str, id: &SnapshotId, pin: &Pin) -> Result<()> {
    require_snapshot(store, job, id).await?;
    let bytes = serde_json::to_vec_pretty(pin).unwrap_or_default();
    store.put(&pin_key(job, id)?, &bytes).await
}

/// Removes a snapshot's pin; `Ok(false)` if it had none.
pub async fn unpin(store: &impl Store, job: &str, id: &SnapshotId) -> Result<bool> {
    require_snapshot(store, job, id).await?;
    let key = pin_key(job, id)?;
    if store.head(&key).await?.is_none() {
        return Ok(false);
    }
    store.delete(&key).await?;
    Ok(true)
}

async fn require_snapshot(store: &impl Store, job: &str, id: &SnapshotId) -> Result<()> {
    if store.head(&manifest_key(job, id)?).await?.is_none() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("job {job:?} has no snapshot {id}"),
        )
        .with_hint(format!(
            "run `lifeboat-restore list --job {job}` to see its snapshots"
        )));
    }
    Ok(())
}

/// Reads a pin object; an unreadable one still pins (see [`Pin::unreadable`]).
pub(crate) async fn read(store: &impl Store, key: &ObjectKey) -> Result<Option<Pin>> {
    Ok(store.get(key).await?.map(|bytes| {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!("{key} is damaged ({e}); its snapshot stays pinned.");
            Pin::unreadable(e)
        })
    }))
}
