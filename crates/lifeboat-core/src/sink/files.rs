//! Files: a tar archive extracted into a staging directory beside the target, on the same file
//! system, and renamed into place only after both digests and the fingerprint match. With
//! `--clean` an existing target is renamed aside first and removed only after success.
//!
//! The archive is read by the `tar` crate on a blocking thread, fed from the async read path
//! through a bounded pipe. Every entry is checked before anything is written for it: absolute
//! paths, `..` components, and entries (or hard links) under a symlink are refused, so nothing
//! is ever written outside the staging directory. Symlinks themselves are data: restored as
//! they were, whatever they point at.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio_util::io::SyncIoBridge;

use super::{
    Applied, Drilled, RestoreOptions, Scratch, Sink, SinkPlan, Surveyed, Target, TargetState,
};
use crate::catalog::{FilesFingerprint, Fingerprint, Manifest};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Keys, RawSink};
use crate::readback::read_snapshot;
use crate::store::Store;
use crate::tree::{self, Entry, FingerprintBuilder, Kind};

const PIPE_BYTES: usize = 1024 * 1024;

/// The files engine's restore side.
pub struct FilesSink;

fn files_fingerprint(snapshot: &Manifest) -> Result<&FilesFingerprint> {
    match &snapshot.fingerprint {
        Fingerprint::Files(f) => Ok(f),
        _ => Err(Error::integrity(format!(
            "snapshot {} is a files backup without a files fingerprint",
            snapshot.id
        ))),
    }
}

/// A unique name beside `path` (same folder, so the same file system), hidden.
fn beside(path: &Path, what: &str) -> PathBuf {
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "restore".into());
    path.with_file_name(format!(".{name}.lifeboat-{what}-{}", hex::encode(random)))
}

fn absolute(to: &str) -> Result<PathBuf> {
    let path = PathBuf::from(to);
    if path.is_absolute() {
        return Ok(path);
    }
    std::env::current_dir()
        .map(|d| d.join(&path))
        .map_err(|e| Error::config(format!("--to {to}: cannot tell the current directory: {e}")))
}

impl Sink for FilesSink {
    fn product(&self) -> &'static str {
        "files"
    }

    async fn plan(
        &self,
        snapshot: &Manifest,
        to: &str,
        options: &RestoreOptions,
    ) -> Result<SinkPlan> {
        super::refuse_choices(snapshot, options, &[])?;
        if to.contains("://") {
            return Err(Error::config(format!(
                "snapshot {} is a files backup; --to must be a directory, got {to}",
                snapshot.id
            ))
            .with_hint("e.g. --to /data/uploads.restored"));
        }
        let target = absolute(to)?;
        let entries = match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(Error::config(format!(
                    "cannot inspect {}: {e}",
                    target.display()
                )))
            }
            Ok(m) if !m.is_dir() => {
                return Err(Error::config(format!(
                    "{} exists and is not a directory",
                    target.display()
                ))
                .with_hint("restore into a directory: a new path, or an empty folder"))
            }
            Ok(_) => std::fs::read_dir(&target)
                .map_err(|e| Error::config(format!("cannot list {}: {e}", target.display())))?
                .count() as i64,
        };
        if entries > 0 && !options.clean {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "the target directory {} is not empty: it holds {}",
                    target.display(),
                    crate::text::counted(entries as u64, "entry")
                ),
            )
            .with_hint("restore into a new or empty directory, or add --clean to replace it (the old one is moved aside and removed only after the restore succeeded)"));
        }
        let mut notes = Vec::new();
        if options.clean && entries > 0 {
            notes.push((
                "--clean",
                format!(
                    "the current directory ({entries} entries) is moved aside, and removed only after success"
                ),
            ));
        }
        notes.push((
            "safety",
            "extracted into a staging directory beside the target, renamed into place only after both digests and the fingerprint match".to_string(),
        ));
        Ok(SinkPlan {
            target: Target::Path(target),
            target_state: TargetState {
                server_version: "directory".into(),
                objects: entries,
            },
            notes,
        })
    }

    async fn apply<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        plan: &SinkPlan,
        options: &RestoreOptions,
    ) -> Result<Applied> {
        let Target::Path(target) = &plan.target else {
            return Err(Error::config("a files restore needs a directory target"));
        };
        let recorded = files_fingerprint(snapshot)?;
        let parent = target.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::sink_failed(format!("cannot create {}: {e}", parent.display())))?;
        let staging = beside(target, "staging");
        std::fs::create_dir(&staging).map_err(|e| {
            Error::sink_failed(format!(
                "cannot create the staging directory {}: {e}",
                staging.display()
            ))
            .with_hint("the restore needs write permission on the target's folder")
        })?;
        let extracted = async {
            let applied = extract_checked(store, keys, snapshot, recorded, &staging).await?;
            // Durable before it is renamed into place (a drill's scratch copy needs not be).
            let root = staging.clone();
            tokio::task::spawn_blocking(move || sync_tree(&root))
                .await
                .map_err(|e| Error::sink_failed(format!("the sync stopped: {e}")))??;
            Ok::<_, Error>(applied)
        }
        .await;
        let applied = match extracted {
            Ok(applied) => applied,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e.with_hint(format!(
                    "nothing was changed at {}; the staging directory was removed",
                    target.display()
                )));
            }
        };
        swap_into_place(&staging, target, options.clean)?;
        Ok(applied)
    }

    async fn check<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
    ) -> Result<Vec<String>> {
        let recorded = files_fingerprint(snapshot)?;
        let found = read_archive(store, keys, snapshot, None).await?;
        Ok(recorded.differences(&found.fingerprint))
    }

    fn check_scratch(&self, scratch: &Scratch) -> Result<()> {
        match &scratch.dir {
            Some(dir) if !dir.is_dir() => Err(Error::config(format!(
                "--scratch-dir {} is not a directory",
                dir.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Extracts into a new folder of the scratch directory, compares the fingerprint of what
    /// is on disk with the manifest's, and removes the folder.
    async fn drill<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        scratch: &Scratch,
    ) -> Result<Drilled> {
        let recorded = files_fingerprint(snapshot)?;
        let base = scratch.dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = beside(&base.join(format!("drill-{}", snapshot.id)), "drill");
        std::fs::create_dir(&dir).map_err(|e| {
            Error::sink_failed(format!(
                "cannot create the drill directory {}: {e}",
                dir.display()
            ))
            .with_hint("pass --scratch-dir DIR on a file system with room for the snapshot")
        })?;
        let started = Instant::now();
        let result = async {
            extract_checked(store, keys, snapshot, recorded, &dir).await?;
            let restore_secs = started.elapsed().as_secs_f64();
            let on_disk = tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || tree::fingerprint_dir(&dir)
            })
            .await
            .map_err(|e| Error::sink_failed(format!("the drill's walk stopped: {e}")))?
            .map_err(|e| Error::sink_failed(format!("cannot read back {}: {e}", dir.display())))?;
            Ok::<_, Error>(Drilled {
                findings: recorded.differences(&on_disk),
                restore_secs: Some(restore_secs),
            })
        }
        .await;
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(
                "The drill directory {} could not be removed: {e}",
                dir.display()
            );
        }
        result
    }

    async fn survey<S: Store>(&self, store: &S, snapshot: &Manifest) -> Result<Surveyed> {
        // A dump made elsewhere (`--from-file`) is never encrypted.
        let keys = &Keys::none();
        let found = read_archive(store, keys, snapshot, None).await?;
        Ok(Surveyed {
            fingerprint: Fingerprint::Files(found.fingerprint),
            server_version: None,
        })
    }
}

/// Extracts the snapshot into `dir` (which exists and is empty) and checks the fingerprint.
async fn extract_checked<S: Store>(
    store: &S,
    keys: &Keys,
    snapshot: &Manifest,
    recorded: &FilesFingerprint,
    dir: &Path,
) -> Result<Applied> {
    let found = read_archive(store, keys, snapshot, Some(dir.to_path_buf())).await?;
    let differences = recorded.differences(&found.fingerprint);
    if !differences.is_empty() {
        return Err(Error::integrity(format!(
            "snapshot {} does not match its manifest: {}",
            snapshot.id,
            differences.join("; ")
        )));
    }
    Ok(Applied {
        stored_bytes: found.stored_bytes,
        raw_bytes: found.raw_bytes,
        notes: found.notes,
    })
}

/// Moves the verified staging directory to `target`, an existing one aside first.
fn swap_into_place(staging: &Path, target: &Path, clean: bool) -> Result<()> {
    let io = |what: String, e: std::io::Error| Error::sink_failed(format!("{what}: {e}"));
    let mut aside = None;
    if let Ok(meta) = std::fs::symlink_metadata(target) {
        let empty = meta.is_dir()
            && std::fs::read_dir(target)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if empty {
            std::fs::remove_dir(target)
                .map_err(|e| io(format!("cannot replace the empty {}", target.display()), e))?;
        } else if clean {
            let old = beside(target, "old");
            std::fs::rename(target, &old)
                .map_err(|e| io(format!("cannot move {} aside", target.display()), e))?;
            aside = Some(old);
        } else {
            // Something appeared since the plan: never merge into it.
            let _ = std::fs::remove_dir_all(staging);
            return Err(Error::new(
                ErrorKind::Refused,
                format!("{} was filled while the restore ran", target.display()),
            )
            .with_hint("nothing was changed there; run the restore again"));
        }
    }
    if let Err(e) = std::fs::rename(staging, target) {
        if let Some(old) = &aside {
            let _ = std::fs::rename(old, target);
        }
        let _ = std::fs::remove_dir_all(staging);
        return Err(io(
            format!("cannot rename the restored tree to {}", target.display()),
            e,
        ));
    }
    if let Some(parent) = target.parent() {
        std::fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(format!("cannot sync {}", parent.display()), e))?;
    }
    if let Some(old) = aside {
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(
                "The previous tree, moved to {}, could not be removed: {e}",
                old.display()
            );
        }
    }
    Ok(())
}

/// What reading an archive found.
struct ReadArchive {
    fingerprint: FilesFingerprint,
    stored_bytes: u64,
    raw_bytes: u64,
    notes: Vec<String>,
}

/// Reads the snapshot's archive through both digests; extracts it into `into` if given.
async fn read_archive<S: Store>(
    store: &S,
    keys: &Keys,
    snapshot: &Manifest,
    into: Option<PathBuf>,
) -> Result<ReadArchive> {
    let (pipe, reader) = tokio::io::duplex(PIPE_BYTES);
    let task = tokio::task::spawn_blocking(move || {
        let mut input = SyncIoBridge::new(reader);
        let walked = walk_archive(&mut input, into.as_deref());
        if walked.is_ok() {
            // Whatever follows the archive's end is still read (and digested by the caller).
            let _ = std::io::copy(&mut input, &mut std::io::sink());
        }
        walked
    });
    let mut feed = Feed { pipe: Some(pipe) };
    let read = read_snapshot(store, snapshot, keys, &mut feed).await;
    drop(feed);
    let walked = task
        .await
        .map_err(|e| Error::sink_failed(format!("the archive reader stopped: {e}")))?;
    // Damage found by the digests explains a broken archive best.
    let read = read?;
    let walked = walked?;
    if let Some(e) = read.sink_error {
        return Err(Error::sink_failed(format!(
            "the archive reader stopped early: {e}"
        )));
    }
    Ok(ReadArchive {
        fingerprint: walked.fingerprint,
        stored_bytes: read.stored_bytes,
        raw_bytes: read.raw_bytes,
        notes: walked.notes,
    })
}

struct Feed {
    pipe: Option<DuplexStream>,
}

impl RawSink for Feed {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match &mut self.pipe {
            Some(pipe) => {
                let written = pipe.write_all(chunk).await;
                if written.is_err() {
                    self.pipe = None;
                }
                written
            }
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        }
    }
}

struct Walked {
    fingerprint: FilesFingerprint,
    notes: Vec<String>,
}

fn unsafe_entry(path: &[u8], why: &str) -> Error {
    Error::new(
        ErrorKind::Refused,
        format!(
            "the archive's entry {:?} {why}; Lifeboat writes nothing outside the target",
            String::from_utf8_lossy(path)
        ),
    )
    .with_hint("the archive was not made by Lifeboat or was altered: extract it by hand, with care, if you trust it")
}

/// A relative path with no `..`, absolute or empty component, or the reason it is refused.
fn contained(path: &[u8]) -> std::result::Result<PathBuf, &'static str> {
    let p = Path::new(std::ffi::OsStr::from_bytes(path));
    if p.is_absolute() {
        return Err("is an absolute path");
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("has a .. component"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

/// Whether `rel` passes through one of the archive's symlinks (one of its folders is one).
fn under_symlink(rel: &Path, symlinks: &std::collections::HashSet<PathBuf>) -> bool {
    rel.ancestors().skip(1).any(|a| symlinks.contains(a))
}

/// Walks the archive, building the fingerprint; with `into`, extracts each entry there.
fn walk_archive(input: &mut dyn Read, into: Option<&Path>) -> Result<Walked> {
    let mut archive = tar::Archive::new(input);
    let mut fingerprint = FingerprintBuilder::default();
    let mut notes = Vec::new();
    let mut dirs: Vec<(PathBuf, u32, (i64, u32))> = Vec::new();
    let mut symlinks: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut buf = vec![0u8; 256 * 1024];
    let broken =
        |e: std::io::Error| Error::integrity(format!("the tar archive cannot be read: {e}"));
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let header_type = entry.header().entry_type();
        let raw_path = entry.path_bytes().into_owned();
        let name = tree::normalized(&raw_path).to_vec();
        let kind = match header_type {
            tar::EntryType::Directory => Kind::Directory,
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::HardLink,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                notes.push(format!(
                    "{} ({other:?}) is not a file, directory or link and was left out",
                    String::from_utf8_lossy(&name)
                ));
                continue;
            }
        };
        if name.is_empty() {
            // `./`, the archive's own root: the target itself, which takes its mode and time.
            if let (Some(root), Kind::Directory) = (into, kind) {
                let mode = entry.header().mode().map_err(broken)? & 0o7777;
                dirs.insert(0, (root.to_path_buf(), mode, mtime_of(&mut entry)?));
            }
            continue;
        }
        let rel = contained(&name).map_err(|why| unsafe_entry(&raw_path, why))?;
        let mode = entry.header().mode().map_err(broken)? & 0o7777;
        let link = match kind {
            Kind::Symlink | Kind::HardLink => {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .ok_or_else(|| broken(std::io::Error::other("a link without a target")))?;
                Some(link)
            }
            _ => None,
        };
        let link = match (kind, link) {
            (Kind::HardLink, Some(l)) => {
                let l = tree::normalized(&l).to_vec();
                contained(&l).map_err(|why| unsafe_entry(&l, why))?;
                Some(l)
            }
            (_, l) => l,
        };
        let mtime = mtime_of(&mut entry)?;
        // Checked from the archive alone, so a dry run (and `--from-file`'s survey) refuses
        // what extraction would: the target starts empty, so its only symlinks are the
        // archive's own.
        // Symlinks are data and are restored as they are, whatever they point at (an absolute
        // `current -> /srv/app/releases/1`, or above the tree); what is refused is writing
        // through one: an entry under a symlink, or a hard link to a path under one.
        if under_symlink(&rel, &symlinks) {
            return Err(unsafe_entry(
                &raw_path,
                "lies under a symlink of the archive",
            ));
        }
        if let (Kind::HardLink, Some(l)) = (kind, &link) {
            if under_symlink(&contained(l).unwrap_or_default(), &symlinks) {
                return Err(unsafe_entry(
                    &raw_path,
                    "is a hard link to a path under a symlink of the archive",
                ));
            }
        }
        // A later entry of the same name replaces the symlink (`prepare` removes it first).
        if kind == Kind::Symlink {
            symlinks.insert(rel.clone());
        } else {
            symlinks.remove(&rel);
        }
        let destination = into.map(|root| root.join(&rel));
        let write_err = |p: &Path, e: std::io::Error| {
            Error::sink_failed(format!("cannot write {}: {e}", p.display()))
        };
        let mut size = 0;
        let mut sha = None;
        match kind {
            Kind::Directory => {
                if let Some(dest) = &destination {
                    // Never through a symlink (an earlier entry of this name): it is replaced.
                    let is_dir = std::fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir());
                    if !is_dir {
                        prepare(dest).map_err(|e| write_err(dest, e))?;
                        std::fs::create_dir_all(dest).map_err(|e| write_err(dest, e))?;
                    }
                    dirs.push((dest.clone(), mode, mtime));
                }
            }
            Kind::File => {
                let mut file = match &destination {
                    Some(dest) => {
                        prepare(dest).map_err(|e| write_err(dest, e))?;
                        Some(std::fs::File::create(dest).map_err(|e| write_err(dest, e))?)
                    }
                    None => None,
                };
                let mut hasher = Sha256::new();
                loop {
                    let n = entry.read(&mut buf).map_err(broken)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    size += n as u64;
                    if let (Some(f), Some(dest)) = (&mut file, &destination) {
                        std::io::Write::write_all(f, &buf[..n]).map_err(|e| write_err(dest, e))?;
                    }
                }
                sha = Some(hasher.finalize().into());
                if let (Some(f), Some(dest)) = (file, &destination) {
                    use std::os::unix::fs::PermissionsExt;
                    f.set_permissions(std::fs::Permissions::from_mode(mode))
                        .map_err(|e| write_err(dest, e))?;
                    set_owner(dest, entry.header());
                    set_mtime(dest, mtime).map_err(|e| write_err(dest, e))?;
                }
            }
            Kind::Symlink => {
                if let (Some(dest), Some(l)) = (&destination, &link) {
                    prepare(dest).map_err(|e| write_err(dest, e))?;
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(l), dest)
                        .map_err(|e| write_err(dest, e))?;
                    set_owner(dest, entry.header());
                    // Not every file system keeps a symlink's time; its content is the target.
                    let _ = set_mtime(dest, mtime);
                }
            }
            Kind::HardLink => {
                if let (Some(root), Some(dest), Some(l)) = (into, &destination, &link) {
                    prepare(dest).map_err(|e| write_err(dest, e))?;
                    let first = root.join(contained(l).unwrap_or_default());
                    std::fs::hard_link(&first, dest).map_err(|e| write_err(dest, e))?;
                }
            }
        }
        fingerprint.add(&Entry {
            path: &name,
            kind,
            mode,
            size,
            sha256: sha,
            link: link.as_deref(),
        });
    }
    // Directories last, deepest first: a read-only folder would refuse its own entries, and
    // writing an entry changes its folder's time.
    for (dir, mode, mtime) in dirs.iter().rev() {
        use std::os::unix::fs::PermissionsExt;
        // A folder a later entry replaced with a symlink is not a folder any more: changing
        // its mode would change whatever the symlink points at.
        if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let done = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))
            .and_then(|_| set_mtime(dir, *mtime));
        done.map_err(|e| {
            Error::sink_failed(format!("cannot set the mode of {}: {e}", dir.display()))
        })?;
    }
    Ok(Walked {
        fingerprint: fingerprint.finish(),
        notes,
    })
}

/// The entry's modification time, to the nanosecond where a PAX record gives it.
fn mtime_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<(i64, u32)> {
    let seconds = entry.header().mtime().unwrap_or(0) as i64;
    if let Ok(Some(extensions)) = entry.pax_extensions() {
        for ext in extensions.flatten() {
            if ext.key() == Ok("mtime") {
                if let Ok(value) = ext.value() {
                    return Ok(parse_pax_time(value).unwrap_or((seconds, 0)));
                }
            }
        }
    }
    Ok((seconds, 0))
}

/// `1700000000.123456789` -> (1700000000, 123456789).
fn parse_pax_time(value: &str) -> Option<(i64, u32)> {
    let (s, frac) = value.split_once('.').unwrap_or((value, ""));
    let seconds = s.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some((seconds, nanos))
}

/// Makes room for an entry: its folders exist, and an earlier entry of the same name is gone
/// (in a tar archive the later one wins).
fn prepare(dest: &Path) -> std::io::Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(dest),
        Ok(_) => std::fs::remove_file(dest),
        Err(_) => Ok(()),
    }
}

/// Ownership as archived, where this user may set it (root); otherwise the restoring user's.
fn set_owner(dest: &Path, header: &tar::Header) {
    if let (Ok(uid), Ok(gid)) = (header.uid(), header.gid()) {
        let _ = std::os::unix::fs::lchown(dest, Some(uid as u32), Some(gid as u32));
    }
}

#[cfg(target_os = "linux")]
fn set_mtime(path: &Path, (seconds, nanos): (i64, u32)) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let at = Timespec {
        tv_sec: seconds,
        tv_nsec: nanos.into(),
    };
    let times = Timestamps {
        last_access: at,
        last_modification: at,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(Into::into)
}

#[cfg(not(target_os = "linux"))]
fn set_mtime(path: &Path, (seconds, nanos): (i64, u32)) -> std::io::Result<()> {
    let at = std::time::UNIX_EPOCH + std::time::Duration::new(seconds.max(0) as u64, nanos);
    std::fs::File::open(path)?.set_modified(at)
}

/// Makes the extracted tree durable before it is renamed into place.
#[cfg(target_os = "linux")]
fn sync_tree(root: &Path) -> Result<()> {
    let dir = std::fs::File::open(root)
        .map_err(|e| Error::sink_failed(format!("cannot open {}: {e}", root.display())))?;
    rustix::fs::syncfs(&dir)
        .map_err(|e| Error::sink_failed(format!("cannot sync {}: {e}", root.display())))
}

#[cfg(not(target_os = "linux"))]
fn sync_tree(_root: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_that_would_escape_are_refused() {
        assert_eq!(contained(b"a/b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(contained(b"./a").unwrap(), PathBuf::from("a"));
        assert!(contained(b"../escape").is_err());
        assert!(contained(b"a/../../b").is_err());
        assert!(contained(b"/etc/x").is_err());
    }

    #[test]
    fn pax_times_keep_their_nanoseconds() {
        assert_eq!(
            parse_pax_time("1700000000.5"),
            Some((1700000000, 500_000_000))
        );
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("1.123456789123"), Some((1, 123456789)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
