//! What the files engine's two sides share: the order a tree is archived in, and the
//! fingerprint of its entries ([`FilesFingerprint`]).
//!
//! Entries are archived in the byte order of their paths (a directory counting as `name/`), so
//! that a digest over the entries in archive order is a digest over the sorted entries: the
//! backup, the content check of the archive and a walk of a restored tree all compute the same
//! one without holding the list in memory.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::catalog::FilesFingerprint;

/// An entry's type, as the fingerprint and the archive know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A further name of a file met earlier in the archive.
    HardLink,
}

impl Kind {
    fn tag(self) -> &'static [u8] {
        match self {
            Kind::File => b"file",
            Kind::Directory => b"dir",
            Kind::Symlink => b"symlink",
            Kind::HardLink => b"hardlink",
        }
    }
}

/// One entry, as it goes into the fingerprint.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Relative, `/`-separated, with no trailing slash.
    pub path: &'a [u8],
    /// The entry's type.
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Content bytes (files only).
    pub size: u64,
    /// SHA-256 of the content (files only).
    pub sha256: Option<[u8; 32]>,
    /// Symlink target, or the first name of a hard-linked file.
    pub link: Option<&'a [u8]>,
}

/// Builds a [`FilesFingerprint`] from entries in archive order.
#[derive(Default)]
pub struct FingerprintBuilder {
    fingerprint: FilesFingerprint,
    digest: Sha256,
}

impl FingerprintBuilder {
    /// Counts the entry and feeds it to the digest; call in archive order.
    pub fn add(&mut self, entry: &Entry<'_>) {
        let f = &mut self.fingerprint;
        match entry.kind {
            Kind::File => {
                f.files += 1;
                f.total_bytes += entry.size;
            }
            Kind::Directory => f.directories += 1,
            Kind::Symlink => f.symlinks += 1,
            Kind::HardLink => f.hard_links += 1,
        }
        let d = &mut self.digest;
        d.update(entry.path);
        d.update(b"\0");
        d.update(entry.kind.tag());
        d.update(format!("\0{:o}\0{}\0", entry.mode & 0o7777, entry.size).as_bytes());
        if let Some(sha) = entry.sha256 {
            d.update(hex::encode(sha).as_bytes());
        }
        d.update(b"\0");
        if let Some(link) = entry.link {
            d.update(link);
        }
        d.update(b"\n");
    }

    /// The fingerprint of everything added.
    pub fn finish(self) -> FilesFingerprint {
        FilesFingerprint {
            digest: hex::encode(self.digest.finalize()),
            ..self.fingerprint
        }
    }
}

/// The archive order of two entries of one directory: by name, a directory as `name/`.
pub fn sibling_order(a: &walkdir::DirEntry, b: &walkdir::DirEntry) -> Ordering {
    order_key(a).cmp(&order_key(b))
}

fn order_key(e: &walkdir::DirEntry) -> Vec<u8> {
    let mut key = e.file_name().as_bytes().to_vec();
    if e.file_type().is_dir() {
        key.push(b'/');
    }
    key
}

/// A path's bytes in the archive's form: no leading `./`, no trailing `/`.
pub fn normalized(path: &[u8]) -> &[u8] {
    let mut p = path;
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
    }
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    p
}

/// The fingerprint of a tree on disk (a restored one), its entries named relative to `root`.
pub fn fingerprint_dir(root: &Path) -> std::io::Result<FilesFingerprint> {
    let mut builder = FingerprintBuilder::default();
    let mut first_names: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut buf = vec![0u8; 256 * 1024];
    for entry in walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by(sibling_order)
    {
        let entry = entry.map_err(std::io::Error::other)?;
        let meta = entry.metadata().map_err(std::io::Error::other)?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .map_err(std::io::Error::other)?;
        let path = rel.as_os_str().as_bytes();
        let mode = meta.mode() & 0o7777;
        let ft = entry.file_type();
        if ft.is_dir() {
            builder.add(&Entry {
                path,
                kind: Kind::Directory,
                mode,
                size: 0,
                sha256: None,
                link: None,
            });
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            builder.add(&Entry {
                path,
                kind: Kind::Symlink,
                mode,
                size: 0,
                sha256: None,
                link: Some(target.as_os_str().as_bytes()),
            });
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = first_names.get(&(meta.dev(), meta.ino())) {
                    builder.add(&Entry {
                        path,
                        kind: Kind::HardLink,
                        mode,
                        size: 0,
                        sha256: None,
                        link: Some(first),
                    });
                    continue;
                }
                first_names.insert((meta.dev(), meta.ino()), path.to_vec());
            }
            let mut file = std::fs::File::open(entry.path())?;
            let mut sha = Sha256::new();
            let mut size = 0u64;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
                size += n as u64;
            }
            builder.add(&Entry {
                path,
                kind: Kind::File,
                mode,
                size,
                sha256: Some(sha.finalize().into()),
                link: None,
            });
        }
    }
    Ok(builder.finish())
}

/// Checks `exclude` patterns (gitignore syntax); the error names the bad pattern.
pub fn exclusions(patterns: &[String]) -> std::result::Result<(), String> {
    matcher(Path::new("/"), patterns).map(|_| ())
}

/// The gitignore matcher of `patterns` under `root` (the files source walks with it).
pub fn matcher(
    root: &Path,
    patterns: &[String],
) -> std::result::Result<ignore::gitignore::Gitignore, String> {
    let mut builder = ignore::gitignore::GitignoreBuilder::new(root);
    for pattern in patterns {
        builder
            .add_line(None, pattern)
            .map_err(|e| format!("{pattern:?}: {e}"))?;
    }
    builder.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_as_archives_write_them() {
        assert_eq!(normalized(b"./a/b/"), b"a/b");
        assert_eq!(normalized(b"a"), b"a");
        assert_eq!(normalized(b"./"), b"");
    }

    #[test]
    fn a_changed_mode_name_or_content_changes_the_digest() {
        let fp = |path: &[u8], mode: u32, sha: [u8; 32]| {
            let mut b = FingerprintBuilder::default();
            b.add(&Entry {
                path,
                kind: Kind::File,
                mode,
                size: 3,
                sha256: Some(sha),
                link: None,
            });
            b.finish()
        };
        let base = fp(b"a", 0o644, [1; 32]);
        assert_eq!(base.files, 1);
        assert_eq!(base.total_bytes, 3);
        assert_eq!(base, fp(b"a", 0o644, [1; 32]));
        for other in [
            fp(b"b", 0o644, [1; 32]),
            fp(b"a", 0o600, [1; 32]),
            fp(b"a", 0o644, [2; 32]),
        ] {
            assert_ne!(base.digest, other.digest);
            assert!(!base.differences(&other).is_empty());
        }
    }
}
