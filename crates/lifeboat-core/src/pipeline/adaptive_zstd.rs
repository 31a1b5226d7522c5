//! zstd that does not spend level-3 effort on bytes that do not compress.
//!
//! Dumps often carry long stretches that zstd cannot shrink: Redis values that are already
//! compressed or encrypted, bytea columns of images. On those, zstd level 3 costs about four
//! times the CPU of level 1 and produces the same raw blocks, and on a 2-core machine that CPU is
//! taken from the database server producing the dump. So the encoder watches what each window of
//! input compresses to: when level 3 leaves a window at more than [`INCOMPRESSIBLE`] of its size,
//! it ends the frame and goes on at level 1; when level 1 shrinks a window below
//! [`COMPRESSIBLE`], it ends that frame and goes back to the configured level.
//!
//! The stored object is then a sequence of whole zstd frames, which every zstd decoder reads as
//! one stream (`zstd -d` included); Lifeboat's decoder reads all frames and the digests cover
//! every byte. Data that compresses is compressed at the configured level throughout.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;
use zstd::stream::raw::{Encoder, InBuffer, Operation, OutBuffer};

/// The level used while the data does not compress.
const PASS_LEVEL: i32 = 1;
/// Input bytes per compressibility decision.
const WINDOW: u64 = 8 * 1024 * 1024;
/// At the configured level, a window that stays above this fraction of its size is
/// incompressible.
const INCOMPRESSIBLE: f64 = 0.97;
/// At the pass-through level, a window below this fraction of its size is worth the
/// configured level again.
const COMPRESSIBLE: f64 = 0.90;

/// An [`AsyncWrite`] that zstd-compresses what is written to it into `inner`, switching between
/// the configured level and level 1 at frame boundaries as described in the module docs.
pub struct AdaptiveZstdWriter<W> {
    inner: W,
    encoder: Encoder<'static>,
    level: i32,
    current_level: i32,
    /// Compressed bytes not yet written to `inner`.
    pending: Vec<u8>,
    written: usize,
    window_in: u64,
    window_out: u64,
    /// Frames ended so far (switches of level).
    switches: u64,
    /// Input went in since the last flush: zstd may hold some of it back.
    unflushed: bool,
    finished: bool,
}

impl<W: AsyncWrite + Unpin> AdaptiveZstdWriter<W> {
    pub fn new(inner: W, level: i32) -> io::Result<Self> {
        Ok(AdaptiveZstdWriter {
            inner,
            encoder: Encoder::new(level)?,
            level,
            current_level: level,
            pending: Vec::new(),
            written: 0,
            window_in: 0,
            window_out: 0,
            switches: 0,
            unflushed: false,
            finished: false,
        })
    }

    /// Compresses `input` into `pending`.
    fn compress(&mut self, input: &[u8]) -> io::Result<()> {
        let before = self.pending.len();
        self.pending
            .reserve(zstd::zstd_safe::compress_bound(input.len()) + 1024);
        let mut input = InBuffer::around(input);
        while input.pos() < input.src.len() {
            if self.pending.capacity() == self.pending.len() {
                self.pending.reserve(128 * 1024);
            }
            let pos = self.pending.len();
            let mut output = OutBuffer::around_pos(&mut self.pending, pos);
            self.encoder.run(&mut input, &mut output)?;
        }
        self.unflushed = true;
        self.window_in += input.pos() as u64;
        self.window_out += (self.pending.len() - before) as u64;
        if self.window_in >= WINDOW {
            self.decide()?;
        }
        Ok(())
    }

    /// At the end of a window: stay, or end the frame and go on at the other level.
    fn decide(&mut self) -> io::Result<()> {
        let ratio = self.window_out as f64 / self.window_in as f64;
        self.window_in = 0;
        self.window_out = 0;
        let next = if self.current_level == self.level && ratio > INCOMPRESSIBLE {
            PASS_LEVEL
        } else if self.current_level != self.level && ratio < COMPRESSIBLE {
            self.level
        } else {
            return Ok(());
        };
        self.end_frame()?;
        self.encoder.reinit()?;
        self.encoder
            .set_parameter(zstd::stream::raw::CParameter::CompressionLevel(next))?;
        self.current_level = next;
        self.switches += 1;
        Ok(())
    }

    /// Writes the rest of the current frame, its end included, into `pending`.
    fn end_frame(&mut self) -> io::Result<()> {
        loop {
            self.pending.reserve(128 * 1024);
            let pos = self.pending.len();
            let mut output = OutBuffer::around_pos(&mut self.pending, pos);
            if self.encoder.finish(&mut output, true)? == 0 {
                return Ok(());
            }
        }
    }

    /// Moves what zstd holds back of the input so far into `pending` (ends a block, not the
    /// frame).
    fn flush_encoder(&mut self) -> io::Result<()> {
        if !self.unflushed || self.finished {
            return Ok(());
        }
        loop {
            self.pending.reserve(128 * 1024);
            let pos = self.pending.len();
            let mut output = OutBuffer::around_pos(&mut self.pending, pos);
            if self.encoder.flush(&mut output)? == 0 {
                self.unflushed = false;
                return Ok(());
            }
        }
    }

    /// Writes `pending` to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// How often the level changed (for tests and reports).
    pub fn switches(&self) -> u64 {
        self.switches
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for AdaptiveZstdWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Err(io::Error::other("write after shutdown")));
        }
        ready!(this.poll_drain(cx))?;
        this.compress(buf)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.flush_encoder()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.finished {
            ready!(this.poll_drain(cx))?;
            this.end_frame()?;
            this.unflushed = false;
            this.finished = true;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Compression;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bytes no compressor can shrink (xorshift64*).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    /// Rows of a made-up table: compresses several times over.
    fn rows(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 100);
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(
                format!(
                    "{i}\tuser{}@example.com\t{{\"plan\": \"pro\", \"n\": {}}}\n",
                    i % 977,
                    i * 7
                )
                .as_bytes(),
            );
            i += 1;
        }
        out.truncate(len);
        out
    }

    async fn compress(data: &[u8], write_size: usize) -> (Vec<u8>, u64) {
        let mut stored = Vec::new();
        let mut writer = AdaptiveZstdWriter::new(&mut stored, 3).unwrap();
        for piece in data.chunks(write_size) {
            writer.write_all(piece).await.unwrap();
        }
        writer.shutdown().await.unwrap();
        let switches = writer.switches();
        drop(writer);
        (stored, switches)
    }

    async fn decompress(stored: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Compression::Zstd { level: 3 }
            .decoder(stored)
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn incompressible_stretches_pass_at_level_1_and_everything_round_trips() {
        const MIB: usize = 1024 * 1024;
        let data = [rows(12 * MIB), noise(40 * MIB, 7), rows(20 * MIB)].concat();
        let (stored, switches) = compress(&data, 256 * 1024 + 3).await;
        // To level 1 within the noise, and back to level 3 after it.
        assert_eq!(switches, 2, "level changes");
        assert_eq!(decompress(&stored).await, data, "Lifeboat's decoder");
        // A plain zstd decoder reads the frame sequence as one stream too.
        assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), data, "zstd");

        // The noise is stored at about its own size, and the compressible parts are compressed
        // about as well as zstd level 3 alone does: the window after the noise goes at level 1
        // before the switch back, and frame ends cost a little history.
        let level3 = zstd::bulk::compress(&rows(12 * MIB), 3).unwrap().len()
            + zstd::bulk::compress(&rows(20 * MIB), 3).unwrap().len();
        let noise_stored = stored.len() - level3;
        assert!(
            (noise_stored as f64) < 40.0 * MIB as f64 * 1.01,
            "stored {} bytes, of which noise about {noise_stored}",
            stored.len()
        );
        assert!(
            (noise_stored as f64) > 40.0 * MIB as f64 * 0.99,
            "the compressible parts were not compressed at level 3: stored {}, level 3 alone {level3}",
            stored.len()
        );
    }

    #[tokio::test]
    async fn compressible_data_stays_one_frame_at_the_configured_level() {
        let data = rows(20 * 1024 * 1024);
        let (stored, switches) = compress(&data, 100_000).await;
        assert_eq!(switches, 0);
        let streaming_level3 = {
            let mut out = Vec::new();
            let mut enc = zstd::stream::write::Encoder::new(&mut out, 3).unwrap();
            std::io::Write::write_all(&mut enc, &data).unwrap();
            enc.finish().unwrap();
            out.len()
        };
        assert_eq!(stored.len(), streaming_level3);
        assert_eq!(decompress(&stored).await, data);
    }

    #[tokio::test]
    async fn a_flush_hands_on_everything_written_so_far() {
        let data = rows(300_000);
        let mut stored = Vec::new();
        let mut writer = AdaptiveZstdWriter::new(&mut stored, 3).unwrap();
        writer.write_all(&data).await.unwrap();
        writer.flush().await.unwrap();
        drop(writer);
        // Without the frame's end, a streaming decoder still yields every byte written.
        let mut decoder = zstd::stream::read::Decoder::new(&stored[..]).unwrap();
        let mut out = vec![0u8; data.len()];
        std::io::Read::read_exact(&mut decoder, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn empty_input_is_one_empty_frame() {
        let (stored, _) = compress(&[], 1).await;
        assert!(!stored.is_empty());
        assert!(decompress(&stored).await.is_empty());
    }
}
