//! `--rename 'app.*=app_restored.*'`: where each namespace of a MongoDB snapshot is restored.

use lifeboat_mongo_archive::Namespace;

/// One `SRC=DST` rule. Each side is `DB.COLLECTION`, either part `*`; a `*` on the right stands
/// for what the `*` on the left matched (`app.*=app_restored.*`, `app.users=app.users_old`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenameRule {
    from: (Part, Part),
    to: (Part, Part),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Any,
    Name(String),
}

impl Part {
    fn parse(s: &str) -> Part {
        if s == "*" {
            Part::Any
        } else {
            Part::Name(s.to_string())
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Part::Any => true,
            Part::Name(n) => n == name,
        }
    }

    fn apply(&self, matched: &str) -> String {
        match self {
            Part::Any => matched.to_string(),
            Part::Name(n) => n.clone(),
        }
    }
}

impl std::str::FromStr for RenameRule {
    type Err = String;

    fn from_str(s: &str) -> Result<RenameRule, String> {
        let bad = |why: &str| {
            format!("--rename {s:?}: {why}; expected SRC=DST such as 'app.*=app_restored.*' or 'app.users=app.users_old'")
        };
        let (from, to) = s.split_once('=').ok_or_else(|| bad("no '='"))?;
        let side = |text: &str| -> Result<(Part, Part), String> {
            let (db, coll) = text
                .trim()
                .split_once('.')
                .ok_or_else(|| bad(&format!("{text:?} is not DB.COLLECTION")))?;
            if db.is_empty() || coll.is_empty() || db.contains(['/', '\\', ' ', '"', '$']) {
                return Err(bad(&format!("{text:?} is not DB.COLLECTION")));
            }
            Ok((Part::parse(db), Part::parse(coll)))
        };
        let (from, to) = (side(from)?, side(to)?);
        if (to.0 == Part::Any && from.0 != Part::Any) || (to.1 == Part::Any && from.1 != Part::Any)
        {
            return Err(bad(
                "a '*' on the right needs a '*' in the same place on the left",
            ));
        }
        Ok(RenameRule { from, to })
    }
}

/// Where `namespace` is restored: the first rule that matches, else where it was.
pub fn rename(rules: &[RenameRule], namespace: &Namespace) -> Namespace {
    for rule in rules {
        if rule.from.0.matches(&namespace.db) && rule.from.1.matches(&namespace.collection) {
            return Namespace::new(
                rule.to.0.apply(&namespace.db),
                rule.to.1.apply(&namespace.collection),
            );
        }
    }
    namespace.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<RenameRule> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    #[test]
    fn rules_map_databases_and_collections() {
        let r = rules(&["app.users=app.users_old", "app.*=app_restored.*"]);
        assert_eq!(
            rename(&r, &Namespace::new("app", "users")),
            Namespace::new("app", "users_old")
        );
        assert_eq!(
            rename(&r, &Namespace::new("app", "orders")),
            Namespace::new("app_restored", "orders")
        );
        assert_eq!(
            rename(&r, &Namespace::new("billing", "x")),
            Namespace::new("billing", "x")
        );
        // Collection names may hold dots; the database is before the first.
        let r = rules(&["*.*=copy.*"]);
        assert_eq!(
            rename(&r, &Namespace::new("app", "a.b")),
            Namespace::new("copy", "a.b")
        );
    }

    #[test]
    fn bad_rules_say_what_is_expected() {
        for bad in [
            "app",
            "app.*",
            "app.users=app_restored.*",
            "=x.y",
            "a b.c=d.e",
        ] {
            let err = bad.parse::<RenameRule>().unwrap_err();
            assert!(err.contains("expected SRC=DST"), "{bad}: {err}");
        }
    }
}
