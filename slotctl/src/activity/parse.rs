//! One access-log line (docs/access-log.md, `v` = 1) into the rows it
//! becomes: always a request; for a WebSocket line also a session and,
//! when slotgate recorded it, a recording; for a sign-in attempt a login.

use serde::Deserialize;

/// A parsed line, owning its strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Line {
    pub v: u32,
    pub ts: String,
    pub start: String,
    pub kind: String,
    pub request_id: String,
    pub client_ip: Option<String>,
    pub user: Option<String>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub route: String,
    pub slot: Option<String>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub tls: bool,
    pub served_by: String,
    pub user_agent: Option<String>,
    pub error: Option<String>,
    /// The account of a sign-in attempt (added for the activity store).
    #[serde(default)]
    pub login: Option<String>,
    /// Absolute path of the session's asciicast file (ws lines).
    #[serde(default)]
    pub recording: Option<String>,
    #[serde(default)]
    pub recording_bytes: Option<u64>,
    /// Whether input was recorded too, when slotgate says so.
    #[serde(default)]
    pub recording_input: Option<bool>,
}

/// A line with its times resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub line: Line,
    pub ts_ms: i64,
    pub start_ms: i64,
}

/// Parse one line (without its `\n`). The error is the reason it is
/// malformed.
pub fn parse(raw: &[u8]) -> Result<Parsed, String> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err("empty line".into());
    }
    let line: Line = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    if line.v != 1 {
        return Err(format!("unsupported format version {}", line.v));
    }
    if line.kind != "http" && line.kind != "ws" {
        return Err(format!("kind {:?} is neither http nor ws", line.kind));
    }
    if line.request_id.is_empty() || line.request_id.len() > 64 {
        return Err("request_id must be 1 to 64 characters".into());
    }
    let ts_ms = rfc3339_ms(&line.ts).ok_or_else(|| format!("ts {:?} is not RFC 3339", line.ts))?;
    let start_ms =
        rfc3339_ms(&line.start).ok_or_else(|| format!("start {:?} is not RFC 3339", line.start))?;
    Ok(Parsed {
        line,
        ts_ms,
        start_ms,
    })
}

/// Milliseconds since the epoch of an RFC 3339 time. The common shape
/// slotgate writes (`2026-11-23T13:34:04.447Z`) is read directly; anything
/// else goes through chrono.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
    {
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let mut n = 0i64;
            for &c in &b[r] {
                if !c.is_ascii_digit() {
                    return None;
                }
                n = n * 10 + (c - b'0') as i64;
            }
            Some(n)
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        return Some(((days * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// How a line is a sign-in attempt, if it is one: `(method, user)`.
///
/// A line is a login when slotgate marked it with `login` (the outcome of
/// a password, provider or embed sign-in, successful or refused for a
/// known account), or when it is a refused request to a sign-in endpoint
/// (`POST /auth/login`, `POST /auth/password`, a provider callback) where
/// no account could be named.
pub fn login(l: &Line) -> Option<(String, Option<String>)> {
    let endpoint = login_method(&l.path, &l.method);
    match (&l.login, endpoint) {
        (Some(user), Some(m)) => Some((m, Some(user.clone()))),
        (Some(user), None) => Some(("embed".into(), Some(user.clone()))),
        (None, Some(m)) if l.error.is_some() => Some((m, None)),
        _ => None,
    }
}

fn login_method(path: &str, method: &str) -> Option<String> {
    match (method, path) {
        ("POST", "/auth/login") | ("POST", "/auth/password") => Some("password".into()),
        ("GET", p) => {
            let rest = p.strip_prefix("/auth/")?.strip_suffix("/callback")?;
            let (kind, name) = rest.split_once('/')?;
            matches!(kind, "oidc" | "oauth2").then(|| format!("{kind}:{name}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTP: &str = r#"{"v":1,"ts":"2026-11-23T13:34:04.447Z","start":"2026-11-23T13:34:04.446Z","kind":"http","request_id":"1a47401a85f0bad5","client_ip":"127.0.0.1","user":null,"method":"GET","path":"/slot/alice/token","query":"token=REDACTED&view=1","route":"slot","slot":"alice","status":200,"bytes_in":0,"bytes_out":13,"duration_ms":0.769,"tls":true,"served_by":"slot","user_agent":"curl/7.88.1","error":null}"#;

    #[test]
    fn parses_the_documented_example() {
        let p = parse(HTTP.as_bytes()).unwrap();
        assert_eq!(p.line.request_id, "1a47401a85f0bad5");
        assert_eq!(p.ts_ms, 1_795_440_844_447);
        assert_eq!(p.start_ms, p.ts_ms - 1);
        assert_eq!(p.line.slot.as_deref(), Some("alice"));
        assert!(login(&p.line).is_none());
    }

    #[test]
    fn fast_and_slow_time_paths_agree() {
        for s in [
            "1970-01-01T00:00:00.000Z",
            "2000-02-29T23:59:59.999Z",
            "2026-11-23T13:34:04.447Z",
            "2100-03-01T00:00:00.001Z",
        ] {
            let slow = chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis();
            assert_eq!(rfc3339_ms(s), Some(slow), "{s}");
        }
        assert_eq!(
            rfc3339_ms("2026-11-23T14:34:04.447+01:00"),
            rfc3339_ms("2026-11-23T13:34:04.447Z")
        );
        assert_eq!(rfc3339_ms("2026-13-23T13:34:04.447Z"), None);
        assert_eq!(rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn malformed_lines_say_why() {
        assert!(parse(b"not json").unwrap_err().contains("expected"));
        assert_eq!(parse(b"  ").unwrap_err(), "empty line");
        let v2 = HTTP.replace("\"v\":1", "\"v\":2");
        assert!(parse(v2.as_bytes()).unwrap_err().contains("version 2"));
        let bad_ts = HTTP.replace("2026-11-23T13:34:04.447Z", "soon");
        assert!(parse(bad_ts.as_bytes()).unwrap_err().contains("ts"));
        let no_id = HTTP.replace("\"request_id\":\"1a47401a85f0bad5\",", "");
        assert!(parse(no_id.as_bytes()).unwrap_err().contains("request_id"));
    }

    #[test]
    fn logins_are_recognised() {
        let mut l = parse(HTTP.as_bytes()).unwrap().line;
        l.method = "POST".into();
        l.path = "/auth/login".into();
        l.status = 303;
        assert_eq!(login(&l), None, "a 200/303 without `login` is not one");
        l.login = Some("alice".into());
        assert_eq!(login(&l), Some(("password".into(), Some("alice".into()))));
        l.login = None;
        l.error = Some("csrf".into());
        assert_eq!(login(&l), Some(("password".into(), None)));
        l.method = "GET".into();
        l.path = "/auth/oidc/corp/callback".into();
        l.error = Some("bad_state".into());
        assert_eq!(login(&l), Some(("oidc:corp".into(), None)));
        l.path = "/slot/alice/".into();
        l.error = None;
        l.login = Some("alice".into());
        assert_eq!(login(&l), Some(("embed".into(), Some("alice".into()))));
    }
}
