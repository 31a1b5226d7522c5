//! The settings of a `redis` job, and their validation.

use serde::Deserialize;

use super::JobSpec;
use crate::error::Result;
use crate::secret::SecretUrl;

/// The job keys a `redis` job takes besides the common ones.
pub(crate) const KEYS: &[&str] = &["url", "mode", "debug-digest"];

/// A Redis job's settings.
#[derive(Debug, Clone)]
pub struct RedisJob {
    /// The server (`redis://` or `rediss://`).
    pub url: SecretUrl,
    /// How the snapshot is captured.
    pub mode: RedisMode,
    /// Record the source's `DEBUG DIGEST` for drills to compare.
    pub debug_digest: bool,
}

/// How a Redis snapshot is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RedisMode {
    /// SYNC, and SCAN when the server refuses SYNC.
    #[default]
    Auto,
    /// The replication protocol: a point-in-time snapshot of every database.
    Sync,
    /// SCAN + DUMP per key (not point in time).
    Scan,
}

/// The `redis` part of a job: a `redis://` or `rediss://` URL.
pub(crate) fn job(spec: &JobSpec) -> Result<RedisJob> {
    let url = super::job_url(spec, &["redis", "rediss"], "a redis:// or rediss:// URL")?;
    Ok(RedisJob {
        url,
        mode: spec.mode.unwrap_or_default(),
        debug_digest: spec.debug_digest.unwrap_or(false),
    })
}
