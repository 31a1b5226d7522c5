//! A store in a local directory.
//!
//! Writes go to a hidden temporary name in the destination folder, are fsynced, renamed into
//! place and the folder fsynced, so a crash leaves either the old state or the complete object,
//! never a partial one under the real name. Hidden names (starting with `.`) are never listed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::{ObjectKey, ObjectMeta, ObjectReader, ObjectWriter, Store};
use crate::error::{Error, ErrorKind, Result, ResultExt};

/// Marks in-progress files; such names are hidden from listings.
const TEMP_MARK: &str = ".lifeboat-tmp-";

/// A repository in a directory: objects are files, written to a temporary name, synced,
/// then renamed into place.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating if needed) a directory store.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        // A path that is (or passes through) a file is a mistake in the configuration, not a
        // failure of the store (exit 2, not 1).
        let not_a_directory = |what: String| {
            Error::config(format!(
                "the store {} cannot be a directory: {what}",
                root.display()
            ))
            .with_hint("--repo (or [store] url) names a directory for the repository, or s3://bucket/prefix; pass another path")
        };
        if root.exists() && !root.is_dir() {
            return Err(not_a_directory("a file of that name exists".into()));
        }
        std::fs::create_dir_all(&root).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotADirectory
                || e.kind() == std::io::ErrorKind::AlreadyExists
            {
                return not_a_directory(format!("a part of the path is a file ({e})"));
            }
            Error::store(format!(
                "cannot create the store directory {}: {e}",
                root.display()
            ))
            .with_hint("check the path and its permissions, or pass another --repo")
        })?;
        Ok(LocalStore { root })
    }

    /// Opens a directory store that must already exist (commands that only read never create
    /// anything): a missing path or a file is a configuration error.
    pub fn open_existing(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(LocalStore { root }),
            Ok(_) => Err(Error::config(format!(
                "{} is a file, not a repository directory",
                root.display()
            ))
            .with_hint("pass the repository's directory with --repo")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::config(format!(
                "there is no repository at {}",
                root.display()
            ))
            .with_hint("check --repo (or [store] url); lifeboat-backup creates the repository on its first run")),
            Err(e) => Err(Error::config(format!("cannot open {}: {e}", root.display()))
                .with_hint("check the path and its permissions")),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn temp_path(&self, key: &ObjectKey) -> PathBuf {
        let mut random = [0u8; 4];
        let _ = getrandom::fill(&mut random);
        let path = self.path(key);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        dir.join(format!(
            "{TEMP_MARK}{}-{}",
            hex::encode(random),
            key.file_name()
        ))
    }

    fn io_error(&self, what: &str, path: &Path, e: std::io::Error) -> Error {
        Error::store(format!("cannot {what} {}: {e}", path.display()))
            .with_hint("check free space and permissions of the store directory")
    }
}

/// Removes the folder of one snapshot or verification (`jobs/<job>/<kind>/<id>/`) that holds
/// `path`, if it is empty, so listings stay clean; failure is harmless. The folders above it are
/// shared: another run may be creating a file in them this instant (removing `jobs/<job>/`
/// under a concurrent lock write made that write fail).
fn remove_empty_item_folder(root: &Path, path: &Path) {
    let Some(dir) = path.parent() else { return };
    if dir
        .strip_prefix(root)
        .is_ok_and(|rel| rel.components().count() == 4)
    {
        let _ = std::fs::remove_dir(dir);
    }
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

impl Store for LocalStore {
    type Writer = LocalWriter;

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn create(&self, key: &ObjectKey) -> Result<LocalWriter> {
        let final_path = self.path(key);
        let temp_path = self.temp_path(key);
        if let Some(dir) = final_path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| self.io_error("create the directory", dir, e))?;
        }
        let sink = TempFile::create(&temp_path)
            .await
            .map_err(|e| self.io_error("create", &temp_path, e))?;
        let file = sink.buffered.clone();
        Ok(LocalWriter {
            root: self.root.clone(),
            file: Some(file.clone()),
            sink: Some(sink),
            buffer: WriteBuffer::new(),
            spare: None,
            writing: None,
            temp_path,
            final_path,
            key: key.clone(),
            early_sync: EarlySync {
                file,
                unsynced: 0,
                running: None,
            },
        })
    }

    async fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<()> {
        let mut w = self.create(key).await?;
        w.write_all(bytes)
            .await
            .map_err(|e| self.io_error("write", &w.temp_path, e))?;
        w.finish().await.map(|_| ())
    }

    async fn create_exclusive(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        // Write the content under a temporary name, then hard-link it into place: the link
        // fails if the name exists, and readers never see a half-written object.
        let path = self.path(key);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| self.io_error("create the directory", dir, e))?;
        }
        let temp = self.temp_path(key);
        let (temp_for_write, owned) = (temp.clone(), bytes.to_vec());
        let written = tokio::task::spawn_blocking(move || write_durably(&temp_for_write, &owned))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(self.io_error("write", &temp, e));
        }
        let linked = tokio::fs::hard_link(&temp, &path).await;
        let _ = tokio::fs::remove_file(&temp).await;
        match linked {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    sync_dir(dir)
                        .await
                        .map_err(|e| self.io_error("fsync", dir, e))?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.io_error("create", &path, e)),
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("read", &path, e)),
        }
    }

    async fn get_tagged(&self, key: &ObjectKey) -> Result<Option<(Vec<u8>, String)>> {
        Ok(self.get(key).await?.map(|b| {
            let tag = content_tag(&b);
            (b, tag)
        }))
    }

    /// A compare-and-swap: the check and the rename happen under an exclusive lock of a hidden
    /// file beside the object (`flock` on Unix), so of several writers replacing the same
    /// version exactly one succeeds. The object itself is replaced by a rename, so it exists
    /// throughout and a concurrent `create_exclusive` cannot slip in.
    async fn replace_if(&self, key: &ObjectKey, bytes: &[u8], tag: &str) -> Result<Option<String>> {
        let path = self.path(key);
        let guard_path = path.with_file_name(format!(".{}.cas", key.file_name()));
        let temp = self.temp_path(key);
        let (bytes, tag) = (bytes.to_vec(), tag.to_string());
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let guard = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&guard_path)
                .map_err(|e| store.io_error("open", &guard_path, e))?;
            // Released when `guard` is dropped (closing the file).
            guard
                .lock()
                .map_err(|e| store.io_error("lock", &guard_path, e))?;
            let current = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(store.io_error("read", &path, e)),
            };
            if content_tag(&current) != tag {
                return Ok(None);
            }
            write_durably(&temp, &bytes).map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                store.io_error("write", &temp, e)
            })?;
            std::fs::rename(&temp, &path).map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                store.io_error("rename", &path, e)
            })?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| store.io_error("fsync", dir, e))?;
            }
            drop(guard);
            Ok(Some(content_tag(&bytes)))
        })
        .await
        .map_err(|e| Error::store(format!("the write of {key} stopped: {e}")))?
    }

    async fn open(&self, key: &ObjectKey, offset: u64) -> Result<ObjectReader> {
        let path = self.path(key);
        let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::Integrity
            } else {
                ErrorKind::Store
            };
            Error::new(kind, format!("cannot open {}: {e}", path.display()))
        })?;
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| self.io_error("seek in", &path, e))?;
        }
        Ok(Box::new(file))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>> {
        let path = self.path(key);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                key: key.clone(),
                size: m.len(),
                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("inspect", &path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let start = self.root.join(prefix.trim_end_matches('/'));
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_error("list", &dir, e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| self.io_error("list", &dir, e))?
            {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let meta = entry
                    .metadata()
                    .await
                    .map_err(|e| self.io_error("inspect", &entry.path(), e))?;
                if meta.is_dir() {
                    stack.push(entry.path());
                } else if meta.is_file() {
                    let rel = entry
                        .path()
                        .strip_prefix(&self.root)
                        .map(|p| p.to_string_lossy().replace('\\', "/"))
                        .unwrap_or_default();
                    if let Ok(key) = ObjectKey::new(rel) {
                        out.push(ObjectMeta {
                            key,
                            size: meta.len(),
                            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_error("delete", &path, e)),
        }
        remove_empty_item_folder(&self.root, &path);
        Ok(())
    }

    async fn remove_incomplete(&self, prefix: &str, older_than: Duration) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let now = SystemTime::now();
        let mut stack = vec![self.root.join(prefix.trim_end_matches('/'))];
        while let Some(dir) = stack.pop() {
            let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
                continue;
            };
            while let Ok(Some(entry)) = entries.next_entry().await {
                let Ok(meta) = entry.metadata().await else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(entry.path());
                    continue;
                }
                let is_temp = entry.file_name().to_string_lossy().starts_with(TEMP_MARK);
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                if is_temp && age >= older_than {
                    tokio::fs::remove_file(entry.path())
                        .await
                        .or_kind(ErrorKind::Store, || {
                            format!("cannot remove the leftover {}", entry.path().display())
                        })?;
                    remove_empty_item_folder(&self.root, &entry.path());
                    removed.push(entry.path().display().to_string());
                } else if is_temp {
                    super::report_young_leftover(&entry.path().display().to_string(), age);
                }
            }
        }
        Ok(removed)
    }
}

/// An upload in progress to a [`LocalStore`], written to its temporary file. Bytes are gathered
/// into 1 MiB buffers, each written by a blocking task while the next one fills: one copy on this
/// side and one thread hand-off per MiB (a `BufWriter` over tokio's `File` copied every byte
/// twice).
///
/// On Linux, on a local disk file system, the full buffers are written with `O_DIRECT`, from this
/// process's memory to the disk without a copy into the page cache. That copy, and finding fresh
/// pages for it, was the largest single cost of a backup on this project's machines
/// (`benches/README.md`), and a backup that goes around the page cache leaves it to the database
/// it runs beside. The last, unaligned bytes go through the page cache, as does everything on
/// other file systems (see `direct_writes_suit`).
pub struct LocalWriter {
    /// The store's root, to clean up an empty snapshot folder after an abort.
    root: PathBuf,
    /// The handle the fsyncs use; `None` once finished or aborted.
    file: Option<Arc<std::fs::File>>,
    /// The file as the write tasks use it: away while a write is in flight, `None` after a
    /// failed one.
    sink: Option<TempFile>,
    /// Filling; written when full, on flush and on finish.
    buffer: WriteBuffer,
    /// The other buffer, back from its write and empty.
    spare: Option<WriteBuffer>,
    /// The write in flight; it hands the file and its buffer back.
    writing: Option<JoinHandle<std::io::Result<(TempFile, WriteBuffer)>>>,
    temp_path: PathBuf,
    final_path: PathBuf,
    key: ObjectKey,
    early_sync: EarlySync,
}

/// The size of each write to the file: a multiple of [`DIRECT_ALIGN`].
const WRITE_SIZE: usize = 1024 * 1024;

/// What `O_DIRECT` asks of buffer addresses, file offsets and lengths. 4096 covers the logical
/// block sizes in use (512 and 4096 bytes).
const DIRECT_ALIGN: usize = 4096;

/// Bytes written between background `fdatasync` calls.
const EARLY_SYNC_BYTES: u64 = 64 * 1024 * 1024;

/// A write buffer whose first byte sits on a [`DIRECT_ALIGN`] boundary in memory.
struct WriteBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl WriteBuffer {
    fn new() -> Self {
        let storage = vec![0; WRITE_SIZE + DIRECT_ALIGN];
        let address = storage.as_ptr().addr();
        let start = address.next_multiple_of(DIRECT_ALIGN) - address;
        WriteBuffer {
            storage,
            start,
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn is_full(&self) -> bool {
        self.len == WRITE_SIZE
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends as much of `bytes` as fits; returns how much that was.
    fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(WRITE_SIZE - self.len);
        let at = self.start + self.len;
        self.storage[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }
}

/// The temporary file as the write tasks see it: a direct handle while writes stay aligned, and
/// a buffered one for the rest. Writes name their offset, so the two never disagree on where the
/// file ends.
struct TempFile {
    /// Always `None` where there is no `O_DIRECT`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    direct: Option<std::fs::File>,
    buffered: Arc<std::fs::File>,
    written: u64,
}

impl TempFile {
    /// Creates the file; `O_DIRECT` is asked for on a second handle, so a file system that
    /// refuses it still gets its file.
    async fn create(path: &Path) -> std::io::Result<TempFile> {
        let buffered = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await?
            .into_std()
            .await;
        let want_direct = direct_writes_suit(&buffered);
        Ok(TempFile::with_handles(path, buffered, want_direct).await)
    }

    /// Adds the direct handle to `buffered` if asked for and the file system lets it open.
    async fn with_handles(path: &Path, buffered: std::fs::File, want_direct: bool) -> TempFile {
        let direct = if want_direct {
            open_direct(path).await
        } else {
            None
        };
        TempFile {
            direct,
            buffered: Arc::new(buffered),
            written: 0,
        }
    }

    /// Appends `bytes`: the aligned part direct while that works, the rest through the page
    /// cache (after which direct writes stop: the end of the file is no longer aligned).
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let rest = self.append_direct(bytes)?;
        #[cfg(unix)]
        std::os::unix::fs::FileExt::write_all_at(&*self.buffered, rest, self.written)?;
        // Elsewhere there is no direct handle, and this handle's position is the end.
        #[cfg(not(unix))]
        std::io::Write::write_all(&mut &*self.buffered, rest)?;
        self.written += rest.len() as u64;
        Ok(())
    }

    /// Writes what it can of `bytes` through the direct handle; returns the rest.
    #[cfg(target_os = "linux")]
    fn append_direct<'a>(&mut self, bytes: &'a [u8]) -> std::io::Result<&'a [u8]> {
        use std::os::unix::fs::FileExt;
        let Some(direct) = &self.direct else {
            return Ok(bytes);
        };
        let aligned = bytes.len() - bytes.len() % DIRECT_ALIGN;
        let mut done = 0;
        while done < aligned {
            match direct.write_at(&bytes[done..aligned], self.written) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    self.written += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The file system takes no direct writes after all, or a short write left the
                // offset unaligned: the page cache takes the rest.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    break
                }
                Err(e) => return Err(e),
            }
        }
        if done < bytes.len() {
            self.direct = None;
        }
        Ok(&bytes[done..])
    }

    #[cfg(not(target_os = "linux"))]
    fn append_direct<'a>(&mut self, bytes: &'a [u8]) -> std::io::Result<&'a [u8]> {
        Ok(bytes)
    }
}

/// Whether direct writes suit the file system `file` is on: only the local disk file systems that
/// take them well. On NFS each direct write can be a synchronous round trip (and a commit on the
/// server) per MiB, FUSE and SMB may refuse or emulate them, and tmpfs copies into its pages all
/// the same, so everything else keeps buffered writes.
#[cfg(target_os = "linux")]
fn direct_writes_suit(file: &std::fs::File) -> bool {
    // Magic numbers from linux/magic.h.
    const EXT2_3_4: u32 = 0xEF53;
    const XFS: u32 = 0x5846_5342;
    const BTRFS: u32 = 0x9123_683E;
    rustix::fs::fstatfs(file).is_ok_and(|fs| matches!(fs.f_type as u32, EXT2_3_4 | XFS | BTRFS))
}

#[cfg(not(target_os = "linux"))]
fn direct_writes_suit(_: &std::fs::File) -> bool {
    false
}

/// A second handle on the file at `path`, for direct writes; `None` if the file system refuses.
#[cfg(target_os = "linux")]
async fn open_direct(path: &Path) -> Option<std::fs::File> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)
        .await
        .ok()?;
    Some(file.into_std().await)
}

#[cfg(not(target_os = "linux"))]
async fn open_direct(_: &Path) -> Option<std::fs::File> {
    None
}

/// Writes the file back to disk while it is still being written, one `fdatasync` at a time in
/// a blocking thread, so the fsync that commits it only has the tail left. Without it, a dump of
/// hundreds of MiB sits in the page cache and the commit waits for all of it at once (like
/// PostgreSQL's `*_flush_after` settings). With direct writes it commits the new blocks' metadata
/// as it goes.
struct EarlySync {
    file: Arc<std::fs::File>,
    unsynced: u64,
    running: Option<JoinHandle<std::io::Result<()>>>,
}

impl EarlySync {
    fn wrote(&mut self, n: usize) {
        self.unsynced += n as u64;
        if self.unsynced < EARLY_SYNC_BYTES {
            return;
        }
        if self.running.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        // A failure shows again, and is reported, in the fsync that commits the file.
        self.unsynced = 0;
        let file = self.file.clone();
        self.running = Some(tokio::task::spawn_blocking(move || file.sync_data()));
    }

    async fn wait(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.await;
        }
    }
}

impl LocalWriter {
    fn check_open(&self) -> std::io::Result<()> {
        if self.file.is_none() {
            return Err(std::io::Error::other("the upload was already finished"));
        }
        Ok(())
    }

    /// Waits for the write in flight, if any.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(writing) = self.writing.as_mut() {
            let done = std::task::ready!(Pin::new(writing).poll(cx));
            self.writing = None;
            let (sink, mut buffer) = done.map_err(std::io::Error::other)??;
            buffer.clear();
            self.sink = Some(sink);
            self.spare = Some(buffer);
        }
        Poll::Ready(Ok(()))
    }

    /// Starts writing the filled buffer, once the write before it is done.
    fn poll_submit(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_written(cx))?;
        if self.buffer.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let Some(mut sink) = self.sink.take() else {
            return Poll::Ready(Err(std::io::Error::other(
                "an earlier write to the file failed",
            )));
        };
        let next = self.spare.take().unwrap_or_else(WriteBuffer::new);
        let buffer = std::mem::replace(&mut self.buffer, next);
        self.early_sync.wrote(buffer.len);
        self.writing = Some(tokio::task::spawn_blocking(move || {
            sink.append(buffer.bytes())?;
            Ok((sink, buffer))
        }));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LocalWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.check_open()?;
        if this.buffer.is_full() {
            std::task::ready!(this.poll_submit(cx))?;
        }
        Poll::Ready(Ok(this.buffer.push(buf)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        this.check_open()?;
        std::task::ready!(this.poll_submit(cx))?;
        this.poll_written(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Shutting down only flushes: the object is committed by `finish`, never implicitly.
        self.poll_flush(cx)
    }
}

impl ObjectWriter for LocalWriter {
    async fn finish(mut self) -> Result<ObjectMeta> {
        let temp = self.temp_path.clone();
        let io = |what: &str, e: std::io::Error| {
            Error::store(format!("cannot {what} {}: {e}", temp.display()))
                .with_hint("check free space and permissions of the store directory")
        };
        self.flush().await.map_err(|e| io("write", e))?;
        self.early_sync.wait().await;
        let Some(file) = self.file.take() else {
            return Err(Error::store("the upload was already finished"));
        };
        let size = tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            Ok::<_, std::io::Error>(file.metadata()?.len())
        })
        .await
        .map_err(|e| io("fsync", std::io::Error::other(e)))?
        .map_err(|e| io("fsync", e))?;
        tokio::fs::rename(&self.temp_path, &self.final_path)
            .await
            .map_err(|e| io("rename", e))?;
        if let Some(dir) = self.final_path.parent() {
            sync_dir(dir)
                .await
                .map_err(|e| io("fsync the folder of", e))?;
        }
        Ok(ObjectMeta {
            key: self.key.clone(),
            size,
            modified: SystemTime::now(),
        })
    }

    async fn abort(mut self) -> Result<()> {
        self.file.take();
        match tokio::fs::remove_file(&self.temp_path).await {
            Ok(()) => {
                remove_empty_item_folder(&self.root, &self.temp_path);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::store(format!(
                "cannot remove the unfinished upload {}: {e}",
                self.temp_path.display()
            ))),
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // An unfinished upload is thrown away (cancellation, errors); this never commits.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp_path);
            remove_empty_item_folder(&self.root, &self.temp_path);
        }
    }
}

/// Writes a small file whole and syncs it. Blocking `std::fs` on purpose: tokio's `File`
/// hands writes to a background thread, and `sync_all` without a `flush` first returns before
/// that write's error (ENOSPC) is seen, so a full disk left 0-byte files that looked written.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create_new(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    let len = f.metadata()?.len();
    if len != bytes.len() as u64 {
        return Err(std::io::Error::other(format!(
            "wrote {} bytes but the file has {len}",
            bytes.len()
        )));
    }
    Ok(())
}

/// A directory has no ETags: the SHA-256 of the content stands in for one.
fn content_tag(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn temp_root(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lifeboat-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn writes_of_any_size_are_stored_in_order() {
        let store = LocalStore::open(temp_root("sizes")).unwrap();
        let key = ObjectKey::new("jobs/a/snapshots/x/data.bin").unwrap();
        let data: Vec<u8> = (0..7_500_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = store.create(&key).await.unwrap();
        let mut at = 0;
        // Writes smaller and larger than the 1 MiB write buffer, and a flush in between.
        for (turn, size) in [1, 1_048_575, 2, 3_000_000, 17, 65_536]
            .iter()
            .cycle()
            .enumerate()
        {
            if at == data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            w.write_all(&data[at..end]).await.unwrap();
            at = end;
            if turn == 3 {
                w.flush().await.unwrap();
            }
        }
        let meta = w.finish().await.unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert!(store.get(&key).await.unwrap().unwrap() == data);
        std::fs::remove_dir_all(store.root()).unwrap();
    }

    #[tokio::test]
    async fn full_buffers_go_direct_and_the_rest_through_the_page_cache() {
        let root = temp_root("direct");
        std::fs::create_dir_all(&root).unwrap();
        let path = root.join("file");
        let data: Vec<u8> = (0..3 * WRITE_SIZE as u32 + 12_345)
            .map(|i| (i % 253) as u8)
            .collect();
        // Direct writes asked for whatever the file system, so that this path runs everywhere.
        let handle = std::fs::File::create_new(&path).unwrap();
        let mut file = TempFile::with_handles(&path, handle, true).await;
        #[cfg(target_os = "linux")]
        assert!(
            file.direct.is_some(),
            "{} refused O_DIRECT (ext4, xfs, btrfs, and tmpfs since Linux 6.6 take it)",
            root.display()
        );
        let direct_at_start = file.direct.is_some();
        let mut buffer = WriteBuffer::new();
        assert_eq!(buffer.bytes().as_ptr().addr() % DIRECT_ALIGN, 0);
        assert_eq!(buffer.push(&data), WRITE_SIZE);
        assert!(buffer.is_full());
        file.append(buffer.bytes()).unwrap();
        assert_eq!(
            file.direct.is_some(),
            direct_at_start,
            "a full aligned buffer stays direct"
        );
        // Memory off the alignment: the kernel refuses it direct (EINVAL), the page cache
        // takes it, and direct writes stop there.
        let shifted: Vec<u8> = [0]
            .iter()
            .chain(&data[WRITE_SIZE..2 * WRITE_SIZE])
            .copied()
            .collect();
        let misaligned = &shifted[1..];
        assert_eq!(misaligned.as_ptr().addr() % 2, 1);
        file.append(misaligned).unwrap();
        assert!(file.direct.is_none());
        file.append(&data[2 * WRITE_SIZE..]).unwrap();
        assert_eq!(file.written, data.len() as u64);
        assert!(std::fs::read(&path).unwrap() == data);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The type of the file system `path` is on, from /proc/self/mountinfo: the mount with the
    /// longest mount point that contains it.
    #[cfg(target_os = "linux")]
    fn file_system_type(path: &Path) -> String {
        let path = path.canonicalize().unwrap();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut best = (0, String::new());
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let separator = fields.iter().position(|f| *f == "-").unwrap();
            let mount_point = Path::new(fields[4]);
            let depth = mount_point.components().count();
            if path.starts_with(mount_point) && depth >= best.0 {
                best = (depth, fields[separator + 1].to_string());
            }
        }
        best.1
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn local_disk_file_systems_take_direct_writes() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("lifeboat-direct-check-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let suits = direct_writes_suit(&file);
        std::fs::remove_file(&path).unwrap();
        let kind = file_system_type(&dir);
        let local_disk = ["ext2", "ext3", "ext4", "xfs", "btrfs"].contains(&kind.as_str());
        assert_eq!(suits, local_disk, "{} is on {kind}", dir.display());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn other_file_systems_keep_buffered_writes() {
        let path = std::path::Path::new("/dev/shm")
            .join(format!("lifeboat-direct-check-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let suits = direct_writes_suit(&file);
        std::fs::remove_file(&path).unwrap();
        assert!(!suits, "tmpfs copies into its pages anyway");
        let proc = std::fs::File::open("/proc/self/status").unwrap();
        assert!(!direct_writes_suit(&proc));
    }

    #[tokio::test]
    async fn an_object_is_invisible_until_finished() {
        let store = LocalStore::open(temp_root("visible")).unwrap();
        let key = ObjectKey::new("jobs/a/snapshots/x/data.bin").unwrap();
        let mut w = store.create(&key).await.unwrap();
        w.write_all(b"hello").await.unwrap();
        assert!(store.head(&key).await.unwrap().is_none());
        assert!(store.list("jobs/").await.unwrap().is_empty());
        let meta = w.finish().await.unwrap();
        assert_eq!(meta.size, 5);
        assert_eq!(
            store.get(&key).await.unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        let mut r = store.open(&key, 2).await.unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "llo");
        assert_eq!(store.list("jobs/").await.unwrap().len(), 1);
        store.delete(&key).await.unwrap();
        assert!(store.list("jobs/").await.unwrap().is_empty());
        assert!(
            !store.root().join("jobs/a/snapshots/x").exists(),
            "the empty snapshot folder is removed"
        );
        assert!(
            store.root().join("jobs/a/snapshots").exists(),
            "shared folders stay: concurrent runs create files in them"
        );
    }

    #[tokio::test]
    async fn dropped_and_aborted_uploads_leave_nothing() {
        let root = temp_root("abort");
        let store = LocalStore::open(&root).unwrap();
        let key = ObjectKey::new("jobs/a/x/data").unwrap();
        let mut w = store.create(&key).await.unwrap();
        w.write_all(b"partial").await.unwrap();
        drop(w);
        let mut w = store.create(&key).await.unwrap();
        w.write_all(b"partial").await.unwrap();
        w.abort().await.unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(root.join("jobs/a/x")).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn stale_temporary_files_are_removed() {
        let root = temp_root("stale");
        let store = LocalStore::open(&root).unwrap();
        std::fs::create_dir_all(root.join("jobs/a/s")).unwrap();
        std::fs::write(root.join("jobs/a/s/.lifeboat-tmp-00-data"), b"x").unwrap();
        let kept = store
            .remove_incomplete("jobs/a/", Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(kept.is_empty());
        let removed = store
            .remove_incomplete("jobs/a/", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(removed.len(), 1);
    }

    #[test]
    fn keys_cannot_escape_the_root() {
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a/.hidden"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad}");
        }
    }
}
