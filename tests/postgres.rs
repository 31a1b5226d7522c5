//! PostgreSQL end to end: the real binaries against a real server (scripts/services.sh).
//! Round trips compare data (digests of ordered rows and object definitions), and every
//! failure test asserts the exit code, the message and what the repository holds afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeboat_tests::*;

fn backup(repo: &TempDir, db: &TestDb, extra: &[&str]) -> Run {
    backup_url(repo, &db.url(), extra)
}

/// The one-liner backup of `url` as job "app".
fn backup_url(repo: &TempDir, url: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "--engine",
        "postgres",
        "--url",
        url,
        "--repo",
        repo.as_str(),
        "--job",
        "app",
    ];
    args.extend_from_slice(extra);
    run("lifeboat-backup", &args)
}

fn restore(repo: &TempDir, target: &TestDb, extra: &[&str]) -> Run {
    let url = target.url();
    let mut args = vec!["--repo", repo.as_str(), "--job", "app", "--to", &url];
    args.extend_from_slice(extra);
    run("lifeboat-restore", &args)
}

#[test]
fn custom_format_round_trip_restores_every_row_and_object() {
    let source = TestDb::awkward("rt_src");
    let repo = TempDir::new("rt");
    let b = backup(&repo, &source, &["--json"]);
    b.assert_code(0);
    let report = &b.json()["jobs"][0]["report"];
    assert!(report["tables"].as_u64().unwrap() >= 7, "{report}");

    let manifest = &manifests(repo.path(), "app")[0];
    assert_eq!(manifest["dump_format"], "pg_custom");
    assert_eq!(manifest["compression"]["algorithm"], "zstd");
    // No level configured: the level adapts, never above the default, and the manifest says
    // which levels the stream used.
    assert_eq!(manifest["compression"]["adaptive"], true, "{manifest}");
    let used = &manifest["compression"]["levels_used"];
    let (low, high) = (used[0].as_i64().unwrap(), used[1].as_i64().unwrap());
    assert!(1 <= low && low <= high && high <= 3, "{manifest}");
    assert_eq!(report["compression"]["levels_used"], *used);
    assert_eq!(manifest["fingerprint"]["tables"]["public.kinds"], 3003);
    assert_eq!(manifest["fingerprint"]["large_objects"], 2);
    assert!(manifest["source"]["url"]
        .as_str()
        .unwrap()
        .contains(":****@"));
    assert!(manifest["consistent_at"].as_str().is_some());

    run(
        "lifeboat-verify",
        &["--repo", repo.as_str(), "--level", "content"],
    )
    .assert_code(0);

    let target = TestDb::create("rt_dst");
    restore(&repo, &target, &["--latest"])
        .assert_code(0)
        .assert_contains("both digests verified");
    assert_eq!(db_digest(&source.url()), db_digest(&target.url()));
    // Sequences come back with their current values, not their start.
    assert_eq!(
        sql_one(&target.url(), "SELECT last_value FROM billing.invoice_no"),
        "1002"
    );
}

#[test]
fn plain_format_round_trip_with_gzip() {
    let source = TestDb::awkward("plain_src");
    let repo = TempDir::new("plain");
    backup(
        &repo,
        &source,
        &["--format", "plain", "--compression", "gzip"],
    )
    .assert_code(0);
    let manifest = &manifests(repo.path(), "app")[0];
    assert_eq!(manifest["dump_format"], "pg_plain");
    assert!(manifest["object"]["key"]
        .as_str()
        .unwrap()
        .ends_with("data.sql.gz"));

    run(
        "lifeboat-verify",
        &["--repo", repo.as_str(), "--level", "content"],
    )
    .assert_code(0);
    let target = TestDb::create("plain_dst");
    restore(&repo, &target, &["--latest"]).assert_code(0);
    assert_eq!(db_digest(&source.url()), db_digest(&target.url()));
    // A plain dump cannot --clean; the plan already says so, before anything is touched.
    restore(&repo, &target, &["--latest", "--clean", "--dry-run"])
        .assert_code(2)
        .assert_contains("plain SQL dump");
}

/// A drill of a plain SQL snapshot failed: drills skip `ALTER ... OWNER TO` with --no-owner,
/// which psql cannot do; plain dumps are drilled with their owners written in.
#[test]
fn plain_snapshots_pass_a_drill() {
    let source = TestDb::awkward("plain_drill");
    let repo = TempDir::new("plain-drill");
    backup(&repo, &source, &["--format", "plain"]).assert_code(0);
    let drill = run(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--level",
            "drill",
            "--scratch-url",
            &admin_url(),
            "--json",
        ],
    );
    drill.assert_code(0);
    assert_eq!(drill.json()["jobs"][0]["checks"][0]["ok"], true);
}

#[test]
fn uncompressed_backup_verifies_at_every_level() {
    let source = TestDb::awkward("levels");
    let repo = TempDir::new("levels");
    backup(&repo, &source, &["--compression", "none"]).assert_code(0);
    for level in ["stored", "content"] {
        run(
            "lifeboat-verify",
            &["--repo", repo.as_str(), "--level", level],
        )
        .assert_code(0);
    }
    let admin = admin_url();
    let drill = run(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--level",
            "drill",
            "--scratch-url",
            &admin,
            "--json",
        ],
    );
    drill.assert_code(0);
    let check = &drill.json()["jobs"][0]["checks"][0];
    assert_eq!(check["ok"], true, "{check}");
    assert!(check["restore_secs"].as_f64().is_some());
    // The scratch database is gone afterwards.
    let left = sql_one(
        &admin,
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'lifeboat_drill_%'",
    );
    assert_eq!(left, "0");
    // Each verify run is recorded in the repository.
    let records = files_under(repo.path())
        .into_iter()
        .filter(|f| f.contains("/verifications/"))
        .count();
    assert_eq!(records, 3);
}

#[test]
fn drill_detects_a_fingerprint_that_does_not_match() {
    let source = TestDb::create("drill_fp");
    sql(
        &source.url(),
        "CREATE TABLE t (id int primary key); INSERT INTO t SELECT generate_series(1, 10)",
    );
    let repo = TempDir::new("drill_fp");
    backup(&repo, &source, &[]).assert_code(0);
    // Tamper with the recorded fingerprint: the restored data will not match it.
    let path = files_under(repo.path())
        .into_iter()
        .find(|f| f.ends_with("manifest.json"))
        .unwrap();
    let path = repo.join(&path);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["fingerprint"]["tables"]["public.t"] = 11.into();
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let admin = admin_url();
    run(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--level",
            "drill",
            "--scratch-url",
            &admin,
        ],
    )
    .assert_code(3)
    .assert_contains("table public.t has 10 rows, the backup recorded 11");
}

#[test]
fn restore_at_time_picks_the_newest_snapshot_at_or_before() {
    let source = TestDb::create("pitr");
    sql(
        &source.url(),
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('first')",
    );
    let repo = TempDir::new("pitr");
    backup(&repo, &source, &[]).assert_code(0);
    std::thread::sleep(Duration::from_millis(1100));
    sql(&source.url(), "UPDATE t SET v = 'second'");
    backup(&repo, &source, &[]).assert_code(0);
    let all = manifests(repo.path(), "app");
    assert_eq!(all.len(), 2);
    let first_at = all[0]["consistent_at"].as_str().unwrap();
    let second_at = all[1]["consistent_at"].as_str().unwrap();

    let list = run(
        "lifeboat-restore",
        &["list", "--repo", repo.as_str(), "--json"],
    );
    list.assert_code(0);
    assert_eq!(
        list.json()["jobs"][0]["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    for (at, want) in [(first_at, "first"), (second_at, "second")] {
        let target = TestDb::create("pitr_dst");
        restore(&repo, &target, &["--at", at]).assert_code(0);
        assert_eq!(sql_one(&target.url(), "SELECT v FROM t"), want, "--at {at}");
    }
    // The old scripts' file-name form works too, and a time before every snapshot is explained.
    let target = TestDb::create("pitr_old");
    restore(&repo, &target, &["--at", "20000101_000000"])
        .assert_code(1)
        .assert_contains("the oldest snapshot of job \"app\" is");
    let target = TestDb::create("pitr_future");
    restore(&repo, &target, &["--at", "2999-01-01 00:00"]).assert_code(0);
    assert_eq!(sql_one(&target.url(), "SELECT v FROM t"), "second");
    restore(&repo, &target, &["--at", "next tuesday"])
        .assert_code(2)
        .assert_contains("RFC 3339");
}

#[test]
fn non_empty_target_is_refused_unless_clean_and_dry_run_touches_nothing() {
    let source = TestDb::create("clean_src");
    sql(
        &source.url(),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)",
    );
    let repo = TempDir::new("clean");
    backup(&repo, &source, &[]).assert_code(0);
    let id = manifests(repo.path(), "app")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let target = TestDb::create("clean_dst");
    sql(
        &target.url(),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (42)",
    );
    restore(&repo, &target, &["--latest"])
        .assert_code(2)
        .assert_contains("--clean");
    assert_eq!(
        sql_one(&target.url(), "SELECT string_agg(id::text, ',') FROM t"),
        "42"
    );

    let dry = restore(&repo, &target, &["--snapshot", &id, "--clean", "--dry-run"]);
    dry.assert_code(0)
        .assert_contains(&id)
        .assert_contains("Dry run: nothing was changed");
    assert_eq!(
        sql_one(&target.url(), "SELECT string_agg(id::text, ',') FROM t"),
        "42"
    );

    restore(&repo, &target, &["--snapshot", &id, "--clean"]).assert_code(0);
    assert_eq!(
        sql_one(
            &target.url(),
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"
        ),
        "1,2"
    );
}

#[test]
fn a_failing_pg_dump_commits_nothing_and_its_stderr_is_shown() {
    // A role that may count rows of one column (the fingerprint) but not read the whole table:
    // pg_dump itself fails part-way with "permission denied", after writing other tables.
    let source = TestDb::create("dumpfail");
    let role = format!("{}_ro", source.name);
    sql(
        &source.url(),
        &format!(
            "CREATE TABLE aa_fine AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g;
             CREATE TABLE zz_secret (id int, secret text); INSERT INTO zz_secret VALUES (1, 'x');
             DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'ro-pass';
             GRANT SELECT ON aa_fine TO {role}; GRANT SELECT (id) ON zz_secret TO {role};"
        ),
    );
    let url = db_url(&source.name).replacen(
        "lifeboat:lifeboat-test-password",
        &format!("{role}:ro-pass"),
        1,
    );
    let repo = TempDir::new("dumpfail");
    let r = backup_url(&repo, &url, &[]);
    r.assert_code(1)
        .assert_contains("pg_dump exited with status 1")
        .assert_contains("permission denied");
    assert!(!r.output().contains("ro-pass"));
    assert!(manifests(repo.path(), "app").is_empty());
    assert!(
        data_objects(repo.path()).is_empty(),
        "{:?}",
        files_under(repo.path())
    );
    sql(
        &admin_url(),
        &format!("DROP DATABASE {} WITH (FORCE)", source.name),
    );
    sql(&admin_url(), &format!("DROP ROLE {role}"));
}

#[test]
fn pg_dump_killed_mid_stream_commits_nothing() {
    let source = TestDb::create("killed");
    sql(
        &source.url(),
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 1500000) g",
    );
    let repo = TempDir::new("killed");
    let url = source.url();
    let child = command("lifeboat-backup")
        .args([
            "--engine",
            "postgres",
            "--url",
            &url,
            "--repo",
            repo.as_str(),
            "--job",
            "app",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until data is flowing into the store, then kill pg_dump.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut killed = false;
    while std::time::Instant::now() < deadline && !killed {
        let writing = files_under(repo.path()).iter().any(|f| {
            f.contains(".lifeboat-tmp-")
                && std::fs::metadata(repo.join(f))
                    .map(|m| m.len() > 0)
                    .unwrap_or(false)
        });
        if writing {
            if let Some(pid) = find_process(&["pg_dump", &source.name]) {
                std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .unwrap();
                killed = true;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(killed, "never saw pg_dump writing");
    let r = finish(child.wait_with_output().unwrap());
    r.assert_code(1)
        .assert_contains("pg_dump was killed by signal 9");
    assert!(manifests(repo.path(), "app").is_empty());
    assert!(
        data_objects(repo.path()).is_empty(),
        "{:?}",
        files_under(repo.path())
    );
}

/// A process whose command line contains every needle.
fn find_process(needles: &[&str]) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let program = cmdline.split_whitespace().next().unwrap_or_default();
        if program.ends_with(needles[0]) && needles[1..].iter().all(|n| cmdline.contains(n)) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn unreachable_servers_and_wrong_passwords_name_the_host_not_the_password() {
    let repo = TempDir::new("unreach");
    let r = run(
        "lifeboat-backup",
        &[
            "--engine",
            "postgres",
            "--url",
            "postgres://app:hunter2@127.0.0.1:1/shop",
            "--repo",
            repo.as_str(),
        ],
    );
    r.assert_code(1)
        .assert_contains("127.0.0.1:1")
        .assert_contains("\"shop\"");
    assert!(!r.output().contains("hunter2"));

    let wrong = db_url("postgres").replacen(PG_PASSWORD, "not-the-password", 1);
    let r = run(
        "lifeboat-backup",
        &[
            "--engine",
            "postgres",
            "--url",
            &wrong,
            "--repo",
            repo.as_str(),
        ],
    );
    r.assert_code(1)
        .assert_contains("password authentication failed")
        .assert_contains("127.0.0.1");
    assert!(!r.output().contains("not-the-password"));
    assert!(data_objects(repo.path()).is_empty());

    // The restore side says the same about its target.
    let source = TestDb::create("unreach_src");
    sql(&source.url(), "CREATE TABLE t (id int)");
    backup(&repo, &source, &[]).assert_code(0);
    let r = run(
        "lifeboat-restore",
        &[
            "--repo",
            repo.as_str(),
            "--latest",
            "--to",
            &wrong.replace("/postgres", "/other"),
        ],
    );
    r.assert_code(1)
        .assert_contains("password authentication failed");
    assert!(!r.output().contains("not-the-password"));
    // A target database that does not exist says how to create it.
    let missing = db_url("lbt_no_such_database");
    run(
        "lifeboat-restore",
        &["--repo", repo.as_str(), "--latest", "--to", &missing],
    )
    .assert_code(1)
    .assert_contains("does not exist")
    .assert_contains("createdb");
}

fn corrupt(repo: &TempDir, how: &str) -> String {
    let data = data_objects(repo.path()).pop().unwrap();
    let mut bytes = std::fs::read(&data).unwrap();
    match how {
        "flip" => {
            let at = bytes.len() / 2;
            bytes[at] ^= 0x01;
        }
        _ => bytes.truncate(bytes.len() * 2 / 3),
    }
    std::fs::write(&data, bytes).unwrap();
    manifests(repo.path(), "app")[0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn damaged_objects_fail_verify_and_restore_with_exit_3_leaving_the_target_as_it_was() {
    for how in ["flip", "truncate"] {
        for compression in ["zstd", "none"] {
            let source = TestDb::awkward("damage_src");
            let repo = TempDir::new("damage");
            backup(&repo, &source, &["--compression", compression]).assert_code(0);
            let id = corrupt(&repo, how);

            run(
                "lifeboat-verify",
                &["--repo", repo.as_str(), "--level", "content"],
            )
            .assert_code(3)
            .assert_contains(&id);
            run(
                "lifeboat-verify",
                &["--repo", repo.as_str(), "--level", "stored"],
            )
            .assert_code(if how == "flip" { 0 } else { 3 });

            // A target with a table the dump also has, restored with --clean: it must survive.
            let target = TestDb::create("damage_dst");
            sql(
                &target.url(),
                "CREATE TABLE kinds (sentinel text); INSERT INTO kinds VALUES ('still here')",
            );
            let r = restore(&repo, &target, &["--latest", "--clean"]);
            r.assert_code(3)
                .assert_contains(&id)
                .assert_contains("damaged");
            assert_eq!(
                sql_one(&target.url(), "SELECT sentinel FROM kinds"),
                "still here",
                "{how} {compression}"
            );
            assert_eq!(
                sql_one(
                    &target.url(),
                    "SELECT count(*) FROM pg_class WHERE relname = 'events'"
                ),
                "0",
                "{how} {compression}: nothing of the dump may be committed"
            );
        }
    }
}

#[test]
fn configuration_errors_exit_2_with_file_line_and_column() {
    let dir = TempDir::new("config");
    let file = dir.join("lifeboat.toml");
    let f = file.to_str().unwrap();
    std::fs::write(
        &file,
        "[[job]]\nname = \"app\"\nengine = \"postgres\"\nurll = \"postgres://h/db\"\n",
    )
    .unwrap();
    run("lifeboat-backup", &["--config", f])
        .assert_code(2)
        .assert_contains("lifeboat.toml:4:1: unknown field `urll`");

    std::fs::write(
        &file,
        "[[job]]\nname = \"app\"\nengine = \"postgres\"\nurl = \"${LIFEBOAT_TEST_SURELY_UNSET}\"\n",
    )
    .unwrap();
    run("lifeboat-backup", &["--config", f])
        .assert_code(2)
        .assert_contains(
            "lifeboat.toml:4:8: environment variable LIFEBOAT_TEST_SURELY_UNSET is not set",
        );

    std::fs::write(&file, "[[job]]\nname = \"app\"\nengine = \"postgres\"\nurl = \"postgres://h/db\"\ncompression-level = \"high\"\n").unwrap();
    run("lifeboat-verify", &["--config", f])
        .assert_code(2)
        .assert_contains("lifeboat.toml:5:21");

    run(
        "lifeboat-backup",
        &["--config", dir.join("missing.toml").to_str().unwrap()],
    )
    .assert_code(2)
    .assert_contains("cannot read configuration file");
    run("lifeboat-restore", &["--repo", dir.as_str(), "--latest"])
        .assert_code(2)
        .assert_contains("--to");
}

#[test]
fn configured_jobs_run_with_interpolated_urls_and_default_store() {
    let source = TestDb::create("cfg_src");
    sql(
        &source.url(),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (7)",
    );
    let dir = TempDir::new("cfg");
    let repo = dir.join("repo");
    let file = dir.join("lifeboat.toml");
    std::fs::write(
        &file,
        format!(
            "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"app-db\"\nengine = \"postgres\"\nurl = \"${{TEST_DATABASE_URL}}\"\nmax-age = \"26h\"\nretention = {{ keep-daily = 7 }}\n",
            repo.display()
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let printed = finish(
        command("lifeboat-backup")
            .args(["--config", f, "--print-config"])
            .env("TEST_DATABASE_URL", source.url())
            .output()
            .unwrap(),
    );
    printed.assert_code(0).assert_contains("lifeboat:****@");
    let r = finish(
        command("lifeboat-backup")
            .args(["--config", f])
            .env("TEST_DATABASE_URL", source.url())
            .output()
            .unwrap(),
    );
    r.assert_code(0).assert_contains("committed");
    assert_eq!(manifests(&repo, "app-db").len(), 1);
    // verify takes max-age from the file; the snapshot is fresh.
    run("lifeboat-verify", &["--config", f, "--level", "stored"]);
    let v = finish(
        command("lifeboat-verify")
            .args(["--config", f])
            .env("TEST_DATABASE_URL", source.url())
            .output()
            .unwrap(),
    );
    v.assert_code(0).assert_contains("fresh");
}

#[test]
fn a_stale_newest_snapshot_fails_verify_with_exit_5() {
    let source = TestDb::create("stale");
    sql(&source.url(), "CREATE TABLE t (id int)");
    let repo = TempDir::new("stale");
    backup(&repo, &source, &[]).assert_code(0);
    std::thread::sleep(Duration::from_millis(2100));
    run(
        "lifeboat-verify",
        &["--repo", repo.as_str(), "--max-age", "1s"],
    )
    .assert_code(5)
    .assert_contains("STALE");
    run(
        "lifeboat-verify",
        &["--repo", repo.as_str(), "--max-age", "1h"],
    )
    .assert_code(0);
}

#[test]
fn leftovers_of_a_crashed_run_are_removed_by_the_next_run() {
    let source = TestDb::create("leftover");
    sql(&source.url(), "CREATE TABLE t (id int)");
    let repo = TempDir::new("leftover");
    backup(&repo, &source, &[]).assert_code(0);
    // What a run killed with SIGKILL leaves: a temporary upload, and data without a manifest.
    let crashed = repo.join("jobs/app/snapshots/20200101T000000Z-abcdef");
    std::fs::create_dir_all(&crashed).unwrap();
    std::fs::write(
        crashed.join(".lifeboat-tmp-0000-data.pgdump.zst"),
        b"partial",
    )
    .unwrap();
    std::fs::write(crashed.join("data.pgdump.zst"), b"no manifest").unwrap();
    for f in ["data.pgdump.zst", ".lifeboat-tmp-0000-data.pgdump.zst"] {
        let status = std::process::Command::new("touch")
            .args(["-d", "25 hours ago", crashed.join(f).to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    run("lifeboat-restore", &["list", "--repo", repo.as_str()]).assert_code(0);
    assert_eq!(
        manifests(repo.path(), "app").len(),
        1,
        "a snapshot without a manifest is invisible"
    );
    let r = backup(&repo, &source, &["--json"]);
    r.assert_code(0);
    assert_eq!(
        r.json()["jobs"][0]["report"]["leftovers_removed"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        !crashed.exists() || files_under(&crashed).is_empty(),
        "{:?}",
        files_under(&crashed)
    );
    assert_eq!(manifests(repo.path(), "app").len(), 2);
}
