//! The table of contents of a custom-format archive, as `pg_restore --list --verbose` prints
//! it, and the part of it that a `--table` restore takes.
//!
//! `pg_restore --table` restores a table's definition and rows, and nothing that belongs to
//! it: no primary key, indexes, constraints, triggers, column defaults, owned sequences,
//! comments, privileges or row-security policies. An operator restoring one dropped table needs
//! those as much as the rows. The verbose listing gives each entry's dependencies, so the
//! selection starts from the tables and takes, again and again until nothing changes, every
//! entry of a kind that belongs to a table ([`BELONGING`]) and depends on something already
//! taken. pg_restore gets the selection as a list (`--use-list`), in the archive's order, so it
//! still reads the archive front to back from a pipe.
//!
//! An entry that also depends on a relation that is not restored (a foreign key to another
//! table, a default that calls a sequence of another table), or on a function the target does
//! not have (a trigger's), is left out, and named in the restore's notes: created without it,
//! it would fail the whole restore.

use std::collections::BTreeSet;

use super::quoted;

/// Entry kinds that `pg_restore --list` prints as more than one word, longest first.
const MULTI_WORD: &[&str] = &[
    "PUBLICATION TABLES IN SCHEMA",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "MATERIALIZED VIEW DATA",
    "TEXT SEARCH TEMPLATE",
    "TEXT SEARCH PARSER",
    "PROCEDURAL LANGUAGE",
    "SEQUENCE OWNED BY",
    "PUBLICATION TABLE",
    "MATERIALIZED VIEW",
    "CHECK CONSTRAINT",
    "OPERATOR FAMILY",
    "STATISTICS DATA",
    "OPERATOR CLASS",
    "SECURITY LABEL",
    "FOREIGN SERVER",
    "BLOB METADATA",
    "EVENT TRIGGER",
    "FK CONSTRAINT",
    "ACCESS METHOD",
    "FOREIGN TABLE",
    "INDEX ATTACH",
    "LARGE OBJECT",
    "ROW SECURITY",
    "SEQUENCE SET",
    "USER MAPPING",
    "DEFAULT ACL",
    "TABLE DATA",
];

/// Kinds that belong to the table (or to another selected entry) they depend on.
const BELONGING: &[&str] = &[
    "TABLE DATA",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "INDEX",
    "INDEX ATTACH",
    "TRIGGER",
    "RULE",
    "POLICY",
    "ROW SECURITY",
    "DEFAULT",
    "COMMENT",
    "ACL",
    "SECURITY LABEL",
    "STATISTICS",
    "STATISTICS DATA",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
    "SEQUENCE SET",
];

/// Kinds of relations, and of what hangs on them, that an entry may depend on only if they are
/// restored too. Anything else it depends on (functions, types, schemas, extensions, roles) is
/// expected in the target, as `pg_restore --table` expects the column types there.
const RELATIONS: &[&str] = &[
    "TABLE",
    "TABLE DATA",
    "VIEW",
    "MATERIALIZED VIEW",
    "MATERIALIZED VIEW DATA",
    "FOREIGN TABLE",
    "SEQUENCE",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "INDEX",
    "TRIGGER",
    "RULE",
    "POLICY",
];

/// One entry of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: u32,
    /// Its kind, e.g. `TABLE`, `FK CONSTRAINT`.
    kind: String,
    /// What the listing prints after the kind: schema, name and owner.
    about: String,
    /// The entries it depends on.
    deps: Vec<u32>,
    /// The listing's line, which `--use-list` reads back.
    line: String,
}

/// A `--table` restore's part of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The list for `pg_restore --use-list`: the selected lines, in the archive's order.
    pub list: String,
    /// What was selected besides the tables and their rows, e.g. `INDEX public orders_total`.
    pub added: Vec<String>,
    /// What belongs to the tables but depends on a relation that is not restored.
    pub left_out: Vec<String>,
    /// Tables asked for that the archive does not have.
    pub missing: Vec<String>,
}

/// The listing of `pg_restore --list --verbose`, parsed once.
pub struct Toc {
    entries: Vec<Entry>,
}

/// Parses the listing of `pg_restore --list --verbose`.
fn parse(listing: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for line in listing.lines() {
        if let Some(comment) = line.strip_prefix(';') {
            if let (Some(deps), Some(last)) = (
                comment.trim().strip_prefix("depends on:"),
                entries.last_mut(),
            ) {
                last.deps.extend(
                    deps.split_whitespace()
                        .filter_map(|d| d.parse::<u32>().ok()),
                );
            }
            continue;
        }
        // "214; 1259 97641 TABLE public orders owner"
        let Some((id, rest)) = line.split_once("; ") else {
            continue;
        };
        let Ok(id) = id.trim().parse::<u32>() else {
            continue;
        };
        let mut words = rest.splitn(3, ' ');
        let (Some(_), Some(_), Some(rest)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let kind = MULTI_WORD
            .iter()
            .find(|k| {
                rest.strip_prefix(**k)
                    .is_some_and(|after| after.starts_with(' '))
            })
            .map_or_else(|| rest.split(' ').next().unwrap_or_default(), |k| *k);
        entries.push(Entry {
            id,
            kind: kind.to_string(),
            about: rest[kind.len()..].trim_start().to_string(),
            deps: Vec::new(),
            line: line.to_string(),
        });
    }
    entries
}

impl Toc {
    /// Parses the listing of `pg_restore --list --verbose`.
    pub fn parse(listing: &str) -> Toc {
        Toc {
            entries: parse(listing),
        }
    }

    /// How the tables and their data entries in the listing differ from the tables a
    /// fingerprint records (`(schema, name)`, unquoted): a table recorded that the archive
    /// lacks, or table data in the archive for a table not recorded. What a data object that
    /// is not this snapshot's (another job's, a careless edit) shows; a forger who edits the
    /// fingerprint too is not caught here.
    pub fn table_differences(&self, recorded: &[(String, String)]) -> Vec<String> {
        let starts = |about: &str, (schema, name): &(String, String)| {
            about
                .strip_prefix(schema.as_str())
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|rest| rest.strip_prefix(name.as_str()))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        };
        let defined = |kinds: &[&str], table: &(String, String)| {
            self.entries
                .iter()
                .any(|e| kinds.contains(&e.kind.as_str()) && starts(&e.about, table))
        };
        let mut out = Vec::new();
        for table in recorded {
            if !defined(&["TABLE", "MATERIALIZED VIEW"], table) {
                out.push(format!(
                    "the manifest records table {}.{}, which the dump's table of contents does not have",
                    table.0, table.1
                ));
            }
        }
        for e in &self.entries {
            if e.kind == "TABLE DATA" && !recorded.iter().any(|t| starts(&e.about, t)) {
                let about = e
                    .about
                    .rsplit_once(' ')
                    .map_or(e.about.as_str(), |(t, _owner)| t);
                out.push(format!(
                    "the dump holds the rows of table {about}, which the manifest does not record"
                ));
            }
        }
        out
    }

    /// The functions in the listing, as `to_regprocedure` reads them (`"public"."f"(integer)`),
    /// by entry id: the caller asks the target which of them it lacks.
    pub fn functions(&self) -> Vec<(u32, String)> {
        self.entries
            .iter()
            .filter(|e| e.kind == "FUNCTION")
            .filter_map(|e| {
                // "public f(integer, text) owner"
                let (schema, rest) = e.about.split_once(' ')?;
                let (signature, _owner) = rest.rsplit_once(' ')?;
                let (name, args) = signature.split_at(signature.find('(')?);
                Some((e.id, format!("{}.{}{args}", quoted(schema), quoted(name))))
            })
            .collect()
    }

    /// The tables `names` of `schema`, and every entry that belongs to them and needs nothing
    /// of `absent` (entries, e.g. functions, the target lacks).
    pub fn select(&self, schema: &str, names: &[String], absent: &BTreeSet<u32>) -> Selection {
        select(&self.entries, schema, names, absent)
    }
}

fn select(entries: &[Entry], schema: &str, names: &[String], absent: &BTreeSet<u32>) -> Selection {
    let mut selected: BTreeSet<u32> = BTreeSet::new();
    let mut tables = BTreeSet::new();
    let mut missing = Vec::new();
    for name in names {
        // "public orders owner": the owner is the last word (empty for --no-owner dumps).
        let table = entries.iter().find(|e| {
            e.kind == "TABLE"
                && e.about
                    .strip_prefix(schema)
                    .and_then(|r| r.strip_prefix(' '))
                    .and_then(|r| r.rsplit_once(' '))
                    .is_some_and(|(n, _owner)| n == name)
        });
        match table {
            Some(t) => {
                selected.insert(t.id);
                tables.insert(t.id);
            }
            None => missing.push(format!("{schema}.{name}")),
        }
    }
    let kind_of = |id: u32| entries.iter().find(|e| e.id == id).map(|e| e.kind.as_str());
    let belongs = |e: &Entry, selected: &BTreeSet<u32>| {
        BELONGING.contains(&e.kind.as_str())
            && e.deps.iter().any(|d| selected.contains(d))
            && e.deps.iter().all(|d| {
                selected.contains(d)
                    || !(absent.contains(d) || kind_of(*d).is_some_and(|k| RELATIONS.contains(&k)))
            })
    };
    loop {
        let more: Vec<u32> = entries
            .iter()
            .filter(|e| !selected.contains(&e.id) && belongs(e, &selected))
            .map(|e| e.id)
            .collect();
        if more.is_empty() {
            break;
        }
        selected.extend(more);
    }
    // "INDEX public orders_total", without the owner the listing ends with.
    let described = |e: &Entry| {
        let about = e
            .about
            .rsplit_once(' ')
            .map_or(e.about.as_str(), |(a, _)| a);
        format!("{} {}", e.kind, about)
    };
    Selection {
        list: entries
            .iter()
            .filter(|e| selected.contains(&e.id))
            .map(|e| format!("{}\n", e.line))
            .collect(),
        added: entries
            .iter()
            .filter(|e| {
                selected.contains(&e.id) && !tables.contains(&e.id) && e.kind != "TABLE DATA"
            })
            .map(described)
            .collect(),
        // Of what depends on the tables, only what is theirs: the listing names a
        // constraint's, trigger's, rule's, policy's or default's table after the schema. A
        // foreign key of another table that references one of them is that table's.
        left_out: entries
            .iter()
            .filter(|e| {
                !selected.contains(&e.id)
                    && BELONGING.contains(&e.kind.as_str())
                    && e.deps.iter().any(|d| selected.contains(d))
                    && names
                        .iter()
                        .any(|n| e.about.starts_with(&format!("{schema} {n} ")))
            })
            .map(described)
            .collect(),
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (Trust III, 7): content verify did not compare what a dump holds with what
    /// the manifest says it holds, so another job's data object passed.
    #[test]
    fn another_dumps_tables_differ_from_the_fingerprint() {
        let listing = "\
214; 1259 97641 TABLE public orders app
;\tdepends on: 5
215; 1259 97642 TABLE public odd name app
3300; 0 97641 TABLE DATA public orders app
3301; 0 97642 TABLE DATA public odd name app
";
        let toc = Toc::parse(listing);
        let t = |s: &str, n: &str| (s.to_string(), n.to_string());
        assert!(toc
            .table_differences(&[t("public", "orders"), t("public", "odd name")])
            .is_empty());
        let other = toc.table_differences(&[t("public", "customers")]);
        assert_eq!(other.len(), 3, "{other:?}");
        assert!(other[0].contains("public.customers"), "{other:?}");
        assert!(other[1].contains("public orders"), "{other:?}");
    }

    /// `pg_restore --list --verbose` of a dump of two tables, `a` and `b` (b references a), made
    /// by pg_dump 15 (header lines shortened).
    const LISTING: &str = "\
;
; Archive created at 2026-12-04 13:58:01 UTC
;     dbname: toc_probe
;
; Selected TOC Entries:
;
3361; 0 0 ENCODING - ENCODING 
217; 1255 97660 FUNCTION public f() lifeboat
214; 1259 97641 TABLE public a lifeboat
3365; 0 0 COMMENT public TABLE a lifeboat
;\tdepends on: 214
215; 1259 97649 TABLE public b lifeboat
216; 1259 97663 SEQUENCE public s lifeboat
;\tdepends on: 214
3366; 0 0 SEQUENCE OWNED BY public s lifeboat
;\tdepends on: 216
3356; 0 97641 TABLE DATA public a lifeboat
;\tdepends on: 214
3357; 0 97649 TABLE DATA public b lifeboat
;\tdepends on: 215
3367; 0 0 SEQUENCE SET public s lifeboat
;\tdepends on: 216
3202; 2606 97662 CHECK CONSTRAINT public a a_chk lifeboat
;\tdepends on: 214 214
3204; 2606 97647 CONSTRAINT public a a_pkey lifeboat
;\tdepends on: 214
3208; 2606 97653 CONSTRAINT public b b_pkey lifeboat
;\tdepends on: 215
3205; 1259 97648 INDEX public a_v lifeboat
;\tdepends on: 214
3206; 1259 97659 INDEX public b_a lifeboat
;\tdepends on: 215
3353; 2618 97665 RULE public b r lifeboat
;\tdepends on: 215 215 215
3210; 2620 97661 TRIGGER public a t lifeboat
;\tdepends on: 217 214
3209; 2606 97654 FK CONSTRAINT public b b_a_id_fkey lifeboat
;\tdepends on: 3204 215 214
3354; 0 97641 ROW SECURITY public a lifeboat
;\tdepends on: 214
3355; 3256 97664 POLICY public a p lifeboat
;\tdepends on: 214
";

    fn ids(list: &str) -> Vec<&str> {
        list.lines().map(|l| l.split(';').next().unwrap()).collect()
    }

    #[test]
    fn a_table_comes_with_everything_that_belongs_to_it_in_the_archives_order() {
        let s = Toc::parse(LISTING).select("public", &["a".to_string()], &BTreeSet::new());
        assert_eq!(
            ids(&s.list),
            [
                "214", "3365", "216", "3366", "3356", "3367", "3202", "3204", "3205", "3210",
                "3354", "3355"
            ]
        );
        assert!(s
            .list
            .contains("3205; 1259 97648 INDEX public a_v lifeboat\n"));
        assert!(s.added.contains(&"TRIGGER public a t".to_string()));
        assert!(s.left_out.is_empty(), "{:?}", s.left_out);
        assert!(s.missing.is_empty());
    }

    #[test]
    fn a_foreign_key_to_a_table_not_restored_is_left_out_and_named() {
        let s = Toc::parse(LISTING).select("public", &["b".to_string()], &BTreeSet::new());
        assert_eq!(ids(&s.list), ["215", "3357", "3208", "3206", "3353"]);
        assert_eq!(s.left_out, ["FK CONSTRAINT public b b_a_id_fkey"]);
        // With the table it references, it comes along.
        let both = Toc::parse(LISTING).select(
            "public",
            &["a".to_string(), "b".to_string()],
            &BTreeSet::new(),
        );
        assert!(ids(&both.list).contains(&"3209"));
        assert!(both.left_out.is_empty());
    }

    #[test]
    fn a_trigger_whose_function_the_target_lacks_is_left_out_and_named() {
        assert_eq!(
            Toc::parse(LISTING).functions(),
            [(217, r#""public"."f"()"#.to_string())]
        );
        let s = Toc::parse(LISTING).select("public", &["a".to_string()], &BTreeSet::from([217]));
        assert!(!ids(&s.list).contains(&"3210"));
        assert_eq!(s.left_out, ["TRIGGER public a t"]);
    }

    #[test]
    fn tables_the_archive_lacks_are_named() {
        let s = Toc::parse(LISTING).select("public", &["nope".to_string()], &BTreeSet::new());
        assert_eq!(s.missing, ["public.nope"]);
        assert!(s.list.is_empty());
        assert!(
            Toc::parse(LISTING)
                .select("other", &["a".to_string()], &BTreeSet::new())
                .missing
                == ["other.a"]
        );
    }
}
