//! One public error type for the library, cut by what the caller can do about it.
//!
//! An [`Error`] has a [`ErrorKind`] (which maps to the documented exit codes), a message that
//! says what failed and where, an optional hint that says what to do next, and the underlying
//! cause kept as a `source()` chain rather than flattened into the message.

use std::fmt;

/// What kind of failure this is, from the point of view of the person who must act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration file, a flag or an environment variable is wrong.
    Config,
    /// The request makes sense but is refused to protect data (e.g. a non-empty target).
    Refused,
    /// The database or tool we back up from failed (connection, pg_dump...).
    Source,
    /// The database or tool we restore into failed.
    Sink,
    /// The store (a directory or a bucket) failed.
    Store,
    /// Stored data is missing, damaged or does not match its manifest.
    Integrity,
    /// A snapshot, job or object that was asked for does not exist.
    NotFound,
    /// Another run holds the job's lock.
    Lock,
    /// A clock is known to be wrong (this host's against the store's, or a date that jumped),
    /// so what depends on it (pruning) was not done.
    Clock,
    /// The newest good snapshot is older than the allowed age (the RPO).
    Freshness,
    /// The run was interrupted (SIGINT/SIGTERM) and cleaned up after itself.
    Cancelled,
    /// Encryption or decryption failed: a missing or wrong identity, or a key that cannot be
    /// read. (Tampered ciphertext is `Integrity`.)
    Crypto,
}

impl ErrorKind {
    /// The process exit code documented in README.md and RUNBOOK.md.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Config | ErrorKind::Refused | ErrorKind::Crypto => 2,
            ErrorKind::Integrity => 3,
            ErrorKind::Lock => 4,
            ErrorKind::Freshness => 5,
            ErrorKind::Source
            | ErrorKind::Sink
            | ErrorKind::Store
            | ErrorKind::NotFound
            | ErrorKind::Clock
            | ErrorKind::Cancelled => 1,
        }
    }

    /// A short lowercase name, used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Refused => "refused",
            ErrorKind::Source => "source",
            ErrorKind::Sink => "sink",
            ErrorKind::Store => "store",
            ErrorKind::Integrity => "integrity",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Lock => "lock",
            ErrorKind::Freshness => "freshness",
            ErrorKind::Clock => "clock",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Crypto => "crypto",
        }
    }
}

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The library's error: a kind, a message, an optional hint and the cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    source: Option<Cause>,
    /// Where it happened, as fields for machines: `job`, `snapshot`, `object`...
    context: Vec<(&'static str, String)>,
}

/// Lifeboat's result: the error is [`Error`] unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` saying `message`, with no hint, cause or context yet.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
            source: None,
            context: Vec::new(),
        }
    }

    /// Bad input: configuration, flags, environment (exit 2).
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// The source failed: the dump tool or the server (exit 1).
    pub fn source_failed(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Source, message)
    }

    /// The restore target failed (exit 1).
    pub fn sink_failed(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Sink, message)
    }

    /// The store failed: unreachable, refused, full (exit 1).
    pub fn store(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Store, message)
    }

    /// Data does not match what was recorded: digests, sizes, fingerprints (exit 3).
    pub fn integrity(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Integrity, message)
    }

    /// Asked-for data does not exist: a job, a snapshot, an object (exit 1).
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    /// Adds what the reader should do next.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Says where the error happened (e.g. `job "app"`) in front of the message; the kind, the
    /// hint and the cause chain stay as they are.
    pub fn within(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Adds a sentence to the message (what else is true after this failure).
    pub fn with_note(mut self, note: impl std::fmt::Display) -> Self {
        self.message = format!("{}; {note}", self.message);
        self
    }

    /// Adds a hint only if the error has none.
    pub fn or_hint(mut self, hint: impl Into<String>) -> Self {
        if self.hint.is_none() {
            self.hint = Some(hint.into());
        }
        self
    }

    /// Keeps the underlying cause as the `source()` of this error.
    pub fn with_source(mut self, source: impl Into<Cause>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Records where the error happened as a field (`job`, `snapshot`, `object`), for `--json`
    /// and structured logs; the first value given for a field stays.
    pub fn with_context(mut self, field: &'static str, value: impl std::fmt::Display) -> Self {
        if !self.context.iter().any(|(f, _)| *f == field) {
            self.context.push((field, value.to_string()));
        }
        self
    }

    /// The context fields, in the order they were added.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// What kind of failure this is (it decides the exit code).
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What failed, in one sentence.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do next, when the library knows.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The process exit code for this error (README.md's table).
    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }

    /// The messages of the underlying causes, outermost first.
    pub fn causes(&self) -> Vec<String> {
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            causes.push(s.to_string());
            source = s.source();
        }
        causes
    }

    /// The error as `--json` output and JSON log lines carry it: `kind`, `message`, `causes`
    /// (an array), `context` (an object), `hint` and `exit_code`.
    pub fn to_json(&self) -> serde_json::Value {
        let context: serde_json::Map<String, serde_json::Value> = self
            .context
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "kind": self.kind.as_str(),
            "message": self.message,
            "causes": self.causes(),
            "context": context,
            "hint": self.hint,
            "exit_code": self.exit_code(),
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Adds context to an `io::Error` or any other cause while choosing the kind.
pub trait ResultExt<T> {
    /// Wraps the error as the cause of a new error of `kind` saying `message()`.
    fn or_kind(self, kind: ErrorKind, message: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E> ResultExt<T> for std::result::Result<T, E>
where
    E: Into<Cause>,
{
    fn or_kind(self, kind: ErrorKind, message: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(kind, message()).with_source(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_fields_keep_the_first_value_and_the_chain_stays() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::store("writing failed")
            .with_source(io)
            .with_context("snapshot", "20261203T000000Z-abcdef")
            .with_context("job", "app")
            .with_context("job", "other");
        assert_eq!(
            e.context(),
            &[
                ("snapshot", "20261203T000000Z-abcdef".to_string()),
                ("job", "app".to_string())
            ]
        );
        assert_eq!(
            std::error::Error::source(&e).map(|s| s.to_string()),
            Some("disk on fire".to_string())
        );
        assert_eq!(ErrorKind::Crypto.exit_code(), 2);
    }

    #[test]
    fn exit_codes_match_the_design() {
        assert_eq!(ErrorKind::Config.exit_code(), 2);
        assert_eq!(ErrorKind::Source.exit_code(), 1);
        assert_eq!(ErrorKind::Integrity.exit_code(), 3);
        assert_eq!(ErrorKind::Lock.exit_code(), 4);
        assert_eq!(ErrorKind::Freshness.exit_code(), 5);
    }

    #[test]
    fn cause_is_kept_as_a_chain() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::store("could not write x").with_source(io);
        assert_eq!(e.to_string(), "could not write x");
        let cause = std::error::Error::source(&e).map(|c| c.to_string());
        assert_eq!(cause.as_deref(), Some("disk on fire"));
    }
}
