//! Files: directory trees streamed as one PAX tar archive, with no temporary archive.
//!
//! The `tar` crate writes the archive on a blocking thread into the async pipeline (a bounded
//! pipe), entry by entry in the order of [`crate::tree`], while the fingerprint is computed
//! from the same bytes. A file that changes while it is read is recorded as a warning (a
//! failure with `strict = true`): its size and modification time are compared before and after.
//! A file that shrank is padded with zeros to the size its header announced (the archive stays
//! readable), and is always reported.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ignore::gitignore::Gitignore;
use sha2::{Digest as _, Sha256};
use tokio_util::io::SyncIoBridge;

use crate::catalog::{FilesFingerprint, Fingerprint, SourceInfo};
use crate::config::FilesJob;
use crate::error::{Error, ErrorKind, Result};
use crate::source::{BoxFuture, Capture, CaptureEnd, CaptureInfo, Finished, Source};
use crate::tree::{self, Entry, FingerprintBuilder, Kind};

/// The pipe between the archive writer and the pipeline.
const PIPE_BYTES: usize = 1024 * 1024;
/// Warnings kept in the manifest; the rest are counted.
const MAX_WARNINGS: usize = 100;

impl Source for FilesJob {
    async fn start(&self) -> Result<Capture> {
        for path in &self.paths {
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::config(format!(
                        "{} is not a directory; a files job backs up directories",
                        path.display()
                    ))
                    .with_hint("name the folder that holds it in paths"))
                }
                Err(e) => {
                    return Err(Error::source_failed(format!(
                        "cannot read {}: {e}",
                        path.display()
                    ))
                    .with_hint("check that the volume is mounted and that this user may read it"))
                }
            }
            std::fs::read_dir(path).map_err(|e| {
                Error::source_failed(format!("cannot list {}: {e}", path.display()))
                    .with_hint("this user needs read and execute permission on it")
            })?;
        }
        let estimating = self.clone();
        let size_estimate = tokio::task::spawn_blocking(move || estimate_size(&estimating))
            .await
            .ok()
            .flatten();
        let (writer, reader) = tokio::io::duplex(PIPE_BYTES);
        let stop = Arc::new(AtomicBool::new(false));
        let job = self.clone();
        let stopped = stop.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut out = SyncIoBridge::new(writer);
            let written = write_archive(&job, &mut out, &stopped);
            // The pipe closes here: the pipeline sees the end of the stream.
            let _ = out.shutdown();
            written
        });
        Ok(Capture {
            stream: Box::new(reader),
            info: CaptureInfo {
                engine: "files",
                consistent_at: chrono::Utc::now(),
                dump_format: "tar",
                extension: "tar",
                description: format!("files under {}", self.describe()),
                size_estimate,
            },
            end: Box::new(FilesEnd {
                task,
                stop,
                job: self.clone(),
            }),
        })
    }
}

/// The end of a files capture: the writer thread's verdict.
struct FilesEnd {
    task: tokio::task::JoinHandle<Result<Written>>,
    stop: Arc<AtomicBool>,
    job: FilesJob,
}

impl CaptureEnd for FilesEnd {
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<Finished>> {
        Box::pin(async move {
            let written = self
                .task
                .await
                .map_err(|e| Error::source_failed(format!("the archive writer stopped: {e}")))??;
            if self.job.strict && !written.warnings.is_empty() {
                return Err(Error::source_failed(format!(
                    "{} (strict = true)",
                    written.warnings.join("; ")
                ))
                .with_hint("nothing was committed; run the backup when the files are quiet, or drop strict to record such files as warnings"));
            }
            for w in &written.warnings {
                tracing::warn!("{w}");
            }
            Ok(Finished {
                consistent_at: None,
                fingerprint: Fingerprint::Files(written.fingerprint),
                source: SourceInfo {
                    url: self.job.describe(),
                    server_version: String::new(),
                    databases: self
                        .job
                        .paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect(),
                    dump_tool: format!("lifeboat {} (PAX tar)", env!("CARGO_PKG_VERSION")),
                    server_clock_at: None,
                },
                warnings: written.warnings,
                companions: Vec::new(),
            })
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.stop.store(true, Ordering::Relaxed);
            let _ = self.task.await;
        })
    }
}

struct Written {
    fingerprint: FilesFingerprint,
    warnings: Vec<String>,
}

/// The entries under `root` in archive order, without the excluded ones. Depth 0 is the root
/// itself: `./` with one path (its mode and time, restored onto the target), the folder `name/`
/// with several.
fn walk<'a>(
    root: &Path,
    excluded: &'a Gitignore,
) -> impl Iterator<Item = walkdir::Result<walkdir::DirEntry>> + 'a {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(0)
        .sort_by(tree::sibling_order)
        .into_iter()
        .filter_entry(move |e| {
            e.depth() == 0
                || !excluded
                    .matched(e.path(), e.file_type().is_dir())
                    .is_ignore()
        })
}

/// About how long the tar of the job's trees will be (per entry a header and a PAX header with
/// its block, contents in 512-byte blocks), for the progress line's total: a walk of the metadata only, given up after
/// [`ESTIMATE_WALK_LIMIT`] (a tree that large shows its progress without a total).
fn estimate_size(job: &FilesJob) -> Option<u64> {
    let started = std::time::Instant::now();
    let mut total = 1024u64;
    for root in &job.paths {
        let excluded = crate::tree::matcher(root, &job.exclude).ok()?;
        for entry in walk(root, &excluded) {
            if started.elapsed() > ESTIMATE_WALK_LIMIT {
                return None;
            }
            let Ok(entry) = entry else { continue };
            total += 3 * 512;
            if entry.file_type().is_file() {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                total += len.div_ceil(512) * 512;
            }
        }
    }
    Some(total)
}

/// How long [`estimate_size`] may walk.
const ESTIMATE_WALK_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One archive over every path of the job.
fn write_archive(job: &FilesJob, out: &mut dyn Write, stop: &AtomicBool) -> Result<Written> {
    let mut builder = tar::Builder::new(out);
    let mut state = ArchiveState::default();
    // With several paths, each is a folder named after it, in the archive's order.
    let mut roots: Vec<(&PathBuf, Option<Vec<u8>>)> = job
        .paths
        .iter()
        .map(|p| {
            let prefix = (job.paths.len() > 1).then(|| {
                p.file_name()
                    .map(|n| n.as_bytes().to_vec())
                    .unwrap_or_default()
            });
            (p, prefix)
        })
        .collect();
    roots.sort_by(|a, b| {
        let key = |p: &Option<Vec<u8>>| {
            p.clone().map(|mut k| {
                k.push(b'/');
                k
            })
        };
        key(&a.1).cmp(&key(&b.1))
    });
    for (root, prefix) in roots {
        let excluded = crate::tree::matcher(root, &job.exclude).map_err(Error::config)?;
        for entry in walk(root, &excluded) {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::new(ErrorKind::Cancelled, "the archive was stopped"));
            }
            let entry = entry.map_err(|e| {
                Error::source_failed(format!(
                    "cannot read the tree under {}: {e}",
                    root.display()
                ))
            })?;
            let rel = entry.path().strip_prefix(root).unwrap_or(Path::new(""));
            let mut name = prefix.clone().unwrap_or_default();
            if !rel.as_os_str().is_empty() {
                if !name.is_empty() {
                    name.push(b'/');
                }
                name.extend_from_slice(rel.as_os_str().as_bytes());
            }
            state.append(&mut builder, entry.path(), &name)?;
        }
    }
    builder
        .into_inner()
        .and_then(|w| w.flush())
        .map_err(pipe_error)?;
    let mut warnings = state.warnings;
    if state.more_warnings > 0 {
        warnings.push(format!("and {} more such warnings", state.more_warnings));
    }
    Ok(Written {
        fingerprint: state.fingerprint.finish(),
        warnings,
    })
}

fn pipe_error(e: std::io::Error) -> Error {
    Error::source_failed(format!("writing the archive into the pipeline failed: {e}"))
}

#[derive(Default)]
struct ArchiveState {
    fingerprint: FingerprintBuilder,
    /// The archive name of each multiply linked file met so far, by (device, inode).
    first_names: HashMap<(u64, u64), Vec<u8>>,
    warnings: Vec<String>,
    more_warnings: usize,
}

impl ArchiveState {
    fn warn(&mut self, text: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(text);
        } else {
            self.more_warnings += 1;
        }
    }

    fn append(
        &mut self,
        builder: &mut tar::Builder<&mut dyn Write>,
        path: &Path,
        name: &[u8],
    ) -> Result<()> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            // Removed between the listing and now: not in the snapshot, and said so.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.warn(format!(
                    "{} vanished while the tree was read",
                    path.display()
                ));
                return Ok(());
            }
            Err(e) => {
                return Err(Error::source_failed(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let mode = meta.mode() & 0o7777;
        let mut header = tar::Header::new_ustar();
        header.set_mode(mode);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mtime(meta.mtime().max(0) as u64);
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        if meta.mtime_nsec() != 0 {
            pax.push((
                "mtime",
                format!("{}.{:09}", meta.mtime(), meta.mtime_nsec()).into_bytes(),
            ));
        }
        let ft = meta.file_type();
        let (kind, link, content) = if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            (Kind::Directory, None, None)
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| {
                Error::source_failed(format!("cannot read the link {}: {e}", path.display()))
            })?;
            header.set_entry_type(tar::EntryType::Symlink);
            (
                Kind::Symlink,
                Some(target.as_os_str().as_bytes().to_vec()),
                None,
            )
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            match self.first_names.get(&key) {
                Some(first) if meta.nlink() > 1 => {
                    header.set_entry_type(tar::EntryType::Link);
                    (Kind::HardLink, Some(first.clone()), None)
                }
                _ => {
                    if meta.nlink() > 1 {
                        self.first_names.insert(key, name.to_vec());
                    }
                    header.set_entry_type(tar::EntryType::Regular);
                    (Kind::File, None, Some(meta.len()))
                }
            }
        } else {
            self.warn(format!(
                "{} is not a file, directory or symlink (a socket, FIFO or device) and was left out",
                path.display()
            ));
            return Ok(());
        };
        // Names and link targets that do not fit the ustar fields go in PAX records.
        let mut tar_name = if name.is_empty() {
            b".".to_vec()
        } else {
            name.to_vec()
        };
        if kind == Kind::Directory {
            tar_name.push(b'/');
        }
        if header
            .set_path(std::ffi::OsStr::from_bytes(&tar_name))
            .is_err()
            || tar_name.len() > 100
        {
            pax.push(("path", tar_name.clone()));
            let short: Vec<u8> = tar_name.iter().copied().take(99).collect();
            header
                .set_path(
                    std::ffi::OsStr::from_bytes(&short)
                        .to_string_lossy()
                        .as_ref(),
                )
                .or_else(|_| header.set_path("pax-long-name"))
                .map_err(|e| {
                    Error::source_failed(format!("cannot name {}: {e}", path.display()))
                })?;
        }
        if let Some(link) = &link {
            if link.len() > 100
                || header
                    .set_link_name(std::ffi::OsStr::from_bytes(link))
                    .is_err()
            {
                pax.push(("linkpath", link.clone()));
                header.set_link_name("pax-long-link").map_err(|e| {
                    Error::source_failed(format!("cannot name {}: {e}", path.display()))
                })?;
            }
        }
        let size = content.unwrap_or(0);
        if size >= 0o77777777777 {
            pax.push(("size", size.to_string().into_bytes()));
        }
        header.set_size(size);
        header.set_cksum();
        if !pax.is_empty() {
            builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_slice())))
                .map_err(pipe_error)?;
        }
        let mut sha = None;
        match content {
            None => builder
                .append(&header, std::io::empty())
                .map_err(pipe_error)?,
            Some(size) => {
                let mut reader = FileContent::open(path, size)?;
                builder
                    .append(&header, &mut reader)
                    .map_err(|e| reader.error.take().unwrap_or_else(|| pipe_error(e)))?;
                let (digest, short) = reader.finish();
                sha = Some(digest);
                if short {
                    self.warn(format!(
                        "{} shrank while it was read; its missing bytes were stored as zeros",
                        path.display()
                    ));
                } else if let Ok(after) = std::fs::symlink_metadata(path) {
                    if after.len() != meta.len()
                        || after.mtime() != meta.mtime()
                        || after.mtime_nsec() != meta.mtime_nsec()
                    {
                        self.warn(format!(
                            "{} changed while it was read; the snapshot may hold a mix of old and new content",
                            path.display()
                        ));
                    }
                }
            }
        }
        if name.is_empty() {
            // The root is the restore target itself, not an entry of the tree.
            return Ok(());
        }
        self.fingerprint.add(&Entry {
            path: name,
            kind,
            mode,
            size,
            sha256: sha,
            link: link.as_deref(),
        });
        Ok(())
    }
}

/// Exactly `size` bytes of a file, hashed: zeros after an early end (the header announced the
/// size), nothing after it (a file that grew is cut where it was measured).
struct FileContent {
    file: std::fs::File,
    left: u64,
    short: bool,
    sha: Sha256,
    path: PathBuf,
    error: Option<Error>,
}

impl FileContent {
    fn open(path: &Path, size: u64) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| {
            Error::source_failed(format!("cannot open {}: {e}", path.display()))
                .with_hint("this user needs read permission on every file of the tree")
        })?;
        Ok(FileContent {
            file,
            left: size,
            short: false,
            sha: Sha256::new(),
            path: path.to_path_buf(),
            error: None,
        })
    }

    fn finish(self) -> ([u8; 32], bool) {
        (self.sha.finalize().into(), self.short)
    }
}

impl Read for FileContent {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = out.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = if self.short {
            out[..want].fill(0);
            want
        } else {
            match self.file.read(&mut out[..want]) {
                Ok(0) => {
                    self.short = true;
                    out[..want].fill(0);
                    want
                }
                Ok(n) => n,
                Err(e) => {
                    self.error = Some(Error::source_failed(format!(
                        "cannot read {}: {e}",
                        self.path.display()
                    )));
                    return Err(e);
                }
            }
        };
        self.sha.update(&out[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_size_estimate_is_close_to_the_archive_written() {
        let root = std::env::temp_dir().join(format!("lifeboat-estimate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        for (i, len) in [0usize, 1, 511, 512, 513, 70_000].into_iter().enumerate() {
            std::fs::write(root.join(format!("a/f{i}")), vec![7u8; len]).unwrap();
        }
        std::fs::write(root.join("a/b/skip.tmp"), vec![1u8; 100_000]).unwrap();
        let job = FilesJob {
            paths: vec![root.clone()],
            exclude: vec!["*.tmp".into()],
            strict: false,
        };
        let estimate = estimate_size(&job).unwrap();
        let mut archive = Vec::new();
        write_archive(&job, &mut archive, &AtomicBool::new(false)).unwrap();
        let written = archive.len() as u64;
        std::fs::remove_dir_all(&root).unwrap();
        // Headers, contents in blocks, the end marker; excluded files are not counted.
        assert!(
            estimate.abs_diff(written) * 10 <= written,
            "estimate {estimate}, archive {written}"
        );
    }
}
