//! Sign-in through plain OAuth2 providers without OpenID Connect
//! (GitHub-style): authorization code flow with PKCE and `state`, token
//! exchange (oauth2 crate), then the provider's userinfo URL read with the
//! access token and mapped to a user through configured field names. As in
//! `oidc`, the proxy keeps the `Pending` half between redirect and callback.

use std::time::{Duration, Instant};

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::access::{role_from_groups, Role};
use crate::oidc::{username_from_claim, ExternalUser};

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("bad OAuth2 provider configuration {provider}: {reason}")]
    Config { provider: String, reason: String },
    #[error("sign-in with {provider} failed: the state parameter does not match")]
    State { provider: String },
    #[error("sign-in with {provider} failed: the provider refused the code: {reason}")]
    Exchange { provider: String, reason: String },
    #[error("sign-in with {provider} failed: userinfo: {reason}")]
    UserInfo { provider: String, reason: String },
    #[error("{user} may not use slotgate: {reason}")]
    NotAllowed { user: String, reason: String },
}

/// One `[[slotgate.oauth2]]` provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub auth_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Field of the userinfo JSON holding the login name (GitHub: `login`).
    #[serde(default = "login_field")]
    pub username_field: String,
    #[serde(default = "name_field")]
    pub display_name_field: String,
    #[serde(default = "email_field")]
    pub email_field: String,
    /// Field holding a list of group names, if the provider has one.
    #[serde(default)]
    pub groups_field: Option<String>,
    #[serde(default)]
    pub admin_groups: Vec<String>,
    #[serde(default)]
    pub viewer_groups: Vec<String>,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// When set, only these user names may sign in (GitHub has no groups
    /// without extra API calls).
    #[serde(default)]
    pub allowed_users: Vec<String>,
    #[serde(default = "user_role")]
    pub default_role: Role,
}

fn login_field() -> String {
    "login".into()
}
fn name_field() -> String {
    "name".into()
}
fn email_field() -> String {
    "email".into()
}
fn user_role() -> Role {
    Role::User
}

#[derive(Debug, Clone)]
pub struct Pending {
    pub provider: String,
    pub state: String,
    verifier: String,
    pub next: String,
    pub created: Instant,
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

pub struct OAuthProvider {
    pub cfg: OAuthConfig,
    client: Client,
    http: reqwest::Client,
}

impl OAuthProvider {
    pub fn new(cfg: OAuthConfig) -> Result<OAuthProvider, OAuthError> {
        let bad = |reason: String| OAuthError::Config {
            provider: cfg.name.clone(),
            reason,
        };
        let client = BasicClient::new(ClientId::new(cfg.client_id.clone()))
            .set_client_secret(ClientSecret::new(cfg.client_secret.clone()))
            .set_auth_uri(
                AuthUrl::new(cfg.auth_url.clone()).map_err(|e| bad(format!("auth_url: {e}")))?,
            )
            .set_token_uri(
                TokenUrl::new(cfg.token_url.clone()).map_err(|e| bad(format!("token_url: {e}")))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(cfg.redirect_uri.clone())
                    .map_err(|e| bad(format!("redirect_uri: {e}")))?,
            );
        reqwest::Url::parse(&cfg.userinfo_url).map_err(|e| bad(format!("userinfo_url: {e}")))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .user_agent("slotgate")
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(OAuthProvider { cfg, client, http })
    }

    pub fn begin(&self, next: &str) -> (String, Pending) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = self.client.authorize_url(CsrfToken::new_random);
        for s in &self.cfg.scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state) = req.set_pkce_challenge(challenge).url();
        (
            url.to_string(),
            Pending {
                provider: self.cfg.name.clone(),
                state: state.secret().clone(),
                verifier: verifier.secret().clone(),
                next: next.into(),
                created: Instant::now(),
            },
        )
    }

    pub async fn finish(
        &self,
        pending: Pending,
        code: &str,
        state: &str,
    ) -> Result<ExternalUser, OAuthError> {
        let provider = self.cfg.name.clone();
        if !bool::from(pending.state.as_bytes().ct_eq(state.as_bytes())) {
            return Err(OAuthError::State { provider });
        }
        let token = self
            .client
            .exchange_code(AuthorizationCode::new(code.into()))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| OAuthError::Exchange {
                provider: provider.clone(),
                reason: e.to_string(),
            })?;
        let resp = self
            .http
            .get(&self.cfg.userinfo_url)
            .bearer_auth(token.access_token().secret())
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| OAuthError::UserInfo {
                provider: provider.clone(),
                reason: e.to_string(),
            })?;
        if !resp.status().is_success() {
            return Err(OAuthError::UserInfo {
                provider,
                reason: format!("answered {}", resp.status()),
            });
        }
        let bytes = resp.bytes().await.map_err(|e| OAuthError::UserInfo {
            provider: provider.clone(),
            reason: e.to_string(),
        })?;
        let info: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| OAuthError::UserInfo {
                provider: provider.clone(),
                reason: format!("not JSON: {e}"),
            })?;
        map_userinfo(&self.cfg, &info)
    }
}

/// Decide who a userinfo document describes, and whether they may enter.
pub fn map_userinfo(
    cfg: &OAuthConfig,
    info: &serde_json::Value,
) -> Result<ExternalUser, OAuthError> {
    let text = |f: &str| match info.get(f) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let raw = text(&cfg.username_field).ok_or_else(|| OAuthError::UserInfo {
        provider: cfg.name.clone(),
        reason: format!("no {:?} field", cfg.username_field),
    })?;
    let username = username_from_claim(&raw).ok_or_else(|| OAuthError::UserInfo {
        provider: cfg.name.clone(),
        reason: format!("cannot make a user name out of {raw:?}"),
    })?;
    if !cfg.allowed_users.is_empty() && !cfg.allowed_users.contains(&username) {
        return Err(OAuthError::NotAllowed {
            user: username,
            reason: "not in allowed_users".into(),
        });
    }
    let groups: Vec<String> = cfg
        .groups_field
        .as_ref()
        .and_then(|f| info.get(f))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let role = role_from_groups(
        &groups,
        &cfg.admin_groups,
        &cfg.viewer_groups,
        &cfg.allowed_groups,
        cfg.default_role,
    )
    .ok_or_else(|| OAuthError::NotAllowed {
        user: username.clone(),
        reason: "not in an allowed group".into(),
    })?;
    Ok(ExternalUser {
        provider: cfg.name.clone(),
        username,
        display_name: text(&cfg.display_name_field),
        email: text(&cfg.email_field),
        groups,
        role,
        id_token: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: serde_json::Value) -> OAuthConfig {
        let mut v = serde_json::json!({
            "name": "github", "auth_url": "https://github.com/login/oauth/authorize",
            "token_url": "https://github.com/login/oauth/access_token",
            "userinfo_url": "https://api.github.com/user", "client_id": "id", "client_secret": "s",
            "redirect_uri": "https://gw/auth/oauth2/github/callback"
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn github_style_userinfo_maps_to_a_user() {
        let u = map_userinfo(
            &cfg(serde_json::json!({})),
            &serde_json::json!({"login": "Octo-Cat", "id": 1, "name": "The Cat", "email": null}),
        )
        .unwrap();
        assert_eq!((u.username.as_str(), u.role), ("octo-cat", Role::User));
        assert_eq!(u.display_name.as_deref(), Some("The Cat"));
        assert_eq!(u.email, None);
        let only = cfg(serde_json::json!({"allowed_users": ["alice"]}));
        assert!(matches!(
            map_userinfo(&only, &serde_json::json!({"login": "mallory"})),
            Err(OAuthError::NotAllowed { .. })
        ));
        assert!(map_userinfo(&only, &serde_json::json!({"id": 3})).is_err());
    }

    #[test]
    fn authorize_url_carries_pkce_and_state() {
        let p = OAuthProvider::new(cfg(serde_json::json!({"scopes": ["read:user"]}))).unwrap();
        let (url, pending) = p.begin("/");
        assert!(url.starts_with("https://github.com/login/oauth/authorize?"));
        assert!(url.contains("code_challenge_method=S256"));
        assert!(url.contains(&format!("state={}", pending.state)));
        assert!(url.contains("scope=read%3Auser"));
        let bad = OAuthProvider::new(cfg(serde_json::json!({"token_url": "not a url"})));
        assert!(bad.err().unwrap().to_string().contains("token_url"));
    }
}
