//! Session cookies: short-lived signed JWTs (HS256) carrying the user, the
//! role and a session id that the server-side registry can revoke. Signing
//! keys live in one file (mode 0600) created at first start; each key has a
//! key id so keys can be rotated: new tokens use the newest key, tokens
//! signed by an older key stay valid until they expire.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::access::Role;

pub const ISSUER: &str = "slotgate";
pub const AUDIENCE: &str = "slotgate-session";
pub const COOKIE: &str = "slotgate_session";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("invalid session token: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    /// Server-side session id (revocation).
    pub sid: String,
    /// How the user signed in: `local`, `oidc:<provider>`, `oauth2:<provider>`, `embed`, `header`.
    pub amr: String,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    secret: String,
    created_ms: u64,
}

/// The signing keys, newest first.
#[derive(Clone)]
pub struct Keys {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keys")
            .field(
                "kids",
                &self.keys.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    b64().encode(buf)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Keys {
    /// Load the key file, creating it (mode 0600) with one key if missing.
    /// A file readable by others is refused.
    pub fn load_or_create(path: &Path) -> Result<Keys, SessionError> {
        let err = |reason: String| SessionError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        if !path.exists() {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            let keys = vec![StoredKey {
                kid: random_token(6),
                secret: random_token(32),
                created_ms: now_ms(),
            }];
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            f.write_all(
                serde_json::to_string_pretty(&keys)
                    .expect("json")
                    .as_bytes(),
            )
            .map_err(|e| err(e.to_string()))?;
        }
        let meta = fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(err(format!(
                "mode {:o} lets others read the session keys; chmod 600 it",
                meta.permissions().mode() & 0o777
            )));
        }
        let text = fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let stored: Vec<StoredKey> =
            serde_json::from_str(&text).map_err(|e| err(format!("not a key list: {e}")))?;
        let mut keys = Vec::new();
        for k in stored {
            let secret = b64()
                .decode(&k.secret)
                .map_err(|_| err(format!("key {} is not base64url", k.kid)))?;
            if secret.len() < 32 {
                return Err(err(format!("key {} is shorter than 32 bytes", k.kid)));
            }
            keys.push((k.kid, secret));
        }
        if keys.is_empty() {
            return Err(err("holds no key".into()));
        }
        Ok(Keys { keys })
    }

    /// Add a new key in front (rotation); older keys keep verifying.
    pub fn rotate(path: &Path) -> Result<String, SessionError> {
        let err = |reason: String| SessionError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        Keys::load_or_create(path)?;
        let text = fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut stored: Vec<StoredKey> =
            serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let kid = random_token(6);
        stored.insert(
            0,
            StoredKey {
                kid: kid.clone(),
                secret: random_token(32),
                created_ms: now_ms(),
            },
        );
        stored.truncate(3);
        let tmp = path.with_extension("tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(e.to_string()))?;
        f.write_all(
            serde_json::to_string_pretty(&stored)
                .expect("json")
                .as_bytes(),
        )
        .map_err(|e| err(e.to_string()))?;
        fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
        Ok(kid)
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let (kid, secret) = &self.keys[0];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
            .expect("HS256 signing cannot fail")
    }

    /// Verify signature (by key id), algorithm, issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, SessionError> {
        self.verify_inner(token, true)
    }

    /// Like [`Keys::verify`] but accepts an expired token: for refreshing a
    /// session whose short-lived token lapsed while the server-side session
    /// (checked by the caller) is still live.
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Claims, SessionError> {
        self.verify_inner(token, false)
    }

    fn verify_inner(&self, token: &str, check_exp: bool) -> Result<Claims, SessionError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| SessionError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::HS256 {
            return Err(SessionError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| SessionError::Invalid("no key id".into()))?;
        let (_, secret) = self
            .keys
            .iter()
            .find(|(k, _)| *k == kid)
            .ok_or_else(|| SessionError::Invalid("unknown key id".into()))?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.leeway = 5;
        v.validate_exp = check_exp;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &v)
            .map(|d| d.claims)
            .map_err(|e| SessionError::Invalid(e.to_string()))
    }
}

impl Claims {
    pub fn new(user: &str, role: Role, sid: &str, amr: &str, ttl_secs: u64) -> Claims {
        let now = now_ms() / 1000;
        Claims {
            sub: user.into(),
            role,
            sid: sid.into(),
            amr: amr.into(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + ttl_secs,
        }
    }
}

/// The `Set-Cookie` value for a session token. Embedded use (iframes in
/// another site) needs `SameSite=None; Secure; Partitioned` so the cookie
/// works where third-party cookies are blocked.
pub fn set_cookie(token: &str, max_age_secs: u64, embedded: bool, secure: bool) -> String {
    let mut c = format!("{COOKIE}={token}; Path=/; HttpOnly; Max-Age={max_age_secs}");
    if embedded {
        c.push_str("; SameSite=None; Secure; Partitioned");
    } else {
        c.push_str("; SameSite=Lax");
        if secure {
            c.push_str("; Secure");
        }
    }
    c
}

/// A `Set-Cookie` that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; Max-Age=0; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The session token from a `Cookie` header value.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE && !v.is_empty()).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (tempfile::TempDir, PathBuf, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let k = Keys::load_or_create(&path).unwrap();
        (dir, path, k)
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let (_d, path, k) = keys();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = Keys::load_or_create(&path).unwrap();
        let t = k.sign(&Claims::new("alice", Role::User, "s1", "local", 60));
        assert_eq!(again.verify(&t).unwrap().sub, "alice");
        assert!(!format!("{k:?}").contains(&b64().encode(&k.keys[0].1)));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Keys::load_or_create(&path)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
    }

    #[test]
    fn rotation_keeps_old_tokens_valid() {
        let (_d, path, old) = keys();
        let t_old = old.sign(&Claims::new("alice", Role::User, "s1", "local", 60));
        let kid = Keys::rotate(&path).unwrap();
        let new = Keys::load_or_create(&path).unwrap();
        let t_new = new.sign(&Claims::new("bob", Role::Admin, "s2", "local", 60));
        assert_eq!(
            jsonwebtoken::decode_header(&t_new).unwrap().kid.as_deref(),
            Some(kid.as_str())
        );
        assert_eq!(new.verify(&t_old).unwrap().sub, "alice");
        assert_eq!(new.verify(&t_new).unwrap().role, Role::Admin);
        assert!(
            old.verify(&t_new).is_err(),
            "a key the verifier lacks is refused"
        );
    }

    #[test]
    fn forged_expired_none_and_foreign_tokens_are_refused() {
        let (_d, _p, k) = keys();
        let good = k.sign(&Claims::new("alice", Role::User, "s1", "local", 60));
        // Tampered payload: role escalated, signature unchanged.
        let parts: Vec<&str> = good.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&b64().decode(parts[1]).unwrap()).unwrap();
        payload["role"] = "admin".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64().encode(payload.to_string()),
            parts[2]
        );
        assert!(k.verify(&forged).is_err());
        // alg: none.
        let none_header = b64().encode(r#"{"alg":"none","typ":"JWT"}"#);
        let none = format!("{none_header}.{}.", parts[1]);
        assert!(k.verify(&none).is_err());
        // Expired.
        let mut c = Claims::new("alice", Role::User, "s1", "local", 60);
        c.exp = c.iat - 120;
        assert!(k
            .verify(&k.sign(&c))
            .unwrap_err()
            .to_string()
            .contains("xpired"));
        // An expired token still verifies for refresh, a forged one does not.
        let mut c = Claims::new("alice", Role::User, "s1", "local", 60);
        c.exp = c.iat - 120;
        assert_eq!(k.verify_ignoring_expiry(&k.sign(&c)).unwrap().sid, "s1");
        assert!(k.verify_ignoring_expiry(&forged).is_err());
        assert!(k.verify_ignoring_expiry(&none).is_err());
        // Wrong audience.
        let mut c = Claims::new("alice", Role::User, "s1", "local", 60);
        c.aud = "someone-else".into();
        assert!(k.verify(&k.sign(&c)).is_err());
        // Another installation's key.
        let (_d2, _p2, other) = keys();
        assert!(k
            .verify(&other.sign(&Claims::new("alice", Role::User, "s1", "local", 60)))
            .is_err());
    }

    #[test]
    fn cookies() {
        let c = set_cookie("tok", 900, false, true);
        assert_eq!(
            c,
            "slotgate_session=tok; Path=/; HttpOnly; Max-Age=900; SameSite=Lax; Secure"
        );
        let e = set_cookie("tok", 900, true, true);
        assert!(e.ends_with("SameSite=None; Secure; Partitioned"));
        assert_eq!(
            from_cookie_header("a=1; slotgate_session=xyz; b=2"),
            Some("xyz")
        );
        assert_eq!(from_cookie_header("slotgate_session="), None);
        assert_eq!(from_cookie_header("other=slotgate_session"), None);
    }
}
