//! One type for "the configured store", so operations and binaries need not be generic over
//! every store: a directory or a bucket, chosen by the repository URL.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;

use super::local::{LocalStore, LocalWriter};
use super::s3::{S3Store, S3Writer};
use super::{ObjectKey, ObjectMeta, ObjectReader, ObjectWriter, Protection, Store};
use crate::error::Result;

/// The store a configuration names: a directory or an S3-compatible bucket.
// A process holds one or two stores, so the S3 variant's size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// A directory.
    Local(LocalStore),
    /// An S3-compatible bucket (AWS, R2, MinIO...).
    S3(S3Store),
}

/// The writer of an [`AnyStore`].
pub enum AnyWriter {
    /// A temporary file renamed into place on commit.
    Local(LocalWriter),
    /// A multipart upload completed on commit.
    S3(S3Writer),
}

impl AsyncWrite for AnyWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            AnyWriter::Local(w) => Pin::new(w).poll_write(cx, buf),
            AnyWriter::S3(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            AnyWriter::Local(w) => Pin::new(w).poll_flush(cx),
            AnyWriter::S3(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            AnyWriter::Local(w) => Pin::new(w).poll_shutdown(cx),
            AnyWriter::S3(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

impl ObjectWriter for AnyWriter {
    async fn finish(self) -> Result<ObjectMeta> {
        match self {
            AnyWriter::Local(w) => w.finish().await,
            AnyWriter::S3(w) => w.finish().await,
        }
    }

    async fn abort(self) -> Result<()> {
        match self {
            AnyWriter::Local(w) => w.abort().await,
            AnyWriter::S3(w) => w.abort().await,
        }
    }
}

/// Forwards a call to whichever store this is.
macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Local($s) => $call,
            AnyStore::S3($s) => $call,
        }
    };
}

impl Store for AnyStore {
    type Writer = AnyWriter;

    fn describe(&self) -> String {
        forward!(self, s => s.describe())
    }

    async fn create(&self, key: &ObjectKey) -> Result<AnyWriter> {
        match self {
            AnyStore::Local(s) => s.create(key).await.map(AnyWriter::Local),
            AnyStore::S3(s) => s.create(key).await.map(AnyWriter::S3),
        }
    }

    async fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<()> {
        forward!(self, s => s.put(key, bytes).await)
    }

    async fn create_sized(&self, key: &ObjectKey, size_hint: Option<u64>) -> Result<AnyWriter> {
        match self {
            AnyStore::Local(s) => s.create_sized(key, size_hint).await.map(AnyWriter::Local),
            AnyStore::S3(s) => s.create_sized(key, size_hint).await.map(AnyWriter::S3),
        }
    }

    async fn create_exclusive(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        forward!(self, s => s.create_exclusive(key, bytes).await)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>> {
        forward!(self, s => s.get(key).await)
    }

    async fn get_tagged(&self, key: &ObjectKey) -> Result<Option<(Vec<u8>, String)>> {
        forward!(self, s => s.get_tagged(key).await)
    }

    async fn replace_if(&self, key: &ObjectKey, bytes: &[u8], tag: &str) -> Result<Option<String>> {
        forward!(self, s => s.replace_if(key, bytes, tag).await)
    }

    async fn open(&self, key: &ObjectKey, offset: u64) -> Result<ObjectReader> {
        forward!(self, s => s.open(key, offset).await)
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>> {
        forward!(self, s => s.head(key).await)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        forward!(self, s => s.list(prefix).await)
    }

    async fn protection(&self, key: &ObjectKey) -> Result<Option<Protection>> {
        forward!(self, s => s.protection(key).await)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        forward!(self, s => s.delete(key).await)
    }

    async fn remove_incomplete(&self, prefix: &str, older_than: Duration) -> Result<Vec<String>> {
        forward!(self, s => s.remove_incomplete(prefix, older_than).await)
    }
}
