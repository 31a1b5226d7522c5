//! PostgreSQL: `pg_dump` of an exported snapshot, and the fingerprint of that same snapshot.
//!
//! A REPEATABLE READ transaction exports its snapshot (`pg_export_snapshot()`), `pg_dump
//! --snapshot` dumps exactly that snapshot, and the fingerprint (exact row counts, index and
//! constraint names) is taken inside the exporting transaction while pg_dump runs, so the
//! fingerprint describes exactly the data dumped. The transaction stays open until pg_dump ends.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::process::Command;
use tokio_postgres::{Client, NoTls};

use super::ChildProcess;
use crate::catalog::{Fingerprint, PgFingerprint, SourceInfo};
use crate::config::{PgFormat, PgJob};
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretUrl;

/// Lifeboat's own queries wait at most this long for a lock.
const LOCK_TIMEOUT_MS: u64 = 60_000;
/// And run at most this long (the row counts of the largest tables included).
const STATEMENT_TIMEOUT_MS: u64 = 6 * 3600 * 1000;

/// Why a connection could not be made.
enum Failed {
    Io(std::io::Error),
    Pg(tokio_postgres::Error),
}

pub const CLIENT_INSTALL_HINT: &str = "install the PostgreSQL client programs (Debian/Ubuntu: \
     apt-get install postgresql-client; use the server's major version or newer), or point \
     pg-bin-dir / --pg-bin-dir at the directory that holds them";

/// An open connection plus facts about the server.
pub struct PgConnection {
    pub client: Client,
    /// e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    pub server_major: u32,
}

/// What to call the connection in messages: "source" or "target".
fn where_(url: &SecretUrl) -> String {
    format!(
        "PostgreSQL at {}:{} (database {:?}, user {:?})",
        url.host().unwrap_or_else(|| "localhost".into()),
        url.port().unwrap_or(5432),
        url.database().unwrap_or_default(),
        url.username()
    )
}

/// Connects with tokio-postgres. The password is given to the driver only; messages name the
/// host, port, database and user.
pub async fn connect(url: &SecretUrl, kind: ErrorKind) -> Result<PgConnection> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(url.host().unwrap_or_else(|| "localhost".into()))
        .port(url.port().unwrap_or(5432))
        .user(url.username())
        .dbname(url.database().unwrap_or_default())
        .application_name("lifeboat")
        .connect_timeout(crate::net::connect_timeout())
        // Lifeboat's own queries: a lock another session holds fails them after a minute
        // instead of queueing behind it (and everything behind them), and a statement that runs
        // for hours is cut.
        .options(format!(
            "-c lock_timeout={LOCK_TIMEOUT_MS} -c statement_timeout={STATEMENT_TIMEOUT_MS}"
        ));
    if let Some(pw) = url.password() {
        config.password(pw.expose());
    }
    let tls = crate::client::pg_tls::PgTls::from_url(url).map_err(|e| {
        Error::config(format!("{}: {}", where_(url), e.message()))
            .with_hint(e.hint().unwrap_or_default().to_string())
    })?;
    config.ssl_mode(tls.postgres_mode());
    let mut make_tls = tls.connector()?;
    let host = url.host().unwrap_or_else(|| "localhost".into());
    let connected = async {
        if host.starts_with('/') {
            // A Unix socket: the server is on this machine.
            let (client, connection) = config.connect(NoTls).await.map_err(Failed::Pg)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            return Ok(client);
        }
        let tcp = crate::net::connect_tcp_plain(&host, url.port().unwrap_or(5432))
            .await
            .map_err(Failed::Io)?;
        let connector =
            tokio_postgres::tls::MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(
                &mut make_tls,
                &host,
            )
            .map_err(|e| Failed::Io(std::io::Error::other(e)))?;
        let (client, connection) = config
            .connect_raw(tcp, connector)
            .await
            .map_err(Failed::Pg)?;
        tokio::spawn(async move {
            // The connection ends when the client is dropped; errors surface on queries.
            let _ = connection.await;
        });
        Ok(client)
    };
    let client = crate::net::within_connect_timeout(connected)
        .await
        .map_err(Failed::Io)
        .and_then(|r| r)
        .map_err(|failed| {
            let e = match failed {
                Failed::Io(e) => {
                    return Error::new(kind, format!("cannot connect to {}: {e}", where_(url)))
                        .with_hint("check that the server is running and reachable (host, port, firewall)")
                }
                Failed::Pg(e) => e,
            };
            if let Some((what, hint)) = tls.explain(&host, &e) {
                return Error::new(kind, format!("cannot connect to {}: {what}", where_(url)))
                    .with_hint(hint);
            }
            if e
                .as_db_error()
                .is_some_and(|db| db.message().contains("no encryption"))
            {
                return Error::new(
                    kind,
                    format!(
                        "cannot connect to {}: the server accepts only TLS connections, and this URL has sslmode={}",
                        where_(url),
                        if tls.mode() == crate::client::pg_tls::SslMode::Disable { "disable" } else { "prefer" }
                    ),
                )
                .with_hint("use sslmode=verify-full with sslrootcert=CA.pem (or sslmode=require on a network you trust)");
            }
            let detail = e
                .as_db_error()
                .map_or_else(|| describe_pg_error(&e), |db| db.message().to_string());
            let missing_db = e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME);
            let hint = match (missing_db, kind) {
                (true, ErrorKind::Source) => format!(
                    "there is no database {:?} on this server: check the name in the URL (psql -l lists them)",
                    url.database().unwrap_or_default()
                ),
                (true, _) => format!(
                    "create the database first (createdb -h HOST -U USER {}), or fix the name in the URL",
                    url.database().unwrap_or_default()
                ),
                (false, _) => "check that the server is running and reachable, and that the user and password in the URL are right"
                    .to_string(),
            };
            Error::new(kind, format!("cannot connect to {}: {detail}", where_(url))).with_hint(hint)
        })?;
    let row = timed(
        kind,
        url,
        "read the server version",
        client.query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4",
            &[],
        ),
    )
    .await?;
    let server_version: String = row.get(0);
    let num: i32 = row.get(1);
    Ok(PgConnection {
        client,
        server_version,
        server_major: (num / 10_000) as u32,
    })
}

fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub fn query_error(
    kind: ErrorKind,
    url: &SecretUrl,
    what: &str,
    e: &tokio_postgres::Error,
) -> Error {
    let detail = e
        .as_db_error()
        .map_or_else(|| describe_pg_error(e), |db| db.message().to_string());
    Error::new(kind, format!("cannot {what} on {}: {detail}", where_(url)))
}

/// Runs one of Lifeboat's own requests with the idle timeout: a server that stops answering
/// fails the run instead of hanging it.
pub async fn timed<T>(
    kind: ErrorKind,
    url: &SecretUrl,
    what: &str,
    request: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    match crate::net::within_idle_timeout(request).await {
        Ok(done) => done.map_err(|e| query_error(kind, url, what, &e)),
        Err(silent) => Err(Error::new(
            kind,
            format!("cannot {what} on {}: {silent}", where_(url)),
        )
        .with_hint("the server accepted the connection but stopped answering; check its health and load")),
    }
}

/// The version of a PostgreSQL client program, e.g. `("pg_dump (PostgreSQL) 15.18", 15)`.
pub async fn client_version(program: &Path, kind: ErrorKind) -> Result<(String, u32)> {
    let output = Command::new(program)
        .arg("--version")
        .output()
        .await
        .map_err(|e| {
            Error::new(kind, format!("cannot run {}: {e}", program.display()))
                .with_hint(CLIENT_INSTALL_HINT)
        })?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let major = parse_client_major(&text).ok_or_else(|| {
        Error::new(
            kind,
            format!(
                "cannot tell the version of {} from {text:?}",
                program.display()
            ),
        )
    })?;
    Ok((text, major))
}

/// `pg_dump (PostgreSQL) 15.18 (Debian ...)` -> 15; `pg_dump (PostgreSQL) 9.6.24` -> 9.
fn parse_client_major(text: &str) -> Option<u32> {
    let after = text.split(") ").nth(1)?;
    let version = after.split_whitespace().next()?;
    version.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

/// Refuses a client program older than the server (pg_dump cannot dump newer servers).
pub fn check_client_version(
    program: &str,
    client: &str,
    client_major: u32,
    server: &str,
    server_major: u32,
) -> Result<()> {
    if client_major >= server_major {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Source,
        format!(
            "{program} is version {client_major} ({client}) but the server runs PostgreSQL {server_major} ({server}); \
             {program} must be at least the server's major version"
        ),
    )
    .with_hint(format!(
        "install postgresql-client-{server_major} (or newer) and point pg-bin-dir / --pg-bin-dir at its bin directory, \
         e.g. /usr/lib/postgresql/{server_major}/bin"
    )))
}

/// A dump in progress: pg_dump's stream, plus the open snapshot transaction.
struct PgDump {
    pub child: ChildProcess,
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
}

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
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    set_password_env(&mut cmd, &job.url);
    let child = ChildProcess::spawn(cmd, &pg_dump, ErrorKind::Source, CLIENT_INSTALL_HINT)?;
    Ok(PgDump {
        child,
        consistent_at,
        server_clock_at,
        database_size,
        server_version: conn.server_version,
        dump_tool,
        database: job.url.database().unwrap_or_default(),
        client: Arc::new(client),
        url: job.url.clone(),
    })
}

/// Hands the password to a libpq child through its environment, never its arguments.
pub fn set_password_env(cmd: &mut Command, url: &SecretUrl) {
    cmd.env_remove("PGPASSWORD");
    if let Some(pw) = url.password() {
        cmd.env("PGPASSWORD", pw.expose());
    }
    // A password prompt would hang a cron job; --no-password makes libpq fail instead.
    cmd.env("PGCONNECT_TIMEOUT", "30");
}

impl crate::source::Source for PgJob {
    /// Exports a snapshot, starts pg_dump on it and, beside the stream, the fingerprint in the
    /// same snapshot.
    async fn start(&self) -> Result<crate::source::Capture> {
        let mut dump = start_dump(self).await?;
        let stdout = dump
            .child
            .take_stdout()
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
    ) -> crate::source::BoxFuture<'static, Result<(Fingerprint, SourceInfo)>> {
        Box::pin(self.finish_dump())
    }

    fn abort(self: Box<Self>) -> crate::source::BoxFuture<'static, ()> {
        Box::pin(self.stop())
    }
}

impl PgEnd {
    /// Waits for pg_dump to exit successfully and for the fingerprint, then ends the snapshot
    /// transaction (after the counts: they run inside it).
    async fn finish_dump(self) -> Result<(Fingerprint, SourceInfo)> {
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
        Ok((Fingerprint::Postgres(counted?), source))
    }

    /// Stops pg_dump and the counts (after a failure elsewhere) and ends the transaction.
    async fn stop(self) {
        self.counts.abort();
        self.dump.child.kill().await;
        let _ = crate::net::within_idle_timeout(self.dump.client.batch_execute("ROLLBACK")).await;
    }
}

const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'";

/// Exact row counts per table, index and constraint names, and the number of large objects.
/// Objects that belong to extensions are left out: pg_dump does not dump them either.
pub async fn fingerprint(
    client: &Client,
    url: &SecretUrl,
    kind: ErrorKind,
) -> Result<PgFingerprint> {
    let err = |what: &str, e: tokio_postgres::Error| query_error(kind, url, what, &e);
    let not_extension = |class: &str, oid: &str| {
        format!(
            "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{class}'::regclass \
             AND d.objid = {oid} AND d.deptype = 'e')"
        )
    };
    let tables = client
        .query(
            &format!(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'm') AND c.relispopulated AND {USER_SCHEMAS} AND {} \
                 ORDER BY 1",
                not_extension("pg_class", "c.oid")
            ),
            &[],
        )
        .await
        .map_err(|e| err("list tables", e))?;
    let mut fp = PgFingerprint::default();
    for row in tables {
        let name: String = row.get(0);
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await
            .map_err(|e| err(&format!("count the rows of {name}"), e))?
            .get(0);
        fp.tables.insert(name, count);
    }
    fp.indexes = client
        .query(
            &format!(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {USER_SCHEMAS} AND {} ORDER BY 1",
                not_extension("pg_class", "i.indrelid")
            ),
            &[],
        )
        .await
        .map_err(|e| err("list indexes", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    fp.constraints = client
        .query(
            &format!(
                "SELECT format('%I.%I.%I', n.nspname, \
                   coalesce((SELECT relname FROM pg_class WHERE oid = c.conrelid), \
                            (SELECT typname FROM pg_type WHERE oid = c.contypid)), c.conname) \
                 FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
                 WHERE {USER_SCHEMAS} AND {} AND (c.conrelid = 0 OR {}) ORDER BY 1",
                not_extension("pg_constraint", "c.oid"),
                not_extension("pg_class", "c.conrelid")
            ),
            &[],
        )
        .await
        .map_err(|e| err("list constraints", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    fp.large_objects = client
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(|e| err("count large objects", e))?
        .get(0);
    Ok(fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_versions_parse() {
        assert_eq!(
            parse_client_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_client_major("pg_dump (PostgreSQL) 17.2"), Some(17));
        assert_eq!(parse_client_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(
            parse_client_major("pg_restore (PostgreSQL) 18beta1"),
            Some(18)
        );
        assert_eq!(parse_client_major("something else"), None);
    }

    #[test]
    fn an_older_pg_dump_is_refused_naming_both_versions() {
        let e = check_client_version("pg_dump", "pg_dump (PostgreSQL) 15.18", 15, "17.2", 17)
            .unwrap_err();
        assert!(e.message().contains("version 15"), "{}", e.message());
        assert!(e.message().contains("PostgreSQL 17"), "{}", e.message());
        assert!(e.hint().unwrap().contains("postgresql-client-17"));
        assert!(check_client_version("pg_dump", "x", 17, "15.1", 15).is_ok());
    }
}
