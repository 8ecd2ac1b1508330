//! Trusted-header mode, for deployments behind an existing SSO proxy: the
//! identity comes from configured request headers, but only when the
//! connection comes from a configured source address. From anywhere else
//! the headers are ignored (and the proxy strips them before forwarding).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::access::{role_from_groups, username_from_claim, Role};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderConfig {
    /// Header carrying the user name, e.g. `X-Forwarded-User`.
    pub user_header: String,
    #[serde(default)]
    pub email_header: Option<String>,
    /// Comma-separated group list, e.g. `X-Forwarded-Groups`.
    #[serde(default)]
    pub groups_header: Option<String>,
    /// Source networks allowed to assert identity (`10.0.0.5/32`, `::1/128`).
    pub trusted_sources: Vec<String>,
    #[serde(default)]
    pub admin_groups: Vec<String>,
    #[serde(default)]
    pub viewer_groups: Vec<String>,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default = "user_role")]
    pub default_role: Role,
}

fn user_role() -> Role {
    Role::User
}

/// Parse `trusted_sources`; an entry without a prefix is one address.
pub fn parse_sources(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("{s:?} is not an address or network (e.g. 10.0.0.5 or 10.0.0.0/24)")
                })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderIdentity {
    /// The source may not assert identity: treat as anonymous.
    Untrusted,
    /// Trusted source but no user header.
    Missing,
    Refused(String),
    User {
        name: String,
        email: Option<String>,
        role: Role,
    },
}

/// Who the trusted headers say this is; `get` reads a request header.
pub fn identify<'a>(
    cfg: &HeaderConfig,
    sources: &[IpNet],
    peer: IpAddr,
    get: impl Fn(&str) -> Option<&'a str>,
) -> HeaderIdentity {
    let peer = match peer {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if !sources.iter().any(|n| n.contains(&peer)) {
        return HeaderIdentity::Untrusted;
    }
    let Some(raw) = get(&cfg.user_header)
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return HeaderIdentity::Missing;
    };
    let Some(name) = username_from_claim(raw) else {
        return HeaderIdentity::Refused(format!("cannot make a user name out of {raw:?}"));
    };
    let groups: Vec<String> = cfg
        .groups_header
        .as_deref()
        .and_then(&get)
        .map(|g| {
            g.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    match role_from_groups(
        &groups,
        &cfg.admin_groups,
        &cfg.viewer_groups,
        &cfg.allowed_groups,
        cfg.default_role,
    ) {
        None => HeaderIdentity::Refused(format!("{name} is not in an allowed group")),
        Some(role) => HeaderIdentity::User {
            name,
            email: cfg.email_header.as_deref().and_then(&get).map(String::from),
            role,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HeaderConfig {
        serde_json::from_value(serde_json::json!({
            "user_header": "X-Forwarded-User", "groups_header": "X-Forwarded-Groups",
            "trusted_sources": ["10.1.2.3", "127.0.0.0/8"], "admin_groups": ["ops"]
        }))
        .unwrap()
    }

    #[test]
    fn only_trusted_sources_may_assert_identity() {
        let c = cfg();
        let nets = parse_sources(&c.trusted_sources).unwrap();
        let headers = |k: &str| match k {
            "X-Forwarded-User" => Some("Alice"),
            "X-Forwarded-Groups" => Some("eng, ops"),
            _ => None,
        };
        assert_eq!(
            identify(&c, &nets, "10.1.2.3".parse().unwrap(), headers),
            HeaderIdentity::User {
                name: "alice".into(),
                email: None,
                role: Role::Admin
            }
        );
        assert_eq!(
            identify(&c, &nets, "::ffff:127.0.0.1".parse().unwrap(), headers),
            identify(&c, &nets, "127.0.0.1".parse().unwrap(), headers)
        );
        // A spoofed header from anywhere else is ignored.
        assert_eq!(
            identify(&c, &nets, "10.1.2.4".parse().unwrap(), headers),
            HeaderIdentity::Untrusted
        );
        assert_eq!(
            identify(&c, &nets, "10.1.2.3".parse().unwrap(), |_| None),
            HeaderIdentity::Missing
        );
        assert!(parse_sources(&["nonsense".into()]).is_err());
    }
}
