//! The files engine end to end: the real binaries back up a directory tree, verify it (content
//! and drill) and restore it, and the restored tree is compared with the original entry by entry
//! (type, mode, size, modification time to the nanosecond, SHA-256, link target, hard links).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use lifeboat_tests::*;
use sha2::{Digest, Sha256};

/// What the comparison looks at, per entry.
#[derive(Debug, PartialEq, Eq)]
struct Facts {
    kind: &'static str,
    mode: u32,
    size: u64,
    mtime_ns: i128,
    sha256: Option<String>,
    link: Option<PathBuf>,
    nlink: u64,
}

/// Every entry under `root` (not `root` itself), by relative path.
fn tree(root: &Path) -> BTreeMap<PathBuf, Facts> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else {
                "file"
            };
            let sha256 = ft.is_file().then(|| {
                let mut hasher = Sha256::new();
                let mut file = std::fs::File::open(&path).unwrap();
                std::io::copy(&mut file, &mut hasher).unwrap();
                hex::encode(hasher.finalize())
            });
            out.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                Facts {
                    kind,
                    mode: meta.mode() & 0o7777,
                    size: if ft.is_file() { meta.len() } else { 0 },
                    mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
                    sha256,
                    link: ft.is_symlink().then(|| std::fs::read_link(&path).unwrap()),
                    nlink: if ft.is_file() { meta.nlink() } else { 0 },
                },
            );
        }
    }
    out
}

fn assert_same_tree(original: &Path, restored: &Path) {
    let (a, b) = (tree(original), tree(restored));
    let differences: Vec<String> = a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{}: {:?} != {:?}", k.display(), a.get(k), b.get(k)))
        .collect();
    assert!(
        differences.is_empty(),
        "the trees differ:\n{}",
        differences.join("\n")
    );
    assert!(a.len() > 5, "the tree under test is too small: {a:?}");
}

fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let time = std::time::UNIX_EPOCH + std::time::Duration::new(secs as u64, nanos);
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .or_else(|_| std::fs::File::open(path))
        .unwrap();
    file.set_modified(time).unwrap();
}

/// A tree with what tar formats get wrong: nested and empty folders, names over 100 bytes,
/// Unicode, a symlink, a hard link, a large sparse file, odd modes and old times.
fn awkward_tree(root: &Path, large: u64) {
    let long = "l".repeat(120);
    let deep = root.join("a/b/c").join(&long);
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::create_dir_all(root.join("empty/also-empty")).unwrap();
    std::fs::write(deep.join(format!("{long}.txt")), b"deep and long").unwrap();
    std::fs::write(root.join("a/ünïcødé — 日本語.txt"), "text ✓".repeat(100)).unwrap();
    std::fs::write(root.join("a/b/odd-mode"), b"x").unwrap();
    std::fs::set_permissions(
        root.join("a/b/odd-mode"),
        std::fs::Permissions::from_mode(0o741),
    )
    .unwrap();
    std::fs::write(root.join("a/old"), b"from 1990").unwrap();
    set_mtime(&root.join("a/old"), 631_152_000, 0);
    std::fs::write(root.join("a/nanos"), b"n").unwrap();
    set_mtime(&root.join("a/nanos"), 1_700_000_000, 123_456_789);
    std::os::unix::fs::symlink("b/odd-mode", root.join("a/link")).unwrap();
    std::os::unix::fs::symlink(format!("c/{long}"), root.join("a/b/long-link")).unwrap();
    std::fs::hard_link(root.join("a/old"), root.join("hard-link-to-old")).unwrap();
    let big = std::fs::File::create(root.join("large.sparse")).unwrap();
    big.set_len(large).unwrap();
    let mut tail = std::fs::File::options()
        .write(true)
        .open(root.join("large.sparse"))
        .unwrap();
    std::io::Seek::seek(&mut tail, std::io::SeekFrom::End(-5)).unwrap();
    tail.write_all(b"!end!").unwrap();
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // Folder times last: writing into a folder changes its time.
    set_mtime(&root.join("a/b"), 946_684_800, 5);
}

fn backup(src: &Path, repo: &TempDir, extra: &[&str]) -> Run {
    let mut args = vec![
        "--engine",
        "files",
        "--path",
        src.to_str().unwrap(),
        "--job",
        "uploads",
        "--repo",
        repo.as_str(),
    ];
    args.extend_from_slice(extra);
    run("lifeboat-backup", &args)
}

fn restore(repo: &TempDir, to: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "--repo",
        repo.as_str(),
        "--job",
        "uploads",
        "--latest",
        "--yes",
        "--to",
        to.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run("lifeboat-restore", &args)
}

#[test]
fn an_awkward_tree_survives_backup_verify_drill_and_restore_entry_by_entry() {
    let dir = TempDir::new("files-roundtrip");
    let src = dir.join("src");
    awkward_tree(&src, 1 << 30);
    // The tree's own folder: its mode comes back on the target.
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o750)).unwrap();
    let repo = TempDir::new("files-roundtrip-repo");
    backup(&src, &repo, &[])
        .assert_code(0)
        .assert_contains("2 symlinks")
        .assert_contains("1 hard link");
    let manifest = &manifests(repo.path(), "uploads")[0];
    assert_eq!(manifest["engine"], "files");
    assert_eq!(manifest["fingerprint"]["files"], 6);
    assert_eq!(manifest["fingerprint"]["symlinks"], 2);
    assert_eq!(manifest["fingerprint"]["hard_links"], 1);
    assert!(
        manifest["object"]["stored_size"].as_u64().unwrap() < 1 << 20,
        "{manifest}"
    );
    for level in ["content", "drill"] {
        let scratch = dir.join(&format!("scratch-{level}"));
        std::fs::create_dir_all(&scratch).unwrap();
        run(
            "lifeboat-verify",
            &[
                "--repo",
                repo.as_str(),
                "--level",
                level,
                "--scratch-dir",
                scratch.to_str().unwrap(),
            ],
        )
        .assert_code(0)
        .assert_contains(&format!("level {level}"));
        assert_eq!(
            std::fs::read_dir(&scratch).unwrap().count(),
            0,
            "the drill left files"
        );
    }
    let out = dir.join("restored");
    restore(&repo, &out, &["--dry-run"])
        .assert_code(0)
        .assert_contains("nothing was changed");
    assert!(!out.exists(), "a dry run wrote the target");
    restore(&repo, &out, &[]).assert_code(0);
    assert_same_tree(&src, &out);
    assert_eq!(
        std::fs::metadata(&out).unwrap().mode() & 0o7777,
        0o750,
        "the target did not get the tree's own mode"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[test]
fn several_paths_become_folders_and_exclusions_are_left_out() {
    let dir = TempDir::new("files-paths");
    for (name, file) in [("uploads", "u.txt"), ("logs", "l.log")] {
        std::fs::create_dir_all(dir.join(name).join("cache")).unwrap();
        std::fs::write(dir.join(name).join(file), name).unwrap();
        std::fs::write(dir.join(name).join("scratch.tmp"), b"tmp").unwrap();
        std::fs::write(dir.join(name).join("cache/c"), b"c").unwrap();
    }
    let repo = TempDir::new("files-paths-repo");
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"volumes\"\nengine = \"files\"\npaths = [\"{}\", \"{}\"]\nexclude = [\"*.tmp\", \"cache/\"]\ncompression-level = 3\n",
            repo.as_str(),
            dir.join("uploads").display(),
            dir.join("logs").display()
        ),
    )
    .unwrap();
    // `--job NAME` names a configured job, as it does for verify and restore.
    run(
        "lifeboat-backup",
        &["--config", config.to_str().unwrap(), "--job", "volumes"],
    )
    .assert_code(0)
    .assert_contains("zstd level 3");
    // A configured level is kept throughout: the manifest does not call it adaptive.
    let compression = &manifests(repo.path(), "volumes")[0]["compression"];
    assert_eq!(
        *compression,
        serde_json::json!({"algorithm": "zstd", "level": 3}),
        "{compression}"
    );
    let out = dir.join("out");
    run(
        "lifeboat-restore",
        &[
            "--config",
            config.to_str().unwrap(),
            "--job",
            "volumes",
            "--latest",
            "--yes",
            "--to",
            out.to_str().unwrap(),
        ],
    )
    .assert_code(0);
    assert_eq!(
        files_under(&out),
        vec!["logs/l.log".to_string(), "uploads/u.txt".to_string()]
    );
    assert_eq!(
        std::fs::read_to_string(out.join("uploads/u.txt")).unwrap(),
        "uploads"
    );
}

#[test]
fn a_flipped_byte_is_exit_3_and_leaves_the_target_as_it_was() {
    let dir = TempDir::new("files-flip");
    let src = dir.join("src");
    awkward_tree(&src, 1 << 20);
    let repo = TempDir::new("files-flip-repo");
    backup(&src, &repo, &["--compression", "none"]).assert_code(0);
    let object = &data_objects(repo.path())[0];
    let mut bytes = std::fs::read(object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(object, &bytes).unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("precious"), b"keep me").unwrap();
    restore(&repo, &out, &["--clean"]).assert_code(3);
    assert_eq!(files_under(&out), vec!["precious".to_string()]);
    assert_eq!(std::fs::read(out.join("precious")).unwrap(), b"keep me");
    let hidden: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "staging left behind: {hidden:?}");
    run(
        "lifeboat-verify",
        &["--repo", repo.as_str(), "--level", "content"],
    )
    .assert_code(3);
}

#[test]
fn a_non_empty_target_is_refused_without_clean_and_replaced_with_it() {
    let dir = TempDir::new("files-clean");
    let src = dir.join("src");
    awkward_tree(&src, 4096);
    let repo = TempDir::new("files-clean-repo");
    backup(&src, &repo, &[]).assert_code(0);
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("old"), b"old").unwrap();
    for dry in [true, false] {
        let extra: &[&str] = if dry { &["--dry-run"] } else { &[] };
        restore(&repo, &out, extra)
            .assert_code(2)
            .assert_contains("is not empty");
    }
    assert_eq!(files_under(&out), vec!["old".to_string()]);
    restore(&repo, &out, &["--clean"]).assert_code(0);
    assert_same_tree(&src, &out);
}

/// Archives from old `tar -czf` scripts restore through the same checks; a tar whose entries
/// would land outside the target is refused and writes nothing anywhere.
#[test]
fn old_tar_archives_restore_and_escaping_ones_are_refused() {
    let dir = TempDir::new("files-from-file");
    let src = dir.join("src");
    awkward_tree(&src, 4096);
    let archive = dir.join("old.tar.gz");
    let tar = std::process::Command::new("tar")
        .args([
            "-czf",
            archive.to_str().unwrap(),
            "-C",
            src.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(tar.success());
    let out = dir.join("out");
    run(
        "lifeboat-restore",
        &[
            "--from-file",
            archive.to_str().unwrap(),
            "--to",
            out.to_str().unwrap(),
            "--yes",
        ],
    )
    .assert_code(0);
    assert_eq!(
        tree(&src).keys().collect::<Vec<_>>(),
        tree(&out).keys().collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::read(out.join("a/ünïcødé — 日本語.txt")).unwrap(),
        std::fs::read(src.join("a/ünïcødé — 日本語.txt")).unwrap()
    );
    // Hand-made archives with an entry outside the target.
    let outside = dir.join("escaped");
    for (label, entry) in [
        ("dotdot", "../escaped".to_string()),
        ("absolute", outside.display().to_string()),
    ] {
        let evil = dir.join(&format!("{label}.tar"));
        std::fs::write(&evil, tar_with(&[("fine.txt", b"ok"), (&entry, b"evil")])).unwrap();
        let target = dir.join(&format!("{label}-out"));
        run(
            "lifeboat-restore",
            &[
                "--from-file",
                evil.to_str().unwrap(),
                "--to",
                target.to_str().unwrap(),
                "--yes",
            ],
        )
        .assert_code(2)
        .assert_contains("writes nothing outside the target");
        assert!(!target.exists(), "{label}: the target was written");
        assert!(
            !outside.exists(),
            "{label}: a file was written outside the target"
        );
    }
    // An entry under a symlink of the archive (which itself points inside) would be written
    // through it: refused by the dry run as by the real run.
    let through = dir.join("through.tar");
    std::fs::write(
        &through,
        tar_of(&[
            ("sub/", b"", None),
            ("lnk", b"", Some("sub")),
            ("lnk/x", b"x", None),
        ]),
    )
    .unwrap();
    let target = dir.join("through-out");
    for dry in [true, false] {
        let mut args = vec![
            "--from-file",
            through.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
            "--yes",
        ];
        if dry {
            args.push("--dry-run");
        }
        run("lifeboat-restore", &args)
            .assert_code(2)
            .assert_contains("lies under a symlink");
    }
    assert!(!target.exists());
    // --from-file never reads a repository.
    run(
        "lifeboat-restore",
        &[
            "--from-file",
            archive.to_str().unwrap(),
            "--repo",
            dir.as_str(),
            "--to",
            out.to_str().unwrap(),
        ],
    )
    .assert_code(2);
}

/// A minimal ustar archive (512-byte header, content padded to 512, two zero blocks) of
/// regular files.
fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<(&str, &[u8], Option<&str>)> =
        entries.iter().map(|(n, c)| (*n, *c, None)).collect();
    tar_of(&entries)
}

/// The same with symlinks: an entry with a link target is a symlink.
fn tar_of(entries: &[(&str, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content, link) in entries {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        header[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = if link.is_some() { b'2' } else { b'0' };
        if let Some(link) = link {
            header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        }
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A file written to while it is archived is a warning in the manifest (the backup is
/// committed), and with strict = true a failure that commits nothing.
#[test]
fn a_file_that_changes_while_read_is_a_warning_or_with_strict_a_failure() {
    let dir = TempDir::new("files-changing");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let growing = src.join("growing.log");
    std::fs::write(&growing, vec![b'x'; 64 << 20]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let growing = growing.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::options()
                .append(true)
                .open(&growing)
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"another line\n").unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let repo = TempDir::new("files-changing-repo");
    let warned = backup(&src, &repo, &[]);
    let config = dir.join("strict.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\n[[job]]\nname = \"strict\"\nengine = \"files\"\npaths = [\"{}\"]\nstrict = true\n",
            repo.as_str(),
            src.display()
        ),
    )
    .unwrap();
    let strict = run("lifeboat-backup", &["--config", config.to_str().unwrap()]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    warned
        .assert_code(0)
        .assert_contains("changed while it was read");
    let manifest = &manifests(repo.path(), "uploads")[0];
    assert!(
        manifest["warnings"][0]
            .as_str()
            .unwrap()
            .contains("growing.log"),
        "{manifest}"
    );
    strict.assert_code(1).assert_contains("strict");
    assert!(manifests(repo.path(), "strict").is_empty());
}
