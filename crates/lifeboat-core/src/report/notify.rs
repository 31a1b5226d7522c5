//! Notifications of job runs (`[[notify]]`): a webhook with the run's JSON report, a
//! Slack-compatible message, healthchecks.io pings. One per job run; a notification that
//! cannot be delivered is a warning and never changes the run's exit code. URLs carry tokens:
//! messages name only their kind and host.

use std::time::Duration;

use crate::config::observe::{Notifier, NotifyKind};

/// Attempts per notification (connection errors, timeouts and 5xx answers are retried).
const ATTEMPTS: u32 = 3;
/// healthchecks.io accepts up to 100 kB of body; the tail of the log is what matters.
const BODY_LIMIT: usize = 100_000;

/// What a job run came to, for its notifications.
pub struct RunOutcome<'a> {
    /// `lifeboat-backup` or `lifeboat-verify`.
    pub binary: &'a str,
    /// The job.
    pub job: &'a str,
    /// The run's exit code for this job (0 ok, 1 to 5 failed).
    pub exit_code: i32,
    /// The job's JSON report, as `--json` prints it.
    pub report: serde_json::Value,
    /// The run's text for people: the human report, or the error with its hint.
    pub text: String,
}

/// The HTTP client of notifications and metrics: rustls with the system's roots, on the one
/// crypto provider the build has (the same TLS as S3, PostgreSQL and Redis connections).
pub(crate) fn http_client() -> std::result::Result<reqwest::Client, String> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    crate::net::tls_provider();
    let tls = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

fn client() -> Option<reqwest::Client> {
    http_client()
        .map_err(|e| tracing::warn!("Notifications are off: {e}"))
        .ok()
}

/// Tells the healthchecks notifiers that a job's run starts (`<url>/start`).
pub async fn started(notifiers: &[Notifier], job: &str) {
    let Some(client) = client() else { return };
    for n in notifiers
        .iter()
        .filter(|n| n.kind == NotifyKind::Healthchecks)
    {
        let url = joined(&n.url, "start");
        send(n, job, || client.post(url.clone()).body(String::new())).await;
    }
}

/// Sends each notifier that wants this outcome its notification.
pub async fn finished(notifiers: &[Notifier], outcome: &RunOutcome<'_>) {
    let success = outcome.exit_code == 0;
    let wanted: Vec<&Notifier> = notifiers
        .iter()
        .filter(|n| {
            n.kind == NotifyKind::Healthchecks || if success { n.on_success } else { n.on_failure }
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    let Some(client) = client() else { return };
    for n in wanted {
        match n.kind {
            NotifyKind::Webhook => {
                let body = serde_json::json!({
                    "binary": outcome.binary,
                    "job": outcome.job,
                    "ok": success,
                    "exit_code": outcome.exit_code,
                    "report": outcome.report,
                });
                send(n, outcome.job, || {
                    let mut request = client.post(n.url.clone()).json(&body);
                    for (name, value) in &n.headers {
                        request = request.header(name, value);
                    }
                    request
                })
                .await;
            }
            NotifyKind::Slack => {
                let body = serde_json::json!({"text": slack_text(outcome)});
                send(n, outcome.job, || client.post(n.url.clone()).json(&body)).await;
            }
            NotifyKind::Healthchecks => {
                // healthchecks.io: /0 is success, /<code> a failure with that exit status.
                let url = joined(&n.url, &outcome.exit_code.to_string());
                let body = tail(&outcome.text, BODY_LIMIT).to_string();
                send(n, outcome.job, || {
                    client.post(url.clone()).body(body.clone())
                })
                .await;
            }
        }
    }
}

/// The message a person reads in a chat channel: job, outcome, snapshot, sizes, duration, and
/// the error with its hint.
fn slack_text(outcome: &RunOutcome<'_>) -> String {
    let verdict = if outcome.exit_code == 0 {
        "succeeded".to_string()
    } else {
        format!("FAILED (exit {})", outcome.exit_code)
    };
    format!(
        "{} job `{}` {verdict}\n{}",
        outcome.binary,
        outcome.job,
        tail(outcome.text.trim_end(), 3000)
    )
}

/// `url` with one more path segment (`.../uuid` -> `.../uuid/start`).
fn joined(url: &url::Url, segment: &str) -> url::Url {
    let mut url = url.clone();
    let path = format!("{}/{segment}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// The last `limit` bytes of `text`, cut at a character boundary.
fn tail(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Sends one request with retries; failures are warnings.
async fn send(notifier: &Notifier, job: &str, request: impl Fn() -> reqwest::RequestBuilder) {
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match request().timeout(notifier.timeout).send().await {
            Ok(answer) if answer.status().is_success() => return,
            Ok(answer) if answer.status().is_server_error() => {
                last = format!("it answered {}", answer.status());
            }
            Ok(answer) => {
                // 4xx: a wrong URL or token, which retrying does not fix.
                last = format!("it answered {}", answer.status());
                break;
            }
            // reqwest's errors name the URL: keep only what kind of failure it was.
            Err(e) if e.is_timeout() => {
                last = format!("no answer within {}s", notifier.timeout.as_secs());
            }
            Err(e) if e.is_connect() => last = "cannot connect".to_string(),
            Err(_) => last = "the request failed".to_string(),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
    }
    tracing::warn!(
        "The notification of job {job:?} to {} was not delivered: {last}. The run's exit code is unchanged.",
        notifier.describe()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_append_a_segment_and_bodies_keep_the_tail() {
        let url = url::Url::parse("https://hc-ping.com/abc-123/").unwrap();
        assert_eq!(
            joined(&url, "start").as_str(),
            "https://hc-ping.com/abc-123/start"
        );
        assert_eq!(joined(&url, "5").as_str(), "https://hc-ping.com/abc-123/5");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ééé", 3), "é");
    }
}
