//! Engines that produce a dump stream, behind one trait: [`Source::start`] begins a capture and
//! hands back a [`Capture`]: the raw byte stream, what is known at its start, and a
//! [`CaptureEnd`] that, after the last byte, gives the source's own verdict (pg_dump's exit
//! status, the RDB's end marker and checksum) with the fingerprint, or stops the capture early.
//! The backup operation streams any capture the same way (`backup.rs`); `engine.rs` is the one
//! place that picks the engine.

#[cfg(test)]
#[cfg(test)]
pub(crate) mod fake;
pub mod files;
pub mod mongo;
pub mod postgres;
pub mod redis;

use std::future::Future;

use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

use crate::catalog::{Fingerprint, SourceInfo};
use crate::error::Result;

/// An engine's source of dumps.
pub trait Source {
    /// Starts a capture: pre-flight checks done, the stream flowing.
    fn start(&self) -> impl Future<Output = Result<Capture>> + Send;
}

/// A capture in progress.
pub struct Capture {
    /// Exactly the dump's bytes (the data object before compression).
    pub stream: Box<dyn AsyncRead + Send + Unpin>,
    /// What is known as the capture starts.
    pub info: CaptureInfo,
    /// Called after the last byte: the fingerprint, or why the capture failed.
    pub end: Box<dyn CaptureEnd>,
}

/// What is known when a capture starts.
#[derive(Debug, Clone)]
pub struct CaptureInfo {
    /// The manifest's `engine`.
    pub engine: &'static str,
    /// The instant the data is consistent as of (this host's clock).
    pub consistent_at: DateTime<Utc>,
    /// The manifest's `dump_format`, e.g. `pg_custom`, `redis_rdb`.
    pub dump_format: &'static str,
    /// The data object's name before the compression's suffix: `pgdump`, `sql`, `rdb`.
    pub extension: &'static str,
    /// The source for the log (no secrets), e.g. `Redis 7.0.15 at redis://..., native SYNC`.
    pub description: String,
    /// About how many bytes the dump will be, if the source can tell (it sizes the upload's
    /// parts on a first run, when there is no previous snapshot to go by).
    pub size_estimate: Option<u64>,
}

/// How a capture ends; each engine has its own (object-safe, so that the backup operation
/// and its tests take any).
pub trait CaptureEnd: Send {
    /// After the last byte: the source's verdict, then the fingerprint and the source's
    /// description for the manifest. An error here means nothing may be committed.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<Finished>>;

    /// Stops the capture early (the stream failed): children are killed, transactions ended.
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// What a capture that ended well produced, for the manifest.
#[derive(Debug, Clone)]
pub struct Finished {
    /// What a drill compares against.
    pub fingerprint: Fingerprint,
    /// Where the data came from.
    pub source: SourceInfo,
    /// What went wrong without failing the capture (a file that changed while it was read).
    pub warnings: Vec<String>,
    /// Small objects stored beside the dump as part of the same snapshot (PostgreSQL: the
    /// cluster's roles, `globals = true`).
    pub companions: Vec<Companion>,
    /// The instant the data is consistent as of, when only the end of the capture knows it
    /// (MongoDB: the end of the oplog read after the last collection); else the start's.
    pub consistent_at: Option<DateTime<Utc>>,
}

/// A small object of a snapshot besides its dump, held in memory until it is stored.
#[derive(Debug, Clone)]
pub struct Companion {
    /// Its name in the manifest's `companions` and in its key (`globals`).
    pub name: &'static str,
    /// Its extension before compression (`sql`).
    pub extension: &'static str,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Finished {
    /// A capture with no warnings.
    pub fn new(fingerprint: Fingerprint, source: SourceInfo) -> Finished {
        Finished {
            fingerprint,
            source,
            warnings: Vec::new(),
            companions: Vec::new(),
            consistent_at: None,
        }
    }
}

/// A boxed future, for the object-safe [`CaptureEnd`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;
