//! A stall timeout for uploads: an upload fails when it makes no progress for the timeout, not
//! when it is merely slow.
//!
//! The SDK's `read_timeout` counts from the start of a request to the first byte of its answer,
//! body upload included, so with a 16 MiB part and 60 s every part failed below about 280 kB/s
//! although it was moving. Uploads therefore run without it: their body is a [`ProgressBody`]
//! that notes the time whenever the connection takes the next slice, and [`until_stalled`]
//! fails the request once nothing was taken (or, after the last byte, nothing answered) for
//! the timeout.
//!
//! Once the last slice is handed over, the kernel may still hold up to a socket buffer of it
//! (Linux grows the send buffer to 4 MiB by default), which a slow link drains without anything
//! visible here; so the wait for the answer gets the time that buffer takes at
//! [`SLOWEST_LINK`] on top of the timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use bytes::Bytes;

/// Slices small enough that a slow connection takes one every few seconds.
const SLICE: usize = 16 * 1024;

/// The most of a body the kernel may still be sending after the last slice was taken.
const SOCKET_BUFFER: u64 = 4 * 1024 * 1024;

/// The slowest link an upload is expected to work over, in bytes per second.
pub const SLOWEST_LINK: u64 = 32 * 1024;

/// When an upload last moved, in milliseconds since `start`, and whether its body was sent.
#[derive(Clone)]
pub struct Progress {
    start: Instant,
    last_ms: Arc<AtomicU64>,
    /// Bytes of the body not yet handed to the connection (`u64::MAX` before the first try).
    unsent: Arc<AtomicU64>,
    len: u64,
}

impl Progress {
    /// Progress of a body of `len` bytes.
    pub fn new(len: usize) -> Progress {
        Progress {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            unsent: Arc::new(AtomicU64::new(u64::MAX)),
            len: len as u64,
        }
    }

    /// How long the upload may show no progress: `timeout`, plus the time a socket buffer of
    /// the body takes on the slowest link once all of it was handed over.
    fn allowed(&self, timeout: Duration) -> Duration {
        if self.unsent.load(Ordering::Relaxed) == 0 {
            timeout + Duration::from_secs(self.len.min(SOCKET_BUFFER) / SLOWEST_LINK)
        } else {
            timeout
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A request body that reports every slice the connection takes. Retryable: each attempt of
/// the SDK starts a fresh one over the same bytes.
pub fn body(data: Bytes, progress: &Progress) -> ByteStream {
    let progress = progress.clone();
    ByteStream::new(SdkBody::retryable(move || {
        progress.touch();
        progress.unsent.store(data.len() as u64, Ordering::Relaxed);
        SdkBody::from_body_1_x(ProgressBody {
            data: data.clone(),
            sent: 0,
            progress: progress.clone(),
        })
    }))
}

struct ProgressBody {
    data: Bytes,
    sent: usize,
    progress: Progress,
}

impl http_body::Body for ProgressBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.sent >= self.data.len() {
            return Poll::Ready(None);
        }
        let end = (self.sent + SLICE).min(self.data.len());
        let slice = self.data.slice(self.sent..end);
        self.sent = end;
        self.progress.touch();
        let unsent = (self.data.len() - end) as u64;
        self.progress.unsent.store(unsent, Ordering::Relaxed);
        Poll::Ready(Some(Ok(http_body::Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.data.len()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact((self.data.len() - self.sent) as u64)
    }
}

/// Runs an upload request; `Err` with the stall's length if it made no progress for `timeout`.
pub async fn until_stalled<F: std::future::Future>(
    progress: &Progress,
    timeout: Duration,
    request: F,
) -> Result<F::Output, Duration> {
    progress.touch();
    tokio::pin!(request);
    let check = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            out = &mut request => return Ok(out),
            _ = tokio::time::sleep(check) => {
                if progress.idle() >= progress.allowed(timeout) {
                    return Err(timeout);
                }
            }
        }
    }
}
