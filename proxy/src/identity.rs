//! The identity seam: the one place that says who a request comes from
//! (authentication) and whether that someone may open a slot
//! (authorisation). The gateway calls [`Auth::authenticate`] once per
//! request and [`authorize`] once per slot request; nothing else in the
//! proxy reads session cookies or trusted identity headers. With
//! `auth = "none"` there is no `Auth` and everyone is anonymous with access
//! to every slot (loopback only). Decisions are pure functions over the
//! identity and the slot's access list.

use std::net::IpAddr;
use std::sync::Arc;

use identity::access::{slot_access, Access, Role, SlotAcl};
use identity::header::{self, HeaderConfig, HeaderIdentity};
use identity::session;
use ipnet::IpNet;
use pingora::http::RequestHeader;
use slotapi::UserName;

use crate::config::{AuthMode, Config};
use crate::sessions::{Check, Sessions};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `None` for anonymous requests (auth = "none").
    pub user: Option<UserName>,
    /// `None` only for auth = "none": full access.
    pub role: Option<Role>,
    /// The server-side session, when signed in with a cookie.
    pub sid: Option<String>,
    /// How the user signed in (`local`, `oidc:<name>`, `header`, `embed`).
    pub amr: Option<String>,
}

impl Identity {
    pub fn anonymous_full_access() -> Identity {
        Identity {
            user: None,
            role: None,
            sid: None,
            amr: None,
        }
    }

    /// Someone without a session watching the public demo slot: a viewer
    /// with no name, so the read-only filter applies and nothing is theirs.
    pub fn anonymous_viewer() -> Identity {
        Identity {
            user: None,
            role: Some(Role::Viewer),
            sid: None,
            amr: Some("demo".into()),
        }
    }

    /// The key per-user limits count against: the user name, or the client
    /// address (an IPv6 client's /64) for anonymous requests (so anonymous
    /// clients cannot share one bucket and starve each other).
    pub fn limit_key(&self, client: Option<IpAddr>) -> String {
        match (&self.user, client) {
            (Some(u), _) => format!("u:{u}"),
            (None, Some(ip)) => format!("ip:{}", crate::limits::client_key(ip)),
            (None, None) => "anonymous".into(),
        }
    }
}

/// What authentication decided.
#[derive(Debug)]
pub enum Authn {
    /// Signed in; the optional `Set-Cookie` value refreshes the session.
    Identified(Identity, Option<String>),
    /// Nobody (or a session that ended): sign in first.
    Anonymous,
    /// A trusted source asserted an identity that may not enter.
    Refused(String),
}

/// The request facts authentication may look at.
pub struct RequestFacts<'a> {
    pub header: &'a RequestHeader,
    /// The TCP peer (not the client an `X-Forwarded-For` names): trusted
    /// identity headers count only from `trusted_sources`.
    pub peer: Option<IpAddr>,
}

impl RequestFacts<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.header.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The session token from the `Cookie` header(s).
    pub fn session_token(&self) -> Option<&str> {
        self.header
            .headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session::from_cookie_header)
    }
}

/// Authentication for the identity modes (everything but `none`).
pub struct Auth {
    pub sessions: Arc<Sessions>,
    header: Option<(HeaderConfig, Vec<IpNet>)>,
    /// See [`Config::loopback_trusted`].
    loopback_trusted: bool,
}

impl Auth {
    pub fn new(cfg: &Config) -> anyhow::Result<Option<Arc<Auth>>> {
        if cfg.auth == AuthMode::None {
            return Ok(None);
        }
        let sessions = Sessions::open(&cfg.identity, cfg.is_tls())?;
        let header = match &cfg.identity.header {
            Some(h) => Some((
                h.clone(),
                header::parse_sources(&h.trusted_sources).map_err(anyhow::Error::msg)?,
            )),
            None => None,
        };
        Ok(Some(Arc::new(Auth {
            sessions,
            header,
            loopback_trusted: cfg.loopback_trusted,
        })))
    }

    /// Names of the headers the trusted-header mode reads: a client's own
    /// copies never reach a slot.
    pub fn identity_headers(&self) -> Vec<String> {
        match &self.header {
            Some((h, _)) => [
                Some(&h.user_header),
                h.email_header.as_ref(),
                h.groups_header.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
            None => Vec::new(),
        }
    }

    pub async fn authenticate(&self, req: &RequestFacts<'_>) -> Authn {
        let peer = req
            .peer
            .filter(|ip| self.loopback_trusted || !crate::config::is_loopback(*ip));
        if let (Some((cfg, sources)), Some(peer)) = (&self.header, peer) {
            match header::identify(cfg, sources, peer, |n| req.get(n)) {
                HeaderIdentity::User { name, role, .. } => {
                    return match UserName::new(&name) {
                        Ok(user) => Authn::Identified(
                            Identity {
                                user: Some(user),
                                role: Some(role),
                                sid: None,
                                amr: Some("header".into()),
                            },
                            None,
                        ),
                        Err(e) => Authn::Refused(e.to_string()),
                    };
                }
                HeaderIdentity::Refused(why) => return Authn::Refused(why),
                HeaderIdentity::Untrusted | HeaderIdentity::Missing => {}
            }
        }
        let Some(token) = req.session_token() else {
            return Authn::Anonymous;
        };
        let (claims, cookie) = match self.sessions.check(token) {
            Check::Invalid => return Authn::Anonymous,
            Check::Valid(c, false) => (c, None),
            Check::Valid(c, true) | Check::Expired(c) => match self.sessions.refresh(&c).await {
                Some((fresh, cookie)) => (fresh, Some(cookie)),
                None => return Authn::Anonymous,
            },
        };
        match UserName::new(&claims.sub) {
            Ok(user) => Authn::Identified(
                Identity {
                    user: Some(user),
                    role: Some(claims.role),
                    sid: Some(claims.sid),
                    amr: Some(claims.amr),
                },
                cookie,
            ),
            Err(_) => Authn::Anonymous,
        }
    }
}

/// May `identity` open a slot, and how?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Write,
    /// Watch only: the gateway filters the viewer's input.
    ReadOnly,
    Deny(&'static str),
}

/// The decision, and how the access log should label it (`admin` marks an
/// administrator opening a slot that is not theirs: always audited).
pub fn authorize(who: &Identity, acl: Option<&SlotAcl>) -> (Decision, Option<&'static str>) {
    let Some(role) = who.role else {
        return (Decision::Write, None);
    };
    let user = who.user.as_ref().map(|u| u.as_str()).unwrap_or_default();
    let Some(acl) = acl else {
        // Unknown slot: only an administrator learns that it does not exist.
        return if role == Role::Admin {
            (Decision::Write, Some("admin"))
        } else {
            (Decision::Deny("no such slot or not yours"), None)
        };
    };
    let id = identity::access::Identity {
        user: user.to_string(),
        role,
    };
    match slot_access(&id, acl) {
        Access::Write => {
            let own = acl.owner == user || acl.members.iter().any(|m| m == user);
            if role == Role::Admin && !own {
                (Decision::Write, Some("admin"))
            } else {
                (Decision::Write, Some("write"))
            }
        }
        Access::ReadOnly => (Decision::ReadOnly, Some("read_only")),
        Access::Deny(why) => (Decision::Deny(why), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(user: &str, role: Role) -> Identity {
        Identity {
            user: Some(UserName::new(user).unwrap()),
            role: Some(role),
            sid: Some("s".into()),
            amr: Some("local".into()),
        }
    }

    #[test]
    fn authorize_table() {
        let acl = SlotAcl {
            owner: "alice".into(),
            members: vec![],
            viewers: vec!["vic".into()],
            public_read: false,
        };
        let cases = [
            (
                who("alice", Role::User),
                Some(&acl),
                Decision::Write,
                Some("write"),
            ),
            (
                who("vic", Role::User),
                Some(&acl),
                Decision::ReadOnly,
                Some("read_only"),
            ),
            (
                who("root", Role::Admin),
                Some(&acl),
                Decision::Write,
                Some("admin"),
            ),
            (
                who("bob", Role::User),
                Some(&acl),
                Decision::Deny("not the owner, a member or a viewer of this slot"),
                None,
            ),
            (
                who("bob", Role::User),
                None,
                Decision::Deny("no such slot or not yours"),
                None,
            ),
            (
                Identity::anonymous_full_access(),
                None,
                Decision::Write,
                None,
            ),
        ];
        for (w, acl, want, label) in cases {
            assert_eq!(authorize(&w, acl), (want, label), "{w:?}");
        }
    }

    #[test]
    fn limit_keys() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(
            Identity::anonymous_full_access().limit_key(Some(ip)),
            "ip:10.0.0.7"
        );
        assert_eq!(who("carol", Role::User).limit_key(Some(ip)), "u:carol");
        let v6: IpAddr = "2001:db8:5:6:1:2:3:4".parse().unwrap();
        assert_eq!(
            Identity::anonymous_full_access().limit_key(Some(v6)),
            "ip:2001:db8:5:6::"
        );
    }
}
