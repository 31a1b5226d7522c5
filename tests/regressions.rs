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

/// Runs `count` backups of job "app" at once and returns their outcomes.
fn concurrent_backups(repo: &str, flags: &[String], url: &str, count: usize) -> Vec<Run> {
    let children: Vec<_> = (0..count)
        .map(|_| {
            backup_cmd(repo, flags, url)
                .arg("--json")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| finish(c.wait_with_output().unwrap()))
        .collect()
}

/// Taking over an expired lock deleted it and then created a new one, so five runs started
/// against an expired S3 lock overlapped (two or three committed with overlapping lock
/// intervals in 7 of 8 rounds). Takeover must replace exactly the expired version.
#[test]
fn two_runs_of_one_job_can_both_hold_an_expired_lock() {
    let db = TestDb::create("takeover");
    sql(
        &db.url(),
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g",
    );
    let dir = TempDir::new("takeover");
    for (repo, flags) in lock_repos("takeover", &dir) {
        let mut spans: Vec<(String, String)> = Vec::new();
        for round in 0..3 {
            plant_lock(&repo, &flags, &lock_json("crashed-host", -60));
            let before = spans.len();
            let runs = concurrent_backups(&repo, &flags, &db.url(), 5);
            for r in &runs {
                assert!(
                    r.code == 0 || r.code == 4,
                    "round {round} on {repo}: unexpected exit {}:\n{}",
                    r.code,
                    r.output()
                );
            }
            let committed: Vec<&Run> = runs.iter().filter(|r| r.code == 0).collect();
            assert!(
                !committed.is_empty(),
                "round {round} on {repo}: no run took over the lock"
            );
            for r in &committed {
                let report = r.json();
                let snapshot = &report["jobs"][0]["report"];
                spans.push((
                    snapshot["started_at"].as_str().unwrap().to_string(),
                    snapshot["finished_at"].as_str().unwrap().to_string(),
                ));
            }
            assert!(spans.len() > before);
        }
        spans.sort();
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "runs on {repo} overlapped: {pair:?}"
            );
        }
    }
}

/// A full disk while the lock was created left a 0-byte lock: every later run exited 4 with
/// "the lock is unreadable", and so did `lifeboat-backup unlock`, which the hint recommended.
#[test]
fn an_unreadable_lock_blocks_every_run_and_unlock_cannot_remove_it() {
    let db = TestDb::create("zero_lock");
    sql(&db.url(), "CREATE TABLE t (id int)");
    let dir = TempDir::new("zero-lock");
    for (repo, flags) in lock_repos("zero-lock", &dir) {
        plant_lock(&repo, &flags, "");
        let r = finish(backup_cmd(&repo, &flags, &db.url()).output().unwrap());
        r.assert_code(4)
            .assert_contains("unreadable")
            .assert_contains("lifeboat-backup unlock app");
        let mut unlock = command("lifeboat-backup");
        unlock
            .args(["unlock", "app", "--yes", "--repo", &repo])
            .args(&flags);
        finish(unlock.output().unwrap())
            .assert_code(0)
            .assert_contains("nobody can read")
            .assert_contains("Removed the lock");
        finish(backup_cmd(&repo, &flags, &db.url()).output().unwrap()).assert_code(0);
    }
}

/// The same race without the binaries around it, so the five takeovers meet within
/// milliseconds: in every round exactly one of them may get the lock.
#[test]
fn concurrent_takeovers_of_an_expired_lock_have_exactly_one_winner() {
    let dir = TempDir::new("takeover-lib");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    for (repo, flags) in lock_repos("takeover-lib", &dir) {
        let options = lifeboat_core::store::S3Options {
            endpoint: flags.get(1).cloned(),
            path_style: true,
            ..Default::default()
        };
        let store = rt
            .block_on(lifeboat_core::store::open(&repo, &options))
            .unwrap();
        for round in 0..20 {
            plant_lock(&repo, &flags, &lock_json("crashed-host", -60));
            let winners = rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for pid in 0..5 {
                    let store = store.clone();
                    set.spawn(async move {
                        let holder = lifeboat_core::lock::Holder {
                            owner: "test".into(),
                            host: "here".into(),
                            pid,
                        };
                        lifeboat_core::lock::acquire(
                            &store,
                            "app",
                            &holder,
                            std::time::Duration::from_secs(600),
                            Utc::now(),
                        )
                        .await
                    });
                }
                let mut guards = Vec::new();
                while let Some(joined) = set.join_next().await {
                    match joined.unwrap() {
                        Ok(guard) => guards.push(guard),
                        Err(e) => assert_eq!(
                            e.kind(),
                            lifeboat_core::ErrorKind::Lock,
                            "round {round} on {repo}: {e}"
                        ),
                    }
                }
                guards.len()
            });
            assert_eq!(
                winners, 1,
                "round {round} on {repo}: {winners} runs hold the lock"
            );
        }
    }
}
