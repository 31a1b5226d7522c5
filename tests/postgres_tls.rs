//! PostgreSQL over TLS, end to end, against the TLS-only cluster of `scripts/services.sh`
//! (`ssl = on`, only `hostssl` lines, a private CA; its certificate names `localhost` only).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lifeboat_tests::pg_tls::*;
use lifeboat_tests::*;

#[test]
fn backup_verify_drill_and_restore_with_verify_full() {
    let source = TlsDb::create("src");
    sql(&socket_url(&source.0), include_str!("fixtures/awkward.sql"));
    let repo = TempDir::new("tls");
    let with_urls = |bin: &str, args: &[&str]| {
        let target = TlsDb::create("dst");
        let out = finish(
            command(bin)
                .args(args)
                .env("LBT_TLS_SOURCE", verify_full(&source.0))
                .env("LBT_TLS_SCRATCH", verify_full("postgres"))
                .env("LBT_TLS_TARGET", verify_full(&target.0))
                .output()
                .unwrap(),
        );
        (out, target)
    };
    let (r, _) = with_urls(
        "lifeboat-backup",
        &[
            "--engine",
            "postgres",
            "--url-env",
            "LBT_TLS_SOURCE",
            "--repo",
            repo.as_str(),
            "--job",
            "app",
        ],
    );
    r.assert_code(0);
    let (r, _) = with_urls(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--level",
            "content",
        ],
    );
    r.assert_code(0);
    let (r, _) = with_urls(
        "lifeboat-verify",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--level",
            "drill",
            "--scratch-url-env",
            "LBT_TLS_SCRATCH",
        ],
    );
    r.assert_code(0).assert_contains("level drill");
    let (r, target) = with_urls(
        "lifeboat-restore",
        &[
            "--repo",
            repo.as_str(),
            "--job",
            "app",
            "--latest",
            "--to-env",
            "LBT_TLS_TARGET",
            "--yes",
        ],
    );
    r.assert_code(0);
    assert_eq!(
        db_digest(&socket_url(&source.0)),
        db_digest(&socket_url(&target.0))
    );
    // Every connection above was TLS: the server has no other (only hostssl lines).
}

#[test]
fn wrong_settings_fail_with_a_message_that_says_what_to_change() {
    let db = TlsDb::create("wrong");
    sql(&socket_url(&db.0), "CREATE TABLE t (id int)");
    let repo = TempDir::new("tls-wrong");
    let backup = |url: &str| {
        run(
            "lifeboat-backup",
            &[
                "--engine",
                "postgres",
                "--url",
                url,
                "--repo",
                repo.as_str(),
                "--job",
                "app",
            ],
        )
    };
    // No TLS: the server only has hostssl lines.
    backup(&tls_url("localhost", &db.0, "sslmode=disable"))
        .assert_code(1)
        .assert_contains("accepts only TLS")
        .assert_contains("sslmode=verify-full");
    // A CA that did not sign the server's certificate.
    backup(&tls_url(
        "localhost",
        &db.0,
        &format!("sslmode=verify-full&sslrootcert={}", certs("wrong-ca.crt")),
    ))
    .assert_code(1)
    .assert_contains("is not signed by a CA in sslrootcert=")
    .assert_contains("set sslrootcert");
    // The right CA, but a host name the certificate does not name.
    backup(&tls_url(
        "127.0.0.1",
        &db.0,
        &format!("sslmode=verify-full&sslrootcert={}", certs("ca.crt")),
    ))
    .assert_code(1)
    .assert_contains("not valid for the host name 127.0.0.1");
    // verify-ca does not check the name.
    backup(&tls_url(
        "127.0.0.1",
        &db.0,
        &format!("sslmode=verify-ca&sslrootcert={}", certs("ca.crt")),
    ))
    .assert_code(0);
    // verify-full without a CA is a usage error before anything connects.
    backup(&tls_url("localhost", &db.0, "sslmode=verify-full"))
        .assert_code(2)
        .assert_contains("needs sslrootcert");
    // require: encrypted, not checked (libpq's meaning).
    backup(&tls_url("127.0.0.1", &db.0, "sslmode=require")).assert_code(0);
}

#[test]
fn a_client_certificate_logs_in() {
    let db = TlsDb::create("cert");
    sql(
        &socket_url(&db.0),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    );
    let repo = TempDir::new("tls-cert");
    // lbt_cert may only log in with a certificate (pg_hba: cert); no password anywhere.
    let base = verify_full(&db.0).replace("lifeboat:lifeboat-test-password@", "lbt_cert@");
    let url = format!(
        "{base}&sslcert={}&sslkey={}",
        certs("client.crt"),
        certs("client.key")
    );
    run(
        "lifeboat-backup",
        &[
            "--engine",
            "postgres",
            "--url",
            &url,
            "--repo",
            repo.as_str(),
            "--job",
            "app",
        ],
    )
    .assert_code(0)
    .assert_contains("1 table, 1 row");
    run(
        "lifeboat-backup",
        &[
            "--engine",
            "postgres",
            "--url",
            &base,
            "--repo",
            repo.as_str(),
            "--job",
            "app",
        ],
    )
    .assert_code(1);
}
