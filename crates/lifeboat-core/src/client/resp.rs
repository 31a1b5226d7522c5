//! A minimal Redis connection (RESP2 over TCP, or TLS for `rediss://`), shared by the Redis
//! source (which then switches the connection to a replication stream) and the Redis sink
//! (pipelined RESTOREs).
//!
//! TLS verifies the server against the system's roots, or against the CA certificates in the
//! PEM file named by the URL's `ca` parameter (`rediss://host:6380?ca=/etc/ssl/redis-ca.pem`),
//! for servers with a private CA. There is no switch to skip verification.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio_rustls::rustls;

use crate::error::{Error, ErrorKind, Result};
use crate::net::TimedTcp;
use crate::secret::SecretUrl;

/// A plain or TLS connection.
pub enum RedisIo {
    /// Plain TCP.
    Plain(TimedTcp),
    /// TLS (`rediss://`).
    Tls(Box<tokio_rustls::client::TlsStream<TimedTcp>>),
}

impl AsyncRead for RedisIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            RedisIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            RedisIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RedisIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            RedisIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            RedisIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            RedisIo::Plain(s) => Pin::new(s).poll_flush(cx),
            RedisIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            RedisIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            RedisIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS settings for a `rediss://` URL.
fn tls_config(url: &SecretUrl, kind: ErrorKind) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = url
        .query_pairs()
        .into_iter()
        .find(|(k, _)| k == "ca")
        .map(|(_, v)| v);
    match &ca {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| {
                    Error::config(format!("cannot read the CA certificates in {path}: {e}"))
                        .with_hint("ca= must name a PEM file of CA certificates")
                })?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    Error::config(format!("{path} holds a certificate rustls rejects: {e}"))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(Error::new(
                    kind,
                    "no system CA certificates found to verify the Redis server",
                )
                .with_hint("install ca-certificates, or name the server's CA: rediss://host:port?ca=/path/ca.pem"));
            }
        }
    }
    crate::net::tls_provider();
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A connection to a Redis server with the idle-read timeout on every read.
pub struct Connection {
    pub(crate) io: BufReader<RedisIo>,
    pub(crate) url: SecretUrl,
    /// Source (a backup's server) or Sink (a restore target): decides the exit code.
    kind: ErrorKind,
    /// `redis_version` from INFO.
    pub server_version: String,
}

/// A reply: `Ok` with the text of a status, integer or bulk string; `Err` with an error reply.
pub type Reply = std::result::Result<Vec<u8>, String>;

impl Connection {
    /// The databases that hold keys (`INFO keyspace`).
    pub async fn databases_with_keys(&mut self) -> Result<Vec<u64>> {
        let info = match self.command(&[b"INFO", b"keyspace"]).await? {
            Ok(text) => String::from_utf8_lossy(&text).into_owned(),
            Err(e) => return Err(self.error(format!("INFO keyspace failed: {e}"))),
        };
        Ok(info
            .lines()
            .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
            .collect())
    }

    /// `DEBUG DIGEST`: 40 hex digits over every key, value and expiry of every database.
    pub async fn debug_digest(&mut self) -> Result<String> {
        match self.command(&[b"DEBUG", b"DIGEST"]).await? {
            Ok(d) => Ok(String::from_utf8_lossy(&d).into_owned()),
            Err(e) => Err(self.error(format!("DEBUG DIGEST failed: {e}"))),
        }
    }

    /// About how many bytes the server's data takes (`INFO memory`: `used_memory_dataset`, else
    /// `used_memory`), for a capture's progress total; `None` when the server does not say.
    pub async fn dataset_bytes(&mut self) -> Option<u64> {
        let info = self.command(&[b"INFO", b"memory"]).await.ok()?.ok()?;
        let info = String::from_utf8_lossy(&info);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
        };
        field("used_memory_dataset").or_else(|| field("used_memory"))
    }

    /// Connects to `redis://[user:password@]host[:port]`, authenticates, reads the version.
    pub async fn open(url: &SecretUrl, kind: ErrorKind) -> Result<Connection> {
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(Error::config(format!(
                    "{} is not a redis:// or rediss:// URL ({other}://)",
                    url.without_password()
                )))
            }
        };
        let host = url.host().unwrap_or_else(|| "127.0.0.1".into());
        let port = url.port().unwrap_or(6379);
        let tcp = crate::net::connect_tcp(&host, port).await.map_err(|e| {
            Error::new(
                kind,
                format!("Redis at {}: cannot connect: {e}", url.without_password()),
            )
            .with_hint("check the host and port, and that the server is running")
        })?;
        let io = if tls {
            let config = tls_config(url, kind)?;
            let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                Error::config(format!("{host:?} is not a valid TLS server name: {e}"))
            })?;
            let handshake = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
            let stream = crate::net::within_connect_timeout(handshake)
                .await
                .and_then(|r| r)
                .map_err(|e| {
                    Error::new(
                        kind,
                        format!(
                            "Redis at {}: the TLS handshake failed: {e}",
                            url.without_password()
                        ),
                    )
                    .with_hint("check that the server speaks TLS on this port and that its certificate is signed by the CA given (?ca=PATH) or a system CA")
                })?;
            RedisIo::Tls(Box::new(stream))
        } else {
            RedisIo::Plain(tcp)
        };
        let mut conn = Connection {
            io: BufReader::with_capacity(256 * 1024, io),
            url: url.clone(),
            kind,
            server_version: String::new(),
        };
        // The handshake (AUTH, INFO) counts as connecting: a server that accepts connections
        // and never answers fails within the connect timeout, as PostgreSQL's does, not after
        // the idle timeout (ten minutes by default).
        let limit = crate::net::connect_timeout();
        let info = match tokio::time::timeout(limit, conn.handshake()).await {
            Ok(info) => info?,
            Err(_) => {
                return Err(conn
                    .error(format!(
                        "no answer to the handshake (AUTH, INFO) within {} s: the server accepted the connection but said nothing",
                        limit.as_secs()
                    ))
                    .with_hint("check that a Redis server (not another program) listens there, and its health and load"))
            }
        };
        conn.server_version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_string();
        Ok(conn)
    }

    /// AUTH (if the URL has a password) and `INFO server`: the server's INFO text.
    async fn handshake(&mut self) -> Result<String> {
        let conn = self;
        let url = conn.url.clone();
        if let Some(password) = url.password() {
            let user = url.username();
            let reply = if user.is_empty() || user == "default" {
                conn.command(&[b"AUTH", password.expose().as_bytes()])
                    .await?
            } else {
                conn.command(&[b"AUTH", user.as_bytes(), password.expose().as_bytes()])
                    .await?
            };
            if let Err(e) = reply {
                return Err(conn
                    .error(format!("authentication failed: {e}"))
                    .with_hint("check the user and password in the URL"));
            }
        }
        match conn.command(&[b"INFO", b"server"]).await? {
            Ok(text) => Ok(String::from_utf8_lossy(&text).into_owned()),
            Err(e) if e.starts_with("NOAUTH") => Err(conn
                .error("authentication required: the server has a password and the URL gives none")
                .with_hint("put it in the URL: redis://:PASSWORD@host:port, or redis://USER:PASSWORD@host:port for an ACL user")),
            Err(e) => Err(conn.error(format!("INFO failed: {e}"))),
        }
    }

    /// An error about this server, without its password.
    pub fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::new(
            self.kind,
            format!("Redis at {}: {what}", self.url.without_password()),
        )
    }

    fn io_error(&self, e: std::io::Error) -> Error {
        self.error(format!(
            "the connection failed: {}",
            crate::net::describe_io(&e)
        ))
    }

    /// Encodes commands as RESP arrays of bulk strings.
    pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
        out.extend(format!("*{}\r\n", args.len()).into_bytes());
        for a in args {
            out.extend(format!("${}\r\n", a.len()).into_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Sends raw bytes (an encoded command or a pipeline of them).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let r = self.io.get_mut().write_all(bytes).await;
        r.map_err(|e| self.io_error(e))
    }

    /// Sends one command and reads its reply.
    pub async fn command(&mut self, args: &[&[u8]]) -> Result<Reply> {
        let mut out = Vec::new();
        Connection::encode(&mut out, args);
        self.send(&out).await?;
        self.reply().await
    }

    /// Reads one line, without its CRLF.
    pub async fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self.io.read_line(&mut line).await;
        match n {
            Ok(0) => Err(self.error("the server closed the connection")),
            Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// Reads one reply: status, error, integer or bulk string (arrays are not needed here).
    pub async fn reply(&mut self) -> Result<Reply> {
        let line = self.line().await?;
        match line.as_bytes().first() {
            Some(b'-') => Ok(Err(line[1..].to_string())),
            Some(b'$') => {
                let n: i64 = line[1..]
                    .parse()
                    .map_err(|_| self.error(format!("unexpected reply {line:?}")))?;
                if n < 0 {
                    return Ok(Ok(Vec::new()));
                }
                let mut body = vec![0u8; n as usize + 2];
                let r = self.io.read_exact(&mut body).await;
                r.map_err(|e| self.io_error(e))?;
                body.truncate(n as usize);
                Ok(Ok(body))
            }
            Some(b'+' | b':') => Ok(Ok(line.as_bytes()[1..].to_vec())),
            _ => Err(self.error(format!("unexpected reply {line:?}"))),
        }
    }

    /// Reads a SCAN reply: the next cursor and a page of keys.
    pub async fn scan_reply(&mut self) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
        let head = self.line().await?;
        if head != "*2" {
            return Err(self.error(format!("unexpected reply to SCAN: {head:?}")));
        }
        let cursor = match self.reply().await? {
            Ok(c) => c,
            Err(e) => return Err(self.error(format!("SCAN failed: {e}"))),
        };
        let count_line = self.line().await?;
        let n: usize = count_line
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| self.error(format!("unexpected reply to SCAN: {count_line:?}")))?;
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            match self.reply().await? {
                Ok(k) => keys.push(k),
                Err(e) => return Err(self.error(format!("SCAN failed: {e}"))),
            }
        }
        Ok((cursor, keys))
    }
}
