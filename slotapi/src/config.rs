//! The parts of the shared configuration file that both programs read.
//!
//! slotctl and slotgate read one TOML file. Each program owns some top-level
//! sections and parses them strictly (`deny_unknown_fields`); this module
//! knows the full list of sections so that a typo in a section name is an
//! error in both programs, and it owns `[paths]`, which both need. It must
//! not grow program-specific settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Every top-level section of the configuration file, whoever owns it.
pub const SECTIONS: &[&str] = &[
    "paths",
    "ttyd",
    "supervisor",
    "slotgate",
    "apps",
    "activity",
    "claude",
];

/// An error in the configuration file: which file, which key, and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.display().to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// `[paths]`. Relative paths are relative to the directory of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    pub data_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub templates_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// state.db, identity.db, users/, logs/.
    pub data_dir: PathBuf,
    /// `slotctl.sock` and `slots/<id>/ttyd.sock`.
    pub run_dir: PathBuf,
    /// `*.toml` slot templates.
    pub templates_dir: PathBuf,
}

impl Paths {
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join("slotctl.sock")
    }
    pub fn slots_dir(&self) -> PathBuf {
        self.run_dir.join("slots")
    }
    /// `<run_dir>/slots/<id>/`: the slot's own directory, owned by the
    /// slot's Unix identity with the gateway's group, holding ttyd's socket
    /// and (in `tmux/`) the tmux server's.
    pub fn slot_dir(&self, id: &crate::SlotId) -> PathBuf {
        self.slots_dir().join(id.as_str())
    }
    /// `<run_dir>/slots/<id>/ttyd.sock`, built in one allocation (the
    /// gateway asks for it on every proxied request).
    pub fn slot_socket(&self, id: &crate::SlotId) -> PathBuf {
        let id = id.as_str();
        let mut p = PathBuf::with_capacity(self.run_dir.as_os_str().len() + id.len() + 20);
        p.push(&self.run_dir);
        p.push("slots");
        p.push(id);
        p.push("ttyd.sock");
        p
    }
}

/// Slot ids of team slots start with this; `/team/<team>` opens
/// `/slot/team-<team>/`. A team slot's sandbox and Unix identity are the
/// team's, whoever created it.
pub const TEAM_PREFIX: &str = "team-";

/// A loaded configuration file: where it came from and its top-level table,
/// already checked for unknown sections.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub base_dir: PathBuf,
    pub table: toml::Table,
}

impl ConfigFile {
    /// Read and parse `path`; syntax errors carry the line and column.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, "-", format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "-".into());
            ConfigError::new(path, key, e.message().to_string())
        })?;
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                return Err(ConfigError::new(
                    path,
                    key,
                    format!(
                        "unknown section; known sections are {}",
                        SECTIONS.join(", ")
                    ),
                ));
            }
        }
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base_dir = abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(ConfigFile {
            path: path.to_path_buf(),
            base_dir,
            table,
        })
    }

    /// An empty configuration (every default), rooted at `base_dir`.
    pub fn empty(base_dir: &Path) -> Self {
        ConfigFile {
            path: PathBuf::from("<defaults>"),
            base_dir: base_dir.to_path_buf(),
            table: toml::Table::new(),
        }
    }

    /// Deserialise one section strictly; a missing section is its default.
    /// Errors name the section and, where serde says it, the key.
    pub fn section<T: for<'de> Deserialize<'de> + Default>(
        &self,
        name: &str,
    ) -> Result<T, ConfigError> {
        match self.table.get(name) {
            None => Ok(T::default()),
            Some(value) => value
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::new(&self.path, name, e.message())),
        }
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn paths(&self) -> Result<Paths, ConfigError> {
        let raw: RawPaths = self.section("paths")?;
        let data_dir = self.resolve(&raw.data_dir.unwrap_or_else(|| ".slotgate/data".into()));
        let run_dir = self.resolve(&raw.run_dir.unwrap_or_else(|| ".slotgate/run".into()));
        let templates_dir =
            self.resolve(&raw.templates_dir.unwrap_or_else(|| "ttyd-templates".into()));
        // sun_path is 108 bytes; leave room for "slots/<32 chars>/ttyd.sock"
        // (the tmux server's "slots/<32 chars>/tmux/sock" is as long).
        let longest = run_dir.join("slots").join("x".repeat(32)).join("ttyd.sock");
        if longest.as_os_str().len() >= 108 {
            return Err(ConfigError::new(
                &self.path,
                "paths.run_dir",
                format!(
                    "{} is too long: unix socket paths under it would exceed 107 bytes",
                    run_dir.display()
                ),
            ));
        }
        Ok(Paths {
            data_dir,
            run_dir,
            templates_dir,
        })
    }
}

/// Where slotgate writes its access log when `[slotgate.access_log] path`
/// is not set.
pub fn default_access_log(paths: &Paths) -> PathBuf {
    paths.data_dir.join("logs").join("access.log")
}

impl ConfigFile {
    /// slotgate's access log as configured (`[slotgate.access_log] path`,
    /// relative to the config file), else [`default_access_log`]. Only this
    /// key is read: slotgate validates the rest of its section.
    pub fn access_log_path(&self, paths: &Paths) -> Result<PathBuf, ConfigError> {
        let raw = self
            .table
            .get("slotgate")
            .and_then(|s| s.get("access_log"))
            .and_then(|a| a.get("path"));
        match raw {
            None => Ok(default_access_log(paths)),
            Some(toml::Value::String(s)) if !s.is_empty() => Ok(self.resolve(Path::new(s))),
            Some(_) => Err(ConfigError::new(
                &self.path,
                "slotgate.access_log.path",
                "must be a non-empty string (a file path)",
            )),
        }
    }
}

/// Parse a duration such as `250ms`, `5s`, `30m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 500ms, 5s, 30m"))
}

/// Parse a size such as `200M`, `1G`, `512K`, `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let unit = t[i..].trim().to_ascii_uppercase();
            let mult = match unit.trim_end_matches('B').trim_end_matches('I') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => return Err(format!("{s:?} is not a size; write e.g. 512K, 200M, 1G")),
            };
            (&t[..i], mult)
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; write e.g. 512K, 200M, 1G"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// serde helpers for human-written durations and sizes in config structs.
pub mod human {
    use super::*;
    use serde::Deserializer;

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SizeRepr {
        N(u64),
        S(String),
    }

    pub fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<SizeRepr>::deserialize(d)? {
            None => Ok(None),
            Some(SizeRepr::N(n)) => Ok(Some(n)),
            Some(SizeRepr::S(s)) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_sockets_live_in_the_run_dirs_slots_directory() {
        for run in ["/run/slotgate", "/run/slotgate/", "relative/run"] {
            let paths = Paths {
                data_dir: PathBuf::from("/d"),
                run_dir: PathBuf::from(run),
                templates_dir: PathBuf::from("/t"),
            };
            let id = crate::SlotId::new("team-a_1").unwrap();
            let want = Path::new(run)
                .join("slots")
                .join("team-a_1")
                .join("ttyd.sock");
            assert_eq!(paths.slot_socket(&id), want);
            assert_eq!(
                paths.slot_socket(&id).parent(),
                Some(paths.slot_dir(&id).as_path())
            );
            assert_eq!(
                paths.slot_dir(&id).parent(),
                Some(paths.slots_dir().as_path())
            );
        }
    }

    #[test]
    fn unknown_section_names_file_and_key() {
        let err = ConfigFile::parse(Path::new("/etc/slotgate.toml"), "[supervisr]\n").unwrap_err();
        assert_eq!(err.file, "/etc/slotgate.toml");
        assert_eq!(err.key, "supervisr");
        assert!(err.reason.contains("unknown section"));
    }

    #[test]
    fn syntax_error_names_line() {
        let err = ConfigFile::parse(Path::new("c.toml"), "[paths]\ndata_dir = \n").unwrap_err();
        assert_eq!(err.key, "line 2");
    }

    #[test]
    fn relative_paths_resolve_against_config_dir() {
        let cf = ConfigFile::parse(
            Path::new("/srv/sg/slotgate.toml"),
            "[paths]\ndata_dir = \"d\"\n",
        )
        .unwrap();
        let p = cf.paths().unwrap();
        assert_eq!(p.data_dir, PathBuf::from("/srv/sg/d"));
        assert_eq!(p.run_dir, PathBuf::from("/srv/sg/.slotgate/run"));
    }

    #[test]
    fn overlong_run_dir_is_refused() {
        let long = format!("/{}", "r".repeat(90));
        let cf = ConfigFile::parse(
            Path::new("c.toml"),
            &format!("[paths]\nrun_dir = \"{long}\"\n"),
        )
        .unwrap();
        let err = cf.paths().unwrap_err();
        assert_eq!(err.key, "paths.run_dir");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("200M").unwrap(), 200 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12X").is_err());
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }
}
