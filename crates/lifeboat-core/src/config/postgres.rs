//! The settings of a `postgres` job, and their validation.

use std::path::PathBuf;

use serde::Deserialize;

use super::{DefaultsSpec, JobSpec};
use crate::error::{Error, Result};
use crate::secret::SecretUrl;

/// The job keys a `postgres` job takes besides the common ones.
pub(crate) const KEYS: &[&str] = &["url", "format", "pg-bin-dir", "globals"];

/// A PostgreSQL job's settings.
#[derive(Debug, Clone)]
pub struct PgJob {
    /// The database (`postgres://`), TLS parameters included.
    pub url: SecretUrl,
    /// The dump format.
    pub format: PgFormat,
    /// Where `pg_dump`, `pg_restore` and `psql` are (default: the `PATH`).
    pub bin_dir: Option<PathBuf>,
    /// Also store `pg_dumpall --globals-only --no-role-passwords` with each snapshot.
    pub globals: bool,
}

impl PgJob {
    /// Path of a PostgreSQL client program (`pg_dump`, `pg_restore`, `psql`).
    pub fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}

/// The dump format of a PostgreSQL job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PgFormat {
    /// `pg_dump -Fc -Z0`: restorable selectively, with a table of contents to verify.
    #[default]
    Custom,
    /// Plain SQL, restored with `psql`.
    Plain,
}

impl std::str::FromStr for PgFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "custom" => Ok(PgFormat::Custom),
            "plain" => Ok(PgFormat::Plain),
            _ => Err(format!("unknown format {s:?}; expected custom or plain")),
        }
    }
}

/// The `postgres` part of a job: a `postgres://` URL that names a database.
pub(crate) fn job(spec: &JobSpec, defaults: &DefaultsSpec) -> Result<PgJob> {
    let url = super::job_url(spec, &["postgres", "postgresql"], "a postgres:// URL")?;
    if url.database().is_none() {
        return Err(Error::config(format!(
            "job {:?}: the URL {url} names no database",
            spec.name
        ))
        .with_hint("add the database name as the URL path: postgres://user@host:5432/DBNAME"));
    }
    Ok(PgJob {
        url,
        format: spec.format.unwrap_or_default(),
        bin_dir: spec
            .pg_bin_dir
            .as_ref()
            .or(defaults.pg_bin_dir.as_ref())
            .map(PathBuf::from),
        globals: spec.globals.unwrap_or(false),
    })
}
