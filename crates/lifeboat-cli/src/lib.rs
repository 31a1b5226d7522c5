//! Glue shared by the three binaries: common flags, configuration and store resolution,
//! logging, signal handling, and turning library errors into messages and exit codes.

pub mod progress;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
pub use clap_complete::Shell;
use lifeboat_core::config::StoreSpec;
use lifeboat_core::config::{self, Config};
use lifeboat_core::job::Cancel;
use lifeboat_core::pipeline::{Encryption, Keys};
use lifeboat_core::store::{self, AnyStore, Store};
use lifeboat_core::{Error, ErrorKind, Result};

/// Flags every binary takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Configuration file [default: ./lifeboat.toml if it exists]
    #[arg(
        long,
        short = 'c',
        env = config::env::CONFIG,
        value_name = "FILE",
        global = true
    )]
    pub config: Option<PathBuf>,

    /// The store: a directory or s3://bucket/prefix; overrides the file
    #[arg(long, env = config::env::REPO, value_name = "REPO", global = true)]
    pub repo: Option<String>,

    /// S3-compatible endpoint, e.g. https://ACCOUNT.r2.cloudflarestorage.com (overrides the file)
    #[arg(long, value_name = "URL", global = true)]
    pub s3_endpoint: Option<String>,

    /// S3 region (`auto` for R2) (overrides the file)
    #[arg(long, value_name = "REGION", global = true)]
    pub s3_region: Option<String>,

    /// Use path-style S3 addressing (MinIO, most self-hosted servers)
    #[arg(long, global = true)]
    pub s3_path_style: bool,

    /// Print results as JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// Format of log lines on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Progress lines on stderr: auto draws them on a terminal without --json
    #[arg(long, value_enum, default_value_t = progress::ProgressMode::Auto, global = true)]
    pub progress: progress::ProgressMode,

    /// More log output (-v: debug, -vv: trace)
    #[arg(long, short = 'v', action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Print this program's man page (roff) and exit (scripts/install.sh uses it)
    #[arg(long, hide = true)]
    pub print_man_page: bool,

    /// Print this program's completion script for SHELL and exit
    #[arg(long, hide = true, value_name = "SHELL")]
    pub print_completions: Option<clap_complete::Shell>,
}

/// Handles `--print-man-page` and `--print-completions SHELL` (every binary has them, so the
/// man pages and completions come from each one's own clap definition): `Some(exit code)` when
/// one was asked for.
pub fn print_docs<A: clap::CommandFactory>(common: &CommonArgs) -> Option<i32> {
    if let Some(shell) = common.print_completions {
        print_completions::<A>(shell);
        return Some(0);
    }
    if common.print_man_page {
        let mut page = Vec::new();
        let man = clap_mangen::Man::new(A::command());
        return Some(match man.render(&mut page) {
            Ok(()) => write_stdout(&page),
            Err(e) => {
                eprintln!("error: cannot write the man page: {e}");
                1
            }
        });
    }
    None
}

/// Writes `A`'s completion script for `shell` to stdout.
pub fn print_completions<A: clap::CommandFactory>(shell: clap_complete::Shell) {
    let mut command = A::command();
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    write_stdout(&script);
}

/// Writes `bytes` to stdout; returns the exit code. A reader that went away (`| head`) ends
/// the output quietly, as other command-line tools do, instead of a panic ("failed printing to
/// stdout: Broken pipe") or an error.
pub fn write_stdout(bytes: &[u8]) -> i32 {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            1
        }
    }
}

/// `println!` that ends quietly when stdout's reader went away (see [`write_stdout`]).
#[macro_export]
macro_rules! outln {
    () => {{
        let _ = $crate::print_line("");
    }};
    ($($arg:tt)*) => {{
        let _ = $crate::print_line(&format!($($arg)*));
    }};
}

/// `print!` that ends quietly when stdout's reader went away (see [`write_stdout`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = $crate::write_stdout(format!($($arg)*).as_bytes());
    }};
}

/// [`write_stdout`] for one line of text.
pub fn print_line(line: &str) -> i32 {
    write_stdout(format!("{line}\n").as_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether log lines (and so the final error lines) are JSON (`--log-format json`).
static LOG_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets up logging on stderr. `LIFEBOAT_LOG` overrides the level filter.
pub fn init_logging(common: &CommonArgs) {
    LOG_JSON.store(
        common.log_format == LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    let default = match common.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env(config::env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        .with_target(false);
    let _ = match common.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// The identities that decrypt encrypted snapshots (restore, verify).
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// An age identity file (from `lifeboat-backup keygen` or age-keygen) or an unencrypted
    /// OpenSSH private key, for encrypted snapshots (repeatable)
    #[arg(long, value_name = "FILE", env = config::env::AGE_IDENTITY_FILE)]
    pub identity: Vec<PathBuf>,
}

impl KeyArgs {
    /// The identity files, plus the passphrase of `job` if its configuration encrypts with one.
    pub fn keys(&self, config: Option<&Config>, job: Option<&str>) -> Result<Keys> {
        let passphrase = config
            .zip(job)
            .and_then(|(c, name)| c.jobs.iter().find(|j| j.name == name))
            .and_then(|j| match &j.encryption {
                Some(Encryption::Passphrase { passphrase, .. }) => Some(passphrase.clone()),
                _ => None,
            });
        Ok(Keys::from_files(&self.identity)?.with_passphrase(passphrase))
    }
}

/// The `--help` text after the examples: the environment variables, from the one registry.
pub fn env_help() -> String {
    config::env::help()
}

/// A URL given either on the command line (`--url URL`) or by the name of the environment
/// variable that holds it (`--url-env VAR`, which keeps passwords out of `ps`).
pub fn url_flag(value: Option<&str>, env_var: Option<&str>, flag: &str) -> Result<Option<String>> {
    match (value, env_var) {
        (Some(v), _) => Ok(Some(v.to_string())),
        (None, Some(var)) => env_lookup(var)
            .filter(|v| !v.is_empty())
            .map(Some)
            .ok_or_else(|| {
                usage(format!(
                    "--{flag}-env {var}: the environment variable {var} is not set (or is empty)"
                ))
                .with_hint(format!(
                    "export {var}=... before running, or name another variable"
                ))
            }),
        (None, None) => Ok(None),
    }
}

/// Reads an environment variable (the binaries are the only place that does).
pub fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads the configuration: `--config`/`LIFEBOAT_CONFIG`, else `./lifeboat.toml` if present.
/// Its warnings (a password in a file others can read) are logged.
pub fn load_config(common: &CommonArgs) -> Result<Option<Config>> {
    let config = match &common.config {
        Some(path) => config::load(path, &env_lookup).map(Some),
        None => {
            let default = Path::new("lifeboat.toml");
            if default.exists() {
                config::load(default, &env_lookup).map(Some)
            } else {
                Ok(None)
            }
        }
    }?;
    for warning in config.iter().flat_map(|c| &c.warnings) {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

/// Opens the store: `--repo`/`LIFEBOAT_REPO`, else the file's `[store]`, else the default
/// directory. S3 settings come from the file's `[store]` table, overridden by `--s3-*` flags;
/// credentials from the standard AWS chain.
pub async fn open_store(common: &CommonArgs, config: Option<&Config>) -> Result<AnyStore> {
    open_store_with(common, config, store::Access::Create).await
}

/// Opens an existing repository, for every command that does not back up: nothing is created,
/// and a missing repository (or a path that is a file, or a folder without `lifeboat.json`)
/// is a usage error (exit 2).
pub async fn open_repository(common: &CommonArgs, config: Option<&Config>) -> Result<AnyStore> {
    let store = open_store_with(common, config, store::Access::Existing).await?;
    if !lifeboat_core::catalog::check_repository(&store).await? {
        return Err(usage(format!(
            "{} is not a Lifeboat repository (no lifeboat.json)",
            store.describe()
        ))
        .with_hint("check --repo or the [store] url; lifeboat-backup creates the repository on its first run"));
    }
    Ok(store)
}

/// The job a command works on: `--job NAME` (which must exist), else the repository's only job.
pub async fn pick_job(
    store: &AnyStore,
    config: Option<&Config>,
    flag: Option<&str>,
) -> Result<String> {
    if let Some(job) = flag {
        known_job(store, config, job).await?;
        return Ok(job.to_string());
    }
    match lifeboat_core::catalog::list_jobs(store).await?.as_slice() {
        [only] => Ok(only.clone()),
        jobs => Err(usage("which job? pass --job NAME").with_hint(format!(
            "jobs in {}: {}",
            store.describe(),
            if jobs.is_empty() {
                "none".to_string()
            } else {
                jobs.join(", ")
            }
        ))),
    }
}

/// Refuses a job that neither the configuration nor the repository knows (exit 2), naming the
/// jobs that exist: the one behaviour of every command for an unknown job.
pub async fn known_job(store: &AnyStore, config: Option<&Config>, job: &str) -> Result<()> {
    config::validate_job_name(job)?;
    let configured: Vec<String> = config
        .map(|c| c.jobs.iter().map(|j| j.name.clone()).collect())
        .unwrap_or_default();
    let stored = lifeboat_core::catalog::list_jobs(store).await?;
    if configured.iter().chain(&stored).any(|j| j == job) {
        return Ok(());
    }
    let mut all: Vec<String> = configured.into_iter().chain(stored).collect();
    all.sort();
    all.dedup();
    Err(
        usage(format!("there is no job {job:?} in {}", store.describe())).with_hint(
            if all.is_empty() {
                "the repository holds no jobs yet; run lifeboat-backup first".to_string()
            } else {
                format!("jobs: {}", all.join(", "))
            },
        ),
    )
}

async fn open_store_with(
    common: &CommonArgs,
    config: Option<&Config>,
    access: store::Access,
) -> Result<AnyStore> {
    let mut spec: StoreSpec = config.map(|c| c.store.clone()).unwrap_or_default();
    if let Some(repo) = &common.repo {
        spec.url = Some(repo.clone());
    }
    if common.s3_endpoint.is_some() {
        spec.endpoint = common.s3_endpoint.clone();
    }
    if common.s3_region.is_some() {
        spec.region = common.s3_region.clone();
    }
    if common.s3_path_style {
        spec.path_style = Some(true);
    }
    let location = match &spec.url {
        Some(url) => url.clone(),
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            config::default_repo(home.as_deref()).display().to_string()
        }
    };
    let store = store::open_with(&location, &spec.s3_options()?, access).await?;
    tracing::debug!("Using the store at {}.", store.describe());
    Ok(store)
}

/// A multi-threaded runtime: the dump reader, the compressor and stderr drains run side by side.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
}

/// The process's cancellation, fired by the first SIGINT or SIGTERM (see [`watch_signals`]).
static SIGNALLED: std::sync::OnceLock<Cancel> = std::sync::OnceLock::new();

/// Starts the process's one signal watcher (idempotent; needs a running tokio runtime) and
/// returns the [`Cancel`] it fires. The first SIGINT or SIGTERM cancels the run; a second one
/// exits the process at once, whatever it is doing (an unreachable store must never make a
/// stopped run ignore signals).
pub fn watch_signals() -> Cancel {
    SIGNALLED
        .get_or_init(|| {
            let (trigger, cancel) = Cancel::pair();
            tokio::spawn(async move {
                let first = next_signal().await;
                trigger.cancel(first);
                let second = next_signal().await;
                eprintln!(
                    "error: {second} again during the clean-up; exiting now. The next run removes what is left, and the lock expires by itself."
                );
                std::process::exit(ErrorKind::Cancelled.exit_code());
            });
            cancel
        })
        .clone()
}

async fn next_signal() -> &'static str {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate => "SIGTERM",
    }
}

/// Runs `work` until it ends or SIGINT/SIGTERM arrives (see [`watch_signals`]). On a signal,
/// `work` is dropped: child processes are killed and unfinished uploads removed (their `Drop`),
/// nothing is committed.
pub async fn until_signal<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    watch_signals().run(work).await
}

/// Prints an error (with its causes and hint) on stderr, or as JSON on stdout; returns the exit
/// code. The error is logged here, once.
pub fn report_error(err: &Error, json: bool) -> i32 {
    let causes = err.causes();
    if json {
        print_line(&serde_json::json!({"ok": false, "error": err.to_json()}).to_string());
    }
    if LOG_JSON.load(std::sync::atomic::Ordering::Relaxed) {
        // One structured line in the shape of every other log line of the run (tracing's JSON
        // format), written here because tracing's fields can only carry a list or a map as a
        // debug string, and `causes` and `context` must be JSON a machine can read.
        let mut fields = err.to_json();
        fields["message"] = serde_json::Value::String(err.message().to_string());
        let line = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": "ERROR",
            "fields": fields,
        });
        progress::write_log_line(&format!("{line}\n"));
        return err.exit_code();
    }
    let mut text = format!("error: {}", err.message());
    for cause in &causes {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    if let Some(hint) = err.hint() {
        text.push_str(&format!("\n  hint: {hint}"));
    }
    eprintln!("{text}");
    err.exit_code()
}

/// Prints a value as one line of JSON.
pub fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(s) => {
            print_line(&s);
        }
        Err(e) => eprintln!("error: cannot encode the result as JSON: {e}"),
    }
}

/// Who a run is, for the job's lock: this program, the host and the process.
pub fn holder(owner: &str) -> lifeboat_core::lock::Holder {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_string());
    lifeboat_core::lock::Holder {
        owner: owner.to_string(),
        host,
        pid: std::process::id(),
        process: lifeboat_core::lock::ProcessStamp::of_this_process(),
    }
}

/// The repository the flags and the file name (for `--print-config`): `--repo`, else the
/// file's `[store] url`, else the default directory.
pub fn repository_url(common: &CommonArgs, config: Option<&Config>) -> String {
    common
        .repo
        .clone()
        .or_else(|| config.and_then(|c| c.store.url.clone()))
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
            lifeboat_core::config::default_repo(home.as_deref())
                .display()
                .to_string()
        })
}

/// Asks `question` on a terminal and reads y/N; without a terminal (cron, scripts) there is
/// nobody to ask, and the caller's own flags decide.
pub fn confirm_on_terminal(question: &str) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| usage(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// Shows a restore's plan and whether to carry it out. A dry run prints the plan (as JSON
/// with `--json`) and returns `false`: nothing is changed. Otherwise the plan is printed (the
/// JSON report comes at the end instead) and, without `--yes`, a user on a terminal is asked
/// `question`; a no is a refusal that changed nothing.
pub fn show_plan_and_confirm(
    common: &CommonArgs,
    plan: &impl serde::Serialize,
    text: &str,
    dry_run: bool,
    yes: bool,
    question: &str,
) -> Result<bool> {
    if dry_run {
        if common.json {
            print_json(&serde_json::json!({"ok": true, "dry_run": true, "plan": plan}));
        } else {
            out!("{text}");
            outln!("Dry run: nothing was changed.");
        }
        return Ok(false);
    }
    if !common.json {
        out!("{text}");
    }
    if !yes && !confirm_on_terminal(question)? {
        return Err(Error::new(
            ErrorKind::Refused,
            "restore cancelled at the prompt; nothing was changed",
        ));
    }
    Ok(true)
}

/// Refuses, off a terminal and without `--yes`, a restore whose plan needs consent (a newer
/// snapshot is damaged, so an older one was picked); on a terminal the plan's question asks,
/// and a dry run only shows the plan.
pub fn refuse_without_consent<'a>(
    consents: impl Iterator<Item = &'a String>,
    dry_run: bool,
    yes: bool,
) -> Result<()> {
    use std::io::IsTerminal as _;
    let consents: Vec<&str> = consents.map(String::as_str).collect();
    if consents.is_empty() || dry_run || yes || std::io::stdin().is_terminal() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Refused,
        format!("{}; nothing was restored", consents.join("; ")),
    )
    .with_hint("to restore the older snapshot anyway, run again with --yes; or check the damaged one with `lifeboat-verify --snapshot ID`"))
}

/// Exit code for a usage error found after parsing.
pub fn usage(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message)
}
