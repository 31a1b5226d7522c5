//! PostgreSQL restore: `pg_restore --single-transaction` (custom format) or
//! `psql --single-transaction -v ON_ERROR_STOP=1` (plain SQL), fed through a
//! [`HoldBackWriter`] so the child cannot reach COMMIT before both digests match.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, Command};

use crate::catalog::Manifest;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{HoldBackWriter, RawSink};
use crate::secret::SecretUrl;
use crate::source::postgres::{connect, query_error, set_password_env, CLIENT_INSTALL_HINT};
use crate::source::ChildProcess;

/// The client programs to use for restores and checks.
#[derive(Debug, Clone, Default)]
pub struct PgTools {
    pub bin_dir: Option<PathBuf>,
}

impl PgTools {
    pub fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }
}

/// What is already in a target database.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetState {
    pub server_version: String,
    /// Tables, views, sequences, functions and large objects outside the system schemas.
    pub objects: i64,
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

pub struct PgRestoreOptions {
    /// Drop objects of the dump that already exist in the target first (custom format only).
    pub clean: bool,
    /// Skip `ALTER ... OWNER TO` (when the dump's roles do not exist on the target).
    pub no_owner: bool,
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

impl RawSink for HoldBackWriter<ChildStdin> {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        HoldBackWriter::write(self, chunk).await
    }
}

/// Checks the structure of a raw PostgreSQL dump while it streams past.
pub enum PgStructureCheck {
    /// `pg_restore --list` reads the custom format's table of contents from its stdin.
    Custom {
        child: Option<Box<ChildProcess>>,
        stdin: Option<ChildStdin>,
        first: Vec<u8>,
    },
    /// A plain dump ends with pg_dump's completion comment.
    Plain { tail: Vec<u8> },
}

const PLAIN_END_MARK: &[u8] = b"-- PostgreSQL database dump complete";

impl PgStructureCheck {
    pub fn start(tools: &PgTools, manifest: &Manifest) -> Result<Self> {
        match manifest.dump_format.as_str() {
            "pg_custom" => {
                let program = tools.program("pg_restore");
                let mut cmd = Command::new(&program);
                cmd.arg("--list")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null());
                let mut child =
                    ChildProcess::spawn(cmd, &program, ErrorKind::Sink, CLIENT_INSTALL_HINT)?;
                let stdin = child.take_stdin();
                Ok(PgStructureCheck::Custom {
                    child: Some(Box::new(child)),
                    stdin,
                    first: Vec::new(),
                })
            }
            _ => Ok(PgStructureCheck::Plain { tail: Vec::new() }),
        }
    }

    /// The problems found, if any, once the whole stream went through.
    pub async fn finish(self) -> Vec<String> {
        match self {
            PgStructureCheck::Custom {
                child,
                stdin,
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
                findings
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
                    Vec::new()
                } else {
                    vec!["the SQL dump does not end with pg_dump's \"dump complete\" line: it is truncated".to_string()]
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

pub fn tools_dir(dir: Option<&Path>) -> PgTools {
    PgTools {
        bin_dir: dir.map(Path::to_path_buf),
    }
}
