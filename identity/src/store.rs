//! `identity.db`: local accounts (argon2id password hashes), the server-side
//! session registry, API tokens (stored as SHA-256 of their secret part,
//! shown once), single-use embed tokens, and per-slot access lists. The only
//! module of this crate that contains SQL. WAL journal; every change is one
//! statement or one transaction.

use std::path::Path;
use std::sync::Mutex;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::access::{Role, SlotAcl};
use crate::session::random_token;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("identity database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("identity database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("no user named {0}")]
    NoSuchUser(String),
    #[error("invalid user name {0:?}: {1}")]
    BadName(String, String),
    #[error("password must be at least 10 characters")]
    WeakPassword,
}

/// Why a sign-in failed. The page shows one message for the first two so
/// that it does not reveal which user names exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("wrong user name or password")]
    NoSuchUser,
    #[error("wrong user name or password")]
    WrongPassword,
    #[error("this account is disabled")]
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub disabled: bool,
    /// Set for the bootstrap admin and after an admin reset.
    pub must_change_password: bool,
    pub has_password: bool,
    pub created_ms: u64,
    /// The role was set by an administrator (`slotctl user role`); provider
    /// sign-ins no longer replace it with the one their groups map to.
    pub role_pinned: bool,
    /// The identity provider's groups at the last sign-in (none for local
    /// accounts).
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRow {
    pub sid: String,
    pub user: String,
    pub amr: String,
    pub created_ms: u64,
    pub last_seen_ms: u64,
    pub expires_ms: u64,
    pub revoked: bool,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: String,
    pub user: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub last_used_ms: Option<u64>,
    pub revoked: bool,
}

pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, email TEXT, display_name TEXT,
    password_hash TEXT, disabled INTEGER NOT NULL DEFAULT 0,
    must_change_password INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY, user TEXT NOT NULL, amr TEXT NOT NULL,
    created_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
    revoked_ms INTEGER, ip TEXT, user_agent TEXT);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user);
CREATE INDEX IF NOT EXISTS sessions_revoked ON sessions(revoked_ms);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, name TEXT NOT NULL, secret_sha256 BLOB NOT NULL,
    scopes TEXT NOT NULL, created_ms INTEGER NOT NULL, expires_ms INTEGER,
    last_used_ms INTEGER, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS embed_tokens (
    secret_sha256 BLOB PRIMARY KEY, user TEXT NOT NULL, slot TEXT NOT NULL, origin TEXT NOT NULL,
    expires_ms INTEGER NOT NULL, used_ms INTEGER);
CREATE TABLE IF NOT EXISTS slot_access (
    slot TEXT NOT NULL, user TEXT NOT NULL, level TEXT NOT NULL CHECK (level IN ('member', 'viewer')),
    PRIMARY KEY (slot, user));
";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

fn verify_hash(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn row_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get("role")?;
    Ok(User {
        name: r.get("name")?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        email: r.get("email")?,
        display_name: r.get("display_name")?,
        disabled: r.get::<_, i64>("disabled")? != 0,
        must_change_password: r.get::<_, i64>("must_change_password")? != 0,
        has_password: r.get::<_, Option<String>>("password_hash")?.is_some(),
        created_ms: r.get::<_, i64>("created_ms")? as u64,
        role_pinned: r.get::<_, i64>("role_pinned")? != 0,
        groups: r
            .get::<_, Option<String>>("groups")?
            .map(|g| {
                g.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Schema changes after the first release, applied once each, in order, by
/// whichever process opens the database first (`PRAGMA user_version`).
const MIGRATIONS: &[&str] = &[
    // 1: administrator-set roles survive provider sign-ins; the ID token of
    //    an OIDC session is kept for RP-initiated logout (`id_token_hint`).
    "ALTER TABLE users ADD COLUMN role_pinned INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE sessions ADD COLUMN id_token TEXT;",
    // 2: the provider's groups as of the last sign-in (comma-separated), for
    //    the slot environment.
    "ALTER TABLE users ADD COLUMN groups TEXT;",
];

fn migrate(c: &mut Connection) -> rusqlite::Result<()> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for sql in MIGRATIONS.iter().skip(version) {
        tx.execute_batch(sql)?;
    }
    if version < MIGRATIONS.len() {
        tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
    }
    tx.commit()
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open = || -> rusqlite::Result<Connection> {
            let c = Connection::open(path)?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            let mut c = c;
            c.execute_batch(SCHEMA)?;
            migrate(&mut c)?;
            Ok(c)
        };
        let conn = open().map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// Open an existing database read-only, without creating or migrating
    /// anything (for readers beside the gateway, such as slotctl reading an
    /// account when a slot starts). `None` when there is no database.
    pub fn open_existing_read_only(path: &Path) -> Result<Option<Store>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.busy_timeout(std::time::Duration::from_secs(2))?;
                Ok(c)
            })
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Some(Store {
            conn: Mutex::new(conn),
        }))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- users ----

    /// On first start (no users at all): create `admin` with a random
    /// one-time password that must be changed at first sign-in. Returns the
    /// password so the caller can print it once.
    pub fn bootstrap_admin(&self) -> Result<Option<String>, StoreError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
        if n > 0 {
            return Ok(None);
        }
        let password = random_token(15);
        self.conn().execute(
            "INSERT INTO users (name, role, password_hash, must_change_password, created_ms) VALUES ('admin', 'admin', ?1, 1, ?2)",
            params![hash_password(&password), now_ms() as i64],
        )?;
        Ok(Some(password))
    }

    pub fn add_user(
        &self,
        name: &str,
        role: Role,
        password: Option<&str>,
        email: Option<&str>,
    ) -> Result<User, StoreError> {
        slotapi::UserName::new(name)
            .map_err(|e| StoreError::BadName(name.into(), e.to_string()))?;
        if password.is_some_and(|p| p.chars().count() < 10) {
            return Err(StoreError::WeakPassword);
        }
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO users (name, role, email, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, role.as_str(), email, password.map(hash_password), now_ms() as i64],
        )?;
        if n == 0 {
            return Err(StoreError::UserExists(name.into()));
        }
        self.user(name)?
            .ok_or_else(|| StoreError::NoSuchUser(name.into()))
    }

    /// Create or update a user who signed in through an identity provider.
    /// The provider's role mapping applies unless an administrator pinned
    /// the user's role.
    pub fn upsert_external(
        &self,
        name: &str,
        role: Role,
        email: Option<&str>,
        display: Option<&str>,
        groups: &[String],
    ) -> Result<User, StoreError> {
        slotapi::UserName::new(name)
            .map_err(|e| StoreError::BadName(name.into(), e.to_string()))?;
        // Commas separate the stored list; a group name with one is kept
        // with it replaced rather than split into two groups.
        let groups: Vec<String> = groups.iter().map(|g| g.replace(',', "_")).collect();
        self.conn().execute(
            "INSERT INTO users (name, role, email, display_name, groups, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(name) DO UPDATE SET role = CASE WHEN role_pinned = 0 THEN excluded.role ELSE role END,
                 email = excluded.email, display_name = excluded.display_name, groups = excluded.groups",
            params![name, role.as_str(), email, display, groups.join(","), now_ms() as i64],
        )?;
        self.user(name)?
            .ok_or_else(|| StoreError::NoSuchUser(name.into()))
    }

    pub fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM users WHERE name = ?1",
                params![name],
                row_user,
            )
            .optional()?)
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let c = self.conn();
        let mut st = c.prepare("SELECT * FROM users ORDER BY name")?;
        let rows = st.query_map([], row_user)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn update_user(
        &self,
        sql: &str,
        name: &str,
        value: &dyn rusqlite::ToSql,
    ) -> Result<(), StoreError> {
        let n = self.conn().execute(sql, params![name, value])?;
        if n == 0 {
            return Err(StoreError::NoSuchUser(name.into()));
        }
        Ok(())
    }

    pub fn set_password(
        &self,
        name: &str,
        password: &str,
        must_change: bool,
    ) -> Result<(), StoreError> {
        if password.chars().count() < 10 {
            return Err(StoreError::WeakPassword);
        }
        let n = self.conn().execute(
            "UPDATE users SET password_hash = ?2, must_change_password = ?3 WHERE name = ?1",
            params![name, hash_password(password), must_change as i64],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchUser(name.into()));
        }
        Ok(())
    }

    /// Disabling a user also revokes every session of theirs.
    pub fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), StoreError> {
        self.update_user(
            "UPDATE users SET disabled = ?2 WHERE name = ?1",
            name,
            &(disabled as i64),
        )?;
        if disabled {
            self.revoke_user_sessions(name)?;
        }
        Ok(())
    }

    /// An administrator's choice of role: pinned, so that provider
    /// sign-ins keep it (see [`Store::unpin_role`]).
    pub fn set_role(&self, name: &str, role: Role) -> Result<(), StoreError> {
        self.update_user(
            "UPDATE users SET role = ?2, role_pinned = 1 WHERE name = ?1",
            name,
            &role.as_str(),
        )
    }

    /// Let the identity provider's groups decide the role again from the
    /// user's next sign-in.
    pub fn unpin_role(&self, name: &str) -> Result<(), StoreError> {
        self.update_user(
            "UPDATE users SET role_pinned = ?2 WHERE name = ?1",
            name,
            &0i64,
        )
    }

    /// Check a local password. Unknown users cost the same hashing time as
    /// known ones, so timing does not reveal which names exist.
    pub fn check_password(&self, name: &str, password: &str) -> Result<User, LoginError> {
        let row: Option<(Option<String>, User)> = self
            .conn()
            .query_row("SELECT * FROM users WHERE name = ?1", params![name], |r| {
                Ok((r.get("password_hash")?, row_user(r)?))
            })
            .optional()
            .unwrap_or(None);
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        match row {
            Some((Some(hash), user)) => {
                if !verify_hash(password, &hash) {
                    Err(LoginError::WrongPassword)
                } else if user.disabled {
                    Err(LoginError::Disabled)
                } else {
                    Ok(user)
                }
            }
            _ => {
                let _ = verify_hash(
                    password,
                    DUMMY.get_or_init(|| hash_password("dummy-password")),
                );
                Err(LoginError::NoSuchUser)
            }
        }
    }

    // ---- sessions ----

    pub fn create_session(
        &self,
        user: &str,
        amr: &str,
        ttl_ms: u64,
        ip: Option<&str>,
        ua: Option<&str>,
    ) -> Result<String, StoreError> {
        let sid = random_token(18);
        let now = now_ms();
        self.conn().execute(
            "INSERT INTO sessions (sid, user, amr, created_ms, last_seen_ms, expires_ms, ip, user_agent) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7)",
            params![sid, user, amr, now as i64, (now + ttl_ms) as i64, ip, ua.map(|u| u.chars().take(200).collect::<String>())],
        )?;
        Ok(sid)
    }

    /// Keep the provider's ID token of an OIDC session, for the
    /// `id_token_hint` of RP-initiated logout.
    pub fn set_session_id_token(&self, sid: &str, id_token: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sessions SET id_token = ?2 WHERE sid = ?1",
            params![sid, id_token],
        )?;
        Ok(())
    }

    pub fn session_id_token(&self, sid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id_token FROM sessions WHERE sid = ?1",
                params![sid],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Extend a live session (sliding expiry). `false` if it is revoked,
    /// expired or unknown: the caller must not refresh the cookie.
    pub fn touch_session(&self, sid: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let now = now_ms();
        let n = self.conn().execute(
            "UPDATE sessions SET last_seen_ms = ?2, expires_ms = ?3 WHERE sid = ?1 AND revoked_ms IS NULL AND expires_ms > ?2",
            params![sid, now as i64, (now + ttl_ms) as i64],
        )?;
        Ok(n == 1)
    }

    pub fn session_live(&self, sid: &str) -> Result<bool, StoreError> {
        let now = now_ms() as i64;
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM sessions s JOIN users u ON u.name = s.user
                 WHERE s.sid = ?1 AND s.revoked_ms IS NULL AND s.expires_ms > ?2 AND u.disabled = 0",
                params![sid, now],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn revoke_session(&self, sid: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE sessions SET revoked_ms = ?2 WHERE sid = ?1 AND revoked_ms IS NULL",
            params![sid, now_ms() as i64],
        )? == 1)
    }

    /// "Log out everywhere".
    pub fn revoke_user_sessions(&self, user: &str) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE sessions SET revoked_ms = ?2 WHERE user = ?1 AND revoked_ms IS NULL",
            params![user, now_ms() as i64],
        )?)
    }

    /// Session ids revoked at or after `since_ms` (the proxy polls this to
    /// close open WebSockets within seconds).
    pub fn revoked_since(&self, since_ms: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT sid, revoked_ms FROM sessions WHERE revoked_ms >= ?1 ORDER BY revoked_ms",
        )?;
        let rows = st.query_map(params![since_ms as i64], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn sessions(&self, user: Option<&str>) -> Result<Vec<SessionRow>, StoreError> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT * FROM sessions WHERE (?1 IS NULL OR user = ?1) ORDER BY last_seen_ms DESC LIMIT 1000",
        )?;
        let rows = st.query_map(params![user], |r| {
            Ok(SessionRow {
                sid: r.get("sid")?,
                user: r.get("user")?,
                amr: r.get("amr")?,
                created_ms: r.get::<_, i64>("created_ms")? as u64,
                last_seen_ms: r.get::<_, i64>("last_seen_ms")? as u64,
                expires_ms: r.get::<_, i64>("expires_ms")? as u64,
                revoked: r.get::<_, Option<i64>>("revoked_ms")?.is_some(),
                ip: r.get("ip")?,
                user_agent: r.get("user_agent")?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- API tokens ----

    /// Create a token; the returned string (`sgt_<id>_<secret>`) is shown
    /// once and never stored.
    pub fn create_api_token(
        &self,
        user: &str,
        name: &str,
        scopes: &[String],
        ttl_ms: Option<u64>,
    ) -> Result<(ApiToken, String), StoreError> {
        if self.user(user)?.is_none() {
            return Err(StoreError::NoSuchUser(user.into()));
        }
        let id = random_token(9).replace(['-', '_'], "x");
        let secret = random_token(32);
        let now = now_ms();
        self.conn().execute(
            "INSERT INTO api_tokens (id, user, name, secret_sha256, scopes, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, user, name, sha256(&secret), scopes.join(" "), now as i64, ttl_ms.map(|t| (now + t) as i64)],
        )?;
        let token = ApiToken {
            id: id.clone(),
            user: user.into(),
            name: name.into(),
            scopes: scopes.to_vec(),
            created_ms: now,
            expires_ms: ttl_ms.map(|t| now + t),
            last_used_ms: None,
            revoked: false,
        };
        Ok((token, format!("sgt_{id}_{secret}")))
    }

    /// Resolve a presented bearer token to its owner and scopes.
    pub fn verify_api_token(&self, presented: &str) -> Option<(User, ApiToken)> {
        let rest = presented.strip_prefix("sgt_")?;
        let (id, secret) = rest.split_once('_')?;
        let now = now_ms() as i64;
        let c = self.conn();
        let row = c
            .query_row(
                "SELECT user, name, secret_sha256, scopes, created_ms, expires_ms, last_used_ms, revoked FROM api_tokens WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Option<i64>>(6)?,
                        r.get::<_, i64>(7)?,
                    ))
                },
            )
            .optional()
            .ok()??;
        let (user, name, hash, scopes, created, expires, last_used, revoked) = row;
        if !bool::from(hash.ct_eq(&sha256(secret)))
            || revoked != 0
            || expires.is_some_and(|e| e <= now)
        {
            return None;
        }
        let _ = c.execute(
            "UPDATE api_tokens SET last_used_ms = ?2 WHERE id = ?1",
            params![id, now],
        );
        let u = c
            .query_row(
                "SELECT * FROM users WHERE name = ?1 AND disabled = 0",
                params![user],
                row_user,
            )
            .optional()
            .ok()??;
        Some((
            u,
            ApiToken {
                id: id.into(),
                user,
                name,
                scopes: scopes.split_whitespace().map(str::to_string).collect(),
                created_ms: created as u64,
                expires_ms: expires.map(|e| e as u64),
                last_used_ms: last_used.map(|e| e as u64),
                revoked: false,
            },
        ))
    }

    pub fn revoke_api_token(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE api_tokens SET revoked = 1 WHERE id = ?1",
            params![id],
        )? == 1)
    }

    pub fn api_tokens(&self, user: Option<&str>) -> Result<Vec<ApiToken>, StoreError> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT * FROM api_tokens WHERE (?1 IS NULL OR user = ?1) ORDER BY created_ms",
        )?;
        let rows = st.query_map(params![user], |r| {
            Ok(ApiToken {
                id: r.get("id")?,
                user: r.get("user")?,
                name: r.get("name")?,
                scopes: r
                    .get::<_, String>("scopes")?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                created_ms: r.get::<_, i64>("created_ms")? as u64,
                expires_ms: r.get::<_, Option<i64>>("expires_ms")?.map(|e| e as u64),
                last_used_ms: r.get::<_, Option<i64>>("last_used_ms")?.map(|e| e as u64),
                revoked: r.get::<_, i64>("revoked")? != 0,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- embed tokens ----

    /// A single-use token (at most 60 s) bound to user, slot and the
    /// embedding origin.
    pub fn create_embed_token(
        &self,
        user: &str,
        slot: &str,
        origin: &str,
        ttl_ms: u64,
    ) -> Result<String, StoreError> {
        let secret = random_token(24);
        self.conn().execute(
            "INSERT INTO embed_tokens (secret_sha256, user, slot, origin, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sha256(&secret), user, slot, origin, (now_ms() + ttl_ms.min(60_000)) as i64],
        )?;
        // Old tokens are worthless; keep the table small.
        let _ = self.conn().execute(
            "DELETE FROM embed_tokens WHERE expires_ms < ?1",
            params![now_ms() as i64 - 3_600_000],
        );
        Ok(secret)
    }

    /// Use an embed token for `slot`: returns (user, origin) once; a replay,
    /// an expired token or one for another slot gets `None`.
    pub fn consume_embed_token(&self, secret: &str, slot: &str) -> Option<(String, String)> {
        let now = now_ms() as i64;
        let c = self.conn();
        let row: Option<(String, String)> = c
            .query_row(
                "UPDATE embed_tokens SET used_ms = ?3 WHERE secret_sha256 = ?1 AND slot = ?2 AND used_ms IS NULL AND expires_ms > ?3
                 RETURNING user, origin",
                params![sha256(secret), slot, now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ok()?;
        row
    }

    // ---- slot access lists ----

    pub fn grant(&self, slot: &str, user: &str, level: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO slot_access (slot, user, level) VALUES (?1, ?2, ?3) ON CONFLICT(slot, user) DO UPDATE SET level = excluded.level",
            params![slot, user, level],
        )?;
        Ok(())
    }

    pub fn revoke_access(&self, slot: &str, user: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM slot_access WHERE slot = ?1 AND user = ?2",
            params![slot, user],
        )? == 1)
    }

    /// Every grant (`(slot, user, level)`), or only `user`'s: which slots a
    /// person was given, for listing them.
    pub fn access_rows(
        &self,
        user: Option<&str>,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT slot, user, level FROM slot_access WHERE (?1 IS NULL OR user = ?1) ORDER BY slot, user",
        )?;
        let rows = st.query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The access list of a slot owned by `owner`.
    pub fn acl(&self, slot: &str, owner: &str) -> Result<SlotAcl, StoreError> {
        let c = self.conn();
        let mut st =
            c.prepare("SELECT user, level FROM slot_access WHERE slot = ?1 ORDER BY user")?;
        let mut acl = SlotAcl {
            owner: owner.into(),
            ..Default::default()
        };
        for row in st.query_map(params![slot], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })? {
            let (u, level) = row?;
            if level == "member" {
                acl.members.push(u);
            } else {
                acl.viewers.push(u);
            }
        }
        Ok(acl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("identity.db")).unwrap();
        (d, s)
    }

    #[test]
    fn a_database_from_before_the_migrations_is_upgraded_once() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("identity.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute(
                "INSERT INTO users (name, role, created_ms) VALUES ('old', 'user', 1)",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let old = s.user("old").unwrap().unwrap();
        assert!(!old.role_pinned);
        drop(s);
        // Opening again (the other process) does not re-apply anything.
        let s = Store::open(&path).unwrap();
        let v: usize = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len());
        let sid = s
            .create_session("old", "oidc:op", 60_000, None, None)
            .unwrap();
        assert_eq!(s.session_id_token(&sid).unwrap(), None);
        s.set_session_id_token(&sid, "eyJ.x.y").unwrap();
        assert_eq!(
            s.session_id_token(&sid).unwrap().as_deref(),
            Some("eyJ.x.y")
        );
    }

    #[test]
    fn read_only_opening_reads_and_never_writes() {
        let (d, s) = store();
        let path = d.path().join("identity.db");
        assert!(Store::open_existing_read_only(&d.path().join("none.db"))
            .unwrap()
            .is_none());
        assert!(!d.path().join("none.db").exists());
        s.add_user("ro", Role::User, None, Some("ro@x")).unwrap();
        let r = Store::open_existing_read_only(&path).unwrap().unwrap();
        assert_eq!(
            r.user("ro").unwrap().unwrap().email.as_deref(),
            Some("ro@x")
        );
        assert!(r.set_disabled("ro", true).is_err());
    }

    #[test]
    fn an_administrators_role_survives_provider_sign_ins() {
        let (_d, s) = store();
        s.upsert_external("pat", Role::User, None, None, &[])
            .unwrap();
        s.upsert_external("pat", Role::Admin, None, None, &[])
            .unwrap();
        assert_eq!(s.user("pat").unwrap().unwrap().role, Role::Admin);
        s.set_role("pat", Role::Viewer).unwrap();
        let u = s
            .upsert_external(
                "pat",
                Role::Admin,
                Some("p@x"),
                None,
                &["eng".into(), "a,b".into()],
            )
            .unwrap();
        assert_eq!(
            (u.role, u.role_pinned, u.email.as_deref()),
            (Role::Viewer, true, Some("p@x"))
        );
        assert_eq!(u.groups, ["eng", "a_b"]);
        s.unpin_role("pat").unwrap();
        let u = s
            .upsert_external("pat", Role::Admin, None, None, &[])
            .unwrap();
        assert_eq!((u.role, u.role_pinned), (Role::Admin, false));
        assert!(matches!(
            s.unpin_role("nobody"),
            Err(StoreError::NoSuchUser(_))
        ));
    }

    #[test]
    fn bootstrap_admin_once_and_must_change() {
        let (_d, s) = store();
        let pw = s
            .bootstrap_admin()
            .unwrap()
            .expect("first start creates admin");
        assert!(s.bootstrap_admin().unwrap().is_none());
        let admin = s.check_password("admin", &pw).unwrap();
        assert_eq!(admin.role, Role::Admin);
        assert!(admin.must_change_password);
        s.set_password("admin", "a-new-long-password", false)
            .unwrap();
        assert_eq!(
            s.check_password("admin", &pw),
            Err(LoginError::WrongPassword)
        );
        assert!(
            !s.check_password("admin", "a-new-long-password")
                .unwrap()
                .must_change_password
        );
    }

    #[test]
    fn login_refusals() {
        let (_d, s) = store();
        s.add_user("alice", Role::User, Some("correct horse battery"), None)
            .unwrap();
        assert_eq!(
            s.check_password("alice", "nope"),
            Err(LoginError::WrongPassword)
        );
        assert_eq!(
            s.check_password("bob", "whatever"),
            Err(LoginError::NoSuchUser)
        );
        assert_eq!(
            LoginError::NoSuchUser.to_string(),
            LoginError::WrongPassword.to_string()
        );
        let sid = s
            .create_session("alice", "local", 60_000, None, None)
            .unwrap();
        assert!(s.session_live(&sid).unwrap());
        s.set_disabled("alice", true).unwrap();
        assert_eq!(
            s.check_password("alice", "correct horse battery"),
            Err(LoginError::Disabled)
        );
        assert!(!s.session_live(&sid).unwrap(), "disabling revokes sessions");
        assert!(matches!(
            s.add_user("x", Role::User, Some("short"), None),
            Err(StoreError::WeakPassword)
        ));
        assert!(matches!(
            s.add_user("../x", Role::User, None, None),
            Err(StoreError::BadName(..))
        ));
        assert!(matches!(
            s.add_user("alice", Role::User, None, None),
            Err(StoreError::UserExists(_))
        ));
    }

    #[test]
    fn sessions_revoke_and_report() {
        let (_d, s) = store();
        s.add_user("alice", Role::User, None, None).unwrap();
        let a = s
            .create_session("alice", "local", 60_000, Some("127.0.0.1"), Some("test"))
            .unwrap();
        let b = s
            .create_session("alice", "oidc:kc", 60_000, None, None)
            .unwrap();
        let t0 = now_ms();
        assert!(s.touch_session(&a, 60_000).unwrap());
        assert!(s.revoke_session(&a).unwrap());
        assert!(!s.touch_session(&a, 60_000).unwrap());
        assert!(!s.session_live(&a).unwrap());
        assert!(s.session_live(&b).unwrap());
        assert_eq!(s.revoke_user_sessions("alice").unwrap(), 1);
        let revoked: Vec<String> = s
            .revoked_since(t0)
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(revoked, vec![a, b]);
    }

    #[test]
    fn api_tokens_hashed_scoped_revocable() {
        let (_d, s) = store();
        s.add_user("svc", Role::User, None, None).unwrap();
        let (info, token) = s
            .create_api_token("svc", "host app", &["embed".into()], None)
            .unwrap();
        let (u, t) = s.verify_api_token(&token).unwrap();
        assert_eq!(
            (u.name.as_str(), t.scopes.clone()),
            ("svc", vec!["embed".to_string()])
        );
        let stored: Vec<u8> = s
            .conn()
            .query_row("SELECT secret_sha256 FROM api_tokens", [], |r| r.get(0))
            .unwrap();
        assert!(!token
            .as_bytes()
            .windows(stored.len())
            .any(|w| w == stored.as_slice()));
        assert!(s
            .verify_api_token(&token.replace("sgt_", "sgt_x"))
            .is_none());
        let mut wrong = token.clone();
        wrong.pop();
        assert!(s.verify_api_token(&wrong).is_none());
        s.revoke_api_token(&info.id).unwrap();
        assert!(s.verify_api_token(&token).is_none());
        let (_, expired) = s.create_api_token("svc", "old", &[], Some(0)).unwrap();
        assert!(s.verify_api_token(&expired).is_none());
    }

    #[test]
    fn embed_tokens_are_single_use_and_bound_to_the_slot() {
        let (_d, s) = store();
        let t = s
            .create_embed_token("alice", "alice", "https://app.example", 60_000)
            .unwrap();
        assert!(s.consume_embed_token(&t, "bob").is_none(), "other slot");
        assert_eq!(
            s.consume_embed_token(&t, "alice"),
            Some(("alice".into(), "https://app.example".into()))
        );
        assert!(s.consume_embed_token(&t, "alice").is_none(), "replay");
        let expired = s
            .create_embed_token("alice", "alice", "https://app.example", 0)
            .unwrap();
        assert!(s.consume_embed_token(&expired, "alice").is_none());
    }

    #[test]
    fn slot_acl_round_trip() {
        let (_d, s) = store();
        s.grant("team1", "bob", "member").unwrap();
        s.grant("team1", "vic", "viewer").unwrap();
        let acl = s.acl("team1", "alice").unwrap();
        assert_eq!(acl.members, vec!["bob"]);
        assert_eq!(acl.viewers, vec!["vic"]);
        assert!(s.grant("team1", "eve", "god").is_err());
        s.grant("other", "vic", "viewer").unwrap();
        assert_eq!(
            s.access_rows(Some("vic")).unwrap(),
            vec![
                ("other".into(), "vic".into(), "viewer".into()),
                ("team1".into(), "vic".into(), "viewer".into())
            ]
        );
        assert_eq!(s.access_rows(None).unwrap().len(), 3);
        assert!(s.revoke_access("team1", "vic").unwrap());
    }
}
