//! `--mode file`: the verified dump written as a file (for a stopped Redis to load at start, a
//! manual pg_restore, mongorestore --archive).
//! It appears under its name only when complete: written beside it, synced, checked for size,
//! renamed, and the folder synced.

use std::path::Path;

use tokio::io::AsyncWriteExt;

use super::{Applied, RestoreOptions, SinkPlan, Target, TargetState};
use crate::catalog::Manifest;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Keys, RawSink};
use crate::readback::read_snapshot;
use crate::store::Store;

/// The plan of every engine's `--mode file`: no other flag, a path that may be written; `what`
/// the file is, `safety` how it is written and used.
pub fn plan(
    snapshot: &Manifest,
    options: &RestoreOptions,
    to: &str,
    what: &str,
    safety: String,
) -> Result<SinkPlan> {
    super::refuse_choices(snapshot, options, &[super::Choice::File])?;
    let path = std::path::PathBuf::from(to);
    check_target(&path, options.clean)?;
    Ok(SinkPlan {
        target: Target::Path(path),
        target_state: TargetState {
            server_version: what.into(),
            objects: 0,
        },
        notes: vec![("safety", safety)],
    })
}

/// Refuses a path that exists (unless `overwrite`) or whose folder does not.
pub fn check_target(path: &Path, overwrite: bool) -> Result<()> {
    if path.exists() && !overwrite {
        return Err(
            Error::new(ErrorKind::Refused, format!("{} exists", path.display())).with_hint(
                "stop the server, move the old file aside, or add --clean to replace it",
            ),
        );
    }
    let folder = folder_of(path);
    if !folder.is_dir() {
        return Err(Error::config(format!(
            "{} is not a directory, so {} cannot be written",
            folder.display(),
            path.display()
        )));
    }
    Ok(())
}

fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes the snapshot's raw dump to `path` once both digests match.
pub async fn write_verified<S: Store>(
    store: &S,
    keys: &Keys,
    manifest: &Manifest,
    path: &Path,
    overwrite: bool,
) -> Result<Applied> {
    check_target(path, overwrite)?;
    let temp = path.with_file_name(format!(
        ".{}.lifeboat-tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dump".into())
    ));
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::new(
            ErrorKind::Sink,
            format!("cannot {what} {}: {e}", p.display()),
        )
    };
    let file = tokio::fs::File::create(&temp)
        .await
        .map_err(|e| io("create", &temp, e))?;
    let mut sink = FileSink(file);
    let written = match read_snapshot(store, manifest, keys, &mut sink).await {
        Ok(r) => match r.sink_error {
            None => sink.commit(r.raw_bytes).await.map(|_| r),
            Some(e) => Err(e),
        },
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
    };
    let read = match written {
        Ok(r) => r,
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(io("write", &temp, e));
        }
    };
    tokio::fs::rename(&temp, path)
        .await
        .map_err(|e| io("rename into place", path, e))?;
    let folder = async {
        tokio::fs::File::open(folder_of(path))
            .await?
            .sync_all()
            .await
    };
    folder
        .await
        .map_err(|e| io("fsync the folder of", path, e))?;
    Ok(Applied {
        stored_bytes: read.stored_bytes,
        raw_bytes: read.raw_bytes,
        notes: Vec::new(),
    })
}

struct FileSink(tokio::fs::File);

impl FileSink {
    /// Makes what was written durable and checks that all of it reached the file. tokio's
    /// `File` writes in a background thread: without the `flush`, the error of the last write
    /// (a full disk) is never seen and `sync_all` succeeds on a truncated file.
    async fn commit(&mut self, expected: u64) -> std::io::Result<()> {
        self.0.flush().await?;
        self.0.sync_all().await?;
        let len = self.0.metadata().await?.len();
        if len != expected {
            return Err(std::io::Error::other(format!(
                "the file has {len} bytes, the snapshot {expected}"
            )));
        }
        Ok(())
    }
}

impl RawSink for FileSink {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.0.write_all(chunk).await
    }
}
