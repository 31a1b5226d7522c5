//! A child process (`pg_dump`, `pg_restore`, `psql`) whose output is a stream.
//!
//! The end of stdout is not success: only an exit status of 0 after the last byte is. stderr is
//! drained concurrently (a child blocked on a full stderr pipe would otherwise hang the dump) and
//! its tail is kept for the error message.
//!
//! A dump's stdout is a [`DumpPipe`]: a large pipe read in naps rather than on every write, so
//! that the dump's small writes neither wake the reader nor wait for it.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

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
        let mut child = command
            .spawn()
            .map_err(|e| cannot_run(program, &e, kind, install_hint))?;
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

    /// Starts `command` as [`spawn`](Self::spawn) does, with its stdout going into a
    /// [`DumpPipe`], returned beside it.
    pub fn spawn_dumping(
        mut command: Command,
        program: &Path,
        kind: ErrorKind,
        install_hint: &str,
    ) -> Result<(Self, DumpPipe)> {
        let (pipe, write_end) = DumpPipe::new(true).map_err(|e| {
            Error::new(
                kind,
                format!("cannot make a pipe for {}: {e}", program.display()),
            )
        })?;
        command.stdout(Stdio::from(write_end));
        // `spawn` drops the command, and with it this process's copy of the write end: the pipe
        // ends when the child's does.
        let child = Self::spawn(command, program, kind, install_hint)?;
        Ok((child, pipe))
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

/// The capacity a [`DumpPipe`] asks for: the most an unprivileged process may
/// (`/proc/sys/fs/pipe-max-size`). At pg_dump's pace (about 250 MB/s) it holds 4 ms of dump, more
/// than a nap, where Linux's default of 64 KiB holds a quarter of a millisecond.
const DUMP_PIPE_SIZE: usize = 1024 * 1024;

/// How long a [`DumpPipe`] waits after finding the pipe empty (tokio's timers tick in
/// milliseconds). Doubled while the pipe stays empty, up to [`LONGEST_NAP`].
const NAP: Duration = Duration::from_millis(1);
/// The longest nap while a dump sends nothing (e.g. pg_dump waiting for a lock).
const LONGEST_NAP: Duration = Duration::from_millis(8);

/// The read end of the pipe a child writes its dump into.
///
/// pg_dump writes in 4 KiB pieces. Polled (epoll), a pipe wakes its reader on every write, and
/// every wake-up costs CPU on both sides: about one CPU-second per backup of the bench
/// database's 731 MiB dump on a 2-core host (benches/README.md). On a busy host that CPU comes
/// out of the dump's own time. So a pipe that could be grown to [`DUMP_PIPE_SIZE`] is never polled: once it
/// is found empty, the reader naps ([`NAP`]) while the dump fills it, and takes hundreds of KiB
/// per read. A pipe that could not be grown would fill during a nap and hold the dump up; it is
/// read as it becomes readable instead.
pub struct DumpPipe(Reading);

enum Reading {
    /// Non-blocking reads with naps in between.
    Napping {
        fd: OwnedFd,
        /// The nap's timer (made on the first nap, then reused).
        nap: Option<Pin<Box<Sleep>>>,
        napping: bool,
        next_nap: Duration,
    },
    /// Reads as the pipe becomes readable (tokio's reactor).
    Polled(tokio::net::unix::pipe::Receiver),
}

impl DumpPipe {
    /// A new pipe: its read end, and the write end to give the child. It naps if `nap` and the
    /// pipe could be grown.
    fn new(nap: bool) -> std::io::Result<(DumpPipe, OwnedFd)> {
        use rustix::pipe::{pipe_with, PipeFlags};
        let (read_end, write_end) = pipe_with(PipeFlags::CLOEXEC)?;
        #[cfg(target_os = "linux")]
        let grown = rustix::pipe::fcntl_setpipe_size(&read_end, DUMP_PIPE_SIZE)
            .is_ok_and(|size| size >= DUMP_PIPE_SIZE);
        #[cfg(not(target_os = "linux"))]
        let grown = false;
        let reading = if nap && grown {
            rustix::io::ioctl_fionbio(&read_end, true)?;
            Reading::Napping {
                fd: read_end,
                nap: None,
                napping: false,
                next_nap: NAP,
            }
        } else {
            Reading::Polled(tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)?)
        };
        Ok((DumpPipe(reading), write_end))
    }
}

impl AsyncRead for DumpPipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let (fd, nap, napping, next_nap) = match &mut self.get_mut().0 {
            Reading::Polled(receiver) => return Pin::new(receiver).poll_read(cx, buf),
            Reading::Napping {
                fd,
                nap,
                napping,
                next_nap,
            } => (fd, nap, napping, next_nap),
        };
        loop {
            if let (true, Some(timer)) = (*napping, nap.as_mut()) {
                ready!(timer.as_mut().poll(cx));
                *napping = false;
            }
            match rustix::io::read(&*fd, buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    *next_nap = NAP;
                    return Poll::Ready(Ok(()));
                }
                Err(rustix::io::Errno::AGAIN) => {
                    let wake_at = Instant::now() + *next_nap;
                    match nap {
                        Some(timer) => timer.as_mut().reset(wake_at),
                        None => *nap = Some(Box::pin(tokio::time::sleep_until(wake_at))),
                    }
                    *napping = true;
                    *next_nap = (*next_nap * 2).min(LONGEST_NAP);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
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

/// Why a program could not be started. A program named by a path (a configured `pg-bin-dir`)
/// that is not there is a configuration mistake (exit 2, naming the directory); a program
/// looked up on the `PATH` that is missing is the host's (`install_hint` says what to install).
pub fn cannot_run(
    program: &Path,
    e: &std::io::Error,
    kind: ErrorKind,
    install_hint: &str,
) -> Error {
    let dir = program.parent().filter(|d| !d.as_os_str().is_empty());
    match dir {
        Some(dir) if e.kind() == std::io::ErrorKind::NotFound => {
            let what = if dir.is_dir() {
                format!(
                    "{} is not in {}",
                    program
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                    dir.display()
                )
            } else {
                format!("the directory {} does not exist", dir.display())
            };
            Error::config(format!("cannot run {}: {what}", program.display())).with_hint(
                "check pg-bin-dir (or --pg-bin-dir): it names the directory of the PostgreSQL client programs, e.g. /usr/lib/postgresql/17/bin",
            )
        }
        _ => {
            let err = Error::new(kind, format!("cannot run {}: {e}", program.display()));
            if e.kind() == std::io::ErrorKind::NotFound {
                err.with_hint(install_hint.to_string())
            } else {
                err
            }
        }
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

    /// What `sh -c 'seq 1 N'` prints.
    fn lines_up_to(n: u32) -> Vec<u8> {
        (1..=n)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect()
    }

    /// Runs `script` with its stdout in a dump pipe (napping or polled) and reads it to the end.
    async fn read_dump_of(script: &str, nap: bool) -> (Vec<u8>, Result<String>) {
        let (pipe, write_end) = DumpPipe::new(nap).unwrap();
        assert_eq!(matches!(pipe.0, Reading::Napping { .. }), nap);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]).stdout(Stdio::from(write_end));
        let child = ChildProcess::spawn(cmd, Path::new("sh"), ErrorKind::Source, "").unwrap();
        let mut out = Vec::new();
        // A write end left open in this process would never let the read end; fail, not hang.
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::copy(&mut { pipe }, &mut out),
        )
        .await
        .expect("the dump pipe did not end with its writer")
        .unwrap();
        (out, child.finish().await)
    }

    #[tokio::test]
    async fn a_dump_pipe_delivers_every_byte_in_order_both_ways() {
        // Small writes at full speed (the napping reader takes many per read), then pauses
        // longer than the longest nap, then a last piece.
        let script = "seq 1 300000; sleep 0.05; echo paused; sleep 0.02; seq 1 10";
        let mut expected = lines_up_to(300000);
        expected.extend_from_slice(b"paused\n");
        expected.extend(lines_up_to(10));
        for nap in [true, false] {
            let (out, status) = read_dump_of(script, nap).await;
            assert!(out == expected, "nap {nap}: {} bytes differ", out.len());
            status.unwrap();
        }
    }

    #[tokio::test]
    async fn a_dump_pipe_ends_with_its_child_and_the_status_still_decides() {
        let (out, status) = read_dump_of("echo partial; exit 2", true).await;
        assert_eq!(out, b"partial\n");
        assert_eq!(
            status.unwrap_err().message(),
            "sh exited with status 2 (it wrote nothing to stderr)"
        );
    }

    #[tokio::test]
    async fn spawn_dumping_gives_the_child_stdout_to_the_pipe() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "seq 1 1000"]);
        let (child, mut pipe) =
            ChildProcess::spawn_dumping(cmd, Path::new("sh"), ErrorKind::Source, "").unwrap();
        let mut out = Vec::new();
        pipe.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, lines_up_to(1000));
        child.finish().await.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_dump_pipe_is_grown_so_a_nap_does_not_fill_it() {
        let (pipe, _write_end) = DumpPipe::new(true).unwrap();
        let Reading::Napping { fd, .. } = &pipe.0 else {
            panic!("the pipe was not grown to {DUMP_PIPE_SIZE} bytes, so it is polled");
        };
        assert!(rustix::pipe::fcntl_getpipe_size(fd).unwrap() >= DUMP_PIPE_SIZE);
    }

    #[tokio::test]
    async fn a_missing_program_says_what_to_install() {
        let program = Path::new("lifeboat-no-such-pg_dump");
        let err = ChildProcess::spawn(
            Command::new(program),
            program,
            ErrorKind::Source,
            "apt-get install postgresql-client",
        )
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::Source);
        assert_eq!(err.hint(), Some("apt-get install postgresql-client"));
    }

    /// Regression (Trust III, 23): a `pg-bin-dir` that does not exist was exit 1, a failure of
    /// the work, instead of 2, a mistake in the configuration.
    #[tokio::test]
    async fn a_pg_bin_dir_that_does_not_exist_is_a_configuration_error() {
        let program = Path::new("/nonexistent/bin/pg_dump");
        let err = ChildProcess::spawn(
            Command::new(program),
            program,
            ErrorKind::Source,
            "apt-get install postgresql-client",
        )
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.message().contains("/nonexistent/bin does not exist"),
            "{err}"
        );
    }
}
