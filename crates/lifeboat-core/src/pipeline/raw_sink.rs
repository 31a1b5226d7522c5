//! Where a read path delivers the raw (decompressed) stream.

use std::future::Future;

/// Where the raw (decompressed) dump goes.
pub trait RawSink: Send {
    /// Takes the next chunk of the raw stream.
    fn write(&mut self, chunk: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// Discards the raw stream (digests only).
pub struct Discard;

impl RawSink for Discard {
    async fn write(&mut self, _chunk: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}
