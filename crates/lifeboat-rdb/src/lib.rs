//! A streaming reader of Redis RDB files, versions 1 to 12 (Redis 2.x to 7.4), with no I/O of
//! its own: feed it bytes as they arrive, get each key back as it stands in the file.
//!
//! For every key the reader yields its database, name, type, expiry and the value's serialized
//! bytes exactly as in the file, so a `DUMP` payload (type, value, RDB version, CRC64) can be
//! built for `RESTORE` without decoding and re-encoding the value ([`KeyEntry::dump_payload`]).
//! Values are delimited, not interpreted: compact encodings (ziplist, listpack, intset, zipmap)
//! are single strings in the file, so a reader that knows every type's framing can carry them
//! through unchanged.
//!
//! The CRC64 trailer (CRC-64/Jones, as Redis computes it) is checked at the end. Corrupt or
//! truncated input is an [`RdbError`] naming the byte offset, never a panic.
//!
//! Memory: the reader buffers one record at a time (a key and its value), so it needs about as
//! much as the largest value in the file.

mod crc64;
mod lzf;
mod reader;

pub use crc64::{crc64, Crc64};
pub use reader::{Item, KeyEntry, RdbReader, Summary, ValueType};

/// The newest RDB version this reader understands (Redis 7.4).
pub const MAX_RDB_VERSION: u16 = 12;

/// Why an RDB stream cannot be read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RDB byte {offset}: {message}")]
pub struct RdbError {
    /// Offset from the start of the stream of the record (or byte) that is wrong.
    pub offset: u64,
    pub message: String,
}

impl RdbError {
    pub(crate) fn new(offset: u64, message: impl Into<String>) -> Self {
        RdbError {
            offset,
            message: message.into(),
        }
    }
}
