//! The one place that dispatches on the engine kinds ([`Engine`], a leaf of its own in
//! `engine_kind.rs`): a backup starts any [`Source`] through [`capture`], and restore and
//! verify work on any [`Sink`] through [`AnySink`] (the same pattern as `store/any.rs`). Every
//! other part of the operations works whatever the engine.

use std::path::Path;

pub use crate::engine_kind::Engine;

use crate::catalog::Manifest;
use crate::config::EngineJob;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Keys;
use crate::sink::files::FilesSink;
use crate::sink::mongo::MongoSink;
use crate::sink::postgres::PgSink;
use crate::sink::redis::RedisSink;
use crate::sink::{Applied, Drilled, RestoreOptions, Scratch, Sink, SinkPlan, Surveyed};
use crate::source::{Capture, Source};
use crate::store::Store;

impl Engine {
    /// The engine of a snapshot; one written by a newer Lifeboat's engine is refused by name.
    pub fn of(snapshot: &Manifest) -> Result<Engine> {
        snapshot.engine.parse().map_err(|_| {
            Error::new(
                ErrorKind::Refused,
                format!(
                    "snapshot {} is a {} backup, which this Lifeboat cannot read",
                    snapshot.id, snapshot.engine
                ),
            )
            .with_hint(
                "use the Lifeboat version that wrote it (its manifest's tool_version) or newer",
            )
        })
    }
}

/// Starts a capture of the job's source.
pub async fn capture(engine: &EngineJob) -> Result<Capture> {
    match engine {
        EngineJob::Postgres(pg) => pg.start().await,
        EngineJob::Redis(redis) => redis.start().await,
        EngineJob::Files(files) => files.start().await,
        EngineJob::Mongo(mongo) => mongo.start().await,
    }
}

/// The sink of any engine.
pub enum AnySink {
    /// PostgreSQL: `pg_restore` or `psql` into a database.
    Postgres(PgSink),
    /// Redis: RESTORE into the target databases (staging databases and SWAPDB with
    /// `--mode swap`), or an RDB file.
    Redis(RedisSink),
    /// Files: a tar extracted beside the target, then renamed into place.
    Files(FilesSink),
    /// MongoDB: staging collections in the target databases, renamed into place.
    Mongo(MongoSink),
}

impl AnySink {
    /// The sink of an engine; `pg_bin_dir` is where PostgreSQL's client programs are.
    pub fn new(engine: Engine, pg_bin_dir: Option<&Path>) -> AnySink {
        match engine {
            Engine::Postgres => AnySink::Postgres(PgSink::new(pg_bin_dir)),
            Engine::Redis => AnySink::Redis(RedisSink),
            Engine::Files => AnySink::Files(FilesSink),
            Engine::Mongo => AnySink::Mongo(MongoSink),
        }
    }

    /// The sink that restores this snapshot.
    pub fn for_snapshot(snapshot: &Manifest, pg_bin_dir: Option<&Path>) -> Result<AnySink> {
        Ok(AnySink::new(Engine::of(snapshot)?, pg_bin_dir))
    }
}

macro_rules! each_sink {
    ($self:ident, $sink:ident => $body:expr) => {
        match $self {
            AnySink::Postgres($sink) => $body,
            AnySink::Redis($sink) => $body,
            AnySink::Files($sink) => $body,
            AnySink::Mongo($sink) => $body,
        }
    };
}

impl Sink for AnySink {
    fn product(&self) -> &'static str {
        each_sink!(self, s => s.product())
    }

    async fn plan(
        &self,
        snapshot: &Manifest,
        to: &str,
        options: &RestoreOptions,
    ) -> Result<SinkPlan> {
        each_sink!(self, s => s.plan(snapshot, to, options).await)
    }

    async fn apply<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        plan: &SinkPlan,
        options: &RestoreOptions,
    ) -> Result<Applied> {
        each_sink!(self, s => s.apply(store, keys, snapshot, plan, options).await)
    }

    async fn check<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
    ) -> Result<Vec<String>> {
        each_sink!(self, s => s.check(store, keys, snapshot).await)
    }

    fn check_scratch(&self, scratch: &Scratch) -> Result<()> {
        each_sink!(self, s => s.check_scratch(scratch))
    }

    async fn drill<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        scratch: &Scratch,
    ) -> Result<Drilled> {
        each_sink!(self, s => s.drill(store, keys, snapshot, scratch).await)
    }

    async fn survey<S: Store>(&self, store: &S, snapshot: &Manifest) -> Result<Surveyed> {
        each_sink!(self, s => s.survey(store, snapshot).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_are_recognised_by_their_first_bytes() {
        assert_eq!(Engine::detect(b"REDIS0011\xfa"), Some(Engine::Redis));
        assert_eq!(Engine::detect(b"PGDMP\x01\x0e"), Some(Engine::Postgres));
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(Engine::detect(&tar), Some(Engine::Files));
        // pg_dump's plain SQL starts with its header comment; other SQL has no signature.
        assert_eq!(
            Engine::detect(b"--\n-- PostgreSQL database dump"),
            Some(Engine::Postgres)
        );
        assert_eq!(Engine::detect(b"CREATE TABLE t (a int);"), None);
        assert_eq!(Engine::detect(b""), None);
        assert_eq!(
            Engine::detect(&[0x6d, 0xe2, 0x99, 0x81, 0x5a]),
            Some(Engine::Mongo)
        );
    }

    #[test]
    fn a_target_url_names_its_engine() {
        assert_eq!(
            Engine::for_target("postgresql://h/db"),
            Some(Engine::Postgres)
        );
        assert_eq!(Engine::for_target("rediss://h:6380"), Some(Engine::Redis));
        assert_eq!(Engine::for_target("/data/uploads"), None);
    }

    #[test]
    fn engine_names_round_trip_and_unknown_ones_are_named() {
        for e in Engine::ALL {
            assert_eq!(e.as_str().parse::<Engine>(), Ok(e));
        }
        assert!("mongo".parse::<Engine>().unwrap_err().contains("mongo"));
    }
}
