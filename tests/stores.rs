//! The store conformance suite: every store (a local directory, S3 on moto, S3 on s3s-fs) must
//! pass the same tests, locks included. Plus the PostgreSQL round trip through S3.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeboat_core::store::{
    AnyStore, LocalStore, ObjectKey, ObjectWriter, S3Options, S3Store, Store,
};
use lifeboat_tests::proxy;
use lifeboat_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

/// Every store, each under a fresh prefix; small parts so multipart paths are exercised.
async fn stores(label: &str) -> (Vec<AnyStore>, TempDir) {
    let dir = TempDir::new(label);
    let (moto, disk) =
        tokio::task::spawn_blocking(|| (s3_bucket("conformance"), s3s_bucket("conformance")))
            .await
            .unwrap();
    let mut stores = vec![AnyStore::Local(LocalStore::open(dir.path()).unwrap())];
    for (endpoint, bucket) in [(s3_endpoint(), moto), (s3s_endpoint(), disk)] {
        let options = S3Options {
            endpoint: Some(endpoint),
            path_style: true,
            part_size: 5 * MIB,
            parts_in_flight: 2,
            ..S3Options::default()
        };
        let url = format!("s3://{bucket}/{label}-{}", std::process::id());
        stores.push(AnyStore::S3(S3Store::open(&url, options).await.unwrap()));
    }
    (stores, dir)
}

/// s3s-fs does not list multipart uploads; the upload clean-up is tested on the others.
fn lists_uploads(store: &AnyStore) -> bool {
    !store.describe().contains(&s3s_endpoint())
}

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + i / 7919) % 251) as u8)
        .collect()
}

async fn read_all(store: &AnyStore, k: &ObjectKey, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .open(k, offset)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_range_delete() {
    let (stores, _dir) = stores("basic").await;
    for store in &stores {
        let k = key("jobs/a/snapshots/x/manifest.json");
        assert_eq!(store.get(&k).await.unwrap(), None, "{}", store.describe());
        assert_eq!(store.head(&k).await.unwrap(), None);
        store.put(&k, b"{\"hello\": 1}").await.unwrap();
        assert_eq!(
            store.get(&k).await.unwrap().as_deref(),
            Some(&b"{\"hello\": 1}"[..])
        );
        assert_eq!(store.head(&k).await.unwrap().unwrap().size, 12);
        assert_eq!(read_all(store, &k, 3).await, b"ello\": 1}");
        store.put(&k, b"replaced").await.unwrap();
        assert_eq!(
            store.get(&k).await.unwrap().as_deref(),
            Some(&b"replaced"[..])
        );
        store.delete(&k).await.unwrap();
        store.delete(&k).await.unwrap(); // deleting a missing object is fine
        assert_eq!(store.head(&k).await.unwrap(), None, "{}", store.describe());
        let err = store.open(&k, 0).await.err().unwrap();
        assert_eq!(err.kind(), lifeboat_core::ErrorKind::Integrity, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_objects_are_invisible_until_finished_and_multipart_round_trips() {
    let (stores, _dir) = stores("stream").await;
    for store in &stores {
        for (name, len) in [
            ("small", 1000),
            ("exact", 5 * MIB),
            ("multi", 12 * MIB + 17),
        ] {
            let k = key(&format!("jobs/a/snapshots/{name}/data.bin"));
            let data = pattern(len);
            let mut w = store.create(&k).await.unwrap();
            for chunk in data.chunks(300_001) {
                w.write_all(chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
            assert_eq!(
                store.head(&k).await.unwrap(),
                None,
                "{name} visible before finish on {}",
                store.describe()
            );
            assert!(store
                .list("jobs/a/")
                .await
                .unwrap()
                .iter()
                .all(|o| o.key != k));
            let meta = w.finish().await.unwrap();
            assert_eq!(meta.size, len as u64);
            assert_eq!(
                store.head(&k).await.unwrap().unwrap().size,
                len as u64,
                "{name}"
            );
            assert!(
                read_all(store, &k, 0).await == data,
                "{name} on {}",
                store.describe()
            );
            assert!(read_all(store, &k, (len - 10) as u64).await == data[len - 10..]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_and_dropped_uploads_leave_nothing() {
    let (stores, _dir) = stores("abort").await;
    for store in &stores {
        for how in ["abort", "drop"] {
            let k = key(&format!("jobs/a/snapshots/{how}/data.bin"));
            let mut w = store.create(&k).await.unwrap();
            w.write_all(&pattern(11 * MIB)).await.unwrap(); // past the first parts
            match how {
                "abort" => w.abort().await.unwrap(),
                _ => drop(w),
            }
            assert_eq!(
                store.head(&k).await.unwrap(),
                None,
                "{how} on {}",
                store.describe()
            );
        }
        // No unfinished upload is left behind (a dropped one is aborted by its task, which
        // runs on after the drop: give it a moment).
        let mut left = unfinished(store).await;
        for _ in 0..50 {
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = unfinished(store).await;
        }
        assert!(
            left.is_empty(),
            "unfinished uploads were left on {}: {left:?}",
            store.describe()
        );
        assert!(
            store.list("jobs/").await.unwrap().is_empty(),
            "{}",
            store.describe()
        );
    }
}

async fn reports_fake_upload_times(store: &AnyStore) -> bool {
    match store {
        AnyStore::S3(s3) => s3
            .unfinished_uploads("jobs/")
            .await
            .unwrap()
            .iter()
            .any(|u| {
                std::time::SystemTime::now()
                    .duration_since(u.initiated)
                    .unwrap_or_default()
                    > Duration::from_secs(365 * 86_400)
            }),
        AnyStore::Local(_) => false,
    }
}

/// What a crashed run would leave: temporary files (local) or multipart uploads (S3).
async fn unfinished(store: &AnyStore) -> Vec<String> {
    match store {
        AnyStore::S3(s3) => s3
            .unfinished_uploads("jobs/")
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.key)
            .collect(),
        AnyStore::Local(local) => files_under(local.root())
            .into_iter()
            .filter(|f| f.contains(".lifeboat-tmp-"))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_unfinished_uploads_are_removed_fresh_ones_kept() {
    let (stores, _dir) = stores("stale").await;
    for store in stores.iter().filter(|s| lists_uploads(s)) {
        let k = key("jobs/a/snapshots/crashed/data.bin");
        let mut w = store.create(&k).await.unwrap();
        w.write_all(&pattern(6 * MIB)).await.unwrap();
        w.flush().await.unwrap();
        // The upload is in progress (a multipart upload exists, or a temporary file).
        let mut seen = unfinished(store).await;
        for _ in 0..50 {
            if !seen.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = unfinished(store).await;
        }
        assert_eq!(seen.len(), 1, "{}", store.describe());
        // moto reports every upload as initiated on 2010-11-10, so on it a fresh upload looks
        // stale; the grace period is checked where the store reports real times.
        if !reports_fake_upload_times(store).await {
            assert!(store
                .remove_incomplete("jobs/a/", Duration::from_secs(3600))
                .await
                .unwrap()
                .is_empty());
        }
        assert_eq!(
            store
                .remove_incomplete("jobs/a/", Duration::ZERO)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            w.finish().await.is_err(),
            "an upload removed under its writer cannot commit"
        );
        assert_eq!(store.head(&k).await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_and_lock_leases() {
    use lifeboat_core::lock::{self, Holder};
    let (stores, _dir) = stores("cond").await;
    for store in &stores {
        let k = key("jobs/a/lock");
        assert!(
            store.create_exclusive(&k, b"one").await.unwrap(),
            "{}",
            store.describe()
        );
        assert!(
            !store.create_exclusive(&k, b"two").await.unwrap(),
            "{}",
            store.describe()
        );
        let (bytes, tag) = store.get_tagged(&k).await.unwrap().unwrap();
        assert_eq!(bytes, b"one");
        let new_tag = store.replace_if(&k, b"three", &tag).await.unwrap().unwrap();
        assert_ne!(new_tag, tag);
        // A stale tag no longer matches: the write is refused, the object unchanged.
        assert_eq!(store.replace_if(&k, b"four", &tag).await.unwrap(), None);
        assert_eq!(store.get(&k).await.unwrap().unwrap(), b"three");
        store.delete(&k).await.unwrap();
        assert_eq!(store.replace_if(&k, b"five", &new_tag).await.unwrap(), None);
        assert_eq!(store.get(&k).await.unwrap(), None, "{}", store.describe());

        // A lease of 600 ms renewed every 200 ms outlives itself; another run is refused.
        let holder = |pid| Holder {
            owner: "test".into(),
            host: "here".into(),
            pid,
            process: None,
        };
        let lease = Duration::from_millis(600);
        let first = lock::acquire(store, "b", &holder(1), lease, chrono::Utc::now())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let err = lock::acquire(store, "b", &holder(2), lease, chrono::Utc::now())
            .await
            .err()
            .expect("a renewed lock was taken");
        assert_eq!(err.kind(), lifeboat_core::ErrorKind::Lock, "{err}");
        // Removed by hand and taken by another run: the first run's renewal stops (its ETag no
        // longer matches) and its release leaves the new holder's lock alone.
        lock::force_unlock(store, "b").await.unwrap();
        let second = lock::acquire(store, "b", &holder(2), lease, chrono::Utc::now())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        first.release().await.unwrap();
        assert_eq!(lock::current(store, "b").await.unwrap().unwrap().pid, 2);
        second.release().await.unwrap();
        assert_eq!(lock::current(store, "b").await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_paginates_and_stays_under_the_prefix() {
    let (stores, _dir) = stores("list").await;
    for store in &stores {
        for i in 0..1005 {
            store
                .put(
                    &key(&format!("jobs/many/snapshots/s{i:04}/manifest.json")),
                    b"x",
                )
                .await
                .unwrap();
        }
        store
            .put(&key("jobs/other/snapshots/s/manifest.json"), b"y")
            .await
            .unwrap();
        let listed = store.list("jobs/many/").await.unwrap();
        assert_eq!(listed.len(), 1005, "{}", store.describe());
        assert!(listed.windows(2).all(|w| w[0].key < w[1].key), "sorted");
        assert_eq!(store.list("jobs/other/").await.unwrap().len(), 1);
        assert_eq!(store.list("jobs/").await.unwrap().len(), 1006);
    }
}

#[test]
fn postgres_round_trip_through_s3() {
    let bucket = s3_bucket("roundtrip");
    let source = TestDb::awkward("s3_src");
    let repo = format!("s3://{bucket}/prod");
    let url = source.url();
    let s3 = s3_flags();
    let with_s3 = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|s| s.to_string())
            .chain(s3.iter().cloned())
            .collect()
    };
    let args = with_s3(&[
        "--engine", "postgres", "--url", &url, "--repo", &repo, "--job", "app",
    ]);
    finish(command("lifeboat-backup").args(&args).output().unwrap()).assert_code(0);
    let args = with_s3(&["--repo", &repo, "--level", "content"]);
    finish(command("lifeboat-verify").args(&args).output().unwrap()).assert_code(0);
    let target = TestDb::create("s3_dst");
    let to = target.url();
    let args = with_s3(&["--repo", &repo, "--job", "app", "--latest", "--to", &to]);
    finish(command("lifeboat-restore").args(&args).output().unwrap()).assert_code(0);
    assert_eq!(db_digest(&source.url()), db_digest(&target.url()));
    // A bucket that does not exist is a clear store error, not a hang.
    let args = with_s3(&[
        "--engine",
        "postgres",
        "--url",
        &url,
        "--repo",
        "s3://lbt-no-such-bucket/x",
        "--job",
        "app",
    ]);
    finish(command("lifeboat-backup").args(&args).output().unwrap())
        .assert_code(1)
        .assert_contains("NoSuchBucket");
}

#[test]
fn sigterm_during_an_s3_upload_aborts_it_and_commits_nothing() {
    let bucket = s3_bucket("sigterm");
    let source = TestDb::create("sigterm");
    sql(&source.url(), "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g + 1)::text) AS v FROM generate_series(1, 1200000) g");
    let dir = TempDir::new("sigterm");
    let prefix = format!("sig-{}", std::process::id());
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"s3://{bucket}/{prefix}\"\nendpoint = \"{}\"\npath-style = true\npart-size-mib = 5\nparts-in-flight = 1\n\n\
             [[job]]\nname = \"app\"\nengine = \"postgres\"\nurl = \"{}\"\ncompression = \"none\"\n",
            s3_endpoint(),
            source.url()
        ),
    )
    .unwrap();
    let child = command("lifeboat-backup")
        .args(["--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(S3Store::open(
            &format!("s3://{bucket}/{prefix}"),
            S3Options {
                endpoint: Some(s3_endpoint()),
                path_style: true,
                ..S3Options::default()
            },
        ))
        .unwrap();
    // Wait until a multipart upload is under way, then interrupt the run.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rt
        .block_on(store.unfinished_uploads("jobs/"))
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no multipart upload started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = finish(child.wait_with_output().unwrap());
    run.assert_code(1).assert_contains("interrupted by SIGTERM");
    assert!(
        rt.block_on(store.unfinished_uploads("jobs/"))
            .unwrap()
            .is_empty(),
        "the multipart upload was left behind"
    );
    let left = rt.block_on(store.list("jobs/")).unwrap();
    assert!(left.is_empty(), "objects were left: {left:?}");
}

/// An S3 store reached through a fault-injecting proxy, and the same bucket reached directly.
async fn through_proxy(label: &str, timeout_secs: u64) -> (S3Store, S3Store, proxy::FaultProxy) {
    let bucket = tokio::task::spawn_blocking(|| s3_bucket("faults-net"))
        .await
        .unwrap();
    let upstream = s3_endpoint().trim_start_matches("http://").to_string();
    let proxy = proxy::FaultProxy::start(&upstream);
    let url = format!("s3://{bucket}/{label}-{}", std::process::id());
    let options = |endpoint: String| S3Options {
        endpoint: Some(endpoint),
        path_style: true,
        part_size: 5 * MIB,
        timeout: Duration::from_secs(timeout_secs),
        max_attempts: 3,
        ..S3Options::default()
    };
    let direct = S3Store::open(&url, options(s3_endpoint())).await.unwrap();
    let faulty = S3Store::open(&url, options(proxy.endpoint.clone()))
        .await
        .unwrap();
    (direct, faulty, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_resume_after_a_dropped_connection() {
    use std::sync::atomic::Ordering;
    let (direct, faulty, proxy) = through_proxy("resume", 10).await;
    let k = key("jobs/a/snapshots/s/data.bin");
    let data = pattern(12 * MIB);
    direct.put(&k, &data).await.unwrap();
    proxy
        .faults
        .cut_after
        .store(3 * MIB as u64, Ordering::SeqCst);
    let mut got = Vec::new();
    faulty
        .open(&k, 0)
        .await
        .unwrap()
        .read_to_end(&mut got)
        .await
        .unwrap();
    assert!(
        got == data,
        "resumed download differs ({} of {} bytes)",
        got.len(),
        data.len()
    );
    assert!(
        proxy.faults.ranged.load(Ordering::SeqCst) >= 1,
        "no ranged GET was made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried_and_a_silent_server_times_out() {
    use std::sync::atomic::Ordering;
    let (direct, faulty, proxy) = through_proxy("throttle", 2).await;
    let k = key("jobs/a/snapshots/s/manifest.json");
    // Two 503 SlowDown answers, then the real server: retried with backoff, succeeds.
    proxy.faults.slow_down.store(2, Ordering::SeqCst);
    faulty.put(&k, b"after throttling").await.unwrap();
    assert_eq!(
        direct.get(&k).await.unwrap().as_deref(),
        Some(&b"after throttling"[..])
    );
    assert_eq!(
        proxy.faults.slow_down.load(Ordering::SeqCst),
        0,
        "the 503s were not hit"
    );
    // Two 500 InternalError answers: retried the same way.
    proxy.faults.internal_error.store(2, Ordering::SeqCst);
    faulty.put(&k, b"after server errors").await.unwrap();
    assert_eq!(
        direct.get(&k).await.unwrap().as_deref(),
        Some(&b"after server errors"[..])
    );
    assert_eq!(
        proxy.faults.internal_error.load(Ordering::SeqCst),
        0,
        "the 500s were not hit"
    );
    // A server that accepts connections and never answers: each attempt times out, the
    // request is retried, then fails with a clear error; no hang.
    proxy.faults.stall.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let err = faulty.get(&k).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(
        proxy.faults.connections.load(Ordering::SeqCst) > 3,
        "not retried"
    );
    let text = err.to_string().to_lowercase();
    assert!(
        text.contains("timeout") || text.contains("timed out"),
        "{err}"
    );
}
