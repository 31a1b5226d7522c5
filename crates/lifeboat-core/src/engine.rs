//! The engine kinds, and the one place that dispatches on them for a backup: every other part
//! of the backup operation works on a [`Capture`] whatever its engine.

use crate::config::EngineJob;
use crate::error::Result;
use crate::source::{Capture, Source};

/// Starts a capture of the job's source.
pub async fn capture(engine: &EngineJob) -> Result<Capture> {
    match engine {
        EngineJob::Postgres(pg) => pg.start().await,
        EngineJob::Redis(redis) => redis.start().await,
    }
}
