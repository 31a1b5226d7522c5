//! PostgreSQL: `pg_dump` of an exported snapshot, and the fingerprint of that same snapshot.
//!
//! A REPEATABLE READ transaction exports its snapshot (`pg_export_snapshot()`), `pg_dump
//! --snapshot` dumps exactly that snapshot, and the fingerprint (exact row counts, index and
//! constraint names) is taken inside the exporting transaction while pg_dump runs, so the
//! fingerprint describes exactly the data dumped. The transaction stays open until pg_dump ends.

use std::process::Stdio;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::process::Command;
use tokio_postgres::Client;

use crate::catalog::{Fingerprint, PgFingerprint, SourceInfo};
use crate::child::{ChildProcess, DumpPipe};
use crate::client::postgres::{
    check_client_version, client_version, connect, fingerprint, set_password_env, timed, where_,
    CLIENT_INSTALL_HINT, LOCK_TIMEOUT_MS,
};
use crate::config::{PgFormat, PgJob};
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretUrl;

/// A dump in progress: pg_dump's stream, plus the open snapshot transaction.
struct PgDump {
    pub child: ChildProcess,
    /// pg_dump's stdout, until the capture takes it.
    stdout: Option<DumpPipe>,
    pub consistent_at: DateTime<Utc>,
    /// The server's clock at `consistent_at`, when it differs from this host's.
    pub server_clock_at: Option<DateTime<Utc>>,
    /// `pg_database_size`: what the dump will be at most, about.
    database_size: Option<u64>,
    pub server_version: String,
    pub dump_tool: String,
    pub database: String,
    client: Arc<Client>,
    url: SecretUrl,
    /// `pg_dumpall --globals-only` output, with `globals = true`.
    globals: Option<Vec<u8>>,
}

pub use crate::catalog::GLOBALS;

/// Pre-flight checks, snapshot export and pg_dump start.
async fn start_dump(job: &PgJob) -> Result<PgDump> {
    let conn = connect(&job.url, ErrorKind::Source).await?;
    let pg_dump = job.program("pg_dump");
    let (dump_tool, client_major) = client_version(&pg_dump, ErrorKind::Source).await?;
    check_client_version(
        "pg_dump",
        &dump_tool,
        client_major,
        &conn.server_version,
        conn.server_major,
    )?;

    let client = conn.client;
    // Sizes the upload's parts on a first run; a database the user may not size is no reason
    // to fail (asked before the snapshot transaction, which an error would abort).
    let database_size = crate::net::within_idle_timeout(
        client.query_one("SELECT pg_database_size(current_database())", &[]),
    )
    .await
    .ok()
    .and_then(|r| r.ok())
    .and_then(|row| row.try_get::<_, i64>(0).ok())
    .and_then(|n| u64::try_from(n).ok());
    timed(
        ErrorKind::Source,
        &job.url,
        "start the snapshot transaction",
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
    )
    .await?;
    // The snapshot is taken by this first statement. `consistent_at` is read from this host's
    // clock, which also dates snapshot ids and is what retention and `--at` compare with; the
    // server's clock_timestamp() is kept beside it when the two disagree.
    let row = timed(
        ErrorKind::Source,
        &job.url,
        "export a snapshot",
        client.query_one(
            "SELECT pg_export_snapshot(), (extract(epoch from clock_timestamp()) * 1000000)::int8",
            &[],
        ),
    )
    .await?;
    let snapshot: String = row.get(0);
    let micros: i64 = row.get(1);
    let consistent_at = Utc::now();
    let server_clock_at = DateTime::from_timestamp_micros(micros)
        .filter(|server| (*server - consistent_at).abs() > crate::catalog::CLOCK_SKEW_RECORDED);
    if let Some(server) = server_clock_at {
        tracing::warn!(
            "The clock of {} reads {}, this host's {}: the snapshot is dated by this host's clock and records both.",
            job.url,
            server.to_rfc3339(),
            consistent_at.to_rfc3339()
        );
    }
    // The row counts run while pg_dump streams, so they share the server's cores with the dump:
    // parallel workers would only take CPU from it (and add coordination work).
    timed(
        ErrorKind::Source,
        &job.url,
        "set up the snapshot transaction",
        client.batch_execute("SET LOCAL max_parallel_workers_per_gather = 0"),
    )
    .await?;

    // Roles are taken before the dump starts: the snapshot's objects name owners that existed
    // then (a role created during the dump owns nothing in it).
    let globals = if job.globals {
        Some(dump_globals(job).await?)
    } else {
        None
    };
    let mut cmd = Command::new(&pg_dump);
    cmd.arg(format!("--snapshot={snapshot}"))
        .arg("--no-password")
        // pg_dump waits for a lock on every table it dumps: a table held exclusively by another
        // session fails the dump after this long instead of stalling it.
        .arg(format!("--lock-wait-timeout={LOCK_TIMEOUT_MS}"));
    match job.format {
        PgFormat::Custom => cmd.args(["--format=custom", "--compress=0"]),
        PgFormat::Plain => cmd.arg("--format=plain"),
    };
    cmd.arg(format!("--dbname={}", job.url.without_password()))
        .stdin(Stdio::null());
    set_password_env(&mut cmd, &job.url);
    let (child, stdout) =
        ChildProcess::spawn_dumping(cmd, &pg_dump, ErrorKind::Source, CLIENT_INSTALL_HINT)?;
    Ok(PgDump {
        child,
        stdout: Some(stdout),
        consistent_at,
        server_clock_at,
        database_size,
        server_version: conn.server_version,
        dump_tool,
        database: job.url.database().unwrap_or_default(),
        client: Arc::new(client),
        url: job.url.clone(),
        globals,
    })
}

/// `pg_dumpall --globals-only --no-role-passwords`: the cluster's roles, their settings and
/// memberships (and tablespaces), without password hashes, which only a superuser may read
/// and which a backup should not carry.
async fn dump_globals(job: &PgJob) -> Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let program = job.program("pg_dumpall");
    let mut cmd = Command::new(&program);
    cmd.args(["--globals-only", "--no-role-passwords", "--no-password"])
        .arg(format!("--dbname={}", job.url.without_password()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    set_password_env(&mut cmd, &job.url);
    let mut child = ChildProcess::spawn(cmd, &program, ErrorKind::Source, CLIENT_INSTALL_HINT)?;
    let mut bytes = Vec::new();
    if let Some(mut stdout) = child.take_stdout() {
        crate::net::within_idle_timeout(stdout.read_to_end(&mut bytes))
            .await
            .and_then(|read| read)
            .map_err(|e| Error::source_failed(format!("reading pg_dumpall's output: {e}")))?;
    }
    child.finish().await.map_err(|e| {
        Error::new(
            ErrorKind::Source,
            format!(
                "the globals of {} (globals = true) could not be dumped: {}",
                where_(&job.url),
                e.message()
            ),
        )
        .with_hint("pg_dumpall must be installed beside pg_dump; or set globals = false")
    })?;
    Ok(bytes)
}

impl crate::source::Source for PgJob {
    /// Exports a snapshot, starts pg_dump on it and, beside the stream, the fingerprint in the
    /// same snapshot.
    async fn start(&self) -> Result<crate::source::Capture> {
        let mut dump = start_dump(self).await?;
        let stdout = dump
            .stdout
            .take()
            .ok_or_else(|| Error::source_failed("pg_dump has no stdout"))?;
        let (client, url) = (dump.client.clone(), dump.url.clone());
        // The row counts run while pg_dump streams, inside the same exported snapshot.
        let counts =
            tokio::spawn(async move { fingerprint(&client, &url, ErrorKind::Source).await });
        let (dump_format, extension) = match self.format {
            PgFormat::Custom => ("pg_custom", "pgdump"),
            PgFormat::Plain => ("pg_plain", "sql"),
        };
        Ok(crate::source::Capture {
            stream: Box::new(stdout),
            info: crate::source::CaptureInfo {
                engine: "postgres",
                consistent_at: dump.consistent_at,
                dump_format,
                extension,
                description: self.url.to_string(),
                size_estimate: dump.database_size,
            },
            end: Box::new(PgEnd { dump, counts }),
        })
    }
}

/// The end of a pg_dump capture: its exit status, then the row counts taken beside it.
pub struct PgEnd {
    dump: PgDump,
    counts: tokio::task::JoinHandle<Result<PgFingerprint>>,
}

impl crate::source::CaptureEnd for PgEnd {
    fn finish(
        self: Box<Self>,
    ) -> crate::source::BoxFuture<'static, Result<crate::source::Finished>> {
        Box::pin(self.finish_dump())
    }

    fn abort(self: Box<Self>) -> crate::source::BoxFuture<'static, ()> {
        Box::pin(self.stop())
    }
}

impl PgEnd {
    /// Waits for pg_dump to exit successfully and for the fingerprint, then ends the snapshot
    /// transaction (after the counts: they run inside it).
    async fn finish_dump(self) -> Result<crate::source::Finished> {
        let PgEnd { dump, counts } = self;
        let source = SourceInfo {
            url: dump.url.to_string(),
            server_version: dump.server_version.clone(),
            databases: vec![dump.database.clone()],
            dump_tool: dump.dump_tool.clone(),
            server_clock_at: dump.server_clock_at,
        };
        if let Err(e) = dump.child.finish().await {
            counts.abort();
            let _ = crate::net::within_idle_timeout(dump.client.batch_execute("ROLLBACK")).await;
            let msg = format!("the dump of {} failed: {}", where_(&dump.url), e.message());
            return Err(Error::new(ErrorKind::Source, msg)
                .with_hint("nothing was committed; fix the cause above and run the backup again"));
        }
        let counted = counts
            .await
            .map_err(|e| Error::source_failed(format!("the row counts stopped: {e}")))?;
        let _ = crate::net::within_idle_timeout(dump.client.batch_execute("COMMIT")).await;
        let mut finished = crate::source::Finished::new(Fingerprint::Postgres(counted?), source);
        if let Some(bytes) = dump.globals {
            finished.companions.push(crate::source::Companion {
                name: GLOBALS,
                extension: "sql",
                bytes,
            });
        }
        Ok(finished)
    }

    /// Stops pg_dump and the counts (after a failure elsewhere) and ends the transaction.
    async fn stop(self) {
        self.counts.abort();
        self.dump.child.kill().await;
        let _ = crate::net::within_idle_timeout(self.dump.client.batch_execute("ROLLBACK")).await;
    }
}
