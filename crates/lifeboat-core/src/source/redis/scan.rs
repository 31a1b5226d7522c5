//! The SCAN capture, for servers that refuse SYNC: `SCAN` each database, and for every key a
//! pipelined `DUMP` and `PTTL`; the payloads are written out as a valid RDB file (header, aux
//! fields, SELECTDB per database, expiry, each payload's type and value, EOF, CRC64) that loads
//! into any Redis at least as new as the source.
//!
//! Each key is read at its own moment: the result is not a point-in-time snapshot, and the
//! manifest says so. SCAN may return a key twice; keys already written are skipped (which
//! costs memory for the key names of one database at a time).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;

use super::{CaptureKind, RedisCapture};
use crate::client::resp::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretUrl;

/// Keys per SCAN page (and per DUMP/PTTL pipeline).
const PAGE: &[u8] = b"1000";
/// RDB version written when the server holds no key (any Redis since 5.0 loads it).
const EMPTY_RDB_VERSION: u16 = 9;

/// Captures every key with SCAN, DUMP and PTTL and writes them as an RDB stream.
pub async fn start(url: &SecretUrl) -> Result<RedisCapture> {
    let mut conn = Connection::open(url, ErrorKind::Source).await?;
    let size_estimate = conn.dataset_bytes().await;
    let server_version = conn.server_version.clone();
    let (writer, reader) = tokio::io::duplex(1024 * 1024);
    let task = tokio::spawn(produce(conn, writer));
    Ok(RedisCapture {
        stream: Box::new(ScanStream {
            pipe: reader,
            task: Some(task),
        }),
        server_version,
        kind: CaptureKind::Scan,
        size_estimate,
    })
}

/// RDB length encoding.
fn length(out: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    length(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Writes the RDB file into `pipe`; an error ends the stream with that error.
async fn produce(mut conn: Connection, mut pipe: DuplexStream) -> Result<()> {
    let dbs = conn.databases_with_keys().await?;
    let mut crc = lifeboat_rdb::Crc64::default();
    let mut version: Option<u16> = None;
    // Written once the first payload says which RDB version the server writes.
    let mut pending: Vec<u8> = Vec::new();
    let aux = |out: &mut Vec<u8>, k: &[u8], v: &[u8]| {
        out.push(0xfa);
        string(out, k);
        string(out, v);
    };
    let mut head = Vec::new();
    aux(&mut head, b"redis-ver", conn.server_version.as_bytes());
    aux(&mut head, b"lifeboat-capture", b"scan");
    // The magic with the RDB version, then the aux fields.
    let file_header = |version: u16| {
        let mut header = format!("REDIS{version:04}").into_bytes();
        header.extend_from_slice(&head);
        header
    };
    let pipe_error = |e: std::io::Error| {
        Error::new(
            ErrorKind::Source,
            format!("the SCAN capture could not hand on its data: {e}"),
        )
    };
    // Function libraries (Redis 7) go before the databases, as in a file the server writes.
    if let Some((libraries, payload_version)) = function_libraries(&mut conn).await? {
        version = Some(payload_version);
        let mut header = file_header(payload_version);
        header.extend_from_slice(&libraries);
        crc.update(&header);
        pipe.write_all(&header).await.map_err(pipe_error)?;
    }
    for db in dbs {
        if let Err(e) = conn
            .command(&[b"SELECT", db.to_string().as_bytes()])
            .await?
        {
            return Err(conn.error(format!("cannot select database {db}: {e}")));
        }
        pending.push(0xfe);
        length(&mut pending, db);
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut cursor = b"0".to_vec();
        loop {
            let mut cmd = Vec::new();
            Connection::encode(&mut cmd, &[b"SCAN", &cursor, b"COUNT", PAGE]);
            conn.send(&cmd).await?;
            let (next, keys) = conn.scan_reply().await?;
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .filter(|k| seen.insert(k.clone()))
                .collect();
            let mut cmds = Vec::new();
            for k in &keys {
                Connection::encode(&mut cmds, &[b"PTTL", k]);
                Connection::encode(&mut cmds, &[b"DUMP", k]);
            }
            conn.send(&cmds).await?;
            let now_ms = chrono::Utc::now().timestamp_millis();
            for k in &keys {
                let pttl = match conn.reply().await? {
                    Ok(t) => String::from_utf8_lossy(&t).parse::<i64>().unwrap_or(-1),
                    Err(e) => return Err(conn.error(format!("PTTL failed: {e}"))),
                };
                let payload = match conn.reply().await? {
                    Ok(p) => p,
                    Err(e) => {
                        return Err(conn
                            .error(format!("DUMP failed: {e}"))
                            .with_hint("the user needs the DUMP, SCAN and PTTL commands"))
                    }
                };
                // Deleted or expired between SCAN and DUMP: not part of the capture.
                if payload.is_empty() || pttl == -2 {
                    continue;
                }
                let (type_byte, value, payload_version) =
                    split_payload(&payload).ok_or_else(|| {
                        conn.error(format!(
                            "the DUMP payload of key {:?} is malformed",
                            String::from_utf8_lossy(k)
                        ))
                    })?;
                match version {
                    None => {
                        version = Some(payload_version);
                        let header = file_header(payload_version);
                        crc.update(&header);
                        pipe.write_all(&header).await.map_err(pipe_error)?;
                    }
                    Some(v) if v != payload_version => {
                        return Err(conn.error(format!(
                            "DUMP payloads of two RDB versions ({v} and {payload_version}): the server changed during the capture"
                        )));
                    }
                    Some(_) => {}
                }
                if pttl >= 0 {
                    pending.push(0xfc);
                    pending.extend_from_slice(&(now_ms + pttl).to_le_bytes());
                }
                pending.push(type_byte);
                string(&mut pending, k);
                pending.extend_from_slice(value);
            }
            if version.is_some() && !pending.is_empty() {
                crc.update(&pending);
                pipe.write_all(&pending).await.map_err(pipe_error)?;
                pending.clear();
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
    }
    let mut tail = Vec::new();
    if version.is_none() {
        // No key anywhere: an empty file (the SELECTDBs of empty databases are dropped).
        tail = file_header(EMPTY_RDB_VERSION);
        pending.clear();
    }
    tail.extend_from_slice(&pending);
    tail.push(0xff);
    crc.update(&tail);
    tail.extend_from_slice(&crc.value().to_le_bytes());
    pipe.write_all(&tail).await.map_err(pipe_error)?;
    pipe.shutdown().await.map_err(pipe_error)?;
    Ok(())
}

/// A DUMP payload: type byte, value, RDB version (2 bytes LE), CRC64 (8 bytes LE) of the rest.
fn split_payload(p: &[u8]) -> Option<(u8, &[u8], u16)> {
    let (body, version) = split_trailer(p)?;
    let (&type_byte, value) = body.split_first()?;
    Some((type_byte, value, version))
}

/// What precedes a payload's trailer (RDB version, 2 bytes LE; CRC64 of the rest, 8 bytes LE,
/// checked unless 0), and the version.
fn split_trailer(p: &[u8]) -> Option<(&[u8], u16)> {
    if p.len() < 10 {
        return None;
    }
    let (body, crc) = p.split_at(p.len() - 8);
    let stored = u64::from_le_bytes(crc.try_into().ok()?);
    if stored != 0 && lifeboat_rdb::crc64(body) != stored {
        return None;
    }
    let (libraries, version) = body.split_at(body.len() - 2);
    Some((libraries, u16::from_le_bytes([version[0], version[1]])))
}

/// `FUNCTION DUMP`: the libraries as RDB function records and the RDB version, or None when
/// there are none, or the server has no functions (before 7.0). A user that may not run it is
/// warned about on every run (the keys are still worth having); other failures are errors.
async fn function_libraries(conn: &mut Connection) -> Result<Option<(Vec<u8>, u16)>> {
    let payload = match conn.command(&[b"FUNCTION", b"DUMP"]).await? {
        Ok(payload) => payload,
        Err(e) if e.contains("unknown command") || e.contains("unknown subcommand") => {
            return Ok(None)
        }
        Err(e) if e.starts_with("NOPERM") => {
            tracing::warn!(
                "{}; this snapshot has no function libraries. Allow FUNCTION DUMP (+function|dump) to capture them.",
                conn.error(format!("FUNCTION DUMP was refused ({e})"))
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(conn
                .error(format!("FUNCTION DUMP failed: {e}"))
                .with_hint("the user needs the FUNCTION DUMP command (or +@scripting) to capture function libraries"))
        }
    };
    let (libraries, version) = split_trailer(&payload)
        .ok_or_else(|| conn.error("the FUNCTION DUMP payload is malformed".to_string()))?;
    if libraries.is_empty() {
        return Ok(None);
    }
    Ok(Some((libraries.to_vec(), version)))
}

/// The pipe's bytes; when the producer failed, its error instead of a clean end.
struct ScanStream {
    pipe: DuplexStream,
    task: Option<JoinHandle<Result<()>>>,
}

impl AsyncRead for ScanStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = out.filled().len();
        match Pin::new(&mut self.pipe).poll_read(cx, out) {
            Poll::Ready(Ok(())) if out.filled().len() == before => {}
            other => return other,
        }
        // End of the pipe: did the producer finish, or fail?
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match Pin::new(task).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.task = None;
                match result {
                    Ok(Ok(())) => Poll::Ready(Ok(())),
                    Ok(Err(e)) => Poll::Ready(Err(std::io::Error::other(e.to_string()))),
                    Err(e) => Poll::Ready(Err(std::io::Error::other(format!(
                        "the SCAN capture task failed: {e}"
                    )))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_trailers_give_the_version_and_are_checked() {
        // FUNCTION DUMP of a server without libraries: only the trailer.
        let mut empty = 11u16.to_le_bytes().to_vec();
        empty.extend_from_slice(&lifeboat_rdb::crc64(&empty).to_le_bytes());
        assert_eq!(split_trailer(&empty), Some((&[][..], 11)));
        let mut damaged = empty.clone();
        damaged[0] ^= 1;
        assert_eq!(split_trailer(&damaged), None);
        assert_eq!(split_trailer(&empty[..9]), None);
        // A DUMP payload: type byte, value, trailer.
        let mut dump = vec![0u8, 3, b'a', b'b', b'c'];
        dump.extend_from_slice(&11u16.to_le_bytes());
        dump.extend_from_slice(&lifeboat_rdb::crc64(&dump).to_le_bytes());
        assert_eq!(
            split_payload(&dump),
            Some((0, &[3, b'a', b'b', b'c'][..], 11))
        );
        assert_eq!(split_payload(&empty), None, "no type byte");
    }

    #[test]
    fn lengths_use_the_shortest_rdb_form() {
        let enc = |n| {
            let mut v = Vec::new();
            length(&mut v, n);
            v
        };
        assert_eq!(enc(5), [5]);
        assert_eq!(enc(300), [0x41, 0x2c]);
        assert_eq!(enc(70_000), [0x80, 0, 1, 0x11, 0x70]);
        assert_eq!(enc(1 << 40)[0], 0x81);
    }
}
