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

/// A run killed with SIGKILL (the OOM killer, a `kill -9`, a restarted container) cannot release
/// its lock. On the same machine the next run sees that the holder's process has ended and
/// takes the lock over at once, instead of failing every run until the 10-minute lease runs
/// out (a 3 a.m. rerun by hand would hit exactly that). The killed run here is really killed:
/// it waits for a table lock, holding the job's lock, when it gets SIGKILL.
#[test]
fn a_run_killed_on_this_machine_leaves_a_lock_the_next_run_takes_over_at_once() {
    let db = TestDb::create("killed_run");
    sql(
        &db.url(),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    );
    let dir = TempDir::new("killed-run");
    for (repo, flags) in lock_repos("killed", &dir) {
        // Another session holds the table, so the run blocks inside the dump.
        let mut blocker = std::process::Command::new(format!("{}/psql", pg_bin()))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &db.url()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut session = blocker.stdin.take().unwrap();
        std::io::Write::write_all(
            &mut session,
            b"BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;\n",
        )
        .unwrap();
        wait_for("the blocking session's table lock", || {
            sql(
                &db.url(),
                "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 't'::regclass",
            )[0][0]
                .as_deref()
                == Some("1")
        });

        let mut killed = backup_cmd(&repo, &flags, &db.url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the run's job lock", || {
            current_lock(&repo, &flags).is_some_and(|l| l.pid == killed.id())
        });
        killed.kill().unwrap();
        killed.wait().unwrap();
        assert!(
            current_lock(&repo, &flags).is_some(),
            "the killed run left no lock: the test tests nothing"
        );
        std::io::Write::write_all(&mut session, b"COMMIT;\n").unwrap();
        drop(session);
        assert!(blocker.wait().unwrap().success());

        let r = finish(backup_cmd(&repo, &flags, &db.url()).output().unwrap());
        r.assert_code(0)
            .assert_contains("that process has ended on this machine")
            .assert_contains(&format!("(pid {})", killed.id()));
        assert!(current_lock(&repo, &flags).is_none(), "{repo}: lock left");

        // A live holder on this machine is still respected, however its lease looks.
        let live = lifeboat_core::lock::ProcessStamp::of_this_process().unwrap();
        let mut held: serde_json::Value = serde_json::from_str(&lock_json("here", 3600)).unwrap();
        held["pid"] = std::process::id().into();
        held["process"] = serde_json::to_value(&live).unwrap();
        plant_lock(&repo, &flags, &held.to_string());
        finish(backup_cmd(&repo, &flags, &db.url()).output().unwrap())
            .assert_code(4)
            .assert_contains("is locked by");
        // The same pid, started at another time, is another process: the holder has ended.
        held["process"]["started"] = (live.started + 1).into();
        plant_lock(&repo, &flags, &held.to_string());
        finish(backup_cmd(&repo, &flags, &db.url()).output().unwrap())
            .assert_code(0)
            .assert_contains("that process has ended on this machine");
    }
}

/// Polls `done` for up to 30 s; fails the test naming `what` if it never holds.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A host whose clock runs 20 minutes ahead read a live lock, whose lease still had 5 minutes
/// to run, as expired, took it over and ran beside its holder. Lease times are now judged by the
/// store's clock, which every run measures.
#[test]
fn a_host_whose_clock_runs_ahead_does_not_take_over_a_live_lock() {
    let db = TestDb::create("clock_ahead");
    sql(&db.url(), "CREATE TABLE t (id int)");
    let dir = TempDir::new("clock-ahead");
    let libfaketime = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketime.so.1"))
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime is missing: run scripts/services.sh start (it installs faketime)");
    let skewed = |repo: &str, flags: &[String]| {
        let mut cmd = backup_cmd(repo, flags, &db.url());
        cmd.env("LD_PRELOAD", &libfaketime)
            .env("FAKETIME", "+20m")
            // Timers and timeouts keep the real monotonic clock.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        finish(cmd.output().unwrap())
    };
    for (repo, flags) in lock_repos("clock-ahead", &dir) {
        plant_lock(&repo, &flags, &lock_json("db-host-7", 300));
        skewed(&repo, &flags)
            .assert_code(4)
            .assert_contains("is locked by lifeboat-backup on db-host-7")
            .assert_contains("This host's clock is about 20m ahead of the clock of");
        // A lease that has run out by the store's clock is still taken over.
        plant_lock(&repo, &flags, &lock_json("crashed-host", -60));
        skewed(&repo, &flags)
            .assert_code(0)
            .assert_contains("Taking over the expired lock");
    }
}
