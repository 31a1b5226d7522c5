//! Snapshots written before the engines became plug-ins still list, verify (content and drill)
//! and restore. The repository under `fixtures/compat-0.1/` was made by Lifeboat 0.1.0 at
//! commit 79bd562 (see its README); each test works on a copy, since verify records results.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lifeboat_tests::*;

const PG_SNAPSHOT: &str = "20261203T170712Z-994aac";
const REDIS_SNAPSHOT: &str = "20261203T170712Z-042621";

/// A copy of the fixture repository in a temporary directory.
fn fixture_repo(label: &str) -> TempDir {
    let repo = TempDir::new(label);
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/compat-0.1/repo");
    let copied = std::process::Command::new("cp")
        .args(["-a", &format!("{}/.", from.display()), repo.as_str()])
        .status()
        .unwrap();
    assert!(copied.success(), "cannot copy {}", from.display());
    repo
}

#[test]
fn old_snapshots_list_and_verify_at_every_level() {
    let repo = fixture_repo("compat-verify");
    let listing = run(
        "lifeboat-restore",
        &["list", "--repo", repo.as_str(), "--json"],
    );
    listing.assert_code(0);
    let text = listing.output();
    assert!(
        text.contains(PG_SNAPSHOT) && text.contains(REDIS_SNAPSHOT),
        "{text}"
    );
    run(
        "lifeboat-verify",
        &["--repo", repo.as_str(), "--level", "content", "--all"],
    )
    .assert_code(0)
    .assert_contains(PG_SNAPSHOT)
    .assert_contains(REDIS_SNAPSHOT);
    let admin = admin_url();
    run(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app-db",
            "--level",
            "drill",
            "--scratch-url",
            &admin,
            "--pg-bin-dir",
            &std::env::var("LIFEBOAT_TEST_PG_BIN").unwrap_or_default(),
        ],
    )
    .assert_code(0)
    .assert_contains("level drill");
    let scratch = OwnRedis::start("compat-drill");
    run(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "cache",
            "--level",
            "drill",
            "--scratch-url",
            &scratch.url,
        ],
    )
    .assert_code(0)
    .assert_contains("level drill");
}

#[test]
fn old_snapshots_restore_the_data_they_hold() {
    let repo = fixture_repo("compat-restore");
    let target = TestDb::create("compat_restore");
    run(
        "lifeboat-restore",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app-db",
            "--snapshot",
            PG_SNAPSHOT,
            "--to",
            &target.url(),
            "--yes",
            "--pg-bin-dir",
            &std::env::var("LIFEBOAT_TEST_PG_BIN").unwrap_or_default(),
        ],
    )
    .assert_code(0);
    assert_eq!(
        sql_one(
            &target.url(),
            "SELECT string_agg(id || ':' || name || ':' || price, ',' ORDER BY id) FROM items"
        ),
        "1:anchor:12.50,2:rope:3.20,3:flare ✓:7.00"
    );
    assert_eq!(
        sql_one(
            &target.url(),
            "SELECT string_agg(name || ':' || joined, ',' ORDER BY name) FROM crew"
        ),
        "ada:2020-01-02,bo:2021-03-04"
    );
    assert_eq!(
        sql_one(
            &target.url(),
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_name'"
        ),
        "1"
    );

    let redis = OwnRedis::start("compat-restore");
    run(
        "lifeboat-restore",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "cache",
            "--latest",
            "--to",
            &redis.url,
            "--yes",
        ],
    )
    .assert_code(0);
    let mut client = redis.client();
    assert_eq!(client.ok("GET greeting").text(), "hello ✓");
    assert_eq!(joined(client.ok("LRANGE queue 0 -1")), "a,b,c");
    assert_eq!(client.ok("HGET user:1 role").text(), "captain");
    client.ok("SELECT 2");
    assert_eq!(client.ok("SCARD tags").text(), "2");
}

fn joined(reply: resp::Reply) -> String {
    match reply {
        resp::Reply::Array(Some(items)) => {
            items.iter().map(|r| r.text()).collect::<Vec<_>>().join(",")
        }
        other => other.text(),
    }
}
