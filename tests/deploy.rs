//! Deployment: the files `lifeboat-backup schedule --print` generates (checked by the tools that
//! read them: systemd-analyze, the five-field parser, a YAML parser, `sh -c` running the
//! crontab's line for real), the copies under deploy/ kept in step with the generator, the
//! freshness limit a schedule implies, `list`'s next run and overdue flag, scripts/install.sh
//! (binaries, completions, man pages that `man -l` renders), and help text that fits 80 columns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use lifeboat_tests::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The sample configuration's variables (their values appear in no generated file).
const SAMPLE_ENV: &[(&str, &str)] = &[
    ("S3_ENDPOINT", "https://example.invalid"),
    ("DATABASE_URL", "postgres://example.invalid/app"),
    ("REDIS_URL", "redis://example.invalid"),
    (
        "LIFEBOAT_SCRATCH_URL",
        "postgres://example.invalid/postgres",
    ),
];

fn schedule(config: &Path, format: &str, out: &Path, extra: &[&str]) -> Run {
    std::fs::create_dir_all(out).unwrap();
    let mut cmd = command("lifeboat-backup");
    cmd.args([
        "--config",
        config.to_str().unwrap(),
        "schedule",
        "--print",
        format,
    ])
    .args(["--output-dir", out.to_str().unwrap()])
    .args(extra)
    .envs(SAMPLE_ENV.iter().copied());
    finish(cmd.output().unwrap())
}

fn files_in(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_files_under_deploy_are_what_the_generator_writes() {
    let root = repo_root();
    let dir = TempDir::new("deploy-sync");
    for format in ["crontab", "systemd", "kubernetes", "railway"] {
        let out = dir.join(format);
        schedule(
            &root.join("deploy/lifeboat.toml"),
            format,
            &out,
            &[
                "--config-path",
                "/etc/lifeboat/lifeboat.toml",
                "--bin-dir",
                "/usr/local/bin",
            ],
        )
        .assert_code(0);
        let generated = files_in(&out);
        let committed: Vec<(String, String)> = if format == "crontab" {
            vec![(
                "crontab".into(),
                std::fs::read_to_string(root.join("deploy/crontab")).unwrap(),
            )]
        } else {
            files_in(&root.join("deploy").join(format))
        };
        assert_eq!(
            generated, committed,
            "deploy/ is out of step with `schedule --print {format}`: run scripts/deploy-files.sh"
        );
        for (_, text) in &generated {
            for (_, secret) in SAMPLE_ENV {
                assert!(
                    !text.contains(secret),
                    "a variable's value leaked into {format}"
                );
            }
        }
    }
}

#[test]
fn systemd_units_verify_and_their_calendars_parse() {
    let root = repo_root();
    let dir = TempDir::new("deploy-systemd");
    let env_file = dir.join("env");
    std::fs::write(&env_file, "DATABASE_URL=postgres://example.invalid/app\n").unwrap();
    let out = dir.join("units");
    let bin_dir = bin("lifeboat-backup").parent().unwrap().to_path_buf();
    schedule(
        &root.join("deploy/lifeboat.toml"),
        "systemd",
        &out,
        &[
            "--bin-dir",
            bin_dir.to_str().unwrap(),
            "--env-file",
            env_file.to_str().unwrap(),
        ],
    )
    .assert_code(0);
    let units: Vec<PathBuf> = files_in(&out)
        .into_iter()
        .map(|(n, _)| out.join(n))
        .collect();
    assert_eq!(units.len(), 8, "{units:?}");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/services.sh installs it)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    for unit in units.iter().filter(|u| u.extension().unwrap() == "timer") {
        let text = std::fs::read_to_string(unit).unwrap();
        assert!(text.contains("Persistent=true") && text.contains("RandomizedDelaySec="));
        let calendar = text
            .lines()
            .find_map(|l| l.strip_prefix("OnCalendar="))
            .unwrap();
        let parsed = Command::new("systemd-analyze")
            .args(["calendar", calendar])
            .output()
            .unwrap();
        assert!(parsed.status.success(), "{calendar}: {parsed:?}");
    }
    // The hourly run's calendar, as systemd itself reads it.
    let uploads = std::fs::read_to_string(out.join("lifeboat-backup-uploads.timer")).unwrap();
    assert!(
        uploads.contains("OnCalendar=*-*-* *:15:00 UTC"),
        "{uploads}"
    );
}

#[test]
fn kubernetes_and_railway_files_parse_and_have_what_they_need() {
    let root = repo_root();
    let dir = TempDir::new("deploy-k8s");
    let out = dir.join("k8s");
    schedule(&root.join("deploy/lifeboat.toml"), "kubernetes", &out, &[]).assert_code(0);
    let check = r#"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
assert len(docs) == 4, len(docs)
for d in docs:
    assert d["apiVersion"] == "batch/v1" and d["kind"] == "CronJob", d
    s = d["spec"]
    assert len(s["schedule"].split()) == 5, s["schedule"]
    assert s["timeZone"] == "UTC" and s["concurrencyPolicy"] == "Forbid", s
    assert s["startingDeadlineSeconds"] > 0
    job = s["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    c = pod["containers"][0]
    assert c["envFrom"][0]["secretRef"]["name"] == "lifeboat-env", c
    assert c["command"][0] in ("lifeboat-backup", "lifeboat-verify"), c
    assert "--config" in c["args"], c
print("ok")
"#;
    let python = Command::new("python3")
        .args(["-c", check])
        .arg(out.join("lifeboat.yaml"))
        .output()
        .expect("python3 with PyYAML (scripts/services.sh installs it)");
    assert!(
        python.status.success(),
        "{}",
        String::from_utf8_lossy(&python.stderr)
    );

    let out = dir.join("railway");
    schedule(&root.join("deploy/lifeboat.toml"), "railway", &out, &[]).assert_code(0);
    for (name, text) in files_in(&out) {
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let deploy = &doc["deploy"];
        lifeboat_core::schedule::Schedule::parse(deploy["cronSchedule"].as_str().unwrap(), "UTC")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(deploy["startCommand"]
            .as_str()
            .unwrap()
            .starts_with("lifeboat-"));
        assert_eq!(deploy["restartPolicyType"], "NEVER");
    }
    // Railway reads cron in UTC only: another time zone is refused, not shifted silently.
    let config = dir.join("berlin.toml");
    std::fs::write(
        &config,
        "[[job]]\nname = \"db\"\nengine = \"files\"\npaths = [\"/x\"]\nschedule = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\n",
    )
    .unwrap();
    schedule(&config, "railway", &dir.join("berlin"), &[])
        .assert_code(2)
        .assert_contains("UTC");
}

#[test]
fn the_crontab_line_parses_and_runs_a_real_backup_through_sh() {
    let dir = TempDir::new("deploy-cron");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "from cron").unwrap();
    let repo = dir.join("repo");
    let config = dir.join("lifeboat.toml");
    // The data path comes from the secrets file, as a database URL would.
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"docs\"\nengine = \"files\"\npaths = [\"${{LIFEBOAT_TEST_CRON_DATA}}\"]\nschedule = \"*/5 * * * *\"\n",
            repo.display()
        ),
    )
    .unwrap();
    let env_file = dir.join("env");
    std::fs::write(
        &env_file,
        format!("LIFEBOAT_TEST_CRON_DATA={}\n", data.display()),
    )
    .unwrap();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let out = dir.join("cron");
    let generate = finish(
        command("lifeboat-backup")
            .args([
                "--config",
                config.to_str().unwrap(),
                "schedule",
                "--print",
                "crontab",
            ])
            .args(["--output-dir", out.to_str().unwrap()])
            .args(["--env-file", env_file.to_str().unwrap()])
            .args(["--log-dir", logs.to_str().unwrap()])
            .env("LIFEBOAT_TEST_CRON_DATA", data.to_str().unwrap())
            .output()
            .unwrap(),
    );
    generate.assert_code(0);
    let crontab = std::fs::read_to_string(out.join("crontab")).unwrap();
    // The entries: every line that is not a comment, a blank or a variable (SHELL=, CRON_TZ=).
    let entries: Vec<&str> = crontab
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit() || c == '*' || c == '@'))
        .collect();
    assert_eq!(entries.len(), 1, "{crontab}");
    let fields: Vec<&str> = entries[0].split_whitespace().take(5).collect();
    lifeboat_core::schedule::Schedule::parse(&fields.join(" "), "UTC").unwrap();
    let command_line = entries[0]
        .splitn(6, char::is_whitespace)
        .nth(5)
        .unwrap()
        .trim_start()
        .replace("\\%", "%");
    // As cron runs it: sh, an almost empty environment, no terminal.
    let ran = Command::new("/bin/sh")
        .args(["-c", &command_line])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(ran.status.success(), "{ran:?}\n{crontab}");
    assert_eq!(manifests(&repo, "docs").len(), 1);
    let log = std::fs::read_to_string(logs.join("backup.log")).unwrap();
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{log}"
    );
}

#[test]
fn a_schedule_sets_the_freshness_limit_and_list_shows_next_and_overdue_runs() {
    let dir = TempDir::new("deploy-fresh");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "x").unwrap();
    let repo = dir.join("repo");
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"docs\"\nengine = \"files\"\npaths = [\"{}\"]\nschedule = \"0 3 * * *\"\n",
            repo.display(),
            data.display()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    run("lifeboat-backup", &["--config", c]).assert_code(0);
    let v = run(
        "lifeboat-verify",
        &["--config", c, "--level", "stored", "--json"],
    );
    v.assert_code(0);
    let freshness = &v.json()["jobs"][0]["freshness"];
    assert_eq!(freshness["max_age_secs"], 49 * 3600, "{freshness}");
    assert!(
        freshness["limit_from"]
            .as_str()
            .unwrap()
            .contains("schedule"),
        "{freshness}"
    );
    run("lifeboat-verify", &["--config", c, "--level", "stored"])
        .assert_contains("from the schedule 0 3 * * * (UTC)");
    // --max-age still wins.
    let v = run(
        "lifeboat-verify",
        &[
            "--config",
            c,
            "--level",
            "stored",
            "--max-age",
            "2h",
            "--json",
        ],
    );
    assert_eq!(v.json()["jobs"][0]["freshness"]["limit_from"], "--max-age");

    let list = run("lifeboat-restore", &["list", "--config", c]);
    list.assert_code(0).assert_contains("next run");
    assert!(!list.output().contains("OVERDUE"), "{}", list.output());
    // The newest snapshot made three days ago: a run was due since, and is flagged; the
    // freshness limit (49 h) fails verify with exit 5.
    let old = chrono::Utc::now() - chrono::Duration::days(3);
    edit_manifest(&repo, "docs", |m| {
        m["consistent_at"] = serde_json::json!(old)
    });
    run("lifeboat-restore", &["list", "--config", c])
        .assert_code(0)
        .assert_contains("OVERDUE");
    run("lifeboat-verify", &["--config", c, "--level", "stored"])
        .assert_code(5)
        .assert_contains("STALE");
}

#[test]
fn install_sh_installs_binaries_completions_and_man_pages() {
    let dir = TempDir::new("deploy-install");
    let prefix = dir.join("prefix");
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/install.sh"))
        .args(["--prefix", prefix.to_str().unwrap(), "--profile", "debug"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for bin in ["lifeboat-backup", "lifeboat-verify", "lifeboat-restore"] {
        let installed = prefix.join("bin").join(bin);
        let version = Command::new(&installed).arg("--version").output().unwrap();
        assert!(version.status.success());
        assert!(String::from_utf8_lossy(&version.stdout).starts_with(bin));
        let bash =
            std::fs::read_to_string(prefix.join("share/bash-completion/completions").join(bin))
                .unwrap();
        assert!(
            bash.contains("complete") && bash.contains("--config"),
            "{bin}"
        );
        assert!(prefix
            .join(format!("share/zsh/site-functions/_{bin}"))
            .exists());
        assert!(prefix
            .join(format!("share/fish/vendor_completions.d/{bin}.fish"))
            .exists());
        let page = prefix.join(format!("share/man/man1/{bin}.1"));
        let man = Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .expect("man (Debian's man-db; scripts/services.sh installs it)");
        let text = String::from_utf8_lossy(&man.stdout);
        assert!(
            man.status.success() && text.contains("--config"),
            "{bin}: {man:?}"
        );
    }
    let completions = run("lifeboat-backup", &["completions", "bash"]);
    completions
        .assert_code(0)
        .assert_contains("lifeboat-backup");
    // The container image installs what install.sh checks: the same list.
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("deploy/runtime-packages.txt"));
    let script = std::fs::read_to_string(repo_root().join("scripts/install.sh")).unwrap();
    assert!(script.contains("deploy/runtime-packages.txt"));
}

#[test]
fn help_examples_fit_in_80_columns_unwrapped() {
    for (bin, extra) in [
        ("lifeboat-backup", vec![]),
        ("lifeboat-backup", vec!["schedule"]),
        ("lifeboat-backup", vec!["keygen"]),
        ("lifeboat-backup", vec!["completions"]),
        ("lifeboat-verify", vec![]),
        ("lifeboat-restore", vec![]),
    ] {
        let mut args = extra.clone();
        args.push("--help");
        let out = finish(
            command(bin)
                .args(&args)
                // Wide, so that clap wraps nothing: the text itself must fit.
                .env("COLUMNS", "1000")
                .output()
                .unwrap(),
        );
        out.assert_code(0);
        let examples = out
            .stdout
            .split("Examples:")
            .nth(1)
            .unwrap_or_else(|| panic!("{bin} {extra:?} --help has no examples"));
        // The examples and what follows them (notes, exit codes, environment variables).
        for line in examples.lines() {
            assert!(
                line.chars().count() <= 80,
                "{bin} {extra:?} --help: a line of {} columns:\n{line}",
                line.chars().count()
            );
        }
    }
}
