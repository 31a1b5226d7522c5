//! The live progress line of a running job on a terminal: bytes read and stored, the rate, the
//! elapsed time, and, when the total can be estimated, a percentage and an ETA. It reads the
//! pipeline's meter (`lifeboat_core::pipeline::meter`) a few times a second, so the stream
//! itself never waits for it. Log lines are written above the line, not through it.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat_core::pipeline::meter::meter;
use lifeboat_core::report::human::bytes;

use crate::CommonArgs;

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// On a terminal, unless --json.
    Auto,
    /// On a terminal, even with --json (stdout stays JSON; the line is on stderr).
    Always,
    /// Never.
    Never,
}

/// The lines being drawn; log lines are printed above them.
static LINES: OnceLock<MultiProgress> = OnceLock::new();

/// The progress line of one job's stream; it stays on screen, finished, when dropped.
pub struct Progress {
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts a line for `job` (`verb`: "backup", "restore", "verify"), if progress is drawn.
    pub fn start(common: &CommonArgs, verb: &str, job: &str) -> Progress {
        let draw = match common.progress {
            ProgressMode::Never => false,
            ProgressMode::Auto => !common.json && std::io::stderr().is_terminal(),
            ProgressMode::Always => std::io::stderr().is_terminal(),
        };
        if !draw {
            return Progress {
                bar: None,
                ticker: None,
            };
        }
        meter().reset();
        let lines =
            LINES.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let bar = lines.add(ProgressBar::new_spinner());
        bar.set_style(unknown_total());
        bar.set_prefix(format!("{verb} {job}"));
        bar.enable_steady_tick(Duration::from_millis(250));
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut known = false;
            loop {
                let reading = meter().read();
                if let (Some((total, _)), false) = (reading.total, known) {
                    ticking.set_length(total.max(1));
                    ticking.set_style(known_total());
                    known = true;
                }
                ticking.set_position(reading.done());
                ticking.set_message(format!(
                    "{} read, {} stored",
                    bytes(reading.raw),
                    bytes(reading.stored)
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Progress {
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        if let Some(bar) = self.bar.take() {
            let reading = meter().read();
            bar.set_message(format!(
                "{} read, {} stored",
                bytes(reading.raw),
                bytes(reading.stored)
            ));
            bar.finish_and_clear();
            if let Some(lines) = LINES.get() {
                lines.remove(&bar);
            }
        }
    }
}

fn unknown_total() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} {spinner} {msg}, {binary_bytes_per_sec}, {elapsed_precise}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn known_total() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} [{bar:24}] {percent:>3}% {msg}, {binary_bytes_per_sec}, {elapsed_precise}, ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// Where log lines go: stderr, above the progress lines while any are drawn.
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine(Vec::new())
    }
}

/// One log line, written whole when dropped.
pub struct LogLine(Vec<u8>);

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes one whole log line that does not come through tracing (the final error line).
pub fn write_log_line(line: &str) {
    use std::io::Write as _;
    let mut out = LogLine(Vec::new());
    let _ = out.write_all(line.as_bytes());
}

impl Drop for LogLine {
    fn drop(&mut self) {
        use std::io::Write as _;
        let write = || {
            let _ = std::io::stderr().write_all(&self.0);
        };
        match LINES.get() {
            Some(lines) => lines.suspend(write),
            None => write(),
        }
    }
}
