//! Reads an archive fed in chunks of any size, checking its framing and every namespace's CRC.

use std::collections::{BTreeMap, HashMap};

use bson::RawDocument;

use crate::{
    ArchiveError, CollectionMetadata, Header, Namespace, NamespaceCrc, MAGIC, MAX_DOCUMENT,
};

/// What the reader found, block by block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    Header(Header),
    /// One namespace of the prelude.
    Collection(CollectionMetadata),
    /// The prelude is over: documents follow.
    PreludeEnd,
    /// One document of a namespace, its bytes as in the archive.
    Document {
        namespace: &'a Namespace,
        bytes: &'a [u8],
    },
    /// A namespace's end-of-file block, its CRC checked.
    End(NamespaceEnd),
}

/// A namespace that ended, with what its documents added up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceEnd {
    pub namespace: Namespace,
    pub documents: u64,
    pub bytes: u64,
    /// The CRC, as stored and as computed (they are equal, or the reader stops).
    pub crc: i64,
}

/// What a whole, checked archive held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub header: Option<Header>,
    pub collections: Vec<CollectionMetadata>,
    /// Every namespace that ended, by name.
    pub ends: BTreeMap<Namespace, NamespaceEnd>,
    /// The archive's length.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Magic,
    Header,
    Prelude,
    /// Between blocks: a namespace header, or the end of the archive.
    Blocks,
    /// Inside a segment: a document, or the terminator.
    Segment,
    /// After an end-of-file header: its terminator.
    EofTerminator,
}

struct Progress {
    documents: u64,
    bytes: u64,
    crc: NamespaceCrc,
}

/// A streaming archive reader: [`ArchiveReader::feed`] bytes as they arrive, then
/// [`ArchiveReader::finish`].
pub struct ArchiveReader {
    state: State,
    buf: Vec<u8>,
    /// Where the unparsed bytes start in `buf`.
    start: usize,
    /// Archive offset of `buf[0]`.
    base: u64,
    current: Option<Namespace>,
    open: HashMap<Namespace, Progress>,
    summary: Summary,
}

impl Default for ArchiveReader {
    fn default() -> Self {
        ArchiveReader::new()
    }
}

/// A block that is not all in the buffer yet, or a fault.
enum Stop {
    Need,
    Bad(ArchiveError),
}

impl ArchiveReader {
    pub fn new() -> ArchiveReader {
        ArchiveReader {
            state: State::Magic,
            buf: Vec::new(),
            start: 0,
            base: 0,
            current: None,
            open: HashMap::new(),
            summary: Summary::default(),
        }
    }

    /// What has been read so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Parses what `chunk` completes; calls `on_item` for every block and document.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        on_item: &mut dyn FnMut(Item<'_>),
    ) -> Result<(), ArchiveError> {
        self.buf.extend_from_slice(chunk);
        let buf = std::mem::take(&mut self.buf);
        let result = self.parse(&buf, on_item);
        self.buf = buf;
        result?;
        // Drop what has been parsed once it is most of the buffer.
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        Ok(())
    }

    /// Ends the stream: an error if it stops inside a block, or a namespace that has
    /// documents in the archive never reached its end-of-file block.
    pub fn finish(mut self) -> Result<Summary, ArchiveError> {
        let at = self.base + self.start as u64;
        if self.start != self.buf.len() || self.state != State::Blocks {
            return Err(ArchiveError::new(
                at,
                format!(
                    "the archive ends inside {} (truncated)",
                    match self.state {
                        State::Magic => "its magic number".to_string(),
                        State::Header => "its header".to_string(),
                        State::Prelude => "its prelude".to_string(),
                        State::Segment | State::Blocks => match &self.current {
                            Some(ns) => format!("a segment of {ns}"),
                            None => "a block".to_string(),
                        },
                        State::EofTerminator => "an end-of-file block".to_string(),
                    }
                ),
            ));
        }
        // mongodump builds of mid-2021 (the first to dump MongoDB 5.0's time-series collections)
        // put a time-series collection's metadata in the prelude under `<db>.<name>` but its
        // data and end-of-file block under `<db>.system.buckets.<name>`: that end is the
        // collection's, read as the newer shape (everything under `<db>.<name>`) is.
        for collection in &self.summary.collections {
            let own = &collection.namespace;
            if collection.kind != "timeseries" || self.summary.ends.contains_key(own) {
                continue;
            }
            let buckets =
                Namespace::new(own.db.clone(), format!("system.buckets.{}", own.collection));
            if let Some(mut end) = self.summary.ends.remove(&buckets) {
                end.namespace = own.clone();
                self.summary.ends.insert(own.clone(), end);
            }
        }
        let mut unfinished: Vec<String> = self.open.keys().map(|ns| ns.to_string()).collect();
        for collection in &self.summary.collections {
            if collection.has_documents() && !self.summary.ends.contains_key(&collection.namespace)
            {
                unfinished.push(collection.namespace.to_string());
            }
        }
        if !unfinished.is_empty() {
            unfinished.sort();
            unfinished.dedup();
            return Err(ArchiveError::new(
                at,
                format!(
                    "the archive ends before the end-of-file block of {} (truncated)",
                    unfinished.join(", ")
                ),
            ));
        }
        self.summary.bytes = at;
        Ok(self.summary)
    }

    fn parse(&mut self, buf: &[u8], on_item: &mut dyn FnMut(Item<'_>)) -> Result<(), ArchiveError> {
        loop {
            match self.step(buf, on_item) {
                Ok(()) => {}
                Err(Stop::Need) => return Ok(()),
                Err(Stop::Bad(e)) => return Err(e),
            }
        }
    }

    fn bad<T>(&self, at: usize, message: impl Into<String>) -> Result<T, Stop> {
        Err(Stop::Bad(ArchiveError::new(self.base + at as u64, message)))
    }

    /// Parses one unit (the magic number, a document or a terminator) at `self.start`.
    fn step(&mut self, buf: &[u8], on_item: &mut dyn FnMut(Item<'_>)) -> Result<(), Stop> {
        let at = self.start;
        let word: [u8; 4] = match buf.get(at..at + 4) {
            Some(w) => [w[0], w[1], w[2], w[3]],
            None => return Err(Stop::Need),
        };
        if self.state == State::Magic {
            if u32::from_le_bytes(word) != MAGIC {
                return self.bad(at, "not a mongodump archive (its magic number is missing)");
            }
            self.start += 4;
            self.state = State::Header;
            return Ok(());
        }
        let length = i32::from_le_bytes(word);
        if length == -1 {
            self.start += 4;
            return self.terminator(at, on_item);
        }
        let length = match usize::try_from(length) {
            Ok(n) if (5..=MAX_DOCUMENT).contains(&n) => n,
            _ => {
                return self.bad(
                    at,
                    format!("a BSON document cannot be {length} bytes long (damaged archive)"),
                )
            }
        };
        let Some(bytes) = buf.get(at..at + length) else {
            return Err(Stop::Need);
        };
        if bytes[length - 1] != 0 {
            return self.bad(
                at,
                "a BSON document does not end with a NUL byte (damaged archive)",
            );
        }
        self.start += length;
        self.document(at, bytes, on_item)
    }

    fn terminator(&mut self, at: usize, on_item: &mut dyn FnMut(Item<'_>)) -> Result<(), Stop> {
        match self.state {
            State::Prelude => {
                self.state = State::Blocks;
                on_item(Item::PreludeEnd);
                Ok(())
            }
            State::Segment | State::EofTerminator => {
                self.state = State::Blocks;
                self.current = None;
                Ok(())
            }
            State::Header => self.bad(at, "the archive has no header"),
            State::Blocks => self.bad(at, "a terminator where a namespace header belongs"),
            State::Magic => unreachable!("the magic number is read first"),
        }
    }

    fn document(
        &mut self,
        at: usize,
        bytes: &[u8],
        on_item: &mut dyn FnMut(Item<'_>),
    ) -> Result<(), Stop> {
        match self.state {
            State::Header => {
                let header = self.parse_header(at, bytes)?;
                self.summary.header = Some(header.clone());
                self.state = State::Prelude;
                on_item(Item::Header(header));
            }
            State::Prelude => {
                let collection = self.parse_metadata(at, bytes)?;
                self.summary.collections.push(collection.clone());
                on_item(Item::Collection(collection));
            }
            State::Blocks => self.namespace_header(at, bytes, on_item)?,
            State::Segment => {
                let Some(namespace) = self.current.as_ref() else {
                    return self.bad(at, "a document outside any namespace");
                };
                let progress = self.open.get_mut(namespace).ok_or_else(|| {
                    Stop::Bad(ArchiveError::new(
                        self.base + at as u64,
                        "a document outside any namespace",
                    ))
                })?;
                progress.documents += 1;
                progress.bytes += bytes.len() as u64;
                progress.crc.update(bytes);
                on_item(Item::Document { namespace, bytes });
            }
            State::EofTerminator => {
                return self.bad(at, "an end-of-file block is not followed by its terminator")
            }
            State::Magic => unreachable!("the magic number is read first"),
        }
        Ok(())
    }

    fn namespace_header(
        &mut self,
        at: usize,
        bytes: &[u8],
        on_item: &mut dyn FnMut(Item<'_>),
    ) -> Result<(), Stop> {
        let doc = self.raw(at, bytes, "namespace header")?;
        let namespace = Namespace::new(
            self.field(at, doc.get_str("db"), "namespace header", "db")?,
            self.field(
                at,
                doc.get_str("collection"),
                "namespace header",
                "collection",
            )?,
        );
        let eof = doc.get_bool("EOF").unwrap_or(false);
        if self.summary.ends.contains_key(&namespace) {
            return self.bad(
                at,
                format!("{namespace} continues after its end-of-file block"),
            );
        }
        if !eof {
            self.open.entry(namespace.clone()).or_insert(Progress {
                documents: 0,
                bytes: 0,
                crc: NamespaceCrc::default(),
            });
            self.current = Some(namespace);
            self.state = State::Segment;
            return Ok(());
        }
        let stored = match doc.get_i64("CRC") {
            Ok(crc) => crc,
            // Older writers may store a small CRC as an int32.
            Err(_) => i64::from(self.field(at, doc.get_i32("CRC"), "end-of-file block", "CRC")?),
        };
        let progress = self.open.remove(&namespace).unwrap_or(Progress {
            documents: 0,
            bytes: 0,
            crc: NamespaceCrc::default(),
        });
        let computed = progress.crc.value();
        if computed != stored {
            return self.bad(
                at,
                format!(
                    "the CRC of {namespace} does not match: the archive says {:#018x}, its {} \
                     documents give {:#018x} (damaged archive)",
                    stored as u64, progress.documents, computed as u64
                ),
            );
        }
        let end = NamespaceEnd {
            namespace: namespace.clone(),
            documents: progress.documents,
            bytes: progress.bytes,
            crc: computed,
        };
        self.summary.ends.insert(namespace, end.clone());
        self.state = State::EofTerminator;
        on_item(Item::End(end));
        Ok(())
    }

    fn parse_header(&self, at: usize, bytes: &[u8]) -> Result<Header, Stop> {
        let doc = self.raw(at, bytes, "header")?;
        let header = Header {
            concurrent_collections: doc.get_i32("concurrent_collections").unwrap_or(1),
            version: self
                .field(at, doc.get_str("version"), "header", "version")?
                .to_string(),
            server_version: doc.get_str("server_version").unwrap_or("").to_string(),
            tool_version: doc.get_str("tool_version").unwrap_or("").to_string(),
        };
        if header.version != crate::FORMAT_VERSION {
            return self.bad(
                at,
                format!(
                    "archive format version {:?} is not one this reader knows ({})",
                    header.version,
                    crate::FORMAT_VERSION
                ),
            );
        }
        Ok(header)
    }

    fn parse_metadata(&self, at: usize, bytes: &[u8]) -> Result<CollectionMetadata, Stop> {
        let doc = self.raw(at, bytes, "collection metadata")?;
        Ok(CollectionMetadata {
            namespace: Namespace::new(
                self.field(at, doc.get_str("db"), "collection metadata", "db")?,
                self.field(
                    at,
                    doc.get_str("collection"),
                    "collection metadata",
                    "collection",
                )?,
            ),
            metadata: doc.get_str("metadata").unwrap_or("").to_string(),
            size: doc.get_i32("size").unwrap_or(0),
            kind: doc.get_str("type").unwrap_or("").to_string(),
        })
    }

    fn raw<'b>(&self, at: usize, bytes: &'b [u8], what: &str) -> Result<&'b RawDocument, Stop> {
        RawDocument::from_bytes(bytes).or_else(|e| self.bad(at, format!("the {what}: {e}")))
    }

    fn field<T, E: std::fmt::Display>(
        &self,
        at: usize,
        value: Result<T, E>,
        what: &str,
        name: &str,
    ) -> Result<T, Stop> {
        value.or_else(|e| self.bad(at, format!("the {what}'s {name:?}: {e}")))
    }
}
