//! The TLS-only PostgreSQL cluster of `scripts/services.sh` (`ssl = on`, only `hostssl` lines,
//! a private CA whose certificate names `localhost` only): URLs, and databases on it. Being a
//! second cluster, it is also where tests restore cluster-wide objects (roles) that the first
//! cluster has.

use crate::sql;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the TLS PostgreSQL is not running.\n\
             Start it with: eval \"$(scripts/services.sh start)\" (or run scripts/test.sh)"
        )
    })
}

pub fn certs(file: &str) -> String {
    format!("{}/{file}", env("LIFEBOAT_TEST_PG_TLS_CERTS"))
}

/// The TLS server's URL for `db` (password in the URL), with `query` appended.
pub fn tls_url(host: &str, db: &str, query: &str) -> String {
    let base = env("LIFEBOAT_TEST_PG_TLS_URL").replace("@localhost:", &format!("@{host}:"));
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap().to_string();
    format!("{base}/{db}?{query}")
}

pub fn verify_full(db: &str) -> String {
    tls_url(
        "localhost",
        db,
        &format!("sslmode=verify-full&sslrootcert={}", certs("ca.crt")),
    )
}

/// The same server through its Unix socket (trusted, no TLS), for the tests' own SQL.
pub fn socket_url(db: &str) -> String {
    let dir = env("LIFEBOAT_TEST_PG_TLS_SOCKET_DIR").replace('/', "%2F");
    let port = env("LIFEBOAT_TEST_PG_TLS_URL")
        .rsplit_once(':')
        .and_then(|(_, p)| p.split('/').next().map(str::to_string))
        .unwrap();
    format!("postgresql://lifeboat@{dir}:{port}/{db}")
}

pub struct TlsDb(pub String);

impl TlsDb {
    pub fn create(label: &str) -> TlsDb {
        let name = format!("lbt_tls_{label}_{}", std::process::id());
        sql(
            &socket_url("postgres"),
            &format!("DROP DATABASE IF EXISTS {name}"),
        );
        sql(&socket_url("postgres"), &format!("CREATE DATABASE {name}"));
        TlsDb(name)
    }
}

impl Drop for TlsDb {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            sql(
                &socket_url("postgres"),
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0),
            )
        });
    }
}
