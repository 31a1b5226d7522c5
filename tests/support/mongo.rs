//! The MongoDB test servers (SecantusDB, started by `scripts/services.sh start mongo`) and the
//! Python helper that seeds, changes and digests their data with pymongo.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::TempDir;

/// The replica-set source server.
pub fn source_url() -> String {
    env_or(
        "LIFEBOAT_TEST_MONGO_URL",
        "mongodb://127.0.0.1:24317/?directConnection=true",
    )
}

/// The standalone restore target.
pub fn target_url() -> String {
    env_or(
        "LIFEBOAT_TEST_MONGO_TARGET_URL",
        "mongodb://127.0.0.1:24318/?directConnection=true",
    )
}

/// The replica set whose oplog keeps 200 entries.
pub fn small_oplog_url() -> String {
    env_or(
        "LIFEBOAT_TEST_MONGO_SMALL_OPLOG_URL",
        "mongodb://127.0.0.1:24319/?directConnection=true",
    )
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// The host:port of a test URL.
pub fn host_port(url: &str) -> String {
    url.trim_start_matches("mongodb://")
        .split(['/', '?'])
        .next()
        .unwrap()
        .to_string()
}

/// The same URL with another host:port (a proxy in front of the server).
pub fn via(url: &str, host_port_new: &str) -> String {
    url.replacen(&host_port(url), host_port_new, 1)
}

fn python() -> String {
    let python = env_or(
        "LIFEBOAT_TEST_MONGO_PYTHON",
        &format!(
            "{}/.cache/lifeboat/secantusdb-0.7.0b3/bin/python",
            std::env::var("HOME").unwrap_or_default()
        ),
    );
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: start the MongoDB test servers with `scripts/services.sh start mongo` (it installs SecantusDB and pymongo)"
    );
    python
}

fn tool() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/mongo_tool.py")
}

/// Runs a helper command to completion; its stdout.
#[track_caller]
pub fn tool_run(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(tool())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mongo_tool.py {args:?} failed (is the server up? scripts/services.sh start mongo):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The helper's JSON output.
#[track_caller]
pub fn tool_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&tool_run(args)).unwrap()
}

/// A database name no other test (or earlier run) uses.
pub fn fresh_db(label: &str) -> String {
    format!(
        "{label}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// The writer: inserts, updates and deletes on DB.orders until stopped.
pub struct Writer {
    child: Child,
    stop: PathBuf,
    _dir: TempDir,
}

impl Writer {
    pub fn start(url: &str, db: &str) -> Writer {
        Writer::start_mode(url, db, "mixed")
    }

    /// A writer of `mode`: `mixed`, or `burst` (inserts of a thousand at a time).
    pub fn start_mode(url: &str, db: &str, mode: &str) -> Writer {
        let dir = TempDir::new("mongo-writer");
        let stop = dir.join("stop");
        let child = Command::new(python())
            .arg(tool())
            .args(["writer", url, db])
            .arg(&stop)
            .arg(mode)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Writer {
            child,
            stop,
            _dir: dir,
        }
    }

    /// Stops the writer; how many operations it made.
    pub fn stop(self) -> u64 {
        std::fs::write(&self.stop, b"").unwrap();
        let out = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

/// A SecantusDB server of a test's own (to kill in the middle of a dump, or with users).
pub struct OwnMongo {
    child: Child,
    pub url: String,
    port: u16,
}

impl OwnMongo {
    pub fn start() -> OwnMongo {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        OwnMongo::spawn(port, ":memory:", false)
    }

    /// A server keeping its data in `dir`, started with `--auth` when `auth`.
    pub fn start_in(dir: &std::path::Path, auth: bool) -> OwnMongo {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        OwnMongo::spawn(port, dir.to_str().unwrap(), auth)
    }

    fn spawn(port: u16, storage: &str, auth: bool) -> OwnMongo {
        let secantus = python().replace("/bin/python", "/bin/secantusd-py");
        let mut cmd = Command::new(secantus);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--storage-path", storage, "--log-level", "WARNING"]);
        if auth {
            cmd.arg("--auth");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        OwnMongo {
            child,
            url: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            port,
        }
    }

    /// The URL for a user (authenticated against admin).
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!(
            "mongodb://{user}:{password}@127.0.0.1:{}/?directConnection=true&authSource=admin",
            self.port
        )
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnMongo {
    fn drop(&mut self) {
        self.kill();
    }
}
