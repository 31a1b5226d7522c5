//! The oplog of a dump's duration, as `mongodump --oplog` captures it.

use lifeboat_mongo_archive::{ArchiveWriter, DocumentBatch, Namespace};
use mongodb::bson::{doc, RawDocumentBuf, Timestamp};

use super::{write_out, BATCH_BYTES};
use crate::catalog::OplogPrint;
use crate::client::mongo::Mongo;
use crate::error::{Error, Result};

/// `seconds:increment`, as the fingerprint and reports show an oplog timestamp.
pub fn show(ts: Timestamp) -> String {
    format!("{}:{}", ts.time, ts.increment)
}

/// The newest oplog entry's timestamp, noted before the first document is read; `None` (with
/// the caller's warning) when the user may not read `local`.
pub async fn newest(mongo: &Mongo) -> Result<Option<Timestamp>> {
    let oplog = mongo
        .client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs");
    let found = crate::net::within_idle_timeout(
        oplog
            .find_one(doc! {})
            .sort(doc! { "$natural": -1 })
            .projection(doc! { "ts": 1 }),
    )
    .await
    .map_err(|e| Error::source_failed(format!("{}: reading the oplog: {e}", mongo.url)))?;
    match found {
        Ok(Some(entry)) => entry.get_timestamp("ts").map(Some).map_err(|e| {
            Error::source_failed(format!(
                "{}: the newest oplog entry has no ts: {e}",
                mongo.url
            ))
        }),
        Ok(None) => Err(Error::source_failed(format!(
            "{}: the replica set's oplog (local.oplog.rs) is empty",
            mongo.url
        ))),
        Err(e) if Mongo::code(&e) == Some(13) => {
            tracing::warn!(
                "{}: the user cannot read local.oplog.rs (it needs the `backup` role, or `read` on local).",
                mongo.url
            );
            Ok(None)
        }
        Err(e) => Err(mongo.error("reading the oplog", e)),
    }
}

/// Reads the oplog from `start` to its end into the archive's `oplog` namespace. The first
/// entry must be `start` itself: if it is gone, the oplog rolled over while the collections
/// were read and the dump cannot be brought to one instant.
pub async fn capture(
    mongo: &Mongo,
    start: Timestamp,
    writer: &mut ArchiveWriter,
    out: &mut tokio::io::DuplexStream,
) -> Result<OplogPrint> {
    let oplog = mongo
        .client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs");
    let reading = |e: mongodb::error::Error| mongo.error("reading the oplog", e);
    let mut cursor = crate::net::within_idle_timeout(
        oplog
            .find(doc! { "ts": { "$gte": start } })
            .sort(doc! { "$natural": 1 }),
    )
    .await
    .map_err(|e| Error::source_failed(format!("{}: reading the oplog: {e}", mongo.url)))?
    .map_err(reading)?;
    let namespace = Namespace::oplog();
    let mut print = OplogPrint {
        start: show(start),
        ..Default::default()
    };
    let mut batch = DocumentBatch::default();
    let mut segment = Vec::new();
    let mut last = None;
    loop {
        let more = crate::net::within_idle_timeout(cursor.advance())
            .await
            .map_err(|e| Error::source_failed(format!("{}: reading the oplog: {e}", mongo.url)))?
            .map_err(reading)?;
        if more {
            let entry = cursor.current();
            let ts = entry.get_timestamp("ts").map_err(|e| {
                Error::source_failed(format!("{}: an oplog entry has no ts: {e}", mongo.url))
            })?;
            if last.is_none() && ts != start {
                return Err(rolled_over(mongo, start));
            }
            if last.is_some() {
                print.count(
                    entry.get_str("op").unwrap_or_default(),
                    entry.get_str("ns").unwrap_or_default(),
                );
            }
            last = Some(ts);
            batch.push(entry.as_bytes());
            print.entries += 1;
        }
        if (!more && !batch.is_empty()) || batch.byte_len() >= BATCH_BYTES {
            writer.segment(&mut segment, &namespace, batch.documents());
            write_out(out, &mut segment).await?;
            batch.clear();
        }
        if !more {
            break;
        }
    }
    let Some(end) = last else {
        return Err(rolled_over(mongo, start));
    };
    writer.end(&mut segment, &namespace);
    write_out(out, &mut segment).await?;
    print.end = show(end);
    Ok(print)
}

fn rolled_over(mongo: &Mongo, start: Timestamp) -> Error {
    Error::source_failed(format!(
        "{}: the oplog rolled over during the dump: its entry {} (noted before the first read) is gone, so the dump cannot be brought to one instant",
        mongo.url,
        show(start)
    ))
    .with_hint(
        "enlarge the oplog (replSetResizeOplog) so it holds more than a dump's duration of writes, or run the backup when fewer writes happen; nothing was committed",
    )
}
