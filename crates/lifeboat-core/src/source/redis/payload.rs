//! The snapshot that follows SYNC, read straight from the connection into the caller's buffer.
//!
//! A capture moves about a gigabyte per gigabyte of data set while the server's fork is the
//! bottleneck, so every copy and wake-up on this side takes CPU from the server's processes on a
//! small machine. The bytes therefore go from the socket into the caller's buffer once; only the
//! last bytes of each read in the diskless form, which may be the start of the end mark, are set
//! aside and put in front of the next read.
//!
//! There is no read-ahead task between the socket and the backup's reader: while that reader
//! checks and digests a chunk (a fraction of a millisecond), the kernel's receive buffer, which
//! grows to megabytes, holds what arrives; during a 1 GB capture it was found empty at every
//! sample, so the server never waited on this side.

use std::pin::Pin;
use std::task::{Context, Poll};

use memchr::memmem::Finder;
use tokio::io::{AsyncRead, ReadBuf};

/// The diskless form's end mark is 40 bytes.
pub(super) const EOF_MARK_LEN: usize = 40;

/// Below this much room in the caller's buffer, reads go through a small buffer of our own
/// first, so that a nearly full buffer does not turn into one read per few bytes.
const DIRECT_READ_MIN: usize = 4096;

/// How the snapshot ends.
pub(super) enum PayloadEnd {
    /// `$<length>`: that many bytes (the server wrote the snapshot to its disk first).
    Length(u64),
    /// `$EOF:<mark>`: the bytes up to the mark (streamed from the server's fork).
    Mark(Vec<u8>),
}

enum Body {
    Length {
        left: u64,
    },
    Mark {
        /// Built once: a search builds its tables.
        finder: Box<Finder<'static>>,
        /// The mark was seen: `pending` is the rest of the snapshot.
        found: bool,
    },
}

/// Exactly the snapshot's bytes; a connection that ends before the snapshot does is an error.
pub struct SyncPayload<R> {
    io: R,
    body: Body,
    /// Bytes read but not handed out: what was buffered with the header, and in the diskless
    /// form the last bytes read, which may be the start of the mark.
    pending: Vec<u8>,
    /// The server, for errors (no password).
    location: String,
}

impl<R> SyncPayload<R> {
    /// `buffered`: the bytes read after the header line along with it.
    pub(super) fn new(io: R, end: PayloadEnd, buffered: &[u8], location: String) -> Self {
        let mut pending = buffered.to_vec();
        let body = match end {
            PayloadEnd::Length(left) => {
                // Past the snapshot comes the replication stream: never hand it out.
                pending.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                Body::Length { left }
            }
            PayloadEnd::Mark(mark) => {
                let finder = Box::new(Finder::new(&mark).into_owned());
                // A small snapshot can arrive whole with its header.
                let found = match finder.find(&pending) {
                    Some(at) => {
                        pending.truncate(at);
                        true
                    }
                    None => false,
                };
                Body::Mark { finder, found }
            }
        };
        SyncPayload {
            io,
            body,
            pending,
            location,
        }
    }

    fn closed_early(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "Redis at {} closed the connection before the end of the snapshot",
                self.location
            ),
        )
    }

    /// Hands out up to `n` bytes of `pending`.
    fn give_pending(&mut self, n: usize, out: &mut ReadBuf<'_>) {
        let n = n.min(out.remaining());
        out.put_slice(&self.pending[..n]);
        self.pending.drain(..n);
    }
}

impl<R: AsyncRead + Unpin> SyncPayload<R> {
    fn poll_length(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let Body::Length { left } = &mut self.body else {
            unreachable!("poll_length is only called for the length form")
        };
        if *left == 0 {
            return Poll::Ready(Ok(()));
        }
        if !self.pending.is_empty() {
            let n = self.pending.len();
            *left -= n.min(out.remaining()) as u64;
            self.give_pending(n, out);
            return Poll::Ready(Ok(()));
        }
        let start = out.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, out) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let got = (out.filled().len() - start) as u64;
        if got == 0 {
            return Poll::Ready(Err(self.closed_early()));
        }
        // The replication stream may follow the snapshot in the same read.
        let keep = got.min(*left);
        out.set_filled(start + keep as usize);
        *left -= keep;
        Poll::Ready(Ok(()))
    }

    fn poll_until_mark(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let Body::Mark { finder, found } = &mut self.body else {
                unreachable!("poll_until_mark is only called for the mark form")
            };
            if *found {
                // The rest before the mark; nothing left is the end of the stream.
                let n = self.pending.len();
                self.give_pending(n, out);
                return Poll::Ready(Ok(()));
            }
            if self.pending.len() > EOF_MARK_LEN {
                // All but the last 40 can no longer be part of the mark.
                let n = self.pending.len() - EOF_MARK_LEN;
                self.give_pending(n, out);
                return Poll::Ready(Ok(()));
            }
            if out.remaining() < EOF_MARK_LEN + DIRECT_READ_MIN {
                // Little room: read into `pending` and hand out from there.
                let mut scratch = [0u8; DIRECT_READ_MIN];
                let mut small = ReadBuf::new(&mut scratch);
                match Pin::new(&mut self.io).poll_read(cx, &mut small) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
                if small.filled().is_empty() {
                    return Poll::Ready(Err(self.closed_early()));
                }
                self.pending.extend_from_slice(small.filled());
                if let Some(at) = finder.find(&self.pending) {
                    self.pending.truncate(at);
                    *found = true;
                }
                continue;
            }
            // The set-aside bytes first, then the read right behind them, in the caller's buffer.
            let start = out.filled().len();
            out.put_slice(&self.pending);
            let read_from = out.filled().len();
            match Pin::new(&mut self.io).poll_read(cx, out) {
                Poll::Ready(Ok(())) => {}
                other => {
                    // Nothing handed out: the set-aside bytes stay in `pending`.
                    out.set_filled(start);
                    return other;
                }
            }
            let end = out.filled().len();
            if end == read_from {
                out.set_filled(start);
                return Poll::Ready(Err(self.closed_early()));
            }
            self.pending.clear();
            // The set-aside bytes and the new ones: a mark can only start in them.
            match finder.find(&out.filled()[start..]) {
                Some(at) => {
                    out.set_filled(start + at);
                    *found = true;
                }
                None => {
                    let keep_from = end - EOF_MARK_LEN.min(end - start);
                    self.pending.extend_from_slice(&out.filled()[keep_from..]);
                    out.set_filled(keep_from);
                }
            }
            if out.filled().len() > start || *found {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SyncPayload<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let this = &mut *self;
        match this.body {
            Body::Length { .. } => this.poll_length(cx, out),
            Body::Mark { .. } => this.poll_until_mark(cx, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Hands out its data in reads of the given sizes, in turn.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = &mut *self;
            this.turn += 1;
            // Every third read is not ready yet, as a socket's would be.
            if this.turn.is_multiple_of(3) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let size = this.sizes[this.turn % this.sizes.len()];
            let n = size.min(buf.remaining()).min(this.data.len() - this.at);
            buf.put_slice(&this.data[this.at..this.at + n]);
            this.at += n;
            Poll::Ready(Ok(()))
        }
    }

    const MARK: &[u8; 40] = b"0123456789abcdef0123456789abcdef01234567";

    fn snapshot(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Reads the payload with reads of `chunk` bytes at a time.
    async fn read_all(mut payload: SyncPayload<Pieces>, chunk: usize) -> std::io::Result<Vec<u8>> {
        let mut all = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = payload.read(&mut buf).await?;
            if n == 0 {
                return Ok(all);
            }
            all.extend_from_slice(&buf[..n]);
        }
    }

    fn pieces(data: Vec<u8>, sizes: &[usize]) -> Pieces {
        Pieces {
            data,
            at: 0,
            sizes: sizes.to_vec(),
            turn: 0,
        }
    }

    #[tokio::test]
    async fn the_mark_ends_the_snapshot_wherever_the_reads_split_it() {
        let body = snapshot(50_000);
        for buffered in [0, 10, 39, 40, 41, 1000] {
            for sizes in [
                &[1, 7, 40][..],
                &[39, 41],
                &[4096, 13],
                &[65536],
                &[100, 5000, 3],
            ] {
                for chunk in [1, 45, 4000, 4136, 65536] {
                    let mut wire = body.clone();
                    wire.extend_from_slice(MARK);
                    wire.extend_from_slice(b"+replication stream after the snapshot\r\n");
                    let (head, rest) = wire.split_at(buffered);
                    let payload = SyncPayload::new(
                        pieces(rest.to_vec(), sizes),
                        PayloadEnd::Mark(MARK.to_vec()),
                        head,
                        "test".into(),
                    );
                    let got = read_all(payload, chunk).await.unwrap();
                    assert!(
                        got == body,
                        "buffered {buffered}, reads {sizes:?}, chunk {chunk}: {} bytes",
                        got.len()
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn a_snapshot_buffered_whole_with_its_header_is_read_from_the_buffer() {
        let body = snapshot(300);
        let mut wire = body.clone();
        wire.extend_from_slice(MARK);
        let payload = SyncPayload::new(
            pieces(Vec::new(), &[10]),
            PayloadEnd::Mark(MARK.to_vec()),
            &wire,
            "test".into(),
        );
        assert_eq!(read_all(payload, 64).await.unwrap(), body);
        let payload = SyncPayload::new(
            pieces(Vec::new(), &[10]),
            PayloadEnd::Length(300),
            &wire,
            "test".into(),
        );
        assert_eq!(read_all(payload, 64).await.unwrap(), body);
    }

    #[tokio::test]
    async fn the_length_form_stops_at_its_length() {
        let body = snapshot(70_000);
        for buffered in [0, 5, 69_999] {
            for sizes in [&[1, 7, 40][..], &[65536], &[4096, 13]] {
                let mut wire = body.clone();
                wire.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
                let (head, rest) = wire.split_at(buffered);
                let payload = SyncPayload::new(
                    pieces(rest.to_vec(), sizes),
                    PayloadEnd::Length(body.len() as u64),
                    head,
                    "test".into(),
                );
                assert!(read_all(payload, 8192).await.unwrap() == body);
            }
        }
    }

    #[tokio::test]
    async fn a_connection_closed_early_is_an_error_in_both_forms() {
        let body = snapshot(10_000);
        for end in [PayloadEnd::Mark(MARK.to_vec()), PayloadEnd::Length(20_000)] {
            for chunk in [100, 65536] {
                let end = match &end {
                    PayloadEnd::Mark(m) => PayloadEnd::Mark(m.clone()),
                    PayloadEnd::Length(n) => PayloadEnd::Length(*n),
                };
                let payload =
                    SyncPayload::new(pieces(body.clone(), &[999]), end, &[], "test".into());
                let e = read_all(payload, chunk).await.unwrap_err();
                assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
                assert!(e.to_string().contains("closed the connection"), "{e}");
            }
        }
    }
}
