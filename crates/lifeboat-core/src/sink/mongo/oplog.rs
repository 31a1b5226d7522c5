//! Oplog entries turned into the changes a restore applies to its staging collections, as
//! `mongorestore --oplogReplay` would: inserts (as upserts, so an entry for a document the dump
//! already holds is harmless), deletes, replacements, `$set`-style updates and `$v: 2` update
//! diffs, the index and collection commands a dump can race with, and `applyOps` (transactions)
//! entry by entry. Every change is idempotent, because the dump read each collection at some
//! point after the oplog's first entry. An entry Lifeboat cannot apply is an error naming it.
//!
//! Pure: [`changes`] only translates; the loader runs the changes, the document changes through
//! the server's own `applyOps` where it has one ([`Change::as_entry`]).

use lifeboat_mongo_archive::Namespace;
use mongodb::bson::{doc, Bson, Document};

/// One change to a collection.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert or replace the document with this `_id`.
    Upsert { ns: Namespace, document: Document },
    /// Apply these update documents, in order, to the document `filter` matches.
    Update {
        ns: Namespace,
        filter: Document,
        updates: Vec<Document>,
        /// The entry's own `o`, for a server that applies it itself (`applyOps`).
        logged: Document,
    },
    /// Replace the document `filter` matches.
    Replace {
        ns: Namespace,
        filter: Document,
        document: Document,
    },
    /// Delete the document `filter` matches.
    Delete { ns: Namespace, filter: Document },
    /// A collection (or, with `viewOn`, a view) created during the dump.
    Create { ns: Namespace, options: Document },
    /// A collection dropped during the dump.
    Drop { ns: Namespace },
    /// Indexes built during the dump.
    CreateIndexes {
        ns: Namespace,
        indexes: Vec<Document>,
    },
    /// An index dropped during the dump (`*`: all but `_id_`).
    DropIndex { ns: Namespace, name: String },
    /// Options changed during the dump (`collMod`'s fields but the collection's name).
    Modify { ns: Namespace, fields: Document },
}

impl Change {
    /// A document change as an oplog entry on `staging` (the staging collection's namespace,
    /// `DB.COLLECTION` in the target database), for a server's own `applyOps`, with whether that entry must upsert
    /// (`alwaysUpsert`); `None` for the collection and index commands, which Lifeboat always
    /// runs itself. The entry's `ui` (the source collection's UUID) is left out, so the server
    /// applies it by name to the staging collection, as mongorestore does without
    /// `--preserveUUID`. An insert goes as a replacement that upserts, since the dump may hold
    /// the document already; an update of a document that is not there is left alone, as here.
    pub fn as_entry(&self, staging: &str) -> Option<(Document, bool)> {
        let entry = match self {
            Change::Upsert { document, .. } => {
                let id = document.get("_id").cloned().unwrap_or(Bson::Null);
                return Some((
                    doc! { "op": "u", "ns": staging, "o2": { "_id": id }, "o": document.clone() },
                    true,
                ));
            }
            Change::Delete { filter, .. } => doc! { "op": "d", "ns": staging, "o": filter.clone() },
            Change::Replace {
                filter, document, ..
            } => doc! { "op": "u", "ns": staging, "o2": filter.clone(), "o": document.clone() },
            Change::Update { filter, logged, .. } => {
                doc! { "op": "u", "ns": staging, "o2": filter.clone(), "o": logged.clone() }
            }
            _ => return None,
        };
        Some((entry, false))
    }
}

/// The changes of one oplog entry (several for `applyOps`); `Err` names what cannot be applied.
pub fn changes(entry: &Document) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    collect(entry, &mut out)?;
    Ok(out)
}

fn collect(entry: &Document, out: &mut Vec<Change>) -> Result<(), String> {
    let op = entry
        .get_str("op")
        .map_err(|_| "it has no op".to_string())?;
    let ns = entry.get_str("ns").unwrap_or_default();
    let o = || {
        entry
            .get_document("o")
            .map_err(|_| format!("its {op} has no o"))
    };
    let namespace = || -> Result<Namespace, String> {
        let (db, coll) = ns
            .split_once('.')
            .ok_or_else(|| format!("its namespace {ns:?} is not DB.COLLECTION"))?;
        Ok(Namespace::new(db, coll))
    };
    match op {
        "n" => {}
        "i" => out.push(Change::Upsert {
            ns: namespace()?,
            document: o()?.clone(),
        }),
        "d" => out.push(Change::Delete {
            ns: namespace()?,
            filter: o()?.clone(),
        }),
        "u" => {
            let filter = entry
                .get_document("o2")
                .map_err(|_| "its update has no o2 (the document's _id)".to_string())?
                .clone();
            let o = o()?;
            let ns = namespace()?;
            if let Ok(diff) = o.get_document("diff") {
                out.push(Change::Update {
                    ns,
                    filter,
                    updates: diff_updates(diff)?,
                    logged: o.clone(),
                });
            } else if o.keys().any(|k| k.starts_with('$') && k != "$v") {
                let mut update = o.clone();
                update.remove("$v");
                out.push(Change::Update {
                    ns,
                    filter,
                    updates: vec![update],
                    logged: o.clone(),
                });
            } else {
                out.push(Change::Replace {
                    ns,
                    filter,
                    document: o.clone(),
                });
            }
        }
        "c" => command(ns, o()?, out)?,
        other => return Err(format!("its op {other:?} is not one Lifeboat knows")),
    }
    Ok(())
}

fn command(ns: &str, o: &Document, out: &mut Vec<Change>) -> Result<(), String> {
    let db = ns.strip_suffix(".$cmd").unwrap_or(ns);
    let Some((name, value)) = o.iter().next() else {
        return Err("its command is empty".into());
    };
    let target = || -> Result<Namespace, String> {
        value
            .as_str()
            .map(|c| Namespace::new(db, c))
            .ok_or_else(|| format!("its {name} does not name a collection"))
    };
    let without = |key: &str| {
        let mut rest = o.clone();
        rest.remove(key);
        rest
    };
    match name.as_str() {
        "create" => {
            let mut options = without("create");
            options.remove("idIndex");
            out.push(Change::Create {
                ns: target()?,
                options,
            });
        }
        "drop" => out.push(Change::Drop { ns: target()? }),
        "createIndexes" | "commitIndexBuild" => {
            let indexes = match o.get_array("indexes") {
                Ok(list) => list
                    .iter()
                    .filter_map(|i| i.as_document().cloned())
                    .collect(),
                // Since MongoDB 4.4 one entry per index, its spec inline.
                Err(_) => vec![without(name)],
            };
            out.push(Change::CreateIndexes {
                ns: target()?,
                indexes,
            });
        }
        "startIndexBuild" | "abortIndexBuild" => {}
        "dropIndexes" | "deleteIndexes" => {
            let index = o
                .get_str("index")
                .map(str::to_string)
                .map_err(|_| format!("its {name} names no index"))?;
            out.push(Change::DropIndex {
                ns: target()?,
                name: index,
            });
        }
        "collMod" => out.push(Change::Modify {
            ns: target()?,
            fields: without("collMod"),
        }),
        "applyOps" => {
            let ops = o
                .get_array("applyOps")
                .map_err(|_| "its applyOps holds no list".to_string())?;
            for op in ops {
                let op = op
                    .as_document()
                    .ok_or_else(|| "an operation of its applyOps is not a document".to_string())?;
                collect(op, out)?;
            }
        }
        "commitTransaction" | "abortTransaction" => {}
        other => {
            return Err(format!(
                "its command {other:?} is not one Lifeboat can replay (renameCollection, dropDatabase and the like change what the dump holds)"
            ))
        }
    }
    Ok(())
}

/// The update documents of a `$v: 2` diff, in order: array truncations first, then one
/// `$set`/`$unset`. Two shapes are read: MongoDB's own `doc_diff` (`u`, `i`, `d`, and
/// `s<field>` sub-diffs, arrays with `a: true`, `l` and `u<index>`/`s<index>`), and the
/// `updatedFields`/`removedFields`/`truncatedArrays` shape some servers log.
pub fn diff_updates(diff: &Document) -> Result<Vec<Document>, String> {
    let mut edit = Edit::default();
    if diff.contains_key("updatedFields")
        || diff.contains_key("removedFields")
        || diff.contains_key("truncatedArrays")
    {
        if let Ok(fields) = diff.get_document("updatedFields") {
            for (path, value) in fields {
                edit.set.insert(path.clone(), value.clone());
            }
        }
        if let Ok(fields) = diff.get_array("removedFields") {
            for path in fields.iter().filter_map(Bson::as_str) {
                edit.unset.insert(path, "");
            }
        }
        if let Ok(list) = diff.get_array("truncatedArrays") {
            for t in list.iter().filter_map(Bson::as_document) {
                let field = t
                    .get_str("field")
                    .map_err(|_| "a truncated array has no field")?;
                edit.truncate
                    .push((field.to_string(), integer(t.get("newSize"))?));
            }
        }
    } else {
        object_diff(diff, "", &mut edit)?;
    }
    Ok(edit.updates())
}

#[derive(Default)]
struct Edit {
    set: Document,
    unset: Document,
    truncate: Vec<(String, i64)>,
}

impl Edit {
    fn updates(self) -> Vec<Document> {
        let mut out = Vec::new();
        if !self.truncate.is_empty() {
            let mut push = Document::new();
            for (path, len) in self.truncate {
                push.insert(path, doc! { "$each": [], "$slice": len });
            }
            out.push(doc! { "$push": push });
        }
        let mut update = Document::new();
        if !self.set.is_empty() {
            update.insert("$set", self.set);
        }
        if !self.unset.is_empty() {
            update.insert("$unset", self.unset);
        }
        if !update.is_empty() {
            out.push(update);
        }
        out
    }
}

fn integer(value: Option<&Bson>) -> Result<i64, String> {
    match value {
        Some(Bson::Int32(n)) => Ok(i64::from(*n)),
        Some(Bson::Int64(n)) => Ok(*n),
        Some(Bson::Double(n)) if n.fract() == 0.0 => Ok(*n as i64),
        other => Err(format!("an array length is not an integer: {other:?}")),
    }
}

fn sub_diff(value: &Bson, path: &str, edit: &mut Edit) -> Result<(), String> {
    let sub = value
        .as_document()
        .ok_or_else(|| format!("the diff of {path} is not a document"))?;
    if sub.get_bool("a") == Ok(true) {
        array_diff(sub, path, edit)
    } else {
        object_diff(sub, &format!("{path}."), edit)
    }
}

fn object_diff(diff: &Document, prefix: &str, edit: &mut Edit) -> Result<(), String> {
    for (key, value) in diff {
        match key.as_str() {
            "u" | "i" => {
                let fields = value
                    .as_document()
                    .ok_or_else(|| format!("the {key} of a diff is not a document"))?;
                for (field, v) in fields {
                    edit.set.insert(format!("{prefix}{field}"), v.clone());
                }
            }
            "d" => {
                let fields = value
                    .as_document()
                    .ok_or_else(|| "the d of a diff is not a document".to_string())?;
                for (field, _) in fields {
                    edit.unset.insert(format!("{prefix}{field}"), "");
                }
            }
            k if k.len() > 1 && k.starts_with('s') => {
                sub_diff(value, &format!("{prefix}{}", &k[1..]), edit)?
            }
            other => {
                return Err(format!(
                    "a diff holds {other:?}, which Lifeboat does not know"
                ))
            }
        }
    }
    Ok(())
}

fn array_diff(diff: &Document, path: &str, edit: &mut Edit) -> Result<(), String> {
    for (key, value) in diff {
        match key.as_str() {
            "a" => {}
            "l" => edit
                .truncate
                .push((path.to_string(), integer(Some(value))?)),
            k if k.len() > 1 && k.starts_with('u') => {
                edit.set
                    .insert(format!("{path}.{}", &k[1..]), value.clone());
            }
            k if k.len() > 1 && k.starts_with('s') => {
                sub_diff(value, &format!("{path}.{}", &k[1..]), edit)?
            }
            other => {
                return Err(format!(
                    "an array diff holds {other:?}, which Lifeboat does not know"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_updates_and_deletes_become_idempotent_changes() {
        let ns = Namespace::new("app", "t");
        let insert = doc! { "op": "i", "ns": "app.t", "o": { "_id": 1, "x": 1 } };
        assert_eq!(
            changes(&insert).unwrap(),
            vec![Change::Upsert {
                ns: ns.clone(),
                document: doc! { "_id": 1, "x": 1 }
            }]
        );
        let v1 = doc! { "op": "u", "ns": "app.t", "o2": { "_id": 1 }, "o": { "$v": 1, "$set": { "x": 2 } } };
        assert_eq!(
            changes(&v1).unwrap(),
            vec![Change::Update {
                ns: ns.clone(),
                filter: doc! { "_id": 1 },
                updates: vec![doc! { "$set": { "x": 2 } }],
                logged: doc! { "$v": 1, "$set": { "x": 2 } },
            }]
        );
        // For a server's applyOps: the staging namespace, the update as logged, no UUID.
        let diff = doc! { "op": "u", "ns": "app.t", "ui": 7, "o2": { "_id": 1 }, "o": { "$v": 2, "diff": { "u": { "x": 3 } } } };
        assert_eq!(
            changes(&diff).unwrap()[0].as_entry("app_restored.lifeboat.staging.a1.t"),
            Some((
                doc! { "op": "u", "ns": "app_restored.lifeboat.staging.a1.t", "o2": { "_id": 1 }, "o": { "$v": 2, "diff": { "u": { "x": 3 } } } },
                false
            ))
        );
        assert_eq!(
            changes(&insert).unwrap()[0].as_entry("app.s"),
            Some((
                doc! { "op": "u", "ns": "app.s", "o2": { "_id": 1 }, "o": { "_id": 1, "x": 1 } },
                true
            ))
        );
        assert_eq!(
            changes(&doc! { "op": "c", "ns": "app.$cmd", "o": { "drop": "t" } }).unwrap()[0]
                .as_entry("app.s"),
            None
        );
        let replace =
            doc! { "op": "u", "ns": "app.t", "o2": { "_id": 1 }, "o": { "_id": 1, "y": 3 } };
        assert!(matches!(
            changes(&replace).unwrap()[0],
            Change::Replace { .. }
        ));
        let delete = doc! { "op": "d", "ns": "app.t", "o": { "_id": 1 } };
        assert!(matches!(
            changes(&delete).unwrap()[0],
            Change::Delete { .. }
        ));
        assert!(
            changes(&doc! { "op": "n", "ns": "", "o": { "msg": "noop" } })
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn mongodb_doc_diffs_become_set_unset_and_truncation() {
        // {a: 1 -> 2, b removed, c: {d: new}, arr: [x, y, z] -> [x, Q]}
        let diff = doc! {
            "u": { "a": 2 },
            "d": { "b": false },
            "sc": { "i": { "d": "new" } },
            "sarr": { "a": true, "l": 2, "u1": "Q" },
        };
        let updates = diff_updates(&diff).unwrap();
        assert_eq!(
            updates,
            vec![
                doc! { "$push": { "arr": { "$each": [], "$slice": 2_i64 } } },
                doc! { "$set": { "a": 2, "c.d": "new", "arr.1": "Q" }, "$unset": { "b": "" } },
            ]
        );
        // Nested arrays of objects.
        let diff = doc! { "sitems": { "a": true, "s0": { "u": { "qty": 5 } } } };
        assert_eq!(
            diff_updates(&diff).unwrap(),
            vec![doc! { "$set": { "items.0.qty": 5 } }]
        );
        assert!(diff_updates(&doc! { "zz": 1 }).is_err());
    }

    #[test]
    fn update_description_diffs_are_read_too() {
        let diff = doc! {
            "updatedFields": { "y": 2, "a.b": 3 },
            "removedFields": ["z"],
            "truncatedArrays": [{ "field": "arr", "newSize": 1 }],
        };
        assert_eq!(
            diff_updates(&diff).unwrap(),
            vec![
                doc! { "$push": { "arr": { "$each": [], "$slice": 1_i64 } } },
                doc! { "$set": { "y": 2, "a.b": 3 }, "$unset": { "z": "" } },
            ]
        );
    }

    #[test]
    fn commands_and_transactions_are_replayed_or_named() {
        let create =
            doc! { "op": "c", "ns": "app.$cmd", "o": { "create": "new", "idIndex": { "v": 2 } } };
        assert_eq!(
            changes(&create).unwrap(),
            vec![Change::Create {
                ns: Namespace::new("app", "new"),
                options: doc! {}
            }]
        );
        let index = doc! { "op": "c", "ns": "app.$cmd", "o": { "createIndexes": "t", "v": 2, "key": { "x": 1 }, "name": "x_1" } };
        assert_eq!(
            changes(&index).unwrap(),
            vec![Change::CreateIndexes {
                ns: Namespace::new("app", "t"),
                indexes: vec![doc! { "v": 2, "key": { "x": 1 }, "name": "x_1" }]
            }]
        );
        let txn = doc! { "op": "c", "ns": "admin.$cmd", "o": { "applyOps": [
            { "op": "i", "ns": "app.t", "o": { "_id": 7 } },
            { "op": "d", "ns": "app.t", "o": { "_id": 8 } },
        ] } };
        assert_eq!(changes(&txn).unwrap().len(), 2);
        let rename = doc! { "op": "c", "ns": "admin.$cmd", "o": { "renameCollection": "app.t", "to": "app.u" } };
        assert!(changes(&rename).unwrap_err().contains("renameCollection"));
        assert!(changes(&doc! { "op": "x", "ns": "a.b" }).is_err());
    }
}
