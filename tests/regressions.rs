//! One test per failure reported by outside fault testing and a new user's first hour, named
//! after the failure (the "Trust first" issue). Each failed on the code before its fix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration as ChronoDuration, Utc};
use lifeboat_tests::*;

fn ids(repo: &TempDir, job: &str) -> Vec<String> {
    manifests(repo.path(), job)
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// A snapshot dated ten days ahead made the next backup with `keep-7-days` forget the snapshot
/// it had just committed and every real older one, and exit 0.
#[test]
fn a_future_dated_snapshot_makes_the_next_backup_delete_itself() {
    let repo = TempDir::new("future");
    let older = real_snapshot(&repo, "app");
    let older_id = older.file_name().unwrap().to_str().unwrap().to_string();
    let future_id = clone_snapshot(&repo, &older, "app", Utc::now() + ChronoDuration::days(10));
    let db = TestDb::create("future");
    sql(
        &db.url(),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (7)",
    );
    let url = db.url();
    let r = run(
        "lifeboat-backup",
        &[
            "--engine",
            "postgres",
            "--url",
            &url,
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--retention",
            "keep-7-days",
        ],
    );
    r.assert_code(0).assert_contains("dated in the future");
    let after = ids(&repo, "app");
    assert_eq!(
        after.len(),
        3,
        "nothing may be forgotten: {after:?}\n{}",
        r.output()
    );
    assert!(after.contains(&older_id) && after.contains(&future_id));
    let newest = after
        .iter()
        .find(|id| **id != older_id && **id != future_id)
        .unwrap()
        .clone();

    // verify, restore and prune agree on the latest, and it is not the future-dated one.
    let verify = run(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--latest",
            "--json",
        ],
    );
    verify.assert_code(0);
    assert_eq!(
        verify.json()["jobs"][0]["checks"][0]["snapshot"],
        newest.as_str(),
        "{}",
        verify.stdout
    );
    let target = TestDb::create("future_to");
    let plan = run(
        "lifeboat-restore",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--latest",
            "--to",
            &target.url(),
            "--dry-run",
            "--json",
        ],
    );
    plan.assert_code(0);
    assert_eq!(
        plan.json()["plan"]["snapshot"],
        newest.as_str(),
        "{}",
        plan.stdout
    );
    let prune = run(
        "lifeboat-backup",
        &[
            "prune",
            "app",
            "--repo",
            repo.as_str(),
            "--retention",
            "keep-7-days",
            "--dry-run",
        ],
    );
    prune.assert_code(0).assert_contains("dated in the future");
    let newest_line = prune
        .stdout
        .lines()
        .find(|l| l.starts_with(&newest))
        .unwrap();
    assert!(newest_line.contains("newest snapshot"), "{}", prune.stdout);
}
