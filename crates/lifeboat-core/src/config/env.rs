//! Every environment variable Lifeboat reads itself, in one place: the binaries' clap `env =`
//! attributes name these constants, `--help` prints [`help`], and a test keeps README.md's table
//! in step with [`ALL`]. (Variables a configuration names, `${DATABASE_URL}` or
//! `passphrase-env`, and those of `--url-env VAR`, are the user's own.)

/// The configuration file.
pub const CONFIG: &str = "LIFEBOAT_CONFIG";
/// The store, overriding the file.
pub const REPO: &str = "LIFEBOAT_REPO";
/// The log filter.
pub const LOG: &str = "LIFEBOAT_LOG";
/// An age identity file for encrypted snapshots.
pub const AGE_IDENTITY_FILE: &str = "LIFEBOAT_AGE_IDENTITY_FILE";

/// Each variable with what it does.
pub const ALL: &[(&str, &str)] = &[
    (
        CONFIG,
        "the configuration file (same as --config; default ./lifeboat.toml if it exists)",
    ),
    (
        REPO,
        "the store, a directory or s3://bucket/prefix (same as --repo; overrides the file)",
    ),
    (
        LOG,
        "log filter, e.g. `info`, `debug` or `lifeboat_core=debug` (like -v)",
    ),
    (
        AGE_IDENTITY_FILE,
        "an age identity file (or OpenSSH private key) that decrypts encrypted snapshots \
         (same as one --identity; restore and verify)",
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_REGION",
        "S3 credentials and region, read by the AWS SDK's default chain (R2: an API token's key pair)",
    ),
    ("HOME", "where the default local store lives (~/.local/share/lifeboat/repo)"),
    ("HOSTNAME", "names this machine in a job's lock, for `unlock` messages"),
];

/// The table for `--help`: each variable, then what it does, within 80 columns.
pub fn help() -> String {
    let mut out = String::from("Environment variables:\n");
    for (name, what) in ALL {
        out.push_str(&wrap(name, "  ", 80));
        out.push_str(&wrap(what, "      ", 80));
    }
    out
}

/// `text` in lines of at most `width` columns, each starting with `indent` (words are never
/// split).
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > width {
            out.push_str(&format!("{indent}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{indent}{line}\n"));
    }
    out
}
