//! PM2's saved process list (`~/.pm2/dump.pm2`, written by `pm2 save`) →
//! the same [`Translation`] as an ecosystem file. A dump holds one `pm2_env`
//! object per running process: each instance of an app separately, runtime
//! counters, and the environment flattened next to the settings. This module
//! owns undoing that — grouping instances, mapping the `pm_*_path` fields,
//! dropping runtime state — and then hands each app to `translate`. It must
//! not duplicate any per-key translation.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::translate::{finish, translate_app, Outcome, Source, KNOWN_KEYS};
use crate::{Diagnostic, Level, Options, Pm2Error, Translation};

/// pm2_env fields that describe a running process, not its configuration,
/// or that PM2 writes into every entry whatever the user asked for.
const RUNTIME: &[&str] = &[
    "status",
    "pm_id",
    "pid",
    "restart_time",
    "unstable_restarts",
    "pm_uptime",
    "created_at",
    "unique_id",
    "versioning",
    "version",
    "node_version",
    "km_link",
    "vizion_running",
    "prev_restart_delay",
    "exit_code",
    "username",
    "windowsHide",
    "vizion",
    "pmx",
    "automation",
    "instances",
    "_pm2_version",
    "current_conf",
    // PM2's own per-process default; slotctl writes its own pid files.
    "pm_pid_path",
];

/// Where a dump keeps what an ecosystem file calls otherwise.
const RENAMED: &[(&str, &str)] = &[
    ("pm_exec_path", "script"),
    ("pm_cwd", "cwd"),
    ("pm_out_log_path", "out_file"),
    ("pm_err_log_path", "error_file"),
];

/// Variables PM2 injects into every child; they are not the app's.
fn injected(name: &str) -> bool {
    name.starts_with("PM2_")
        || name == "NODE_APP_INSTANCE"
        || name.starts_with("pm_")
        || RUNTIME.contains(&name)
        || matches!(
            name,
            "name"
                | "namespace"
                | "exec_mode"
                | "exec_interpreter"
                | "autorestart"
                | "kill_timeout"
                | "treekill"
                | "instance_var"
                | "merge_logs"
                | "node_args"
                | "watch"
                | "max_memory_restart"
                | "kill_retry_time"
                | "autostart"
                | "filter_env"
        )
}

/// A flattened environment variable rather than a setting: PM2 copies the
/// whole environment into the top level of each entry.
fn looks_like_env_var(key: &str) -> bool {
    key.chars().any(|c| c.is_ascii_uppercase())
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

pub(crate) fn translate_dump(
    doc: &Value,
    src: &Source<'_>,
    opts: &Options,
) -> Result<Translation, Pm2Error> {
    let Value::Array(entries) = doc else {
        return Err(Pm2Error::Shape {
            file: src.label.to_path_buf(),
            message: "a dump.pm2 holds a list of processes".into(),
        });
    };

    // Instances of one app are separate entries with the same name.
    let mut groups: Vec<(String, Vec<&Map<String, Value>>)> = Vec::new();
    let mut outcomes = Vec::new();
    for (idx, entry) in entries.iter().enumerate() {
        let entry = entry.get("pm2_env").unwrap_or(entry);
        let Value::Object(obj) = entry else {
            outcomes.push(Outcome {
                base_name: None,
                spec: None,
                diagnostics: vec![Diagnostic {
                    level: Level::Error,
                    file: None,
                    app: Some(format!("apps[{idx}]")),
                    key: None,
                    message: "not a process object".into(),
                }],
            });
            continue;
        };
        let key = obj
            .get("name")
            .and_then(Value::as_str)
            .or_else(|| obj.get("pm_exec_path").and_then(Value::as_str))
            .unwrap_or_default()
            .to_string();
        match groups
            .iter_mut()
            .find(|(k, _)| *k == key && !key.is_empty())
        {
            Some((_, members)) => members.push(obj),
            None => groups.push((key, vec![obj])),
        }
    }

    for (idx, (_, members)) in groups.iter().enumerate() {
        let (app, env_count) = as_app(members[0], members.len());
        let mut outcome = translate_app(idx, &app, None, src, opts);
        if env_count > 0 {
            outcome.diagnostics.push(Diagnostic {
                level: Level::Warning,
                file: None,
                app: outcome.base_name.clone(),
                key: Some("env".into()),
                message: format!(
                    "PM2 saved the whole environment of the shell that ran `pm2 start` ({env_count} variables, such as PATH and HOME), and all of it is imported: remove what the app does not need"
                ),
            });
        }
        outcomes.push(outcome);
    }
    Ok(finish(outcomes, Vec::new(), src, opts))
}

/// Turn one dump entry into an ecosystem-style app object. Returns it with
/// the number of environment variables kept.
fn as_app(entry: &Map<String, Value>, instances: usize) -> (Map<String, Value>, usize) {
    let env: BTreeMap<&String, &Value> = entry
        .get("env")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, v)| !injected(k) && !v.is_object() && !v.is_array())
                .collect()
        })
        .unwrap_or_default();

    let mut app = Map::new();
    for (key, value) in entry {
        let k = key.as_str();
        let skip = RUNTIME.contains(&k)
            || k == "env"
            || k.starts_with("axm_")
            || k.starts_with("env_")
            || RENAMED
                .iter()
                .any(|(from, to)| *to == k && entry.contains_key(*from))
            || (entry.get("env").and_then(|e| e.get(k)).is_some() && !KNOWN_KEYS.contains(&k))
            || looks_like_env_var(k)
            // Defaults PM2 writes into every entry.
            || (k == "treekill" && *value == Value::Bool(true))
            || (k == "kill_retry_time" && value.as_u64() == Some(100))
            || (k == "filter_env"
                && (value == &Value::Bool(false) || value.as_array().is_some_and(Vec::is_empty)));
        if skip {
            continue;
        }
        match RENAMED.iter().find(|(from, _)| *from == k) {
            Some((_, to)) => app.insert((*to).to_string(), unsuffixed_log(entry, value)),
            None => app.insert(key.clone(), value.clone()),
        };
    }
    app.insert("instances".into(), Value::from(instances));
    let count = env.len();
    app.insert(
        "env".into(),
        Value::Object(
            env.into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
    );
    (app, count)
}

/// Without `merge_logs`, PM2 gives each instance its own log file by
/// appending `-<pm_id>` to the configured name (`app-out-0.log`); the app's
/// setting is the name without it.
fn unsuffixed_log(entry: &Map<String, Value>, value: &Value) -> Value {
    let (Some(path), Some(id)) = (value.as_str(), entry.get("pm_id").and_then(Value::as_u64))
    else {
        return value.clone();
    };
    if entry.get("merge_logs") == Some(&Value::Bool(true)) {
        return value.clone();
    }
    let suffix = format!("-{id}");
    let (stem, ext) = match path.rsplit_once('.') {
        Some((stem, ext)) if !ext.contains('/') => (stem, format!(".{ext}")),
        _ => (path, String::new()),
    };
    match stem.strip_suffix(&suffix) {
        Some(stem) => Value::from(format!("{stem}{ext}")),
        None => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_shapes() {
        assert!(looks_like_env_var("NODE_ENV"));
        assert!(looks_like_env_var("PM2_HOME"));
        assert!(!looks_like_env_var("name"));
        assert!(!looks_like_env_var("pm_exec_path"));
        assert!(!looks_like_env_var("windowsHide"));
        assert!(!looks_like_env_var("_"));
    }

    #[test]
    fn per_instance_log_suffixes_are_removed() {
        let entry = |merge: bool| {
            serde_json::json!({ "pm_id": 3, "merge_logs": merge })
                .as_object()
                .unwrap()
                .clone()
        };
        let p = Value::from("/l/app-out-3.log");
        assert_eq!(unsuffixed_log(&entry(false), &p), "/l/app-out.log");
        assert_eq!(unsuffixed_log(&entry(true), &p), "/l/app-out-3.log");
        assert_eq!(
            unsuffixed_log(&entry(false), &Value::from("/l/x-out.log")),
            "/l/x-out.log"
        );
        assert_eq!(
            unsuffixed_log(&entry(false), &Value::from("/l.d/out-3")),
            "/l.d/out"
        );
    }
}
