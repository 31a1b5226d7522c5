//! Reads a mongodump archive as it streams out of the store, and (when restoring) loads it into
//! staging collections: created with their options as the prelude arrives, filled with raw
//! documents in ordered batches, the oplog replayed onto them, then indexed. Nothing is renamed
//! into place here: [`Staging::put_in_place`] does that after the caller has seen both digests
//! match, and [`Staging::discard`] drops what was staged when anything failed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use lifeboat_mongo_archive::{
    ArchiveError, ArchiveReader, CollectionMetadata, DocumentBatch, Item, Namespace, NamespaceEnd,
    Summary,
};
use mongodb::bson::{doc, Document, RawDocument, RawDocumentBuf};

use super::oplog::{changes, Change};
use super::rename::{rename, RenameRule};
use crate::catalog::OplogPrint;
use crate::client::mongo::metadata::CollectionMeta;
use crate::client::mongo::Mongo;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::RawSink;

/// A batch is inserted once it holds this many bytes or documents.
const BATCH_BYTES: usize = 4 * 1024 * 1024;
const BATCH_DOCUMENTS: usize = 10_000;

/// Options only `create` sets.
const CREATION_ONLY: [&str; 5] = ["capped", "size", "max", "collation", "clusteredIndex"];

/// Options `collMod` sets on an existing collection.
const MODIFIABLE: [&str; 4] = [
    "validator",
    "validationLevel",
    "validationAction",
    "changeStreamPreAndPostImages",
];

fn has_any(options: &Document, keys: &[&str]) -> bool {
    keys.iter().any(|k| options.contains_key(*k))
}

/// How a checked staging collection is put in place.
#[derive(Debug, PartialEq)]
enum Placement {
    /// `renameCollection`, options put back where the server drops them.
    Rename,
    /// Created in place with its options and the documents copied into it.
    Copy,
}

/// A time-series collection is always copied: MongoDB refuses to rename one, whatever a test
/// server allows. So is a collection with options only creation sets, where a rename loses them.
fn placement(meta: &CollectionMeta, rename_keeps_options: bool) -> Placement {
    if meta.is_time_series() {
        Placement::Copy
    } else if rename_keeps_options || !has_any(&meta.options, &CREATION_ONLY) {
        Placement::Rename
    } else {
        Placement::Copy
    }
}

/// Whether the server has MongoDB's time-series collections (with buckets), tried on a probe
/// collection (`lifeboat.probe.<tag>.timeseries`, created and dropped): some compatible servers
/// accept the option but list a plain collection, where buckets would read back as documents.
pub async fn has_time_series(mongo: &Mongo, db: &str, tag: &str) -> Result<bool> {
    let probe = format!("lifeboat.probe.{tag}.timeseries");
    drop_quietly(mongo, db, &probe).await;
    let created = mongo
        .command(
            db,
            doc! { "create": probe.as_str(), "timeseries": { "timeField": "t" } },
        )
        .await;
    let supported = match created {
        Ok(_) => listed(mongo, db, &probe)
            .await?
            .is_some_and(|c| c.get_str("type") == Ok("timeseries")),
        Err(_) => false,
    };
    drop_quietly(mongo, db, &probe).await;
    Ok(supported)
}

/// The refusal of a time-series collection's buckets by a server without time-series.
pub fn no_time_series(namespace: &Namespace, mongo: &Mongo) -> Error {
    Error::new(
        ErrorKind::Refused,
        format!(
            "{namespace} is a time-series collection dumped as MongoDB's buckets, and {} has no time-series collections (it lists one as a plain collection)",
            mongo.url
        ),
    )
    .with_hint("restore it into MongoDB 5.0 or later; nothing was put in place")
}

/// Drops a collection of Lifeboat's own (a staging or probe collection, or one a failed copy
/// created), or one `--clean` replaces; one that is not there is not an error.
/// Drops a collection; `false` if the server did not do it (a collection that is already
/// gone counts as dropped).
async fn drop_quietly(mongo: &Mongo, db: &str, name: &str) -> bool {
    match mongo.command(db, doc! { "drop": name }).await {
        Ok(_) => true,
        Err(e) => {
            e.to_string().contains("ns not found") || e.to_string().contains("NamespaceNotFound")
        }
    }
}

/// The `listCollections` entry of one collection, if it exists.
async fn listed(mongo: &Mongo, db: &str, name: &str) -> Result<Option<Document>> {
    let listed = mongo
        .command(
            db,
            doc! { "listCollections": 1, "filter": { "name": name } },
        )
        .await?;
    Ok(listed
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|b| b.first()?.as_document().cloned()))
}

/// Databases a restore never writes into.
const SKIPPED_DATABASES: [&str; 2] = ["local", "config"];

/// Documents of one namespace waiting to be inserted.
#[derive(Default)]
struct Batch(DocumentBatch);

impl Batch {
    fn full(&self) -> bool {
        self.0.byte_len() >= BATCH_BYTES || self.0.len() >= BATCH_DOCUMENTS
    }

    /// The documents as the driver inserts them; the batch is left empty.
    fn take(&mut self) -> Vec<RawDocumentBuf> {
        let docs = self
            .0
            .documents()
            .filter_map(|doc| RawDocumentBuf::from_bytes(doc.to_vec()).ok())
            .collect();
        self.0.clear();
        docs
    }
}

/// The oplog namespace's entries, counted as they pass.
#[derive(Debug, Default)]
pub struct OplogTally {
    print: OplogPrint,
    first: bool,
}

impl OplogTally {
    fn add(&mut self, entry: &[u8]) {
        let Ok(raw) = RawDocument::from_bytes(entry) else {
            return;
        };
        let ts = raw
            .get_timestamp("ts")
            .map(|ts| format!("{}:{}", ts.time, ts.increment))
            .unwrap_or_default();
        if !self.first {
            self.first = true;
            self.print.start = ts.clone();
        } else {
            self.print.count(
                raw.get_str("op").unwrap_or_default(),
                raw.get_str("ns").unwrap_or_default(),
            );
        }
        self.print.end = ts;
        self.print.entries += 1;
    }

    /// What the archive's oplog held, if it has one.
    pub fn print(&self) -> Option<OplogPrint> {
        self.first.then(|| self.print.clone())
    }
}

/// The archive as it passes: its framing and CRCs checked by the reader, and, when restoring,
/// its collections staged in the target.
pub struct ArchiveLoad {
    reader: ArchiveReader,
    /// Why loading stopped; later chunks are refused (the read path still digests them).
    failure: Option<Error>,
    /// What the archive is called in messages.
    what: String,
    batches: HashMap<Namespace, Batch>,
    oplog_pending: Vec<Vec<u8>>,
    tally: OplogTally,
    staging: Option<Staging>,
}

impl ArchiveLoad {
    /// Reads and checks only (verify's content level, a survey).
    pub fn check(what: String) -> ArchiveLoad {
        ArchiveLoad {
            reader: ArchiveReader::new(),
            failure: None,
            what,
            batches: HashMap::new(),
            oplog_pending: Vec::new(),
            tally: OplogTally::default(),
            staging: None,
        }
    }

    /// Reads, checks and stages into `staging`.
    pub fn into(what: String, staging: Staging) -> ArchiveLoad {
        ArchiveLoad {
            staging: Some(staging),
            ..ArchiveLoad::check(what)
        }
    }

    /// The error that stopped the load, if one did.
    pub fn failure(&mut self) -> Option<Error> {
        self.failure.take()
    }

    /// After the last byte: the archive's summary (an integrity error if it is truncated) and
    /// the oplog's tally, with every batch inserted into the staging.
    pub async fn finish(&mut self) -> Result<(Summary, Option<OplogPrint>)> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        let summary = std::mem::take(&mut self.reader)
            .finish()
            .map_err(|e| damaged(&self.what, &e))?;
        if let Some(staging) = self.staging.as_mut() {
            for (namespace, batch) in self.batches.iter_mut() {
                staging.insert(namespace, batch.take()).await?;
            }
        }
        Ok((summary, self.tally.print()))
    }

    /// The staging, to put in place or discard.
    pub fn staging(&mut self) -> Option<&mut Staging> {
        self.staging.as_mut()
    }

    async fn take(&mut self, chunk: &[u8]) -> Result<()> {
        let mut collections: Vec<CollectionMetadata> = Vec::new();
        let mut ends: Vec<NamespaceEnd> = Vec::new();
        let restoring = self.staging.is_some();
        let Self {
            reader,
            batches,
            oplog_pending,
            tally,
            what,
            ..
        } = self;
        reader
            .feed(chunk, &mut |item| match item {
                Item::Collection(c) => collections.push(c),
                Item::Document { namespace, bytes } => {
                    if namespace.is_oplog() {
                        tally.add(bytes);
                        if restoring {
                            oplog_pending.push(bytes.to_vec());
                        }
                    } else if restoring {
                        let batch = match batches.get_mut(namespace) {
                            Some(b) => b,
                            None => batches.entry(namespace.clone()).or_default(),
                        };
                        batch.0.push(bytes);
                    }
                }
                Item::End(end) => ends.push(end),
                Item::Header(_) | Item::PreludeEnd => {}
            })
            .map_err(|e| damaged(what, &e))?;
        let Some(staging) = self.staging.as_mut() else {
            return Ok(());
        };
        for collection in collections {
            staging.stage(&collection).await?;
        }
        for (namespace, batch) in self.batches.iter_mut() {
            if batch.full() || ends.iter().any(|e| &e.namespace == namespace) {
                staging.insert(namespace, batch.take()).await?;
            }
        }
        if !self.oplog_pending.is_empty() {
            // Every collection's documents are in before the first entry is replayed.
            for (namespace, batch) in self.batches.iter_mut() {
                staging.insert(namespace, batch.take()).await?;
            }
            for entry in std::mem::take(&mut self.oplog_pending) {
                staging.replay(&entry).await?;
            }
        }
        Ok(())
    }
}

/// A prelude entry's metadata; metadata that cannot be read is damage.
pub fn read_metadata(collection: &CollectionMetadata) -> Result<CollectionMeta> {
    let namespace = &collection.namespace;
    CollectionMeta::from_json(
        &collection.metadata,
        &namespace.collection,
        &collection.kind,
    )
    .map_err(|e| Error::integrity(format!("the metadata of {namespace} cannot be read: {e}")))
}

/// A damaged archive: exit 3, and nothing was put in place.
fn damaged(what: &str, e: &ArchiveError) -> Error {
    Error::integrity(format!("{what}: {e}"))
        .with_hint("nothing was put in place; restore another snapshot (lifeboat-restore list) or a good copy of the file")
}

impl RawSink for ArchiveLoad {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if self.failure.is_some() {
            return Err(std::io::Error::other("the restore stopped"));
        }
        match self.take(chunk).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let message = e.message().to_string();
                self.failure = Some(e);
                Err(std::io::Error::other(message))
            }
        }
    }
}

/// One collection staged in the target.
#[derive(Debug)]
struct Staged {
    /// Where it goes.
    target: Namespace,
    /// Its staging collection's name, in the target database.
    staging: String,
    meta: CollectionMeta,
    /// Dropped by the oplog: nothing to put in place.
    dropped: bool,
}

/// The staging collections of one restore, by the archive's namespace.
pub struct Staging {
    mongo: Mongo,
    rules: Vec<RenameRule>,
    /// Names this restore's staging collections (`lifeboat.staging.<tag>.<name>`).
    tag: String,
    staged: BTreeMap<Namespace, Staged>,
    views: Vec<(Namespace, CollectionMeta)>,
    /// The archive's databases: oplog entries of others are not replayed.
    databases: BTreeSet<String>,
    /// Oplog entries replayed.
    pub replayed: u64,
    /// Oplog entries left out because they are about other databases.
    pub skipped: u64,
    /// Whether each target database's server has time-series collections, once asked.
    time_series: BTreeMap<String, bool>,
    /// Whether the server takes Lifeboat's entries through `applyOps`, per target database,
    /// once asked.
    apply_ops: BTreeMap<String, bool>,
}

impl Staging {
    /// Staging for a restore into `mongo`; `tag` tells this restore's staging collections
    /// from any other's.
    pub fn new(mongo: Mongo, rules: Vec<RenameRule>, tag: String) -> Staging {
        Staging {
            mongo,
            rules,
            tag,
            staged: BTreeMap::new(),
            views: Vec::new(),
            databases: BTreeSet::new(),
            replayed: 0,
            skipped: 0,
            time_series: BTreeMap::new(),
            apply_ops: BTreeMap::new(),
        }
    }

    /// Whether the archive's namespace is one a restore writes (not the server's own).
    pub fn restores(namespace: &Namespace) -> bool {
        !namespace.is_oplog()
            && !SKIPPED_DATABASES.contains(&namespace.db.as_str())
            && (!namespace.collection.starts_with("system.") || namespace.collection == "system.js")
    }

    fn staging_name(&self, target: &Namespace) -> String {
        format!("lifeboat.staging.{}.{}", self.tag, target.collection)
    }

    /// Creates the staging collection of one prelude entry (views wait until the end).
    async fn stage(&mut self, collection: &CollectionMetadata) -> Result<()> {
        let namespace = &collection.namespace;
        if !Staging::restores(namespace) {
            return Ok(());
        }
        let meta = read_metadata(collection)?;
        self.databases.insert(namespace.db.clone());
        match meta.kind.as_str() {
            "view" => {
                self.views.push((namespace.clone(), meta));
                Ok(())
            }
            _ => self.create(namespace, meta).await,
        }
    }

    async fn create(&mut self, namespace: &Namespace, meta: CollectionMeta) -> Result<()> {
        let target = rename(&self.rules, namespace);
        if meta.holds_buckets() && !self.supports_time_series(&target.db).await? {
            return Err(no_time_series(namespace, &self.mongo));
        }
        let staging = self.staging_name(&target);
        let mut command = doc! { "create": staging.as_str() };
        // A time-series collection is staged as a plain one (MongoDB cannot rename a
        // time-series collection) and created with its options only when put in place.
        if !meta.is_time_series() {
            for (key, value) in &meta.options {
                command.insert(key.clone(), value.clone());
            }
        }
        // A staging collection left by an earlier run of this same restore is ours to drop.
        drop_quietly(&self.mongo, &target.db, staging.as_str()).await;
        self.mongo
            .command(&target.db, command)
            .await
            .map_err(|e| e.within(format!("creating the staging collection of {namespace}")))?;
        self.staged.insert(
            namespace.clone(),
            Staged {
                target,
                staging,
                meta,
                dropped: false,
            },
        );
        Ok(())
    }

    fn collection(&self, namespace: &Namespace) -> Option<mongodb::Collection<RawDocumentBuf>> {
        let staged = self.staged.get(namespace)?;
        Some(
            self.mongo
                .client
                .database(&staged.target.db)
                .collection(&staged.staging),
        )
    }

    async fn insert(&mut self, namespace: &Namespace, docs: Vec<RawDocumentBuf>) -> Result<()> {
        if docs.is_empty() || !Staging::restores(namespace) {
            return Ok(());
        }
        let Some(collection) = self.collection(namespace) else {
            return Err(Error::integrity(format!(
                "the archive has documents of {namespace}, which its prelude does not list"
            )));
        };
        crate::net::within_idle_timeout(
            collection
                .insert_many(docs)
                .ordered(true)
                .bypass_document_validation(true),
        )
        .await
        .map_err(|e| {
            Error::sink_failed(format!(
                "{}: inserting into {namespace}: {e}",
                self.mongo.url
            ))
        })?
        .map_err(|e| self.mongo.error(&format!("inserting into {namespace}"), e))?;
        Ok(())
    }

    /// Replays one oplog entry onto the staging collections.
    async fn replay(&mut self, entry: &[u8]) -> Result<()> {
        let raw = RawDocument::from_bytes(entry)
            .map_err(|e| Error::integrity(format!("an oplog entry is not BSON: {e}")))?;
        let document = Document::try_from(raw)
            .map_err(|e| Error::integrity(format!("an oplog entry is not BSON: {e}")))?;
        let named = |why: String| {
            Error::new(
                ErrorKind::Refused,
                format!(
                    "oplog entry {} ({} on {}) cannot be replayed: {why}",
                    document
                        .get_timestamp("ts")
                        .map(|ts| format!("{}:{}", ts.time, ts.increment))
                        .unwrap_or_default(),
                    document.get_str("op").unwrap_or("?"),
                    document.get_str("ns").unwrap_or("?"),
                ),
            )
            .with_hint("nothing was put in place; restore a snapshot taken while the collections were not renamed or dropped")
        };
        let list = changes(&document).map_err(named)?;
        for change in list {
            self.apply(change)
                .await
                .map_err(|e| named(e.message().to_string()))?;
        }
        Ok(())
    }

    async fn apply(&mut self, change: Change) -> Result<()> {
        let mut ns = match &change {
            Change::Upsert { ns, .. }
            | Change::Update { ns, .. }
            | Change::Replace { ns, .. }
            | Change::Delete { ns, .. }
            | Change::Create { ns, .. }
            | Change::Drop { ns }
            | Change::CreateIndexes { ns, .. }
            | Change::DropIndex { ns, .. }
            | Change::Modify { ns, .. } => ns.clone(),
        };
        // MongoDB logs a time-series collection's writes on its buckets, which are what the
        // archive holds for it.
        if let Some(name) = ns.collection.strip_prefix("system.buckets.") {
            let logical = Namespace::new(ns.db.as_str(), name);
            if self
                .staged
                .get(&logical)
                .is_some_and(|s| s.meta.holds_buckets())
            {
                ns = logical;
            }
        }
        if !self.databases.contains(&ns.db) || !Staging::restores(&ns) {
            self.skipped += 1;
            return Ok(());
        }
        self.replayed += 1;
        if !self.staged.contains_key(&ns) {
            match &change {
                Change::Create { options, .. } if options.contains_key("viewOn") => {
                    let mut meta = CollectionMeta::from_json("", &ns.collection, "view")
                        .map_err(Error::sink_failed)?;
                    // The oplog names a view's pipeline `viewPipeline`; `create` takes
                    // `pipeline`.
                    for (key, value) in options {
                        let key = if key == "viewPipeline" {
                            "pipeline"
                        } else {
                            key
                        };
                        meta.options.insert(key, value.clone());
                    }
                    self.views.retain(|(n, _)| n != &ns);
                    self.views.push((ns, meta));
                    return Ok(());
                }
                Change::Create { options, .. } => {
                    let mut meta = CollectionMeta::from_json("", &ns.collection, "collection")
                        .map_err(Error::sink_failed)?;
                    meta.options = options.clone();
                    return self.create(&ns, meta).await;
                }
                // A collection created implicitly (by its first insert) during the dump.
                _ => {
                    let meta = CollectionMeta::from_json("", &ns.collection, "collection")
                        .map_err(Error::sink_failed)?;
                    self.create(&ns, meta).await?;
                }
            }
        }
        let Some(collection) = self.collection(&ns) else {
            return Ok(());
        };
        if let Some((db, staging)) = self
            .staged
            .get(&ns)
            .map(|s| (s.target.db.clone(), s.staging.clone()))
        {
            if let Some((entry, upsert)) = change.as_entry(&format!("{db}.{staging}")) {
                if self.has_apply_ops(&db).await {
                    return self
                        .mongo
                        .command(
                            "admin",
                            doc! { "applyOps": [entry], "alwaysUpsert": upsert },
                        )
                        .await
                        .map(|_| ())
                        .map_err(|e| e.within(format!("applyOps onto the staging of {ns}")));
                }
            }
        }
        let doc_collection = collection.clone_with_type::<Document>();
        let failed =
            |e: mongodb::error::Error| self.mongo.error(&format!("replaying onto {ns}"), e);
        let idle = |e: std::io::Error| Error::sink_failed(format!("{}: {e}", self.mongo.url));
        match change {
            Change::Upsert { document, .. } => {
                let id = document
                    .get("_id")
                    .cloned()
                    .unwrap_or(mongodb::bson::Bson::Null);
                crate::net::within_idle_timeout(
                    doc_collection
                        .replace_one(doc! { "_id": id }, document)
                        .upsert(true)
                        .bypass_document_validation(true),
                )
                .await
                .map_err(idle)?
                .map_err(failed)?;
            }
            Change::Update {
                filter, updates, ..
            } => {
                for update in updates {
                    crate::net::within_idle_timeout(
                        doc_collection
                            .update_one(filter.clone(), update)
                            .bypass_document_validation(true),
                    )
                    .await
                    .map_err(idle)?
                    .map_err(failed)?;
                }
            }
            Change::Replace {
                filter, document, ..
            } => {
                crate::net::within_idle_timeout(
                    doc_collection
                        .replace_one(filter, document)
                        .upsert(true)
                        .bypass_document_validation(true),
                )
                .await
                .map_err(idle)?
                .map_err(failed)?;
            }
            Change::Delete { filter, .. } => {
                crate::net::within_idle_timeout(doc_collection.delete_one(filter))
                    .await
                    .map_err(idle)?
                    .map_err(failed)?;
            }
            Change::Create { .. } => {}
            Change::Drop { .. } => {
                crate::net::within_idle_timeout(collection.drop())
                    .await
                    .map_err(idle)?
                    .map_err(failed)?;
                if let Some(staged) = self.staged.get_mut(&ns) {
                    staged.dropped = true;
                }
            }
            Change::CreateIndexes { indexes, .. } => {
                if let Some(staged) = self.staged.get_mut(&ns) {
                    for mut index in indexes {
                        // The dump's metadata has the index as the server listed it, if the
                        // build finished before the collection was read.
                        let name = index.get_str("name").unwrap_or_default().to_string();
                        if staged
                            .meta
                            .indexes
                            .iter()
                            .any(|i| i.get_str("name") == Ok(&name))
                        {
                            continue;
                        }
                        // Servers log their own bookkeeping beside the spec; createIndexes
                        // refuses it.
                        for internal in ["entryFormat", "ns"] {
                            index.remove(internal);
                        }
                        staged.meta.indexes.push(index);
                    }
                }
            }
            Change::DropIndex { name, .. } => {
                if let Some(staged) = self.staged.get_mut(&ns) {
                    staged.meta.indexes.retain(|i| {
                        let n = i.get_str("name").unwrap_or_default();
                        n == "_id_" || (name != "*" && n != name)
                    });
                }
            }
            Change::Modify { fields, .. } => {
                let Some(staged) = self.staged.get(&ns) else {
                    return Ok(());
                };
                let mut command = doc! { "collMod": staged.staging.as_str() };
                for (key, value) in fields {
                    command.insert(key, value);
                }
                let db = staged.target.db.clone();
                self.mongo.command(&db, command).await?;
            }
        }
        Ok(())
    }

    /// Builds every staged collection's indexes, renames each into place (replacing a
    /// collection of the same name only with `clean`), then creates the views. Returns the
    /// collections and the views put in place, by their restored names.
    pub async fn put_in_place(&mut self, clean: bool) -> Result<(Vec<Namespace>, Vec<Namespace>)> {
        for (namespace, staged) in self.staged.iter().filter(|(_, s)| !s.dropped) {
            let indexes = staged.meta.secondary_indexes();
            // A time-series collection's indexes are built once it is in place: they are
            // on its measurements' fields, not its buckets'.
            if indexes.is_empty() || staged.meta.is_time_series() {
                continue;
            }
            self.mongo
                .command(
                    &staged.target.db,
                    doc! { "createIndexes": staged.staging.as_str(), "indexes": indexes },
                )
                .await
                .map_err(|e| e.within(format!("building the indexes of {namespace}")))?;
        }
        let mut placed = Vec::new();
        let mut keeps_options: BTreeMap<String, bool> = BTreeMap::new();
        for (namespace, staged) in self.staged.iter().filter(|(_, s)| !s.dropped) {
            let db = staged.target.db.clone();
            let keeps = match keeps_options.get(&db) {
                Some(k) => *k,
                None => {
                    let k = self.rename_keeps_options(&db).await?;
                    keeps_options.insert(db, k);
                    k
                }
            };
            let moved = match placement(&staged.meta, keeps) {
                Placement::Rename => self.rename_into_place(staged, clean, keeps).await,
                Placement::Copy => self.copy_into_place(staged, clean).await,
            };
            if let Err(e) = moved {
                let done: Vec<String> = placed.iter().map(Namespace::to_string).collect();
                return Err(e
                    .within(format!("putting {namespace} in place"))
                    .with_hint(format!(
                    "already in place: {}; the other collections of the target were not touched",
                    if done.is_empty() {
                        "nothing".to_string()
                    } else {
                        done.join(", ")
                    },
                )));
            }
            placed.push(staged.target.clone());
        }
        // Views cannot be renamed: they are created once their collections are in place.
        let mut views = Vec::new();
        for (namespace, meta) in &self.views {
            let target = rename(&self.rules, namespace);
            if clean {
                drop_quietly(&self.mongo, &target.db, target.collection.as_str()).await;
            }
            let mut command = doc! { "create": target.collection.as_str() };
            for (key, value) in &meta.options {
                command.insert(key.clone(), value.clone());
            }
            // A view on a collection that was renamed follows it.
            if let Ok(on) = meta.options.get_str("viewOn") {
                let source = rename(&self.rules, &Namespace::new(namespace.db.as_str(), on));
                command.insert("viewOn", source.collection);
            }
            self.mongo
                .command(&target.db, command)
                .await
                .map_err(|e| e.within(format!("creating the view {target}")))?;
            views.push(target);
        }
        Ok((placed, views))
    }

    /// Whether `renameCollection` keeps a collection's options on this server, tried on a
    /// small capped collection. MongoDB keeps them; a server that does not (some compatible
    /// servers rename by copying the documents alone) gets the options put back (`collMod`) or,
    /// for those only creation sets (capped, collation, clustered), a copy into a collection
    /// created with them.
    async fn rename_keeps_options(&self, db: &str) -> Result<bool> {
        let probe = format!("lifeboat.probe.{}", self.tag);
        let renamed = format!("{probe}.renamed");
        for name in [&probe, &renamed] {
            drop_quietly(&self.mongo, db, name.as_str()).await;
        }
        self.mongo
            .command(
                db,
                doc! { "create": probe.as_str(), "capped": true, "size": 4096_i64 },
            )
            .await?;
        let renamed_ok = self
            .mongo
            .command(
                "admin",
                doc! { "renameCollection": format!("{db}.{probe}"), "to": format!("{db}.{renamed}") },
            )
            .await;
        let kept = match renamed_ok {
            Ok(_) => listed(&self.mongo, db, &renamed)
                .await?
                .and_then(|c| c.get_document("options").ok().cloned())
                .is_some_and(|o| o.get_bool("capped") == Ok(true)),
            Err(_) => false,
        };
        for name in [&probe, &renamed] {
            drop_quietly(&self.mongo, db, name.as_str()).await;
        }
        if !kept {
            tracing::info!(
                "{}: renameCollection does not keep a collection's options on this server; options are put back after the rename, and capped or collated collections are copied into place.",
                self.mongo.url
            );
        }
        Ok(kept)
    }

    /// Renames a staging collection into place; where the server drops options on a rename,
    /// puts back those `collMod` sets.
    async fn rename_into_place(&self, staged: &Staged, clean: bool, keeps: bool) -> Result<()> {
        let from = format!("{}.{}", staged.target.db, staged.staging);
        let to = staged.target.to_string();
        self.mongo
            .command(
                "admin",
                doc! { "renameCollection": from.as_str(), "to": to.as_str(), "dropTarget": clean },
            )
            .await?;
        if !keeps && has_any(&staged.meta.options, &MODIFIABLE) {
            let mut command = doc! { "collMod": staged.target.collection.as_str() };
            for key in MODIFIABLE {
                if let Some(value) = staged.meta.options.get(key) {
                    command.insert(key, value.clone());
                }
            }
            self.mongo.command(&staged.target.db, command).await?;
        }
        Ok(())
    }

    /// Whether the server applies oplog entries itself (`applyOps`, as mongorestore
    /// `--oplogReplay` uses it): then document changes are the server's to apply, update
    /// diffs included. Tried once per database with an entry of the form Lifeboat sends, on a
    /// probe collection, and the result read back; servers without it (or a user without the
    /// privilege, or a server that takes it differently) get Lifeboat's own translation.
    async fn has_apply_ops(&mut self, db: &str) -> bool {
        if let Some(known) = self.apply_ops.get(db) {
            return *known;
        }
        let probe = format!("lifeboat.probe.{}.applyops", self.tag);
        drop_quietly(&self.mongo, db, probe.as_str()).await;
        let entry = doc! { "op": "u", "ns": format!("{db}.{probe}"), "o2": { "_id": 1 }, "o": { "_id": 1, "probe": true } };
        let has = match self
            .mongo
            .command(db, doc! { "create": probe.as_str() })
            .await
        {
            Ok(_) => {
                let applied = self
                    .mongo
                    .command("admin", doc! { "applyOps": [entry], "alwaysUpsert": true })
                    .await
                    .is_ok();
                let found = self
                    .mongo
                    .command(
                        db,
                        doc! { "count": probe.as_str(), "query": { "_id": 1, "probe": true } },
                    )
                    .await
                    .ok()
                    .and_then(|r| {
                        r.get("n")
                            .and_then(|n| n.as_i32().map(i64::from).or(n.as_i64()))
                    });
                applied && found == Some(1)
            }
            Err(_) => false,
        };
        drop_quietly(&self.mongo, db, probe.as_str()).await;
        if !has {
            tracing::info!(
                "{}: no applyOps here (or not for this user); Lifeboat applies the oplog's entries itself.",
                self.mongo.url
            );
        }
        self.apply_ops.insert(db.to_string(), has);
        has
    }

    /// Whether the target database's server has time-series collections, once per database.
    async fn supports_time_series(&mut self, db: &str) -> Result<bool> {
        if let Some(known) = self.time_series.get(db) {
            return Ok(*known);
        }
        let supported = has_time_series(&self.mongo, db, &self.tag).await?;
        self.time_series.insert(db.to_string(), supported);
        Ok(supported)
    }

    /// Where a restored collection's documents are: its buckets for a time-series collection
    /// dumped as MongoDB's buckets, else the collection itself.
    pub fn documents_in(&self, source: &Namespace) -> Option<Namespace> {
        let staged = self.staged.get(source)?;
        Some(Namespace::new(
            staged.target.db.as_str(),
            staged.meta.data_collection(&staged.target.collection),
        ))
    }

    /// Creates the collection in place with its options and copies the checked staging
    /// collection's documents into it (into its buckets, for a time-series collection dumped
    /// as buckets, as mongorestore does), then its indexes; a failure drops the new collection.
    async fn copy_into_place(&self, staged: &Staged, clean: bool) -> Result<()> {
        let db = &staged.target.db;
        let name = staged.target.collection.as_str();
        let data = staged.meta.data_collection(name);
        if clean {
            drop_quietly(&self.mongo, db, name).await;
        }
        let mut create = doc! { "create": name };
        for (key, value) in &staged.meta.options {
            create.insert(key.clone(), value.clone());
        }
        self.mongo.command(db, create).await?;
        let copied = async {
            let from = self
                .mongo
                .client
                .database(db)
                .collection::<RawDocumentBuf>(&staged.staging);
            let to = self
                .mongo
                .client
                .database(db)
                .collection::<RawDocumentBuf>(&data);
            let failed = |e: mongodb::error::Error| {
                self.mongo
                    .error(&format!("copying into {}", staged.target), e)
            };
            let idle = |e: std::io::Error| Error::sink_failed(format!("{}: {e}", self.mongo.url));
            let mut cursor =
                crate::net::within_idle_timeout(from.find(doc! {}).sort(doc! { "$natural": 1 }))
                    .await
                    .map_err(idle)?
                    .map_err(failed)?;
            let mut batch = Batch::default();
            loop {
                let more = crate::net::within_idle_timeout(cursor.advance())
                    .await
                    .map_err(idle)?
                    .map_err(failed)?;
                if more {
                    batch.0.push(cursor.current().as_bytes());
                }
                if !batch.0.is_empty() && (!more || batch.full()) {
                    crate::net::within_idle_timeout(
                        to.insert_many(batch.take())
                            .ordered(true)
                            .bypass_document_validation(true),
                    )
                    .await
                    .map_err(idle)?
                    .map_err(failed)?;
                }
                if !more {
                    break;
                }
            }
            let indexes = staged.meta.secondary_indexes();
            if !indexes.is_empty() {
                self.mongo
                    .command(db, doc! { "createIndexes": name, "indexes": indexes })
                    .await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = copied {
            drop_quietly(&self.mongo, db, name).await;
            return Err(e);
        }
        self.mongo
            .command(db, doc! { "drop": staged.staging.as_str() })
            .await?;
        Ok(())
    }

    /// Drops every staging collection (after a failure); the target is as it was.
    /// Drops the staging collections; returns those that could not be dropped (`db.name`),
    /// for the failing run to name.
    pub async fn discard(&self) -> Vec<String> {
        let mut left = Vec::new();
        for staged in self.staged.values() {
            if !drop_quietly(&self.mongo, &staged.target.db, staged.staging.as_str()).await {
                left.push(format!("{}.{}", staged.target.db, staged.staging.as_str()));
            }
        }
        left
    }

    /// Where each of the archive's namespaces went: archive name -> restored name.
    pub fn targets(&self) -> BTreeMap<Namespace, Namespace> {
        self.staged
            .iter()
            .filter(|(_, s)| !s.dropped)
            .map(|(n, s)| (n.clone(), s.target.clone()))
            .chain(
                self.views
                    .iter()
                    .map(|(n, _)| (n.clone(), rename(&self.rules, n))),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: &str, options: Document) -> CollectionMeta {
        let mut meta = CollectionMeta::from_json("", "c", kind).unwrap();
        meta.options = options;
        meta
    }

    #[test]
    fn time_series_are_copied_into_place_even_where_a_rename_would_keep_their_options() {
        let ts = doc! { "timeseries": { "timeField": "t" }, "expireAfterSeconds": 60 };
        for kind in ["timeseries", "collection"] {
            assert_eq!(placement(&meta(kind, ts.clone()), true), Placement::Copy);
            assert_eq!(placement(&meta(kind, ts.clone()), false), Placement::Copy);
        }
        let capped = doc! { "capped": true, "size": 4096 };
        assert_eq!(
            placement(&meta("collection", capped.clone()), true),
            Placement::Rename
        );
        assert_eq!(
            placement(&meta("collection", capped), false),
            Placement::Copy
        );
        let validated = doc! { "validator": { "a": { "$exists": true } } };
        assert_eq!(
            placement(&meta("collection", validated), false),
            Placement::Rename
        );
    }
}
