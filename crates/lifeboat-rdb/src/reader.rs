//! The record-by-record reader. Each call to [`RdbReader::feed`] parses as many whole records
//! as the buffered bytes hold; a record cut by the end of a chunk is parsed again, from its
//! start, once enough new bytes have arrived (the wait doubles, so a large value costs linear
//! time however small the chunks).

use std::collections::BTreeMap;

use crate::crc64::{crc64, Crc64};
use crate::{lzf, RdbError, MAX_RDB_VERSION};

// Opcodes (rdb.h).
const OP_SLOT_INFO: u8 = 244;
const OP_FUNCTION2: u8 = 245;
const OP_FUNCTION_PRE_GA: u8 = 246;
const OP_MODULE_AUX: u8 = 247;
const OP_IDLE: u8 = 248;
const OP_FREQ: u8 = 249;
const OP_AUX: u8 = 250;
const OP_RESIZEDB: u8 = 251;
const OP_EXPIRETIME_MS: u8 = 252;
const OP_EXPIRETIME: u8 = 253;
const OP_SELECTDB: u8 = 254;
const OP_EOF: u8 = 255;

/// No single string in Redis exceeds 512 MiB (proto-max-bulk-len); a longer one is corruption.
const MAX_STRING: u64 = 512 * 1024 * 1024;

/// A key's type, as `TYPE` names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ValueType {
    String,
    List,
    Set,
    SortedSet,
    Hash,
    Stream,
    /// A module type, by its 9-character name.
    Module(String),
}

impl ValueType {
    pub fn name(&self) -> &str {
        match self {
            ValueType::String => "string",
            ValueType::List => "list",
            ValueType::Set => "set",
            ValueType::SortedSet => "zset",
            ValueType::Hash => "hash",
            ValueType::Stream => "stream",
            ValueType::Module(name) => name,
        }
    }
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One key as it stands in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub db: u64,
    pub key: Vec<u8>,
    pub value_type: ValueType,
    /// The RDB type byte (the encoding), e.g. 0 for a plain string, 16 for a listpack hash.
    pub type_byte: u8,
    /// Absolute expiry in Unix milliseconds.
    pub expires_at_ms: Option<i64>,
    /// The value's bytes after the type byte, exactly as serialized.
    pub value: Vec<u8>,
    /// Offset of the key's record in the stream.
    pub offset: u64,
}

impl KeyEntry {
    /// The `DUMP` payload `RESTORE` accepts: type byte, value, RDB version (2 bytes, little
    /// endian), CRC64 of all that (8 bytes, little endian).
    pub fn dump_payload(&self, rdb_version: u16) -> Vec<u8> {
        let mut p = Vec::with_capacity(self.value.len() + 11);
        p.push(self.type_byte);
        p.extend_from_slice(&self.value);
        p.extend_from_slice(&rdb_version.to_le_bytes());
        let crc = crc64(&p);
        p.extend_from_slice(&crc.to_le_bytes());
        p
    }
}

impl KeyEntry {
    /// Whether the value is a collection with no elements. redis-server skips such keys when
    /// it loads a file ("empty keys skipped", `RDB_LOAD_ERR_EMPTY_KEY` in rdb.c) and `RESTORE`
    /// refuses their payload ("Bad data format"), so a restore skips them the same way.
    /// Older Redis versions and other tools could write them.
    pub fn is_empty_collection(&self) -> bool {
        let mut c = Cursor {
            buf: &self.value,
            pos: 0,
            base: self.offset,
        };
        let empty = match self.type_byte {
            // Quicklists: a node count, then the nodes; redis-server drops empty nodes as it
            // loads (rdbLoadObject), so a list whose nodes are all empty is an empty key too.
            // Quicklist 1: each node a ziplist. Quicklist 2: each node a container (1 plain,
            // 2 packed) and a blob; a plain node holds one element.
            14 | 18 => c.length().and_then(|nodes| {
                for _ in 0..nodes {
                    let plain = self.type_byte == 18 && c.length()? == 1;
                    let node = c.string()?;
                    let node_empty = match self.type_byte {
                        14 => node.get(10) == Some(&0xff),
                        _ => !plain && node.get(6) == Some(&0xff),
                    };
                    if !node_empty {
                        return Ok(false);
                    }
                }
                Ok(true)
            }),
            // Element counts first: list, set, zset, hash, zset2, hash with metadata.
            1..=5 | 22 => c.length().map(|n| n == 0),
            // Hash with field expiry (GA form): the smallest expiry, then the count.
            24 => c.take(8).and_then(|_| c.length()).map(|n| n == 0),
            // Compact encodings, one string blob each; its header holds the element count.
            9 | 10 | 11 | 12 | 13 | 16 | 17 | 20 | 23 => {
                c.string().map(|blob| match self.type_byte {
                    // zipmap: a length byte, then the end mark 0xff if there is no entry.
                    9 => blob.get(1) == Some(&0xff),
                    // ziplist: 10-byte header (bytes, tail, count), then the end mark.
                    10 | 12 | 13 => blob.get(10) == Some(&0xff),
                    // intset: encoding (4 bytes), then the element count (4 bytes, little endian).
                    11 => blob.get(4..8) == Some(&[0, 0, 0, 0][..]),
                    // listpack: 6-byte header (bytes, count), then the end mark.
                    _ => blob.get(6) == Some(&0xff),
                })
            }
            _ => Ok(false),
        };
        empty.unwrap_or(false)
    }
}

/// What the reader found, record by record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Aux {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    SelectDb(u64),
    ResizeDb {
        keys: u64,
        expires: u64,
    },
    Key(KeyEntry),
    /// A function library (Redis 7+): its code.
    Function(Vec<u8>),
    /// Module data outside any key (module aux), by module name.
    ModuleAux(String),
}

/// What a whole, checked stream held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub rdb_version: u16,
    /// Keys per database and type name.
    pub keys: BTreeMap<u64, BTreeMap<String, u64>>,
    pub functions: u64,
    /// The aux fields (redis-ver, ctime, ...), as text where they are text.
    pub aux: BTreeMap<String, String>,
    /// `None` when the file was written with `rdbchecksum no` (a zero trailer) or is older
    /// than version 5 (no trailer).
    pub crc64: Option<u64>,
    pub bytes: u64,
}

impl Summary {
    pub fn total_keys(&self) -> u64 {
        self.keys.values().flat_map(|t| t.values()).sum()
    }
}

enum Stop {
    /// The buffered bytes end inside this record.
    Need,
    Bad(RdbError),
}

type Parse<T> = Result<T, Stop>;

/// A position in the buffered bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
}

enum Length {
    Plain(u64),
    /// A string stored as an integer (0: 8 bit, 1: 16 bit, 2: 32 bit) or LZF-compressed (3).
    Encoded(u8),
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn bad<T>(&self, message: impl Into<String>) -> Parse<T> {
        Err(Stop::Bad(RdbError::new(self.offset(), message)))
    }

    fn take(&mut self, n: u64) -> Parse<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| Stop::Need)?;
        let end = self.pos.checked_add(n).ok_or(Stop::Need)?;
        let s = self.buf.get(self.pos..end).ok_or(Stop::Need)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Parse<u8> {
        Ok(self.take(1)?[0])
    }

    fn le_u32(&mut self) -> Parse<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn le_u64(&mut self) -> Parse<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn length_or_encoding(&mut self) -> Parse<Length> {
        let first = self.u8()?;
        Ok(match first >> 6 {
            0 => Length::Plain(u64::from(first & 0x3f)),
            1 => Length::Plain((u64::from(first & 0x3f) << 8) | u64::from(self.u8()?)),
            2 => match first {
                0x80 => {
                    let b = self.take(4)?;
                    Length::Plain(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
                }
                0x81 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(self.take(8)?);
                    Length::Plain(u64::from_be_bytes(a))
                }
                _ => return self.bad(format!("unknown length encoding 0x{first:02x}")),
            },
            _ => Length::Encoded(first & 0x3f),
        })
    }

    fn length(&mut self) -> Parse<u64> {
        match self.length_or_encoding()? {
            Length::Plain(n) => Ok(n),
            Length::Encoded(_) => self.bad("expected a length, found an encoded string"),
        }
    }

    /// A string, decoded (integers as decimal text, LZF decompressed).
    fn string(&mut self) -> Parse<Vec<u8>> {
        match self.length_or_encoding()? {
            Length::Plain(n) => {
                if n > MAX_STRING {
                    return self.bad(format!("a string of {n} bytes is longer than Redis allows"));
                }
                Ok(self.take(n)?.to_vec())
            }
            Length::Encoded(0) => Ok((self.u8()? as i8).to_string().into_bytes()),
            Length::Encoded(1) => {
                let b = self.take(2)?;
                Ok(i16::from_le_bytes([b[0], b[1]]).to_string().into_bytes())
            }
            Length::Encoded(2) => Ok((self.le_u32()? as i32).to_string().into_bytes()),
            Length::Encoded(3) => {
                let at = self.offset();
                let compressed = self.length()?;
                let plain = self.length()?;
                if plain > MAX_STRING {
                    return self.bad(format!(
                        "a string of {plain} bytes is longer than Redis allows"
                    ));
                }
                let data = self.take(compressed)?;
                lzf::decompress(data, plain as usize).ok_or_else(|| {
                    Stop::Bad(RdbError::new(
                        at,
                        "an LZF-compressed string does not decompress",
                    ))
                })
            }
            Length::Encoded(e) => self.bad(format!("unknown string encoding {e}")),
        }
    }

    /// Steps over a string without decoding it.
    fn skip_string(&mut self) -> Parse<()> {
        match self.length_or_encoding()? {
            Length::Plain(n) => {
                if n > MAX_STRING {
                    return self.bad(format!("a string of {n} bytes is longer than Redis allows"));
                }
                self.take(n)?;
            }
            Length::Encoded(0) => {
                self.take(1)?;
            }
            Length::Encoded(1) => {
                self.take(2)?;
            }
            Length::Encoded(2) => {
                self.take(4)?;
            }
            Length::Encoded(3) => {
                let compressed = self.length()?;
                self.length()?;
                self.take(compressed)?;
            }
            Length::Encoded(e) => return self.bad(format!("unknown string encoding {e}")),
        }
        Ok(())
    }

    /// A count of elements; each takes at least one byte, so a count beyond what a string may
    /// hold is corruption.
    fn count(&mut self) -> Parse<u64> {
        let n = self.length()?;
        if n > MAX_STRING * 4 {
            return self.bad(format!("a count of {n} elements is not plausible"));
        }
        Ok(n)
    }

    /// The old (type 3) sorted-set score: a length byte and that much text; 253..255 are
    /// NaN, +inf and -inf with no text.
    fn skip_text_double(&mut self) -> Parse<()> {
        let len = self.u8()?;
        if len < 253 {
            self.take(u64::from(len))?;
        }
        Ok(())
    }

    /// Module data written with annotations (RDB 9+): opcodes until EOF (0).
    fn skip_module_opcodes(&mut self) -> Parse<()> {
        loop {
            match self.length()? {
                0 => return Ok(()),
                1 | 2 => {
                    self.length()?;
                }
                3 => {
                    self.take(4)?;
                }
                4 => {
                    self.take(8)?;
                }
                5 => self.skip_string()?,
                op => return self.bad(format!("unknown module opcode {op}")),
            }
        }
    }

    /// Steps over a value of RDB type `t`.
    fn skip_value(&mut self, t: u8) -> Parse<()> {
        match t {
            // String, and every compact encoding stored as one string blob.
            0 | 9 | 10 | 11 | 12 | 13 | 16 | 17 | 20 | 23 => self.skip_string(),
            // List (linked), set: elements.
            1 | 2 => {
                for _ in 0..self.count()? {
                    self.skip_string()?;
                }
                Ok(())
            }
            3 => {
                for _ in 0..self.count()? {
                    self.skip_string()?;
                    self.skip_text_double()?;
                }
                Ok(())
            }
            4 => {
                for _ in 0..self.count()? {
                    self.skip_string()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            5 => {
                for _ in 0..self.count()? {
                    self.skip_string()?;
                    self.take(8)?;
                }
                Ok(())
            }
            6 => {
                let id = self.length()?;
                self.bad(format!(
                    "module type {} was saved in the pre-release module format, which cannot be read without the module",
                    module_name(id)
                ))
            }
            7 => {
                self.length()?;
                self.skip_module_opcodes()
            }
            14 => {
                for _ in 0..self.count()? {
                    self.skip_string()?;
                }
                Ok(())
            }
            18 => {
                for _ in 0..self.count()? {
                    let container = self.length()?;
                    if container != 1 && container != 2 {
                        return self.bad(format!("unknown quicklist container {container}"));
                    }
                    self.skip_string()?;
                }
                Ok(())
            }
            15 | 19 | 21 => self.skip_stream(t),
            // Hash with field expiry (7.4): per field a relative TTL, the field, the value;
            // the GA form (24) starts with the smallest expiry.
            22 | 24 => {
                if t == 24 {
                    self.take(8)?;
                }
                for _ in 0..self.count()? {
                    self.length()?;
                    self.skip_string()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            25 => {
                self.take(8)?;
                self.skip_string()
            }
            other => self.bad(format!(
                "unknown value type {other} (written by a Redis newer than 7.4?)"
            )),
        }
    }

    fn skip_stream(&mut self, t: u8) -> Parse<()> {
        for _ in 0..self.count()? {
            self.skip_string()?; // node key: the master entry id
            self.skip_string()?; // listpack
        }
        self.length()?; // number of entries
        self.length()?; // last id: ms
        self.length()?; // last id: seq
        if t >= 19 {
            for _ in 0..5 {
                // first id, max deleted id, entries added
                self.length()?;
            }
        }
        for _ in 0..self.count()? {
            self.skip_string()?; // group name
            self.length()?; // last delivered id: ms
            self.length()?; // seq
            if t >= 19 {
                self.length()?; // entries read
            }
            for _ in 0..self.count()? {
                self.take(16)?; // entry id
                self.take(8)?; // delivery time
                self.length()?; // delivery count
            }
            for _ in 0..self.count()? {
                self.skip_string()?; // consumer name
                self.take(8)?; // seen time
                if t >= 21 {
                    self.take(8)?; // active time
                }
                for _ in 0..self.count()? {
                    self.take(16)?;
                }
            }
        }
        Ok(())
    }
}

fn value_type(t: u8, value: &[u8]) -> ValueType {
    match t {
        0 => ValueType::String,
        1 | 10 | 14 | 18 => ValueType::List,
        2 | 11 | 20 => ValueType::Set,
        3 | 5 | 12 | 17 => ValueType::SortedSet,
        4 | 9 | 13 | 16 | 22..=25 => ValueType::Hash,
        15 | 19 | 21 => ValueType::Stream,
        _ => {
            // Module: the value starts with the module id.
            let mut c = Cursor {
                buf: value,
                pos: 0,
                base: 0,
            };
            match c.length() {
                Ok(id) => ValueType::Module(module_name(id)),
                Err(_) => ValueType::Module("unknown".into()),
            }
        }
    }
}

/// A module type's 9-character name, from the top 54 bits of its id.
fn module_name(id: u64) -> String {
    const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..9)
        .map(|i| CHARSET[((id >> (64 - 6 * (i + 1))) & 63) as usize] as char)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Body,
    Trailer,
    Done,
}

/// Reads an RDB stream fed in chunks of any size.
#[derive(Debug)]
pub struct RdbReader {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Bytes of `buf` already parsed.
    start: usize,
    /// Parse again only once `buf` holds this many bytes past `start`.
    wait_for: usize,
    state: State,
    db: u64,
    crc: Crc64,
    summary: Summary,
    /// `false`: count keys but hand out no [`Item::Key`] (no copies of values).
    keys_out: bool,
}

impl Default for RdbReader {
    fn default() -> Self {
        Self::new()
    }
}

impl RdbReader {
    pub fn new() -> Self {
        RdbReader {
            buf: Vec::new(),
            base: 0,
            start: 0,
            wait_for: 0,
            state: State::Header,
            db: 0,
            crc: Crc64::default(),
            summary: Summary::default(),
            keys_out: true,
        }
    }

    /// A reader that checks and counts only: no [`Item::Key`] is handed out, so values are
    /// never copied (what a backup needs while it streams).
    pub fn counting() -> Self {
        RdbReader {
            keys_out: false,
            ..Self::new()
        }
    }

    /// The RDB version, once the header has been read.
    pub fn rdb_version(&self) -> Option<u16> {
        (self.state != State::Header).then_some(self.summary.rdb_version)
    }

    /// What has been counted so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Parses what `chunk` completes; calls `on_item` for every record.
    pub fn feed(&mut self, chunk: &[u8], on_item: &mut dyn FnMut(Item)) -> Result<(), RdbError> {
        if self.state == State::Done {
            if chunk.is_empty() {
                return Ok(());
            }
            return Err(RdbError::new(
                self.base + self.buf.len() as u64,
                "bytes after the end of the RDB file",
            ));
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() - self.start < self.wait_for {
            return Ok(());
        }
        self.parse(on_item)?;
        // Drop what has been parsed once it is most of the buffer.
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        Ok(())
    }

    /// Ends the stream: an error if it stopped before the end of the file or its checksum
    /// does not match.
    pub fn finish(mut self, on_item: &mut dyn FnMut(Item)) -> Result<Summary, RdbError> {
        self.wait_for = 0;
        self.parse(on_item)?;
        if self.state != State::Done {
            return Err(RdbError::new(
                self.base + self.start as u64,
                "the stream ends before the end of the RDB file (truncated)",
            ));
        }
        if self.start != self.buf.len() {
            return Err(RdbError::new(
                self.base + self.start as u64,
                "bytes after the end of the RDB file",
            ));
        }
        self.summary.bytes = self.base + self.buf.len() as u64;
        Ok(self.summary)
    }

    fn parse(&mut self, on_item: &mut dyn FnMut(Item)) -> Result<(), RdbError> {
        // The cursor borrows the buffer while records update the rest of the reader.
        let buf = std::mem::take(&mut self.buf);
        let result = self.parse_buffered(&buf, on_item);
        self.buf = buf;
        result
    }

    fn parse_buffered(
        &mut self,
        buf: &[u8],
        on_item: &mut dyn FnMut(Item),
    ) -> Result<(), RdbError> {
        loop {
            let mut c = Cursor {
                buf,
                pos: self.start,
                base: self.base,
            };
            let outcome = match self.state {
                State::Header => Self::header(&mut c).map(|v| {
                    self.summary.rdb_version = v;
                    self.state = State::Body;
                }),
                State::Body => self.record(&mut c, on_item),
                State::Trailer => match c.le_u64() {
                    Ok(stored) => {
                        let computed = self.crc.value();
                        if stored != 0 && stored != computed {
                            return Err(RdbError::new(
                                self.base + self.start as u64,
                                format!(
                                    "the CRC64 trailer is {stored:016x} but the content's is {computed:016x} (the file is damaged)"
                                ),
                            ));
                        }
                        self.summary.crc64 = (stored != 0).then_some(stored);
                        self.state = State::Done;
                        self.start = c.pos;
                        return Ok(());
                    }
                    Err(e) => Err(e),
                },
                State::Done => return Ok(()),
            };
            match outcome {
                Ok(()) => {
                    // Everything before the trailer is covered by the checksum.
                    self.crc.update(&buf[self.start..c.pos]);
                    self.start = c.pos;
                    self.wait_for = 0;
                }
                Err(Stop::Need) => {
                    self.wait_for = (buf.len() - self.start).saturating_mul(2).max(64);
                    return Ok(());
                }
                Err(Stop::Bad(e)) => return Err(e),
            }
        }
    }

    fn header(c: &mut Cursor<'_>) -> Parse<u16> {
        let magic = c.take(9)?;
        if &magic[..5] != b"REDIS" {
            return Err(Stop::Bad(RdbError::new(
                0,
                "not an RDB file (it does not start with REDIS)",
            )));
        }
        let version = std::str::from_utf8(&magic[5..])
            .ok()
            .and_then(|v| v.parse::<u16>().ok())
            .ok_or_else(|| Stop::Bad(RdbError::new(5, "the RDB version is not a number")))?;
        if version == 0 || version > MAX_RDB_VERSION {
            return Err(Stop::Bad(RdbError::new(
                5,
                format!("RDB version {version} is not supported (1 to {MAX_RDB_VERSION}: Redis 2.x to 7.4)"),
            )));
        }
        Ok(version)
    }

    /// One record: an opcode, or a key with its value.
    fn record(&mut self, c: &mut Cursor<'_>, on_item: &mut dyn FnMut(Item)) -> Parse<()> {
        let at = c.offset();
        let op = c.u8()?;
        match op {
            OP_EOF => {
                self.state = if self.summary.rdb_version >= 5 {
                    State::Trailer
                } else {
                    State::Done
                };
            }
            OP_SELECTDB => {
                self.db = c.length()?;
                on_item(Item::SelectDb(self.db));
            }
            OP_RESIZEDB => {
                let keys = c.length()?;
                let expires = c.length()?;
                on_item(Item::ResizeDb { keys, expires });
            }
            OP_AUX => {
                let key = c.string()?;
                let value = c.string()?;
                self.summary.aux.insert(
                    String::from_utf8_lossy(&key).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                );
                on_item(Item::Aux { key, value });
            }
            // Expiry and eviction hints belong to the key that follows; they are read here and
            // the key record is parsed together with them.
            OP_EXPIRETIME_MS => {
                let ms = c.le_u64()? as i64;
                return self.key_after_hints(c, on_item, Some(ms), at);
            }
            OP_EXPIRETIME => {
                let s = i64::from(c.le_u32()?);
                return self.key_after_hints(c, on_item, Some(s * 1000), at);
            }
            OP_IDLE | OP_FREQ => {
                return self.key_after_hints_from(c, on_item, op, None, at);
            }
            OP_MODULE_AUX => {
                let id = c.length()?;
                c.length()?; // when opcode
                c.length()?; // when
                c.skip_module_opcodes()?;
                on_item(Item::ModuleAux(module_name(id)));
            }
            OP_FUNCTION2 => {
                let code = c.string()?;
                self.summary.functions += 1;
                on_item(Item::Function(code));
            }
            OP_FUNCTION_PRE_GA => {
                return Err(Stop::Bad(RdbError::new(
                    at,
                    "functions in the Redis 7.0 release-candidate format cannot be read; save the file again with Redis 7.0 or newer",
                )))
            }
            OP_SLOT_INFO => {
                c.length()?;
                c.length()?;
                c.length()?;
            }
            t => self.key(c, on_item, t, None, at)?,
        }
        Ok(())
    }

    fn key_after_hints(
        &mut self,
        c: &mut Cursor<'_>,
        on_item: &mut dyn FnMut(Item),
        expires: Option<i64>,
        at: u64,
    ) -> Parse<()> {
        let next = c.u8()?;
        self.key_after_hints_from(c, on_item, next, expires, at)
    }

    /// Reads IDLE/FREQ hints starting with opcode `op`, then the key.
    fn key_after_hints_from(
        &mut self,
        c: &mut Cursor<'_>,
        on_item: &mut dyn FnMut(Item),
        mut op: u8,
        expires: Option<i64>,
        at: u64,
    ) -> Parse<()> {
        let mut expires = expires;
        loop {
            match op {
                OP_IDLE => {
                    c.length()?;
                }
                OP_FREQ => {
                    c.u8()?;
                }
                OP_EXPIRETIME_MS if expires.is_none() => expires = Some(c.le_u64()? as i64),
                OP_EXPIRETIME if expires.is_none() => {
                    expires = Some(i64::from(c.le_u32()?) * 1000);
                }
                t if t < OP_SLOT_INFO => return self.key(c, on_item, t, expires, at),
                other => {
                    return c.bad(format!(
                        "opcode {other} cannot follow an expiry or eviction hint"
                    ))
                }
            }
            op = c.u8()?;
        }
    }

    fn key(
        &mut self,
        c: &mut Cursor<'_>,
        on_item: &mut dyn FnMut(Item),
        t: u8,
        expires_at_ms: Option<i64>,
        at: u64,
    ) -> Parse<()> {
        if !self.keys_out {
            c.skip_string()?;
            let value_start = c.pos;
            c.skip_value(t)?;
            let value_type = value_type(t, &c.buf[value_start..c.pos]);
            *self
                .summary
                .keys
                .entry(self.db)
                .or_default()
                .entry(value_type.name().to_string())
                .or_default() += 1;
            return Ok(());
        }
        let key = c.string()?;
        let value_start = c.pos;
        c.skip_value(t)?;
        let value = c.buf[value_start..c.pos].to_vec();
        let value_type = value_type(t, &value);
        *self
            .summary
            .keys
            .entry(self.db)
            .or_default()
            .entry(value_type.name().to_string())
            .or_default() += 1;
        on_item(Item::Key(KeyEntry {
            db: self.db,
            key,
            value_type,
            type_byte: t,
            expires_at_ms,
            value,
            offset: at,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small RDB 10 file: aux, db 0 with a plain string, an int-encoded string with an
    /// expiry and an LRU hint, a linked list; db 2 with a listpack-like blob hash; EOF; CRC.
    fn sample() -> Vec<u8> {
        let mut f = b"REDIS0010".to_vec();
        f.extend([OP_AUX, 9]);
        f.extend(b"redis-ver");
        f.extend([6]);
        f.extend(b"7.0.15");
        f.extend([OP_SELECTDB, 0, OP_RESIZEDB, 3, 1]);
        f.extend([0, 1, b'a', 5]);
        f.extend(b"hello");
        f.extend([OP_EXPIRETIME_MS]);
        f.extend(1_900_000_000_000u64.to_le_bytes());
        f.extend([OP_IDLE, 5, 0, 1, b'n', 0xc0, 0x7b]); // "123" as an 8-bit integer
        f.extend([1, 2, b'l', b'1', 2, 1, b'x', 1, b'y']);
        f.extend([OP_SELECTDB, 2, 16, 1, b'h', 3, 1, 2, 3]);
        f.push(OP_EOF);
        let crc = crc64(&f);
        f.extend(crc.to_le_bytes());
        f
    }

    fn read_in_chunks(data: &[u8], chunk: usize) -> Result<(Summary, Vec<Item>), RdbError> {
        let mut r = RdbReader::new();
        let mut items = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            r.feed(piece, &mut |i| items.push(i))?;
        }
        let summary = r.finish(&mut |i| items.push(i))?;
        Ok((summary, items))
    }

    #[test]
    fn reads_keys_types_expiry_and_raw_values_in_any_chunking() {
        let data = sample();
        for chunk in [1, 2, 3, 7, 64, data.len()] {
            let (summary, items) = read_in_chunks(&data, chunk).unwrap();
            assert_eq!(summary.rdb_version, 10);
            assert_eq!(
                summary.aux.get("redis-ver").map(String::as_str),
                Some("7.0.15")
            );
            assert_eq!(summary.total_keys(), 4);
            assert_eq!(summary.keys[&0]["string"], 2);
            assert_eq!(summary.keys[&0]["list"], 1);
            assert_eq!(summary.keys[&2]["hash"], 1);
            assert_eq!(summary.bytes, data.len() as u64);
            let keys: Vec<KeyEntry> = items
                .into_iter()
                .filter_map(|i| match i {
                    Item::Key(k) => Some(k),
                    _ => None,
                })
                .collect();
            assert_eq!(keys[0].key, b"a");
            assert_eq!(keys[0].value, [5, b'h', b'e', b'l', b'l', b'o']);
            assert_eq!(keys[1].key, b"n");
            assert_eq!(keys[1].expires_at_ms, Some(1_900_000_000_000));
            assert_eq!(keys[1].value, [0xc0, 0x7b]);
            assert_eq!(keys[2].value, [2, 1, b'x', 1, b'y']);
            assert_eq!((keys[3].db, keys[3].type_byte), (2, 16));
        }
    }

    #[test]
    fn a_counting_reader_counts_the_same_and_hands_out_no_keys() {
        let data = sample();
        let mut r = RdbReader::counting();
        let mut keys = 0;
        for piece in data.chunks(3) {
            r.feed(piece, &mut |i| {
                keys += usize::from(matches!(i, Item::Key(_)))
            })
            .unwrap();
        }
        let summary = r.finish(&mut |_| {}).unwrap();
        assert_eq!(keys, 0);
        assert_eq!(summary, read_in_chunks(&data, 5).unwrap().0);
    }

    /// Regression: files with empty collections (which redis-server loads, skipping them)
    /// failed the restore with `RESTORE ... ERR Bad data format`.
    #[test]
    fn empty_collections_are_recognised_in_every_encoding() {
        let entry = |type_byte: u8, value: &[u8]| KeyEntry {
            db: 0,
            key: b"k".to_vec(),
            value_type: value_type(type_byte, value),
            type_byte,
            expires_at_ms: None,
            value: value.to_vec(),
            offset: 0,
        };
        let empty: &[(u8, &[u8])] = &[
            (2, &[0]),  // set, linked
            (4, &[0]),  // hash, linked
            (18, &[0]), // quicklist 2, no nodes
            // Quicklists whose nodes are all empty (Trust III, 20): redis-server drops them.
            (
                14,
                &[
                    2, 11, 11, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0xff, 11, 11, 0, 0, 0, 10, 0, 0, 0, 0,
                    0, 0xff,
                ],
            ),
            (18, &[1, 2, 7, 7, 0, 0, 0, 0, 0, 0xff]),
            (11, &[8, 2, 0, 0, 0, 0, 0, 0, 0]), // intset
            (10, &[11, 11, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0xff]), // ziplist
            (16, &[7, 7, 0, 0, 0, 0, 0, 0xff]), // listpack hash
            (20, &[7, 7, 0, 0, 0, 0, 0, 0xff]), // listpack set
            (9, &[2, 0, 0xff]),                 // zipmap
        ];
        for (t, v) in empty {
            assert!(entry(*t, v).is_empty_collection(), "type {t}");
        }
        let full: &[(u8, &[u8])] = &[
            (0, &[0]),                                         // an empty string is a value
            (2, &[1, 1, b'a']),                                // set of one
            (20, &[9, 9, 0, 0, 0, 1, 0, 0x81, b'a', 2, 0xff]), // listpack of one
            (11, &[10, 2, 0, 0, 0, 1, 0, 0, 0, 7, 0]),         // intset of one
            // A quicklist 2 with an empty node and a plain node of one element.
            (18, &[2, 2, 7, 7, 0, 0, 0, 0, 0, 0xff, 1, 1, b'a']),
        ];
        for (t, v) in full {
            assert!(!entry(*t, v).is_empty_collection(), "type {t}");
        }
    }

    #[test]
    fn dump_payload_has_version_and_checksum() {
        let entry = KeyEntry {
            db: 0,
            key: b"k".to_vec(),
            value_type: ValueType::String,
            type_byte: 0,
            expires_at_ms: None,
            value: vec![3, b'b', b'a', b'r'],
            offset: 0,
        };
        let p = entry.dump_payload(10);
        assert_eq!(&p[..7], &[0, 3, b'b', b'a', b'r', 10, 0]);
        assert_eq!(p[7..], crc64(&p[..7]).to_le_bytes());
    }

    #[test]
    fn damage_is_an_error_with_the_offset() {
        let data = sample();
        let mut flipped = data.clone();
        flipped[30] ^= 0x01;
        let e = read_in_chunks(&flipped, 5).unwrap_err();
        assert!(e.message.contains("CRC64") || e.offset > 0, "{e}");
        let e = read_in_chunks(&data[..data.len() - 3], 4).unwrap_err();
        assert!(e.message.contains("truncated"), "{e}");
        let e = read_in_chunks(b"RIDIS0010", 4).unwrap_err();
        assert_eq!(e.offset, 0);
        let e = read_in_chunks(b"REDIS0099", 4).unwrap_err();
        assert!(e.message.contains("99"), "{e}");
        let mut unknown = b"REDIS0010".to_vec();
        unknown.extend([99, 1, b'k']);
        let e = read_in_chunks(&unknown, 100).unwrap_err();
        assert_eq!(e.offset, 12, "{e}");
        assert!(e.message.contains("unknown value type 99"), "{e}");
    }

    #[test]
    fn module_names_decode() {
        // "ReJSON-RL" version 1, as Redis encodes module type ids.
        let charset = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut id: u64 = 0;
        for ch in b"ReJSON-RL" {
            id = (id << 6) | charset.iter().position(|c| c == ch).unwrap() as u64;
        }
        id = (id << 10) | 1;
        assert_eq!(module_name(id), "ReJSON-RL");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_damage_never_panics(
            cut in 0usize..200,
            flips in proptest::collection::vec((0usize..200, 0u8..=255), 0..4),
            chunk in 1usize..50,
        ) {
            let mut data = sample();
            for (at, x) in flips {
                let n = data.len();
                data[at % n] ^= x;
            }
            data.truncate(cut.min(data.len()));
            let _ = read_in_chunks(&data, chunk);
        }

        #[test]
        fn random_bytes_never_panic(tail in proptest::collection::vec(0u8..=255, 0..300)) {
            let mut data = b"REDIS0010".to_vec();
            data.extend(tail);
            let _ = read_in_chunks(&data, 17);
        }
    }
}
