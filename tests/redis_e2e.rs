//! The Redis engine end to end through the binaries: backup, verify, restore (live, swap,
//! file, from a file), failures that must commit nothing, and authentication.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use lifeboat_tests::redis::*;
use lifeboat_tests::resp::{redis_urls, Redis, Reply};

#[test]
fn redis_backup_verify_and_restore_through_the_binaries() {
    use lifeboat_tests::{data_objects, manifests, run, TempDir};
    let Servers {
        _guard,
        source_url,
        target_url,
        mut source,
        mut target,
    } = servers();
    let mut expected = BTreeMap::new();
    expected.insert("0".to_string(), fill(&mut source, 0, true));
    expected.insert("5".to_string(), fill(&mut source, 5, false));
    // A function library (Redis 7): carried in the RDB and loaded on restore.
    source.ok("FUNCTION FLUSH");
    let library = b"#!lua name=lifeboat_test_lib\nredis.register_function('lifeboat_ping', function(keys, args) return 'pong' end)";
    let loaded = source.cmd(&[b"FUNCTION", b"LOAD", library]);
    assert_eq!(loaded, Reply::Bulk(Some(b"lifeboat_test_lib".to_vec())));
    let source_digest = source.ok("DEBUG DIGEST").text();
    let repo = TempDir::new("redis");
    let repo_s = repo.as_str();

    let b = run(
        "lifeboat-backup",
        &[
            "--engine",
            "redis",
            "--url",
            &source_url,
            "--repo",
            repo_s,
            "--json",
        ],
    );
    b.assert_code(0);
    let report = &b.json()["jobs"][0]["report"];
    let total: u64 = expected.values().flat_map(|t| t.values()).sum();
    assert_eq!(report["keys"].as_u64(), Some(total), "{report}");
    let manifest = &manifests(repo.path(), "redis")[0];
    assert_eq!(manifest["engine"], "redis");
    assert_eq!(manifest["dump_format"], "redis_rdb");
    assert_eq!(
        serde_json::to_value(&expected).unwrap(),
        manifest["fingerprint"]["keys"],
        "{manifest}"
    );
    assert_eq!(manifest["fingerprint"]["point_in_time"], true);

    run(
        "lifeboat-verify",
        &["--repo", repo_s, "--job", "redis", "--level", "content"],
    )
    .assert_code(0);
    let wipe = |r: &mut Redis| {
        r.ok("FLUSHALL");
        r.ok("FUNCTION FLUSH");
    };
    // A drill loads into the (empty) target server, counts, and empties it again; a scratch
    // server holding keys is refused.
    wipe(&mut target);
    let drill = || {
        run(
            "lifeboat-verify",
            &[
                "--repo",
                repo_s,
                "--job",
                "redis",
                "--level",
                "drill",
                "--scratch-url",
                &target_url,
            ],
        )
    };
    drill().assert_code(0).assert_contains("level drill");
    assert_eq!(
        target.ok("DEBUG DIGEST").text(),
        "0".repeat(40),
        "the drill cleaned up"
    );
    target.ok("SELECT 5");
    target.ok("SET someone-elses 1");
    drill().assert_code(1).assert_contains("holds 1 keys");
    assert_eq!(dbsize(&mut target, 5), 1);

    let restore = |extra: &[&str]| {
        let mut args = vec![
            "--repo",
            repo_s,
            "--job",
            "redis",
            "--latest",
            "--to",
            &target_url,
            "--yes",
        ];
        args.extend_from_slice(extra);
        run("lifeboat-restore", &args)
    };
    wipe(&mut target);
    restore(&[])
        .assert_code(0)
        .assert_contains("both digests verified");
    assert_eq!(target.ok("DEBUG DIGEST").text(), source_digest);
    assert_eq!(target.ok("FCALL lifeboat_ping 0").text(), "pong");

    // A target that holds keys is refused unless --replace or --clean says what to do.
    restore(&[]).assert_code(2).assert_contains("already holds");
    target.ok("SELECT 5");
    target.ok("SET extra 1");
    restore(&["--replace"]).assert_code(0);
    assert_ne!(
        target.ok("DEBUG DIGEST").text(),
        source_digest,
        "--replace keeps other keys"
    );
    restore(&["--clean"]).assert_code(0);
    assert_eq!(
        target.ok("DEBUG DIGEST").text(),
        source_digest,
        "--clean empties first"
    );

    // --mode swap: a target full of other data is replaced database by database, in one step
    // each; the spare databases are empty again afterwards.
    target.ok("FLUSHALL");
    target.ok("SELECT 0");
    target.ok("SET old-data 1");
    target.ok("SELECT 5");
    target.ok("SET old-data 2");
    // Onto a non-empty target it is refused like the other modes, in a dry run too, until
    // --clean confirms it.
    restore(&["--mode", "swap"])
        .assert_code(2)
        .assert_contains("--mode swap replaces those databases whole");
    restore(&["--mode", "swap", "--dry-run"]).assert_code(2);
    restore(&["--mode", "swap", "--clean"])
        .assert_code(0)
        .assert_contains("SWAPDB");
    assert_eq!(target.ok("DEBUG DIGEST").text(), source_digest);

    // Databases mapped elsewhere.
    wipe(&mut target);
    restore(&["--db-map", "0:7", "--db-map", "5:8"]).assert_code(0);
    assert_eq!(dbsize(&mut target, 7), dbsize(&mut source, 0));
    assert_eq!(dbsize(&mut target, 8), dbsize(&mut source, 5));
    assert_eq!(dbsize(&mut target, 0), 0);

    // A flipped byte: verify says damaged (exit 3), restore refuses before writing a key.
    let data = data_objects(repo.path()).pop().unwrap();
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&data, bytes).unwrap();
    run(
        "lifeboat-verify",
        &["--repo", repo_s, "--job", "redis", "--level", "content"],
    )
    .assert_code(3);
    target.ok("FLUSHALL");
    restore(&[]).assert_code(3);
    assert_eq!(
        target.ok("DEBUG DIGEST").text(),
        "0".repeat(40),
        "the target was touched"
    );
    source.ok("FLUSHALL");
    source.ok("FUNCTION FLUSH");
    wipe(&mut target);
}

#[test]
fn redis_backup_failures_commit_nothing() {
    use lifeboat_tests::{manifests, run, TempDir};
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let (source_url, _) = redis_urls();
    let mut source = Redis::connect(&source_url);
    source.ok("FLUSHALL");
    source.ok("CONFIG SET repl-diskless-sync-delay 0");
    fill(&mut source, 0, true);
    let repo = TempDir::new("redis-fail");
    // The connection drops 2 MiB into the snapshot.
    let proxy = lifeboat_tests::proxy::FaultProxy::start(source_url.trim_start_matches("redis://"));
    proxy
        .faults
        .cut_after
        .store(2 * 1024 * 1024, std::sync::atomic::Ordering::SeqCst);
    let via_proxy = proxy.endpoint.replace("http://", "redis://");
    run(
        "lifeboat-backup",
        &[
            "--engine",
            "redis",
            "--url",
            &via_proxy,
            "--repo",
            repo.as_str(),
        ],
    )
    .assert_code(1)
    .assert_contains("snapshot");
    assert!(manifests(repo.path(), "redis").is_empty());
    assert!(lifeboat_tests::data_objects(repo.path()).is_empty());
    // A wrong password: exit 1, and the password is not repeated.
    let wrong = source_url.replace("redis://", "redis://:not-the-password@");
    let r = run(
        "lifeboat-backup",
        &[
            "--engine",
            "redis",
            "--url",
            &wrong,
            "--repo",
            repo.as_str(),
        ],
    );
    r.assert_code(1).assert_contains("authentication failed");
    assert!(!r.output().contains("not-the-password"), "{}", r.output());
    // Nothing listens: exit 1 naming the address.
    run(
        "lifeboat-backup",
        &[
            "--engine",
            "redis",
            "--url",
            "redis://127.0.0.1:1",
            "--repo",
            repo.as_str(),
        ],
    )
    .assert_code(1)
    .assert_contains("127.0.0.1:1");
    source.ok("FLUSHALL");
}

#[test]
fn redis_snapshot_as_a_file_loads_in_a_stopped_server_and_rdb_files_load_into_live_ones() {
    use lifeboat_tests::{run, TempDir};
    let Servers {
        _guard,
        source_url,
        target_url,
        mut source,
        mut target,
    } = servers();
    fill(&mut source, 0, true);
    fill(&mut source, 2, false);
    let source_digest = source.ok("DEBUG DIGEST").text();
    let repo = TempDir::new("redis-file");
    let repo_s = repo.as_str();
    run(
        "lifeboat-backup",
        &["--engine", "redis", "--url", &source_url, "--repo", repo_s],
    )
    .assert_code(0);

    // --mode file, then the runbook's procedure: a server started on that file.
    let dir = TempDir::new("redis-file-server");
    let file = dir.join("dump.rdb");
    let to_file = |extra: &[&str]| {
        let mut args = vec![
            "--repo",
            repo_s,
            "--job",
            "redis",
            "--latest",
            "--mode",
            "file",
            "--to",
            file.to_str().unwrap(),
            "--yes",
        ];
        args.extend_from_slice(extra);
        run("lifeboat-restore", &args)
    };
    to_file(&[]).assert_code(0);
    to_file(&[]).assert_code(2).assert_contains("exists");
    to_file(&["--clean"]).assert_code(0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--dir", dir.as_str(), "--dbfilename", "dump.rdb"])
        .args(["--enable-debug-command", "yes"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (scripts/services.sh installs it)");
    let mut loaded = None;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let mut r = Redis::connect(&format!("redis://127.0.0.1:{port}"));
            // A server still loading its file answers LOADING.
            let digest = r.cmd(&[b"DEBUG", b"DIGEST"]);
            if let Reply::Status(d) = digest {
                loaded = Some(d);
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(loaded.as_deref(), Some(source_digest.as_str()));

    // An RDB file written by the server itself (what `redis-cli --rdb` scripts kept).
    let dump_dir = match source.ok("CONFIG GET dir") {
        Reply::Array(Some(v)) => v[1].text(),
        other => panic!("{other:?}"),
    };
    source.ok("SAVE");
    let elsewhere = dir.join("from-elsewhere.rdb");
    std::fs::copy(format!("{dump_dir}/dump.rdb"), &elsewhere).unwrap();
    target.ok("FLUSHALL");
    let from_file = |path: &std::path::Path| {
        run(
            "lifeboat-restore",
            &[
                "--from-file",
                path.to_str().unwrap(),
                "--to",
                &target_url,
                "--yes",
            ],
        )
    };
    from_file(&elsewhere)
        .assert_code(0)
        .assert_contains("checksum verified");
    assert_eq!(target.ok("DEBUG DIGEST").text(), source_digest);
    // A file from a newer Redis (RDB version 12) into this 7.0 target: both versions named.
    let mut newer = std::fs::read(&elsewhere).unwrap();
    newer[5..9].copy_from_slice(b"0012");
    let body = newer.len() - 8;
    let crc = lifeboat_rdb::crc64(&newer[..body]);
    newer[body..].copy_from_slice(&crc.to_le_bytes());
    let newer_path = dir.join("newer.rdb");
    std::fs::write(&newer_path, &newer).unwrap();
    target.ok("FLUSHALL");
    from_file(&newer_path)
        .assert_code(1)
        .assert_contains("RDB version 12")
        .assert_contains("runs Redis 7.0");
    // A truncated file is refused before any key is written.
    let bytes = std::fs::read(&elsewhere).unwrap();
    let cut = dir.join("cut.rdb");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    target.ok("FLUSHALL");
    from_file(&cut).assert_code(3).assert_contains("truncated");
    assert_eq!(target.ok("DEBUG DIGEST").text(), "0".repeat(40));
    source.ok("FLUSHALL");
}

#[test]
fn redis_backups_authenticate_with_a_password_or_an_acl_user() {
    use lifeboat_tests::{manifests, run, TempDir};
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let (source_url, _) = redis_urls();
    let mut source = Redis::connect(&source_url);
    source.ok("FLUSHALL");
    source.ok("CONFIG SET repl-diskless-sync-delay 0");
    source.ok("SET k v");
    let addr = source_url.trim_start_matches("redis://").to_string();
    let repo = TempDir::new("redis-auth");
    let backup = |url: &str| {
        run(
            "lifeboat-backup",
            &[
                "--engine",
                "redis",
                "--url",
                url,
                "--repo",
                repo.as_str(),
                "--job",
                "auth",
            ],
        )
    };
    // An ACL user allowed to replicate, and one that is not.
    source.ok("ACL SETUSER lifeboat-backup on >backup-secret-1 +@all ~*");
    source.ok("ACL SETUSER lifeboat-nosync on >nosync-secret-2 +@all -sync -psync ~*");
    backup(&format!("redis://lifeboat-backup:backup-secret-1@{addr}")).assert_code(0);
    // mode = "auto" (the default): SYNC is refused, SCAN takes over, and says so.
    let fallback = backup(&format!("redis://lifeboat-nosync:nosync-secret-2@{addr}"));
    fallback
        .assert_code(0)
        .assert_contains("SYNC was refused")
        .assert_contains("SCAN");
    assert!(
        !fallback.output().contains("nosync-secret-2"),
        "{}",
        fallback.output()
    );
    // requirepass for the default user: ":password@".
    source.ok("CONFIG SET requirepass default-secret-3");
    let mut authed = Redis::connect(&source_url);
    authed.ok("AUTH default-secret-3");
    let result = std::panic::catch_unwind(|| {
        backup(&format!("redis://:default-secret-3@{addr}")).assert_code(0);
        let r = backup(&source_url);
        r.assert_code(1).assert_contains("authentication");
    });
    authed.ok("CONFIG SET requirepass ");
    authed.ok("ACL DELUSER lifeboat-backup lifeboat-nosync");
    authed.ok("FLUSHALL");
    result.unwrap();
    let captures: Vec<String> = manifests(repo.path(), "auth")
        .iter()
        .map(|m| m["fingerprint"]["capture"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(captures.len(), 3);
    assert!(captures.contains(&"scan".to_string()), "{captures:?}");
}
