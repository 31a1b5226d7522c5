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
        url: Some(source.url()),
        compression: Some(config::CompressionName::None),
        pg_bin_dir: std::env::var("LIFEBOAT_TEST_PG_BIN").ok(),
        ..Default::default()
    };
    let job = config::validate_job(&spec, &Default::default(), None).unwrap();
    let options = BackupOptions {
        now: chrono::Utc::now(),
        leftover_grace: Duration::from_secs(3600),
        compression_threads: 1,
        same_source_only: false,
        lease: None,
        clock_offset: chrono::Duration::zero(),
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

/// A private s3s-fs server (installed by scripts/services.sh) that a test may kill and restart
/// on the same port and data directory; its objects and multipart state live on disk.
struct DiskS3 {
    child: std::process::Child,
    port: u16,
    data: TempDir,
}

impl DiskS3 {
    fn start() -> DiskS3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = TempDir::new("s3s-fs");
        let child = DiskS3::spawn(port, &data);
        DiskS3 { child, port, data }
    }

    fn spawn(port: u16, data: &TempDir) -> std::process::Child {
        let bin = std::env::var("LIFEBOAT_TEST_S3S_FS").unwrap_or_else(|_| {
            format!(
                "{}/.cache/lifeboat/s3s-fs-0.14.1/bin/s3s-fs",
                std::env::var("HOME").unwrap()
            )
        });
        let mut child = std::process::Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                "lifeboat-test",
                "--secret-key",
                "lifeboat-test-secret",
            ])
            .arg(data.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run s3s-fs ({bin}): {e}. Install it with: scripts/services.sh start")
            });
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("s3s-fs did not start on port {port}");
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn restart(&mut self) {
        self.child = DiskS3::spawn(self.port, &self.data);
    }

    /// Files s3s-fs keeps for multipart uploads that were neither completed nor aborted.
    fn upload_files(&self) -> Vec<String> {
        files_under(self.data.path())
            .into_iter()
            .filter(|f| f.contains(".upload"))
            .collect()
    }
}

impl Drop for DiskS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_s3_server_killed_mid_upload_fails_the_run_and_commits_nothing() {
    let db = TestDb::create("killed");
    // ~45 MB uncompressed, stored as is: nine 5 MiB parts.
    sql(
        &db.url(),
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g + 1)::text) AS v \
         FROM generate_series(1, 600000) g",
    );
    let mut server = DiskS3::start();
    block_on(async {
        s3_client_at(&server.endpoint())
            .await
            .create_bucket()
            .bucket("backups")
            .send()
            .await
            .unwrap();
    });
    let dir = TempDir::new("killed-cfg");
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"s3://backups/prod\"\nendpoint = \"{}\"\npath-style = true\n\
             part-size-mib = 5\nparts-in-flight = 1\ntimeout-secs = 2\nmax-attempts = 2\n\n\
             [[job]]\nname = \"app\"\nengine = \"postgres\"\nurl = \"{}\"\ncompression = \"none\"\n",
            server.endpoint(),
            db.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let backup = command("lifeboat-backup")
        .args(["--config", config])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once the first part has reached its disk.
    let started = std::time::Instant::now();
    while !server.upload_files().iter().any(|f| f.contains(".part-")) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the upload never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let out = finish(backup.wait_with_output().unwrap());
    out.assert_code(1);
    assert!(
        out.output().contains("s3://backups/prod"),
        "{}",
        out.output()
    );
    server.restart();

    let snapshots = || {
        files_under(server.data.path())
            .into_iter()
            .filter(|f| f.starts_with("backups/prod/jobs/app/snapshots/"))
            .collect::<Vec<_>>()
    };
    assert!(snapshots().is_empty(), "committed: {:?}", snapshots());
    // The failed run could not remove its lock (the server was down). Its process has ended,
    // and the next run on this machine sees that and takes the lock over at once.
    run("lifeboat-backup", &["--config", config])
        .assert_code(0)
        .assert_contains("that process has ended on this machine");
    let committed = snapshots();
    assert_eq!(
        committed
            .iter()
            .filter(|f| f.ends_with("manifest.json"))
            .count(),
        1,
        "{committed:?}"
    );
    run(
        "lifeboat-verify",
        &["--config", config, "--level", "content"],
    )
    .assert_code(0);
    // s3s-fs cannot list multipart uploads, so the killed run's parts stay on its disk (a
    // bucket lifecycle rule removes such parts on AWS and R2); on moto the next run aborts
    // them: stores::stale_unfinished_uploads_are_removed_fresh_ones_kept.
}
