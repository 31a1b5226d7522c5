//! A store wrapper that fails on purpose: uploads break after a given number of bytes. Used by
//! fault tests to prove that a failing store commits nothing and never hangs a dump.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;

use super::{ObjectKey, ObjectMeta, ObjectReader, ObjectWriter, Protection, Store};
use crate::error::Result;

/// A store whose uploads fail after a set number of bytes, for fault tests.
#[derive(Clone)]
pub struct FaultyStore<S> {
    inner: S,
    /// Uploads fail with an I/O error once they have accepted this many bytes.
    pub fail_upload_after: u64,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner`; uploads fail after `fail_upload_after` bytes.
    pub fn new(inner: S, fail_upload_after: u64) -> Self {
        FaultyStore {
            inner,
            fail_upload_after,
        }
    }
}

/// The writer of a [`FaultyStore`].
pub struct FaultyWriter<W> {
    inner: W,
    written: u64,
    fail_after: u64,
}

impl<W: ObjectWriter> AsyncWrite for FaultyWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.written + buf.len() as u64 > self.fail_after {
            return Poll::Ready(Err(std::io::Error::other(
                "injected fault: the store stopped accepting data",
            )));
        }
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.written += n as u64;
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<W: ObjectWriter> ObjectWriter for FaultyWriter<W> {
    async fn finish(self) -> Result<ObjectMeta> {
        self.inner.finish().await
    }

    async fn abort(self) -> Result<()> {
        self.inner.abort().await
    }
}

impl<S: Store> Store for FaultyStore<S> {
    type Writer = FaultyWriter<S::Writer>;

    fn describe(&self) -> String {
        format!("{} (with injected faults)", self.inner.describe())
    }

    async fn create(&self, key: &ObjectKey) -> Result<Self::Writer> {
        Ok(FaultyWriter {
            inner: self.inner.create(key).await?,
            written: 0,
            fail_after: self.fail_upload_after,
        })
    }

    async fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<()> {
        self.inner.put(key, bytes).await
    }

    async fn create_exclusive(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        self.inner.create_exclusive(key, bytes).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>> {
        self.inner.get(key).await
    }

    async fn open(&self, key: &ObjectKey, offset: u64) -> Result<ObjectReader> {
        self.inner.open(key, offset).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }

    async fn protection(&self, key: &ObjectKey) -> Result<Option<Protection>> {
        self.inner.protection(key).await
    }

    async fn get_tagged(&self, key: &ObjectKey) -> Result<Option<(Vec<u8>, String)>> {
        self.inner.get_tagged(key).await
    }

    async fn replace_if(&self, key: &ObjectKey, bytes: &[u8], tag: &str) -> Result<Option<String>> {
        self.inner.replace_if(key, bytes, tag).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn remove_incomplete(&self, prefix: &str, older_than: Duration) -> Result<Vec<String>> {
        self.inner.remove_incomplete(prefix, older_than).await
    }
}
