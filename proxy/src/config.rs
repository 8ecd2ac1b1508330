//! The `[slotgate]` section of the shared configuration file: a raw serde
//! struct that rejects unknown keys, and `validate()` that turns it into the
//! typed [`Config`] the rest of the gateway reads. Every error names the
//! file, the key and the reason, so bad configuration fails at startup (and
//! in `slotgate check-config`), never at request time. This module reads no
//! certificates and binds nothing; it only decides what the settings mean.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use identity::header::HeaderConfig;
use identity::oauth::OAuthConfig;
use identity::oidc::OidcConfig;
use serde::Deserialize;
use slotapi::config::{human, ConfigError, ConfigFile, Paths};
use slotapi::SlotId;

/// `[slotgate]` as written in the file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlotgate {
    pub listen: Option<Vec<String>>,
    pub tls: Option<bool>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub redirect_listen: Option<Vec<String>>,
    pub auth: Option<OneOrMany>,
    /// `[[slotgate.oidc]]`: OpenID Connect providers.
    pub oidc: Option<Vec<OidcConfig>>,
    /// `[[slotgate.oauth2]]`: plain OAuth2 providers (GitHub-style).
    pub oauth2: Option<Vec<OAuthConfig>>,
    /// `[slotgate.header]`: trusted-header mode.
    pub header: Option<HeaderConfig>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    pub session_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    pub session_idle_timeout: Option<Duration>,
    pub default_template: Option<String>,
    pub create_default_slot: Option<bool>,
    /// A slot anyone may watch read-only, without signing in, at `/demo`.
    pub demo_slot: Option<String>,
    /// Reverse proxies in front of slotgate whose `X-Forwarded-For` and
    /// `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Believe loopback sources (metrics, trusted headers, forwarded
    /// addresses). Default: yes, unless a template gives slots the host's
    /// network, from which a slot could pose as such a source.
    pub trust_loopback: Option<bool>,
    pub threads: Option<usize>,
    pub frame_ancestors: Option<Vec<String>>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    pub hsts_max_age: Option<Duration>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    pub start_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    pub activity_interval: Option<Duration>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    pub shutdown_grace: Option<Duration>,
    /// On a reload, how long the old process keeps its open connections.
    #[serde(default, deserialize_with = "human::opt_duration")]
    pub reload_grace: Option<Duration>,
    /// How long a client has to send a request's headers.
    #[serde(default, deserialize_with = "human::opt_duration")]
    pub header_timeout: Option<Duration>,
    /// The most bytes a request's headers may take.
    #[serde(default, deserialize_with = "human::opt_size")]
    pub max_header_size: Option<u64>,
    pub max_path_len: Option<usize>,
    pub metrics: Option<String>,
    #[serde(default)]
    pub access_log: RawAccessLog,
    #[serde(default)]
    pub rate_limits: RawRateLimits,
    #[serde(default)]
    pub recording: RawRecording,
    #[serde(default)]
    pub portal: RawPortal,
}

/// `[slotgate.recording]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecording {
    pub enabled: Option<bool>,
    pub dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "human::opt_size")]
    pub max_size: Option<u64>,
    #[serde(default, deserialize_with = "human::opt_size")]
    pub max_total: Option<u64>,
    pub retention: Option<String>,
    pub redact: Option<Vec<String>>,
    pub redact_defaults: Option<bool>,
    pub queue: Option<usize>,
}

/// `[slotgate.portal]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPortal {
    /// The built web portal (`web/dist`): `index.html` and `assets/`.
    pub dir: Option<PathBuf>,
    /// Templates a `user` may create slots from (admins: all).
    pub user_templates: Option<Vec<String>>,
    /// Most slots one user may own through the portal.
    pub max_slots_per_user: Option<usize>,
}

/// The web portal, `[slotgate.portal]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalConfig {
    /// `None`: no portal pages (the gateway serves only slots and sign-in).
    pub dir: Option<PathBuf>,
    pub user_templates: Vec<String>,
    pub max_slots_per_user: usize,
}

/// `[slotgate.access_log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub enabled: Option<bool>,
    pub path: Option<PathBuf>,
    #[serde(default, deserialize_with = "human::opt_size")]
    pub max_size: Option<u64>,
    pub keep: Option<u32>,
    pub queue: Option<usize>,
}

/// `[slotgate.rate_limits]`: events per `window`, per client IP and per
/// signed-in user. `0` switches a limit off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    #[serde(default, deserialize_with = "human::opt_duration")]
    pub window: Option<Duration>,
    pub requests_per_ip: Option<u32>,
    pub login_per_ip: Option<u32>,
    pub login_per_user: Option<u32>,
    pub api_per_ip: Option<u32>,
    pub api_per_user: Option<u32>,
    pub ws_connect_per_ip: Option<u32>,
    pub ws_connect_per_user: Option<u32>,
    pub slot_start_per_ip: Option<u32>,
    pub slot_start_per_user: Option<u32>,
    pub max_ws_per_user: Option<u32>,
    pub connections_per_ip: Option<u32>,
    pub max_connections_per_ip: Option<u32>,
}

/// `auth = "local"` or `auth = ["local", "oidc"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Everyone is anonymous with access to every slot (loopback only).
    None,
    /// Signed-in users: local accounts plus the configured providers.
    Accounts,
}

/// Everything the identity modes need (meaningful when `auth` is not `none`).
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The modes named in `auth` (`local` is always on).
    pub modes: Vec<String>,
    pub oidc: Vec<OidcConfig>,
    pub oauth2: Vec<OAuthConfig>,
    pub header: Option<HeaderConfig>,
    /// Lifetime of one session cookie token; refreshed while the user is active.
    pub session_ttl: Duration,
    /// A session unused for this long ends (server side).
    pub session_idle_timeout: Duration,
    /// Template of the slot created on a user's first visit to `/slot/<user>`.
    pub default_template: String,
    pub create_default_slot: bool,
    /// `[slotgate] demo_slot`: watched read-only by anyone at `/demo`.
    pub demo_slot: Option<SlotId>,
    /// `<data_dir>/identity.db`
    pub db_path: PathBuf,
    /// `<data_dir>/identity/session-keys.json`
    pub keys_path: PathBuf,
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Only clients connecting from a loopback address.
    Loopback,
    /// Anyone who can reach a listener.
    Public,
    Off,
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Operator-provided PEM files, reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// Generated on first start into `dir` (`selfsigned.crt`, `selfsigned.key`).
    SelfSigned { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    pub enabled: bool,
    pub path: PathBuf,
    pub max_size: u64,
    pub keep: u32,
    pub queue: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub window: Duration,
    pub requests_per_ip: u32,
    pub login_per_ip: u32,
    pub login_per_user: u32,
    pub api_per_ip: u32,
    pub api_per_user: u32,
    pub ws_connect_per_ip: u32,
    pub ws_connect_per_user: u32,
    pub slot_start_per_ip: u32,
    pub slot_start_per_user: u32,
    pub max_ws_per_user: u32,
    /// New connections per window from one client address.
    pub connections_per_ip: u32,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            window: Duration::from_secs(60),
            requests_per_ip: 0,
            login_per_ip: 20,
            login_per_user: 10,
            api_per_ip: 600,
            api_per_user: 300,
            ws_connect_per_ip: 120,
            ws_connect_per_user: 60,
            slot_start_per_ip: 30,
            slot_start_per_user: 10,
            max_ws_per_user: 20,
            connections_per_ip: 1200,
            max_connections_per_ip: 256,
        }
    }
}

/// The validated `[slotgate]` section plus the shared `[paths]`.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub paths: Paths,
    pub listen: Vec<SocketAddr>,
    /// `None`: plain HTTP on `listen` (loopback only).
    pub tls: Option<TlsSource>,
    pub redirect_listen: Vec<SocketAddr>,
    pub auth: AuthMode,
    pub identity: IdentityConfig,
    pub threads: usize,
    pub frame_ancestors: Vec<String>,
    /// `[slotgate] trusted_proxies`, parsed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Whether a trust decision (metrics, trusted headers, forwarded
    /// addresses) may rest on a loopback source: not when slots can have
    /// one too (`host_network_templates`), unless `trust_loopback = true`.
    pub loopback_trusted: bool,
    /// Templates whose slots share the host's network (`network = "host"`
    /// or no sandbox): from them a slot reaches slotgate from loopback.
    pub host_network_templates: Vec<String>,
    /// `None`: no `Strict-Transport-Security` header.
    pub hsts_max_age: Option<Duration>,
    pub start_timeout: Duration,
    pub connect_timeout: Duration,
    pub activity_interval: Duration,
    pub shutdown_grace: Duration,
    pub reload_grace: Duration,
    pub header_timeout: Duration,
    pub max_header_size: u64,
    pub max_path_len: usize,
    pub metrics: MetricsAccess,
    pub access_log: AccessLogConfig,
    pub limits: LimitsConfig,
    pub recording: crate::recording::RecordingConfig,
    pub portal: PortalConfig,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7681";

impl Config {
    pub fn from_file(file: &ConfigFile) -> Result<Config, ConfigError> {
        let paths = file.paths()?;
        let raw: RawSlotgate = file.section("slotgate")?;
        raw.validate(file, paths)
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Loopback, IPv4-mapped IPv6 loopback included.
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Templates in `dir` whose slots run in the host's network namespace:
/// `[sandbox] network = "host"`, or no sandbox at all. Files that do not
/// parse are slotctl's to report.
pub fn host_network_templates(dir: &std::path::Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| {
            let table: toml::Table = std::fs::read_to_string(&p).ok()?.parse().ok()?;
            let sandbox = table.get("sandbox").and_then(|v| v.as_table());
            let bwrap = sandbox
                .and_then(|s| s.get("bwrap"))
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let host = sandbox
                .and_then(|s| s.get("network"))
                .and_then(|v| v.as_str())
                == Some("host");
            let name = p.file_stem()?.to_string_lossy().into_owned();
            (!bwrap || host).then_some(name)
        })
        .collect();
    out.sort();
    out
}

impl RawSlotgate {
    pub fn validate(self, file: &ConfigFile, paths: Paths) -> Result<Config, ConfigError> {
        let err = |key: &str, reason: String| {
            ConfigError::new(&file.path, format!("slotgate.{key}"), reason)
        };

        let listen = parse_addrs(
            self.listen
                .unwrap_or_else(|| vec![DEFAULT_LISTEN.to_string()]),
        )
        .map_err(|r| err("listen", r))?;
        if listen.is_empty() {
            return Err(err("listen", "needs at least one address".into()));
        }
        let redirect_listen = parse_addrs(self.redirect_listen.unwrap_or_default())
            .map_err(|r| err("redirect_listen", r))?;
        for addr in &redirect_listen {
            if listen.iter().any(|l| {
                l.port() == addr.port()
                    && (l.ip() == addr.ip()
                        || l.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            }) {
                return Err(err(
                    "redirect_listen",
                    format!("{addr} collides with a `listen` address"),
                ));
            }
        }

        let tls_on = self.tls.unwrap_or(true);
        let tls = match (tls_on, self.cert, self.key) {
            (false, None, None) => None,
            (false, _, _) => {
                return Err(err(
                    "tls",
                    "cert/key are set but tls = false; remove them or enable TLS".into(),
                ))
            }
            (true, Some(cert), Some(key)) => Some(TlsSource::Files {
                cert: file.resolve(&cert),
                key: file.resolve(&key),
            }),
            (true, None, None) => Some(TlsSource::SelfSigned {
                dir: paths.data_dir.join("tls"),
            }),
            (true, Some(_), None) => {
                return Err(err(
                    "key",
                    "cert is set but key is not; set both or neither".into(),
                ))
            }
            (true, None, Some(_)) => {
                return Err(err(
                    "cert",
                    "key is set but cert is not; set both or neither".into(),
                ))
            }
        };
        if tls.is_none() {
            if let Some(a) = listen.iter().find(|a| !a.ip().is_loopback()) {
                return Err(err(
                    "tls",
                    format!("plain HTTP (tls = false) is only allowed on loopback, but {a} is not loopback"),
                ));
            }
            if !redirect_listen.is_empty() {
                return Err(err(
                    "redirect_listen",
                    "redirects to HTTPS need tls = true".into(),
                ));
            }
        }

        let modes: Vec<String> = match self.auth {
            // Embedded default: local accounts with a bootstrap admin.
            None => vec!["local".into()],
            Some(OneOrMany::One(m)) => vec![m],
            Some(OneOrMany::Many(list)) => list,
        };
        if modes.is_empty() {
            return Err(err(
                "auth",
                "empty list; write \"local\" or \"none\"".into(),
            ));
        }
        for m in &modes {
            if !matches!(m.as_str(), "none" | "local" | "oidc" | "oauth2" | "header") {
                return Err(err(
                    "auth",
                    format!("unknown mode {m:?}; write \"local\", \"oidc\", \"oauth2\", \"header\" or \"none\""),
                ));
            }
        }
        let auth = if modes.iter().any(|m| m == "none") {
            if modes.len() > 1 {
                return Err(err(
                    "auth",
                    "\"none\" cannot be combined with other modes".into(),
                ));
            }
            AuthMode::None
        } else {
            AuthMode::Accounts
        };
        let has = |m: &str| modes.iter().any(|x| x == m);
        let oidc = self.oidc.unwrap_or_default();
        let oauth2 = self.oauth2.unwrap_or_default();
        if has("oidc") && oidc.is_empty() {
            return Err(err(
                "oidc",
                "auth names \"oidc\" but no [[slotgate.oidc]] provider is configured".into(),
            ));
        }
        if has("oauth2") && oauth2.is_empty() {
            return Err(err(
                "oauth2",
                "auth names \"oauth2\" but no [[slotgate.oauth2]] provider is configured".into(),
            ));
        }
        if has("header") && self.header.is_none() {
            return Err(err(
                "header",
                "auth names \"header\" but [slotgate.header] is missing".into(),
            ));
        }
        if !oidc.is_empty() && !has("oidc") {
            return Err(err(
                "oidc",
                "providers are configured but auth does not name \"oidc\"".into(),
            ));
        }
        if !oauth2.is_empty() && !has("oauth2") {
            return Err(err(
                "oauth2",
                "providers are configured but auth does not name \"oauth2\"".into(),
            ));
        }
        if self.header.is_some() && !has("header") {
            return Err(err(
                "header",
                "[slotgate.header] is set but auth does not name \"header\"".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in oidc.iter().enumerate() {
            check_provider_name(&p.name).map_err(|r| err(&format!("oidc[{i}].name"), r))?;
            if !names.insert(("oidc", p.name.clone())) {
                return Err(err(
                    &format!("oidc[{i}].name"),
                    format!("{:?} is used twice", p.name),
                ));
            }
            if !p
                .redirect_uri
                .ends_with(&format!("/auth/oidc/{}/callback", p.name))
            {
                return Err(err(
                    &format!("oidc[{i}].redirect_uri"),
                    format!("must end with /auth/oidc/{}/callback", p.name),
                ));
            }
        }
        for (i, p) in oauth2.iter().enumerate() {
            check_provider_name(&p.name).map_err(|r| err(&format!("oauth2[{i}].name"), r))?;
            if !names.insert(("oauth2", p.name.clone())) {
                return Err(err(
                    &format!("oauth2[{i}].name"),
                    format!("{:?} is used twice", p.name),
                ));
            }
            if !p
                .redirect_uri
                .ends_with(&format!("/auth/oauth2/{}/callback", p.name))
            {
                return Err(err(
                    &format!("oauth2[{i}].redirect_uri"),
                    format!("must end with /auth/oauth2/{}/callback", p.name),
                ));
            }
        }
        if let Some(h) = &self.header {
            identity::header::parse_sources(&h.trusted_sources)
                .map_err(|r| err("header.trusted_sources", r))?;
            if h.trusted_sources.is_empty() {
                return Err(err(
                    "header.trusted_sources",
                    "name the address of the SSO proxy in front of slotgate".into(),
                ));
            }
        }
        let session_ttl = self.session_ttl.unwrap_or(Duration::from_secs(15 * 60));
        if session_ttl < Duration::from_secs(60) || session_ttl > Duration::from_secs(24 * 3600) {
            return Err(err("session_ttl", "must be between 1m and 24h".into()));
        }
        let session_idle_timeout = self
            .session_idle_timeout
            .unwrap_or(Duration::from_secs(12 * 3600));
        if session_idle_timeout < session_ttl {
            return Err(err(
                "session_idle_timeout",
                "must be at least session_ttl".into(),
            ));
        }
        let default_template = self.default_template.unwrap_or_else(|| "shell".into());
        let demo_slot = match self.demo_slot {
            None => None,
            Some(s) => Some(SlotId::new(&s).map_err(|e| err("demo_slot", e.to_string()))?),
        };
        let identity = IdentityConfig {
            modes,
            oidc,
            oauth2,
            header: self.header,
            session_ttl,
            session_idle_timeout,
            default_template,
            create_default_slot: self.create_default_slot.unwrap_or(true),
            demo_slot,
            db_path: paths.data_dir.join("identity.db"),
            keys_path: paths.data_dir.join("identity").join("session-keys.json"),
        };
        if auth == AuthMode::None {
            if let Some(a) = listen
                .iter()
                .chain(&redirect_listen)
                .find(|a| !a.ip().is_loopback())
            {
                return Err(err(
                    "auth",
                    format!(
                        "auth = \"none\" lets anyone open any slot, so every listener must be loopback; {a} is not"
                    ),
                ));
            }
        }

        // One thread keeps both directions of a terminal's relay on one
        // runtime thread: measurably lower keystroke latency than two, and
        // it still proxies well over 10k requests/s.
        let threads = self.threads.unwrap_or(1);
        if threads == 0 || threads > 256 {
            return Err(err("threads", format!("{threads} is out of range 1..=256")));
        }

        let frame_ancestors = self
            .frame_ancestors
            .unwrap_or_else(|| vec!["'self'".into()]);
        if frame_ancestors.is_empty() {
            return Err(err(
                "frame_ancestors",
                "empty list; write [\"'none'\"] to forbid framing".into(),
            ));
        }
        for source in &frame_ancestors {
            check_frame_source(source).map_err(|r| err("frame_ancestors", r))?;
        }
        let trusted_proxies =
            identity::header::parse_sources(&self.trusted_proxies.unwrap_or_default())
                .map_err(|r| err("trusted_proxies", r))?;

        let hsts_max_age = match self.hsts_max_age {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(Duration::from_secs(180 * 24 * 3600)),
        };

        let start_timeout = self.start_timeout.unwrap_or(Duration::from_secs(20));
        if start_timeout.is_zero() || start_timeout > Duration::from_secs(60) {
            return Err(err(
                "start_timeout",
                "must be between 1ms and 60s (the daemon waits at most 60s)".into(),
            ));
        }
        let connect_timeout = self.connect_timeout.unwrap_or(Duration::from_secs(2));
        if connect_timeout.is_zero() {
            return Err(err("connect_timeout", "must be greater than zero".into()));
        }
        let activity_interval = self.activity_interval.unwrap_or(Duration::from_secs(60));
        if activity_interval < Duration::from_secs(1) {
            return Err(err("activity_interval", "must be at least 1s".into()));
        }
        let shutdown_grace = self.shutdown_grace.unwrap_or(Duration::from_secs(5));
        let reload_grace = self.reload_grace.unwrap_or(Duration::from_secs(3600));
        for (key, grace) in [
            ("shutdown_grace", shutdown_grace),
            ("reload_grace", reload_grace),
        ] {
            if grace > Duration::from_secs(7 * 24 * 3600) {
                return Err(err(key, "must be at most 7d".into()));
            }
        }
        let header_timeout = self.header_timeout.unwrap_or(Duration::from_secs(20));
        if header_timeout < Duration::from_millis(100) || header_timeout > Duration::from_secs(300)
        {
            return Err(err("header_timeout", "must be between 100ms and 5m".into()));
        }

        let max_header_size = self.max_header_size.unwrap_or(64 * 1024);
        if !(4096..=1024 * 1024).contains(&max_header_size) {
            return Err(err(
                "max_header_size",
                format!("{max_header_size} bytes is out of range 4K..=1M"),
            ));
        }
        let max_path_len = self.max_path_len.unwrap_or(2048);
        if !(64..=65536).contains(&max_path_len) {
            return Err(err(
                "max_path_len",
                format!("{max_path_len} is out of range 64..=65536"),
            ));
        }

        let metrics = match self.metrics.as_deref().unwrap_or("loopback") {
            "loopback" => MetricsAccess::Loopback,
            "public" => MetricsAccess::Public,
            "off" => MetricsAccess::Off,
            other => {
                return Err(err(
                    "metrics",
                    format!("{other:?} is not one of \"loopback\", \"public\", \"off\""),
                ))
            }
        };

        let access_log = {
            let raw = self.access_log;
            let path = raw
                .path
                .map(|p| file.resolve(&p))
                .unwrap_or_else(|| slotapi::config::default_access_log(&paths));
            let max_size = raw.max_size.unwrap_or(100 << 20);
            if max_size < 4096 {
                return Err(err("access_log.max_size", "must be at least 4K".into()));
            }
            let queue = raw.queue.unwrap_or(8192);
            if queue == 0 {
                return Err(err("access_log.queue", "must be at least 1".into()));
            }
            AccessLogConfig {
                enabled: raw.enabled.unwrap_or(true),
                path,
                max_size,
                keep: raw.keep.unwrap_or(5),
                queue,
            }
        };

        let recording = {
            let raw = self.recording;
            let dir = raw
                .dir
                .map(|p| file.resolve(&p))
                .unwrap_or_else(|| paths.data_dir.join("recordings"));
            let dir = std::path::absolute(&dir)
                .map_err(|e| err("recording.dir", format!("{}: {e}", dir.display())))?;
            let max_size = raw.max_size.unwrap_or(50 << 20);
            if max_size < 4096 {
                return Err(err("recording.max_size", "must be at least 4K".into()));
            }
            let max_total = raw.max_total.unwrap_or(10 << 30);
            if max_total < max_size {
                return Err(err(
                    "recording.max_total",
                    "must be at least recording.max_size".into(),
                ));
            }
            let retention = match raw.retention.as_deref().map(str::trim) {
                None => Some(Duration::from_secs(30 * 24 * 3600)),
                Some("off") | Some("forever") | Some("0") => None,
                Some(s) => Some(
                    slotapi::config::parse_duration(s)
                        .map_err(|r| err("recording.retention", r))?,
                ),
            };
            let patterns = crate::recording::redact::Patterns::new(
                raw.redact_defaults.unwrap_or(true),
                raw.redact.as_deref().unwrap_or_default(),
            )
            .map_err(|r| err("recording.redact", r))?;
            let queue = raw.queue.unwrap_or(8192);
            if queue == 0 {
                return Err(err("recording.queue", "must be at least 1".into()));
            }
            crate::recording::RecordingConfig {
                enabled: raw.enabled.unwrap_or(true),
                dir,
                max_size,
                max_total,
                retention,
                patterns,
                queue,
            }
        };

        let limits = {
            let r = self.rate_limits;
            let d = LimitsConfig::default();
            let window = r.window.unwrap_or(d.window);
            if window < Duration::from_secs(1) || window > Duration::from_secs(3600) {
                return Err(err(
                    "rate_limits.window",
                    "must be between 1s and 1h".into(),
                ));
            }
            LimitsConfig {
                window,
                requests_per_ip: r.requests_per_ip.unwrap_or(d.requests_per_ip),
                login_per_ip: r.login_per_ip.unwrap_or(d.login_per_ip),
                login_per_user: r.login_per_user.unwrap_or(d.login_per_user),
                api_per_ip: r.api_per_ip.unwrap_or(d.api_per_ip),
                api_per_user: r.api_per_user.unwrap_or(d.api_per_user),
                ws_connect_per_ip: r.ws_connect_per_ip.unwrap_or(d.ws_connect_per_ip),
                ws_connect_per_user: r.ws_connect_per_user.unwrap_or(d.ws_connect_per_user),
                slot_start_per_ip: r.slot_start_per_ip.unwrap_or(d.slot_start_per_ip),
                slot_start_per_user: r.slot_start_per_user.unwrap_or(d.slot_start_per_user),
                max_ws_per_user: r.max_ws_per_user.unwrap_or(d.max_ws_per_user),
                connections_per_ip: r.connections_per_ip.unwrap_or(d.connections_per_ip),
                max_connections_per_ip: r
                    .max_connections_per_ip
                    .unwrap_or(d.max_connections_per_ip),
            }
        };

        let portal = PortalConfig {
            dir: self.portal.dir.map(|d| file.resolve(&d)),
            user_templates: self
                .portal
                .user_templates
                .unwrap_or_else(|| vec![identity.default_template.clone()]),
            max_slots_per_user: self.portal.max_slots_per_user.unwrap_or(5),
        };
        if portal.max_slots_per_user == 0 || portal.max_slots_per_user > 1000 {
            return Err(err(
                "portal.max_slots_per_user",
                format!("{} is out of range 1..=1000", portal.max_slots_per_user),
            ));
        }

        let host_network_templates = host_network_templates(&paths.templates_dir);
        let loopback_trusted = self
            .trust_loopback
            .unwrap_or(host_network_templates.is_empty());
        Ok(Config {
            file: file.path.clone(),
            loopback_trusted,
            host_network_templates,
            paths,
            listen,
            tls,
            redirect_listen,
            auth,
            identity,
            threads,
            frame_ancestors,
            trusted_proxies,
            hsts_max_age,
            start_timeout,
            connect_timeout,
            activity_interval,
            shutdown_grace,
            reload_grace,
            header_timeout,
            max_header_size,
            max_path_len,
            metrics,
            access_log,
            limits,
            recording,
            portal,
        })
    }
}

/// Provider names appear in URLs (`/auth/oidc/<name>/…`).
fn check_provider_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1-32 lowercase letters, digits or '-' (it appears in URLs)"
        ))
    }
}

fn parse_addrs(raw: Vec<String>) -> Result<Vec<SocketAddr>, String> {
    raw.iter()
        .map(|s| {
            s.parse::<SocketAddr>().map_err(|_| {
                format!("{s:?} is not an IP:port address (write e.g. 127.0.0.1:7681 or [::1]:7681)")
            })
        })
        .collect()
}

/// One `frame-ancestors` source: a keyword, a scheme, or an origin. Anything
/// that could break out of the header value (quotes, `;`, `,`, spaces) is
/// refused.
fn check_frame_source(s: &str) -> Result<(), String> {
    if matches!(s, "'self'" | "'none'") {
        return Ok(());
    }
    if s == "*" {
        return Err("\"*\" would let any site frame a terminal; list the origins instead".into());
    }
    let scheme_only = s.len() > 1
        && s.ends_with(':')
        && s[..s.len() - 1].chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '+' || c == '-' || c == '.'
        });
    let origin = ["https://", "http://"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .is_some_and(|host| {
            !host.is_empty()
                && host.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '-' | '*' | '[' | ']')
                })
        });
    if !(scheme_only || origin) {
        return Err(format!(
            "{s:?} is not a CSP source; write 'self', 'none', a scheme like https:, or an origin like https://app.example.com"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let file = ConfigFile::parse(Path::new("/srv/sg/slotgate.toml"), text)?;
        Config::from_file(&file)
    }

    #[test]
    fn defaults_are_loopback_tls_self_signed() {
        let c = load("").unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:7681".parse().unwrap()]);
        assert_eq!(
            c.tls,
            Some(TlsSource::SelfSigned {
                dir: PathBuf::from("/srv/sg/.slotgate/data/tls")
            })
        );
        assert_eq!(c.auth, AuthMode::Accounts);
        assert_eq!(c.frame_ancestors, vec!["'self'"]);
        assert_eq!(
            c.access_log.path,
            PathBuf::from("/srv/sg/.slotgate/data/logs/access.log")
        );
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.metrics, MetricsAccess::Loopback);
    }

    #[test]
    fn full_section_parses() {
        let c = load(
            r#"
[slotgate]
listen = ["127.0.0.1:8443", "[::1]:8443"]
cert = "certs/host.crt"
key = "/etc/sg/host.key"
redirect_listen = ["127.0.0.1:8080"]
threads = 4
frame_ancestors = ["'self'", "https://intranet.example.com"]
hsts_max_age = "0s"
start_timeout = "15s"
max_path_len = 1024
metrics = "public"
[slotgate.access_log]
path = "logs/a.log"
max_size = "10M"
keep = 2
[slotgate.rate_limits]
window = "10s"
ws_connect_per_ip = 3
"#,
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(
            c.tls,
            Some(TlsSource::Files {
                cert: "/srv/sg/certs/host.crt".into(),
                key: "/etc/sg/host.key".into()
            })
        );
        assert_eq!(c.hsts_max_age, None);
        assert_eq!(c.access_log.path, PathBuf::from("/srv/sg/logs/a.log"));
        assert_eq!(c.access_log.max_size, 10 << 20);
        assert_eq!(c.limits.window, Duration::from_secs(10));
        assert_eq!(c.limits.ws_connect_per_ip, 3);
        assert_eq!(c.limits.api_per_ip, LimitsConfig::default().api_per_ip);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[slotgate]\nlisten = [\"0.0.0.0:7681\"]\nauth = \"none\"\n",
                "slotgate.auth",
                "loopback",
            ),
            (
                "[slotgate]\nlisten = [\"localhost:7681\"]\n",
                "slotgate.listen",
                "IP:port",
            ),
            (
                "[slotgate]\nlisten = []\n",
                "slotgate.listen",
                "at least one",
            ),
            ("[slotgate]\ncert = \"a.crt\"\n", "slotgate.key", "both"),
            (
                "[slotgate]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
                "slotgate.trusted_proxies",
                "10.0.0.0/33",
            ),
            (
                "[slotgate]\ndemo_slot = \"Bad Id\"\n",
                "slotgate.demo_slot",
                "",
            ),
            (
                "[slotgate]\ntls = false\ncert = \"a\"\nkey = \"b\"\n",
                "slotgate.tls",
                "tls = false",
            ),
            (
                "[slotgate]\nauth = \"kerberos\"\n",
                "slotgate.auth",
                "unknown mode",
            ),
            (
                "[slotgate]\nauth = \"oidc\"\n",
                "slotgate.oidc",
                "no [[slotgate.oidc]]",
            ),
            (
                "[slotgate]\nauth = [\"none\", \"local\"]\n",
                "slotgate.auth",
                "cannot be combined",
            ),
            (
                "[slotgate]\nauth = \"local\"\nsession_ttl = \"5s\"\n",
                "slotgate.session_ttl",
                "between",
            ),
            (
                "[slotgate]\nauth = \"oidc\"\n[[slotgate.oidc]]\nname = \"kc\"\nissuer = \"https://kc\"\nclient_id = \"sg\"\nredirect_uri = \"https://h/auth/oidc/other/callback\"\n",
                "slotgate.oidc[0].redirect_uri",
                "must end with",
            ),
            (
                "[slotgate]\nframe_ancestors = [\"*\"]\n",
                "slotgate.frame_ancestors",
                "any site",
            ),
            (
                "[slotgate]\nframe_ancestors = [\"https://a; script-src *\"]\n",
                "slotgate.frame_ancestors",
                "not a CSP source",
            ),
            (
                "[slotgate]\nstart_timeout = \"2m\"\n",
                "slotgate.start_timeout",
                "60s",
            ),
            (
                "[slotgate]\nheader_timeout = \"10m\"\n",
                "slotgate.header_timeout",
                "between 100ms and 5m",
            ),
            (
                "[slotgate]\nreload_grace = \"30d\"\n",
                "slotgate.reload_grace",
                "at most 7d",
            ),
            (
                "[slotgate]\nmax_header_size = \"2M\"\n",
                "slotgate.max_header_size",
                "out of range 4K..=1M",
            ),
            (
                "[slotgate]\nmetrics = \"yes\"\n",
                "slotgate.metrics",
                "not one of",
            ),
            (
                "[slotgate]\nthreads = 0\n",
                "slotgate.threads",
                "out of range",
            ),
            (
                "[slotgate.rate_limits]\nwindow = \"0s\"\n",
                "slotgate.rate_limits.window",
                "between",
            ),
            (
                "[slotgate]\nredirect_listen = [\"127.0.0.1:7681\"]\n",
                "slotgate.redirect_listen",
                "collides",
            ),
        ];
        for (text, key, reason) in cases {
            let e = load(text).unwrap_err();
            assert_eq!(&e.key, key, "{text}: {e}");
            assert!(
                e.reason.contains(reason),
                "{text}: {e} should mention {reason}"
            );
            assert_eq!(e.file, "/srv/sg/slotgate.toml");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = load("[slotgate]\nlisten_addr = \"x\"\n").unwrap_err();
        assert_eq!(e.key, "slotgate");
        assert!(e.reason.contains("listen_addr"), "{e}");
        let e = load("[slotgate.rate_limits]\nws_per_ip = 3\n").unwrap_err();
        assert!(e.reason.contains("ws_per_ip"), "{e}");
        let e = load("[slotgate]\nstart_timeout = \"soon\"\n").unwrap_err();
        assert!(e.reason.contains("not a duration"), "{e}");
    }

    #[test]
    fn identity_modes() {
        let c = load(
            r#"
[slotgate]
listen = ["0.0.0.0:7681"]
auth = ["local", "oidc"]
session_ttl = "10m"
[[slotgate.oidc]]
name = "kc"
issuer = "https://kc.example.com/realms/x"
client_id = "slotgate"
redirect_uri = "https://sg.example.com/auth/oidc/kc/callback"
admin_groups = ["ops"]
"#,
        )
        .unwrap();
        assert_eq!(c.auth, AuthMode::Accounts);
        assert_eq!(c.identity.oidc.len(), 1);
        assert_eq!(c.identity.session_ttl, Duration::from_secs(600));
        assert_eq!(
            c.identity.db_path,
            PathBuf::from("/srv/sg/.slotgate/data/identity.db")
        );
        let c = load("[slotgate]\nauth = \"local\"\n").unwrap();
        assert_eq!(c.auth, AuthMode::Accounts);
        assert_eq!(c.identity.default_template, "shell");
    }

    #[test]
    fn plain_http_is_loopback_only() {
        let c = load("[slotgate]\ntls = false\n").unwrap();
        assert!(c.tls.is_none());
        let e =
            load("[slotgate]\ntls = false\nredirect_listen = [\"127.0.0.1:8080\"]\n").unwrap_err();
        assert_eq!(e.key, "slotgate.redirect_listen");
    }

    #[test]
    fn frame_sources() {
        for ok in [
            "'self'",
            "'none'",
            "https:",
            "https://a.example.com",
            "https://*.example.com",
            "http://127.0.0.1:3000",
        ] {
            assert!(check_frame_source(ok).is_ok(), "{ok}");
        }
        for bad in [
            "*",
            "self",
            "https://a b",
            "'unsafe-inline'",
            "https://a,https://b",
            "https://a/x/y",
        ] {
            assert!(check_frame_source(bad).is_err(), "{bad}");
        }
    }
}
