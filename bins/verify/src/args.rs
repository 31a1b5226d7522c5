//! Command-line flags of `lifeboat-verify`.

use std::path::PathBuf;

use clap::Parser;
use lifeboat_cli::CommonArgs;
use lifeboat_core::verify::Level;

const EXAMPLES: &str = "\
Examples:
  # Download the newest snapshot of every job and check both digests and the
  # dump's structure
  lifeboat-verify --level content

  # Every snapshot of one job exists with the right size (cheap)
  lifeboat-verify --repo /var/backups/lifeboat --job app-db --all --level stored

  # DR drill: restore into a scratch database, compare the fingerprint, drop it
  lifeboat-verify --job app-db --latest --level drill \\
      --scratch-url postgres://admin@db:5432/postgres

  # A Redis drill: load into empty databases of a throwaway server, count keys
  # (and compare DEBUG DIGEST when the job has debug-digest = true), empty them
  lifeboat-verify --job cache --latest --level drill \\
      --scratch-url redis://127.0.0.1:6380

  # Every job's drill in one run: each snapshot takes the scratch URL of its
  # engine (PostgreSQL, Redis, MongoDB)
  lifeboat-verify --latest --level drill \\
      --scratch-url-env SCRATCH_PG_URL --scratch-url redis://127.0.0.1:6380 \\
      --scratch-url mongodb://127.0.0.1:27018

  # A files drill: extract the tree under /mnt/scratch, compare every entry's
  # digest, remove it
  lifeboat-verify --job uploads --latest --level drill \\
      --scratch-dir /mnt/scratch

  # Freshness alarm for cron: fail (exit 5) when the newest good snapshot is
  # older than 26 h
  lifeboat-verify --job app-db --max-age 26h

Exit codes: 0 ok, 1 the check could not run, 2 usage or configuration error, 3
missing or damaged data, 5 the newest good snapshot is older than --max-age.";

/// Prove that backups restore: check stored objects, their digests and structure, or restore
/// them into a scratch database and compare fingerprints.
#[derive(Debug, Parser)]
#[command(name = "lifeboat-verify", version, after_help = EXAMPLES, after_long_help = format!("{EXAMPLES}\n\n{}", lifeboat_cli::env_help()))]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub keys: lifeboat_cli::KeyArgs,

    /// Job to verify [default: every job of the file, or every job in the store]
    #[arg(long, value_name = "JOB")]
    pub job: Vec<String>,

    /// Verify this snapshot
    #[arg(long, value_name = "ID", conflicts_with_all = ["latest", "all"])]
    pub snapshot: Option<String>,

    /// Verify the newest snapshot (the default)
    #[arg(long)]
    pub latest: bool,

    /// Verify every snapshot
    #[arg(long, conflicts_with = "latest")]
    pub all: bool,

    /// How thoroughly: stored (exists, size), content (digests, structure), drill (restore)
    #[arg(long, value_name = "stored|content|drill", default_value = "content")]
    pub level: Level,

    /// Where a drill restores: a PostgreSQL server URL (a scratch database is created and
    /// dropped there), a throwaway Redis whose databases are empty, or a MongoDB server
    /// (scratch databases are created and dropped). Repeatable: each snapshot's drill takes the
    /// first URL of its engine's scheme, so one run drills every job
    /// (visible to `ps`: prefer --scratch-url-env for URLs with a password)
    #[arg(long, value_name = "URL")]
    pub scratch_url: Vec<String>,

    /// The environment variable that holds a scratch URL, e.g. SCRATCH_DATABASE_URL
    /// (repeatable)
    #[arg(long, value_name = "VAR")]
    pub scratch_url_env: Vec<String>,

    /// Where a drill of a files snapshot extracts the tree (a folder is created there and
    /// removed) [default: the system's temporary directory]
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,

    /// Fail with exit 5 if the newest good snapshot is older than this (e.g. 26h) [default:
    /// the job's max-age, else its rpo, else twice its schedule's longest interval plus an
    /// hour]
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,

    /// Exit 5 when a job's rto (the drill's restore time) or rpo (its data's age) is missed;
    /// without it a missed target is reported only
    #[arg(long)]
    pub fail_on_target: bool,

    /// Write a DR report of this run (.md, .json or .html) to FILE, and keep a copy in the
    /// repository under reports/<job>/
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Directory of pg_restore/psql of the right major version
    #[arg(long, value_name = "DIR")]
    pub pg_bin_dir: Option<PathBuf>,

    /// Do not record the results in the repository
    #[arg(long)]
    pub no_record: bool,
}
