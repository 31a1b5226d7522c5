//! The settings of a `files` job, and their validation.

use std::path::PathBuf;

use super::JobSpec;
use crate::error::{Error, Result};

/// The job keys a `files` job takes besides the common ones.
pub(crate) const KEYS: &[&str] = &["paths", "exclude", "strict"];

/// A tree of files to archive.
#[derive(Debug, Clone)]
pub struct FilesJob {
    /// Absolute directories. One path is the archive's root; with several, each is a folder
    /// of the archive named after its last component.
    pub paths: Vec<PathBuf>,
    /// Gitignore-style patterns left out.
    pub exclude: Vec<String>,
    /// A file that changes while it is read fails the backup (otherwise a warning).
    pub strict: bool,
}

impl FilesJob {
    /// The paths, space-separated (the manifest's `source.url`).
    pub fn describe(&self) -> String {
        self.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The `files` part of a job: absolute directories with distinct last components, and
/// exclusions that parse.
pub(crate) fn job(spec: &JobSpec) -> Result<FilesJob> {
    let name = &spec.name;
    let paths: Vec<PathBuf> = spec
        .paths
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    if paths.is_empty() {
        return Err(
            Error::config(format!("job {name:?}: engine files needs paths"))
                .with_hint("e.g. paths = [\"/data/uploads\", \"/data/logs\"]"),
        );
    }
    let mut roots = std::collections::BTreeSet::new();
    for path in &paths {
        if !path.is_absolute() {
            return Err(Error::config(format!(
                "job {name:?}: paths: {} is not an absolute path",
                path.display()
            ))
            .with_hint(
                "cron runs in another directory: write the whole path, e.g. /data/uploads",
            ));
        }
        let root = path.file_name().map(|n| n.to_os_string());
        if paths.len() > 1 && !root.as_ref().is_some_and(|r| roots.insert(r.clone())) {
            return Err(Error::config(format!(
                "job {name:?}: paths: two paths end in the same name ({}); each becomes a folder of the archive named after it",
                path.display()
            ))
            .with_hint("back them up in two jobs"));
        }
    }
    let exclude = spec.exclude.clone().unwrap_or_default();
    crate::tree::exclusions(&exclude)
        .map_err(|e| Error::config(format!("job {name:?}: exclude: {e}")))?;
    Ok(FilesJob {
        paths,
        exclude,
        strict: spec.strict.unwrap_or(false),
    })
}
