//! Helpers for the end-to-end tests: the real binaries, a real PostgreSQL (started by
//! `scripts/services.sh`), scratch databases and repositories, and data digests to compare.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod mongo;
pub mod pg_tls;
pub mod proxy;
pub mod redis;
pub mod resp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const DEFAULT_PG_URL: &str =
    "postgres://lifeboat:lifeboat-test-password@127.0.0.1:24329/postgres";
/// The test server's password: it must never appear in any output.
pub const PG_PASSWORD: &str = "lifeboat-test-password";

/// The URL of the test server's maintenance database.
pub fn admin_url() -> String {
    std::env::var("LIFEBOAT_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// The same server, another database.
pub fn db_url(db: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    format!("{base}/{db}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs SQL (possibly several statements) and returns the rows of every result as text.
pub fn sql(url: &str, query: &str) -> Vec<Vec<Option<String>>> {
    runtime().block_on(async {
        let (client, conn) = match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot reach the test PostgreSQL ({e}).\n\
                 Start it with: eval \"$(scripts/services.sh start)\" (or run scripts/test.sh)"
            ),
        };
        tokio::spawn(conn);
        let messages = client
            .simple_query(query)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e:?}\n{query}"));
        messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    })
}

pub fn sql_one(url: &str, query: &str) -> String {
    sql(url, query)[0][0].clone().unwrap_or_default()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database that is dropped when the test ends.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn create(label: &str) -> TestDb {
        let name = format!(
            "lbt_{label}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        sql(&admin_url(), &format!("DROP DATABASE IF EXISTS {name}"));
        sql(&admin_url(), &format!("CREATE DATABASE {name}"));
        TestDb { name }
    }

    /// A database filled with the awkward dataset.
    pub fn awkward(label: &str) -> TestDb {
        let db = TestDb::create(label);
        sql(&db.url(), include_str!("../fixtures/awkward.sql"));
        db
    }

    pub fn url(&self) -> String {
        db_url(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            sql(
                &admin_url(),
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            )
        });
    }
}

/// A scratch directory removed when the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "lifeboat-test-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Path of one of the workspace's binaries, built by `cargo build --bins` (scripts/test.sh).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins, or run scripts/test.sh)",
        path.display()
    );
    path
}

/// A finished run of a binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            code,
            "unexpected exit code; output:\n{}",
            self.output()
        );
        self
    }

    #[track_caller]
    pub fn assert_contains(&self, needle: &str) -> &Run {
        assert!(
            self.output().contains(needle),
            "output lacks {needle:?}:\n{}",
            self.output()
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// The test S3 server (moto, started by scripts/services.sh).
pub fn s3_endpoint() -> String {
    std::env::var("LIFEBOAT_TEST_S3_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:24390".to_string())
}

/// The on-disk test S3 server (s3s-fs, started by scripts/services.sh): large streams, no
/// listing of multipart uploads, no versioning or object lock.
pub fn s3s_endpoint() -> String {
    std::env::var("LIFEBOAT_TEST_S3S_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:24391".to_string())
}

/// Creates a bucket on the s3s-fs test server and returns its name.
pub fn s3s_bucket(name: &str) -> String {
    let bucket = format!("lbt-{name}-{}", std::process::id());
    block_on(async {
        let client = s3_client_at(&s3s_endpoint()).await;
        if let Err(e) = client.create_bucket().bucket(&bucket).send().await {
            let exists = e.as_service_error().is_some_and(|s| {
                s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
            });
            assert!(
                exists,
                "cannot create bucket {bucket} on the s3s-fs test server at {} ({}).\n\
                 Start it with: eval \"$(scripts/services.sh start)\" (or run scripts/test.sh)",
                s3s_endpoint(),
                aws_sdk_s3::error::DisplayErrorContext(&e)
            );
        }
    });
    bucket
}

/// Credentials the test S3 server accepts, for this process and the binaries it runs.
pub const S3_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "lifeboat-test"),
    ("AWS_SECRET_ACCESS_KEY", "lifeboat-test-secret"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A client of the test S3 server, with the test credentials.
pub async fn s3_client() -> aws_sdk_s3::Client {
    s3_client_at(&s3_endpoint()).await
}

/// A client of the S3 server at `endpoint`, with the test credentials.
pub async fn s3_client_at(endpoint: &str) -> aws_sdk_s3::Client {
    static ENV: std::sync::Once = std::sync::Once::new();
    ENV.call_once(|| {
        for (k, v) in S3_ENV {
            std::env::set_var(k, v);
        }
    });
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Runs a future to completion from a synchronous test.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// Creates a bucket on the test S3 server (once per name) and returns its name.
pub fn s3_bucket(name: &str) -> String {
    create_bucket(name, false)
}

/// Creates a bucket with object lock (and so versioning) enabled.
pub fn s3_bucket_with_object_lock(name: &str) -> String {
    create_bucket(name, true)
}

fn create_bucket(name: &str, object_lock: bool) -> String {
    let bucket = format!("lbt-{name}-{}", std::process::id());
    block_on(async {
        let client = s3_client().await;
        let req = client
            .create_bucket()
            .bucket(&bucket)
            .object_lock_enabled_for_bucket(object_lock);
        if let Err(e) = req.send().await {
            let owned = e
                .as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you());
            assert!(
                owned,
                "cannot create bucket {bucket} on the test S3 server at {} ({}).\n\
                 Start it with: eval \"$(scripts/services.sh start)\" (or run scripts/test.sh)",
                s3_endpoint(),
                aws_sdk_s3::error::DisplayErrorContext(&e)
            );
        }
    });
    bucket
}

/// Copies every file under `dir` to `s3://bucket/prefix/<relative path>`.
pub fn mirror_to_s3(dir: &Path, bucket: &str, prefix: &str) {
    block_on(async {
        let client = s3_client().await;
        for rel in files_under(dir) {
            let body = std::fs::read(dir.join(&rel)).unwrap();
            client
                .put_object()
                .bucket(bucket)
                .key(format!("{prefix}/{rel}"))
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
    });
}

/// Every key in the bucket under `prefix`.
pub fn s3_keys(bucket: &str, prefix: &str) -> Vec<String> {
    block_on(async {
        let client = s3_client().await;
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            for o in page.unwrap().contents() {
                keys.push(o.key().unwrap().to_string());
            }
        }
        keys.sort();
        keys
    })
}

/// The flags that point a binary at the test S3 server.
pub fn s3_flags() -> Vec<String> {
    vec![
        "--s3-endpoint".into(),
        s3_endpoint(),
        "--s3-path-style".into(),
    ]
}

pub fn command(name: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    // Tests never read a developer's config or default repository.
    cmd.env_remove("LIFEBOAT_CONFIG")
        .env_remove("LIFEBOAT_REPO")
        .env_remove("PGPASSWORD")
        .env("LIFEBOAT_LOG", "info")
        .envs(S3_ENV.iter().copied())
        .stdin(Stdio::null());
    if let Ok(dir) = std::env::var("LIFEBOAT_TEST_PG_BIN") {
        cmd.env(
            "PATH",
            format!("{dir}:{}", std::env::var("PATH").unwrap_or_default()),
        );
    }
    cmd
}

/// Runs a binary to completion. Every run also checks that no password leaked into the output.
pub fn run(name: &str, args: &[&str]) -> Run {
    finish(command(name).args(args).output().unwrap())
}

/// `lifeboat-restore` of `job`'s latest snapshot in `repo` into `target`, without asking, with
/// `extra` flags.
pub fn restore_latest(repo: &TempDir, job: &str, target: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "--repo",
        repo.as_str(),
        "--job",
        job,
        "--latest",
        "--to",
        target,
        "--yes",
    ];
    args.extend_from_slice(extra);
    run("lifeboat-restore", &args)
}

pub fn finish(out: Output) -> Run {
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.output().contains(PG_PASSWORD),
        "a password leaked into the output:\n{}",
        run.output()
    );
    run
}

/// Files under a directory (relative paths), for checking what a run left behind.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The data objects of a repository's snapshots (committed or not).
pub fn data_objects(repo: &Path) -> Vec<PathBuf> {
    files_under(repo)
        .into_iter()
        .filter(|f| f.contains("/snapshots/") && !f.ends_with("manifest.json"))
        .map(|f| repo.join(f))
        .collect()
}

/// Everything a restore must bring back, as digests: the ordered rows of every table and
/// materialized view, sequence states, large objects, and the definitions of views, functions,
/// triggers, indexes, constraints, types and comments.
pub fn db_digest(url: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let relations = sql(
        url,
        "SELECT format('%I.%I', n.nspname, c.relname), c.relkind FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
    );
    for row in relations {
        let name = row[0].clone().unwrap();
        let kind = row[1].clone().unwrap();
        let query = if kind == "S" {
            format!("SELECT last_value || '/' || is_called FROM {name}")
        } else {
            format!("SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {name} t")
        };
        out.insert(format!("{kind} {name}"), sql_one(url, &query));
    }
    // Each query yields one text column; the digest is over its values in order.
    let catalog_queries = [
        ("large objects", "SELECT oid::text || ':' || md5(lo_get(oid)) FROM pg_largeobject_metadata"),
        ("views", "SELECT schemaname || '.' || viewname || '=' || md5(definition) FROM pg_views WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"),
        ("functions", "SELECT p.oid::regprocedure::text || '=' || md5(pg_get_functiondef(p.oid)) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"),
        ("triggers", "SELECT tgname || '=' || md5(pg_get_triggerdef(oid)) FROM pg_trigger WHERE NOT tgisinternal"),
        ("indexes", "SELECT indexname || '=' || md5(indexdef) FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"),
        ("constraints", "SELECT conname || '=' || md5(pg_get_constraintdef(c.oid)) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"),
        ("enums", "SELECT t.typname || '.' || lpad(e.enumsortorder::text, 8) || e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid"),
        ("comments", "SELECT d.description FROM pg_description d JOIN pg_class c ON c.oid = d.objoid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"),
        ("partitions", "SELECT c.relname || '=' || pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relispartition"),
    ];
    for (what, query) in catalog_queries {
        let wrapped = format!("SELECT string_agg(x, ',' ORDER BY x) FROM ({query}) AS s(x)");
        out.insert(what.to_string(), sql_one(url, &wrapped));
    }
    out
}

/// The single committed manifest of a job in a repository.
pub fn manifests(repo: &Path, job: &str) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = files_under(&repo.join(format!("jobs/{job}/snapshots")))
        .into_iter()
        .filter(|f| f.ends_with("manifest.json"))
        .map(|f| {
            let path = repo.join(format!("jobs/{job}/snapshots")).join(f);
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        })
        .collect();
    out.sort_by_key(|m| m["id"].as_str().unwrap().to_string());
    out
}

/// Rewrites the manifest of a job's only snapshot in a local repository (to stand for a
/// tampered or old snapshot).
pub fn edit_manifest(repo: &Path, job: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let snapshots = repo.join(format!("jobs/{job}/snapshots"));
    let paths: Vec<PathBuf> = files_under(&snapshots)
        .into_iter()
        .filter(|f| f.ends_with("manifest.json"))
        .map(|f| snapshots.join(f))
        .collect();
    assert_eq!(paths.len(), 1, "{paths:?}");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&paths[0]).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&paths[0], serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

/// `lifeboat-backup --engine postgres --url URL --repo REPO --job JOB EXTRA...`.
pub fn backup_pg(url: &str, repo: &str, job: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "--engine", "postgres", "--url", url, "--repo", repo, "--job", job,
    ];
    args.extend_from_slice(extra);
    run("lifeboat-backup", &args)
}

/// `lifeboat-backup --repo REPO prune JOB` under a policy file holding `policy` (written beside
/// the repository, so a test does not depend on the presets), with `extra` flags.
pub fn prune_with_policy(repo: &TempDir, job: &str, policy: &str, extra: &[&str]) -> Run {
    let file = repo.path().with_extension("policy.toml");
    std::fs::write(&file, policy).unwrap();
    let mut args = vec![
        "--repo",
        repo.as_str(),
        "prune",
        job,
        "--retention",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run("lifeboat-backup", &args)
}

/// Backs up a tiny database once as `job` and returns the snapshot folder.
pub fn real_snapshot(repo: &TempDir, job: &str) -> std::path::PathBuf {
    let db = TestDb::create("ret");
    sql(
        &db.url(),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3)",
    );
    backup_pg(&db.url(), repo.as_str(), job, &[]).assert_code(0);
    let id = manifests(repo.path(), job).last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    repo.join(&format!("jobs/{job}/snapshots/{id}"))
}

/// Copies a committed snapshot as a new one consistent at `at` (same data, so digests hold).
pub fn clone_snapshot(
    repo: &TempDir,
    from: &std::path::Path,
    job: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> String {
    let id = format!(
        "{}-{:06x}",
        at.format("%Y%m%dT%H%M%SZ"),
        at.timestamp() as u32 & 0xff_ffff
    );
    let folder = repo.join(&format!("jobs/{job}/snapshots/{id}"));
    std::fs::create_dir_all(&folder).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(from.join("manifest.json")).unwrap()).unwrap();
    let data_name = manifest["object"]["key"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    std::fs::copy(from.join(&data_name), folder.join(&data_name)).unwrap();
    manifest["id"] = id.clone().into();
    manifest["job"] = job.into();
    for field in ["started_at", "finished_at", "consistent_at"] {
        manifest[field] = at.to_rfc3339().into();
    }
    manifest["object"]["key"] = format!("jobs/{job}/snapshots/{id}/{data_name}").into();
    std::fs::write(
        folder.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    id
}

/// (repo argument, extra flags) for the local and the S3 store.
pub fn lock_repos(label: &str, dir: &TempDir) -> Vec<(String, Vec<String>)> {
    let bucket = s3_bucket("locks");
    vec![
        (dir.as_str().to_string(), vec![]),
        (
            format!("s3://{bucket}/{label}-{}", std::process::id()),
            s3_flags(),
        ),
    ]
}

pub fn backup_cmd(repo: &str, flags: &[String], url: &str) -> Command {
    let mut cmd = command("lifeboat-backup");
    cmd.args([
        "--engine", "postgres", "--url", url, "--repo", repo, "--job", "app",
    ])
    .args(flags);
    cmd
}

pub fn lock_json(host: &str, expires_in_secs: i64) -> String {
    let now = chrono::Utc::now();
    serde_json::json!({
        "owner": "lifeboat-backup",
        "host": host,
        "pid": 4242,
        "token": "0123456789abcdef01234567",
        "started_at": now - chrono::Duration::hours(1),
        "expires_at": now + chrono::Duration::seconds(expires_in_secs),
    })
    .to_string()
}

/// Runs `work` on the store of `repo` (a directory, or S3 with `lock_repos`' flags).
fn with_store<T>(
    repo: &str,
    flags: &[String],
    work: impl AsyncFnOnce(lifeboat_core::store::AnyStore) -> T,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let endpoint = flags.get(1).cloned();
        let options = lifeboat_core::store::S3Options {
            endpoint,
            path_style: true,
            ..Default::default()
        };
        work(lifeboat_core::store::open(repo, &options).await.unwrap()).await
    })
}

/// Writes a lock object as another run would have.
pub fn plant_lock(repo: &str, flags: &[String], body: &str) {
    with_store(repo, flags, async |store| {
        let key = lifeboat_core::lock::lock_key("app").unwrap();
        lifeboat_core::store::Store::put(&store, &key, body.as_bytes())
            .await
            .unwrap();
    });
}

/// The lock of job `app`, if any.
pub fn current_lock(repo: &str, flags: &[String]) -> Option<lifeboat_core::lock::LockInfo> {
    with_store(repo, flags, async |store| {
        lifeboat_core::lock::current(&store, "app").await.unwrap()
    })
}

/// A small file system mounted for one test (full-disk cases), unmounted when dropped. CI runs
/// as root; a machine where mounting fails fails the test with the reason, never skips it.
pub struct Mount {
    pub dir: TempDir,
    image: Option<PathBuf>,
}

impl Mount {
    /// A tmpfs of `size` (e.g. "1m", or a number of bytes, rounded down to whole pages).
    pub fn tmpfs(label: &str, size: &str) -> Mount {
        let dir = TempDir::new(label);
        must(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path()),
            "mount a tmpfs (the full-disk tests need root)",
        );
        Mount { dir, image: None }
    }

    /// A loop-mounted ext4 image of `mib` MiB: a real disk file system, where the directory
    /// store writes with O_DIRECT (tmpfs never takes that path).
    pub fn ext4(label: &str, mib: u32) -> Mount {
        let dir = TempDir::new(label);
        let image = std::env::temp_dir().join(format!(
            "lifeboat-test-{label}-{}.ext4",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(u64::from(mib) << 20).unwrap();
        must(
            // No blocks reserved for root: the tests run as root, and free space must be what
            // `df` says.
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&image),
            "make an ext4 image (mkfs.ext4 from e2fsprogs; scripts/services.sh installs it)",
        );
        must(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(dir.path()),
            "loop-mount an ext4 image (the full-disk tests need root and a loop device)",
        );
        Mount {
            dir,
            image: Some(image),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// Fills the file system until it refuses another byte; returns the filler's path.
    pub fn fill(&self) -> PathBuf {
        let filler = self.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0x5au8; 64 * 1024];
        loop {
            use std::io::Write;
            if f.write_all(&block).and_then(|_| f.sync_all()).is_err() {
                break;
            }
        }
        // Single bytes too, so not even a small file fits.
        loop {
            use std::io::Write;
            if f.write_all(b"x").and_then(|_| f.sync_all()).is_err() {
                break;
            }
        }
        filler
    }

    /// Leaves `free_kib` KiB free by filling the rest.
    pub fn leave_free(&self, free_kib: u64) {
        let stat = Command::new("df")
            .args(["--output=avail", "-k"])
            .arg(self.path())
            .output()
            .unwrap();
        let avail: u64 = String::from_utf8_lossy(&stat.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap();
        let filler = std::fs::File::create(self.join("filler")).unwrap();
        let take = avail.saturating_sub(free_kib) * 1024;
        std::io::Write::write_all(&mut &filler, &vec![0x5au8; take as usize]).unwrap();
        filler.sync_all().unwrap();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
    }
}

#[track_caller]
fn must(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot {what}: {e}"));
    assert!(
        out.status.success(),
        "cannot {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A redis-server of the test's own on a free loopback port (Debian's redis-server, which
/// scripts/services.sh installs), stopped when dropped.
pub struct OwnRedis {
    child: std::process::Child,
    pub url: String,
    _dir: TempDir,
}

impl OwnRedis {
    pub fn start(label: &str) -> OwnRedis {
        OwnRedis::start_loading(label, None)
    }

    /// A server that loads `rdb` (as its `dump.rdb`) when it starts: what redis-server itself
    /// makes of a file.
    pub fn start_loading(label: &str, rdb: Option<&[u8]>) -> OwnRedis {
        let dir = TempDir::new(label);
        if let Some(rdb) = rdb {
            std::fs::write(dir.join("dump.rdb"), rdb).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--enable-debug-command", "yes"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/services.sh installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..100 {
            let answering = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
                use std::io::{Read, Write};
                let mut reply = [0u8; 5];
                s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG"
            });
            if answering {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        OwnRedis {
            child,
            url,
            _dir: dir,
        }
    }

    pub fn client(&self) -> resp::Redis {
        resp::Redis::connect(&self.url)
    }

    /// Sends a signal (e.g. "STOP", "CONT") to the server process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `len` bytes that no compressor shrinks (a fixed-seed xorshift stream).
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The bin directory of the test PostgreSQL's client programs (scripts/services.sh).
pub fn pg_bin() -> String {
    std::env::var("LIFEBOAT_TEST_PG_BIN").unwrap_or_else(|_| {
        panic!(
            "LIFEBOAT_TEST_PG_BIN is not set: run eval \"$(scripts/services.sh start)\" (or scripts/test.sh)"
        )
    })
}

/// A folder of executable shell scripts, e.g. stand-ins for pg_dump given as `--pg-bin-dir`.
pub fn script_tools(label: &str, scripts: &[(&str, String)]) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new(label);
    for (name, body) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// A pg_dump stand-in that answers `--version` as the real one and otherwise runs `body`.
pub fn fake_pg_dump(label: &str, body: &str) -> TempDir {
    let real = pg_bin();
    script_tools(
        label,
        &[(
            "pg_dump",
            format!("case \"$1\" in --version) exec '{real}/pg_dump' --version;; esac\n{body}\n"),
        )],
    )
}
