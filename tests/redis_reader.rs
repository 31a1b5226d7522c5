//! lifeboat-rdb against files written by a real redis-server: every type in its compact and
//! its large encodings, expiries, several databases, binary keys, LZF strings and a 20 MiB
//! value; and hand-made files in the encodings of Redis before 7. Each key's DUMP payload,
//! built from the file's bytes, is RESTOREd into a second server, and the two servers' DEBUG
//! DIGESTs must match.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use lifeboat_rdb::KeyEntry;
use lifeboat_tests::redis::*;
use lifeboat_tests::resp::{redis_urls, Redis, Reply};

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
