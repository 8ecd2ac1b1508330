//! The identity seam: the one place that says who a request comes from
//! (authentication) and whether that someone may open a slot
//! (authorisation). The gateway calls [`Authenticator::authenticate`] once
//! per request and [`authorize`] once per slot request; nothing else in the
//! proxy looks at cookies, tokens or credentials. Today the only mode is
//! `none` (everyone is anonymous and may open every slot, loopback only);
//! login, sessions and RBAC plug in here without touching the proxy phases.

use std::net::IpAddr;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use slotapi::{SlotId, UserName};

use crate::config::AuthMode;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `None` for anonymous requests (auth = "none").
    pub user: Option<UserName>,
    /// What this identity may open.
    pub access: Access,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every slot (auth = "none", or an admin).
    AllSlots,
    /// Only these slots.
    #[allow(dead_code, reason = "granted by the identity modes that have users")]
    Slots(Vec<SlotId>),
}

impl Identity {
    pub fn anonymous_full_access() -> Identity {
        Identity {
            user: None,
            access: Access::AllSlots,
        }
    }

    /// The key per-user limits count against: the user name, or the client
    /// address for anonymous requests (so anonymous clients cannot share one
    /// bucket and starve each other).
    pub fn limit_key(&self, client: Option<IpAddr>) -> String {
        match (&self.user, client) {
            (Some(u), _) => format!("u:{u}"),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "anonymous".into(),
        }
    }
}

/// What authentication decided.
#[derive(Debug)]
pub enum Authn {
    Identified(Identity),
    /// Not signed in: the gateway answers with this status (later: a login
    /// redirect or a 401 challenge).
    #[allow(dead_code, reason = "produced by the identity modes that have a login")]
    Refused {
        status: u16,
        reason: &'static str,
    },
}

/// The request facts an authenticator may look at.
#[allow(dead_code, reason = "read by the identity modes that have a login")]
pub struct RequestFacts<'a> {
    pub header: &'a RequestHeader,
    pub client: Option<IpAddr>,
    pub tls: bool,
}

#[async_trait]
pub trait Authenticator: Send + Sync {
    /// Name for logs and `check-config`.
    fn mode(&self) -> &'static str;
    async fn authenticate(&self, req: &RequestFacts<'_>) -> Authn;
}

/// `auth = "none"`: everyone is anonymous with access to every slot. Only
/// valid on loopback listeners (enforced by config validation).
pub struct NoAuth;

#[async_trait]
impl Authenticator for NoAuth {
    fn mode(&self) -> &'static str {
        "none"
    }
    async fn authenticate(&self, _req: &RequestFacts<'_>) -> Authn {
        Authn::Identified(Identity::anonymous_full_access())
    }
}

pub fn authenticator(mode: AuthMode) -> Box<dyn Authenticator> {
    match mode {
        AuthMode::None => Box::new(NoAuth),
    }
}

/// May `identity` open `slot`?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

pub fn authorize(identity: &Identity, slot: &SlotId) -> Decision {
    match &identity.access {
        Access::AllSlots => Decision::Allow,
        Access::Slots(list) if list.contains(slot) => Decision::Allow,
        Access::Slots(_) => Decision::Deny,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_table() {
        let a = SlotId::new("alice").unwrap();
        let b = SlotId::new("bob").unwrap();
        let alice = Identity {
            user: Some(UserName::new("alice").unwrap()),
            access: Access::Slots(vec![a.clone()]),
        };
        let cases = [(&alice, &a, Decision::Allow), (&alice, &b, Decision::Deny)];
        for (who, slot, want) in cases {
            assert_eq!(authorize(who, slot), want, "{who:?} → {slot}");
        }
        assert_eq!(
            authorize(&Identity::anonymous_full_access(), &b),
            Decision::Allow
        );
    }

    #[test]
    fn limit_keys() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(
            Identity::anonymous_full_access().limit_key(Some(ip)),
            "ip:10.0.0.7"
        );
        let u = Identity {
            user: Some(UserName::new("carol").unwrap()),
            access: Access::AllSlots,
        };
        assert_eq!(u.limit_key(Some(ip)), "u:carol");
    }
}
