//! MongoDB restores, natively: the archive is read as it streams from the store, every
//! collection loaded into a staging collection of its target database
//! (`lifeboat.staging.<tag>.<name>`), the captured oplog replayed onto them, and their indexes
//! built. Only once both digests, every namespace's CRC and the document counts match is each
//! renamed into place (`renameCollection`, with `dropTarget` only under `--clean`); views, which
//! cannot be renamed, are created after, and time-series collections, which cannot be renamed
//! either, are created in place and filled from their staging copies. Any failure before that
//! drops the staging collections: the target is as it was.

mod load;
mod oplog;
mod rename;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use lifeboat_mongo_archive::{Namespace, Summary};
use mongodb::bson::doc;

pub use load::{ArchiveLoad, Staging};
pub use rename::RenameRule;

use crate::catalog::{Fingerprint, Manifest, MongoCollectionPrint, MongoFingerprint, OplogPrint};
use crate::client::mongo::metadata::index_fingerprints;
use crate::client::mongo::{Mongo, Topology};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Keys;
use crate::readback::read_snapshot;
use crate::secret::SecretUrl;
use crate::sink::{
    Applied, Drilled, RestoreMode, RestoreOptions, Scratch, Sink, SinkPlan, Surveyed, Target,
    TargetState,
};
use crate::store::Store;

/// Restores MongoDB snapshots and mongodump archives.
pub struct MongoSink;

fn mongo_fingerprint(snapshot: &Manifest) -> Result<&MongoFingerprint> {
    match &snapshot.fingerprint {
        Fingerprint::Mongo(f) => Ok(f),
        _ => Err(Error::integrity(format!(
            "{} is a MongoDB backup without a MongoDB fingerprint",
            super::described(snapshot)
        ))),
    }
}

/// Parses `--to` (or a scratch URL): a mongodb:// or mongodb+srv:// URL.
fn target_url(snapshot: &Manifest, to: &str) -> Result<SecretUrl> {
    let wrong = |got: &str| {
        Error::config(format!(
            "{} is a MongoDB dump; --to must be a mongodb:// or mongodb+srv:// URL, got {got}",
            super::described(snapshot)
        ))
        .with_hint("e.g. --to mongodb://user:PASSWORD@host:27017/?authSource=admin")
    };
    let url = SecretUrl::parse(to).map_err(|e| wrong(&format!("{to:?} ({e})")))?;
    if !matches!(url.scheme(), "mongodb" | "mongodb+srv") {
        return Err(wrong(&format!("{}://", url.scheme())));
    }
    Ok(url)
}

/// Connects to a restore target or scratch server; a sharded cluster is refused.
async fn connect_target(url: &SecretUrl) -> Result<Mongo> {
    let mongo = Mongo::connect(url, ErrorKind::Sink).await?;
    if mongo.topology == Topology::Sharded {
        return Err(Error::new(
            ErrorKind::Refused,
            format!("{url} is a sharded cluster (mongos); Lifeboat does not restore into sharded clusters yet"),
        )
        .with_hint("restore into a replica set or a standalone server"));
    }
    Ok(mongo)
}

/// The archive's namespaces a restore writes (collections and views).
fn restored_namespaces(fingerprint: &MongoFingerprint) -> Vec<Namespace> {
    fingerprint
        .collections
        .keys()
        .chain(&fingerprint.views)
        .filter_map(|name| name.split_once('.'))
        .map(|(db, coll)| Namespace::new(db, coll))
        .filter(Staging::restores)
        .collect()
}

/// The collection names of a database.
async fn collection_names(mongo: &Mongo, db: &str) -> Result<BTreeSet<String>> {
    let names = crate::net::within_idle_timeout(mongo.client.database(db).list_collection_names())
        .await
        .map_err(|e| Error::sink_failed(format!("{}: {e}", mongo.url)))?
        .map_err(|e| mongo.error(&format!("listCollections on {db}"), e))?;
    Ok(names.into_iter().collect())
}

/// Of `targets`, those that exist already.
async fn existing(mongo: &Mongo, targets: &[Namespace]) -> Result<(Vec<Namespace>, i64)> {
    let mut by_db: BTreeMap<&str, Vec<&Namespace>> = BTreeMap::new();
    for t in targets {
        by_db.entry(&t.db).or_default().push(t);
    }
    let mut clashes = Vec::new();
    let mut present = 0i64;
    for (db, wanted) in by_db {
        let names = collection_names(mongo, db).await?;
        present += names.iter().filter(|n| !n.starts_with("system.")).count() as i64;
        clashes.extend(
            wanted
                .into_iter()
                .filter(|t| names.contains(&t.collection))
                .cloned(),
        );
    }
    Ok((clashes, present))
}

/// A short tag naming one restore's staging collections (from the snapshot id's suffix).
fn staging_tag(snapshot: &Manifest) -> String {
    let id = snapshot.id.to_string();
    let suffix: String = id
        .rsplit('-')
        .next()
        .unwrap_or(&id)
        .chars()
        .take(12)
        .collect();
    suffix
}

/// The fingerprint an archive itself gives: documents per namespace from its end-of-file
/// blocks, index specs from its metadata, its views and its oplog.
fn archive_fingerprint(summary: &Summary, oplog: Option<OplogPrint>) -> Result<MongoFingerprint> {
    let mut fingerprint = MongoFingerprint {
        point_in_time: oplog.is_some(),
        oplog,
        ..Default::default()
    };
    for collection in &summary.collections {
        let namespace = &collection.namespace;
        if namespace.is_oplog() {
            continue;
        }
        let meta = load::read_metadata(collection)?;
        if meta.kind == "view" {
            fingerprint.views.push(namespace.to_string());
            continue;
        }
        if meta.holds_buckets() {
            fingerprint.buckets.push(namespace.to_string());
        }
        fingerprint.collections.insert(
            namespace.to_string(),
            MongoCollectionPrint {
                documents: summary.ends.get(namespace).map_or(0, |e| e.documents),
                indexes: index_fingerprints(&meta.indexes),
            },
        );
    }
    Ok(fingerprint)
}

/// How an archive differs from its manifest: counts, index specs, views, the oplog's length.
fn archive_findings(recorded: &MongoFingerprint, found: &MongoFingerprint) -> Vec<String> {
    let mut out = Vec::new();
    for (name, want) in &recorded.collections {
        match found.collections.get(name) {
            None => out.push(format!("the archive lacks the collection {name}")),
            Some(got) => {
                if got.documents != want.documents {
                    out.push(format!(
                        "the archive holds {} documents of {name}, the backup recorded {}",
                        got.documents, want.documents
                    ));
                }
                if got.indexes != want.indexes {
                    out.push(format!(
                        "the archive's index specs of {name} differ from the backup's record"
                    ));
                }
            }
        }
    }
    for view in recorded.views.iter().filter(|v| !found.views.contains(v)) {
        out.push(format!("the archive lacks the view {view}"));
    }
    let entries = |f: &MongoFingerprint| f.oplog.as_ref().map_or(0, |o| o.entries);
    if entries(recorded) != entries(found) {
        out.push(format!(
            "the archive's oplog holds {} entries, the backup recorded {}",
            entries(found),
            entries(recorded)
        ));
    }
    out
}

/// A snapshot whose archive differs from its manifest: exit 3, and what was left alone.
fn mismatch(snapshot: &Manifest, findings: &[String], untouched: &str) -> Error {
    Error::integrity(format!(
        "{} does not match its manifest: {}",
        super::described(snapshot),
        findings.join("; ")
    ))
    .with_hint(format!(
        "{untouched}; restore an older snapshot (lifeboat-restore list)"
    ))
}

/// Streams the snapshot into staging collections and checks it whole; on success the staging
/// is ready to be put in place, on failure it is dropped.
async fn stage<S: Store>(
    store: &S,
    keys: &Keys,
    snapshot: &Manifest,
    mongo: Mongo,
    rules: Vec<RenameRule>,
) -> Result<(ArchiveLoad, Summary, Option<OplogPrint>)> {
    let staging = Staging::new(mongo, rules, staging_tag(snapshot));
    let mut load = ArchiveLoad::into(super::described(snapshot), staging);
    let checked = async {
        let read = read_snapshot(store, snapshot, keys, &mut load).await?;
        if read.sink_error.is_some() {
            if let Some(e) = load.failure() {
                return Err(e);
            }
        }
        let (summary, oplog) = load.finish().await?;
        let found = archive_fingerprint(&summary, oplog.clone())?;
        let findings = archive_findings(mongo_fingerprint(snapshot)?, &found);
        if !findings.is_empty() {
            return Err(mismatch(snapshot, &findings, "nothing was put in place"));
        }
        Ok((summary, oplog))
    }
    .await;
    match checked {
        Ok((summary, oplog)) => Ok((load, summary, oplog)),
        Err(e) => {
            let e = match load.staging() {
                Some(staging) => discard(staging, e).await,
                None => e,
            };
            Err(e)
        }
    }
}

/// Drops a failed restore's staging collections; the error names those that could not be
/// dropped (the server went away), so the operator knows what is left and what removes it.
async fn discard(staging: &load::Staging, e: Error) -> Error {
    let left = staging.discard().await;
    if left.is_empty() {
        return e;
    }
    e.with_note(format!(
        "the staging collections {} could not be dropped; the next restore into this server (or one with --clean) removes them, or drop them by hand",
        left.join(", ")
    ))
}

impl Sink for MongoSink {
    fn product(&self) -> &'static str {
        "MongoDB"
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
                "a mongodump archive file",
                "the whole snapshot is checked (digests, every namespace's CRC, counts) first; the file is written beside the path, synced and renamed into place; restore it with mongorestore --archive=FILE --oplogReplay".to_string(),
            );
        }
        super::refuse_choices(snapshot, options, &[super::Choice::Rename])?;
        let url = target_url(snapshot, to)?;
        let fingerprint = mongo_fingerprint(snapshot)?;
        let sources = restored_namespaces(fingerprint);
        let targets: Vec<Namespace> = sources
            .iter()
            .map(|n| rename::rename(&options.rename, n))
            .collect();
        let mut seen = BTreeMap::new();
        for (source, target) in sources.iter().zip(&targets) {
            if let Some(first) = seen.insert(target.clone(), source.clone()) {
                return Err(Error::config(format!(
                    "--rename puts both {first} and {source} at {target}"
                ))
                .with_hint("give each namespace its own target, e.g. 'app.*=app_restored.*'"));
            }
        }
        let mongo = connect_target(&url).await?;
        let (clashes, present) = existing(&mongo, &targets).await?;
        if !clashes.is_empty() && !options.clean {
            let names: Vec<String> = clashes.iter().map(Namespace::to_string).collect();
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "the target {url} already has {} of the same name: {}",
                    crate::text::counted(clashes.len() as u64, "collection"),
                    names.join(", ")
                ),
            )
            .with_hint("restore under other names (--rename 'app.*=app_restored.*'), or add --clean to replace them"));
        }
        // Buckets need a server with time-series collections: asked here, so a dry run refuses
        // what the restore would (a probe collection is created and dropped).
        let tag = staging_tag(snapshot);
        for (source, target) in sources.iter().zip(&targets) {
            if fingerprint.buckets.contains(&source.to_string())
                && !load::has_time_series(&mongo, &target.db, &tag).await?
            {
                return Err(load::no_time_series(source, &mongo));
            }
        }
        let databases: BTreeSet<&str> = targets.iter().map(|t| t.db.as_str()).collect();
        let mut notes = vec![
            (
                "restores",
                format!(
                    "{} and {} into {}{}",
                    crate::text::counted(fingerprint.collections.len() as u64, "collection"),
                    crate::text::counted(fingerprint.views.len() as u64, "view"),
                    if databases.len() == 1 { "database " } else { "databases " },
                    databases.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ),
            (
                "existing",
                if clashes.is_empty() {
                    format!("{present} collections in those databases, none of the same name; they are left alone")
                } else {
                    format!(
                        "{} of the same name are replaced (--clean); other collections are left alone",
                        crate::text::counted(clashes.len() as u64, "collection")
                    )
                },
            ),
            (
                "safety",
                format!(
                    "each collection is loaded into a staging collection (lifeboat.staging.{}.*) and renamed into place only after both digests, every namespace's CRC and the counts match; a failure drops them and leaves the target as it was",
                    staging_tag(snapshot)
                ),
            ),
        ];
        match &fingerprint.oplog {
            Some(oplog) => notes.push((
                "oplog",
                format!(
                    "{} replayed, to {} (one instant)",
                    crate::text::counted(oplog.entries, "entry"),
                    oplog.end
                ),
            )),
            None => notes.push((
                "consistency",
                "not a point-in-time dump: each collection is as it was when it was read"
                    .to_string(),
            )),
        }
        Ok(SinkPlan {
            target: Target::Url(url),
            target_state: TargetState {
                server_version: format!("MongoDB {}", mongo.server_version),
                objects: present,
            },
            notes,
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
        let url = match &plan.target {
            Target::Url(url) => url,
            Target::Path(path) => {
                let findings = self.check(store, keys, snapshot).await?;
                if !findings.is_empty() {
                    return Err(mismatch(snapshot, &findings, "nothing was written"));
                }
                return super::to_file::write_verified(store, keys, snapshot, path, options.clean)
                    .await;
            }
        };
        let mongo = connect_target(url).await?;
        let (mut load, summary, oplog) =
            stage(store, keys, snapshot, mongo, options.rename.clone()).await?;
        let Some(staging) = load.staging() else {
            return Err(Error::sink_failed("the restore staged nothing"));
        };
        let placed = staging.put_in_place(options.clean).await;
        let placed = match placed {
            Ok(p) => p,
            Err(e) => return Err(discard(staging, e).await),
        };
        let documents: u64 = summary
            .ends
            .iter()
            .filter(|(n, _)| !n.is_oplog())
            .map(|(_, e)| e.documents)
            .sum();
        let (collections, views) = placed;
        let mut notes = vec![format!(
            "Put {} ({} from the archive; every namespace's CRC checked) and {} in place",
            crate::text::counted(collections.len() as u64, "collection"),
            crate::text::counted(documents, "document"),
            crate::text::counted(views.len() as u64, "view"),
        )];
        if let Some(oplog) = oplog {
            notes.push(format!(
                "Replayed {} of the oplog to {}{}",
                crate::text::counted(staging.replayed, "entry"),
                oplog.end,
                if staging.skipped > 0 {
                    format!(" ({} about other databases left out)", staging.skipped)
                } else {
                    String::new()
                }
            ));
        }
        Ok(Applied {
            stored_bytes: snapshot.object.stored_size,
            raw_bytes: summary.bytes,
            notes,
        })
    }

    async fn check<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
    ) -> Result<Vec<String>> {
        let recorded = mongo_fingerprint(snapshot)?;
        let mut load = ArchiveLoad::check(super::described(snapshot));
        read_snapshot(store, snapshot, keys, &mut load).await?;
        let (summary, oplog) = match load.finish().await {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::Integrity => return Ok(vec![e.message().to_string()]),
            Err(e) => return Err(e),
        };
        let found = archive_fingerprint(&summary, oplog)?;
        Ok(archive_findings(recorded, &found))
    }

    fn check_scratch(&self, scratch: &Scratch) -> Result<()> {
        super::scratch_url(
            scratch,
            &["mongodb", "mongodb+srv"],
            "mongodb://127.0.0.1:27018 (a throwaway server)",
        )
        .map(|_| ())
    }

    /// Restores into scratch databases (`lbdrill_<tag>_<db>`) of a scratch server, compares
    /// document counts and index specs with the manifest, and drops those databases. Scratch
    /// databases that exist already are refused: a drill never drops data it did not write.
    async fn drill<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        scratch: &Scratch,
    ) -> Result<Drilled> {
        let url = super::scratch_url(
            scratch,
            &["mongodb", "mongodb+srv"],
            "mongodb://127.0.0.1:27018",
        )?;
        let url = url.clone();
        let recorded = mongo_fingerprint(snapshot)?;
        let mongo = connect_target(&url).await?;
        let tag = staging_tag(snapshot);
        let sources: BTreeSet<String> = restored_namespaces(recorded)
            .into_iter()
            .map(|n| n.db)
            .collect();
        let mut rules = Vec::new();
        let mut scratch_dbs = Vec::new();
        for db in &sources {
            let name: String = format!("lbdrill_{tag}_{db}").chars().take(63).collect();
            if !collection_names(&mongo, &name).await?.is_empty() {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!("the scratch server {url} already has a database {name}"),
                )
                .with_hint("drop it (it is a leftover of an earlier drill) or point --scratch-url at another server"));
            }
            rules.push(
                format!("{db}.*={name}.*")
                    .parse::<RenameRule>()
                    .map_err(Error::config)?,
            );
            scratch_dbs.push(name);
        }
        let started = Instant::now();
        let result = async {
            let (mut load, _, _) = stage(store, keys, snapshot, mongo.clone(), rules).await?;
            let Some(staging) = load.staging() else {
                return Err(Error::sink_failed("the drill staged nothing"));
            };
            staging.put_in_place(false).await?;
            let restore_secs = started.elapsed().as_secs_f64();
            let mut found = BTreeMap::new();
            for (source, target) in staging.targets() {
                let name = source.to_string();
                if !recorded.collections.contains_key(&name) {
                    continue;
                }
                // Counted where the archive's documents went (a time-series collection's
                // buckets, when it was dumped as buckets).
                let counted = staging.documents_in(&source).unwrap_or(target.clone());
                let collection = mongo
                    .client
                    .database(&counted.db)
                    .collection::<mongodb::bson::Document>(&counted.collection);
                let documents =
                    crate::net::within_idle_timeout(collection.count_documents(doc! {}))
                        .await
                        .map_err(|e| Error::sink_failed(format!("{url}: {e}")))?
                        .map_err(|e| mongo.error(&format!("counting {counted}"), e))?;
                let reply = mongo
                    .command(
                        &target.db,
                        doc! { "listIndexes": target.collection.as_str() },
                    )
                    .await?;
                let indexes: Vec<mongodb::bson::Document> = reply
                    .get_document("cursor")
                    .and_then(|c| c.get_array("firstBatch"))
                    .map(|b| b.iter().filter_map(|i| i.as_document().cloned()).collect())
                    .unwrap_or_default();
                found.insert(
                    name,
                    MongoCollectionPrint {
                        documents,
                        indexes: index_fingerprints(&indexes),
                    },
                );
            }
            let mut findings = recorded.differences(&found);
            let targets = staging.targets();
            for view in &recorded.views {
                let Some((db, coll)) = view.split_once('.') else {
                    continue;
                };
                let present = match targets.get(&Namespace::new(db, coll)) {
                    Some(t) => collection_names(&mongo, &t.db)
                        .await?
                        .contains(&t.collection),
                    None => false,
                };
                if !present {
                    findings.push(format!("the view {view} was not recreated"));
                }
            }
            Ok(Drilled {
                findings,
                restore_secs: Some(restore_secs),
            })
        }
        .await;
        for db in &scratch_dbs {
            if let Err(e) = mongo.command(db, doc! { "dropDatabase": 1 }).await {
                tracing::warn!("The drill's database {db} could not be dropped from {url}: {e}");
            }
        }
        result
    }

    /// A mongodump archive made elsewhere: its framing and CRCs checked, what it holds read from
    /// its end-of-file blocks and metadata.
    async fn survey<S: Store>(&self, store: &S, snapshot: &Manifest) -> Result<Surveyed> {
        let mut load = ArchiveLoad::check(snapshot.source.url.clone());
        read_snapshot(store, snapshot, &Keys::none(), &mut load).await?;
        let (summary, oplog) = load.finish().await?;
        let fingerprint = archive_fingerprint(&summary, oplog)?;
        Ok(Surveyed {
            fingerprint: Fingerprint::Mongo(fingerprint),
            server_version: summary.header.map(|h| h.server_version),
        })
    }
}
