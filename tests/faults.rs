//! Fault tests through the library, against the real PostgreSQL: a store that breaks
//! mid-upload must fail the backup with the store's error, commit nothing, and not leave
//! pg_dump hanging on a full pipe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeboat_core::backup::{backup, BackupOptions};
use lifeboat_core::config::{self, EngineName, JobSpec};
use lifeboat_core::store::faulty::FaultyStore;
use lifeboat_core::store::LocalStore;
use lifeboat_core::ErrorKind;
use lifeboat_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_mid_upload_commits_nothing_and_does_not_hang() {
    let source = tokio::task::spawn_blocking(|| {
        let db = TestDb::create("faulty");
        sql(
            &db.url(),
            "CREATE TABLE big AS SELECT g, md5(g::text) AS v FROM generate_series(1, 300000) g",
        );
        db
    })
    .await
    .unwrap();
    let repo = TempDir::new("faulty");
    let store = FaultyStore::new(LocalStore::open(repo.path()).unwrap(), 256 * 1024);
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
    let result = tokio::time::timeout(Duration::from_secs(120), backup(&store, &job, &options))
        .await
        .expect("the backup hung after the store failed");
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");
    assert!(
        std::error::Error::source(&err).is_some() || err.message().contains("injected fault"),
        "{err}"
    );
    assert!(
        err.message().contains("writing the snapshot failed"),
        "{err}"
    );
    assert!(manifests(repo.path(), "app").is_empty());
    assert!(
        data_objects(repo.path()).is_empty(),
        "{:?}",
        files_under(repo.path())
    );
    tokio::task::spawn_blocking(move || drop(source))
        .await
        .unwrap();
}
