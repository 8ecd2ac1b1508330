//! The output of a translation: [`AppSpec`] (one slotctl app, the shape of a
//! `[[apps]]` table in the slotctl config), [`Diagnostic`] and
//! [`Translation`]. This module owns the field names, their defaults and how
//! durations serialise; it must not know anything about PM2's spellings,
//! which belong to `translate` and `dump`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One app as slotctl runs it: the program, how many copies, the restart
/// policy, logs and watch settings.
///
/// Serialised (JSON or TOML) every duration is a string such as `"500ms"`,
/// `"2s"` or `"5m"`, whatever the `_ms` in its name says; on input a bare
/// integer is read as milliseconds. Sizes are integers in bytes. Unknown keys
/// are refused, so the type can be used directly as slotctl's strict `[[apps]]`
/// table. Missing keys take PM2's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Process name; every instance shares it. PM2 derives it from the
    /// script's basename when the file has none.
    pub name: String,
    /// Group for bulk actions; PM2's default is `"default"`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The program to run: the script when [`interpreter`](Self::interpreter)
    /// is set, otherwise the executable itself. A bare name (no `/`) is looked
    /// up in `PATH` at spawn time; a relative path resolves against `cwd`.
    #[serde(serialize_with = "lossy::path")]
    pub command: PathBuf,
    /// Arguments after `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Program that runs `command` (`node`, `python3`, `bash`, …); `None`
    /// executes `command` directly (PM2's `interpreter: none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// Arguments to the interpreter, before `command` (PM2's `node_args`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interpreter_args: Vec<String>,
    /// Working directory. `None` only when the source had no location to
    /// resolve against (see `Options::base_dir`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "lossy::opt_path"
    )]
    pub cwd: Option<PathBuf>,
    /// The complete environment of the app. Nothing is inherited from the
    /// shell that runs the import, unlike PM2.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Number of copies; always at least 1.
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// Environment variable that carries each copy's index (0, 1, …).
    #[serde(default = "default_instance_var")]
    pub instance_var: String,
    /// Environment variable, present in `env` with a numeric value, that is
    /// incremented per copy (PM2's `increment_var`, typically `PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment_var: Option<String>,
    /// User to run as, a name or a numeric uid (PM2's `uid`/`user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group to run as, a name or a numeric gid (PM2's `gid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Start when the config is applied; `false` registers the app stopped.
    #[serde(default = "yes")]
    pub autostart: bool,
    /// Restart after an exit (subject to `stop_exit_codes`, `max_restarts`).
    #[serde(default = "yes")]
    pub autorestart: bool,
    /// Fixed delay before an automatic restart.
    #[serde(default, with = "duration")]
    pub restart_delay_ms: u64,
    /// First delay of PM2's exponential backoff (×1.5 per restart, 15 s cap);
    /// `None` means no backoff.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub exp_backoff_initial_ms: Option<u64>,
    /// Unstable restarts (exits sooner than `min_uptime_ms`) before the app is
    /// marked errored.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// An exit sooner than this after a start counts as unstable (≥ 100 ms).
    #[serde(default = "default_min_uptime", with = "duration")]
    pub min_uptime_ms: u64,
    /// Wait after `stop_signal` before SIGKILL.
    #[serde(default = "default_kill_timeout", with = "duration")]
    pub kill_timeout_ms: u64,
    /// Signal that asks the app to stop; PM2 sends SIGINT.
    #[serde(default = "default_stop_signal")]
    pub stop_signal: String,
    /// Exit codes after which the app is not restarted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_exit_codes: Vec<i32>,
    /// Restart on this schedule: a validated 5-field (or 6-field, seconds
    /// first) cron pattern; `@daily`-style nicknames are expanded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_restart: Option<String>,
    /// Restart when memory use exceeds this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    /// Paths whose changes restart the app; empty means no watching.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "lossy::paths"
    )]
    pub watch: Vec<PathBuf>,
    /// Patterns excluded from watching, verbatim from the PM2 file (PM2
    /// hands them to chokidar). Empty means slotctl's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_watch: Vec<String>,
    /// Delay between a watched change and the restart.
    #[serde(default, with = "duration")]
    pub watch_delay_ms: u64,
    /// stdout log; `None` means slotctl's default location, `/dev/null`
    /// discards.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "lossy::opt_path"
    )]
    pub out_file: Option<PathBuf>,
    /// stderr log; as `out_file`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "lossy::opt_path"
    )]
    pub error_file: Option<PathBuf>,
    /// Combined stdout and stderr log, in addition to the two above.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "lossy::opt_path"
    )]
    pub log_file: Option<PathBuf>,
    /// One log file for all instances instead of a `-<index>` suffix each.
    #[serde(default = "yes")]
    pub merge_logs: bool,
    /// Prefix each log line with a timestamp in this day.js format
    /// (`YYYY-MM-DD HH:mm:ss Z`); `None` writes raw lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_timestamps: Option<String>,
    /// Write log lines as JSON objects (PM2's `log_type: json`).
    #[serde(default)]
    pub log_json: bool,
    /// Where to write the pid; `None` means slotctl's default.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "lossy::opt_path"
    )]
    pub pid_file: Option<PathBuf>,
    /// Consider the app online only once it reports ready, or after
    /// `listen_timeout_ms`.
    #[serde(default)]
    pub wait_ready: bool,
    /// Longest wait for readiness on start and reload.
    #[serde(default = "default_listen_timeout", with = "duration")]
    pub listen_timeout_ms: u64,
    /// Health probe; only set by the slotgate extension key
    /// `health_check_url`, PM2 has no health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
}

/// A health probe for an app (slotgate extension; not a PM2 feature).
/// Exactly one of `url`, `tcp`, `unix` and `command` says what to probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `http://` URL that must answer 2xx or 3xx.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// `host:port` that must accept a TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Unix socket path: an HTTP `GET <unix_path>` over it must answer
    /// 2xx/3xx (or, with no `unix_path`, accept a connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix: Option<String>,
    /// HTTP path to request over `unix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_path: Option<String>,
    /// Shell command (`sh -c`) that must exit 0, run in the app's cwd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Time between probes (default 5 s).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval_ms: Option<u64>,
    /// Longest a probe may take (default 2 s).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_ms: Option<u64>,
    /// Consecutive failures that make a running app unhealthy and restart
    /// it (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// PM2's documented defaults, with slotgate's meaning of a missing value.
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_INSTANCE_VAR: &str = "NODE_APP_INSTANCE";
pub const DEFAULT_MAX_RESTARTS: u32 = 16;
pub const DEFAULT_MIN_UPTIME_MS: u64 = 1000;
/// PM2 refuses a `min_uptime` below this.
pub const MIN_MIN_UPTIME_MS: u64 = 100;
pub const DEFAULT_KILL_TIMEOUT_MS: u64 = 1600;
pub const DEFAULT_STOP_SIGNAL: &str = "SIGINT";
pub const DEFAULT_LISTEN_TIMEOUT_MS: u64 = 3000;

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.into()
}
fn default_instances() -> u32 {
    1
}
fn default_instance_var() -> String {
    DEFAULT_INSTANCE_VAR.into()
}
fn yes() -> bool {
    true
}
fn default_max_restarts() -> u32 {
    DEFAULT_MAX_RESTARTS
}
fn default_min_uptime() -> u64 {
    DEFAULT_MIN_UPTIME_MS
}
fn default_kill_timeout() -> u64 {
    DEFAULT_KILL_TIMEOUT_MS
}
fn default_stop_signal() -> String {
    DEFAULT_STOP_SIGNAL.into()
}
fn default_listen_timeout() -> u64 {
    DEFAULT_LISTEN_TIMEOUT_MS
}

impl AppSpec {
    /// An app with every PM2 default, running `command` directly.
    pub fn new(name: impl Into<String>, command: impl Into<PathBuf>) -> Self {
        AppSpec {
            name: name.into(),
            namespace: default_namespace(),
            command: command.into(),
            args: Vec::new(),
            interpreter: None,
            interpreter_args: Vec::new(),
            cwd: None,
            env: BTreeMap::new(),
            instances: 1,
            instance_var: default_instance_var(),
            increment_var: None,
            user: None,
            group: None,
            autostart: true,
            autorestart: true,
            restart_delay_ms: 0,
            exp_backoff_initial_ms: None,
            max_restarts: DEFAULT_MAX_RESTARTS,
            min_uptime_ms: DEFAULT_MIN_UPTIME_MS,
            kill_timeout_ms: DEFAULT_KILL_TIMEOUT_MS,
            stop_signal: default_stop_signal(),
            stop_exit_codes: Vec::new(),
            cron_restart: None,
            max_memory_bytes: None,
            watch: Vec::new(),
            ignore_watch: Vec::new(),
            watch_delay_ms: 0,
            out_file: None,
            error_file: None,
            log_file: None,
            merge_logs: true,
            log_timestamps: None,
            log_json: false,
            pid_file: None,
            wait_ready: false,
            listen_timeout_ms: DEFAULT_LISTEN_TIMEOUT_MS,
            health: None,
        }
    }
}

/// How serious a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The app runs, but not exactly as PM2 would run it.
    Warning,
    /// The app cannot run; it is left out of [`Translation::apps`].
    Error,
}

/// Something the translation could not carry over exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub level: Level,
    /// The file it came from, when the input was a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The app's name (or `apps[i]` before it has one); `None` for the file
    /// as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The PM2 key (or CLI option such as `--only`) it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            Level::Warning => f.write_str("warning: ")?,
            Level::Error => f.write_str("error: ")?,
        }
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(app) = &self.app {
            write!(f, "app `{app}`: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The result of translating one PM2 file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translation {
    /// Apps that can run, in file order. Apps with an error are left out.
    pub apps: Vec<AppSpec>,
    /// Warnings and errors, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Translation {
    /// Whether any app was left out because of an error.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.level == Level::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.level == Level::Warning)
    }
}

/// Render milliseconds the way a person would write them and
/// `humantime`/[`crate::units::parse_duration`] read them back.
pub fn format_duration_ms(ms: u64) -> String {
    const H: u64 = 3_600_000;
    const M: u64 = 60_000;
    if ms != 0 && ms % H == 0 {
        format!("{}h", ms / H)
    } else if ms != 0 && ms % M == 0 {
        format!("{}m", ms / M)
    } else if ms != 0 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Paths serialise as (lossy) strings, so that rendering an [`AppSpec`]
/// never fails on a non-UTF-8 path.
mod lossy {
    use std::path::{Path, PathBuf};

    use serde::Serializer;

    pub fn path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string_lossy())
    }

    pub fn opt_path<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => path(p, s),
            None => s.serialize_none(),
        }
    }

    pub fn paths<S: Serializer>(ps: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ps.iter().map(|p| p.to_string_lossy()))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Millis(u64),
    Text(String),
}

impl DurationRepr {
    fn millis<E: serde::de::Error>(self) -> Result<u64, E> {
        match self {
            DurationRepr::Millis(ms) => Ok(ms),
            DurationRepr::Text(s) => crate::units::parse_duration(&s).map_err(E::custom),
        }
    }
}

/// serde for a duration held as milliseconds: written `"500ms"`, read from a
/// string or an integer number of milliseconds.
mod duration {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration_ms(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        DurationRepr::deserialize(d)?.millis()
    }
}

mod opt_duration {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&format_duration_ms(*ms)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<DurationRepr>::deserialize(d)?
            .map(DurationRepr::millis)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_the_largest_exact_unit() {
        for (ms, text) in [
            (0, "0ms"),
            (500, "500ms"),
            (1500, "1500ms"),
            (2000, "2s"),
            (90_000, "90s"),
            (300_000, "5m"),
            (7_200_000, "2h"),
        ] {
            assert_eq!(format_duration_ms(ms), text);
            assert_eq!(crate::units::parse_duration(text).unwrap(), ms);
        }
    }

    #[test]
    fn missing_keys_take_pm2_defaults() {
        let spec: AppSpec = serde_json::from_str(r#"{"name":"a","command":"/bin/true"}"#).unwrap();
        assert_eq!(spec, AppSpec::new("a", "/bin/true"));
    }

    #[test]
    fn durations_read_from_integers_or_strings() {
        let spec: AppSpec = serde_json::from_str(
            r#"{"name":"a","command":"x","restart_delay_ms":250,"kill_timeout_ms":"5s"}"#,
        )
        .unwrap();
        assert_eq!(spec.restart_delay_ms, 250);
        assert_eq!(spec.kill_timeout_ms, 5000);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<AppSpec>(r#"{"name":"a","command":"x","scirpt":"y"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("scirpt"), "{err}");
    }

    #[test]
    fn diagnostic_display_names_file_app_and_key() {
        let d = Diagnostic {
            level: Level::Error,
            file: Some("/srv/eco.json".into()),
            app: Some("api".into()),
            key: Some("cron_restart".into()),
            message: "bad".into(),
        };
        assert_eq!(
            d.to_string(),
            "error: /srv/eco.json: app `api`: `cron_restart`: bad"
        );
    }
}
