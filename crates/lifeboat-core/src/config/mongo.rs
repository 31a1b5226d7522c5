//! The settings of a `mongodb` job, and their validation.

use super::JobSpec;
use crate::error::{Error, Result};
use crate::secret::SecretUrl;

/// The job keys a `mongodb` job takes besides the common ones.
pub(crate) const KEYS: &[&str] = &["url", "databases", "parallel-collections"];

/// Collections read at once by default.
pub const DEFAULT_PARALLEL_COLLECTIONS: usize = 2;

/// A MongoDB job's settings.
#[derive(Debug, Clone)]
pub struct MongoJob {
    /// The server or replica set (`mongodb://` or `mongodb+srv://`).
    pub url: SecretUrl,
    /// Only these databases (default: every database but `admin`, `local` and `config`).
    pub databases: Vec<String>,
    /// Collections read at once.
    pub parallel_collections: usize,
}

/// The `mongodb` part of a job.
pub(crate) fn job(spec: &JobSpec) -> Result<MongoJob> {
    let url = super::job_url(
        spec,
        &["mongodb", "mongodb+srv"],
        "a mongodb:// or mongodb+srv:// URL",
    )?;
    let databases = spec.databases.clone().unwrap_or_default();
    if let Some(bad) = databases
        .iter()
        .find(|db| db.is_empty() || db.contains(['/', '\\', '.', ' ', '"', '$', '\0']))
    {
        return Err(Error::config(format!(
            "job {:?}: databases: {bad:?} is not a MongoDB database name",
            spec.name
        ))
        .with_hint("list database names, e.g. databases = [\"app\", \"billing\"]"));
    }
    let parallel_collections = match spec.parallel_collections {
        None => DEFAULT_PARALLEL_COLLECTIONS,
        Some(n @ 1..=16) => n as usize,
        Some(n) => {
            return Err(Error::config(format!(
                "job {:?}: parallel-collections = {n} is out of range",
                spec.name
            ))
            .with_hint("use 1 to 16 (default 2)"))
        }
    };
    Ok(MongoJob {
        url,
        databases,
        parallel_collections,
    })
}
