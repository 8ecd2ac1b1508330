//! slotgate's public JSON API under `/api/` (docs/api.md): who am I, slots
//! and their sharing, templates, the identity store's users, sessions and
//! API tokens, and the activity/usage/quota/recording routes forwarded to
//! slotctl's control API with the caller's role narrowing the request.
//! Every access decision is made here, before anything reaches slotctl; the
//! gateway only authenticates, rate-limits and writes the answer.
//!
//! Callers are signed-in sessions (cookie) or API tokens with the `api`
//! scope (`Authorization: Bearer`). State-changing calls made with a cookie
//! must come from this site's own pages (the sign-in forms' CSRF check).

mod admin;
mod forward;
mod slots;

use std::net::IpAddr;
use std::sync::Arc;

use http::Method;
use hyper::body::Incoming;
use identity::access::Role;
use identity::store::Store;
use pingora::http::RequestHeader;
use serde::de::DeserializeOwned;
use serde::Serialize;
use slotapi::{Client, ClientError};

use crate::config::Config;
use crate::identity::{Auth, Authn, Identity, RequestFacts};
use crate::pages::{self, Reply};
use crate::slot_acl::SlotAcls;

/// What the API answers: a complete reply, or slotctl's answer streamed
/// through (recordings can be large).
pub enum Answer {
    Reply(Reply),
    Stream {
        status: u16,
        content_type: String,
        length: Option<u64>,
        body: Incoming,
    },
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Answer {
        Answer::Reply(r)
    }
}

/// Who calls the API.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None`: anonymous with `auth = "none"` (full access).
    pub user: Option<String>,
    pub role: Role,
    pub sid: Option<String>,
    pub amr: String,
    /// Authenticated by an API token: no ambient credential, so no CSRF check.
    pub bearer: bool,
}

impl Caller {
    fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
    fn name(&self) -> &str {
        self.user.as_deref().unwrap_or("")
    }

    /// The gateway's view of this caller (access log, rate limits).
    pub fn identity(&self) -> Identity {
        Identity {
            user: self
                .user
                .as_deref()
                .and_then(|u| slotapi::UserName::new(u).ok()),
            role: Some(self.role),
            sid: self.sid.clone(),
            amr: Some(self.amr.clone()),
        }
    }
}

/// One API request as the gateway read it.
pub struct ApiRequest<'a> {
    pub method: &'a Method,
    /// The path after `/api/`.
    pub rest: &'a str,
    pub header: &'a RequestHeader,
    pub body: &'a [u8],
    /// The request provably comes from this site's pages.
    pub same_origin: bool,
}

impl ApiRequest<'_> {
    fn query(&self) -> Option<&str> {
        self.header.uri.query()
    }
    fn param(&self, key: &str) -> Option<String> {
        let q = self.query()?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
    fn json<T: DeserializeOwned>(&self) -> Result<T, Reply> {
        let body = if self.body.is_empty() {
            b"{}" as &[u8]
        } else {
            self.body
        };
        serde_json::from_slice(body)
            .map_err(|e| err(400, "bad_request", &format!("invalid JSON body: {e}")))
    }
}

/// A JSON error (`{"code", "message"}`).
pub fn err(status: u16, code: &'static str, message: &str) -> Reply {
    pages::error(status, code, "", message, false)
}

fn forbidden(message: &str) -> Reply {
    err(403, "forbidden", message)
}

fn not_found(message: &str) -> Reply {
    err(404, "not_found", message)
}

fn ok<T: Serialize>(body: &T) -> Reply {
    pages::json(200, body)
}

/// A control-API failure as the caller should see it: slotctl's own
/// `{"code", "message"}` for 4xx and for a slot that failed or was slow to
/// start (503 `start_failed`, 504 `timeout`), 502 when it does not answer.
fn control_error(e: ClientError) -> Reply {
    match e {
        ClientError::Api {
            status,
            code,
            message,
        } if (400..500).contains(&status) => {
            let code: &'static str = match code.as_str() {
                "not_found" => "not_found",
                "conflict" => "conflict",
                "bad_request" => "bad_request",
                _ => "control_error",
            };
            err(status, code, &message)
        }
        // Fixed wording: slotctl's reason may carry host paths.
        ClientError::Api {
            status: 503, code, ..
        } if code == "start_failed" => err(
            503,
            "start_failed",
            "The slot did not start; an administrator can see why with `slotctl status`.",
        ),
        ClientError::Api {
            status: 504, code, ..
        } if code == "timeout" => err(
            504,
            "start_timeout",
            "The slot did not come online in time; try again in a moment.",
        ),
        e => {
            tracing::warn!(error = %e, "control API call failed");
            err(
                502,
                "control_unavailable",
                "The slot supervisor (slotctl) did not answer; try again in a moment.",
            )
        }
    }
}

pub struct Api {
    auth: Option<Arc<Auth>>,
    acls: Option<Arc<SlotAcls>>,
    control: Client,
    user_templates: Vec<String>,
    default_template: String,
    max_slots_per_user: usize,
    embed_origins: Vec<String>,
}

impl Api {
    pub fn new(
        cfg: &Config,
        auth: Option<Arc<Auth>>,
        acls: Option<Arc<SlotAcls>>,
        embed_origins: Vec<String>,
    ) -> Api {
        Api {
            auth,
            acls,
            control: Client::new(cfg.paths.control_socket())
                .with_timeout(std::time::Duration::from_secs(10)),
            user_templates: cfg.portal.user_templates.clone(),
            default_template: cfg.identity.default_template.clone(),
            max_slots_per_user: cfg.portal.max_slots_per_user,
            embed_origins,
        }
    }

    fn store(&self) -> Result<&Arc<Store>, Reply> {
        self.auth
            .as_ref()
            .map(|a| &a.sessions.store)
            .ok_or_else(|| {
                err(
                    404,
                    "identity_off",
                    "Sign-in is off (slotgate.auth = \"none\"): there are no accounts.",
                )
            })
    }

    /// Run a store call on the blocking pool; store errors become 500.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, identity::store::StoreError> + Send + 'static,
    ) -> Result<T, Reply> {
        let store = Arc::clone(self.store()?);
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(identity::store::StoreError::NoSuchUser(u))) => Err(err(
                404,
                "no_such_user",
                &format!("There is no user named {u:?}."),
            )),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "identity store");
                Err(err(500, "store", "The identity store failed."))
            }
            Err(_) => Err(err(500, "store", "The identity store failed.")),
        }
    }

    /// Who calls: an API token (`Authorization: Bearer`, scope `api`), the
    /// session cookie, or, with `auth = "none"`, anonymous with full access.
    /// The optional string refreshes the session cookie.
    pub async fn caller(
        &self,
        header: &RequestHeader,
        peer: Option<IpAddr>,
    ) -> Result<(Caller, Option<String>), Reply> {
        let Some(auth) = &self.auth else {
            return Ok((
                Caller {
                    user: None,
                    role: Role::Admin,
                    sid: None,
                    amr: "none".into(),
                    bearer: false,
                },
                None,
            ));
        };
        let unauthenticated = || {
            err(
                401,
                "unauthenticated",
                "Sign in first: this request carries no valid session or API token.",
            )
            .with_header("www-authenticate", "Bearer")
        };
        let bearer = header
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|s| s.trim().to_string());
        if let Some(token) = bearer {
            let store = Arc::clone(&auth.sessions.store);
            let verified = tokio::task::spawn_blocking(move || store.verify_api_token(&token))
                .await
                .ok()
                .flatten();
            let Some((user, token)) = verified else {
                return Err(unauthenticated());
            };
            if !token.scopes.iter().any(|s| s == "api") {
                return Err(forbidden("The API token lacks the `api` scope."));
            }
            return Ok((
                Caller {
                    user: Some(user.name),
                    role: user.role,
                    sid: None,
                    amr: "token".into(),
                    bearer: true,
                },
                None,
            ));
        }
        let facts = RequestFacts { header, peer };
        match auth.authenticate(&facts).await {
            Authn::Identified(id, cookie) => Ok((
                Caller {
                    user: id.user.map(|u| u.to_string()),
                    role: id.role.unwrap_or(Role::Viewer),
                    sid: id.sid,
                    amr: id.amr.unwrap_or_default(),
                    bearer: false,
                },
                cookie,
            )),
            Authn::Anonymous => Err(unauthenticated()),
            Authn::Refused(_) => Err(forbidden("Your account may not use slotgate.")),
        }
    }

    /// Answer one request from a known caller.
    pub async fn handle(&self, who: &Caller, req: &ApiRequest<'_>) -> Answer {
        let changes = !matches!(*req.method, Method::GET | Method::HEAD);
        if changes && !who.bearer && self.auth.is_some() && !req.same_origin {
            return err(
                403,
                "cross_site",
                "This request did not come from slotgate's own pages.",
            )
            .into();
        }
        let parts: Vec<&str> = req.rest.split('/').collect();
        let m = req.method.clone();
        let reply = match (parts[0], who.role) {
            ("me", _) if m == Method::GET && parts.len() == 1 => self.me(who).await,
            ("slots", _) => self.slots(who, req, &parts[1..]).await,
            ("templates", _) if m == Method::GET && parts.len() == 1 => self.templates(who).await,
            ("sessions", _) => self.sessions(who, req, &parts[1..]).await,
            // Who is on a slot they watch: the terminal's "also here".
            ("activity", Role::Viewer)
                if parts == ["activity", "online"] && req.param("slot").is_some() =>
            {
                return self.forward(who, req, &parts).await;
            }
            (
                "activity" | "usage" | "quotas" | "recordings" | "replay-links" | "keys",
                Role::Viewer,
            ) => forbidden("Viewers may only watch the slots shared with them."),
            ("activity" | "usage" | "quotas" | "recordings" | "replay-links" | "keys", _) => {
                return self.forward(who, req, &parts).await;
            }
            ("users" | "tokens", Role::Viewer) => {
                forbidden("Viewers may only watch the slots shared with them.")
            }
            ("users", _) => self.users(who, req, &parts[1..]).await,
            ("tokens", _) => self.tokens(who, req, &parts[1..]).await,
            _ => not_found("No such API route."),
        };
        reply.into()
    }

    async fn me(&self, who: &Caller) -> Reply {
        let (display_name, email) = match (&self.auth, &who.user) {
            (Some(_), Some(u)) => {
                let name = u.clone();
                match self.blocking(move |s| s.user(&name)).await {
                    Ok(Some(u)) => (u.display_name, u.email),
                    _ => (None, None),
                }
            }
            _ => (None, None),
        };
        ok(&serde_json::json!({
            "user": who.user,
            "role": who.role,
            "display_name": display_name,
            "email": email,
            "amr": who.amr,
            "auth": if self.auth.is_some() { "accounts" } else { "none" },
            "default_slot": who.user,
            "default_template": self.default_template,
            "embed_origins": self.embed_origins,
        }))
    }
}

/// `query` with `key` forced to `value`. A different value the caller asked
/// for is refused (they asked for someone else's data).
fn force_param(query: Option<&str>, key: &str, value: &str) -> Result<String, Reply> {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == key {
            if v != value {
                return Err(forbidden(&format!(
                    "You may only see your own data ({key}={value})."
                )));
            }
            continue;
        }
        out.append_pair(&k, &v);
    }
    out.append_pair(key, value);
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_failures_keep_their_meaning_but_not_slotctls_details() {
        let api = |status: u16, code: &str| ClientError::Api {
            status,
            code: code.into(),
            message: "spawning /srv/secret/ttyd: EACCES".into(),
        };
        let body = |r: &Reply| String::from_utf8_lossy(&r.body).into_owned();
        let r = control_error(api(404, "not_found"));
        assert_eq!(r.status, 404);
        let r = control_error(api(503, "start_failed"));
        assert_eq!(r.status, 503);
        assert!(body(&r).contains("\"start_failed\"") && !body(&r).contains("/srv/secret"));
        let r = control_error(api(504, "timeout"));
        assert_eq!(r.status, 504);
        assert!(body(&r).contains("\"start_timeout\""));
        let r = control_error(ClientError::Timeout(std::time::Duration::from_secs(10)));
        assert_eq!(r.status, 502);
        assert!(body(&r).contains("control_unavailable"));
        let r = control_error(api(500, "internal"));
        assert_eq!(r.status, 502);
    }

    #[test]
    fn forcing_the_user() {
        assert_eq!(
            force_param(Some("since=1&limit=5"), "user", "alice").unwrap(),
            "since=1&limit=5&user=alice"
        );
        assert_eq!(
            force_param(Some("user=alice"), "user", "alice").unwrap(),
            "user=alice"
        );
        assert_eq!(force_param(None, "user", "alice").unwrap(), "user=alice");
        assert_eq!(
            force_param(Some("user=bob"), "user", "alice")
                .unwrap_err()
                .status,
            403
        );
        // A second copy cannot smuggle another user past the check.
        assert_eq!(
            force_param(Some("user=alice&user=bob"), "user", "alice")
                .unwrap_err()
                .status,
            403
        );
    }
}
