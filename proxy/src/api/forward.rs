//! The activity, usage, quota and recording routes: forwarded to slotctl's
//! control API (`/api/<rest>` → `/v1/<rest>`) after the caller's role
//! narrowed them. Administrators pass through as asked; a user's lists get
//! `user=<self>` forced (asking for someone else is refused); a recording
//! is a user's only when slotctl says it is theirs. Answers stream through
//! unchanged. Also the replay links (`/replay/<token>/cast|meta`), which
//! need no account while slotctl says the link is valid.

use http::Method;
use serde::Deserialize;
use serde_json::Value;

use super::{
    control_error, err, forbidden, force_param, not_found, Answer, Api, ApiRequest, Caller,
};
use crate::pages::{self, Reply};
use crate::routing::ReplayPart;

/// How a user's request is narrowed.
enum Narrow {
    /// Force `key=<self>` in the query.
    Param(&'static str),
    /// One slot the caller may see (`slot=<id>`): everyone on it.
    Slot(String),
    /// Rewrite to another control path.
    Path(String),
    /// The recording must be the caller's.
    Recording(String),
    /// As asked (the route is about the caller by construction).
    AsIs,
}

/// Drop the rows of `v.items` and `v.per_user` whose `key` (a string) is
/// not `me`.
fn keep_own(v: &mut Value, key: &str, me: &str) {
    for list in ["items", "per_user"] {
        if let Some(rows) = v.get_mut(list).and_then(Value::as_array_mut) {
            rows.retain(|row| match row.get(key).and_then(Value::as_str) {
                Some(owner) => owner == me,
                None => true,
            });
        }
    }
}

impl Api {
    pub(super) async fn forward(
        &self,
        who: &Caller,
        req: &ApiRequest<'_>,
        parts: &[&str],
    ) -> Answer {
        let m = req.method;
        let get = *m == Method::GET;
        let narrow = if who.is_admin() {
            Narrow::AsIs
        } else {
            match parts {
                ["activity", "online"] if get && req.param("slot").is_some() => {
                    Narrow::Slot(req.param("slot").unwrap_or_default())
                }
                ["activity", "online" | "sessions" | "requests" | "logins" | "stats"] if get => {
                    Narrow::Param("user")
                }
                ["activity", "events"] if get => Narrow::Param("owner"),
                ["usage"] | ["usage", "tools" | "prompts"] if get => Narrow::Param("user"),
                ["quotas"] if get => Narrow::Path(format!("/v1/quotas/{}", who.name())),
                ["quotas", u] if get && *u == who.name() => Narrow::AsIs,
                ["recordings"] if get => Narrow::Param("user"),
                ["recordings", id] | ["recordings", id, "cast"] if get => {
                    Narrow::Recording(id.to_string())
                }
                ["recordings", id, "links"] if *m == Method::POST => {
                    Narrow::Recording(id.to_string())
                }
                _ => return forbidden("Only an administrator may do this.").into(),
            }
        };
        let mut path = format!("/v1/{}", req.rest);
        let mut query = req.query().map(str::to_string);
        // Rows to keep: `(field, value)`.
        let mut only: Option<(&'static str, String)> = None;
        match narrow {
            Narrow::AsIs => {}
            Narrow::Param(key) => match force_param(req.query(), key, who.name()) {
                Ok(q) => {
                    query = Some(q);
                    only = Some((key, who.name().to_string()));
                }
                Err(r) => return r.into(),
            },
            Narrow::Slot(slot) => {
                if let Err(r) = self.may_see(who, &slot).await {
                    return r.into();
                }
                only = Some(("slot", slot));
            }
            Narrow::Path(p) => path = p,
            Narrow::Recording(id) => {
                if let Err(r) = self.own_recording(who, &id).await {
                    return r.into();
                }
            }
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            path = format!("{path}?{q}");
        }
        let body = (!req.body.is_empty()).then(|| req.body.to_vec());
        match only {
            // A narrowed list: slotgate also drops any row about someone
            // else, so a filter slotctl ignored cannot leak other people's
            // data.
            Some((key, value)) => self.own_rows(&path, key, &value).await.into(),
            None => self.stream(m.clone(), &path, body).await,
        }
    }

    /// GET a JSON list and keep, in its `items` and `per_user` arrays, only
    /// rows whose `key` is `me` (rows without the field stay).
    async fn own_rows(&self, path: &str, key: &str, me: &str) -> Reply {
        let mut v: Value = match self.control.get_json(path).await {
            Ok(v) => v,
            Err(e) => return control_error(e),
        };
        keep_own(&mut v, key, me);
        pages::json(200, &v)
    }

    /// 404 unless slotctl says recording `id` belongs to the caller.
    async fn own_recording(&self, who: &Caller, id: &str) -> Result<(), Reply> {
        let meta: Value = self
            .control
            .get_json(&format!("/v1/recordings/{id}"))
            .await
            .map_err(control_error)?;
        if meta.get("user").and_then(Value::as_str) == Some(who.name()) {
            Ok(())
        } else {
            Err(not_found("No such recording."))
        }
    }

    async fn stream(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Answer {
        match self.control.raw(method, path, body).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let header = |n: &str| {
                    resp.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let content_type =
                    header("content-type").unwrap_or_else(|| "application/json".into());
                let length = header("content-length").and_then(|l| l.parse().ok());
                Answer::Stream {
                    status,
                    content_type,
                    length,
                    body: resp.into_body(),
                }
            }
            Err(e) => control_error(e).into(),
        }
    }

    /// `/replay/<token>/cast` and `/replay/<token>/meta`: no account, the
    /// link itself is the permission while slotctl says it is valid.
    pub async fn replay(&self, token: &str, part: ReplayPart) -> Answer {
        #[derive(Deserialize)]
        struct Link {
            recording: Value,
            expires_ms: Option<u64>,
        }
        let link: Link = match self
            .control
            .get_json(&format!("/v1/replay-links/{token}"))
            .await
        {
            Ok(l) => l,
            Err(slotapi::ClientError::Api { status: 410, .. }) => {
                return err(410, "gone", "This replay link has expired or was revoked.").into()
            }
            Err(slotapi::ClientError::Api { status: 404, .. }) => {
                return not_found("No such replay link.").into()
            }
            Err(e) => return control_error(e).into(),
        };
        let id = match &link.recording {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return err(502, "control_error", "The replay link names no recording.").into(),
        };
        match part {
            ReplayPart::Cast => {
                self.stream(Method::GET, &format!("/v1/recordings/{id}/cast"), None)
                    .await
            }
            ReplayPart::Meta => {
                let meta: Value = match self.control.get_json(&format!("/v1/recordings/{id}")).await
                {
                    Ok(m) => m,
                    Err(e) => return control_error(e).into(),
                };
                let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
                pages::json(
                    200,
                    &serde_json::json!({
                        "recording": link.recording,
                        "expires_ms": link.expires_ms,
                        "user": pick("user"),
                        "slot": pick("slot"),
                        "start_ms": pick("start_ms"),
                        "duration_ms": pick("duration_ms"),
                    }),
                )
                .into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_callers_rows_survive() {
        let mut v = serde_json::json!({
            "items": [{"user": "alice", "n": 1}, {"user": "bob", "n": 2}, {"n": 3}],
            "per_user": [{"user": "bob"}],
            "totals": {"user": "bob"},
            "next_cursor": null
        });
        keep_own(&mut v, "user", "alice");
        assert_eq!(
            v["items"],
            serde_json::json!([{"user": "alice", "n": 1}, {"n": 3}])
        );
        assert_eq!(v["per_user"], serde_json::json!([]));
        assert_eq!(v["totals"]["user"], "bob", "only lists are filtered");
    }
}
