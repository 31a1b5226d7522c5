//! lifeboat-rdb against files written by a real redis-server: every type in its compact and
//! its large encodings, expiries, several databases, binary keys, LZF strings and a 20 MiB
//! value. Each key's DUMP payload, built from the file's bytes, is RESTOREd into a second
//! server, and the two servers' DEBUG DIGESTs must match.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use lifeboat_rdb::{Item, KeyEntry, RdbReader};
use lifeboat_tests::resp::{redis_urls, Redis, Reply};

/// Both tests use the same two servers: one at a time.
static SERVERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The two test servers, held by one test at a time: the source emptied, and set to start a
/// diskless snapshot at once.
struct Servers {
    _guard: std::sync::MutexGuard<'static, ()>,
    source_url: String,
    target_url: String,
    source: Redis,
    target: Redis,
}

fn servers() -> Servers {
    let guard = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let (source_url, target_url) = redis_urls();
    let mut source = Redis::connect(&source_url);
    let mut target = Redis::connect(&target_url);
    // A test that failed earlier may have left data or function libraries behind.
    for server in [&mut source, &mut target] {
        server.ok("FLUSHALL");
        server.ok("FUNCTION FLUSH");
    }
    source.ok("CONFIG SET repl-diskless-sync-delay 0");
    Servers {
        _guard: guard,
        source_url,
        target_url,
        source,
        target,
    }
}

fn args(words: &[&[u8]]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.to_vec()).collect()
}

/// Fills `db` with one key of each type (and a few encodings of each); returns the expected
/// key count per type.
fn fill(r: &mut Redis, db: u32, big_value: bool) -> BTreeMap<String, u64> {
    r.ok(&format!("SELECT {db}"));
    let mut cmds: Vec<Vec<Vec<u8>>> = vec![
        args(&[b"SET", b"plain", b"hello"]),
        args(&[b"SET", b"number", b"12345"]),
        args(&[b"SET", b"negative", b"-70000"]),
        args(&[b"SET", b"\x00bin\xffkey", b"\x00\x01\x02\xfe\xff"]),
        args(&[b"SET", b"compressible", "abc".repeat(3000).as_bytes()]),
        args(&[b"SET", b"expiring", b"soon", b"PX", b"86400000"]),
        args(&[b"SADD", b"intset", b"1", b"2", b"300000", b"-5"]),
        args(&[b"SADD", b"strset", b"a", b"b", b"\xffc"]),
        args(&[
            b"HSET", b"hash", b"f1", b"v1", b"f2", b"2", b"\x00f", b"\xff",
        ]),
        args(&[
            b"ZADD", b"zset", b"1.5", b"a", b"-inf", b"b", b"+inf", b"c", b"2", b"d",
        ]),
        args(&[b"XADD", b"stream", b"1-1", b"f", b"v"]),
        args(&[b"XADD", b"stream", b"2-1", b"f", b"w", b"g", b"x"]),
        args(&[b"XGROUP", b"CREATE", b"stream", b"grp", b"0"]),
        args(&[
            b"XREADGROUP",
            b"GROUP",
            b"grp",
            b"alice",
            b"COUNT",
            b"1",
            b"STREAMS",
            b"stream",
            b">",
        ]),
        args(&[b"PEXPIRE", b"hash", b"90000000"]),
    ];
    let mut list = vec![b"RPUSH".to_vec(), b"list".to_vec()];
    list.extend((0..300).map(|i| format!("item-{i}").into_bytes()));
    cmds.push(list);
    let mut bigset = vec![b"SADD".to_vec(), b"bigset".to_vec()];
    bigset.extend((0..700).map(|i| format!("m{i}").into_bytes()));
    cmds.push(bigset);
    let mut bigzset = vec![b"ZADD".to_vec(), b"bigzset".to_vec()];
    for i in 0..300 {
        bigzset.push(format!("{}.25", i).into_bytes());
        bigzset.push(format!("z{i}").into_bytes());
    }
    cmds.push(bigzset);
    for reply in r.pipeline(&cmds) {
        assert!(!matches!(reply, Reply::Error(_)), "{reply:?}");
    }
    let mut types: BTreeMap<String, u64> = BTreeMap::new();
    for (t, n) in [
        ("string", 6),
        ("set", 3),
        ("hash", 1),
        ("zset", 2),
        ("stream", 1),
        ("list", 1),
    ] {
        types.insert(t.into(), n);
    }
    if big_value {
        // 20 MiB of varied bytes.
        let value: Vec<u8> = (0..20 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let reply = r.cmd(&[b"SET", b"big", &value]);
        assert_eq!(reply, Reply::Status("OK".into()));
        *types.get_mut("string").unwrap() += 1;
    }
    types
}

fn read_file(path: &str) -> (lifeboat_rdb::Summary, Vec<KeyEntry>) {
    let bytes = std::fs::read(path).unwrap();
    let mut reader = RdbReader::new();
    let mut keys = Vec::new();
    let mut collect = |i: Item| {
        if let Item::Key(k) = i {
            keys.push(k);
        }
    };
    // Odd-sized chunks, as a network stream would deliver them.
    for chunk in bytes.chunks(65_537) {
        reader.feed(chunk, &mut collect).unwrap();
    }
    let summary = reader.finish(&mut collect).unwrap();
    (summary, keys)
}

fn restore(target: &mut Redis, keys: &[KeyEntry], rdb_version: u16) {
    target.ok("FLUSHALL");
    let mut by_db: BTreeMap<u64, Vec<&KeyEntry>> = BTreeMap::new();
    for k in keys {
        by_db.entry(k.db).or_default().push(k);
    }
    for (db, keys) in by_db {
        target.ok(&format!("SELECT {db}"));
        let cmds: Vec<Vec<Vec<u8>>> = keys
            .iter()
            .map(|k| {
                let mut c = vec![b"RESTORE".to_vec(), k.key.clone()];
                match k.expires_at_ms {
                    Some(at) => {
                        c.push(at.to_string().into_bytes());
                        c.push(k.dump_payload(rdb_version));
                        c.push(b"ABSTTL".to_vec());
                    }
                    None => {
                        c.push(b"0".to_vec());
                        c.push(k.dump_payload(rdb_version));
                    }
                }
                c
            })
            .collect();
        for (reply, k) in target.pipeline(&cmds).iter().zip(&keys) {
            assert_eq!(
                reply,
                &Reply::Status("OK".into()),
                "RESTORE of {:?} (type byte {})",
                String::from_utf8_lossy(&k.key),
                k.type_byte
            );
        }
    }
}

#[test]
fn rdb_files_from_redis_round_trip_through_dump_payloads() {
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let (source_url, target_url) = redis_urls();
    let mut source = Redis::connect(&source_url);
    let mut target = Redis::connect(&target_url);
    let dir = match source.ok("CONFIG GET dir") {
        Reply::Array(Some(v)) => v[1].text(),
        other => panic!("{other:?}"),
    };
    // Compact encodings (listpack, intset) with the defaults; then every threshold at its
    // smallest, so the same data is saved as hashtables, skiplists and quicklists.
    let profiles: [(&str, &[&str]); 2] = [
        (
            "compact",
            &[
                "CONFIG SET hash-max-listpack-entries 512",
                "CONFIG SET zset-max-listpack-entries 128",
                "CONFIG SET set-max-intset-entries 512",
                "CONFIG SET list-max-listpack-size -2",
            ],
        ),
        (
            "large",
            &[
                "CONFIG SET hash-max-listpack-entries 0",
                "CONFIG SET zset-max-listpack-entries 0",
                "CONFIG SET set-max-intset-entries 0",
                "CONFIG SET list-max-listpack-size 1",
            ],
        ),
    ];
    for (name, settings) in profiles {
        source.ok("FLUSHALL");
        for s in settings {
            source.ok(s);
        }
        let mut expected = BTreeMap::new();
        expected.insert(0u64, fill(&mut source, 0, name == "large"));
        expected.insert(3u64, fill(&mut source, 3, false));
        source.ok("SELECT 0");
        let encoding = source.ok("OBJECT ENCODING intset").text();
        assert_eq!(
            encoding,
            if name == "compact" {
                "intset"
            } else {
                "hashtable"
            },
            "profile {name}"
        );
        source.ok("SAVE");

        let (summary, keys) = read_file(&format!("{dir}/dump.rdb"));
        assert_eq!(summary.keys, expected, "profile {name}");
        assert!(summary.crc64.is_some());
        let expiring: Vec<&KeyEntry> = keys.iter().filter(|k| k.expires_at_ms.is_some()).collect();
        assert_eq!(expiring.len(), 4, "two per database");

        restore(&mut target, &keys, summary.rdb_version);
        let digest_source = source.ok("DEBUG DIGEST").text();
        let digest_target = target.ok("DEBUG DIGEST").text();
        assert_ne!(digest_source, "0".repeat(40));
        assert_eq!(
            digest_source, digest_target,
            "profile {name}: restored data differs"
        );
    }
    source.ok("FLUSHALL");
    target.ok("FLUSHALL");
}

/// Captures a snapshot over the replication protocol into memory.
fn capture(url: &str) -> Result<(Vec<u8>, bool), String> {
    use lifeboat_core::secret::SecretUrl;
    use tokio::io::AsyncReadExt;
    lifeboat_tests::block_on(async {
        let url = SecretUrl::parse(url).unwrap();
        let mut c = lifeboat_core::source::redis::start_capture(&url)
            .await
            .map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        c.stream
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            bytes,
            c.kind == lifeboat_core::source::redis::CaptureKind::SyncDiskless,
        ))
    })
}

fn parse(bytes: &[u8]) -> Result<(lifeboat_rdb::Summary, Vec<KeyEntry>), lifeboat_rdb::RdbError> {
    let mut reader = RdbReader::new();
    let mut keys = Vec::new();
    let mut collect = |i: Item| {
        if let Item::Key(k) = i {
            keys.push(k);
        }
    };
    for chunk in bytes.chunks(16 * 1024) {
        reader.feed(chunk, &mut collect)?;
    }
    let summary = reader.finish(&mut collect)?;
    Ok((summary, keys))
}

#[test]
fn native_capture_reads_both_sync_payload_forms_and_a_dropped_connection_fails() {
    let Servers {
        _guard,
        source_url,
        target_url: _,
        mut source,
        mut target,
    } = servers();
    let mut expected = BTreeMap::new();
    expected.insert(0u64, fill(&mut source, 0, true));
    expected.insert(5u64, fill(&mut source, 5, false));
    for (setting, diskless) in [("yes", true), ("no", false)] {
        source.ok(&format!("CONFIG SET repl-diskless-sync {setting}"));
        let (bytes, form) = capture(&source_url).unwrap();
        assert_eq!(form, diskless, "repl-diskless-sync {setting}");
        let (summary, keys) = parse(&bytes).unwrap();
        assert_eq!(summary.keys, expected, "repl-diskless-sync {setting}");
        restore(&mut target, &keys, summary.rdb_version);
        assert_eq!(
            source.ok("DEBUG DIGEST").text(),
            target.ok("DEBUG DIGEST").text(),
            "repl-diskless-sync {setting}: restored data differs"
        );
    }
    // The connection drops 1 MiB into the 20 MiB snapshot: an error, never a short "success".
    let addr = source_url.trim_start_matches("redis://").to_string();
    let proxy = lifeboat_tests::proxy::FaultProxy::start(&addr);
    proxy
        .faults
        .cut_after
        .store(1024 * 1024, std::sync::atomic::Ordering::SeqCst);
    let via_proxy = proxy.endpoint.replace("http://", "redis://");
    match capture(&via_proxy) {
        Err(e) => assert!(
            e.contains("before the end of the snapshot") || e.contains("reset"),
            "{e}"
        ),
        Ok((bytes, _)) => {
            let err = parse(&bytes).unwrap_err();
            assert!(err.message.contains("truncated"), "{err}");
        }
    }
    source.ok("FLUSHALL");
    target.ok("FLUSHALL");
}

/// How many whole zstd frames `bytes` holds, one after the other.
fn zstd_frames(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut frames = 0;
    while !rest.is_empty() {
        let size = zstd::zstd_safe::find_frame_compressed_size(rest).expect("a whole zstd frame");
        rest = &rest[size..];
        frames += 1;
    }
    frames
}

fn dbsize(r: &mut Redis, db: u64) -> i64 {
    r.ok(&format!("SELECT {db}"));
    r.ok("DBSIZE").text().parse().unwrap()
}

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

#[test]
fn scan_mode_builds_an_rdb_that_restores_identically() {
    use lifeboat_tests::{manifests, run, TempDir};
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let (source_url, target_url) = redis_urls();
    let mut source = Redis::connect(&source_url);
    let mut target = Redis::connect(&target_url);
    source.ok("FLUSHALL");
    let mut expected = BTreeMap::new();
    expected.insert("0".to_string(), fill(&mut source, 0, true));
    expected.insert("9".to_string(), fill(&mut source, 9, false));
    // Enough keys for several SCAN pages.
    let mut many = vec![b"MSET".to_vec()];
    for i in 0..5000 {
        many.push(format!("page-key-{i}").into_bytes());
        many.push(format!("{i}").into_bytes());
    }
    source.ok("SELECT 9");
    assert!(!matches!(
        source.pipeline(&[many]).remove(0),
        Reply::Error(_)
    ));
    *expected.get_mut("9").unwrap().get_mut("string").unwrap() += 5000;
    let source_digest = source.ok("DEBUG DIGEST").text();
    // Function libraries come along through FUNCTION DUMP.
    source.ok("FUNCTION FLUSH");
    let library = b"#!lua name=lifeboat_scan_lib\nredis.register_function('lifeboat_scan_ping', function(keys, args) return 'pong' end)";
    let loaded = source.cmd(&[b"FUNCTION", b"LOAD", library]);
    assert_eq!(loaded, Reply::Bulk(Some(b"lifeboat_scan_lib".to_vec())));
    let source_functions = source.cmd(&[b"FUNCTION", b"LIST", b"WITHCODE"]);

    let repo = TempDir::new("redis-scan");
    let dir = TempDir::new("redis-scan-cfg");
    let config = dir.join("lifeboat.toml");
    let write = |mode: &str, url: &str| {
        std::fs::write(
            &config,
            format!(
                "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"cache\"\nengine = \"redis\"\nurl = \"{url}\"\nmode = \"{mode}\"\n",
                repo.as_str()
            ),
        )
        .unwrap();
    };
    write("scan", &source_url);
    let config_s = config.to_str().unwrap();
    run("lifeboat-backup", &["--config", config_s])
        .assert_code(0)
        .assert_contains("SCAN");
    let manifest = &manifests(repo.path(), "cache")[0];
    assert_eq!(manifest["fingerprint"]["capture"], "scan");
    assert_eq!(manifest["fingerprint"]["point_in_time"], false);
    assert_eq!(manifest["fingerprint"]["functions"], 1);
    assert_eq!(
        serde_json::to_value(&expected).unwrap(),
        manifest["fingerprint"]["keys"]
    );
    run(
        "lifeboat-verify",
        &["--config", config_s, "--level", "content"],
    )
    .assert_code(0);
    target.ok("FLUSHALL");
    run(
        "lifeboat-restore",
        &[
            "--config",
            config_s,
            "--latest",
            "--to",
            &target_url,
            "--yes",
        ],
    )
    .assert_code(0);
    assert_eq!(target.ok("DEBUG DIGEST").text(), source_digest);
    assert_eq!(
        target.cmd(&[b"FUNCTION", b"LIST", b"WITHCODE"]),
        source_functions
    );

    // mode = "sync" with a user that may not SYNC: a clear failure, no fallback.
    source.ok("ACL SETUSER lifeboat-nosync2 on >nosync-secret-4 +@all -sync -psync ~*");
    let addr = source_url.trim_start_matches("redis://");
    write(
        "sync",
        &format!("redis://lifeboat-nosync2:nosync-secret-4@{addr}"),
    );
    let r = run("lifeboat-backup", &["--config", config_s]);
    source.ok("ACL DELUSER lifeboat-nosync2");
    r.assert_code(1).assert_contains("SYNC was refused");
    assert_eq!(manifests(repo.path(), "cache").len(), 1);
    source.ok("FLUSHALL");
    source.ok("FUNCTION FLUSH");
    target.ok("FLUSHALL");
    target.ok("FUNCTION FLUSH");
}

/// Runs a command, panicking with its output if it fails.
fn sh(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rediss_urls_back_up_and_restore_over_verified_tls() {
    use lifeboat_tests::{run, TempDir};
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    // A private CA and a certificate for 127.0.0.1, made with openssl.
    let dir = TempDir::new("redis-tls");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    sh(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=lifeboat test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ],
    );
    sh(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    sh(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &p("san.ext"),
            "-out",
            &p("server.pem"),
        ],
    );
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (plain_port, tls_port) = (free_port(), free_port());
    let mut server = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &plain_port.to_string()])
        .args(["--tls-port", &tls_port.to_string()])
        .args([
            "--tls-cert-file",
            &p("server.pem"),
            "--tls-key-file",
            &p("server.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-auth-clients",
            "no",
        ])
        .args([
            "--save",
            "",
            "--dir",
            dir.as_str(),
            "--enable-debug-command",
            "yes",
        ])
        .args(["--repl-diskless-sync-delay", "0"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (scripts/services.sh installs it)");
    let result = std::panic::catch_unwind(|| {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", plain_port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let mut plain = Redis::connect(&format!("redis://127.0.0.1:{plain_port}"));
        fill(&mut plain, 0, false);
        let digest = plain.ok("DEBUG DIGEST").text();
        let tls_url = format!("rediss://127.0.0.1:{tls_port}?ca={}", p("ca.pem"));
        let repo = TempDir::new("redis-tls-repo");
        run(
            "lifeboat-backup",
            &[
                "--engine",
                "redis",
                "--url",
                &tls_url,
                "--repo",
                repo.as_str(),
            ],
        )
        .assert_code(0);
        // Without the private CA the server is not trusted: no backup.
        run(
            "lifeboat-backup",
            &[
                "--engine",
                "redis",
                "--url",
                &format!("rediss://127.0.0.1:{tls_port}"),
                "--repo",
                repo.as_str(),
                "--job",
                "untrusted",
            ],
        )
        .assert_code(1)
        .assert_contains("TLS handshake failed");
        // And back, into the same server over TLS.
        plain.ok("FLUSHALL");
        run(
            "lifeboat-restore",
            &[
                "--repo",
                repo.as_str(),
                "--job",
                "redis",
                "--latest",
                "--to",
                &tls_url,
                "--yes",
            ],
        )
        .assert_code(0);
        assert_eq!(plain.ok("DEBUG DIGEST").text(), digest);
    });
    let _ = server.kill();
    let _ = server.wait();
    result.unwrap();
}

/// A ziplist of short strings and small integers (the encoding Redis used before 7.0).
fn ziplist(entries: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut prev_len = 0usize;
    let mut tail = 10usize;
    for e in entries {
        tail = 10 + body.len();
        let mut entry = vec![prev_len as u8];
        match std::str::from_utf8(e)
            .ok()
            .and_then(|s| s.parse::<i8>().ok())
        {
            Some(n) if e.len() <= 3 && !e.starts_with(b"0") || *e == b"0" => {
                entry.push(0xfe);
                entry.push(n as u8);
            }
            _ => {
                assert!(e.len() < 64);
                entry.push(e.len() as u8);
                entry.extend_from_slice(e);
            }
        }
        prev_len = entry.len();
        body.extend(entry);
    }
    let total = 10 + body.len() + 1;
    let mut zl = Vec::new();
    zl.extend((total as u32).to_le_bytes());
    zl.extend((tail as u32).to_le_bytes());
    zl.extend((entries.len() as u16).to_le_bytes());
    zl.extend(body);
    zl.push(0xff);
    zl
}

/// An RDB string: 6-bit length and the bytes.
fn rdb_string(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 64);
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// A blob (ziplist, zipmap, intset) as an RDB string, with a 14-bit length if needed.
fn rdb_blob(out: &mut Vec<u8>, b: &[u8]) {
    if b.len() < 64 {
        out.push(b.len() as u8);
    } else {
        out.push(0x40 | (b.len() >> 8) as u8);
        out.push(b.len() as u8);
    }
    out.extend_from_slice(b);
}

#[test]
fn encodings_older_than_redis_7_are_read_and_restore_into_a_live_server() {
    use lifeboat_tests::{run, TempDir};
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let (_, target_url) = redis_urls();
    let mut target = Redis::connect(&target_url);
    // An RDB version 9 file (Redis 5/6) written by hand, one key per old encoding.
    let mut f = b"REDIS0009".to_vec();
    f.extend([0xfe, 0]); // SELECTDB 0
    let key = |f: &mut Vec<u8>, t: u8, name: &[u8]| {
        f.push(t);
        rdb_string(f, name);
    };
    key(&mut f, 1, b"linked"); // linked list
    f.push(3);
    for s in [b"a", b"b", b"c"] {
        rdb_string(&mut f, s);
    }
    key(&mut f, 3, b"zset1"); // sorted set, scores as text (253..255: nan, +inf, -inf)
    f.push(2);
    rdb_string(&mut f, b"m1");
    rdb_string(&mut f, b"1.5");
    rdb_string(&mut f, b"m2");
    f.push(254);
    key(&mut f, 9, b"zipmap"); // zipmap hash
    let mut zm = vec![2u8];
    for (k, v) in [(&b"f1"[..], &b"v1"[..]), (b"f2", b"value2")] {
        zm.push(k.len() as u8);
        zm.extend_from_slice(k);
        zm.push(v.len() as u8);
        zm.push(0); // free bytes
        zm.extend_from_slice(v);
    }
    zm.push(0xff);
    rdb_blob(&mut f, &zm);
    key(&mut f, 10, b"ziplist-list");
    rdb_blob(&mut f, &ziplist(&[b"x", b"7", b"yy"]));
    key(&mut f, 12, b"ziplist-zset");
    rdb_blob(&mut f, &ziplist(&[b"p", b"1", b"q", b"2.5"]));
    key(&mut f, 13, b"ziplist-hash");
    rdb_blob(&mut f, &ziplist(&[b"h1", b"one", b"h2", b"2"]));
    key(&mut f, 14, b"quicklist1"); // quicklist of ziplists
    f.push(2);
    rdb_blob(&mut f, &ziplist(&[b"q1", b"q2"]));
    rdb_blob(&mut f, &ziplist(&[b"q3"]));
    key(&mut f, 11, b"intset"); // intset, 16-bit
    let mut is = Vec::new();
    is.extend(2u32.to_le_bytes());
    is.extend(3u32.to_le_bytes());
    for n in [-5i16, 3, 300] {
        is.extend(n.to_le_bytes());
    }
    rdb_blob(&mut f, &is);
    // Expiry in seconds (the pre-3.0 opcode) and an LFU hint before a plain string.
    f.push(0xfd);
    f.extend(4_000_000_000u32.to_le_bytes());
    f.extend([0xf9, 5]);
    key(&mut f, 0, b"old-expiry");
    rdb_string(&mut f, b"kept");
    f.push(0xff);
    let crc = lifeboat_rdb::crc64(&f);
    f.extend(crc.to_le_bytes());

    let (summary, keys) = parse(&f).unwrap();
    let types: BTreeMap<String, u64> = [
        ("hash", 2),
        ("list", 3),
        ("set", 1),
        ("string", 1),
        ("zset", 2),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_string(), n))
    .collect();
    assert_eq!(summary.keys[&0], types);
    assert_eq!(keys.last().unwrap().expires_at_ms, Some(4_000_000_000_000));

    let dir = TempDir::new("old-encodings");
    let file = dir.join("old.rdb");
    std::fs::write(&file, &f).unwrap();
    target.ok("FLUSHALL");
    run(
        "lifeboat-restore",
        &[
            "--from-file",
            file.to_str().unwrap(),
            "--to",
            &target_url,
            "--yes",
        ],
    )
    .assert_code(0);
    let list = |r: &mut Redis, cmd: &str| match r.ok(cmd) {
        Reply::Array(Some(v)) => v.iter().map(Reply::text).collect::<Vec<_>>().join(","),
        other => panic!("{cmd}: {other:?}"),
    };
    assert_eq!(list(&mut target, "LRANGE linked 0 -1"), "a,b,c");
    assert_eq!(
        list(&mut target, "ZRANGE zset1 0 -1 WITHSCORES"),
        "m1,1.5,m2,inf"
    );
    assert_eq!(list(&mut target, "HGETALL zipmap"), "f1,v1,f2,value2");
    assert_eq!(list(&mut target, "LRANGE ziplist-list 0 -1"), "x,7,yy");
    assert_eq!(
        list(&mut target, "ZRANGE ziplist-zset 0 -1 WITHSCORES"),
        "p,1,q,2.5"
    );
    assert_eq!(list(&mut target, "HGETALL ziplist-hash"), "h1,one,h2,2");
    assert_eq!(list(&mut target, "LRANGE quicklist1 0 -1"), "q1,q2,q3");
    assert_eq!(list(&mut target, "SMEMBERS intset"), "-5,3,300");
    assert_eq!(target.ok("GET old-expiry").text(), "kept");
    let ttl: i64 = target.ok("TTL old-expiry").text().parse().unwrap();
    assert!(ttl > 0, "{ttl}");
    target.ok("FLUSHALL");
}

/// `debug-digest = true`: the source's DEBUG DIGEST, unchanged across the capture, goes into the
/// manifest, and a drill compares the restored data with it; a digest that does not match (here
/// a manifest edited by hand) fails the drill with exit 3.
#[test]
fn debug_digests_are_recorded_for_quiet_captures_and_checked_by_drills() {
    use lifeboat_tests::{manifests, run, TempDir};
    let Servers {
        _guard,
        source_url,
        target_url,
        mut source,
        mut target,
    } = servers();
    fill(&mut source, 0, false);
    fill(&mut source, 3, false);
    let source_digest = source.ok("DEBUG DIGEST").text();

    let repo = TempDir::new("redis-digest");
    let dir = TempDir::new("redis-digest-cfg");
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"cache\"\nengine = \"redis\"\nurl = \"{source_url}\"\ndebug-digest = true\n",
            repo.as_str()
        ),
    )
    .unwrap();
    let config_s = config.to_str().unwrap();
    run("lifeboat-backup", &["--config", config_s]).assert_code(0);
    let manifest = &manifests(repo.path(), "cache")[0];
    assert_eq!(
        manifest["fingerprint"]["debug_digest"].as_str(),
        Some(source_digest.as_str()),
        "{manifest}"
    );

    target.ok("FLUSHALL");
    let drill = || {
        run(
            "lifeboat-verify",
            &[
                "--config",
                config_s,
                "--level",
                "drill",
                "--scratch-url",
                &target_url,
            ],
        )
    };
    drill()
        .assert_code(0)
        .assert_contains("DEBUG DIGEST of the restored data matches");

    // A recorded digest the restored data does not have: the drill says so and fails.
    let snapshots = repo.path().join("jobs/cache/snapshots");
    let id = manifest["id"].as_str().unwrap();
    let path = snapshots.join(id).join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&source_digest));
    std::fs::write(&path, text.replace(&source_digest, &"e".repeat(40))).unwrap();
    drill()
        .assert_code(3)
        .assert_contains("DEBUG DIGEST of the restored data is");
    assert_eq!(
        target.ok("DEBUG DIGEST").text(),
        "0".repeat(40),
        "the drill cleaned up"
    );

    // The setting belongs to Redis jobs.
    std::fs::write(
        &config,
        "[[job]]\nname = \"db\"\nengine = \"postgres\"\nurl = \"postgres://u@h/db\"\ndebug-digest = true\n",
    )
    .unwrap();
    run("lifeboat-backup", &["--config", config_s])
        .assert_code(2)
        .assert_contains("debug-digest");
    source.ok("FLUSHALL");
}

/// Values that do not compress (already compressed or encrypted data) are stored as raw blocks
/// in zstd frames of their own: the stored object is several frames, and verify and restore read
/// it back whole.
#[test]
fn incompressible_values_are_stored_in_frames_of_their_own_and_restore() {
    use lifeboat_tests::{data_objects, run, TempDir};
    let Servers {
        _guard,
        source_url,
        target_url,
        mut source,
        mut target,
    } = servers();
    fill(&mut source, 0, false);
    // 12 MiB that no compressor shrinks (xorshift64*), more than one 8 MiB window.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..12 * 1024 * 1024 / 8)
        .flat_map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes()
        })
        .collect();
    assert_eq!(
        source.cmd(&[b"SET", b"noise", &noise]),
        Reply::Status("OK".into())
    );
    let source_digest = source.ok("DEBUG DIGEST").text();
    let repo = TempDir::new("redis-frames");
    let repo_s = repo.as_str();
    run(
        "lifeboat-backup",
        &["--engine", "redis", "--url", &source_url, "--repo", repo_s],
    )
    .assert_code(0);
    let stored = std::fs::read(data_objects(repo.path()).pop().unwrap()).unwrap();
    let frames = zstd_frames(&stored);
    assert!(frames >= 2, "{frames} frames");
    assert!(stored.len() > noise.len(), "the noise is stored as it is");
    run(
        "lifeboat-verify",
        &["--repo", repo_s, "--job", "redis", "--level", "content"],
    )
    .assert_code(0);
    target.ok("FLUSHALL");
    run(
        "lifeboat-restore",
        &[
            "--repo",
            repo_s,
            "--job",
            "redis",
            "--latest",
            "--to",
            &target_url,
            "--yes",
        ],
    )
    .assert_code(0);
    assert_eq!(target.ok("DEBUG DIGEST").text(), source_digest);
    source.ok("FLUSHALL");
    target.ok("FLUSHALL");
}
