//! `manifest.json`: what a snapshot is. Written last; a snapshot exists iff its manifest does.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::SnapshotId;
use crate::pipeline::{Compression, Digest, RawDigest};

/// Version of the manifest layout. Readers ignore fields they do not know, and refuse a
/// manifest of a newer format (written by a newer Lifeboat). Format 2 may digest the raw bytes
/// with BLAKE3 (`raw_blake3`) where format 1 always used SHA-256 (`raw_sha256`); a format 1
/// manifest reads unchanged.
pub const MANIFEST_FORMAT: u32 = 2;

/// What a committed snapshot is: written last, so a snapshot without one does not exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest layout's version ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// The snapshot's id.
    pub id: SnapshotId,
    /// The job it belongs to (or [`FROM_FILE`]).
    pub job: String,
    /// The engine's name (`postgres`, `redis`, `files`).
    pub engine: String,
    /// The Lifeboat version that wrote the snapshot.
    pub tool_version: String,
    /// When the run started (with the job's lock held).
    pub started_at: DateTime<Utc>,
    /// When the data object was complete and checked.
    pub finished_at: DateTime<Utc>,
    /// The instant the data is consistent as of (for PostgreSQL: when the snapshot was taken).
    pub consistent_at: DateTime<Utc>,
    /// Where the data came from.
    pub source: SourceInfo,
    /// `pg_custom` (pg_dump -Fc) or `pg_plain` (SQL).
    pub dump_format: String,
    /// How the data object is compressed.
    pub compression: Compression,
    /// `None`: stored unencrypted.
    pub encryption: Option<crate::pipeline::EncryptionInfo>,
    /// The data object: key, sizes and digests.
    pub object: ObjectInfo,
    /// What a drill (and, where it can, a content check) compares against.
    pub fingerprint: Fingerprint,
    /// What went wrong without failing the backup (files: a file changed while it was read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Small objects of the snapshot besides the data object, by name (PostgreSQL `globals`:
    /// `pg_dumpall --globals-only`), each with its own key, sizes and digests; compressed and
    /// encrypted as the data object is.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub companions: std::collections::BTreeMap<String, ObjectInfo>,
}

/// Where the data came from, with no secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The source URL with its password hidden.
    pub url: String,
    /// The server's version as it reports it.
    pub server_version: String,
    /// The databases dumped (PostgreSQL: the one dumped; Redis: `db<N>` for each database holding keys).
    pub databases: Vec<String>,
    /// e.g. `pg_dump (PostgreSQL) 15.18`.
    pub dump_tool: String,
    /// The source server's own clock at the instant `consistent_at` records, kept only when it
    /// differs from the backup host's clock by more than [`CLOCK_SKEW_RECORDED`]
    /// (`consistent_at` always comes from the backup host's clock, the one that also dates
    /// snapshot ids and that `--at` and retention compare with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_clock_at: Option<DateTime<Utc>>,
}

/// A source clock this far from the backup host's is recorded in the manifest.
pub const CLOCK_SKEW_RECORDED: chrono::Duration = chrono::Duration::seconds(5);

/// The data object of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// Key relative to the store root.
    pub key: String,
    /// Its size as stored.
    pub stored_size: u64,
    /// SHA-256 of the stored bytes (checked on every read: `verify --level content`, drills,
    /// restores).
    pub stored_sha256: Digest,
    /// Its size after decompression: what the engine produced.
    pub raw_size: u64,
    /// The digest of the decompressed bytes (checked on every read): the field `raw_blake3`, or
    /// `raw_sha256` in format 1 and for objects stored as dumped.
    #[serde(flatten)]
    pub raw_digest: RawDigest,
}

/// What a drill compares after restoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "engine", rename_all = "lowercase")]
pub enum Fingerprint {
    /// Row counts, indexes, constraints, large objects.
    Postgres(PgFingerprint),
    /// Keys per database and type, and the RDB's own checksum.
    Redis(RedisFingerprint),
    /// Counts and one digest over every entry of the tree.
    Files(FilesFingerprint),
    /// Documents and index specs per collection, views, and the captured oplog's range.
    #[serde(rename = "mongodb")]
    Mongo(MongoFingerprint),
}

/// What a MongoDB snapshot holds, counted as it was dumped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MongoFingerprint {
    /// Replica sets: the oplog of the dump's duration is in the archive, so a restore replays
    /// it to one instant. Standalone servers: each collection as it was when read.
    pub point_in_time: bool,
    /// `db.collection` -> what it held as dumped.
    pub collections: BTreeMap<String, MongoCollectionPrint>,
    /// `db.view` of every view (recreated from its pipeline, no documents).
    #[serde(default)]
    pub views: Vec<String>,
    /// `db.collection` of each time-series collection dumped as MongoDB's buckets: a restore
    /// needs a server with time-series collections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<String>,
    /// The oplog captured with the dump (replica sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog: Option<OplogPrint>,
    /// When the first collection was read and the last one finished (the span a standalone
    /// snapshot's data comes from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_started_at: Option<DateTime<Utc>>,
    /// (The end of that span.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_finished_at: Option<DateTime<Utc>>,
}

/// One collection as dumped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MongoCollectionPrint {
    /// Documents in the archive.
    pub documents: u64,
    /// Each index's spec as canonical Extended JSON (`key` first, then the options by name;
    /// without `v` and `ns`), sorted.
    pub indexes: Vec<String>,
}

/// The oplog captured during a dump: from the newest entry before the first read to the
/// newest after the last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OplogPrint {
    /// Entries in the archive's `oplog` namespace.
    pub entries: u64,
    /// The first and last entries' timestamps, `seconds:increment`.
    pub start: String,
    /// (The last entry's: the instant a replay brings the data to.)
    pub end: String,
    /// Per `db.collection`, inserts and deletes among the entries after the first: how far a
    /// collection's count may move from its dumped count when the oplog is replayed.
    #[serde(default)]
    pub inserts: BTreeMap<String, u64>,
    /// (Deletes, likewise.)
    #[serde(default)]
    pub deletes: BTreeMap<String, u64>,
}

impl OplogPrint {
    /// Counts one entry after the first (`op` on `ns`) among the inserts and deletes.
    /// MongoDB logs a time-series collection's writes on its buckets
    /// (`DB.system.buckets.NAME`), which are what a dump of it holds: they count for `DB.NAME`.
    pub fn count(&mut self, op: &str, ns: &str) {
        let counts = match op {
            "i" => &mut self.inserts,
            "d" => &mut self.deletes,
            _ => return,
        };
        let ns = match ns.split_once(".system.buckets.") {
            Some((db, name)) => format!("{db}.{name}"),
            None => ns.to_string(),
        };
        *counts.entry(ns).or_default() += 1;
    }
}

impl MongoFingerprint {
    /// Differences from what a restore found (`db.collection` -> documents and index specs),
    /// in words. Without an oplog counts must be equal; with one, a count may move by the
    /// captured inserts and deletes of its collection.
    pub fn differences(&self, found: &BTreeMap<String, MongoCollectionPrint>) -> Vec<String> {
        let mut out = Vec::new();
        for (name, want) in &self.collections {
            let Some(got) = found.get(name) else {
                out.push(format!("collection {name} is missing"));
                continue;
            };
            let (low, high) = match &self.oplog {
                Some(oplog) => (
                    want.documents
                        .saturating_sub(oplog.deletes.get(name).copied().unwrap_or(0)),
                    want.documents + oplog.inserts.get(name).copied().unwrap_or(0),
                ),
                None => (want.documents, want.documents),
            };
            if got.documents < low || got.documents > high {
                out.push(if low == high {
                    format!(
                        "collection {name} has {} documents, the backup recorded {}",
                        got.documents, want.documents
                    )
                } else {
                    format!(
                        "collection {name} has {} documents; the backup recorded {} and an oplog that allows {low} to {high}",
                        got.documents, want.documents
                    )
                });
            }
            for index in want.indexes.iter().filter(|i| !got.indexes.contains(i)) {
                out.push(format!("collection {name} lacks the index {index}"));
            }
        }
        out
    }
}

/// What a tree of files holds: counts, bytes, and one digest over every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesFingerprint {
    /// Regular files.
    pub files: u64,
    /// Directories below the root (the root is the restore target itself).
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Further names of a file already in the archive.
    pub hard_links: u64,
    /// The bytes of every regular file's content.
    pub total_bytes: u64,
    /// SHA-256 (hex) over the entries sorted by path, each as path, type, mode, size, the
    /// SHA-256 of its content and its link target.
    pub digest: String,
}

impl FilesFingerprint {
    /// Differences from what was found, in words.
    pub fn differences(&self, found: &FilesFingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for (what, want, got) in [
            ("files", self.files, found.files),
            ("directories", self.directories, found.directories),
            ("symlinks", self.symlinks, found.symlinks),
            ("hard links", self.hard_links, found.hard_links),
            ("bytes of file content", self.total_bytes, found.total_bytes),
        ] {
            if want != got {
                out.push(format!("{got} {what} found, the backup recorded {want}"));
            }
        }
        if out.is_empty() && self.digest != found.digest {
            out.push(format!(
                "the entries' digest is {}, the backup recorded {} (a name, mode, content or link target differs)",
                found.digest, self.digest
            ));
        }
        out
    }
}

/// What a Redis snapshot holds, counted from the RDB stream as it was captured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisFingerprint {
    /// The RDB format version the server wrote.
    pub rdb_version: u16,
    /// `sync` (disk-based snapshot) or `sync-diskless`.
    pub capture: String,
    /// SYNC snapshots are point in time (the server's fork); SCAN captures would not be.
    pub point_in_time: bool,
    /// Keys per database index (as text: JSON object keys) and type (`string`, `list`, `set`,
    /// `zset`, `hash`, `stream`, or a module type's name).
    pub keys: BTreeMap<String, BTreeMap<String, u64>>,
    /// Functions (Redis 7 libraries) in the snapshot.
    pub functions: u64,
    /// The CRC64 trailer of the RDB file (0 when the server writes none).
    pub rdb_crc64: u64,
    /// The source's `DEBUG DIGEST` (job setting `debug-digest`), recorded only when it was the
    /// same before and after the capture, so it describes exactly the captured data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_digest: Option<String>,
    /// The source's `used_memory_dataset` (INFO memory) at the capture: what a restore target
    /// needs room for (absent in older manifests and in files made elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_memory_dataset: Option<u64>,
}

impl RedisFingerprint {
    /// Keys over every database and type.
    pub fn total_keys(&self) -> u64 {
        self.keys.values().flat_map(|t| t.values()).sum()
    }

    /// Counts as the RDB reader reports them, keyed by database number.
    pub fn keys_from(
        counts: &BTreeMap<u64, BTreeMap<String, u64>>,
    ) -> BTreeMap<String, BTreeMap<String, u64>> {
        counts
            .iter()
            .map(|(db, t)| (db.to_string(), t.clone()))
            .collect()
    }

    /// The database numbers that hold keys.
    pub fn databases(&self) -> Vec<u64> {
        self.keys.keys().filter_map(|db| db.parse().ok()).collect()
    }

    /// Differences from what was found when reading the snapshot again, in words.
    pub fn differences(&self, found: &BTreeMap<u64, BTreeMap<String, u64>>) -> Vec<String> {
        let mut out = Vec::new();
        let found = Self::keys_from(found);
        let dbs: std::collections::BTreeSet<&String> =
            self.keys.keys().chain(found.keys()).collect();
        for db in dbs {
            let empty = BTreeMap::new();
            let want = self.keys.get(db).unwrap_or(&empty);
            let got = found.get(db).unwrap_or(&empty);
            let types: std::collections::BTreeSet<&String> =
                want.keys().chain(got.keys()).collect();
            for t in types {
                let (w, g) = (
                    want.get(t).copied().unwrap_or(0),
                    got.get(t).copied().unwrap_or(0),
                );
                if w != g {
                    out.push(format!("db {db}: {w} {t} keys recorded, {g} found"));
                }
            }
        }
        out
    }
}

/// Exact row counts per table, taken inside the snapshot pg_dump dumped, plus the names of
/// indexes and constraints and the number of large objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgFingerprint {
    /// `schema.table` (quoted as PostgreSQL quotes identifiers) -> rows.
    pub tables: BTreeMap<String, i64>,
    /// Index names, sorted.
    pub indexes: Vec<String>,
    /// Constraint names, sorted.
    pub constraints: Vec<String>,
    /// Large objects (`pg_largeobject_metadata` rows).
    pub large_objects: i64,
}

impl PgFingerprint {
    /// Human-readable differences between what was recorded and what was found.
    pub fn differences(&self, found: &PgFingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for (table, rows) in &self.tables {
            match found.tables.get(table) {
                None => out.push(format!("table {table} is missing")),
                Some(r) if r != rows => out.push(format!(
                    "table {table} has {r} rows, the backup recorded {rows}"
                )),
                Some(_) => {}
            }
        }
        for table in found.tables.keys() {
            if !self.tables.contains_key(table) {
                out.push(format!("table {table} was not in the backup"));
            }
        }
        for (what, want, got) in [
            ("index", &self.indexes, &found.indexes),
            ("constraint", &self.constraints, &found.constraints),
        ] {
            for name in want.iter().filter(|n| !got.contains(n)) {
                out.push(format!("{what} {name} is missing"));
            }
            for name in got.iter().filter(|n| !want.contains(n)) {
                out.push(format!("{what} {name} was not in the backup"));
            }
        }
        if self.large_objects != found.large_objects {
            out.push(format!(
                "{} large objects found, the backup recorded {}",
                found.large_objects, self.large_objects
            ));
        }
        out
    }
}

/// The job name a dump made elsewhere carries (`--from-file`) instead of a job's.
pub const FROM_FILE: &str = "--from-file";

/// The companion object that holds the cluster's roles.
pub const GLOBALS: &str = "globals";

/// What a snapshot holds, in words and in the counts its engine has.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Contents {
    /// e.g. "12 tables, 3400 rows".
    #[serde(rename = "contents")]
    pub words: String,
    /// PostgreSQL: tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<usize>,
    /// PostgreSQL: rows over every table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// Redis: keys over every database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Files: regular files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// MongoDB: documents over every collection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents: Option<u64>,
}

impl std::fmt::Display for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.words)
    }
}

use crate::text::counted;

impl Fingerprint {
    /// What the snapshot holds.
    pub fn contents(&self) -> Contents {
        match self {
            Fingerprint::Postgres(f) => {
                let rows = f.tables.values().sum::<i64>();
                Contents {
                    words: format!(
                        "{}, {}",
                        counted(f.tables.len() as u64, "table"),
                        counted(rows as u64, "row")
                    ),
                    tables: Some(f.tables.len()),
                    rows: Some(rows),
                    ..Default::default()
                }
            }
            Fingerprint::Redis(f) => Contents {
                words: format!(
                    "{} in {} (RDB version {})",
                    counted(f.total_keys(), "key"),
                    counted(f.keys.len() as u64, "database"),
                    f.rdb_version
                ),
                keys: Some(f.total_keys()),
                ..Default::default()
            },
            Fingerprint::Files(f) => Contents {
                words: format!(
                    "{}, {}, {}{}",
                    counted(f.files, "file"),
                    counted(f.directories, "directory"),
                    counted(f.symlinks, "symlink"),
                    if f.hard_links > 0 {
                        format!(", {}", counted(f.hard_links, "hard link"))
                    } else {
                        String::new()
                    }
                ),
                files: Some(f.files),
                ..Default::default()
            },
            Fingerprint::Mongo(f) => {
                let documents = f.collections.values().map(|c| c.documents).sum::<u64>();
                Contents {
                    words: format!(
                        "{}, {}{}{}",
                        counted(f.collections.len() as u64, "collection"),
                        counted(documents, "document"),
                        if f.views.is_empty() {
                            String::new()
                        } else {
                            format!(", {}", counted(f.views.len() as u64, "view"))
                        },
                        match &f.oplog {
                            Some(oplog) => format!(", {}", counted(oplog.entries, "oplog entry")),
                            None => " (not point in time)".to_string(),
                        }
                    ),
                    documents: Some(documents),
                    ..Default::default()
                }
            }
        }
    }
}

impl Manifest {
    /// The manifest of a dump made elsewhere (`--from-file`), dated by the file's time. Its
    /// fingerprint is empty until the engine's sink surveys the dump.
    pub fn of_file(
        path: &str,
        engine: &str,
        dump_format: &str,
        compression: Compression,
        object: ObjectInfo,
        modified: DateTime<Utc>,
    ) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            id: SnapshotId::new(modified, [0; 3]),
            job: FROM_FILE.into(),
            engine: engine.into(),
            tool_version: "unknown".into(),
            started_at: modified,
            finished_at: modified,
            consistent_at: modified,
            source: SourceInfo {
                url: path.into(),
                server_version: "unknown".into(),
                databases: Vec::new(),
                dump_tool: "unknown".into(),
                server_clock_at: None,
            },
            dump_format: dump_format.into(),
            compression,
            encryption: None,
            object,
            fingerprint: Fingerprint::Files(FilesFingerprint::default()),
            warnings: Vec::new(),
            companions: Default::default(),
        }
    }

    /// The same snapshot seen through one of its companion objects (`globals`), so that the
    /// read path (digests, decryption, decompression) reads it as it reads the data object.
    pub fn companion(&self, name: &str) -> Option<Manifest> {
        self.companions.get(name).map(|object| Manifest {
            object: object.clone(),
            companions: Default::default(),
            ..self.clone()
        })
    }

    /// The manifest as pretty JSON, as stored.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses a stored manifest (fields it does not know are ignored).
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Algorithm;

    #[test]
    fn a_data_object_names_its_raw_digests_function_and_format_1_reads_unchanged() {
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        // As Lifeboat 0.1 (manifest format 1) wrote it.
        let old: ObjectInfo = serde_json::from_value(serde_json::json!({
            "key": "jobs/app/snapshots/x/data.pgdump.zst",
            "stored_size": 10, "stored_sha256": hex, "raw_size": 3, "raw_sha256": hex
        }))
        .unwrap();
        assert_eq!(old.raw_digest, RawDigest::Sha256(hex.parse().unwrap()));
        assert_eq!(serde_json::to_value(&old).unwrap()["raw_sha256"], hex);
        let new = ObjectInfo {
            raw_digest: RawDigest::of(Algorithm::Blake3, b"abc"),
            ..old
        };
        let json = serde_json::to_value(&new).unwrap();
        assert!(json.get("raw_sha256").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<ObjectInfo>(json).unwrap(), new);
        // Neither field: not a manifest this or any Lifeboat wrote.
        assert!(serde_json::from_value::<ObjectInfo>(serde_json::json!({
            "key": "k", "stored_size": 10, "stored_sha256": hex, "raw_size": 3
        }))
        .is_err());
    }

    #[test]
    fn oplog_counts_inserts_and_deletes_and_a_time_series_writes_on_its_buckets() {
        let mut print = OplogPrint::default();
        for (op, ns) in [
            ("i", "app.users"),
            ("i", "app.users"),
            ("d", "app.users"),
            ("u", "app.users"),
            ("i", "app.system.buckets.weather"),
            ("c", "app.$cmd"),
        ] {
            print.count(op, ns);
        }
        assert_eq!(print.inserts["app.users"], 2);
        assert_eq!(print.deletes["app.users"], 1);
        assert_eq!(print.inserts["app.weather"], 1);
        assert_eq!(print.inserts.len(), 2);
        assert_eq!(print.deletes.len(), 1);
    }
}
