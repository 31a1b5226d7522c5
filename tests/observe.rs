//! Observability: notifications (webhook, Slack, healthchecks) seen by a loopback HTTP server
//! that records every request, receivers that fail or hang, and Prometheus metrics in a
//! textfile (read with the Prometheus client's own parser) and in a real Pushgateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use lifeboat_tests::*;

/// A request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Ok,
    ServerError,
    Hang,
}

/// An HTTP receiver on a loopback port of its own that records requests.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    fn start(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let (method, path) = (
                        parts.next().unwrap_or_default().to_string(),
                        parts.next().unwrap_or_default().to_string(),
                    );
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.push((k.trim().to_string(), v.trim().to_string()));
                        }
                    }
                    let length: usize = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    record.lock().unwrap().push(Seen {
                        method,
                        path,
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    match answer {
                        Answer::Ok => {
                            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
                        }
                        Answer::ServerError => {
                            let _ = stream.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        }
                        Answer::Hang => std::thread::sleep(std::time::Duration::from_secs(600)),
                    }
                });
            }
        });
        Receiver { url, seen }
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn write_config(dir: &TempDir, db_url: &str, job: &str, extra: &str) -> std::path::PathBuf {
    let config = dir.path().with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"{job}\"\nengine = \"postgres\"\nurl = \"{db_url}\"\n\n{extra}",
            dir.as_str()
        ),
    )
    .unwrap();
    config
}

#[test]
fn each_notifier_gets_its_request_on_success_and_failure() {
    let db = TestDb::create("notify");
    sql(
        &db.url(),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    );
    let receiver = Receiver::start(Answer::Ok);
    let repo = TempDir::new("notify-repo");
    let secret = "hc-uuid-5f1c7a";
    let notify = format!(
        r#"[[notify]]
kind = "webhook"
url = "{r}/hook"
on = ["always"]
headers = {{ X-Token = "${{NOTIFY_TOKEN}}" }}

[[notify]]
kind = "slack"
url = "{r}/slack/T000/B000/{secret}"
on = ["success", "failure"]

[[notify]]
kind = "healthchecks"
url = "{r}/ping/{secret}"

[[notify]]
kind = "webhook"
url = "{r}/only-failures"
"#,
        r = receiver.url
    );
    let config = write_config(&repo, &db.url(), "app", &notify);
    let cfg = config.to_str().unwrap();
    let backup = || {
        let mut cmd = command("lifeboat-backup");
        cmd.args(["--config", cfg]).env("NOTIFY_TOKEN", "t0ken");
        finish(cmd.output().unwrap())
    };

    let ok = backup();
    ok.assert_code(0);
    assert!(
        !ok.output().contains(secret),
        "a token leaked: {}",
        ok.output()
    );
    let seen = receiver.take();
    let paths: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("POST", format!("/ping/{secret}/start").as_str()),
            ("POST", "/hook"),
            ("POST", format!("/slack/T000/B000/{secret}").as_str()),
            ("POST", format!("/ping/{secret}/0").as_str()),
        ],
        "{seen:#?}"
    );
    let hook = seen[1].json();
    assert_eq!(hook["binary"], "lifeboat-backup");
    assert_eq!(hook["job"], "app");
    assert_eq!(hook["ok"], true);
    assert_eq!(hook["exit_code"], 0);
    let id = manifests(repo.path(), "app")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(hook["report"]["report"]["snapshot"], id.as_str(), "{hook}");
    assert_eq!(seen[1].header("x-token"), Some("t0ken"));
    assert_eq!(seen[1].header("content-type"), Some("application/json"));
    let slack = seen[2].json()["text"].as_str().unwrap().to_string();
    assert!(
        slack.contains("job `app` succeeded") && slack.contains(&id),
        "{slack}"
    );
    assert!(
        seen[3].body.contains(&format!("Snapshot {id}")),
        "{}",
        seen[3].body
    );

    // A failed run: every notifier that wants failures, and the exit code in the ping.
    sql(&db.url(), "DROP TABLE t");
    let broken = write_config(
        &repo,
        &db.url().replace("/lbt_", "/missing_lbt_"),
        "app",
        &notify,
    );
    let failed = {
        let mut cmd = command("lifeboat-backup");
        cmd.args(["--config", broken.to_str().unwrap()])
            .env("NOTIFY_TOKEN", "t0ken");
        finish(cmd.output().unwrap())
    };
    failed.assert_code(1);
    let seen = receiver.take();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("/ping/{secret}/start").as_str(),
            "/hook",
            format!("/slack/T000/B000/{secret}").as_str(),
            format!("/ping/{secret}/1").as_str(),
            "/only-failures",
        ],
        "{seen:#?}"
    );
    let hook = seen[1].json();
    assert_eq!(hook["ok"], false);
    assert_eq!(hook["exit_code"], 1);
    assert_eq!(hook["report"]["error"]["kind"], "source");
    let slack = seen[2].json()["text"].as_str().unwrap().to_string();
    assert!(
        slack.contains("FAILED (exit 1)") && slack.contains("hint:"),
        "{slack}"
    );
    assert!(seen[3].body.contains("error:"), "{}", seen[3].body);

    // The freshness alarm of verify reaches a person too (exit 5).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mut cmd = command("lifeboat-verify");
    cmd.args(["--config", cfg, "--max-age", "1s"])
        .env("NOTIFY_TOKEN", "t0ken");
    finish(cmd.output().unwrap()).assert_code(5);
    let seen = receiver.take();
    let ping = seen.iter().find(|s| s.path == format!("/ping/{secret}/5"));
    assert!(ping.is_some(), "{seen:#?}");
    let hook = seen
        .iter()
        .find(|s| s.path == "/only-failures")
        .unwrap()
        .json();
    assert_eq!(hook["binary"], "lifeboat-verify");
    assert_eq!(hook["exit_code"], 5);
}

#[test]
fn a_receiver_that_fails_or_hangs_never_changes_the_exit_code() {
    let db = TestDb::create("notify_bad");
    sql(&db.url(), "CREATE TABLE t (id int)");
    let failing = Receiver::start(Answer::ServerError);
    let hanging = Receiver::start(Answer::Hang);
    let repo = TempDir::new("notify-bad-repo");
    let notify = format!(
        "[[notify]]\nkind = \"webhook\"\nurl = \"{}/x\"\non = [\"always\"]\n\n\
         [[notify]]\nkind = \"slack\"\nurl = \"{}/y\"\non = [\"always\"]\ntimeout-secs = 1\n",
        failing.url, hanging.url
    );
    let config = write_config(&repo, &db.url(), "app", &notify);
    let started = std::time::Instant::now();
    let run = run("lifeboat-backup", &["--config", config.to_str().unwrap()]);
    run.assert_code(0)
        .assert_contains("was not delivered: it answered 500")
        .assert_contains("was not delivered: no answer within 1s")
        .assert_contains("exit code is unchanged");
    assert_eq!(failing.take().len(), 3, "three attempts at a 5xx");
    assert!(started.elapsed().as_secs() < 60);
}

/// The families of a Prometheus text file, through the Prometheus client's own parser:
/// `name{labels} value` lines, sorted.
fn parsed(text: &str) -> Vec<String> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (scripts/services.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the file: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn value(lines: &[String], prefix: &str) -> Option<f64> {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
}

#[test]
fn metrics_reach_the_textfile_and_the_pushgateway_and_a_failure_keeps_the_last_success() {
    let gateway = std::env::var("LIFEBOAT_TEST_PUSHGATEWAY").expect(
        "LIFEBOAT_TEST_PUSHGATEWAY is not set: start the Pushgateway with \
         eval \"$(scripts/services.sh start)\" (or run scripts/test.sh)",
    );
    let db = TestDb::create("metrics");
    sql(
        &db.url(),
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)",
    );
    let repo = TempDir::new("metrics-repo");
    let textfiles = TempDir::new("metrics-textfile");
    let job = format!("app-{}", std::process::id());
    let metrics = format!(
        "[metrics]\ntextfile-dir = \"{}\"\npushgateway = \"{gateway}\"\n",
        textfiles.as_str()
    );
    let config = write_config(&repo, &db.url(), &job, &metrics);
    let cfg = config.to_str().unwrap();
    run("lifeboat-backup", &["--config", cfg]).assert_code(0);
    let manifest = &manifests(repo.path(), &job)[0];
    let finished = chrono::DateTime::parse_from_rfc3339(manifest["finished_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis() as f64
        / 1000.0;
    let label = format!("{{lifeboat_job=\"{job}\"}}");
    let file = parsed(&std::fs::read_to_string(textfiles.join("lifeboat-backup.prom")).unwrap());
    assert_eq!(
        value(
            &file,
            &format!("lifeboat_last_success_timestamp_seconds{label}")
        ),
        Some(finished),
        "{file:#?}"
    );
    assert_eq!(
        value(&file, &format!("lifeboat_last_run_success{label}")),
        Some(1.0)
    );
    assert_eq!(
        value(&file, &format!("lifeboat_snapshots{label}")),
        Some(1.0)
    );
    assert_eq!(
        value(&file, &format!("lifeboat_backup_stored_bytes{label}")),
        Some(manifest["object"]["stored_size"].as_f64().unwrap())
    );
    assert!(value(&file, &format!("lifeboat_backup_duration_seconds{label}")).unwrap() > 0.0);

    let pushed = |binary: &str| -> Vec<String> {
        let body = block_on(async { http_get(&format!("{gateway}/metrics")).await });
        parsed(&body)
            .into_iter()
            .filter(|l| {
                l.contains(&format!("job=\"{binary}\""))
                    && l.contains(&format!("lifeboat_job=\"{job}\""))
            })
            .collect()
    };
    // The Pushgateway adds an empty `instance` to the grouping labels.
    let group = format!("{{instance=\"\",job=\"lifeboat-backup\",lifeboat_job=\"{job}\"}}");
    let on_gateway = pushed("lifeboat-backup");
    assert_eq!(
        value(
            &on_gateway,
            &format!("lifeboat_last_success_timestamp_seconds{group}")
        ),
        Some(finished),
        "{on_gateway:#?}"
    );

    // A failed run: the run is marked failed, the last success stays what the repository says.
    let broken = write_config(
        &repo,
        &db.url().replace("/lbt_", "/missing_lbt_"),
        &job,
        &metrics,
    );
    run("lifeboat-backup", &["--config", broken.to_str().unwrap()]).assert_code(1);
    let file = parsed(&std::fs::read_to_string(textfiles.join("lifeboat-backup.prom")).unwrap());
    assert_eq!(
        value(&file, &format!("lifeboat_last_run_success{label}")),
        Some(0.0)
    );
    assert_eq!(
        value(
            &file,
            &format!("lifeboat_last_success_timestamp_seconds{label}")
        ),
        Some(finished)
    );
    let on_gateway = pushed("lifeboat-backup");
    assert_eq!(
        value(&on_gateway, &format!("lifeboat_last_run_success{group}")),
        Some(0.0)
    );
    assert_eq!(
        value(
            &on_gateway,
            &format!("lifeboat_last_success_timestamp_seconds{group}")
        ),
        Some(finished)
    );

    // Verify writes its own file and group; the backup's stay.
    run("lifeboat-verify", &["--config", cfg, "--level", "content"]).assert_code(0);
    let verified =
        parsed(&std::fs::read_to_string(textfiles.join("lifeboat-verify.prom")).unwrap());
    assert!(
        value(
            &verified,
            &format!("lifeboat_newest_snapshot_age_seconds{label}")
        )
        .unwrap()
            >= 0.0,
        "{verified:#?}"
    );
    assert!(
        verified.iter().any(
            |l| l.starts_with("lifeboat_last_verified_timestamp_seconds")
                && l.contains("level=\"content\"")
        ),
        "{verified:#?}"
    );
    assert!(!pushed("lifeboat-verify").is_empty());
    assert!(
        !pushed("lifeboat-backup").is_empty(),
        "verify overwrote the backup's group"
    );

    // A run of another job keeps this job's series in the file.
    let other_db = TestDb::create("metrics_other");
    let other = TempDir::new("metrics-other-repo");
    let other_config = write_config(&other, &other_db.url(), "other", &metrics);
    run(
        "lifeboat-backup",
        &["--config", other_config.to_str().unwrap()],
    )
    .assert_code(0);
    let file = parsed(&std::fs::read_to_string(textfiles.join("lifeboat-backup.prom")).unwrap());
    assert_eq!(
        value(
            &file,
            &format!("lifeboat_last_success_timestamp_seconds{label}")
        ),
        Some(finished)
    );
    assert!(
        file.iter().any(|l| l.contains("lifeboat_job=\"other\"")),
        "{file:#?}"
    );
    assert!(
        files_under(textfiles.path())
            .iter()
            .all(|f| f.ends_with(".prom")),
        "a temporary file was left"
    );
}

/// A plain HTTP GET over TCP: enough for the Pushgateway on loopback.
async fn http_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// deploy/'s example alert rules load in Prometheus's own checker, and name metrics Lifeboat
/// writes.
#[test]
fn the_example_alert_rules_check_and_name_lifeboats_metrics() {
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus/lifeboat-alerts.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (scripts/services.sh installs Debian's prometheus package)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&rules).unwrap();
    for metric in [
        "lifeboat_last_success_timestamp_seconds",
        "lifeboat_last_run_success",
    ] {
        assert!(text.contains(metric), "{metric}");
    }
}

/// Runs headless Chromium (Debian's package; as root it needs --no-sandbox) and returns its
/// stdout and log.
fn chromium(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .output()
        .expect("chromium (scripts/services.sh installs Debian's chromium)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn reports_have_their_own_retention() {
    let repo = TempDir::new("report-keep");
    real_snapshot(&repo, "app");
    let reports = repo.join("reports/app");
    std::fs::create_dir_all(&reports).unwrap();
    std::fs::write(reports.join("20250101T000000Z.md"), "old").unwrap();
    std::fs::write(reports.join("20261101T000000Z.md"), "recent").unwrap();
    let status = std::process::Command::new("touch")
        .args(["-d", "500 days ago"])
        .arg(reports.join("20250101T000000Z.md"))
        .status()
        .unwrap();
    assert!(status.success());
    let prune = |extra: &[&str]| prune_with_policy(&repo, "app", "keep-last = 10\n", extra);
    prune(&["--dry-run", "--json"])
        .assert_code(0)
        .assert_contains("20250101T000000Z.md");
    assert!(
        reports.join("20250101T000000Z.md").exists(),
        "a dry run removed a report"
    );
    prune(&[]).assert_code(0);
    assert_eq!(files_under(&reports), ["20261101T000000Z.md"]);
}

/// A tmux command on this test's own server (`-L`, a private socket named after the
/// session): a tmux server the user already runs, with its own environment, is never used.
fn tmux(session: &str) -> std::process::Command {
    let mut command = std::process::Command::new("tmux");
    command.args(["-L", session, "-f", "/dev/null"]);
    command
}

/// The text of a tmux pane.
fn pane(session: &str) -> String {
    let out = tmux(session)
        .args(["capture-pane", "-p", "-t", session])
        .output()
        .expect("tmux (scripts/services.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The progress line in a pane, if one is drawn.
fn progress_line(text: &str, job: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| {
            l.starts_with(&format!("backup {job} ["))
                && l.contains(" read, ")
                && l.contains(" stored")
        })
        .map(str::to_string)
}

#[test]
fn a_backup_on_a_terminal_shows_a_progress_line_that_moves_and_a_pipe_gets_none() {
    let db = TestDb::create("progress");
    sql(
        &db.url(),
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS pad \
         FROM generate_series(1, 300000) g",
    );
    let repo = TempDir::new("progress-repo");
    let job = "progress";
    let session = format!("lbt-progress-{}", std::process::id());
    // A server left by an earlier run of this test, if any (tmux says when there is none).
    let _ = tmux(&session)
        .arg("kill-server")
        .stderr(std::process::Stdio::null())
        .status();
    // The pane's shell gets the URL from the session's environment, given explicitly.
    let status = tmux(&session)
        .args(["new-session", "-d", "-s", &session, "-x", "160", "-y", "20"])
        .args(["-e", &format!("PGURL={}", db.url())])
        .status()
        .expect("tmux (scripts/services.sh installs it)");
    assert!(status.success());
    // Level 19 makes the backup slow enough to watch.
    let line = format!(
        "{} --engine postgres --url-env PGURL --repo {} --job {job} --compression-level 19; echo EXIT=$?",
        bin("lifeboat-backup").display(),
        repo.as_str()
    );
    tmux(&session)
        .args(["send-keys", "-t", &session, &line, "Enter"])
        .status()
        .unwrap();
    let started = std::time::Instant::now();
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 2 && started.elapsed().as_secs() < 60 {
        if let Some(l) = progress_line(&pane(&session), job) {
            if seen.last() != Some(&l) {
                seen.push(l);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let text = pane(&session);
    // Interrupted, the run ends at once and commits nothing.
    let _ = tmux(&session)
        .args(["send-keys", "-t", &session, "C-c"])
        .status();
    let stopping = std::time::Instant::now();
    let ended = |text: &str| text.lines().any(|l| l.starts_with("EXIT="));
    while !ended(&pane(&session)) && stopping.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let end = pane(&session);
    let _ = tmux(&session).arg("kill-server").status();
    assert!(
        end.lines().any(|l| l == "EXIT=1") && end.contains("interrupted by SIGINT"),
        "{end}"
    );
    assert!(
        seen.len() >= 2,
        "no moving progress line in the pane:\n{text}"
    );
    // The database's size is known, so the line has a percentage and an ETA.
    assert!(seen[0].contains('%') && seen[0].contains("ETA"), "{seen:?}");

    // Into a pipe: no progress line, no terminal control sequences.
    let other = TempDir::new("progress-piped");
    let piped = run(
        "lifeboat-backup",
        &[
            "--engine",
            "postgres",
            "--url",
            &db.url(),
            "--repo",
            other.as_str(),
            "--job",
            job,
        ],
    );
    piped.assert_code(0);
    let out = piped.output();
    assert!(
        !out.contains(" read, ") && !out.contains('\r') && !out.contains('\u{1b}'),
        "{out}"
    );
}

#[test]
fn a_drill_report_holds_the_targets_the_fingerprint_and_the_history() {
    let db = TestDb::create("dr");
    sql(
        &db.url(),
        "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 1000) g",
    );
    // A pg_restore that takes its time: the drill's restore then misses a 1s RTO for sure.
    let slow = script_tools(
        "dr-slow",
        &[(
            "pg_restore",
            format!(
                "#!/bin/sh\nsleep 1.5\nexec {}/pg_restore \"$@\"\n",
                pg_bin()
            ),
        )],
    );
    let redis = OwnRedis::start("dr-redis");
    let mut r = redis.client();
    for i in 0..200 {
        r.cmd(&[b"SET", format!("k{i}").as_bytes(), b"v"]);
    }
    let repo = TempDir::new("dr-repo");
    let config = repo.path().with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n\
             [[job]]\nname = \"app\"\nengine = \"postgres\"\nurl = \"{}\"\nrto = \"1s\"\nrpo = \"1h\"\n\n\
             [[job]]\nname = \"cache\"\nengine = \"redis\"\nurl = \"{}\"\nrto = \"1h\"\nrpo = \"1s\"\n",
            repo.as_str(),
            db.url(),
            redis.url
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    run("lifeboat-backup", &["--config", cfg]).assert_code(0);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = TempDir::new("dr-out");

    // PostgreSQL: the restore takes more than the 1s RTO.
    let md = out.join("dr.md");
    let admin = admin_url();
    let drill = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            cfg,
            "--job",
            "app",
            "--level",
            "drill",
            "--scratch-url",
            &admin,
            "--pg-bin-dir",
            slow.as_str(),
        ];
        args.extend_from_slice(extra);
        run("lifeboat-verify", &args)
    };
    drill(&["--report", md.to_str().unwrap()])
        .assert_code(0)
        .assert_contains("MISSED  job \"app\": RTO 1s")
        .assert_contains("met     job \"app\": RPO 1h");
    let text = std::fs::read_to_string(&md).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with("| app |"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("| FAIL |") && row.contains("MISSED"), "{row}");
    assert!(text.contains("Fingerprint: match."), "{text}");
    let kept = files_under(&repo.join("reports/app"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].ends_with(".md"));
    drill(&["--fail-on-target"]).assert_code(5);

    // The HTML page: self-contained, each job's figures in it, the history of both drills.
    let html = out.join("dr.html");
    drill(&["--report", html.to_str().unwrap()]).assert_code(0);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("data-job=\"app\"") && page.contains("<svg"),
        "{page}"
    );
    for external in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!page.contains(external), "the page loads {external}");
    }
    assert!(page.matches("<td>drill</td>").count() >= 2, "{page}");
    // As a person sees it: Chromium loads it without a console message, the figures are in
    // its DOM, and it renders to a picture.
    let url = format!("file://{}", html.display());
    let (dom, log) = chromium(&["--dump-dom", &url]);
    assert!(!log.contains(":CONSOLE"), "console messages: {log}");
    let id = manifests(repo.path(), "app")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        dom.contains("<tr data-job=\"app\">") && dom.contains(&id) && dom.contains("MISSED"),
        "{dom}"
    );
    assert!(dom.matches("<svg").count() >= 3, "{dom}");
    let png = out.join("dr.png");
    chromium(&[
        &format!("--screenshot={}", png.display()),
        "--window-size=1280,1600",
        &url,
    ]);
    let picture = std::fs::read(&png).unwrap();
    assert!(
        picture.starts_with(b"\x89PNG") && picture.len() > 10_000,
        "{} bytes",
        picture.len()
    );

    // Redis: the data is older than its 1s RPO, which is also its freshness limit (no max-age):
    // exit 5 even without --fail-on-target. JSON.
    let scratch = OwnRedis::start("dr-scratch");
    let json = out.join("dr.json");
    run(
        "lifeboat-verify",
        &[
            "--config",
            cfg,
            "--job",
            "cache",
            "--level",
            "drill",
            "--scratch-url",
            &scratch.url,
            "--report",
            json.to_str().unwrap(),
        ],
    )
    .assert_code(5)
    .assert_contains("from the job's rpo");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let cache = &doc["jobs"][0];
    assert_eq!(cache["job"], "cache");
    assert_eq!(cache["rpo"]["met"], false, "{doc}");
    assert_eq!(cache["rto"]["met"], true, "{doc}");
    assert_eq!(cache["fingerprint"], "match", "{doc}");
    assert!(cache["restore_secs"].as_f64().unwrap() > 0.0);

    // A report whose format is unknown is refused before anything runs.
    run(
        "lifeboat-verify",
        &["--config", cfg, "--report", "/tmp/dr.txt"],
    )
    .assert_code(2)
    .assert_contains(".md, .json or .html");
}
