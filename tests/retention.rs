//! Retention end to end: real snapshots (one real backup, cloned to chosen times through the
//! repository format), pruned by the real binary on the local store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use lifeboat_tests::*;

fn write_config(dir: &TempDir, repo: &TempDir, retention: &str) -> String {
    let file = dir.join("lifeboat.toml");
    std::fs::write(
        &file,
        format!(
            "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"app\"\nengine = \"postgres\"\nurl = \"postgres://127.0.0.1/unused\"\nretention = {retention}\n",
            repo.as_str()
        ),
    )
    .unwrap();
    file.to_str().unwrap().to_string()
}

#[test]
fn prune_keeps_what_the_policy_and_the_guards_say_and_touches_nothing_else() {
    let repo = TempDir::new("prune");
    let dir = TempDir::new("prune-cfg");
    let newest = real_snapshot(&repo, "app");
    // 40 daily snapshots at 03:00 UTC, 2025-10-01 .. 2025-11-09, and another job's old ones.
    let first = Utc.with_ymd_and_hms(2025, 10, 1, 3, 0, 0).unwrap();
    let ids: Vec<String> = (0..40)
        .map(|d| clone_snapshot(&repo, &newest, "app", first + ChronoDuration::days(d)))
        .collect();
    let other: Vec<String> = (0..3)
        .map(|d| clone_snapshot(&repo, &newest, "other", first + ChronoDuration::days(d)))
        .collect();
    assert_eq!(manifests(repo.path(), "app").len(), 41);

    // The oldest snapshot passed a content verification: the guard keeps it.
    run(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--snapshot",
            &ids[0],
            "--level",
            "content",
        ],
    )
    .assert_code(0);

    let config = write_config(&dir, &repo, "{ keep-daily = 5, keep-monthly = 2 }");
    let dry = run(
        "lifeboat-backup",
        &["prune", "--config", &config, "--dry-run", "--json"],
    );
    dry.assert_code(0);
    let plan = &dry.json()["jobs"][0]["plan"];
    let kept: Vec<(String, String)> = plan["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
        .collect();
    let reasons: Vec<&str> = kept.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "newest snapshot, daily 1/5, monthly 1/2", // the real backup, today
            "daily 2/5, monthly 2/2",                  // 2025-11-09: also the newest of Nov 2025
            "daily 3/5",
            "daily 4/5",
            "daily 5/5",                 // 2025-11-06
            "newest verified (content)", // 2025-10-01
        ],
        "{plan}"
    );
    assert_eq!(kept[5].0, ids[0]);
    assert_eq!(
        manifests(repo.path(), "app").len(),
        41,
        "a dry run changes nothing"
    );
    let text = run(
        "lifeboat-backup",
        &["prune", "--config", &config, "--dry-run"],
    );
    text.assert_code(0)
        .assert_contains("forget")
        .assert_contains("would keep 6 and forget 35");

    let r = run("lifeboat-backup", &["prune", "--config", &config]);
    r.assert_code(0).assert_contains("kept 6, forgot 35");
    let left: Vec<String> = manifests(repo.path(), "app")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 6);
    assert!(left.contains(&ids[0]) && left.contains(&ids[39]) && !left.contains(&ids[30]));
    // Forgotten snapshots are gone entirely: no data objects without manifests remain.
    assert_eq!(data_objects(repo.path()).len(), 6 + 3);
    // Another job's snapshots are never touched.
    assert_eq!(manifests(repo.path(), "other").len(), 3);
    assert_eq!(other.len(), 3);
    // list shows verification and what the policy does; planning again forgets nothing more.
    run(
        "lifeboat-restore",
        &["list", "--config", &config, "--job", "app"],
    )
    .assert_code(0)
    .assert_contains("keep: newest verified (content)")
    .assert_contains("ok content");
    run("lifeboat-backup", &["prune", "--config", &config])
        .assert_code(0)
        .assert_contains("kept 6, forgot 0");
    // What is left still verifies.
    run(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--all",
            "--level",
            "content",
        ],
    )
    .assert_code(0);
}

#[test]
fn an_interrupted_prune_leaves_only_orphans_which_the_next_prune_removes() {
    let repo = TempDir::new("orphans");
    let dir = TempDir::new("orphans-cfg");
    let newest = real_snapshot(&repo, "app");
    let old = clone_snapshot(
        &repo,
        &newest,
        "app",
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
    );
    let fresh = clone_snapshot(
        &repo,
        &newest,
        "app",
        Utc.with_ymd_and_hms(2025, 1, 2, 0, 0, 0).unwrap(),
    );
    // An interrupted prune deleted the manifests, not yet the data: the snapshots are gone.
    for id in [&old, &fresh] {
        std::fs::remove_file(repo.join(&format!("jobs/app/snapshots/{id}/manifest.json"))).unwrap();
    }
    let old_data = data_objects(repo.path())
        .into_iter()
        .find(|p| p.to_str().unwrap().contains(&old))
        .unwrap();
    let status = std::process::Command::new("touch")
        .args(["-d", "2 days ago", old_data.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(manifests(repo.path(), "app").len(), 1);

    let config = write_config(&dir, &repo, "\"keep-7-days\"");
    let r = run("lifeboat-backup", &["prune", "--config", &config, "--json"]);
    r.assert_code(0);
    let removed = r.json()["jobs"][0]["orphans_removed"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(removed[0].as_str().unwrap().contains(&old));
    // The recent orphan may be a backup still uploading: it is kept until the grace period ends.
    assert!(data_objects(repo.path())
        .iter()
        .any(|p| p.to_str().unwrap().contains(&fresh)));
    assert!(!old_data.exists());
}

#[test]
fn backups_prune_after_success_only_and_policies_that_keep_nothing_are_refused() {
    let repo = TempDir::new("after");
    let dir = TempDir::new("after-cfg");
    let policy = dir.join("two.toml");
    std::fs::write(&policy, "keep-last = 2\n").unwrap();
    let policy = policy.to_str().unwrap();
    let db = TestDb::create("after");
    sql(&db.url(), "CREATE TABLE t (id int)");
    let url = db.url();
    for _ in 0..3 {
        run(
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
                policy,
            ],
        )
        .assert_code(0);
    }
    assert_eq!(manifests(repo.path(), "app").len(), 2);
    // A failed backup never prunes, even with a policy that would forget.
    let one = dir.join("one.toml");
    std::fs::write(&one, "keep-last = 1\n").unwrap();
    run(
        "lifeboat-backup",
        &[
            "--engine",
            "postgres",
            "--url",
            "postgres://u:p@127.0.0.1:1/app",
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--retention",
            one.to_str().unwrap(),
        ],
    )
    .assert_code(1);
    assert_eq!(manifests(repo.path(), "app").len(), 2);
    // --no-prune skips it.
    run(
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
            one.to_str().unwrap(),
            "--no-prune",
        ],
    )
    .assert_code(0);
    assert_eq!(manifests(repo.path(), "app").len(), 3);

    let config = write_config(&dir, &repo, "{ keep-daily = 0 }");
    run("lifeboat-backup", &["prune", "--config", &config])
        .assert_code(2)
        .assert_contains("keeps nothing");
    run(
        "lifeboat-backup",
        &[
            "prune",
            "--repo",
            repo.as_str(),
            "app",
            "--retention",
            "nonsense",
        ],
    )
    .assert_code(2)
    .assert_contains("keep-7-days, keep-30-days, gfs, hourly");
}

/// A configuration whose store is `s3://bucket/prefix` on the test S3 server.
fn write_s3_config(dir: &TempDir, store: &str, extra_store: &str, job: &str) -> String {
    let file = dir.join("lifeboat.toml");
    std::fs::write(
        &file,
        format!(
            "[store]\nurl = \"{store}\"\nendpoint = \"{}\"\npath-style = true\n{extra_store}\n\n[[job]]\n{job}\n",
            s3_endpoint()
        ),
    )
    .unwrap();
    file.to_str().unwrap().to_string()
}

#[test]
fn prune_on_s3_stays_under_the_prefix_and_finishes_an_interrupted_prune() {
    let repo = TempDir::new("prune-s3");
    let dir = TempDir::new("prune-s3-cfg");
    let newest = real_snapshot(&repo, "app");
    let first = Utc.with_ymd_and_hms(2025, 3, 1, 3, 0, 0).unwrap();
    let ids: Vec<String> = (0..30)
        .map(|d| clone_snapshot(&repo, &newest, "app", first + ChronoDuration::days(d)))
        .collect();
    clone_snapshot(&repo, &newest, "other", first);
    let bucket = s3_bucket("prune");
    mirror_to_s3(repo.path(), &bucket, "team/lifeboat");
    // Neighbours that share the prefix's first characters, or sit beside it: never touched.
    mirror_to_s3(repo.path(), &bucket, "team/lifeboat-old");
    let outside_before = s3_keys(&bucket, "team/lifeboat-old/");

    let config = write_s3_config(
        &dir,
        &format!("s3://{bucket}/team/lifeboat"),
        "",
        "name = \"app\"\nengine = \"postgres\"\nurl = \"postgres://127.0.0.1/unused\"\nretention = { keep-daily = 4 }",
    );
    let dry = run(
        "lifeboat-backup",
        &["prune", "--config", &config, "--dry-run"],
    );
    dry.assert_code(0)
        .assert_contains("would keep 4 and forget 27");

    // An interrupted prune: it deleted the manifests of the two oldest snapshots, not their data.
    block_on(async {
        let client = s3_client().await;
        for id in &ids[..2] {
            client
                .delete_object()
                .bucket(&bucket)
                .key(format!(
                    "team/lifeboat/jobs/app/snapshots/{id}/manifest.json"
                ))
                .send()
                .await
                .unwrap();
        }
    });
    // S3 cannot backdate objects: a zero grace period makes these orphans old enough.
    let r = run(
        "lifeboat-backup",
        &[
            "prune",
            "--config",
            &config,
            "--orphan-grace-hours",
            "0",
            "--json",
        ],
    );
    r.assert_code(0);
    let report = &r.json()["jobs"][0];
    assert_eq!(
        report["forgotten"].as_array().unwrap().len(),
        25,
        "{report}"
    );
    assert_eq!(
        report["orphans_removed"].as_array().unwrap().len(),
        2,
        "{report}"
    );

    let app = s3_keys(&bucket, "team/lifeboat/jobs/app/snapshots/");
    assert_eq!(
        app.len(),
        4 * 2,
        "4 snapshots, manifest + data each: {app:?}"
    );
    for id in &ids[..26] {
        assert!(
            !app.iter().any(|k| k.contains(id.as_str())),
            "{id} left objects"
        );
    }
    assert_eq!(s3_keys(&bucket, "team/lifeboat/jobs/other/").len(), 2);
    assert_eq!(s3_keys(&bucket, "team/lifeboat-old/"), outside_before);
    run(
        "lifeboat-verify",
        &[
            "--config", &config, "--job", "app", "--all", "--level", "content",
        ],
    )
    .assert_code(0);
}

#[test]
fn snapshots_under_object_lock_are_reported_protected_and_kept() {
    let dir = TempDir::new("lock-cfg");
    let db = TestDb::create("objlock");
    // About 11 MB of stored data: with 5 MiB parts the upload is multipart.
    sql(
        &db.url(),
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v \
         FROM generate_series(1, 300000) g",
    );
    let bucket = s3_bucket_with_object_lock("objlock");
    let config = write_s3_config(
        &dir,
        &format!("s3://{bucket}/locked"),
        "part-size-mib = 5\nsse = \"AES256\"\nobject-lock = { mode = \"governance\", days = 1 }",
        &format!(
            "name = \"app\"\nengine = \"postgres\"\nurl = \"{}\"\nretention = {{ keep-last = 1 }}",
            db.url()
        ),
    );
    run("lifeboat-backup", &["--config", &config]).assert_code(0);
    let second = run("lifeboat-backup", &["--config", &config]);
    second
        .assert_code(0)
        .assert_contains("is protected by object lock (governance) until");
    let manifests = s3_keys(&bucket, "locked/jobs/app/snapshots/")
        .into_iter()
        .filter(|k| k.ends_with("/manifest.json"))
        .count();
    assert_eq!(manifests, 2, "the locked snapshot stays whole and listed");

    let dry = run(
        "lifeboat-backup",
        &["prune", "--config", &config, "--dry-run", "--json"],
    );
    dry.assert_code(0);
    let protected = dry.json()["jobs"][0]["protected"].clone();
    assert_eq!(protected.as_array().unwrap().len(), 1, "{protected}");
    let until: DateTime<Utc> = protected[0]["protection"]["until"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ahead = until - Utc::now();
    assert!(
        ahead > ChronoDuration::hours(23) && ahead <= ChronoDuration::days(1),
        "{until}"
    );

    // Every snapshot object is encrypted and locked; the lock file is encrypted, not locked.
    let keys = s3_keys(&bucket, "locked/jobs/app/snapshots/");
    block_on(async {
        let client = s3_client().await;
        for key in keys {
            let head = client
                .head_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.server_side_encryption().map(|s| s.as_str()),
                Some("AES256"),
                "{key}"
            );
            assert_eq!(
                head.object_lock_mode().map(|m| m.as_str()),
                Some("GOVERNANCE"),
                "{key}"
            );
        }
    });
    block_on(async {
        let lock = s3_client()
            .await
            .get_object()
            .bucket(&bucket)
            .key("locked/jobs/app/lock")
            .send()
            .await;
        // The lock is gone after the run; had it been retained, deleting it would have failed.
        assert!(lock.is_err());
    });
    run(
        "lifeboat-verify",
        &[
            "--config", &config, "--job", "app", "--all", "--level", "content",
        ],
    )
    .assert_code(0);
}
