//! `/api/users…`, `/api/sessions…`, `/api/tokens…`: the identity store
//! (`identity.db`) as `slotctl user` sees it. Administrators manage
//! everyone; a user sees and ends their own sessions and manages their own
//! API tokens. Disabling a user revokes every session of theirs, which
//! closes their open WebSockets within seconds.

use std::collections::HashMap;

use http::Method;
use identity::access::Role;
use serde::Deserialize;
use serde_json::Value;

use super::{err, forbidden, not_found, ok, Api, ApiRequest, Caller};
use crate::pages::{self, Reply};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const ADMINS_ONLY: &str = "Only an administrator may do this.";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRole {
    role: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

const SCOPES: &[&str] = &["embed", "api"];

/// Whose rows a list shows: an admin's `?user=` (or everyone's), otherwise
/// the caller's own; a user asking for someone else is refused.
fn user_filter(who: &Caller, req: &ApiRequest<'_>, what: &str) -> Result<Option<String>, Reply> {
    match (who.is_admin(), req.param("user")) {
        (true, u) => Ok(u),
        (false, Some(u)) if u != who.name() => {
            Err(forbidden(&format!("You may only see your own {what}.")))
        }
        (false, _) => Ok(Some(who.name().to_string())),
    }
}

impl Api {
    pub(super) async fn users(&self, who: &Caller, req: &ApiRequest<'_>, parts: &[&str]) -> Reply {
        let m = req.method;
        let result = match parts {
            [] if m == Method::GET => self.list_users(who).await,
            [name] if m == Method::GET => self.one_user(who, name).await,
            [name, op @ ("role" | "disable" | "enable")] if m == Method::POST => {
                self.change_user(who, req, name, op).await
            }
            _ => Err(not_found("No such API route.")),
        };
        result.unwrap_or_else(|r| r)
    }

    async fn list_users(&self, who: &Caller) -> Result<Reply, Reply> {
        if !who.is_admin() {
            return Err(forbidden(ADMINS_ONLY));
        }
        let (users, sessions) = self
            .blocking(|s| Ok((s.users()?, s.sessions(None)?)))
            .await?;
        let now = now_ms();
        let mut live: HashMap<String, usize> = HashMap::new();
        for s in sessions.iter().filter(|s| !s.revoked && s.expires_ms > now) {
            *live.entry(s.user.clone()).or_default() += 1;
        }
        let items: Vec<Value> = users
            .into_iter()
            .map(|u| {
                let n = live.get(&u.name).copied().unwrap_or(0);
                let mut v = serde_json::to_value(u).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("sessions".into(), n.into());
                }
                v
            })
            .collect();
        Ok(ok(&serde_json::json!({ "items": items })))
    }

    async fn one_user(&self, who: &Caller, name: &str) -> Result<Reply, Reply> {
        if !who.is_admin() && who.name() != name {
            return Err(forbidden(ADMINS_ONLY));
        }
        let n = name.to_string();
        match self.blocking(move |s| s.user(&n)).await? {
            Some(u) => Ok(ok(&u)),
            None => Err(err(404, "no_such_user", "There is no such user.")),
        }
    }

    async fn change_user(
        &self,
        who: &Caller,
        req: &ApiRequest<'_>,
        name: &str,
        op: &str,
    ) -> Result<Reply, Reply> {
        if !who.is_admin() {
            return Err(forbidden(ADMINS_ONLY));
        }
        if who.user.as_deref() == Some(name) && op != "enable" {
            return Err(err(
                409,
                "self",
                "You cannot change your own role or disable yourself; ask another administrator.",
            ));
        }
        let n = name.to_string();
        match op {
            "role" => {
                let body: SetRole = req.json()?;
                let role = Role::parse(&body.role).ok_or_else(|| {
                    err(400, "bad_request", "role must be admin, user or viewer.")
                })?;
                self.blocking(move |s| s.set_role(&n, role)).await?;
                tracing::info!(
                    user = name,
                    role = role.as_str(),
                    by = who.name(),
                    "role changed through the API"
                );
            }
            "disable" => {
                self.blocking(move |s| s.set_disabled(&n, true)).await?;
                if let Some(auth) = &self.auth {
                    // The store revoked the sessions; this closes their
                    // WebSockets now rather than at the next poll.
                    auth.sessions.revoke_user(name).await;
                }
                tracing::info!(
                    user = name,
                    by = who.name(),
                    "user disabled through the API"
                );
            }
            _ => {
                self.blocking(move |s| s.set_disabled(&n, false)).await?;
                tracing::info!(user = name, by = who.name(), "user enabled through the API");
            }
        }
        self.one_user(who, name).await
    }

    pub(super) async fn sessions(
        &self,
        who: &Caller,
        req: &ApiRequest<'_>,
        parts: &[&str],
    ) -> Reply {
        let m = req.method;
        let result = match parts {
            [] if m == Method::GET => self.list_sessions(who, req).await,
            [id] if m == Method::DELETE => self.revoke_session(who, id).await,
            _ => Err(not_found("No such API route.")),
        };
        result.unwrap_or_else(|r| r)
    }

    async fn list_sessions(&self, who: &Caller, req: &ApiRequest<'_>) -> Result<Reply, Reply> {
        let user = user_filter(who, req, "sessions")?;
        let rows = self.blocking(move |s| s.sessions(user.as_deref())).await?;
        let now = now_ms();
        let items: Vec<Value> = rows
            .into_iter()
            .filter(|s| !s.revoked && s.expires_ms > now)
            .map(|s| {
                serde_json::json!({
                    "current": who.sid.as_deref() == Some(s.sid.as_str()),
                    "id": s.sid,
                    "user": s.user,
                    "amr": s.amr,
                    "created_ms": s.created_ms,
                    "last_seen_ms": s.last_seen_ms,
                    "expires_ms": s.expires_ms,
                    "revoked": s.revoked,
                    "ip": s.ip,
                    "user_agent": s.user_agent,
                })
            })
            .collect();
        Ok(ok(&serde_json::json!({ "items": items })))
    }

    async fn revoke_session(&self, who: &Caller, id: &str) -> Result<Reply, Reply> {
        let sid = id.to_string();
        let owner = self
            .blocking(move |s| {
                Ok(s.sessions(None)?
                    .into_iter()
                    .find(|r| r.sid == sid)
                    .map(|r| r.user))
            })
            .await?;
        match owner {
            Some(u) if who.is_admin() || u == who.name() => {
                if let Some(auth) = &self.auth {
                    auth.sessions.revoke(id).await;
                }
                tracing::info!(user = %u, by = who.name(), "session revoked through the API");
                Ok(ok(&serde_json::json!({ "revoked": true })))
            }
            _ => Err(not_found("No such session.")),
        }
    }

    pub(super) async fn tokens(&self, who: &Caller, req: &ApiRequest<'_>, parts: &[&str]) -> Reply {
        let m = req.method;
        let result = match parts {
            [] if m == Method::GET => self.list_tokens(who, req).await,
            [] if m == Method::POST => self.create_token(who, req).await,
            [id] if m == Method::DELETE => self.revoke_token(who, id).await,
            _ => Err(not_found("No such API route.")),
        };
        result.unwrap_or_else(|r| r)
    }

    async fn list_tokens(&self, who: &Caller, req: &ApiRequest<'_>) -> Result<Reply, Reply> {
        let user = user_filter(who, req, "API tokens")?;
        let rows = self
            .blocking(move |s| s.api_tokens(user.as_deref()))
            .await?;
        Ok(ok(&serde_json::json!({ "items": rows })))
    }

    async fn create_token(&self, who: &Caller, req: &ApiRequest<'_>) -> Result<Reply, Reply> {
        let body: NewToken = req.json()?;
        let user = match (&body.user, who.is_admin()) {
            (Some(u), true) => u.clone(),
            (Some(u), false) if u == who.name() => u.clone(),
            (Some(_), false) => {
                return Err(forbidden("You may only create API tokens for yourself."))
            }
            (None, _) if who.user.is_some() => who.name().to_string(),
            (None, _) => return Err(err(400, "bad_request", "Name the token's \"user\".")),
        };
        let name = body.name.trim().to_string();
        if name.is_empty() || name.len() > 64 {
            return Err(err(400, "bad_request", "name: 1 to 64 characters."));
        }
        if let Some(s) = body.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
            return Err(err(
                400,
                "bad_request",
                &format!("unknown scope {s:?}; scopes: embed, api"),
            ));
        }
        let ttl_ms = match &body.ttl {
            None => None,
            Some(t) => Some(
                slotapi::config::parse_duration(t)
                    .map_err(|e| err(400, "bad_request", &format!("ttl: {e}")))?
                    .as_millis() as u64,
            ),
        };
        let scopes = body.scopes.clone();
        let (item, secret) = self
            .blocking(move |s| s.create_api_token(&user, &name, &scopes, ttl_ms))
            .await?;
        tracing::info!(token_id = %item.id, user = %item.user, by = who.name(), "API token created through the API");
        Ok(pages::json(
            201,
            &serde_json::json!({ "token": secret, "item": item }),
        ))
    }

    async fn revoke_token(&self, who: &Caller, id: &str) -> Result<Reply, Reply> {
        let tid = id.to_string();
        let owner = self
            .blocking(move |s| {
                Ok(s.api_tokens(None)?
                    .into_iter()
                    .find(|t| t.id == tid)
                    .map(|t| t.user))
            })
            .await?;
        match owner {
            Some(u) if who.is_admin() || u == who.name() => {
                let tid = id.to_string();
                self.blocking(move |s| s.revoke_api_token(&tid)).await?;
                tracing::info!(token_id = id, user = %u, by = who.name(), "API token revoked through the API");
                Ok(ok(&serde_json::json!({ "revoked": true })))
            }
            _ => Err(not_found("No such API token.")),
        }
    }
}
