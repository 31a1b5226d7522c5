//! Railway cron services: one config file per run (`railway-<run>.json`; set it as the
//! service's config file), built from the repository's Dockerfile, started on the schedule and
//! never restarted (a failed run shows as failed). Railway reads cron schedules in UTC only.

use super::{command_words, unit_name, File, Run, Target};
use crate::error::{Error, Result};

pub(super) fn generate(runs: &[Run], target: &Target) -> Result<Vec<File>> {
    let mut files = Vec::new();
    for run in runs {
        if run.schedule.timezone() != chrono_tz::UTC {
            return Err(Error::config(format!(
                "Railway runs cron schedules in UTC, but the {} run's schedule is read in {}",
                run.name,
                run.schedule.timezone()
            ))
            .with_hint("write that schedule in UTC (and timezone = \"UTC\") for Railway"));
        }
        let words = command_words(run, run.program.to_string(), target);
        let document = serde_json::json!({
            "$schema": "https://railway.com/railway.schema.json",
            "build": {
                "builder": "DOCKERFILE",
                "dockerfilePath": "Dockerfile",
            },
            "deploy": {
                "startCommand": words.iter().map(|w| super::sh_quote(w)).collect::<Vec<_>>().join(" "),
                "cronSchedule": run.schedule.fields().join(" "),
                "restartPolicyType": "NEVER",
            },
        });
        files.push(File {
            name: format!("railway-{}.json", unit_name(&run.name)),
            contents: format!(
                "{}\n",
                serde_json::to_string_pretty(&document).unwrap_or_default()
            ),
        });
    }
    Ok(files)
}
