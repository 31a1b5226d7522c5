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
        let (spare_tx, mut spare_rx) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
        let reader = tokio::spawn(async move {
            // A source that sends nothing for the idle timeout has stopped (a silent server, a
            // hung dump): the read fails with TimedOut and the run ends.
            let mut source = tokio_io_timeout::TimeoutReader::new(source);
            source.set_timeout(Some(idle_timeout));
            let mut source = Box::pin(source);
            let mut hasher = Hasher::new(raw_algorithm);
            loop {
                // Fill whole chunks: fewer, larger messages keep the per-chunk overhead low.
                // Chunks come back from the compressor with their bytes still initialized, so
                // reading into them zeroes nothing (only a new buffer is zeroed, once).
                let mut chunk = spare_rx.try_recv().unwrap_or_default();
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
        drop(rx);
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
                        crate::retention::format_duration(idle_timeout)
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
