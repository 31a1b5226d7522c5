//! A crontab. Each line loads the secrets file into the environment (cron gives commands almost
//! none) and appends the run's output to a log; `%` is escaped, since cron turns it into a
//! newline. `CRON_TZ` (cronie, and most cron daemons but Debian's) reads each schedule in its
//! time zone.

use super::{command_words, header, sh_quote, File, Run, Target};

pub(super) fn generate(runs: &[Run], target: &Target) -> Vec<File> {
    let mut out = header(
        "#",
        "Lifeboat's schedule for cron. Install: crontab FILE (as the user the runs belong to).",
    );
    out.push_str(&format!(
        "#\n\
         # Each line loads {env} (NAME=value lines: the secrets that lifeboat.toml\n\
         # names as ${{VAR}}; readable by that user only), then appends the run's JSON log lines\n\
         # to a file in {logs} (create it first). Cron mails only what a line prints\n\
         # itself, which is nothing once the log is writable: watch the logs or exit codes.\n\
         # CRON_TZ sets the time zone of the lines below it; Debian's cron ignores it and uses\n\
         # the machine's, so there keep the machine on UTC or use the systemd timers instead.\n\
         SHELL=/bin/sh\n",
        env = target.env_file.display(),
        logs = target.log_dir.display(),
    ));
    let mut zone = None;
    for run in runs {
        let tz = run.schedule.timezone();
        if zone != Some(tz) {
            out.push_str(&format!("CRON_TZ={tz}\n"));
            zone = Some(tz);
        }
        let program = target.bin_dir.join(run.program).display().to_string();
        let command = command_words(run, program, target)
            .iter()
            .map(|w| sh_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        let log = target.log_dir.join(format!("{}.log", run.name));
        let line = format!(
            "set -a && . {} && set +a && exec {command} >> {} 2>&1",
            sh_quote(&target.env_file.display().to_string()),
            sh_quote(&log.display().to_string())
        );
        out.push_str(&format!(
            "\n# {}: {}\n{}  {}\n",
            run.name,
            run.description,
            run.schedule.fields().join(" "),
            line.replace('%', "\\%")
        ));
    }
    vec![File {
        name: "crontab".to_string(),
        contents: out,
    }]
}
