//! Kubernetes CronJobs, one YAML document each. `concurrencyPolicy: Forbid` (Lifeboat's lock
//! would refuse a second run anyway, exit 4, and report it as a failure), a
//! `startingDeadlineSeconds` so a run missed during an outage starts late rather than never, a
//! small `backoffLimit`, `timeZone`, the secrets as environment from a Secret through `envFrom`,
//! and the configuration file from a ConfigMap.

use super::{command_words, header, unit_name, File, Run, Target};

pub(super) fn generate(runs: &[Run], target: &Target) -> Vec<File> {
    let config_dir = target
        .config
        .parent()
        .map_or_else(|| "/etc/lifeboat".to_string(), |p| p.display().to_string());
    let mut out = header(
        "#",
        &format!(
            "Lifeboat's schedule for Kubernetes. Needs the Secret {secret} (the variables lifeboat.toml\n# names as ${{VAR}}) and the ConfigMap lifeboat-config (lifeboat.toml), e.g.:\n#   kubectl create secret generic {secret} --from-env-file=env\n#   kubectl create configmap lifeboat-config --from-file=lifeboat.toml",
            secret = target.kubernetes_secret
        ),
    );
    for run in runs {
        let words = command_words(run, run.program.to_string(), target);
        let name = format!("lifeboat-{}", unit_name(&run.name));
        // A run that cannot start within the shorter of an hour and its interval is skipped:
        // it would otherwise overlap the next one.
        let deadline = run
            .schedule
            .longest_interval(chrono::Utc::now())
            .num_seconds()
            .clamp(60, 3600);
        out.push_str(&format!(
            "---\n\
             # {description}\n\
             apiVersion: batch/v1\n\
             kind: CronJob\n\
             metadata:\n\
             \x20 name: {name}\n\
             \x20 labels:\n\
             \x20   app.kubernetes.io/name: lifeboat\n\
             spec:\n\
             \x20 schedule: {schedule}\n\
             \x20 timeZone: {tz}\n\
             \x20 concurrencyPolicy: Forbid\n\
             \x20 startingDeadlineSeconds: {deadline}\n\
             \x20 successfulJobsHistoryLimit: 3\n\
             \x20 failedJobsHistoryLimit: 5\n\
             \x20 jobTemplate:\n\
             \x20   spec:\n\
             \x20     backoffLimit: 1\n\
             \x20     template:\n\
             \x20       metadata:\n\
             \x20         labels:\n\
             \x20           app.kubernetes.io/name: lifeboat\n\
             \x20       spec:\n\
             \x20         restartPolicy: Never\n\
             \x20         securityContext:\n\
             \x20           runAsNonRoot: true\n\
             \x20         containers:\n\
             \x20           - name: lifeboat\n\
             \x20             image: {image}\n\
             \x20             command: [{command}]\n\
             \x20             args: [{args}]\n\
             \x20             envFrom:\n\
             \x20               - secretRef:\n\
             \x20                   name: {secret}\n\
             \x20             volumeMounts:\n\
             \x20               - name: config\n\
             \x20                 mountPath: {config_dir}\n\
             \x20                 readOnly: true\n\
             \x20         volumes:\n\
             \x20           - name: config\n\
             \x20             configMap:\n\
             \x20               name: lifeboat-config\n",
            description = run.description,
            schedule = yaml_string(&run.schedule.fields().join(" ")),
            tz = yaml_string(&run.schedule.timezone().to_string()),
            image = yaml_string(&target.image),
            command = yaml_string(&words[0]),
            args = words[1..]
                .iter()
                .map(|w| yaml_string(w))
                .collect::<Vec<_>>()
                .join(", "),
            secret = target.kubernetes_secret,
            config_dir = yaml_string(&config_dir),
        ));
    }
    vec![File {
        name: "lifeboat.yaml".to_string(),
        contents: out,
    }]
}

/// A YAML double-quoted string (JSON's quoting is valid YAML).
fn yaml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
