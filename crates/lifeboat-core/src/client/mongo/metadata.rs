//! A collection's metadata as mongodump writes it (a dump directory's `metadata.json`, and the
//! `metadata` string of the archive's prelude): options, index specs, UUID, name and type as
//! canonical Extended JSON v2, so that `mongorestore` reads Lifeboat's archives and Lifeboat
//! reads mongodump's.

use mongodb::bson::{Bson, Document};

/// One collection or view of a dump.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionMeta {
    /// The collection's name within its database.
    pub name: String,
    /// `collection`, `view` or `timeseries`.
    pub kind: String,
    /// The options `listCollections` reported (capped, size, max, validator, collation,
    /// viewOn and pipeline, timeseries, clusteredIndex, changeStreamPreAndPostImages...).
    pub options: Document,
    /// The index specs `listIndexes` reported (none for views).
    pub indexes: Vec<Document>,
    /// The collection's UUID, as hex.
    pub uuid: Option<String>,
}

impl CollectionMeta {
    /// From one document of `listCollections`.
    pub fn from_listing(listed: &Document) -> CollectionMeta {
        let uuid = listed
            .get_document("info")
            .ok()
            .and_then(|info| match info.get("uuid") {
                Some(Bson::Binary(b)) => Some(hex::encode(&b.bytes)),
                _ => None,
            });
        // The type as listed, as mongodump records it: it says what the data is (a
        // `timeseries` collection's documents are its buckets).
        CollectionMeta {
            name: listed.get_str("name").unwrap_or_default().to_string(),
            kind: listed.get_str("type").unwrap_or("collection").to_string(),
            options: listed.get_document("options").cloned().unwrap_or_default(),
            indexes: Vec::new(),
            uuid,
        }
    }

    /// A time-series collection: MongoDB lists one as type `timeseries`, some compatible
    /// servers as a plain collection with the option. Either way it is created with its
    /// options where it belongs and never renamed (MongoDB refuses to rename one).
    pub fn is_time_series(&self) -> bool {
        self.kind == "timeseries" || self.options.contains_key("timeseries")
    }

    /// Whether the documents dumped are MongoDB's buckets (`system.buckets.<name>`), as
    /// mongodump dumps a collection listed as `timeseries`, rather than the measurements a
    /// server that lists it as a plain collection hands out.
    pub fn holds_buckets(&self) -> bool {
        self.kind == "timeseries"
    }

    /// The collection the documents are read from and written to.
    pub fn data_collection(&self, name: &str) -> String {
        if self.holds_buckets() {
            format!("system.buckets.{name}")
        } else {
            name.to_string()
        }
    }

    /// The metadata text, in the field order mongodump writes.
    pub fn to_json(&self) -> String {
        let mut doc = Document::new();
        doc.insert("options", self.options.clone());
        doc.insert(
            "indexes",
            self.indexes
                .iter()
                .cloned()
                .map(Bson::Document)
                .collect::<Vec<_>>(),
        );
        if let Some(uuid) = &self.uuid {
            doc.insert("uuid", uuid.as_str());
        }
        doc.insert("collectionName", self.name.as_str());
        doc.insert("type", self.kind.as_str());
        Bson::Document(doc).into_canonical_extjson().to_string()
    }

    /// Reads metadata text (Lifeboat's or mongodump's); `kind` is the prelude's `type`, for
    /// metadata that does not say.
    pub fn from_json(text: &str, name: &str, kind: &str) -> Result<CollectionMeta, String> {
        if text.is_empty() {
            return Ok(CollectionMeta {
                name: name.to_string(),
                kind: if kind.is_empty() { "collection" } else { kind }.to_string(),
                options: Document::new(),
                indexes: Vec::new(),
                uuid: None,
            });
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Bson::Document(doc) =
            Bson::try_from(value).map_err(|e| format!("not Extended JSON: {e}"))?
        else {
            return Err("not a JSON object".into());
        };
        let indexes = match doc.get_array("indexes") {
            Ok(list) => list
                .iter()
                .map(|i| match i {
                    Bson::Document(d) => Ok(d.clone()),
                    other => Err(format!("an index spec is not an object: {other}")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Err(_) => Vec::new(),
        };
        let kind = doc
            .get_str("type")
            .ok()
            .filter(|k| !k.is_empty())
            .unwrap_or(if kind.is_empty() { "collection" } else { kind });
        Ok(CollectionMeta {
            name: doc.get_str("collectionName").unwrap_or(name).to_string(),
            kind: kind.to_string(),
            options: doc.get_document("options").cloned().unwrap_or_default(),
            indexes,
            uuid: doc.get_str("uuid").ok().map(str::to_string),
        })
    }

    /// The indexes to build after the data is in: every index but `_id_`, which comes with
    /// the collection, without the fields a server fills in itself.
    pub fn secondary_indexes(&self) -> Vec<Document> {
        self.indexes
            .iter()
            .filter(|i| i.get_str("name") != Ok("_id_"))
            .map(|i| {
                let mut i = i.clone();
                i.remove("ns");
                i
            })
            .collect()
    }
}

/// An index spec as a fingerprint compares it: canonical Extended JSON of `key` first, then
/// the other fields sorted by name, without `v` and `ns` (a server's own bookkeeping).
pub fn index_fingerprint(index: &Document) -> String {
    let mut out = Document::new();
    if let Some(key) = index.get("key") {
        out.insert("key", key.clone());
    }
    let mut rest: Vec<(&String, &Bson)> = index
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "key" | "v" | "ns"))
        .collect();
    rest.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in rest {
        out.insert(k.clone(), v.clone());
    }
    Bson::Document(out).into_canonical_extjson().to_string()
}

/// The index fingerprints of a collection, sorted.
pub fn index_fingerprints(indexes: &[Document]) -> Vec<String> {
    let mut out: Vec<String> = indexes.iter().map(index_fingerprint).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn metadata_round_trips_through_its_json_keeping_key_order() {
        let meta = CollectionMeta {
            name: "events".into(),
            kind: "collection".into(),
            options: doc! { "capped": true, "size": 4096_i64, "max": 10 },
            indexes: vec![
                doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" },
                doc! { "v": 2, "key": { "b": 1, "a": -1 }, "name": "b_1_a_-1", "unique": true },
            ],
            uuid: Some("00112233".into()),
        };
        let json = meta.to_json();
        assert!(
            json.starts_with(r#"{"options":{"capped":true,"size":{"$numberLong":"4096"}"#),
            "{json}"
        );
        // A compound index keeps its fields' order: b before a.
        assert!(
            json.contains(r#""key":{"b":{"$numberInt":"1"},"a":{"$numberInt":"-1"}}"#),
            "{json}"
        );
        let back = CollectionMeta::from_json(&json, "x", "").unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.secondary_indexes().len(), 1);
    }

    #[test]
    fn mongodumps_metadata_is_read() {
        // As mongodump 100.x writes it (canonical Extended JSON, no type for old tools).
        let text = r#"{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_","ns":"app.users"}],"uuid":"5d3b","collectionName":"users"}"#;
        let meta = CollectionMeta::from_json(text, "users", "").unwrap();
        assert_eq!(meta.kind, "collection");
        assert_eq!(meta.indexes.len(), 1);
        assert!(meta.secondary_indexes().is_empty());
        assert!(CollectionMeta::from_json("{not json", "u", "").is_err());
    }

    #[test]
    fn time_series_are_told_by_type_or_option_and_only_mongodbs_hold_buckets() {
        let listed = |kind: &str| {
            doc! { "name": "weather", "type": kind, "options": { "timeseries": { "timeField": "t" } } }
        };
        let mongodb = CollectionMeta::from_listing(&listed("timeseries"));
        assert!(mongodb.is_time_series() && mongodb.holds_buckets());
        assert_eq!(mongodb.data_collection("w"), "system.buckets.w");
        // A server that lists it as a plain collection hands out the measurements.
        let compatible = CollectionMeta::from_listing(&listed("collection"));
        assert_eq!(compatible.kind, "collection");
        assert!(compatible.is_time_series() && !compatible.holds_buckets());
        assert_eq!(compatible.data_collection("w"), "w");
        let plain = CollectionMeta::from_listing(&doc! { "name": "users", "type": "collection" });
        assert!(!plain.is_time_series());
    }

    #[test]
    fn index_fingerprints_ignore_the_version_and_option_order() {
        let a = doc! { "v": 2, "key": { "x": 1 }, "name": "x_1", "unique": true, "sparse": true };
        let b = doc! { "sparse": true, "unique": true, "name": "x_1", "key": { "x": 1 }, "v": 1 };
        assert_eq!(index_fingerprint(&a), index_fingerprint(&b));
        let c = doc! { "key": { "x": -1 }, "name": "x_1", "unique": true, "sparse": true };
        assert_ne!(index_fingerprint(&a), index_fingerprint(&c));
    }
}
