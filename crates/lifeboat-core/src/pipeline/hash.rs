//! Digest tees: pass bytes through unchanged and digest them on the way.
//!
//! Stored bytes are digested with SHA-256 (what `sha256sum` of the object shows). Raw bytes, the
//! whole dump before compression, are digested with BLAKE3 since manifest format 2: the raw
//! stream is several times the stored one, and SHA-256 of every raw byte was the largest cost
//! beside compression, competing with the dump for a busy machine's CPU (benches/README.md).

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A 256-bit digest (SHA-256 or BLAKE3: [`RawDigest`] says which), shown and stored as
/// lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| format!("{s:?} is not a 256-bit hex digest"))?;
        Ok(Digest(out))
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// The hash function of a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-256: stored bytes, and raw bytes of manifest format 1.
    Sha256,
    /// BLAKE3 (256-bit output): raw bytes since manifest format 2.
    Blake3,
}

impl Algorithm {
    /// Its name in the manifest's fields and in reports: `sha256`, `blake3`.
    pub fn field_name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Blake3 => "blake3",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Blake3 => "BLAKE3",
        })
    }
}

/// The digest of a raw (decompressed) stream with the function that made it. In a manifest it is
/// one field named after the function: `raw_sha256` or `raw_blake3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RawDigest {
    /// Manifest format 1, and objects stored as they were dumped (uncompressed, unencrypted:
    /// the stored digest serves both).
    #[serde(rename = "raw_sha256")]
    Sha256(Digest),
    /// Everything else since manifest format 2.
    #[serde(rename = "raw_blake3")]
    Blake3(Digest),
}

impl RawDigest {
    /// `digest`, made with `algorithm`.
    pub fn new(algorithm: Algorithm, digest: Digest) -> RawDigest {
        match algorithm {
            Algorithm::Sha256 => RawDigest::Sha256(digest),
            Algorithm::Blake3 => RawDigest::Blake3(digest),
        }
    }

    /// The raw digest of `bytes` with `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> RawDigest {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(bytes);
        hasher.finish_raw().0
    }

    /// The function that made it.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            RawDigest::Sha256(_) => Algorithm::Sha256,
            RawDigest::Blake3(_) => Algorithm::Blake3,
        }
    }

    /// The digest itself.
    pub fn digest(&self) -> Digest {
        match self {
            RawDigest::Sha256(d) | RawDigest::Blake3(d) => *d,
        }
    }

    /// A hasher with the same function, to check a stream against it.
    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm())
    }
}

impl fmt::Display for RawDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm(), self.digest())
    }
}

#[derive(Clone)]
enum HashState {
    Sha256(Sha256),
    // Boxed: BLAKE3's state (its chunk stack) is two kilobytes.
    Blake3(Box<blake3::Hasher>),
}

/// A running digest with a byte count (SHA-256 by default).
#[derive(Clone)]
pub struct Hasher {
    state: HashState,
    len: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new(Algorithm::Sha256)
    }
}

impl Hasher {
    /// A hasher with `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        let state = match algorithm {
            Algorithm::Sha256 => HashState::Sha256(Sha256::new()),
            Algorithm::Blake3 => HashState::Blake3(Box::default()),
        };
        Hasher { state, len: 0 }
    }

    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            HashState::Sha256(sha) => sha.update(bytes),
            HashState::Blake3(b3) => {
                b3.update(bytes);
            }
        }
        self.len += bytes.len() as u64;
    }

    /// Bytes added so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Nothing was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest and the byte count.
    pub fn finish(self) -> (Digest, u64) {
        let digest = match self.state {
            HashState::Sha256(sha) => Digest(sha.finalize().into()),
            HashState::Blake3(b3) => Digest(*b3.finalize().as_bytes()),
        };
        (digest, self.len)
    }

    /// The digest, tagged with its function, and the byte count.
    pub fn finish_raw(self) -> (RawDigest, u64) {
        let algorithm = match self.state {
            HashState::Sha256(_) => Algorithm::Sha256,
            HashState::Blake3(_) => Algorithm::Blake3,
        };
        let (digest, len) = self.finish();
        (RawDigest::new(algorithm, digest), len)
    }
}

/// Digests everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    /// The first error of `inner` (a transport failure of the store), returned again by every
    /// later read: a reader that failed must never look like one that ended, or an outage
    /// would read as a short, damaged object.
    failed: Option<(std::io::ErrorKind, String)>,
}

impl<R> HashingReader<R> {
    /// Digests what is read from `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
            failed: None,
        }
    }

    /// The error reading `inner` failed with, if it did: the bytes read are then not the
    /// whole object, and nothing can be said about its digest.
    pub fn failure(&self) -> Option<(std::io::ErrorKind, &str)> {
        self.failed.as_ref().map(|(kind, e)| (*kind, e.as_str()))
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.hasher.len()
    }

    /// The reader underneath.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The digest and length of what was read so far.
    pub fn finish(self) -> (Digest, u64) {
        self.hasher.finish()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        if let Some((kind, e)) = &this.failed {
            return Poll::Ready(Err(std::io::Error::new(*kind, e.clone())));
        }
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &poll {
            Poll::Ready(Ok(())) => {
                this.hasher.update(&buf.filled()[before..]);
                super::meter::meter().add_stored(buf.filled().len() - before);
            }
            Poll::Ready(Err(e)) => this.failed = Some((e.kind(), e.to_string())),
            Poll::Pending => {}
        }
        poll
    }
}

/// Digests everything written through it (or, made with [`HashingWriter::length_only`],
/// only counts it: when the stored bytes are the raw bytes, their digest is already known).
pub struct HashingWriter<W> {
    inner: W,
    hasher: Option<Hasher>,
    len: u64,
}

impl<W> HashingWriter<W> {
    /// Digests what is written to `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Some(Hasher::default()),
            len: 0,
        }
    }

    /// Counts what is written to `inner` without digesting it.
    pub fn length_only(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: None,
            len: 0,
        }
    }

    /// The inner writer, the digest (`None` for a length-only writer) and the length.
    pub fn into_parts(self) -> (W, Option<Digest>, u64) {
        let digest = self.hasher.map(|h| h.finish().0);
        (self.inner, digest, self.len)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for HashingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            if let Some(h) = this.hasher.as_mut() {
                h.update(&buf[..n]);
            }
            this.len += n as u64;
            super::meter::meter().add_stored(n);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reader_and_writer_digest_what_passes() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = HashingReader::new(&data[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        assert_eq!(r.finish(), (Digest::of(&data), data.len() as u64));

        let mut w = HashingWriter::new(Vec::new());
        for chunk in data.chunks(7777) {
            w.write_all(chunk).await.unwrap();
        }
        let (inner, d, n) = w.into_parts();
        assert_eq!(inner, data);
        assert_eq!((d, n), (Some(Digest::of(&data)), data.len() as u64));

        let mut w = HashingWriter::length_only(Vec::new());
        w.write_all(&data).await.unwrap();
        assert_eq!(w.into_parts().1, None);
    }

    #[test]
    fn raw_digests_are_the_published_functions_and_name_their_field() {
        // The test vectors of each function's specification for "abc" and "".
        assert_eq!(
            RawDigest::of(Algorithm::Blake3, b"").to_string(),
            "BLAKE3 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            RawDigest::of(Algorithm::Sha256, b"abc"),
            RawDigest::Sha256(Digest::of(b"abc"))
        );
        // Fed in pieces as a stream is, the same digest.
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut hasher = Hasher::new(Algorithm::Blake3);
        for piece in data.chunks(65_537) {
            hasher.update(piece);
        }
        assert_eq!(
            hasher.finish_raw(),
            (RawDigest::of(Algorithm::Blake3, &data), data.len() as u64)
        );
        let json = serde_json::to_value(RawDigest::of(Algorithm::Blake3, b"abc")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"raw_blake3": "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"})
        );
    }

    #[test]
    fn digest_round_trips_as_hex() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }
}
