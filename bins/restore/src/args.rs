//! Command-line flags of `lifeboat-restore`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use lifeboat_cli::CommonArgs;

const EXAMPLES: &str = "\
Examples:
  # What is there?
  lifeboat-restore list --repo /var/backups/lifeboat

  # The database as it was at 02:00 UTC, into a new empty database (shows the plan, asks first)
  createdb shop_restored
  lifeboat-restore --job app-db --at '2026-11-25 02:00' --to postgres://app@db:5432/shop_restored

  # Show what would happen, touch nothing
  lifeboat-restore --job app-db --latest --to \"$DATABASE_URL\" --clean --dry-run

  # Replace the objects of a live database from a given snapshot, without asking
  lifeboat-restore --job app-db --snapshot 20261125T030000Z-a1b2c3 --to \"$DATABASE_URL\" --clean --yes

--at accepts RFC 3339 (2026-11-25T02:00:00Z), 'YYYY-MM-DD[ HH:MM[:SS]]' (UTC unless an offset
such as +01:00 follows) and YYYYMMDD_HHMMSS; it picks the newest snapshot consistent at or before
that time.

Exit codes: 0 ok, 1 the restore failed (the target was rolled back), 2 usage error or refused
(e.g. a non-empty target without --clean), 3 the snapshot is damaged (the target is unchanged).";

/// Restore a snapshot into a database, checking its digests before anything is committed.
#[derive(Debug, Parser)]
#[command(name = "lifeboat-restore", version, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
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
    /// The job whose snapshot to restore [default: the only job, if there is one]
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,

    /// Restore this snapshot (see `lifeboat-restore list`)
    #[arg(long, value_name = "ID", group = "which")]
    pub snapshot: Option<String>,

    /// Restore the newest snapshot
    #[arg(long, group = "which")]
    pub latest: bool,

    /// Restore the newest snapshot consistent at or before TIME
    #[arg(long, value_name = "TIME", group = "which")]
    pub at: Option<String>,

    /// Target database URL, e.g. postgres://user@host:5432/dbname
    #[arg(long, value_name = "URL", hide_env_values = true)]
    pub to: Option<String>,

    /// Drop the dump's objects in the target before recreating them (needed for a non-empty target)
    #[arg(long)]
    pub clean: bool,

    /// Do not restore object ownership (when the dump's roles do not exist on the target)
    #[arg(long)]
    pub no_owner: bool,

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
