//! MongoDB restores (being written).

use crate::catalog::Manifest;
use crate::error::{Error, Result};
use crate::pipeline::Keys;
use crate::sink::{Applied, Drilled, RestoreOptions, Scratch, Sink, SinkPlan, Surveyed};
use crate::store::Store;

/// Restores mongodump archives.
pub struct MongoSink;

impl Sink for MongoSink {
    fn product(&self) -> &'static str {
        "MongoDB"
    }

    async fn plan(&self, _: &Manifest, _: &str, _: &RestoreOptions) -> Result<SinkPlan> {
        Err(Error::config("not yet"))
    }

    async fn apply<S: Store>(
        &self,
        _: &S,
        _: &Keys,
        _: &Manifest,
        _: &SinkPlan,
        _: &RestoreOptions,
    ) -> Result<Applied> {
        Err(Error::config("not yet"))
    }

    async fn check<S: Store>(&self, _: &S, _: &Keys, _: &Manifest) -> Result<Vec<String>> {
        Err(Error::config("not yet"))
    }

    fn check_scratch(&self, _: &Scratch) -> Result<()> {
        Ok(())
    }

    async fn drill<S: Store>(&self, _: &S, _: &Keys, _: &Manifest, _: &Scratch) -> Result<Drilled> {
        Err(Error::config("not yet"))
    }

    async fn survey<S: Store>(&self, _: &S, _: &Manifest) -> Result<Surveyed> {
        Err(Error::config("not yet"))
    }
}
