//! Redis: load a snapshot into a live server with pipelined `RESTORE key ttl payload ABSTTL`.
//!
//! Each key's DUMP payload is built from the RDB bytes as they stand (lifeboat-rdb), so values
//! are never decoded and re-encoded. Redis has no transaction that spans a whole restore, so
//! the restore reads the snapshot twice: first to check both digests and the RDB's own
//! structure and CRC64 ([`RdbCheck`]), and only then to load it. A damaged snapshot never
//! touches the target.

use std::collections::BTreeMap;

use lifeboat_rdb::{Item, KeyEntry, RdbReader};

use crate::catalog::RedisFingerprint;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::RawSink;
use crate::resp::Connection;
use crate::secret::SecretUrl;

use super::postgres::TargetState;

/// Keys per pipelined batch, and the payload bytes that end a batch early.
const BATCH_KEYS: usize = 1000;
const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Reads a raw stream as RDB: structure, CRC64, key counts.
pub struct RdbCheck {
    reader: RdbReader,
    error: Option<lifeboat_rdb::RdbError>,
}

impl Default for RdbCheck {
    fn default() -> Self {
        RdbCheck {
            reader: RdbReader::counting(),
            error: None,
        }
    }
}

impl RawSink for RdbCheck {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if self.error.is_none() {
            if let Err(e) = self.reader.feed(chunk, &mut |_| {}) {
                self.error = Some(e);
            }
        }
        Ok(())
    }
}

impl RdbCheck {
    /// Findings: damage, or key counts that differ from the manifest's fingerprint.
    pub fn finish(self, recorded: &RedisFingerprint) -> Vec<String> {
        if let Some(e) = self.error {
            return vec![format!("the RDB stream is damaged: {e}")];
        }
        match self.reader.finish(&mut |_| {}) {
            Err(e) => vec![format!("the RDB stream is damaged: {e}")],
            Ok(summary) => recorded.differences(&summary.keys),
        }
    }
}

/// Where each source database goes (`--db-map 0:3`); unmapped databases keep their index.
pub fn target_db(map: &BTreeMap<u64, u64>, db: u64) -> u64 {
    map.get(&db).copied().unwrap_or(db)
}

/// Looks at the target without changing it: its version, and the keys already in the
/// databases the snapshot would be written to.
pub async fn inspect_target(url: &SecretUrl, dbs: &[u64]) -> Result<TargetState> {
    let mut conn = Connection::open(url, ErrorKind::Sink).await?;
    let mut keys = 0i64;
    for db in dbs {
        let select = conn
            .command(&[b"SELECT", db.to_string().as_bytes()])
            .await?;
        if let Err(e) = select {
            return Err(conn
                .error(format!("cannot select database {db}: {e}"))
                .with_hint("the target has fewer databases (see its `databases` setting); map them with --db-map SRC:DST"));
        }
        match conn.command(&[b"DBSIZE"]).await? {
            Ok(n) => keys += String::from_utf8_lossy(&n).parse::<i64>().unwrap_or(0),
            Err(e) => return Err(conn.error(format!("DBSIZE failed: {e}"))),
        }
    }
    Ok(TargetState {
        server_version: conn.server_version,
        objects: keys,
    })
}

/// Empties the given databases of the target (`--clean`).
pub async fn flush(url: &SecretUrl, dbs: &[u64]) -> Result<()> {
    let mut conn = Connection::open(url, ErrorKind::Sink).await?;
    for db in dbs {
        for cmd in [
            &[&b"SELECT"[..], db.to_string().as_bytes()][..],
            &[b"FLUSHDB"],
        ] {
            if let Err(e) = conn.command(cmd).await? {
                return Err(conn.error(format!("cannot empty database {db}: {e}")));
            }
        }
    }
    Ok(())
}

/// Keys per target database and type.
pub type KeyCounts = BTreeMap<u64, BTreeMap<String, u64>>;

/// What a finished load did.
#[derive(Debug, Default)]
pub struct Loaded {
    pub restored: u64,
    /// Keys whose expiry had passed when they were sent (Redis drops them on RESTORE).
    pub expired: KeyCounts,
    /// Empty collections, skipped as redis-server skips them.
    pub skipped_empty: KeyCounts,
}

/// Loads keys as the raw stream goes by, in pipelined batches.
pub struct RedisLoader {
    conn: Connection,
    reader: RdbReader,
    pending: Vec<KeyEntry>,
    pending_bytes: usize,
    replace: bool,
    /// Function libraries are server-wide: replaced with --replace, --clean or --mode swap.
    replace_functions: bool,
    db_map: BTreeMap<u64, u64>,
    selected: Option<u64>,
    source_version: String,
    /// The snapshot's RDB version, once its header has been read (payloads carry it).
    rdb_version: Option<u16>,
    pub restored: u64,
    /// Keys whose expiry had passed when they were sent (Redis drops them on RESTORE), per
    /// target database and type.
    pub expired: BTreeMap<u64, BTreeMap<String, u64>>,
    /// Empty collections skipped (as redis-server skips them on load), per target database and
    /// type.
    pub skipped_empty: BTreeMap<u64, BTreeMap<String, u64>>,
    /// Why loading stopped (the stream itself is still read to the end and digested).
    failure: Option<Error>,
}

impl RedisLoader {
    pub async fn open(
        url: &SecretUrl,
        replace: bool,
        replace_functions: bool,
        db_map: BTreeMap<u64, u64>,
        source_version: &str,
    ) -> Result<RedisLoader> {
        Ok(RedisLoader {
            conn: Connection::open(url, ErrorKind::Sink).await?,
            reader: RdbReader::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            replace,
            replace_functions,
            db_map,
            selected: None,
            source_version: source_version.to_string(),
            rdb_version: None,
            restored: 0,
            expired: BTreeMap::new(),
            skipped_empty: BTreeMap::new(),
            failure: None,
        })
    }

    async fn flush_batch(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let version = self.rdb_version.unwrap_or(lifeboat_rdb::MAX_RDB_VERSION);
        let mut out = Vec::with_capacity(self.pending_bytes + self.pending.len() * 64);
        let mut expected = Vec::with_capacity(self.pending.len());
        for key in &self.pending {
            let db = target_db(&self.db_map, key.db);
            if self.selected != Some(db) {
                Connection::encode(&mut out, &[b"SELECT", db.to_string().as_bytes()]);
                expected.push(None);
                self.selected = Some(db);
            }
            if key
                .expires_at_ms
                .is_some_and(|at| at <= chrono::Utc::now().timestamp_millis())
            {
                *self
                    .expired
                    .entry(db)
                    .or_default()
                    .entry(key.value_type.name().to_string())
                    .or_default() += 1;
            }
            let payload = key.dump_payload(version);
            let ttl = key.expires_at_ms.unwrap_or(0).to_string();
            let mut args: Vec<&[u8]> = vec![b"RESTORE", &key.key, ttl.as_bytes(), &payload];
            if key.expires_at_ms.is_some() {
                args.push(b"ABSTTL");
            }
            if self.replace {
                args.push(b"REPLACE");
            }
            Connection::encode(&mut out, &args);
            expected.push(Some(key));
        }
        self.conn.send(&out).await?;
        let mut first_error: Option<Error> = None;
        for key in expected {
            let reply = self.conn.reply().await?;
            match (reply, key) {
                (Ok(_), Some(_)) => self.restored += 1,
                (Ok(_), None) => {}
                (Err(e), key) if first_error.is_none() => {
                    first_error = Some(self.explain(&e, key, version));
                }
                (Err(_), _) => {}
            }
        }
        self.pending.clear();
        self.pending_bytes = 0;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn explain(&self, reply: &str, key: Option<&KeyEntry>, version: u16) -> Error {
        let name = key.map_or_else(
            || "(SELECT)".to_string(),
            |k| format!("{:?}", String::from_utf8_lossy(&k.key)),
        );
        let e = self
            .conn
            .error(format!("RESTORE of key {name} failed: {reply}"));
        if reply.contains("payload version") {
            e.with_hint(format!(
                "the snapshot is RDB version {version} (Redis {}); the target runs Redis {}, which cannot load it: restore into Redis {} or newer",
                self.source_version, self.conn.server_version, self.source_version
            ))
        } else if reply.contains("BUSYKEY") {
            e.with_hint("the key exists in the target; add --replace to overwrite, or --clean to empty the databases first")
        } else {
            e
        }
    }

    /// Loads what is left and returns the number of keys restored.
    pub async fn finish(self) -> Result<u64> {
        self.finish_counted().await.map(|l| l.restored)
    }

    /// Like [`RedisLoader::finish`], also returning the keys that had expired on arrival and
    /// the empty collections that were skipped.
    pub async fn finish_counted(mut self) -> Result<Loaded> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        let reader = std::mem::take(&mut self.reader);
        let mut rest = Vec::new();
        reader
            .finish(&mut |item| rest.push(item))
            .map_err(|e| Error::integrity(format!("the snapshot's RDB stream is damaged: {e}")))?;
        self.take_items(rest).await?;
        self.flush_batch().await?;
        for (db, types) in &self.skipped_empty {
            for (t, n) in types {
                tracing::warn!(
                    "Skipped {n} empty {t} key(s) of database {db}: Redis cannot hold empty collections and skips them when it loads such a file too."
                );
            }
        }
        Ok(Loaded {
            restored: self.restored,
            expired: self.expired,
            skipped_empty: self.skipped_empty,
        })
    }

    /// Queues keys (sent in batches) and loads function libraries right away: an RDB file
    /// holds them before its keys.
    async fn take_items(&mut self, items: Vec<Item>) -> Result<()> {
        for item in items {
            match item {
                Item::Key(k) if k.is_empty_collection() => {
                    let db = target_db(&self.db_map, k.db);
                    *self
                        .skipped_empty
                        .entry(db)
                        .or_default()
                        .entry(k.value_type.name().to_string())
                        .or_default() += 1;
                }
                Item::Key(k) => {
                    self.pending_bytes += k.value.len() + k.key.len();
                    self.pending.push(k);
                    if self.pending.len() >= BATCH_KEYS || self.pending_bytes >= BATCH_BYTES {
                        self.flush_batch().await?;
                    }
                }
                Item::Function(code) => self.load_function(&code).await?,
                _ => {}
            }
        }
        Ok(())
    }

    async fn load_function(&mut self, code: &[u8]) -> Result<()> {
        let mut args: Vec<&[u8]> = vec![b"FUNCTION", b"LOAD"];
        if self.replace_functions {
            args.push(b"REPLACE");
        }
        args.push(code);
        match self.conn.command(&args).await? {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.conn.error(format!("FUNCTION LOAD failed: {e}"));
                Err(if e.contains("already exists") {
                    err.with_hint("the target has a function library of the same name; add --replace or --clean to replace it")
                } else {
                    err
                })
            }
        }
    }
}

impl RawSink for RedisLoader {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if self.failure.is_some() {
            return Err(std::io::Error::other("the restore already failed"));
        }
        let mut items = Vec::new();
        self.reader
            .feed(chunk, &mut |item| items.push(item))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        if self.rdb_version.is_none() {
            self.rdb_version = self.reader.rdb_version();
        }
        if let Err(e) = self.take_items(items).await {
            let message = e.to_string();
            self.failure = Some(e);
            return Err(std::io::Error::other(message));
        }
        Ok(())
    }
}

/// Keys per database and type in a live server, for the given databases (SCAN + TYPE).
pub async fn count_keys(
    url: &SecretUrl,
    dbs: &[u64],
) -> Result<BTreeMap<u64, BTreeMap<String, u64>>> {
    let mut conn = Connection::open(url, ErrorKind::Sink).await?;
    let mut out: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    for db in dbs {
        if let Err(e) = conn
            .command(&[b"SELECT", db.to_string().as_bytes()])
            .await?
        {
            return Err(conn.error(format!("cannot select database {db}: {e}")));
        }
        let mut cursor = b"0".to_vec();
        loop {
            conn.send(&{
                let mut b = Vec::new();
                Connection::encode(&mut b, &[b"SCAN", &cursor, b"COUNT", b"1000"]);
                b
            })
            .await?;
            let (next, keys) = conn.scan_reply().await?;
            let mut out_cmds = Vec::new();
            for k in &keys {
                Connection::encode(&mut out_cmds, &[b"TYPE", k]);
            }
            conn.send(&out_cmds).await?;
            for _ in &keys {
                match conn.reply().await? {
                    Ok(t) => {
                        *out.entry(*db)
                            .or_default()
                            .entry(String::from_utf8_lossy(&t).into_owned())
                            .or_default() += 1;
                    }
                    Err(e) => return Err(conn.error(format!("TYPE failed: {e}"))),
                }
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
    }
    Ok(out)
}

/// Empty databases to load into for `--mode swap`, one per target database, chosen from the
/// highest index down among those the restore does not write to.
pub async fn pick_spares(url: &SecretUrl, targets: &[u64]) -> Result<BTreeMap<u64, u64>> {
    let mut conn = Connection::open(url, ErrorKind::Sink).await?;
    // Managed services may hide CONFIG; 16 is Redis' default.
    let count = config_databases(&mut conn).await?.unwrap_or(16);
    let mut spares = BTreeMap::new();
    let mut candidates = (0..count).rev().filter(|db| !targets.contains(db));
    for target in targets {
        let spare = loop {
            let Some(db) = candidates.next() else {
                return Err(conn
                    .error(format!(
                        "no empty database is left to load database {target} into before swapping"
                    ))
                    .with_hint(
                        "empty a database the restore does not use, or restore without --mode swap",
                    ));
            };
            if let Err(e) = conn
                .command(&[b"SELECT", db.to_string().as_bytes()])
                .await?
            {
                return Err(conn.error(format!("cannot select database {db}: {e}")));
            }
            let size = conn.command(&[b"DBSIZE"]).await?;
            if size.as_deref() == Ok(b"0") {
                break db;
            }
        };
        spares.insert(*target, spare);
    }
    Ok(spares)
}

/// `CONFIG GET databases`: an array of name and value, or an error where CONFIG is hidden.
async fn config_databases(conn: &mut Connection) -> Result<Option<u64>> {
    let mut cmd = Vec::new();
    Connection::encode(&mut cmd, &[b"CONFIG", b"GET", b"databases"]);
    conn.send(&cmd).await?;
    let head = conn.line().await?;
    if head != "*2" {
        return Ok(None);
    }
    let _name = conn.reply().await?;
    Ok(conn
        .reply()
        .await?
        .ok()
        .and_then(|v| String::from_utf8_lossy(&v).parse().ok()))
}

/// Swaps each loaded spare database with its target (clients see the new data at once), then
/// empties the spare, which now holds the previous data.
pub async fn swap_in(url: &SecretUrl, spares: &BTreeMap<u64, u64>) -> Result<()> {
    let mut conn = Connection::open(url, ErrorKind::Sink).await?;
    for (target, spare) in spares {
        let swap = conn
            .command(&[
                b"SWAPDB",
                spare.to_string().as_bytes(),
                target.to_string().as_bytes(),
            ])
            .await?;
        if let Err(e) = swap {
            return Err(conn
                .error(format!("SWAPDB {spare} {target} failed: {e}"))
                .with_hint(format!("the restored data is in database {spare}; the target database {target} is unchanged")));
        }
        for cmd in [
            &[&b"SELECT"[..], spare.to_string().as_bytes()][..],
            &[b"FLUSHDB", b"ASYNC"],
        ] {
            if let Err(e) = conn.command(cmd).await? {
                tracing::warn!(
                    "Could not empty database {spare} (the previous data of {target}): {e}"
                );
            }
        }
    }
    Ok(())
}
