//! Holds back the tail of a stream until its digests are known.
//!
//! A restore sink (`pg_restore --single-transaction`, `psql -1`) commits when it reaches the end
//! of its input. The digests of a stored stream are known only after its last byte, so the last
//! bytes are kept here and released only once both digests match: a damaged stream can never
//! reach COMMIT, and on a mismatch the caller kills the child, which rolls back.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes kept back from the sink until the stream is proven intact (at least 1 MiB; docs/ARCHITECTURE.md, "Restore").
pub const DEFAULT_HOLD_BACK: usize = 1024 * 1024;

/// Writes through to `inner` all but the last `hold` bytes, which reach it only when
/// [`release`](HoldBackWriter::release) says the stream is intact: a restore cannot commit a
/// stream whose digest has not yet matched.
pub struct HoldBackWriter<W> {
    inner: W,
    tail: Vec<u8>,
    hold: usize,
    written: u64,
}

impl<W: AsyncWrite + Unpin> HoldBackWriter<W> {
    /// Holds back the last `hold` bytes written.
    pub fn new(inner: W, hold: usize) -> Self {
        HoldBackWriter {
            inner,
            tail: Vec::with_capacity(hold * 2),
            hold,
            written: 0,
        }
    }

    /// Accepts bytes; passes on all but the last `hold` bytes seen so far.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tail.extend_from_slice(bytes);
        if self.tail.len() >= self.hold * 2 {
            let release = self.tail.len() - self.hold;
            self.inner.write_all(&self.tail[..release]).await?;
            self.written += release as u64;
            self.tail.drain(..release);
        }
        Ok(())
    }

    /// Bytes handed to the sink so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Call only after the digests matched: writes the tail and closes the sink's input.
    pub async fn release(mut self) -> std::io::Result<W> {
        self.inner.write_all(&self.tail).await?;
        self.written += self.tail.len() as u64;
        self.inner.shutdown().await?;
        Ok(self.inner)
    }

    /// Gives back the sink's input without releasing the tail (on a mismatch).
    pub fn discard(self) -> W {
        self.inner
    }
}

impl<W: AsyncWrite + Unpin + Send> super::RawSink for HoldBackWriter<W> {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        HoldBackWriter::write(self, chunk).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_tail_is_held_until_released() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut w = HoldBackWriter::new(Vec::new(), 1000);
        for chunk in data.chunks(333) {
            w.write(chunk).await.unwrap();
            assert!(data.len() as u64 - w.written() >= 1000 || w.written() == 0);
        }
        let sent = w.written() as usize;
        assert!(sent <= data.len() - 1000);
        let out = w.release().await.unwrap();
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn a_small_stream_is_held_entirely() {
        let mut w = HoldBackWriter::new(Vec::new(), 1000);
        w.write(b"short").await.unwrap();
        assert_eq!(w.written(), 0);
        assert!(w.discard().is_empty());
    }
}
