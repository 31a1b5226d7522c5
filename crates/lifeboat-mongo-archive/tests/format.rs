//! The archive's bytes as the specification (mongo-tools' common/archive/spec.md) gives them,
//! built here by hand without the bson crate, and round trips through the writer and reader.

use lifeboat_mongo_archive::{
    crc64, ArchiveReader, ArchiveWriter, CollectionMetadata, Header, Item, Namespace, Summary,
};
use proptest::prelude::*;

/// A BSON document by hand: (type byte, name, encoded value) elements.
fn bson(elements: &[(u8, &str, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, name, value) in elements {
        body.push(*kind);
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value);
    }
    body.push(0);
    let mut doc = ((body.len() + 4) as i32).to_le_bytes().to_vec();
    doc.extend_from_slice(&body);
    doc
}

fn string(s: &str) -> (u8, Vec<u8>) {
    let mut v = ((s.len() + 1) as i32).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    (0x02, v)
}

fn el(name: &str, (kind, value): (u8, Vec<u8>)) -> (u8, &str, Vec<u8>) {
    (kind, name, value)
}

fn int32(n: i32) -> (u8, Vec<u8>) {
    (0x10, n.to_le_bytes().to_vec())
}

fn int64(n: i64) -> (u8, Vec<u8>) {
    (0x12, n.to_le_bytes().to_vec())
}

fn boolean(b: bool) -> (u8, Vec<u8>) {
    (0x08, vec![u8::from(b)])
}

fn namespace_header(db: &str, collection: &str, eof: bool, crc: i64) -> Vec<u8> {
    bson(&[
        el("db", string(db)),
        el("collection", string(collection)),
        el("EOF", boolean(eof)),
        el("CRC", int64(crc)),
    ])
}

fn header() -> Header {
    Header {
        concurrent_collections: 2,
        version: "0.1".into(),
        server_version: "8.2.11".into(),
        tool_version: "lifeboat 0.1.0".into(),
    }
}

fn collection(db: &str, name: &str, kind: &str) -> CollectionMetadata {
    CollectionMetadata {
        namespace: Namespace::new(db, name),
        metadata: format!(r#"{{"collectionName":"{name}","type":"{kind}"}}"#),
        size: 42,
        kind: kind.into(),
    }
}

/// The golden archive: one collection with two documents in two segments, an empty one, and a
/// view (metadata only).
fn golden() -> (Vec<u8>, Vec<Vec<u8>>) {
    let d1 = bson(&[el("_id", int32(1)), el("name", string("ada"))]);
    let d2 = bson(&[el("_id", int32(2))]);
    let mut bytes = vec![0x6d, 0xe2, 0x99, 0x81];
    bytes.extend(bson(&[
        el("concurrent_collections", int32(2)),
        el("version", string("0.1")),
        el("server_version", string("8.2.11")),
        el("tool_version", string("lifeboat 0.1.0")),
    ]));
    for (name, kind) in [
        ("users", "collection"),
        ("empty", "collection"),
        ("adults", "view"),
    ] {
        let c = collection("app", name, kind);
        bytes.extend(bson(&[
            el("db", string("app")),
            el("collection", string(name)),
            el("metadata", string(&c.metadata)),
            el("size", int32(42)),
            el("type", string(kind)),
        ]));
    }
    bytes.extend([0xff; 4]);
    for d in [&d1, &d2] {
        bytes.extend(namespace_header("app", "users", false, 0));
        bytes.extend(d);
        bytes.extend([0xff; 4]);
    }
    let crc = crc64(&[d1.clone(), d2.clone()].concat());
    bytes.extend(namespace_header("app", "users", true, crc));
    bytes.extend([0xff; 4]);
    bytes.extend(namespace_header("app", "empty", true, 0));
    bytes.extend([0xff; 4]);
    (bytes, vec![d1, d2])
}

#[test]
fn the_writer_writes_the_specifications_bytes() {
    let (expected, docs) = golden();
    let mut out = Vec::new();
    let mut writer = ArchiveWriter::new(
        &mut out,
        &header(),
        &[
            collection("app", "users", "collection"),
            collection("app", "empty", "collection"),
            collection("app", "adults", "view"),
        ],
    );
    let users = Namespace::new("app", "users");
    writer.segment(&mut out, &users, [docs[0].as_slice()]);
    writer.segment(&mut out, &users, [docs[1].as_slice()]);
    writer.end(&mut out, &users);
    // A namespace without documents has an end-of-file block and no segment.
    let empty = Namespace::new("app", "empty");
    writer.segment(&mut out, &empty, []);
    writer.end(&mut out, &empty);
    assert_eq!(out, expected);
}

/// What a whole read gave: the summary and every document with its namespace.
type ReadBack = (Summary, Vec<(Namespace, Vec<u8>)>);

fn read_all(bytes: &[u8], chunk: usize) -> Result<ReadBack, String> {
    let mut reader = ArchiveReader::new();
    let mut docs = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        reader
            .feed(piece, &mut |item| {
                if let Item::Document { namespace, bytes } = item {
                    docs.push((namespace.clone(), bytes.to_vec()));
                }
            })
            .map_err(|e| e.to_string())?;
    }
    let summary = reader.finish().map_err(|e| e.to_string())?;
    Ok((summary, docs))
}

#[test]
fn the_reader_reads_the_specifications_bytes_in_any_chunks() {
    let (bytes, docs) = golden();
    for chunk in [1, 3, 7, 64, bytes.len()] {
        let (summary, read) = read_all(&bytes, chunk).unwrap();
        assert_eq!(summary.header, Some(header()));
        assert_eq!(summary.collections.len(), 3);
        assert_eq!(summary.collections[2].kind, "view");
        let users = &summary.ends[&Namespace::new("app", "users")];
        assert_eq!(users.documents, 2);
        assert_eq!(users.crc, crc64(&docs.concat()));
        assert_eq!(summary.ends[&Namespace::new("app", "empty")].documents, 0);
        assert_eq!(
            read.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
            docs,
            "documents come back byte for byte"
        );
        assert_eq!(summary.bytes, bytes.len() as u64);
    }
}

#[test]
fn a_flipped_byte_in_a_document_is_a_crc_mismatch_naming_the_namespace() {
    let (mut bytes, docs) = golden();
    // The byte of "ada" inside the first document.
    let at = bytes.windows(4).position(|w| w == b"ada\0").unwrap();
    bytes[at] = b'b';
    let err = read_all(&bytes, 64).unwrap_err();
    assert!(err.contains("CRC of app.users does not match"), "{err}");
    assert!(!docs.is_empty());
}

#[test]
fn a_truncated_archive_is_refused_wherever_it_stops() {
    let (bytes, _) = golden();
    for cut in 0..bytes.len() {
        let err = read_all(&bytes[..cut], 5).unwrap_err();
        assert!(err.contains("truncated"), "cut at {cut}: {err}");
    }
}

#[test]
fn damage_to_the_framing_is_an_error_not_a_panic() {
    let (bytes, _) = golden();
    assert!(read_all(b"PGDMP...", 4)
        .unwrap_err()
        .contains("not a mongodump archive"));
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        // Whatever happens, it is an answer, and a changed document never passes its CRC.
        if let Ok((_, docs)) = read_all(&damaged, 11) {
            let (_, original) = read_all(&bytes, 11).unwrap();
            assert_eq!(docs, original, "byte {at} changed a document unnoticed");
        }
    }
}

proptest! {
    #[test]
    fn what_is_written_is_read_back(
        namespaces in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
            1..5,
        ),
        interleave in any::<u64>(),
        chunk in 1usize..97,
    ) {
        let names: Vec<Namespace> = (0..namespaces.len())
            .map(|i| Namespace::new("db", format!("c{i}")))
            .collect();
        let metadata: Vec<CollectionMetadata> =
            names.iter().map(|n| collection(&n.db, &n.collection, "collection")).collect();
        let mut out = Vec::new();
        let mut writer = ArchiveWriter::new(&mut out, &header(), &metadata);
        // Each namespace's documents as BSON binaries, written one segment per document,
        // interleaved by the seed.
        let docs: Vec<Vec<Vec<u8>>> = namespaces
            .iter()
            .map(|ds| ds.iter().map(|d| bson(&[el("b", (0x05, [
                (d.len() as i32).to_le_bytes().to_vec(), vec![0], d.clone()].concat()))])).collect())
            .collect();
        let mut next = vec![0usize; docs.len()];
        let mut seed = interleave;
        while next.iter().zip(&docs).any(|(n, d)| *n < d.len()) {
            let i = (seed % docs.len() as u64) as usize;
            seed = seed.rotate_left(7) ^ 0x9e37_79b9;
            if next[i] < docs[i].len() {
                writer.segment(&mut out, &names[i], [docs[i][next[i]].as_slice()]);
                next[i] += 1;
            }
        }
        for name in &names {
            writer.end(&mut out, name);
        }
        let (summary, read) = read_all(&out, chunk).unwrap();
        for (i, name) in names.iter().enumerate() {
            let back: Vec<Vec<u8>> =
                read.iter().filter(|(n, _)| n == name).map(|(_, d)| d.clone()).collect();
            prop_assert_eq!(&back, &docs[i]);
            prop_assert_eq!(summary.ends[name].documents, docs[i].len() as u64);
        }
    }
}

/// Regression (Trust III, 21): archives of the mid-2021 mongodump builds that first dumped
/// time-series collections (tool 100.3.1, server 5.0.0-rc0) hold the collection's metadata
/// under `<db>.<name>` but its data and end-of-file block under `<db>.system.buckets.<name>`;
/// they were read as "truncated". They read as the newer shape does.
#[test]
fn an_old_time_series_archive_is_read_as_truncated() {
    let old_header = Header {
        concurrent_collections: 4,
        version: "0.1".into(),
        server_version: "5.0.0-rc0".into(),
        tool_version: "100.3.1-11-g5f5a0b8a".into(),
    };
    let weather = collection("metrics", "weather", "timeseries");
    let mut out = Vec::new();
    let mut writer = ArchiveWriter::new(&mut out, &old_header, std::slice::from_ref(&weather));
    let buckets = Namespace::new("metrics", "system.buckets.weather");
    let doc = bson(&[el("_id", int32(1))]);
    writer.segment(&mut out, &buckets, [doc.as_slice()]);
    let crc = writer.end(&mut out, &buckets);
    for chunk in [1, 5, out.len()] {
        let (summary, docs) = read_all(&out, chunk).unwrap();
        assert_eq!(docs.len(), 1);
        let end = &summary.ends[&weather.namespace];
        assert_eq!((end.documents, end.crc), (1, crc));
    }
    // Without its buckets' end it is still truncated.
    let cut = &out[..out.len() - 20];
    assert!(read_all(cut, 7).unwrap_err().contains("truncated"));
}
