//! Redis: a native RDB capture over the replication protocol, no redis-cli.
//!
//! Lifeboat connects as a replica would: AUTH (user and password from the URL), `REPLCONF
//! rdb-only 1` (Redis 7+: send the snapshot and nothing after it; older servers refuse it and
//! are read the same way), `REPLCONF capa eof` (the diskless form is welcome), then `SYNC`. The server answers with newline keep-alives while it
//! forks, then the snapshot in one of two forms: `$<length>` and that many bytes (a snapshot
//! written to disk first), or `$EOF:<40-byte mark>` and bytes up to that mark (diskless). The
//! capture hands back exactly the RDB bytes as a stream; it never touches the disk.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::client::resp::Connection;
use crate::config::RedisMode;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretUrl;

mod payload;
mod scan;

use payload::{PayloadEnd, SyncPayload, EOF_MARK_LEN};

/// A snapshot being received.
pub struct RedisCapture {
    /// Exactly the RDB file's bytes.
    pub stream: Box<dyn AsyncRead + Send + Unpin>,
    /// `redis_version` from INFO.
    pub server_version: String,
    /// How it was taken.
    pub kind: CaptureKind,
    /// About how large the data set is (`INFO memory`), for the progress line's total.
    pub size_estimate: Option<u64>,
}

/// How the snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureKind {
    /// SYNC, the server wrote the snapshot to its disk first.
    Sync,
    /// SYNC, streamed from the server's fork (`$EOF:` form).
    SyncDiskless,
    /// SCAN + DUMP + PTTL per key: every key as it was when read, not one instant.
    Scan,
}

impl CaptureKind {
    /// The manifest's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureKind::Sync => "sync",
            CaptureKind::SyncDiskless => "sync-diskless",
            CaptureKind::Scan => "scan",
        }
    }

    /// Whether the snapshot holds one instant (SYNC) or keys read over time (SCAN).
    pub fn point_in_time(self) -> bool {
        self != CaptureKind::Scan
    }

    /// In words, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            CaptureKind::Sync => "native SYNC (disk payload)",
            CaptureKind::SyncDiskless => "native SYNC (diskless payload)",
            CaptureKind::Scan => "SCAN + DUMP (not point in time)",
        }
    }
}

/// Starts a capture as `mode` says: `auto` tries SYNC and falls back to SCAN when the server
/// refuses it (managed services often do), saying so.
pub async fn start(url: &SecretUrl, mode: RedisMode) -> Result<RedisCapture> {
    match mode {
        RedisMode::Scan => scan::start(url).await,
        RedisMode::Sync => match start_sync(url).await? {
            Sync::Started(c) => Ok(c),
            Sync::Refused(e) => Err(e),
        },
        RedisMode::Auto => match start_sync(url).await? {
            Sync::Started(c) => Ok(c),
            Sync::Refused(e) => {
                tracing::warn!(
                    "{}; capturing with SCAN + DUMP instead (not a point-in-time snapshot).",
                    e.message()
                );
                scan::start(url).await
            }
        },
    }
}

/// The SYNC capture only (tests and `mode = "sync"`).
pub async fn start_capture(url: &SecretUrl) -> Result<RedisCapture> {
    match start_sync(url).await? {
        Sync::Started(c) => Ok(c),
        Sync::Refused(e) => Err(e),
    }
}

enum Sync {
    Started(RedisCapture),
    /// The server answered SYNC with an error (unknown command, NOPERM, ...).
    Refused(crate::error::Error),
}

async fn start_sync(url: &SecretUrl) -> Result<Sync> {
    let mut conn = Connection::open(url, ErrorKind::Source).await?;
    let size_estimate = conn.dataset_bytes().await;
    // Older servers do not know rdb-only; they then stream commands after the snapshot,
    // which the capture never reads.
    let _ = conn.command(&[b"REPLCONF", b"rdb-only", b"1"]).await?;
    // Announcing the EOF-mark capability lets a server with repl-diskless-sync stream the
    // snapshot straight from its fork, without writing it to its own disk first.
    let _ = conn.command(&[b"REPLCONF", b"capa", b"eof"]).await?;
    conn.send(b"*1\r\n$4\r\nSYNC\r\n").await?;
    // Keep-alive newlines arrive while the server forks and writes the snapshot.
    let header = loop {
        let line = conn.line().await?;
        if !line.is_empty() {
            break line;
        }
    };
    if let Some(err) = header.strip_prefix('-') {
        return Ok(Sync::Refused(conn.error(format!("SYNC was refused: {err}")).with_hint(
            "managed services often refuse SYNC (unknown command, NOPERM); allow the replication commands for this user, or use mode = \"scan\"",
        )));
    }
    let Some(rest) = header.strip_prefix('$') else {
        return Err(conn.error(format!("unexpected reply to SYNC: {header:?}")));
    };
    let (end, diskless) = if let Some(mark) = rest.strip_prefix("EOF:") {
        if mark.len() != EOF_MARK_LEN {
            return Err(conn.error(format!("malformed snapshot header {header:?}")));
        }
        (PayloadEnd::Mark(mark.as_bytes().to_vec()), true)
    } else {
        let len: u64 = rest
            .parse()
            .map_err(|_| conn.error(format!("malformed snapshot header {header:?}")))?;
        (PayloadEnd::Length(len), false)
    };
    // The payload is read from the socket itself; what the header's reader already holds
    // comes first.
    let buffered = conn.io.buffer().to_vec();
    Ok(Sync::Started(RedisCapture {
        size_estimate,
        server_version: conn.server_version.clone(),
        kind: if diskless {
            CaptureKind::SyncDiskless
        } else {
            CaptureKind::Sync
        },
        stream: Box::new(SyncPayload::new(
            conn.io.into_inner(),
            end,
            &buffered,
            url.without_password(),
        )),
    }))
}

/// Where [`CheckedRdb`] leaves the stream's summary once the whole RDB file has passed and its
/// checksum matched.
#[derive(Clone, Default)]
pub struct SummarySlot(std::sync::Arc<std::sync::Mutex<Option<lifeboat_rdb::Summary>>>);

impl SummarySlot {
    /// The summary, once the whole stream has passed (taken once).
    pub fn take(&self) -> Option<lifeboat_rdb::Summary> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// Passes a stream through while reading it as RDB: keys are counted per database and type,
/// and a stream that is damaged, truncated or fails its CRC64 becomes a read error, so the
/// backup fails and commits nothing.
pub struct CheckedRdb<R> {
    inner: R,
    reader: Option<lifeboat_rdb::RdbReader>,
    slot: SummarySlot,
}

impl<R> CheckedRdb<R> {
    /// Wraps `inner`; the slot receives the summary at the end of a valid stream.
    pub fn new(inner: R) -> (Self, SummarySlot) {
        let slot = SummarySlot::default();
        (
            CheckedRdb {
                inner,
                reader: Some(lifeboat_rdb::RdbReader::counting()),
                slot: slot.clone(),
            },
            slot,
        )
    }
}

fn damaged(e: lifeboat_rdb::RdbError) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the snapshot stream is not a valid RDB file: {e}"),
    )
}

impl<R: AsyncRead + Unpin> AsyncRead for CheckedRdb<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = out.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, out) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let new = &out.filled()[before..];
        if new.is_empty() {
            // End of stream: the file must be complete and its checksum right.
            if let Some(reader) = this.reader.take() {
                let summary = reader.finish(&mut |_| {}).map_err(damaged)?;
                if let Ok(mut slot) = this.slot.0.lock() {
                    *slot = Some(summary);
                }
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(reader) = this.reader.as_mut() {
            reader.feed(new, &mut |_| {}).map_err(damaged)?;
        }
        Poll::Ready(Ok(()))
    }
}

/// The source's `DEBUG DIGEST` before and after a capture (job setting `debug-digest`): the same
/// digest twice means no key changed while the snapshot was taken, so it describes the snapshot
/// and a drill can compare a restored copy with it. Each digest blocks the server while it runs.
pub struct DigestWatch {
    conn: Connection,
    before: String,
}

impl DigestWatch {
    /// Takes the digest before the capture.
    pub async fn start(url: &SecretUrl) -> Result<DigestWatch> {
        let mut conn = Connection::open(url, ErrorKind::Source).await?;
        let before = conn.debug_digest().await.map_err(|e| {
            e.with_hint("allow DEBUG on the source (enable-debug-command yes, or local for a local connection) or remove debug-digest from the job")
        })?;
        Ok(DigestWatch { conn, before })
    }

    /// The digest, if it did not change; a failure here only costs the digest.
    pub async fn finish(mut self) -> Option<String> {
        match self.conn.debug_digest().await {
            Ok(after) if after == self.before => Some(after),
            Ok(_) => {
                tracing::info!(
                    "Keys changed while the snapshot was taken, so no DEBUG DIGEST is recorded for it (drills compare key counts)."
                );
                None
            }
            Err(e) => {
                tracing::warn!(
                    "{}; no DEBUG DIGEST is recorded for this snapshot.",
                    e.message()
                );
                None
            }
        }
    }
}

impl crate::source::Source for crate::config::RedisJob {
    /// Opens the replication stream (or a SCAN capture) and reads the RDB as it passes.
    async fn start(&self) -> Result<crate::source::Capture> {
        // Before SYNC, so that the same digest after the transfer means it describes the
        // snapshot.
        let digest_watch = if self.debug_digest {
            Some(DigestWatch::start(&self.url).await?)
        } else {
            None
        };
        // The server forks for the snapshot right after SYNC: this is its point in time.
        let consistent_at = chrono::Utc::now();
        let capture = start(&self.url, self.mode).await?;
        let (checked, summary) = CheckedRdb::new(capture.stream);
        Ok(crate::source::Capture {
            stream: Box::new(checked),
            info: crate::source::CaptureInfo {
                engine: "redis",
                consistent_at,
                dump_format: "redis_rdb",
                extension: "rdb",
                description: format!(
                    "Redis {} at {}, {}",
                    capture.server_version,
                    self.url,
                    capture.kind.describe()
                ),
                size_estimate: capture.size_estimate,
            },
            end: Box::new(RedisEnd {
                summary,
                digest_watch,
                kind: capture.kind,
                server_version: capture.server_version,
                url: self.url.clone(),
                used_memory: capture.size_estimate,
            }),
        })
    }
}

/// The end of a Redis capture: the RDB's end marker and checksum (checked as the stream
/// passed), the key counts, and the digest watch.
pub struct RedisEnd {
    summary: SummarySlot,
    digest_watch: Option<DigestWatch>,
    kind: CaptureKind,
    server_version: String,
    url: SecretUrl,
    /// The source's dataset memory when the capture started.
    used_memory: Option<u64>,
}

impl crate::source::CaptureEnd for RedisEnd {
    fn finish(
        self: Box<Self>,
    ) -> crate::source::BoxFuture<'static, Result<crate::source::Finished>> {
        Box::pin(self.finish_capture())
    }

    /// Nothing to stop: dropping the stream closed the connection.
    fn abort(self: Box<Self>) -> crate::source::BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

impl RedisEnd {
    async fn finish_capture(self) -> Result<crate::source::Finished> {
        let Some(summary) = self.summary.take() else {
            return Err(Error::source_failed(format!(
                "the snapshot from {} ended without an RDB end marker",
                self.url
            )));
        };
        let debug_digest = match self.digest_watch {
            Some(watch) => watch.finish().await,
            None => None,
        };
        let fingerprint = crate::catalog::RedisFingerprint {
            rdb_version: summary.rdb_version,
            capture: self.kind.as_str().into(),
            point_in_time: self.kind.point_in_time(),
            keys: crate::catalog::RedisFingerprint::keys_from(&summary.keys),
            functions: summary.functions,
            rdb_crc64: summary.crc64.unwrap_or(0),
            debug_digest,
            used_memory_dataset: self.used_memory,
        };
        let source = crate::catalog::SourceInfo {
            url: self.url.to_string(),
            server_version: self.server_version,
            databases: summary.keys.keys().map(|db| format!("db{db}")).collect(),
            dump_tool: format!("lifeboat {}", self.kind.describe()),
            server_clock_at: None,
        };
        Ok(crate::source::Finished::new(
            crate::catalog::Fingerprint::Redis(fingerprint),
            source,
        ))
    }
}
