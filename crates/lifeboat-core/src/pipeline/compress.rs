//! Compression and decompression stages (async-compression), chosen per job.

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use async_compression::Level;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite};

use std::sync::Arc;

use super::adaptive_zstd::{AdaptiveZstdWriter, Pressure};

/// The `compression` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompressionName {
    /// zstd: fast, the default.
    Zstd,
    /// gzip: readable by any tool.
    Gzip,
    /// Stored as produced.
    None,
}

impl std::str::FromStr for CompressionName {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "zstd" => Ok(CompressionName::Zstd),
            "gzip" => Ok(CompressionName::Gzip),
            "none" => Ok(CompressionName::None),
            _ => Err(format!(
                "unknown compression {s:?}; expected zstd, gzip or none"
            )),
        }
    }
}

/// How a data object is compressed, as the manifest records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum Compression {
    /// zstd at `level` (1-19).
    Zstd {
        /// 1-19; with `adaptive`, the level a stream starts at and never goes above.
        level: i32,
        /// The level was not configured: it goes down while the compressor holds the dump up,
        /// and back up to `level` while the compressor waits for the dump (see `adaptive_zstd`).
        /// A configured level is kept throughout.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        adaptive: bool,
        /// The lowest and highest level a stream was compressed at (manifests of adaptive
        /// streams).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        levels_used: Option<(i32, i32)>,
    },
    /// gzip at `level` (1-9).
    Gzip {
        /// 1-9.
        level: i32,
    },
    /// Stored as produced.
    None,
}

/// The zstd level of a job that configures none, and the highest an adaptive stream uses.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl Default for Compression {
    /// zstd, adaptive from [`DEFAULT_ZSTD_LEVEL`].
    fn default() -> Self {
        Compression::Zstd {
            level: DEFAULT_ZSTD_LEVEL,
            adaptive: true,
            levels_used: None,
        }
    }
}

impl Compression {
    /// The compression a configuration names, with its level checked (the error says the range).
    pub fn from_spec(name: CompressionName, level: Option<i32>) -> Result<Self, String> {
        match name {
            CompressionName::Zstd => {
                let Some(level) = level else {
                    return Ok(Compression::default());
                };
                if !(1..=19).contains(&level) {
                    return Err(format!(
                        "zstd compression-level must be 1..=19, got {level}"
                    ));
                }
                Ok(Compression::Zstd {
                    level,
                    adaptive: false,
                    levels_used: None,
                })
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
            Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
                adaptive: false,
                levels_used: None,
            }
        } else {
            Compression::None
        }
    }

    /// The same compression, as a stream applied it: an adaptive zstd level records the levels
    /// it used, or, when it did not adapt (`None`: zstd's worker threads), is not adaptive.
    pub fn with_levels_used(self, used: Option<(i32, i32)>) -> Compression {
        match self {
            Compression::Zstd {
                level,
                adaptive: true,
                ..
            } => Compression::Zstd {
                level,
                adaptive: used.is_some(),
                levels_used: used,
            },
            other => other,
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
    /// idle (gzip is single-threaded). An adaptive zstd level follows `pressure`, which the
    /// caller keeps up to date.
    pub fn encoder<'a, W: AsyncWrite + Unpin + Send + 'a>(
        &self,
        inner: W,
        threads: u32,
        pressure: Option<Arc<Pressure>>,
    ) -> std::io::Result<Box<dyn AsyncWrite + Unpin + Send + 'a>> {
        Ok(match *self {
            Compression::Zstd { level, .. } if threads > 1 => {
                Box::new(ZstdEncoder::with_quality_and_params(
                    inner,
                    Level::Precise(level),
                    &[async_compression::zstd::CParameter::nb_workers(threads)],
                ))
            }
            Compression::Zstd {
                level, adaptive, ..
            } => Box::new(AdaptiveZstdWriter::new(
                inner,
                level,
                adaptive.then_some(pressure).flatten(),
            )?),
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
            Compression::default(),
            Compression::Gzip { level: 6 },
            Compression::None,
        ] {
            let threads = if matches!(c, Compression::Zstd { .. }) {
                2
            } else {
                1
            };
            let mut compressed = Vec::new();
            let mut enc = c.encoder(&mut compressed, threads, None).unwrap();
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
        let c = Compression::default();
        let mut compressed = Vec::new();
        let mut enc = c.encoder(&mut compressed, 1, None).unwrap();
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
            Ok(Compression::default())
        );
        // A configured level is kept: it is not adaptive, even when it is the default's.
        assert_eq!(
            Compression::from_spec(CompressionName::Zstd, Some(3)),
            Ok(Compression::Zstd {
                level: 3,
                adaptive: false,
                levels_used: None
            })
        );
    }
}
