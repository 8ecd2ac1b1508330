//! The sign-in endpoints under `/auth/` and the embed-token API: the local
//! password form (rate limited per IP and per user, failures logged without
//! the password), the forced password change of the bootstrap
//! administrator, logout and "log out everywhere", OpenID Connect and OAuth2
//! code flows (the `Pending` half of a login is kept in memory, keyed by
//! `state`, single use, bound to the browser by a cookie, ten minutes at
//! most), and the exchange of single-use embed tokens for an embedded
//! session cookie. Every handler returns a complete [`Reply`]; the gateway
//! only reads the request and writes the answer. `next` parameters pass
//! through `identity::redirect::safe_next` and nothing else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use identity::access::Role;
use identity::oauth::{self, OAuthError, OAuthProvider};
use identity::oidc::{self, ExternalUser, OidcConfig, OidcError, OidcProvider};
use identity::redirect::safe_next;
use identity::session;
use identity::store::LoginError;
use pingora::http::RequestHeader;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::config::Config;
use crate::identity::{Auth, Authn, Identity, RequestFacts};
use crate::limits::{Category, Limits};
use crate::pages::{self, ProviderLink, Reply};
use crate::popup;
use crate::routing::{AuthRoute, ProviderKind};
use crate::sessions::{Check, PASSWORD_COOKIE};
use slotapi::SlotId;

/// Cookie binding an OIDC/OAuth2 login to the browser that started it.
const LOGIN_COOKIE: &str = "slotgate_login";
/// How long a started provider login may take.
const PENDING_TTL: Duration = Duration::from_secs(600);
const MAX_PENDING: usize = 10_000;

enum Pending {
    Oidc(oidc::Pending),
    OAuth(oauth::Pending),
}

impl Pending {
    fn provider(&self) -> &str {
        match self {
            Pending::Oidc(p) => &p.provider,
            Pending::OAuth(p) => &p.provider,
        }
    }
    fn created(&self) -> Instant {
        match self {
            Pending::Oidc(p) => p.created,
            Pending::OAuth(p) => p.created,
        }
    }
    fn next(&self) -> &str {
        match self {
            Pending::Oidc(p) => &p.next,
            Pending::OAuth(p) => &p.next,
        }
    }
}

struct Oidc {
    cfg: OidcConfig,
    /// Discovered on first use (and retried while the provider is down),
    /// so a provider outage never stops the gateway from starting.
    provider: OnceCell<Arc<OidcProvider>>,
}

pub struct SignIn {
    auth: Arc<Auth>,
    limits: Arc<Limits>,
    oidc: Vec<Oidc>,
    oauth: Vec<Arc<OAuthProvider>>,
    pending: Mutex<HashMap<String, Pending>>,
    tls: bool,
    /// Origins allowed to embed (for embed tokens).
    frame_origins: Vec<String>,
}

/// The facts of one sign-in request.
pub struct AuthRequest<'a> {
    pub header: &'a RequestHeader,
    pub body: &'a [u8],
    pub client: Option<IpAddr>,
    /// The TCP peer (see `RequestFacts::peer`).
    pub peer: Option<IpAddr>,
    /// Whether the request provably comes from this site's own pages.
    pub same_origin: bool,
    /// `https://host[:port]` as the client addressed us.
    pub origin: String,
}

impl AuthRequest<'_> {
    fn query(&self, key: &str) -> Option<String> {
        let q = self.header.uri.query()?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
    fn form(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.body)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
    fn cookie(&self, name: &str) -> Option<&str> {
        cookie(self.header, name)
    }
    fn user_agent(&self) -> Option<String> {
        self.header
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(200).collect())
    }
    fn next_from(&self, value: Option<String>) -> String {
        value
            .as_deref()
            .and_then(safe_next)
            .unwrap_or("/")
            .to_string()
    }
}

/// A cookie's value from the request.
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|h| h.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name && !v.is_empty()).then_some(v)
        })
}

fn short_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; HttpOnly; Max-Age={max_age}; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedRequest {
    user: String,
    slot: String,
    origin: String,
}

impl SignIn {
    pub fn new(cfg: &Config, auth: Arc<Auth>, limits: Arc<Limits>) -> anyhow::Result<SignIn> {
        let oauth = cfg
            .identity
            .oauth2
            .iter()
            .map(|c| OAuthProvider::new(c.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SignIn {
            auth,
            limits,
            oidc: cfg
                .identity
                .oidc
                .iter()
                .map(|c| Oidc {
                    cfg: c.clone(),
                    provider: OnceCell::new(),
                })
                .collect(),
            oauth,
            pending: Mutex::new(HashMap::new()),
            tls: cfg.is_tls(),
            frame_origins: cfg
                .frame_ancestors
                .iter()
                .filter(|s| s.starts_with("https://") || s.starts_with("http://"))
                .cloned()
                .collect(),
        })
    }

    fn providers(&self, next: &str) -> Vec<ProviderLink> {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish();
        let mut out: Vec<ProviderLink> = self
            .oidc
            .iter()
            .map(|o| ProviderLink {
                href: format!("/auth/oidc/{}/start?{q}", o.cfg.name),
                label: o
                    .cfg
                    .display_name
                    .clone()
                    .unwrap_or_else(|| o.cfg.name.clone()),
            })
            .collect();
        out.extend(self.oauth.iter().map(|o| {
            ProviderLink {
                href: format!("/auth/oauth2/{}/start?{q}", o.cfg.name),
                label: o
                    .cfg
                    .display_name
                    .clone()
                    .unwrap_or_else(|| o.cfg.name.clone()),
            }
        }));
        out
    }

    fn login_page(&self, status: u16, next: &str, notice: Option<&str>) -> Reply {
        pages::login(status, next, &self.providers(next), notice, "")
    }

    /// The sign-in page again after a failed attempt, the user name kept.
    fn login_again(&self, status: u16, next: &str, notice: &str, user: &str) -> Reply {
        pages::login(status, next, &self.providers(next), Some(notice), user)
    }

    fn csrf_refused(&self) -> Reply {
        pages::error(
            403,
            "csrf",
            "Refused",
            "This form must be sent from slotgate's own pages. Reload the page and try again.",
            true,
        )
    }

    pub async fn handle(&self, route: &AuthRoute, req: &AuthRequest<'_>) -> Reply {
        match route {
            AuthRoute::LoginPage => {
                let next = req.next_from(req.query("next"));
                let notice = req.query("notice").and_then(|c| login_notice(&c));
                self.login_page(200, &next, notice)
            }
            AuthRoute::Login => self.login(req).await,
            AuthRoute::Password => self.password(req).await,
            AuthRoute::Logout => self.logout(req, false).await,
            AuthRoute::LogoutAll => self.logout(req, true).await,
            AuthRoute::Start { kind, name } => self.start(*kind, name, req).await,
            AuthRoute::Callback { kind, name } => self.callback(*kind, name, req).await,
            AuthRoute::Popup => self.popup(req).await,
            AuthRoute::Script(name) => popup::script(name).unwrap_or_else(not_found),
        }
    }

    /// `GET /auth/popup?slot=<id>` (see `popup`): sign in first if needed,
    /// then hand the opener a single-use embed token for the slot. Access
    /// to the slot itself is decided when the token is used.
    async fn popup(&self, req: &AuthRequest<'_>) -> Reply {
        let Some(slot) = req.query("slot").and_then(|s| SlotId::new(&s).ok()) else {
            return pages::error(
                400,
                "bad_body",
                "Bad request",
                "Which terminal? The link lacks a valid slot.",
                true,
            );
        };
        let facts = RequestFacts {
            header: req.header,
            peer: req.peer,
        };
        let user = match self.auth.authenticate(&facts).await {
            Authn::Identified(Identity { user: Some(u), .. }, _) => u,
            _ => {
                let next = format!("/auth/popup?slot={slot}");
                let q = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", &next)
                    .finish();
                return pages::found(&format!("/auth/login?{q}"));
            }
        };
        let store = Arc::clone(&self.auth.sessions.store);
        let (u, s) = (user.to_string(), slot.to_string());
        let minted =
            tokio::task::spawn_blocking(move || store.create_embed_token(&u, &s, "popup", 60_000))
                .await;
        match minted {
            Ok(Ok(token)) => {
                tracing::info!(user = %user, slot = %slot, "popup sign-in handed a frame its token");
                popup::popup_done(slot.as_str(), &token)
            }
            _ => pages::error(
                500,
                "session_store",
                "Sign-in failed",
                "The sign-in could not be completed. Try again.",
                true,
            ),
        }
    }

    async fn login(&self, req: &AuthRequest<'_>) -> Reply {
        if !req.same_origin {
            return self.csrf_refused();
        }
        let next = req.next_from(req.form("next"));
        let user = req.form("user").unwrap_or_default().trim().to_string();
        let password = req.form("password").unwrap_or_default();
        if user.is_empty() || password.is_empty() {
            return self.login_page(400, &next, Some("Enter your user name and password."));
        }
        let user_key = (user.len() <= 64).then_some(user.as_str());
        if let Err(l) = self.limits.check(Category::Login, req.client, user_key) {
            tracing::warn!(user = %user, client_ip = ?req.client, scope = l.scope, "sign-in rate limited");
            return pages::rate_limited(&l, true);
        }
        let store = Arc::clone(&self.auth.sessions.store);
        let name = user.clone();
        let checked = tokio::task::spawn_blocking(move || store.check_password(&name, &password))
            .await
            .unwrap_or(Err(LoginError::NoSuchUser));
        match checked {
            Err(e @ (LoginError::NoSuchUser | LoginError::WrongPassword)) => {
                let reason = if e == LoginError::NoSuchUser {
                    "no such user"
                } else {
                    "wrong password"
                };
                tracing::warn!(user = %user, client_ip = ?req.client, reason, "sign-in failed");
                self.login_again(401, &next, "Wrong user name or password.", &user)
                    .with_error("login_failed")
                    .with_login(&user)
            }
            Err(LoginError::Disabled) => {
                tracing::warn!(user = %user, client_ip = ?req.client, reason = "account disabled", "sign-in failed");
                self.login_again(
                    403,
                    &next,
                    "This account is disabled. Ask an administrator to enable it.",
                    &user,
                )
                .with_error("account_disabled")
                .with_login(&user)
            }
            Ok(u) if u.must_change_password => {
                tracing::info!(user = %u.name, "signed in with a one-time password; asking for a new one");
                let token = self.auth.sessions.password_token(&u.name, u.role);
                pages::change_password(200, &u.name, &next, None).with_header(
                    "set-cookie",
                    short_cookie(PASSWORD_COOKIE, &token, "/auth/", 600, self.tls),
                )
            }
            Ok(u) => {
                self.signed_in(&u.name, u.role, "local", None, &next, req)
                    .await
            }
        }
    }

    async fn signed_in(
        &self,
        user: &str,
        role: Role,
        amr: &str,
        id_token: Option<String>,
        next: &str,
        req: &AuthRequest<'_>,
    ) -> Reply {
        match self
            .auth
            .sessions
            .issue(
                user,
                role,
                amr,
                req.client.map(|i| i.to_string()),
                req.user_agent(),
            )
            .await
        {
            Ok((claims, cookie)) => {
                if let Some(t) = id_token {
                    let store = Arc::clone(&self.auth.sessions.store);
                    let sid = claims.sid.clone();
                    let kept =
                        tokio::task::spawn_blocking(move || store.set_session_id_token(&sid, &t))
                            .await;
                    if !matches!(kept, Ok(Ok(()))) {
                        tracing::warn!(
                            user,
                            "cannot keep the ID token; logout will not hint the provider"
                        );
                    }
                }
                tracing::info!(user, amr, client_ip = ?req.client, "signed in");
                pages::see_other(next)
                    .with_header("set-cookie", cookie)
                    .with_login(user)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot create a session");
                pages::error(
                    500,
                    "session_store",
                    "Sign-in failed",
                    "The session could not be created. Try again; if it keeps happening, tell an administrator.",
                    true,
                )
            }
        }
    }

    async fn password(&self, req: &AuthRequest<'_>) -> Reply {
        if !req.same_origin {
            return self.csrf_refused();
        }
        let next = req.next_from(req.form("next"));
        let Some(claims) = req
            .cookie(PASSWORD_COOKIE)
            .and_then(|t| self.auth.sessions.check_password_token(t))
        else {
            return self.login_page(401, &next, Some("Your sign-in expired. Sign in again."));
        };
        let password = req.form("password").unwrap_or_default();
        if Some(&password) != req.form("confirm").as_ref() {
            return pages::change_password(
                400,
                &claims.sub,
                &next,
                Some("The two passwords differ."),
            );
        }
        let store = Arc::clone(&self.auth.sessions.store);
        let user = claims.sub.clone();
        let result = tokio::task::spawn_blocking(move || {
            store.set_password(&user, &password, false)?;
            store.user(&user)
        })
        .await;
        match result {
            Ok(Ok(Some(u))) if !u.disabled => {
                tracing::info!(user = %u.name, "password changed");
                self.signed_in(&u.name, u.role, "local", None, &next, req)
                    .await
                    .with_header(
                        "set-cookie",
                        short_cookie(PASSWORD_COOKIE, "", "/auth/", 0, self.tls),
                    )
            }
            Ok(Err(identity::store::StoreError::WeakPassword)) => pages::change_password(
                400,
                &claims.sub,
                &next,
                Some("The password must be at least 10 characters."),
            ),
            _ => self.login_page(403, &next, Some("This account cannot sign in.")),
        }
    }

    async fn logout(&self, req: &AuthRequest<'_>, everywhere: bool) -> Reply {
        if !req.same_origin {
            return self.csrf_refused();
        }
        let facts = RequestFacts {
            header: req.header,
            peer: req.peer,
        };
        let claims = facts
            .session_token()
            .and_then(|t| match self.auth.sessions.check(t) {
                Check::Valid(c, _) | Check::Expired(c) => Some(c),
                Check::Invalid => None,
            });
        let mut location = "/auth/login".to_string();
        if let Some(c) = &claims {
            if everywhere {
                let n = self.auth.sessions.revoke_user(&c.sub).await;
                tracing::info!(user = %c.sub, sessions = n, "signed out everywhere");
            } else {
                self.auth.sessions.revoke(&c.sid).await;
                tracing::info!(user = %c.sub, "signed out");
            }
            if let Some(name) = c.amr.strip_prefix("oidc:") {
                if let Some(p) = self
                    .oidc
                    .iter()
                    .find(|o| o.cfg.name == name)
                    .and_then(|o| o.provider.get())
                {
                    let store = Arc::clone(&self.auth.sessions.store);
                    let sid = c.sid.clone();
                    let hint = tokio::task::spawn_blocking(move || store.session_id_token(&sid))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten();
                    if let Some(url) =
                        p.end_session_url(hint.as_deref(), &format!("{}/auth/login", req.origin))
                    {
                        location = url;
                    }
                }
            }
        }
        pages::see_other(&location).with_header(
            "set-cookie",
            session::clear_cookie(self.auth.sessions.secure()),
        )
    }

    async fn oidc_provider(&self, name: &str) -> Option<Result<Arc<OidcProvider>, OidcError>> {
        let o = self.oidc.iter().find(|o| o.cfg.name == name)?;
        Some(
            o.provider
                .get_or_try_init(|| async {
                    OidcProvider::discover(o.cfg.clone()).await.map(Arc::new)
                })
                .await
                .cloned(),
        )
    }

    fn remember(&self, state: String, p: Pending) -> bool {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, p| p.created().elapsed() < PENDING_TTL);
        if map.len() >= MAX_PENDING {
            return false;
        }
        map.insert(state, p);
        true
    }

    async fn start(&self, kind: ProviderKind, name: &str, req: &AuthRequest<'_>) -> Reply {
        if let Err(l) = self.limits.check(Category::Login, req.client, None) {
            return pages::rate_limited(&l, true);
        }
        let next = req.next_from(req.query("next"));
        let started = match kind {
            ProviderKind::Oidc => {
                match self.oidc_provider(name).await {
                    None => return not_found(),
                    Some(Err(e)) => {
                        tracing::error!(provider = name, error = %e, "identity provider unreachable");
                        // The sign-in page again, so another way in stays
                        // one click away.
                        return self
                            .login_page(502, &next, login_notice("provider_down"))
                            .with_error("idp_unreachable");
                    }
                    Some(Ok(p)) => {
                        match p.begin(&next) {
                            Ok((url, pending)) => {
                                (url, pending.state.clone(), Pending::Oidc(pending))
                            }
                            Err(e) => {
                                tracing::error!(provider = name, error = %e, "cannot start sign-in");
                                return pages::error(500, "idp_config", "Sign-in is unavailable", "The identity provider is misconfigured; tell an administrator.", true);
                            }
                        }
                    }
                }
            }
            ProviderKind::OAuth2 => match self.oauth.iter().find(|o| o.cfg.name == name) {
                None => return not_found(),
                Some(p) => {
                    let (url, pending) = p.begin(&next);
                    (url, pending.state.clone(), Pending::OAuth(pending))
                }
            },
        };
        let (url, state, pending) = started;
        if !self.remember(state.clone(), pending) {
            return pages::error(
                503,
                "busy",
                "Too many sign-ins",
                "Too many sign-ins are in progress. Try again in a minute.",
                true,
            );
        }
        pages::found(&url).with_header(
            "set-cookie",
            short_cookie(
                LOGIN_COOKIE,
                &state,
                "/auth/",
                PENDING_TTL.as_secs(),
                self.tls,
            ),
        )
    }

    async fn callback(&self, kind: ProviderKind, name: &str, req: &AuthRequest<'_>) -> Reply {
        let clear = short_cookie(LOGIN_COOKIE, "", "/auth/", 0, self.tls);
        let refuse = |status: u16, code: &'static str, message: &str| {
            pages::error(status, code, "Sign-in failed", message, true)
                .with_header("set-cookie", clear.clone())
        };
        if let Some(err) = req.query("error") {
            tracing::warn!(provider = name, error = %err.chars().take(100).collect::<String>(), "identity provider returned an error");
            return refuse(
                401,
                "idp_error",
                "The identity provider did not sign you in. Start again from the sign-in page.",
            );
        }
        let (Some(state), Some(code)) = (req.query("state"), req.query("code")) else {
            return refuse(
                400,
                "bad_callback",
                "This sign-in link is incomplete. Start again from the sign-in page.",
            );
        };
        let taken = {
            let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&state)
        };
        let Some(pending) = taken.filter(|p| p.created().elapsed() < PENDING_TTL) else {
            tracing::warn!(provider = name, client_ip = ?req.client, "sign-in callback with an unknown, used or expired state");
            return refuse(
                401,
                "bad_state",
                "This sign-in expired or was already used. Start again from the sign-in page.",
            );
        };
        if req.cookie(LOGIN_COOKIE) != Some(state.as_str()) || pending.provider() != name {
            tracing::warn!(provider = name, client_ip = ?req.client, "sign-in callback from another browser or provider");
            return refuse(
                401,
                "bad_state",
                "This sign-in was started in another browser. Start again from the sign-in page.",
            );
        }
        let next = pending.next().to_string();
        let result: Result<ExternalUser, (u16, String)> = match (kind, pending) {
            (ProviderKind::Oidc, Pending::Oidc(p)) => match self.oidc_provider(name).await {
                Some(Ok(provider)) => provider.finish(p, &code, &state).await.map_err(|e| {
                    let status = if matches!(e, OidcError::NotAllowed { .. }) {
                        403
                    } else {
                        401
                    };
                    (status, e.to_string())
                }),
                _ => Err((502, "identity provider unavailable".into())),
            },
            (ProviderKind::OAuth2, Pending::OAuth(p)) => {
                match self.oauth.iter().find(|o| o.cfg.name == name) {
                    Some(provider) => provider.finish(p, &code, &state).await.map_err(|e| {
                        let status = if matches!(e, OAuthError::NotAllowed { .. }) {
                            403
                        } else {
                            401
                        };
                        (status, e.to_string())
                    }),
                    None => Err((404, "no such provider".into())),
                }
            }
            _ => Err((401, "provider kind mismatch".into())),
        };
        let user = match result {
            Ok(u) => u,
            Err((status, why)) => {
                tracing::warn!(provider = name, client_ip = ?req.client, reason = %why, "sign-in refused");
                let message = if status == 403 {
                    "Your account is not allowed to use slotgate. Ask an administrator to add you to an allowed group."
                } else {
                    "The identity provider's answer could not be verified. Start again from the sign-in page."
                };
                return refuse(
                    status,
                    if status == 403 {
                        "not_allowed"
                    } else {
                        "idp_refused"
                    },
                    message,
                );
            }
        };
        let amr = match kind {
            ProviderKind::Oidc => format!("oidc:{name}"),
            ProviderKind::OAuth2 => format!("oauth2:{name}"),
        };
        let store = Arc::clone(&self.auth.sessions.store);
        let id_token = user.id_token.clone();
        let ext = user.clone();
        let saved = tokio::task::spawn_blocking(move || {
            if let Ok(Some(existing)) = store.user(&ext.username) {
                if existing.has_password {
                    return Err("a local account with this name exists");
                }
                if existing.disabled {
                    return Err("account disabled");
                }
            }
            store
                .upsert_external(
                    &ext.username,
                    ext.role,
                    ext.email.as_deref(),
                    ext.display_name.as_deref(),
                    &ext.groups,
                )
                .map_err(|_| "cannot save the user")
        })
        .await
        .unwrap_or(Err("cannot save the user"));
        match saved {
            Ok(u) => self
                .signed_in(&u.name, u.role, &amr, id_token, &next, req)
                .await
                .with_header("set-cookie", clear),
            Err(why) => {
                tracing::warn!(provider = name, user = %user.username, reason = why, "sign-in refused");
                refuse(
                    403,
                    "not_allowed",
                    "This account may not sign in here. Ask an administrator.",
                )
                .with_login(&user.username)
            }
        }
    }

    /// `POST /api/embed-tokens`: a service token with scope `embed` asks
    /// for a single-use token bound to user, slot and embedding origin.
    pub async fn embed_token(&self, req: &AuthRequest<'_>) -> Reply {
        let bearer = req
            .header
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|s| s.trim().to_string());
        let Some(bearer) = bearer else {
            return pages::error(
                401,
                "unauthenticated",
                "Unauthenticated",
                "Send a service API token as Authorization: Bearer.",
                false,
            )
            .with_header("www-authenticate", "Bearer");
        };
        if let Err(l) = self.limits.check(Category::Api, req.client, None) {
            return pages::rate_limited(&l, false);
        }
        let store = Arc::clone(&self.auth.sessions.store);
        let verified = tokio::task::spawn_blocking(move || store.verify_api_token(&bearer))
            .await
            .ok()
            .flatten();
        let Some((owner, token)) = verified else {
            return pages::error(
                401,
                "unauthenticated",
                "Unauthenticated",
                "The API token is unknown, revoked or expired.",
                false,
            )
            .with_header("www-authenticate", "Bearer error=\"invalid_token\"");
        };
        if !token.scopes.iter().any(|s| s == "embed") {
            return pages::error(
                403,
                "forbidden",
                "Forbidden",
                "The API token lacks the `embed` scope.",
                false,
            );
        }
        let body: EmbedRequest = match serde_json::from_slice(req.body) {
            Ok(b) => b,
            Err(e) => {
                return pages::error(
                    400,
                    "bad_request",
                    "Bad request",
                    &format!("Expected {{\"user\", \"slot\", \"origin\"}}: {e}"),
                    false,
                )
            }
        };
        if slotapi::SlotId::new(&body.slot).is_err() || slotapi::UserName::new(&body.user).is_err()
        {
            return pages::error(
                400,
                "bad_request",
                "Bad request",
                "Invalid user or slot name.",
                false,
            );
        }
        if !self.frame_origins.contains(&body.origin) {
            return pages::error(
                400,
                "bad_origin",
                "Bad request",
                "The origin is not in slotgate.frame_ancestors.",
                false,
            );
        }
        if owner.role != Role::Admin && owner.name != body.user {
            return pages::error(
                403,
                "forbidden",
                "Forbidden",
                "Only an administrator's service token may mint embed tokens for other users.",
                false,
            );
        }
        let store = Arc::clone(&self.auth.sessions.store);
        let created = tokio::task::spawn_blocking(move || {
            store
                .create_embed_token(&body.user, &body.slot, &body.origin, 60_000)
                .map(|t| (t, body.slot))
        })
        .await;
        match created {
            Ok(Ok((secret, slot))) => {
                tracing::info!(token_id = %token.id, "embed token issued");
                pages::json(
                    201,
                    &serde_json::json!({
                        "token": secret,
                        "expires_in": 60,
                        "url": format!("/slot/{slot}/?embed={secret}"),
                    }),
                )
            }
            _ => pages::error(
                500,
                "store",
                "Error",
                "The embed token could not be created.",
                false,
            ),
        }
    }

    /// `/slot/<id>/?embed=<token>`: exchange a single-use embed token for
    /// an embedded session cookie and redirect to the clean URL.
    pub async fn exchange_embed(&self, slot: &str, secret: &str, req: &AuthRequest<'_>) -> Reply {
        let store = Arc::clone(&self.auth.sessions.store);
        let (s, t) = (slot.to_string(), secret.to_string());
        let used = tokio::task::spawn_blocking(move || {
            let (user, origin) = store.consume_embed_token(&t, &s)?;
            let u = store.user(&user).ok()??;
            (!u.disabled).then_some((u, origin))
        })
        .await
        .ok()
        .flatten();
        let Some((user, origin)) = used else {
            tracing::warn!(slot, client_ip = ?req.client, "embed token refused (unknown, used or expired)");
            return pages::error(401, "bad_embed_token", "Link expired", "This embedded terminal link was already used or has expired. Reload the host page.", true);
        };
        let next = format!("/slot/{slot}/");
        let r = self
            .signed_in(&user.name, user.role, "embed", None, &next, req)
            .await;
        tracing::info!(user = %user.name, slot, origin = %origin, "embed token exchanged");
        // A plain redirect, not 303: the iframe's navigation is a GET.
        Reply {
            status: if r.status == 303 { 302 } else { r.status },
            ..r
        }
    }
}

/// The sign-in page's messages for `?notice=<code>` (links from the portal
/// and the gateway). Only these fixed sentences are shown: nothing from the
/// URL is echoed.
pub fn login_notice(code: &str) -> Option<&'static str> {
    Some(match code {
        "session_ended" => "Your session ended. Sign in again to continue where you left off.",
        "disabled" => "This account is disabled. Ask an administrator to enable it.",
        "over_quota" => "Your usage quota is used up for now. You can still sign in and see your terminals; ask an administrator if you need more.",
        "provider_down" => "The identity provider did not answer. Try again in a moment, or sign in another way; if it keeps happening, tell an administrator.",
        _ => return None,
    })
}

fn not_found() -> Reply {
    pages::error(
        404,
        "not_found",
        "Not found",
        "No such sign-in provider.",
        true,
    )
}

/// Whether a request comes from this site's own pages (CSRF defence for
/// state-changing requests): `Origin` equals our origin, or the browser's
/// `Sec-Fetch-Site` says same-origin. A request with neither is refused.
pub fn same_origin(req: &RequestHeader, own: &str) -> bool {
    let get = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
    match (get("origin"), get("sec-fetch-site")) {
        (Some(o), _) => o == own,
        (None, Some(site)) => site == "same-origin",
        (None, None) => false,
    }
}

/// Whether a WebSocket upgrade's `Origin` is allowed: our own origin or an
/// origin allowed to frame slotgate. Non-browser clients send no `Origin`
/// and carry no ambient cookies, so they pass.
pub fn ws_origin_allowed(req: &RequestHeader, own: &str, frame_origins: &[String]) -> bool {
    match req.headers.get("origin").and_then(|v| v.to_str().ok()) {
        None => true,
        Some(o) => o == own || frame_origins.iter().any(|f| f == o),
    }
}

/// `scheme://host[:port]` as the client addressed the gateway.
pub fn own_origin(req: &RequestHeader, tls: bool) -> String {
    let host = req
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    format!("{}://{host}", if tls { "https" } else { "http" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/auth/login", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn csrf_and_ws_origins() {
        let own = "https://sg.example.com";
        assert!(same_origin(&req(&[("origin", own)]), own));
        assert!(!same_origin(
            &req(&[("origin", "https://evil.example")]),
            own
        ));
        assert!(same_origin(&req(&[("sec-fetch-site", "same-origin")]), own));
        assert!(!same_origin(&req(&[("sec-fetch-site", "cross-site")]), own));
        assert!(!same_origin(&req(&[]), own));
        let frames = vec!["https://app.example.com".to_string()];
        assert!(ws_origin_allowed(&req(&[]), own, &frames));
        assert!(ws_origin_allowed(&req(&[("origin", own)]), own, &frames));
        assert!(ws_origin_allowed(
            &req(&[("origin", "https://app.example.com")]),
            own,
            &frames
        ));
        assert!(!ws_origin_allowed(
            &req(&[("origin", "https://evil.example")]),
            own,
            &frames
        ));
        assert_eq!(
            own_origin(&req(&[("host", "sg.example.com:7681")]), true),
            "https://sg.example.com:7681"
        );
    }

    #[test]
    fn cookies_by_name() {
        let r = req(&[("cookie", "a=1; slotgate_login=st; b=2")]);
        assert_eq!(cookie(&r, "slotgate_login"), Some("st"));
        assert_eq!(cookie(&r, "c"), None);
    }
}
