//! Sign-in through OpenID Connect providers (openidconnect crate):
//! discovery, authorization code flow with PKCE, `state` and `nonce`, full
//! ID token validation against the provider's JWKS (signature, issuer,
//! audience, expiry, nonce, access-token hash), userinfo, and mapping of
//! configurable claims to a slotgate user and role. A token signed by a key
//! the cached JWKS does not know triggers one fresh discovery (key
//! rotation). No browser I/O here: the proxy stores the `Pending` half of a
//! login between the redirect and the callback.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::reqwest;
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse,
};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::access::{role_from_groups, Role};

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("identity provider {provider}: discovery failed: {reason}")]
    Discovery { provider: String, reason: String },
    #[error("sign-in with {provider} failed: the state parameter does not match (stale or forged callback)")]
    State { provider: String },
    #[error("sign-in with {provider} failed: the provider refused the code: {reason}")]
    Exchange { provider: String, reason: String },
    #[error("sign-in with {provider} failed: the ID token is not valid: {reason}")]
    IdToken { provider: String, reason: String },
    #[error("sign-in with {provider} failed: {reason}")]
    Claims { provider: String, reason: String },
    #[error("{user} may not use slotgate: {reason}")]
    NotAllowed { user: String, reason: String },
    #[error("bad provider configuration: {0}")]
    Config(String),
}

/// One `[[slotgate.oidc]]` provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Short id used in URLs (`/auth/oidc/<name>/…`) and in `amr`.
    pub name: String,
    /// Label of the button on the sign-in page.
    #[serde(default)]
    pub display_name: Option<String>,
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Full callback URL registered at the provider.
    pub redirect_uri: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    #[serde(default = "default_name_claim")]
    pub display_name_claim: String,
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    #[serde(default)]
    pub admin_groups: Vec<String>,
    #[serde(default)]
    pub viewer_groups: Vec<String>,
    /// When set, only members of these (or of admin/viewer groups) may sign in.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// When set, only e-mail addresses in these domains may sign in.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// With `allowed_domains`: the provider must say the address is
    /// verified (`email_verified: true`); an unverified address could be
    /// anyone's. Turn off only for providers that never send the claim and
    /// only issue addresses they own (Microsoft Entra ID work accounts).
    #[serde(default = "yes")]
    pub require_verified_email: bool,
    /// Google Workspace: only accounts of this hosted domain (`hd` claim);
    /// also sent as the `hd` hint so Google's chooser offers only them.
    #[serde(default)]
    pub hosted_domain: Option<String>,
    #[serde(default = "default_role")]
    pub default_role: Role,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_name_claim() -> String {
    "name".into()
}
fn default_email_claim() -> String {
    "email".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_role() -> Role {
    Role::User
}
fn yes() -> bool {
    true
}

/// What the proxy keeps between the redirect and the callback.
#[derive(Debug, Clone)]
pub struct Pending {
    pub provider: String,
    pub state: String,
    nonce: String,
    verifier: String,
    pub next: String,
    pub created: Instant,
}

/// A signed-in person, as the provider described them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUser {
    pub provider: String,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub role: Role,
    /// For RP-initiated logout (`id_token_hint`).
    pub id_token: Option<String>,
}

type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

pub struct OidcProvider {
    pub cfg: OidcConfig,
    metadata: RwLock<CoreProviderMetadata>,
    /// When the keys were last re-fetched for an unknown signing key.
    refreshed: Mutex<Option<Instant>>,
    /// RP-initiated logout endpoint (not part of the core metadata type).
    end_session: Option<String>,
    http: reqwest::Client,
}

fn http_client() -> reqwest::Client {
    reqwest::ClientBuilder::new()
        // Following redirects would open the client to SSRF.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

pub use crate::access::username_from_claim;

fn claim_str(v: &serde_json::Value, name: &str) -> Option<String> {
    match v.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn claim_list(v: &serde_json::Value, name: &str) -> Vec<String> {
    match v.get(name) {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        Some(serde_json::Value::String(s)) => s
            .split([',', ' '])
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect(),
        _ => vec![],
    }
}

/// Decide who an authenticated claim set is, and whether they may enter.
pub fn map_claims(cfg: &OidcConfig, claims: &serde_json::Value) -> Result<ExternalUser, OidcError> {
    let raw = claim_str(claims, &cfg.username_claim)
        .or_else(|| claim_str(claims, "sub"))
        .ok_or_else(|| OidcError::Claims {
            provider: cfg.name.clone(),
            reason: format!("the token has no {} claim", cfg.username_claim),
        })?;
    let username = username_from_claim(&raw).ok_or_else(|| OidcError::Claims {
        provider: cfg.name.clone(),
        reason: format!("cannot make a user name out of {raw:?}"),
    })?;
    let email = claim_str(claims, &cfg.email_claim);
    if let Some(hd) = &cfg.hosted_domain {
        if !claim_str(claims, "hd").is_some_and(|c| c.eq_ignore_ascii_case(hd)) {
            return Err(OidcError::NotAllowed {
                user: username,
                reason: format!("not an account of the hosted domain {hd}"),
            });
        }
    }
    if !cfg.allowed_domains.is_empty() {
        if cfg.require_verified_email
            && claims.get("email_verified") != Some(&serde_json::Value::Bool(true))
        {
            return Err(OidcError::NotAllowed {
                user: username,
                reason: "the provider did not verify the e-mail address".into(),
            });
        }
        let domain = email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_lowercase());
        if !domain.is_some_and(|d| {
            cfg.allowed_domains
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&d))
        }) {
            return Err(OidcError::NotAllowed {
                user: username,
                reason: "e-mail domain is not allowed".into(),
            });
        }
    }
    let groups = claim_list(claims, &cfg.groups_claim);
    let role = role_from_groups(
        &groups,
        &cfg.admin_groups,
        &cfg.viewer_groups,
        &cfg.allowed_groups,
        cfg.default_role,
    )
    .ok_or_else(|| OidcError::NotAllowed {
        user: username.clone(),
        reason: "not in an allowed group".into(),
    })?;
    Ok(ExternalUser {
        provider: cfg.name.clone(),
        username,
        display_name: claim_str(claims, &cfg.display_name_claim),
        email,
        groups,
        role,
        id_token: None,
    })
}

impl OidcProvider {
    pub async fn discover(cfg: OidcConfig) -> Result<OidcProvider, OidcError> {
        let http = http_client();
        let md = Self::fetch(&cfg, &http).await?;
        let doc_url = format!(
            "{}/.well-known/openid-configuration",
            cfg.issuer.trim_end_matches('/')
        );
        let end_session = match http.get(doc_url).send().await {
            Ok(r) => r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|d| d.get("end_session_endpoint")?.as_str().map(String::from)),
            Err(_) => None,
        };
        Ok(OidcProvider {
            cfg,
            metadata: RwLock::new(md),
            refreshed: Mutex::new(None),
            end_session,
            http,
        })
    }

    async fn fetch(
        cfg: &OidcConfig,
        http: &reqwest::Client,
    ) -> Result<CoreProviderMetadata, OidcError> {
        let issuer = IssuerUrl::new(cfg.issuer.clone())
            .map_err(|e| OidcError::Config(format!("issuer: {e}")))?;
        CoreProviderMetadata::discover_async(issuer, http)
            .await
            .map_err(|e| OidcError::Discovery {
                provider: cfg.name.clone(),
                reason: error_chain(&e),
            })
    }

    fn client(&self) -> Result<Client, OidcError> {
        let md = self
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let redirect = RedirectUrl::new(self.cfg.redirect_uri.clone())
            .map_err(|e| OidcError::Config(format!("redirect_uri: {e}")))?;
        Ok(CoreClient::from_provider_metadata(
            md,
            ClientId::new(self.cfg.client_id.clone()),
            self.cfg.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// Start a sign-in: the provider URL to redirect to, and what to keep.
    pub fn begin(&self, next: &str) -> Result<(String, Pending), OidcError> {
        let client = self.client()?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in self.cfg.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(s.clone()));
        }
        if let Some(hd) = &self.cfg.hosted_domain {
            req = req.add_extra_param("hd", hd.clone());
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok((
            url.to_string(),
            Pending {
                provider: self.cfg.name.clone(),
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                next: next.to_string(),
                created: Instant::now(),
            },
        ))
    }

    /// Finish a sign-in from the callback's `code` and `state`.
    pub async fn finish(
        &self,
        pending: Pending,
        code: &str,
        state: &str,
    ) -> Result<ExternalUser, OidcError> {
        let provider = self.cfg.name.clone();
        if !bool::from(pending.state.as_bytes().ct_eq(state.as_bytes())) {
            return Err(OidcError::State { provider });
        }
        let client = self.client()?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange {
                provider: provider.clone(),
                reason: error_chain(&e),
            })?;
        let id_token = token.id_token().ok_or_else(|| OidcError::IdToken {
            provider: provider.clone(),
            reason: "the provider returned no ID token".into(),
        })?;
        let nonce = Nonce::new(pending.nonce.clone());
        let verify = |client: &Client| {
            id_token
                .claims(&client.id_token_verifier(), &nonce)
                .cloned()
        };
        let refused = |e: ClaimsVerificationError| OidcError::IdToken {
            provider: provider.clone(),
            reason: error_chain(&e),
        };
        let claims = match verify(&client) {
            Ok(c) => c,
            // Unknown signing key: the provider may have rotated keys since
            // discovery. Fetch once more and retry.
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) if self.refresh().await => verify(&self.client()?).map_err(refused)?,
            Err(e) => return Err(refused(e)),
        };
        if let Some(expected) = claims.access_token_hash() {
            let client = self.client()?;
            let verifier = client.id_token_verifier();
            let alg = id_token.signing_alg().map_err(|e| OidcError::IdToken {
                provider: provider.clone(),
                reason: e.to_string(),
            })?;
            let key = id_token
                .signing_key(&verifier)
                .map_err(|e| OidcError::IdToken {
                    provider: provider.clone(),
                    reason: e.to_string(),
                })?;
            let actual =
                AccessTokenHash::from_token(token.access_token(), alg, key).map_err(|e| {
                    OidcError::IdToken {
                        provider: provider.clone(),
                        reason: e.to_string(),
                    }
                })?;
            if actual != *expected {
                return Err(OidcError::IdToken {
                    provider,
                    reason: "access token hash does not match".into(),
                });
            }
        }
        // The verified token's payload, for configurable claim names.
        let raw = id_token.to_string();
        let mut payload: serde_json::Value = raw
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        // Userinfo fills in what the ID token left out (groups, often).
        if let Some(extra) = self.userinfo_json(token.access_token().secret()).await {
            if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    p.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        let mut user = map_claims(&self.cfg, &payload)?;
        user.id_token = Some(raw);
        Ok(user)
    }

    /// The raw userinfo document (for non-standard claims such as groups).
    async fn userinfo_json(&self, access_token: &str) -> Option<serde_json::Value> {
        let url = self
            .metadata
            .read()
            .ok()?
            .userinfo_endpoint()?
            .url()
            .clone();
        let resp = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let bytes = resp.bytes().await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Re-fetch discovery (and so the JWKS): the first time an unknown key
    /// shows up, then at most every 10 s, whether or not a fetch worked (a
    /// stream of tokens with made-up key ids must not become a stream of
    /// requests to the provider).
    async fn refresh(&self) -> bool {
        {
            let mut last = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match Self::fetch(&self.cfg, &self.http).await {
            Ok(md) => {
                *self.metadata.write().unwrap_or_else(|e| e.into_inner()) = md;
                true
            }
            Err(_) => false,
        }
    }

    /// RP-initiated logout URL, when the provider offers one.
    pub fn end_session_url(
        &self,
        id_token_hint: Option<&str>,
        post_logout: &str,
    ) -> Option<String> {
        let mut url = url_with(self.end_session.as_deref()?)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.cfg.client_id);
            q.append_pair("post_logout_redirect_uri", post_logout);
            if let Some(h) = id_token_hint {
                q.append_pair("id_token_hint", h);
            }
        }
        Some(url.to_string())
    }
}

fn url_with(s: &str) -> Option<openidconnect::url::Url> {
    openidconnect::url::Url::parse(s).ok()
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> OidcConfig {
        serde_json::from_value(serde_json::json!({
            "name": "kc", "issuer": "http://127.0.0.1:1", "client_id": "slotgate",
            "redirect_uri": "https://gw/auth/oidc/kc/callback",
            "admin_groups": ["ops"], "allowed_groups": ["eng"], "allowed_domains": ["example.com"]
        }))
        .unwrap()
    }

    #[test]
    fn usernames_from_claims() {
        assert_eq!(
            username_from_claim("Alice.Smith@example.com").as_deref(),
            Some("alice-smith")
        );
        assert_eq!(username_from_claim("bob").as_deref(), Some("bob"));
        assert_eq!(username_from_claim("..."), None);
        assert_eq!(
            username_from_claim(&"x".repeat(80)).map(|s| s.len()),
            Some(32)
        );
    }

    #[test]
    fn claims_map_to_users_and_refusals() {
        let c = cfg();
        let u = map_claims(&c, &serde_json::json!({"sub": "1", "preferred_username": "alice", "email": "alice@example.com", "email_verified": true, "groups": ["eng"]})).unwrap();
        assert_eq!((u.username.as_str(), u.role), ("alice", Role::User));
        let a = map_claims(&c, &serde_json::json!({"preferred_username": "root", "email": "r@EXAMPLE.com", "email_verified": true, "groups": ["ops"]})).unwrap();
        assert_eq!(a.role, Role::Admin);
        let outside = map_claims(
            &c,
            &serde_json::json!({"preferred_username": "eve", "email": "eve@example.com", "groups": ["sales"]}),
        );
        assert!(
            matches!(outside, Err(OidcError::NotAllowed { .. })),
            "{outside:?}"
        );
        let domain = map_claims(
            &c,
            &serde_json::json!({"preferred_username": "mal", "email": "mal@evil.test", "email_verified": true, "groups": ["eng"]}),
        );
        assert!(matches!(domain, Err(OidcError::NotAllowed { .. })));
    }

    #[test]
    fn allowed_domains_need_a_verified_address() {
        let c = cfg();
        for verified in [json!(false), json!("true"), json!(null)] {
            let r = map_claims(
                &c,
                &json!({"preferred_username": "alice", "email": "alice@example.com", "email_verified": verified, "groups": ["eng"]}),
            );
            assert!(
                matches!(r, Err(OidcError::NotAllowed { .. })),
                "{verified}: {r:?}"
            );
        }
        let missing = map_claims(
            &c,
            &json!({"preferred_username": "alice", "email": "alice@example.com", "groups": ["eng"]}),
        );
        assert!(matches!(missing, Err(OidcError::NotAllowed { .. })));
        let relaxed = OidcConfig {
            require_verified_email: false,
            ..cfg()
        };
        let ok = map_claims(
            &relaxed,
            &json!({"preferred_username": "alice", "email": "alice@example.com", "groups": ["eng"]}),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn hosted_domain_is_required() {
        let c = OidcConfig {
            hosted_domain: Some("example.com".into()),
            ..cfg()
        };
        let claims = |hd: serde_json::Value| json!({"preferred_username": "alice", "email": "alice@example.com", "email_verified": true, "groups": ["eng"], "hd": hd});
        assert!(map_claims(&c, &claims(json!("example.com"))).is_ok());
        for hd in [json!("gmail.com"), json!(null)] {
            let r = map_claims(&c, &claims(hd.clone()));
            assert!(
                matches!(r, Err(OidcError::NotAllowed { .. })),
                "{hd}: {r:?}"
            );
        }
    }
}
