//! Configuration: a TOML file (plus `${VAR}` interpolation) and command-line overrides become
//! validated [`Job`] values.
//!
//! `*Spec` types mirror what the file says (kebab-case keys, unknown keys rejected); [`load`]
//! turns them into [`Config`], whose errors name the file, line and column.

pub mod encryption;
pub mod env;
pub(crate) mod files;
pub mod interpolate;
pub(crate) mod mongo;
pub mod observe;
pub(crate) mod postgres;
pub(crate) mod redis;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
pub use crate::pipeline::compress::CompressionName;
use crate::pipeline::Compression;
use crate::secret::SecretUrl;
pub use crate::text::{parse_duration, MAX_DURATION_SECS};

pub use encryption::EncryptionSpec;
pub use files::FilesJob;
pub use interpolate::Lookup;
pub use mongo::MongoJob;
pub use postgres::{PgFormat, PgJob};
pub use redis::{RedisJob, RedisMode};

/// The default store when none is configured: a directory, so everything runs on one machine.
pub fn default_repo(home: Option<&Path>) -> PathBuf {
    match home {
        Some(h) => h.join(".local/share/lifeboat/repo"),
        None => PathBuf::from("lifeboat-repo"),
    }
}

/// The configuration file as written (`lifeboat.toml`), before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSpec {
    /// `[store]`: where the repository is.
    pub store: Option<StoreSpec>,
    /// `[defaults]`: settings every job inherits.
    #[serde(default)]
    pub defaults: DefaultsSpec,
    /// `[encryption]`: how every job's data objects are encrypted (a job's own `encryption`
    /// table replaces it).
    pub encryption: Option<EncryptionSpec>,
    /// `[verify]`: when verify runs happen (the generated deployment files carry them).
    pub verify: Option<ScheduledRunSpec>,
    /// `[drill]`: when drills happen, and the scratch server they restore into.
    pub drill: Option<ScheduledRunSpec>,
    /// `[[job]]` tables.
    #[serde(default, rename = "job")]
    pub jobs: Vec<JobSpec>,
    /// `[[copy]]` tables: second repositories that each backup is copied into.
    #[serde(default, rename = "copy")]
    pub copies: Vec<CopySpec>,
    /// `[metrics]`: a textfile directory and/or a Pushgateway.
    pub metrics: Option<observe::MetricsSpec>,
    /// `[[notify]]` tables: webhooks, Slack, healthchecks pings.
    #[serde(default)]
    pub notify: Vec<observe::NotifySpec>,
}

/// A `[[copy]]` table: a second repository (3-2-1) that committed snapshots are copied into
/// after each backup, with its own store settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CopySpec {
    /// The destination, with the keys of `[store]`: `to = { url = "s3://offsite/lifeboat",
    /// endpoint = "...", profile = "offsite" }`.
    pub to: StoreSpec,
    /// The jobs copied [default: every job].
    #[serde(default)]
    pub jobs: Vec<String>,
}

/// The `[store]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreSpec {
    /// A directory, or `s3://bucket/prefix`.
    pub url: Option<String>,
    /// S3-compatible endpoint (R2: `https://ACCOUNT.r2.cloudflarestorage.com`); omit for AWS.
    pub endpoint: Option<String>,
    /// `auto` for R2.
    pub region: Option<String>,
    /// The credentials profile (in `~/.aws/credentials`) for this store, when it needs other
    /// keys than the environment's (a second copy at another provider).
    pub profile: Option<String>,
    /// Path-style addressing (MinIO and most self-hosted servers).
    pub path_style: Option<bool>,
    /// Multipart part size (default 6 MiB, at least 5).
    pub part_size_mib: Option<usize>,
    /// Parts uploaded at once (default 4); memory is about part size x (this + 2).
    pub parts_in_flight: Option<usize>,
    /// `when-required` (default: works on AWS, R2 and others) or `when-supported` (the AWS
    /// SDK's own default, which some S3-compatible stores reject).
    pub request_checksums: Option<ChecksumMode>,
    /// e.g. `STANDARD_IA`, `GLACIER_IR`.
    pub storage_class: Option<String>,
    /// A request with no progress for this long is cut and retried (default 60).
    pub timeout_secs: Option<u64>,
    /// Attempts per request, with exponential backoff and jitter (default 6).
    pub max_attempts: Option<u32>,
    /// Server-side encryption of every object: `AES256` (S3-managed keys) or `aws:kms`.
    pub sse: Option<SseName>,
    /// The KMS key for `sse = "aws:kms"` (default: the account's aws/s3 key).
    pub sse_kms_key_id: Option<String>,
    /// Write-once retention on every snapshot object (data and manifest); the bucket must have
    /// object lock enabled. Prune reports locked snapshots as protected and leaves them be.
    pub object_lock: Option<ObjectLockSpec>,
}

/// `sse`: S3 server-side encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SseName {
    /// `AES256`: S3-managed keys.
    #[serde(rename = "AES256")]
    Aes256,
    /// `aws:kms`: a KMS key.
    #[serde(rename = "aws:kms")]
    Kms,
}

/// `object-lock`: write-once retention on every snapshot object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockSpec {
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: crate::store::s3::LockMode,
    /// Days each object stays locked after it is written.
    pub days: u32,
}

/// `request-checksums`: when the S3 client sends checksums with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumMode {
    /// Only where an operation requires one.
    WhenRequired,
    /// Wherever the SDK can.
    WhenSupported,
}

impl StoreSpec {
    /// The S3 settings this table describes.
    pub fn s3_options(&self) -> Result<crate::store::S3Options> {
        use crate::store::s3::{Encryption, ObjectLock};
        let mut o = crate::store::S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            path_style: self.path_style.unwrap_or(false),
            checksums_when_supported: self.request_checksums == Some(ChecksumMode::WhenSupported),
            storage_class: self.storage_class.clone(),
            ..Default::default()
        };
        if let Some(mib) = self.part_size_mib {
            if !(5..=5120).contains(&mib) {
                return Err(Error::config(format!(
                    "[store] part-size-mib must be 5..=5120 (S3's limits), got {mib}"
                )));
            }
            o.part_size = mib * 1024 * 1024;
        }
        if let Some(secs) = self.timeout_secs {
            if secs == 0 {
                return Err(Error::config("[store] timeout-secs must be at least 1"));
            }
            o.timeout = std::time::Duration::from_secs(secs);
        }
        if let Some(n) = self.max_attempts {
            o.max_attempts = n.clamp(1, 20);
        }
        if let Some(n) = self.parts_in_flight {
            if !(1..=64).contains(&n) {
                return Err(Error::config(format!(
                    "[store] parts-in-flight must be 1..=64, got {n}"
                )));
            }
            o.parts_in_flight = n;
        }
        o.encryption = match (self.sse, &self.sse_kms_key_id) {
            (None, None) => None,
            (Some(SseName::Aes256), None) => Some(Encryption::S3Managed),
            (Some(SseName::Kms), key_id) => Some(Encryption::Kms {
                key_id: key_id.clone(),
            }),
            (_, Some(_)) => {
                return Err(Error::config(
                    "[store] sse-kms-key-id needs sse = \"aws:kms\"",
                ))
            }
        };
        if let Some(lock) = &self.object_lock {
            if !(1..=36_500).contains(&lock.days) {
                return Err(Error::config(format!(
                    "[store] object-lock days must be 1..=36500, got {}",
                    lock.days
                )));
            }
            o.object_lock = Some(ObjectLock {
                mode: lock.mode,
                days: lock.days,
                applies_to: crate::catalog::is_snapshot_object,
            });
        }
        Ok(o)
    }
}

/// A `[verify]` or `[drill]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScheduledRunSpec {
    /// Five-field cron, as for a job.
    pub schedule: String,
    /// The time zone it is read in (default UTC).
    pub timezone: Option<String>,
    /// `[verify]`: `stored` or `content` (default content); `[drill]` is always a drill.
    pub level: Option<crate::catalog::Level>,
    /// `[drill]`: the scratch server drills restore into (`${SCRATCH_URL}`); `lifeboat-verify
    /// --level drill` uses it when no `--scratch-url` is given.
    pub scratch_url: Option<String>,
}

/// A verify or drill run on a schedule.
#[derive(Debug, Clone)]
pub struct ScheduledRun {
    /// When.
    pub schedule: crate::schedule::Schedule,
    /// How deep.
    pub level: crate::catalog::Level,
    /// Drills: where they restore to.
    pub scratch_url: Option<SecretUrl>,
}

/// The `[defaults]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DefaultsSpec {
    /// See [`JobSpec::compression`].
    pub compression: Option<CompressionName>,
    /// See [`JobSpec::compression_level`].
    pub compression_level: Option<i32>,
    /// See [`JobSpec::pg_bin_dir`].
    pub pg_bin_dir: Option<String>,
    /// How long DR reports (`reports/<job>/`) are kept, in days (default 400): their own
    /// retention, since the verification records they show go with their snapshots.
    pub report_keep_days: Option<u32>,
}

impl DefaultsSpec {
    /// How long prune keeps DR reports.
    pub fn report_keep(&self) -> Duration {
        Duration::from_secs(
            u64::from(self.report_keep_days.unwrap_or(DEFAULT_REPORT_KEEP_DAYS)) * 86_400,
        )
    }
}

/// DR reports are kept this many days unless `[defaults] report-keep-days` says otherwise: an
/// annual audit looks back a year.
pub const DEFAULT_REPORT_KEEP_DAYS: u32 = 400;

/// A `[[job]]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobSpec {
    /// The job's name: its folder in the repository and `--job NAME`.
    pub name: String,
    /// What it backs up.
    pub engine: EngineName,
    /// The database's URL (postgres, redis).
    #[serde(default)]
    pub url: Option<String>,
    /// files: the directories to archive.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// files: gitignore-style patterns left out (`*.tmp`, `cache/`).
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
    /// files: a file that changes while it is read fails the backup instead of a warning.
    #[serde(default)]
    pub strict: Option<bool>,
    /// PostgreSQL only: `custom` (default) or `plain`.
    pub format: Option<PgFormat>,
    /// `zstd` (default), `gzip` or `none`.
    pub compression: Option<CompressionName>,
    /// The compression level (zstd 1-19; gzip 1-9, default 6), kept throughout; unset, zstd
    /// adapts from level 3 (see `pipeline::adaptive_zstd`).
    pub compression_level: Option<i32>,
    /// Directory holding `pg_dump`/`pg_restore`/`psql` of the right major version.
    pub pg_bin_dir: Option<String>,
    /// PostgreSQL only: also store the cluster's roles (`pg_dumpall --globals-only
    /// --no-role-passwords`) with each snapshot, for `lifeboat-restore --globals`.
    pub globals: Option<bool>,
    /// Retention policy: a preset name (`gfs`), a path to a TOML file, or an inline table.
    pub retention: Option<toml::Value>,
    /// When the job runs: five-field cron (`0 3 * * *`) read in `timezone`; used by the
    /// generated deployment files, the derived freshness limit and `list`'s next run.
    pub schedule: Option<String>,
    /// The time zone `schedule` is read in (an IANA name; default UTC).
    pub timezone: Option<String>,
    /// The RPO: `lifeboat-verify` fails (exit 5) when the newest good snapshot is older.
    pub max_age: Option<String>,
    /// The recovery time objective: a drill's restore should take at most this long.
    pub rto: Option<String>,
    /// The recovery point objective: the data restored should be at most this old; also the
    /// freshness limit when there is no `max-age`.
    pub rpo: Option<String>,
    /// MongoDB only: the databases dumped (default: all but `admin`, `local`, `config`).
    pub databases: Option<Vec<String>>,
    /// MongoDB only: collections read at once (default 2).
    pub parallel_collections: Option<i64>,
    /// Redis only: how the snapshot is captured: `auto` (SYNC, else SCAN), `sync` or `scan`.
    pub mode: Option<RedisMode>,
    /// Redis only: record the source's `DEBUG DIGEST` when the data did not change during the
    /// capture, for drills to compare. Each digest blocks the server while it is computed.
    pub debug_digest: Option<bool>,
    /// A source (or any server Lifeboat talks to) that sends nothing for this long has stopped:
    /// the run ends with exit 1. Default 10m.
    pub idle_timeout: Option<String>,
    /// The longest a whole run of the job may take; no default, so long dumps are never cut.
    pub timeout: Option<String>,
    /// This job's own encryption, replacing the `[encryption]` table (`disabled = true`:
    /// unencrypted).
    pub encryption: Option<EncryptionSpec>,
    /// Where a whole-system restore (`lifeboat-restore --all-jobs --at T`) puts this job: a
    /// database URL, or a directory for files; usually `${VAR:-}`, so that backup hosts need
    /// not know it.
    pub restore_to: Option<String>,
}

/// The engine a job names (`engine = "postgres"`).
pub type EngineName = crate::engine_kind::Engine;

/// A validated job, ready to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job's name.
    pub name: String,
    /// What it backs up, with the engine's own settings.
    pub engine: EngineJob,
    /// How its data objects are compressed.
    pub compression: Compression,
    /// The RPO: older than this, the newest good snapshot fails `lifeboat-verify` (exit 5).
    pub max_age: Option<Duration>,
    /// The recovery time objective (`rto`): what a drill's restore time is held against.
    pub rto: Option<Duration>,
    /// The recovery point objective (`rpo`): what the age of the drilled data is held against.
    pub rpo: Option<Duration>,
    /// The retention policy applied by prune (after each successful backup).
    pub retention: Option<crate::retention::Policy>,
    /// No bytes from the source (or answer from a server) for this long ends the run.
    pub idle_timeout: Duration,
    /// The longest a run may take, if set.
    pub timeout: Option<Duration>,
    /// How its data objects are encrypted (`None`: unencrypted).
    pub encryption: Option<crate::pipeline::Encryption>,
    /// When it runs, if scheduled.
    pub schedule: Option<crate::schedule::Schedule>,
    /// Where a whole-system restore puts it (`restore-to`, expanded; `None` if unset or empty).
    pub restore_to: Option<String>,
}

/// A job's engine with that engine's settings.
#[derive(Debug, Clone)]
pub enum EngineJob {
    /// A PostgreSQL database.
    Postgres(PgJob),
    /// A Redis server.
    Redis(RedisJob),
    /// Trees of files.
    Files(FilesJob),
    /// A MongoDB server or replica set.
    Mongo(MongoJob),
}

impl EngineJob {
    /// The engine's name (`postgres`, `redis`, `files`).
    pub fn name(&self) -> &'static str {
        self.engine().as_str()
    }

    /// The engine kind.
    pub fn engine(&self) -> crate::engine_kind::Engine {
        use crate::engine_kind::Engine;
        match self {
            EngineJob::Postgres(_) => Engine::Postgres,
            EngineJob::Redis(_) => Engine::Redis,
            EngineJob::Files(_) => Engine::Files,
            EngineJob::Mongo(_) => Engine::Mongo,
        }
    }

    /// The source for messages and manifests, without secrets.
    pub fn describe_source(&self) -> String {
        match self {
            EngineJob::Postgres(pg) => pg.url.to_string(),
            EngineJob::Redis(r) => r.url.to_string(),
            EngineJob::Files(f) => f.describe(),
            EngineJob::Mongo(m) => m.url.to_string(),
        }
    }

    /// What makes two sources the same (a URL's scheme, host, port and database; the paths).
    pub fn identity(&self) -> String {
        match self {
            EngineJob::Postgres(pg) => pg.url.identity(),
            EngineJob::Redis(r) => r.url.identity(),
            EngineJob::Files(f) => f.describe(),
            EngineJob::Mongo(m) => m.url.identity(),
        }
    }

    /// The PostgreSQL client programs' directory, for jobs that have one.
    pub fn pg_bin_dir(&self) -> Option<PathBuf> {
        match self {
            EngineJob::Postgres(pg) => pg.bin_dir.clone(),
            _ => None,
        }
    }
}

/// A job given by flags alone (`--engine postgres --url-env VAR`, `--engine files --path DIR`).
#[derive(Debug, Clone, Default)]
pub struct OneLiner {
    /// `--engine`.
    pub engine: EngineName,
    /// `--job`; else named after the database, the first path's folder, or the engine.
    pub name: Option<String>,
    /// The URL, `${VAR}` not yet expanded (postgres, redis).
    pub url: Option<String>,
    /// Directories (files), absolute or relative to the current directory.
    pub paths: Vec<PathBuf>,
    /// `--exclude` patterns (files).
    pub exclude: Vec<String>,
    /// `--format` (postgres).
    pub format: Option<PgFormat>,
}

impl OneLiner {
    /// The job spec, validated by [`validate_job`] next. Errors name the flag.
    pub fn spec(&self, lookup: Lookup<'_>) -> Result<JobSpec> {
        let engine = self.engine;
        let mut spec = JobSpec {
            engine,
            format: self.format,
            ..Default::default()
        };
        if engine == EngineName::Files {
            if self.paths.is_empty() || self.url.is_some() {
                return Err(Error::config("--engine files takes --path DIR (repeatable), not a URL")
                    .with_hint("e.g. lifeboat-backup --engine files --path /data/uploads --repo /var/backups/lifeboat"));
            }
            let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
            spec.paths = Some(
                self.paths
                    .iter()
                    .map(|p| absolute(p).display().to_string())
                    .collect(),
            );
            spec.exclude = Some(self.exclude.clone());
            let folder = self.paths[0]
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            spec.name = self
                .name
                .clone()
                .or(folder.filter(|n| validate_job_name(n).is_ok()))
                .unwrap_or_else(|| "files".to_string());
            return Ok(spec);
        }
        if !self.paths.is_empty() {
            return Err(Error::config(format!(
                "--path is for --engine files, not {engine}"
            )));
        }
        let url = self.url.as_deref().ok_or_else(|| {
            Error::config(format!(
                "--engine {engine} needs --url-env VAR (or --url URL)"
            ))
            .with_hint("e.g. --url-env DATABASE_URL")
        })?;
        let url = interpolate::expand(url, lookup).map_err(|m| {
            Error::config(if m.unclosed {
                format!("--url: \"${{{}\" has no closing brace", m.name)
            } else {
                format!(
                    "--url: environment variable {} is not set (or is empty)",
                    m.name
                )
            })
        })?;
        // The database's name names the job when it can.
        let database = SecretUrl::parse(&url).ok().and_then(|u| u.database());
        spec.name = match (&self.name, engine) {
            (Some(n), _) => n.clone(),
            (None, EngineName::Postgres) => database
                .filter(|d| validate_job_name(d).is_ok())
                .unwrap_or_else(|| "postgres".to_string()),
            (None, _) => engine.as_str().to_string(),
        };
        spec.url = Some(url);
        Ok(spec)
    }
}

/// Settings given as flags for one run; they override the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// A retention preset name or a policy file.
    pub retention: Option<String>,
    /// `--compression`.
    pub compression: Option<CompressionName>,
    /// `--compression-level`.
    pub compression_level: Option<i32>,
    /// `--idle-timeout`.
    pub idle_timeout: Option<String>,
    /// `--timeout`.
    pub timeout: Option<String>,
    /// PostgreSQL jobs: the dump format and the client programs' directory.
    pub format: Option<PgFormat>,
    /// `--pg-bin-dir`.
    pub pg_bin_dir: Option<PathBuf>,
    /// `--recipient`: encrypt to these public keys instead of what the file says.
    pub recipients: Vec<String>,
}

impl Overrides {
    /// Applies the flags to a job; `config_dir` is where a relative policy file is looked up.
    /// Errors name the flag.
    pub fn apply(&self, job: &mut Job, config_dir: Option<&Path>) -> Result<()> {
        if let Some(name) = &self.retention {
            job.retention = Some(
                crate::retention::resolve_name(name, config_dir)
                    .map_err(|e| Error::config(format!("--retention: {e}")))?,
            );
        }
        if self.compression.is_some() || self.compression_level.is_some() {
            let name = self.compression.unwrap_or(match job.compression {
                Compression::Zstd { .. } => CompressionName::Zstd,
                Compression::Gzip { .. } => CompressionName::Gzip,
                Compression::None => CompressionName::None,
            });
            job.compression = Compression::from_spec(name, self.compression_level)
                .map_err(|e| Error::config(format!("--compression-level: {e}")))?;
        }
        let duration = |flag: &str, value: &str| {
            match parse_duration(value) {
                Ok(d) if d.is_zero() => Err(format!("{value:?} is zero")),
                other => other,
            }
            .map_err(|e| Error::config(format!("{flag}: {e}")))
        };
        if let Some(v) = &self.idle_timeout {
            job.idle_timeout = duration("--idle-timeout", v)?;
        }
        if let Some(v) = &self.timeout {
            job.timeout = Some(duration("--timeout", v)?);
        }
        if !self.recipients.is_empty() {
            for r in &self.recipients {
                crate::pipeline::encrypt::parse_recipient(r)
                    .map_err(|e| Error::config(format!("--recipient: {e}")))?;
            }
            job.encryption = Some(crate::pipeline::Encryption::Recipients(
                self.recipients.clone(),
            ));
        }
        if let EngineJob::Postgres(pg) = &mut job.engine {
            if let Some(f) = self.format {
                pg.format = f;
            }
            if let Some(dir) = &self.pg_bin_dir {
                pg.bin_dir = Some(dir.clone());
            }
        }
        Ok(())
    }
}

impl Job {
    /// The job as `--print-config` shows it (passwords hidden).
    pub fn to_json(&self) -> serde_json::Value {
        let mut job = serde_json::json!({
            "name": self.name,
            "engine": self.engine.name(),
            "url": self.engine.describe_source(),
            "compression": self.compression,
            "max-age-secs": self.max_age.map(|d| d.as_secs()),
            "rto-secs": self.rto.map(|d| d.as_secs()),
            "rpo-secs": self.rpo.map(|d| d.as_secs()),
            "idle-timeout-secs": self.idle_timeout.as_secs(),
            "timeout-secs": self.timeout.map(|d| d.as_secs()),
            "retention": self.retention.as_ref().map(crate::retention::Policy::describe),
            "encryption": self.encryption.as_ref().map(crate::pipeline::Encryption::describe),
            "schedule": self.schedule.as_ref().map(crate::schedule::Schedule::describe),
            "restore-to": self.restore_to.as_deref().map(|to| SecretUrl::parse(to).map_or_else(|_| to.to_string(), |url| url.to_string())),
        });
        match &self.engine {
            EngineJob::Postgres(pg) => {
                job["format"] = serde_json::json!(pg.format);
                job["pg-bin-dir"] = serde_json::json!(pg.bin_dir);
            }
            EngineJob::Redis(r) => {
                job["mode"] = serde_json::json!(r.mode);
                job["debug-digest"] = serde_json::json!(r.debug_digest);
            }
            EngineJob::Files(f) => {
                job["paths"] = serde_json::json!(f.paths);
                job["exclude"] = serde_json::json!(f.exclude);
                job["strict"] = serde_json::json!(f.strict);
            }
            EngineJob::Mongo(m) => {
                job["databases"] = serde_json::json!(m.databases);
                job["parallel-collections"] = serde_json::json!(m.parallel_collections);
            }
        }
        job
    }
}

/// The merged, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file came from, if any (for messages).
    pub file: Option<PathBuf>,
    /// The `[store]` table, with `${VAR}`s expanded.
    pub store: StoreSpec,
    /// The `[defaults]` table.
    pub defaults: DefaultsSpec,
    /// Every job, validated.
    pub jobs: Vec<Job>,
    /// `[verify]`, validated.
    pub verify_runs: Option<ScheduledRun>,
    /// `[drill]`, validated.
    pub drill_runs: Option<ScheduledRun>,
    /// `[[copy]]` tables, with `${VAR}`s expanded and their jobs checked.
    pub copies: Vec<CopySpec>,
    /// `[metrics]`, validated.
    pub metrics: observe::Metrics,
    /// `[[notify]]`, validated.
    pub notifiers: Vec<observe::Notifier>,
    /// What is worth a warning but not an error (a file readable by others that holds a
    /// password); the binaries log them.
    pub warnings: Vec<String>,
}

impl Config {
    /// The job called `name`; the error lists the configured jobs.
    pub fn job(&self, name: &str) -> Result<&Job> {
        self.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
            Error::config(format!("no job named {name:?} in the configuration")).with_hint(
                if known.is_empty() {
                    "the configuration defines no jobs; add a [[job]] table".to_string()
                } else {
                    format!("configured jobs: {}", known.join(", "))
                },
            )
        })
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path, lookup: Lookup<'_>) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::config(format!(
            "cannot read configuration file {}: {e}",
            path.display()
        ))
        .with_hint("pass --config PATH, set LIFEBOAT_CONFIG, or create ./lifeboat.toml")
    })?;
    let mut config = parse(&text, Some(path), lookup)?;
    let literal = literal_secrets(&text);
    if !literal.is_empty() {
        if let Some(mode) = readable_by_others(path) {
            config.warnings.push(format!(
                "{} holds a password written into it ({}) and is readable by {} (mode {mode:o}): \
                 run `chmod 600 {}`, or write the password as ${{VAR}} and keep it in the environment",
                path.display(),
                literal.join(", "),
                if mode & 0o007 != 0 { "everyone" } else { "its group" },
                path.display()
            ));
        }
    }
    Ok(config)
}

/// The places (`file:line`) where the text has a URL with a literal password, not `${VAR}`.
fn literal_secrets(text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with('#'))
        .filter_map(|(n, line)| {
            let (_, value) = line.split_once('=')?;
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            let url = SecretUrl::parse(value).ok()?;
            let password = url.password()?;
            (!password.expose().is_empty() && !value.contains("${"))
                .then(|| format!("line {}", n + 1))
        })
        .collect()
}

/// The file's permission bits if group or others may read it.
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

/// Parses and validates configuration text; `path` is only used in messages.
pub fn parse(text: &str, path: Option<&Path>, lookup: Lookup<'_>) -> Result<Config> {
    let file = path.map_or_else(|| "<config>".to_string(), |p| p.display().to_string());
    let at = |offset: usize| {
        let (line, col) = interpolate::line_col(text, offset);
        format!("{file}:{line}:{col}")
    };
    interpolate::check_file(text, lookup).map_err(|m| {
        if m.unclosed {
            return Error::config(format!(
                "{}: \"${{{}\" has no closing brace",
                at(m.offset),
                m.name
            ))
            .with_hint("write ${NAME}, or $$ for a literal dollar sign");
        }
        Error::config(format!(
            "{}: environment variable {} is not set (or is empty)",
            at(m.offset),
            m.name
        ))
        .with_hint(format!(
            "export {} before running, or write ${{{}:-default}} to give a default",
            m.name, m.name
        ))
    })?;
    let spec: FileSpec = toml::from_str(text).map_err(|e| {
        let place = e.span().map_or_else(|| file.clone(), |s| at(s.start));
        Error::config(format!("{place}: {}", e.message().trim_end()))
            .with_hint("see the example configuration in README.md")
    })?;
    let expand = |s: &str| -> String {
        // Every reference was checked above; a value that vanished since is left as written.
        interpolate::expand(s, lookup).unwrap_or_else(|_| s.to_string())
    };
    let locate = |needle: &str| -> String { text.find(needle).map_or_else(|| file.clone(), at) };

    let mut jobs = Vec::new();
    // Linear in the number of jobs: a job's place in the file is looked up (a scan of the
    // text) only for a message, and names are checked against a set.
    let mut names = std::collections::HashSet::new();
    for spec_job in &spec.jobs {
        let place = || locate(&format!("\"{}\"", spec_job.name));
        if !names.insert(spec_job.name.as_str()) {
            return Err(Error::config(format!(
                "{}: job name {:?} is used twice",
                place(),
                spec_job.name
            ))
            .with_hint("give every [[job]] its own name"));
        }
        let schedule = spec_job
            .schedule
            .as_deref()
            .map(|schedule| {
                crate::schedule::Schedule::parse(
                    schedule,
                    spec_job.timezone.as_deref().unwrap_or("UTC"),
                )
                .map_err(|e| {
                    Error::config(format!(
                        "{}: job {:?}: schedule: {e}",
                        locate(&format!("\"{schedule}\"")),
                        spec_job.name
                    ))
                    .with_hint(
                        "write it as for crontab, e.g. schedule = \"0 3 * * *\" for 03:00 every day, and timezone = \"Europe/Berlin\" for another zone than UTC",
                    )
                })
            })
            .transpose()?;
        if spec_job.timezone.is_some() && schedule.is_none() {
            return Err(Error::config(format!(
                "{}: job {:?}: timezone is set but schedule is not",
                place(),
                spec_job.name
            ))
            .with_hint("timezone says how schedule is read; add a schedule, or drop it (a retention policy has its own timezone)"));
        }
        let mut spec_job = spec_job.clone();
        spec_job.url = spec_job.url.as_deref().map(expand);
        spec_job.paths = spec_job
            .paths
            .map(|p| p.iter().map(|s| expand(s)).collect());
        let mut job = validate_job(&spec_job, &spec.defaults, path.and_then(Path::parent))
            .map_err(|e| e.within(place()))?;
        job.encryption = match (&spec_job.encryption, &spec.encryption) {
            (Some(own), _) => own
                .resolve(path.and_then(Path::parent), lookup)
                .map_err(|e| e.within(place()))?,
            (None, Some(shared)) => shared
                .resolve(path.and_then(Path::parent), lookup)
                .map_err(|e| e.within(locate("[encryption]")))?,
            (None, None) => None,
        };
        job.schedule = schedule;
        job.restore_to = spec_job
            .restore_to
            .as_deref()
            .map(expand)
            .filter(|to| !to.trim().is_empty());
        jobs.push(job);
    }
    let copies = copy_targets(&spec.copies, &jobs, &locate, &expand)?;
    let metrics = observe::metrics(spec.metrics.as_ref(), &locate("[metrics]"), &expand)?;
    let notifiers = observe::notifiers(&spec.notify, &locate("[[notify]]"), &expand)?;
    Ok(Config {
        file: path.map(Path::to_path_buf),
        store: spec
            .store
            .map(|s| StoreSpec {
                url: s.url.as_deref().map(expand),
                endpoint: s.endpoint.as_deref().map(expand),
                ..s
            })
            .unwrap_or_default(),
        defaults: spec.defaults,
        jobs,
        verify_runs: scheduled_run(spec.verify.as_ref(), "[verify]", &locate, &expand)?,
        drill_runs: scheduled_run(spec.drill.as_ref(), "[drill]", &locate, &expand)?,
        copies,
        metrics,
        notifiers,
        warnings: Vec::new(),
    })
}

/// Validates the `[[copy]]` tables: a destination URL, jobs that exist, S3 settings that hold.
fn copy_targets(
    specs: &[CopySpec],
    jobs: &[Job],
    locate: &dyn Fn(&str) -> String,
    expand: &dyn Fn(&str) -> String,
) -> Result<Vec<CopySpec>> {
    let place = locate("[[copy]]");
    specs
        .iter()
        .map(|spec| {
            let to = StoreSpec {
                url: spec.to.url.as_deref().map(expand),
                endpoint: spec.to.endpoint.as_deref().map(expand),
                ..spec.to.clone()
            };
            if to.url.as_deref().is_none_or(str::is_empty) {
                return Err(
                    Error::config(format!("{place}: [[copy]] needs to = {{ url = ... }}"))
                        .with_hint("e.g. to = { url = \"s3://offsite-bucket/lifeboat\" }"),
                );
            }
            to.s3_options()
                .map_err(|e| Error::config(format!("{place}: [[copy]] to: {}", e.message())))?;
            if let Some(unknown) = spec
                .jobs
                .iter()
                .find(|j| !jobs.iter().any(|k| &k.name == *j))
            {
                return Err(Error::config(format!(
                    "{place}: [[copy]] names job {unknown:?}, which is not configured"
                ))
                .with_hint(format!(
                    "configured jobs: {}",
                    jobs.iter()
                        .map(|j| j.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Ok(CopySpec {
                to,
                jobs: spec.jobs.clone(),
            })
        })
        .collect()
}

/// Validates a `[verify]` or `[drill]` table (`table` is its header, for messages).
fn scheduled_run(
    spec: Option<&ScheduledRunSpec>,
    table: &str,
    locate: &dyn Fn(&str) -> String,
    expand: &dyn Fn(&str) -> String,
) -> Result<Option<ScheduledRun>> {
    use crate::catalog::Level;
    let Some(spec) = spec else { return Ok(None) };
    let place = locate(table);
    let schedule =
        crate::schedule::Schedule::parse(&spec.schedule, spec.timezone.as_deref().unwrap_or("UTC"))
            .map_err(|e| Error::config(format!("{place}: {table} schedule: {e}")))?;
    let drill = table == "[drill]";
    let level = match (drill, spec.level) {
        (true, None | Some(Level::Drill)) => Level::Drill,
        (true, Some(other)) => {
            return Err(Error::config(format!(
                "{place}: [drill] runs drills; level = {:?} belongs in [verify]",
                other.as_str()
            )))
        }
        (false, Some(Level::Drill)) => {
            return Err(Error::config(format!(
                "{place}: [verify] level = \"drill\": put drills in a [drill] table with its scratch-url"
            )))
        }
        (false, level) => level.unwrap_or(Level::Content),
    };
    let scratch_url = match (drill, &spec.scratch_url) {
        (true, Some(url)) => Some(
            SecretUrl::parse(&expand(url))
                .map_err(|e| Error::config(format!("{place}: [drill] scratch-url: {e}")))?,
        ),
        (false, Some(_)) => {
            return Err(Error::config(format!(
                "{place}: scratch-url belongs in [drill], not [verify]"
            )))
        }
        (_, None) => None,
    };
    Ok(Some(ScheduledRun {
        schedule,
        level,
        scratch_url,
    }))
}

/// Validates one job spec (also used for the one-liner built from flags). `config_dir` is where
/// relative retention policy paths are looked up.
pub fn validate_job(
    spec: &JobSpec,
    defaults: &DefaultsSpec,
    config_dir: Option<&Path>,
) -> Result<Job> {
    validate_job_name(&spec.name)?;
    refuse_other_engines_keys(spec)?;
    let engine = engine_settings(spec.engine, spec, defaults)?;
    let compression = Compression::from_spec(
        spec.compression
            .or(defaults.compression)
            .unwrap_or(CompressionName::Zstd),
        spec.compression_level.or(defaults.compression_level),
    )
    .map_err(|e| Error::config(format!("job {:?}: {e}", spec.name)))?;
    let max_age = spec
        .max_age
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| Error::config(format!("job {:?}: max-age: {e}", spec.name)))?;
    let positive = |key: &str, value: &Option<String>| -> Result<Option<Duration>> {
        value
            .as_deref()
            .map(|v| match parse_duration(v) {
                Ok(d) if d.is_zero() => Err(format!("{v:?} is zero; give a length like 10m")),
                other => other,
            })
            .transpose()
            .map_err(|e| Error::config(format!("job {:?}: {key}: {e}", spec.name)))
    };
    let idle_timeout =
        positive("idle-timeout", &spec.idle_timeout)?.unwrap_or(crate::net::DEFAULT_IDLE_TIMEOUT);
    let rto = positive("rto", &spec.rto)?;
    let rpo = positive("rpo", &spec.rpo)?;
    let timeout = positive("timeout", &spec.timeout)?;
    Ok(Job {
        name: spec.name.clone(),
        engine,
        compression,
        max_age,
        rto,
        rpo,
        idle_timeout,
        timeout,
        // Resolved by `parse`, which reads the `[encryption]` table and the environment.
        encryption: None,
        schedule: None,
        restore_to: None,
        retention: spec
            .retention
            .as_ref()
            .map(|v| crate::retention::resolve(v, config_dir))
            .transpose()
            .map_err(|e| Error::config(format!("job {:?}: {e}", spec.name)))?,
    })
}

/// The engine-specific keys a job table sets, by their names in the file.
fn engine_keys_given(spec: &JobSpec) -> Vec<&'static str> {
    [
        ("url", spec.url.is_some()),
        ("paths", spec.paths.is_some()),
        ("exclude", spec.exclude.is_some()),
        ("strict", spec.strict.is_some()),
        ("format", spec.format.is_some()),
        ("pg-bin-dir", spec.pg_bin_dir.is_some()),
        ("globals", spec.globals.is_some()),
        ("mode", spec.mode.is_some()),
        ("debug-digest", spec.debug_digest.is_some()),
        ("databases", spec.databases.is_some()),
        ("parallel-collections", spec.parallel_collections.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, given)| given.then_some(key))
    .collect()
}

/// Refuses a key of another engine (`format` in a redis job): each engine names its own keys.
fn refuse_other_engines_keys(spec: &JobSpec) -> Result<()> {
    let engine = spec.engine;
    let own = engine_keys(engine);
    let Some(key) = engine_keys_given(spec)
        .into_iter()
        .find(|key| !own.contains(key))
    else {
        return Ok(());
    };
    let owners: Vec<&str> = EngineName::ALL
        .iter()
        .filter(|e| engine_keys(**e).contains(&key))
        .map(|e| e.as_str())
        .collect();
    let owners = match owners.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => owners.join(""),
    };
    Err(Error::config(format!(
        "job {:?}: {key} is a setting of {owners} jobs, not of {engine} jobs",
        spec.name,
    ))
    .with_hint(format!(
        "{engine} jobs take {} (besides compression, retention, schedule, max-age, idle-timeout and timeout)",
        own.join(", ")
    )))
}

/// The `url` of a database job, parsed, with one of the engine's `schemes` (`expected` says
/// which, in words); its password never shows in messages.
fn job_url(spec: &JobSpec, schemes: &[&str], expected: &str) -> Result<SecretUrl> {
    let url = spec.url.as_deref().ok_or_else(|| {
        Error::config(format!(
            "job {:?}: engine {} needs a url",
            spec.name, spec.engine
        ))
        .with_hint("e.g. url = \"${DATABASE_URL}\"")
    })?;
    let url = SecretUrl::parse(url)
        .map_err(|e| Error::config(format!("job {:?}: url: {e}", spec.name)))?;
    if !schemes.contains(&url.scheme()) {
        return Err(Error::config(format!(
            "job {:?}: engine {} needs {expected}, got {}://",
            spec.name,
            spec.engine,
            url.scheme()
        ))
        .with_hint(format!(
            "check that engine = \"{}\" is the right engine for this URL",
            spec.engine
        )));
    }
    Ok(url)
}

/// Job names become path segments in the repository, so they are kept simple.
pub fn validate_job_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!("{name:?} is not a valid job name"))
            .with_hint("use 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-'"))
    }
}

/// The job keys `engine` takes besides the common ones (its own settings, each engine's file
/// of this module lists them).
fn engine_keys(engine: EngineName) -> &'static [&'static str] {
    match engine {
        EngineName::Postgres => postgres::KEYS,
        EngineName::Redis => redis::KEYS,
        EngineName::Files => files::KEYS,
        EngineName::Mongo => mongo::KEYS,
    }
}

/// Validates `engine`'s part of a job; each engine's file checks its own keys.
fn engine_settings(
    engine: EngineName,
    spec: &JobSpec,
    defaults: &DefaultsSpec,
) -> Result<EngineJob> {
    Ok(match engine {
        EngineName::Postgres => EngineJob::Postgres(postgres::job(spec, defaults)?),
        EngineName::Redis => EngineJob::Redis(redis::job(spec)?),
        EngineName::Files => EngineJob::Files(files::job(spec)?),
        EngineName::Mongo => EngineJob::Mongo(mongo::job(spec)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "DATABASE_URL").then(|| "postgres://app:pw@db:5432/shop".to_string())
    }

    /// Regression (Trust III, 19): `--max-age 9223372036854775808s` wrapped to a negative
    /// duration ("max -106751991167300d").
    #[test]
    fn a_duration_too_long_for_dates_is_refused() {
        for too_long in [
            "9223372036854775808s",
            "9223372036854775807s",
            "36501d",
            "5300w",
        ] {
            let e = parse_duration(too_long).unwrap_err();
            assert!(e.contains("longer than Lifeboat takes"), "{too_long}: {e}");
        }
        assert_eq!(
            parse_duration("36500d").unwrap().as_secs(),
            MAX_DURATION_SECS
        );
        assert!(parse_duration("18446744073709551616s").is_err());
    }

    #[test]
    fn a_full_file_loads() {
        let text = r#"
[store]
url = "/var/backups/lifeboat"

[defaults]
compression = "gzip"

[[job]]
name = "app-db"
engine = "postgres"
url = "${DATABASE_URL}"
format = "plain"
max-age = "26h"
retention = { keep-daily = 7 }
"#;
        let c = parse(text, Some(Path::new("lifeboat.toml")), &env).unwrap();
        assert_eq!(c.store.url.as_deref(), Some("/var/backups/lifeboat"));
        let job = c.job("app-db").unwrap();
        assert_eq!(job.max_age, Some(Duration::from_secs(26 * 3600)));
        assert!(matches!(job.compression, Compression::Gzip { .. }));
        let EngineJob::Postgres(pg) = &job.engine else {
            panic!("not a postgres job")
        };
        assert_eq!(pg.format, PgFormat::Plain);
        assert_eq!(pg.url.database().as_deref(), Some("shop"));
    }

    #[test]
    fn encryption_and_object_lock_settings() {
        use crate::store::s3::{Encryption, LockMode};
        let store = |table: &str| {
            let text = format!("[store]\nurl = \"s3://b/p\"\n{table}\n");
            parse(&text, Some(Path::new("lb.toml")), &env).map(|c| c.store.s3_options())
        };
        let o = store("sse = \"aws:kms\"\nsse-kms-key-id = \"k1\"\nobject-lock = { mode = \"compliance\", days = 30 }")
            .unwrap()
            .unwrap();
        assert_eq!(
            o.encryption,
            Some(Encryption::Kms {
                key_id: Some("k1".into())
            })
        );
        let lock = o.object_lock.unwrap();
        assert_eq!((lock.mode, lock.days), (LockMode::Compliance, 30));
        let key = |k: &str| crate::store::ObjectKey::new(k).unwrap();
        assert!((lock.applies_to)(&key(
            "jobs/a/snapshots/20261203T000000Z-abcdef/manifest.json"
        )));
        assert!(!(lock.applies_to)(&key("jobs/a/lock")));
        let o = store("sse = \"AES256\"").unwrap().unwrap();
        assert_eq!(o.encryption, Some(Encryption::S3Managed));
        let e = store("sse = \"AES256\"\nsse-kms-key-id = \"k1\"")
            .unwrap()
            .unwrap_err();
        assert!(e.message().contains("aws:kms"), "{}", e.message());
        let e = store("object-lock = { mode = \"governance\", days = 0 }")
            .unwrap()
            .unwrap_err();
        assert!(e.message().contains("1..=36500"), "{}", e.message());
        let e = store("object-lock = { mode = \"forever\", days = 1 }").unwrap_err();
        assert!(e.message().starts_with("lb.toml:3:"), "{}", e.message());
        let e = store("sse = \"aes\"").unwrap_err();
        assert!(e.message().starts_with("lb.toml:3:7"), "{}", e.message());
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let text = "[[job]]\nname = \"a\"\nengine = \"postgres\"\nurll = \"x\"\n";
        let e = parse(text, Some(Path::new("lb.toml")), &env).unwrap_err();
        assert!(
            e.message().starts_with("lb.toml:4:1: unknown field `urll`"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn missing_variables_are_named() {
        let text = "[[job]]\nname = \"a\"\nengine = \"postgres\"\nurl = \"${NOPE}\"\n";
        let e = parse(text, Some(Path::new("lb.toml")), &env).unwrap_err();
        assert!(e.message().contains("lb.toml:4:8"), "{}", e.message());
        assert!(e.message().contains("NOPE"));
    }

    #[test]
    fn bad_values_point_at_the_job() {
        let text = "[[job]]\nname = \"a\"\nengine = \"postgres\"\nurl = \"mysql://h/db\"\n";
        let e = parse(text, Some(Path::new("lb.toml")), &env).unwrap_err();
        assert!(e.message().starts_with("lb.toml:2:8:"), "{}", e.message());
        let text = "[[job]]\nname = \"a\"\nengine = \"oracle\"\nurl = \"x\"\n";
        let e = parse(text, Some(Path::new("lb.toml")), &env).unwrap_err();
        assert!(e.message().starts_with("lb.toml:3:10:"), "{}", e.message());
    }

    #[test]
    fn a_key_of_another_engine_is_refused_by_name() {
        let cases = [
            (
                "engine = \"redis\"\nurl = \"redis://r:6379\"\nformat = \"plain\"",
                "format is a setting of postgres jobs, not of redis jobs",
            ),
            (
                "engine = \"files\"\npaths = [\"/data\"]\nurl = \"${DATABASE_URL}\"",
                "url is a setting of postgres, mongodb and redis jobs, not of files jobs",
            ),
            (
                "engine = \"postgres\"\nurl = \"${DATABASE_URL}\"\nstrict = true",
                "strict is a setting of files jobs, not of postgres jobs",
            ),
            (
                "engine = \"postgres\"\nurl = \"${DATABASE_URL}\"\ndebug-digest = true",
                "debug-digest is a setting of redis jobs, not of postgres jobs",
            ),
        ];
        for (job, want) in cases {
            let text = format!("[[job]]\nname = \"j\"\n{job}\n");
            let e = parse(&text, Some(Path::new("lifeboat.toml")), &env).unwrap_err();
            assert!(e.message().contains(want), "{job}: {}", e.message());
            assert!(e.message().starts_with("lifeboat.toml"), "{}", e.message());
            assert!(
                e.hint().unwrap_or_default().contains(" jobs take "),
                "{e:?}"
            );
        }
        // Each engine's own keys pass.
        let text = "[[job]]\nname = \"f\"\nengine = \"files\"\npaths = [\"/data\"]\nexclude = [\"*.tmp\"]\nstrict = true\n\n[[job]]\nname = \"r\"\nengine = \"redis\"\nurl = \"redis://r:6379\"\nmode = \"scan\"\ndebug-digest = true\n";
        let c = parse(text, None, &env).unwrap();
        assert_eq!(c.jobs.len(), 2);
    }

    #[test]
    fn passwords_in_the_file_are_not_echoed() {
        let text = "[[job]]\nname = \"a\"\nengine = \"postgres\"\nurl = \"postgres://u:hunter2@h\"\nx = 1\n";
        let e = parse(text, None, &env).unwrap_err();
        assert!(!e.message().contains("hunter2"));
        let text =
            "[[job]]\nname = \"a\"\nengine = \"postgres\"\nurl = \"postgres://u:hunter2@h\"\n";
        let e = parse(text, None, &env).unwrap_err();
        assert!(!e.message().contains("hunter2"), "{}", e.message());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("26").is_err());
        assert!(parse_duration("h").is_err());
    }

    /// Regression: `schedule` was accepted, unused and unvalidated.
    #[test]
    fn a_schedule_is_validated_and_kept() {
        for good in [
            "0 3 * * *",
            "*/15 * * * 1-5",
            "30 2 1 * *",
            "@daily",
            "0 4 * * SUN",
        ] {
            crate::schedule::Schedule::parse(good, "UTC").unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["0 3 * *", "0 0 3 * * *", "61 * * * *", "every night", ""] {
            assert!(
                crate::schedule::Schedule::parse(bad, "UTC").is_err(),
                "{bad} was accepted"
            );
        }
        let text = "[[job]]\nname = \"db\"\nengine = \"postgres\"\nurl = \"postgres://h/db\"\nschedule = \"0 25 * * *\"\n";
        let e = parse(text, Some(Path::new("lifeboat.toml")), &env).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        assert!(
            e.message()
                .starts_with("lifeboat.toml:5:12: job \"db\": schedule"),
            "{}",
            e.message()
        );
    }
}
