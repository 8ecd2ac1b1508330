//! ID tokens a real OpenID Provider never issues: forged, unsigned, expired,
//! meant for someone else, signed by a stranger's key. `oidc_live.rs` runs
//! the real oidc-provider, which only ever signs good tokens; here a
//! STAND-IN provider (a small axum server on 127.0.0.1 serving discovery,
//! a JWKS and a token endpoint) hands `OidcProvider::finish` exactly the ID
//! token each test built, signed with a P-256 key made in the test (ES256).
//! Each refusal is asserted to be `OidcError::IdToken` with the reason that
//! names the problem; the positive control and key rotation prove the same
//! stand-in lets a good token through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use identity::access::Role;
use identity::oidc::{ExternalUser, OidcConfig, OidcError, OidcProvider};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const CLIENT_ID: &str = "slotgate";
const CLIENT_SECRET: &str = "stand-in-secret-0123456789";
const CODE: &str = "code-from-the-stand-in";

/// A signing key of the stand-in provider (or of an attacker).
struct Key {
    kid: String,
    private: EncodingKey,
    jwk: Value,
}

impl Key {
    fn new(kid: &str) -> Key {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // Uncompressed SEC1 point: 0x04 || x || y.
        let point = pair.public_key_raw();
        assert_eq!((point.len(), point[0]), (65, 4));
        Key {
            kid: kid.into(),
            private: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]),
            }),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.private).unwrap()
    }
}

#[derive(Default)]
struct Shared {
    jwks: Mutex<Vec<Value>>,
    id_token: Mutex<String>,
    jwks_fetches: AtomicUsize,
}

/// The stand-in OpenID Provider: discovery, JWKS, token endpoint.
struct StandIn {
    issuer: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl StandIn {
    /// `algs`: what discovery says the provider signs ID tokens with.
    async fn start(keys: &[&Key], algs: &[&str]) -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        *shared.jwks.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
        let discovery = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
        });
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StandIn {
            issuer,
            shared,
            server,
        }
    }

    fn publish(&self, keys: &[&Key]) {
        *self.shared.jwks.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    async fn relying_party(&self) -> OidcProvider {
        let cfg: OidcConfig = serde_json::from_value(json!({
            "name": "standin", "issuer": self.issuer, "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uri": "https://127.0.0.1:7681/auth/oidc/standin/callback",
            "admin_groups": ["ops"], "allowed_groups": ["eng"]
        }))
        .unwrap();
        OidcProvider::discover(cfg).await.unwrap()
    }

    /// The claims a good token for this sign-in carries.
    fn claims(&self, nonce: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer, "aud": CLIENT_ID, "sub": "u-1",
            "iat": now, "exp": now + 300, "nonce": nonce,
            "preferred_username": "alice", "name": "Alice A",
            "email": "alice@example.com", "email_verified": true, "groups": ["eng"],
        })
    }

    /// One sign-in: `begin`, the ID token `make` builds from the request's
    /// nonce is what the token endpoint returns, then `finish`.
    async fn sign_in(
        &self,
        rp: &OidcProvider,
        make: impl FnOnce(&str) -> String,
    ) -> Result<ExternalUser, OidcError> {
        let (url, pending) = rp.begin("/").unwrap();
        assert!(url.starts_with(&format!("{}/auth?", self.issuer)), "{url}");
        // What the browser carries: the request's nonce to the provider,
        // its state back to the callback.
        let params: HashMap<String, String> = reqwest::Url::parse(&url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        let (Some(state), Some(nonce)) = (params.get("state"), params.get("nonce")) else {
            panic!("no state or nonce in {url}");
        };
        *self.shared.id_token.lock().unwrap() = make(nonce);
        rp.finish(pending, CODE, state).await
    }

    /// One sign-in with a token `key` signed over the good claims as
    /// `edit` changed them.
    async fn sign_in_signed(
        &self,
        rp: &OidcProvider,
        key: &Key,
        edit: impl FnOnce(&mut Value),
    ) -> Result<ExternalUser, OidcError> {
        self.sign_in(rp, |nonce| {
            let mut claims = self.claims(nonce);
            edit(&mut claims);
            key.sign(&claims)
        })
        .await
    }
}

/// A stand-in provider signing with one ES256 key, and a relying party
/// that discovered it.
async fn es256_provider(kid: &str) -> (Key, StandIn, OidcProvider) {
    let key = Key::new(kid);
    let op = StandIn::start(&[&key], &["ES256"]).await;
    let rp = op.relying_party().await;
    (key, op, rp)
}

async fn jwks(State(s): State<Arc<Shared>>) -> Json<Value> {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "keys": *s.jwks.lock().unwrap() }))
}

/// Hands out the test's ID token for the one code it issued, to a request
/// that carries the PKCE verifier and the client's credentials.
async fn token(
    State(s): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let authorized = headers
        .get("authorization")
        .is_some_and(|h| h.as_bytes() == basic.as_bytes());
    let fields: Vec<&str> = body.split('&').collect();
    if !authorized
        || !fields.contains(&"grant_type=authorization_code")
        || !fields.contains(&format!("code={CODE}").as_str())
        || !fields.iter().any(|f| f.starts_with("code_verifier="))
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant" })),
        );
    }
    let id_token = s.id_token.lock().unwrap().clone();
    (
        StatusCode::OK,
        Json(json!({
            "access_token": "stand-in-access-token", "token_type": "Bearer",
            "expires_in": 300, "id_token": id_token,
        })),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64_json(v: &Value) -> String {
    B64.encode(serde_json::to_vec(v).unwrap())
}

/// The refusal must be about the ID token, and its reason must be `want`.
#[track_caller]
fn refused(r: Result<ExternalUser, OidcError>, want: &str) {
    match r {
        Err(OidcError::IdToken { provider, reason }) => {
            assert_eq!(provider, "standin");
            assert_eq!(reason, want);
        }
        other => panic!("expected the ID token to be refused ({want}), got {other:?}"),
    }
}

/// Like [`refused`], for reasons that carry times or library detail.
#[track_caller]
fn refused_starting(r: Result<ExternalUser, OidcError>, prefix: &str) -> String {
    match r {
        Err(OidcError::IdToken { provider, reason }) => {
            assert_eq!(provider, "standin");
            assert!(
                reason.starts_with(prefix),
                "{reason:?} should start with {prefix:?}"
            );
            reason
        }
        other => panic!("expected the ID token to be refused ({prefix}), got {other:?}"),
    }
}

#[tokio::test]
async fn stand_in_provider_valid_token_signs_in() {
    let (key, op, rp) = es256_provider("k1").await;
    let mut issued = String::new();
    let user = op
        .sign_in(&rp, |nonce| {
            issued = key.sign(&op.claims(nonce));
            issued.clone()
        })
        .await
        .unwrap();
    assert_eq!(user.provider, "standin");
    assert_eq!(user.username, "alice");
    assert_eq!(user.display_name.as_deref(), Some("Alice A"));
    assert_eq!(user.email.as_deref(), Some("alice@example.com"));
    assert_eq!(user.groups, vec!["eng"]);
    assert_eq!(user.role, Role::User);
    assert_eq!(user.id_token.as_deref(), Some(issued.as_str()));

    // Claims map to roles: an admin group makes an admin.
    let admin = op
        .sign_in_signed(&rp, &key, |c| {
            c["preferred_username"] = json!("olga");
            c["groups"] = json!(["eng", "ops"]);
        })
        .await
        .unwrap();
    assert_eq!((admin.username.as_str(), admin.role), ("olga", Role::Admin));
    // Good tokens need no second look at the keys.
    assert_eq!(op.jwks_fetches(), 1);
}

#[tokio::test]
async fn stand_in_provider_forged_signature_is_refused() {
    let (key, op, rp) = es256_provider("k1").await;
    let bad_signature = "Signature verification failed: Crypto error: EC Signature was wrong";

    // A good token whose payload was changed after signing (alice makes
    // herself an admin): header and signature are the provider's.
    let r = op
        .sign_in(&rp, |nonce| {
            let good = key.sign(&op.claims(nonce));
            let parts: Vec<&str> = good.split('.').collect();
            let mut claims = op.claims(nonce);
            claims["groups"] = json!(["eng", "ops"]);
            format!("{}.{}.{}", parts[0], b64_json(&claims), parts[2])
        })
        .await;
    refused(r, bad_signature);

    // Signed by an attacker's key that claims the provider's key id.
    let impostor = Key::new("k1");
    refused(
        op.sign_in_signed(&rp, &impostor, |_| {}).await,
        bad_signature,
    );
}

#[tokio::test]
async fn stand_in_provider_alg_none_is_refused() {
    let key = Key::new("k1");
    // Even a provider that lists `none` among its algorithms does not get
    // an unsigned ID token accepted.
    for algs in [&["ES256"][..], &["ES256", "none"][..]] {
        let op = StandIn::start(&[&key], algs).await;
        let rp = op.relying_party().await;
        for signature in ["", "AAAA"] {
            let r = op
                .sign_in(&rp, |nonce| {
                    let header = json!({ "alg": "none", "typ": "JWT", "kid": "k1" });
                    format!(
                        "{}.{}.{signature}",
                        b64_json(&header),
                        b64_json(&op.claims(nonce))
                    )
                })
                .await;
            refused(r, "Signature verification failed: No signature found");
        }
    }
}

#[tokio::test]
async fn stand_in_provider_symmetric_alg_is_refused() {
    // HS256 "signed" with the client secret (or any value the attacker
    // knows) when the provider only signs with ES256.
    let (_, op, rp) = es256_provider("k1").await;
    let r = op
        .sign_in(&rp, |nonce| {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("k1".into());
            let secret = EncodingKey::from_secret(CLIENT_SECRET.as_bytes());
            jsonwebtoken::encode(&header, &op.claims(nonce), &secret).unwrap()
        })
        .await;
    refused(
        r,
        "Signature verification failed: Disallowed signature algorithm: \
         algorithm `HS256` is not one of: ES256",
    );
}

#[tokio::test]
async fn stand_in_provider_expired_token_is_refused() {
    let (key, op, rp) = es256_provider("k1").await;
    let r = op
        .sign_in_signed(&rp, &key, |c| {
            c["iat"] = json!(now() - 3600);
            c["exp"] = json!(now() - 600);
        })
        .await;
    refused_starting(r, "Expired: ID token expired at ");
}

#[tokio::test]
async fn stand_in_provider_wrong_audience_is_refused() {
    let (key, op, rp) = es256_provider("k1").await;
    // Meant for another application.
    let r = op
        .sign_in_signed(&rp, &key, |c| c["aud"] = json!("other-app"))
        .await;
    refused(
        r,
        "Invalid audiences: must contain `slotgate` (found audiences: `other-app`)",
    );
    // Meant for us and for an application we do not trust.
    let r = op
        .sign_in_signed(&rp, &key, |c| c["aud"] = json!(["slotgate", "other-app"]))
        .await;
    refused(
        r,
        "Invalid audiences: `other-app` is not a trusted audience",
    );
}

#[tokio::test]
async fn stand_in_provider_wrong_issuer_is_refused() {
    let (key, op, rp) = es256_provider("k1").await;
    let r = op
        .sign_in_signed(&rp, &key, |c| c["iss"] = json!("https://evil.example"))
        .await;
    let want = format!(
        "Invalid issuer: expected `{}` (found `https://evil.example`)",
        op.issuer
    );
    refused(r, &want);
}

#[tokio::test]
async fn stand_in_provider_wrong_nonce_is_refused() {
    let (key, op, rp) = es256_provider("k1").await;
    // A token minted for another sign-in (replayed into this one).
    let r = op
        .sign_in_signed(&rp, &key, |c| {
            c["nonce"] = json!("nonce-of-another-sign-in")
        })
        .await;
    refused(r, "Invalid nonce: nonce mismatch");
    let r = op
        .sign_in_signed(&rp, &key, |c| {
            c.as_object_mut().unwrap().remove("nonce");
        })
        .await;
    refused(r, "Invalid nonce: missing nonce claim");
}

#[tokio::test]
async fn stand_in_provider_wrong_access_token_hash_is_refused() {
    // `at_hash` binds the ID token to the access token it came with.
    let (key, op, rp) = es256_provider("k1").await;
    let r = op
        .sign_in_signed(&rp, &key, |c| c["at_hash"] = json!(B64.encode([7u8; 16])))
        .await;
    refused(r, "access token hash does not match");
}

#[tokio::test]
async fn stand_in_provider_unknown_key_is_refused_after_one_refresh() {
    // Also the rotation that went wrong: the provider signs with a key its
    // JWKS, even fetched again, does not list.
    let (_, op, rp) = es256_provider("k1").await;
    assert_eq!(op.jwks_fetches(), 1);
    let stranger = Key::new("stranger");
    let no_key = "Signature verification failed: No matching key found";
    refused(op.sign_in_signed(&rp, &stranger, |_| {}).await, no_key);
    // The unknown key made the relying party look at the keys again once.
    assert_eq!(op.jwks_fetches(), 2);
    // Refreshes are rate limited: another unknown key right after does not
    // make it fetch again.
    refused(op.sign_in_signed(&rp, &stranger, |_| {}).await, no_key);
    assert_eq!(op.jwks_fetches(), 2);
}

#[tokio::test]
async fn stand_in_provider_key_rotation_refreshes_the_jwks_once() {
    let (old, op, rp) = es256_provider("2026-old").await;
    assert_eq!(op.jwks_fetches(), 1);

    // The provider rotates after discovery: only the new key is published
    // and tokens are signed with it.
    let new = Key::new("2026-new");
    op.publish(&[&new]);
    let user = op.sign_in_signed(&rp, &new, |_| {}).await.unwrap();
    assert_eq!((user.username.as_str(), user.role), ("alice", Role::User));
    assert_eq!(op.jwks_fetches(), 2);

    // The refreshed keys stay: the next token with the new key needs no
    // fetch, and the retired key no longer signs anything we accept.
    op.sign_in_signed(&rp, &new, |_| {}).await.unwrap();
    assert_eq!(op.jwks_fetches(), 2);
    refused(
        op.sign_in_signed(&rp, &old, |_| {}).await,
        "Signature verification failed: No matching key found",
    );
    assert_eq!(op.jwks_fetches(), 2);
}
