//! Engines that consume a dump stream on restore, behind one trait: [`Sink`].
//!
//! A sink inspects its target and refuses what it must ([`Sink::plan`]), applies a snapshot so
//! that the change can be undone until both digests match ([`Sink::apply`]), checks a dump's own
//! structure ([`Sink::check`], the content level of verify) and proves a snapshot restores by
//! restoring it into a scratch target ([`Sink::drill`]). Each engine keeps its own undo
//! mechanism: one transaction held back until the digests match (PostgreSQL), a whole check
//! before the first key and spare databases swapped in (Redis), a staging directory renamed
//! into place (files). The operations (`restore.rs`, `verify/`) take any sink; `engine.rs` is
//! the one place that picks it.

pub mod files;
pub mod mongo;
pub mod postgres;
pub mod redis;
pub mod to_file;

use std::future::Future;
use std::path::PathBuf;

use serde::Serialize;

use crate::catalog::{Fingerprint, Manifest};
use crate::error::{Error, Result};
use crate::pipeline::Keys;
use crate::secret::SecretUrl;
use crate::store::Store;

/// How a snapshot is restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMode {
    /// Into the live target (a database, a server, a directory).
    #[default]
    Load,
    /// Into spare room of the target, swapped in at the end (Redis: SWAPDB).
    Swap,
    /// The verified dump written as a file (Redis: an RDB file for a stopped server).
    File,
}

/// The choices of a restore (flags), shared by every engine; each sink refuses the ones that
/// do not apply to it ([`refuse_choices`]).
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// How the data reaches the target (`--mode`).
    pub mode: RestoreMode,
    /// Replace what is there: PostgreSQL drops and replaces the dump's objects, Redis empties
    /// the target databases, files moves the old directory aside; `--mode file` overwrites.
    pub clean: bool,
    /// Redis: overwrite keys that exist in the target (RESTORE ... REPLACE).
    pub replace: bool,
    /// Redis: source database -> target database (`--db-map 0:3`).
    pub db_map: std::collections::BTreeMap<u64, u64>,
    /// PostgreSQL: skip `ALTER ... OWNER TO`.
    pub no_owner: bool,
    /// PostgreSQL: restore only these tables (`SCHEMA.NAME`, `--table`).
    pub tables: Vec<String>,
    /// PostgreSQL: restore only the objects of these schemas (`--schema`).
    pub schemas: Vec<String>,
    /// PostgreSQL: apply the snapshot's roles (`globals = true`) first (`--globals`).
    pub globals: bool,
    /// MongoDB: where the snapshot's namespaces go (`--rename 'app.*=app_restored.*'`).
    pub rename: Vec<mongo::RenameRule>,
    /// PostgreSQL: the directory of `pg_restore` and `psql` (else PATH).
    pub pg_bin_dir: Option<PathBuf>,
    /// Bytes held back from a streaming sink until the digests match.
    pub hold_back: usize,
}

/// A choice of a restore that only some engines take: what a sink accepts or refuses, by
/// type. Its name, for messages, is the flag that makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Redis: source database -> target database.
    DbMap,
    /// Redis: overwrite keys that exist.
    Replace,
    /// Redis: load into spare databases, swap them in.
    Swap,
    /// The verified dump written as a file.
    File,
    /// PostgreSQL: no `ALTER ... OWNER TO`.
    NoOwner,
    /// PostgreSQL: some tables only.
    Tables,
    /// PostgreSQL: some schemas only.
    Schemas,
    /// PostgreSQL: the snapshot's roles first.
    Globals,
    /// MongoDB: namespaces renamed.
    Rename,
}

impl Choice {
    /// The flag that makes this choice, as messages name it.
    pub fn flag(self) -> &'static str {
        match self {
            Choice::DbMap => "--db-map",
            Choice::Replace => "--replace",
            Choice::Swap => "--mode swap",
            Choice::File => "--mode file",
            Choice::NoOwner => "--no-owner",
            Choice::Tables => "--table",
            Choice::Schemas => "--schema",
            Choice::Globals => "--globals",
            Choice::Rename => "--rename",
        }
    }
}

impl RestoreOptions {
    /// The engine-specific choices these options make.
    pub fn choices(&self) -> Vec<Choice> {
        [
            (!self.db_map.is_empty(), Choice::DbMap),
            (self.replace, Choice::Replace),
            (self.mode == RestoreMode::Swap, Choice::Swap),
            (self.mode == RestoreMode::File, Choice::File),
            (self.no_owner, Choice::NoOwner),
            (!self.tables.is_empty(), Choice::Tables),
            (!self.schemas.is_empty(), Choice::Schemas),
            (self.globals, Choice::Globals),
            (!self.rename.is_empty(), Choice::Rename),
        ]
        .into_iter()
        .filter_map(|(made, choice)| made.then_some(choice))
        .collect()
    }
}

/// Refuses the choices a sink does not take: the same check for a dry run and a real one,
/// before anything is inspected.
pub fn refuse_choices(
    snapshot: &Manifest,
    options: &RestoreOptions,
    accepted: &[Choice],
) -> Result<()> {
    match options
        .choices()
        .into_iter()
        .find(|choice| !accepted.contains(choice))
    {
        Some(choice) => {
            let flag = choice.flag();
            Err(Error::config(format!(
                "{flag} does not apply to {} snapshots; snapshot {} is a {} backup",
                snapshot.engine, snapshot.id, snapshot.engine
            ))
            .with_hint(format!("drop {flag}")))
        }
        None => Ok(()),
    }
}

/// What is already at a restore target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetState {
    /// The server's version, or what the target is (`directory`).
    pub server_version: String,
    /// PostgreSQL: tables, views, sequences, functions and large objects outside the system
    /// schemas; Redis: keys in the databases restored into; files: entries in the directory.
    pub objects: i64,
}

/// Where a restore writes, once the sink has read `--to`.
#[derive(Debug, Clone)]
pub enum Target {
    /// A server (PostgreSQL, Redis), without its password in output.
    Url(SecretUrl),
    /// A directory or a file.
    Path(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Url(url) => write!(f, "{url}"),
            Target::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A sink's part of a restore plan: the target as inspected, and the lines that explain what
/// the restore will do to it.
#[derive(Debug, Clone, Serialize)]
pub struct SinkPlan {
    /// Where the restore writes.
    #[serde(skip)]
    pub target: Target,
    /// What is there now.
    pub target_state: TargetState,
    /// e.g. `("safety", "one transaction; committed only after ...")`, in order.
    pub notes: Vec<(&'static str, String)>,
}

/// What an applied restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Applied {
    /// Bytes read from the store.
    pub stored_bytes: u64,
    /// Bytes the engine received, after decompression.
    pub raw_bytes: u64,
    /// Things worth telling that are not failures (e.g. empty Redis collections skipped).
    pub notes: Vec<String>,
}

/// Where drills may restore to (`--scratch-url`, `--scratch-dir`).
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    /// Servers drills may create scratch databases on (`--scratch-url`, repeatable: each
    /// engine's drill takes the first of its own scheme).
    pub urls: Vec<SecretUrl>,
    /// A directory drills may extract into (`--scratch-dir`; default a temporary directory).
    pub dir: Option<PathBuf>,
    /// PostgreSQL: the directory of `pg_restore` and `psql`.
    pub pg_bin_dir: Option<PathBuf>,
}

/// What a drill found.
#[derive(Debug, Clone, Default)]
pub struct Drilled {
    /// Differences between the restored data's fingerprint and the manifest's (empty: ok).
    pub findings: Vec<String>,
    /// How long the restore into the scratch target took.
    pub restore_secs: Option<f64>,
}

/// An engine's restore side.
pub trait Sink: Sync {
    /// What the engine restores, for messages: `PostgreSQL`, `Redis`, `files`.
    fn product(&self) -> &'static str;

    /// Reads `--to`, inspects the target without changing it, and refuses what the real run
    /// would refuse (a dry run stops here).
    fn plan(
        &self,
        snapshot: &Manifest,
        to: &str,
        options: &RestoreOptions,
    ) -> impl Future<Output = Result<SinkPlan>> + Send;

    /// Restores the snapshot as planned; on any failure the target is left as it was. `keys`
    /// decrypt an encrypted snapshot (here and in `check` and `drill`).
    fn apply<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        plan: &SinkPlan,
        options: &RestoreOptions,
    ) -> impl Future<Output = Result<Applied>> + Send;

    /// Reads the whole snapshot (both digests) and checks the dump's own structure against the
    /// manifest: the findings, empty when it is sound.
    fn check<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Refuses a drill that cannot run with this scratch (before any snapshot is read).
    fn check_scratch(&self, scratch: &Scratch) -> Result<()>;

    /// Restores into a scratch target, compares the fingerprint, and removes what it wrote.
    fn drill<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        scratch: &Scratch,
    ) -> impl Future<Output = Result<Drilled>> + Send;

    /// The fingerprint of a dump that has none recorded (`--from-file`), read from the dump
    /// itself; a dump that is not sound is refused here.
    fn survey<S: Store>(
        &self,
        store: &S,
        snapshot: &Manifest,
    ) -> impl Future<Output = Result<Surveyed>> + Send;
}

/// What a dump made elsewhere holds, read from the dump itself.
#[derive(Debug, Clone)]
pub struct Surveyed {
    /// Counts and digests read from the dump.
    pub fingerprint: Fingerprint,
    /// The version of the server that wrote it, where the dump says (an RDB's `redis-ver`).
    pub server_version: Option<String>,
}

/// "snapshot ID", or the file a `--from-file` dump came from.
pub(crate) fn described(snapshot: &Manifest) -> String {
    if snapshot.job == crate::catalog::FROM_FILE {
        snapshot.source.url.clone()
    } else {
        format!("snapshot {}", snapshot.id)
    }
}

/// The first scratch URL with one of `schemes` (the engine's), or the error that says how to
/// give one.
pub fn scratch_url<'a>(
    scratch: &'a Scratch,
    schemes: &[&str],
    example: &str,
) -> Result<&'a SecretUrl> {
    if let Some(url) = scratch.urls.iter().find(|u| schemes.contains(&u.scheme())) {
        return Ok(url);
    }
    let given: Vec<String> = scratch.urls.iter().map(|u| u.to_string()).collect();
    Err(if given.is_empty() {
        Error::config("--level drill needs --scratch-url-env VAR or --scratch-url URL")
    } else {
        Error::config(format!(
            "--level drill of this snapshot needs a {}:// scratch server; the scratch URLs given are {}",
            schemes[0],
            given.join(", ")
        ))
    }
    .with_hint(format!(
        "pass a scratch server's URL, e.g. --scratch-url {example} (repeat --scratch-url for jobs of several engines)"
    )))
}
