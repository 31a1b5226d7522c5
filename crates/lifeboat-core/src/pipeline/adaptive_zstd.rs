//! zstd that does not spend compression effort on bytes that do not compress.
//!
//! Dumps often carry long stretches that zstd cannot shrink: Redis values that are already
//! compressed or encrypted, bytea columns of images. On those, zstd level 3 costs about four
//! times the CPU of level 1 and even level 1 runs at about 2 GB/s, all to write raw blocks in
//! the end; on a 2-core machine that CPU is taken from the database server producing the dump.
//! So the encoder watches what each window of input compresses to. When the configured level
//! leaves a window at more than `INCOMPRESSIBLE` of its size, it ends the frame and *stores*
//! what follows: zstd frames of raw blocks (RFC 8878, section 3.1.1.2.2), written here without
//! running the compressor. The first `SAMPLE` bytes of each stored MiB are test-compressed at
//! level 1; below `COMPRESSIBLE` of their size, the stored frame ends and the configured level
//! takes over again.
//!
//! Compressed stretches are written as independent frames of up to `FRAME` bytes of input, each
//! compressed from one contiguous buffer. zstd's streaming encoder keeps its input in a ring
//! buffer, and every block after the ring wraps takes its slower path for matches across the
//! seam; whole frames never do, which costs 16% less CPU at levels 1 and 3 on a PostgreSQL dump
//! (benches/README.md). The price is the history each frame starts without: nothing at level 1,
//! whose window is 512 KiB, and about 3% of the stored size at level 3 (2 MiB window).
//!
//! The stored object is then a sequence of whole zstd frames, which every zstd decoder reads as
//! one stream (`zstd -d` included); Lifeboat's decoder reads all frames and the digests cover
//! every byte.
//!
//! A job that configures no level also gets a level that keeps up with the dump, in the spirit
//! of `zstd --adapt`: the pipeline tells the encoder, through [`Pressure`], how often the
//! compressor found the dump's chunks piling up in front of it and how often it found none and
//! had to wait. At the end of each compressed window, a window mostly spent behind the dump
//! lowers the level by one (down to 1) and a run of windows mostly spent waiting for it raises
//! the level by one, up to the default it started at. It never goes above that: on a 2-core host
//! the effort a higher level takes comes out of the dump's own CPU, which the queue cannot show.
//! For the same reason a step up must be earned: the run of waiting windows it takes starts at
//! one and doubles with every step down. Without that, a host whose cores are taken by another
//! process sees the level climb as soon as the compressor catches up and fall again a window
//! later (3, 2, 1, 2, 3, 2, ...), and every climb is CPU the dump did not get. A level change
//! takes effect at the next frame. A configured level is kept throughout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

/// Input bytes per compressed frame.
const FRAME: usize = 4 * 1024 * 1024;
/// Input bytes per compressibility decision while compressing (whole frames).
const WINDOW: u64 = 2 * FRAME as u64;
/// Input bytes per sample while storing: at most this much compressible data is stored before
/// the sample shows it.
const STORED_WINDOW: u64 = 1024 * 1024;
/// At the configured level, a window that stays above this fraction of its size is
/// incompressible.
const INCOMPRESSIBLE: f64 = 0.97;
/// While storing, a sample that level 1 shrinks below this fraction of its size means the data
/// is worth compressing again.
const COMPRESSIBLE: f64 = 0.90;
/// The bytes of each stored window that are test-compressed: 1/32 of it, so sampling costs about
/// 1/32 of what compressing everything at level 1 would.
const SAMPLE: usize = 32 * 1024;
/// The lowest level an adaptive stream goes down to. zstd's fast levels below 1 were tried (down
/// to -5): under a competing CPU-bound process a PostgreSQL backup was no faster (1.34x the
/// floor against 1.38x at 1, within the noise) and its object up to 1.6 times larger; tried again
/// once a step up had to be earned (down to -7), it was slower than a fixed level 1 in each of 4
/// rounds and its object up to 1.8 times larger (benches/README.md). Those trials stepped through
/// level 0, which zstd reads as its default (3); tried once more skipping it (down to -2 and -4),
/// no gain showed through this machine's spread either. Should negative levels come back, step
/// from 1 to -1.
const LOWEST_ADAPTIVE_LEVEL: i32 = 1;
/// The largest block a zstd frame may hold (RFC 8878: Block_Maximum_Size).
const MAX_BLOCK: usize = 128 * 1024;

/// The start of a stored frame: the magic number, a header descriptor with no content size,
/// checksum or dictionary (0x00), and a window descriptor of 128 KiB (exponent 7: 2^(10+7)),
/// which is all raw blocks of up to [`MAX_BLOCK`] bytes need.
const STORED_FRAME_HEADER: [u8; 6] = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
/// The end of a stored frame: an empty raw block marked last, as zstd itself writes for an
/// empty frame.
const LAST_EMPTY_BLOCK: [u8; 3] = [0x01, 0x00, 0x00];

/// How the dump and the compressor keep pace, counted by the pipeline each time the compressor
/// takes a chunk: the queue in front of it was full (the dump waits on the compressor), or empty
/// (the compressor waits on the dump).
/// The encoder reports the levels it used back through it.
#[derive(Debug)]
pub struct Pressure {
    taken: AtomicU64,
    queue_full: AtomicU64,
    queue_empty: AtomicU64,
    lowest_level: AtomicI32,
    highest_level: AtomicI32,
}

impl Default for Pressure {
    fn default() -> Self {
        Pressure {
            taken: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            queue_empty: AtomicU64::new(0),
            lowest_level: AtomicI32::new(i32::MAX),
            highest_level: AtomicI32::new(i32::MIN),
        }
    }
}

impl Pressure {
    /// The lowest and highest level the encoder used (`None` before it started).
    pub fn levels_used(&self) -> Option<(i32, i32)> {
        let (low, high) = (
            self.lowest_level.load(Ordering::Relaxed),
            self.highest_level.load(Ordering::Relaxed),
        );
        (low <= high).then_some((low, high))
    }

    fn used(&self, level: i32) {
        self.lowest_level.fetch_min(level, Ordering::Relaxed);
        self.highest_level.fetch_max(level, Ordering::Relaxed);
    }

    /// Counts one chunk taken with `queued` more chunks waiting in a queue of `depth`.
    pub fn record(&self, queued: usize, depth: usize) {
        self.taken.fetch_add(1, Ordering::Relaxed);
        if queued + 1 >= depth {
            self.queue_full.fetch_add(1, Ordering::Relaxed);
        } else if queued == 0 {
            self.queue_empty.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts since the last call: (chunks taken, with the queue full, with it empty).
    fn take(&self) -> (u64, u64, u64) {
        (
            self.taken.swap(0, Ordering::Relaxed),
            self.queue_full.swap(0, Ordering::Relaxed),
            self.queue_empty.swap(0, Ordering::Relaxed),
        )
    }
}

/// A raw block's 3-byte header: last-block bit 0, block type 0 (raw), the size in bits 3 to 23.
fn raw_block_header(size: usize) -> [u8; 3] {
    debug_assert!(size <= MAX_BLOCK);
    let v = (size as u32) << 3;
    [v as u8, (v >> 8) as u8, (v >> 16) as u8]
}

/// An [`AsyncWrite`] that zstd-compresses what is written to it into `inner`, storing stretches
/// that do not compress, as described in the module docs.
pub struct AdaptiveZstdWriter<W> {
    inner: W,
    /// Compresses whole frames at the current level.
    compressor: zstd::bulk::Compressor<'static>,
    /// Input of the compressed frame being gathered (up to [`FRAME`] bytes).
    frame: Vec<u8>,
    /// A frame (compressed or stored) has been started: an empty stream still needs one.
    started: bool,
    /// Writing a stored frame rather than compressing.
    storing: bool,
    /// Test-compresses the samples of stored windows (made on first use).
    sampler: Option<zstd::bulk::Compressor<'static>>,
    /// The current stored window's first bytes.
    sample: Vec<u8>,
    /// Compressed bytes not yet written to `inner`.
    pending: Vec<u8>,
    written: usize,
    window_in: u64,
    window_out: u64,
    /// Switches between compressing and storing so far.
    switches: u64,
    finished: bool,
    /// The level compressed windows use now.
    level: i32,
    /// Set for an adaptive level: the highest it may take is the one it started at.
    pressure: Option<Arc<Pressure>>,
    max_level: i32,
    /// Windows in a row mostly spent waiting for the dump.
    waiting_windows: u32,
    /// How many of them a step up takes (doubles with every step down).
    windows_per_step_up: u32,
}

/// The most waiting windows a step up takes: 64 windows are 512 MiB of dump.
const MOST_WINDOWS_PER_STEP_UP: u32 = 64;

impl<W: AsyncWrite + Unpin> AdaptiveZstdWriter<W> {
    /// A zstd writer at `level` over `inner`; with `pressure`, the level adapts (down to 1, up
    /// to `level`) to keep up with the dump.
    pub fn new(inner: W, level: i32, pressure: Option<Arc<Pressure>>) -> io::Result<Self> {
        if let Some(p) = &pressure {
            p.used(level);
        }
        Ok(AdaptiveZstdWriter {
            inner,
            compressor: zstd::bulk::Compressor::new(level)?,
            frame: Vec::new(),
            started: false,
            storing: false,
            sampler: None,
            sample: Vec::new(),
            pending: Vec::new(),
            written: 0,
            window_in: 0,
            window_out: 0,
            switches: 0,
            finished: false,
            level,
            pressure,
            max_level: level,
            waiting_windows: 0,
            windows_per_step_up: 1,
        })
    }

    /// At the end of a compressed window: a step down when the dump mostly waited on the
    /// compressor, a step up (to the starting level at most) after `windows_per_step_up` windows
    /// in a row in which the compressor mostly waited on the dump. The next frame uses the new
    /// level.
    fn adapt_level(&mut self) -> io::Result<()> {
        let Some(pressure) = self.pressure.clone() else {
            return Ok(());
        };
        let (taken, full, empty) = pressure.take();
        let (behind, waiting) = (2 * full > taken, 2 * empty > taken);
        self.waiting_windows = if waiting { self.waiting_windows + 1 } else { 0 };
        let level = if behind && self.level > LOWEST_ADAPTIVE_LEVEL {
            self.windows_per_step_up = (2 * self.windows_per_step_up).min(MOST_WINDOWS_PER_STEP_UP);
            self.level - 1
        } else if waiting
            && self.level < self.max_level
            && self.waiting_windows >= self.windows_per_step_up
        {
            self.waiting_windows = 0;
            self.level + 1
        } else {
            return Ok(());
        };
        // The same context at another level: a new one would allocate its tables again.
        self.compressor.set_compression_level(level)?;
        self.level = level;
        pressure.used(level);
        tracing::debug!(level, taken, full, empty, "zstd level adapted");
        Ok(())
    }

    /// Compresses or stores `input` into `pending`.
    fn take(&mut self, mut input: &[u8]) -> io::Result<()> {
        while !input.is_empty() {
            let used = if self.storing {
                self.store(input)?
            } else {
                self.compress(input)?
            };
            input = &input[used..];
        }
        Ok(())
    }

    /// Gathers input into the current frame, compressing it once it is full; returns the bytes
    /// used.
    fn compress(&mut self, input: &[u8]) -> io::Result<usize> {
        if self.frame.capacity() == 0 {
            self.frame.reserve_exact(FRAME);
        }
        let input = &input[..input.len().min(FRAME - self.frame.len())];
        self.frame.extend_from_slice(input);
        if self.frame.len() == FRAME {
            self.compress_frame()?;
        }
        Ok(input.len())
    }

    /// Compresses the gathered input as one frame into `pending`, and at the end of a window
    /// decides whether to store what follows or to change the level.
    fn compress_frame(&mut self) -> io::Result<()> {
        let before = self.pending.len();
        self.pending
            .reserve(zstd::zstd_safe::compress_bound(self.frame.len()));
        // Appended after what `pending` holds already.
        let mut tail = io::Cursor::new(&mut self.pending);
        tail.set_position(before as u64);
        self.compressor.compress_to_buffer(&self.frame, &mut tail)?;
        self.started = true;
        self.window_in += self.frame.len() as u64;
        self.window_out += (self.pending.len() - before) as u64;
        self.frame.clear();
        if self.window_in >= WINDOW {
            let ratio = self.window_out as f64 / self.window_in as f64;
            self.window_in = 0;
            self.window_out = 0;
            if ratio > INCOMPRESSIBLE {
                self.pending.extend_from_slice(&STORED_FRAME_HEADER);
                self.storing = true;
                self.sample.clear();
                self.switches += 1;
            } else {
                self.adapt_level()?;
            }
        }
        Ok(())
    }

    /// Stores raw blocks up to the end of the sample or the window; returns the bytes used.
    fn store(&mut self, input: &[u8]) -> io::Result<usize> {
        let to_sample = SAMPLE.saturating_sub(self.sample.len());
        let limit = if to_sample > 0 {
            to_sample
        } else {
            (STORED_WINDOW - self.window_in) as usize
        };
        let input = &input[..input.len().min(limit)];
        for block in input.chunks(MAX_BLOCK) {
            self.pending
                .extend_from_slice(&raw_block_header(block.len()));
            self.pending.extend_from_slice(block);
        }
        self.window_in += input.len() as u64;
        if to_sample > 0 {
            self.sample.extend_from_slice(input);
            if self.sample.len() == SAMPLE && self.sample_compresses()? {
                // Compress again from here on.
                self.end_frame()?;
                self.storing = false;
                self.window_in = 0;
                self.window_out = 0;
                // The level adapts to how compressing keeps pace, not storing.
                if let Some(p) = &self.pressure {
                    p.take();
                }
                self.switches += 1;
            }
        } else if self.window_in >= STORED_WINDOW {
            self.window_in = 0;
            self.sample.clear();
        }
        Ok(input.len())
    }

    /// Whether level 1 shrinks the current sample below [`COMPRESSIBLE`].
    fn sample_compresses(&mut self) -> io::Result<bool> {
        let sampler = match &mut self.sampler {
            Some(s) => s,
            None => self.sampler.insert(zstd::bulk::Compressor::new(1)?),
        };
        let compressed = sampler.compress(&self.sample)?;
        Ok((compressed.len() as f64) < COMPRESSIBLE * self.sample.len() as f64)
    }

    /// Writes the rest of the current frame, its end included, into `pending`.
    fn end_frame(&mut self) -> io::Result<()> {
        if self.storing {
            self.pending.extend_from_slice(&LAST_EMPTY_BLOCK);
            Ok(())
        } else if !self.frame.is_empty() || !self.started {
            // An empty stream is still one (empty) frame.
            self.compress_frame()
        } else {
            Ok(())
        }
    }

    /// Moves everything written so far into `pending`: the gathered input as a frame of its own.
    /// Stored blocks are never held back.
    fn flush_encoder(&mut self) -> io::Result<()> {
        if self.storing || self.frame.is_empty() || self.finished {
            return Ok(());
        }
        self.compress_frame()
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

    /// How often it switched between compressing and storing (for tests and reports).
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
        this.take(buf)?;
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
        let mut writer = AdaptiveZstdWriter::new(&mut stored, 3, None).unwrap();
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
        Compression::default()
            .decoder(stored)
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn incompressible_stretches_are_stored_and_everything_round_trips() {
        const MIB: usize = 1024 * 1024;
        let data = [rows(12 * MIB), noise(40 * MIB, 7), rows(20 * MIB)].concat();
        for write_size in [256 * 1024 + 3, 1000, 5 * MIB] {
            let (stored, switches) = compress(&data, write_size).await;
            // To storing within the noise, and back to level 3 after it.
            assert_eq!(switches, 2, "switches, writes of {write_size}");
            assert_eq!(decompress(&stored).await, data, "Lifeboat's decoder");
            // A plain zstd decoder reads the frame sequence as one stream too.
            assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), data, "zstd");
            // Compressed frames, one stored frame, compressed frames again (and the frame
            // boundaries are real ones).
            let mut kinds = String::new();
            let mut rest = &stored[..];
            while !rest.is_empty() {
                let size = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
                kinds.push(if rest.starts_with(&STORED_FRAME_HEADER) {
                    's'
                } else {
                    'c'
                });
                rest = &rest[size..];
            }
            assert!(
                kinds.starts_with('c') && kinds.ends_with('c') && kinds.matches('s').count() == 1,
                "frames: {kinds}"
            );

            // The noise is stored at its own size plus 3 bytes per 128 KiB block, and the
            // compressible parts are compressed about as well as zstd level 3 alone does: at
            // most one stored MiB of rows goes before the sample shows them, and level 3 takes
            // up to a window of noise before it stores.
            let level3 = zstd::bulk::compress(&rows(12 * MIB), 3).unwrap().len()
                + zstd::bulk::compress(&rows(20 * MIB), 3).unwrap().len();
            let noise_stored = stored.len() - level3;
            assert!(
                (noise_stored as f64) < 41.0 * MIB as f64 * 1.001,
                "stored {} bytes, of which noise about {noise_stored}",
                stored.len()
            );
            assert!(
                (noise_stored as f64) > 40.0 * MIB as f64 * 0.999,
                "the compressible parts were not compressed at level 3: stored {}, level 3 alone {level3}",
                stored.len()
            );
        }
    }

    #[test]
    fn stored_blocks_have_the_layout_of_rfc_8878() {
        // Block_Size 0x1_2345 in bits 3..24, Block_Type 0 (raw), Last_Block 0.
        assert_eq!(raw_block_header(0x1_2345), [0x28, 0x1a, 0x09]);
        // A stored frame of two bytes that zstd's own decoder reads.
        let frame = [
            &STORED_FRAME_HEADER[..],
            &raw_block_header(2),
            b"hi",
            &LAST_EMPTY_BLOCK,
        ]
        .concat();
        assert_eq!(zstd::stream::decode_all(&frame[..]).unwrap(), b"hi");
        assert_eq!(
            zstd::zstd_safe::find_frame_compressed_size(&frame).unwrap(),
            frame.len()
        );
    }

    #[tokio::test]
    async fn compressible_data_is_compressed_at_the_configured_level_frame_by_frame() {
        let data = rows(20 * 1024 * 1024 + 12345);
        let (stored, switches) = compress(&data, 100_000).await;
        assert_eq!(switches, 0);
        let frames_at_level3: Vec<u8> = data
            .chunks(FRAME)
            .flat_map(|frame| zstd::bulk::compress(frame, 3).unwrap())
            .collect();
        assert!(stored == frames_at_level3);
        assert_eq!(decompress(&stored).await, data);
    }

    #[tokio::test]
    async fn a_flush_hands_on_everything_written_so_far() {
        // Compressed, and stored (a window of noise, then more of it).
        for data in [rows(300_000), noise(8 * 1024 * 1024 + 300_000, 3)] {
            let mut stored = Vec::new();
            let mut writer = AdaptiveZstdWriter::new(&mut stored, 3, None).unwrap();
            writer.write_all(&data).await.unwrap();
            writer.flush().await.unwrap();
            let storing = writer.storing;
            drop(writer);
            assert_eq!(storing, data.len() > 8 * 1024 * 1024);
            // Without the frame's end, a streaming decoder still yields every byte written.
            let mut decoder = zstd::stream::read::Decoder::new(&stored[..]).unwrap();
            let mut out = vec![0u8; data.len()];
            std::io::Read::read_exact(&mut decoder, &mut out).unwrap();
            assert!(out == data);
        }
    }

    #[tokio::test]
    async fn empty_input_is_one_empty_frame() {
        let (stored, _) = compress(&[], 1).await;
        assert!(!stored.is_empty());
        assert!(decompress(&stored).await.is_empty());
    }

    #[tokio::test]
    async fn an_adaptive_level_steps_down_behind_the_dump_and_earns_its_way_back_up() {
        let window = WINDOW as usize;
        // Three windows with the dump waiting on a full queue (b), eight with the compressor
        // waiting on an empty one (w), then the dump behind again.
        let windows = "bbbwwwwwwwwb";
        let data = rows(window * windows.len());
        let pressure = Arc::new(Pressure::default());
        let mut stored = Vec::new();
        let mut writer = AdaptiveZstdWriter::new(&mut stored, 3, Some(pressure.clone())).unwrap();
        let mut levels = Vec::new();
        for (kind, stretch) in windows.chars().zip(data.chunks(window)) {
            for _ in 0..32 {
                pressure.record(if kind == 'b' { 7 } else { 0 }, 8);
            }
            writer.write_all(stretch).await.unwrap();
            levels.push(writer.level);
        }
        writer.shutdown().await.unwrap();
        drop(writer);
        // 3 -> 2 -> 1 and no lower; two steps down make a step up take four waiting windows,
        // and the level goes no higher than where it started.
        assert_eq!(levels, [2, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 2]);
        assert_eq!(pressure.levels_used(), Some((1, 3)));
        assert_eq!(decompress(&stored).await, data);

        // Neither side waiting most of the time: the level stays.
        let steady = Arc::new(Pressure::default());
        let mut stored = Vec::new();
        let mut writer = AdaptiveZstdWriter::new(&mut stored, 3, Some(steady.clone())).unwrap();
        for stretch in data.chunks(window).take(2) {
            for queued in 0..8 {
                steady.record(queued, 8);
            }
            writer.write_all(stretch).await.unwrap();
        }
        writer.shutdown().await.unwrap();
        assert_eq!(steady.levels_used(), Some((3, 3)));
    }
}
