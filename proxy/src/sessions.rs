//! Signed-in sessions at the gateway: the identity store (`identity.db`),
//! the session signing keys, issuing and refreshing session cookies, the
//! in-memory set of revoked session ids, and the registry of open
//! WebSockets per session so that revocation closes them. The hot path only
//! verifies a token and looks into the revoked set; SQLite is touched when a
//! session is created, refreshed (at most once per half token lifetime) or
//! revoked, always on the blocking pool. A background thread polls
//! `revoked_since` every second so revocations made elsewhere (`slotctl
//! user disable`, another gateway) take effect within seconds.

use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use identity::access::Role;
use identity::session::{self, Claims, Keys};
use identity::store::Store;

use crate::config::IdentityConfig;

/// `amr` of the short-lived token that only allows `POST /auth/password`.
pub const PASSWORD_CHANGE: &str = "password-change";
/// Cookie carrying that token.
pub const PASSWORD_COOKIE: &str = "slotgate_pwchange";
/// WebSocket close code sent when the session behind a terminal ends.
pub const CLOSE_REVOKED: u16 = 4001;
pub const CLOSE_REVOKED_REASON: &str = "session revoked";
/// Close code when the user's access to the slot was removed (unshared).
pub const CLOSE_ACCESS_REMOVED: u16 = 4003;
pub const CLOSE_ACCESS_REMOVED_REASON: &str = "access removed";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a presented session token is worth.
#[derive(Debug)]
pub enum Check {
    /// Valid; `true` when it is old enough to be refreshed.
    Valid(Claims, bool),
    /// Correctly signed but expired: valid again only if the server-side
    /// session is still live (see [`Sessions::refresh`]).
    Expired(Claims),
    Invalid,
}

struct OpenWs {
    id: u64,
    kill: Arc<AtomicBool>,
    access_removed: Arc<AtomicBool>,
    /// A duplicate of the upstream socket: shutting it down ends the relay
    /// even when neither side is sending.
    upstream: Option<UnixStream>,
    slot: String,
    user: String,
}

impl OpenWs {
    /// End the relay: the gateway sends the client a close frame.
    fn end(&self) {
        self.kill.store(true, Ordering::Release);
        if let Some(up) = &self.upstream {
            let _ = up.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A registered WebSocket; unregister it when the session ends.
#[derive(Debug, Clone)]
pub struct WsTicket {
    id: u64,
    sid: String,
    pub kill: Arc<AtomicBool>,
    /// Set with `kill` when the end is an access change, not a revocation.
    pub access_removed: Arc<AtomicBool>,
}

pub struct Sessions {
    pub store: Arc<Store>,
    keys: Keys,
    ttl: Duration,
    idle: Duration,
    secure: bool,
    /// sid → when it was revoked (ms).
    revoked: RwLock<HashMap<String, u64>>,
    ws: Mutex<HashMap<String, Vec<OpenWs>>>,
    next_ws: AtomicU64,
}

impl Sessions {
    /// Open the store and the keys; on the very first start create the
    /// bootstrap administrator and print its one-time password once.
    pub fn open(cfg: &IdentityConfig, secure: bool) -> anyhow::Result<Arc<Sessions>> {
        if let Some(dir) = cfg.db_path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let store = Store::open(&cfg.db_path)?;
        let keys = Keys::load_or_create(&cfg.keys_path)?;
        if let Some(password) = store.bootstrap_admin()? {
            // The one documented exception to "never log passwords": the
            // operator has no other way to learn it, and it must be changed
            // at the first sign-in.
            tracing::warn!(
                "first start: created the administrator account \"admin\" with the one-time password {password} \
                 — sign in at /auth/login and choose a new password; this password is not shown again"
            );
        }
        let s = Sessions {
            store: Arc::new(store),
            keys,
            ttl: cfg.session_ttl,
            idle: cfg.session_idle_timeout,
            secure,
            revoked: RwLock::new(HashMap::new()),
            ws: Mutex::new(HashMap::new()),
            next_ws: AtomicU64::new(1),
        };
        let since = now_ms().saturating_sub(s.keep_revoked_ms());
        for (sid, at) in s.store.revoked_since(since)? {
            s.revoked_write().insert(sid, at);
        }
        Ok(Arc::new(s))
    }

    /// A revoked sid must stay known as long as a token naming it can
    /// still be valid.
    fn keep_revoked_ms(&self) -> u64 {
        self.ttl.as_millis() as u64 + 60_000
    }

    fn revoked_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, u64>> {
        self.revoked.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_revoked(&self, sid: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(sid)
    }

    /// Judge a session token (hot path: no I/O).
    pub fn check(&self, token: &str) -> Check {
        match self.keys.verify(token) {
            Ok(c) if c.amr == PASSWORD_CHANGE || c.sid.is_empty() || self.is_revoked(&c.sid) => {
                Check::Invalid
            }
            Ok(c) => {
                let now = now_ms() / 1000;
                let refresh = c.exp.saturating_sub(now) < self.ttl.as_secs() / 2;
                Check::Valid(c, refresh)
            }
            Err(_) => match self.keys.verify_ignoring_expiry(token) {
                Ok(c)
                    if c.amr != PASSWORD_CHANGE
                        && !c.sid.is_empty()
                        && !self.is_revoked(&c.sid) =>
                {
                    Check::Expired(c)
                }
                _ => Check::Invalid,
            },
        }
    }

    /// Verify the password-change token.
    pub fn check_password_token(&self, token: &str) -> Option<Claims> {
        self.keys
            .verify(token)
            .ok()
            .filter(|c| c.amr == PASSWORD_CHANGE)
    }

    pub fn password_token(&self, user: &str, role: Role) -> String {
        self.keys
            .sign(&Claims::new(user, role, "", PASSWORD_CHANGE, 600))
    }

    pub fn secure(&self) -> bool {
        self.secure
    }

    fn cookie_for(&self, claims: &Claims) -> String {
        let token = self.keys.sign(claims);
        session::set_cookie(
            &token,
            self.idle.as_secs(),
            claims.amr == "embed",
            self.secure,
        )
    }

    /// Create a server-side session and its cookie (`Set-Cookie` value).
    pub async fn issue(
        &self,
        user: &str,
        role: Role,
        amr: &str,
        ip: Option<String>,
        ua: Option<String>,
    ) -> anyhow::Result<(Claims, String)> {
        let store = Arc::clone(&self.store);
        let idle = self.idle.as_millis() as u64;
        let (u, a) = (user.to_string(), amr.to_string());
        let sid = tokio::task::spawn_blocking(move || {
            store.create_session(&u, &a, idle, ip.as_deref(), ua.as_deref())
        })
        .await??;
        let claims = Claims::new(user, role, &sid, amr, self.ttl.as_secs());
        let cookie = self.cookie_for(&claims);
        Ok((claims, cookie))
    }

    /// Extend a live session and sign a fresh token with the user's
    /// current role; `None` when the session ended or the user is disabled.
    pub async fn refresh(&self, old: &Claims) -> Option<(Claims, String)> {
        let store = Arc::clone(&self.store);
        let idle = self.idle.as_millis() as u64;
        let (sid, user) = (old.sid.clone(), old.sub.clone());
        let current = tokio::task::spawn_blocking(move || {
            if !store.touch_session(&sid, idle).ok()? {
                return None;
            }
            store.user(&user).ok()?.filter(|u| !u.disabled)
        })
        .await
        .ok()??;
        let claims = Claims::new(
            &old.sub,
            current.role,
            &old.sid,
            &old.amr,
            self.ttl.as_secs(),
        );
        let cookie = self.cookie_for(&claims);
        Some((claims, cookie))
    }

    /// Revoke one session (logout); open WebSockets close at once.
    pub async fn revoke(&self, sid: &str) {
        let store = Arc::clone(&self.store);
        let s = sid.to_string();
        let _ = tokio::task::spawn_blocking(move || store.revoke_session(&s)).await;
        self.mark_revoked(sid, now_ms());
    }

    /// Revoke every session of `user` ("log out everywhere").
    pub async fn revoke_user(&self, user: &str) -> usize {
        let store = Arc::clone(&self.store);
        let u = user.to_string();
        let n = tokio::task::spawn_blocking(move || store.revoke_user_sessions(&u))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        self.poll_once(&mut now_ms().saturating_sub(5_000));
        n
    }

    fn mark_revoked(&self, sid: &str, at: u64) {
        let fresh = self.revoked_write().insert(sid.to_string(), at).is_none();
        if fresh {
            self.kill_ws(sid);
        }
    }

    fn kill_ws(&self, sid: &str) {
        let ws = self.ws.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = ws.get(sid) {
            for w in list {
                w.end();
            }
            tracing::info!(
                sessions = list.len(),
                "session revoked: closing its open terminals"
            );
        }
    }

    /// Track an open WebSocket of session `sid` (user `user` on `slot`).
    /// `upstream_fd` is the gateway's socket to the slot (duplicated so it
    /// can be shut down from the revocation thread).
    pub fn register_ws(
        &self,
        sid: &str,
        slot: &str,
        user: &str,
        upstream_fd: Option<RawFd>,
    ) -> WsTicket {
        let id = self.next_ws.fetch_add(1, Ordering::Relaxed);
        let kill = Arc::new(AtomicBool::new(false));
        let access_removed = Arc::new(AtomicBool::new(false));
        let upstream = upstream_fd.and_then(dup_fd).map(UnixStream::from);
        self.ws
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sid.to_string())
            .or_default()
            .push(OpenWs {
                id,
                kill: Arc::clone(&kill),
                access_removed: Arc::clone(&access_removed),
                upstream,
                slot: slot.to_string(),
                user: user.to_string(),
            });
        if self.is_revoked(sid) {
            self.kill_ws(sid);
        }
        WsTicket {
            id,
            sid: sid.to_string(),
            kill,
            access_removed,
        }
    }

    /// Close every open WebSocket `user` has on `slot` (their access to it
    /// was removed or narrowed); returns how many.
    pub fn close_access(&self, slot: &str, user: &str) -> usize {
        let ws = self.ws.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for w in ws.values().flatten() {
            if w.slot == slot && w.user == user {
                w.access_removed.store(true, Ordering::Release);
                w.end();
                n += 1;
            }
        }
        n
    }

    pub fn unregister_ws(&self, t: &WsTicket) {
        let mut ws = self.ws.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = ws.get_mut(&t.sid) {
            list.retain(|w| w.id != t.id);
            if list.is_empty() {
                ws.remove(&t.sid);
            }
        }
    }

    /// One poll of the store for revocations at or after `*since`.
    fn poll_once(&self, since: &mut u64) {
        match self.store.revoked_since(*since) {
            Ok(rows) => {
                for (sid, at) in rows {
                    *since = (*since).max(at);
                    self.mark_revoked(&sid, at);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read revoked sessions"),
        }
    }

    /// The revocation poller: every second, off the request path.
    pub fn start_poller(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("slotgate-revocations".into())
            .spawn(move || {
                let mut since = now_ms().saturating_sub(5_000);
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    this.poll_once(&mut since);
                    let keep = this.keep_revoked_ms();
                    let now = now_ms();
                    this.revoked_write()
                        .retain(|_, at| now.saturating_sub(*at) < keep);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the revocation poller");
        }
    }
}

/// Duplicate one of this process's own descriptors by number, through
/// `pidfd_getfd` (safe code: no raw-descriptor borrowing). `None` where the
/// kernel or a seccomp policy does not allow it; revocation then closes the
/// WebSocket at its next frame instead.
fn dup_fd(fd: RawFd) -> Option<OwnedFd> {
    static SELF_PIDFD: OnceLock<Option<OwnedFd>> = OnceLock::new();
    let pidfd = SELF_PIDFD
        .get_or_init(|| {
            rustix::process::pidfd_open(
                rustix::process::getpid(),
                rustix::process::PidfdFlags::empty(),
            )
            .ok()
        })
        .as_ref()?;
    rustix::process::pidfd_getfd(pidfd, fd, rustix::process::PidfdGetfdFlags::empty()).ok()
}

/// A server→client WebSocket close frame (unmasked).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut f = vec![0x88, (2 + reason.len()) as u8];
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_frame_layout() {
        let f = close_frame(CLOSE_REVOKED, CLOSE_REVOKED_REASON);
        assert_eq!(f[0], 0x88);
        assert_eq!(f[1] as usize, f.len() - 2);
        assert_eq!(u16::from_be_bytes([f[2], f[3]]), 4001);
        assert_eq!(&f[4..], b"session revoked");
    }

    #[test]
    fn own_descriptors_can_be_duplicated() {
        let (a, mut b) = UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        let Some(dup) = dup_fd(a.as_raw_fd()) else {
            // Not permitted here (seccomp); the gateway falls back.
            return;
        };
        UnixStream::from(dup)
            .shutdown(std::net::Shutdown::Both)
            .unwrap();
        use std::io::Read;
        let mut buf = [0u8; 1];
        assert_eq!(b.read(&mut buf).unwrap(), 0, "peer sees EOF");
    }
}
