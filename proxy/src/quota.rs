//! Claude quotas at the door: before a new terminal session starts (the
//! slot's page is loaded or its WebSocket opened), ask slotctl whether the
//! slot's owner is over their quota (`GET /v1/quotas/{owner}`), and refuse
//! with a page (people) or JSON (programs) that says why and until when.
//!
//! The owner's quota counts because Claude Code's usage is accounted to the
//! HOME it runs in, which is the owner's. Administrators are never refused
//! (they are the ones who raise quotas), nor are read-only viewers (the
//! gateway does not ask for them: they cannot spend). Sessions already open
//! are left alone. Answers are cached for a few seconds per owner so a page load
//! asks once; when slotctl cannot answer, the door stays open (accounting
//! must not take terminals down) and the gateway logs a warning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use ::identity::access::{Role, SlotAcl};
use serde::{Deserialize, Serialize};
use slotapi::config::Paths;
use slotapi::{Client, SlotId};

use crate::identity::Identity;
use crate::pages::{self, Reply};
use crate::slots::Slots;

const CACHE_FOR: Duration = Duration::from_secs(5);

/// The parts of slotctl's quota answer the gateway needs.
#[derive(Debug, Clone, Deserialize)]
struct Verdict {
    over: bool,
    reason: Option<String>,
    until_ms: Option<u64>,
}

pub struct Quotas {
    client: Client,
    slots: Arc<Slots>,
    cache: Mutex<HashMap<String, (Instant, Verdict)>>,
}

#[derive(Serialize)]
struct Refusal<'a> {
    error: &'static str,
    message: String,
    user: &'a str,
    reason: &'a str,
    until_ms: Option<u64>,
}

impl Quotas {
    pub fn new(paths: &Paths, slots: Arc<Slots>) -> Quotas {
        Quotas {
            client: Client::new(paths.control_socket()).with_timeout(Duration::from_secs(2)),
            slots,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn verdict(&self, owner: &str) -> Option<Verdict> {
        if let Some((at, v)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
        {
            if at.elapsed() < CACHE_FOR {
                return Some(v.clone());
            }
        }
        match self
            .client
            .get_json::<Verdict>(&format!("/v1/quotas/{owner}"))
            .await
        {
            Ok(v) => {
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(owner.to_string(), (Instant::now(), v.clone()));
                Some(v)
            }
            Err(e) => {
                tracing::warn!(owner, error = %e, "quota check unavailable; letting the session start");
                None
            }
        }
    }

    /// `Some(reply)` when a new session of slot `id` must be refused.
    /// `new_session`: the request would start one (page or WebSocket).
    pub async fn admit(
        &self,
        new_session: bool,
        id: &SlotId,
        acl: Option<&SlotAcl>,
        who: Option<&Identity>,
        html: bool,
    ) -> Option<Reply> {
        if !new_session || who.and_then(|w| w.role) == Some(Role::Admin) {
            return None;
        }
        let owner = match acl {
            Some(a) => a.owner.clone(),
            None => self.slots.info(id).await.ok()?.owner.to_string(),
        };
        let v = self.verdict(&owner).await?;
        if !v.over {
            return None;
        }
        let reason = v.reason.as_deref().unwrap_or("quota reached");
        let when = v
            .until_ms
            .map(|ms| {
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
                    .to_string()
            })
            .unwrap_or_else(|| "an administrator raises it".into());
        let message = format!(
            "The Claude usage quota of {owner} is used up: {reason}. New terminal sessions can start again at {when} (UTC); an administrator can raise the quota before then."
        );
        tracing::info!(slot = %id, owner, reason, until_ms = ?v.until_ms, "new session refused: over quota");
        let retry = v.until_ms.map(|ms| {
            let now = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            (ms.saturating_sub(now) / 1000).max(1).to_string()
        });
        let reply = if html {
            pages::error(429, "quota_exceeded", "Usage limit reached", &message, true)
        } else {
            pages::json(
                429,
                &Refusal {
                    error: "quota_exceeded",
                    message,
                    user: &owner,
                    reason,
                    until_ms: v.until_ms,
                },
            )
            .with_error("quota_exceeded")
        };
        Some(match retry {
            Some(r) => reply.with_header("retry-after", r),
            None => reply,
        })
    }
}
