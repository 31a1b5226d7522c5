//! PostgreSQL restore: `pg_restore --single-transaction` (custom format) or
//! `psql --single-transaction -v ON_ERROR_STOP=1` (plain SQL), fed through a
//! [`HoldBackWriter`] so the child cannot reach COMMIT before both digests match.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, Command};

use std::time::Instant;

use super::{
    Applied, Choice, Drilled, RestoreMode, RestoreOptions, Scratch, Sink, SinkPlan, Surveyed,
    Target, TargetState,
};
use crate::catalog::GLOBALS;
use crate::catalog::{Fingerprint, Manifest};
use crate::child::ChildProcess;
use crate::client::postgres::{
    connect, fingerprint, query_error, set_password_env, CLIENT_INSTALL_HINT,
};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Keys;
use crate::pipeline::{HoldBackWriter, RawSink};
use crate::readback::read_snapshot;
use crate::secret::SecretUrl;
use crate::store::Store;

mod toc;

/// The client programs to use for restores and checks.
#[derive(Debug, Clone, Default)]
pub struct PgTools {
    /// Where the programs are (default: the `PATH`).
    pub bin_dir: Option<PathBuf>,
}

impl PgTools {
    /// The path of `name` (`pg_restore`, `psql`).
    pub fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }
}

/// Looks at the target without changing it.
pub async fn inspect_target(url: &SecretUrl) -> Result<TargetState> {
    let conn = connect(url, ErrorKind::Sink).await?;
    let row = conn
        .client
        .query_one(
            // Tables, views, sequences (not their indexes or TOAST tables), functions and
            // large objects: what the refusal message names.
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
                       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                       AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%') \
                  + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')) \
                  + (SELECT count(*) FROM pg_largeobject_metadata)",
            &[],
        )
        .await
        .map_err(|e| query_error(ErrorKind::Sink, url, "inspect the target database", &e))?;
    Ok(TargetState {
        server_version: conn.server_version,
        objects: row.get(0),
    })
}

/// How `pg_restore` or `psql` is run.
#[derive(Default)]
pub struct PgRestoreOptions {
    /// Drop objects of the dump that already exist in the target first (custom format only).
    pub clean: bool,
    /// Skip `ALTER ... OWNER TO` (when the dump's roles do not exist on the target).
    pub no_owner: bool,
    /// Only part of the archive (custom format only).
    pub part: Option<Part>,
    /// The part as a list of the archive's entries (`pg_restore --use-list`), which takes the
    /// place of `part`'s flags: tables with what belongs to them (see `toc`).
    pub use_list: Option<PathBuf>,
}

/// A `pg_restore --use-list` file, removed when dropped.
struct UseList {
    path: PathBuf,
}

impl UseList {
    fn write(list: &str) -> Result<UseList> {
        let mut token = [0u8; 8];
        let _ = getrandom::fill(&mut token);
        let path = std::env::temp_dir().join(format!(
            "lifeboat-restore-{}-{}.list",
            std::process::id(),
            hex::encode(token)
        ));
        std::fs::write(&path, list).map_err(|e| {
            Error::new(
                ErrorKind::Sink,
                format!("cannot write pg_restore's list {}: {e}", path.display()),
            )
            .with_hint("check free space and permissions of the temporary directory (TMPDIR)")
        })?;
        Ok(UseList { path })
    }
}

impl Drop for UseList {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Part of a custom-format archive: `pg_restore --schema S [--table T ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// These tables, with their data and what belongs to them (see `toc`), all
    /// in one schema.
    Tables {
        /// Their schema.
        schema: String,
        /// Their names.
        names: Vec<String>,
    },
    /// Every object of these schemas.
    Schemas(Vec<String>),
}

impl Part {
    /// The part `--table` and `--schema` name, if any. pg_restore intersects `--schema` with
    /// `--table`, so tables of several schemas, or tables with schemas, cannot be asked for in
    /// one run: refused rather than restoring something else than what was named.
    pub fn from_flags(tables: &[String], schemas: &[String]) -> Result<Option<Part>> {
        if tables.is_empty() {
            return Ok((!schemas.is_empty()).then(|| Part::Schemas(schemas.to_vec())));
        }
        if !schemas.is_empty() {
            return Err(Error::config(
                "--table and --schema cannot be combined: pg_restore would restore only the named tables that are in the named schemas",
            )
            .with_hint("restore the tables (--table SCHEMA.NAME) and the schemas (--schema NAME) in separate runs"));
        }
        let mut schema = None;
        let mut names = Vec::new();
        for table in tables {
            let (s, name) = table
                .split_once('.')
                .filter(|(s, n)| !s.is_empty() && !n.is_empty())
                .ok_or_else(|| {
                    Error::config(format!("--table {table:?} is not SCHEMA.NAME"))
                        .with_hint("e.g. --table public.orders")
                })?;
            match &schema {
                Some(first) if first != s => {
                    return Err(Error::config(format!(
                        "--table names tables of schemas {first:?} and {s:?}; one run restores tables of one schema"
                    ))
                    .with_hint("restore each schema's tables in a run of its own"))
                }
                _ => schema = Some(s.to_string()),
            }
            names.push(name.to_string());
        }
        Ok(schema.map(|schema| Part::Tables { schema, names }))
    }

    /// `public.orders, public.items` or `schemas audit, billing`, for the plan.
    pub fn describe(&self) -> String {
        match self {
            Part::Tables { schema, names } => names
                .iter()
                .map(|n| format!("{schema}.{n}"))
                .collect::<Vec<_>>()
                .join(", "),
            Part::Schemas(schemas) => format!("schemas {}", schemas.join(", ")),
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Part::Tables { schema, names } => std::iter::once(format!("--schema={schema}"))
                .chain(names.iter().map(|n| format!("--table={n}")))
                .collect(),
            Part::Schemas(schemas) => schemas.iter().map(|s| format!("--schema={s}")).collect(),
        }
    }
}

/// The schemas among `schemas` that the target lacks: pg_restore --schema restores the objects
/// in a schema but not the schema itself.
async fn missing_schemas(url: &SecretUrl, schemas: &[String]) -> Result<Vec<String>> {
    let conn = connect(url, ErrorKind::Sink).await?;
    let rows = conn
        .client
        .query(
            "SELECT s FROM unnest($1::text[]) s WHERE NOT EXISTS \
             (SELECT 1 FROM pg_namespace WHERE nspname = s)",
            &[&schemas],
        )
        .await
        .map_err(|e| query_error(ErrorKind::Sink, url, "inspect the target database", &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Which of `functions` (entry id, signature) the target lacks.
async fn functions_absent(
    target: &SecretUrl,
    functions: &[(u32, String)],
) -> Result<std::collections::BTreeSet<u32>> {
    if functions.is_empty() {
        return Ok(Default::default());
    }
    let conn = connect(target, ErrorKind::Sink).await?;
    let signatures: Vec<&str> = functions.iter().map(|(_, s)| s.as_str()).collect();
    let rows = conn
        .client
        .query(
            // A signature that does not even parse (a type the target lacks) is absent too.
            "SELECT s FROM unnest($1::text[]) s WHERE to_regprocedure(s) IS NULL",
            &[&signatures],
        )
        .await
        .map_err(|e| {
            query_error(
                ErrorKind::Sink,
                target,
                "look up functions in the target",
                &e,
            )
        })?;
    let lacking: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(functions
        .iter()
        .filter(|(_, s)| lacking.contains(s))
        .map(|(id, _)| *id)
        .collect())
}

/// The refusal of a `--table` the snapshot does not have.
fn no_such_tables(snapshot: &Manifest, missing: &[String]) -> Error {
    Error::new(
        ErrorKind::Refused,
        format!(
            "{} has no table {}; nothing was restored",
            super::described(snapshot),
            missing.join(", ")
        ),
    )
    .with_hint("name tables as SCHEMA.NAME, as the database spells them (pg_restore --list shows a dump's tables)")
}

/// `schema.table` as the fingerprint records it, each part quoted as PostgreSQL quotes
/// identifiers (`public.orders`, `"Sales"."Q1 ""final"""`), unquoted.
fn split_qualified(name: &str) -> Option<(String, String)> {
    let mut parts = Vec::new();
    let mut chars = name.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| *c != '.') {
                part.push(c);
                chars.next();
            }
        }
        parts.push(part);
        match chars.next() {
            Some('.') => continue,
            None => break,
            Some(_) => return None,
        }
    }
    let [schema, table]: [String; 2] = parts.try_into().ok()?;
    Some((schema, table))
}

/// `"name"`, quoted as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// How many of the part's relations (tables, views, sequences...) the target already has.
async fn existing_in_target(url: &SecretUrl, part: &Part) -> Result<i64> {
    let conn = connect(url, ErrorKind::Sink).await?;
    let (schemas, names): (Vec<String>, Option<Vec<String>>) = match part {
        Part::Tables { schema, names } => (vec![schema.clone()], Some(names.clone())),
        Part::Schemas(schemas) => (schemas.clone(), None),
    };
    let row = conn
        .client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND n.nspname = ANY($1) \
               AND ($2::text[] IS NULL OR c.relname = ANY($2))",
            &[&schemas, &names],
        )
        .await
        .map_err(|e| query_error(ErrorKind::Sink, url, "inspect the target database", &e))?;
    Ok(row.get(0))
}

/// `psql` running the SQL on its stdin in one transaction, stopping at the first error.
fn psql_from_stdin(tools: &PgTools, target: &SecretUrl) -> (PathBuf, Command) {
    let program = tools.program("psql");
    let mut cmd = Command::new(&program);
    cmd.args([
        "--single-transaction",
        "--no-psqlrc",
        "--quiet",
        "--no-password",
        "--set=ON_ERROR_STOP=1",
        "--file=-",
    ])
    .arg(format!("--dbname={}", target.without_password()));
    (program, cmd)
}

/// Starts the restoring child with its stdin open.
pub fn start_restore(
    tools: &PgTools,
    manifest: &Manifest,
    target: &SecretUrl,
    options: &PgRestoreOptions,
) -> Result<(ChildProcess, ChildStdin)> {
    let (program, mut cmd) = match manifest.dump_format.as_str() {
        "pg_custom" => {
            let program = tools.program("pg_restore");
            let mut cmd = Command::new(&program);
            cmd.args(["--single-transaction", "--exit-on-error", "--no-password"]);
            if options.clean {
                cmd.args(["--clean", "--if-exists"]);
            }
            if options.no_owner {
                cmd.arg("--no-owner");
            }
            if let Some(list) = &options.use_list {
                cmd.arg(format!("--use-list={}", list.display()));
            } else if let Some(part) = &options.part {
                cmd.args(part.args());
            }
            cmd.arg(format!("--dbname={}", target.without_password()));
            (program, cmd)
        }
        "pg_plain" => {
            if options.clean {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!("snapshot {} is a plain SQL dump, which cannot --clean a database", manifest.id),
                )
                .with_hint("restore it into a new, empty database (createdb), or back up with format = \"custom\""));
            }
            if options.no_owner {
                return Err(Error::new(
                    ErrorKind::Refused,
                    "--no-owner needs a custom-format snapshot; plain SQL has the owners written in",
                ));
            }
            if options.part.is_some() {
                return Err(Error::new(
                    ErrorKind::Refused,
                    "--table and --schema need a custom-format snapshot; plain SQL restores whole",
                ));
            }
            psql_from_stdin(tools, target)
        }
        other => {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "snapshot {} has dump format {other:?}, which this Lifeboat cannot restore",
                    manifest.id
                ),
            ))
        }
    };
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    set_password_env(&mut cmd, target);
    let mut child = ChildProcess::spawn(cmd, &program, ErrorKind::Sink, CLIENT_INSTALL_HINT)?;
    let stdin = child
        .take_stdin()
        .ok_or_else(|| Error::sink_failed(format!("{} has no stdin", program.display())))?;
    Ok((child, stdin))
}

/// Checks the structure of a raw PostgreSQL dump while it streams past.
pub enum PgStructureCheck {
    /// `pg_restore --list` reads the custom format's table of contents from its stdin.
    Custom {
        /// `pg_restore --list --verbose`, until it has exited.
        child: Option<Box<ChildProcess>>,
        /// Its stdin, until the stream ends.
        stdin: Option<ChildStdin>,
        /// What it lists: every entry with its dependencies (see `toc`).
        listing: Option<tokio::task::JoinHandle<Vec<u8>>>,
        /// The first 16 bytes, to check the `PGDMP` header.
        first: Vec<u8>,
    },
    /// A plain dump ends with pg_dump's completion comment.
    Plain {
        /// The last bytes seen.
        tail: Vec<u8>,
    },
}

const PLAIN_END_MARK: &[u8] = b"-- PostgreSQL database dump complete";

impl PgStructureCheck {
    /// Starts the check that suits the snapshot's dump format.
    pub fn start(tools: &PgTools, manifest: &Manifest) -> Result<Self> {
        match manifest.dump_format.as_str() {
            "pg_custom" => {
                let program = tools.program("pg_restore");
                let mut cmd = Command::new(&program);
                cmd.args(["--list", "--verbose"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped());
                let mut child =
                    ChildProcess::spawn(cmd, &program, ErrorKind::Sink, CLIENT_INSTALL_HINT)?;
                let stdin = child.take_stdin();
                let listing = child.take_stdout().map(|mut out| {
                    tokio::spawn(async move {
                        let mut text = Vec::new();
                        let _ = tokio::io::AsyncReadExt::read_to_end(&mut out, &mut text).await;
                        text
                    })
                });
                Ok(PgStructureCheck::Custom {
                    child: Some(Box::new(child)),
                    stdin,
                    listing,
                    first: Vec::new(),
                })
            }
            _ => Ok(PgStructureCheck::Plain { tail: Vec::new() }),
        }
    }

    /// The problems found, if any, once the whole stream went through; and for the custom
    /// format, the listing of its table of contents.
    pub async fn finish(self) -> (Vec<String>, Option<String>) {
        match self {
            PgStructureCheck::Custom {
                child,
                stdin,
                listing,
                first,
            } => {
                drop(stdin);
                let mut findings = Vec::new();
                if !first.starts_with(b"PGDMP") {
                    findings.push("the dump does not start with the PGDMP signature of pg_dump's custom format".to_string());
                }
                if let Some(child) = child {
                    if let Err(e) = child.finish().await {
                        findings.push(format!(
                            "pg_restore --list cannot read the table of contents: {}",
                            e.message()
                        ));
                    }
                }
                let listing = match listing {
                    Some(task) => task.await.ok(),
                    None => None,
                };
                (
                    findings,
                    listing.map(|l| String::from_utf8_lossy(&l).into_owned()),
                )
            }
            PgStructureCheck::Plain { tail } => {
                let text_end = tail
                    .iter()
                    .rposition(|b| !b.is_ascii_whitespace())
                    .map_or(0, |p| p + 1);
                let body = &tail[..text_end];
                if body
                    .windows(PLAIN_END_MARK.len())
                    .any(|w| w == PLAIN_END_MARK)
                {
                    (Vec::new(), None)
                } else {
                    (vec!["the SQL dump does not end with pg_dump's \"dump complete\" line: it is truncated".to_string()], None)
                }
            }
        }
    }
}

impl RawSink for PgStructureCheck {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match self {
            PgStructureCheck::Custom { stdin, first, .. } => {
                if first.len() < 16 {
                    let take = (16 - first.len()).min(chunk.len());
                    first.extend_from_slice(&chunk[..take]);
                }
                if let Some(pipe) = stdin {
                    // pg_restore --list stops reading after the table of contents; the rest
                    // of the stream is still digested by the caller.
                    if pipe.write_all(chunk).await.is_err() {
                        *stdin = None;
                    }
                }
                Ok(())
            }
            PgStructureCheck::Plain { tail } => {
                tail.extend_from_slice(chunk);
                if tail.len() > 8192 {
                    tail.drain(..tail.len() - 4096);
                }
                Ok(())
            }
        }
    }
}

/// Collects a small raw stream (a companion object) in memory.
struct Collect(Vec<u8>);

impl RawSink for Collect {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(chunk);
        Ok(())
    }
}

/// The SQL of `pg_dumpall --globals-only`, line by line, with the roles it creates.
struct Globals<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Globals<'a> {
    fn parse(text: &'a str) -> Globals<'a> {
        Globals {
            lines: text.lines().collect(),
        }
    }

    /// The role a `CREATE ROLE name;` or `ALTER ROLE name ...` line is about, unquoted.
    fn role_of(line: &str) -> Option<String> {
        let rest = line
            .strip_prefix("CREATE ROLE ")
            .or_else(|| line.strip_prefix("ALTER ROLE "))?;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = quoted.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        name.push('"');
                    }
                    '"' => return Some(name),
                    c => name.push(c),
                }
            }
            None
        } else {
            rest.split([' ', ';']).next().map(str::to_string)
        }
    }

    /// The SQL without the lines about roles in `existing`; the roles it creates, and those
    /// it leaves alone.
    fn without_roles(&self, existing: &[String]) -> (String, Vec<String>, Vec<String>) {
        let (mut text, mut created, mut skipped) = (String::new(), Vec::new(), Vec::new());
        for line in &self.lines {
            let role = Self::role_of(line);
            if let Some(role) = role.filter(|r| existing.contains(r)) {
                if line.starts_with("CREATE ROLE ") {
                    skipped.push(role);
                }
                continue;
            }
            if line.starts_with("CREATE ROLE ") {
                created.extend(Self::role_of(line));
            }
            text.push_str(line);
            text.push('\n');
        }
        (text, created, skipped)
    }
}

/// The plan's line for `--globals`.
fn globals_note(options: &RestoreOptions) -> Vec<(&'static str, String)> {
    if options.globals {
        vec![(
            "--globals",
            "the snapshot's roles (pg_dumpall --globals-only) are applied first, in a transaction of their own; roles that exist on the target are left as they are".to_string(),
        )]
    } else {
        Vec::new()
    }
}

/// The scratch database name for a drill.
pub fn scratch_database_name(manifest: &Manifest) -> String {
    let mut random = [0u8; 3];
    let _ = getrandom::fill(&mut random);
    format!(
        "lifeboat_drill_{}_{}",
        manifest.id.as_str()[..15].to_ascii_lowercase(),
        hex::encode(random)
    )
}

/// Creates a scratch database through a maintenance connection.
pub async fn create_database(server: &SecretUrl, name: &str) -> Result<()> {
    maintenance(
        server,
        &format!("CREATE DATABASE \"{name}\""),
        &format!("create the scratch database {name}"),
    )
    .await
    .map_err(|e| e.with_hint("the --scratch-url user needs the CREATEDB privilege"))
}

/// Drops a scratch database (drills), if it exists.
pub async fn drop_database(server: &SecretUrl, name: &str) -> Result<()> {
    maintenance(
        server,
        &format!("DROP DATABASE IF EXISTS \"{name}\""),
        &format!("drop the scratch database {name}"),
    )
    .await
}

/// Runs one statement that cannot run inside a transaction (CREATE/DROP DATABASE).
async fn maintenance(server: &SecretUrl, statement: &str, what: &str) -> Result<()> {
    let conn = connect(server, ErrorKind::Sink).await?;
    conn.client
        .batch_execute(statement)
        .await
        .map_err(|e| query_error(ErrorKind::Sink, server, what, &e))
}

/// The client programs in `dir`, or on the `PATH`.
pub fn tools_dir(dir: Option<&Path>) -> PgTools {
    PgTools {
        bin_dir: dir.map(Path::to_path_buf),
    }
}

/// PostgreSQL's restore side: `pg_restore` (or `psql` for plain SQL) in one transaction, fed
/// through a hold-back so that it cannot reach COMMIT before both digests match.
pub struct PgSink {
    tools: PgTools,
}

impl PgSink {
    /// A sink using the client programs in `bin_dir`, or on the `PATH`.
    pub fn new(bin_dir: Option<&Path>) -> PgSink {
        PgSink {
            tools: tools_dir(bin_dir),
        }
    }

    /// Streams a snapshot into a database in one transaction (also used by drills).
    async fn restore_into<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        manifest: &Manifest,
        target: &SecretUrl,
        options: &PgRestoreOptions,
        hold_back: usize,
    ) -> Result<Applied> {
        let (child, stdin) = start_restore(&self.tools, manifest, target, options)?;
        let mut sink = HoldBackWriter::new(stdin, hold_back);
        let read = match read_snapshot(store, manifest, keys, &mut sink).await {
            Ok(r) => r,
            Err(e) => {
                // Damaged or unreadable: kill the child before it can commit.
                drop(sink.discard());
                child.kill().await;
                return Err(e);
            }
        };
        let released = match read.sink_error {
            None => sink.release().await.map(|_| ()),
            Some(e) => {
                drop(sink.discard());
                Err(e)
            }
        };
        let child_result = child.finish().await;
        let failed = |detail: String| {
            Error::new(
                ErrorKind::Sink,
                format!(
                    "restoring snapshot {} into {target} failed: {detail}",
                    manifest.id
                ),
            )
            .with_hint(
                "the restore ran in a single transaction and was rolled back; the target is as it was",
            )
        };
        match (child_result, released) {
            (Err(e), _) => Err(failed(e.message().to_string())),
            // pg_restore stops reading once it has the part it was asked for; the snapshot's
            // digests were checked by a whole read before (see `apply`).
            (Ok(_), Err(e))
                if options.part.is_some() && e.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                Ok(Applied {
                    stored_bytes: read.stored_bytes,
                    raw_bytes: read.raw_bytes,
                    notes: Vec::new(),
                })
            }
            (Ok(_), Err(e)) => Err(failed(format!("cannot write to the restore program: {e}"))),
            (Ok(_), Ok(())) => Ok(Applied {
                stored_bytes: read.stored_bytes,
                raw_bytes: read.raw_bytes,
                notes: Vec::new(),
            }),
        }
    }

    /// Applies the snapshot's roles (`pg_dumpall --globals-only`) to the target's cluster in a
    /// transaction of their own, before the database: roles that exist there are left as they
    /// are (their CREATE and ALTER lines skipped) and reported.
    async fn apply_globals<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        target: &SecretUrl,
    ) -> Result<Vec<String>> {
        let view = snapshot.companion(GLOBALS).ok_or_else(|| {
            Error::new(
                ErrorKind::Refused,
                format!("snapshot {} has no roles stored with it", snapshot.id),
            )
        })?;
        let mut sql = Collect(Vec::new());
        read_snapshot(store, &view, keys, &mut sql).await?;
        let conn = connect(target, ErrorKind::Sink).await?;
        let existing: Vec<String> = conn
            .client
            .query("SELECT rolname::text FROM pg_roles", &[])
            .await
            .map_err(|e| query_error(ErrorKind::Sink, target, "list the target's roles", &e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let text = String::from_utf8_lossy(&sql.0);
        let (text, created, skipped) = Globals::parse(&text).without_roles(&existing);
        let (program, mut cmd) = psql_from_stdin(&self.tools, target);
        cmd.stdin(Stdio::piped()).stdout(Stdio::null());
        set_password_env(&mut cmd, target);
        let mut child = ChildProcess::spawn(cmd, &program, ErrorKind::Sink, CLIENT_INSTALL_HINT)?;
        if let Some(mut stdin) = child.take_stdin() {
            let _ = stdin.write_all(text.as_bytes()).await;
        }
        child.finish().await.map_err(|e| {
            Error::new(
                ErrorKind::Sink,
                format!("applying the roles of snapshot {} to {target} failed: {}", snapshot.id, e.message()),
            )
            .with_hint("the roles ran in one transaction and were rolled back; the database was not restored. The target's user needs CREATEROLE")
        })?;
        let mut notes = vec![format!(
            "Roles: created {}",
            if created.is_empty() {
                "none".to_string()
            } else {
                created.join(", ")
            }
        )];
        if !skipped.is_empty() {
            notes.push(format!(
                "Roles that already existed, left as they are: {}",
                skipped.join(", ")
            ));
        }
        Ok(notes)
    }

    /// `pg_restore --list` over a custom archive, or the completion line of a plain dump.
    async fn structure<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        manifest: &Manifest,
    ) -> Result<(Vec<String>, Option<String>)> {
        let mut structure = PgStructureCheck::start(&self.tools, manifest)?;
        let read = read_snapshot(store, manifest, keys, &mut structure).await;
        let checked = structure.finish().await;
        read?;
        Ok(checked)
    }
}

impl Sink for PgSink {
    fn product(&self) -> &'static str {
        "PostgreSQL"
    }

    async fn plan(
        &self,
        snapshot: &Manifest,
        to: &str,
        options: &RestoreOptions,
    ) -> Result<SinkPlan> {
        if options.mode == RestoreMode::File {
            let (what, then) = match snapshot.dump_format.as_str() {
                "pg_plain" => ("a plain SQL dump", "psql -f"),
                _ => ("a pg_dump custom archive", "pg_restore"),
            };
            return super::to_file::plan(
                snapshot,
                options,
                to,
                what,
                format!("written beside the path, synced and renamed into place only after both digests match (stored and raw); load it by hand with {then}"),
            );
        }
        super::refuse_choices(
            snapshot,
            options,
            &[
                Choice::NoOwner,
                Choice::Tables,
                Choice::Schemas,
                Choice::Globals,
            ],
        )?;
        if options.globals && !snapshot.companions.contains_key(GLOBALS) {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "{} has no roles stored with it: its job did not have globals = true",
                    super::described(snapshot)
                ),
            )
            .with_hint("drop --globals and create the roles by hand (or restore with --no-owner); set globals = true on the job for later snapshots"));
        }
        let part = Part::from_flags(&options.tables, &options.schemas)?;
        if part.is_some() && snapshot.dump_format != "pg_custom" {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "{} is a plain SQL dump, which restores whole: --table and --schema need a custom-format snapshot",
                    super::described(snapshot)
                ),
            ));
        }
        let wrong = |got: &str| {
            Error::config(format!(
                "{} is a PostgreSQL dump; --to must be postgres://user@host:port/dbname, got {got}",
                super::described(snapshot)
            ))
            .with_hint("e.g. --to postgres://user@host:5432/new_db (create it first with createdb)")
        };
        let target = SecretUrl::parse(to).map_err(|e| wrong(&format!("{to:?} ({e})")))?;
        if !matches!(target.scheme(), "postgres" | "postgresql") || target.database().is_none() {
            return Err(wrong(&target.to_string()));
        }
        if options.clean && snapshot.dump_format == "pg_plain" {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "snapshot {} is a plain SQL dump, which cannot --clean a database",
                    snapshot.id
                ),
            )
            .with_hint("restore it into a new, empty database (createdb NAME) instead"));
        }
        let mut target_state = inspect_target(&target).await?;
        if let Some(part) = &part {
            // Tables the snapshot does not have are refused here already, so a dry run says
            // what the real run would; a dump made elsewhere records no tables, and its
            // restore finds out from the archive's listing.
            if let (Part::Tables { schema, names }, Fingerprint::Postgres(recorded)) =
                (part, &snapshot.fingerprint)
            {
                let recorded: Vec<(String, String)> = recorded
                    .tables
                    .keys()
                    .filter_map(|k| split_qualified(k))
                    .collect();
                let missing: Vec<String> = names
                    .iter()
                    .filter(|n| !recorded.iter().any(|(s, t)| s == schema && t == *n))
                    .map(|n| format!("{schema}.{n}"))
                    .collect();
                if !recorded.is_empty() && !missing.is_empty() {
                    let in_schema: Vec<&str> = recorded
                        .iter()
                        .filter(|(s, _)| s == schema)
                        .map(|(_, t)| t.as_str())
                        .take(12)
                        .collect();
                    return Err(no_such_tables(snapshot, &missing).with_hint(
                        if in_schema.is_empty() {
                            format!("the snapshot has no tables in schema {schema}; name tables as SCHEMA.NAME")
                        } else {
                            format!("tables of {schema} in this snapshot: {}", in_schema.join(", "))
                        },
                    ));
                }
            }
            // A part goes into a database that may hold anything else; only the part's own
            // objects must not be there yet.
            target_state.objects = existing_in_target(&target, part).await?;
            if target_state.objects > 0 && !options.clean {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!(
                        "the target database {target} already has {} of {}",
                        crate::text::counted(target_state.objects as u64, "relation"),
                        part.describe()
                    ),
                )
                .with_hint(
                    "add --clean to drop and replace them, or restore into another database",
                ));
            }
            let mut notes = globals_note(options);
            notes.push((
                "part",
                match part {
                    Part::Tables { .. } => format!(
                        "only {} (definition, data, and what belongs to them: keys, indexes, constraints, triggers, defaults, owned sequences, comments, privileges; a foreign key to a table not restored, or a trigger whose function the target lacks, is left out and named)",
                        part.describe()
                    ),
                    Part::Schemas(_) => format!("only the objects of {}", part.describe()),
                },
            ));
            let schemas = match part {
                Part::Tables { schema, .. } => vec![schema.clone()],
                Part::Schemas(schemas) => schemas.clone(),
            };
            let missing = missing_schemas(&target, &schemas).await?;
            if !missing.is_empty() {
                notes.push((
                    "schemas",
                    format!(
                        "{} created first (owned by the restoring user), and dropped again if the restore fails",
                        missing.join(", ")
                    ),
                ));
            }
            if options.clean {
                notes.push((
                    "--clean",
                    format!(
                        "those of them in the target are dropped and replaced ({} there now)",
                        target_state.objects
                    ),
                ));
            }
            notes.push((
                "safety",
                "the whole snapshot is read and both digests (stored and raw) checked first; then one transaction restores the part".to_string(),
            ));
            return Ok(SinkPlan {
                target: Target::Url(target),
                target_state,
                notes,
            });
        }
        if target_state.objects > 0 && !options.clean {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "the target database {} is not empty: it holds {} (tables, views, sequences, functions or large objects)",
                    target,
                    crate::text::counted(target_state.objects as u64, "object")
                ),
            )
            .with_hint("restore into a new empty database (createdb NAME), or add --clean to drop and replace the objects in the dump"));
        }
        let mut notes = globals_note(options);
        if options.clean {
            notes.push((
                "--clean",
                format!(
                    "objects of the dump that exist in the target are dropped and replaced ({} objects there now)",
                    target_state.objects
                ),
            ));
        }
        notes.push((
            "safety",
            "one transaction; committed only after both digests (stored and raw) match".to_string(),
        ));
        Ok(SinkPlan {
            target: Target::Url(target),
            target_state,
            notes,
        })
    }

    async fn apply<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        plan: &SinkPlan,
        options: &RestoreOptions,
    ) -> Result<Applied> {
        let target = match &plan.target {
            Target::Path(path) => {
                return super::to_file::write_verified(store, keys, snapshot, path, options.clean)
                    .await
            }
            Target::Url(target) => target,
        };
        debug_assert_eq!(options.mode, RestoreMode::Load);
        let part = Part::from_flags(&options.tables, &options.schemas)?;
        let mut notes = Vec::new();
        let mut use_list = None;
        if part.is_some() {
            // pg_restore stops reading once it has the part, possibly before the hold-back
            // could keep COMMIT behind the digests: check the whole snapshot first.
            let (findings, listing) = self.structure(store, keys, snapshot).await?;
            if !findings.is_empty() {
                return Err(Error::integrity(format!(
                    "{} is damaged: {}",
                    super::described(snapshot),
                    findings.join("; ")
                ))
                .with_hint("the target was not touched"));
            }
            if let (Some(Part::Tables { schema, names }), Some(listing)) = (&part, listing) {
                let toc = toc::Toc::parse(&listing);
                let absent = functions_absent(target, &toc.functions()).await?;
                let selection = toc.select(schema, names, &absent);
                if !selection.missing.is_empty() {
                    return Err(no_such_tables(snapshot, &selection.missing));
                }
                if !selection.added.is_empty() {
                    notes.push(format!(
                        "with what belongs to the table{}: {}",
                        if names.len() == 1 { "" } else { "s" },
                        selection.added.join("; ")
                    ));
                }
                if !selection.left_out.is_empty() {
                    notes.push(format!(
                        "left out, as it needs a relation this restore does not include or a function the target lacks: {}",
                        selection.left_out.join("; ")
                    ));
                }
                use_list = Some(UseList::write(&selection.list)?);
            }
        }
        // pg_restore --schema restores what is in a schema, not the schema: create the missing
        // ones, and drop them again (only if still empty) when the restore fails.
        let created = match &part {
            Some(Part::Tables { schema, .. }) => {
                missing_schemas(target, std::slice::from_ref(schema)).await?
            }
            Some(Part::Schemas(schemas)) => missing_schemas(target, schemas).await?,
            None => Vec::new(),
        };
        for schema in &created {
            maintenance(
                target,
                &format!("CREATE SCHEMA {}", quoted(schema)),
                &format!("create schema {schema}"),
            )
            .await?;
        }
        if options.globals {
            notes.extend(self.apply_globals(store, keys, snapshot, target).await?);
        }
        let pg = PgRestoreOptions {
            clean: options.clean,
            no_owner: options.no_owner,
            part,
            use_list: use_list.as_ref().map(|l| l.path.clone()),
        };
        let restored = self
            .restore_into(store, keys, snapshot, target, &pg, options.hold_back)
            .await;
        if restored.is_err() {
            for schema in &created {
                let _ = maintenance(
                    target,
                    &format!("DROP SCHEMA IF EXISTS {} RESTRICT", quoted(schema)),
                    "drop the schema created for the restore",
                )
                .await;
            }
        }
        restored.map(|mut applied| {
            notes.append(&mut applied.notes);
            applied.notes = notes;
            applied
        })
    }

    async fn check<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
    ) -> Result<Vec<String>> {
        let (mut findings, listing) = self.structure(store, keys, snapshot).await?;
        // The archive's tables against the ones the fingerprint recorded at backup time.
        if let (Some(listing), Fingerprint::Postgres(recorded)) = (listing, &snapshot.fingerprint) {
            let tables: Vec<(String, String)> = recorded
                .tables
                .keys()
                .filter_map(|name| split_qualified(name))
                .collect();
            findings.extend(toc::Toc::parse(&listing).table_differences(&tables));
        }
        Ok(findings)
    }

    fn check_scratch(&self, scratch: &Scratch) -> Result<()> {
        super::scratch_url(
            scratch,
            &["postgres", "postgresql"],
            "postgres://admin@db:5432/postgres (its user needs CREATEDB)",
        )
        .map(|_| ())
    }

    /// Restores into a new database on the scratch server, compares its fingerprint with the
    /// manifest's, and drops the database.
    async fn drill<S: Store>(
        &self,
        store: &S,
        keys: &Keys,
        snapshot: &Manifest,
        scratch: &Scratch,
    ) -> Result<Drilled> {
        let scratch_url = super::scratch_url(
            scratch,
            &["postgres", "postgresql"],
            "postgres://admin@db:5432/postgres",
        )?;
        let Fingerprint::Postgres(recorded) = &snapshot.fingerprint else {
            return Err(Error::integrity(format!(
                "snapshot {} is a PostgreSQL backup without a PostgreSQL fingerprint",
                snapshot.id
            )));
        };
        let name = scratch_database_name(snapshot);
        create_database(scratch_url, &name).await?;
        let target = scratch_url.with_database(&name);
        let result = async {
            let started = Instant::now();
            let options = PgRestoreOptions {
                part: None,
                clean: false,
                // The scratch server's user is often not a superuser and not the dump's owner:
                // `ALTER ... OWNER TO` would fail the drill ("must be member of role"). Plain
                // SQL has the owners written in and cannot skip them.
                no_owner: snapshot.dump_format == "pg_custom",
                use_list: None,
            };
            self.restore_into(
                store,
                keys,
                snapshot,
                &target,
                &options,
                crate::pipeline::holdback::DEFAULT_HOLD_BACK,
            )
            .await?;
            let restore_secs = started.elapsed().as_secs_f64();
            let conn = connect(&target, ErrorKind::Sink).await?;
            let found = fingerprint(&conn.client, &target, ErrorKind::Sink).await?;
            Ok::<_, Error>(Drilled {
                findings: recorded.differences(&found),
                restore_secs: Some(restore_secs),
            })
        }
        .await;
        let dropped = drop_database(scratch_url, &name).await;
        let drilled = result?;
        if let Err(e) = dropped {
            tracing::warn!("The drill database {name} could not be dropped: {e}");
        }
        Ok(drilled)
    }

    /// A dump made elsewhere records no row counts: its structure is checked, and its
    /// fingerprint is empty (a restore does not compare one).
    async fn survey<S: Store>(&self, store: &S, snapshot: &Manifest) -> Result<Surveyed> {
        // A dump made elsewhere (`--from-file`) is never encrypted.
        let keys = &Keys::none();
        let (findings, _) = self.structure(store, keys, snapshot).await?;
        if !findings.is_empty() {
            return Err(Error::integrity(format!(
                "{} is not a sound pg_dump archive: {}",
                snapshot.source.url,
                findings.join("; ")
            )));
        }
        Ok(Surveyed {
            fingerprint: Fingerprint::Postgres(Default::default()),
            server_version: None,
        })
    }
}

#[cfg(test)]
mod globals_tests {
    use super::Globals;

    #[test]
    fn roles_that_exist_are_left_alone_and_reported() {
        let sql = "SET x = 1;\nCREATE ROLE app;\nALTER ROLE app WITH LOGIN;\nCREATE ROLE \"Odd \"\"Name\";\n\
                   ALTER ROLE \"Odd \"\"Name\" WITH NOLOGIN;\nCREATE ROLE lifeboat;\nALTER ROLE lifeboat WITH SUPERUSER;\n\
                   ALTER ROLE lifeboat SET search_path = x;\nGRANT app TO lifeboat;\n";
        let (text, created, skipped) = Globals::parse(sql).without_roles(&["lifeboat".to_string()]);
        assert_eq!(created, ["app", "Odd \"Name"]);
        assert_eq!(skipped, ["lifeboat"]);
        assert!(!text.contains("ROLE lifeboat"), "{text}");
        assert!(text.contains("GRANT app TO lifeboat;"), "{text}");
        assert!(text.contains("CREATE ROLE \"Odd \"\"Name\";"), "{text}");
    }
}

#[cfg(test)]
mod name_tests {
    use super::split_qualified;

    #[test]
    fn qualified_names_are_split_and_unquoted_as_the_fingerprint_writes_them() {
        let split = |n: &str| split_qualified(n);
        assert_eq!(
            split("public.orders"),
            Some(("public".into(), "orders".into()))
        );
        assert_eq!(
            split(r#""Sales"."Q1 ""final"".v2""#),
            Some(("Sales".into(), r#"Q1 "final".v2"#.into()))
        );
        assert_eq!(split("orders"), None);
        assert_eq!(split("a.b.c"), None);
        assert_eq!(split(r#""unterminated.x"#), None);
    }
}
