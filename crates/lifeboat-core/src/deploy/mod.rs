//! Deployment files generated from the configuration's schedules: a crontab, systemd units,
//! Kubernetes CronJobs and Railway cron services (`lifeboat-backup schedule --print FORMAT`).
//!
//! Every format carries the same runs ([`runs`]): one backup run per distinct schedule of the
//! configured jobs, and the `[verify]` and `[drill]` runs. The files are text built here, with no
//! template engine: each format's module says what its target expects and why.

mod crontab;
mod kubernetes;
mod railway;
mod systemd;

use std::path::PathBuf;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::schedule::Schedule;
use crate::verify::Level;

/// The formats `schedule --print` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One crontab.
    Crontab,
    /// A `.service` and a `.timer` per run.
    Systemd,
    /// One YAML file of CronJobs.
    Kubernetes,
    /// A Railway config file per run (one cron service each).
    Railway,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "crontab" | "cron" => Ok(Format::Crontab),
            "systemd" => Ok(Format::Systemd),
            "kubernetes" | "k8s" => Ok(Format::Kubernetes),
            "railway" => Ok(Format::Railway),
            _ => Err(format!(
                "unknown format {s:?}; expected crontab, systemd, kubernetes or railway"
            )),
        }
    }
}

/// Where things live on the machine (or in the image) that runs the schedule.
#[derive(Debug, Clone)]
pub struct Target {
    /// The configuration file there.
    pub config: PathBuf,
    /// The directory of the three binaries (crontab and systemd).
    pub bin_dir: PathBuf,
    /// Where the crontab's runs append their logs.
    pub log_dir: PathBuf,
    /// A root-only file of `NAME=value` lines with the secrets the configuration's `${VAR}`s
    /// name (crontab and systemd).
    pub env_file: PathBuf,
    /// The container image (Kubernetes).
    pub image: String,
    /// The Kubernetes Secret whose keys become the environment, and the ConfigMap holding the
    /// configuration file.
    pub kubernetes_secret: String,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            config: PathBuf::from("/etc/lifeboat/lifeboat.toml"),
            bin_dir: PathBuf::from("/usr/local/bin"),
            log_dir: PathBuf::from("/var/log/lifeboat"),
            env_file: PathBuf::from("/etc/lifeboat/env"),
            image: "lifeboat:latest".to_string(),
            kubernetes_secret: "lifeboat-env".to_string(),
        }
    }
}

/// One scheduled command.
#[derive(Debug, Clone)]
pub struct Run {
    /// A short name for units and CronJobs: `backup`, `backup-app-db`, `verify`, `drill`.
    pub name: String,
    /// What it does, for comments.
    pub description: String,
    /// `lifeboat-backup` or `lifeboat-verify`.
    pub program: &'static str,
    /// Its arguments after `--config FILE --log-format json --json`.
    pub args: Vec<String>,
    /// When.
    pub schedule: Schedule,
}

/// A generated file: its name (relative) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// e.g. `lifeboat-backup.timer`.
    pub name: String,
    /// The whole text.
    pub contents: String,
}

/// What a generation produced, and the jobs it left out (they have no schedule).
#[derive(Debug, Clone)]
pub struct Generated {
    /// The files, in order.
    pub files: Vec<File>,
    /// Jobs without a `schedule`, which no file runs.
    pub unscheduled: Vec<String>,
}

/// The runs a configuration schedules: its jobs grouped by schedule (jobs sharing one run in
/// one command, in the file's order), then `[verify]`, then `[drill]`.
pub fn runs(config: &Config) -> Vec<Run> {
    let mut groups: Vec<(Schedule, Vec<String>)> = Vec::new();
    for job in &config.jobs {
        let Some(schedule) = &job.schedule else {
            continue;
        };
        match groups.iter_mut().find(|(s, _)| {
            s.expression() == schedule.expression() && s.timezone() == schedule.timezone()
        }) {
            Some((_, jobs)) => jobs.push(job.name.clone()),
            None => groups.push((schedule.clone(), vec![job.name.clone()])),
        }
    }
    let several = groups.len() > 1;
    let mut runs: Vec<Run> = groups
        .into_iter()
        .map(|(schedule, jobs)| Run {
            name: if several {
                format!("backup-{}", unit_name(&jobs[0]))
            } else {
                "backup".to_string()
            },
            description: format!("back up {}", jobs.join(", ")),
            program: "lifeboat-backup",
            args: jobs,
            schedule,
        })
        .collect();
    if let Some(verify) = &config.verify_runs {
        runs.push(Run {
            name: "verify".into(),
            description: format!(
                "check the newest snapshot of every job (verify, {} level)",
                verify.level.as_str()
            ),
            program: "lifeboat-verify",
            args: vec!["--level".into(), verify.level.as_str().into()],
            schedule: verify.schedule.clone(),
        });
    }
    if let Some(drill) = &config.drill_runs {
        runs.push(Run {
            name: "drill".into(),
            description:
                "restore the newest snapshot of every job into the scratch server and compare (a DR drill)"
                    .into(),
            program: "lifeboat-verify",
            args: vec!["--level".into(), Level::Drill.as_str().into()],
            schedule: drill.schedule.clone(),
        });
    }
    runs
}

/// The files of `format` for `config`'s runs.
pub fn generate(config: &Config, format: Format, target: &Target) -> Result<Generated> {
    let runs = runs(config);
    let unscheduled: Vec<String> = config
        .jobs
        .iter()
        .filter(|j| j.schedule.is_none())
        .map(|j| j.name.clone())
        .collect();
    if runs.is_empty() {
        return Err(Error::config(
            "nothing is scheduled: no job has a schedule, and there is no [verify] or [drill] table",
        )
        .with_hint("add schedule = \"0 3 * * *\" to a [[job]] (and timezone = \"Europe/Berlin\" for local time)"));
    }
    let files = match format {
        Format::Crontab => crontab::generate(&runs, target),
        Format::Systemd => systemd::generate(&runs, target)?,
        Format::Kubernetes => kubernetes::generate(&runs, target),
        Format::Railway => railway::generate(&runs, target)?,
    };
    Ok(Generated { files, unscheduled })
}

/// The command line of a run, as words: program, `--config FILE --log-format json --json`
/// (every line it writes is JSON: the log on stderr, the report on stdout), arguments.
fn command_words(run: &Run, program: String, target: &Target) -> Vec<String> {
    let mut words = vec![
        program,
        "--config".to_string(),
        target.config.display().to_string(),
        "--log-format".to_string(),
        "json".to_string(),
        "--json".to_string(),
    ];
    words.extend(run.args.iter().cloned());
    words
}

/// A word quoted for `sh` when it needs it.
fn sh_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A job name as a unit or Kubernetes name: lowercase letters, digits and dashes.
fn unit_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_string()
}

/// The header every generated file starts with (`comment` is the format's comment marker).
fn header(comment: &str, what: &str) -> String {
    format!(
        "{comment} {what}\n{comment} Generated by `lifeboat-backup schedule`: change the schedules in lifeboat.toml and\n{comment} generate again rather than editing this file.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(text, None, &|_| Some("x".into())).unwrap()
    }

    #[test]
    fn jobs_sharing_a_schedule_share_a_run() {
        let c = config(
            "[[job]]\nname = \"db\"\nengine = \"postgres\"\nurl = \"postgres://h/db\"\nschedule = \"0 3 * * *\"\n\
             [[job]]\nname = \"cache\"\nengine = \"redis\"\nurl = \"redis://h\"\nschedule = \"0 3 * * *\"\n\
             [[job]]\nname = \"uploads\"\nengine = \"files\"\npaths = [\"/data\"]\nschedule = \"0 4 * * *\"\ntimezone = \"Europe/Berlin\"\n\
             [[job]]\nname = \"adhoc\"\nengine = \"files\"\npaths = [\"/x\"]\n\
             [verify]\nschedule = \"0 5 * * *\"\n[drill]\nschedule = \"0 6 * * 0\"\nscratch-url = \"postgres://h/postgres\"\n",
        );
        let runs = runs(&c);
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["backup-db", "backup-uploads", "verify", "drill"]);
        assert_eq!(runs[0].args, ["db", "cache"]);
        let generated = generate(&c, Format::Crontab, &Target::default()).unwrap();
        assert_eq!(generated.unscheduled, ["adhoc"]);
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/usr/local/bin/x"), "/usr/local/bin/x");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(unit_name("App_DB"), "app-db");
    }
}
