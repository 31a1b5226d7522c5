//! `[metrics]` and `[[notify]]`: where the news of a run goes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The `[metrics]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsSpec {
    /// node_exporter's textfile collector directory: each binary writes `<binary>.prom` there.
    pub textfile_dir: Option<String>,
    /// A Prometheus Pushgateway (`http://host:9091`), pushed to per binary and job.
    pub pushgateway: Option<String>,
}

/// Where metrics go, validated.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// See [`MetricsSpec::textfile_dir`].
    pub textfile_dir: Option<PathBuf>,
    /// See [`MetricsSpec::pushgateway`] (may hold credentials: never printed whole).
    pub pushgateway: Option<url::Url>,
}

impl Metrics {
    /// Nothing to deliver to.
    pub fn is_empty(&self) -> bool {
        self.textfile_dir.is_none() && self.pushgateway.is_none()
    }
}

/// A `[[notify]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotifySpec {
    /// `webhook`, `slack` or `healthchecks`.
    pub kind: NotifyKind,
    /// Where to send: a secret (it usually holds a token), masked in every output.
    pub url: String,
    /// `["failure"]` (default), `["success", "failure"]` or `["always"]`.
    #[serde(default)]
    pub on: Vec<NotifyOn>,
    /// webhook: extra request headers, values through `${VAR}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long one attempt may take (default 10); three attempts are made.
    pub timeout_secs: Option<u64>,
}

/// The kinds of notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyKind {
    /// POST the run's JSON report.
    Webhook,
    /// A Slack-compatible incoming webhook (Slack, Discord's `/slack`, Mattermost).
    Slack,
    /// healthchecks.io conventions: `/start`, then `/<exit code>` with the log tail.
    Healthchecks,
}

/// When a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyOn {
    /// Exit code 0.
    Success,
    /// Any other exit code (1 to 5).
    Failure,
    /// Both.
    Always,
}

/// A notifier, validated.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// Its kind.
    pub kind: NotifyKind,
    /// Its URL (a secret).
    pub url: url::Url,
    /// Sent after a successful run.
    pub on_success: bool,
    /// Sent after a failed run.
    pub on_failure: bool,
    /// Extra headers (webhook).
    pub headers: BTreeMap<String, String>,
    /// How long one attempt may take.
    pub timeout: std::time::Duration,
}

impl Notifier {
    /// The notifier for messages: its kind and host, never the path or query that carry the
    /// token (`slack (https://hooks.slack.com/…)`).
    pub fn describe(&self) -> String {
        format!(
            "{} ({}://{}/…)",
            match self.kind {
                NotifyKind::Webhook => "webhook",
                NotifyKind::Slack => "slack",
                NotifyKind::Healthchecks => "healthchecks",
            },
            self.url.scheme(),
            self.url.host_str().unwrap_or("?")
        )
    }
}

/// An `http(s)://` URL from the configuration, or the error naming where it is.
fn http_url(value: &str, place: &str, key: &str) -> Result<url::Url> {
    let url = url::Url::parse(value)
        .map_err(|e| Error::config(format!("{place}: {key}: not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::config(format!(
            "{place}: {key}: {}:// is not http:// or https://",
            url.scheme()
        )));
    }
    Ok(url)
}

/// Validates `[metrics]`.
pub(crate) fn metrics(
    spec: Option<&MetricsSpec>,
    place: &str,
    expand: &dyn Fn(&str) -> String,
) -> Result<Metrics> {
    let Some(spec) = spec else {
        return Ok(Metrics::default());
    };
    Ok(Metrics {
        textfile_dir: spec
            .textfile_dir
            .as_deref()
            .map(|d| PathBuf::from(expand(d))),
        pushgateway: spec
            .pushgateway
            .as_deref()
            .map(|u| http_url(&expand(u), place, "[metrics] pushgateway"))
            .transpose()?,
    })
}

/// Validates the `[[notify]]` tables.
pub(crate) fn notifiers(
    specs: &[NotifySpec],
    place: &str,
    expand: &dyn Fn(&str) -> String,
) -> Result<Vec<Notifier>> {
    specs
        .iter()
        .map(|spec| {
            let on = if spec.on.is_empty() {
                vec![NotifyOn::Failure]
            } else {
                spec.on.clone()
            };
            let always = on.contains(&NotifyOn::Always);
            let timeout = match spec.timeout_secs {
                Some(0) => {
                    return Err(Error::config(format!(
                        "{place}: [[notify]] timeout-secs must be at least 1"
                    )))
                }
                Some(secs) => std::time::Duration::from_secs(secs),
                None => std::time::Duration::from_secs(10),
            };
            if !spec.headers.is_empty() && spec.kind != NotifyKind::Webhook {
                return Err(Error::config(format!(
                    "{place}: [[notify]] headers are for kind = \"webhook\""
                )));
            }
            Ok(Notifier {
                kind: spec.kind,
                url: http_url(&expand(&spec.url), place, "[[notify]] url")?,
                on_success: always || on.contains(&NotifyOn::Success),
                on_failure: always || on.contains(&NotifyOn::Failure),
                headers: spec
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), expand(v)))
                    .collect(),
                timeout,
            })
        })
        .collect()
}
