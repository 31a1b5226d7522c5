//! Client-side encryption end to end through the binaries: age recipients (X25519 and
//! ssh-ed25519), several recipients, a passphrase, on a directory and on S3; identities only
//! where restoring (missing, wrong, rotated), tampered ciphertext, keyless content checks,
//! drills of encrypted PostgreSQL and Redis snapshots, and a scan of every output (and of the
//! children's command lines) for the database password and the passphrase.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use lifeboat_tests::*;

/// A passphrase no output may ever show.
const PASSPHRASE: &str = "lifeboat-passphrase-Zq7xK2";

/// `lifeboat-backup keygen --output DIR/NAME`: the identity file and its public key.
fn keygen(dir: &TempDir, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let run = run(
        "lifeboat-backup",
        &["keygen", "--output", path.to_str().unwrap()],
    );
    run.assert_code(0);
    let public = run.stdout.trim().to_string();
    assert!(public.starts_with("age1"), "{}", run.output());
    (path, public)
}

/// A small tree of files with known content.
fn make_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..20u32 {
        let name = format!("dir{}/file{i}.txt", i % 3);
        let body: Vec<u8> = format!("SECRET-PLAINTEXT-MARKER {i}\n")
            .repeat(200 + i as usize * 50)
            .into_bytes();
        let path = root.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &body).unwrap();
        files.insert(name, body);
    }
    files
}

fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(root)
        .into_iter()
        .map(|f| {
            let body = std::fs::read(root.join(&f)).unwrap();
            (f, body)
        })
        .collect()
}

/// A configuration with one files job and the given `[encryption]` lines.
fn files_config(dir: &TempDir, repo: &str, data: &Path, encryption: &str) -> PathBuf {
    let path = dir.join("lifeboat.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = \"{repo}\"\n\n[encryption]\n{encryption}\n\n[[job]]\nname = \"docs\"\nengine = \"files\"\npaths = [\"{}\"]\n",
            data.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn with_config(config: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

fn run_with(name: &str, config: &Path, args: &[&str]) -> Run {
    let all = with_config(config, args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    run(name, &refs)
}

/// The data objects of a local repository, whole.
fn data_bytes(repo: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    data_objects(repo)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

#[test]
fn one_recipient_round_trip_with_missing_wrong_and_right_identities() {
    let dir = TempDir::new("enc-one");
    let (identity, public) = keygen(&dir, "identity.txt");
    let (other, _) = keygen(&dir, "other.txt");
    // keygen: owner-only, never overwrites.
    let mode = std::fs::metadata(&identity).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = run(
        "lifeboat-backup",
        &["keygen", "--output", identity.to_str().unwrap()],
    );
    again.assert_code(2).assert_contains("never overwritten");
    assert!(std::fs::read_to_string(&identity)
        .unwrap()
        .contains(&format!("# public key: {public}")));

    let data = dir.join("data");
    let files = make_tree(&data);
    let repo = dir.join("repo");
    let config = files_config(
        &dir,
        repo.to_str().unwrap(),
        &data,
        &format!("recipients = [\"{public}\"]"),
    );
    let b = run_with("lifeboat-backup", &config, &["--json"]);
    b.assert_code(0);
    assert_eq!(
        b.json()["jobs"][0]["report"]["encryption"]["recipients"][0],
        public.as_str()
    );

    let manifest = &manifests(&repo, "docs")[0];
    assert_eq!(manifest["encryption"]["scheme"], "age");
    assert_eq!(manifest["encryption"]["recipients"][0], public.as_str());
    assert!(manifest["object"]["key"]
        .as_str()
        .unwrap()
        .ends_with(".tar.zst.age"));
    let manifest_text = serde_json::to_string(manifest).unwrap();
    assert!(!manifest_text.contains("AGE-SECRET-KEY"));
    let objects = data_bytes(&repo);
    assert_eq!(objects.len(), 1);
    assert!(objects[0].1.starts_with(b"age-encryption.org/v1\n"));
    // Compressed then encrypted: the plaintext shows nowhere, and the zstd magic neither.
    assert!(!String::from_utf8_lossy(&objects[0].1).contains("SECRET-PLAINTEXT-MARKER"));

    // Without an identity: exit 2, naming the recipient; the target is not created.
    let target = dir.join("restored");
    let t = target.to_str().unwrap();
    run_with(
        "lifeboat-restore",
        &config,
        &["--job", "docs", "--latest", "--to", t, "--yes"],
    )
    .assert_code(2)
    .assert_contains(&public)
    .assert_contains("--identity");
    assert!(!target.exists());
    // A dry run says the same: it checks what the real run checks.
    run_with(
        "lifeboat-restore",
        &config,
        &["--job", "docs", "--latest", "--to", t, "--dry-run"],
    )
    .assert_code(2)
    .assert_contains(&public);
    // The wrong identity: exit 2, "no matching identity", with the recipients.
    run_with(
        "lifeboat-restore",
        &config,
        &[
            "--job",
            "docs",
            "--latest",
            "--to",
            t,
            "--yes",
            "--identity",
            other.to_str().unwrap(),
        ],
    )
    .assert_code(2)
    .assert_contains("no matching identity")
    .assert_contains(&public);
    assert!(!target.exists());
    // The right one, through the environment variable.
    let restored = finish(
        command("lifeboat-restore")
            .args(with_config(
                &config,
                &["--job", "docs", "--latest", "--to", t, "--yes"],
            ))
            .env("LIFEBOAT_AGE_IDENTITY_FILE", &identity)
            .output()
            .unwrap(),
    );
    restored.assert_code(0);
    assert_eq!(read_tree(&target), files);

    // verify --level content without the identity: keyless, exit 0, recorded as such.
    let v = run_with(
        "lifeboat-verify",
        &config,
        &["--job", "docs", "--level", "content", "--json"],
    );
    v.assert_code(0);
    let check = &v.json()["jobs"][0]["checks"][0];
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["keyless"], true, "{check}");
    run_with(
        "lifeboat-verify",
        &config,
        &["--job", "docs", "--level", "content"],
    )
    .assert_contains("need the identity");
    // With it: the full check, not keyless.
    let v = run_with(
        "lifeboat-verify",
        &config,
        &[
            "--job",
            "docs",
            "--level",
            "content",
            "--json",
            "--identity",
            identity.to_str().unwrap(),
        ],
    );
    v.assert_code(0);
    assert!(v.json()["jobs"][0]["checks"][0].get("keyless").is_none());
    // A drill needs the identity.
    run_with(
        "lifeboat-verify",
        &config,
        &["--job", "docs", "--level", "drill"],
    )
    .assert_code(2)
    .assert_contains(&public);
    run_with(
        "lifeboat-verify",
        &config,
        &[
            "--job",
            "docs",
            "--level",
            "drill",
            "--identity",
            identity.to_str().unwrap(),
        ],
    )
    .assert_code(0);
    // The listing says who can restore it.
    run(
        "lifeboat-restore",
        &["list", "--config", config.to_str().unwrap()],
    )
    .assert_code(0)
    .assert_contains(&public);
}

#[test]
fn tampered_ciphertext_is_an_integrity_failure_and_changes_nothing() {
    let dir = TempDir::new("enc-tamper");
    let (identity, public) = keygen(&dir, "identity.txt");
    let data = dir.join("data");
    make_tree(&data);
    let repo = dir.join("repo");
    let config = files_config(
        &dir,
        repo.to_str().unwrap(),
        &data,
        &format!("recipients = [\"{public}\"]"),
    );
    run_with("lifeboat-backup", &config, &[]).assert_code(0);
    let (object, original) = data_bytes(&repo).remove(0);
    let restore = |target: &Path| {
        run_with(
            "lifeboat-restore",
            &config,
            &[
                "--job",
                "docs",
                "--latest",
                "--to",
                target.to_str().unwrap(),
                "--yes",
                "--identity",
                identity.to_str().unwrap(),
            ],
        )
    };
    // One byte of the payload changed: the stored digest no longer matches.
    let mut tampered = original.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x20;
    std::fs::write(&object, &tampered).unwrap();
    let target = dir.join("restored");
    restore(&target).assert_code(3).assert_contains("damaged");
    assert!(!target.exists(), "the target was touched");

    // The same change with the manifest's stored digest made to match: age's own
    // authentication is what catches it now.
    use sha2::Digest;
    edit_manifest(&repo, "docs", |m| {
        m["object"]["stored_sha256"] = hex::encode(sha2::Sha256::digest(&tampered)).into();
    });
    restore(&target)
        .assert_code(3)
        .assert_contains("cannot be decrypted");
    assert!(!target.exists(), "the target was touched");
    run_with(
        "lifeboat-verify",
        &config,
        &[
            "--job",
            "docs",
            "--level",
            "content",
            "--identity",
            identity.to_str().unwrap(),
        ],
    )
    .assert_code(3);
}

#[test]
fn several_recipients_ssh_ed25519_and_a_key_rotation() {
    let dir = TempDir::new("enc-many");
    let (first, first_public) = keygen(&dir, "first.txt");
    let (second, second_public) = keygen(&dir, "second.txt");
    let ssh_key = dir.join("id_ed25519");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "lifeboat-test", "-f"])
        .arg(&ssh_key)
        .output()
        .expect("ssh-keygen (Debian's openssh-client, installed by scripts/services.sh)");
    assert!(out.status.success(), "{out:?}");
    let ssh_public = std::fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
    let ssh_public = ssh_public.trim();

    let data = dir.join("data");
    let files = make_tree(&data);
    let repo = dir.join("repo");
    let config = files_config(
        &dir,
        repo.to_str().unwrap(),
        &data,
        &format!("recipients = [\"{first_public}\", \"{ssh_public}\"]"),
    );
    run_with("lifeboat-backup", &config, &[]).assert_code(0);
    let old = manifests(&repo, "docs")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Each recipient's identity opens it on its own: the age one and the ssh key.
    for (n, id) in [&first, &ssh_key].into_iter().enumerate() {
        let target = dir.join(&format!("restored-{n}"));
        run_with(
            "lifeboat-restore",
            &config,
            &[
                "--job",
                "docs",
                "--snapshot",
                &old,
                "--to",
                target.to_str().unwrap(),
                "--yes",
                "--identity",
                id.to_str().unwrap(),
            ],
        )
        .assert_code(0);
        assert_eq!(read_tree(&target), files);
    }

    // Rotation: new snapshots go to the second key only; the old one still needs the old key.
    let config = files_config(
        &dir,
        repo.to_str().unwrap(),
        &data,
        &format!("recipients = [\"{second_public}\"]"),
    );
    std::fs::write(data.join("dir0/new.txt"), b"after the rotation").unwrap();
    run_with("lifeboat-backup", &config, &[]).assert_code(0);
    // (Two ids of one second sort by their random part: find the new one by elimination.)
    let all = manifests(&repo, "docs");
    assert_eq!(all.len(), 2);
    let new = all
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .find(|id| *id != old)
        .unwrap();
    let restore = |id: &str, identity: &Path, target: &str| {
        run_with(
            "lifeboat-restore",
            &config,
            &[
                "--job",
                "docs",
                "--snapshot",
                id,
                "--to",
                target,
                "--yes",
                "--identity",
                identity.to_str().unwrap(),
            ],
        )
    };
    let t = dir.join("rotated");
    restore(&old, &second, t.to_str().unwrap())
        .assert_code(2)
        .assert_contains("no matching identity")
        .assert_contains(&first_public);
    restore(&new, &first, t.to_str().unwrap())
        .assert_code(2)
        .assert_contains(&second_public);
    restore(&new, &second, t.to_str().unwrap()).assert_code(0);
    assert_eq!(
        std::fs::read(t.join("dir0/new.txt")).unwrap(),
        b"after the rotation"
    );
    // Both identities at once open both snapshots (verify --all with two --identity flags).
    run_with(
        "lifeboat-verify",
        &config,
        &[
            "--job",
            "docs",
            "--all",
            "--level",
            "content",
            "--identity",
            first.to_str().unwrap(),
            "--identity",
            second.to_str().unwrap(),
        ],
    )
    .assert_code(0);
    // The listing shows which recipients each snapshot needs.
    let list = run(
        "lifeboat-restore",
        &["list", "--config", config.to_str().unwrap(), "--json"],
    );
    list.assert_code(0);
    let listed = list.json()["jobs"][0]["snapshots"].clone();
    let needs = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["encryption"]["recipients"]
            .clone()
    };
    assert_eq!(needs(&old), serde_json::json!([first_public, ssh_public]));
    assert_eq!(needs(&new), serde_json::json!([second_public]));
}

#[test]
fn a_passphrase_on_s3_is_pinned_and_never_shown() {
    let dir = TempDir::new("enc-pass");
    let bucket = s3_bucket("lifeboat-enc-pass");
    let repo = format!("s3://{bucket}/p");
    let data = dir.join("data");
    let files = make_tree(&data);
    let config = files_config(
        &dir,
        &repo,
        &data,
        "passphrase-env = \"LIFEBOAT_TEST_PASSPHRASE\"\nwork-factor = 12",
    );
    let with_passphrase = |name: &str, args: &[&str], passphrase: &str| {
        let mut all = with_config(&config, args);
        all.extend(s3_flags());
        finish(
            command(name)
                .args(all)
                .env("LIFEBOAT_TEST_PASSPHRASE", passphrase)
                .output()
                .unwrap(),
        )
    };
    let b = with_passphrase("lifeboat-backup", &["--json"], PASSPHRASE);
    b.assert_code(0);
    assert_eq!(
        b.json()["jobs"][0]["report"]["encryption"],
        serde_json::json!({"scheme": "age-scrypt", "work_factor": 12})
    );
    let target = dir.join("restored");
    let t = target.to_str().unwrap();
    let outputs = vec![
        b,
        with_passphrase(
            "lifeboat-restore",
            &["--job", "docs", "--latest", "--to", t, "--yes"],
            "not the passphrase",
        ),
        with_passphrase(
            "lifeboat-restore",
            &["--job", "docs", "--latest", "--to", t, "--yes", "--json"],
            PASSPHRASE,
        ),
        with_passphrase(
            "lifeboat-verify",
            &["--job", "docs", "--level", "drill", "--log-format", "json"],
            PASSPHRASE,
        ),
        with_passphrase("lifeboat-backup", &["--print-config"], PASSPHRASE),
    ];
    outputs[1]
        .assert_code(2)
        .assert_contains("does not decrypt it");
    outputs[2].assert_code(0);
    outputs[3].assert_code(0);
    assert_eq!(read_tree(&target), files);
    for run in &outputs {
        assert!(
            !run.output().contains(PASSPHRASE),
            "the passphrase leaked:\n{}",
            run.output()
        );
    }
    // Nothing in the bucket holds it either (manifests, verification records).
    block_on(async {
        let client = s3_client().await;
        let listed = client
            .list_objects_v2()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        assert!(keys.iter().any(|k| k.ends_with(".tar.zst.age")), "{keys:?}");
        for key in keys.iter().filter(|k| k.ends_with(".json")) {
            let body = client
                .get_object()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            assert!(
                !String::from_utf8_lossy(&body).contains(PASSPHRASE),
                "{key}"
            );
        }
    });
}

#[test]
fn encrypted_postgres_drill_and_restore_with_no_secret_anywhere() {
    let dir = TempDir::new("enc-pg");
    let (identity, public) = keygen(&dir, "identity.txt");
    let db = TestDb::awkward("enc");
    // Enough rows that pg_dump runs long enough to be seen in /proc.
    sql(
        &db.url(),
        "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 400000) g",
    );
    let repo = dir.join("repo");
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n[encryption]\nrecipients = [\"{public}\"]\n\n[[job]]\nname = \"db\"\nengine = \"postgres\"\nurl = \"${{LIFEBOAT_TEST_DB_URL}}\"\n",
            repo.display()
        ),
    )
    .unwrap();
    let logs = dir.join("backup.log");
    let mut child = command("lifeboat-backup")
        .args([
            "--config",
            config.to_str().unwrap(),
            "--log-format",
            "json",
            "--json",
        ])
        .env("LIFEBOAT_TEST_DB_URL", db.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&logs).unwrap())
        .spawn()
        .unwrap();
    // Every process the backup starts, and what its command line says, while it runs.
    let pid = child.id();
    let mut seen = std::collections::BTreeSet::new();
    let started = std::time::Instant::now();
    let done = loop {
        // A child that has exited shows an empty command line: keep what it showed alive.
        seen.extend(
            descendants(pid)
                .into_iter()
                .map(|(_, c)| c)
                .filter(|c| !c.is_empty()),
        );
        if started.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the backup did not finish within 2 minutes");
        }
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let b = Run {
        code: done.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
        stderr: std::fs::read_to_string(&logs).unwrap(),
    };
    b.assert_code(0);
    assert!(
        seen.iter().any(|c| c.contains("pg_dump")),
        "pg_dump was never seen running: {seen:?}"
    );
    for cmdline in &seen {
        assert!(
            !cmdline.contains(PG_PASSWORD),
            "a child's command line: {cmdline}"
        );
    }

    let scratch = admin_url();
    let drill = finish(
        command("lifeboat-verify")
            .args([
                "--config",
                config.to_str().unwrap(),
                "--job",
                "db",
                "--level",
                "drill",
                "--scratch-url",
                &scratch,
                "--identity",
                identity.to_str().unwrap(),
                "--json",
            ])
            .env("LIFEBOAT_TEST_DB_URL", db.url())
            .output()
            .unwrap(),
    );
    drill.assert_code(0);
    let target = TestDb::create("enc_target");
    let restored = finish(
        command("lifeboat-restore")
            .args([
                "--config",
                config.to_str().unwrap(),
                "--job",
                "db",
                "--latest",
                "--to-env",
                "LIFEBOAT_TEST_TARGET",
                "--yes",
                "--identity",
                identity.to_str().unwrap(),
            ])
            .env("LIFEBOAT_TEST_TARGET", target.url())
            .env("LIFEBOAT_TEST_DB_URL", db.url())
            .output()
            .unwrap(),
    );
    restored.assert_code(0);
    assert_eq!(db_digest(&target.url()), db_digest(&db.url()));

    // Every output and every file in the repository: no password, no identity.
    let secret_key = std::fs::read_to_string(&identity).unwrap();
    let secret_key = secret_key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let mut texts = vec![b.output(), drill.output(), restored.output()];
    for file in files_under(&repo) {
        if file.ends_with(".json") || file.ends_with("lock") {
            texts.push(std::fs::read_to_string(repo.join(&file)).unwrap());
        }
    }
    for text in &texts {
        assert!(!text.contains(PG_PASSWORD), "the password leaked:\n{text}");
        assert!(!text.contains(secret_key), "the identity leaked:\n{text}");
    }
}

/// The processes below `pid`, with their command lines.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut parents = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // The parent is the second field after the parenthesised name.
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a.to_string()) else {
            continue;
        };
        if let Some(ppid) = after
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok())
        {
            parents.insert(p, ppid);
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (&p, &pp) in &parents {
            if pp == parent {
                frontier.push(p);
                if let Ok(raw) = std::fs::read(format!("/proc/{p}/cmdline")) {
                    out.push((p, String::from_utf8_lossy(&raw).replace('\0', " ")));
                }
            }
        }
    }
    out
}

#[test]
fn encrypted_redis_drill() {
    use lifeboat_tests::redis::*;
    let Servers {
        _guard,
        source_url,
        target_url,
        mut source,
        mut target,
    } = servers();
    let expected = fill(&mut source, 0, false);
    let dir = TempDir::new("enc-redis");
    let (identity, public) = keygen(&dir, "identity.txt");
    let repo = dir.join("repo");
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n[encryption]\nrecipients = [\"{public}\"]\n\n[[job]]\nname = \"cache\"\nengine = \"redis\"\nurl = \"{source_url}\"\n",
            repo.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    run("lifeboat-backup", &["--config", config.to_str().unwrap()]).assert_code(0);
    let manifest = &manifests(&repo, "cache")[0];
    assert!(manifest["object"]["key"]
        .as_str()
        .unwrap()
        .ends_with(".rdb.zst.age"));
    target.ok("FLUSHALL");
    run(
        "lifeboat-verify",
        &[
            "--config",
            config.to_str().unwrap(),
            "--level",
            "drill",
            "--scratch-url",
            &target_url,
            "--identity",
            identity.to_str().unwrap(),
        ],
    )
    .assert_code(0)
    .assert_contains("level drill");
    // A real restore brings every key back.
    run(
        "lifeboat-restore",
        &[
            "--config",
            config.to_str().unwrap(),
            "--job",
            "cache",
            "--latest",
            "--to",
            &target_url,
            "--yes",
            "--identity",
            identity.to_str().unwrap(),
        ],
    )
    .assert_code(0);
    let total: u64 = expected.values().sum();
    assert_eq!(dbsize(&mut target, 0) as u64, total);
    target.ok("FLUSHALL");
}

#[test]
fn bad_encryption_settings_are_errors_with_a_place() {
    let dir = TempDir::new("enc-bad");
    let data = dir.join("data");
    make_tree(&data);
    let repo = dir.join("repo");
    for (lines, needle) in [
        ("recipients = [\"age1nope\"]", "not a valid age public key"),
        ("recipients = []", "recipients is empty"),
        (
            "recipients = [\"AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\"]",
            "not a recipient",
        ),
        (
            "passphrase-env = \"X\"\nrecipients = [\"age1x\"]",
            "exactly one of",
        ),
        ("passphrase-env = \"X\"\nwork-factor = 30", "work-factor must be"),
    ] {
        let config = files_config(&dir, repo.to_str().unwrap(), &data, lines);
        let r = run_with("lifeboat-backup", &config, &[]);
        r.assert_code(2).assert_contains(needle);
        // Where: the file and the line of the table.
        r.assert_contains(&format!("{}:4:", config.display()));
        assert!(!r.output().contains("QQQQQQQQQQQQQQQQ"), "{}", r.output());
    }
    // A passphrase variable that is unset fails the backup before any work, exit 2.
    let config = files_config(
        &dir,
        repo.to_str().unwrap(),
        &data,
        "passphrase-env = \"LIFEBOAT_TEST_UNSET_PASSPHRASE\"",
    );
    run_with("lifeboat-backup", &config, &[])
        .assert_code(2)
        .assert_contains("LIFEBOAT_TEST_UNSET_PASSPHRASE");
    assert!(!repo.join("jobs/docs/snapshots").exists() || manifests(&repo, "docs").is_empty());
}

#[test]
fn a_config_with_a_literal_password_readable_by_others_is_warned_about() {
    let dir = TempDir::new("enc-perm");
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"db\"\nengine = \"postgres\"\nurl = \"{}\"\n",
            dir.join("repo").display(),
            db_url("postgres")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run(
        "lifeboat-backup",
        &["--config", config.to_str().unwrap(), "--print-config"],
    );
    r.assert_code(0)
        .assert_contains(&format!("chmod 600 {}", config.display()))
        .assert_contains("line 7");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(
        "lifeboat-backup",
        &["--config", config.to_str().unwrap(), "--print-config"],
    );
    r.assert_code(0);
    assert!(!r.output().contains("chmod"), "{}", r.output());
}

#[test]
fn every_environment_variable_is_in_the_readme_and_the_help() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let help = run("lifeboat-restore", &["--help"]);
    for (name, _) in lifeboat_core::config::env::ALL {
        for part in name.split(", ") {
            assert!(
                readme.contains(&format!("`{part}`")),
                "README.md lacks {part}"
            );
            help.assert_contains(part);
        }
    }
}

#[test]
fn recipients_and_a_passphrase_file_on_both_stores() {
    let dir = TempDir::new("enc-both");
    let (identity, public) = keygen(&dir, "identity.txt");
    let passphrase_file = dir.join("passphrase");
    std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
    let data = dir.join("data");
    let files = make_tree(&data);
    let bucket = s3_bucket("lifeboat-enc-both");
    let modes = [
        (
            "recipient",
            format!("recipients = [\"{public}\"]"),
            vec!["--identity".to_string(), identity.display().to_string()],
        ),
        (
            "passphrase",
            format!(
                "passphrase-file = \"{}\"\nwork-factor = 11",
                passphrase_file.display()
            ),
            vec![],
        ),
    ];
    for (store, repo) in [
        ("local", dir.join("repo").display().to_string()),
        ("s3", format!("s3://{bucket}/both")),
    ] {
        for (mode, lines, keys) in &modes {
            let repo = format!("{repo}-{mode}");
            let config = files_config(&dir, &repo, &data, lines);
            let extra: Vec<String> = if store == "s3" { s3_flags() } else { vec![] };
            let go = |name: &str, args: &[&str]| {
                let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
                all.extend(extra.iter().cloned());
                run_with(
                    name,
                    &config,
                    &all.iter().map(String::as_str).collect::<Vec<_>>(),
                )
            };
            go("lifeboat-backup", &[]).assert_code(0);
            let target = dir.join(&format!("restored-{store}-{mode}"));
            let mut args = vec![
                "--job",
                "docs",
                "--latest",
                "--to",
                target.to_str().unwrap(),
                "--yes",
            ];
            args.extend(keys.iter().map(String::as_str));
            let restored = go("lifeboat-restore", &args);
            restored.assert_code(0);
            assert_eq!(read_tree(&target), files, "{store} {mode}");
            assert!(!restored.output().contains(PASSPHRASE));
        }
    }
}

#[test]
fn a_one_liner_encrypts_with_recipient_flags() {
    let dir = TempDir::new("enc-flag");
    let (identity, public) = keygen(&dir, "identity.txt");
    let data = dir.join("data");
    let files = make_tree(&data);
    let repo = dir.join("repo");
    let backup = |recipient: &str| {
        run(
            "lifeboat-backup",
            &[
                "--engine",
                "files",
                "--path",
                data.to_str().unwrap(),
                "--job",
                "docs",
                "--repo",
                repo.to_str().unwrap(),
                "--recipient",
                recipient,
            ],
        )
    };
    backup("age1nope")
        .assert_code(2)
        .assert_contains("--recipient");
    backup(&public).assert_code(0);
    assert_eq!(
        manifests(&repo, "docs")[0]["encryption"]["recipients"][0],
        public.as_str()
    );
    let target = dir.join("restored");
    run(
        "lifeboat-restore",
        &[
            "--repo",
            repo.to_str().unwrap(),
            "--job",
            "docs",
            "--latest",
            "--to",
            target.to_str().unwrap(),
            "--identity",
            identity.to_str().unwrap(),
        ],
    )
    .assert_code(0);
    assert_eq!(read_tree(&target), files);
}

/// Trust III, 6: a flipped byte inside the recipient stanza of the age header made restore,
/// its dry run and content verify with the right identity say "no matching identity" (exit 2),
/// sending the operator after a key they never lost. An identity of a recorded recipient that
/// cannot open the header means damage (exit 3); a key that is not a recipient stays exit 2.
#[test]
fn a_damaged_age_header_is_reported_as_a_wrong_key() {
    let dir = TempDir::new("enc-header");
    let (identity, public) = keygen(&dir, "identity.txt");
    let (stranger, _) = keygen(&dir, "stranger.txt");
    let data = dir.join("data");
    make_tree(&data);
    let repo = dir.join("repo");
    let config = files_config(
        &dir,
        repo.to_str().unwrap(),
        &data,
        &format!("recipients = [\"{public}\"]"),
    );
    run_with("lifeboat-backup", &config, &[]).assert_code(0);
    let target = dir.join("restored");
    let restore = |identity: &Path, extra: &[&str]| {
        let mut args = vec![
            "--job",
            "docs",
            "--latest",
            "--to",
            target.to_str().unwrap(),
            "--yes",
            "--identity",
            identity.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run_with("lifeboat-restore", &config, &args)
    };
    // Intact, with an identity that is not a recipient: a wrong key, exit 2.
    restore(&stranger, &["--dry-run"])
        .assert_code(2)
        .assert_contains("no matching identity");
    // A byte of the wrapped file key (the line after "-> X25519 ...") flipped.
    let (object, original) = data_bytes(&repo).remove(0);
    let mut damaged = original.clone();
    let stanza = original
        .windows(10)
        .position(|w| w == b"-> X25519 ")
        .expect("an X25519 stanza");
    let body = stanza + original[stanza..].iter().position(|b| *b == b'\n').unwrap() + 3;
    damaged[body] = if damaged[body] == b'A' { b'B' } else { b'A' };
    std::fs::write(&object, &damaged).unwrap();
    for extra in [&["--dry-run"][..], &[]] {
        let r = restore(&identity, extra);
        r.assert_code(3);
        assert!(
            !r.output().contains("no matching identity"),
            "{extra:?}: damage reported as a wrong key:\n{}",
            r.output()
        );
    }
    assert!(!target.exists(), "the target was touched");
    run_with(
        "lifeboat-verify",
        &config,
        &[
            "--job",
            "docs",
            "--level",
            "content",
            "--identity",
            identity.to_str().unwrap(),
        ],
    )
    .assert_code(3);
}
