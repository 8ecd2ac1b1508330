//! Rate limits and the cap on concurrent WebSocket sessions. Counting uses
//! pingora-limits' `Rate` (a count-min sketch per fixed window: constant
//! memory however many clients there are, and estimates only ever err
//! upwards). Each category has one window counter keyed by client IP and one
//! keyed by user. Caps on things open at once (WebSocket sessions per user,
//! connections per client address) count with [`Concurrent`], whose
//! [`Held`] guard gives its place back when dropped. This module only counts
//! and decides; the gateway turns a [`Limited`] into a 429 with
//! `Retry-After`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora_limits::rate::Rate;

use crate::config::LimitsConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// Every request (off by default).
    Request,
    /// Sign-in attempts (used by the identity modes that have a login).
    Login,
    /// The gateway's own JSON endpoints.
    Api,
    /// WebSocket upgrades to a slot.
    WsConnect,
    /// Starting a stopped slot on demand.
    SlotStart,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Request,
        Category::Login,
        Category::Api,
        Category::WsConnect,
        Category::SlotStart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Request => "request",
            Category::Login => "login",
            Category::Api => "api",
            Category::WsConnect => "ws_connect",
            Category::SlotStart => "slot_start",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What per-address limits count a client address as: an IPv4 address
/// itself (IPv4-mapped IPv6 included), an IPv6 address's /64. One host or
/// one LAN gets a /64, so counting /128s would give a single machine 2^64
/// separate budgets.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A refused event: which limit, for whom, and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub category: &'static str,
    /// `ip`, `user` or `concurrent`.
    pub scope: &'static str,
    pub retry_after_secs: u64,
}

pub struct Limits {
    cfg: LimitsConfig,
    per_ip: Vec<Rate>,
    per_user: Vec<Rate>,
    open_ws: Arc<Concurrent<String>>,
}

impl Limits {
    pub fn new(cfg: LimitsConfig) -> Arc<Limits> {
        let rates = || {
            Category::ALL
                .iter()
                .map(|_| Rate::new(cfg.window))
                .collect()
        };
        Arc::new(Limits {
            per_ip: rates(),
            per_user: rates(),
            cfg,
            open_ws: Concurrent::new(),
        })
    }

    fn caps(&self, cat: Category) -> (u32, u32) {
        let c = &self.cfg;
        match cat {
            Category::Request => (c.requests_per_ip, 0),
            Category::Login => (c.login_per_ip, c.login_per_user),
            Category::Api => (c.api_per_ip, c.api_per_user),
            Category::WsConnect => (c.ws_connect_per_ip, c.ws_connect_per_user),
            Category::SlotStart => (c.slot_start_per_ip, c.slot_start_per_user),
        }
    }

    /// Count one event of `cat` for this client and user (`None` for
    /// anonymous requests, which the per-IP limit already covers).
    pub fn check(
        &self,
        cat: Category,
        ip: Option<IpAddr>,
        user: Option<&str>,
    ) -> Result<(), Limited> {
        let (ip_cap, user_cap) = self.caps(cat);
        if let (Some(ip), true) = (ip, ip_cap > 0) {
            let ip = client_key(ip);
            let rate = &self.per_ip[cat.index()];
            if rate.observe(&ip, 1) > ip_cap as isize {
                return Err(self.limited(cat, "ip", rate, &ip));
            }
        }
        if let (Some(user), true) = (user, user_cap > 0) {
            let rate = &self.per_user[cat.index()];
            if rate.observe(&user, 1) > user_cap as isize {
                return Err(self.limited(cat, "user", rate, &user));
            }
        }
        Ok(())
    }

    fn limited<K: std::hash::Hash>(
        &self,
        cat: Category,
        scope: &'static str,
        rate: &Rate,
        key: &K,
    ) -> Limited {
        let elapsed = rate.rate_with(key, |c| c.current_interval_fraction);
        Limited {
            category: cat.as_str(),
            scope,
            retry_after_secs: retry_after(self.cfg.window, elapsed),
        }
    }

    /// Reserve one concurrent WebSocket for `key` (a user, or a client
    /// address when anonymous). The place is given back when the guard drops.
    pub fn open_ws(&self, key: String) -> Result<WsGuard, Limited> {
        self.open_ws
            .acquire(key, self.cfg.max_ws_per_user)
            .ok_or(Limited {
                category: Category::WsConnect.as_str(),
                scope: "concurrent",
                retry_after_secs: 5,
            })
    }
}

/// Seconds until the current window ends (at least 1), from the fraction of
/// the window already elapsed.
fn retry_after(window: Duration, elapsed_fraction: f64) -> u64 {
    let left = window.as_secs_f64() * (1.0 - elapsed_fraction.clamp(0.0, 1.0));
    (left.ceil() as u64).max(1)
}

/// One reserved concurrent WebSocket.
pub type WsGuard = Held<String>;

/// How many of something each key has open at once, for caps on that
/// number. Keys with nothing open take no memory.
pub struct Concurrent<K: Hash + Eq> {
    open: Mutex<HashMap<K, u32>>,
}

impl<K: Hash + Eq + Clone> Concurrent<K> {
    pub fn new() -> Arc<Concurrent<K>> {
        Arc::new(Concurrent {
            open: Mutex::new(HashMap::new()),
        })
    }

    /// One more open for `key`, unless it already has `cap` (0: no cap).
    pub fn acquire(self: &Arc<Self>, key: K, cap: u32) -> Option<Held<K>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if cap > 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(Held {
            from: Arc::clone(self),
            key,
        })
    }

    /// Everything open, over all keys.
    #[cfg(test)]
    pub fn total(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.values().map(|n| *n as usize).sum()
    }
}

/// One place taken in a [`Concurrent`]; dropping it gives the place back.
pub struct Held<K: Hash + Eq> {
    from: Arc<Concurrent<K>>,
    key: K,
}

impl<K: Hash + Eq + std::fmt::Debug> std::fmt::Debug for Held<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("key", &self.key).finish()
    }
}

impl<K: Hash + Eq> Drop for Held<K> {
    fn drop(&mut self) {
        let mut open = self.from.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LimitsConfig {
        LimitsConfig {
            window: Duration::from_secs(60),
            ws_connect_per_ip: 3,
            ws_connect_per_user: 2,
            max_ws_per_user: 2,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn per_ip_limit_refuses_after_cap() {
        let l = Limits::new(cfg());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(Category::WsConnect, Some(ip), None).is_ok());
        }
        let e = l.check(Category::WsConnect, Some(ip), None).unwrap_err();
        assert_eq!((e.category, e.scope), ("ws_connect", "ip"));
        assert!((1..=60).contains(&e.retry_after_secs), "{e:?}");
        assert!(l.check(Category::WsConnect, Some(other), None).is_ok());
        // Other categories count separately.
        assert!(l.check(Category::Api, Some(ip), None).is_ok());
    }

    #[test]
    fn per_user_limit_spans_addresses() {
        let l = Limits::new(cfg());
        for i in 0..2 {
            let ip: IpAddr = format!("192.0.2.{i}").parse().unwrap();
            assert!(l
                .check(Category::WsConnect, Some(ip), Some("u:dave"))
                .is_ok());
        }
        let e = l
            .check(
                Category::WsConnect,
                Some("192.0.2.9".parse().unwrap()),
                Some("u:dave"),
            )
            .unwrap_err();
        assert_eq!(e.scope, "user");
    }

    #[test]
    fn zero_switches_off() {
        let l = Limits::new(cfg());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..1000 {
            assert!(l.check(Category::Request, Some(ip), None).is_ok());
        }
    }

    #[test]
    fn concurrent_ws_cap_releases_on_drop() {
        let l = Limits::new(cfg());
        let a = l.open_ws("u:erin".into()).unwrap();
        let _b = l.open_ws("u:erin".into()).unwrap();
        assert_eq!(l.open_ws("u:erin".into()).unwrap_err().scope, "concurrent");
        assert!(l.open_ws("u:frank".into()).is_ok());
        drop(a);
        assert!(l.open_ws("u:erin".into()).is_ok());
        assert_eq!(l.open_ws.total(), 1);
    }

    #[test]
    fn concurrent_counts_per_key_and_forgets_empty_keys() {
        let c = Concurrent::<IpAddr>::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| c.acquire(a, 3).unwrap()).collect();
        assert!(c.acquire(a, 3).is_none());
        assert!(c.acquire(b, 3).is_some());
        // 0 means no cap.
        let more: Vec<_> = (0..10).map(|_| c.acquire(a, 0).unwrap()).collect();
        assert_eq!(c.total(), 13);
        drop(held);
        drop(more);
        assert_eq!(c.total(), 0);
        assert!(c.open.lock().unwrap().is_empty());
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));

        let l = Limits::new(cfg());
        for i in 1..=3 {
            let ip: IpAddr = format!("2001:db8::{i}").parse().unwrap();
            assert!(l.check(Category::WsConnect, Some(ip), None).is_ok());
        }
        let same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert!(l.check(Category::WsConnect, Some(same_64), None).is_err());
        let other_64: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert!(l.check(Category::WsConnect, Some(other_64), None).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        let w = Duration::from_secs(60);
        assert_eq!(retry_after(w, 0.0), 60);
        assert_eq!(retry_after(w, 0.5), 30);
        assert_eq!(retry_after(w, 0.999), 1);
        assert_eq!(retry_after(w, 1.5), 1);
    }
}
