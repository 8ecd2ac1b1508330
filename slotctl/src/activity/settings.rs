//! `[activity]` in the shared configuration file: whether the store runs,
//! how long each table keeps its rows, and how many malformed lines are
//! kept aside. Errors name the file, the key and the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use slotapi::config::{parse_duration, ConfigError, ConfigFile, Paths};

/// The tables with a retention period, and their defaults.
pub const RETAINED: &[(&str, &str)] = &[
    ("requests", "30d"),
    ("sessions", "365d"),
    ("logins", "365d"),
    ("events", "365d"),
    ("recordings", "365d"),
    ("malformed", "30d"),
    ("rollup", "1825d"),
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActivity {
    enabled: Option<bool>,
    /// The access log to follow; default: slotgate's (`[slotgate.access_log] path`).
    access_log: Option<PathBuf>,
    #[serde(default)]
    retention: BTreeMap<String, String>,
    retention_interval: Option<String>,
    malformed_keep: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub enabled: bool,
    /// `<data_dir>/activity.db`.
    pub db: PathBuf,
    pub access_log: PathBuf,
    /// Per table: rows older than this are deleted; `None` keeps them.
    pub retention: BTreeMap<&'static str, Option<Duration>>,
    pub retention_interval: Duration,
    pub malformed_keep: u64,
}

impl Settings {
    /// Defaults for `paths` (no config file).
    pub fn defaults(paths: &Paths) -> Settings {
        Settings::from_file(&ConfigFile::empty(&paths.data_dir), paths)
            .expect("the defaults are valid")
    }

    pub fn from_file(cf: &ConfigFile, paths: &Paths) -> Result<Settings, ConfigError> {
        let raw: RawActivity = cf.section("activity")?;
        let err = |key: &str, reason: String| ConfigError::new(&cf.path, key, reason);
        let mut retention = BTreeMap::new();
        for (table, default) in RETAINED {
            let text = raw.retention.get(*table).map(String::as_str);
            let value = match text.unwrap_or(default) {
                "off" | "forever" | "0" => None,
                s => Some(
                    parse_duration(s)
                        .map_err(|r| err(&format!("activity.retention.{table}"), r))?,
                ),
            };
            if value.is_some_and(|d| d < Duration::from_secs(60)) {
                return Err(err(
                    &format!("activity.retention.{table}"),
                    "must be at least 1m (or \"off\" to keep everything)".into(),
                ));
            }
            retention.insert(*table, value);
        }
        if let Some(unknown) = raw
            .retention
            .keys()
            .find(|k| !RETAINED.iter().any(|(t, _)| t == k))
        {
            let known: Vec<&str> = RETAINED.iter().map(|(t, _)| *t).collect();
            return Err(err(
                &format!("activity.retention.{unknown}"),
                format!("unknown table; known tables are {}", known.join(", ")),
            ));
        }
        let retention_interval = match raw.retention_interval.as_deref() {
            None => Duration::from_secs(3600),
            Some(s) => parse_duration(s).map_err(|r| err("activity.retention_interval", r))?,
        };
        if retention_interval < Duration::from_secs(1) {
            return Err(err(
                "activity.retention_interval",
                "must be at least 1s".into(),
            ));
        }
        let access_log = match raw.access_log {
            Some(p) => cf.resolve(&p),
            None => cf.access_log_path(paths)?,
        };
        Ok(Settings {
            enabled: raw.enabled.unwrap_or(true),
            db: paths.data_dir.join("activity.db"),
            access_log,
            retention,
            retention_interval,
            malformed_keep: raw.malformed_keep.unwrap_or(1000),
        })
    }

    pub fn keep(&self, table: &str) -> Option<Duration> {
        self.retention.get(table).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        let cf = ConfigFile::parse(Path::new("/srv/sg/slotgate.toml"), text).unwrap();
        let paths = cf.paths().unwrap();
        Settings::from_file(&cf, &paths)
    }

    #[test]
    fn defaults_follow_slotgates_access_log() {
        let s = load("").unwrap();
        assert_eq!(
            s.access_log,
            PathBuf::from("/srv/sg/.slotgate/data/logs/access.log")
        );
        assert_eq!(s.keep("requests"), Some(Duration::from_secs(30 * 86400)));
        let s = load("[slotgate.access_log]\npath = \"l/a.log\"\n").unwrap();
        assert_eq!(s.access_log, PathBuf::from("/srv/sg/l/a.log"));
    }

    #[test]
    fn retention_per_table() {
        let s = load("[activity]\nretention.requests = \"7d\"\nretention.sessions = \"off\"\n")
            .unwrap();
        assert_eq!(s.keep("requests"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(s.keep("sessions"), None);
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = load("[activity]\nretention.requests = \"soon\"\n").unwrap_err();
        assert_eq!(e.file, "/srv/sg/slotgate.toml");
        assert_eq!(e.key, "activity.retention.requests");
        assert!(e.reason.contains("not a duration"), "{e}");
        let e = load("[activity]\nretention.request = \"1d\"\n").unwrap_err();
        assert_eq!(e.key, "activity.retention.request");
        assert!(e.reason.contains("unknown table"), "{e}");
        let e = load("[activity]\nretention.logins = \"5s\"\n").unwrap_err();
        assert_eq!(e.key, "activity.retention.logins");
        let e = load("[activity]\nkeep = 3\n").unwrap_err();
        assert_eq!(e.key, "activity");
        assert!(e.reason.contains("keep"), "{e}");
        let e = load("[slotgate.access_log]\npath = 3\n").unwrap_err();
        assert_eq!(e.key, "slotgate.access_log.path");
    }
}
