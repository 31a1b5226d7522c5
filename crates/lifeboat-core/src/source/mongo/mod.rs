//! MongoDB: a native dump through the driver, in the mongodump archive format, no mongodump.
//!
//! Pre-flight: `hello` (sharded clusters are refused), `buildInfo`, `listDatabases`, and for
//! each database `listCollections` and `listIndexes`, so a missing permission is an error before
//! any document is read. Documents are read as raw BSON and written into the archive as they
//! are, never decoded: `parallel-collections` readers feed one writer through a bounded channel,
//! each batch becoming one namespace segment, so memory stays at a few batches.
//!
//! Consistency, as `mongodump --oplog` does it: on a replica set the newest oplog entry is
//! noted before the first read; after the last collection the oplog from that entry to its end
//! is read into the archive's `oplog` namespace, so a restore that replays it brings every
//! collection to the instant of its last entry. An oplog that no longer holds the first entry
//! rolled over during the dump, and the backup fails. A standalone server has no oplog: its
//! snapshot records `point_in_time: false` and the span the reads took.

mod oplog;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use lifeboat_mongo_archive::{ArchiveWriter, CollectionMetadata, DocumentBatch, Header, Namespace};
use mongodb::bson::{doc, Document, RawDocumentBuf};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::catalog::{Fingerprint, MongoCollectionPrint, MongoFingerprint, SourceInfo};
use crate::client::mongo::metadata::{index_fingerprints, CollectionMeta};
use crate::client::mongo::{Mongo, Topology};
use crate::config::MongoJob;
use crate::error::{Error, ErrorKind, Result};
use crate::source::{BoxFuture, Capture, CaptureEnd, CaptureInfo, Finished};

/// Databases a dump leaves out unless named: the server's own.
const SYSTEM_DATABASES: [&str; 3] = ["admin", "local", "config"];

/// A segment is written once a reader has this many bytes of documents.
const BATCH_BYTES: usize = 1024 * 1024;

/// Documents the server sends per batch.
const BATCH_DOCUMENTS: u32 = 1000;

/// Batches queued between the readers and the writer.
const QUEUED_BATCHES: usize = 4;

/// The bytes between the archive writer and the pipeline.
const PIPE_BYTES: usize = 1024 * 1024;

/// What the dump will read, decided before the first document.
struct DumpPlan {
    collections: Vec<(String, CollectionMeta)>,
    views: Vec<(String, CollectionMeta)>,
    /// Bytes the server reports for the collections (`dataSize`).
    size_estimate: u64,
}

impl crate::source::Source for MongoJob {
    async fn start(&self) -> Result<Capture> {
        let mongo = Mongo::connect(&self.url, ErrorKind::Source).await?;
        if mongo.topology == Topology::Sharded {
            return Err(Error::source_failed(format!(
                "{} is a sharded cluster (mongos); Lifeboat does not back up sharded clusters yet",
                self.url
            ))
            .with_hint(
                "back up each shard's replica set as its own job, with the balancer stopped",
            ));
        }
        let plan = plan_dump(&mongo, &self.databases).await?;
        let oplog_start = match &mongo.topology {
            Topology::ReplicaSet(_) => oplog::newest(&mongo).await?,
            _ => None,
        };
        let point_in_time = oplog_start.is_some();
        if !point_in_time {
            tracing::warn!(
                "{} has no readable oplog ({}), so each collection is dumped as it is when read: the snapshot is not of one instant.",
                self.url,
                match mongo.topology {
                    Topology::ReplicaSet(_) => "the user cannot read local.oplog.rs",
                    _ => "a standalone server",
                }
            );
        }
        let started_at = Utc::now();
        let (pipe_out, pipe_in) = tokio::io::duplex(PIPE_BYTES);
        let size_estimate = plan.size_estimate;
        let description = format!(
            "MongoDB {} at {}, {}",
            mongo.server_version,
            self.url,
            match &mongo.topology {
                Topology::ReplicaSet(set) if point_in_time =>
                    format!("replica set {set}, with the oplog of the dump"),
                Topology::ReplicaSet(set) => format!("replica set {set}, without the oplog"),
                _ => "standalone (not point in time)".to_string(),
            }
        );
        let dump = Dump {
            mongo,
            plan,
            parallel: self.parallel_collections,
            oplog_start,
            started_at,
        };
        let task = tokio::spawn(dump.run(pipe_out));
        Ok(Capture {
            stream: Box::new(pipe_in),
            info: CaptureInfo {
                engine: "mongodb",
                consistent_at: started_at,
                dump_format: "mongodump_archive",
                extension: "archive",
                description,
                size_estimate: Some(size_estimate),
            },
            end: Box::new(MongoEnd { task }),
        })
    }
}

/// Lists what will be dumped; a missing permission names the role.
async fn plan_dump(mongo: &Mongo, only: &[String]) -> Result<DumpPlan> {
    let listing = doc! { "listDatabases": 1, "nameOnly": true, "authorizedDatabases": true };
    let present: Option<Vec<String>> = match mongo.try_command("admin", listing).await? {
        Ok(listed) => Some(
            listed
                .get_array("databases")
                .map(|dbs| {
                    dbs.iter()
                        .filter_map(|d| d.as_document()?.get_str("name").ok().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        // A user with `read` on some databases only may not list them; the job's own list
        // is then checked collection by collection.
        Err(e) if Mongo::code(&e) == Some(13) && !only.is_empty() => None,
        Err(e) if Mongo::code(&e) == Some(13) => {
            return Err(Error::source_failed(format!(
                "{}: the user may not list the databases (listDatabases: not authorized)",
                mongo.url
            ))
            .with_hint("grant the user the `backup` role (or `readAnyDatabase`), or name the databases to dump in the job: databases = [\"app\"]"))
        }
        Err(e) => return Err(mongo.error("listDatabases on admin", e)),
    };
    let databases: Vec<String> = match (&present, only.is_empty()) {
        (Some(present), true) => present
            .iter()
            .filter(|db| !SYSTEM_DATABASES.contains(&db.as_str()))
            .cloned()
            .collect(),
        (Some(present), false) => {
            if let Some(missing) = only.iter().find(|db| !present.contains(db)) {
                return Err(Error::source_failed(format!(
                    "{}: database {missing:?} (in the job's databases) does not exist or the user cannot list it",
                    mongo.url
                ))
                .with_hint(format!(
                    "the server has {}; fix the job's databases, or grant the user `read` on {missing}",
                    if present.is_empty() { "no databases".to_string() } else { present.join(", ") }
                )));
            }
            only.to_vec()
        }
        (None, _) => only.to_vec(),
    };
    let mut plan = DumpPlan {
        collections: Vec::new(),
        views: Vec::new(),
        size_estimate: 0,
    };
    for db in &databases {
        let listed = list_collections(mongo, db).await?;
        for meta in listed {
            if meta.kind == "view" {
                plan.views.push((db.clone(), meta));
                continue;
            }
            let mut meta = meta;
            meta.indexes = list_indexes(mongo, db, &meta.name).await?;
            if let Ok(stats) = mongo
                .command(db, doc! { "collStats": meta.data_collection(&meta.name) })
                .await
            {
                plan.size_estimate += stats
                    .get("size")
                    .and_then(|s| {
                        s.as_i64()
                            .or(s.as_i32().map(i64::from))
                            .or(s.as_f64().map(|f| f as i64))
                    })
                    .unwrap_or(0)
                    .max(0) as u64;
            }
            plan.collections.push((db.clone(), meta));
        }
    }
    Ok(plan)
}

/// A database's collections and views; `system.*` collections other than `system.js` are the
/// server's own. Read with the command itself, so every option comes back as the server gave it.
async fn list_collections(mongo: &Mongo, db: &str) -> Result<Vec<CollectionMeta>> {
    let mut out: Vec<CollectionMeta> = command_cursor(
        mongo,
        db,
        doc! { "listCollections": 1 },
        "$cmd.listCollections",
    )
    .await?
    .iter()
    .map(CollectionMeta::from_listing)
    .filter(|meta| !meta.name.starts_with("system.") || meta.name == "system.js")
    .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Every document of a command's cursor (`listCollections`, `listIndexes`).
async fn command_cursor(
    mongo: &Mongo,
    db: &str,
    command: Document,
    collection: &str,
) -> Result<Vec<Document>> {
    let name = command.keys().next().cloned().unwrap_or_default();
    let reply = match mongo.try_command(db, command).await? {
        Ok(reply) => reply,
        // NamespaceNotFound: listed a moment ago, gone now.
        Err(e) if Mongo::code(&e) == Some(26) => {
            return Err(dropped(mongo, &format!("{db}.{collection}")))
        }
        Err(e) if Mongo::code(&e) == Some(13) => return Err(may_not_read(mongo, db, e)),
        Err(e) => return Err(mongo.error(&format!("{name} on {db}"), e)),
    };
    let cursor = reply.get_document("cursor").cloned().unwrap_or_default();
    let batch = |c: &Document, key: &str| -> Vec<Document> {
        c.get_array(key)
            .map(|b| b.iter().filter_map(|d| d.as_document().cloned()).collect())
            .unwrap_or_default()
    };
    let mut out = batch(&cursor, "firstBatch");
    let mut id = cursor.get_i64("id").unwrap_or(0);
    while id != 0 {
        let more = mongo
            .command(db, doc! { "getMore": id, "collection": collection })
            .await?;
        let cursor = more.get_document("cursor").cloned().unwrap_or_default();
        out.extend(batch(&cursor, "nextBatch"));
        id = cursor.get_i64("id").unwrap_or(0);
    }
    Ok(out)
}

async fn list_indexes(mongo: &Mongo, db: &str, collection: &str) -> Result<Vec<Document>> {
    command_cursor(mongo, db, doc! { "listIndexes": collection }, collection).await
}

/// The user lacks a role on `db`: say which.
fn may_not_read(mongo: &Mongo, db: &str, e: mongodb::error::Error) -> Error {
    mongo
        .error(&format!("reading database {db}"), e)
        .with_hint(format!(
            "grant the user `read` on {db} (or the `backup` role), or leave {db} out of the job's databases"
        ))
}

/// A collection that went away while the dump ran.
fn dropped(mongo: &Mongo, namespace: &str) -> Error {
    Error::source_failed(format!(
        "{}: {namespace} was dropped or renamed while the dump ran",
        mongo.url
    ))
    .with_hint("nothing was committed; run the backup again (or leave the collection out with databases = [...])")
}

/// A run of the dump: readers, the writer, then the oplog.
struct Dump {
    mongo: Mongo,
    plan: DumpPlan,
    parallel: usize,
    oplog_start: Option<mongodb::bson::Timestamp>,
    started_at: DateTime<Utc>,
}

/// What the readers send the writer.
enum Message {
    /// Documents of one namespace.
    Batch {
        namespace: Namespace,
        documents: DocumentBatch,
    },
    /// The namespace has no more documents: this many were read.
    Done {
        namespace: Namespace,
        documents: u64,
    },
}

/// What the dump produced besides its bytes.
struct Produced {
    finished: Finished,
}

impl Dump {
    async fn run(self, mut out: tokio::io::DuplexStream) -> Result<Produced> {
        let result = self.write(&mut out).await;
        // Closing the pipe ends the stream: after the last byte on success, early on failure
        // (the backup then sees a short stream and this task's error).
        let _ = out.shutdown().await;
        result
    }

    async fn write(self, out: &mut tokio::io::DuplexStream) -> Result<Produced> {
        let Dump {
            mongo,
            plan,
            parallel,
            oplog_start,
            started_at,
        } = self;
        let mut prelude = Vec::new();
        let mut metadata: Vec<CollectionMetadata> = plan
            .collections
            .iter()
            .chain(&plan.views)
            .map(|(db, meta)| CollectionMetadata {
                namespace: Namespace::new(db.as_str(), meta.name.as_str()),
                metadata: meta.to_json(),
                size: 0,
                kind: meta.kind.clone(),
            })
            .collect();
        if oplog_start.is_some() {
            metadata.push(CollectionMetadata {
                namespace: Namespace::oplog(),
                metadata: String::new(),
                size: 0,
                kind: String::new(),
            });
        }
        let header = Header {
            concurrent_collections: parallel as i32,
            version: lifeboat_mongo_archive::FORMAT_VERSION.into(),
            server_version: mongo.server_version.clone(),
            tool_version: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
        };
        let mut writer = ArchiveWriter::new(&mut prelude, &header, &metadata);
        write_out(out, &mut prelude).await?;

        // Readers take collections from one queue; the writer serialises their batches.
        let queue: Arc<Mutex<VecDeque<Reading>>> = Arc::new(Mutex::new(
            plan.collections
                .iter()
                .map(|(db, meta)| Reading {
                    namespace: Namespace::new(db.as_str(), meta.name.as_str()),
                    from: meta.data_collection(&meta.name),
                })
                .collect(),
        ));
        let (tx, mut rx) = mpsc::channel::<Result<Message>>(QUEUED_BATCHES);
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..parallel.max(1) {
            readers.spawn(read_collections(mongo.clone(), queue.clone(), tx.clone()));
        }
        drop(tx);
        let mut counts: BTreeMap<Namespace, u64> = BTreeMap::new();
        let mut segment = Vec::with_capacity(BATCH_BYTES + 64 * 1024);
        while let Some(message) = rx.recv().await {
            match message {
                Err(e) => {
                    readers.abort_all();
                    return Err(e);
                }
                Ok(Message::Batch {
                    namespace,
                    documents,
                }) => {
                    writer.segment(&mut segment, &namespace, documents.documents());
                    write_out(out, &mut segment).await?;
                }
                Ok(Message::Done {
                    namespace,
                    documents,
                }) => {
                    writer.end(&mut segment, &namespace);
                    write_out(out, &mut segment).await?;
                    counts.insert(namespace, documents);
                }
            }
        }
        while let Some(joined) = readers.join_next().await {
            joined.map_err(|e| Error::source_failed(format!("a collection reader failed: {e}")))?;
        }
        check_still_there(&mongo, &plan).await?;
        let dump_finished_at = Utc::now();

        let mut consistent_at = None;
        let oplog = match oplog_start {
            Some(start) => {
                let captured = oplog::capture(&mongo, start, &mut writer, out).await?;
                consistent_at = Some(Utc::now());
                Some(captured)
            }
            None => None,
        };

        let collections = plan
            .collections
            .iter()
            .map(|(db, meta)| {
                let namespace = Namespace::new(db.as_str(), meta.name.as_str());
                (
                    namespace.to_string(),
                    MongoCollectionPrint {
                        documents: counts.get(&namespace).copied().unwrap_or(0),
                        indexes: index_fingerprints(&meta.indexes),
                    },
                )
            })
            .collect();
        let fingerprint = MongoFingerprint {
            point_in_time: oplog.is_some(),
            collections,
            views: plan
                .views
                .iter()
                .map(|(db, meta)| format!("{db}.{}", meta.name))
                .collect(),
            buckets: plan
                .collections
                .iter()
                .filter(|(_, meta)| meta.holds_buckets())
                .map(|(db, meta)| format!("{db}.{}", meta.name))
                .collect(),
            oplog,
            dump_started_at: Some(started_at),
            dump_finished_at: Some(dump_finished_at),
        };
        let mut databases: Vec<String> = plan
            .collections
            .iter()
            .chain(&plan.views)
            .map(|(db, _)| db.clone())
            .collect();
        databases.dedup();
        let source = SourceInfo {
            url: mongo.url.to_string(),
            server_version: mongo.server_version.clone(),
            databases,
            dump_tool: format!("lifeboat {} (native)", env!("CARGO_PKG_VERSION")),
            server_clock_at: None,
        };
        let mut finished = Finished::new(Fingerprint::Mongo(fingerprint), source);
        finished.consistent_at = consistent_at;
        if consistent_at.is_none() {
            finished.warnings.push(format!(
                "not a point-in-time snapshot: each collection is as it was when read, between {} and {}",
                started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                dump_finished_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        Ok(Produced { finished })
    }
}

/// Writes and empties a buffer of archive bytes; a closed pipe means the backup stopped.
async fn write_out(out: &mut tokio::io::DuplexStream, bytes: &mut Vec<u8>) -> Result<()> {
    out.write_all(bytes)
        .await
        .map_err(|e| Error::source_failed(format!("the dump's stream was closed: {e}")))?;
    bytes.clear();
    Ok(())
}

/// One collection to read: its namespace in the archive, and the collection its documents
/// are read from (a time-series collection's buckets on MongoDB, as mongodump reads them).
struct Reading {
    namespace: Namespace,
    from: String,
}

/// One reader: collections from the queue, each read to its end in batches.
async fn read_collections(
    mongo: Mongo,
    queue: Arc<Mutex<VecDeque<Reading>>>,
    tx: mpsc::Sender<Result<Message>>,
) {
    loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some(reading) = next else { return };
        if let Err(e) = read_collection(&mongo, &reading, &tx).await {
            let _ = tx.send(Err(e)).await;
            return;
        }
    }
}

async fn read_collection(
    mongo: &Mongo,
    Reading { namespace, from }: &Reading,
    tx: &mpsc::Sender<Result<Message>>,
) -> Result<()> {
    let reading = |e: mongodb::error::Error| collection_error(mongo, namespace, e);
    let collection = mongo
        .client
        .database(&namespace.db)
        .collection::<RawDocumentBuf>(from);
    // Batches of a bounded number of documents, so the driver holds a few MiB per reader
    // rather than the server's 16 MiB maximum.
    let mut cursor =
        crate::net::within_idle_timeout(collection.find(doc! {}).batch_size(BATCH_DOCUMENTS))
            .await
            .map_err(|e| Error::source_failed(format!("{}: reading {namespace}: {e}", mongo.url)))?
            .map_err(reading)?;
    let mut documents = 0u64;
    let mut batch = DocumentBatch::with_capacity(BATCH_BYTES + 64 * 1024);
    loop {
        let more = crate::net::within_idle_timeout(cursor.advance())
            .await
            .map_err(|e| Error::source_failed(format!("{}: reading {namespace}: {e}", mongo.url)))?
            .map_err(reading)?;
        if more {
            batch.push(cursor.current().as_bytes());
            documents += 1;
        }
        if (!more && !batch.is_empty()) || batch.byte_len() >= BATCH_BYTES {
            let full = std::mem::replace(
                &mut batch,
                DocumentBatch::with_capacity(BATCH_BYTES + 64 * 1024),
            );
            let message = Message::Batch {
                namespace: namespace.clone(),
                documents: full,
            };
            if tx.send(Ok(message)).await.is_err() {
                return Ok(());
            }
        }
        if !more {
            break;
        }
    }
    let _ = tx
        .send(Ok(Message::Done {
            namespace: namespace.clone(),
            documents,
        }))
        .await;
    Ok(())
}

/// A read that failed, saying so plainly when the collection went away under the dump.
fn collection_error(mongo: &Mongo, namespace: &Namespace, e: mongodb::error::Error) -> Error {
    if Mongo::code(&e) == Some(13) {
        return may_not_read(mongo, &namespace.db, e);
    }
    // NamespaceNotFound, QueryPlanKilled, CursorKilled, CursorNotFound.
    let gone = matches!(Mongo::code(&e), Some(26 | 175 | 237 | 43));
    let error = mongo.error(&format!("reading {namespace}"), e);
    if gone {
        error.with_hint(format!(
            "{namespace} was dropped or renamed while it was dumped; nothing was committed, run the backup again"
        ))
    } else {
        error
    }
}

/// A collection dropped or renamed during the dump reads as empty or short: it must still be
/// there when the dump ends, or the snapshot would describe a collection that no longer is.
async fn check_still_there(mongo: &Mongo, plan: &DumpPlan) -> Result<()> {
    let mut by_db: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (db, meta) in &plan.collections {
        by_db.entry(db).or_default().push(&meta.name);
    }
    for (db, names) in by_db {
        let now: Vec<String> = list_collections(mongo, db)
            .await?
            .into_iter()
            .map(|m| m.name)
            .collect();
        if let Some(gone) = names.iter().find(|n| !now.iter().any(|m| m == *n)) {
            return Err(dropped(mongo, &format!("{db}.{gone}")));
        }
    }
    Ok(())
}

/// The end of a MongoDB capture: the dump task's verdict.
struct MongoEnd {
    task: tokio::task::JoinHandle<Result<Produced>>,
}

impl CaptureEnd for MongoEnd {
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<Finished>> {
        Box::pin(async move {
            match self.task.await {
                Ok(Ok(produced)) => Ok(produced.finished),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Error::source_failed(format!("the dump task failed: {e}"))),
            }
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.task.abort();
            let _ = self.task.await;
        })
    }
}
