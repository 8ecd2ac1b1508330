//! PM2 ecosystem document (already parsed to JSON values) → [`AppSpec`]s and
//! [`Diagnostic`]s. This module owns PM2's spellings: every key of the PM2
//! field table, its aliases, defaults and the slotgate extension keys. Every
//! key it is given ends up either translated or named in a warning; it must
//! never panic on odd input, and never read files or start processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Number, Value};

use crate::interpreter::{by_extension, ByExtension};
use crate::spec::{AppSpec, Diagnostic, HealthCheck, Level, Translation, MIN_MIN_UPTIME_MS};
use crate::units::{normalise_cron, parse_duration, parse_size};
use crate::{Options, Pm2Error};

/// Keys PM2 accepts that only matter to Node.js or to PM2's paid monitoring.
const NODE_OR_APM_ONLY: &[&str] = &[
    "source_map_support",
    "disable_source_map_support",
    "vizion",
    "post_update",
    "pmx",
    "automation",
    "trace",
    "disable_trace",
    "v8",
    "event_loop_inspector",
    "deep_monitoring",
    "io",
    "windowsHide",
    "install_url",
    "name_prefix",
    "execute_command",
    "write",
    "username",
];

/// Every key `translate_app` reads, for "did you mean" suggestions.
pub(crate) const KNOWN_KEYS: &[&str] = &[
    "script",
    "exec",
    "cmd",
    "command",
    "name",
    "namespace",
    "cwd",
    "args",
    "interpreter",
    "exec_interpreter",
    "interpreter_args",
    "node_args",
    "interpreterArgs",
    "env",
    "filter_env",
    "port",
    "append_env_to_name",
    "instances",
    "exec_mode",
    "instance_var",
    "increment_var",
    "uid",
    "user",
    "gid",
    "autostart",
    "autorestart",
    "stop_exit_codes",
    "min_uptime",
    "max_restarts",
    "restart_delay",
    "exp_backoff_restart_delay",
    "max_memory_restart",
    "cron_restart",
    "cron",
    "kill_timeout",
    "kill_retry_time",
    "shutdown_with_message",
    "treekill",
    "wait_ready",
    "listen_timeout",
    "watch",
    "ignore_watch",
    "watch_options",
    "watch_delay",
    "out_file",
    "out",
    "output",
    "out_log",
    "error_file",
    "error",
    "err",
    "err_file",
    "err_log",
    "log_file",
    "log",
    "merge_logs",
    "combine_logs",
    "log_date_format",
    "time",
    "log_type",
    "disable_logs",
    "pid_file",
    "pid",
    "force",
    "stop_signal",
    "health_check_url",
];

/// PM2's `time: true` format.
const TIME_FORMAT: &str = "YYYY-MM-DDTHH:mm:ss";

/// Signals accepted by the `stop_signal` extension key.
const SIGNALS: &[&str] = &[
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGKILL", "SIGWINCH",
];

/// Where the document came from, for diagnostics and path resolution.
pub(crate) struct Source<'a> {
    /// Named in errors; `<input>` for text.
    pub label: &'a Path,
    /// Put into each diagnostic when the input was a file.
    pub file: Option<&'a Path>,
    /// Relative `cwd` (and, when `cwd` is absent, everything else) resolves
    /// against this.
    pub base_dir: Option<&'a Path>,
}

/// One app after translation, before `--only` and duplicate checks.
pub(crate) struct Outcome {
    /// The name before `append_env_to_name`, which `--only` matches.
    pub base_name: Option<String>,
    pub spec: Option<AppSpec>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Split a parsed ecosystem document into apps and translate each.
pub(crate) fn translate_document(
    doc: &Value,
    src: &Source<'_>,
    opts: &Options,
) -> Result<Translation, Pm2Error> {
    let shape_err = |message: &str| Pm2Error::Shape {
        file: src.label.to_path_buf(),
        message: message.into(),
    };
    let mut file_diags = Vec::new();
    let mut deploy_env = None;
    let items: Vec<&Value> = match doc {
        Value::Array(items) => items.iter().collect(),
        Value::Object(top) if top.contains_key("apps") => {
            for (key, value) in top {
                match key.as_str() {
                    "apps" => {}
                    "deploy" => {
                        deploy_env = opts
                            .env_profile
                            .as_deref()
                            .and_then(|p| value.get(p))
                            .and_then(|d| d.get("env"))
                            .and_then(Value::as_object);
                        file_diags.push(diag(
                            Level::Warning,
                            None,
                            Some("deploy"),
                            if deploy_env.is_some() {
                                "ignored except for the selected environment's `env`: slotgate does not deploy over git/ssh"
                            } else {
                                "ignored: slotgate does not deploy over git/ssh"
                            },
                        ));
                    }
                    _ => file_diags.push(diag(
                        Level::Warning,
                        None,
                        Some(key),
                        "unknown top-level key; ignored (PM2 files have `apps` and `deploy`)",
                    )),
                }
            }
            match &top["apps"] {
                Value::Array(items) => items.iter().collect(),
                app @ Value::Object(_) => vec![app],
                _ => return Err(shape_err("`apps` must be a list of app objects")),
            }
        }
        app @ Value::Object(_) => vec![app],
        _ => {
            return Err(shape_err(
                "expected an app object, a list of apps, or { apps: [...] }",
            ))
        }
    };

    let mut outcomes = Vec::new();
    for (idx, item) in items.into_iter().enumerate() {
        let outcome = match item {
            Value::Object(obj) => translate_app(idx, obj, deploy_env, src, opts),
            _ => Outcome {
                base_name: None,
                spec: None,
                diagnostics: vec![diag(
                    Level::Error,
                    Some(&format!("apps[{idx}]")),
                    None,
                    "not an object; each app is an object with at least `script`",
                )],
            },
        };
        outcomes.push(outcome);
    }
    Ok(finish(outcomes, file_diags, src, opts))
}

/// Apply `--only`, refuse duplicate names and stamp diagnostics with the
/// file.
pub(crate) fn finish(
    outcomes: Vec<Outcome>,
    mut diagnostics: Vec<Diagnostic>,
    src: &Source<'_>,
    opts: &Options,
) -> Translation {
    let only: Vec<&str> = opts
        .only
        .iter()
        .flat_map(|o| o.split(','))
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    let selected = |o: &Outcome| {
        only.is_empty()
            || only.iter().any(|want| {
                o.base_name.as_deref() == Some(*want)
                    || o.spec.as_ref().is_some_and(|s| s.name == *want)
            })
    };
    for want in &only {
        let known = outcomes.iter().any(|o| {
            o.base_name.as_deref() == Some(*want)
                || o.spec.as_ref().is_some_and(|s| s.name == *want)
        });
        if !known {
            diagnostics.push(diag(
                Level::Warning,
                None,
                Some("--only"),
                &format!("no app named `{want}` in this file"),
            ));
        }
    }

    let mut apps: Vec<AppSpec> = Vec::new();
    for outcome in outcomes.into_iter().filter(selected) {
        diagnostics.extend(outcome.diagnostics);
        let Some(spec) = outcome.spec else { continue };
        if apps.iter().any(|a| a.name == spec.name) {
            diagnostics.push(diag(
                Level::Error,
                Some(&spec.name),
                Some("name"),
                "another app already has this name; slotgate app names must be unique (use `instances` for copies of one app)",
            ));
            continue;
        }
        apps.push(spec);
    }
    for d in &mut diagnostics {
        d.file = src.file.map(Path::to_path_buf);
    }
    Translation { apps, diagnostics }
}

fn diag(level: Level, app: Option<&str>, key: Option<&str>, message: &str) -> Diagnostic {
    Diagnostic {
        level,
        file: None,
        app: app.map(str::to_string),
        key: key.map(str::to_string),
        message: message.to_string(),
    }
}

/// Reads one app object, remembering which keys were looked at so that the
/// rest can be reported, and collecting diagnostics under the app's name.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    used: BTreeSet<&'a str>,
    app: String,
    diagnostics: Vec<Diagnostic>,
    failed: bool,
}

impl<'a> Reader<'a> {
    /// The value of `key`; `null` counts as absent (as `undefined` does in
    /// PM2), but is still "used".
    fn get(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.obj.get_key_value(key)?;
        self.used.insert(k.as_str());
        (!v.is_null()).then_some(v)
    }

    /// The first of `keys` present; later ones that are also present are
    /// reported as overridden.
    fn get_any(&mut self, keys: &[&'static str]) -> Option<(&'static str, &'a Value)> {
        let mut found: Option<(&'static str, &'a Value)> = None;
        for key in keys {
            if let Some(v) = self.get(key) {
                match found {
                    None => found = Some((key, v)),
                    Some((winner, _)) => self.warn(
                        key,
                        format!("ignored: `{winner}` is also set and takes precedence"),
                    ),
                }
            }
        }
        found
    }

    fn warn(&mut self, key: &str, message: impl AsRef<str>) {
        self.diagnostics.push(diag(
            Level::Warning,
            Some(&self.app),
            Some(key),
            message.as_ref(),
        ));
    }

    fn error(&mut self, key: &str, message: impl AsRef<str>) {
        self.failed = true;
        self.diagnostics.push(diag(
            Level::Error,
            Some(&self.app),
            Some(key),
            message.as_ref(),
        ));
    }

    /// Run a conversion; on failure report an error naming `key`.
    fn convert<T>(
        &mut self,
        key: &str,
        v: &Value,
        f: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        match f(v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(key, e);
                None
            }
        }
    }

    fn text(&mut self, key: &str) -> Option<String> {
        let v = self.get(key)?;
        self.convert(key, v, scalar_text)
    }

    fn flag(&mut self, key: &str) -> Option<bool> {
        let v = self.get(key)?;
        self.convert(key, v, boolean)
    }

    fn millis(&mut self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        self.convert(key, v, duration)
    }
}

fn scalar_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(js_number(n)),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!("must be a string, not {}", kind(v))),
    }
}

fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(format!("must be true or false, not {}", short(v))),
    }
}

fn duration(v: &Value) -> Result<u64, String> {
    match v {
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(ms), _) => Ok(ms),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(f.round() as u64),
            _ => Err(format!("{n} is not a duration; it must not be negative")),
        },
        Value::String(s) => parse_duration(s),
        _ => Err(format!(
            "must be milliseconds or a string such as \"30s\", not {}",
            kind(v)
        )),
    }
}

fn size(v: &Value) -> Result<u64, String> {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => parse_size(&format!("{f:.0}")),
            _ => Err(format!("{n} is not a size; it must not be negative")),
        },
        Value::String(s) => parse_size(s),
        _ => Err(format!(
            "must be bytes or a string such as \"200M\", not {}",
            kind(v)
        )),
    }
}

fn count(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| format!("{n} is not a whole number")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a whole number")),
        _ => Err(format!("must be a whole number, not {}", kind(v))),
    }
}

/// A string or a list of strings (numbers allowed), as PM2 accepts for
/// `args`, `node_args`, `watch`, `ignore_watch`. A string is split like a
/// shell would when `split` is set.
fn list(v: &Value, split: bool) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) if split => {
            shell_words::split(s).map_err(|e| format!("cannot split {s:?} into arguments: {e}"))
        }
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Number(_) | Value::Bool(_) => scalar_text(v).map(|s| vec![s]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(o) if o.contains_key("$regexp") => Ok(format!(
                    "/{}/{}",
                    o["$regexp"].as_str().unwrap_or_default(),
                    o.get("$flags").and_then(Value::as_str).unwrap_or_default()
                )),
                other => scalar_text(other).map_err(|_| {
                    format!(
                        "must be a string or a list of strings; found {}",
                        kind(other)
                    )
                }),
            })
            .collect(),
        Value::Object(o) if o.contains_key("$regexp") => {
            list(&Value::Array(vec![v.clone()]), split)
        }
        _ => Err(format!(
            "must be a string or a list of strings, not {}",
            kind(v)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// A number as JavaScript prints it (`String(3)` is "3", not "3.0").
fn js_number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
        Some(f) => f.to_string(),
        None => n.to_string(),
    }
}

/// PM2's default name: the script's basename without its last extension.
fn derived_name(script: &str) -> String {
    let base = script
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(script);
    match base.rfind('.') {
        Some(dot) if dot > 0 => base[..dot].to_string(),
        _ => base.to_string(),
    }
}

/// `path.resolve(base, p)`: absolute, with `.` and `..` removed lexically.
fn resolve(base: Option<&Path>, p: &str) -> PathBuf {
    let p = Path::new(p);
    let joined = match base {
        Some(base) if p.is_relative() => base.join(p),
        _ => p.to_path_buf(),
    };
    normalise(&joined)
}

pub(crate) fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let above = matches!(out.components().next_back(), Some(Component::ParentDir));
                if above || (!out.pop() && !out.has_root()) {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// A log path as PM2 reads it: `NULL` or `/dev/null` disables the file.
fn log_path(cwd: Option<&Path>, s: &str) -> PathBuf {
    if s == "NULL" || s == "/dev/null" {
        PathBuf::from("/dev/null")
    } else {
        resolve(cwd, s)
    }
}

fn env_value(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(js_number(n)),
        Value::Bool(b) => Some(b.to_string()),
        // PM2 JSON-stringifies nested values.
        Value::Array(_) | Value::Object(_) => Some(v.to_string()),
    }
}

fn merge_env(r: &mut Reader<'_>, key: &str, v: &Value, env: &mut BTreeMap<String, String>) {
    let Value::Object(vars) = v else {
        r.warn(
            key,
            format!(
                "ignored: must be an object of NAME: value pairs, not {}",
                kind(v)
            ),
        );
        return;
    };
    for (name, value) in vars {
        match env_value(value) {
            Some(s) => {
                env.insert(name.clone(), s);
            }
            None => r.warn(key, format!("variable `{name}` is null; left out")),
        }
    }
}

fn parse_instances(v: &Value, cpus: u32) -> Result<u32, String> {
    let cpus = i64::from(cpus.max(1));
    let n = match v {
        Value::String(s) if s.trim().eq_ignore_ascii_case("max") => 0,
        _ => count(v).map_err(|e| format!("{e}; use a number, \"max\" or -N (CPUs minus N)"))?,
    };
    // PM2: 0 and "max" mean one per CPU, -N means CPUs minus N, at least 1.
    let n = match n {
        0 => cpus,
        n if n < 0 => (cpus + n).max(1),
        n => n,
    };
    u32::try_from(n).map_err(|_| format!("{n} instances is too many"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggestion(key: &str) -> String {
    KNOWN_KEYS
        .iter()
        .chain(NODE_OR_APM_ONLY)
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Translate one app object.
pub(crate) fn translate_app(
    idx: usize,
    obj: &Map<String, Value>,
    deploy_env: Option<&Map<String, Value>>,
    src: &Source<'_>,
    opts: &Options,
) -> Outcome {
    let mut r = Reader {
        obj,
        used: BTreeSet::new(),
        app: format!("apps[{idx}]"),
        diagnostics: Vec::new(),
        failed: false,
    };

    // --- what to run, and the name derived from it ---------------------
    let explicit_name = r.text("name").filter(|n| !n.trim().is_empty());
    if let Some(n) = &explicit_name {
        r.app = n.clone();
    }
    let script = match r.get_any(&["script", "exec", "cmd", "command"]) {
        Some((key, v)) => match v.as_str().map(str::trim) {
            Some("") => {
                r.error(key, "is empty; it must name the program or script to run");
                None
            }
            Some(s) => Some((key, s.to_string())),
            None => {
                r.error(key, format!("must be a string, not {}", kind(v)));
                None
            }
        },
        None => None,
    };
    // PM2 runs a script containing spaces through `bash -c`.
    let spaced = script.as_ref().is_some_and(|(_, s)| s.contains(' '));
    let base_name = explicit_name.or_else(|| {
        script
            .as_ref()
            .map(|(_, s)| if spaced { s.clone() } else { derived_name(s) })
    });
    if let Some(n) = &base_name {
        r.app = n.clone();
    }
    if script.is_none() && !r.failed {
        r.error(
            "script",
            "missing: every app needs `script` (or `exec`, `cmd`, `command`) naming the program to run",
        );
    }
    let mut spec = AppSpec::new(base_name.clone().unwrap_or_default(), "");

    if let Some(ns) = r.text("namespace") {
        spec.namespace = ns;
    }

    // --- working directory -----------------------------------------------
    spec.cwd = match r.text("cwd") {
        Some(c) => Some(resolve(src.base_dir, &c)),
        None => src.base_dir.map(Path::to_path_buf),
    };
    let cwd = spec.cwd.clone();

    // --- interpreter, command and arguments -----------------------------
    let interpreter = r
        .get_any(&["interpreter", "exec_interpreter"])
        .and_then(|(key, v)| r.convert(key, v, scalar_text).map(|s| (key, s)));
    let interpreter_args = r
        .get_any(&["interpreter_args", "node_args", "interpreterArgs"])
        .and_then(|(key, v)| r.convert(key, v, |v| list(v, true)).map(|a| (key, a)));
    let args = match r.get("args") {
        Some(v) => r.convert("args", v, |v| list(v, true)),
        None => None,
    };
    if let Some((script_key, script)) = &script {
        if spaced {
            spec.command = PathBuf::from("bash");
            spec.args = vec!["-c".into(), script.clone()];
            if args.as_ref().is_some_and(|a| !a.is_empty()) {
                r.warn(
                    "args",
                    format!("ignored: `{script_key}` contains spaces, so PM2 runs it as `bash -c \"{script}\"` and drops `args`; put the arguments into `{script_key}`"),
                );
            }
            if let Some((key, i)) = &interpreter {
                if i != "none" && i != "bash" {
                    r.warn(key, format!("ignored: `{script_key}` contains spaces, so it runs through `bash -c` as in PM2"));
                }
            }
        } else {
            spec.interpreter = match &interpreter {
                Some((_, i)) if i == "none" => None,
                Some((key, i)) if i.trim().is_empty() => {
                    r.error(key, "is empty; use \"none\" to run the script directly");
                    None
                }
                Some((key, i)) => {
                    if i.contains('@') {
                        r.warn(key, format!("PM2 resolves `{i}` through nvm; slotgate runs it as a program name: use an interpreter path instead"));
                    }
                    Some(i.clone())
                }
                None => match by_extension(script) {
                    ByExtension::Interpreter(i) => Some(i.to_string()),
                    ByExtension::Direct => None,
                    ByExtension::Unknown => {
                        r.warn(
                            script_key,
                            "unknown extension: PM2 would run it with node unless it is a binary; slotgate executes it directly (set `interpreter` if it needs one)",
                        );
                        None
                    }
                },
            };
            // PM2 resolves the script against cwd and falls back to a PATH
            // lookup when no such file exists. Without looking at the disk,
            // a bare name with no extension and no interpreter (`npm`,
            // `gunicorn`) is taken to be a program in PATH; anything else
            // is a file relative to cwd.
            let is_file = spec.interpreter.is_some()
                || script.contains('/')
                || Path::new(script).extension().is_some();
            spec.command = if is_file {
                resolve(cwd.as_deref(), script)
            } else {
                PathBuf::from(script)
            };
            spec.args = args.unwrap_or_default();
        }
    }
    if let Some((key, a)) = interpreter_args {
        if spec.interpreter.is_some() {
            spec.interpreter_args = a;
        } else if !a.is_empty() {
            r.warn(key, "ignored: the script runs without an interpreter");
        }
    }

    // --- environment -------------------------------------------------------
    let mut env = BTreeMap::new();
    if let Some(d) = deploy_env {
        merge_env(&mut r, "deploy", &Value::Object(d.clone()), &mut env);
    }
    if let Some(v) = r.get("env") {
        merge_env(&mut r, "env", v, &mut env);
    }
    let profile_key = opts.env_profile.as_ref().map(|p| format!("env_{p}"));
    let mut profile_found = false;
    for key in obj.keys().filter(|k| k.starts_with("env_")) {
        let Some(v) = r.get(key) else { continue };
        if Some(key) == profile_key.as_ref() {
            profile_found = true;
            merge_env(&mut r, key, v, &mut env);
        } else if !v.is_object() {
            r.warn(
                key,
                format!(
                    "ignored: an environment must be an object of NAME: value pairs, not {}",
                    kind(v)
                ),
            );
        }
    }
    if let (Some(key), false) = (&profile_key, profile_found) {
        r.warn(
            key,
            format!(
                "not defined for this app; with --env {} it gets only `env`",
                opts.env_profile.as_deref().unwrap_or_default()
            ),
        );
    }
    if let Some(port) = r.get("port") {
        if let Some(port) = r.convert("port", port, scalar_text) {
            if env.get("PORT").is_some_and(|p| *p != port) {
                r.warn(
                    "port",
                    format!("overrides env PORT={} as in PM2", env["PORT"]),
                );
            }
            env.insert("PORT".into(), port);
        }
    }
    spec.env = env;
    if r.get("filter_env").is_some_and(|v| *v != Value::Bool(true)) {
        r.warn(
            "filter_env",
            "slotgate never passes the importing shell's environment to apps, so there is nothing to filter: the app gets exactly `env`",
        );
    }

    // --- instances -----------------------------------------------------------
    if let Some(v) = r.get("instances") {
        if let Some(n) = r.convert("instances", v, |v| parse_instances(v, opts.cpu_count)) {
            spec.instances = n;
        }
    }
    if let Some(mode) = r.text("exec_mode") {
        match mode.as_str() {
            "fork" | "fork_mode" => {}
            "cluster" | "cluster_mode" => r.warn(
                "exec_mode",
                format!(
                    "cluster mode is Node.js-only (the PM2 daemon shares one listening socket between workers); slotgate runs {} independent fork instance(s): give each its own port (increment_var) or bind with SO_REUSEPORT",
                    spec.instances
                ),
            ),
            other => r.error("exec_mode", format!("{other:?} is not fork or cluster")),
        }
    }
    if let Some(v) = r.text("instance_var") {
        spec.instance_var = v;
    }
    spec.increment_var = r.text("increment_var");
    spec.user = r
        .get_any(&["uid", "user"])
        .and_then(|(key, v)| r.convert(key, v, scalar_text));
    spec.group = r.text("gid");

    // --- restart policy ----------------------------------------------------
    if let Some(b) = r.flag("autostart") {
        spec.autostart = b;
    }
    if let Some(b) = r.flag("autorestart") {
        spec.autorestart = b;
    }
    if let Some(v) = r.get("stop_exit_codes") {
        let codes = r.convert("stop_exit_codes", v, |v| {
            let items = match v {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            items
                .iter()
                .map(|c| {
                    count(c).and_then(|n| {
                        i32::try_from(n).map_err(|_| format!("{n} is not an exit code"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        });
        spec.stop_exit_codes = codes.unwrap_or_default();
    }
    if let Some(ms) = r.millis("min_uptime") {
        if ms < MIN_MIN_UPTIME_MS {
            r.warn(
                "min_uptime",
                format!("{ms}ms is below PM2's minimum; using {MIN_MIN_UPTIME_MS}ms"),
            );
        }
        spec.min_uptime_ms = ms.max(MIN_MIN_UPTIME_MS);
    }
    if let Some(v) = r.get("max_restarts") {
        if let Some(n) = r.convert("max_restarts", v, |v| {
            count(v).and_then(|n| u32::try_from(n).map_err(|_| format!("{n} must be 0 or more")))
        }) {
            spec.max_restarts = n;
        }
    }
    if let Some(ms) = r.millis("restart_delay") {
        spec.restart_delay_ms = ms;
    }
    spec.exp_backoff_initial_ms = r.millis("exp_backoff_restart_delay").filter(|ms| *ms > 0);
    if let Some(v) = r.get("max_memory_restart") {
        spec.max_memory_bytes = r.convert("max_memory_restart", v, size);
    }
    if let Some((key, v)) = r.get_any(&["cron_restart", "cron"]) {
        spec.cron_restart = r
            .convert(key, v, |v| match v {
                Value::Number(n) if n.as_f64() == Some(0.0) => Ok(None),
                Value::String(s) if s.trim() == "0" => Ok(None),
                Value::String(s) => normalise_cron(s).map(Some),
                other => Err(format!(
                    "must be a cron pattern string, not {}",
                    kind(other)
                )),
            })
            .flatten();
    }

    // --- stopping ----------------------------------------------------------
    if let Some(ms) = r.millis("kill_timeout") {
        spec.kill_timeout_ms = ms;
    }
    if let Some(sig) = r.text("stop_signal") {
        let upper = sig.trim().to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        if SIGNALS.contains(&full.as_str()) {
            spec.stop_signal = full;
        } else {
            r.error(
                "stop_signal",
                format!("{sig:?} is not one of {}", SIGNALS.join(", ")),
            );
        }
    }

    if r.get("kill_retry_time").is_some() {
        r.warn(
            "kill_retry_time",
            "ignored: slotgate has no poll interval to set",
        );
    }
    if r.flag("shutdown_with_message") == Some(true) {
        r.warn(
            "shutdown_with_message",
            format!("ignored: slotgate has no Node.js IPC channel to send 'shutdown' on; it sends {} instead", spec.stop_signal),
        );
    }
    if r.flag("treekill") == Some(false) {
        r.warn(
            "treekill",
            "ignored: slotgate always stops the app's whole process tree",
        );
    }
    // --- readiness -----------------------------------------------------------
    if let Some(b) = r.flag("wait_ready") {
        spec.wait_ready = b;
    }
    if let Some(ms) = r.millis("listen_timeout") {
        spec.listen_timeout_ms = ms;
    }
    if let Some(url) = r.text("health_check_url") {
        if url.starts_with("http://") || url.starts_with("https://") {
            spec.health = Some(HealthCheck {
                url,
                ..Default::default()
            });
        } else {
            r.error(
                "health_check_url",
                format!("{url:?} must be an http:// or https:// URL"),
            );
        }
    }
    if spec.wait_ready && spec.health.is_none() {
        r.warn(
            "wait_ready",
            format!(
                "slotgate has no Node.js IPC channel, so process.send('ready') is not seen: the app counts as ready after listen_timeout ({}ms); set health_check_url to wait for a real check",
                spec.listen_timeout_ms
            ),
        );
    }

    // --- watching ------------------------------------------------------------
    if let Some(v) = r.get("watch") {
        spec.watch = match v {
            Value::Bool(false) => Vec::new(),
            Value::Bool(true) => vec![cwd.clone().unwrap_or_else(|| PathBuf::from("."))],
            other => r
                .convert("watch", other, |v| list(v, false))
                .unwrap_or_default()
                .iter()
                .map(|p| resolve(cwd.as_deref(), p))
                .collect(),
        };
    }
    if let Some(v) = r.get("ignore_watch") {
        spec.ignore_watch = r
            .convert("ignore_watch", v, |v| list(v, false))
            .unwrap_or_default();
    }
    if let Some(ms) = r.millis("watch_delay") {
        spec.watch_delay_ms = ms;
    }
    if r.get("watch_options").is_some() {
        r.warn(
            "watch_options",
            "ignored: chokidar options have no slotgate equivalent",
        );
    }

    // --- logs ----------------------------------------------------------------
    if let Some((key, v)) = r.get_any(&["out_file", "out", "output", "out_log"]) {
        spec.out_file = r
            .convert(key, v, scalar_text)
            .map(|s| log_path(cwd.as_deref(), &s));
    }
    if let Some((key, v)) = r.get_any(&["error_file", "error", "err", "err_file", "err_log"]) {
        spec.error_file = r
            .convert(key, v, scalar_text)
            .map(|s| log_path(cwd.as_deref(), &s));
    }
    if let Some((key, v)) = r.get_any(&["log_file", "log"]) {
        match v {
            Value::Bool(false) => {}
            Value::Bool(true) => r.warn(
                key,
                "`true` means <name>.log in PM2's log directory; slotgate has no such default: give a path",
            ),
            other => {
                spec.log_file = r
                    .convert(key, other, scalar_text)
                    .map(|s| log_path(cwd.as_deref(), &s))
                    .filter(|p| p != Path::new("/dev/null"));
            }
        }
    }
    spec.merge_logs = match r
        .get_any(&["merge_logs", "combine_logs"])
        .and_then(|(key, v)| r.convert(key, v, boolean))
    {
        Some(b) => b,
        None => spec.instances == 1,
    };
    spec.log_timestamps = r.text("log_date_format").filter(|f| !f.is_empty());
    if r.flag("time") == Some(true) && spec.log_timestamps.is_none() {
        spec.log_timestamps = Some(TIME_FORMAT.into());
    }
    if let Some(t) = r.text("log_type") {
        if t == "json" {
            spec.log_json = true;
        } else if t != "raw" {
            r.warn(
                "log_type",
                format!("ignored: {t:?} is not a log type (only \"json\" is)"),
            );
        }
    }
    if r.flag("disable_logs") == Some(true) {
        if spec.out_file.is_some() || spec.error_file.is_some() || spec.log_file.is_some() {
            r.warn(
                "disable_logs",
                "overrides the log file settings: all output is discarded",
            );
        }
        spec.out_file = Some(PathBuf::from("/dev/null"));
        spec.error_file = Some(PathBuf::from("/dev/null"));
        spec.log_file = None;
    }
    if let Some((key, v)) = r.get_any(&["pid_file", "pid"]) {
        spec.pid_file = r
            .convert(key, v, scalar_text)
            .map(|s| resolve(cwd.as_deref(), &s));
    }

    // --- naming and things slotgate does not do ------------------------------
    if r.flag("append_env_to_name") == Some(true) {
        if let Some(profile) = &opts.env_profile {
            spec.name = format!("{}-{profile}", spec.name);
        }
    }
    if r.get("force").is_some() {
        r.warn("force", "ignored: slotgate has no equivalent");
    }
    for key in NODE_OR_APM_ONLY {
        if r.get(key).is_some() {
            r.warn(
                key,
                "ignored: Node.js or PM2 monitoring setting with no slotgate equivalent",
            );
        }
    }

    let unknown: Vec<&String> = obj
        .keys()
        .filter(|k| !r.used.contains(k.as_str()))
        .collect();
    for key in unknown {
        let hint = suggestion(key);
        r.warn(key, format!("unknown key; ignored{hint}"));
    }

    Outcome {
        base_name,
        spec: (!r.failed).then_some(spec),
        diagnostics: r.diagnostics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(doc: Value, opts: &Options) -> Translation {
        let src = Source {
            label: Path::new("<test>"),
            file: None,
            base_dir: Some(Path::new("/srv/app")),
        };
        translate_document(&doc, &src, opts).unwrap()
    }

    fn one(app: Value) -> (AppSpec, Vec<Diagnostic>) {
        let t = run(json!({ "apps": [app] }), &Options::default());
        assert_eq!(t.apps.len(), 1, "{:#?}", t.diagnostics);
        (t.apps[0].clone(), t.diagnostics)
    }

    fn warned(diags: &[Diagnostic], key: &str) -> bool {
        diags
            .iter()
            .any(|d| d.level == Level::Warning && d.key.as_deref() == Some(key))
    }

    #[test]
    fn names_derive_from_the_script() {
        for (script, name) in [
            ("./router/server.js", "server"),
            ("app", "app"),
            ("/usr/bin/ttyd", "ttyd"),
            ("worker.min.js", "worker.min"),
            (".env.sh", ".env"),
        ] {
            assert_eq!(derived_name(script), name, "{script}");
        }
    }

    #[test]
    fn paths_resolve_like_node_path_resolve() {
        let base = Some(Path::new("/srv/app"));
        assert_eq!(
            resolve(base, "./logs/a.log"),
            PathBuf::from("/srv/app/logs/a.log")
        );
        assert_eq!(resolve(base, "../x"), PathBuf::from("/srv/x"));
        assert_eq!(resolve(base, "/var/log/a"), PathBuf::from("/var/log/a"));
        assert_eq!(resolve(None, "./a/../b"), PathBuf::from("b"));
        assert_eq!(
            resolve(Some(Path::new("/")), "../../x"),
            PathBuf::from("/x")
        );
        assert_eq!(resolve(None, "../../x"), PathBuf::from("../../x"));
    }

    #[test]
    fn instances_follow_pm2() {
        for (v, want) in [
            (json!(3), Some(3)),
            (json!("4"), Some(4)),
            (json!("max"), Some(8)),
            (json!(0), Some(8)),
            (json!(-1), Some(7)),
            (json!(-20), Some(1)),
            (json!("lots"), None),
            (json!(1.5), None),
        ] {
            assert_eq!(parse_instances(&v, 8).ok(), want, "{v}");
        }
    }

    #[test]
    fn js_numbers_print_like_javascript() {
        let n = |v: Value| match v {
            Value::Number(n) => js_number(&n),
            _ => unreachable!(),
        };
        assert_eq!(n(json!(10)), "10");
        assert_eq!(n(json!(10.0)), "10");
        assert_eq!(n(json!(1.5)), "1.5");
        assert_eq!(n(json!(-3)), "-3");
    }

    #[test]
    fn script_with_spaces_runs_through_bash() {
        let (spec, diags) = one(json!({ "script": "python3 app.py --x", "args": "--y" }));
        assert_eq!(spec.name, "python3 app.py --x");
        assert_eq!(spec.command, PathBuf::from("bash"));
        assert_eq!(spec.args, ["-c", "python3 app.py --x"]);
        assert_eq!(spec.interpreter, None);
        assert!(warned(&diags, "args"));
    }

    #[test]
    fn bare_program_names_stay_bare() {
        let (spec, _) = one(json!({ "script": "npm", "args": "run start" }));
        assert_eq!(spec.command, PathBuf::from("npm"));
        assert_eq!(spec.args, ["run", "start"]);
        assert_eq!(spec.interpreter, None);
        let (spec, _) = one(json!({ "script": "app.js" }));
        assert_eq!(spec.command, PathBuf::from("/srv/app/app.js"));
        assert_eq!(spec.interpreter.as_deref(), Some("node"));
    }

    #[test]
    fn args_strings_split_like_a_shell() {
        let (spec, _) = one(json!({ "script": "a.sh", "args": "--name 'two words' -v" }));
        assert_eq!(spec.args, ["--name", "two words", "-v"]);
        let t = run(
            json!([{ "script": "a.sh", "args": "--name 'open" }]),
            &Options::default(),
        );
        assert!(t.apps.is_empty());
        assert_eq!(t.errors().next().unwrap().key.as_deref(), Some("args"));
    }

    #[test]
    fn alias_conflicts_warn_and_the_canonical_key_wins() {
        let (spec, diags) = one(json!({ "script": "a.js", "cmd": "b.js" }));
        assert_eq!(spec.command, PathBuf::from("/srv/app/a.js"));
        assert!(warned(&diags, "cmd"));
    }

    #[test]
    fn typos_get_a_suggestion() {
        let (_, diags) = one(json!({ "script": "a.js", "autorestar": false }));
        let d = diags
            .iter()
            .find(|d| d.key.as_deref() == Some("autorestar"))
            .unwrap();
        assert!(
            d.message.contains("did you mean `autorestart`"),
            "{}",
            d.message
        );
    }

    #[test]
    fn env_values_are_stringified_like_node() {
        let (spec, diags) = one(json!({
            "script": "a.js",
            "env": { "N": 10, "B": true, "O": { "k": [1, 2] }, "Z": null, "S": "x" }
        }));
        assert_eq!(spec.env["N"], "10");
        assert_eq!(spec.env["B"], "true");
        assert_eq!(spec.env["O"], r#"{"k":[1,2]}"#);
        assert_eq!(spec.env["S"], "x");
        assert!(!spec.env.contains_key("Z"));
        assert!(warned(&diags, "env"));
    }

    #[test]
    fn wrong_types_are_errors_naming_the_key() {
        for (key, value) in [
            ("autorestart", json!("sometimes")),
            ("max_restarts", json!(-1)),
            ("restart_delay", json!("soon")),
            ("max_memory_restart", json!("lots")),
            ("instances", json!([1])),
            ("exec_mode", json!("swarm")),
            ("stop_signal", json!("SIGFOO")),
            ("health_check_url", json!("localhost:80")),
            ("stop_exit_codes", json!(["x"])),
            ("script", json!(42)),
        ] {
            let mut app = json!({ "name": "x", "script": "a.js" });
            app[key] = value;
            let t = run(json!([app]), &Options::default());
            assert!(t.apps.is_empty(), "{key}");
            let err = t.errors().next().unwrap();
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert_eq!(err.app.as_deref(), Some("x"));
        }
    }

    #[test]
    fn non_object_app_and_bad_shapes() {
        let t = run(json!([42]), &Options::default());
        assert_eq!(t.errors().next().unwrap().app.as_deref(), Some("apps[0]"));
        let src = Source {
            label: Path::new("f.json"),
            file: None,
            base_dir: None,
        };
        for doc in [json!("x"), json!({ "apps": "nope" }), json!(null)] {
            let err = translate_document(&doc, &src, &Options::default()).unwrap_err();
            assert!(err.to_string().starts_with("f.json: "), "{err}");
        }
    }

    #[test]
    fn no_base_dir_leaves_paths_relative() {
        let src = Source {
            label: Path::new("<input>"),
            file: None,
            base_dir: None,
        };
        let t = translate_document(
            &json!({ "script": "./bin/srv", "out_file": "logs/o.log", "watch": true }),
            &src,
            &Options::default(),
        )
        .unwrap();
        let spec = &t.apps[0];
        assert_eq!(spec.cwd, None);
        assert_eq!(spec.command, PathBuf::from("bin/srv"));
        assert_eq!(spec.out_file, Some(PathBuf::from("logs/o.log")));
        assert_eq!(spec.watch, [PathBuf::from(".")]);
    }
}
