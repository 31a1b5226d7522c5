//! The mongodump archive format, as mongo-tools specifies it (`common/archive/spec.md`), with no
//! I/O of its own: [`ArchiveWriter`] appends the framing around raw BSON documents to a buffer,
//! and [`ArchiveReader`] is fed bytes as they arrive and hands back each document as it stands
//! in the archive, checking every namespace's CRC at its end-of-file block.
//!
//! ```text
//! archive   = magic (6d e2 99 81), header, *collection-metadata, terminator (ff ff ff ff),
//!             *(namespace-segment | namespace-eof)
//! segment   = {db, collection, EOF: false, CRC: 0}, +document, terminator
//! eof       = {db, collection, EOF: true, CRC: <int64>}, terminator
//! ```
//!
//! The CRC is Go's `crc64.ECMA` table with the input and output complemented, which is
//! CRC-64/XZ (check value `0x995DC9BBDF1939FA`), over the concatenated bytes of a namespace's
//! documents in archive order, stored as a signed int64. (`CRC-64/ECMA-182`, without the
//! complements, is a different CRC.)
//!
//! Documents are never decoded: the reader checks only a document's framing (its length and
//! final NUL), the writer copies the bytes it is given. Memory: the reader buffers one document
//! at a time, so it needs about as much as the largest document (16 MiB for MongoDB).

mod reader;
mod writer;

use std::fmt;

pub use reader::{ArchiveReader, Item, NamespaceEnd, Summary};
pub use writer::ArchiveWriter;

/// The archive's first four bytes, as a little-endian `u32`.
pub const MAGIC: u32 = 0x8199_e26d;

/// The only archive format version there is.
pub const FORMAT_VERSION: &str = "0.1";

/// The bytes that end the prelude and every namespace block (an int32 of -1).
pub const TERMINATOR: [u8; 4] = [0xff; 4];

/// The largest document the reader accepts: MongoDB's 16 MiB limit, plus the room an oplog
/// entry or a metadata document may take beyond a document that is itself at the limit.
pub const MAX_DOCUMENT: usize = 16 * 1024 * 1024 + 64 * 1024;

/// A database and a collection. The oplog of an archive made with `--oplog` is the namespace
/// with an empty database and the collection `oplog`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    pub db: String,
    pub collection: String,
}

impl Namespace {
    pub fn new(db: impl Into<String>, collection: impl Into<String>) -> Namespace {
        Namespace {
            db: db.into(),
            collection: collection.into(),
        }
    }

    /// The archive's top-level oplog namespace.
    pub fn oplog() -> Namespace {
        Namespace::new("", "oplog")
    }

    /// Whether this is the archive's top-level oplog.
    pub fn is_oplog(&self) -> bool {
        self.db.is_empty() && self.collection == "oplog"
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.db.is_empty() {
            f.write_str(&self.collection)
        } else {
            write!(f, "{}.{}", self.db, self.collection)
        }
    }
}

/// The document after the magic number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// How many collections the writer dumped at once (mongorestore restores as many).
    pub concurrent_collections: i32,
    /// The format version, [`FORMAT_VERSION`].
    pub version: String,
    /// The source server's version.
    pub server_version: String,
    /// The writing tool's version.
    pub tool_version: String,
}

/// One namespace's entry in the prelude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionMetadata {
    pub namespace: Namespace,
    /// Options, indexes, UUID, name and type, as canonical Extended JSON v2 (the same text as
    /// a dump directory's `metadata.json`); empty for the oplog.
    pub metadata: String,
    /// The collection's uncompressed size in bytes, as the source reported it.
    pub size: i32,
    /// `collection`, `view` or `timeseries` (empty in archives of older tools and for the
    /// oplog: a collection).
    pub kind: String,
}

impl CollectionMetadata {
    /// Whether the archive carries documents for this namespace (views carry none).
    pub fn has_documents(&self) -> bool {
        self.kind != "view"
    }
}

/// Documents of one namespace back to back, as a reader collects them for one segment or one
/// insert: one allocation for many documents.
#[derive(Debug, Clone, Default)]
pub struct DocumentBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl DocumentBatch {
    /// An empty batch with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> DocumentBatch {
        DocumentBatch {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::new(),
        }
    }

    /// Appends one document's bytes.
    pub fn push(&mut self, document: &[u8]) {
        self.bytes.extend_from_slice(document);
        self.ends.push(self.bytes.len());
    }

    /// The documents, in order.
    pub fn documents(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let document = &self.bytes[start..end];
            start = end;
            document
        })
    }

    /// How many documents it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of all its documents.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Empties it, keeping its room.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// Why an archive cannot be read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mongodump archive byte {offset}: {message}")]
pub struct ArchiveError {
    /// Offset from the start of the archive of the block (or byte) that is wrong.
    pub offset: u64,
    pub message: String,
}

impl ArchiveError {
    pub(crate) fn new(offset: u64, message: impl Into<String>) -> Self {
        ArchiveError {
            offset,
            message: message.into(),
        }
    }
}

static CRC_64_XZ: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

/// The running CRC of one namespace's documents.
#[derive(Clone)]
pub struct NamespaceCrc {
    digest: crc::Digest<'static, u64>,
}

impl Default for NamespaceCrc {
    fn default() -> Self {
        NamespaceCrc {
            digest: CRC_64_XZ.digest(),
        }
    }
}

impl NamespaceCrc {
    pub fn update(&mut self, document: &[u8]) {
        self.digest.update(document);
    }

    /// The CRC as the archive stores it: the unsigned CRC's bits as an int64.
    pub fn value(&self) -> i64 {
        self.digest.clone().finalize() as i64
    }
}

impl fmt::Debug for NamespaceCrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamespaceCrc({:#018x})", self.value() as u64)
    }
}

/// The CRC of one byte string, as the archive stores it.
pub fn crc64(bytes: &[u8]) -> i64 {
    CRC_64_XZ.checksum(bytes) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_crc_is_crc_64_xz() {
        // The catalogue's check value of CRC-64/XZ, which Go's crc64.ECMA table with its
        // complemented input and output computes.
        assert_eq!(crc64(b"123456789") as u64, 0x995D_C9BB_DF19_39FA);
        let mut running = NamespaceCrc::default();
        running.update(b"1234");
        running.update(b"56789");
        assert_eq!(running.value(), crc64(b"123456789"));
        assert_eq!(NamespaceCrc::default().value(), 0);
    }

    #[test]
    fn a_batch_gives_back_its_documents_in_order() {
        let mut batch = DocumentBatch::default();
        assert!(batch.is_empty());
        batch.push(b"abc");
        batch.push(b"");
        batch.push(b"de");
        assert_eq!(
            batch.documents().collect::<Vec<_>>(),
            [&b"abc"[..], b"", b"de"]
        );
        assert_eq!((batch.len(), batch.byte_len()), (3, 5));
        batch.clear();
        assert_eq!(batch.documents().count(), 0);
    }

    #[test]
    fn the_oplog_is_the_namespace_without_a_database() {
        assert!(Namespace::oplog().is_oplog());
        assert_eq!(Namespace::oplog().to_string(), "oplog");
        assert_eq!(
            Namespace::new("app", "users.v2").to_string(),
            "app.users.v2"
        );
    }
}
