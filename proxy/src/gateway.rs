//! The Pingora `ProxyHttp` implementation. It stays thin: each phase asks
//! one module for a decision (routing, identity, limits, slots, headers,
//! access log, metrics) and maps the answer to HTTP at the phase edge. All
//! per-request state lives in one [`Ctx`]. Bodies are never buffered:
//! proxied bytes only pass through the body filters to be counted.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use slotapi::{ActivityKind, SlotId};

use crate::access_log::{self, AccessLog, Entry};
use crate::config::{Config, MetricsAccess};
use crate::headers::{self, HeaderPolicy};
use crate::identity::{self, Authenticator, Authn, Decision, Identity, RequestFacts};
use crate::limits::{Category, Limited, Limits, WsGuard};
use crate::metrics::Metrics;
use crate::pages::{self, Reply};
use crate::routing::{self, Reject, Route};
use crate::slots::{SlotError, Slots};

/// Everything one request carries between phases.
pub struct Ctx {
    request_id: String,
    started: Instant,
    started_at: SystemTime,
    client_ip: Option<IpAddr>,
    route: &'static str,
    slot: Option<SlotId>,
    identity: Option<Identity>,
    /// Browser navigation (gets HTML pages rather than JSON errors).
    html: bool,
    /// Status of a response the gateway wrote itself.
    reply_status: Option<u16>,
    error: Option<&'static str>,
    /// Set when the slot's socket refused a connection: start it, then retry once.
    start_before_connect: bool,
    retried: bool,
    slot_error: Option<SlotError>,
    /// A response decided after routing (in `upstream_peer`), written by
    /// `fail_to_proxy`.
    pending: Option<Reply>,
    /// The failure is the gateway's own answer, not an error to log.
    answered: bool,
    ws_open: bool,
    ws_guard: Option<WsGuard>,
    ws_bytes_in: u64,
    ws_bytes_out: u64,
    last_active: Instant,
    span: tracing::Span,
}

pub struct Gateway {
    auth: Box<dyn Authenticator>,
    limits: Arc<Limits>,
    slots: Arc<Slots>,
    log: AccessLog,
    metrics: Arc<Metrics>,
    headers: HeaderPolicy,
    tls: bool,
    max_path_len: usize,
    metrics_access: MetricsAccess,
    connect_timeout: Duration,
    activity_interval: Duration,
}

impl Gateway {
    pub fn new(cfg: &Config, slots: Arc<Slots>, log: AccessLog, metrics: Arc<Metrics>) -> Gateway {
        Gateway {
            auth: identity::authenticator(cfg.auth),
            limits: Limits::new(cfg.limits.clone()),
            slots,
            log,
            metrics,
            headers: HeaderPolicy::new(cfg),
            tls: cfg.is_tls(),
            max_path_len: cfg.max_path_len,
            metrics_access: cfg.metrics,
            connect_timeout: cfg.connect_timeout,
            activity_interval: cfg.activity_interval,
        }
    }

    /// Write a complete gateway-made response.
    async fn reply(&self, session: &mut Session, ctx: &mut Ctx, reply: Reply) -> Result<bool> {
        let head = session.req_header().method == http::Method::HEAD;
        let mut resp = ResponseHeader::build(reply.status, Some(6 + reply.headers.len()))?;
        resp.insert_header("content-type", reply.content_type)?;
        resp.insert_header("content-length", reply.body.len().to_string())?;
        resp.insert_header("cache-control", "no-store")?;
        for (name, value) in &reply.headers {
            resp.insert_header(*name, value.as_str())?;
        }
        self.headers.downstream(&mut resp, &ctx.request_id)?;
        if reply.status >= 400 {
            session.set_keepalive(None);
        }
        ctx.reply_status = Some(reply.status);
        ctx.error = ctx.error.or(reply.error);
        session.write_response_header(Box::new(resp), head).await?;
        if !head {
            session.write_response_body(Some(reply.body), true).await?;
        }
        Ok(true)
    }

    fn limit(&self, ctx: &Ctx, cat: Category) -> Result<(), Limited> {
        let user = ctx
            .identity
            .as_ref()
            .and_then(|i| i.user.as_ref())
            .map(|u| u.as_str());
        self.limits.check(cat, ctx.client_ip, user).inspect_err(|l| {
            self.metrics.rate_limited(l.category, l.scope);
            tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, category = l.category, scope = l.scope, "rate limited");
        })
    }

    fn metrics_allowed(&self, ctx: &Ctx) -> bool {
        match self.metrics_access {
            MetricsAccess::Public => true,
            MetricsAccess::Loopback => ctx.client_ip.is_some_and(|ip| ip.is_loopback()),
            MetricsAccess::Off => false,
        }
    }

    /// Admission for requests the slot itself answers: WebSocket limits.
    /// Returns `Some(reply)` when the gateway answers instead.
    fn admit_slot_request(&self, session: &Session, ctx: &mut Ctx) -> Option<Reply> {
        if !session.is_upgrade_req() {
            return None;
        }
        if let Err(l) = self.limit(ctx, Category::WsConnect) {
            return Some(pages::rate_limited(&l, false));
        }
        let key = ctx
            .identity
            .as_ref()
            .map(|i| i.limit_key(ctx.client_ip))
            .unwrap_or_default();
        match self.limits.open_ws(key) {
            Ok(guard) => {
                ctx.ws_guard = Some(guard);
                None
            }
            Err(l) => {
                self.metrics.rate_limited(l.category, l.scope);
                Some(pages::rate_limited(&l, false))
            }
        }
    }

    /// The slot's socket refused the connection (usually: the slot is
    /// stopped and its socket is gone). Start it on demand. `Ok` means
    /// connect again; `Err` carries the response to send instead.
    async fn start_slot(&self, ctx: &mut Ctx, id: &SlotId) -> Result<(), Reply> {
        if let Err(l) = self.limit(ctx, Category::SlotStart) {
            return Err(pages::rate_limited(&l, ctx.html));
        }
        if ctx.html {
            // A person is waiting: answer at once with a page that follows
            // the start, rather than holding the navigation open.
            return match self.slots.info(id).await {
                Err(e) => Err(pages::slot_error(&e, true)),
                Ok(_) => {
                    self.slots.start(id);
                    tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, slot = %id, "slot not running; starting it for a browser");
                    Err(pages::starting(id.as_str()))
                }
            };
        }
        tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, slot = %id, "slot not answering; ensuring it runs before connecting");
        self.slots.wait_online(id).await.map_err(|e| {
            let reply = pages::slot_error(&e, false);
            ctx.slot_error = Some(e);
            reply
        })
    }

    fn socket(&self, ctx: &Ctx) -> Option<PathBuf> {
        ctx.slot.as_ref().map(|id| self.slots.socket(id))
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        let request_id = headers::new_request_id();
        // A debug-level span: at the default level a span per request costs
        // more than the rest of the gateway's per-request work, so info
        // events carry the request id themselves and `-v` adds the span.
        let span = tracing::debug_span!("request", id = %request_id, slot = tracing::field::Empty);
        Ctx {
            request_id,
            started: Instant::now(),
            started_at: SystemTime::now(),
            client_ip: None,
            route: "rejected",
            slot: None,
            identity: None,
            html: false,
            reply_status: None,
            error: None,
            start_before_connect: false,
            retried: false,
            slot_error: None,
            pending: None,
            answered: false,
            ws_open: false,
            ws_guard: None,
            ws_bytes_in: 0,
            ws_bytes_out: 0,
            last_active: Instant::now(),
            span,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        let method = req.method.as_str().to_string();
        ctx.html = routing::is_navigation(
            &method,
            header_str(session, "accept"),
            header_str(session, "sec-fetch-mode"),
            session.is_upgrade_req(),
        );

        let route = match routing::route(
            &method,
            session.req_header().raw_path(),
            self.max_path_len,
        ) {
            Ok(route) => route,
            Err(reject) => {
                let status = reject.status();
                let reply = match reject {
                    Reject::BadRequest(why) => {
                        tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, reason = why, "refused request target");
                        pages::error(status, "bad_path", "Bad request", why, ctx.html)
                    }
                    Reject::NotFound => pages::error(
                        status,
                        "not_found",
                        "Not found",
                        "Nothing lives at this address.",
                        ctx.html,
                    ),
                    Reject::Method => pages::error(
                        status,
                        "method",
                        "Method not allowed",
                        "Only GET and HEAD are served here.",
                        ctx.html,
                    )
                    .with_header("allow", "GET, HEAD"),
                };
                return self.reply(session, ctx, reply).await;
            }
        };
        ctx.route = route.label();
        if let Err(l) = self.limit(ctx, Category::Request) {
            return self
                .reply(session, ctx, pages::rate_limited(&l, ctx.html))
                .await;
        }
        match &route {
            Route::Health => {
                return self
                    .reply(session, ctx, pages::text(200, "ok\n".into(), "text/plain"))
                    .await
            }
            Route::Metrics if self.metrics_allowed(ctx) => {
                let body = self.metrics.render();
                return self
                    .reply(
                        session,
                        ctx,
                        pages::text(200, body, "text/plain; version=0.0.4"),
                    )
                    .await;
            }
            Route::Metrics => {
                let reply = pages::error(
                    404,
                    "not_found",
                    "Not found",
                    "Nothing lives at this address.",
                    ctx.html,
                );
                return self.reply(session, ctx, reply).await;
            }
            Route::Landing => return self.reply(session, ctx, pages::landing()).await,
            _ => {}
        }
        let Some(id) = route.slot().cloned() else {
            return Error::e_explain(ErrorType::InternalError, "slot route without a slot");
        };
        ctx.span.record("slot", id.as_str());
        ctx.slot = Some(id.clone());

        let facts = RequestFacts {
            header: session.req_header(),
            client: ctx.client_ip,
            tls: self.tls,
        };
        let identity = match self.auth.authenticate(&facts).await {
            Authn::Identified(identity) => identity,
            Authn::Refused { status, reason } => {
                let reply = pages::error(
                    status,
                    "unauthenticated",
                    "Sign in required",
                    reason,
                    ctx.html,
                );
                return self.reply(session, ctx, reply).await;
            }
        };
        let decision = identity::authorize(&identity, &id);
        ctx.identity = Some(identity);
        if decision == Decision::Deny {
            let reply = pages::error(
                403,
                "forbidden",
                "Not yours",
                "You may not open this terminal.",
                ctx.html,
            );
            return self.reply(session, ctx, reply).await;
        }

        match route {
            Route::SlotRedirect { location, .. } => {
                self.reply(session, ctx, pages::redirect(&location)).await
            }
            Route::SlotStatus { .. } => {
                if let Err(l) = self.limit(ctx, Category::Api) {
                    return self
                        .reply(session, ctx, pages::rate_limited(&l, false))
                        .await;
                }
                let (status, body) = self.slots.status(&id).await;
                self.reply(session, ctx, pages::json(status, &body)).await
            }
            _ => match self.admit_slot_request(session, ctx) {
                Some(reply) => self.reply(session, ctx, reply).await,
                None => Ok(false),
            },
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if ctx.start_before_connect {
            ctx.start_before_connect = false;
            if let Some(id) = ctx.slot.clone() {
                if let Err(reply) = self.start_slot(ctx, &id).await {
                    let status = reply.status;
                    ctx.pending = Some(reply);
                    ctx.answered = true;
                    return Error::e_explain(
                        ErrorType::HTTPStatus(status),
                        "answered by the gateway",
                    );
                }
            }
        }
        let Some(socket) = self.socket(ctx) else {
            return Error::e_explain(ErrorType::InternalError, "no slot for this request");
        };
        let path = socket
            .to_str()
            .ok_or_else(|| Error::explain(ErrorType::SocketError, "socket path is not UTF-8"))?;
        let mut peer = HttpPeer::new_uds(path, false, String::new())?;
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.metrics.upstream_connect_failures.fetch_add(1, Relaxed);
        if !ctx.retried {
            ctx.retried = true;
            ctx.start_before_connect = true;
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut pingora::http::RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        headers::upstream(upstream, &ctx.request_id, ctx.client_ip, self.tls)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.headers.downstream(resp, &ctx.request_id)?;
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            ctx.ws_open = true;
            ctx.last_active = Instant::now();
            self.metrics.ws_open.fetch_add(1, Relaxed);
            if let Some(id) = &ctx.slot {
                let user = ctx
                    .identity
                    .as_ref()
                    .and_then(|i| i.user.as_ref())
                    .map(|u| u.as_str());
                self.slots
                    .report(id, ActivityKind::Connect, &ctx.request_id, user);
            }
            tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, slot = ?ctx.slot, "websocket open");
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if !ctx.ws_open {
            return Ok(());
        }
        if let Some(b) = body {
            ctx.ws_bytes_in += b.len() as u64;
        }
        if ctx.last_active.elapsed() >= self.activity_interval {
            ctx.last_active = Instant::now();
            if let Some(id) = &ctx.slot {
                let user = ctx
                    .identity
                    .as_ref()
                    .and_then(|i| i.user.as_ref())
                    .map(|u| u.as_str());
                self.slots
                    .report(id, ActivityKind::Active, &ctx.request_id, user);
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if ctx.ws_open {
            if let Some(b) = body {
                ctx.ws_bytes_out += b.len() as u64;
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let reply = match (ctx.pending.take(), &ctx.slot_error) {
                (Some(reply), _) => reply,
                (None, Some(se)) => pages::slot_error(se, ctx.html),
                (None, None) if code == 502 => pages::error(
                    502,
                    "slot_unreachable",
                    "The terminal is not answering",
                    "The terminal did not answer. Reload the page in a moment; if it keeps happening, tell an administrator.",
                    ctx.html,
                ),
                (None, None) => pages::error(code, "gateway_error", "Something went wrong", "The gateway could not complete this request.", ctx.html),
            };
            ctx.error = Some(reply.error.unwrap_or("gateway_error"));
            if let Err(write_err) = self.reply(session, ctx, reply).await {
                tracing::debug!(parent: &ctx.span, request_id = %ctx.request_id, error = %write_err, "could not send the error page");
            }
        } else if ctx.error.is_none() {
            ctx.error = Some(if code == 0 {
                "client_gone"
            } else {
                "proxy_error"
            });
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// What Pingora's own error lines say about a request: never the raw
    /// query, which may carry secrets.
    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        let req = session.req_header();
        let raw = String::from_utf8_lossy(req.raw_path());
        let path = match raw.split_once('?') {
            Some((p, q)) => format!("{p}?{}", access_log::redact_query(q)),
            None => raw.into_owned(),
        };
        format!(
            "{} {} request_id={}",
            req.method,
            truncate(&path, 1024),
            ctx.request_id
        )
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        ctx.answered
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &Ctx,
        _error: &Error,
        _context: ProxyWarnLogContext,
    ) -> bool {
        // The one retry after a refused connection is the lazy start.
        ctx.start_before_connect
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let took = ctx.started.elapsed();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.reply_status)
            .unwrap_or(0);
        let served_by = if ctx.reply_status.is_none() && session.response_written().is_some() {
            "slot"
        } else {
            "gateway"
        };
        if e.is_some() && ctx.error.is_none() && !ctx.answered {
            ctx.error = Some("proxy_error");
        }
        let user = ctx
            .identity
            .as_ref()
            .and_then(|i| i.user.as_ref())
            .map(|u| u.as_str());
        let (kind, bytes_in, bytes_out) = if ctx.ws_open {
            self.metrics.ws_open.fetch_sub(1, Relaxed);
            self.metrics.ws_sessions.fetch_add(1, Relaxed);
            self.metrics.ws_closed(ctx.ws_bytes_in, ctx.ws_bytes_out);
            if let Some(id) = &ctx.slot {
                self.slots
                    .report(id, ActivityKind::Disconnect, &ctx.request_id, user);
            }
            tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, slot = ?ctx.slot, secs = took.as_secs(), "websocket closed");
            ("ws", ctx.ws_bytes_in, ctx.ws_bytes_out)
        } else {
            (
                "http",
                session.body_bytes_read() as u64,
                session.body_bytes_sent() as u64,
            )
        };
        ctx.ws_guard.take();
        self.metrics.request(ctx.route, status, took, ctx.ws_open);

        let req = session.req_header();
        let raw = String::from_utf8_lossy(req.raw_path());
        let (path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(access_log::redact_query(q))),
            None => (raw.as_ref(), None),
        };
        let user_agent = req
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|s| &s[..s.len().min(256)]);
        self.log.write(&Entry {
            v: access_log::FORMAT_VERSION,
            ts: access_log::timestamp(SystemTime::now()),
            start: access_log::timestamp(ctx.started_at),
            kind,
            request_id: &ctx.request_id,
            client_ip: ctx.client_ip.map(|ip| ip.to_string()),
            user,
            method: req.method.as_str(),
            path: truncate(path, 1024),
            query,
            route: ctx.route,
            slot: ctx.slot.as_ref().map(|s| s.as_str()),
            status,
            bytes_in,
            bytes_out,
            duration_ms: (took.as_secs_f64() * 1e6).round() / 1e3,
            tls: self.tls,
            served_by,
            user_agent,
            error: ctx.error,
        });
    }
}
