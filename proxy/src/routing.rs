//! Which handler a request goes to, decided from the raw request target
//! alone. This module owns the path rules that keep odd paths away from the
//! slots: anything that a decoder, a normaliser or ttyd could read as a
//! different path (dot segments, encoded dots, slashes and backslashes,
//! empty segments, control bytes, overlong targets) is refused here with a
//! 400, before identity, rate limits or a socket are involved. It is pure:
//! no I/O, no clock, no configuration beyond the length limit.

use slotapi::SlotId;

/// Reserved path segment under `/slot/<id>/` for the gateway's own endpoints;
/// ttyd never serves it, so it cannot shadow a slot route.
pub const GATEWAY_SEGMENT: &str = "_slotgate";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`: the gateway serves and slotctl answers.
    Health,
    /// `/livez`: the gateway serves.
    Live,
    /// `/metrics`
    Metrics,
    /// `/`
    Landing,
    /// `/slot/<id>` without the trailing slash: redirect so ttyd's relative
    /// URLs (`token`, `ws`) resolve under the slot.
    SlotRedirect { id: SlotId, location: String },
    /// `/slot/<id>/_slotgate/status`: JSON for the "starting" page.
    SlotStatus { id: SlotId },
    /// Anything else under `/slot/<id>/`: proxied to the slot's socket.
    Slot { id: SlotId, kind: SlotRequest },
    /// `/auth/...`: sign-in pages and endpoints.
    Auth(AuthRoute),
    /// `POST /api/embed-tokens`
    EmbedTokens,
    /// `/demo`: to the configured public demo slot, if there is one.
    Demo,
    /// `/api/<rest>`: the public JSON API (any method; `rest` has no
    /// leading slash and no query).
    Api { rest: String },
    /// A portal page the single-page app draws: `/admin`, `/admin/<page>`,
    /// `/replay/<token>`.
    PortalPage,
    /// A built portal file: `/assets/<file>` (hashed, cached for a year) or
    /// a top-level file such as `/favicon.svg`.
    PortalFile { path: String },
    /// `/replay/<token>/cast` or `/replay/<token>/meta`: a shared recording,
    /// no account needed while the link is valid.
    Replay { token: String, part: ReplayPart },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayPart {
    Cast,
    Meta,
}

/// The sign-in endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRoute {
    /// `GET /auth/login`
    LoginPage,
    /// `POST /auth/login`
    Login,
    /// `POST /auth/password`
    Password,
    /// `POST /auth/logout`
    Logout,
    /// `GET /auth/popup?slot=<id>`: sign-in for a framed terminal (top level).
    Popup,
    /// `GET /auth/frame.js`, `/auth/popup.js`
    Script(&'static str),
    /// `POST /auth/logout-all`
    LogoutAll,
    /// `GET /auth/<kind>/<name>/start`
    Start { kind: ProviderKind, name: String },
    /// `GET /auth/<kind>/<name>/callback`
    Callback { kind: ProviderKind, name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Oidc,
    OAuth2,
}

/// What a proxied slot request is, as far as limits and logs care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRequest {
    /// `/slot/<id>/`: ttyd's page.
    Page,
    /// `/slot/<id>/ws`: the terminal WebSocket.
    Ws,
    /// `/slot/<id>/token` and anything else ttyd serves.
    Other,
}

impl Route {
    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Health | Route::Live => "health",
            Route::Metrics => "metrics",
            Route::Landing => "landing",
            Route::SlotRedirect { .. } => "slot_redirect",
            Route::SlotStatus { .. } => "slot_status",
            Route::Slot { .. } => "slot",
            Route::Auth(_) => "auth",
            Route::EmbedTokens | Route::Api { .. } => "api",
            Route::PortalPage | Route::PortalFile { .. } => "portal",
            Route::Replay { .. } => "replay",
            Route::Demo => "demo",
        }
    }

    pub fn slot(&self) -> Option<&SlotId> {
        match self {
            Route::SlotRedirect { id, .. } | Route::SlotStatus { id } | Route::Slot { id, .. } => {
                Some(id)
            }
            _ => None,
        }
    }
}

/// Why a request target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// 400: the target is malformed or tries to escape its route.
    BadRequest(&'static str),
    /// 404: well-formed, but nothing lives there.
    NotFound,
    /// 405: the route exists but not for this method.
    Method,
}

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::NotFound => 404,
            Reject::Method => 405,
        }
    }
}

/// Route a request. `target` is the raw request target exactly as the client
/// sent it (path and query, still percent-encoded).
pub fn route(method: &str, target: &[u8], max_len: usize) -> Result<Route, Reject> {
    if target.len() > max_len {
        return Err(Reject::BadRequest("request target too long"));
    }
    if target.first() != Some(&b'/') {
        return Err(Reject::BadRequest(
            "request target must be an absolute path",
        ));
    }
    if target.iter().any(|b| !(0x21..0x7f).contains(b)) {
        return Err(Reject::BadRequest(
            "control, space or non-ASCII byte in request target",
        ));
    }
    // Checked ASCII above, so this cannot fail; stay total anyway.
    let target = std::str::from_utf8(target)
        .map_err(|_| Reject::BadRequest("request target is not UTF-8"))?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if path.contains('#') || query.is_some_and(|q| q.contains('#')) {
        return Err(Reject::BadRequest("fragment in request target"));
    }
    check_path(path)?;

    let read_only = matches!(method, "GET" | "HEAD");
    let exact = |route: Route| {
        if read_only {
            Ok(route)
        } else {
            Err(Reject::Method)
        }
    };

    match path {
        "/" => return exact(Route::Landing),
        "/healthz" => return exact(Route::Health),
        "/livez" => return exact(Route::Live),
        "/metrics" => return exact(Route::Metrics),
        "/demo" | "/demo/" => return exact(Route::Demo),
        _ => {}
    }
    // `/team/<team>`: the team's slot, `team-<team>`, through the same
    // redirect (and access check) as `/slot/<id>`.
    if let Some(team) = path.strip_prefix("/team/") {
        let team = team.strip_suffix('/').unwrap_or(team);
        if team.is_empty() || team.contains('/') {
            return Err(Reject::NotFound);
        }
        let id = SlotId::new(format!("{}{team}", crate::slot_acl::TEAM_PREFIX))
            .map_err(|_| Reject::BadRequest("invalid team name"))?;
        let location = match query {
            Some(q) => format!("/slot/{id}/?{q}"),
            None => format!("/slot/{id}/"),
        };
        return exact(Route::SlotRedirect { id, location });
    }
    if let Some(rest) = path.strip_prefix("/auth/") {
        return auth_route(method, rest);
    }
    if path == "/api/embed-tokens" {
        return if method == "POST" {
            Ok(Route::EmbedTokens)
        } else {
            Err(Reject::Method)
        };
    }
    if let Some(rest) = path.strip_prefix("/api/") {
        if rest.is_empty() || rest.ends_with('/') {
            return Err(Reject::NotFound);
        }
        return Ok(Route::Api { rest: rest.into() });
    }
    if let Some(r) = portal_route(path) {
        return exact(r?);
    }
    let Some(rest) = path.strip_prefix("/slot/") else {
        return Err(Reject::NotFound);
    };
    let (id, sub) = match rest.split_once('/') {
        Some((id, sub)) => (id, Some(sub)),
        None => (rest, None),
    };
    if id.is_empty() {
        return Err(Reject::NotFound);
    }
    let id = SlotId::new(id).map_err(|_| Reject::BadRequest("invalid slot id"))?;
    let route = match sub {
        None => {
            let location = match query {
                Some(q) => format!("/slot/{id}/?{q}"),
                None => format!("/slot/{id}/"),
            };
            Route::SlotRedirect { id, location }
        }
        Some("") => Route::Slot {
            id,
            kind: SlotRequest::Page,
        },
        Some("ws") => Route::Slot {
            id,
            kind: SlotRequest::Ws,
        },
        Some(sub) if sub == GATEWAY_SEGMENT || sub.starts_with("_slotgate/") => {
            if sub == "_slotgate/status" {
                Route::SlotStatus { id }
            } else {
                return Err(Reject::NotFound);
            }
        }
        Some(_) => Route::Slot {
            id,
            kind: SlotRequest::Other,
        },
    };
    exact(route)
}

/// The portal's pages and files (`None`: not a portal path). Paths
/// already passed [`check_path`], so no segment is empty, `.` or `..`.
fn portal_route(path: &str) -> Option<Result<Route, Reject>> {
    if path == "/admin" {
        return Some(Ok(Route::PortalPage));
    }
    if let Some(page) = path.strip_prefix("/admin/") {
        return Some(match page {
            "slots" | "users" | "stats" | "logs" | "recordings" => Ok(Route::PortalPage),
            _ => Err(Reject::NotFound),
        });
    }
    if let Some(rest) = path.strip_prefix("/replay/") {
        let mut parts = rest.split('/');
        let token = parts.next().unwrap_or_default();
        if token.is_empty() || token.len() > 128 {
            return Some(Err(Reject::NotFound));
        }
        return Some(match (parts.next(), parts.next()) {
            (None, _) => Ok(Route::PortalPage),
            (Some("cast"), None) => Ok(Route::Replay {
                token: token.into(),
                part: ReplayPart::Cast,
            }),
            (Some("meta"), None) => Ok(Route::Replay {
                token: token.into(),
                part: ReplayPart::Meta,
            }),
            _ => Err(Reject::NotFound),
        });
    }
    if let Some(file) = path.strip_prefix("/assets/") {
        return Some(if file.is_empty() || file.ends_with('/') {
            Err(Reject::NotFound)
        } else {
            Ok(Route::PortalFile {
                path: format!("assets/{file}"),
            })
        });
    }
    // A top-level file of the build (`/favicon.svg`): one segment with an
    // extension that is not hidden.
    let name = &path[1..];
    if !name.contains('/') && !name.starts_with('.') && name.contains('.') {
        return Some(Ok(Route::PortalFile { path: name.into() }));
    }
    None
}

fn auth_route(method: &str, rest: &str) -> Result<Route, Reject> {
    let get = matches!(method, "GET" | "HEAD");
    let post = method == "POST";
    let need = |ok: bool, r: AuthRoute| {
        if ok {
            Ok(Route::Auth(r))
        } else {
            Err(Reject::Method)
        }
    };
    match rest {
        "login" if post => Ok(Route::Auth(AuthRoute::Login)),
        "login" => need(get, AuthRoute::LoginPage),
        "password" => need(post, AuthRoute::Password),
        "logout" => need(post, AuthRoute::Logout),
        "logout-all" => need(post, AuthRoute::LogoutAll),
        "popup" => need(get, AuthRoute::Popup),
        "frame.js" => need(get, AuthRoute::Script("frame.js")),
        "popup.js" => need(get, AuthRoute::Script("popup.js")),
        _ => {
            let mut parts = rest.split('/');
            let (Some(kind), Some(name), Some(step), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(Reject::NotFound);
            };
            let kind = match kind {
                "oidc" => ProviderKind::Oidc,
                "oauth2" => ProviderKind::OAuth2,
                _ => return Err(Reject::NotFound),
            };
            if name.is_empty() || name.len() > 32 {
                return Err(Reject::NotFound);
            }
            let name = name.to_string();
            match step {
                "start" => need(get, AuthRoute::Start { kind, name }),
                "callback" => need(get, AuthRoute::Callback { kind, name }),
                _ => Err(Reject::NotFound),
            }
        }
    }
}

/// Segment rules for every path we accept: `/`-separated, no empty segment
/// except a trailing one, no `.`/`..`, and only unreserved characters. `%`
/// is refused outright: ttyd serves no path that needs an escape, and every
/// escape we let through is one more decoder disagreement to reason about.
fn check_path(path: &str) -> Result<(), Reject> {
    if path.contains('\\') {
        return Err(Reject::BadRequest("backslash in path"));
    }
    if path.contains('%') {
        return Err(Reject::BadRequest("percent-encoding in path"));
    }
    if path.contains("//") {
        return Err(Reject::BadRequest("empty path segment"));
    }
    let segments = path[1..].split('/');
    for seg in segments {
        if seg == "." || seg == ".." {
            return Err(Reject::BadRequest("dot segment in path"));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        {
            return Err(Reject::BadRequest("reserved character in path"));
        }
    }
    Ok(())
}

/// Is this a top-level browser navigation (as opposed to a script fetch or a
/// WebSocket)? Those get an HTML page while a slot starts; the rest wait.
pub fn is_navigation(
    method: &str,
    accept: Option<&str>,
    sec_fetch_mode: Option<&str>,
    upgrade: bool,
) -> bool {
    if upgrade || method != "GET" {
        return false;
    }
    match sec_fetch_mode {
        Some(mode) => mode.eq_ignore_ascii_case("navigate"),
        None => accept.is_some_and(|a| a.contains("text/html")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SlotId {
        SlotId::new(s).unwrap()
    }

    #[test]
    fn routes() {
        let cases: Vec<(&str, &str, Result<Route, Reject>)> = vec![
            ("GET", "/", Ok(Route::Landing)),
            ("GET", "/healthz", Ok(Route::Health)),
            ("GET", "/livez", Ok(Route::Live)),
            ("HEAD", "/metrics", Ok(Route::Metrics)),
            ("GET", "/demo", Ok(Route::Demo)),
            (
                "GET",
                "/team/ops",
                Ok(Route::SlotRedirect {
                    id: id("team-ops"),
                    location: "/slot/team-ops/".into(),
                }),
            ),
            (
                "GET",
                "/team/ops/?arg=1",
                Ok(Route::SlotRedirect {
                    id: id("team-ops"),
                    location: "/slot/team-ops/?arg=1".into(),
                }),
            ),
            ("GET", "/team/", Err(Reject::NotFound)),
            ("GET", "/team/ops/ws", Err(Reject::NotFound)),
            (
                "GET",
                "/team/Ops",
                Err(Reject::BadRequest("invalid team name")),
            ),
            (
                "GET",
                "/slot/alice/",
                Ok(Route::Slot {
                    id: id("alice"),
                    kind: SlotRequest::Page,
                }),
            ),
            (
                "GET",
                "/slot/alice/?arg=x",
                Ok(Route::Slot {
                    id: id("alice"),
                    kind: SlotRequest::Page,
                }),
            ),
            (
                "GET",
                "/slot/alice/ws",
                Ok(Route::Slot {
                    id: id("alice"),
                    kind: SlotRequest::Ws,
                }),
            ),
            (
                "GET",
                "/slot/alice/token",
                Ok(Route::Slot {
                    id: id("alice"),
                    kind: SlotRequest::Other,
                }),
            ),
            (
                "GET",
                "/slot/team-1/auth_token.js",
                Ok(Route::Slot {
                    id: id("team-1"),
                    kind: SlotRequest::Other,
                }),
            ),
            (
                "GET",
                "/slot/alice/_slotgate/status",
                Ok(Route::SlotStatus { id: id("alice") }),
            ),
            (
                "GET",
                "/slot/alice",
                Ok(Route::SlotRedirect {
                    id: id("alice"),
                    location: "/slot/alice/".into(),
                }),
            ),
            (
                "GET",
                "/slot/alice?x=1",
                Ok(Route::SlotRedirect {
                    id: id("alice"),
                    location: "/slot/alice/?x=1".into(),
                }),
            ),
            ("POST", "/slot/alice/", Err(Reject::Method)),
            ("DELETE", "/healthz", Err(Reject::Method)),
            ("GET", "/slot/", Err(Reject::NotFound)),
            ("GET", "/slot", Err(Reject::NotFound)),
            ("GET", "/slots/alice/", Err(Reject::NotFound)),
            (
                "GET",
                "/favicon.ico",
                Ok(Route::PortalFile {
                    path: "favicon.ico".into(),
                }),
            ),
            (
                "GET",
                "/assets/index-AbC12.js",
                Ok(Route::PortalFile {
                    path: "assets/index-AbC12.js".into(),
                }),
            ),
            ("GET", "/assets/", Err(Reject::NotFound)),
            ("GET", "/admin", Ok(Route::PortalPage)),
            ("GET", "/admin/users", Ok(Route::PortalPage)),
            ("GET", "/admin/nope", Err(Reject::NotFound)),
            ("POST", "/admin/users", Err(Reject::Method)),
            ("GET", "/replay/tok-1", Ok(Route::PortalPage)),
            (
                "GET",
                "/replay/tok-1/cast",
                Ok(Route::Replay {
                    token: "tok-1".into(),
                    part: ReplayPart::Cast,
                }),
            ),
            ("GET", "/replay/tok-1/other", Err(Reject::NotFound)),
            (
                "DELETE",
                "/api/sessions/abc",
                Ok(Route::Api {
                    rest: "sessions/abc".into(),
                }),
            ),
            ("GET", "/api/", Err(Reject::NotFound)),
            ("GET", "/.env", Err(Reject::NotFound)),
            ("GET", "/slot/alice/_slotgate/other", Err(Reject::NotFound)),
            ("GET", "/slot/alice/_slotgate", Err(Reject::NotFound)),
        ];
        for (method, target, want) in cases {
            assert_eq!(
                route(method, target.as_bytes(), 2048),
                want,
                "{method} {target}"
            );
        }
    }

    /// The attack table the end-to-end test also sends: every one must be
    /// refused before anything reaches a slot.
    #[test]
    fn refuses_path_tricks() {
        let cases: &[(&str, &str)] = &[
            ("/slot/alice/../bob/", "dot segment"),
            ("/slot/../etc/passwd", "dot segment"),
            ("/slot/alice/./ws", "dot segment"),
            ("/slot/alice/..", "dot segment"),
            ("/slot/alice/%2e%2e/bob/", "percent"),
            ("/slot/alice/%2E%2E/bob/", "percent"),
            ("/slot/alice%2f..%2fbob/", "percent"),
            ("/slot/alice/%2fws", "percent"),
            ("/slot/%61lice/", "percent"),
            ("/slot/alice/%00", "percent"),
            ("/slot/alice/%252e%252e/", "percent"),
            ("/slot/alice\\..\\bob/", "backslash"),
            ("/slot/alice/..\\ws", "backslash"),
            ("//slot/alice/", "empty path segment"),
            ("/slot//alice/", "empty path segment"),
            ("/slot/alice//ws", "empty path segment"),
            ("/slot/Alice/", "invalid slot id"),
            ("/slot/a.b/", "invalid slot id"),
            ("/slot/-a/", "invalid slot id"),
            ("/slot/alice/ws;x", "reserved character"),
            ("/slot/alice/w s", "control, space"),
            ("/slot/alice/\u{7f}", "control, space"),
            ("/slot/alice/é", "control, space"),
            ("/slot/alice/#x", "fragment"),
            ("http://evil/slot/alice/", "absolute path"),
            ("*", "absolute path"),
            ("/assets/../../etc/passwd", "dot segment"),
            ("/assets/%2e%2e/index.html", "percent"),
            ("/assets//index.js", "empty path segment"),
            ("/assets/a\\..\\b", "backslash"),
            ("/api/../slot/alice/", "dot segment"),
        ];
        for (target, why) in cases {
            match route("GET", target.as_bytes(), 2048) {
                Err(Reject::BadRequest(reason)) => {
                    assert!(
                        reason.contains(why),
                        "{target}: {reason} should mention {why}"
                    )
                }
                other => panic!("{target}: expected 400 ({why}), got {other:?}"),
            }
        }
        let long = format!("/slot/alice/{}", "a".repeat(3000));
        assert_eq!(
            route("GET", long.as_bytes(), 2048),
            Err(Reject::BadRequest("request target too long"))
        );
        let long_id = format!("/slot/{}/", "a".repeat(33));
        assert_eq!(
            route("GET", long_id.as_bytes(), 2048),
            Err(Reject::BadRequest("invalid slot id"))
        );
    }

    #[test]
    fn navigation() {
        let nav = "text/html,application/xhtml+xml,*/*;q=0.8";
        assert!(is_navigation("GET", Some(nav), None, false));
        assert!(is_navigation("GET", Some("*/*"), Some("navigate"), false));
        assert!(!is_navigation("GET", Some(nav), Some("cors"), false));
        assert!(!is_navigation("GET", Some(nav), None, true));
        assert!(!is_navigation("GET", Some("application/json"), None, false));
        assert!(!is_navigation("GET", None, None, false));
        assert!(!is_navigation("HEAD", Some(nav), None, false));
    }
}
