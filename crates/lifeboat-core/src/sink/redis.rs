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
use crate::client::resp::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::RawSink;
use crate::secret::SecretUrl;

use std::time::Instant;

use super::{
    Applied, Choice, Drilled, RestoreMode, RestoreOptions, Scratch, Sink, SinkPlan, Surveyed,
    Target, TargetState,
};
use crate::catalog::{Fingerprint, Manifest};
use crate::pipeline::Keys;
use crate::readback::read_snapshot;
use crate::store::Store;

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
        match self.summary() {
            Err(damage) => vec![damage],
            Ok(summary) => recorded.differences(&summary.keys),
        }
    }

    /// What the RDB holds, or what is wrong with it.
    pub fn summary(self) -> std::result::Result<lifeboat_rdb::Summary, String> {
        if let Some(e) = self.error {
            return Err(format!("the RDB stream is damaged: {e}"));
        }
        self.reader
            .finish(&mut |_| {})
            .map_err(|e| format!("the RDB stream is damaged: {e}"))
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

/// Refuses a live target that cannot take the snapshot whole, before anything is written: a
/// read-only replica, a `maxmemory` below the snapshot's memory use (recorded at backup time,
/// or estimated from the raw size for older snapshots), or a `maxmemory-policy` that evicts
/// (the restore would "succeed" while the server silently drops keys). Returns the plan's note.
pub async fn check_room(url: &SecretUrl, snapshot: &Manifest, clean: bool) -> Result<String> {
    let mut conn = Connection::open(url, ErrorKind::Sink).await?;
    let info = |conn: &Connection, text: std::result::Result<Vec<u8>, String>, what: &str| {
        text.map(|t| String::from_utf8_lossy(&t).into_owned())
            .map_err(|e| conn.error(format!("INFO {what} failed: {e}")))
    };
    let reply = conn.command(&[b"INFO", b"replication"]).await?;
    let replication = info(&conn, reply, "replication")?;
    let reply = conn.command(&[b"INFO", b"memory"]).await?;
    let memory = info(&conn, reply, "memory")?;
    let field = |text: &str, name: &str| -> Option<String> {
        text.lines()
            .find_map(|l| Some(l.strip_prefix(name)?.strip_prefix(':')?.trim().to_string()))
    };
    let number = |text: &str, name: &str| field(text, name).and_then(|v| v.parse::<u64>().ok());
    if field(&replication, "role").as_deref() == Some("slave")
        && field(&replication, "slave_read_only").as_deref() != Some("0")
    {
        return Err(Error::new(
            ErrorKind::Refused,
            format!("the target {url} is a read-only replica: it refuses every write"),
        )
        .with_hint("restore into the primary, or into a server that is not a replica"));
    }
    let mib = |n: u64| format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0));
    let max = number(&memory, "maxmemory").unwrap_or(0);
    if max == 0 {
        return Ok("the target has no maxmemory limit".to_string());
    }
    let policy = field(&memory, "maxmemory_policy").unwrap_or_default();
    if policy != "noeviction" {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "the target {url} has maxmemory {} with maxmemory-policy {policy}: it would evict keys to make room, so a restore could report success while keys are silently dropped",
                mib(max)
            ),
        )
        .with_hint("set maxmemory-policy noeviction on the target for the restore (CONFIG SET maxmemory-policy noeviction), or raise maxmemory to 0"));
    }
    let recorded = match &snapshot.fingerprint {
        Fingerprint::Redis(f) => f.used_memory_dataset,
        _ => None,
    };
    let (needed, how) = match recorded {
        Some(n) => (n, "the source's dataset memory at the backup"),
        // An RDB is compact: in memory the same data usually takes more than its raw size.
        None => (
            snapshot.object.raw_size,
            "estimated from the snapshot's raw size (older snapshots record no memory use)",
        ),
    };
    let used = number(&memory, "used_memory").unwrap_or(0);
    let free = if clean { max } else { max.saturating_sub(used) };
    let human = mib;
    if needed > free {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "the target {url} has room for {} under its maxmemory of {} ({} in use), but the snapshot needs about {} ({how})",
                human(free),
                human(max),
                human(used),
                human(needed)
            ),
        )
        .with_hint("raise the target's maxmemory (CONFIG SET maxmemory ...), or restore into a larger server"));
    }
    Ok(format!(
        "needs about {} ({how}); the target has {} free under maxmemory {} (noeviction)",
        human(needed),
        human(free),
        human(max)
    ))
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
    /// Keys restored.
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
    /// Keys restored so far.
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
    /// Connects to the target; `replace` overwrites existing keys, `replace_functions` function
    /// libraries, and `db_map` moves keys from a source database to another.
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
                // Already expired: redis-server drops such a key when it loads a file, and a
                // RESTORE of it creates nothing. Counted as skipped, never as loaded.
                *self
                    .expired
                    .entry(db)
                    .or_default()
                    .entry(key.value_type.name().to_string())
                    .or_default() += 1;
                continue;
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

/// Redis' restore side: the whole snapshot is checked before the first key is written (Redis
/// has no transaction that spans a restore), then loaded with pipelined RESTORE; `--mode swap`
/// loads into spare databases and swaps them in; `--mode file` writes an RDB file.
pub struct RedisSink;

/// The target databases a Redis snapshot is written to.
pub fn target_dbs(fingerprint: &RedisFingerprint, db_map: &BTreeMap<u64, u64>) -> Vec<u64> {
    let mut dbs: Vec<u64> = fingerprint
        .databases()
        .into_iter()
        .map(|db| target_db(db_map, db))
        .collect();
    dbs.sort_unstable();
    dbs.dedup();
    dbs
}

fn redis_fingerprint(snapshot: &Manifest) -> Result<&RedisFingerprint> {
    match &snapshot.fingerprint {
        Fingerprint::Redis(f) => Ok(f),
        _ => Err(Error::integrity(format!(
            "snapshot {} is a Redis backup without a Redis fingerprint",
            snapshot.id
        ))),
    }
}

/// Reads a whole Redis snapshot: both digests, the RDB's structure and CRC64, and its key
/// counts against the manifest. Nothing is written anywhere.
async fn check_whole<S: Store>(store: &S, keys: &Keys, manifest: &Manifest) -> Result<()> {
    let findings = RedisSink.check(store, keys, manifest).await?;
    if !findings.is_empty() {
        return Err(Error::integrity(format!(
            "snapshot {} does not match its manifest: {}",
            manifest.id,
            findings.join("; ")
        ))
        .with_hint("nothing was written; restore an older snapshot (lifeboat-restore list)"));
    }
    Ok(())
}

/// What a Redis load did.
struct RedisLoad {
    stored_bytes: u64,
    raw_bytes: u64,
    restored: u64,
    expired: KeyCounts,
    skipped_empty: KeyCounts,
}

/// Checks the whole snapshot first, then loads it into `target`.
async fn load<S: Store>(
    store: &S,
    keys: &Keys,
    manifest: &Manifest,
    target: &SecretUrl,
    options: &RestoreOptions,
) -> Result<RedisLoad> {
    check_whole(store, keys, manifest).await?;
    let fingerprint = redis_fingerprint(manifest)?;
    let swap = options.mode == RestoreMode::Swap;
    let targets = target_dbs(fingerprint, &options.db_map);
    // --mode swap: load into empty spare databases, swap them in at the end.
    let spares = if swap {
        Some(pick_spares(target, &targets).await?)
    } else {
        None
    };
    let db_map = match &spares {
        Some(spares) => fingerprint
            .databases()
            .into_iter()
            .map(|db| {
                let t = target_db(&options.db_map, db);
                (db, spares.get(&t).copied().unwrap_or(t))
            })
            .collect(),
        None => options.db_map.clone(),
    };
    if options.clean && spares.is_none() {
        flush(target, &targets).await?;
    }
    let mut loader = RedisLoader::open(
        target,
        options.replace,
        options.replace || options.clean || swap,
        db_map,
        &manifest.source.server_version,
    )
    .await?;
    let read = read_snapshot(store, manifest, keys, &mut loader).await.map_err(|e| {
        e.with_hint("the snapshot changed between the check and the load; the target may hold part of it")
    })?;
    let loaded = loader.finish_counted().await;
    if let Some(e) = read.sink_error {
        if loaded.is_ok() {
            return Err(Error::new(
                ErrorKind::Sink,
                format!("restoring into {target} failed: {e}"),
            ));
        }
    }
    let Loaded {
        restored,
        expired,
        skipped_empty,
    } = match loaded {
        Ok(v) => v,
        Err(e) => {
            if let Some(spares) = &spares {
                // The spares were empty: emptying them again leaves the target as it was.
                let used: Vec<u64> = spares.values().copied().collect();
                let _ = flush(target, &used).await;
                return Err(e.with_hint("--mode swap: the target databases were not touched"));
            }
            // A live load is not undone: say what the target holds now.
            return Err(e.with_note(format!(
                "the keys written before the failure stay in database(s) {} of {target}: a live restore is not rolled back",
                targets.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            ))
            .or_hint("fix the cause, then restore again with --clean (or --replace); --mode swap loads into spare databases and is all-or-nothing"));
        }
    };
    if let Some(spares) = &spares {
        swap_in(target, spares).await?;
    }
    tracing::info!(
        "Restored {restored} keys of snapshot {} into {target}.",
        manifest.id
    );
    Ok(RedisLoad {
        stored_bytes: read.stored_bytes,
        raw_bytes: read.raw_bytes,
        restored,
        expired,
        skipped_empty,
    })
}

impl Sink for RedisSink {
    fn product(&self) -> &'static str {
        "Redis"
    }

    async fn plan(
        &self,
        snapshot: &Manifest,
        to: &str,
        options: &RestoreOptions,
    ) -> Result<SinkPlan> {
        if options.mode == RestoreMode::File {
            return super::to_file::plan(
                snapshot,
                options,
                to,
                "an RDB file",
                "the whole snapshot is checked (digests, RDB CRC64) first; the file is written beside the path, synced and renamed into place".to_string(),
            );
        }
        super::refuse_choices(
            snapshot,
            options,
            &[Choice::DbMap, Choice::Replace, Choice::Swap],
        )?;
        let wrong = |got: &str| {
            Error::config(format!(
                "{} is a Redis dump; --to must be a redis:// or rediss:// URL, got {got}",
                super::described(snapshot)
            ))
            .with_hint(
                "e.g. --to redis://:PASSWORD@host:6379, or --mode file --to PATH for an RDB file",
            )
        };
        let target = SecretUrl::parse(to).map_err(|e| wrong(&format!("{to:?} ({e})")))?;
        if !matches!(target.scheme(), "redis" | "rediss") {
            return Err(wrong(&format!("{}://", target.scheme())));
        }
        let dbs = target_dbs(redis_fingerprint(snapshot)?, &options.db_map);
        let target_state = inspect_target(&target, &dbs).await?;
        let room = check_room(&target, snapshot, options.clean).await?;
        let swap = options.mode == RestoreMode::Swap;
        if target_state.objects > 0 && !options.clean && !options.replace {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "the target {} already holds {} in the databases this snapshot restores into ({})",
                    target,
                    crate::text::counted(target_state.objects as u64, "key"),
                    dbs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                ),
            )
            .with_hint(if swap {
                "--mode swap replaces those databases whole: add --clean (or --replace) to confirm, or restore into empty databases (--db-map SRC:DST)"
            } else {
                "restore into empty databases (--db-map SRC:DST), add --replace to overwrite keys of the same name, or --clean to empty those databases first"
            }));
        }
        let existing = format!(
            "{} in the databases restored into{}",
            target_state.objects,
            if swap {
                " (--mode swap: loaded into empty spare databases, then swapped in with SWAPDB; the previous data is then removed)"
            } else if options.clean {
                " (--clean empties them first)"
            } else {
                ""
            }
        );
        Ok(SinkPlan {
            target: Target::Url(target),
            target_state,
            notes: vec![
                ("existing keys", existing),
                (
                    "safety",
                    "the whole snapshot is checked (digests, RDB CRC64) before any key is written"
                        .to_string(),
                ),
                ("memory", room),
                (
                    "on failure",
                    if swap {
                        "--mode swap: the target databases are untouched until the swap".to_string()
                    } else {
                        "keys are written as they come: a failure part-way leaves the keys written so far in the target (the error says which databases); --mode swap is all-or-nothing".to_string()
                    },
                ),
            ],
        })
    }

    async fn apply<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        plan: &SinkPlan,
        options: &RestoreOptions,
    ) -> Result<Applied> {
        match &plan.target {
            Target::Path(path) => {
                check_whole(store, keys, snapshot).await?;
                super::to_file::write_verified(store, keys, snapshot, path, options.clean).await
            }
            Target::Url(target) => {
                let load = load(store, keys, snapshot, target, options).await?;
                let mut notes = vec![format!(
                    "Loaded {} from the RDB (checksum verified)",
                    crate::text::counted(load.restored, "key")
                )];
                let skipped: u64 = load.skipped_empty.values().flat_map(|t| t.values()).sum();
                if skipped > 0 {
                    notes.push(format!(
                        "Skipped {skipped} empty collection key(s), as redis-server does when it loads such a file"
                    ));
                }
                let expired: u64 = load.expired.values().flat_map(|t| t.values()).sum();
                if expired > 0 {
                    notes.push(format!(
                        "Skipped {expired} key(s) that had already expired, as redis-server does when it loads such a file"
                    ));
                }
                Ok(Applied {
                    stored_bytes: load.stored_bytes,
                    raw_bytes: load.raw_bytes,
                    notes,
                })
            }
        }
    }

    async fn check<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
    ) -> Result<Vec<String>> {
        let recorded = redis_fingerprint(snapshot)?;
        let mut rdb = RdbCheck::default();
        read_snapshot(store, snapshot, keys, &mut rdb).await?;
        Ok(rdb.finish(recorded))
    }

    fn check_scratch(&self, scratch: &Scratch) -> Result<()> {
        super::scratch_url(
            scratch,
            &["redis", "rediss"],
            "redis://127.0.0.1:6390 (a throwaway server)",
        )
        .map(|_| ())
    }

    /// Loads the snapshot into empty databases of a scratch server, counts keys per database
    /// and type, compares with the manifest, and empties those databases again. A scratch
    /// server whose databases hold keys is refused: a drill never deletes data it did not
    /// write.
    async fn drill<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        scratch: &Scratch,
    ) -> Result<Drilled> {
        let scratch = super::scratch_url(scratch, &["redis", "rediss"], "redis://127.0.0.1:6390")?;
        let recorded = redis_fingerprint(snapshot)?;
        let dbs = target_dbs(recorded, &Default::default());
        let state = inspect_target(scratch, &dbs).await?;
        if state.objects > 0 {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "the scratch server {scratch} holds {} keys in databases the drill needs ({})",
                    state.objects,
                    dbs.iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_hint("point --scratch-url at a throwaway Redis whose databases are empty"));
        }
        // The databases are empty (checked above); REPLACE only matters for function libraries,
        // which are server-wide and may remain from an earlier drill.
        let options = RestoreOptions {
            replace: true,
            hold_back: crate::pipeline::holdback::DEFAULT_HOLD_BACK,
            ..Default::default()
        };
        let started = Instant::now();
        let loaded = load(store, keys, snapshot, scratch, &options).await;
        let result = async {
            let load = loaded?;
            let restore_secs = started.elapsed().as_secs_f64();
            let found = count_keys(scratch, &dbs).await?;
            // Keys that expired before the drill could load them are not a loss, nor are empty
            // collections, which Redis cannot hold.
            let mut expected = recorded.clone();
            for (db, types) in load.expired.iter().chain(&load.skipped_empty) {
                for (t, n) in types {
                    if let Some(c) = expected
                        .keys
                        .get_mut(&db.to_string())
                        .and_then(|m| m.get_mut(t))
                    {
                        *c = c.saturating_sub(*n);
                    }
                }
            }
            for types in expected.keys.values_mut() {
                types.retain(|_, n| *n > 0);
            }
            expected.keys.retain(|_, t| !t.is_empty());
            let mut findings = expected.differences(&found);
            if let Some(recorded_digest) = &recorded.debug_digest {
                findings.extend(
                    compare_debug_digest(scratch, recorded_digest, &dbs, load.expired.is_empty())
                        .await?,
                );
            }
            Ok::<_, Error>(Drilled {
                findings,
                restore_secs: Some(restore_secs),
            })
        }
        .await;
        if let Err(e) = flush(scratch, &dbs).await {
            tracing::warn!("The drill's keys could not be removed from {scratch}: {e}");
        }
        result
    }

    /// An RDB file made elsewhere: its structure and CRC64, and its keys counted.
    async fn survey<S: Store>(&self, store: &S, snapshot: &Manifest) -> Result<Surveyed> {
        // A dump made elsewhere (`--from-file`) is never encrypted.
        let keys = &Keys::none();
        let mut rdb = RdbCheck::default();
        read_snapshot(store, snapshot, keys, &mut rdb).await?;
        let summary = rdb.summary().map_err(|damage| {
            Error::integrity(format!(
                "{} is not a valid RDB file: {damage}",
                snapshot.source.url
            ))
        })?;
        Ok(Surveyed {
            fingerprint: Fingerprint::Redis(RedisFingerprint {
                rdb_version: summary.rdb_version,
                keys: RedisFingerprint::keys_from(&summary.keys),
                functions: summary.functions,
                rdb_crc64: summary.crc64.unwrap_or(0),
                ..Default::default()
            }),
            server_version: summary.aux.get("redis-ver").cloned(),
        })
    }
}

/// Compares the scratch server's `DEBUG DIGEST` with the one recorded at backup time, where
/// that comparison means something: no key expired on the way (expiries are in the digest) and
/// the scratch server holds nothing but the drill's databases (the digest is server-wide).
async fn compare_debug_digest(
    scratch: &SecretUrl,
    recorded: &str,
    dbs: &[u64],
    nothing_expired: bool,
) -> Result<Vec<String>> {
    if !nothing_expired {
        tracing::info!(
            "Keys expired during the drill, so DEBUG DIGEST is not compared (key counts are)."
        );
        return Ok(Vec::new());
    }
    let mut conn = Connection::open(scratch, ErrorKind::Sink).await?;
    let others = conn
        .databases_with_keys()
        .await?
        .into_iter()
        .filter(|db| !dbs.contains(db))
        .count();
    if others > 0 {
        tracing::info!(
            "The scratch server {scratch} holds keys in other databases, so DEBUG DIGEST is not compared (key counts are)."
        );
        return Ok(Vec::new());
    }
    match conn.debug_digest().await {
        Ok(found) if found == recorded => {
            tracing::info!("DEBUG DIGEST of the restored data matches the source's ({found}).");
            Ok(Vec::new())
        }
        Ok(found) => Ok(vec![format!(
            "DEBUG DIGEST of the restored data is {found}, the source's was {recorded}"
        )]),
        Err(e) => {
            tracing::warn!(
                "{}; DEBUG DIGEST is not compared (key counts are).",
                e.message()
            );
            Ok(Vec::new())
        }
    }
}
