//! Stages over byte streams, in the order the data flows.
//!
//! Backup: raw dump -> [`hash`] (raw digest) -> [`compress`] -> [`encrypt`] (optional) ->
//! [`hash`] (stored digest) -> store.
//! Restore: store -> [`hash`] (stored) -> decrypt -> decompress -> [`hash`] (raw) -> [`holdback`]
//! -> sink.
//! Every stage is an `AsyncRead`/`AsyncWrite` adapter; writers must be shut down so trailers are
//! written, and nothing is considered complete until the digests are known.

pub mod adaptive_zstd;
pub mod compress;
pub mod encrypt;
pub mod hash;
pub mod holdback;
pub mod meter;
pub mod raw_sink;
pub mod write;

pub use compress::Compression;
pub use encrypt::{Encryption, EncryptionInfo, Keys, Passphrase, Sealing};
pub use hash::{Algorithm, Digest, HashingReader, HashingWriter, RawDigest};
pub use holdback::HoldBackWriter;
pub use raw_sink::{Discard, RawSink};
pub use write::{Streamed, WritePipeline};

/// Size of the chunks read from a dump and handed between stages.
pub const CHUNK_SIZE: usize = 256 * 1024;
