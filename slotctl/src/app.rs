//! Typed app definitions: a `pm2_compat::AppSpec` (the raw, strict
//! `[[apps]]` table) checked into an [`App`] with its name, stop signal,
//! cron schedule and health probe parsed, plus the pure parts of launching
//! an instance: its command line, environment, cwd and log/pid paths. It
//! never touches processes or the file system beyond reading
//! `/etc/passwd` and `/etc/group` for `user`/`group`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pm2_compat::AppSpec;
use rustix::process::Signal;
use slotapi::AppName;

/// Where the app's instances account and die together: one cgroup (or one
/// environment marker in rlimit mode) per instance. Slot ids cannot contain
/// '.', so these names never collide with a slot's.
pub fn unit_key(name: &AppName, instance: u32) -> String {
    format!("app.{name}.{instance}")
}

/// A health probe, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    Http {
        authority: String,
        path: String,
    },
    Tcp(String),
    Unix {
        path: PathBuf,
        http_path: Option<String>,
    },
    Command(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
}

/// A validated app.
#[derive(Debug, Clone)]
pub struct App {
    pub name: AppName,
    pub spec: AppSpec,
    pub stop_signal: Signal,
    pub cron: Option<croner::Cron>,
    pub probe: Option<Probe>,
}

/// A validation failure: which key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: &'static str,
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        key,
        reason: reason.into(),
    }
}

pub fn parse_signal(s: &str) -> Option<Signal> {
    let up = s.trim().to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    Some(match name {
        "HUP" => Signal::HUP,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        "TERM" => Signal::TERM,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "KILL" => Signal::KILL,
        "WINCH" => Signal::WINCH,
        _ => return None,
    })
}

pub fn parse_cron(pattern: &str) -> Result<croner::Cron, String> {
    let normal = pm2_compat::units::normalise_cron(pattern)?;
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(&normal)
        .map_err(|e| format!("{pattern:?} is not a valid cron pattern: {e}"))
}

/// Time from now until the schedule next fires (local time, as PM2).
pub fn next_cron_delay(cron: &croner::Cron) -> Option<Duration> {
    let now = chrono::Local::now();
    let next = cron.find_next_occurrence(&now, false).ok()?;
    (next - now).to_std().ok()
}

fn parse_probe(h: &pm2_compat::HealthCheck) -> Result<Probe, Invalid> {
    let mut kinds = Vec::new();
    if !h.url.is_empty() {
        let rest = h.url.strip_prefix("http://").ok_or_else(|| {
            invalid(
                "health.url",
                format!("{:?}: only http:// URLs can be probed", h.url),
            )
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(invalid("health.url", format!("{:?} has no host", h.url)));
        }
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        kinds.push(ProbeKind::Http {
            authority,
            path: path.to_string(),
        });
    }
    if let Some(t) = &h.tcp {
        if !t.contains(':') {
            return Err(invalid("health.tcp", format!("{t:?} is not host:port")));
        }
        kinds.push(ProbeKind::Tcp(t.clone()));
    }
    if let Some(u) = &h.unix {
        kinds.push(ProbeKind::Unix {
            path: PathBuf::from(u),
            http_path: h.unix_path.clone(),
        });
    }
    if let Some(c) = &h.command {
        kinds.push(ProbeKind::Command(c.clone()));
    }
    if kinds.len() != 1 {
        return Err(invalid(
            "health",
            "set exactly one of url, tcp, unix, command",
        ));
    }
    let retries = h.retries.unwrap_or(3);
    if retries == 0 {
        return Err(invalid("health.retries", "must be at least 1"));
    }
    Ok(Probe {
        kind: kinds.remove(0),
        interval: Duration::from_millis(h.interval_ms.unwrap_or(5000).max(50)),
        timeout: Duration::from_millis(h.timeout_ms.unwrap_or(2000).max(10)),
        retries,
    })
}

impl App {
    pub fn validate(spec: AppSpec) -> Result<App, Invalid> {
        let name = AppName::new(spec.name.clone()).map_err(|e| invalid("name", e.to_string()))?;
        if spec.namespace.is_empty() {
            return Err(invalid("namespace", "must not be empty"));
        }
        if spec.command.as_os_str().is_empty() {
            return Err(invalid("command", "must not be empty"));
        }
        if spec.instances == 0 || spec.instances > 4096 {
            return Err(invalid("instances", "must be 1 to 4096"));
        }
        let stop_signal = parse_signal(&spec.stop_signal).ok_or_else(|| {
            invalid(
                "stop_signal",
                format!("{:?} is not one of SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL, SIGWINCH", spec.stop_signal),
            )
        })?;
        let cron = spec
            .cron_restart
            .as_deref()
            .map(parse_cron)
            .transpose()
            .map_err(|r| invalid("cron_restart", r))?;
        let probe = spec.health.as_ref().map(parse_probe).transpose()?;
        if let Some(var) = &spec.increment_var {
            let ok = spec.env.get(var).is_some_and(|v| v.parse::<u64>().is_ok());
            if !ok {
                return Err(invalid(
                    "increment_var",
                    format!("env.{var} must be set to a number to be incremented per instance"),
                ));
            }
        }
        if spec.instance_var.is_empty() {
            return Err(invalid("instance_var", "must not be empty"));
        }
        Ok(App {
            name,
            spec,
            stop_signal,
            cron,
            probe,
        })
    }

    pub fn cwd(&self, data_dir: &Path) -> PathBuf {
        self.spec
            .cwd
            .clone()
            .unwrap_or_else(|| data_dir.to_path_buf())
    }

    /// The script or program with a relative path resolved against cwd
    /// (what PM2 reports as `pm_exec_path`).
    pub fn exec_path(&self, data_dir: &Path) -> PathBuf {
        let c = &self.spec.command;
        let bare = self.spec.interpreter.is_none() && !c.to_string_lossy().contains('/');
        if c.is_absolute() || bare {
            c.clone()
        } else {
            self.cwd(data_dir).join(c)
        }
    }

    /// Program and arguments for `Command`.
    pub fn argv(&self, data_dir: &Path) -> (String, Vec<String>) {
        let exec = self.exec_path(data_dir).to_string_lossy().into_owned();
        match &self.spec.interpreter {
            Some(i) => {
                let mut args = self.spec.interpreter_args.clone();
                args.push(exec);
                args.extend(self.spec.args.iter().cloned());
                (i.clone(), args)
            }
            None => (exec, self.spec.args.clone()),
        }
    }

    /// The instance's environment: exactly the app's `env`, its instance
    /// variables, and `PATH`/`HOME`/`LANG` from the daemon when the app
    /// does not set them (a program without PATH cannot find its tools).
    pub fn env(&self, instance: u32, host: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env = self.spec.env.clone();
        for (k, v) in host {
            env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        env.insert(self.spec.instance_var.clone(), instance.to_string());
        if let Some(var) = &self.spec.increment_var {
            if let Some(base) = env.get(var).and_then(|v| v.parse::<u64>().ok()) {
                env.insert(var.clone(), (base + instance as u64).to_string());
            }
        }
        env
    }

    /// Whether instance files get a `-<pm_id>` suffix (PM2's rule).
    fn split_logs(&self) -> bool {
        self.spec.instances > 1 && !self.spec.merge_logs
    }

    /// stdout, stderr and combined log paths; `None` discards.
    pub fn log_paths(&self, data_dir: &Path, pm_id: u32) -> LogPaths {
        let dir = data_dir.join("logs").join("apps");
        let split = self.split_logs();
        let pick = |given: &Option<PathBuf>, default: Option<String>| -> Option<PathBuf> {
            let p = match given {
                Some(p) if is_null(p) => return None,
                Some(p) => p.clone(),
                None => dir.join(default?),
            };
            Some(if split { suffixed(&p, pm_id) } else { p })
        };
        let name = self.name.as_str();
        LogPaths {
            out: pick(&self.spec.out_file, Some(format!("{name}-out.log"))),
            err: pick(&self.spec.error_file, Some(format!("{name}-error.log"))),
            combined: pick(&self.spec.log_file, None),
        }
    }

    pub fn pid_path(&self, data_dir: &Path, pm_id: u32) -> PathBuf {
        match &self.spec.pid_file {
            Some(p) if self.spec.instances > 1 => suffixed(p, pm_id),
            Some(p) => p.clone(),
            None => data_dir
                .join("pids")
                .join(format!("{}-{pm_id}.pid", self.name)),
        }
    }

    /// Lines go through a `__log-writer` process (timestamps, JSON lines,
    /// a combined file) rather than straight into the files.
    pub fn needs_writer(&self, logs: &LogPaths) -> bool {
        (logs.out.is_some() || logs.err.is_some() || logs.combined.is_some())
            && (self.spec.log_timestamps.is_some() || self.spec.log_json || logs.combined.is_some())
    }
}

fn is_null(p: &Path) -> bool {
    p == Path::new("/dev/null") || p.as_os_str() == "NULL"
}

/// `x/app-out.log` → `x/app-out-3.log` (PM2's per-instance naming).
fn suffixed(p: &Path, pm_id: u32) -> PathBuf {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match p.extension() {
        Some(ext) => format!("{stem}-{pm_id}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{pm_id}"),
    };
    p.with_file_name(name)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogPaths {
    pub out: Option<PathBuf>,
    pub err: Option<PathBuf>,
    pub combined: Option<PathBuf>,
}

/// `uid`/`gid` for a user or group given by name or number.
pub fn resolve_id(file: &str, value: &str) -> Option<(u32, Option<u32>)> {
    if let Ok(n) = value.parse::<u32>() {
        return Some((n, None));
    }
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == value {
            Some((f[2].parse().ok()?, f[3].parse().ok()))
        } else {
            None
        }
    })
}

/// The name of a uid (or gid) in `/etc/passwd` (`/etc/group`).
pub fn resolve_name(file: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse::<u32>().ok() == Some(id)).then(|| f[0].to_string())
    })
}

/// Whether `path` (relative to the watched root) matches an `ignore_watch`
/// pattern: a glob (`*`, `?`) against the whole relative path or any one
/// component, or a `/regex/`-style pattern treated as a substring (slotctl
/// has no regex engine; PM2's default `node_modules` and dotfile rule are
/// applied when the list is empty).
pub fn ignored(patterns: &[String], rel: &Path) -> bool {
    let text = rel.to_string_lossy();
    let comps: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if patterns.is_empty() {
        return comps
            .iter()
            .any(|c| c.starts_with('.') || c == "node_modules");
    }
    patterns.iter().any(|p| {
        let p = p.trim();
        if let Some(inner) = p
            .strip_prefix('/')
            .and_then(|r| r.rsplit_once('/'))
            .map(|(s, _)| s)
        {
            let literal: String = inner.chars().filter(|c| !"\\^$".contains(*c)).collect();
            return !literal.is_empty() && text.contains(&literal);
        }
        let p = p.trim_start_matches("./").trim_end_matches('/');
        let p = p.strip_prefix("**/").unwrap_or(p);
        glob(p, &text) || comps.iter().any(|c| glob(p, c))
    })
}

/// `*` (any run of characters), `?` (one character), everything else literal.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Render a day.js format (`YYYY-MM-DD HH:mm:ss Z`) for a local time.
pub fn format_timestamp(fmt: &str, t: &chrono::DateTime<chrono::Local>) -> String {
    use chrono::{Datelike, Timelike};
    let off = t.offset().local_minus_utc();
    let sign = if off < 0 { '-' } else { '+' };
    let (oh, om) = (off.abs() / 3600, off.abs() % 3600 / 60);
    let mut out = String::with_capacity(fmt.len() + 8);
    let mut rest = fmt;
    // Longest tokens first.
    let tokens: &[&str] = &[
        "YYYY", "SSS", "MM", "DD", "HH", "mm", "ss", "ZZ", "YY", "Z", "M", "D", "H", "m", "s",
    ];
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            if let Some(end) = inner.find(']') {
                out.push_str(&inner[..end]);
                rest = &inner[end + 1..];
                continue;
            }
        }
        let Some(tok) = tokens.iter().find(|t| rest.starts_with(**t)) else {
            let ch = rest.chars().next().unwrap_or(' ');
            out.push(ch);
            rest = &rest[ch.len_utf8()..];
            continue;
        };
        let s = match *tok {
            "YYYY" => format!("{:04}", t.year()),
            "YY" => format!("{:02}", t.year() % 100),
            "MM" => format!("{:02}", t.month()),
            "M" => t.month().to_string(),
            "DD" => format!("{:02}", t.day()),
            "D" => t.day().to_string(),
            "HH" => format!("{:02}", t.hour()),
            "H" => t.hour().to_string(),
            "mm" => format!("{:02}", t.minute()),
            "m" => t.minute().to_string(),
            "ss" => format!("{:02}", t.second()),
            "s" => t.second().to_string(),
            "SSS" => format!("{:03}", t.timestamp_subsec_millis()),
            "Z" => format!("{sign}{oh:02}:{om:02}"),
            _ => format!("{sign}{oh:02}{om:02}"),
        };
        out.push_str(&s);
        rest = &rest[tok.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(f: impl FnOnce(&mut AppSpec)) -> Result<App, Invalid> {
        let mut s = AppSpec::new("api", "server.js");
        s.interpreter = Some("node".into());
        s.cwd = Some("/srv/api".into());
        f(&mut s);
        App::validate(s)
    }

    #[test]
    fn validation_names_the_key() {
        type Edit = Box<dyn FnOnce(&mut AppSpec)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|s| s.name = "a b".into()), "name"),
            (Box::new(|s| s.stop_signal = "SIGFOO".into()), "stop_signal"),
            (
                Box::new(|s| s.cron_restart = Some("61 * * * *".into())),
                "cron_restart",
            ),
            (Box::new(|s| s.instances = 0), "instances"),
            (
                Box::new(|s| s.increment_var = Some("PORT".into())),
                "increment_var",
            ),
            (
                Box::new(|s| s.health = Some(pm2_compat::HealthCheck::default())),
                "health",
            ),
            (
                Box::new(|s| {
                    s.health = Some(pm2_compat::HealthCheck {
                        url: "https://x/".into(),
                        ..Default::default()
                    })
                }),
                "health.url",
            ),
        ];
        for (f, key) in cases {
            assert_eq!(app(f).unwrap_err().key, key);
        }
    }

    #[test]
    fn command_line_env_and_paths() {
        let a = app(|s| {
            s.args = vec!["--x".into()];
            s.interpreter_args = vec!["--inspect".into()];
            s.instances = 2;
            s.merge_logs = false;
            s.env.insert("PORT".into(), "3000".into());
            s.increment_var = Some("PORT".into());
        })
        .unwrap();
        let data = Path::new("/d");
        assert_eq!(
            a.argv(data),
            (
                "node".into(),
                vec![
                    "--inspect".into(),
                    "/srv/api/server.js".into(),
                    "--x".into()
                ]
            )
        );
        let host = BTreeMap::from([("PATH".to_string(), "/bin".to_string())]);
        let env = a.env(1, &host);
        assert_eq!(env["PORT"], "3001");
        assert_eq!(env["NODE_APP_INSTANCE"], "1");
        assert_eq!(env["PATH"], "/bin");
        let logs = a.log_paths(data, 7);
        assert_eq!(logs.out, Some("/d/logs/apps/api-out-7.log".into()));
        assert_eq!(logs.err, Some("/d/logs/apps/api-error-7.log".into()));
        assert_eq!(logs.combined, None);
        assert_eq!(a.pid_path(data, 7), PathBuf::from("/d/pids/api-7.pid"));
        let bare = App::validate(AppSpec::new("x", "sleep")).unwrap();
        assert_eq!(bare.argv(data).0, "sleep");
    }

    #[test]
    fn ignore_patterns() {
        let pats = vec![
            "__pycache__".to_string(),
            "*.log".to_string(),
            "/tmp\\//".to_string(),
        ];
        assert!(ignored(&pats, Path::new("__pycache__/x.pyc")));
        assert!(ignored(&pats, Path::new("a/b.log")));
        assert!(ignored(&pats, Path::new("tmp/x")));
        assert!(!ignored(&pats, Path::new("slot_manager.py")));
        assert!(ignored(&[], Path::new(".git/HEAD")));
        assert!(ignored(&[], Path::new("node_modules/x.js")));
        assert!(!ignored(&[], Path::new("src/x.js")));
    }

    #[test]
    fn timestamps_follow_dayjs_tokens() {
        use chrono::TimeZone;
        let t = chrono::Local.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        let s = format_timestamp("YYYY-MM-DDTHH:mm:ss", &t);
        assert_eq!(s, "2026-03-04T05:06:07");
        let z = format_timestamp("[at] HH:mm Z", &t);
        assert!(z.starts_with("at 05:06 "), "{z}");
    }

    #[test]
    fn cron_next_fire_is_in_the_future() {
        let c = parse_cron("* * * * * *").unwrap();
        assert!(next_cron_delay(&c).unwrap() <= Duration::from_secs(1));
        assert!(parse_cron("@daily").is_ok());
    }
}
