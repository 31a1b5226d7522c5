//! The MongoDB engine end to end through the binaries, against SecantusDB servers started by
//! `scripts/services.sh start mongo`: a round trip that must give back every BSON type, option,
//! index and view byte for byte; writes during a dump replayed to one instant; old scripts'
//! archives; and the faults that must commit nothing or change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lifeboat_tests::mongo::*;
use lifeboat_tests::proxy::ThrottleProxy;
use lifeboat_tests::{data_objects, manifests, run, Run, TempDir};

/// A repository and a config file with one mongodb job over one database.
struct Setup {
    repo: TempDir,
    config: String,
}

fn setup(label: &str, url: &str, db: &str, extra: &str) -> Setup {
    let repo = TempDir::new(label);
    let config = repo.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"file://{}/repo\"\n\n[[job]]\nname = \"mongo\"\nengine = \"mongodb\"\nurl = \"{url}\"\ndatabases = [\"{db}\"]\n{extra}\n",
            repo.as_str()
        ),
    )
    .unwrap();
    Setup {
        config: config.display().to_string(),
        repo,
    }
}

/// A database of 40 small collections (and `orders`) behind a slow link: the dump reads one
/// collection at a time and takes seconds, so a test can act while it runs. The proxy must
/// live as long as the setup.
fn slow_setup(label: &str, url: &str, db: &str, extra: &str) -> (ThrottleProxy, Setup) {
    tool_run(&["fill", url, db, "40", "50"]);
    let proxy = ThrottleProxy::start(&host_port(url), 2500);
    let slow = via(url, proxy.endpoint.trim_start_matches("http://"));
    let s = setup(
        label,
        &slow,
        db,
        &format!("parallel-collections = 1\n{extra}"),
    );
    (proxy, s)
}

/// `lifeboat-restore --from-file PATH --to TARGET --yes` (and `extra`), database `db`
/// restored as `restored`.
fn restore_file(
    path: &std::path::Path,
    target: &str,
    db: &str,
    restored: &str,
    extra: &[&str],
) -> Run {
    let rename = format!("{db}.*={restored}.*");
    let mut args = vec![
        "--from-file",
        path.to_str().unwrap(),
        "--to",
        target,
        "--rename",
        rename.as_str(),
        "--yes",
    ];
    args.extend_from_slice(extra);
    run("lifeboat-restore", &args)
}

impl Setup {
    fn repo_path(&self) -> std::path::PathBuf {
        self.repo.join("repo")
    }

    fn backup(&self, extra: &[&str]) -> Run {
        let mut args = vec!["--config", &self.config];
        args.extend_from_slice(extra);
        run("lifeboat-backup", &args)
    }

    fn restore(&self, to: &str, extra: &[&str]) -> Run {
        let mut args = vec![
            "--config",
            &self.config,
            "--job",
            "mongo",
            "--latest",
            "--to",
            to,
            "--yes",
        ];
        args.extend_from_slice(extra);
        run("lifeboat-restore", &args)
    }

    /// Restores the latest snapshot of `db` as `<db>_restored` on `target` (with `extra`
    /// flags), and checks the result equals the source, every namespace's CRC was checked and
    /// nothing of Lifeboat's (staging or probe collections) is left. Returns its digest.
    fn restore_as_source(
        &self,
        source: &str,
        target: &str,
        db: &str,
        extra: &[&str],
    ) -> serde_json::Value {
        let restored = format!("{db}_restored");
        let rename = format!("{db}.*={restored}.*");
        let mut args = vec!["--rename", rename.as_str()];
        args.extend_from_slice(extra);
        self.restore(target, &args)
            .assert_code(0)
            .assert_contains("every namespace's CRC checked");
        let want = tool_json(&["digest", source, db]);
        let got = tool_json(&["digest", target, &restored]);
        assert_eq!(want, got, "the restored database differs from the source");
        assert!(!got.to_string().contains("lifeboat."), "{got}");
        got
    }

    fn verify(&self, extra: &[&str]) -> Run {
        let mut args = vec!["--config", &self.config, "--job", "mongo"];
        args.extend_from_slice(extra);
        run("lifeboat-verify", &args)
    }
}

#[test]
fn every_type_option_index_and_view_comes_back_byte_for_byte() {
    let source = source_url();
    let target = target_url();
    let db = fresh_db("roundtrip");
    tool_run(&["seed", &source, &db]);
    let s = setup("mongo-roundtrip", &source, &db, "");

    let b = s.backup(&["--json"]);
    b.assert_code(0);
    let manifest = &manifests(&s.repo_path(), "mongo")[0];
    assert_eq!(manifest["engine"], "mongodb");
    assert_eq!(manifest["dump_format"], "mongodump_archive");
    let print = &manifest["fingerprint"];
    assert_eq!(print["point_in_time"], true, "{print}");
    assert_eq!(
        print["collections"][format!("{db}.everything")]["documents"],
        300
    );
    assert_eq!(print["collections"][format!("{db}.big")]["documents"], 2);
    assert_eq!(
        print["collections"][format!("{db}.events")]["documents"],
        300
    );
    assert_eq!(
        print["collections"][format!("{db}.people")]["documents"],
        501
    );
    assert_eq!(print["views"], serde_json::json!([format!("{db}.adults")]));
    assert!(print["oplog"]["entries"].as_u64().unwrap() >= 1, "{print}");
    // The stored object is a mongodump archive under zstd.
    let object = &data_objects(&s.repo_path())[0];
    let raw = zstd::decode_all(std::fs::File::open(object).unwrap()).unwrap();
    assert_eq!(&raw[..4], &[0x6d, 0xe2, 0x99, 0x81]);

    s.verify(&["--level", "content"]).assert_code(0);
    s.verify(&["--level", "drill", "--scratch-url", &target])
        .assert_code(0)
        .assert_contains("restore took");

    let restored = format!("{db}_restored");
    let rename = format!("{db}.*={restored}.*");
    // A dry run shows the plan and changes nothing.
    s.restore(&target, &["--rename", &rename, "--dry-run"])
        .assert_code(0)
        .assert_contains("lifeboat.staging.");
    assert!(tool_json(&["digest", &target, &restored])["collections"]
        .as_object()
        .unwrap()
        .is_empty());
    s.restore_as_source(&source, &target, &db, &[]);

    // The same restore again: the collections exist, so it is refused without --clean.
    s.restore(&target, &["--rename", &rename])
        .assert_code(2)
        .assert_contains("--clean");
    s.restore_as_source(&source, &target, &db, &["--clean"]);
    // The servers outlive the tests: the 32 MiB of big documents go.
    tool_run(&["dropdb", &source, &db]);
    tool_run(&["dropdb", &target, &restored]);
}

#[test]
fn writes_during_a_replica_set_dump_are_replayed_to_one_instant() {
    let source = source_url();
    let target = target_url();
    let db = fresh_db("live");
    // A slow link between Lifeboat and the server, so the dump takes seconds while the writer
    // (connected directly) keeps changing `orders`.
    let (_proxy, s) = slow_setup("mongo-live", &source, &db, "");
    let writer = Writer::start(&source, &db);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = s.backup(&[]);
    let ops = writer.stop();
    b.assert_code(0);
    let manifest = &manifests(&s.repo_path(), "mongo")[0];
    let oplog = &manifest["fingerprint"]["oplog"];
    assert!(
        oplog["entries"].as_u64().unwrap() > 10,
        "the writer ({ops} operations) wrote nothing during the dump: {oplog}"
    );
    let end = oplog["end"].as_str().unwrap();

    let restored = format!("{db}_restored");
    // SecantusDB has no applyOps: the probe says so and Lifeboat applies the entries itself
    // (a server with it would get the document changes through it).
    s.restore(&target, &["--rename", &format!("{db}.*={restored}.*")])
        .assert_code(0)
        .assert_contains("Replayed")
        .assert_contains("Lifeboat applies the oplog's entries itself");
    // What `orders` held at the snapshot's instant, from the source's oplog alone.
    let want = tool_run(&["state-at", &source, &db, "orders", end]);
    let got = tool_run(&["state", &target, &restored, "orders"]);
    assert_eq!(
        want.trim(),
        got.trim(),
        "the restore is not the source as of {end}"
    );
    // The other collections, untouched by the writer, are exact.
    let source_digest = tool_json(&["digest", &source, &db]);
    let target_digest = tool_json(&["digest", &target, &restored]);
    assert_eq!(
        source_digest["collections"]["c007"],
        target_digest["collections"]["c007"]
    );
    // Neither staging nor probe collections are left behind.
    assert!(
        !target_digest.to_string().contains("lifeboat."),
        "{target_digest}"
    );
}

#[test]
fn an_oplog_that_rolls_over_during_the_dump_fails_the_backup() {
    let url = small_oplog_url();
    let db = fresh_db("rollover");
    let (_proxy, s) = slow_setup("mongo-rollover", &url, &db, "");
    let writer = Writer::start_mode(&url, &db, "burst");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = s.backup(&[]);
    let ops = writer.stop();
    assert!(ops >= 2000, "the writer made only {ops} operations");
    b.assert_code(1)
        .assert_contains("oplog rolled over")
        .assert_contains("enlarge the oplog");
    assert!(manifests(&s.repo_path(), "mongo").is_empty());
    // The in-memory server outlives the tests: the burst's documents go (runs of this test
    // filled its cache until inserts failed).
    tool_run(&["dropdb", &url, &db]);
}

#[test]
fn a_damaged_archive_is_exit_3_and_the_target_is_unchanged() {
    let source = source_url();
    let target = target_url();
    let db = fresh_db("damaged");
    tool_run(&["fill", &source, &db, "3", "100"]);
    let dir = TempDir::new("mongo-damaged");
    let plain = dir.join("dump.archive");
    tool_run(&["archive", &source, &db, plain.to_str().unwrap()]);
    let bytes = std::fs::read(&plain).unwrap();
    let restored = format!("{db}_damaged");
    let rename = format!("{db}.*={restored}.*");

    // A flipped byte inside a document: the namespace's CRC does not match.
    let mut flipped = bytes.clone();
    let at = flipped.windows(3).rposition(|w| w == b"xxx").unwrap();
    flipped[at] = b'y';
    let flipped_path = dir.join("flipped.archive");
    std::fs::write(&flipped_path, &flipped).unwrap();
    run(
        "lifeboat-restore",
        &[
            "--from-file",
            flipped_path.to_str().unwrap(),
            "--to",
            &target,
            "--rename",
            &rename,
            "--yes",
        ],
    )
    .assert_code(3)
    .assert_contains("CRC");
    // Cut short: truncated.
    let cut_path = dir.join("cut.archive");
    std::fs::write(&cut_path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    run(
        "lifeboat-restore",
        &[
            "--from-file",
            cut_path.to_str().unwrap(),
            "--to",
            &target,
            "--rename",
            &rename,
            "--yes",
        ],
    )
    .assert_code(3)
    .assert_contains("truncated");
    let left = tool_json(&["digest", &target, &restored]);
    assert!(
        left["collections"].as_object().unwrap().is_empty(),
        "a damaged archive left collections behind: {left}"
    );

    // A snapshot whose stored object was changed: the digests catch it, nothing is placed.
    let s = setup("mongo-damaged-repo", &source, &db, "");
    s.backup(&[]).assert_code(0);
    let object = &data_objects(&s.repo_path())[0];
    let mut stored = std::fs::read(object).unwrap();
    let middle = stored.len() / 2;
    stored[middle] ^= 0x20;
    std::fs::write(object, stored).unwrap();
    s.restore(&target, &["--rename", &rename]).assert_code(3);
    assert!(tool_json(&["digest", &target, &restored])["collections"]
        .as_object()
        .unwrap()
        .is_empty());
}

#[test]
fn an_old_scripts_mongodump_archive_restores_gzip_or_not() {
    let source = source_url();
    let target = target_url();
    let db = fresh_db("oldscript");
    tool_run(&["fill", &source, &db, "3", "120"]);
    let want = tool_json(&["digest", &source, &db]);
    let dir = TempDir::new("mongo-oldscript");
    for (name, compress) in [("nightly.archive", ""), ("nightly.archive.gz", "gzip")] {
        let path = dir.join(name);
        let mut args = vec!["archive", &source, &db, path.to_str().unwrap()];
        if !compress.is_empty() {
            args.push(compress);
        }
        tool_run(&args);
        let restored = format!("{db}_{}", if compress.is_empty() { "plain" } else { "gz" });
        restore_file(&path, &target, &db, &restored, &[]).assert_code(0);
        assert_eq!(tool_json(&["digest", &target, &restored]), want, "{name}");
    }
}

#[test]
fn a_dropped_connection_or_a_silent_server_commits_nothing() {
    // The server dies in the middle of the dump.
    let mut own = OwnMongo::start();
    let db = fresh_db("dropped");
    let (_proxy, s) = slow_setup("mongo-dropped", &own.url, &db, "idle-timeout = \"5s\"");
    let config = s.config.clone();
    let backup = std::thread::spawn(move || run("lifeboat-backup", &["--config", &config]));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    own.kill();
    backup.join().unwrap().assert_code(1);
    assert!(manifests(&s.repo_path(), "mongo").is_empty());

    // A server that accepts the connection and never answers.
    let silent = ThrottleProxy::start(&host_port(&source_url()), 1_000_000);
    silent
        .stall_after
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let url = via(&source_url(), silent.endpoint.trim_start_matches("http://"));
    let s = setup("mongo-silent", &url, "any", "idle-timeout = \"2s\"");
    let started = std::time::Instant::now();
    s.backup(&[])
        .assert_code(1)
        .assert_contains("no answer from the server within 2s");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(manifests(&s.repo_path(), "mongo").is_empty());
}

#[test]
fn a_standalone_server_is_backed_up_but_not_as_one_instant() {
    let url = target_url();
    let db = fresh_db("standalone");
    tool_run(&["fill", &url, &db, "2", "10"]);
    let s = setup("mongo-standalone", &url, &db, "");
    s.backup(&[])
        .assert_code(0)
        .assert_contains("not point in time");
    let manifest = &manifests(&s.repo_path(), "mongo")[0];
    assert_eq!(manifest["fingerprint"]["point_in_time"], false);
    assert!(manifest["fingerprint"]["oplog"].is_null());
    assert!(manifest["fingerprint"]["dump_finished_at"].is_string());
    s.verify(&["--level", "content"]).assert_code(0);
}

#[test]
fn bad_mongodb_settings_name_the_file_and_the_fix() {
    let s = setup("mongo-bad", &source_url(), "app.x", "");
    s.backup(&[])
        .assert_code(2)
        .assert_contains("databases")
        .assert_contains("lifeboat.toml");
    let s = setup("mongo-bad-url", "postgres://h/db", "app", "");
    s.backup(&[]).assert_code(2).assert_contains("mongodb://");
    let s = setup(
        "mongo-missing-db",
        &source_url(),
        "no_such_database_here",
        "",
    );
    s.backup(&[])
        .assert_code(1)
        .assert_contains("no_such_database_here")
        .assert_contains("does not exist");
    run(
        "lifeboat-restore",
        &[
            "--from-file",
            "/nonexistent.archive",
            "--to",
            &target_url(),
            "--rename",
            "bad",
        ],
    )
    .assert_code(2)
    .assert_contains("expected SRC=DST");
}

#[test]
fn mode_file_writes_the_checked_archive_for_mongorestore() {
    let source = source_url();
    let db = fresh_db("tofile");
    tool_run(&["fill", &source, &db, "2", "30"]);
    let s = setup("mongo-tofile", &source, &db, "");
    s.backup(&[]).assert_code(0);
    let out = s.repo.join("mongo.archive");
    s.restore(out.to_str().unwrap(), &["--mode", "file"])
        .assert_code(0);
    let bytes = std::fs::read(&out).unwrap();
    let object = &data_objects(&s.repo_path())[0];
    let raw = zstd::decode_all(std::fs::File::open(object).unwrap()).unwrap();
    assert_eq!(bytes, raw, "the file is the archive as dumped");
    // It restores like an old script's archive, and --rename does not apply to a file.
    s.restore(
        out.to_str().unwrap(),
        &["--mode", "file", "--rename", "a.*=b.*"],
    )
    .assert_code(2)
    .assert_contains("--rename");
}

#[test]
fn a_collection_dropped_during_the_dump_is_reported_and_nothing_is_committed() {
    let source = source_url();
    let db = fresh_db("dropdump");
    let (_proxy, s) = slow_setup("mongo-dropdump", &source, &db, "");
    let config = s.config.clone();
    let backup = std::thread::spawn(move || run("lifeboat-backup", &["--config", &config]));
    // `orders` sorts after c000..c039, so the dump has not reached it yet.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    tool_run(&["drop", &source, &db, "orders"]);
    backup
        .join()
        .unwrap()
        .assert_code(1)
        .assert_contains(&format!("{db}.orders was dropped or renamed"))
        .assert_contains("nothing was committed");
    assert!(manifests(&s.repo_path(), "mongo").is_empty());
}

#[test]
fn one_verify_run_drills_jobs_of_several_engines_each_on_its_own_scratch_server() {
    use lifeboat_tests::{admin_url, sql, TestDb};
    let source = source_url();
    let db = fresh_db("multidrill");
    tool_run(&["fill", &source, &db, "2", "20"]);
    let pg = TestDb::create("multidrill");
    sql(
        &pg.url(),
        "CREATE TABLE t (id int primary key); INSERT INTO t SELECT generate_series(1, 50);",
    );
    let dir = TempDir::new("mongo-multidrill");
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"file://{}/repo\"\n\n[[job]]\nname = \"app-db\"\nengine = \"postgres\"\nurl = \"{}\"\n\n[[job]]\nname = \"mongo\"\nengine = \"mongodb\"\nurl = \"{source}\"\ndatabases = [\"{db}\"]\n",
            dir.as_str(),
            pg.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    run("lifeboat-backup", &["--config", config]).assert_code(0);
    let drill = run(
        "lifeboat-verify",
        &[
            "--config",
            config,
            "--level",
            "drill",
            "--scratch-url",
            &admin_url(),
            "--scratch-url",
            &target_url(),
        ],
    );
    drill.assert_code(0);
    assert_eq!(
        drill.output().matches("level drill").count(),
        2,
        "{}",
        drill.output()
    );
    // With only the PostgreSQL scratch server, the MongoDB drill says what it needs.
    run(
        "lifeboat-verify",
        &[
            "--config",
            config,
            "--level",
            "drill",
            "--scratch-url",
            &admin_url(),
        ],
    )
    .assert_code(2)
    .assert_contains("needs a mongodb:// scratch server");
}

#[test]
fn a_time_series_collection_comes_back_with_its_options_created_in_place() {
    // SecantusDB lists a time-series collection as a plain one with the option and hands out
    // its measurements; the restore stages them in a plain collection and, once everything is
    // checked, creates the time-series collection in place and copies them in (MongoDB
    // refuses to rename a time-series collection, so the rename path is never taken).
    let source = source_url();
    let target = target_url();
    let db = fresh_db("timeseries");
    tool_run(&["fill", &source, &db, "1", "5"]);
    tool_run(&["timeseries", &source, &db, "weather"]);
    let s = setup("mongo-timeseries", &source, &db, "");
    s.backup(&[]).assert_code(0);
    let manifest = &manifests(&s.repo_path(), "mongo")[0];
    assert_eq!(
        manifest["fingerprint"]["collections"][format!("{db}.weather")]["documents"],
        50
    );
    s.verify(&["--level", "content"]).assert_code(0);
    s.verify(&["--level", "drill", "--scratch-url", &target])
        .assert_code(0);

    let got = s.restore_as_source(&source, &target, &db, &[]);
    let weather = &got["collections"]["weather"];
    assert!(
        weather["options"]
            .as_str()
            .unwrap()
            .contains("\"timeseries\""),
        "{weather}"
    );
    // Replaced whole with --clean, through the same copy.
    s.restore_as_source(&source, &target, &db, &["--clean"]);
    let restored = format!("{db}_restored");
    tool_run(&["dropdb", &source, &db]);
    tool_run(&["dropdb", &target, &restored]);
}

#[test]
fn mongodbs_time_series_buckets_are_refused_by_a_server_without_time_series() {
    // mongodump dumps a MongoDB time-series collection as its buckets. SecantusDB accepts the
    // option but keeps a plain collection, where buckets would read back as documents: the
    // restore must say so before anything is put in place.
    let target = target_url();
    let db = fresh_db("buckets");
    let dir = TempDir::new("mongo-buckets");
    let path = dir.join("metrics.archive");
    tool_run(&["buckets-archive", &db, path.to_str().unwrap()]);
    let restored = format!("{db}_restored");
    let refusal = format!("{db}.weather is a time-series collection dumped as MongoDB's buckets");
    // The dry run refuses what the restore refuses (it asks the server the same way).
    restore_file(&path, &target, &db, &restored, &["--dry-run"])
        .assert_code(2)
        .assert_contains(&refusal);
    restore_file(&path, &target, &db, &restored, &[])
        .assert_code(2)
        .assert_contains(&refusal)
        .assert_contains("nothing was put in place");
    // Nothing at all: no users, no staging collection, no probe.
    let left = tool_json(&["digest", &target, &restored]);
    assert!(
        left["collections"].as_object().unwrap().is_empty(),
        "{left}"
    );
    // Read and checked without a server, it is a good archive.
    let out = dir.join("checked.archive");
    run(
        "lifeboat-restore",
        &[
            "--from-file",
            path.to_str().unwrap(),
            "--mode",
            "file",
            "--to",
            out.to_str().unwrap(),
            "--yes",
        ],
    )
    .assert_code(0);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
}

#[test]
fn a_user_without_a_role_is_told_which_role_it_lacks() {
    // A server with users: seeded without auth, then restarted with --auth on the same data.
    let dir = TempDir::new("mongo-auth");
    let data = dir.join("data");
    let mut open = OwnMongo::start_in(&data, false);
    tool_run(&["fill", &open.url, "app", "2", "10"]);
    tool_run(&["fill", &open.url, "billing", "1", "10"]);
    tool_run(&["reader", &open.url, "app"]);
    open.kill();
    let server = OwnMongo::start_in(&data, true);
    let url = server.url_as("reader", "reader-secret-pw");

    // `read` on app: its own database backs up, without the oplog (it may not read local),
    // so the snapshot says it is not of one instant.
    let s = setup("mongo-auth-ok", &url, "app", "");
    let b = s.backup(&[]);
    b.assert_code(0)
        .assert_contains("cannot read local.oplog.rs")
        .assert_contains("not point in time");
    assert!(!b.output().contains("reader-secret-pw"), "{}", b.output());
    assert_eq!(
        manifests(&s.repo_path(), "mongo")[0]["fingerprint"]["point_in_time"],
        false
    );

    // A database it may not read: the role is named.
    let s = setup("mongo-auth-db", &url, "billing", "");
    s.backup(&[])
        .assert_code(1)
        .assert_contains("grant the user `read` on billing");
    // No databases listed and no right to list them: the fix is named.
    let s = setup("mongo-auth-list", &url, "app", "");
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("databases = [\"app\"]\n", ""),
    )
    .unwrap();
    s.backup(&[])
        .assert_code(1)
        .assert_contains("may not list the databases")
        .assert_contains("databases = [");
}

/// Trust III, 12: when the target server died in the middle of a restore, the staging
/// collections were left behind without a word (the next restore removes them). The failing
/// run names the ones it could not drop and says what removes them.
#[test]
fn mongodb_staging_left_behind_after_the_target_died_is_not_named() {
    let db = fresh_db("staging_left");
    tool_run(&["fill", &source_url(), &db, "1", "2000"]);
    let s = setup("mongo-staging-left", &source_url(), &db, "");
    s.backup(&[]).assert_code(0);
    let mut own = OwnMongo::start();
    // The inserts reach the target at 50 kB/s: the load takes seconds.
    let proxy = ThrottleProxy::start(&host_port(&own.url), 50_000);
    let slow = via(&own.url, proxy.endpoint.trim_start_matches("http://"));
    let config = s.config.clone();
    let restore = std::thread::spawn(move || {
        run(
            "lifeboat-restore",
            &[
                "--config", &config, "--job", "mongo", "--latest", "--to", &slow, "--yes",
            ],
        )
    });
    std::thread::sleep(std::time::Duration::from_secs(4));
    own.kill();
    let r = restore.join().unwrap();
    r.assert_code(1)
        .assert_contains("could not be dropped")
        .assert_contains("lifeboat.staging.")
        .assert_contains("the next restore into this server");
}

/// Trust III, 21: archives of the mid-2021 mongodump builds that first dumped time-series
/// collections (tool 100.3.1, server 5.0.0-rc0) hold the collection's metadata under
/// `<db>.<name>` but its data and end-of-file block under `<db>.system.buckets.<name>`; they
/// were read as "truncated" (exit 3). The outcome is now the newer shape's: refused by a server
/// without time-series collections (exit 2), passed through by `--mode file`.
#[test]
fn an_old_time_series_archive_is_read_as_truncated() {
    let target = target_url();
    let db = fresh_db("buckets_2021");
    let dir = TempDir::new("mongo-buckets-2021");
    let path = dir.join("metrics-2021.archive");
    tool_run(&["buckets-archive", &db, path.to_str().unwrap(), "2021"]);
    let restored = format!("{db}_restored");
    let refusal = format!("{db}.weather is a time-series collection dumped as MongoDB's buckets");
    for extra in [&["--dry-run"][..], &[]] {
        restore_file(&path, &target, &db, &restored, extra)
            .assert_code(2)
            .assert_contains(&refusal);
    }
    let out = dir.join("checked.archive");
    run(
        "lifeboat-restore",
        &[
            "--from-file",
            path.to_str().unwrap(),
            "--mode",
            "file",
            "--to",
            out.to_str().unwrap(),
            "--yes",
        ],
    )
    .assert_code(0);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
}
