//! Compression and decompression stages (async-compression), chosen per job.

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use async_compression::Level;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite};

use super::adaptive_zstd::AdaptiveZstdWriter;
use crate::config::CompressionName;

/// How a data object is compressed, as the manifest records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum Compression {
    /// zstd at `level` (1-19).
    Zstd {
        /// 1-19.
        level: i32,
    },
    /// gzip at `level` (1-9).
    Gzip {
        /// 1-9.
        level: i32,
    },
    /// Stored as produced.
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd { level: 3 }
    }
}

impl Compression {
    /// The compression a configuration names, with its level checked (the error says the range).
    pub fn from_spec(name: CompressionName, level: Option<i32>) -> Result<Self, String> {
        match name {
            CompressionName::Zstd => {
                let level = level.unwrap_or(3);
                if !(1..=19).contains(&level) {
                    return Err(format!(
                        "zstd compression-level must be 1..=19, got {level}"
                    ));
                }
                Ok(Compression::Zstd { level })
            }
            CompressionName::Gzip => {
                let level = level.unwrap_or(6);
                if !(1..=9).contains(&level) {
                    return Err(format!("gzip compression-level must be 1..=9, got {level}"));
                }
                Ok(Compression::Gzip { level })
            }
            CompressionName::None => match level {
                Some(_) => {
                    Err("compression-level makes no sense with compression = \"none\"".into())
                }
                None => Ok(Compression::None),
            },
        }
    }

    /// The compression of a file made elsewhere, from its first bytes: the gzip and zstd magic
    /// numbers, else none. (The level only matters when writing.)
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip { level: 6 }
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd { level: 3 }
        } else {
            Compression::None
        }
    }

    /// The file name suffix of the stored object (`.zst`, `.gz`, or nothing).
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::Zstd { .. } => ".zst",
            Compression::Gzip { .. } => ".gz",
            Compression::None => "",
        }
    }

    /// Wraps a writer so that what is written to it is compressed. Shut it down to write the
    /// trailer. zstd stores stretches that do not compress as raw blocks instead of running the
    /// compressor over them (see `adaptive_zstd`). `threads` > 1 lets zstd compress on that many
    /// worker threads instead, for a machine where the database server and pg_dump leave a core
    /// idle (gzip is single-threaded).
    pub fn encoder<'a, W: AsyncWrite + Unpin + Send + 'a>(
        &self,
        inner: W,
        threads: u32,
    ) -> std::io::Result<Box<dyn AsyncWrite + Unpin + Send + 'a>> {
        Ok(match *self {
            Compression::Zstd { level } if threads > 1 => {
                Box::new(ZstdEncoder::with_quality_and_params(
                    inner,
                    Level::Precise(level),
                    &[async_compression::zstd::CParameter::nb_workers(threads)],
                ))
            }
            Compression::Zstd { level } => Box::new(AdaptiveZstdWriter::new(inner, level)?),
            Compression::Gzip { level } => {
                Box::new(GzipEncoder::with_quality(inner, Level::Precise(level)))
            }
            Compression::None => Box::new(inner),
        })
    }

    /// Wraps a buffered reader so that reading from it yields decompressed bytes.
    pub fn decoder<'a, R: AsyncBufRead + Unpin + Send + 'a>(
        &self,
        inner: R,
    ) -> Box<dyn AsyncRead + Unpin + Send + 'a> {
        match self {
            Compression::Zstd { .. } => {
                let mut d = ZstdDecoder::new(inner);
                // A stored stream is one or more whole frames (see adaptive_zstd); bytes after
                // the last frame that are not a frame are a decoding error, and the digests
                // cover every byte anyway.
                d.multiple_members(true);
                Box::new(d)
            }
            Compression::Gzip { .. } => Box::new(GzipDecoder::new(inner)),
            Compression::None => Box::new(inner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};

    /// A reader that returns at most a few bytes per read, to shake out chunk-boundary bugs.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.step = self.step % 13 + 1;
            let n = self.step.min(self.data.len()).min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn every_algorithm_round_trips_over_short_reads() {
        let data: Vec<u8> = (0..300_000u32).map(|i| ((i * 7919) % 256) as u8).collect();
        for c in [
            Compression::Zstd { level: 3 },
            Compression::Gzip { level: 6 },
            Compression::None,
        ] {
            let threads = if matches!(c, Compression::Zstd { .. }) {
                2
            } else {
                1
            };
            let mut compressed = Vec::new();
            let mut enc = c.encoder(&mut compressed, threads).unwrap();
            enc.write_all(&data).await.unwrap();
            enc.shutdown().await.unwrap();
            drop(enc);
            let reader = BufReader::with_capacity(
                5,
                Trickle {
                    data: &compressed,
                    step: 0,
                },
            );
            let mut out = Vec::new();
            c.decoder(reader).read_to_end(&mut out).await.unwrap();
            assert_eq!(out, data, "{c:?}");
        }
    }

    #[tokio::test]
    async fn truncated_zstd_is_an_error() {
        let data = vec![42u8; 100_000];
        let c = Compression::Zstd { level: 3 };
        let mut compressed = Vec::new();
        let mut enc = c.encoder(&mut compressed, 1).unwrap();
        enc.write_all(&data).await.unwrap();
        enc.shutdown().await.unwrap();
        drop(enc);
        compressed.truncate(compressed.len() - 3);
        let mut out = Vec::new();
        assert!(c
            .decoder(&compressed[..])
            .read_to_end(&mut out)
            .await
            .is_err());
    }

    #[test]
    fn levels_are_checked() {
        assert!(Compression::from_spec(CompressionName::Zstd, Some(25)).is_err());
        assert!(Compression::from_spec(CompressionName::Gzip, Some(0)).is_err());
        assert_eq!(
            Compression::from_spec(CompressionName::Zstd, None),
            Ok(Compression::Zstd { level: 3 })
        );
    }
}
