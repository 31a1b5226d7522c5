//! A source for unit tests: it hands out given bytes, then gives a given verdict (or records
//! that it was aborted). No server needed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::Utc;
use tokio::io::AsyncRead;

use super::{BoxFuture, Capture, CaptureEnd, CaptureInfo, Finished};
use crate::catalog::{Fingerprint, PgFingerprint, SourceInfo};
use crate::error::{Error, Result};

/// A source that hands out `bytes`, then gives `verdict` (or is aborted).
struct FakeEnd {
    verdict: Result<(), String>,
    aborted: Arc<AtomicBool>,
}

impl CaptureEnd for FakeEnd {
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<Finished>> {
        Box::pin(async move {
            self.verdict.map_err(Error::source_failed)?;
            Ok(Finished::new(
                Fingerprint::Postgres(PgFingerprint::default()),
                SourceInfo {
                    url: "fake://".into(),
                    server_version: "1".into(),
                    databases: vec![],
                    dump_tool: "fake".into(),
                    server_clock_at: None,
                },
            ))
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.aborted.store(true, Ordering::SeqCst);
        Box::pin(async {})
    }
}

/// A capture of `stream` whose end reports `verdict`; the flag turns true when it is aborted.
pub fn capture(
    stream: Box<dyn AsyncRead + Send + Unpin>,
    verdict: Result<(), String>,
) -> (Capture, Arc<AtomicBool>) {
    let aborted = Arc::new(AtomicBool::new(false));
    let capture = Capture {
        stream,
        info: CaptureInfo {
            engine: "postgres",
            consistent_at: Utc::now(),
            dump_format: "pg_custom",
            extension: "pgdump",
            description: "a fake source".into(),
            size_estimate: None,
        },
        end: Box::new(FakeEnd {
            verdict,
            aborted: aborted.clone(),
        }),
    };
    (capture, aborted)
}
