//! Redis over TLS (rediss://): backup and restore against a server whose certificate is
//! verified, and the refusals when it is not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lifeboat_tests::redis::*;
use lifeboat_tests::resp::Redis;

#[test]
fn rediss_urls_back_up_and_restore_over_verified_tls() {
    use lifeboat_tests::{run, TempDir};
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    // A private CA and a certificate for 127.0.0.1, made with openssl.
    let dir = TempDir::new("redis-tls");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    sh(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=lifeboat test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ],
    );
    sh(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    sh(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &p("san.ext"),
            "-out",
            &p("server.pem"),
        ],
    );
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (plain_port, tls_port) = (free_port(), free_port());
    let mut server = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &plain_port.to_string()])
        .args(["--tls-port", &tls_port.to_string()])
        .args([
            "--tls-cert-file",
            &p("server.pem"),
            "--tls-key-file",
            &p("server.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-auth-clients",
            "no",
        ])
        .args([
            "--save",
            "",
            "--dir",
            dir.as_str(),
            "--enable-debug-command",
            "yes",
        ])
        .args(["--repl-diskless-sync-delay", "0"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (scripts/services.sh installs it)");
    let result = std::panic::catch_unwind(|| {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", plain_port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let mut plain = Redis::connect(&format!("redis://127.0.0.1:{plain_port}"));
        fill(&mut plain, 0, false);
        let digest = plain.ok("DEBUG DIGEST").text();
        let tls_url = format!("rediss://127.0.0.1:{tls_port}?ca={}", p("ca.pem"));
        let repo = TempDir::new("redis-tls-repo");
        run(
            "lifeboat-backup",
            &[
                "--engine",
                "redis",
                "--url",
                &tls_url,
                "--repo",
                repo.as_str(),
            ],
        )
        .assert_code(0);
        // Without the private CA the server is not trusted: no backup.
        run(
            "lifeboat-backup",
            &[
                "--engine",
                "redis",
                "--url",
                &format!("rediss://127.0.0.1:{tls_port}"),
                "--repo",
                repo.as_str(),
                "--job",
                "untrusted",
            ],
        )
        .assert_code(1)
        .assert_contains("TLS handshake failed");
        // And back, into the same server over TLS.
        plain.ok("FLUSHALL");
        run(
            "lifeboat-restore",
            &[
                "--repo",
                repo.as_str(),
                "--job",
                "redis",
                "--latest",
                "--to",
                &tls_url,
                "--yes",
            ],
        )
        .assert_code(0);
        assert_eq!(plain.ok("DEBUG DIGEST").text(), digest);
    });
    let _ = server.kill();
    let _ = server.wait();
    result.unwrap();
}
