//! How far the stream of the running job has got: raw and stored bytes, and the total when it
//! can be estimated. The pipeline's stages add to it as bytes pass (two relaxed atomic adds
//! per chunk of 256 KiB: nothing a backup could measure); a progress line reads it.
//!
//! One meter per process: the binaries run one job's stream at a time, and passing a counter
//! through every engine's sink and the operations would tie them to a display concern.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the stream in progress.
#[derive(Debug, Default)]
pub struct Meter {
    raw: AtomicU64,
    stored: AtomicU64,
    /// The expected total, plus one (0: unknown).
    total: AtomicU64,
    /// What the total counts: true for stored bytes (restore, verify), false for raw bytes
    /// (a backup's estimate of the dump).
    total_is_stored: std::sync::atomic::AtomicBool,
}

static METER: Meter = Meter {
    raw: AtomicU64::new(0),
    stored: AtomicU64::new(0),
    total: AtomicU64::new(0),
    total_is_stored: std::sync::atomic::AtomicBool::new(false),
};

/// The process's meter.
pub fn meter() -> &'static Meter {
    &METER
}

/// What the meter says at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Raw (uncompressed) bytes so far.
    pub raw: u64,
    /// Stored bytes so far.
    pub stored: u64,
    /// The expected total, if known, and whether it counts stored bytes.
    pub total: Option<(u64, bool)>,
}

impl Reading {
    /// Bytes done of the total's kind.
    pub fn done(&self) -> u64 {
        match self.total {
            Some((_, true)) => self.stored,
            _ => self.raw,
        }
    }
}

impl Meter {
    /// Starts a new stream: counters at zero, total unknown.
    pub fn reset(&self) {
        self.raw.store(0, Ordering::Relaxed);
        self.stored.store(0, Ordering::Relaxed);
        self.total.store(0, Ordering::Relaxed);
    }

    /// The total expected, in raw bytes (a backup's estimate) or stored bytes (a read).
    pub fn expect(&self, total: u64, stored: bool) {
        self.total_is_stored.store(stored, Ordering::Relaxed);
        self.total.store(total.saturating_add(1), Ordering::Relaxed);
    }

    /// Raw bytes passed.
    pub fn add_raw(&self, n: usize) {
        self.raw.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Stored bytes passed.
    pub fn add_stored(&self, n: usize) {
        self.stored.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn read(&self) -> Reading {
        let total = self.total.load(Ordering::Relaxed);
        Reading {
            raw: self.raw.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            total: (total > 0).then(|| (total - 1, self.total_is_stored.load(Ordering::Relaxed))),
        }
    }
}
