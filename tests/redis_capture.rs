//! Capturing a Redis server: both SYNC payload forms, a dropped connection, SCAN mode, DEBUG
//! DIGEST recording, and values that do not compress.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use lifeboat_tests::redis::*;
use lifeboat_tests::resp::{redis_urls, Redis, Reply};

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
