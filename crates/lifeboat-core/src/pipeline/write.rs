//! The write path of a backup, as one value: raw stream -> BLAKE3 (raw) -> compression ->
//! encryption (optional) -> SHA-256 (stored) -> the store's writer. [`WritePipeline`] owns the
//! stages, the data object's name suffix that follows from them, and both digests.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::adaptive_zstd::Pressure;
use super::encrypt::{EncryptionInfo, Sealing};
use super::hash::{Algorithm, Hasher};
use super::{Compression, Digest, HashingWriter, RawDigest, CHUNK_SIZE};
use crate::error::{Error, ErrorKind, Result};

/// Chunks in flight between the reading and the compressing task.
const CHANNEL_DEPTH: usize = 8;
/// The most chunks a stream uses: the queue's, the one being compressed and the one being
/// filled. They are made as needed and then passed round.
const CHUNKS: usize = CHANNEL_DEPTH + 2;

/// The digests and sizes of a streamed dump: raw (as the source wrote it) and stored.
pub struct Streamed {
    /// The digest of the stream as the source wrote it.
    pub raw_digest: RawDigest,
    /// Bytes the source wrote.
    pub raw_size: u64,
    /// SHA-256 of the stored (compressed) object.
    pub stored_sha256: Digest,
    /// Bytes stored.
    pub stored_size: u64,
    /// The compression as it was applied: for an adaptive zstd level, with the levels used.
    pub compression: Compression,
    /// The encryption applied after compression (`None`: stored unencrypted).
    pub encryption: Option<EncryptionInfo>,
}

/// The stages a dump goes through on its way to the store. One value writes one object: its
/// encryption holds that object's file key.
pub struct WritePipeline {
    compression: Compression,
    encryption: Option<Sealing>,
    /// zstd worker threads (1: compress inline).
    threads: u32,
    /// A source that sends nothing for this long has stopped.
    idle_timeout: Duration,
}

impl WritePipeline {
    /// The pipeline for `compression`, with `threads` zstd workers; a source that sends nothing
    /// for `idle_timeout` fails the write.
    pub fn new(compression: Compression, threads: u32, idle_timeout: Duration) -> WritePipeline {
        WritePipeline {
            compression,
            encryption: None,
            threads,
            idle_timeout,
        }
    }

    /// The same pipeline, encrypting after compression (see `encrypt`).
    pub fn encrypted(mut self, sealing: Option<Sealing>) -> WritePipeline {
        self.encryption = sealing;
        self
    }

    /// The data object's name for a dump with this extension: `data.pgdump.zst`, or
    /// `data.pgdump.zst.age` when encrypted.
    pub fn object_name(&self, extension: &str) -> String {
        self.named_object("data", extension)
    }

    /// An object's name in a snapshot's folder: `globals.sql.zst(.age)` for a companion.
    pub fn named_object(&self, name: &str, extension: &str) -> String {
        format!(
            "{name}.{extension}{}{}",
            self.compression.extension(),
            if self.encryption.is_some() {
                super::encrypt::EXTENSION
            } else {
                ""
            }
        )
    }

    /// Reads `source` in one task (digesting the raw bytes) and compresses, encrypts and writes
    /// in this one.
    pub async fn run<R, W>(self, source: R, writer: &mut W) -> Result<Streamed>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send,
    {
        let (compression, threads, idle_timeout) =
            (self.compression, self.threads, self.idle_timeout);
        let encryption = self.encryption.as_ref().map(|s| s.info().clone());
        // Uncompressed and unencrypted, the stored bytes are the raw bytes: one digest (SHA-256,
        // the stored bytes' function) serves both.
        let stored_as_dumped = matches!(compression, Compression::None) && encryption.is_none();
        let raw_algorithm = if stored_as_dumped {
            Algorithm::Sha256
        } else {
            Algorithm::Blake3
        };
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
        // Chunks go back to the reader once compressed: the same few buffers carry the whole
        // dump, where a new one per chunk, allocated on one thread and freed on another, left the
        // allocator holding megabytes more at the peak.
        let (spare_tx, mut spare_rx) = mpsc::channel::<Vec<u8>>(CHUNKS);
        let reader = tokio::spawn(async move {
            // A source that sends nothing for the idle timeout has stopped (a silent server, a
            // hung dump): the read fails with TimedOut and the run ends.
            let mut source = tokio_io_timeout::TimeoutReader::new(source);
            source.set_timeout(Some(idle_timeout));
            let mut source = Box::pin(source);
            let mut hasher = Hasher::new(raw_algorithm);
            let mut made = 0;
            loop {
                // Fill whole chunks: fewer, larger messages keep the per-chunk overhead low.
                // Chunks come back from the compressor with their bytes still initialized, so
                // reading into them zeroes nothing.
                let mut chunk = match spare_rx.try_recv() {
                    Ok(chunk) => chunk,
                    Err(_) if made < CHUNKS => {
                        made += 1;
                        vec![0; CHUNK_SIZE]
                    }
                    Err(_) => match spare_rx.recv().await {
                        Some(chunk) => chunk,
                        None => return Ok(hasher), // the writer failed; its error is reported
                    },
                };
                chunk.resize(CHUNK_SIZE, 0);
                let mut filled = 0;
                while filled < CHUNK_SIZE {
                    match source.read(&mut chunk[filled..]).await? {
                        0 => break,
                        n => filled += n,
                    }
                }
                chunk.truncate(filled);
                if chunk.is_empty() {
                    return Ok::<_, std::io::Error>(hasher);
                }
                hasher.update(&chunk);
                super::meter::meter().add_raw(chunk.len());
                if tx.send(chunk).await.is_err() {
                    return Ok(hasher); // the writer failed; its error is reported
                }
            }
        });
        let mut hashing = if stored_as_dumped {
            HashingWriter::length_only(&mut *writer)
        } else {
            HashingWriter::new(&mut *writer)
        };
        // An adaptive level follows how full the queue from the reader is.
        // (zstd's own worker threads, `threads` > 1, keep their level.)
        let pressure = (threads <= 1
            && matches!(compression, Compression::Zstd { adaptive: true, .. }))
        .then(|| Arc::new(Pressure::default()));
        let write_result: std::io::Result<()> = async {
            let stored: Box<dyn AsyncWrite + Unpin + Send + '_> = match self.encryption {
                Some(sealing) => sealing.wrap(&mut hashing).await?,
                None => Box::new(&mut hashing),
            };
            let mut encoder = compression.encoder(stored, threads, pressure.clone())?;
            loop {
                if let Some(p) = &pressure {
                    p.record(rx.len(), CHANNEL_DEPTH);
                }
                let Some(chunk) = rx.recv().await else {
                    break;
                };
                encoder.write_all(&chunk).await?;
                let _ = spare_tx.try_send(chunk);
            }
            encoder.shutdown().await?;
            Ok(())
        }
        .await;
        // A reader waiting to send a chunk, or for one to come back, stops here.
        drop((rx, spare_tx));
        let (_, stored_digest, stored_len) = hashing.into_parts();
        let read_result = reader
            .await
            .map_err(|e| Error::source_failed(format!("the dump reader task failed: {e}")))?;
        let hasher = read_result.map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                Error::new(
                    ErrorKind::Source,
                    format!(
                        "the source sent nothing for {} (idle-timeout); the run was stopped",
                        crate::text::format_duration(idle_timeout)
                    ),
                )
                .with_hint("check that the source server is healthy; raise idle-timeout for a source that pauses longer on purpose")
            } else {
                Error::new(ErrorKind::Source, format!("reading the dump failed: {e}"))
            }
        })?;
        write_result.map_err(|e| {
            Error::store(format!("writing the snapshot failed: {e}"))
                .with_hint("check free space and permissions of the store")
        })?;
        let (raw_digest, raw_len) = hasher.finish_raw();
        let stored_digest = stored_digest.unwrap_or(raw_digest.digest());
        Ok(Streamed {
            raw_digest,
            raw_size: raw_len,
            stored_sha256: stored_digest,
            stored_size: stored_len,
            compression: compression.with_levels_used(pressure.and_then(|p| p.levels_used())),
            encryption,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A store that takes `room` bytes, then stalls for a while and fails every write, as a
    /// store that stops answering does (the stall timeout ends its upload).
    struct FailsAfter {
        room: usize,
        stall: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl AsyncWrite for FailsAfter {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.room == 0 {
                let stall = self.stall.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep(Duration::from_millis(300)))
                });
                std::task::ready!(stall.as_mut().poll(cx));
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the store stopped answering",
                )));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_store_that_fails_ends_the_run_while_the_source_still_sends() {
        // While the store stalls, the source gets far ahead: every chunk is queued, held by
        // the stalled write or being filled. When the store fails, the waiting reader must
        // stop and the run end with the store's error, not wait for ever.
        // (A constant stream compresses to nearly nothing: with zstd the store takes nothing.)
        for (compression, room) in [
            (Compression::None, 3 * CHUNK_SIZE),
            (Compression::default(), 0),
        ] {
            let source = tokio::io::repeat(0x5a).take(1 << 30);
            let mut store = FailsAfter { room, stall: None };
            let pipeline = WritePipeline::new(compression, 1, Duration::from_secs(60));
            let run = pipeline.run(source, &mut store);
            let result = tokio::time::timeout(Duration::from_secs(20), run)
                .await
                .expect("the run hung after the store failed");
            let err = result.err().expect("a failing store must fail the run");
            assert!(
                err.message().contains("the store stopped answering"),
                "{}",
                err.message()
            );
        }
    }

    #[tokio::test]
    async fn every_byte_of_the_source_is_digested_once_in_order() {
        // More chunks than the pool holds, and a short last one.
        let data: Vec<u8> = (0..(CHUNKS * 3 + 1) * CHUNK_SIZE + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut stored = Vec::new();
        let streamed = WritePipeline::new(Compression::None, 1, Duration::from_secs(60))
            .run(std::io::Cursor::new(data.clone()), &mut stored)
            .await
            .unwrap();
        assert_eq!(stored, data);
        assert_eq!(streamed.raw_size, data.len() as u64);
        assert_eq!(streamed.raw_digest, RawDigest::of(Algorithm::Sha256, &data));
    }
}
