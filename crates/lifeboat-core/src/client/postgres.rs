//! PostgreSQL connections shared by the source, the restore target and the drill's scratch
//! server: connect (with TLS as the URL asks, see [`super::pg_tls`]), Lifeboat's own requests
//! under the idle timeout, the client programs' versions, and the fingerprint of a database.

use std::path::Path;

use tokio::process::Command;
use tokio_postgres::{Client, NoTls};

use crate::catalog::PgFingerprint;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretUrl;

/// Lifeboat's own queries wait at most this long for a lock.
pub(crate) const LOCK_TIMEOUT_MS: u64 = 60_000;
/// And run at most this long (the row counts of the largest tables included).
const STATEMENT_TIMEOUT_MS: u64 = 6 * 3600 * 1000;

/// Why a connection could not be made.
enum Failed {
    Io(std::io::Error),
    Pg(tokio_postgres::Error),
}

/// What to do when `pg_dump`, `pg_restore` or `psql` cannot be run.
pub const CLIENT_INSTALL_HINT: &str = "install the PostgreSQL client programs (Debian/Ubuntu: \
     apt-get install postgresql-client; use the server's major version or newer), or point \
     pg-bin-dir / --pg-bin-dir at the directory that holds them";

/// An open connection plus facts about the server.
pub struct PgConnection {
    /// The connection.
    pub client: Client,
    /// e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    /// The major version (15, 16...).
    pub server_major: u32,
}

/// What to call the connection in messages: "source" or "target".
pub(crate) fn where_(url: &SecretUrl) -> String {
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
    let tls = crate::client::pg_tls::PgTls::from_url(url).map_err(|e| e.within(where_(url)))?;
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

/// An error for a failed request: what was being done, where (no password), and the
/// server's message.
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
        .map_err(|e| crate::child::cannot_run(program, &e, kind, CLIENT_INSTALL_HINT))?;
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

/// Hands the password to a libpq child through its environment, never its arguments.
pub fn set_password_env(cmd: &mut Command, url: &SecretUrl) {
    cmd.env_remove("PGPASSWORD");
    if let Some(pw) = url.password() {
        cmd.env("PGPASSWORD", pw.expose());
    }
    // A password prompt would hang a cron job; --no-password makes libpq fail instead.
    cmd.env("PGCONNECT_TIMEOUT", "30");
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
