//! Redis: a native RDB capture over the replication protocol, no redis-cli.
//!
//! Lifeboat connects as a replica would: AUTH (user and password from the URL), `REPLCONF
//! rdb-only 1` (Redis 7+: send the snapshot and nothing after it; older servers refuse it and
//! are read the same way), `REPLCONF capa eof` (the diskless form is welcome), then `SYNC`. The server answers with newline keep-alives while it
//! forks, then the snapshot in one of two forms: `$<length>` and that many bytes (a snapshot
//! written to disk first), or `$EOF:<40-byte mark>` and bytes up to that mark (diskless). The
//! capture hands back exactly the RDB bytes as a stream; it never touches the disk.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::secret::SecretUrl;

/// The diskless form's end mark is 40 bytes.
const EOF_MARK_LEN: usize = 40;

/// A snapshot being received.
pub struct RedisCapture {
    /// Exactly the RDB file's bytes.
    pub stream: RdbStream,
    /// `redis_version` from INFO.
    pub server_version: String,
    /// `true` for the diskless (`$EOF:`) form.
    pub diskless: bool,
}

fn source_error(url: &SecretUrl, what: impl std::fmt::Display) -> Error {
    Error::source_failed(format!("Redis at {}: {what}", url.without_password()))
}

/// Sends one command and reads a one-line reply (`+OK`, `-ERR ...`, `:1`) or a bulk string.
async fn command(
    conn: &mut BufReader<TcpStream>,
    url: &SecretUrl,
    args: &[&[u8]],
) -> Result<std::result::Result<Vec<u8>, String>> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).into_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    conn.get_mut()
        .write_all(&out)
        .await
        .map_err(|e| source_error(url, format!("the connection failed: {e}")))?;
    let line = read_line(conn, url).await?;
    match line.as_bytes().first() {
        Some(b'-') => Ok(Err(line[1..].to_string())),
        Some(b'$') => {
            let n: usize = line[1..]
                .parse()
                .map_err(|_| source_error(url, format!("unexpected reply {line:?}")))?;
            let mut body = vec![0u8; n + 2];
            conn.read_exact(&mut body)
                .await
                .map_err(|e| source_error(url, format!("the connection failed: {e}")))?;
            body.truncate(n);
            Ok(Ok(body))
        }
        _ => Ok(Ok(line.into_bytes())),
    }
}

async fn read_line(conn: &mut BufReader<TcpStream>, url: &SecretUrl) -> Result<String> {
    let mut line = String::new();
    let n = conn
        .read_line(&mut line)
        .await
        .map_err(|e| source_error(url, format!("the connection failed: {e}")))?;
    if n == 0 {
        return Err(source_error(url, "the server closed the connection"));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Connects, authenticates and starts a snapshot transfer.
pub async fn start_capture(url: &SecretUrl) -> Result<RedisCapture> {
    if url.scheme() != "redis" {
        return Err(Error::config(format!(
            "{} is not a redis:// URL (rediss:// with TLS is not supported yet)",
            url.without_password()
        )));
    }
    let host = url.host().unwrap_or_else(|| "127.0.0.1".into());
    let port = url.port().unwrap_or(6379);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| source_error(url, format!("cannot connect: {e}")))?;
    let mut conn = BufReader::with_capacity(256 * 1024, tcp);
    if let Some(password) = url.password() {
        let user = url.username();
        let reply = if user.is_empty() || user == "default" {
            command(&mut conn, url, &[b"AUTH", password.expose().as_bytes()]).await?
        } else {
            command(
                &mut conn,
                url,
                &[b"AUTH", user.as_bytes(), password.expose().as_bytes()],
            )
            .await?
        };
        if let Err(e) = reply {
            return Err(source_error(url, format!("authentication failed: {e}"))
                .with_hint("check the user and password in the URL"));
        }
    }
    let info = command(&mut conn, url, &[b"INFO", b"server"]).await?;
    let info = match info {
        Ok(text) => String::from_utf8_lossy(&text).into_owned(),
        Err(e) => return Err(source_error(url, format!("INFO failed: {e}"))),
    };
    let server_version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    // Older servers do not know rdb-only; they then stream commands after the snapshot,
    // which the capture never reads.
    let _ = command(&mut conn, url, &[b"REPLCONF", b"rdb-only", b"1"]).await?;
    // Announcing the EOF-mark capability lets a server with repl-diskless-sync stream the
    // snapshot straight from its fork, without writing it to its own disk first.
    let _ = command(&mut conn, url, &[b"REPLCONF", b"capa", b"eof"]).await?;
    conn.get_mut()
        .write_all(b"*1\r\n$4\r\nSYNC\r\n")
        .await
        .map_err(|e| source_error(url, format!("the connection failed: {e}")))?;
    // Keep-alive newlines arrive while the server forks and writes the snapshot.
    let header = loop {
        let line = read_line(&mut conn, url).await?;
        if !line.is_empty() {
            break line;
        }
    };
    if let Some(err) = header.strip_prefix('-') {
        return Err(source_error(url, format!("SYNC was refused: {err}")).with_hint(
            "managed services often refuse SYNC (unknown command, NOPERM); allow the replication commands for this user",
        ));
    }
    let Some(rest) = header.strip_prefix('$') else {
        return Err(source_error(
            url,
            format!("unexpected reply to SYNC: {header:?}"),
        ));
    };
    let (body, diskless) = if let Some(mark) = rest.strip_prefix("EOF:") {
        if mark.len() != EOF_MARK_LEN {
            return Err(source_error(
                url,
                format!("malformed snapshot header {header:?}"),
            ));
        }
        (
            Body::UntilMark {
                mark: mark.as_bytes().to_vec(),
                held: Vec::new(),
                found: false,
            },
            true,
        )
    } else {
        let len: u64 = rest
            .parse()
            .map_err(|_| source_error(url, format!("malformed snapshot header {header:?}")))?;
        (Body::Length { left: len }, false)
    };
    Ok(RedisCapture {
        stream: RdbStream {
            conn,
            body,
            location: url.without_password(),
        },
        server_version,
        diskless,
    })
}

enum Body {
    Length {
        left: u64,
    },
    UntilMark {
        mark: Vec<u8>,
        /// Bytes not yet handed out: the last 40 might be the mark.
        held: Vec<u8>,
        /// The mark was seen: `held` is the rest of the snapshot.
        found: bool,
    },
}

/// The snapshot's bytes; a connection that ends before the snapshot does is an error.
pub struct RdbStream {
    conn: BufReader<TcpStream>,
    body: Body,
    location: String,
}

impl AsyncRead for RdbStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.body {
                Body::Length { left: 0 } => return Poll::Ready(Ok(())),
                Body::UntilMark {
                    held, found: true, ..
                } => {
                    let give = held.len().min(out.remaining());
                    out.put_slice(&held[..give]);
                    held.drain(..give);
                    return Poll::Ready(Ok(()));
                }
                Body::UntilMark { held, .. } if held.len() > EOF_MARK_LEN => {
                    // These bytes can no longer be part of the mark.
                    let give = (held.len() - EOF_MARK_LEN).min(out.remaining());
                    out.put_slice(&held[..give]);
                    held.drain(..give);
                    return Poll::Ready(Ok(()));
                }
                _ => {}
            }
            let mut chunk = vec![0u8; out.remaining().clamp(1, 256 * 1024)];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.conn).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let got = buf.filled();
            if got.is_empty() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "Redis at {} closed the connection before the end of the snapshot",
                        this.location
                    ),
                )));
            }
            match &mut this.body {
                Body::Length { left } => {
                    // Past the snapshot comes the replication stream: never read it.
                    let n = (got.len() as u64).min(*left) as usize;
                    out.put_slice(&got[..n]);
                    *left -= n as u64;
                    return Poll::Ready(Ok(()));
                }
                Body::UntilMark { mark, held, found } => {
                    held.extend_from_slice(got);
                    if let Some(at) = held
                        .windows(EOF_MARK_LEN)
                        .position(|w| w == mark.as_slice())
                    {
                        held.truncate(at);
                        *found = true;
                    }
                }
            }
        }
    }
}
