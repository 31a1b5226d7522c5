//! The restore read path, shared by restore, verify and drills (a snapshot read back as its
//! manifest describes it; above `catalog`, whose manifest it takes, and below the sinks): store reader -> SHA-256 of the
//! stored bytes -> decrypt (when the manifest says so) -> decompress -> digest of the raw dump
//! (BLAKE3, or SHA-256 as the manifest says) -> a [`RawSink`].
//!
//! Both digests are compared with the manifest at the end. If the sink or the decompressor gives
//! up early, the rest of the stored object is still read and digested, so the caller can tell a
//! damaged object (an integrity error, exit 3) from a failing sink.

use tokio::io::{AsyncReadExt, BufReader};

use crate::catalog::Manifest;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::encrypt::{Keys, Unsealed};
use crate::pipeline::hash::{Algorithm, Digest, HashingReader, RawDigest};
use crate::pipeline::RawSink;
use crate::pipeline::CHUNK_SIZE;
use crate::store::{ObjectKey, Store};

/// What a read found when the digests matched.
#[derive(Debug)]
pub struct ReadReport {
    /// Bytes read from the store.
    pub stored_bytes: u64,
    /// Bytes after decompression.
    pub raw_bytes: u64,
    /// The sink failed (e.g. the child exited); the stored object itself is intact.
    pub sink_error: Option<std::io::Error>,
}

/// Streams a snapshot's data object into `sink`, checking both digests against the manifest.
/// An encrypted object is decrypted with `keys`; a missing or wrong identity fails before the
/// sink sees a byte.
pub async fn read_snapshot<S: Store, K: RawSink>(
    store: &S,
    manifest: &Manifest,
    keys: &Keys,
    sink: &mut K,
) -> Result<ReadReport> {
    let what = format!("snapshot {} of job {:?}", manifest.id, manifest.job);
    if let Some(info) = &manifest.encryption {
        keys.require(info, &what)?;
    }
    let key = ObjectKey::new(manifest.object.key.clone())?;
    let object = store.open(&key, 0).await.map_err(|e| {
        if e.kind() == ErrorKind::Integrity {
            Error::integrity(format!(
                "snapshot {} of job {:?}: its data object {key} is missing from {}",
                manifest.id,
                manifest.job,
                store.describe()
            ))
        } else {
            e
        }
    })?;
    // A new stream for the progress line: its total is the stored size.
    crate::pipeline::meter::meter().reset();
    crate::pipeline::meter::meter().expect(manifest.object.stored_size, true);
    let mut stored = HashingReader::new(object);
    let mut raw_hasher = manifest.object.raw_digest.hasher();
    let mut decode_error = None;
    let mut sink_error = None;
    let mut store_error = None;
    let mut wrong_key = None;
    'read: {
        let buffered = BufReader::with_capacity(CHUNK_SIZE, &mut stored);
        let plain: Box<dyn tokio::io::AsyncBufRead + Unpin + Send + '_> = match &manifest.encryption
        {
            None => Box::new(buffered),
            Some(info) => match keys.open(info, &what, buffered).await? {
                Unsealed::Open(plain) => plain,
                Unsealed::Damaged(e) => {
                    decode_error = Some(e);
                    break 'read;
                }
                Unsealed::WrongKeyOrDamaged(e) => {
                    wrong_key = Some(e);
                    break 'read;
                }
            },
        };
        let mut decoder = manifest.compression.decoder(plain);
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            let n = match decoder.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    decode_error = Some(e.to_string());
                    break;
                }
            };
            raw_hasher.update(&buf[..n]);
            crate::pipeline::meter::meter().add_raw(n);
            if let Err(e) = sink.write(&buf[..n]).await {
                sink_error = Some(e);
                break;
            }
        }
    }
    // Digest whatever the decoder did not consume: trailing or remaining bytes count too.
    let mut rest = vec![0u8; CHUNK_SIZE];
    loop {
        match stored.read(&mut rest).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                store_error = Some(e);
                break;
            }
        }
    }
    // A transport failure (reset, refused, timed out, a resume that failed) says nothing about
    // the data: exit 1 with the store's error, never "damaged". Damage is judged only on an
    // object read to its end.
    if let Some((kind, e)) = stored.failure() {
        if kind == std::io::ErrorKind::NotFound {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "{what}: its data object {key} disappeared from {} while it was read: the snapshot was forgotten meanwhile (a prune or forget ran)",
                    store.describe()
                ),
            )
            .with_hint("nothing was found wrong with the data read so far; list the snapshots again and pick one that is still there"));
        }
        return Err(Error::store(format!(
            "{what}: reading {key} from {} failed: {e}",
            store.describe()
        ))
        .with_hint("the store stopped answering; this says nothing about the snapshot's data: run again when the store is reachable"));
    }
    if let Some(e) = store_error {
        return Err(Error::store(format!(
            "snapshot {}: reading {key} from {} failed: {e}",
            manifest.id,
            store.describe()
        )));
    }
    let (stored_digest, stored_bytes) = stored.finish();
    let object = &manifest.object;
    if let Some(e) = stored_mismatch(manifest, stored_digest, stored_bytes) {
        return Err(e);
    }
    // The stored digest matches: the object is intact, so the key was wrong.
    if let Some(e) = wrong_key {
        return Err(e);
    }
    if let Some(e) = decode_error {
        let how = if manifest.encryption.is_some() {
            "decrypted and decompressed"
        } else {
            "decompressed"
        };
        return Err(Error::integrity(format!(
            "{what}: the stored object matches its digest but cannot be {how}: {e}"
        ))
        .with_hint("do not restore this snapshot; pick an older one with --snapshot or --at"));
    }
    if sink_error.is_none() {
        let (raw_digest, raw_bytes) = raw_hasher.finish_raw();
        if raw_digest != object.raw_digest || raw_bytes != object.raw_size {
            return Err(mismatch(
                manifest,
                "raw",
                &object.raw_digest,
                object.raw_size,
                &raw_digest,
                raw_bytes,
            ));
        }
        return Ok(ReadReport {
            stored_bytes,
            raw_bytes,
            sink_error,
        });
    }
    Ok(ReadReport {
        stored_bytes,
        raw_bytes: raw_hasher.len(),
        sink_error,
    })
}

/// What a whole read of an object found, when nothing recorded what it should be.
#[derive(Debug)]
pub struct Survey {
    /// Bytes stored.
    pub stored_size: u64,
    /// SHA-256 of the stored bytes.
    pub stored_sha256: Digest,
    /// Bytes after decompression.
    pub raw_size: u64,
    /// The digest after decompression (BLAKE3, as a new snapshot's).
    pub raw_digest: RawDigest,
    /// The first bytes of the raw data (up to 512), to tell what it holds.
    pub head: Vec<u8>,
}

/// Reads an object whole through its decompressor, for both digests (`--from-file`). A
/// decompressor that fails (a damaged or truncated gzip or zstd file) is an integrity error.
pub async fn survey_object<S: Store>(
    store: &S,
    key: &ObjectKey,
    compression: crate::pipeline::Compression,
) -> Result<Survey> {
    let object = store.open(key, 0).await?;
    let mut stored = HashingReader::new(object);
    let mut raw = crate::pipeline::hash::Hasher::new(Algorithm::Blake3);
    let mut head = Vec::new();
    {
        let buffered = BufReader::with_capacity(CHUNK_SIZE, &mut stored);
        let mut decoder = compression.decoder(buffered);
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            // A local file read whole: a failure here is the file's, not the machine's.
            let n = decoder
                .read(&mut buf)
                .await
                .map_err(|e| Error::integrity(format!("decompressing it failed: {e}")))?;
            if n == 0 {
                break;
            }
            if head.len() < 512 {
                let take = (512 - head.len()).min(n);
                head.extend_from_slice(&buf[..take]);
            }
            raw.update(&buf[..n]);
        }
    }
    let mut rest = vec![0u8; CHUNK_SIZE];
    while stored
        .read(&mut rest)
        .await
        .map_err(|e| Error::store(format!("reading {key} failed: {e}")))?
        > 0
    {}
    let (stored_sha256, stored_size) = stored.finish();
    let (raw_digest, raw_size) = raw.finish_raw();
    Ok(Survey {
        stored_size,
        stored_sha256,
        raw_size,
        raw_digest,
        head,
    })
}

/// Checks, before a restore or a drill touches anything, that `keys` open an encrypted
/// snapshot: its age header is read and the file key unwrapped (a missing or wrong identity is
/// a `Crypto` error listing the recipients). A header that does not parse is left for the full
/// read, which judges it with the stored digest. Unencrypted snapshots need nothing.
pub async fn unlock<S: Store>(store: &S, manifest: &Manifest, keys: &Keys) -> Result<()> {
    let Some(info) = &manifest.encryption else {
        return Ok(());
    };
    let what = format!("snapshot {} of job {:?}", manifest.id, manifest.job);
    keys.require(info, &what)?;
    let key = ObjectKey::new(manifest.object.key.clone())?;
    let object = store.open(&key, 0).await?;
    let mut stored = HashingReader::new(object);
    let doubt = {
        let buffered = BufReader::with_capacity(64 * 1024, &mut stored);
        match keys.open(info, &what, buffered).await? {
            Unsealed::Open(_) => return Ok(()),
            Unsealed::Damaged(e) => {
                return Err(Error::integrity(format!("{what}: {e}")).with_hint(
                    "do not restore this snapshot; pick an older one with --snapshot or --at",
                ))
            }
            Unsealed::WrongKeyOrDamaged(e) => e,
        }
    };
    // A wrong key or a damaged header: the stored digest decides, so the whole object is read.
    let mut rest = vec![0u8; CHUNK_SIZE];
    while stored.read(&mut rest).await.map_err(|e| {
        Error::store(format!(
            "reading {key} from {} failed: {e}",
            store.describe()
        ))
    })? > 0
    {}
    let (digest, size) = stored.finish();
    Err(stored_mismatch(manifest, digest, size).unwrap_or(doubt))
}

/// The stored object's damage, if its digest or size differs from the manifest's.
fn stored_mismatch(manifest: &Manifest, digest: Digest, size: u64) -> Option<Error> {
    let object = &manifest.object;
    (digest != object.stored_sha256 || size != object.stored_size).then(|| {
        mismatch(
            manifest,
            "stored",
            &RawDigest::Sha256(object.stored_sha256),
            object.stored_size,
            &RawDigest::Sha256(digest),
            size,
        )
    })
}

/// The content check of an encrypted snapshot without its identity: the whole object is read,
/// its stored digest and size compared with the manifest, and its age header parsed. What only
/// the plaintext can show (the raw digest, the dump's structure) is left for a check with the
/// identity. `Err` only for a store that cannot be read.
pub async fn check_ciphertext<S: Store>(store: &S, manifest: &Manifest) -> Result<Vec<String>> {
    let key = ObjectKey::new(manifest.object.key.clone())?;
    let object = store.open(&key, 0).await?;
    let mut stored = HashingReader::new(object);
    let header = {
        let mut buffered = BufReader::with_capacity(CHUNK_SIZE, &mut stored);
        let header = crate::pipeline::encrypt::check_header(&mut buffered).await;
        let mut rest = vec![0u8; CHUNK_SIZE];
        while buffered.read(&mut rest).await.map_err(|e| {
            Error::store(format!(
                "reading {key} from {} failed: {e}",
                store.describe()
            ))
        })? > 0
        {}
        header
    };
    let (digest, size) = stored.finish();
    let mut findings: Vec<String> = stored_mismatch(manifest, digest, size)
        .map(|e| e.to_string())
        .into_iter()
        .collect();
    let passphrase = matches!(
        manifest.encryption,
        Some(crate::pipeline::EncryptionInfo::AgePassphrase { .. })
    );
    match header {
        Err(e) => findings.push(format!(
            "the data object {key} is not a readable age file: {e}"
        )),
        Ok(scrypt) if scrypt != passphrase => findings.push(format!(
            "the data object {key}'s age header does not match the manifest's scheme ({})",
            if passphrase {
                "passphrase"
            } else {
                "recipients"
            }
        )),
        Ok(_) => {}
    }
    Ok(findings)
}

fn mismatch(
    manifest: &Manifest,
    which: &str,
    want: &RawDigest,
    want_len: u64,
    got: &RawDigest,
    got_len: u64,
) -> Error {
    Error::integrity(format!(
        "snapshot {} of job {:?} is damaged: the {which} data has {got} ({got_len} bytes) \
         but the manifest records {want} ({want_len} bytes)",
        manifest.id, manifest.job
    ))
    .with_hint("do not restore this snapshot; pick an older one with --snapshot or --at, and check the store")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Fingerprint, ObjectInfo, SnapshotId, SourceInfo, MANIFEST_FORMAT};
    use crate::pipeline::Discard;
    use crate::pipeline::{Compression, HoldBackWriter};
    use crate::store::LocalStore;

    /// A sink behind the hold-back (as PostgreSQL's is) never sees the end of a stream whose
    /// digest does not match: the commit, which comes with the last bytes, is never reached.
    #[tokio::test]
    async fn a_digest_mismatch_never_reaches_the_sinks_commit() {
        let root = std::env::temp_dir().join(format!(
            "lifeboat-unit-read-{}-{}",
            std::process::id(),
            SnapshotId::generate(chrono::Utc::now())
        ));
        let store = LocalStore::open(&root).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let key = ObjectKey::new("jobs/app/snapshots/x/data.bin").unwrap();
        store.put(&key, &data).await.unwrap();
        let now = chrono::Utc::now();
        let mut manifest = crate::catalog::Manifest {
            format: MANIFEST_FORMAT,
            id: SnapshotId::generate(now),
            job: "app".into(),
            engine: "files".into(),
            tool_version: "test".into(),
            started_at: now,
            finished_at: now,
            consistent_at: now,
            source: SourceInfo {
                url: "/x".into(),
                server_version: String::new(),
                databases: vec![],
                dump_tool: "test".into(),
                server_clock_at: None,
            },
            dump_format: "tar".into(),
            compression: Compression::None,
            encryption: None,
            object: ObjectInfo {
                key: key.to_string(),
                stored_size: data.len() as u64,
                stored_sha256: Digest::of(&data),
                raw_size: data.len() as u64,
                raw_digest: RawDigest::Sha256(Digest::of(&data)),
            },
            fingerprint: Fingerprint::Files(Default::default()),
            warnings: vec![],
            companions: Default::default(),
        };
        // Intact: everything arrives once released.
        let mut sink = HoldBackWriter::new(Vec::new(), 1 << 20);
        read_snapshot(&store, &manifest, &Keys::none(), &mut sink)
            .await
            .unwrap();
        assert_eq!(sink.release().await.unwrap(), data);
        // The raw digest is checked with the function the manifest names: BLAKE3 here.
        manifest.object.raw_digest = RawDigest::of(Algorithm::Blake3, &data);
        read_snapshot(&store, &manifest, &Keys::none(), &mut Discard)
            .await
            .unwrap();
        let mut wrong = data.clone();
        wrong[0] ^= 1;
        manifest.object.raw_digest = RawDigest::of(Algorithm::Blake3, &wrong);
        let e = read_snapshot(&store, &manifest, &Keys::none(), &mut Discard)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(e.to_string().contains("the raw data has BLAKE3 "), "{e}");
        // One flipped bit in the recorded digest stands for a damaged object.
        manifest.object.raw_digest = RawDigest::Sha256(Digest::of(&wrong));
        manifest.object.stored_sha256 = Digest::of(&wrong);
        let mut sink = HoldBackWriter::new(Vec::new(), 1 << 20);
        let e = read_snapshot(&store, &manifest, &Keys::none(), &mut sink)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        let reached = sink.discard();
        assert!(
            reached.len() <= data.len() - (1 << 20),
            "the held-back tail reached the sink: {} of {} bytes",
            reached.len(),
            data.len()
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
