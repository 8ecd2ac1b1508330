//! Anthropic API keys for slots, in one of three modes:
//!
//! - `shared`: one key for everybody;
//! - `per_user`: each user's own key (the shared key, when set, for users
//!   without one);
//! - `pool`: named keys; each user is assigned one (the least used) at their
//!   first slot start and keeps it; quotas bound what each user spends.
//!
//! Secrets are encrypted at rest with ChaCha20-Poly1305 under a random
//! 256-bit key in `<data_dir>/claude-keys.secret` (mode 0600), each with a
//! fresh nonce and its row (`kind/name`) as associated data, so a secret
//! cannot be moved to another row. They leave this module only towards a
//! slot's environment (`ANTHROPIC_API_KEY`); no API, page or log gets them,
//! and `Debug` on [`Secret`] prints nothing.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

pub const ENV: &str = "ANTHROPIC_API_KEY";
const KEY_FILE: &str = "claude-keys.secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Shared,
    PerUser,
    Pool,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "shared" => Mode::Shared,
            "per_user" | "per-user" => Mode::PerUser,
            "pool" => Mode::Pool,
            _ => return None,
        })
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::PerUser => "per_user",
            Mode::Pool => "pool",
        }
    }
}

/// A secret that never prints.
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Trim surrounding whitespace and check the shape: one line of
    /// printable ASCII, 20 to 512 characters.
    pub fn new(raw: &str) -> anyhow::Result<Secret> {
        let s = raw.trim();
        if s.len() < 20 || s.len() > 512 {
            bail!("an API key is 20 to 512 characters; got {}", s.len());
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("an API key is one line of printable characters without spaces");
        }
        Ok(Secret(s.to_string()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Open (or create, 0600) the encryption key file.
fn cipher(data_dir: &Path, create: bool) -> anyhow::Result<Option<ChaCha20Poly1305>> {
    let path = data_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by others (mode {mode:o}); chmod 600 it",
                    path.display()
                );
            }
            if bytes.len() != 32 {
                bail!("{} is not a 32-byte key", path.display());
            }
            Ok(Some(ChaCha20Poly1305::new(Key::from_slice(&bytes))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let mut key = [0u8; 32];
            rand::fill(&mut key);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(Some(ChaCha20Poly1305::new(Key::from_slice(&key))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

fn aad(kind: &str, name: &str) -> Vec<u8> {
    format!("slotgate-claude-key/{kind}/{name}").into_bytes()
}

pub fn mode(conn: &Connection) -> rusqlite::Result<Mode> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM claude_key_settings WHERE name = 'mode'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.as_deref().and_then(Mode::parse).unwrap_or(Mode::Shared))
}

pub fn set_mode(conn: &Connection, m: Mode) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO claude_key_settings (name, value) VALUES ('mode', ?1)
         ON CONFLICT(name) DO UPDATE SET value = ?1",
        [m.as_str()],
    )?;
    Ok(())
}

/// Store `secret` as `kind/name` (`shared/shared`, `user/<name>`, `pool/<name>`).
pub fn put(
    conn: &Connection,
    data_dir: &Path,
    kind: &str,
    name: &str,
    secret: &Secret,
) -> anyhow::Result<()> {
    let c = cipher(data_dir, true)?.expect("created");
    let mut nonce = [0u8; 12];
    rand::fill(&mut nonce);
    let sealed = c
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: secret.expose().as_bytes(),
                aad: &aad(kind, name),
            },
        )
        .map_err(|_| anyhow::anyhow!("encrypting the key failed"))?;
    conn.execute(
        "INSERT INTO claude_keys (kind, name, nonce, secret, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(kind, name) DO UPDATE SET nonce = ?3, secret = ?4, created_ms = ?5",
        params![
            kind,
            name,
            nonce.to_vec(),
            sealed,
            crate::clock::now_ms() as i64
        ],
    )?;
    Ok(())
}

pub fn remove(conn: &Connection, kind: &str, name: &str) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "DELETE FROM claude_keys WHERE kind = ?1 AND name = ?2",
        params![kind, name],
    )?;
    if kind == "pool" {
        conn.execute(
            "DELETE FROM claude_key_assignments WHERE key_name = ?1",
            [name],
        )?;
    }
    Ok(n > 0)
}

fn get(
    conn: &Connection,
    data_dir: &Path,
    kind: &str,
    name: &str,
) -> anyhow::Result<Option<Secret>> {
    let row: Option<(Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT nonce, secret FROM claude_keys WHERE kind = ?1 AND name = ?2",
            params![kind, name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((nonce, sealed)) = row else {
        return Ok(None);
    };
    let Some(c) = cipher(data_dir, false)? else {
        bail!(
            "{} is missing: stored API keys cannot be decrypted; set them again",
            key_file(data_dir).display()
        );
    };
    if nonce.len() != 12 {
        bail!("stored key {kind}/{name} is damaged");
    }
    let plain = c
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &sealed,
                aad: &aad(kind, name),
            },
        )
        .map_err(|_| {
            anyhow::anyhow!(
                "stored key {kind}/{name} does not decrypt with {}",
                key_file(data_dir).display()
            )
        })?;
    Ok(Some(Secret(
        String::from_utf8(plain).context("stored key is not text")?,
    )))
}

fn names(conn: &Connection, kind: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare("SELECT name FROM claude_keys WHERE kind = ?1 ORDER BY name")?;
    let v = st.query_map([kind], |r| r.get(0))?;
    v.collect()
}

/// `GET /v1/keys` and `slotctl keys list`: the configuration, never a value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub mode: Mode,
    pub shared: bool,
    pub users: Vec<String>,
    pub pool: usize,
    pub pool_keys: Vec<String>,
    /// user → pool key name.
    pub assignments: std::collections::BTreeMap<String, String>,
    pub encrypted_at_rest: bool,
}

pub fn overview(conn: &Connection, data_dir: &Path) -> rusqlite::Result<Overview> {
    let pool_keys = names(conn, "pool")?;
    let mut st = conn.prepare("SELECT user, key_name FROM claude_key_assignments ORDER BY user")?;
    let assignments = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Overview {
        mode: mode(conn)?,
        shared: !names(conn, "shared")?.is_empty(),
        users: names(conn, "user")?,
        pool: pool_keys.len(),
        pool_keys,
        assignments,
        encrypted_at_rest: key_file(data_dir).exists(),
    })
}

/// The key `user`'s slots get, by mode; assigns a pool key on first use.
pub fn for_user(conn: &Connection, data_dir: &Path, user: &str) -> anyhow::Result<Option<Secret>> {
    match mode(conn)? {
        Mode::Shared => get(conn, data_dir, "shared", "shared"),
        Mode::PerUser => match get(conn, data_dir, "user", user)? {
            Some(s) => Ok(Some(s)),
            None => get(conn, data_dir, "shared", "shared"),
        },
        Mode::Pool => {
            let assigned: Option<String> = conn
                .query_row(
                    "SELECT key_name FROM claude_key_assignments WHERE user = ?1",
                    [user],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(name) = assigned {
                if let Some(s) = get(conn, data_dir, "pool", &name)? {
                    return Ok(Some(s));
                }
            }
            // The pool key with the fewest users.
            let pick: Option<String> = conn
                .query_row(
                    "SELECT k.name FROM claude_keys k
                     LEFT JOIN claude_key_assignments a ON a.key_name = k.name
                     WHERE k.kind = 'pool' GROUP BY k.name ORDER BY COUNT(a.user), k.name LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(name) = pick else {
                return Ok(None);
            };
            conn.execute(
                "INSERT INTO claude_key_assignments (user, key_name, assigned_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user) DO UPDATE SET key_name = ?2, assigned_ms = ?3",
                params![user, name, crate::clock::now_ms() as i64],
            )?;
            get(conn, data_dir, "pool", &name)
        }
    }
}

/// Put the owner's key into a slot's environment (called by the supervisor
/// just before it spawns ttyd). A failure leaves the slot without a key and
/// says why, without the key, in the daemon's log.
pub fn inject(data_dir: &Path, owner: &str, env: &mut std::collections::BTreeMap<String, String>) {
    let found = super::db::Db::open_existing(&super::db::path(data_dir)).and_then(|db| match db {
        Some(db) => for_user(&db.lock(), data_dir, owner),
        None => Ok(None),
    });
    match found {
        Ok(Some(secret)) => {
            env.insert(ENV.into(), secret.0);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(owner, error = %e, "no Anthropic API key for this slot"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_at_rest_modes_and_pool_assignment() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::db::Db::open(&dir.path().join("activity.db")).unwrap();
        let conn = db.lock();
        let k =
            |c: char| Secret::new(&format!("sk-ant-api03-{}", c.to_string().repeat(30))).unwrap();
        put(&conn, dir.path(), "shared", "shared", &k('S')).unwrap();
        let mode = std::fs::metadata(key_file(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let raw = std::fs::read(dir.path().join("activity.db")).unwrap();
        assert!(
            !raw.windows(10).any(|w| w == b"SSSSSSSSSS"),
            "stored in the clear"
        );
        assert_eq!(
            for_user(&conn, dir.path(), "alice")
                .unwrap()
                .unwrap()
                .expose(),
            k('S').expose()
        );

        set_mode(&conn, Mode::PerUser).unwrap();
        put(&conn, dir.path(), "user", "alice", &k('A')).unwrap();
        assert_eq!(
            for_user(&conn, dir.path(), "alice")
                .unwrap()
                .unwrap()
                .expose(),
            k('A').expose()
        );
        assert_eq!(
            for_user(&conn, dir.path(), "bob")
                .unwrap()
                .unwrap()
                .expose(),
            k('S').expose()
        );

        set_mode(&conn, Mode::Pool).unwrap();
        assert!(for_user(&conn, dir.path(), "alice").unwrap().is_none());
        put(&conn, dir.path(), "pool", "p1", &k('1')).unwrap();
        put(&conn, dir.path(), "pool", "p2", &k('2')).unwrap();
        let a = for_user(&conn, dir.path(), "alice")
            .unwrap()
            .unwrap()
            .expose()
            .to_string();
        let b = for_user(&conn, dir.path(), "bob")
            .unwrap()
            .unwrap()
            .expose()
            .to_string();
        assert_ne!(a, b, "spread over the pool");
        assert_eq!(
            for_user(&conn, dir.path(), "alice")
                .unwrap()
                .unwrap()
                .expose(),
            a,
            "sticky"
        );
        let o = overview(&conn, dir.path()).unwrap();
        assert_eq!(o.pool, 2);
        assert_eq!(o.users, vec!["alice"]);
        assert!(!serde_json::to_string(&o).unwrap().contains("sk-ant"));

        // A row's ciphertext does not open under another row.
        conn.execute(
            "UPDATE claude_keys SET name = 'bob' WHERE kind = 'user' AND name = 'alice'",
            [],
        )
        .unwrap();
        assert!(get(&conn, dir.path(), "user", "bob").is_err());
        assert!(Secret::new("short").is_err());
        assert!(Secret::new(&format!("two words {}", "x".repeat(30))).is_err());
        assert_eq!(format!("{:?}", k('Z')), "Secret(…)");
    }
}
