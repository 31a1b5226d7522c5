//! What the Redis test files share: the two test servers, filling them with every type, and
//! reading, restoring and capturing RDB streams.

use std::collections::BTreeMap;

use lifeboat_rdb::{Item, KeyEntry, RdbReader};

use crate::resp::{redis_urls, Redis, Reply};

/// Both tests use the same two servers: one at a time.
pub static SERVERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The two test servers, held by one test at a time: the source emptied, and set to start a
/// diskless snapshot at once.
pub struct Servers {
    pub _guard: std::sync::MutexGuard<'static, ()>,
    pub source_url: String,
    pub target_url: String,
    pub source: Redis,
    pub target: Redis,
}

pub fn servers() -> Servers {
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

pub fn args(words: &[&[u8]]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.to_vec()).collect()
}

/// Fills `db` with one key of each type (and a few encodings of each); returns the expected
/// key count per type.
pub fn fill(r: &mut Redis, db: u32, big_value: bool) -> BTreeMap<String, u64> {
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

pub fn read_file(path: &str) -> (lifeboat_rdb::Summary, Vec<KeyEntry>) {
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

pub fn restore(target: &mut Redis, keys: &[KeyEntry], rdb_version: u16) {
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

/// Captures a snapshot over the replication protocol into memory.
pub fn capture(url: &str) -> Result<(Vec<u8>, bool), String> {
    use lifeboat_core::secret::SecretUrl;
    use tokio::io::AsyncReadExt;
    crate::block_on(async {
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

pub fn parse(
    bytes: &[u8],
) -> Result<(lifeboat_rdb::Summary, Vec<KeyEntry>), lifeboat_rdb::RdbError> {
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

/// How many whole zstd frames `bytes` holds, one after the other.
pub fn zstd_frames(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut frames = 0;
    while !rest.is_empty() {
        let size = zstd::zstd_safe::find_frame_compressed_size(rest).expect("a whole zstd frame");
        rest = &rest[size..];
        frames += 1;
    }
    frames
}

pub fn dbsize(r: &mut Redis, db: u64) -> i64 {
    r.ok(&format!("SELECT {db}"));
    r.ok("DBSIZE").text().parse().unwrap()
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(program: &str, args: &[&str]) {
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

/// A ziplist of short strings and small integers (the encoding Redis used before 7.0).
pub fn ziplist(entries: &[&[u8]]) -> Vec<u8> {
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
pub fn rdb_string(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 64);
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// A blob (ziplist, zipmap, intset) as an RDB string, with a 14-bit length if needed.
pub fn rdb_blob(out: &mut Vec<u8>, b: &[u8]) {
    if b.len() < 64 {
        out.push(b.len() as u8);
    } else {
        out.push(0x40 | (b.len() >> 8) as u8);
        out.push(b.len() as u8);
    }
    out.extend_from_slice(b);
}
