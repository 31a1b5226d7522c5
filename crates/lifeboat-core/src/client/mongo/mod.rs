//! MongoDB connections through the official driver, shared by the MongoDB source, the restore
//! target and the drill's scratch server: the password kept out of every message, deadlines from
//! the job's `idle-timeout`, and the driver's errors turned into ones that say what to do.
//! [`metadata`] is the dump's vocabulary both sides share: a collection's options, indexes and
//! type as the archive's prelude carries them.

pub mod metadata;

use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;

use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretUrl;

/// How a server is deployed, as its `hello` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server without an oplog.
    Standalone,
    /// A replica set member (the name of the set): it has `local.oplog.rs`.
    ReplicaSet(String),
    /// A `mongos` router of a sharded cluster.
    Sharded,
}

/// A connected client and what the server said about itself.
#[derive(Clone)]
pub struct Mongo {
    /// The driver's client (a pool of connections).
    pub client: Client,
    /// Where it connects, for messages.
    pub url: SecretUrl,
    /// `version` from `buildInfo`.
    pub server_version: String,
    /// Standalone, replica set or sharded.
    pub topology: Topology,
    kind: ErrorKind,
}

impl Mongo {
    /// Connects and asks the server what it is; a server that does not answer within the
    /// connect timeout (or the idle timeout, if shorter) is an error naming it.
    pub async fn connect(url: &SecretUrl, kind: ErrorKind) -> Result<Mongo> {
        crate::net::tls_provider();
        let mut options = crate::net::within_connect_timeout(ClientOptions::parse(
            url.without_password(),
        ))
        .await
        .map_err(|e| Error::new(kind, format!("{url}: {e}")))?
        .map_err(|e| {
            Error::new(kind, format!("{url}: {}", e.kind)).with_hint(
                "check the URL: mongodb://user:password@host:27017/?authSource=admin, or mongodb+srv://...",
            )
        })?;
        if let (Some(credential), Some(password)) = (options.credential.as_mut(), url.password()) {
            credential.password = Some(password.expose().to_string());
        }
        let limit = crate::net::connect_timeout();
        options.connect_timeout = Some(limit);
        options.server_selection_timeout = Some(limit);
        options.app_name = Some("lifeboat".into());
        let client = Client::with_options(options)
            .map_err(|e| Error::new(kind, format!("{url}: {}", e.kind)))?;
        let mut mongo = Mongo {
            client,
            url: url.clone(),
            server_version: String::new(),
            topology: Topology::Standalone,
            kind,
        };
        let hello = mongo.command("admin", doc! { "hello": 1 }).await?;
        mongo.topology = if hello.get_str("msg") == Ok("isdbgrid") {
            Topology::Sharded
        } else if let Ok(set) = hello.get_str("setName") {
            Topology::ReplicaSet(set.to_string())
        } else {
            Topology::Standalone
        };
        let build = mongo.command("admin", doc! { "buildInfo": 1 }).await?;
        mongo.server_version = build.get_str("version").unwrap_or("unknown").to_string();
        Ok(mongo)
    }

    /// Runs a command on a database within the idle timeout.
    pub async fn command(&self, db: &str, command: Document) -> Result<Document> {
        let name = command.keys().next().cloned().unwrap_or_default();
        self.try_command(db, command)
            .await?
            .map_err(|e| self.error(&format!("{name} on {db}"), e))
    }

    /// Runs a command within the idle timeout, leaving the server's answer to the caller (to
    /// tell one error code from another).
    pub async fn try_command(
        &self,
        db: &str,
        command: Document,
    ) -> Result<mongodb::error::Result<Document>> {
        crate::net::within_idle_timeout(self.client.database(db).run_command(command))
            .await
            .map_err(|e| Error::new(self.kind, format!("{}: {e}", self.url)))
    }

    /// The driver's error, with what Lifeboat was doing and what to do about it.
    pub fn error(&self, doing: &str, e: mongodb::error::Error) -> Error {
        describe(self.kind, &self.url, doing, e)
    }

    /// The server's error code of a command that failed, if it was one.
    pub fn code(e: &mongodb::error::Error) -> Option<i32> {
        match e.kind.as_ref() {
            mongodb::error::ErrorKind::Command(c) => Some(c.code),
            mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
                Some(w.code)
            }
            _ => None,
        }
    }

    /// The idle timeout, for cursors read batch by batch.
    pub fn idle() -> Duration {
        crate::net::idle_timeout()
    }
}

/// A driver error in words, with a hint for the common causes.
pub fn describe(kind: ErrorKind, url: &SecretUrl, doing: &str, e: mongodb::error::Error) -> Error {
    use mongodb::error::ErrorKind as K;
    let (message, hint) = match e.kind.as_ref() {
        K::Authentication { message, .. } => (
            format!("authentication failed: {message}"),
            "check the user and password in the URL, and authSource (usually ?authSource=admin)"
                .to_string(),
        ),
        K::ServerSelection { message, .. } => (
            format!(
                "no answer from the server within {}: {}",
                crate::text::format_duration(crate::net::connect_timeout()),
                message.lines().next().unwrap_or("")
            ),
            "check that the server is running and reachable from here (host, port, firewall, TLS)"
                .to_string(),
        ),
        K::Command(c) if c.code == 13 || c.code_name == "Unauthorized" => (
            format!("not authorized: {}", c.message),
            "grant the user the `backup` role (or `read` on each database dumped) to back up, and `restore` (or `readWrite`) to restore".to_string(),
        ),
        other => (other.to_string(), String::new()),
    };
    let error = Error::new(kind, format!("{url}: {doing}: {message}"));
    if hint.is_empty() {
        error
    } else {
        error.with_hint(hint)
    }
}
