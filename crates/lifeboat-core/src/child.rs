//! A child process (`pg_dump`, `pg_restore`, `psql`) whose output is a stream.
//!
//! The end of stdout is not success: only an exit status of 0 after the last byte is. stderr is
//! drained concurrently (a child blocked on a full stderr pipe would otherwise hang the dump) and
//! its tail is kept for the error message.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};

/// How much of a child's stderr is kept for messages.
const STDERR_TAIL: usize = 64 * 1024;

/// A child process (pg_dump, pg_restore, psql) whose stderr is kept for error messages and
/// whose exit is checked, never assumed.
pub struct ChildProcess {
    name: String,
    child: Child,
    stderr: Option<JoinHandle<Vec<u8>>>,
    kind: ErrorKind,
}

impl ChildProcess {
    /// Starts `command`. `kind` is the error kind of its failures (source or sink);
    /// `install_hint` says what to do when the program is missing.
    pub fn spawn(
        mut command: Command,
        program: &Path,
        kind: ErrorKind,
        install_hint: &str,
    ) -> Result<Self> {
        let name = program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        command.stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            let err = Error::new(kind, format!("cannot run {}: {e}", program.display()));
            if e.kind() == std::io::ErrorKind::NotFound {
                err.with_hint(install_hint.to_string())
            } else {
                err
            }
        })?;
        let stderr = child.stderr.take().map(|mut pipe| {
            tokio::spawn(async move {
                let mut tail = Vec::new();
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
                tail
            })
        });
        Ok(ChildProcess {
            name,
            child,
            stderr,
            kind,
        })
    }

    /// The program's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's stdout, once (the stream a capture reads).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's stdin, once (the stream a restore feeds).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The OS process id, while the child runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the child (e.g. so an uncommitted transaction rolls back) and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for the child; `Ok` only on exit status 0. stderr is in the error message.
    pub async fn finish(mut self) -> Result<String> {
        let status =
            self.child.wait().await.map_err(|e| {
                Error::new(self.kind, format!("cannot wait for {}: {e}", self.name))
            })?;
        let stderr = match self.stderr.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
        if status.success() {
            Ok(stderr)
        } else {
            Err(Error::new(
                self.kind,
                format!(
                    "{} {}{}",
                    self.name,
                    describe_status(status),
                    stderr_suffix(&stderr)
                ),
            ))
        }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        " (it wrote nothing to stderr)".to_string()
    } else {
        format!(": {stderr}")
    }
}

fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("was killed by signal {sig}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "ended abnormally".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_status_decides_not_end_of_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo data; echo 'it broke' >&2; exit 3"])
            .stdout(Stdio::piped());
        let mut child =
            ChildProcess::spawn(cmd, Path::new("sh"), ErrorKind::Source, "install sh").unwrap();
        let mut out = String::new();
        child
            .take_stdout()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert_eq!(out, "data\n");
        let err = child.finish().await.unwrap_err();
        assert_eq!(err.message(), "sh exited with status 3: it broke");
    }

    #[tokio::test]
    async fn a_missing_program_says_what_to_install() {
        let cmd = Command::new("/nonexistent/pg_dump");
        let err = ChildProcess::spawn(
            cmd,
            Path::new("/nonexistent/pg_dump"),
            ErrorKind::Source,
            "apt-get install postgresql-client",
        )
        .err()
        .unwrap();
        assert_eq!(err.hint(), Some("apt-get install postgresql-client"));
    }
}
