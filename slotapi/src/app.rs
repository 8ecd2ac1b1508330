//! Generic services ("apps") in the control API: their names, their status
//! strings (PM2's, so `pm2 jlist` consumers keep working) and the stable JSON
//! of one app instance. Like the rest of this crate it owns no behaviour; the
//! app definitions themselves travel as `pm2_compat::AppSpec` JSON, which
//! this crate deliberately does not link.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest app name.
pub const MAX_APP_NAME_LEN: usize = 64;

/// An app's name: `[A-Za-z0-9._-]`, 1 to 64 characters, not starting with
/// `.` or `-`, and not `all` (a PM2 target keyword). Wider than a slot id
/// because PM2 names are, but still safe in a file name and a cgroup name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AppName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppNameError {
    #[error("app name is empty")]
    Empty,
    #[error("app name {0:?} is longer than {MAX_APP_NAME_LEN} characters")]
    TooLong(String),
    #[error("app name {0:?} must not start with '.' or '-'")]
    BadStart(String),
    #[error("app name {value:?} contains {ch:?}; allowed are letters, digits, '.', '_' and '-'")]
    BadChar { value: String, ch: char },
    #[error("app name \"all\" is reserved (it means every app)")]
    Reserved,
}

impl AppName {
    pub fn new(value: impl Into<String>) -> Result<Self, AppNameError> {
        let value = value.into();
        if value.is_empty() {
            return Err(AppNameError::Empty);
        }
        if value.len() > MAX_APP_NAME_LEN {
            return Err(AppNameError::TooLong(value.chars().take(80).collect()));
        }
        if value.starts_with('.') || value.starts_with('-') {
            return Err(AppNameError::BadStart(value));
        }
        if let Some(ch) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(AppNameError::BadChar { value, ch });
        }
        if value == "all" {
            return Err(AppNameError::Reserved);
        }
        Ok(AppName(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AppName {
    type Err = AppNameError;
    fn from_str(s: &str) -> Result<Self, AppNameError> {
        Self::new(s)
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AppName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AppName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// Where an app instance is in its lifecycle, spelled as PM2 spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AppStatus {
    /// Spawned, not yet ready (health probe or `listen_timeout` pending).
    #[serde(rename = "launching")]
    Launching,
    #[serde(rename = "online")]
    Online,
    #[serde(rename = "stopping")]
    Stopping,
    #[serde(rename = "stopped")]
    Stopped,
    /// Too many unstable restarts, or could not be started; see `reason`.
    #[serde(rename = "errored")]
    Errored,
    /// Sleeping out `restart_delay` or the exponential backoff.
    #[serde(rename = "waiting restart")]
    WaitingRestart,
}

impl AppStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AppStatus::Launching => "launching",
            AppStatus::Online => "online",
            AppStatus::Stopping => "stopping",
            AppStatus::Stopped => "stopped",
            AppStatus::Errored => "errored",
            AppStatus::WaitingRestart => "waiting restart",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "launching" => AppStatus::Launching,
            "online" => AppStatus::Online,
            "stopping" => AppStatus::Stopping,
            "stopped" => AppStatus::Stopped,
            "errored" => AppStatus::Errored,
            "waiting restart" => AppStatus::WaitingRestart,
            _ => return None,
        })
    }
}

impl fmt::Display for AppStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an app's definition lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppSource {
    /// An `[[apps]]` table of the config file (the file is the authority).
    Config,
    /// Added at runtime (`slotctl pm2 start`, `resurrect`); kept in state.db.
    Runtime,
}

/// One app instance as the API reports it. PM2 keeps one name with several
/// `pm_id`s; so does this: instances of an app share `name` and differ in
/// `pm_id` and `instance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppInfo {
    /// Stable across daemon restarts (persisted); never reused while the
    /// app exists.
    pub pm_id: u32,
    pub name: AppName,
    pub namespace: String,
    /// 0-based index among the app's instances (the `instance_var` value).
    pub instance: u32,
    pub instances: u32,
    pub status: AppStatus,
    /// Whether the app is meant to run.
    pub enabled: bool,
    pub source: AppSource,
    /// The main process while it runs.
    pub pid: Option<u32>,
    /// Every restart, automatic or manual (PM2's `restart_time`).
    pub restarts: u32,
    /// Consecutive exits sooner than `min_uptime` (PM2's `unstable_restarts`).
    pub unstable_restarts: u32,
    /// Milliseconds since the current process started; 0 when not running.
    pub uptime_ms: u64,
    /// Epoch ms of the last (re)start (PM2's `pm_uptime`).
    pub started_at_ms: Option<u64>,
    /// Epoch ms when the app instance was first registered.
    pub created_at_ms: u64,
    /// CPU of the whole process tree, percent of one core.
    pub cpu_percent: f64,
    /// Resident memory of the whole process tree (cgroup), bytes.
    pub memory_bytes: u64,
    pub processes: u32,
    /// The program as run (interpreter first when there is one).
    pub command: String,
    pub args: Vec<String>,
    /// The script (or program) path, resolved against cwd (PM2's
    /// `pm_exec_path`).
    pub exec_path: String,
    pub interpreter: Option<String>,
    pub cwd: String,
    pub out_log: Option<String>,
    pub err_log: Option<String>,
    pub combined_log: Option<String>,
    pub pid_file: String,
    pub autorestart: bool,
    pub watch: bool,
    pub cron_restart: Option<String>,
    pub max_memory_bytes: Option<u64>,
    pub kill_timeout_ms: u64,
    pub instance_var: String,
    /// Names of the app's environment variables; values are never reported.
    pub env_keys: Vec<String>,
    /// Why the app is errored, or why it last restarted.
    pub reason: Option<String>,
    /// How the main process last exited (`exit 1`, `signal 9`).
    pub last_exit: Option<String>,
    /// Exit code of the last exit, when known.
    pub exit_code: Option<i32>,
    /// Whether a health probe is configured, and its last verdict.
    pub health: Option<bool>,
    pub isolation: String,
}

/// `POST /v1/apps`: add (or replace) runtime apps. Each entry is an
/// `AppSpec` (the `[[apps]]` table shape) as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartApps {
    pub apps: Vec<serde_json::Value>,
    /// Replace a runtime app of the same name instead of refusing.
    #[serde(default)]
    pub replace: bool,
}

/// `POST /v1/apps/save` and `/resurrect` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DumpResult {
    pub path: String,
    pub apps: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for ok in [
            "claudebox-router",
            "slot_manager",
            "api.v2",
            "A1",
            &"a".repeat(64),
        ] {
            assert!(AppName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".x",
            "-x",
            "a/b",
            "a b",
            "all",
            "é",
            &"a".repeat(65),
            "..",
        ] {
            assert!(AppName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_strings_are_pm2s() {
        assert_eq!(
            serde_json::to_string(&AppStatus::WaitingRestart).unwrap(),
            "\"waiting restart\""
        );
        for s in [
            AppStatus::Launching,
            AppStatus::Online,
            AppStatus::Stopping,
            AppStatus::Stopped,
            AppStatus::Errored,
            AppStatus::WaitingRestart,
        ] {
            assert_eq!(AppStatus::parse(s.as_str()), Some(s));
        }
    }
}
