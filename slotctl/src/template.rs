//! Slot templates (`ttyd-templates/<name>.toml`): what a slot runs and how it
//! is boxed in. Loading validates every field and every `{variable}` so that
//! a bad template fails at startup, not when a user opens a slot. Expansion
//! is pure string work; this module never starts anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use slotapi::config::{human, ConfigError};

/// Variables a template string may use.
pub const VARIABLES: &[&str] = &[
    "slot", "owner", "sandbox", "home", "workdir", "files", "history", "data_dir",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    description: Option<String>,
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    writable: Option<bool>,
    idle_timeout: Option<String>,
    max_clients: Option<u32>,
    #[serde(default)]
    ttyd_args: Vec<String>,
    #[serde(default)]
    client: BTreeMap<String, toml::Value>,
    #[serde(default)]
    sandbox: RawSandbox,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    recording: RawRecording,
}

/// `[recording]`: how slotgate records this template's sessions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecording {
    /// Record keystrokes too (off by default: output, resizes only).
    #[serde(default)]
    input: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    #[serde(default)]
    bwrap: bool,
    /// `"none"`, `"egress"` or `"host"`; `true`/`false` from older
    /// templates read as `"egress"`/`"none"`.
    network: Option<toml::Value>,
    #[serde(default)]
    shared: Vec<RawShare>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShare {
    source: PathBuf,
    target: String,
    #[serde(default)]
    writable: bool,
    #[serde(default)]
    optional: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default, deserialize_with = "human::opt_size")]
    memory: Option<u64>,
    cpu: Option<f64>,
    pids: Option<u32>,
}

/// A resource (skills, MCP servers, a team workspace) shown inside the slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub source: PathBuf,
    /// Where it appears; may use variables.
    pub target: String,
    pub writable: bool,
    /// Skip (instead of failing the start) when `source` does not exist.
    pub optional: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// In cores (1.5 = one and a half cores).
    pub cpu: Option<f64>,
    pub pids: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: String,
    pub writable: bool,
    /// `None` = use the supervisor default; `Some(None)` = never.
    pub idle_timeout: Option<Option<Duration>>,
    pub max_clients: u32,
    pub ttyd_args: Vec<String>,
    /// ttyd `-t key=value` client options (fontSize, theme, …).
    pub client: Vec<(String, String)>,
    pub bwrap: bool,
    pub network: Network,
    pub shared: Vec<Share>,
    pub limits: Limits,
    /// slotgate records the keystrokes of this template's sessions too.
    pub record_input: bool,
}

/// `[sandbox] network`: what network a sandboxed slot has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Only its own loopback.
    None,
    /// Its own network namespace with outbound connections through pasta;
    /// the host's loopback services (slotgate's included) are out of reach.
    Egress,
    /// The host's network namespace, loopback included (an explicit
    /// opt-in; slotgate then stops trusting loopback sources).
    Host,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Egress => "egress",
            Network::Host => "host",
        }
    }

    fn parse(v: Option<&toml::Value>) -> Result<Network, String> {
        match v {
            None => Ok(Network::Egress),
            Some(toml::Value::Boolean(true)) => Ok(Network::Egress),
            Some(toml::Value::Boolean(false)) => Ok(Network::None),
            Some(toml::Value::String(s)) => match s.as_str() {
                "none" => Ok(Network::None),
                "egress" => Ok(Network::Egress),
                "host" => Ok(Network::Host),
                other => Err(format!(
                    "{other:?} is not one of \"none\", \"egress\", \"host\""
                )),
            },
            Some(other) => Err(format!(
                "{other} is not one of \"none\", \"egress\", \"host\""
            )),
        }
    }
}

/// Values for the template variables of one slot.
#[derive(Debug, Clone)]
pub struct Vars {
    pub slot: String,
    pub owner: String,
    pub sandbox: PathBuf,
    pub data_dir: PathBuf,
}

impl Vars {
    pub fn home(&self) -> PathBuf {
        self.sandbox.join("home")
    }
    pub fn workdir(&self) -> PathBuf {
        self.sandbox.join("workdir")
    }
    pub fn files(&self) -> PathBuf {
        self.sandbox.join("files")
    }
    pub fn history(&self) -> PathBuf {
        self.sandbox.join("history")
    }

    fn value(&self, name: &str) -> Option<String> {
        let p = |p: PathBuf| p.display().to_string();
        Some(match name {
            "slot" => self.slot.clone(),
            "owner" => self.owner.clone(),
            "sandbox" => p(self.sandbox.clone()),
            "home" => p(self.home()),
            "workdir" => p(self.workdir()),
            "files" => p(self.files()),
            "history" => p(self.history()),
            "data_dir" => p(self.data_dir.clone()),
            _ => return None,
        })
    }
}

/// The `{name}` variables used in `s`, or an error for an unclosed brace.
fn variables_in(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{s:?} has an unclosed '{{'"))?;
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// Replace every `{variable}` in `s`. Strings were checked at load time, so
/// an unknown name cannot occur; it is left as written if it does.
pub fn expand(s: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match vars.value(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn check_vars(file: &Path, key: &str, s: &str) -> Result<(), ConfigError> {
    for v in variables_in(s).map_err(|r| ConfigError::new(file, key, r))? {
        if !VARIABLES.contains(&v) {
            return Err(ConfigError::new(
                file,
                key,
                format!("unknown variable {{{v}}}; known: {}", VARIABLES.join(", ")),
            ));
        }
    }
    Ok(())
}

fn client_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        // ttyd parses object/array values of -t as JSON.
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Parse one template file.
pub fn parse(name: &str, file: &Path, text: &str) -> Result<Template, ConfigError> {
    let raw: RawTemplate = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!("line {}", text[..s.start].matches('\n').count() + 1))
            .unwrap_or_else(|| "-".into());
        ConfigError::new(file, line, e.message().to_string())
    })?;
    if raw.command.is_empty() || raw.command[0].trim().is_empty() {
        return Err(ConfigError::new(
            file,
            "command",
            "must name a program, e.g. [\"bash\", \"--login\"]",
        ));
    }
    for (i, a) in raw.command.iter().enumerate() {
        check_vars(file, &format!("command[{i}]"), a)?;
    }
    for (k, v) in &raw.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ConfigError::new(
                file,
                format!("env.{k}"),
                "is not a valid variable name",
            ));
        }
        check_vars(file, &format!("env.{k}"), v)?;
    }
    let cwd = raw.cwd.unwrap_or_else(|| "{workdir}".into());
    check_vars(file, "cwd", &cwd)?;
    let idle_timeout = match raw.idle_timeout.as_deref() {
        None => None,
        Some("off") | Some("never") | Some("0") => Some(None),
        Some(s) => Some(Some(
            slotapi::config::parse_duration(s)
                .map_err(|r| ConfigError::new(file, "idle_timeout", r))?,
        )),
    };
    let network = Network::parse(raw.sandbox.network.as_ref())
        .map_err(|r| ConfigError::new(file, "sandbox.network", r))?;
    let mut shared = Vec::new();
    for (i, s) in raw.sandbox.shared.into_iter().enumerate() {
        let key = format!("sandbox.shared[{i}]");
        if !s.source.is_absolute() {
            return Err(ConfigError::new(
                file,
                format!("{key}.source"),
                "must be an absolute path",
            ));
        }
        check_vars(file, &format!("{key}.target"), &s.target)?;
        shared.push(Share {
            source: s.source,
            target: s.target,
            writable: s.writable,
            optional: s.optional,
        });
    }
    if let Some(cpu) = raw.limits.cpu {
        if !(cpu > 0.0 && cpu <= 1024.0) {
            return Err(ConfigError::new(
                file,
                "limits.cpu",
                "must be a number of cores above 0",
            ));
        }
    }
    if raw.limits.memory == Some(0) || raw.limits.pids == Some(0) {
        return Err(ConfigError::new(
            file,
            "limits",
            "memory and pids limits must be above 0 (leave them out for no limit)",
        ));
    }
    for k in raw.client.keys() {
        if k.is_empty() || k.contains('=') {
            return Err(ConfigError::new(
                file,
                format!("client.{k}"),
                "is not a valid ttyd client option name",
            ));
        }
    }
    Ok(Template {
        name: name.to_string(),
        file: file.to_path_buf(),
        description: raw.description.unwrap_or_default(),
        command: raw.command,
        env: raw.env,
        cwd,
        writable: raw.writable.unwrap_or(true),
        idle_timeout,
        max_clients: raw.max_clients.unwrap_or(0),
        ttyd_args: raw.ttyd_args,
        client: raw
            .client
            .iter()
            .map(|(k, v)| (k.clone(), client_value(v)))
            .collect(),
        bwrap: raw.sandbox.bwrap,
        network,
        shared,
        limits: Limits {
            memory_bytes: raw.limits.memory,
            cpu: raw.limits.cpu,
            pids: raw.limits.pids,
        },
        record_input: raw.recording.input,
    })
}

/// Load every `*.toml` in `dir`. A missing directory means no templates.
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Template>, ConfigError> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(ConfigError::new(
                dir,
                "-",
                format!("cannot read templates directory: {e}"),
            ))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for file in files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if slotapi::SlotId::new(name.clone()).is_err() {
            return Err(ConfigError::new(
                &file,
                "-",
                "template file names must be lowercase letters, digits, '-' or '_'",
            ));
        }
        let text = std::fs::read_to_string(&file)
            .map_err(|e| ConfigError::new(&file, "-", format!("cannot read: {e}")))?;
        out.insert(name.clone(), parse(&name, &file, &text)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            slot: "alice".into(),
            owner: "alice".into(),
            sandbox: "/d/users/alice".into(),
            data_dir: "/d".into(),
        }
    }

    #[test]
    fn expands_every_variable() {
        let cases = [
            ("{home}/.claude", "/d/users/alice/home/.claude"),
            ("{workdir}", "/d/users/alice/workdir"),
            ("tmux-{slot}-{owner}", "tmux-alice-alice"),
            (
                "{files}|{history}|{sandbox}|{data_dir}",
                "/d/users/alice/files|/d/users/alice/history|/d/users/alice|/d",
            ),
            ("no vars", "no vars"),
            ("{unknown}", "{unknown}"),
            ("dangling {", "dangling {"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &vars()), want, "{input}");
        }
    }

    #[test]
    fn parses_a_full_template() {
        let t = parse(
            "claude",
            Path::new("claude.toml"),
            r##"
            description = "Claude Code"
            command = ["claude"]
            env = { CLAUDE_CONFIG_DIR = "{home}/.claude" }
            idle_timeout = "10m"
            max_clients = 3
            [client]
            fontSize = 15
            theme = { background = "#000000" }
            [sandbox]
            bwrap = true
            shared = [{ source = "/opt/skills", target = "{home}/.claude/skills" }]
            [limits]
            memory = "2G"
            cpu = 1.5
            pids = 256
            "##,
        )
        .unwrap();
        assert_eq!(t.limits.memory_bytes, Some(2 << 30));
        assert_eq!(t.idle_timeout, Some(Some(Duration::from_secs(600))));
        assert!(t
            .client
            .contains(&("theme".into(), r##"{"background":"#000000"}"##.into())));
        assert!(t.client.contains(&("fontSize".into(), "15".into())));
        assert!(t.bwrap && !t.shared[0].writable);
        assert_eq!(t.cwd, "{workdir}");
    }

    #[test]
    fn refuses_bad_templates_naming_the_key() {
        let cases = [
            ("command = []", "command", "must name a program"),
            (
                "command = [\"x\"]\ncwd = \"{hmoe}\"",
                "cwd",
                "unknown variable {hmoe}",
            ),
            ("command = [\"{slot\"]", "command[0]", "unclosed"),
            ("command = [\"x\"]\ncomand = 1", "line 2", "unknown field"),
            (
                "command = [\"x\"]\n[limits]\ncpu = -1.0",
                "limits.cpu",
                "above 0",
            ),
            (
                "command = [\"x\"]\n[limits]\nmemory = \"lots\"",
                "line 3",
                "not a size",
            ),
            (
                "command = [\"x\"]\nidle_timeout = \"forever\"",
                "idle_timeout",
                "not a duration",
            ),
            (
                "command = [\"x\"]\n[sandbox]\nshared = [{ source = \"rel\", target = \"x\" }]",
                "sandbox.shared[0].source",
                "absolute",
            ),
        ];
        for (text, key, reason) in cases {
            let err = parse("t", Path::new("t.toml"), text).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
            assert!(err.reason.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn recording_input_is_off_unless_the_template_asks() {
        let off = parse("a", Path::new("a.toml"), "command = [\"bash\"]\n").unwrap();
        assert!(!off.record_input);
        let on = parse(
            "b",
            Path::new("b.toml"),
            "command = [\"bash\"]\n[recording]\ninput = true\n",
        )
        .unwrap();
        assert!(on.record_input);
        let err = parse(
            "c",
            Path::new("c.toml"),
            "command = [\"bash\"]\n[recording]\noutput = false\n",
        )
        .unwrap_err();
        assert!(err.reason.contains("unknown field"), "{err}");
    }

    #[test]
    fn example_templates_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/templates");
        let all = load_dir(&dir).unwrap();
        assert!(all.contains_key("claudebox"), "{:?}", all.keys());
        assert!(!all["claudebox"].bwrap);
    }

    #[test]
    fn network_is_none_egress_or_host() {
        let t = |net: &str| {
            parse(
                "t",
                Path::new("t.toml"),
                &format!("command = [\"x\"]\n[sandbox]\nnetwork = {net}\n"),
            )
        };
        assert_eq!(t("\"host\"").unwrap().network, Network::Host);
        assert_eq!(t("\"none\"").unwrap().network, Network::None);
        assert_eq!(t("true").unwrap().network, Network::Egress);
        assert_eq!(t("false").unwrap().network, Network::None);
        let err = t("\"bridge\"").unwrap_err();
        assert_eq!(err.key, "sandbox.network");
        assert!(err.reason.contains("egress"), "{}", err.reason);
    }
}
