//! slotctl's typed configuration: the `[ttyd]` and `[supervisor]` sections of
//! the shared config file, plus the slot templates. Raw serde structs reject
//! unknown keys; `validate` turns them into typed values or an error that
//! names the file, the key and the reason. Nothing here touches processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use slotapi::config::{human, ConfigError, ConfigFile, Paths};

use crate::app::App;
use crate::template::{self, Template};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTtyd {
    binary: Option<PathBuf>,
    tmux: Option<PathBuf>,
    bwrap: Option<PathBuf>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    ping_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    #[serde(default, deserialize_with = "human::opt_duration")]
    health_interval: Option<Duration>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    health_timeout: Option<Duration>,
    health_failures: Option<u32>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    start_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    backoff_initial: Option<Duration>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    backoff_max: Option<Duration>,
    max_failures: Option<u32>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    failure_window: Option<Duration>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    kill_timeout: Option<Duration>,
    idle_timeout: Option<String>,
    #[serde(default, deserialize_with = "human::opt_size")]
    log_max_bytes: Option<u64>,
    log_keep: Option<u32>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    sample_interval: Option<Duration>,
    cgroup_root: Option<String>,
    isolation: Option<String>,
    max_slots: Option<u32>,
    users: Option<String>,
    uid_range: Option<String>,
    gateway_group: Option<String>,
    allow_weak_isolation: Option<bool>,
}

/// How slot trees are accounted for and torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationPref {
    /// cgroup v2 if present, else v1, else rlimits.
    Auto,
    /// Never use cgroups (rlimits only); for hosts where cgroups are owned
    /// by someone else.
    Rlimit,
}

#[derive(Debug, Clone)]
pub struct Supervisor {
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub health_failures: u32,
    pub start_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub max_failures: u32,
    pub failure_window: Duration,
    pub kill_timeout: Duration,
    /// `None` disables idle stop.
    pub idle_timeout: Option<Duration>,
    pub log_max_bytes: u64,
    pub log_keep: u32,
    pub sample_interval: Duration,
    pub cgroup_root: String,
    pub isolation: IsolationPref,
    pub max_slots: u32,
    /// Which Unix identity each sandbox owner's slots run as.
    pub users: UsersPref,
    /// The group (besides the slot's own) that may reach slot sockets: the
    /// gateway's. `None`: the daemon's own group.
    pub gateway_group: Option<String>,
    /// Serve a multi-user gateway even where isolation is weak.
    pub allow_weak_isolation: bool,
    /// The config's gateway signs people in (`[slotgate] auth` is not
    /// `"none"`): several users share this host.
    pub multi_user: bool,
}

/// `supervisor.users`: whose uid a slot runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsersPref {
    /// `allocate` when the daemon runs as root, `shared` otherwise.
    Auto,
    /// A uid per sandbox owner from `uid_range`, recorded in `state.db`.
    Allocate { first: u32, last: u32 },
    /// The host account of the same name (`getent passwd <owner>`).
    System,
    /// Everything as the daemon's own user: no isolation between users.
    Shared,
}

/// The default `supervisor.uid_range`: far above distributions' ranges for
/// people (1000-59999) and system users, below the subuid ranges
/// `useradd` hands out by default (100000 + 65536 per user reach past it
/// only with more than 1500 accounts).
pub const DEFAULT_UID_RANGE: (u32, u32) = (200_000, 299_999);

#[derive(Debug, Clone)]
pub struct Ttyd {
    /// `None`: look for ttyd on PATH, then in the private prefix that
    /// `scripts/install-ttyd.sh` makes.
    pub binary: Option<PathBuf>,
    pub tmux: PathBuf,
    pub bwrap: PathBuf,
    pub ping_interval: Duration,
}

/// Where `scripts/install-ttyd.sh` puts ttyd when the distribution has none.
pub const PRIVATE_TTYD: &str = "/opt/slotgate/ttyd/bin/ttyd";

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub paths: Paths,
    pub ttyd: Ttyd,
    pub supervisor: Supervisor,
    pub templates: BTreeMap<String, Template>,
    /// `[[apps]]`: generic services, in file order.
    pub apps: Vec<App>,
    /// `[activity]`: the activity store.
    pub activity: crate::activity::Settings,
    /// `[claude]`: transcript ingestion, prices, default quotas.
    pub claude: crate::claude::ClaudeConfig,
}

/// Whether `[slotgate] auth` signs people in (anything but `"none"`; the
/// gateway's default is `"local"`). Without a `[slotgate]` section there is
/// no gateway in this config.
fn multi_user(cf: &ConfigFile) -> bool {
    let Some(gw) = cf.table.get("slotgate").and_then(|v| v.as_table()) else {
        return false;
    };
    match gw.get("auth") {
        None => true,
        Some(toml::Value::String(s)) => s != "none",
        Some(toml::Value::Array(a)) => !a.iter().any(|v| v.as_str() == Some("none")),
        Some(_) => true,
    }
}

/// Parse `"200000-299999"`: both ends included, no uid below 1000 (those
/// belong to the system), at least one uid.
fn parse_uid_range(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a range like \"200000-299999\"");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u32 = a.trim().parse().map_err(|_| bad())?;
    let b: u32 = b.trim().parse().map_err(|_| bad())?;
    if a < 1000 {
        return Err(format!(
            "{s:?} starts below 1000, where system accounts live"
        ));
    }
    if b < a || b >= u32::MAX - 1 {
        return Err(format!("{s:?} is empty or reaches the reserved uids"));
    }
    Ok((a, b))
}

/// Parse "30m", "off", "0" (off).
fn parse_idle(file: &Path, v: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    match v {
        None => Ok(Some(Duration::from_secs(30 * 60))),
        Some("off") | Some("never") | Some("0") => Ok(None),
        Some(s) => slotapi::config::parse_duration(s)
            .map(Some)
            .map_err(|r| ConfigError::new(file, "supervisor.idle_timeout", r)),
    }
}

impl Config {
    /// Load from a file, or the embedded defaults rooted at `cwd` when `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let cf = match path {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::empty(&std::env::current_dir().unwrap_or_else(|_| ".".into())),
        };
        Self::from_file(&cf)
    }

    pub fn from_file(cf: &ConfigFile) -> Result<Config, ConfigError> {
        let file = cf.path.clone();
        let paths = cf.paths()?;
        let rt: RawTtyd = cf.section("ttyd")?;
        let rs: RawSupervisor = cf.section("supervisor")?;
        let err = |key: &str, reason: String| ConfigError::new(&file, key, reason);

        let nonzero = |key: &str, d: Duration| {
            if d.is_zero() {
                Err(err(key, "must be greater than zero".into()))
            } else {
                Ok(d)
            }
        };
        let health_interval = nonzero(
            "supervisor.health_interval",
            rs.health_interval.unwrap_or(Duration::from_secs(5)),
        )?;
        let health_timeout = nonzero(
            "supervisor.health_timeout",
            rs.health_timeout.unwrap_or(Duration::from_secs(2)),
        )?;
        let backoff_initial = nonzero(
            "supervisor.backoff_initial",
            rs.backoff_initial.unwrap_or(Duration::from_millis(100)),
        )?;
        let backoff_max = rs.backoff_max.unwrap_or(Duration::from_secs(30));
        if backoff_max < backoff_initial {
            return Err(err(
                "supervisor.backoff_max",
                "must be at least supervisor.backoff_initial".into(),
            ));
        }
        let health_failures = rs.health_failures.unwrap_or(3);
        if health_failures == 0 {
            return Err(err(
                "supervisor.health_failures",
                "must be at least 1".into(),
            ));
        }
        let max_failures = rs.max_failures.unwrap_or(5);
        if max_failures == 0 {
            return Err(err("supervisor.max_failures", "must be at least 1".into()));
        }
        let cgroup_root = rs.cgroup_root.unwrap_or_else(|| "slotgate".into());
        if cgroup_root.is_empty()
            || !cgroup_root
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || cgroup_root.starts_with('.')
        {
            return Err(err(
                "supervisor.cgroup_root",
                format!(
                    "{cgroup_root:?} must be one directory name (letters, digits, '-', '_', '.')"
                ),
            ));
        }
        let isolation = match rs.isolation.as_deref() {
            None | Some("auto") => IsolationPref::Auto,
            Some("rlimit") => IsolationPref::Rlimit,
            Some(other) => {
                return Err(err(
                    "supervisor.isolation",
                    format!("{other:?} is not one of \"auto\", \"rlimit\""),
                ))
            }
        };
        let range = match rs.uid_range.as_deref() {
            None => DEFAULT_UID_RANGE,
            Some(r) => parse_uid_range(r).map_err(|why| err("supervisor.uid_range", why))?,
        };
        let users = match rs.users.as_deref() {
            None | Some("auto") => UsersPref::Auto,
            Some("allocate") => UsersPref::Allocate {
                first: range.0,
                last: range.1,
            },
            Some("system") => UsersPref::System,
            Some("shared") => UsersPref::Shared,
            Some(other) => {
                return Err(err(
                    "supervisor.users",
                    format!(
                        "{other:?} is not one of \"auto\", \"allocate\", \"system\", \"shared\""
                    ),
                ))
            }
        };
        let users = match users {
            UsersPref::Auto if rs.uid_range.is_some() => UsersPref::Allocate {
                first: range.0,
                last: range.1,
            },
            u => u,
        };
        let supervisor = Supervisor {
            health_interval,
            health_timeout,
            health_failures,
            start_timeout: nonzero(
                "supervisor.start_timeout",
                rs.start_timeout.unwrap_or(Duration::from_secs(10)),
            )?,
            backoff_initial,
            backoff_max,
            max_failures,
            failure_window: nonzero(
                "supervisor.failure_window",
                rs.failure_window.unwrap_or(Duration::from_secs(60)),
            )?,
            kill_timeout: rs.kill_timeout.unwrap_or(Duration::from_secs(5)),
            idle_timeout: parse_idle(&file, rs.idle_timeout.as_deref())?,
            log_max_bytes: rs.log_max_bytes.unwrap_or(10 << 20),
            log_keep: rs.log_keep.unwrap_or(3),
            sample_interval: nonzero(
                "supervisor.sample_interval",
                rs.sample_interval.unwrap_or(Duration::from_secs(2)),
            )?,
            cgroup_root,
            isolation,
            max_slots: rs.max_slots.unwrap_or(2000),
            users,
            gateway_group: rs.gateway_group,
            allow_weak_isolation: rs.allow_weak_isolation.unwrap_or(false),
            multi_user: multi_user(cf),
        };
        let ttyd = Ttyd {
            binary: rt.binary.map(|p| cf.resolve(&p)),
            tmux: rt.tmux.unwrap_or_else(|| "tmux".into()),
            bwrap: rt.bwrap.unwrap_or_else(|| "bwrap".into()),
            ping_interval: rt.ping_interval.unwrap_or(Duration::from_secs(30)),
        };
        let templates = template::load_dir(&paths.templates_dir)?;
        let apps = load_apps(cf)?;
        let activity = crate::activity::Settings::from_file(cf, &paths)?;
        let claude = crate::claude::ClaudeConfig::from_file(cf)?;
        Ok(Config {
            file,
            paths,
            ttyd,
            supervisor,
            templates,
            apps,
            activity,
            claude,
        })
    }

    /// The ttyd binary to run: the configured one, else `ttyd` on PATH, else
    /// the private prefix.
    pub fn ttyd_binary(&self) -> Option<PathBuf> {
        if let Some(b) = &self.ttyd.binary {
            return Some(b.clone());
        }
        if let Some(p) = find_on_path("ttyd") {
            return Some(p);
        }
        let private = PathBuf::from(PRIVATE_TTYD);
        private.exists().then_some(private)
    }
}

/// `[[apps]]` → validated apps. Relative `cwd`s resolve against the config
/// file's directory; names must be unique.
fn load_apps(cf: &ConfigFile) -> Result<Vec<App>, ConfigError> {
    let raw: Vec<pm2_compat::AppSpec> = cf.section("apps")?;
    let mut out: Vec<App> = Vec::with_capacity(raw.len());
    for (i, mut spec) in raw.into_iter().enumerate() {
        let label = format!("apps[{i}]");
        spec.cwd = Some(match spec.cwd.as_deref() {
            Some(c) => cf.resolve(c),
            None => cf.base_dir.clone(),
        });
        let app = App::validate(spec)
            .map_err(|e| ConfigError::new(&cf.path, format!("{label}.{}", e.key), e.reason))?;
        if out.iter().any(|a| a.name == app.name) {
            return Err(ConfigError::new(
                &cf.path,
                format!("{label}.name"),
                format!("{:?} is already the name of another app", app.name.as_str()),
            ));
        }
        out.push(app);
    }
    Ok(out)
}

/// First executable called `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ttyd-templates")).unwrap();
        let path = dir.path().join("slotgate.toml");
        std::fs::write(&path, text).unwrap();
        let cf = ConfigFile::load(&path)?;
        Config::from_file(&cf)
    }

    #[test]
    fn defaults_apply() {
        let c = parse("").unwrap();
        assert_eq!(c.supervisor.idle_timeout, Some(Duration::from_secs(1800)));
        assert_eq!(c.supervisor.health_failures, 3);
        assert_eq!(c.supervisor.cgroup_root, "slotgate");
    }

    #[test]
    fn typo_in_key_names_file_section_and_key() {
        let err = parse("[supervisor]\nhealth_intervall = \"5s\"\n").unwrap_err();
        assert!(err.file.ends_with("slotgate.toml"), "{err}");
        assert_eq!(err.key, "supervisor");
        assert!(err.reason.contains("health_intervall"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_reason() {
        let cases = [
            (
                "[supervisor]\nhealth_interval = \"soon\"\n",
                "supervisor",
                "not a duration",
            ),
            (
                "[supervisor]\nhealth_failures = 0\n",
                "supervisor.health_failures",
                "at least 1",
            ),
            (
                "[supervisor]\nbackoff_initial = \"10s\"\nbackoff_max = \"1s\"\n",
                "supervisor.backoff_max",
                "at least",
            ),
            (
                "[supervisor]\ncgroup_root = \"../x\"\n",
                "supervisor.cgroup_root",
                "one directory",
            ),
            (
                "[supervisor]\nidle_timeout = \"later\"\n",
                "supervisor.idle_timeout",
                "not a duration",
            ),
            (
                "[supervisor]\nisolation = \"vm\"\n",
                "supervisor.isolation",
                "not one of",
            ),
        ];
        for (text, key, reason) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
            assert!(err.reason.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn apps_tables_are_strict_and_validated() {
        let c = parse("[[apps]]\nname = \"api\"\ncommand = \"sleep\"\nargs = [\"100\"]\n").unwrap();
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.apps[0].spec.kill_timeout_ms, 1600);
        assert!(c.apps[0].spec.cwd.as_ref().unwrap().is_absolute());
        let err = parse("[[apps]]\nname = \"api\"\ncommand = \"x\"\nscirpt = 1\n").unwrap_err();
        assert_eq!(err.key, "apps");
        assert!(err.reason.contains("scirpt"), "{err}");
        let err =
            parse("[[apps]]\nname = \"a\"\ncommand = \"x\"\nstop_signal = \"NOPE\"\n").unwrap_err();
        assert_eq!(err.key, "apps[0].stop_signal");
        let err = parse(
            "[[apps]]\nname = \"a\"\ncommand = \"x\"\n[[apps]]\nname = \"a\"\ncommand = \"y\"\n",
        )
        .unwrap_err();
        assert_eq!(err.key, "apps[1].name");
    }

    #[test]
    fn idle_timeout_can_be_disabled() {
        let c = parse("[supervisor]\nidle_timeout = \"off\"\n").unwrap();
        assert_eq!(c.supervisor.idle_timeout, None);
    }
}
