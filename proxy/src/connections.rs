//! Limits on client connections themselves, before and between requests:
//! what keeps one address from holding the gateway's sockets without
//! making requests (slowloris) or from opening them faster than anyone
//! types.
//!
//! - New connections per address per window, checked at accept, before the
//!   TLS handshake ([`AcceptFilter`], a Pingora connection filter). Pingora
//!   gives a handshake at most 60 s, so this also bounds how many
//!   half-open handshakes one address can hold.
//! - Connections open at once per address, held from the end of the
//!   handshake until the connection closes ([`Guarded`], which wraps the
//!   gateway's Pingora app).
//! - A deadline for each request's headers ([`Guarded`] again): the first
//!   request's within `header_timeout` of the handshake, a kept-alive
//!   connection's next within Pingora's keep-alive idle time plus
//!   `header_timeout`. Pingora alone times out each header read, not the
//!   whole header, so a client sending a byte a minute would never be
//!   closed.
//! - A cap on each request's header bytes, `max_header_size` ([`Guarded`]
//!   reads through a [`Budgeted`] stream): Pingora buffers up to 1 MiB of
//!   headers per connection, which times the open-connection cap would let
//!   one address pin hundreds of MiB.
//!
//! An "address" is an IPv4 address or an IPv6 /64 ([`client_key`]).
//! Addresses in `trusted_proxies` are exempt from the per-address limits:
//! behind a load balancer every connection comes from it.
//!
//! The HTTP layers report where a connection is in its request cycle
//! through [`headers_read`] and [`request_done`]; they find the current
//! connection through a task-local, so code outside a [`Guarded`] task
//! calls them harmlessly.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ipnet::IpNet;
use pingora::apps::ServerApp;
use pingora::listeners::ConnectionFilter;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use pingora_limits::rate::Rate;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::config::Config;
use crate::limits::{client_key, Concurrent};
use crate::metrics::{Metrics, Refusal};

/// How long Pingora's HTTP/1 app waits for the next request on a
/// kept-alive connection (fixed in pingora-core).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// When the gateway stops, how long a connection accepted just before may
/// take to send its first request before Pingora's HTTP app is told to
/// drop the connections waiting for one.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);
/// ... and at least this long: a connection accepted just before the
/// listener closed is counted in `fresh` only once its task has started
/// and its TLS handshake is done, which Pingora does not report.
const FIRST_REQUEST_SETTLE: Duration = Duration::from_millis(100);

tokio::task_local! {
    static DEADLINE: Arc<HeaderDeadline>;
}

/// The current request's headers are in: no deadline until it is done.
pub fn headers_read() {
    let _ = DEADLINE.try_with(|d| d.clear());
}

/// The current request is done; the connection may wait for another.
pub fn request_done() {
    let _ = DEADLINE.try_with(|d| d.set_after(KEEPALIVE_IDLE + d.header_timeout));
}

/// Where a connection is in its request cycle: when the next request's
/// headers are due, in milliseconds since [`epoch`]
/// ([`HeaderDeadline::NONE`] while a request is in progress), and how many
/// header bytes have arrived for it.
struct HeaderDeadline {
    due_ms: AtomicU64,
    header_timeout: Duration,
    header_bytes: AtomicU64,
    max_header_bytes: u64,
    /// Told when `header_bytes` reaches `max_header_bytes`.
    too_large: Notify,
    /// Whether the connection's first request has arrived; until then it
    /// counts in `fresh` (its app's connections without a request yet).
    first_seen: AtomicBool,
    fresh: Arc<AtomicUsize>,
}

impl std::fmt::Debug for HeaderDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDeadline")
            .field("due_ms", &self.due_ms)
            .field("header_bytes", &self.header_bytes)
            .finish_non_exhaustive()
    }
}

impl HeaderDeadline {
    const NONE: u64 = u64::MAX;

    fn new(
        header_timeout: Duration,
        max_header_bytes: u64,
        fresh: Arc<AtomicUsize>,
    ) -> HeaderDeadline {
        fresh.fetch_add(1, Relaxed);
        HeaderDeadline {
            due_ms: AtomicU64::new(Self::NONE),
            header_timeout,
            header_bytes: AtomicU64::new(0),
            max_header_bytes,
            too_large: Notify::new(),
            first_seen: AtomicBool::new(false),
            fresh,
        }
    }

    fn clear(&self) {
        self.due_ms.store(Self::NONE, Relaxed);
        if !self.first_seen.load(Relaxed) {
            self.first_arrived();
        }
    }

    fn first_arrived(&self) {
        if !self.first_seen.swap(true, Relaxed) {
            self.fresh.fetch_sub(1, Relaxed);
        }
    }

    fn set_after(&self, d: Duration) {
        self.header_bytes.store(0, Relaxed);
        self.due_ms.store(millis(Instant::now() + d), Relaxed);
    }

    fn waiting_for_headers(&self) -> bool {
        self.due_ms.load(Relaxed) != Self::NONE
    }
}

impl Drop for HeaderDeadline {
    fn drop(&mut self) {
        self.first_arrived();
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_millis() as u64
}

/// The per-address limits and the header deadline, shared by the accept
/// filter and the app wrapper.
pub struct ConnectionLimits {
    per_window: u32,
    new_per_ip: Rate,
    max_open_per_ip: u32,
    open: Arc<Concurrent<IpAddr>>,
    header_timeout: Duration,
    max_header_size: u64,
    trusted: Vec<IpNet>,
    /// Which addresses were already warned about in this window.
    warned: Rate,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ConnectionLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimits")
            .field("per_window", &self.per_window)
            .field("max_open_per_ip", &self.max_open_per_ip)
            .field("header_timeout", &self.header_timeout)
            .finish_non_exhaustive()
    }
}

impl ConnectionLimits {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            per_window: cfg.limits.connections_per_ip,
            new_per_ip: Rate::new(cfg.limits.window),
            max_open_per_ip: cfg.limits.max_connections_per_ip,
            open: Concurrent::new(),
            header_timeout: cfg.header_timeout,
            max_header_size: cfg.max_header_size,
            trusted: cfg.trusted_proxies.clone(),
            warned: Rate::new(cfg.limits.window),
            metrics,
        })
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// Whether this is the first warning about `key` in the window: one
    /// line per address per window, not one per connection, so a flood does
    /// not flood the log too.
    fn first_warning(&self, key: IpAddr) -> bool {
        self.warned.observe(&key, 1) == 1
    }

    fn refuse(&self, key: IpAddr, why: Refusal) {
        self.metrics.connection_refused(why);
        if self.first_warning(key) {
            tracing::warn!(client_ip = %key, limit = why.as_str(), "closing connections from this address: over its per-address limit (more are counted in slotgate_connections_refused_total)");
        }
    }

    fn too_large(&self, peer: Option<IpAddr>) {
        self.metrics.headers_too_large.fetch_add(1, Relaxed);
        if peer.is_none_or(|ip| self.first_warning(client_key(ip))) {
            tracing::warn!(client_ip = ?peer, max_header_size = self.max_header_size, "closing a connection whose request headers are larger than max_header_size (more are counted in slotgate_headers_too_large_total)");
        }
    }

    /// Whether a new connection from `ip` is within the per-window count.
    fn admit_new(&self, ip: IpAddr) -> bool {
        if self.per_window == 0 || self.exempt(ip) {
            return true;
        }
        let key = client_key(ip);
        if self.new_per_ip.observe(&key, 1) > self.per_window as isize {
            self.refuse(key, Refusal::PerIpRate);
            return false;
        }
        true
    }
}

/// Checks the per-address count of new connections at accept.
#[derive(Debug)]
pub struct AcceptFilter(pub Arc<ConnectionLimits>);

#[async_trait]
impl ConnectionFilter for AcceptFilter {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        // Unix-socket listeners have no address to count.
        addr.is_none_or(|a| self.0.admit_new(a.ip()))
    }
}

/// A Pingora app behind the per-address cap on open connections and the
/// header deadline.
pub struct Guarded<A> {
    app: Arc<A>,
    limits: Arc<ConnectionLimits>,
    /// Connections whose first request has not arrived yet.
    fresh: Arc<AtomicUsize>,
}

impl<A> Guarded<A> {
    pub fn new(app: A, limits: Arc<ConnectionLimits>) -> Guarded<A> {
        Guarded {
            app: Arc::new(app),
            limits,
            fresh: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Counts a connection in `slotgate_connections_open` while it lives.
struct Open<'a>(&'a Metrics);

impl<'a> Open<'a> {
    fn new(m: &'a Metrics) -> Open<'a> {
        m.connections_open.fetch_add(1, Relaxed);
        Open(m)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = &self.limits;
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _held = match peer {
            Some(ip) if limits.max_open_per_ip > 0 && !limits.exempt(ip) => {
                let key = client_key(ip);
                match limits.open.acquire(key, limits.max_open_per_ip) {
                    Some(held) => Some(held),
                    None => {
                        limits.refuse(key, Refusal::PerIpOpen);
                        return None;
                    }
                }
            }
            _ => None,
        };
        let _open = Open::new(&limits.metrics);

        // HTTP/2 runs each stream in a task of its own, out of the
        // task-local's reach, and has its own idle timeout; the deadline
        // is for HTTP/1, the only protocol slotgate's listeners offer.
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }

        let deadline = Arc::new(HeaderDeadline::new(
            limits.header_timeout,
            limits.max_header_size,
            Arc::clone(&self.fresh),
        ));
        deadline.set_after(limits.header_timeout);
        let stream: Stream = Box::new(Budgeted {
            inner: stream,
            deadline: Arc::clone(&deadline),
        });
        // Pingora's HTTP/1 app serves every request of a kept-alive
        // connection inside this one call.
        let work = DEADLINE.scope(
            Arc::clone(&deadline),
            ServerApp::process_new(&self.app, stream, shutdown),
        );
        tokio::pin!(work);
        let mut check = limits.header_timeout;
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                () = deadline.too_large.notified() => {
                    limits.too_large(peer);
                    return None;
                }
                () = tokio::time::sleep(check) => {
                    let due = deadline.due_ms.load(Relaxed);
                    let now = millis(Instant::now());
                    if due == HeaderDeadline::NONE {
                        check = limits.header_timeout;
                    } else if now >= due {
                        limits.metrics.header_timeouts.fetch_add(1, Relaxed);
                        tracing::debug!(client_ip = ?peer, "closing a connection whose request headers did not arrive in time");
                        return None;
                    } else {
                        check = Duration::from_millis(due.saturating_sub(now));
                    }
                }
            }
        }
    }

    /// The listeners have closed (the gateway stops or hands over). Pingora's
    /// HTTP app then drops every connection waiting for a request, which
    /// would lose the request of a client whose connection was accepted a
    /// moment before and whose request is still on its way: those get
    /// [`FIRST_REQUEST_GRACE`] first. (Kept-alive connections waiting for
    /// a next request are idle; a client retries a request on a reused
    /// connection that closes.)
    async fn cleanup(&self) {
        let start = Instant::now();
        loop {
            let waited = start.elapsed();
            let settled = waited >= FIRST_REQUEST_SETTLE && self.fresh.load(Relaxed) == 0;
            if settled || waited >= FIRST_REQUEST_GRACE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.app.cleanup().await;
    }
}

/// A client stream that, while a request's headers are awaited, hands the
/// HTTP layer at most `max_header_size` bytes: at the limit it reads no
/// more and tells the connection's watchdog, which closes the connection.
/// After the headers everything passes straight through.
#[derive(Debug)]
struct Budgeted {
    inner: Stream,
    deadline: Arc<HeaderDeadline>,
}

impl AsyncRead for Budgeted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Every read of the connection passes here, the relay's included:
        // borrow, do not clone.
        let this = self.get_mut();
        let d = &this.deadline;
        if !d.waiting_for_headers() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let used = d.header_bytes.load(Relaxed);
        let left = d.max_header_bytes.saturating_sub(used);
        if left == 0 {
            d.too_large.notify_one();
            return Poll::Pending;
        }
        // Read no further than the budget; headers are small, so the copy
        // through a stack buffer costs little, and it ends with them.
        let mut scratch = [0u8; 4096];
        let take = buf.remaining().min(scratch.len()).min(left as usize);
        let mut part = ReadBuf::new(&mut scratch[..take]);
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        buf.put_slice(part.filled());
        d.header_bytes.fetch_add(n as u64, Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Budgeted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Budgeted {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Budgeted {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Budgeted {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Budgeted {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Budgeted {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Budgeted {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Budgeted {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(extra: &str) -> Arc<ConnectionLimits> {
        let text = format!(
            "[slotgate]\ntrusted_proxies = [\"10.0.0.0/8\"]\n[slotgate.rate_limits]\n{extra}"
        );
        let file = slotapi::config::ConfigFile::parse(
            std::path::Path::new("/srv/sg/slotgate.toml"),
            &text,
        )
        .unwrap();
        let cfg = Config::from_file(&file).unwrap();
        ConnectionLimits::new(&cfg, Arc::new(Metrics::default()))
    }

    #[test]
    fn new_connections_per_address_are_counted_per_window() {
        let l = limits("connections_per_ip = 3\n");
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.admit_new(a));
        }
        assert!(!l.admit_new(a));
        assert!(l.admit_new(b));
        assert!(l
            .metrics
            .render()
            .contains("slotgate_connections_refused_total{reason=\"per_ip_rate\"} 1"));
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let l = limits("connections_per_ip = 2\n");
        assert!(l.admit_new("2001:db8:7::1".parse().unwrap()));
        assert!(l.admit_new("2001:db8:7::2".parse().unwrap()));
        assert!(!l.admit_new("2001:db8:7::3".parse().unwrap()));
        assert!(l.admit_new("2001:db8:8::1".parse().unwrap()));
    }

    #[test]
    fn trusted_proxies_and_zero_are_not_limited() {
        let l = limits("connections_per_ip = 1\n");
        let lb: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..10 {
            assert!(l.admit_new(lb));
        }
        let off = limits("connections_per_ip = 0\n");
        for _ in 0..10 {
            assert!(off.admit_new("192.0.2.1".parse().unwrap()));
        }
    }

    #[tokio::test]
    async fn the_deadline_is_reachable_only_inside_its_task() {
        // Outside a guarded connection the reports are no-ops.
        headers_read();
        request_done();
        let fresh = Arc::new(AtomicUsize::new(0));
        let d = Arc::new(HeaderDeadline::new(
            Duration::from_secs(20),
            65536,
            Arc::clone(&fresh),
        ));
        assert_eq!(fresh.load(Relaxed), 1, "waiting for its first request");
        d.set_after(Duration::from_secs(20));
        let inside = Arc::clone(&d);
        DEADLINE
            .scope(inside, async {
                headers_read();
            })
            .await;
        assert_eq!(d.due_ms.load(Relaxed), HeaderDeadline::NONE);
        assert_eq!(fresh.load(Relaxed), 0, "its first request arrived");
        let before = millis(Instant::now());
        DEADLINE
            .scope(Arc::clone(&d), async {
                request_done();
            })
            .await;
        let due = d.due_ms.load(Relaxed);
        assert!(
            due >= before + 80_000 && due < before + 81_000,
            "{due} vs {before}"
        );
        DEADLINE
            .scope(Arc::clone(&d), async { headers_read() })
            .await;
        assert_eq!(fresh.load(Relaxed), 0, "counted once");
        // A connection that ends before its first request leaves the count.
        drop(HeaderDeadline::new(
            Duration::from_secs(1),
            4096,
            Arc::clone(&fresh),
        ));
        assert_eq!(fresh.load(Relaxed), 0);
    }
}
