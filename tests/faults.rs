//! Fault tests through the library, against the real PostgreSQL and S3 servers: a store that
//! breaks mid-upload must fail the backup with the store's error, commit nothing, leave no
//! unfinished multipart upload, and not leave pg_dump hanging on a full pipe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeboat_core::backup::{backup, BackupOptions};
use lifeboat_core::config::{self, EngineName, JobSpec};
use lifeboat_core::store::faulty::FaultyStore;
use lifeboat_core::store::{AnyStore, LocalStore, S3Options, S3Store, Store};
use lifeboat_core::ErrorKind;
use lifeboat_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_mid_upload_commits_nothing_and_does_not_hang() {
    let (source, bucket) = tokio::task::spawn_blocking(|| {
        let db = TestDb::create("faulty");
        // ~30 MiB uncompressed, so the S3 upload is multipart when the store breaks.
        sql(
            &db.url(),
            "CREATE TABLE big AS SELECT g, md5(g::text) AS v FROM generate_series(1, 400000) g",
        );
        (db, s3_bucket("faults"))
    })
    .await
    .unwrap();
    let repo = TempDir::new("faulty");
    let local = FaultyStore::new(
        AnyStore::Local(LocalStore::open(repo.path()).unwrap()),
        256 * 1024,
    );
    let s3 = S3Store::open(
        &format!("s3://{bucket}/faulty"),
        S3Options {
            endpoint: Some(s3_endpoint()),
            path_style: true,
            part_size: 5 * 1024 * 1024,
            ..S3Options::default()
        },
    )
    .await
    .unwrap();
    let remote = FaultyStore::new(AnyStore::S3(s3.clone()), 11 * 1024 * 1024);
    let spec = JobSpec {
        name: "app".into(),
        engine: EngineName::Postgres,
        url: source.url(),
        format: None,
        compression: Some(config::CompressionName::None),
        compression_level: None,
        pg_bin_dir: std::env::var("LIFEBOAT_TEST_PG_BIN").ok(),
        retention: None,
        schedule: None,
        max_age: None,
    };
    let job = config::validate_job(&spec, &Default::default(), None).unwrap();
    let options = BackupOptions {
        now: chrono::Utc::now(),
        leftover_grace: Duration::from_secs(3600),
        compression_threads: 1,
    };
    for store in [&local, &remote] {
        let result = tokio::time::timeout(Duration::from_secs(120), backup(store, &job, &options))
            .await
            .expect("the backup hung after the store failed");
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Store, "{}: {err}", store.describe());
        assert!(
            err.message().contains("writing the snapshot failed"),
            "{err}"
        );
    }
    assert!(manifests(repo.path(), "app").is_empty());
    assert!(
        data_objects(repo.path()).is_empty(),
        "{:?}",
        files_under(repo.path())
    );
    let listed = s3.list("jobs/").await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    // The writer's abort ran: no multipart upload is left (give a detached abort a moment).
    let mut left = s3.unfinished_uploads("jobs/").await.unwrap();
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = s3.unfinished_uploads("jobs/").await.unwrap();
    }
    assert!(
        left.is_empty(),
        "the multipart upload was not aborted: {left:?}"
    );
    tokio::task::spawn_blocking(move || drop(source))
        .await
        .unwrap();
}
