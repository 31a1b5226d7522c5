//! Recovery beyond one job: a whole-system restore at one instant, pins, forgetting one
//! snapshot by id, and a PostgreSQL snapshot written out as a verified dump file. Real
//! binaries against real servers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use lifeboat_tests::redis::dbsize;
use lifeboat_tests::*;

/// Three jobs of one application: a PostgreSQL database, a Redis server and an uploads folder.
struct App {
    db: TestDb,
    redis: OwnRedis,
    uploads: TempDir,
    repo: TempDir,
    config: std::path::PathBuf,
}

impl App {
    fn new(label: &str) -> App {
        let db = TestDb::create(label);
        sql(
            &db.url(),
            "CREATE TABLE orders (id int PRIMARY KEY, state text)",
        );
        let redis = OwnRedis::start(&format!("{label}-redis"));
        let uploads = TempDir::new(&format!("{label}-uploads"));
        let repo = TempDir::new(&format!("{label}-repo"));
        let config = repo.path().with_extension("toml");
        std::fs::write(
            &config,
            format!(
                r#"[store]
url = "{repo}"

[[job]]
name = "uploads"
engine = "files"
paths = ["{uploads}"]
restore-to = "${{RESTORE_UPLOADS_DIR:-}}"

[[job]]
name = "app-db"
engine = "postgres"
url = "{db}"
restore-to = "${{RESTORE_APP_DB_URL:-}}"

[[job]]
name = "cache"
engine = "redis"
url = "{redis}"
restore-to = "${{RESTORE_CACHE_URL:-}}"
"#,
                repo = repo.as_str(),
                uploads = uploads.as_str(),
                db = db.url(),
                redis = redis.url,
            ),
        )
        .unwrap();
        App {
            db,
            redis,
            uploads,
            repo,
            config,
        }
    }

    /// Writes state `n` into all three sources: rows, keys and files that differ per state.
    fn set_state(&self, n: u32) {
        sql(
            &self.db.url(),
            &format!(
                "DELETE FROM orders; INSERT INTO orders SELECT g, 'state {n}' FROM generate_series(1, {}) g",
                10 * n
            ),
        );
        let mut r = self.redis.client();
        r.ok("FLUSHALL");
        for i in 0..(5 * n) {
            r.cmd(&[
                b"SET",
                format!("key:{i}").as_bytes(),
                format!("state {n}").as_bytes(),
            ]);
        }
        for entry in std::fs::read_dir(self.uploads.path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for i in 0..n {
            std::fs::write(
                self.uploads.join(&format!("upload-{i}.txt")),
                format!("state {n}, file {i}"),
            )
            .unwrap();
        }
    }

    fn backup(&self) {
        run(
            "lifeboat-backup",
            &["--config", self.config.to_str().unwrap()],
        )
        .assert_code(0);
    }

    fn restore(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = command("lifeboat-restore");
        cmd.args(["--config", self.config.to_str().unwrap()])
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        finish(cmd.output().unwrap())
    }
}

/// The rows, keys and files of state `n`, read back from restored targets.
fn assert_state(n: u32, db_url: &str, redis: &OwnRedis, dir: &Path) {
    assert_eq!(
        sql(
            db_url,
            "SELECT id::text, state FROM orders ORDER BY orders.id"
        ),
        (1..=10 * n)
            .map(|i| vec![Some(i.to_string()), Some(format!("state {n}"))])
            .collect::<Vec<_>>(),
        "PostgreSQL rows of state {n}"
    );
    let mut r = redis.client();
    assert_eq!(dbsize(&mut r, 0), 5 * n as i64, "Redis keys of state {n}");
    for i in 0..(5 * n) {
        assert_eq!(
            r.cmd(&[b"GET", format!("key:{i}").as_bytes()]).text(),
            format!("state {n}")
        );
    }
    let mut files = files_under(dir);
    files.sort();
    let expected: Vec<String> = (0..n).map(|i| format!("upload-{i}.txt")).collect();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(names, expected, "files of state {n}: {files:?}");
    for i in 0..n {
        let found = files
            .iter()
            .find(|f| f.ends_with(&format!("upload-{i}.txt")))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(found)).unwrap(),
            format!("state {n}, file {i}")
        );
    }
}

fn pause() {
    std::thread::sleep(std::time::Duration::from_millis(1500));
}

fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Backs up states 1, 2 and 3 and returns an instant between the second and third backups.
fn three_states(app: &App) -> String {
    app.set_state(1);
    app.backup();
    pause();
    app.set_state(2);
    app.backup();
    pause();
    let between = rfc3339_now();
    pause();
    app.set_state(3);
    app.backup();
    between
}

#[test]
fn a_whole_system_restore_at_an_instant_brings_back_every_job_as_it_was_then() {
    let app = App::new("system");
    let between = three_states(&app);
    let target_db = TestDb::create("system_target");
    let target_redis = OwnRedis::start("system-target-redis");
    let target_dir = TempDir::new("system-target-files");
    let restored = target_dir.join("uploads");
    let env = [
        ("RESTORE_APP_DB_URL", target_db.url()),
        ("RESTORE_CACHE_URL", target_redis.url.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The uploads' target from the flag, the others from restore-to.
    let to_uploads = format!("uploads={}", restored.display());
    let args = ["--all-jobs", "--at", &between, "--to", &to_uploads, "--yes"];

    let dry = app.restore(&[&args[..], &["--dry-run"]].concat(), &env);
    dry.assert_code(0)
        .assert_contains("Whole-system restore plan")
        .assert_contains("skew:")
        .assert_contains("Dry run: nothing was changed.");
    // Databases first, then files.
    let out = dry.output();
    let order: Vec<usize> = ["app-db", "cache", "uploads"]
        .iter()
        .map(|job| out.find(&format!(". {job}")).expect(job))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert_eq!(
        sql_one(
            &target_db.url(),
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
    assert_eq!(dbsize(&mut target_redis.client(), 0), 0);
    assert!(!restored.exists());

    let json = app.restore(&[&args[..], &["--dry-run", "--json"]].concat(), &env);
    let plan = &json.json()["plan"];
    assert_eq!(plan["jobs"].as_array().unwrap().len(), 3, "{plan}");
    assert!(plan["skew_secs"].as_i64().unwrap() >= 0);

    app.restore(&args, &env).assert_code(0);
    assert_state(2, &target_db.url(), &target_redis, &restored);
    // The sources are untouched: still state 3.
    assert_state(3, &app.db.url(), &app.redis, app.uploads.path());
}

#[test]
fn a_job_without_a_snapshot_before_the_instant_refuses_the_whole_plan() {
    let app = App::new("system_missing");
    app.set_state(1);
    // Only the database and Redis have a snapshot before `before`; uploads' first comes after.
    run(
        "lifeboat-backup",
        &["--config", app.config.to_str().unwrap(), "app-db", "cache"],
    )
    .assert_code(0);
    pause();
    let before = rfc3339_now();
    pause();
    app.backup();
    let target_db = TestDb::create("system_missing_target");
    let target_redis = OwnRedis::start("system-missing-target-redis");
    let dir = TempDir::new("system-missing-files");
    let (db_to, cache_to) = (
        format!("app-db={}", target_db.url()),
        format!("cache={}", target_redis.url),
    );
    let uploads_to = format!("uploads={}", dir.join("u").display());
    let args = [
        "--all-jobs",
        "--at",
        &before,
        "--to",
        &db_to,
        "--to",
        &cache_to,
        "--to",
        &uploads_to,
        "--yes",
    ];
    app.restore(&args, &[])
        .assert_code(2)
        .assert_contains("no whole-system restore")
        .assert_contains("uploads")
        .assert_contains("--allow-missing");
    assert_eq!(
        sql_one(
            &target_db.url(),
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
    let allowed = app.restore(&[&args[..], &["--allow-missing"]].concat(), &[]);
    allowed
        .assert_code(0)
        .assert_contains("missing     uploads");
    assert_eq!(
        sql_one(&target_db.url(), "SELECT count(*) FROM orders"),
        "10"
    );
    assert!(!dir.join("u").exists());
}

#[test]
fn a_failure_in_the_second_job_reports_the_first_and_does_not_start_the_third() {
    let app = App::new("system_fail");
    app.set_state(1);
    app.backup();
    // Damage the Redis snapshot's data: its restore reads it whole and fails before any key.
    let cache = manifests(app.repo.path(), "cache");
    let key = cache[0]["object"]["key"].as_str().unwrap();
    let data = app.repo.join(key);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let target_db = TestDb::create("system_fail_target");
    let target_redis = OwnRedis::start("system-fail-target-redis");
    let dir = TempDir::new("system-fail-files");
    let (db_to, cache_to, uploads_to) = (
        format!("app-db={}", target_db.url()),
        format!("cache={}", target_redis.url),
        format!("uploads={}", dir.join("u").display()),
    );
    let args = [
        "--all-jobs",
        "--latest",
        "--to",
        &db_to,
        "--to",
        &cache_to,
        "--to",
        &uploads_to,
        "--yes",
    ];
    let out = app.restore(&args, &[]);
    out.assert_code(3)
        .assert_contains("ok          app-db")
        .assert_contains("FAILED      cache")
        .assert_contains("not started uploads");
    assert_eq!(
        sql_one(&target_db.url(), "SELECT count(*) FROM orders"),
        "10"
    );
    assert_eq!(dbsize(&mut target_redis.client(), 0), 0);
    assert!(!dir.join("u").exists());

    // The same in JSON: one document with every job's outcome, and the failure's exit code.
    let target_db2 = TestDb::create("system_fail_target2");
    let db_to2 = format!("app-db={}", target_db2.url());
    let args2 = [
        "--all-jobs",
        "--latest",
        "--to",
        &db_to2,
        "--to",
        &cache_to,
        "--to",
        &uploads_to,
        "--yes",
        "--json",
    ];
    let json = app.restore(&args2, &[]);
    json.assert_code(3);
    let doc = json.json();
    assert_eq!(doc["ok"], false);
    let outcomes: Vec<&str> = doc["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["restored", "failed", "not_started"], "{doc}");
}

#[test]
fn whole_system_flags_are_checked_before_anything_is_read() {
    let app = App::new("system_flags");
    app.set_state(1);
    app.backup();
    app.restore(
        &[
            "--all-jobs",
            "--latest",
            "--to",
            "postgres://h/db",
            "--dry-run",
        ],
        &[],
    )
    .assert_code(2)
    .assert_contains("JOB=URL");
    app.restore(&["--all-jobs", "--latest", "--dry-run"], &[])
        .assert_code(2)
        .assert_contains("has no restore target")
        .assert_contains("restore-to");
    app.restore(
        &["--all-jobs", "--latest", "--db-map", "0:1", "--dry-run"],
        &[],
    )
    .assert_code(2)
    .assert_contains("--db-map applies to one job");
    app.restore(&["--job", "app-db", "--job", "cache", "--dry-run"], &[])
        .assert_code(2)
        .assert_contains("--at TIME or --latest");
    app.restore(
        &["--all-jobs", "--latest", "--to", "nope=/tmp/x", "--dry-run"],
        &[],
    )
    .assert_code(2)
    .assert_contains("does not include");
}

#[test]
fn a_pinned_snapshot_survives_the_prune_that_would_forget_it() {
    let repo = TempDir::new("pin");
    let first = real_snapshot(&repo, "app");
    let id = first.file_name().unwrap().to_str().unwrap().to_string();
    let now = chrono::Utc::now();
    // Make the real one the oldest: keep-last 1 would forget it.
    edit_manifest(repo.path(), "app", |m| {
        m["consistent_at"] = (now - chrono::Duration::days(30)).to_rfc3339().into();
    });
    for days in 1..=3 {
        clone_snapshot(
            &repo,
            &first,
            "app",
            now - chrono::Duration::days(10 - days),
        );
    }
    let note = "before the v2 migration";
    run(
        "lifeboat-backup",
        &["--repo", repo.as_str(), "pin", "app", &id, "--note", note],
    )
    .assert_code(0)
    .assert_contains("Pinned snapshot");
    let pin = first.join("pin.json");
    assert!(pin.exists(), "the pin is an object beside the manifest");
    let manifest_before = std::fs::read(first.join("manifest.json")).unwrap();

    let prune_with = |extra: &[&str]| prune_with_policy(&repo, "app", "keep-last = 1\n", extra);
    let prune = || prune_with(&[]);
    let dry = prune_with(&["--dry-run"]);
    dry.assert_code(0);
    let line = dry
        .output()
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{}", dry.output()))
        .to_string();
    assert!(
        line.contains("keep") && line.contains(&format!("pinned: {note}")),
        "{line}"
    );

    prune().assert_code(0);
    assert!(
        first.join("manifest.json").exists(),
        "the pinned snapshot was forgotten"
    );
    assert_eq!(
        std::fs::read(first.join("manifest.json")).unwrap(),
        manifest_before
    );
    assert_eq!(
        manifests(repo.path(), "app").len(),
        2,
        "keep-last 1 plus the pinned one"
    );

    let list = run("lifeboat-restore", &["--repo", repo.as_str(), "list"]);
    list.assert_code(0)
        .assert_contains(&format!("pinned: {note}"));
    let json = run(
        "lifeboat-restore",
        &["--repo", repo.as_str(), "list", "--json"],
    )
    .json();
    let pinned: Vec<&serde_json::Value> = json["jobs"][0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pin"]["note"] == note)
        .collect();
    assert_eq!(pinned.len(), 1, "{json}");

    // Unpinned, the next prune forgets it.
    run(
        "lifeboat-backup",
        &["--repo", repo.as_str(), "unpin", "app", &id],
    )
    .assert_code(0)
    .assert_contains("Unpinned");
    assert!(!pin.exists());
    prune().assert_code(0);
    assert!(!first.exists(), "unpinned, the snapshot is forgotten");

    // A snapshot that does not exist cannot be pinned.
    run(
        "lifeboat-backup",
        &[
            "--repo",
            repo.as_str(),
            "pin",
            "app",
            "20200101T000000Z-000000",
        ],
    )
    .assert_code(1)
    .assert_contains("has no snapshot");
    run(
        "lifeboat-backup",
        &["--repo", repo.as_str(), "pin", "app", "not-an-id"],
    )
    .assert_code(2)
    .assert_contains("is not a snapshot id");
}

#[test]
fn forget_refuses_the_newest_and_a_pinned_snapshot_unless_forced() {
    let repo = TempDir::new("forget");
    let first = real_snapshot(&repo, "app");
    let now = chrono::Utc::now();
    let older = clone_snapshot(&repo, &first, "app", now - chrono::Duration::days(3));
    let oldest = clone_snapshot(&repo, &first, "app", now - chrono::Duration::days(5));
    let newest = first.file_name().unwrap().to_str().unwrap().to_string();
    let forget = |id: &str, extra: &[&str]| {
        let mut args = vec!["--repo", repo.as_str(), "forget", "app", id];
        args.extend_from_slice(extra);
        run("lifeboat-backup", &args)
    };

    forget(&newest, &[])
        .assert_code(2)
        .assert_contains("newest snapshot")
        .assert_contains("--force");
    forget(&newest, &["--dry-run"]).assert_code(2);
    assert!(first.join("manifest.json").exists());

    run(
        "lifeboat-backup",
        &["--repo", repo.as_str(), "pin", "app", &older],
    )
    .assert_code(0);
    forget(&older, &[]).assert_code(2).assert_contains("pinned");

    // Unguarded: a dry run says so and keeps it; the real run forgets it whole.
    forget(&oldest, &["--dry-run"])
        .assert_code(0)
        .assert_contains("Would forget");
    let oldest_dir = repo.join(&format!("jobs/app/snapshots/{oldest}"));
    assert!(oldest_dir.join("manifest.json").exists());
    forget(&oldest, &[])
        .assert_code(0)
        .assert_contains("Forgot snapshot");
    assert!(!oldest_dir.exists());

    // --force (no terminal here, so no question) overrides the guards and says which.
    forget(&older, &["--force"])
        .assert_code(0)
        .assert_contains("--force: it is pinned");
    assert_eq!(manifests(repo.path(), "app").len(), 1);
    forget(&oldest, &[])
        .assert_code(1)
        .assert_contains("has no snapshot");
}

#[test]
fn mode_file_writes_a_verified_pg_dump_that_pg_restore_accepts() {
    let repo = TempDir::new("pg-file");
    real_snapshot(&repo, "app");
    let out = TempDir::new("pg-file-out");
    let file = out.join("app.dump");
    let to = file.to_str().unwrap();
    let restore = |extra: &[&str]| {
        let args: Vec<&str> = ["--mode", "file"].iter().chain(extra).copied().collect();
        restore_latest(&repo, "app", to, &args)
    };
    restore(&["--dry-run"])
        .assert_code(0)
        .assert_contains("pg_dump custom archive");
    assert!(!file.exists());
    restore(&[]).assert_code(0);
    let manifest = &manifests(repo.path(), "app")[0];
    let bytes = std::fs::read(&file).unwrap();
    // The file is the raw dump: the digest the manifest records (BLAKE3, since it was stored
    // compressed) is the file's.
    use lifeboat_core::pipeline::{Algorithm, RawDigest};
    assert_eq!(
        RawDigest::of(Algorithm::Blake3, &bytes)
            .digest()
            .to_string(),
        manifest["object"]["raw_blake3"].as_str().unwrap()
    );
    let list = std::process::Command::new(format!("{}/pg_restore", pg_bin()))
        .args(["--list", to])
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(String::from_utf8_lossy(&list.stdout).contains("TABLE public t"));
    // An existing file is kept unless --clean; nothing is left beside it.
    restore(&[]).assert_code(2).assert_contains("exists");
    restore(&["--clean"]).assert_code(0);
    assert_eq!(files_under(out.path()), ["app.dump"]);
}

/// The snapshot ids of `job` in a repository, as `lifeboat-restore list --json` shows them.
fn listed(repo: &str, extra: &[&str], job: &str) -> Vec<String> {
    let mut args = vec!["list", "--repo", repo, "--job", job, "--json"];
    args.extend_from_slice(extra);
    let doc = run("lifeboat-restore", &args).json();
    let mut ids: Vec<String> = doc["jobs"][0]["snapshots"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[test]
fn a_copy_to_s3_and_back_verifies_and_restores_identically() {
    let db = TestDb::create("copy_src");
    sql(
        &db.url(),
        "CREATE TABLE items (id int PRIMARY KEY, body text); \
         INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 500) g",
    );
    let repo = TempDir::new("copy-src");
    backup_pg(&db.url(), repo.as_str(), "app", &[]).assert_code(0);
    sql(&db.url(), "INSERT INTO items VALUES (501, 'second')");
    backup_pg(&db.url(), repo.as_str(), "app", &[]).assert_code(0);
    let bucket = s3_bucket("copy");
    let offsite = format!("s3://{bucket}/offsite");
    let s3 = s3_flags();
    let to_s3 = |extra: &[&str]| {
        let mut args = vec!["--repo", repo.as_str(), "copy", "--to-repo", &offsite];
        args.extend(["--to-endpoint", &s3[1], "--to-path-style"]);
        args.extend_from_slice(extra);
        run("lifeboat-backup", &args)
    };

    to_s3(&["--dry-run"])
        .assert_code(0)
        .assert_contains("Would copy 2 snapshots");
    assert!(s3_keys(&bucket, "offsite/").is_empty(), "a dry run wrote");
    to_s3(&[])
        .assert_code(0)
        .assert_contains("Copied 2 snapshots");
    let s3_args: Vec<&str> = s3.iter().map(String::as_str).collect();
    assert_eq!(
        listed(&offsite, &s3_args, "app"),
        listed(repo.as_str(), &[], "app")
    );
    // A second run copies nothing new.
    to_s3(&[])
        .assert_code(0)
        .assert_contains("Copied 0 snapshots (0 B) of job \"app\"")
        .assert_contains("2 already there");

    // The copy verifies on its own, without the first repository.
    let mut verify = vec![
        "--repo",
        offsite.as_str(),
        "--job",
        "app",
        "--all",
        "--level",
        "content",
    ];
    verify.extend(&s3_args);
    run("lifeboat-verify", &verify).assert_code(0);

    // And back, from S3 into another directory: the manifests are byte for byte the same.
    let back = TempDir::new("copy-back");
    let mut args = vec![
        "--repo",
        offsite.as_str(),
        "copy",
        "--to-repo",
        back.as_str(),
    ];
    args.extend(&s3_args);
    run("lifeboat-backup", &args)
        .assert_code(0)
        .assert_contains("Copied 2 snapshots");
    for id in listed(repo.as_str(), &[], "app") {
        let manifest = format!("jobs/app/snapshots/{id}/manifest.json");
        assert_eq!(
            std::fs::read(back.join(&manifest)).unwrap(),
            std::fs::read(repo.join(&manifest)).unwrap()
        );
    }
    let target = TestDb::create("copy_target");
    run(
        "lifeboat-restore",
        &[
            "--repo",
            back.as_str(),
            "--job",
            "app",
            "--latest",
            "--to",
            &target.url(),
            "--yes",
        ],
    )
    .assert_code(0);
    assert_eq!(db_digest(&target.url()), db_digest(&db.url()));
}

#[test]
fn an_interrupted_copy_leaves_no_snapshot_and_the_next_run_completes_it() {
    let data = TempDir::new("copy-kill-data");
    std::fs::write(data.join("big.bin"), incompressible(48 << 20, 7)).unwrap();
    let repo = TempDir::new("copy-kill-src");
    run(
        "lifeboat-backup",
        &[
            "--engine",
            "files",
            "--path",
            data.as_str(),
            "--job",
            "uploads",
            "--repo",
            repo.as_str(),
        ],
    )
    .assert_code(0);

    // A destination with too little room: the copy fails mid-object.
    let small = Mount::tmpfs("copy-full", "8m");
    let dest = small.join("repo");
    run(
        "lifeboat-backup",
        &[
            "--repo",
            repo.as_str(),
            "copy",
            "--to-repo",
            dest.to_str().unwrap(),
        ],
    )
    .assert_code(1)
    .assert_contains("No space left on device");
    assert!(
        !files_under(&dest)
            .iter()
            .any(|f| f.ends_with("manifest.json")),
        "{:?}",
        files_under(&dest)
    );

    // Killed mid-object: nothing visible either.
    let dest = TempDir::new("copy-kill-dest");
    let mut child = command("lifeboat-backup")
        .args(["--repo", repo.as_str(), "copy", "--to-repo", dest.as_str()])
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let partial = std::fs::read_dir(dest.join("jobs/uploads/snapshots"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .any(|f| f.file_name().to_string_lossy().contains("lifeboat-tmp"));
        if partial {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the copy ended before it could be killed"
        );
        assert!(started.elapsed().as_secs() < 60, "no upload began");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !files_under(dest.path())
            .iter()
            .any(|f| f.ends_with("manifest.json")),
        "{:?}",
        files_under(dest.path())
    );
    assert!(listed(dest.as_str(), &[], "uploads").is_empty());

    // The killed run's lock on the destination is left behind; the next run on this machine
    // sees that its process has ended, takes it over at once and copies the snapshot whole.
    run(
        "lifeboat-backup",
        &["--repo", repo.as_str(), "copy", "--to-repo", dest.as_str()],
    )
    .assert_code(0)
    .assert_contains("that process has ended on this machine")
    .assert_contains("Copied 1 snapshot");
    run(
        "lifeboat-verify",
        &[
            "--repo",
            dest.as_str(),
            "--job",
            "uploads",
            "--latest",
            "--level",
            "content",
        ],
    )
    .assert_code(0);
}

#[test]
fn copy_tables_run_after_each_backup_and_a_bad_table_names_its_line() {
    let db = TestDb::create("copy_table");
    sql(
        &db.url(),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    );
    let repo = TempDir::new("copy-table-src");
    let second = TempDir::new("copy-table-dest");
    let config = repo.path().with_extension("toml");
    let write = |copy: &str| {
        std::fs::write(
            &config,
            format!(
                "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"app\"\nengine = \"postgres\"\nurl = \"{}\"\n\n{copy}",
                repo.as_str(),
                db.url()
            ),
        )
        .unwrap();
    };
    write(&format!(
        "[[copy]]\nto = {{ url = \"{}\" }}\njobs = [\"app\"]\n",
        second.as_str()
    ));
    let cfg = config.to_str().unwrap();
    run("lifeboat-backup", &["--config", cfg])
        .assert_code(0)
        .assert_contains("Copied 1 snapshot");
    assert_eq!(
        listed(second.as_str(), &[], "app"),
        listed(repo.as_str(), &[], "app")
    );

    // A destination that cannot be written: the backup is committed, the run fails, and the
    // error says how to catch up.
    write("[[copy]]\nto = { url = \"/proc/lifeboat-nowhere\" }\n");
    run("lifeboat-backup", &["--config", cfg])
        .assert_code(1)
        .assert_contains("lifeboat-backup copy app");
    assert_eq!(listed(repo.as_str(), &[], "app").len(), 2);

    write("[[copy]]\nto = { url = \"/tmp/x\" }\njobs = [\"nope\"]\n");
    run("lifeboat-backup", &["--config", cfg, "copy"])
        .assert_code(2)
        .assert_contains(".toml:9:1: [[copy]]")
        .assert_contains("names job \"nope\"");
}

#[test]
fn a_damaged_source_snapshot_is_not_copied() {
    let repo = TempDir::new("copy-damaged");
    let folder = real_snapshot(&repo, "app");
    let manifest = &manifests(repo.path(), "app")[0];
    let data = repo.join(manifest["object"]["key"].as_str().unwrap());
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();
    let dest = TempDir::new("copy-damaged-dest");
    run(
        "lifeboat-backup",
        &["--repo", repo.as_str(), "copy", "--to-repo", dest.as_str()],
    )
    .assert_code(3)
    .assert_contains("is damaged")
    .assert_contains("it was not copied");
    let id = folder.file_name().unwrap().to_str().unwrap();
    assert!(
        !dest.join(&format!("jobs/app/snapshots/{id}")).exists()
            || files_under(&dest.join(&format!("jobs/app/snapshots/{id}"))).is_empty(),
        "{:?}",
        files_under(dest.path())
    );
}

/// The old script's way: `pg_dump | gzip > db_backup_20260101.sql.gz`, and a `pg_dump -Fc`
/// file, both restored with --from-file in one transaction, into an empty database only.
#[test]
fn an_old_scripts_sql_gz_and_custom_dumps_restore_in_one_transaction() {
    let db = TestDb::create("oldsql");
    sql(
        &db.url(),
        "CREATE TABLE invoices (id int PRIMARY KEY, total numeric); \
         INSERT INTO invoices SELECT g, g * 1.5 FROM generate_series(1, 300) g",
    );
    let dir = TempDir::new("oldsql-files");
    let gz = dir.join("db_backup_20260101.sql.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{}/pg_dump --no-owner \"$URL\" | gzip > {}",
            pg_bin(),
            gz.display()
        ))
        .env("URL", db.url())
        .status()
        .unwrap();
    assert!(status.success());
    let custom = dir.join("db_backup_20260101.dump");
    let status = std::process::Command::new(format!("{}/pg_dump", pg_bin()))
        .args(["-Fc", "-f", custom.to_str().unwrap(), &db.url()])
        .status()
        .unwrap();
    assert!(status.success());

    for file in [&gz, &custom] {
        let target = TestDb::create("oldsql_target");
        let restore = |extra: &[&str]| {
            let mut args = vec!["--from-file", file.to_str().unwrap(), "--yes"];
            args.extend_from_slice(extra);
            run("lifeboat-restore", &args)
        };
        restore(&["--to", &target.url(), "--dry-run"])
            .assert_code(0)
            .assert_contains("PostgreSQL");
        restore(&["--to", &target.url()]).assert_code(0);
        assert_eq!(
            db_digest(&target.url()),
            db_digest(&db.url()),
            "{}",
            file.display()
        );
        // The target is no longer empty: refused, unchanged.
        restore(&["--to", &target.url()])
            .assert_code(2)
            .assert_contains("not empty");
    }

    // A truncated .sql.gz: refused before anything is written (one transaction, never half).
    let bytes = std::fs::read(&gz).unwrap();
    let cut = dir.join("cut.sql.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let target = TestDb::create("oldsql_cut");
    run(
        "lifeboat-restore",
        &[
            "--from-file",
            cut.to_str().unwrap(),
            "--to",
            &target.url(),
            "--yes",
        ],
    )
    .assert_code(3);
    assert_eq!(
        sql_one(
            &target.url(),
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
}

#[test]
fn table_and_schema_restore_exactly_the_part_named() {
    let db = TestDb::create("part");
    sql(
        &db.url(),
        "CREATE TABLE orders (id int PRIMARY KEY, total int); \
         INSERT INTO orders SELECT g, g * 3 FROM generate_series(1, 200) g; \
         CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2); \
         CREATE SCHEMA audit; CREATE TABLE audit.log (line text); \
         INSERT INTO audit.log VALUES ('a'), ('b'), ('c')",
    );
    let repo = TempDir::new("part-repo");
    backup_pg(&db.url(), repo.as_str(), "app", &[]).assert_code(0);
    let restore = |target: &str, extra: &[&str]| restore_latest(&repo, "app", target, extra);
    let tables = |url: &str| {
        sql(
            url,
            "SELECT schemaname || '.' || tablename FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        )
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect::<Vec<_>>()
    };
    let rows = |url: &str| sql(url, "SELECT id, total FROM orders ORDER BY id");

    // Into an empty database: exactly that table, with its rows.
    let empty = TestDb::create("part_empty");
    restore(&empty.url(), &["--table", "public.orders", "--dry-run"])
        .assert_code(0)
        .assert_contains("only public.orders");
    assert!(tables(&empty.url()).is_empty());
    restore(&empty.url(), &["--table", "public.orders"]).assert_code(0);
    assert_eq!(tables(&empty.url()), ["public.orders"]);
    assert_eq!(rows(&empty.url()), rows(&db.url()));

    // Into a database that holds other things: they stay; the table itself must not be there.
    let busy = TestDb::create("part_busy");
    sql(
        &busy.url(),
        "CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42)",
    );
    restore(&busy.url(), &["--table", "public.orders"]).assert_code(0);
    assert_eq!(tables(&busy.url()), ["public.keep_me", "public.orders"]);
    restore(&busy.url(), &["--table", "public.orders"])
        .assert_code(2)
        .assert_contains("already has 1 relation of public.orders");
    sql(&busy.url(), "DELETE FROM orders WHERE id > 10");
    restore(&busy.url(), &["--table", "public.orders", "--clean"]).assert_code(0);
    assert_eq!(rows(&busy.url()), rows(&db.url()));
    assert_eq!(sql_one(&busy.url(), "SELECT x FROM keep_me"), "42");

    // A schema, whole.
    let schema = TestDb::create("part_schema");
    restore(&schema.url(), &["--schema", "audit"]).assert_code(0);
    assert_eq!(tables(&schema.url()), ["audit.log"]);
    assert_eq!(
        sql_one(
            &schema.url(),
            "SELECT string_agg(line, '' ORDER BY line) FROM audit.log"
        ),
        "abc"
    );

    // What cannot be asked for in one run is refused before anything is read.
    let other = TestDb::create("part_refused");
    restore(
        &other.url(),
        &["--table", "public.orders", "--table", "audit.log"],
    )
    .assert_code(2)
    .assert_contains("one schema");
    restore(&other.url(), &["--table", "orders"])
        .assert_code(2)
        .assert_contains("SCHEMA.NAME");
    assert!(tables(&other.url()).is_empty());

    // A damaged snapshot: refused whole, the target untouched.
    let manifest = &manifests(repo.path(), "app")[0];
    let data = repo.join(manifest["object"]["key"].as_str().unwrap());
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x40;
    std::fs::write(&data, bytes).unwrap();
    restore(&other.url(), &["--table", "public.orders"]).assert_code(3);
    assert!(tables(&other.url()).is_empty());
}

/// `--table` used to restore what `pg_restore --table` restores: the definition and the rows,
/// without the primary key, the indexes, the constraints, the triggers or the sequence behind
/// a serial column. A table restored at 3 a.m. then took duplicate ids on the next insert.
#[test]
fn a_table_restored_alone_comes_back_with_its_keys_indexes_sequence_and_triggers() {
    let touch = "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql \
                 AS 'BEGIN NEW.note := coalesce(NEW.note, ''touched''); RETURN NEW; END'";
    let db = TestDb::create("table_whole");
    sql(&db.url(), touch);
    sql(
        &db.url(),
        "CREATE TABLE customers (id serial PRIMARY KEY, email text UNIQUE NOT NULL, \
                                 CHECK (email LIKE '%@%')); \
         CREATE INDEX customers_lower_email ON customers (lower(email)); \
         CREATE TABLE orders (id bigserial PRIMARY KEY, \
                              customer_id int NOT NULL REFERENCES customers (id), \
                              total numeric DEFAULT 0, note text); \
         CREATE INDEX orders_customer ON orders (customer_id); \
         CREATE TRIGGER orders_touch BEFORE INSERT ON orders \
             FOR EACH ROW EXECUTE FUNCTION touch(); \
         COMMENT ON TABLE orders IS 'what was sold'; \
         INSERT INTO customers (email) SELECT 'c' || g || '@x.io' FROM generate_series(1, 20) g; \
         INSERT INTO orders (customer_id, total) SELECT 1 + g % 20, g FROM generate_series(1, 100) g",
    );
    let repo = TempDir::new("table-whole-repo");
    backup_pg(&db.url(), repo.as_str(), "app", &[]).assert_code(0);
    let restore = |target: &str, tables: &[&str]| {
        let flags: Vec<&str> = tables.iter().flat_map(|t| ["--table", t]).collect();
        restore_latest(&repo, "app", target, &flags)
    };
    // What a table is besides its rows, as the catalogs say it.
    let shape = |url: &str, table: &str| {
        sql(
            url,
            &format!(
                "SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes WHERE tablename = '{table}' \
                 UNION ALL SELECT 'constraint ' || conname || ': ' || pg_get_constraintdef(oid) \
                   FROM pg_constraint WHERE conrelid = 'public.{table}'::regclass \
                 UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger \
                   WHERE tgrelid = 'public.{table}'::regclass AND NOT tgisinternal \
                 UNION ALL SELECT 'default ' || column_name || ': ' || column_default \
                   FROM information_schema.columns \
                   WHERE table_name = '{table}' AND column_default IS NOT NULL \
                 UNION ALL SELECT 'comment ' || coalesce(obj_description('public.{table}'::regclass), '-') \
                 ORDER BY 1"
            ),
        )
    };
    let rows = |url: &str, table: &str| sql(url, &format!("SELECT * FROM {table} ORDER BY id"));

    // One table: everything that is its own, and its sequence where the source had it.
    let alone = TestDb::create("table_whole_alone");
    restore(&alone.url(), &["public.customers"])
        .assert_code(0)
        .assert_contains("customers_pkey");
    assert_eq!(
        shape(&alone.url(), "customers"),
        shape(&db.url(), "customers")
    );
    assert_eq!(
        rows(&alone.url(), "customers"),
        rows(&db.url(), "customers")
    );
    // The next insert takes the next id, as it would have in the source.
    assert_eq!(
        sql_one(
            &alone.url(),
            "INSERT INTO customers (email) VALUES ('new@x.io') RETURNING id"
        ),
        "21"
    );
    assert!(
        run_sql_fails(
            &alone.url(),
            "INSERT INTO customers (email) VALUES ('c1@x.io')"
        ),
        "the unique constraint was not restored"
    );

    // A table whose foreign key references a table not restored: the key is left out and
    // named; the rest comes, the trigger included (its function is in the target).
    let without = TestDb::create("table_whole_without");
    sql(&without.url(), touch);
    restore(&without.url(), &["public.orders"])
        .assert_code(0)
        .assert_contains("left out")
        .assert_contains("orders_customer_id_fkey");
    let expected: Vec<_> = shape(&db.url(), "orders")
        .into_iter()
        .filter(|r| {
            !r[0]
                .as_deref()
                .unwrap_or_default()
                .contains("orders_customer_id_fkey")
        })
        .collect();
    assert_eq!(shape(&without.url(), "orders"), expected);
    assert_eq!(rows(&without.url(), "orders"), rows(&db.url(), "orders"));
    assert_eq!(
        sql_one(
            &without.url(),
            "INSERT INTO orders (customer_id) VALUES (1) RETURNING id || ' ' || note"
        ),
        "101 touched"
    );

    // Into a bare database without the trigger's function: the trigger is left out and
    // named too, and the rest comes.
    let bare = TestDb::create("table_whole_bare");
    restore(&bare.url(), &["public.orders"])
        .assert_code(0)
        .assert_contains("TRIGGER public orders orders_touch")
        .assert_contains("FK CONSTRAINT public orders orders_customer_id_fkey");
    let expected: Vec<_> = expected
        .into_iter()
        .filter(|r| !r[0].as_deref().unwrap_or_default().contains("orders_touch"))
        .collect();
    assert_eq!(shape(&bare.url(), "orders"), expected);
    assert_eq!(rows(&bare.url(), "orders"), rows(&db.url(), "orders"));

    // Both tables: the foreign key comes too.
    let both = TestDb::create("table_whole_both");
    sql(&both.url(), touch);
    restore(&both.url(), &["public.customers", "public.orders"]).assert_code(0);
    assert_eq!(shape(&both.url(), "orders"), shape(&db.url(), "orders"));
    assert_eq!(
        shape(&both.url(), "customers"),
        shape(&db.url(), "customers")
    );

    // A table the snapshot does not have is refused, naming it and the ones it has, by the
    // dry run as by the real run; nothing is restored.
    let none = TestDb::create("table_whole_none");
    for dry_run in [true, false] {
        let mut flags = vec!["--table", "public.refunds"];
        if dry_run {
            flags.push("--dry-run");
        }
        restore_latest(&repo, "app", &none.url(), &flags)
            .assert_code(2)
            .assert_contains("has no table public.refunds")
            .assert_contains("tables of public in this snapshot: customers, orders");
    }
    assert_eq!(
        sql_one(
            &none.url(),
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
}

/// Whether `query` fails on `url`.
fn run_sql_fails(url: &str, query: &str) -> bool {
    !std::process::Command::new(format!("{}/psql", pg_bin()))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", query, url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn globals_bring_the_roles_to_another_cluster_and_objects_keep_their_owners() {
    use lifeboat_tests::pg_tls::{socket_url, verify_full, TlsDb};
    let role = format!("lbt_owner_{}", std::process::id());
    let drop_role = format!("DROP ROLE IF EXISTS {role}");
    sql(
        &admin_url(),
        &format!("{drop_role}; CREATE ROLE {role} NOLOGIN"),
    );
    let db = TestDb::create("globals");
    sql(
        &db.url(),
        &format!("CREATE TABLE owned (id int); INSERT INTO owned VALUES (7); ALTER TABLE owned OWNER TO {role}"),
    );
    let repo = TempDir::new("globals-repo");
    let config = repo.path().with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"app\"\nengine = \"postgres\"\nurl = \"{}\"\nglobals = true\n",
            repo.as_str(),
            db.url()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    run("lifeboat-backup", &["--config", cfg]).assert_code(0);
    let manifest = &manifests(repo.path(), "app")[0];
    let globals_key = manifest["companions"]["globals"]["key"].as_str().unwrap();
    assert!(repo.join(globals_key).exists(), "{manifest}");
    run(
        "lifeboat-verify",
        &[
            "--config", cfg, "--job", "app", "--latest", "--level", "content",
        ],
    )
    .assert_code(0);

    // Another cluster, where the role does not exist.
    let target = TlsDb::create("globals_target");
    let to = verify_full(&target.0);
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "--config", cfg, "--job", "app", "--latest", "--to", &to, "--yes",
        ];
        args.extend_from_slice(extra);
        run("lifeboat-restore", &args)
    };
    // Without the roles, the owner is missing: rolled back.
    restore(&[]).assert_code(1).assert_contains(&role);
    let restored = restore(&["--globals"]);
    restored
        .assert_code(0)
        .assert_contains(&format!("created {role}"))
        .assert_contains("already existed, left as they are: lifeboat");
    let owner = sql(
        &socket_url(&target.0),
        "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'",
    );
    assert_eq!(owner, vec![vec![Some(role.clone())]]);
    assert_eq!(
        sql(&socket_url(&target.0), "SELECT id FROM owned"),
        vec![vec![Some("7".to_string())]]
    );

    // A damaged globals object is caught by verify, and refused by a restore before any role.
    let data = repo.join(globals_key);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();
    run(
        "lifeboat-verify",
        &[
            "--config", cfg, "--job", "app", "--latest", "--level", "content",
        ],
    )
    .assert_code(3)
    .assert_contains("globals");

    drop(target);
    sql(&socket_url("postgres"), &drop_role);
    drop(db);
    sql(&admin_url(), &drop_role);

    // A snapshot without roles: --globals is refused before anything is read.
    let plain = TempDir::new("globals-none");
    real_snapshot(&plain, "app");
    let other = TestDb::create("globals_none_target");
    run(
        "lifeboat-restore",
        &[
            "--repo",
            plain.as_str(),
            "--job",
            "app",
            "--latest",
            "--to",
            &other.url(),
            "--globals",
            "--yes",
        ],
    )
    .assert_code(2)
    .assert_contains("globals = true");
}
