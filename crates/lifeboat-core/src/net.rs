//! Timeouts of every connection Lifeboat opens (sources, restore targets, drill scratch
//! servers): a connect timeout, and an idle-read timeout so a server that accepts the
//! connection and then never answers (or stops in the middle of a transfer) ends the run with
//! an error instead of hanging it while the job's lock is renewed.
//!
//! The idle-read timeout is the job's `idle-timeout`; the binary sets it once per run with
//! [`set_idle_timeout`] before it opens anything (a process-wide value, so the many places that
//! connect do not each need it passed down).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_io_timeout::TimeoutStream;

/// How long a TCP connect (and a TLS or protocol handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection or source that sends nothing for this long has stopped (job `idle-timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

static IDLE_TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_IDLE_TIMEOUT.as_millis() as u64);

/// Sets the idle-read timeout of connections opened from now on.
pub fn set_idle_timeout(timeout: Duration) {
    let ms = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    IDLE_TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

/// The idle-read timeout of connections opened now.
pub fn idle_timeout() -> Duration {
    Duration::from_millis(IDLE_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// A TCP stream whose reads and writes fail with `TimedOut` after the idle timeout.
pub type TimedTcp = Pin<Box<TimeoutStream<TcpStream>>>;

/// Connects within [`CONNECT_TIMEOUT`] and arms the idle timeout on the stream.
///
/// PostgreSQL connections use [`connect_tcp_plain`] instead: tokio-postgres reads its socket all
/// the time, and Lifeboat's snapshot connection stays quiet for as long as pg_dump streams, so
/// there each query gets its deadline instead ([`within_idle_timeout`]).
pub async fn connect_tcp(host: &str, port: u16) -> std::io::Result<TimedTcp> {
    let tcp = connect_tcp_plain(host, port).await?;
    let mut stream = TimeoutStream::new(tcp);
    stream.set_read_timeout(Some(idle_timeout()));
    stream.set_write_timeout(Some(idle_timeout()));
    Ok(Box::pin(stream))
}

/// The deadline of a connect or a login: [`CONNECT_TIMEOUT`], or the idle timeout if shorter.
pub fn connect_timeout() -> Duration {
    CONNECT_TIMEOUT.min(idle_timeout())
}

/// Connects within [`connect_timeout`].
pub async fn connect_tcp_plain(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let limit = connect_timeout();
    let tcp = tokio::time::timeout(limit, TcpStream::connect((host, port)))
        .await
        .map_err(|_| no_answer(limit, "to the connection"))??;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Runs `work` (one request to a server) with a deadline of the idle timeout.
pub async fn within_idle_timeout<T>(
    work: impl std::future::IntoFuture<Output = T>,
) -> std::result::Result<T, std::io::Error> {
    let idle = idle_timeout();
    tokio::time::timeout(idle, work.into_future())
        .await
        .map_err(|_| no_answer(idle, "from the server"))
}

/// Says what a timed-out read means; other errors as they are.
pub fn describe_io(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::TimedOut {
        no_answer(idle_timeout(), "from the server").to_string()
    } else {
        e.to_string()
    }
}

/// The error of a peer that went silent.
pub fn no_answer(after: Duration, to_what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "no answer {to_what} within {} (idle-timeout)",
            crate::text::format_duration(after)
        ),
    )
}

/// rustls' cryptography for every TLS client Lifeboat builds: aws-lc-rs, which the AWS SDK
/// already uses. Installed as the process default once, before the first `ClientConfig`, because
/// with two providers in the build (MongoDB's driver brings ring) rustls cannot pick one itself.
pub fn tls_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Fails only if a provider is installed already, which is as good.
        let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// Runs `work` with a deadline of [`connect_timeout`] (handshakes, logins).
pub async fn within_connect_timeout<T>(
    work: impl std::future::IntoFuture<Output = T>,
) -> std::result::Result<T, std::io::Error> {
    let limit = connect_timeout();
    tokio::time::timeout(limit, work.into_future())
        .await
        .map_err(|_| no_answer(limit, "to the login"))
}
