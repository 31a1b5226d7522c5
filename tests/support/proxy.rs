//! A TCP proxy on loopback in front of the test S3 server that injects network faults: cut a
//! response after N bytes, answer 503 SlowDown or 500 InternalError, or accept and never answer. The S3 server
//! behind it is real; only the network between is made unreliable.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
pub struct Faults {
    /// The next connection's response is cut after this many bytes (one-shot; 0 = off).
    pub cut_after: AtomicU64,
    /// The next N connections get `503 SlowDown` instead of an answer.
    pub slow_down: AtomicU32,
    /// The next N connections get `500 InternalError` instead of an answer.
    pub internal_error: AtomicU32,
    /// Every connection is accepted and never answered.
    pub stall: AtomicBool,
    /// Connections seen.
    pub connections: AtomicU32,
    /// Requests that carried a `Range` header.
    pub ranged: AtomicU32,
    /// The first response (on any connection) longer than this is cut after this many bytes
    /// (one-shot, spent only when it cuts; 0 = off).
    pub cut_first_long: AtomicU64,
    /// Once a response has been cut, every later connection is closed at once, unanswered:
    /// the store went away mid-read (a reset, then nothing).
    pub refuse_after_cut: AtomicBool,
    /// Once a response has been cut, every later request is answered `404 NoSuchKey`: the
    /// object was deleted (a concurrent prune) while it was read.
    pub not_found_after_cut: AtomicBool,
    refusing: AtomicBool,
    not_found: AtomicBool,
}

/// Accepts connections on a loopback port of its own, in a runtime on its own thread, and hands
/// each to `on_connection` (called inside that runtime); returns the port.
fn serve(on_connection: impl Fn(TcpStream) + Send + 'static) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            loop {
                if let Ok((client, _)) = listener.accept().await {
                    on_connection(client);
                }
            }
        });
    });
    rx.recv().unwrap()
}

pub struct FaultProxy {
    pub endpoint: String,
    pub faults: Arc<Faults>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (host:port) on its own thread.
    pub fn start(upstream: &str) -> FaultProxy {
        let faults = Arc::new(Faults::default());
        let upstream = upstream.to_string();
        let shared = faults.clone();
        let port = serve(move |client| {
            tokio::spawn(handle(client, upstream.clone(), shared.clone()));
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            faults,
        }
    }
}

async fn handle(mut client: TcpStream, upstream: String, faults: Arc<Faults>) {
    faults.connections.fetch_add(1, Ordering::SeqCst);
    if faults.stall.load(Ordering::SeqCst) {
        let mut sink = [0u8; 8192];
        // Read and never answer, until the client gives up.
        while let Ok(n) = client.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        return;
    }
    if faults.refusing.load(Ordering::SeqCst) {
        drop(client);
        return;
    }
    let take = |counter: &AtomicU32| {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    };
    let error = if take(&faults.slow_down) {
        Some((
            "503 Slow Down",
            "SlowDown",
            "Please reduce your request rate.",
        ))
    } else if faults.not_found.load(Ordering::SeqCst) {
        Some((
            "404 Not Found",
            "NoSuchKey",
            "The specified key does not exist.",
        ))
    } else if take(&faults.internal_error) {
        Some((
            "500 Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        ))
    } else {
        None
    };
    if let Some((status, code, message)) = error {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match client.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>");
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.write_all(response.as_bytes()).await;
        let _ = client.shutdown().await;
        return;
    }
    let cut = faults.cut_after.swap(0, Ordering::SeqCst);
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let counting = faults.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let lower = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            if lower.contains("\r\nrange: bytes=") {
                counting.ranged.fetch_add(1, Ordering::SeqCst);
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = sr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let long = faults.cut_first_long.load(Ordering::SeqCst);
        let cut = if cut == 0 && long > 0 && sent + n as u64 >= long {
            // Spent by this response only if no other took it meanwhile.
            match faults.cut_first_long.compare_exchange(
                long,
                0,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => long,
                Err(_) => 0,
            }
        } else {
            cut
        };
        let n = if cut > 0 {
            n.min((cut - sent) as usize)
        } else {
            n
        };
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        sent += n as u64;
        if cut > 0 && sent >= cut {
            if faults.refuse_after_cut.load(Ordering::SeqCst) {
                faults.refusing.store(true, Ordering::SeqCst);
            }
            if faults.not_found_after_cut.load(Ordering::SeqCst) {
                faults.not_found.store(true, Ordering::SeqCst);
            }
            break; // drop the connection mid-response
        }
    }
    up.abort();
}

/// A plain TCP proxy that forwards what the client sends at a fixed rate, and can stop
/// forwarding altogether: a slow link and a stalled one, in front of a real server.
pub struct ThrottleProxy {
    pub endpoint: String,
    /// Client-to-server bytes forwarded per second.
    pub bytes_per_sec: Arc<AtomicU64>,
    /// Once this many client bytes have been forwarded on a connection, it stalls (0 = never).
    pub stall_after: Arc<AtomicU64>,
}

impl ThrottleProxy {
    pub fn start(upstream: &str, bytes_per_sec: u64) -> ThrottleProxy {
        let rate = Arc::new(AtomicU64::new(bytes_per_sec));
        let stall_after = Arc::new(AtomicU64::new(0));
        let upstream = upstream.to_string();
        let (rate2, stall2) = (rate.clone(), stall_after.clone());
        let port = serve(move |client| {
            let (rate, stall, upstream) = (rate2.clone(), stall2.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 4096];
                    let mut sent: u64 = 0;
                    loop {
                        let n = match client_rx.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let limit = stall.load(Ordering::SeqCst);
                        if limit > 0 && sent + n as u64 > limit {
                            // Stalled: hold the connection open, forward nothing.
                            std::future::pending::<()>().await;
                        }
                        let per_sec = rate.load(Ordering::SeqCst).max(1);
                        tokio::time::sleep(std::time::Duration::from_micros(
                            n as u64 * 1_000_000 / per_sec,
                        ))
                        .await;
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n as u64;
                    }
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                };
                tokio::join!(up, down);
            });
        });
        ThrottleProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            bytes_per_sec: rate,
            stall_after,
        }
    }
}
