//! Locks end to end, on a directory and on S3 (moto): one run per job at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;

use lifeboat_tests::*;

#[test]
fn a_held_lock_stops_the_run_an_expired_one_is_taken_over_and_unlock_removes_one() {
    let db = TestDb::create("locks");
    sql(&db.url(), "CREATE TABLE t (id int)");
    let dir = TempDir::new("locks");
    for (repo, flags) in lock_repos("held", &dir) {
        plant_lock(&repo, &flags, &lock_json("db-host-7", 3600));
        let r = finish(backup_cmd(&repo, &flags, &db.url()).output().unwrap());
        r.assert_code(4)
            .assert_contains("locked by lifeboat-backup on db-host-7 (pid 4242)")
            .assert_contains("unlock");

        let mut unlock = command("lifeboat-backup");
        unlock.args(["unlock", "app", "--repo", &repo]).args(&flags);
        finish(unlock.output().unwrap())
            .assert_code(0)
            .assert_contains("Removed the lock");
        finish(backup_cmd(&repo, &flags, &db.url()).output().unwrap()).assert_code(0);

        plant_lock(&repo, &flags, &lock_json("crashed-host", -60));
        let r = finish(backup_cmd(&repo, &flags, &db.url()).output().unwrap());
        r.assert_code(0)
            .assert_contains("Taking over the expired lock")
            .assert_contains("crashed-host");

        // A finished run leaves no lock behind.
        let mut unlock = command("lifeboat-backup");
        unlock.args(["unlock", "app", "--repo", &repo]).args(&flags);
        finish(unlock.output().unwrap())
            .assert_code(0)
            .assert_contains("is not locked");
    }
}

#[test]
fn twenty_concurrent_runs_of_one_job_never_overlap_and_every_snapshot_verifies() {
    let db = TestDb::create("concurrent");
    sql(
        &db.url(),
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g",
    );
    let dir = TempDir::new("concurrent");
    for (repo, flags) in lock_repos("concurrent", &dir) {
        let children: Vec<_> = (0..20)
            .map(|_| {
                backup_cmd(&repo, &flags, &db.url())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let runs: Vec<Run> = children
            .into_iter()
            .map(|c| finish(c.wait_with_output().unwrap()))
            .collect();
        let ok = runs.iter().filter(|r| r.code == 0).count();
        for r in &runs {
            assert!(
                r.code == 0 || r.code == 4,
                "unexpected exit {}:\n{}",
                r.code,
                r.output()
            );
            if r.code == 4 {
                r.assert_contains("is locked by lifeboat-backup");
            }
        }
        assert!(ok >= 1, "no run got the lock");
        // Every committed snapshot verifies, and the runs that committed did not overlap.
        let mut list = command("lifeboat-restore");
        list.args(["list", "--repo", &repo, "--json"]).args(&flags);
        let listed = finish(list.output().unwrap());
        let snapshots = listed.json()["jobs"][0]["snapshots"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(snapshots, ok, "{} runs succeeded", ok);
        let mut verify = command("lifeboat-verify");
        verify
            .args(["--repo", &repo, "--all", "--level", "content"])
            .args(&flags);
        finish(verify.output().unwrap()).assert_code(0);
        if !repo.starts_with("s3://") {
            let mut spans: Vec<(String, String)> = manifests(std::path::Path::new(&repo), "app")
                .iter()
                .map(|m| {
                    (
                        m["started_at"].as_str().unwrap().to_string(),
                        m["finished_at"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            spans.sort();
            for pair in spans.windows(2) {
                assert!(pair[0].1 <= pair[1].0, "runs overlapped: {pair:?}");
            }
        }
    }
}
