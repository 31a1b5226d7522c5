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
    let r = backup_pg(&url, repo.as_str(), "app", &["--retention", "keep-7-days"]);
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
    let plan = restore_latest(&repo, "app", &target.url(), &["--dry-run", "--json"]);
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
                            process: None,
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

/// Fills a Redis server with 2 MiB of values no compressor shrinks.
fn fill_incompressible(redis: &OwnRedis) {
    let cmds: Vec<Vec<Vec<u8>>> = (0..256u64)
        .map(|i| {
            vec![
                b"SET".to_vec(),
                format!("blob:{i}").into_bytes(),
                incompressible(8192, i + 1),
            ]
        })
        .collect();
    redis.client().pipeline(&cmds);
}

/// Nothing but `expected` (and the filler) in a mounted folder: no temporary files left over.
#[track_caller]
fn only_files(dir: &std::path::Path, expected: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "filler" && n != "lost+found")
        .collect();
    names.sort();
    assert_eq!(names, expected, "in {}", dir.display());
}

/// A Redis `--mode file` restore onto a nearly full disk exited 0 with a truncated file,
/// claiming "both digests and the RDB checksum verified" (the last write's error was lost:
/// no flush before `sync_all`). The disk holds all of the file but its last page, so only the
/// last write fails. On a tmpfs and on ext4 (the O_DIRECT file system).
#[test]
fn a_redis_file_restore_on_a_nearly_full_disk_exits_0_with_a_truncated_file() {
    let redis = OwnRedis::start("full-file-src");
    fill_incompressible(&redis);
    let repo = TempDir::new("full-file-repo");
    run(
        "lifeboat-backup",
        &[
            "--engine",
            "redis",
            "--url",
            &redis.url,
            "--repo",
            repo.as_str(),
            "--job",
            "cache",
        ],
    )
    .assert_code(0);
    let raw = manifests(repo.path(), "cache")[0]["object"]["raw_size"]
        .as_u64()
        .unwrap();
    let all_but_the_last_page = (raw - 1) / 4096 * 4096;
    for mount in [
        Mount::tmpfs("full-file-tmpfs", &all_but_the_last_page.to_string()),
        {
            let m = Mount::ext4("full-file-ext4", 16);
            m.leave_free(all_but_the_last_page / 1024);
            m
        },
    ] {
        let file = mount.join("dump.rdb");
        let r = restore_latest(&repo, "cache", file.to_str().unwrap(), &["--mode", "file"]);
        r.assert_code(1).assert_contains("No space left on device");
        assert!(!r.output().contains("verified"), "{}", r.output());
        assert!(!file.exists(), "a truncated {} was left", file.display());
        only_files(mount.path(), &[]);
    }
}

/// A completely full disk when the lock was created left a 0-byte lock, and every later run
/// exited 4 ("the lock is unreadable"), even after space was freed.
#[test]
fn a_completely_full_disk_leaves_a_0_byte_lock() {
    let db = TestDb::create("full_lock");
    sql(
        &db.url(),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    );
    for mount in [
        Mount::tmpfs("full-lock-tmpfs", "2m"),
        Mount::ext4("full-lock-ext4", 16),
    ] {
        let repo = mount.path().to_str().unwrap().to_string();
        // A repository with a job folder already, as after earlier nights.
        std::fs::create_dir_all(mount.join("jobs/app")).unwrap();
        let filler = mount.fill();
        let r = finish(backup_cmd(&repo, &[], &db.url()).output().unwrap());
        r.assert_code(1).assert_contains("No space left on device");
        assert!(
            !mount.join("jobs/app/lock").exists(),
            "a lock was left on {repo}"
        );
        std::fs::remove_file(filler).unwrap();
        finish(backup_cmd(&repo, &[], &db.url()).output().unwrap()).assert_code(0);
        assert!(!mount.join("jobs/app/lock").exists());
    }
}

/// RDB files with empty collections, which redis-server loads (skipping them with a warning),
/// made Lifeboat's restore fail with `RESTORE ... ERR Bad data format`.
#[test]
fn an_rdb_file_with_empty_collections_fails_with_bad_data_format() {
    let mut rdb = b"REDIS0009".to_vec();
    rdb.extend([0xfe, 0x00]); // SELECTDB 0
    rdb.extend([0x02, 5]); // an empty set...
    rdb.extend(b"empty");
    rdb.push(0); // ...of 0 members
    rdb.extend([0x0b, 5]); // an empty intset
    rdb.extend(b"ints0");
    rdb.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
    rdb.extend([0x00, 4]); // and a string
    rdb.extend(b"kept");
    rdb.extend([5]);
    rdb.extend(b"value");
    rdb.push(0xff);
    let crc = lifeboat_rdb::crc64(&rdb);
    rdb.extend(crc.to_le_bytes());
    let dir = TempDir::new("empty-collections");
    let file = dir.join("dump.rdb");
    std::fs::write(&file, &rdb).unwrap();
    let target = OwnRedis::start("empty-collections-target");
    let r = run(
        "lifeboat-restore",
        &[
            "--from-file",
            file.to_str().unwrap(),
            "--to",
            &target.url,
            "--yes",
        ],
    );
    r.assert_code(0)
        .assert_contains("Loaded 1 key from")
        .assert_contains("Skipped 2 empty set key(s)");
    let mut client = target.client();
    assert_eq!(client.cmd(&[b"DBSIZE"]).text(), "1");
    assert_eq!(client.cmd(&[b"GET", b"kept"]).text(), "value");
}

/// A port where the kernel accepts connections (the listen backlog) and nothing ever answers.
fn silent_server() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn no_lock_left(repo: &TempDir, job: &str) {
    assert!(
        !repo.join(&format!("jobs/{job}/lock")).exists(),
        "the run left the lock of {job} behind"
    );
}

/// A PostgreSQL or Redis server that accepts the connection and never answers hung the backup
/// forever, while it held (and renewed) the job's lock.
#[test]
fn silent_servers_hang_a_backup_forever() {
    let (_listener, port) = silent_server();
    let repo = TempDir::new("silent");
    for (engine, url) in [
        (
            "postgres",
            format!("postgres://u:secret@127.0.0.1:{port}/app"),
        ),
        ("redis", format!("redis://127.0.0.1:{port}")),
    ] {
        let started = std::time::Instant::now();
        let r = run(
            "lifeboat-backup",
            &[
                "--engine",
                engine,
                "--url",
                &url,
                "--repo",
                repo.as_str(),
                "--job",
                "silent",
                "--idle-timeout",
                "2s",
            ],
        );
        r.assert_code(1).assert_contains("no answer");
        assert!(!r.output().contains("secret"));
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(30),
            "{engine}: took {took:?}"
        );
        no_lock_left(&repo, "silent");
    }
}

/// A Redis source stopped in the middle of SYNC hung the backup; a run whose source sends
/// nothing for `idle-timeout` must end with exit 1, and an overall `timeout` likewise.
#[test]
fn a_redis_source_stopped_in_the_middle_of_sync_hangs_the_backup() {
    let redis = OwnRedis::start("stalled-sync");
    fill_incompressible(&redis);
    // The server waits before it streams the snapshot; it is stopped meanwhile.
    redis
        .client()
        .cmd(&[b"CONFIG", b"SET", b"repl-diskless-sync", b"yes"]);
    redis
        .client()
        .cmd(&[b"CONFIG", b"SET", b"repl-diskless-sync-delay", b"5"]);
    let repo = TempDir::new("stalled-sync-repo");
    for (flags, expected) in [
        (["--idle-timeout", "2s"], "2s (idle-timeout)"),
        (["--timeout", "3s"], "took longer than its timeout of 3s"),
    ] {
        let mut cmd = command("lifeboat-backup");
        cmd.args([
            "--engine",
            "redis",
            "--url",
            &redis.url,
            "--repo",
            repo.as_str(),
        ])
        .args(["--job", "cache"])
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let started = std::time::Instant::now();
        let child = cmd.spawn().unwrap();
        // Stopped once the run holds its lock (SYNC then waits out the 5 s delay).
        let lock = repo.join("jobs/cache/lock");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !lock.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the run never took its lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        redis.signal("STOP");
        let r = finish(child.wait_with_output().unwrap());
        redis.signal("CONT");
        r.assert_code(1).assert_contains(expected);
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
        no_lock_left(&repo, "cache");
        assert!(manifests(repo.path(), "cache").is_empty());
    }
}

/// `--leftover-grace-mins 300000000000000000` panicked with an overflow (exit 101) and left the
/// lock behind. No value a user can type may panic.
#[test]
fn huge_grace_values_panic() {
    let repo = TempDir::new("grace");
    for flag in ["--leftover-grace-mins", "--orphan-grace-hours"] {
        let r = run(
            "lifeboat-backup",
            &[
                "--engine",
                "postgres",
                "--url",
                "postgres://u@127.0.0.1:1/app",
                "--repo",
                repo.as_str(),
                flag,
                "300000000000000000",
            ],
        );
        r.assert_code(2).assert_contains(flag);
    }
    let r = run(
        "lifeboat-backup",
        &[
            "prune",
            "app",
            "--repo",
            repo.as_str(),
            "--retention",
            "gfs",
            "--orphan-grace-hours",
            "300000000000000000",
        ],
    );
    r.assert_code(2);
    no_lock_left(&repo, "app");
}

/// Starts a Redis backup to S3 (through `proxy`) that holds the lock and then waits on its
/// stopped source; returns the running process.
fn backup_waiting_on_its_source(
    redis: &OwnRedis,
    proxy: &proxy::FaultProxy,
    bucket: &str,
    prefix: &str,
) -> std::process::Child {
    redis
        .client()
        .cmd(&[b"CONFIG", b"SET", b"repl-diskless-sync", b"yes"]);
    redis
        .client()
        .cmd(&[b"CONFIG", b"SET", b"repl-diskless-sync-delay", b"5"]);
    let child = command("lifeboat-backup")
        .args(["--engine", "redis", "--url", &redis.url, "--job", "cache"])
        .args(["--repo", &format!("s3://{bucket}/{prefix}")])
        .args(["--s3-endpoint", &proxy.endpoint, "--s3-path-style"])
        .args(["--idle-timeout", "1h"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the lock is taken, SYNC follows and waits out the server's 5 s delay; then the
    // source stops and the store stops answering.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !s3_keys(bucket, prefix).iter().any(|k| k.ends_with("/lock")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never took its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    redis.signal("STOP");
    proxy
        .faults
        .stall
        .store(true, std::sync::atomic::Ordering::SeqCst);
    child
}

fn kill(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// With the store unreachable, a run went on for over 6 minutes after SIGTERM, ignored a
/// second SIGTERM and a SIGINT, and kept renewing its lock. Clean-up gets a deadline of about
/// 30 s, and a second signal exits at once.
#[test]
fn sigterm_does_not_end_a_run_when_the_store_is_unreachable() {
    let bucket = s3_bucket("sigterm-dead");
    let upstream = s3_endpoint().trim_start_matches("http://").to_string();
    let redis = OwnRedis::start("sigterm-dead");
    redis.client().cmd(&[b"SET", b"k", b"v"]);

    // One signal: the run ends within the clean-up deadline.
    let proxy = proxy::FaultProxy::start(&upstream);
    let child = backup_waiting_on_its_source(&redis, &proxy, &bucket, "one");
    let started = std::time::Instant::now();
    kill(&child, "TERM");
    let r = finish(child.wait_with_output().unwrap());
    let took = started.elapsed();
    redis.signal("CONT");
    r.assert_code(1).assert_contains("interrupted by SIGTERM");
    assert!(
        took < std::time::Duration::from_secs(45),
        "took {took:?} after SIGTERM:\n{}",
        r.output()
    );

    // A second signal during the clean-up: the process exits at once.
    let proxy = proxy::FaultProxy::start(&upstream);
    let child = backup_waiting_on_its_source(&redis, &proxy, &bucket, "two");
    kill(&child, "TERM");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    kill(&child, "INT");
    let r = finish(child.wait_with_output().unwrap());
    let took = started.elapsed();
    redis.signal("CONT");
    r.assert_code(1)
        .assert_contains("again during the clean-up");
    assert!(
        took < std::time::Duration::from_secs(5),
        "took {took:?} after the second signal"
    );
}

/// `timeout-secs` on S3 cut requests that were still making progress: with the defaults every
/// part failed below about 280 kB/s. It is a stall timeout: 50 kB/s steady succeeds (a 200 KB
/// object takes 4 s against a 2 s timeout), a stall fails.
#[test]
fn s3_timeout_cuts_requests_that_are_still_making_progress() {
    use lifeboat_core::store::{ObjectKey, ObjectWriter, S3Options, S3Store, Store};
    use tokio::io::AsyncWriteExt;
    let bucket = s3_bucket("stall");
    let upstream = s3_endpoint().trim_start_matches("http://").to_string();
    let proxy = proxy::ThrottleProxy::start(&upstream, 50_000);
    block_on(async {
        let store = S3Store::open(
            &format!("s3://{bucket}/stall-{}", std::process::id()),
            S3Options {
                endpoint: Some(proxy.endpoint.clone()),
                path_style: true,
                timeout: std::time::Duration::from_secs(2),
                max_attempts: 1,
                ..S3Options::default()
            },
        )
        .await
        .unwrap();
        let data = incompressible(200_000, 7);
        let key = ObjectKey::new("slow/data.bin").unwrap();
        let mut w = store.create(&key).await.unwrap();
        w.write_all(&data).await.unwrap();
        let started = std::time::Instant::now();
        w.finish()
            .await
            .expect("a slow upload that keeps moving must succeed");
        assert!(
            started.elapsed() > std::time::Duration::from_secs(3),
            "the link was not slow"
        );
        assert_eq!(store.get(&key).await.unwrap().unwrap(), data);

        proxy
            .stall_after
            .store(64 * 1024, std::sync::atomic::Ordering::SeqCst);
        let key = ObjectKey::new("stalled/data.bin").unwrap();
        let mut w = store.create(&key).await.unwrap();
        w.write_all(&data).await.unwrap();
        let started = std::time::Instant::now();
        let e = w.finish().await.unwrap_err();
        assert!(e.to_string().contains("no progress for 2 s"), "{e}");
        // The 2 s, plus what the kernel may still hold at the slowest link (200 KB: 6 s).
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        let direct = S3Store::open(
            &format!("s3://{bucket}/stall-{}", std::process::id()),
            S3Options {
                endpoint: Some(s3_endpoint()),
                path_style: true,
                ..S3Options::default()
            },
        )
        .await
        .unwrap();
        assert!(direct.head(&key).await.unwrap().is_none());
    });
}

/// When an upload failed, the only line was "the upload failed; see the store error", with a
/// misleading free-space hint, in text and in `--json`: the store's own error was lost.
#[test]
fn the_store_error_is_lost_when_an_upload_fails() {
    use lifeboat_core::store::{S3Options, S3Store};
    let bucket = s3_bucket("lost-error");
    let source = TestDb::create("lost_error");
    sql(
        &source.url(),
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g + 1)::text) AS v FROM generate_series(1, 600000) g",
    );
    let upstream = s3_endpoint().trim_start_matches("http://").to_string();
    let proxy = proxy::FaultProxy::start(&upstream);
    let dir = TempDir::new("lost-error");
    let prefix = format!("lost-{}", std::process::id());
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"s3://{bucket}/{prefix}\"\nendpoint = \"{}\"\npath-style = true\npart-size-mib = 5\nparts-in-flight = 1\nmax-attempts = 1\n\n\
             [[job]]\nname = \"app\"\nengine = \"postgres\"\nurl = \"{}\"\ncompression = \"none\"\n",
            proxy.endpoint,
            source.url()
        ),
    )
    .unwrap();
    let child = command("lifeboat-backup")
        .args(["--config", config.to_str().unwrap(), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let direct = block_on(S3Store::open(
        &format!("s3://{bucket}/{prefix}"),
        S3Options {
            endpoint: Some(s3_endpoint()),
            path_style: true,
            ..S3Options::default()
        },
    ))
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while block_on(direct.unfinished_uploads("jobs/"))
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no multipart upload started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // From now on the store answers every request with 500 InternalError.
    proxy
        .faults
        .internal_error
        .store(10_000, std::sync::atomic::Ordering::SeqCst);
    let r = finish(child.wait_with_output().unwrap());
    r.assert_code(1);
    let report = r.json();
    let error = &report["jobs"][0]["error"];
    let text = format!("{error}\n{}", r.stderr);
    assert!(!text.contains("see the store error"), "{text}");
    assert!(!text.contains("free space"), "{text}");
    assert!(text.contains("InternalError"), "{text}");
}

/// An unknown job had four behaviours across the binaries (exit 2, 1, 0 with an empty table,
/// and 1 with "no the latest snapshot"): it is exit 2, naming the jobs that exist.
#[test]
fn an_unknown_job_gets_four_different_behaviours() {
    let repo = TempDir::new("unknown-job");
    real_snapshot(&repo, "app");
    let r = repo.as_str();
    for args in [
        vec!["lifeboat-verify", "--repo", r, "--job", "nope"],
        vec!["lifeboat-restore", "list", "--repo", r, "--job", "nope"],
        vec![
            "lifeboat-restore",
            "--repo",
            r,
            "--job",
            "nope",
            "--latest",
            "--to",
            "postgres://u@127.0.0.1:1/x",
        ],
        vec![
            "lifeboat-backup",
            "prune",
            "nope",
            "--repo",
            r,
            "--retention",
            "gfs",
            "--dry-run",
        ],
        vec!["lifeboat-backup", "unlock", "nope", "--repo", r, "--yes"],
    ] {
        let out = run(args[0], &args[1..]);
        out.assert_code(2)
            .assert_contains("there is no job \"nope\"")
            .assert_contains("jobs: app");
    }
}

/// `list`, `verify` and `restore` created the repository directory (even
/// ~/.local/share/lifeboat/repo for a bare `lifeboat-restore list`); they must create nothing,
/// and a missing repository or a file is exit 2.
#[test]
fn read_only_commands_create_directories() {
    let home = TempDir::new("ro-home");
    let missing = home.join("no/such/repo");
    let file = home.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let commands: Vec<(&str, Vec<&str>)> = vec![
        ("lifeboat-restore", vec!["list"]),
        ("lifeboat-verify", vec![]),
        (
            "lifeboat-restore",
            vec![
                "--job",
                "app",
                "--latest",
                "--to",
                "postgres://u@127.0.0.1:1/x",
            ],
        ),
        (
            "lifeboat-backup",
            vec!["prune", "app", "--retention", "gfs", "--dry-run"],
        ),
        ("lifeboat-backup", vec!["unlock", "app", "--yes"]),
    ];
    for (bin, args) in &commands {
        // No --repo: the default repository under HOME.
        let out = finish(
            command(bin)
                .args(args)
                .env("HOME", home.path())
                .current_dir(home.path())
                .output()
                .unwrap(),
        );
        out.assert_code(2).assert_contains("there is no repository");
        for repo in [&missing, &file] {
            let out = finish(
                command(bin)
                    .args(args)
                    .args(["--repo", repo.to_str().unwrap()])
                    .env("HOME", home.path())
                    .current_dir(home.path())
                    .output()
                    .unwrap(),
            );
            out.assert_code(2);
        }
    }
    let top: Vec<String> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        top,
        ["a-file"],
        "something was created in {}",
        home.as_str()
    );
}

/// `lifeboat-backup --config F prune --dry-run` and `lifeboat-backup --repo R unlock J` took
/// the subcommand for a job name.
#[test]
fn options_before_a_subcommand_make_it_a_job_name() {
    let repo = TempDir::new("global-opts");
    real_snapshot(&repo, "app");
    let dir = TempDir::new("global-opts-cfg");
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"app\"\nengine = \"postgres\"\nurl = \"postgres://127.0.0.1/unused\"\nretention = \"gfs\"\n",
            repo.as_str()
        ),
    )
    .unwrap();
    run(
        "lifeboat-backup",
        &["--config", config.to_str().unwrap(), "prune", "--dry-run"],
    )
    .assert_code(0)
    .assert_contains("Dry run: job \"app\" would keep 1 and forget 0 snapshots");
    run(
        "lifeboat-backup",
        &["--repo", repo.as_str(), "unlock", "app", "--yes"],
    )
    .assert_code(0)
    .assert_contains("is not locked");
}

/// `--dry-run` accepted what the real run refused: `--mode file` on a PostgreSQL snapshot
/// (exit 0 in a dry run, 2 for real; `--mode file` now writes a PostgreSQL dump, so the case is
/// a flag that does not go with it), and flags of the other engine (`--db-map`, `--replace`).
#[test]
fn dry_run_accepts_what_the_real_run_refuses() {
    let repo = TempDir::new("dry-parity");
    real_snapshot(&repo, "app");
    let target = TestDb::create("dry_parity");
    let out = TempDir::new("dry-parity-out");
    let file = out.join("dump.rdb");
    let to = target.url();
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "--mode",
            "file",
            "--no-owner",
            "--to",
            file.to_str().unwrap(),
        ],
        vec!["--db-map", "0:1", "--to", &to],
        vec!["--replace", "--to", &to],
        vec!["--mode", "swap", "--to", &to],
    ];
    for case in &cases {
        for dry in [true, false] {
            let mut args = vec!["--repo", repo.as_str(), "--job", "app", "--latest", "--yes"];
            args.extend(case.iter().copied());
            if dry {
                args.push("--dry-run");
            }
            run("lifeboat-restore", &args).assert_code(2);
        }
    }
    assert!(!file.exists());
    assert_eq!(
        sql_one(
            &target.url(),
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ),
        "0"
    );
}

/// `--log-format json` left the final error lines as plain text.
#[test]
fn log_format_json_leaves_the_final_error_as_plain_text() {
    let repo = TempDir::new("json-log");
    let r = run(
        "lifeboat-backup",
        &[
            "--engine",
            "postgres",
            "--url",
            "postgres://u:pw@127.0.0.1:1/app",
            "--repo",
            repo.as_str(),
            "--log-format",
            "json",
        ],
    );
    r.assert_code(1);
    for line in r.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    assert!(r.stderr.contains("\"level\":\"ERROR\""), "{}", r.stderr);
}

/// A password given as a query parameter (`postgres://u@h/db?password=...`) ended up on the
/// command line of pg_dump, pg_restore and psql, visible to `ps`. Wrappers around the real
/// programs record every argument they get.
#[test]
fn passwords_in_query_parameters_show_in_ps() {
    let real = pg_bin();
    let log_path =
        std::env::temp_dir().join(format!("lifeboat-test-argv-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log_path);
    let log = log_path.display();
    let wrappers: Vec<(&str, String)> = ["pg_dump", "pg_restore", "psql"]
        .iter()
        .map(|p| {
            (
                *p,
                format!("echo \"{p} $*\" >> '{log}'\nexec '{real}/{p}' \"$@\"\n"),
            )
        })
        .collect();
    let tools = script_tools("argv-tools", &wrappers);
    let with_query_password = |url: &str| {
        let without = url.replacen(&format!(":{PG_PASSWORD}@"), "@", 1);
        format!("{without}?password={PG_PASSWORD}&application_name=lbt")
    };
    let repo = TempDir::new("argv-repo");
    let db = TestDb::create("argv");
    sql(
        &db.url(),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)",
    );
    for format in ["custom", "plain"] {
        run(
            "lifeboat-backup",
            &[
                "--engine",
                "postgres",
                "--url",
                &with_query_password(&db.url()),
                "--repo",
                repo.as_str(),
                "--job",
                format,
                "--format",
                format,
                "--pg-bin-dir",
                tools.as_str(),
            ],
        )
        .assert_code(0);
        let target = TestDb::create("argv_to");
        let r = run(
            "lifeboat-restore",
            &[
                "--repo",
                repo.as_str(),
                "--job",
                format,
                "--latest",
                "--to",
                &with_query_password(&target.url()),
                "--yes",
                "--pg-bin-dir",
                tools.as_str(),
            ],
        );
        r.assert_code(0);
        assert!(!r.output().contains(PG_PASSWORD));
        assert_eq!(sql_one(&target.url(), "SELECT count(*) FROM t"), "2");
    }
    let argv = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    for program in ["pg_dump --snapshot", "pg_restore", "psql"] {
        assert!(argv.contains(program), "{program} never ran:\n{argv}");
    }
    assert!(
        !argv.contains(PG_PASSWORD),
        "a password reached a command line:\n{argv}"
    );
}

/// The README's one-liner `--url "$DATABASE_URL"` put the password in Lifeboat's own
/// arguments, visible to `ps`. Every URL flag has a form that names an environment variable.
#[test]
fn lifeboats_own_command_line_shows_the_password() {
    let repo = TempDir::new("url-env");
    let db = TestDb::create("url_env");
    sql(
        &db.url(),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    );
    let target = TestDb::create("url_env_to");
    let with_env = |bin: &str, args: &[&str]| {
        finish(
            command(bin)
                .args(args)
                .env("LBT_SOURCE_URL", db.url())
                .env("LBT_TARGET_URL", target.url())
                .env("LBT_SCRATCH_URL", admin_url())
                .output()
                .unwrap(),
        )
    };
    with_env(
        "lifeboat-backup",
        &[
            "--engine",
            "postgres",
            "--url-env",
            "LBT_SOURCE_URL",
            "--repo",
            repo.as_str(),
            "--job",
            "app",
        ],
    )
    .assert_code(0);
    with_env(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--level",
            "drill",
            "--scratch-url-env",
            "LBT_SCRATCH_URL",
        ],
    )
    .assert_code(0);
    with_env(
        "lifeboat-restore",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--latest",
            "--to-env",
            "LBT_TARGET_URL",
            "--yes",
        ],
    )
    .assert_code(0);
    assert_eq!(sql_one(&target.url(), "SELECT count(*) FROM t"), "1");
    // An unset variable is a usage error that names it.
    for (bin, args) in [
        (
            "lifeboat-backup",
            vec![
                "--engine",
                "postgres",
                "--url-env",
                "LBT_UNSET",
                "--repo",
                repo.as_str(),
            ],
        ),
        (
            "lifeboat-restore",
            vec![
                "--repo",
                repo.as_str(),
                "--job",
                "app",
                "--latest",
                "--to-env",
                "LBT_UNSET",
            ],
        ),
        (
            "lifeboat-verify",
            vec![
                "--repo",
                repo.as_str(),
                "--level",
                "drill",
                "--scratch-url-env",
                "LBT_UNSET",
            ],
        ),
    ] {
        run(bin, &args)
            .assert_code(2)
            .assert_contains("LBT_UNSET is not set");
    }
}

/// A drill as a non-superuser failed with `must be member of role "lifeboat"` (the dump's
/// owner): drills restore with --no-owner.
#[test]
fn a_drill_as_a_non_superuser_fails() {
    let role = format!("lbt_drill_{}", std::process::id());
    sql(
        &admin_url(),
        &format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN CREATEDB PASSWORD 'drill-pw'"
        ),
    );
    let db = TestDb::create("drill_owner");
    sql(
        &db.url(),
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)",
    );
    let repo = TempDir::new("drill-owner");
    let url = db.url();
    backup_pg(&url, repo.as_str(), "app", &[]).assert_code(0);
    let scratch = admin_url().replacen(
        &format!("lifeboat:{PG_PASSWORD}@"),
        &format!("{role}:drill-pw@"),
        1,
    );
    let r = run(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--level",
            "drill",
            "--scratch-url",
            &scratch,
        ],
    );
    sql(&admin_url(), &format!("DROP ROLE IF EXISTS {role}"));
    r.assert_code(0).assert_contains("level drill");
}

/// Default job names (the database name, or the literal `redis`) let two different servers
/// share one history silently. A one-liner into a job whose snapshots came from another source
/// is refused unless `--job` names it on purpose.
#[test]
fn default_job_names_collide() {
    let first = OwnRedis::start("collide-a");
    let second = OwnRedis::start("collide-b");
    first.client().cmd(&[b"SET", b"a", b"1"]);
    second.client().cmd(&[b"SET", b"b", b"2"]);
    let repo = TempDir::new("collide");
    let backup = |url: &str, extra: &[&str]| {
        let mut args = vec!["--engine", "redis", "--url", url, "--repo", repo.as_str()];
        args.extend_from_slice(extra);
        run("lifeboat-backup", &args)
    };
    backup(&first.url, &[]).assert_code(0);
    backup(&first.url, &[]).assert_code(0);
    backup(&second.url, &[])
        .assert_code(2)
        .assert_contains("two sources would share one history")
        .assert_contains(&first.url);
    assert_eq!(manifests(repo.path(), "redis").len(), 2);
    backup(&second.url, &["--job", "redis"]).assert_code(0);
    backup(&second.url, &["--job", "cache-b"]).assert_code(0);
}

/// The smaller message fixes, each as the user met it: indexes counted as tables in the
/// non-empty-target refusal; a restore-side hint ("create the database first") for a backup of
/// a database that does not exist; "1 tables", "1 snapshots", "level Content", `--max-age 1s`
/// shown as "max 0m".
#[test]
fn messages_count_indexes_as_tables_and_say_1_tables() {
    let repo = TempDir::new("messages");
    let db = TestDb::create("messages");
    sql(
        &db.url(),
        "CREATE TABLE t (id int PRIMARY KEY, v text UNIQUE); INSERT INTO t VALUES (1, 'a')",
    );
    let url = db.url();
    backup_pg(&url, repo.as_str(), "app", &[])
        .assert_code(0)
        .assert_contains("1 table, 1 row;");
    // The target holds one table and its two indexes: one object.
    let target = TestDb::create("messages_to");
    sql(
        &target.url(),
        "CREATE TABLE other (id int PRIMARY KEY, v text UNIQUE)",
    );
    run(
        "lifeboat-restore",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--latest",
            "--to",
            &target.url(),
            "--yes",
        ],
    )
    .assert_code(2)
    .assert_contains("it holds 1 object (tables, views");
    run("lifeboat-restore", &["list", "--repo", repo.as_str()])
        .assert_code(0)
        .assert_contains("(1 snapshot;");
    run(
        "lifeboat-verify",
        &["--repo", repo.as_str(), "--job", "app", "--max-age", "1s"],
    )
    .assert_contains("level content")
    .assert_contains("(max 1s, from --max-age)");
    let missing = db_url("lbt_no_such_database");
    let r = backup_pg(&missing, repo.as_str(), "gone", &[]);
    r.assert_code(1)
        .assert_contains("check the name in the URL");
    assert!(
        !r.output().contains("create the database first"),
        "{}",
        r.output()
    );
}

/// Failed runs left empty snapshot directories that nothing removed; young orphans (data
/// without a manifest, younger than the grace period) were not reported although `--help`
/// said they were.
#[test]
fn failed_runs_leave_empty_snapshot_directories() {
    let repo = TempDir::new("empty-dirs");
    real_snapshot(&repo, "app");
    // A pg_dump that writes a little and fails.
    let tools = fake_pg_dump("failing-pg-dump", "printf 'PGDMP partial'\nexit 1");
    let db = TestDb::create("empty_dirs");
    let url = db.url();
    backup_pg(
        &url,
        repo.as_str(),
        "app",
        &["--pg-bin-dir", tools.as_str()],
    )
    .assert_code(1);
    let folders: Vec<String> = std::fs::read_dir(repo.join("jobs/app/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(folders.len(), 1, "a failed run left a folder: {folders:?}");

    // Data without a manifest, just written (another run's upload in progress): left, and said.
    let young = repo.join("jobs/app/snapshots/20991231T000000Z-abcdef");
    std::fs::create_dir_all(&young).unwrap();
    std::fs::write(young.join("data.pgdump"), b"in progress").unwrap();
    run(
        "lifeboat-backup",
        &[
            "prune",
            "app",
            "--repo",
            repo.as_str(),
            "--retention",
            "gfs",
        ],
    )
    .assert_code(0)
    .assert_contains("younger than the grace period");
    assert!(young.join("data.pgdump").exists());
}

/// A manifest whose `id` differs from its folder, or whose `format` is newer than this
/// Lifeboat reads, was accepted.
#[test]
fn manifests_of_a_newer_format_or_in_the_wrong_folder_are_accepted() {
    let repo = TempDir::new("manifest-checks");
    let original = real_snapshot(&repo, "app");
    let id = original.file_name().unwrap().to_str().unwrap().to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(original.join("manifest.json")).unwrap()).unwrap();
    // A copy in another folder, its id unchanged.
    let moved = repo.join("jobs/app/snapshots/20200101T000000Z-000001");
    std::fs::create_dir_all(&moved).unwrap();
    for entry in std::fs::read_dir(&original).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), moved.join(entry.file_name())).unwrap();
    }
    let r = run(
        "lifeboat-verify",
        &["--repo", repo.as_str(), "--job", "app", "--all"],
    );
    r.assert_code(3).assert_contains(&format!(
        "the manifest names snapshot {id}, not the folder it is in"
    ));
    std::fs::remove_dir_all(&moved).unwrap();
    // A newer format.
    let mut newer = manifest.clone();
    newer["format"] = 99.into();
    std::fs::write(
        original.join("manifest.json"),
        serde_json::to_vec(&newer).unwrap(),
    )
    .unwrap();
    run(
        "lifeboat-verify",
        &["--repo", repo.as_str(), "--job", "app", "--all"],
    )
    .assert_code(3)
    .assert_contains("written by a newer Lifeboat")
    .assert_contains("upgrade Lifeboat");
}

/// A pg_dump that stops sending in the middle of the dump (a server that went silent) hung the
/// run: the stream now fails after `idle-timeout` and pg_dump is stopped, exit 1.
#[test]
fn a_dump_that_stops_sending_hangs_the_backup() {
    let tools = fake_pg_dump("stalled-pg-dump", "printf 'PGDMP'\nexec sleep 600");
    let db = TestDb::create("stalled_dump");
    let repo = TempDir::new("stalled-dump");
    let started = std::time::Instant::now();
    backup_pg(
        &db.url(),
        repo.as_str(),
        "app",
        &["--pg-bin-dir", tools.as_str(), "--idle-timeout", "2s"],
    )
    .assert_code(1)
    .assert_contains("sent nothing for 2s (idle-timeout)");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    no_lock_left(&repo, "app");
    assert!(manifests(repo.path(), "app").is_empty());
}

/// `lifeboat-restore --from-file F --dry-run` said "would check F" and exited 0 without
/// checking anything, where the real run refuses a damaged file (exit 3) or a non-empty
/// target (exit 2).
#[test]
fn dry_run_of_an_rdb_file_checks_nothing() {
    let mut rdb = b"REDIS0009".to_vec();
    rdb.extend([0xfe, 0x00, 0x00, 4]);
    rdb.extend(b"kept");
    rdb.extend([5]);
    rdb.extend(b"value");
    rdb.push(0xff);
    let crc = lifeboat_rdb::crc64(&rdb);
    rdb.extend(crc.to_le_bytes());
    let dir = TempDir::new("dry-rdb");
    let good = dir.join("good.rdb");
    std::fs::write(&good, &rdb).unwrap();
    let damaged = dir.join("damaged.rdb");
    let mut bad = rdb.clone();
    bad[14] ^= 0x20;
    std::fs::write(&damaged, &bad).unwrap();
    let target = OwnRedis::start("dry-rdb-target");
    let from = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "--from-file",
            file.to_str().unwrap(),
            "--to",
            &target.url,
            "--yes",
        ];
        args.extend_from_slice(extra);
        run("lifeboat-restore", &args)
    };
    for dry in [&["--dry-run"][..], &[][..]] {
        from(&damaged, dry).assert_code(3);
    }
    from(&good, &["--dry-run"])
        .assert_code(0)
        .assert_contains("nothing was changed");
    assert_eq!(target.client().cmd(&[b"DBSIZE"]).text(), "0");
    target.client().cmd(&[b"SET", b"other", b"1"]);
    for dry in [&["--dry-run"][..], &[][..]] {
        from(&good, dry)
            .assert_code(2)
            .assert_contains("already holds 1 key in");
    }
}

// ---------------------------------------------------------------------------------------------
// Trust III: each test below failed on the code before its fix.

/// The path of libfaketime (services.sh installs faketime).
fn libfaketime() -> String {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketime.so.1"))
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime is missing: run scripts/services.sh start (it installs faketime)")
}

/// A backup of the tree `src` as job `job` into `repo` (with the store's `flags`), with this
/// host's clock moved by `faketime` (e.g. "+30d"), if given.
fn files_backup(
    repo: &str,
    flags: &[String],
    src: &std::path::Path,
    job: &str,
    extra: &[&str],
    faketime: Option<&str>,
) -> Run {
    let mut cmd = command("lifeboat-backup");
    cmd.args([
        "--engine",
        "files",
        "--path",
        src.to_str().unwrap(),
        "--job",
        job,
        "--repo",
        repo,
    ])
    .args(flags)
    .args(extra);
    if let Some(offset) = faketime {
        cmd.env("LD_PRELOAD", libfaketime())
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    finish(cmd.output().unwrap())
}

/// The snapshots of `job` in `repo` as `list --json` shows them: (id, consistent_at).
fn listed(repo: &str, flags: &[String], job: &str) -> Vec<(String, chrono::DateTime<Utc>)> {
    let mut args = vec!["list", "--repo", repo, "--job", job, "--json"];
    args.extend(flags.iter().map(String::as_str));
    let r = run("lifeboat-restore", &args);
    r.assert_code(0);
    r.json()["jobs"][0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["consistent_at"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// Trust III, 1: with the host clock 8 or 30 days ahead and `keep-7-days`, the backup dated its
/// snapshot in the future, then forgot every real snapshot. Now, on S3 (whose clock is
/// measured), the snapshot is dated by the store's clock and nothing is pruned (exit 1); on a
/// directory (whose clock is the host's), a snapshot dated further past the previous newest
/// than the job's runs are apart prunes nothing. The clock behind, and prune run alone under
/// a skewed clock, forget nothing either.
#[test]
fn a_clock_days_ahead_prunes_the_real_history_away() {
    let dir = TempDir::new("trust3-clock");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"the data").unwrap();
    let keep = ["--retention", "keep-7-days", "--json"];
    for (repo, flags) in lock_repos("trust3-clock", &dir) {
        let job = "skewed";
        for _ in 0..2 {
            files_backup(&repo, &flags, &src, job, &keep, None).assert_code(0);
        }
        for (offset, why) in [
            ("+30d", "nothing was pruned"),
            ("+8d", "nothing was pruned"),
            ("-30d", "nothing was pruned"),
        ] {
            let before = listed(&repo, &flags, job);
            let r = files_backup(&repo, &flags, &src, job, &keep, Some(offset));
            let after = listed(&repo, &flags, job);
            assert_eq!(
                after.len(),
                before.len() + 1,
                "{repo} {offset}: snapshots were forgotten\n{}",
                r.output()
            );
            r.assert_code(1).assert_contains(why);
            // The report says it too.
            assert_eq!(
                r.json()["jobs"][0]["prune_error"]["kind"],
                "clock",
                "{}",
                r.output()
            );
            // The store's clock dated it (a directory's clock is the kernel's file times,
            // which libfaketime does not move): the newest, and not in the future.
            let (_, newest_at) = after
                .iter()
                .find(|(id, _)| !before.iter().any(|(old, _)| old == id))
                .unwrap();
            assert!(
                (*newest_at - Utc::now()).num_minutes().abs() < 10,
                "{repo} {offset}: dated {newest_at}\n{}",
                r.output()
            );
        }
        // Back at the right time, the latest is restorable and verify finds it.
        let mut verify = vec!["--repo", repo.as_str(), "--job", job, "--latest"];
        verify.extend(flags.iter().map(String::as_str));
        run("lifeboat-verify", &verify).assert_code(0);
        // prune alone under a clock 30 days ahead forgets nothing that keep-7-days keeps.
        let before = listed(&repo, &flags, job);
        let mut prune = command("lifeboat-backup");
        prune
            .args(["--repo", &repo])
            .args(&flags)
            .args(["prune", job, "--retention", "keep-7-days"])
            .env("LD_PRELOAD", libfaketime())
            .env("FAKETIME", "+30d")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        let r = finish(prune.output().unwrap());
        let after = listed(&repo, &flags, job);
        let future: Vec<_> = before
            .iter()
            .filter(|(_, at)| *at > Utc::now() + ChronoDuration::minutes(5))
            .collect();
        assert!(
            after.len() + future.len() >= before.len() && after.len() >= 3,
            "{repo}: prune under a skewed clock forgot {} of {}\n{}",
            before.len() - after.len(),
            before.len(),
            r.output()
        );
    }
}

/// Trust III, 1, the guard that needs no store clock: a snapshot dated further past the
/// previous newest than the job's runs are apart (a day without a schedule) may come from a
/// clock that jumped ahead: retention is judged as of the previous newest, so the new snapshot
/// forgets nothing, and the run ends with exit 1 so the clock is looked at. Here the previous
/// newest is 30 days old, as after a host clock jumped a month ahead; the one 40 days old is
/// still forgotten, as keep-7-days says as of the previous newest.
#[test]
fn a_snapshot_dated_far_past_the_previous_newest_prunes_the_history() {
    let dir = TempDir::new("trust3-jump");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"the data").unwrap();
    let repo = TempDir::new("trust3-jump-repo");
    files_backup(repo.as_str(), &[], &src, "jumpy", &[], None).assert_code(0);
    let first = ids(&repo, "jumpy").remove(0);
    let folder = repo.join(&format!("jobs/jumpy/snapshots/{first}"));
    let mut kept = Vec::new();
    for days in [40, 31, 30] {
        kept.push(clone_snapshot(
            &repo,
            &folder,
            "jumpy",
            Utc::now() - ChronoDuration::days(days),
        ));
    }
    std::fs::remove_dir_all(&folder).unwrap();
    let forgotten = kept.remove(0);
    let r = files_backup(
        repo.as_str(),
        &[],
        &src,
        "jumpy",
        &["--retention", "keep-7-days"],
        None,
    );
    r.assert_code(1)
        .assert_contains("in case this host's clock jumped ahead");
    let left = ids(&repo, "jumpy");
    assert_eq!(left.len(), 3, "{left:?}\n{}", r.output());
    assert!(!left.contains(&forgotten) && kept.iter().all(|k| left.contains(k)));
}

/// Trust III, 3: a tree holding an absolute symlink, or one pointing above the tree, backed up
/// with exit 0; the restore refused it ("a symlink that points outside the target"), and so did
/// content verify and the drill. Symlinks are data: they come back as they were.
#[test]
fn a_files_snapshot_with_absolute_symlinks_is_committed_but_cannot_be_restored() {
    let dir = TempDir::new("trust3-symlinks");
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("releases/1")).unwrap();
    std::fs::write(src.join("releases/1/app.txt"), b"release one").unwrap();
    let links = [
        ("current", "/srv/app/releases/1"),
        ("hostname", "/etc/hostname"),
        ("releases/up", "../../x"),
        ("releases/latest", "1"),
    ];
    for (link, target) in links {
        std::os::unix::fs::symlink(target, src.join(link)).unwrap();
    }
    let repo = TempDir::new("trust3-symlinks-repo");
    files_backup(repo.as_str(), &[], &src, "uploads", &[], None).assert_code(0);
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    for level in ["content", "drill"] {
        run(
            "lifeboat-verify",
            &[
                "--repo",
                repo.as_str(),
                "--level",
                level,
                "--scratch-dir",
                scratch.to_str().unwrap(),
            ],
        )
        .assert_code(0);
    }
    let out = dir.join("restored");
    restore_latest(&repo, "uploads", out.to_str().unwrap(), &["--dry-run"]).assert_code(0);
    restore_latest(&repo, "uploads", out.to_str().unwrap(), &[]).assert_code(0);
    for (link, target) in links {
        assert_eq!(
            std::fs::read_link(out.join(link)).unwrap(),
            std::path::PathBuf::from(target),
            "{link}"
        );
    }
    assert_eq!(
        std::fs::read(out.join("releases/latest/app.txt")).unwrap(),
        b"release one"
    );
}

/// Trust III, 4: with the newest manifest unreadable, `restore --latest` restored the snapshot
/// before it with exit 0 and no word. Off a terminal it now refuses without --yes, naming the
/// damaged snapshot; the dry run and the plan say it; with --yes the report carries it.
#[test]
fn the_newest_snapshot_damaged_and_restore_latest_silently_restores_an_older_one() {
    let dir = TempDir::new("trust3-damaged-newest");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"older").unwrap();
    let repo = TempDir::new("trust3-damaged-newest-repo");
    files_backup(repo.as_str(), &[], &src, "uploads", &[], None).assert_code(0);
    // Ids sort by their start second: the second snapshot starts in a later one.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(src.join("a.txt"), b"newer").unwrap();
    files_backup(repo.as_str(), &[], &src, "uploads", &[], None).assert_code(0);
    let ids = ids(&repo, "uploads");
    let (older, newest) = (&ids[0], &ids[1]);
    std::fs::write(
        repo.join(&format!("jobs/uploads/snapshots/{newest}/manifest.json")),
        b"{ not json",
    )
    .unwrap();
    let out = dir.join("restored");
    let target = out.to_str().unwrap();
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "--repo",
            repo.as_str(),
            "--job",
            "uploads",
            "--latest",
            "--to",
            target,
        ];
        args.extend_from_slice(extra);
        run("lifeboat-restore", &args)
    };
    restore(&["--dry-run"])
        .assert_code(0)
        .assert_contains(&format!(
            "the newest snapshot {newest} of job \"uploads\" is damaged"
        ))
        .assert_contains(&format!("the newest good one is {older}"));
    restore(&[])
        .assert_code(2)
        .assert_contains(newest)
        .assert_contains("--yes");
    assert!(!out.exists(), "restored without consent");
    let r = restore(&["--yes", "--json"]);
    r.assert_code(0);
    let notes = r.json()["report"]["notes"].to_string();
    assert!(
        notes.contains(newest) && notes.contains("damaged"),
        "{notes}"
    );
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"older");
    // The same for a whole-system restore.
    let all = dir.join("all-jobs");
    let to = format!("uploads={}", all.display());
    let system = |extra: &[&str]| {
        let mut args = vec![
            "--repo",
            repo.as_str(),
            "--all-jobs",
            "--latest",
            "--to",
            &to,
        ];
        args.extend_from_slice(extra);
        run("lifeboat-restore", &args)
    };
    system(&[]).assert_code(2).assert_contains(newest);
    assert!(!all.exists(), "restored without consent");
    system(&["--yes"]).assert_code(0);
    assert_eq!(std::fs::read(all.join("a.txt")).unwrap(), b"older");
}

/// Trust III, 17: `--log-format json` error lines carried `"causes":"[]"` and
/// `"context":"[(\"job\", ...)]"`, Rust debug strings inside JSON; `--json`'s per-job errors
/// lacked `exit_code`, `causes` and `context`.
#[test]
fn json_error_lines_carry_rust_debug_strings() {
    let repo = TempDir::new("trust3-json-errors");
    let r = run(
        "lifeboat-backup",
        &[
            "--engine",
            "postgres",
            "--url",
            "postgres://u:pw@127.0.0.1:1/app",
            "--repo",
            repo.as_str(),
            "--job",
            "nc_shop",
            "--log-format",
            "json",
            "--json",
        ],
    );
    r.assert_code(1);
    let error_line = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line:\n{}", r.stderr));
    let fields = &error_line["fields"];
    assert!(fields["causes"].is_array(), "{error_line}");
    assert_eq!(fields["context"]["job"], "nc_shop", "{error_line}");
    assert_eq!(fields["exit_code"], 1, "{error_line}");
    let out = r.json();
    let error = &out["jobs"][0]["error"];
    let error = if error.is_null() {
        &out["error"]
    } else {
        error
    };
    assert_eq!(error["exit_code"], 1, "{out}");
    assert!(error["causes"].is_array(), "{out}");
    assert_eq!(error["context"]["job"], "nc_shop", "{out}");
}

/// Trust III, 18: `--print-config | head` and `--print-man-page | head` panicked (exit 101) or
/// failed with "Broken pipe" when the reader went away.
#[test]
fn a_closed_pipe_makes_print_config_panic() {
    for args in [
        vec!["--engine", "files", "--path", "/tmp", "--print-config"],
        vec!["--print-man-page"],
        vec!["completions", "bash"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // the reader is gone before the first byte is written
        let out = command("lifeboat-backup")
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.trim().is_empty(), "{args:?}: {stderr}");
    }
}

/// Trust III, 19 and 23: a duration too long for dates wrapped to a negative one; a --repo that
/// names a file, a malformed --s3-endpoint and a --pg-bin-dir that does not exist were exit 1
/// (a failure of the work) instead of 2 (a configuration error).
#[test]
fn configuration_mistakes_exit_1_instead_of_2() {
    let dir = TempDir::new("trust3-config");
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let src = src.to_str().unwrap();
    let empty_repo = dir.join("repo-for-verify");
    files_backup(
        empty_repo.to_str().unwrap(),
        &[],
        std::path::Path::new(src),
        "j",
        &[],
        None,
    )
    .assert_code(0);
    run(
        "lifeboat-verify",
        &[
            "--repo",
            empty_repo.to_str().unwrap(),
            "--max-age",
            "9223372036854775808s",
        ],
    )
    .assert_code(2)
    .assert_contains("longer than Lifeboat takes");
    let backup = |extra: &[&str]| {
        let mut args = vec!["--engine", "files", "--path", src, "--job", "j"];
        args.extend_from_slice(extra);
        run("lifeboat-backup", &args)
    };
    backup(&["--repo", file.to_str().unwrap()])
        .assert_code(2)
        .assert_contains("a file of that name exists");
    backup(&["--repo", &format!("{}/below", file.display())]).assert_code(2);
    for endpoint in ["not a url", "ftp://127.0.0.1:9000", "http://"] {
        backup(&["--repo", "s3://bucket/p", "--s3-endpoint", endpoint])
            .assert_code(2)
            .assert_contains("the S3 endpoint");
    }
    let db = TestDb::create("trust3_bindir");
    let repo = dir.join("repo");
    backup_pg(
        &db.url(),
        repo.to_str().unwrap(),
        "app",
        &["--pg-bin-dir", "/no/such/postgresql/bin"],
    )
    .assert_code(2)
    .assert_contains("/no/such/postgresql/bin");
}

/// Trust III, 5: a store that went away mid-read (a reset, then refused connections) made an
/// intact snapshot read as DAMAGED (exit 3): the failed resume of a ranged GET was taken for
/// the end of the data. A transport failure is exit 1 with the store's error. An object
/// deleted while it is read (404 on the resume) is "forgotten while it was read", exit 1,
/// and no verification record is written for it.
#[test]
fn a_store_that_goes_away_mid_read_is_reported_as_damage() {
    let dir = TempDir::new("trust3-outage");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big.bin"), incompressible(6 << 20, 7)).unwrap();
    let bucket = s3_bucket("trust3-outage");
    let repo = format!("s3://{bucket}/outage-{}", std::process::id());
    files_backup(&repo, &s3_flags(), &src, "uploads", &[], None).assert_code(0);
    let upstream = s3_endpoint().trim_start_matches("http://").to_string();
    let through = |proxy: &proxy::FaultProxy, command: &str, args: &[&str]| {
        let mut all = vec![
            "--repo",
            repo.as_str(),
            "--s3-endpoint",
            proxy.endpoint.as_str(),
            "--s3-path-style",
            "--job",
            "uploads",
            "--latest",
        ];
        all.extend_from_slice(args);
        run(command, &all)
    };
    let cut = |proxy: &proxy::FaultProxy| {
        proxy
            .faults
            .cut_first_long
            .store(2 << 20, std::sync::atomic::Ordering::SeqCst);
    };
    let records = || {
        s3_keys(
            &bucket,
            &format!("outage-{}/jobs/uploads/verifications/", std::process::id()),
        )
        .len()
    };
    // The store goes away mid-read: verify content and restore say so, exit 1.
    for command in ["lifeboat-verify", "lifeboat-restore"] {
        let proxy = proxy::FaultProxy::start(&upstream);
        proxy
            .faults
            .refuse_after_cut
            .store(true, std::sync::atomic::Ordering::SeqCst);
        cut(&proxy);
        let target = dir.join(&format!("restored-{command}"));
        let r = if command == "lifeboat-verify" {
            through(&proxy, command, &["--level", "content"])
        } else {
            through(
                &proxy,
                command,
                &["--to", target.to_str().unwrap(), "--yes"],
            )
        };
        r.assert_code(1);
        assert!(
            !r.output().contains("DAMAGED") && !r.output().contains("does not match"),
            "{command}: an outage reported as damage:\n{}",
            r.output()
        );
        assert!(!target.exists(), "{command}: the target was written");
    }
    // The object is deleted while it is read.
    let before = records();
    let proxy = proxy::FaultProxy::start(&upstream);
    proxy
        .faults
        .not_found_after_cut
        .store(true, std::sync::atomic::Ordering::SeqCst);
    cut(&proxy);
    through(&proxy, "lifeboat-verify", &["--level", "content"])
        .assert_code(1)
        .assert_contains("forgotten");
    assert_eq!(
        records(),
        before,
        "a verification record for a forgotten snapshot"
    );
    // And the snapshot is intact.
    run(
        "lifeboat-verify",
        &[
            "--repo",
            &repo,
            "--s3-endpoint",
            &s3_endpoint(),
            "--s3-path-style",
            "--level",
            "content",
        ],
    )
    .assert_code(0);
}

/// Trust III, 22: a Redis server that accepts a connection and never answers held a run for
/// the whole idle timeout (10 min by default), while PostgreSQL's handshake failed after the
/// 30 s connect timeout. The Redis handshake counts as connecting now.
#[test]
fn a_silent_redis_holds_a_run_for_the_whole_idle_timeout() {
    let (_listener, port) = silent_server();
    let repo = TempDir::new("trust3-silent-redis");
    let started = std::time::Instant::now();
    run(
        "lifeboat-backup",
        &[
            "--engine",
            "redis",
            "--url",
            &format!("redis://:secret@127.0.0.1:{port}"),
            "--repo",
            repo.as_str(),
            "--job",
            "silent",
            "--idle-timeout",
            "10m",
        ],
    )
    .assert_code(1)
    .assert_contains("no answer to the handshake");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(120),
        "took {took:?}: the handshake waited for the idle timeout"
    );
    no_lock_left(&repo, "silent");
}

/// Trust III, 11: a copy stopped at the first damaged snapshot, so newer good snapshots were
/// never copied. Every snapshot it can copy is copied, each damaged one is named, exit 3.
#[test]
fn a_copy_stops_at_the_first_damaged_snapshot() {
    let dir = TempDir::new("trust3-copy");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let repo = TempDir::new("trust3-copy-repo");
    for i in 0..3 {
        std::fs::write(src.join("a.txt"), format!("version {i}")).unwrap();
        files_backup(repo.as_str(), &[], &src, "uploads", &[], None).assert_code(0);
    }
    let all = ids(&repo, "uploads");
    // The oldest snapshot's data object is damaged.
    let oldest = data_objects(repo.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&all[0]))
        .unwrap();
    let mut bytes = std::fs::read(&oldest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&oldest, bytes).unwrap();
    let offsite = TempDir::new("trust3-copy-offsite");
    run(
        "lifeboat-backup",
        &[
            "--repo",
            repo.as_str(),
            "copy",
            "--to-repo",
            offsite.as_str(),
        ],
    )
    .assert_code(3)
    .assert_contains(&all[0])
    .assert_contains("Copied 2 snapshots");
    assert_eq!(ids(&offsite, "uploads"), all[1..].to_vec());
}

/// Trust III, 7: with a data object replaced by another job's and the manifest's digests edited
/// to match, `verify --level content` said ok (only the drill noticed). The dump's table of
/// contents is compared with the tables the fingerprint recorded.
#[test]
fn content_verify_does_not_check_the_dump_against_the_manifest() {
    let shop = TestDb::create("trust3_shop");
    sql(
        &shop.url(),
        "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)",
    );
    let blog = TestDb::create("trust3_blog");
    sql(
        &blog.url(),
        "CREATE TABLE posts (id int); INSERT INTO posts VALUES (1), (2)",
    );
    let repo = TempDir::new("trust3-mixup");
    backup_pg(&shop.url(), repo.as_str(), "shop", &[]).assert_code(0);
    backup_pg(&blog.url(), repo.as_str(), "blog", &[]).assert_code(0);
    let verify = || {
        run(
            "lifeboat-verify",
            &[
                "--repo",
                repo.as_str(),
                "--job",
                "shop",
                "--level",
                "content",
            ],
        )
    };
    verify().assert_code(0);
    let blog_manifest = manifests(repo.path(), "blog").remove(0);
    let shop_manifest = manifests(repo.path(), "shop").remove(0);
    let object = |m: &serde_json::Value| repo.join(m["object"]["key"].as_str().unwrap());
    std::fs::copy(object(&blog_manifest), object(&shop_manifest)).unwrap();
    edit_manifest(repo.path(), "shop", |m| {
        for field in [
            "stored_sha256",
            "stored_size",
            "raw_size",
            "raw_blake3",
            "raw_sha256",
        ] {
            if let Some(v) = blog_manifest["object"].get(field) {
                m["object"][field] = v.clone();
            }
        }
    });
    verify()
        .assert_code(3)
        .assert_contains("public.orders")
        .assert_contains("posts");
}

/// Trust III, 20: an RDB holding a quicklist whose nodes are all empty failed the restore
/// ("RESTORE ... Bad data format") although redis-server loads the file, skipping the key; and
/// a key already expired in the snapshot was counted as loaded. The fixture (quicklists 1 and
/// 2 of empty nodes, empty ziplist and listpack hashes and sorted sets; empty sets and intsets
/// are in `an_rdb_file_with_empty_collections_fails_with_bad_data_format`) is loaded by
/// redis-server itself first, to prove what it keeps. (An empty stream is legal and kept by
/// both; the reader never counts a stream as empty.)
#[test]
fn an_rdb_with_all_empty_quicklist_nodes_fails_the_restore() {
    // RDB version 10, which the Debian redis-server (7.0) loads.
    let mut rdb = b"REDIS0010".to_vec();
    rdb.extend([0xfe, 0x00]); // SELECTDB 0
                              // Quicklist (1): two nodes, each an empty ziplist (zlbytes 11, tail 10, count 0, end).
    let empty_ziplist = [11u8, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0xff];
    rdb.extend([14, 3]);
    rdb.extend(b"ql1");
    rdb.push(2);
    for _ in 0..2 {
        rdb.push(empty_ziplist.len() as u8);
        rdb.extend(empty_ziplist);
    }
    // Quicklist 2: one packed node holding an empty listpack (bytes 7, count 0, end).
    let empty_listpack = [7u8, 0, 0, 0, 0, 0, 0xff];
    rdb.extend([18, 3]);
    rdb.extend(b"ql2");
    rdb.extend([1, 2, empty_listpack.len() as u8]);
    rdb.extend(empty_listpack);
    // Empty ziplist and listpack encodings of sorted sets and hashes.
    for (type_byte, name, blob) in [
        (12u8, &b"zz"[..], &empty_ziplist[..]),
        (13, b"hz", &empty_ziplist[..]),
        (16, b"hl", &empty_listpack[..]),
        (17, b"zl", &empty_listpack[..]),
    ] {
        rdb.extend([type_byte, name.len() as u8]);
        rdb.extend(name);
        rdb.push(blob.len() as u8);
        rdb.extend(blob);
    }
    // A key that expired long ago (EXPIRETIME_MS 1000), and one kept.
    rdb.push(0xfc);
    rdb.extend(1000u64.to_le_bytes());
    rdb.extend([0, 4]);
    rdb.extend(b"gone");
    rdb.extend([1, b'x']);
    rdb.extend([0, 4]);
    rdb.extend(b"kept");
    rdb.extend([5]);
    rdb.extend(b"value");
    rdb.push(0xff);
    let crc = lifeboat_rdb::crc64(&rdb);
    rdb.extend(crc.to_le_bytes());

    // What redis-server makes of the file: one key.
    let loaded = OwnRedis::start_loading("trust3-quicklist-server", Some(&rdb));
    assert_eq!(loaded.client().cmd(&[b"DBSIZE"]).text(), "1");
    assert_eq!(loaded.client().cmd(&[b"GET", b"kept"]).text(), "value");

    let dir = TempDir::new("trust3-quicklist");
    let file = dir.join("dump.rdb");
    std::fs::write(&file, &rdb).unwrap();
    let target = OwnRedis::start("trust3-quicklist-target");
    let r = run(
        "lifeboat-restore",
        &[
            "--from-file",
            file.to_str().unwrap(),
            "--to",
            &target.url,
            "--yes",
        ],
    );
    r.assert_code(0).assert_contains("Loaded 1 key from");
    let mut client = target.client();
    assert_eq!(client.cmd(&[b"DBSIZE"]).text(), "1");
    assert_eq!(client.cmd(&[b"GET", b"kept"]).text(), "value");
}

/// Trust III, 8: a live Redis restore into a target whose `maxmemory` was too small failed
/// half-way (OOM) and left the keys it had written, while the exit-code table said nothing
/// changed. The plan (and the dry run) now refuses a target that cannot take the snapshot: a
/// read-only replica, too little memory, or a policy that would evict keys silently.
#[test]
fn a_live_redis_restore_that_fails_half_way_says_rolled_back() {
    let source = OwnRedis::start("trust3-oom-source");
    fill_incompressible(&source); // 256 values of 8 KiB: about 2 MiB
    let repo = TempDir::new("trust3-oom-repo");
    run(
        "lifeboat-backup",
        &[
            "--engine",
            "redis",
            "--url",
            &source.url,
            "--repo",
            repo.as_str(),
            "--job",
            "cache",
        ],
    )
    .assert_code(0);
    let manifest = manifests(repo.path(), "cache").remove(0);
    assert!(
        manifest["fingerprint"]["used_memory_dataset"]
            .as_u64()
            .unwrap()
            > 1 << 20,
        "{manifest}"
    );
    let target = OwnRedis::start("trust3-oom-target");
    let mut client = target.client();
    let restore = |dry: bool| {
        let mut args = vec![
            "--repo",
            repo.as_str(),
            "--job",
            "cache",
            "--latest",
            "--to",
            &target.url,
            "--yes",
        ];
        if dry {
            args.push("--dry-run");
        }
        run("lifeboat-restore", &args)
    };
    client.cmd(&[b"CONFIG", b"SET", b"maxmemory-policy", b"noeviction"]);
    client.cmd(&[b"CONFIG", b"SET", b"maxmemory", b"1500000"]);
    for dry in [true, false] {
        restore(dry).assert_code(2).assert_contains("needs about");
    }
    assert_eq!(client.cmd(&[b"DBSIZE"]).text(), "0", "keys were written");
    client.cmd(&[b"CONFIG", b"SET", b"maxmemory", b"100000000"]);
    client.cmd(&[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru"]);
    restore(true).assert_code(2).assert_contains("evict");
    client.cmd(&[b"CONFIG", b"SET", b"maxmemory-policy", b"noeviction"]);
    restore(true)
        .assert_code(0)
        .assert_contains("a failure part-way leaves the keys written so far");
    // A read-only replica (of the source) refuses every write.
    let port = source.url.rsplit(':').next().unwrap().to_string();
    client.cmd(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]);
    restore(true)
        .assert_code(2)
        .assert_contains("read-only replica");
    // A target with room takes it whole.
    let roomy = OwnRedis::start("trust3-oom-roomy");
    run(
        "lifeboat-restore",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "cache",
            "--latest",
            "--to",
            &roomy.url,
            "--yes",
        ],
    )
    .assert_code(0);
    assert_eq!(roomy.client().cmd(&[b"DBSIZE"]).text(), "256");
}

/// Trust III, 13 (and 10, the probes): after a `kill -9`, the next run said "Taking over the
/// lock ... that process has ended" and then "Left the unfinished upload ... may belong to a run
/// in progress". Once the lock shows its owner is gone, its unfinished uploads (and the lock
/// probe it left) are the new run's to remove.
#[test]
fn a_run_after_kill_9_leaves_the_dead_runs_upload_as_possibly_live() {
    let dir = TempDir::new("trust3-kill9");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"data").unwrap();
    let repo = TempDir::new("trust3-kill9-repo");
    files_backup(repo.as_str(), &[], &src, "app", &[], None).assert_code(0);
    // What a run killed with -9 leaves: its lock (naming a process on this machine that has
    // ended), its unfinished upload and a lock probe.
    let mut ended = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = ended.id();
    ended.wait().unwrap();
    let here = lifeboat_core::lock::ProcessStamp::of_this_process().unwrap();
    let now = Utc::now();
    let lock = serde_json::json!({
        "owner": "lifeboat-backup",
        "host": "this-host",
        "pid": dead_pid,
        "token": "0123456789abcdef01234567",
        "started_at": now - ChronoDuration::minutes(1),
        "expires_at": now + ChronoDuration::minutes(9),
        "process": {"scope": here.scope, "started": 1},
    });
    plant_lock(repo.as_str(), &[], &lock.to_string());
    let folder = repo.join("jobs/app/snapshots/20261207T000000Z-abcdef");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(".lifeboat-tmp-0011aabb-data.tar.zst"), b"half").unwrap();
    let probe = repo.join("jobs/app/lock-probe-00112233445566778899aabb");
    std::fs::write(&probe, b"probe").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    std::fs::File::options()
        .write(true)
        .open(&probe)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let r = files_backup(repo.as_str(), &[], &src, "app", &[], None);
    r.assert_code(0).assert_contains("that process has ended");
    assert!(
        !r.output().contains("may belong to a run in progress"),
        "{}",
        r.output()
    );
    assert!(
        !folder.exists(),
        "the dead run's upload (and its folder) is still there"
    );
    assert!(!probe.exists(), "the dead run's lock probe is still there");
}

/// What a clean repository holds: `lifeboat.json`, and per snapshot folder a manifest with its
/// objects (and a pin); verification records and DR reports. Anything else (a temporary
/// object, a lock or a lock probe, data without a manifest, an empty folder) is a leftover.
fn leftovers(repo: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(repo).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(repo)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_dir() {
            if std::fs::read_dir(entry.path()).unwrap().next().is_none() {
                found.push(format!("{rel}/ (empty folder)"));
            }
            continue;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        let clean = match parts.as_slice() {
            ["lifeboat.json"] => true,
            // The local store's compare-and-swap lock file, beside the job's lock.
            ["jobs", _, ".lock.cas"] => true,
            ["jobs", _, "snapshots", _, file] => {
                !file.starts_with('.')
                    && entry.path().with_file_name("manifest.json").exists()
                    && (*file == "manifest.json"
                        || *file == "pin.json"
                        || file.starts_with("data."))
            }
            ["jobs", _, "verifications", ..] | ["reports", ..] => !name.starts_with('.'),
            _ => false,
        };
        if !clean {
            found.push(rel);
        }
    }
    found
}

/// Trust III, 10: a killed run left objects no later run removed (lock probes, empty snapshot
/// folders, a copy's temporary object in its destination). Backup, prune, copy, forget and pin
/// are each killed (SIGKILL) at several instants; the second run after leaves the repository
/// and the copy's destination exactly as clean ones. (Not tested here: a run killed within the
/// milliseconds of its lock probe leaves the probe for `PROBE_GRACE`, two minutes, since a
/// probe names no owner and may be a concurrent run's; the instants below fall after it.)
#[test]
fn leftovers_of_killed_runs_are_never_removed() {
    let dir = TempDir::new("trust3-killed");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Large enough that a run is still writing when it is killed (a backup of it takes over
    // half a second here).
    std::fs::write(src.join("big.bin"), incompressible(160 << 20, 3)).unwrap();
    let repo = TempDir::new("trust3-killed-repo");
    let offsite = TempDir::new("trust3-killed-offsite");
    let policy = dir.join("keep-two.toml");
    std::fs::write(&policy, "keep-last = 2\n").unwrap();
    let backup = |extra: &[&str]| {
        let mut cmd = command("lifeboat-backup");
        cmd.args([
            "--engine",
            "files",
            "--path",
            src.to_str().unwrap(),
            "--job",
            "app",
        ])
        .args(["--repo", repo.as_str()])
        .args(extra);
        cmd
    };
    let plain = |args: &[&str]| {
        let mut cmd = command("lifeboat-backup");
        cmd.args(["--repo", repo.as_str()]).args(args);
        cmd
    };
    for _ in 0..3 {
        assert_eq!(finish(backup(&[]).output().unwrap()).code, 0);
    }
    let copy_args = ["copy", "--to-repo", offsite.as_str()];
    assert_eq!(finish(plain(&copy_args).output().unwrap()).code, 0);
    let mut kills_that_left_something = 0;
    for delay_ms in [150u64, 400, 900] {
        let oldest = ids(&repo, "app").remove(0);
        let commands: Vec<(&str, std::process::Command)> = vec![
            ("backup", backup(&[])),
            (
                "prune",
                plain(&["prune", "app", "--retention", policy.to_str().unwrap()]),
            ),
            ("copy", plain(&copy_args)),
            ("forget", plain(&["forget", "app", &oldest])),
            (
                "pin",
                plain(&["pin", "app", &oldest, "--note", "before the migration"]),
            ),
        ];
        for (what, mut cmd) in commands {
            let mut child = cmd
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let _ = child.kill();
            let _ = child.wait();
            if !leftovers(repo.path()).is_empty() || !leftovers(offsite.path()).is_empty() {
                kills_that_left_something += 1;
            }
            let _ = what;
        }
        // The second run after: everything a killed run left is gone.
        for _ in 0..2 {
            let r = finish(
                backup(&["--retention", policy.to_str().unwrap()])
                    .output()
                    .unwrap(),
            );
            assert_eq!(r.code, 0, "{}", r.output());
            let r = finish(plain(&copy_args).output().unwrap());
            assert_eq!(r.code, 0, "{}", r.output());
        }
        for (label, root) in [("repository", repo.path()), ("copy", offsite.path())] {
            let left = leftovers(root);
            assert!(
                left.is_empty(),
                "after kills {delay_ms} ms in, the {label} holds {left:?}"
            );
        }
    }
    // The kills landed in the middle of the work at least once (else this tested nothing).
    assert!(kills_that_left_something > 0);
}
