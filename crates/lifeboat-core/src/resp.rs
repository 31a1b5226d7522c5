//! A minimal Redis connection (RESP2 over TCP), shared by the Redis source (which then switches
//! the connection to a replication stream) and the Redis sink (pipelined RESTOREs).

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretUrl;

pub struct Connection {
    pub(crate) io: BufReader<TcpStream>,
    pub(crate) url: SecretUrl,
    /// Source (a backup's server) or Sink (a restore target): decides the exit code.
    kind: ErrorKind,
    /// `redis_version` from INFO.
    pub server_version: String,
}

/// A reply: `Ok` with the text of a status, integer or bulk string; `Err` with an error reply.
pub type Reply = std::result::Result<Vec<u8>, String>;

impl Connection {
    /// Connects to `redis://[user:password@]host[:port]`, authenticates, reads the version.
    pub async fn open(url: &SecretUrl, kind: ErrorKind) -> Result<Connection> {
        if url.scheme() != "redis" {
            return Err(Error::config(format!(
                "{} is not a redis:// URL (rediss://, Redis over TLS, is not supported yet)",
                url.without_password()
            )));
        }
        let host = url.host().unwrap_or_else(|| "127.0.0.1".into());
        let port = url.port().unwrap_or(6379);
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| {
                Error::new(
                    kind,
                    format!("Redis at {}: cannot connect: {e}", url.without_password()),
                )
                .with_hint("check the host and port, and that the server is running")
            })?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            io: BufReader::with_capacity(256 * 1024, tcp),
            url: url.clone(),
            kind,
            server_version: String::new(),
        };
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
        let info = match conn.command(&[b"INFO", b"server"]).await? {
            Ok(text) => String::from_utf8_lossy(&text).into_owned(),
            Err(e) if e.starts_with("NOAUTH") => {
                return Err(conn
                    .error("authentication required: the server has a password and the URL gives none")
                    .with_hint("put it in the URL: redis://:PASSWORD@host:port, or redis://USER:PASSWORD@host:port for an ACL user"))
            }
            Err(e) => return Err(conn.error(format!("INFO failed: {e}"))),
        };
        conn.server_version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_string();
        Ok(conn)
    }

    /// An error about this server, without its password.
    pub fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::new(
            self.kind,
            format!("Redis at {}: {what}", self.url.without_password()),
        )
    }

    fn io_error(&self, e: std::io::Error) -> Error {
        self.error(format!("the connection failed: {e}"))
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
