//! Where bytes live. One small [`Store`] trait; [`local`] keeps objects in a directory.
//!
//! Objects are written through an [`ObjectWriter`], which only becomes visible under its key when
//! [`ObjectWriter::finish`] succeeds; dropping or aborting a writer leaves nothing behind.

pub mod any;
/// A fault-injecting wrapper: a test double, built for tests and with the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub mod faulty;
pub mod local;
pub mod s3;
mod stall;

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};
pub use any::{AnyStore, AnyWriter};
pub use local::LocalStore;
pub use s3::{S3Options, S3Store};

/// A key inside the store, relative to its root: `/`-separated, no `.`/`..` segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// A key, checked: not empty, relative, and with no empty, `.`, `..` or hidden segments.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let valid = !key.is_empty()
            && !key.starts_with('/')
            && key
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.starts_with('.'));
        if valid {
            Ok(ObjectKey(key))
        } else {
            Err(Error::store(format!("{key:?} is not a valid object key")))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// Why an object cannot be deleted yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Protection {
    /// e.g. "object lock (compliance)", "legal hold".
    pub reason: String,
    /// When the protection ends; `None` for a legal hold, which lasts until someone lifts it.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.until {
            Some(until) => write!(
                f,
                "{} until {}",
                self.reason,
                until.format("%Y-%m-%d %H:%M UTC")
            ),
            None => write!(f, "{} (until lifted)", self.reason),
        }
    }
}

/// A streaming upload: write bytes, then `finish()` to make the object visible under its key.
pub trait ObjectWriter: AsyncWrite + Unpin + Send {
    /// Makes the object durable and visible. Until this returns `Ok`, the key shows nothing.
    fn finish(self) -> impl Future<Output = Result<ObjectMeta>> + Send;
    /// Throws away what was written. Dropping a writer does the same, best effort. When the
    /// store had already stopped the upload on its own (a failed part, a lost connection),
    /// that error is returned: it is the cause a write to the writer could only hint at.
    fn abort(self) -> impl Future<Output = Result<()>> + Send;
}

/// A stored object's bytes, streamed.
pub type ObjectReader = Box<dyn AsyncRead + Unpin + Send>;

/// The operations Lifeboat needs from a place that keeps objects.
pub trait Store: Send + Sync {
    /// An upload in progress.
    type Writer: ObjectWriter;

    /// Where this store is, for messages (no secrets).
    fn describe(&self) -> String;

    /// Starts a streaming upload to `key`.
    fn create(&self, key: &ObjectKey) -> impl Future<Output = Result<Self::Writer>> + Send;

    /// Writes a small object in one step, atomically (all or nothing).
    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> impl Future<Output = Result<()>> + Send;

    /// Starts a streaming upload whose size is expected to be about `size_hint` bytes (e.g. the
    /// previous snapshot's). Stores whose uploads come in a limited number of parts use it to
    /// choose the part size, which cannot change mid-upload.
    fn create_sized(
        &self,
        key: &ObjectKey,
        size_hint: Option<u64>,
    ) -> impl Future<Output = Result<Self::Writer>> + Send {
        let _ = size_hint;
        self.create(key)
    }

    /// Writes a small object only if none exists under `key` (S3 `If-None-Match: *`, a
    /// directory's `create_new`). `Ok(false)`: something was there already.
    fn create_exclusive(
        &self,
        key: &ObjectKey,
        bytes: &[u8],
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Reads a whole small object; `None` if it does not exist.
    fn get(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Reads a small object with its version tag (S3: the ETag), for [`Store::replace_if`].
    fn get_tagged(
        &self,
        key: &ObjectKey,
    ) -> impl Future<Output = Result<Option<(Vec<u8>, String)>>> + Send;

    /// Overwrites a small object only if it is still the version `tag` (S3 `If-Match`);
    /// returns the new version's tag, or `None` if the object changed or disappeared.
    fn replace_if(
        &self,
        key: &ObjectKey,
        bytes: &[u8],
        tag: &str,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Streams an object from `offset`.
    fn open(
        &self,
        key: &ObjectKey,
        offset: u64,
    ) -> impl Future<Output = Result<ObjectReader>> + Send;

    /// Metadata of one object; `None` if it does not exist.
    fn head(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<ObjectMeta>>> + Send;

    /// Every committed object whose key starts with `prefix` (a `/`-terminated folder), sorted.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<ObjectMeta>>> + Send;

    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, key: &ObjectKey) -> impl Future<Output = Result<()>> + Send;

    /// Whether the store refuses to delete `key` (object-lock retention, legal hold), and until
    /// when. Stores without such settings protect nothing.
    fn protection(
        &self,
        key: &ObjectKey,
    ) -> impl Future<Output = Result<Option<Protection>>> + Send {
        let _ = key;
        async { Ok(None) }
    }

    /// Removes uploads under `prefix` that never finished and are older than `older_than`
    /// (crashed runs); returns what was removed.
    fn remove_incomplete(
        &self,
        prefix: &str,
        older_than: Duration,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// Reports an unfinished upload left in place because it is younger than the grace period.
pub(crate) fn report_young_leftover(what: &str, age: Duration) {
    tracing::info!(
        "Left the unfinished upload {what} in place: it is {} old, younger than the grace period, so it may belong to a run in progress.",
        crate::text::format_duration(Duration::from_secs(age.as_secs()))
    );
}

/// Whether opening a store may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Backups: a directory store is created if missing.
    Create,
    /// Everything that only reads or tidies: nothing is created.
    Existing,
}

/// Opens the store named by a `--repo` value or the file's `[store] url`: a directory path
/// (or `file://` URL), or `s3://bucket/prefix` with the given S3 settings.
pub async fn open(location: &str, s3: &S3Options) -> Result<AnyStore> {
    open_with(location, s3, Access::Create).await
}

/// Like [`open`], creating a directory store only with [`Access::Create`].
pub async fn open_with(location: &str, s3: &S3Options, access: Access) -> Result<AnyStore> {
    if location.starts_with("s3://") {
        return S3Store::open(location, s3.clone()).await.map(AnyStore::S3);
    }
    if location.contains("://") && !location.starts_with("file://") {
        return Err(Error::config(format!(
            "{location:?} is not a store Lifeboat knows; use a directory path or s3://bucket/prefix"
        )));
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    match access {
        Access::Create => LocalStore::open(path),
        Access::Existing => LocalStore::open_existing(path),
    }
    .map(AnyStore::Local)
}
