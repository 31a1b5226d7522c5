//! Writes the archive's framing around raw documents, keeping each namespace's CRC.

use std::collections::HashMap;

use bson::rawdoc;

use crate::{CollectionMetadata, Header, Namespace, NamespaceCrc, MAGIC, TERMINATOR};

/// Appends an archive to a buffer: the prelude first ([`ArchiveWriter::new`]), then segments
/// of any namespaces in any interleaving, then each namespace's end ([`ArchiveWriter::end`]).
#[derive(Debug, Default)]
pub struct ArchiveWriter {
    crcs: HashMap<Namespace, NamespaceCrc>,
}

impl ArchiveWriter {
    /// Writes the magic number, the header, the prelude's collection metadata and its
    /// terminator to `out`.
    pub fn new(
        out: &mut Vec<u8>,
        header: &Header,
        collections: &[CollectionMetadata],
    ) -> ArchiveWriter {
        out.extend_from_slice(&MAGIC.to_le_bytes());
        let header = rawdoc! {
            "concurrent_collections": header.concurrent_collections,
            "version": header.version.as_str(),
            "server_version": header.server_version.as_str(),
            "tool_version": header.tool_version.as_str(),
        };
        out.extend_from_slice(header.as_bytes());
        for collection in collections {
            let metadata = rawdoc! {
                "db": collection.namespace.db.as_str(),
                "collection": collection.namespace.collection.as_str(),
                "metadata": collection.metadata.as_str(),
                "size": collection.size,
                "type": collection.kind.as_str(),
            };
            out.extend_from_slice(metadata.as_bytes());
        }
        out.extend_from_slice(&TERMINATOR);
        ArchiveWriter::default()
    }

    /// Writes one segment of a namespace's documents (nothing when there are none: a segment
    /// holds at least one document).
    pub fn segment<'a>(
        &mut self,
        out: &mut Vec<u8>,
        namespace: &Namespace,
        documents: impl IntoIterator<Item = &'a [u8]>,
    ) {
        let mut documents = documents.into_iter().peekable();
        if documents.peek().is_none() {
            return;
        }
        out.extend_from_slice(namespace_header(namespace, false, 0).as_bytes());
        let crc = self.crcs.entry(namespace.clone()).or_default();
        for document in documents {
            crc.update(document);
            out.extend_from_slice(document);
        }
        out.extend_from_slice(&TERMINATOR);
    }

    /// Writes a namespace's end-of-file block, with the CRC of all its documents; returns it.
    pub fn end(&mut self, out: &mut Vec<u8>, namespace: &Namespace) -> i64 {
        let crc = self.crcs.remove(namespace).unwrap_or_default().value();
        out.extend_from_slice(namespace_header(namespace, true, crc).as_bytes());
        out.extend_from_slice(&TERMINATOR);
        crc
    }
}

fn namespace_header(namespace: &Namespace, eof: bool, crc: i64) -> bson::RawDocumentBuf {
    rawdoc! {
        "db": namespace.db.as_str(),
        "collection": namespace.collection.as_str(),
        "EOF": eof,
        "CRC": crc,
    }
}
