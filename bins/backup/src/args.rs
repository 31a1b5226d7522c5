//! Command-line flags of `lifeboat-backup`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use lifeboat_cli::CommonArgs;
use lifeboat_core::config::{CompressionName, PgFormat};
use lifeboat_core::engine::Engine;

const EXAMPLES: &str = "\
Examples:
  # Run every job in ./lifeboat.toml (what cron runs every night)
  lifeboat-backup

  # Run one job of a given file
  lifeboat-backup --config /etc/lifeboat.toml app-db

  # No file: back up the database whose URL is in $DATABASE_URL to a directory,
  # keeping a grandfather-father-son history (--url-env keeps the password out
  # of `ps`)
  lifeboat-backup --engine postgres --url-env DATABASE_URL \\
      --repo /var/backups/lifeboat --retention gfs

  # A Redis server (a point-in-time snapshot of every database, taken like a
  # replica would)
  lifeboat-backup --engine redis --url-env REDIS_URL \\
      --repo /var/backups/lifeboat

  # MongoDB, natively (no mongodump needed): an archive mongorestore can read,
  # with the oplog of the dump's duration on a replica set (one instant)
  lifeboat-backup --engine mongodb --url-env MONGO_URL \\
      --repo /var/backups/lifeboat

  # A directory tree (uploads, logs) as one tar archive, leaving out temporary
  # files
  lifeboat-backup --engine files --path /data/uploads --exclude '*.tmp' \\
      --repo /var/backups/lifeboat

  # Encrypted to an age public key (make one with `lifeboat-backup keygen` where
  # restores run)
  lifeboat-backup --engine postgres --url-env DATABASE_URL \\
      --repo s3://bucket/db \\
      --recipient age1...

  # What would retention forget? (prints every snapshot with keep/forget and
  # why)
  lifeboat-backup prune --dry-run

After each successful backup of a job with a retention policy, its snapshots are
pruned (unless --no-prune); a failed backup never prunes. Presets: keep-7-days,
keep-30-days, gfs, hourly.

Each run holds the job's lock (jobs/<job>/lock in the store) while it backs up
and prunes, so two runs of one job never overlap, even on different machines; a
crashed run's lock expires after 10 minutes, or can be removed with
`lifeboat-backup unlock JOB`.

Exit codes: 0 ok, 1 the backup failed (nothing was committed), 2 usage or
configuration error, 4 another run holds the lock.";

/// Back up databases and directory trees into a Lifeboat repository: stream the dump through
/// checksums and compression into the store; the snapshot exists only once its manifest is written.
#[derive(Debug, Parser)]
#[command(name = "lifeboat-backup", version, after_help = EXAMPLES, after_long_help = format!("{EXAMPLES}\n\n{}", lifeboat_cli::env_help()))]
pub struct BackupArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(subcommand)]
    pub command: Option<BackupCommand>,

    /// Jobs of the configuration file to run [default: all]
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,

    /// Back up one source without a file: its engine (postgres, mongodb and redis with
    /// --url-env or --url, files with --path)
    #[arg(long, value_name = "postgres|mongodb|redis|files")]
    pub engine: Option<Engine>,

    /// A directory to archive for --engine files (repeatable; with several, each becomes a
    /// folder of the archive named after it)
    #[arg(long, value_name = "DIR", requires = "engine")]
    pub path: Vec<PathBuf>,

    /// For --engine files: leave out what matches this gitignore-style pattern, e.g. '*.tmp'
    /// or 'cache/' (repeatable)
    #[arg(long, value_name = "PATTERN", requires = "path")]
    pub exclude: Vec<String>,

    /// The environment variable that holds the database URL for --engine, e.g. DATABASE_URL
    /// (the password then never shows in `ps`, unlike with --url)
    #[arg(long, value_name = "VAR", requires = "engine", group = "source_url")]
    pub url_env: Option<String>,

    /// Connection URL of the database for --engine (visible to `ps`: prefer --url-env)
    #[arg(long, value_name = "URL", requires = "engine", group = "source_url")]
    pub url: Option<String>,

    /// Job name for --engine [default: the database name]; without --engine, a job of the
    /// configuration file to run, as with lifeboat-verify and lifeboat-restore
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,

    /// PostgreSQL dump format for --engine [default: custom]
    #[arg(long, value_name = "custom|plain")]
    pub format: Option<PgFormat>,

    /// Compression, overriding the file [default: zstd]
    #[arg(long, value_name = "zstd|gzip|none")]
    pub compression: Option<CompressionName>,

    /// Compression level (zstd 1-19; gzip 1-9, default 6), kept throughout. Without it zstd
    /// adapts: level 3, lower while the dump would wait on the compressor, never above 3. zstd
    /// stores stretches that do not compress as raw blocks, without compressing them
    #[arg(long, value_name = "N")]
    pub compression_level: Option<i32>,

    /// Directory of pg_dump/pg_restore/psql of the right major version
    #[arg(long, value_name = "DIR")]
    pub pg_bin_dir: Option<PathBuf>,

    /// zstd worker threads. 1 compresses inline, beside the dump reader; more helps only when
    /// cores are idle, each worker buffers several MiB, and every stretch is compressed at the
    /// configured level
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub compression_threads: u32,

    /// Unfinished uploads of crashed runs outside the snapshot folders (verification records)
    /// older than this many minutes are removed at the start of a run (in the snapshot
    /// folders, which only the job's lock-holder writes, at once); reported either way
    #[arg(long, value_name = "MINUTES", default_value_t = 24 * 60,
          value_parser = clap::value_parser!(u64).range(0..=MAX_GRACE_HOURS * 60))]
    pub leftover_grace_mins: u64,

    /// A source that sends nothing for this long (e.g. 10m, 1h) has stopped: the run ends with
    /// exit 1. Overrides the job's idle-timeout [default: 10m]
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,

    /// The longest a run of each job may take (e.g. 4h); overrides the job's timeout
    /// [default: none, so long dumps are never cut]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Encrypt to this age public key (age1...) or ssh public key (repeatable), instead of the
    /// file's [encryption]; restores then need the matching identity (see `keygen`)
    #[arg(long, value_name = "KEY")]
    pub recipient: Vec<String>,

    /// Print the merged configuration (passwords hidden) and exit
    #[arg(long)]
    pub print_config: bool,

    /// Retention policy (a preset such as gfs, or a .toml path), overriding the file
    #[arg(long, value_name = "POLICY")]
    pub retention: Option<String>,

    /// Do not prune after the backup
    #[arg(long)]
    pub no_prune: bool,

    /// Prune: data without a manifest is removed once older than this many hours
    #[arg(long, value_name = "HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(0..=MAX_GRACE_HOURS))]
    pub orphan_grace_hours: u64,
}

/// Grace periods beyond ten years are mistakes (and would overflow as seconds).
pub const MAX_GRACE_HOURS: u64 = 10 * 366 * 24;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Apply the retention policies: forget snapshots the policy does not keep
    Prune(PruneArgs),
    /// Remove a job's lock by hand, after making sure no run of the job is active
    Unlock(UnlockArgs),
    /// Forget one snapshot by id (never the newest, the newest verified or a pinned one,
    /// unless --force)
    #[command(after_help = FORGET_EXAMPLES)]
    Forget(ForgetArgs),
    /// Pin a snapshot so that retention never forgets it (e.g. the one before a migration)
    #[command(after_help = PIN_EXAMPLES)]
    Pin(PinArgs),
    /// Release a pin: the snapshot is under the retention policy again
    Unpin(UnpinArgs),
    /// Copy committed snapshots into a second repository that lacks them (3-2-1): --to-repo,
    /// or the configuration's [[copy]] tables
    #[command(after_help = COPY_EXAMPLES)]
    Copy(CopyArgs),
    /// Write a new age identity file (mode 0600) and print its public key, for [encryption]
    #[command(after_help = KEYGEN_EXAMPLES)]
    Keygen(KeygenArgs),
    /// Print (or write) deployment files that run the configured schedules: a crontab,
    /// systemd timers, Kubernetes CronJobs or Railway cron services
    #[command(after_help = SCHEDULE_EXAMPLES)]
    Schedule(ScheduleArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish)
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
}

const SCHEDULE_EXAMPLES: &str = "\
Examples:
  # A crontab for the jobs' schedules ([[job]] schedule = \"0 3 * * *\"),
  # [verify], [drill]
  lifeboat-backup --config /etc/lifeboat/lifeboat.toml schedule --print crontab

  # systemd units, written into /etc/systemd/system, then enabled
  lifeboat-backup schedule --print systemd --output-dir /etc/systemd/system
  systemctl daemon-reload
  systemctl enable --now lifeboat-backup.timer

  # Kubernetes CronJobs from an image of yours
  lifeboat-backup schedule --print kubernetes \\
      --image registry.example/lifeboat:1

Each run loads the secrets that lifeboat.toml names as ${VAR} from --env-file
(crontab, systemd) or from a Secret (Kubernetes); the configuration's path is
--config-path.";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  lifeboat-backup completions bash > /etc/bash_completion.d/lifeboat-backup
  lifeboat-backup completions zsh > ~/.zfunc/_lifeboat-backup
  lifeboat-backup completions fish > \\
      ~/.config/fish/completions/lifeboat-backup.fish

lifeboat-verify and lifeboat-restore print theirs with --print-completions SHELL
(scripts/install.sh installs all three).";

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_name = "SHELL")]
    pub shell: lifeboat_cli::Shell,
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// The format: crontab, systemd, kubernetes or railway
    #[arg(long, value_name = "FORMAT")]
    pub print: lifeboat_core::deploy::Format,

    /// Write the files into this directory instead of printing them
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// The configuration file's path where the runs happen [default: this configuration's
    /// absolute path]
    #[arg(long, value_name = "PATH")]
    pub config_path: Option<PathBuf>,

    /// Where the binaries are installed there [default: the directory of this binary]
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,

    /// crontab: where the runs append their logs
    #[arg(long, value_name = "DIR", default_value = "/var/log/lifeboat")]
    pub log_dir: PathBuf,

    /// crontab, systemd: the root-only file of NAME=value lines with the secrets
    #[arg(long, value_name = "FILE", default_value = "/etc/lifeboat/env")]
    pub env_file: PathBuf,

    /// kubernetes: the container image
    #[arg(long, value_name = "IMAGE", default_value = "lifeboat:latest")]
    pub image: String,
}

const KEYGEN_EXAMPLES: &str = "\
Examples:
  # On the machine restores run from (not the backup host):
  lifeboat-backup keygen --output ~/.config/lifeboat/identity.txt

  # Then, in the backup host's lifeboat.toml:
  [encryption]
  recipients = [\"age1...\"]      # the public key printed above

  # Restores and content checks of encrypted snapshots take the identity:
  lifeboat-restore --identity ~/.config/lifeboat/identity.txt --job app-db \\
      --latest --to ...";

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the identity; an existing file is never overwritten
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
}

const FORGET_EXAMPLES: &str = "\
Examples:
  # What would be forgotten, and would a guard refuse it?
  lifeboat-backup forget app-db 20261125T030000Z-a1b2c3 --dry-run

  lifeboat-backup forget app-db 20261125T030000Z-a1b2c3

The snapshot's manifest goes first (from then on it does not exist), then its
data, pin and verification records. A snapshot the store protects (object lock,
legal hold) is never forgotten.";

const PIN_EXAMPLES: &str = "\
Examples:
  # Keep the snapshot taken before a migration, whatever retention says
  lifeboat-backup pin app-db 20261125T030000Z-a1b2c3 --note 'before v2 migration'

  # Release it later
  lifeboat-backup unpin app-db 20261125T030000Z-a1b2c3

`lifeboat-restore list` shows pins and their notes; `prune --dry-run` shows
\"pinned\" as the reason a snapshot is kept.";

const COPY_EXAMPLES: &str = "\
Examples:
  # Every job's snapshots into a second bucket at another provider
  lifeboat-backup --config /etc/lifeboat/lifeboat.toml copy \\
      --to-repo s3://offsite-bucket/lifeboat --to-endpoint https://... \\
      --to-profile offsite

  # One job into a local disk, showing first what would be copied
  lifeboat-backup copy app-db --to-repo /mnt/usb/lifeboat --dry-run

  # After every backup, automatically: in lifeboat.toml
  [[copy]]
  to = { url = \"s3://offsite-bucket/lifeboat\", region = \"eu-west-1\" }
  jobs = [\"app-db\"]            # default: every job

Each snapshot's data is copied first, its stored SHA-256 checked on the way,
then its manifest: an interrupted copy leaves nothing visible, and the next run
copies what is missing. Encrypted snapshots are copied as they are (no key
needed). The second repository's retention, pins and verifications are its
own: run prune and verify against it too.";

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Jobs to copy [default: every job in the repository, or each [[copy]] table's jobs]
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,

    /// The second repository: a directory or s3://bucket/prefix [default: the configuration's
    /// [[copy]] tables]
    #[arg(long, value_name = "REPO")]
    pub to_repo: Option<String>,

    /// The second repository's S3-compatible endpoint
    #[arg(long, value_name = "URL", requires = "to_repo")]
    pub to_endpoint: Option<String>,

    /// The second repository's S3 region (`auto` for R2)
    #[arg(long, value_name = "REGION", requires = "to_repo")]
    pub to_region: Option<String>,

    /// Path-style S3 addressing for the second repository
    #[arg(long, requires = "to_repo")]
    pub to_path_style: bool,

    /// The credentials profile (~/.aws/credentials) for the second repository
    #[arg(long, value_name = "NAME", requires = "to_repo")]
    pub to_profile: Option<String>,

    /// Say what would be copied; write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The job
    #[arg(value_name = "JOB")]
    pub job: String,

    /// The snapshot's id (see `lifeboat-restore list`)
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,

    /// Forget it even if it is the newest, the newest verified or a pinned snapshot (asks
    /// first on a terminal)
    #[arg(long)]
    pub force: bool,

    /// Do not ask for confirmation on a terminal
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Say what would be forgotten and whether a guard refuses it; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The job
    #[arg(value_name = "JOB")]
    pub job: String,

    /// The snapshot's id (see `lifeboat-restore list`)
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,

    /// Why it is pinned, shown by `list` and `prune --dry-run`
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnpinArgs {
    /// The job
    #[arg(value_name = "JOB")]
    pub job: String,

    /// The snapshot's id
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// The job whose lock to remove
    #[arg(value_name = "JOB")]
    pub job: String,

    /// Do not ask for confirmation on a terminal
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Jobs to prune [default: every configured job with a retention policy]
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,

    /// Print every snapshot with keep or forget and the rule that decided it; change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Retention policy (a preset or a .toml path), overriding the file
    #[arg(long, value_name = "POLICY")]
    pub retention: Option<String>,

    /// Data without a manifest is removed once older than this many hours
    #[arg(long, value_name = "HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(0..=MAX_GRACE_HOURS))]
    pub orphan_grace_hours: u64,
}
