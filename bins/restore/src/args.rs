//! Command-line flags of `lifeboat-restore`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use lifeboat_cli::CommonArgs;

const EXAMPLES: &str = "\
Examples:
  # What is there?
  lifeboat-restore list --repo /var/backups/lifeboat

  # The database as it was at 02:00 UTC, into a new empty database
  # (shows the plan, asks first)
  createdb shop_restored
  lifeboat-restore --job app-db --at '2026-11-25 02:00' \\
      --to postgres://app@db:5432/shop_restored

  # Show what would happen, touch nothing
  lifeboat-restore --job app-db --latest --to-env DATABASE_URL --clean --dry-run

  # Replace the objects of a live database from a given snapshot, without asking
  lifeboat-restore --job app-db --snapshot 20261125T030000Z-a1b2c3 \\
      --to-env DATABASE_URL --clean --yes

  # A Redis snapshot into a live server, backup database 0 into database 3
  lifeboat-restore --job cache --latest \\
      --to redis://:PASSWORD@redis.internal:6379 --db-map 0:3

  # Replace a live Redis database in one step: load a spare, then SWAPDB
  lifeboat-restore --job cache --latest \\
      --to redis://:PASSWORD@redis.internal:6379 --mode swap

  # A Redis snapshot as dump.rdb for a stopped server (see RUNBOOK.md)
  lifeboat-restore --job cache --latest --mode file --to /var/lib/redis/dump.rdb

  # One table that was dropped by mistake, back into the live database
  lifeboat-restore --job app-db --at '2026-11-25 02:00' --table public.orders \\
      --to-env DATABASE_URL

  # The verified pg_dump archive as a file, for a manual pg_restore
  lifeboat-restore --job app-db --latest --mode file --to /tmp/app-db.dump

  # An RDB file from an old `redis-cli --rdb` script into a live server
  lifeboat-restore --from-file dump.rdb --to redis://127.0.0.1:6379

  # MongoDB into other databases of a live server (collections of the same name
  # are refused without --clean); the oplog is replayed to the dump's instant
  lifeboat-restore --job mongo --latest --to-env MONGO_URL \\
      --rename 'app.*=app_restored.*'

  # An old script's `mongodump --archive --gzip` file, through the same checks
  lifeboat-restore --from-file nightly.archive.gz --to mongodb://127.0.0.1:27017

  # A files snapshot into a new directory (a non-empty one needs --clean,
  # which moves it aside)
  lifeboat-restore --job uploads --latest --to /data/uploads.restored

  # An old script's `tar -czf uploads.tar.gz` archive, through the same checks
  lifeboat-restore --from-file uploads.tar.gz --to /data/uploads.restored

  # The whole application (database, Redis, uploads) as of one instant, each job
  # into its restore-to (or --to JOB=URL); --dry-run shows the plan and the skew
  lifeboat-restore --all-jobs --at '2026-11-25 02:00' --dry-run
  lifeboat-restore --job app-db --job uploads --at '2026-11-25 02:00' \\
      --to app-db=postgres://app@db:5432/shop_restored \\
      --to uploads=/data/uploads.restored

--at accepts RFC 3339 (2026-11-25T02:00:00Z), 'YYYY-MM-DD[ HH:MM[:SS]]' (UTC
unless an offset such as +01:00 follows) and YYYYMMDD_HHMMSS; it picks the
newest snapshot consistent at or before that time.

A files restore extracts into a staging directory beside the target and renames
it into place only after both digests and the fingerprint match; entries that
would land outside the target (absolute paths, `..`, links leading out) are
refused.

A whole-system restore (--all-jobs, or several --job) picks every job's newest
snapshot at or before --at, shows them with the skew between them, asks once,
then restores databases first and files last, each with its own safety; the
first failure stops the jobs after it, and the report lists every job.

A MongoDB restore loads every collection into a staging collection of its
target database (lifeboat.staging.<tag>.*), replays the captured oplog onto
them and builds their indexes; only once both digests, every namespace's CRC and
the counts match is each renamed into place (replacing one of the same name
only with --clean), then the views are created. A failure before that drops
the staging collections.

A Redis restore checks the whole snapshot (both digests, the RDB's structure and
CRC64) before it writes a key, then loads it with pipelined RESTORE commands.

Exit codes: 0 ok, 1 the restore failed (PostgreSQL: the target was rolled back),
2 usage error or refused (e.g. a non-empty target without --clean), 3 the
snapshot is damaged (the target is unchanged).";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestoreMode {
    Live,
    Swap,
    File,
}

fn parse_db_map(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{s:?} is not SRC:DST (two database numbers, e.g. 0:3)");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

/// Restore a snapshot into a database, checking its digests before anything is committed.
#[derive(Debug, Parser)]
#[command(name = "lifeboat-restore", version, after_help = EXAMPLES, after_long_help = format!("{EXAMPLES}\n\n{}", lifeboat_cli::env_help()))]
pub struct RestoreArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub restore: RestoreFlags,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the committed snapshots of each job
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these jobs [default: every job in the store]
    #[arg(long, value_name = "JOB")]
    pub job: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestoreFlags {
    #[command(flatten)]
    pub keys: lifeboat_cli::KeyArgs,

    /// The job whose snapshot to restore [default: the only job, if there is one]; name
    /// several (or pass --all-jobs) to restore them together as of one instant
    #[arg(long, value_name = "JOB")]
    pub job: Vec<String>,

    /// Whole-system restore: every configured job (or, without a configuration, every job in
    /// the repository), each at its newest snapshot at or before --at (or --latest)
    #[arg(long, conflicts_with_all = ["job", "snapshot", "from_file"])]
    pub all_jobs: bool,

    /// Whole-system restore: restore the jobs that have a snapshot and report the others,
    /// instead of refusing the whole plan
    #[arg(long)]
    pub allow_missing: bool,

    /// Restore this snapshot (see `lifeboat-restore list`)
    #[arg(long, value_name = "ID", group = "which")]
    pub snapshot: Option<String>,

    /// Restore the newest snapshot
    #[arg(long, group = "which")]
    pub latest: bool,

    /// Restore the newest snapshot consistent at or before TIME
    #[arg(long, value_name = "TIME", group = "which")]
    pub at: Option<String>,

    /// Where to restore: a database URL, e.g. postgres://user@host:5432/dbname or
    /// redis://host:6379; a directory for a files snapshot; a file path with --mode file
    /// (visible to `ps`: prefer --to-env for URLs with a password). With several jobs,
    /// JOB=URL (repeatable), else each job's restore-to
    #[arg(long, value_name = "URL|DIR|JOB=URL", conflicts_with = "to_env")]
    pub to: Vec<String>,

    /// The environment variable that holds the target URL, e.g. DATABASE_URL
    #[arg(long, value_name = "VAR")]
    pub to_env: Option<String>,

    /// PostgreSQL: drop the dump's objects in the target before recreating them. Redis: empty
    /// the target databases first. Needed for a non-empty target.
    #[arg(long)]
    pub clean: bool,

    /// Redis: overwrite keys that already exist in the target (RESTORE ... REPLACE)
    #[arg(long)]
    pub replace: bool,

    /// `live` loads a running server (default). Redis: `swap` loads empty spare databases and
    /// SWAPDBs each with its target at the end, so clients switch at once. Redis, PostgreSQL
    /// and MongoDB: `file` writes the verified dump to --to PATH (an RDB file for a stopped
    /// server to load at start; a pg_dump archive for a manual pg_restore; a mongodump archive
    /// for mongorestore --archive)
    #[arg(long, value_enum, default_value_t = RestoreMode::Live)]
    pub mode: RestoreMode,

    /// Restore a dump made elsewhere instead of a snapshot: an RDB file (`redis-cli --rdb`), a
    /// pg_dump custom archive or SQL dump, a `mongodump --archive` file, or a tar archive, plain
    /// or gzip/zstd-compressed;
    /// what it holds is read from its first bytes (other SQL: from a postgres:// --to). It
    /// goes through the same checks as a snapshot
    #[arg(long, value_name = "PATH", conflicts_with_all = ["snapshot", "latest", "at", "job"])]
    pub from_file: Option<PathBuf>,

    /// With --from-file: what the file holds, instead of telling it from its first bytes
    #[arg(
        long,
        value_name = "postgres|mongodb|redis|files",
        requires = "from_file"
    )]
    pub engine: Option<lifeboat_core::engine::Engine>,

    /// Redis: restore source database SRC into target database DST (repeatable), e.g. 0:3
    #[arg(long, value_name = "SRC:DST", value_parser = parse_db_map)]
    pub db_map: Vec<(u64, u64)>,

    /// MongoDB: restore namespaces SRC as DST (repeatable, first match wins), e.g.
    /// 'app.*=app_restored.*' or 'app.users=app.users_old'
    #[arg(long, value_name = "SRC=DST", value_parser = clap::value_parser!(lifeboat_core::sink::mongo::RenameRule))]
    pub rename: Vec<lifeboat_core::sink::mongo::RenameRule>,

    /// Do not restore object ownership (when the dump's roles do not exist on the target)
    #[arg(long)]
    pub no_owner: bool,

    /// PostgreSQL, custom format: restore only this table, with its data, keys, indexes,
    /// constraints, triggers, defaults and owned sequences (repeatable; one schema per run). A
    /// foreign key to a table not restored, or a trigger whose function the target lacks, is
    /// left out and named
    #[arg(long, value_name = "SCHEMA.NAME")]
    pub table: Vec<String>,

    /// PostgreSQL: first apply the roles stored with the snapshot (a job with globals = true),
    /// skipping roles that exist on the target
    #[arg(long)]
    pub globals: bool,

    /// PostgreSQL, custom format: restore only the objects of this schema (repeatable)
    #[arg(long, value_name = "NAME", conflicts_with = "table")]
    pub schema: Vec<String>,

    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask for confirmation on a terminal
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Directory of pg_restore/psql of the right major version
    #[arg(long, value_name = "DIR")]
    pub pg_bin_dir: Option<PathBuf>,

    /// Bytes held back from the database until the digests match, in MiB (at least 1)
    #[arg(long, value_name = "MIB", default_value_t = 1, hide = true)]
    pub hold_back_mib: usize,
}
