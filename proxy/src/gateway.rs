//! The Pingora `ProxyHttp` implementation. It stays thin: each phase asks
//! one module for a decision (routing, identity, limits, slots, headers,
//! access log, metrics) and maps the answer to HTTP at the phase edge. All
//! per-request state lives in one [`Ctx`]. Bodies are never buffered.
//! WebSocket upgrades leave Pingora's proxy loop for [`upgrade`]'s relay;
//! what their frames mean (revocation, the viewer filter, counts, the
//! recording, activity) is [`WsFrames`], here.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Acquire;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::{Error, ErrorSource, ErrorType, OrErr, Result};
use slotapi::{ActivityKind, SlotId};

use crate::access_log::{self, AccessLog, Entry};
use crate::api::{Answer, Api, ApiRequest};
use crate::config::{self, Config, MetricsAccess};
use crate::headers::{self, HeaderPolicy};
use crate::identity::{self, Auth, Authn, Decision, Identity, RequestFacts};
use crate::lifecycle::{self, Lifecycle};
use crate::limits::{Category, Limited, Limits, WsGuard};
use crate::metrics::Metrics;
use crate::pages::{self, Reply};
use crate::popup;
use crate::portal::Portal;
use crate::recording::{Recorder, Recording};
use crate::routing::{self, Reject, Route, SlotRequest};
use crate::sessions::{self, WsTicket};
use crate::signin::{self, AuthRequest, SignIn};
use crate::slot_acl::SlotAcls;
use crate::slots::{SlotError, Slots};
use crate::upgrade::{self, Verdict};
use ::identity::frames::{Direction, FrameCounter, ViewerFilter};
use http_body_util::BodyExt;
use std::os::unix::io::AsRawFd;
use tokio::net::UnixStream;

/// Everything one request carries between phases.
pub struct Ctx {
    request_id: String,
    started: Instant,
    started_at: SystemTime,
    /// The client: the TCP peer, or for a peer in `trusted_proxies` the
    /// address its `X-Forwarded-For` names.
    client_ip: Option<IpAddr>,
    /// `client_ip` as text, formatted once: the slot's `X-Forwarded-For`
    /// and the access log both carry it.
    client_ip_text: Option<String>,
    /// The TCP peer.
    peer_ip: Option<IpAddr>,
    /// Whether the client reached us over HTTPS (our listener, or a trusted
    /// proxy's `X-Forwarded-Proto`).
    secure: bool,
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
    /// When the gateway began connecting to the slot (after any start),
    /// and how long until the slot's response head arrived: the access
    /// log's `upstream_ms`.
    upstream_from: Option<Instant>,
    upstream_took: Option<Duration>,
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
    /// Complete frames from the client and to it (boxed: a WebSocket
    /// session is rare among requests).
    ws_frames: Option<Box<[FrameCounter; 2]>>,
    last_active: Instant,
    /// A refreshed session cookie to send with the response.
    set_cookie: Option<String>,
    /// How the identity may use the slot, for the access log (`admin`
    /// marks an audited administrator access).
    access: Option<&'static str>,
    /// Read-only viewer: client→slot frames pass through this filter.
    viewer: Option<ViewerFilter>,
    /// The open WebSocket's registration (revocation closes it).
    ws_ticket: Option<WsTicket>,
    close_sent: bool,
    /// The account a sign-in attempt was for (the access log's `login`).
    login: Option<String>,
    /// The session's recording (WebSocket sessions to a slot).
    recording: Option<Recording>,
    span: tracing::Span,
}

impl Ctx {
    /// The slot's response head has arrived.
    fn slot_answered(&mut self) {
        if self.upstream_took.is_none() {
            self.upstream_took = self.upstream_from.map(|t| t.elapsed());
        }
    }

    /// The signed-in user's name, if any.
    fn user(&self) -> Option<&str> {
        user_name(&self.identity)
    }
}

/// The user an identity names (borrowing only the identity, for code that
/// also changes other fields of the [`Ctx`]).
fn user_name(identity: &Option<Identity>) -> Option<&str> {
    identity
        .as_ref()
        .and_then(|i| i.user.as_ref())
        .map(|u| u.as_str())
}

/// Header names parsed once, not per lookup.
const SEC_FETCH_MODE: http::HeaderName = http::HeaderName::from_static("sec-fetch-mode");

/// Largest request body the gateway reads itself (sign-in forms, API).
const MAX_FORM: usize = 16 * 1024;

pub struct Gateway {
    auth: Option<Arc<Auth>>,
    signin: Option<SignIn>,
    acls: Option<Arc<SlotAcls>>,
    api: Api,
    /// The web portal (`[slotgate.portal] dir`), when configured and built.
    portal: Option<Portal>,
    /// Origins listed in `frame_ancestors` (allowed WebSocket origins).
    frame_origins: Vec<String>,
    /// How the request a slot receives is rewritten (identity headers a
    /// client may not pass on among what is dropped).
    upstream_headers: headers::UpstreamPolicy,
    limits: Arc<Limits>,
    slots: Arc<Slots>,
    /// Claude quotas checked before a new terminal session starts.
    quotas: crate::quota::Quotas,
    log: AccessLog,
    metrics: Arc<Metrics>,
    headers: HeaderPolicy,
    tls: bool,
    /// Reverse proxies whose `X-Forwarded-For`/`-Proto` are believed.
    trusted_proxies: Vec<ipnet::IpNet>,
    /// See [`Config::loopback_trusted`].
    loopback_trusted: bool,
    max_path_len: usize,
    metrics_access: MetricsAccess,
    connect_timeout: Duration,
    activity_interval: Duration,
    recorder: Option<Recorder>,
    /// Stop and reload: the open terminals a grace's end closes.
    lifecycle: Arc<Lifecycle>,
}

impl Gateway {
    pub fn new(
        cfg: &Config,
        auth: Option<Arc<Auth>>,
        slots: Arc<Slots>,
        log: AccessLog,
        metrics: Arc<Metrics>,
        lifecycle: Arc<Lifecycle>,
    ) -> anyhow::Result<Gateway> {
        let limits = Limits::new(cfg.limits.clone());
        let signin = match &auth {
            Some(a) => Some(SignIn::new(cfg, Arc::clone(a), Arc::clone(&limits))?),
            None => None,
        };
        let acls = auth.as_ref().map(|a| {
            Arc::new(SlotAcls::new(
                &cfg.identity,
                Arc::clone(&slots),
                Arc::clone(&a.sessions.store),
            ))
        });
        let frame_origins: Vec<String> = cfg
            .frame_ancestors
            .iter()
            .filter(|s| s.starts_with("https://") || s.starts_with("http://"))
            .cloned()
            .collect();
        let api = Api::new(cfg, auth.clone(), acls.clone(), frame_origins.clone());
        let mut strip_headers: Vec<String> = [
            "x-forwarded-user",
            "x-forwarded-email",
            "x-forwarded-groups",
            "x-forwarded-preferred-username",
            "x-auth-request-user",
            "x-auth-request-email",
            "x-auth-request-groups",
            "remote-user",
            "x-remote-user",
        ]
        .map(String::from)
        .to_vec();
        if let Some(a) = &auth {
            strip_headers.extend(a.identity_headers());
        }
        let recorder = Recorder::start(&cfg.recording, Arc::clone(&metrics)).map_err(|e| {
            anyhow::anyhow!(
                "creating the recordings directory {}: {e}",
                cfg.recording.dir.display()
            )
        })?;
        Ok(Gateway {
            recorder,
            frame_origins,
            upstream_headers: headers::UpstreamPolicy::new(&strip_headers),
            auth,
            signin,
            acls,
            api,
            portal: Portal::new(cfg.portal.dir.as_deref()),
            limits,
            quotas: crate::quota::Quotas::new(&cfg.paths, Arc::clone(&slots)),
            slots,
            log,
            metrics,
            lifecycle,
            headers: HeaderPolicy::new(cfg),
            tls: cfg.is_tls(),
            trusted_proxies: cfg.trusted_proxies.clone(),
            loopback_trusted: cfg.loopback_trusted,
            max_path_len: cfg.max_path_len,
            metrics_access: cfg.metrics,
            connect_timeout: cfg.connect_timeout,
            activity_interval: cfg.activity_interval,
        })
    }

    /// Write a complete gateway-made response.
    async fn reply(&self, session: &mut Session, ctx: &mut Ctx, reply: Reply) -> Result<bool> {
        let head = session.req_header().method == http::Method::HEAD;
        let mut resp = ResponseHeader::build(reply.status, Some(6 + reply.headers.len()))?;
        resp.insert_header("content-type", reply.content_type)?;
        resp.insert_header("content-length", reply.body.len().to_string())?;
        resp.insert_header("cache-control", "no-store")?;
        // The reply's own headers come last: they may override the policy
        // (the portal's pages carry a stricter CSP).
        self.headers.downstream(&mut resp, &ctx.request_id)?;
        for (name, value) in &reply.headers {
            if *name == "set-cookie" {
                resp.append_header(*name, value.as_str())?;
            } else {
                resp.insert_header(*name, value.as_str())?;
            }
        }
        if let Some(c) = ctx.set_cookie.take() {
            resp.append_header("set-cookie", c)?;
        }
        if reply.status >= 400 {
            session.set_keepalive(None);
        }
        ctx.reply_status = Some(reply.status);
        ctx.error = ctx.error.or(reply.error);
        ctx.login = reply.login;
        session.write_response_header(Box::new(resp), head).await?;
        if !head {
            session.write_response_body(Some(reply.body), true).await?;
        }
        Ok(true)
    }

    fn limit(&self, ctx: &Ctx, cat: Category) -> Result<(), Limited> {
        let user = ctx.user();
        self.limits.check(cat, ctx.client_ip, user).inspect_err(|l| {
            self.metrics.rate_limited(l.category, l.scope);
            tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, category = l.category, scope = l.scope, "rate limited");
        })
    }

    /// `/healthz`: the gateway serves and slotctl answers. slotctl's
    /// version and slot counts only for who may read `/metrics`.
    async fn health(&self, ctx: &Ctx) -> Reply {
        match self.slots.supervisor_health().await {
            Some(h) if self.metrics_allowed(ctx) => pages::json(
                200,
                &serde_json::json!({
                    "status": "ok",
                    "slotctl": {"reachable": true, "version": h.version, "slots": h.slots, "online": h.online},
                }),
            ),
            Some(_) => pages::json(
                200,
                &serde_json::json!({"status": "ok", "slotctl": {"reachable": true}}),
            ),
            None => pages::json(
                503,
                &serde_json::json!({
                    "status": "unavailable",
                    "slotctl": {"reachable": false},
                    "message": "slotctl is not answering on its control socket: open terminals keep working, stopped ones cannot start",
                }),
            ),
        }
    }

    fn metrics_allowed(&self, ctx: &Ctx) -> bool {
        match self.metrics_access {
            MetricsAccess::Public => true,
            MetricsAccess::Loopback => ctx
                .client_ip
                .is_some_and(|ip| ip.is_loopback() && self.loopback_trusted),
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

    /// The sign-in endpoints and the embed-token API.
    async fn sign_in(&self, session: &mut Session, ctx: &mut Ctx, route: &Route) -> Reply {
        let Some(signin) = &self.signin else {
            return pages::error(
                404,
                "not_found",
                "Not found",
                "Sign-in is off (slotgate.auth = \"none\").",
                ctx.html,
            );
        };
        let body = match read_body(session, ctx.html).await {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        let origin = signin::own_origin(session.req_header(), ctx.secure);
        let areq = AuthRequest {
            header: session.req_header(),
            body: &body,
            client: ctx.client_ip,
            peer: ctx.peer_ip,
            same_origin: signin::same_origin(session.req_header(), &origin),
            origin: origin.clone(),
        };
        match route {
            Route::Auth(r) => signin.handle(r, &areq).await,
            _ => signin.embed_token(&areq).await,
        }
    }

    /// `/api/<rest>`: authenticate (cookie or API token), rate-limit as
    /// `api`, read the body, and let the API module decide.
    async fn api_request(&self, session: &mut Session, ctx: &mut Ctx, rest: &str) -> Result<bool> {
        let (who, cookie) = match self.api.caller(session.req_header(), ctx.peer_ip).await {
            Ok(c) => c,
            Err(reply) => {
                if let Err(l) = self.limit(ctx, Category::Api) {
                    return self
                        .reply(session, ctx, pages::rate_limited(&l, false))
                        .await;
                }
                return self.reply(session, ctx, reply).await;
            }
        };
        ctx.set_cookie = cookie;
        ctx.identity = Some(who.identity());
        if let Err(l) = self.limit(ctx, Category::Api) {
            return self
                .reply(session, ctx, pages::rate_limited(&l, false))
                .await;
        }
        let body = match read_body(session, false).await {
            Ok(b) => b,
            Err(reply) => return self.reply(session, ctx, reply).await,
        };
        let own = signin::own_origin(session.req_header(), self.tls);
        let method = session.req_header().method.clone();
        let answer = {
            let req = ApiRequest {
                method: &method,
                rest,
                header: session.req_header(),
                body: &body,
                same_origin: signin::same_origin(session.req_header(), &own),
            };
            self.api.handle(&who, &req).await
        };
        self.answer(session, ctx, answer).await
    }

    /// Write an API answer: a reply, or slotctl's answer streamed through.
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx, answer: Answer) -> Result<bool> {
        let (status, content_type, length, mut body) = match answer {
            Answer::Reply(reply) => return self.reply(session, ctx, reply).await,
            Answer::Stream {
                status,
                content_type,
                length,
                body,
            } => (status, content_type, length, body),
        };
        let head = session.req_header().method == http::Method::HEAD;
        let mut resp = ResponseHeader::build(status, Some(8))?;
        resp.insert_header("content-type", content_type)?;
        match length {
            Some(l) => resp.insert_header("content-length", l.to_string())?,
            None => resp.insert_header("transfer-encoding", "chunked")?,
        }
        resp.insert_header("cache-control", "no-store")?;
        if let Some(c) = ctx.set_cookie.take() {
            resp.append_header("set-cookie", c)?;
        }
        self.headers.downstream(&mut resp, &ctx.request_id)?;
        if status >= 400 {
            session.set_keepalive(None);
        }
        ctx.reply_status = Some(status);
        session.write_response_header(Box::new(resp), head).await?;
        if head {
            return Ok(true);
        }
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        session.write_response_body(Some(data), false).await?;
                    }
                }
                Err(e) => {
                    tracing::warn!(parent: &ctx.span, request_id = %ctx.request_id, error = %e, "control API answer broke off");
                    ctx.error = Some("control_stream");
                    return Error::e_explain(ErrorType::ReadError, "control API answer broke off");
                }
            }
        }
        session
            .write_response_body(Some(Bytes::new()), true)
            .await?;
        Ok(true)
    }

    /// A portal page that needs a signed-in user: `Some(reply)` (sign in
    /// first) when nobody is; otherwise the identity lands in `ctx`.
    async fn portal_sign_in(&self, session: &Session, ctx: &mut Ctx) -> Option<Reply> {
        let auth = self.auth.as_ref()?;
        match identify(auth, session, ctx, None).await {
            Ok(identity) => {
                ctx.identity = Some(identity);
                None
            }
            Err(reply) => Some(reply),
        }
    }

    /// The portal's pages, files and shared replays (404 without a portal).
    async fn portal_route(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Route,
    ) -> Result<bool> {
        if let Route::Replay { token, part } = route {
            // Shared recordings work without the portal's files too.
            if let Err(l) = self.limit(ctx, Category::Api) {
                return self
                    .reply(session, ctx, pages::rate_limited(&l, false))
                    .await;
            }
            let answer = self.api.replay(token, *part).await;
            return self.answer(session, ctx, answer).await;
        }
        let Some(portal) = &self.portal else {
            let reply = pages::not_found(ctx.html);
            return self.reply(session, ctx, reply).await;
        };
        let reply = match route {
            Route::PortalFile { path } => portal.file(path, ctx.html).await,
            // `/replay/<token>` needs no account; the admin pages do (the
            // API decides what each role sees).
            _ if session.req_header().uri.path().starts_with("/replay/") => {
                self.portal_index(portal).await
            }
            _ => match self.portal_sign_in(session, ctx).await {
                Some(reply) => reply,
                None => self.portal_index(portal).await,
            },
        };
        self.reply(session, ctx, reply).await
    }

    /// The portal's `index.html` with the portal's CSP.
    async fn portal_index(&self, portal: &Portal) -> Reply {
        portal
            .index()
            .await
            .with_header("content-security-policy", self.headers.portal_csp())
    }

    fn socket(&self, ctx: &Ctx) -> Option<PathBuf> {
        ctx.slot.as_ref().map(|id| self.slots.socket(id))
    }

    /// A slot's answer on its way to the client: the security headers and
    /// a refreshed cookie.
    fn slot_response(&self, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        ctx.slot_answered();
        self.headers.downstream(resp, &ctx.request_id)?;
        if let Some(c) = ctx.set_cookie.take() {
            resp.append_header("set-cookie", c)?;
        }
        Ok(())
    }

    /// The slot accepted the upgrade: a WebSocket session starts (metrics,
    /// slotctl's activity, the recording, revocation's registry; `fd` is the
    /// socket to the slot).
    fn ws_opened(&self, ctx: &mut Ctx, fd: std::os::unix::io::RawFd) {
        ctx.ws_open = true;
        ctx.ws_frames = Some(Box::new([
            FrameCounter::new(Direction::ClientToServer),
            FrameCounter::new(Direction::ServerToClient),
        ]));
        ctx.last_active = Instant::now();
        self.metrics.ws_open.fetch_add(1, Relaxed);
        if let Some(id) = &ctx.slot {
            let user = ctx.user();
            self.slots
                .report(id, ActivityKind::Connect, &ctx.request_id, user);
            if let Some(rec) = &self.recorder {
                let r = rec.open(&ctx.request_id, user, id.as_str(), ctx.started_at);
                // Whether the template records keystrokes: asked beside
                // the stream, never waited for.
                let (switch, slots, id) = (r.input_switch(), Arc::clone(&self.slots), id.clone());
                tokio::spawn(async move { switch.set(slots.records_input(&id).await) });
                ctx.recording = Some(r);
            }
        }
        if let (Some(auth), Some(sid)) = (
            &self.auth,
            ctx.identity.as_ref().and_then(|i| i.sid.as_deref()),
        ) {
            let slot = ctx.slot.as_ref().map(|s| s.as_str()).unwrap_or_default();
            let user = ctx.user().unwrap_or_default();
            ctx.ws_ticket = Some(auth.sessions.register_ws(sid, slot, user, Some(fd)));
        }
        tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, slot = ?ctx.slot, "websocket open");
    }

    /// An upgrade request to a slot (its terminal's WebSocket): connected,
    /// handed over and relayed by [`upgrade`], not Pingora's proxy loop
    /// (that module says why). Always answers the request itself.
    async fn relay_upgrade(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let mut slot = match self.connect_slot(ctx).await {
            Ok(slot) => slot,
            Err(reply) => return self.reply(session, ctx, reply).await,
        };
        let mut req = session.req_header().clone();
        self.upstream_headers.apply(
            &mut req,
            &ctx.request_id,
            ctx.client_ip_text.as_deref(),
            ctx.secure,
        )?;
        let (mut resp, first) = match upgrade::handshake(&mut slot, &req, UPGRADE_ANSWER).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(parent: &ctx.span, request_id = %ctx.request_id, slot = ?ctx.slot, error = %e, "slot failed the WebSocket handshake");
                return self.reply(session, ctx, unreachable_page(ctx.html)).await;
            }
        };
        if resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
            ctx.slot_answered();
            // The slot's own words stay with the slot (its log has them).
            let status = resp.status.as_u16();
            tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, slot = ?ctx.slot, status, "slot refused the WebSocket upgrade");
            let status = if (400..600).contains(&status) {
                status
            } else {
                502
            };
            let reply = pages::error(
                status,
                "slot_refused",
                "The terminal refused the connection",
                "The terminal did not accept this connection. Reload the page; if it keeps happening, tell an administrator.",
                ctx.html,
            );
            return self.reply(session, ctx, reply).await;
        }
        self.slot_response(&mut resp, ctx)?;
        let _open = self.lifecycle.terminals().add(&slot);
        self.ws_opened(ctx, slot.as_raw_fd());
        let mut client = upgrade::take_client(session, &resp).await?;
        let head = upgrade::response_to_wire(&resp);
        let ended = match upgrade::write_flush(&mut client, &head).await {
            Ok(()) => {
                let mut frames = WsFrames { gw: self, ctx };
                upgrade::relay(&mut client, &mut slot, &first, &mut frames).await
            }
            Err(_) => upgrade::Ended::ClientError,
        };
        ctx.error = ctx.error.or(ended.error());
        Ok(true)
    }

    /// Connect to the slot's socket. A refusal (usually: the slot is
    /// stopped and its socket gone) starts the slot and connects once
    /// more. `Err` carries the response to send instead.
    async fn connect_slot(&self, ctx: &mut Ctx) -> Result<UnixStream, Reply> {
        let (Some(id), Some(path)) = (ctx.slot.clone(), self.socket(ctx)) else {
            return Err(gateway_error_page(500, ctx.html));
        };
        ctx.upstream_from = Some(Instant::now());
        if let Ok(slot) = upgrade::connect(&path, self.connect_timeout).await {
            return Ok(slot);
        }
        self.metrics.upstream_connect_failures.fetch_add(1, Relaxed);
        self.start_slot(ctx, &id).await?;
        ctx.upstream_from = Some(Instant::now());
        upgrade::connect(&path, self.connect_timeout)
            .await
            .map_err(|e| {
                self.metrics.upstream_connect_failures.fetch_add(1, Relaxed);
                tracing::warn!(parent: &ctx.span, request_id = %ctx.request_id, slot = %id, error = %e, "slot is running but its socket refused the connection");
                let reply = unreachable_page(ctx.html);
                ctx.error = reply.error;
                reply
            })
    }
}

/// How long a slot may take to answer a WebSocket upgrade.
const UPGRADE_ANSWER: Duration = Duration::from_secs(30);

/// The page for a failure the gateway has no better words for.
fn gateway_error_page(status: u16, html: bool) -> Reply {
    pages::error(
        status,
        "gateway_error",
        "Something went wrong",
        "The gateway could not complete this request.",
        html,
    )
}

/// The page for a slot that did not answer.
fn unreachable_page(html: bool) -> Reply {
    pages::error(
        502,
        "slot_unreachable",
        "The terminal is not answering",
        "The terminal did not answer. Reload the page in a moment; if it keeps happening, tell an administrator.",
        html,
    )
}

/// The gateway's side of a relayed WebSocket session: revocation, the
/// read-only viewer's filter, byte counts, the recording and slotctl's
/// activity reports.
struct WsFrames<'a> {
    gw: &'a Gateway,
    ctx: &'a mut Ctx,
}

impl upgrade::Frames for WsFrames<'_> {
    fn client_sent(&mut self, bytes: &[u8]) -> Verdict {
        let ctx = &mut *self.ctx;
        if ctx.ws_ticket.as_ref().is_some_and(|t| t.kill.load(Acquire)) {
            // The session ended: nothing more reaches the slot.
            return Verdict::Replace(Vec::new());
        }
        if let Some(f) = ctx.ws_frames.as_mut() {
            f[0].feed(bytes);
        }
        let mut filtered = None;
        if let Some(filter) = ctx.viewer.as_mut() {
            let mut out = Vec::with_capacity(bytes.len());
            if let Err(e) = filter.feed(bytes, &mut out) {
                tracing::warn!(parent: &ctx.span, request_id = %ctx.request_id, error = %e, "viewer sent frames that cannot be filtered; closing");
                return Verdict::Close("viewer_frame");
            }
            filtered = Some(out);
        }
        let sent = filtered.as_deref().unwrap_or(bytes);
        ctx.ws_bytes_in += sent.len() as u64;
        if let Some(r) = ctx.recording.as_mut() {
            r.client_bytes(sent);
        }
        if ctx.last_active.elapsed() >= self.gw.activity_interval {
            ctx.last_active = Instant::now();
            if let Some(id) = &ctx.slot {
                let user = ctx.user();
                self.gw
                    .slots
                    .report(id, ActivityKind::Active, &ctx.request_id, user);
            }
        }
        filtered.map_or(Verdict::Pass, Verdict::Replace)
    }

    fn slot_sent(&mut self, bytes: Option<&[u8]>) -> Verdict {
        let ctx = &mut *self.ctx;
        if let Some(t) = ctx.ws_ticket.as_ref().filter(|t| t.kill.load(Acquire)) {
            // Revoked (or the access was removed): whatever the slot says is
            // replaced by one close frame.
            if ctx.close_sent {
                return Verdict::Replace(Vec::new());
            }
            ctx.close_sent = true;
            let (code, reason, error) = if t.access_removed.load(Acquire) {
                (
                    sessions::CLOSE_ACCESS_REMOVED,
                    sessions::CLOSE_ACCESS_REMOVED_REASON,
                    "access_removed",
                )
            } else {
                (
                    sessions::CLOSE_REVOKED,
                    sessions::CLOSE_REVOKED_REASON,
                    "session_revoked",
                )
            };
            ctx.error = Some(error);
            tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, slot = ?ctx.slot, reason, "closing the WebSocket");
            return Verdict::Replace(sessions::close_frame(code, reason));
        }
        if bytes.is_none() && self.gw.lifecycle.terminals().going_away() {
            // The gateway is stopping and ended the session from the
            // slot's side: "going away", and the page reconnects.
            ctx.error = Some("gateway_stopping");
            return Verdict::Replace(sessions::close_frame(
                lifecycle::CLOSE_GOING_AWAY,
                lifecycle::CLOSE_GOING_AWAY_REASON,
            ));
        }
        if let Some(b) = bytes {
            ctx.ws_bytes_out += b.len() as u64;
            if let Some(f) = ctx.ws_frames.as_mut() {
                f[1].feed(b);
            }
            if let Some(r) = ctx.recording.as_mut() {
                r.server_bytes(b);
            }
        }
        Verdict::Pass
    }
}

/// The request body of a POST/PUT/DELETE the gateway answers itself, at
/// most [`MAX_FORM`] bytes.
async fn read_body(session: &mut Session, html: bool) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    if matches!(
        session.req_header().method,
        http::Method::GET | http::Method::HEAD
    ) {
        return Ok(body);
    }
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_FORM {
                    return Err(pages::error(
                        413,
                        "too_large",
                        "Too large",
                        "The request body is too large.",
                        html,
                    ));
                }
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(pages::error(
                    400,
                    "bad_body",
                    "Bad request",
                    "The request body could not be read.",
                    html,
                ))
            }
        }
    }
}

/// Who sends this request (a refreshed session cookie lands in `ctx`), or
/// the answer for nobody: the sign-in page for a person, 401 JSON for a
/// program, 403 for a trusted identity that may not enter.
/// Who is asking; `anonymous` stands in for a request without a session
/// when anonymous access is allowed (the public demo slot).
async fn identify(
    auth: &Auth,
    session: &Session,
    ctx: &mut Ctx,
    anonymous: Option<Identity>,
) -> Result<Identity, Reply> {
    let facts = RequestFacts {
        header: session.req_header(),
        peer: ctx.peer_ip,
    };
    match auth.authenticate(&facts).await {
        Authn::Identified(identity, cookie) => {
            ctx.set_cookie = cookie;
            Ok(identity)
        }
        Authn::Anonymous if anonymous.is_some() => {
            Ok(anonymous.unwrap_or_else(Identity::anonymous_viewer))
        }
        // Inside another site's iframe: sign in through a popup
        // (providers refuse to be framed).
        Authn::Anonymous
            if ctx.html
                && ctx.slot.is_some()
                && popup::is_frame_navigation(session.req_header()) =>
        {
            Err(popup::frame_sign_in(
                ctx.slot.as_ref().map(|s| s.as_str()).unwrap_or_default(),
            ))
        }
        Authn::Anonymous if ctx.html => Err(login_redirect(session)),
        Authn::Anonymous => Err(pages::error(
            401,
            "unauthenticated",
            "Sign in required",
            "Sign in first: this request carries no valid session.",
            false,
        )
        .with_header("www-authenticate", "Bearer")),
        Authn::Refused(why) => {
            tracing::warn!(parent: &ctx.span, request_id = %ctx.request_id, reason = %why, "trusted identity refused");
            Err(pages::error(
                403,
                "not_allowed",
                "Not allowed",
                "Your account may not use slotgate.",
                ctx.html,
            ))
        }
    }
}

/// `/auth/login?next=<this request>`.
fn login_redirect(session: &Session) -> Reply {
    let target = String::from_utf8_lossy(session.req_header().raw_path()).into_owned();
    let next = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", &target)
        .finish();
    pages::found(&format!("/auth/login?{next}"))
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

/// One query parameter of the request, decoded.
fn query_param(req: &pingora::http::RequestHeader, key: &str) -> Option<String> {
    let q = req.uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn header_str(session: &Session, name: impl http::header::AsHeaderName) -> Option<&str> {
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
        // Pingora makes the context once the request's headers are read.
        crate::connections::headers_read();
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
            client_ip_text: None,
            peer_ip: None,
            secure: self.tls,
            route: "rejected",
            slot: None,
            identity: None,
            html: false,
            reply_status: None,
            error: None,
            start_before_connect: false,
            retried: false,
            upstream_from: None,
            upstream_took: None,
            slot_error: None,
            pending: None,
            answered: false,
            ws_open: false,
            ws_guard: None,
            ws_bytes_in: 0,
            ws_bytes_out: 0,
            ws_frames: None,
            last_active: Instant::now(),
            set_cookie: None,
            access: None,
            viewer: None,
            ws_ticket: None,
            close_sent: false,
            login: None,
            recording: None,
            span,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.secure = self.tls;
        ctx.client_ip = ctx.peer_ip;
        if let Some(peer) = ctx
            .peer_ip
            .filter(|ip| self.loopback_trusted || !config::is_loopback(*ip))
        {
            if let Some(fwd) = headers::forwarded(session.req_header(), peer, &self.trusted_proxies)
            {
                ctx.client_ip = Some(fwd.client);
                ctx.secure = fwd.https.unwrap_or(self.tls);
            }
        }
        ctx.client_ip_text = ctx.client_ip.map(headers::ip_text);
        let req = session.req_header();
        let method = req.method.as_str().to_string();
        ctx.html = routing::is_navigation(
            &method,
            header_str(session, http::header::ACCEPT),
            header_str(session, SEC_FETCH_MODE),
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
                    Reject::NotFound => pages::not_found(ctx.html),
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
            Route::Live => {
                return self
                    .reply(session, ctx, pages::text(200, "ok\n".into(), "text/plain"))
                    .await
            }
            Route::Health => {
                let reply = self.health(ctx).await;
                return self.reply(session, ctx, reply).await;
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
                let reply = pages::not_found(ctx.html);
                return self.reply(session, ctx, reply).await;
            }
            Route::Landing if self.portal.is_some() => {
                let reply = match self.portal_sign_in(session, ctx).await {
                    Some(reply) => reply,
                    None => match &self.portal {
                        Some(p) => self.portal_index(p).await,
                        None => pages::landing(),
                    },
                };
                return self.reply(session, ctx, reply).await;
            }
            Route::PortalPage | Route::PortalFile { .. } | Route::Replay { .. } => {
                return self.portal_route(session, ctx, &route).await;
            }
            Route::Api { rest } => {
                return self.api_request(session, ctx, rest).await;
            }
            Route::Landing => {
                let reply = match &self.auth {
                    None => pages::landing(),
                    Some(auth) => {
                        let facts = RequestFacts {
                            header: session.req_header(),
                            peer: ctx.peer_ip,
                        };
                        match auth.authenticate(&facts).await {
                            Authn::Identified(Identity { user: Some(u), .. }, cookie) => {
                                ctx.set_cookie = cookie;
                                pages::found(&format!("/slot/{u}/"))
                            }
                            _ => pages::found("/auth/login"),
                        }
                    }
                };
                return self.reply(session, ctx, reply).await;
            }
            Route::Auth(_) | Route::EmbedTokens => {
                // Sign-in pages carry no script: the portal's strict CSP.
                let reply = self
                    .sign_in(session, ctx, &route)
                    .await
                    .with_header("content-security-policy", self.headers.portal_csp());
                return self.reply(session, ctx, reply).await;
            }
            Route::Demo => {
                let reply = match self.acls.as_ref().and_then(|a| a.demo_slot()) {
                    Some(id) => pages::found(&format!("/slot/{id}/")),
                    None => pages::error(
                        404,
                        "not_found",
                        "Not found",
                        "This installation has no public demo.",
                        ctx.html,
                    ),
                };
                return self.reply(session, ctx, reply).await;
            }
            _ => {}
        }
        let Some(id) = route.slot().cloned() else {
            return Error::e_explain(ErrorType::InternalError, "slot route without a slot");
        };
        ctx.span.record("slot", id.as_str());
        ctx.slot = Some(id.clone());

        if session.is_upgrade_req() {
            let own = signin::own_origin(session.req_header(), ctx.secure);
            if !signin::ws_origin_allowed(session.req_header(), &own, &self.frame_origins) {
                tracing::warn!(parent: &ctx.span, request_id = %ctx.request_id, slot = %id, origin = ?header_str(session, "origin"), "cross-origin WebSocket refused");
                let reply = pages::error(
                    403,
                    "cross_origin",
                    "Refused",
                    "This terminal cannot be opened from another site.",
                    false,
                );
                return self.reply(session, ctx, reply).await;
            }
        }
        let identity = match &self.auth {
            None => Identity::anonymous_full_access(),
            Some(auth) => {
                if let (
                    Route::Slot {
                        kind: SlotRequest::Page,
                        ..
                    },
                    Some(signin),
                ) = (&route, &self.signin)
                {
                    if let Some(token) = query_param(session.req_header(), "embed") {
                        let origin = signin::own_origin(session.req_header(), ctx.secure);
                        let areq = AuthRequest {
                            header: session.req_header(),
                            body: &[],
                            client: ctx.client_ip,
                            peer: ctx.peer_ip,
                            same_origin: false,
                            origin,
                        };
                        let reply = signin.exchange_embed(id.as_str(), &token, &areq).await;
                        return self.reply(session, ctx, reply).await;
                    }
                }
                // Anyone may watch the public demo without a session.
                let demo = self.acls.as_ref().and_then(|a| a.demo_slot()) == Some(&id);
                match identify(auth, session, ctx, demo.then(Identity::anonymous_viewer)).await {
                    Ok(identity) => identity,
                    Err(reply) => return self.reply(session, ctx, reply).await,
                }
            }
        };
        let acl = match &self.acls {
            None => None,
            Some(acls) => match acls.lookup(&id, &identity).await {
                Ok(acl) => acl,
                Err(e) => {
                    let reply = pages::slot_error(&e, ctx.html);
                    return self.reply(session, ctx, reply).await;
                }
            },
        };
        let (decision, label) = identity::authorize(&identity, acl.as_ref());
        ctx.access = label;
        let user_name = identity.user.as_ref().map(|u| u.to_string());
        ctx.identity = Some(identity);
        match decision {
            Decision::Deny(reason) => {
                tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, user = ?user_name, slot = %id, reason, "slot access refused");
                let reply = pages::error(
                    403,
                    "forbidden",
                    "Not yours",
                    "You may not open this terminal.",
                    ctx.html,
                );
                return self.reply(session, ctx, reply).await;
            }
            Decision::ReadOnly => {
                if session.is_upgrade_req() {
                    ctx.viewer = Some(ViewerFilter::new());
                }
            }
            Decision::Write => {}
        }
        if label == Some("admin") && session.is_upgrade_req() {
            tracing::warn!(parent: &ctx.span, request_id = %ctx.request_id, user = ?user_name, slot = %id, "administrator opened a slot that is not theirs (audited)");
        }

        // A new terminal session (the page in a browser, or the WebSocket)
        // that can type is refused while the slot's owner is over their
        // Claude quota; read-only viewers cannot spend, so they watch on.
        let new_session = match route {
            Route::Slot { kind, .. } => {
                (kind == SlotRequest::Ws || (kind == SlotRequest::Page && ctx.html))
                    && ctx.access != Some("read_only")
            }
            _ => false,
        };
        if let Some(reply) = self
            .quotas
            .admit(
                new_session,
                &id,
                acl.as_ref(),
                ctx.identity.as_ref(),
                ctx.html,
            )
            .await
        {
            return self.reply(session, ctx, reply).await;
        }

        if let (
            Some(portal),
            Route::Slot {
                kind: SlotRequest::Page,
                ..
            },
        ) = (&self.portal, &route)
        {
            // A person opening a terminal gets the portal's terminal view,
            // which talks to this slot's `token` and `ws`; `?raw=1` keeps
            // ttyd's own page reachable.
            if ctx.html && query_param(session.req_header(), "raw").as_deref() != Some("1") {
                let reply = self.portal_index(portal).await;
                return self.reply(session, ctx, reply).await;
            }
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
                None if session.is_upgrade_req() => self.relay_upgrade(session, ctx).await,
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
        ctx.upstream_from = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// The same check as for WebSocket upgrades ([`upgrade::check_slot_peer`])
    /// for plain requests: the socket's server must be the slot's uid.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(socket) = self.socket(ctx) else {
            return Ok(());
        };
        // SAFETY: pingora passes the connected socket's descriptor, open for
        // the whole call; it is only borrowed for one getsockopt.
        #[allow(unsafe_code)]
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let uid = rustix::net::sockopt::socket_peercred(fd)
            .map(|c| c.uid.as_raw())
            .or_err(ErrorType::ConnectError, "reading the slot socket's peer")?;
        upgrade::check_slot_peer(&socket, uid).or_err(
            ErrorType::ConnectRefused,
            "slot socket served by another uid",
        )
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
        self.upstream_headers.apply(
            upstream,
            &ctx.request_id,
            ctx.client_ip_text.as_deref(),
            ctx.secure,
        )
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.slot_response(resp, ctx)
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
                (None, None) if code == 502 => unreachable_page(ctx.html),
                (None, None) => gateway_error_page(code, ctx.html),
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
    /// query or a replay link's token.
    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        let req = session.req_header();
        let raw = String::from_utf8_lossy(req.raw_path());
        let path = match access_log::redact_target(&raw) {
            (p, Some(q)) => format!("{p}?{q}"),
            (p, None) => p,
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
        crate::connections::request_done();
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
        let user = user_name(&ctx.identity);
        let recording = match ctx.recording.take() {
            Some(r) => {
                let input = r.records_input();
                let (path, bytes) = r.finish().await;
                Some(access_log::RecordingFields {
                    recording_input: input && path.is_some(),
                    recording: path.map(|p| p.display().to_string()),
                    recording_bytes: bytes,
                })
            }
            None if ctx.ws_open => Some(access_log::RecordingFields::default()),
            None => None,
        };
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
        if let (Some(t), Some(auth)) = (ctx.ws_ticket.take(), &self.auth) {
            auth.sessions.unregister_ws(&t);
        }
        self.metrics.request(ctx.route, status, took, ctx.ws_open);
        if let Some(e) = ctx.error {
            self.metrics.request_error(e);
        }

        let req = session.req_header();
        let raw = String::from_utf8_lossy(req.raw_path());
        let (path, query) = access_log::redact_target(&raw);
        let user_agent = req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| &s[..s.len().min(256)]);
        self.log.write(&Entry {
            v: access_log::FORMAT_VERSION,
            ts: access_log::timestamp(SystemTime::now()),
            start: access_log::timestamp(ctx.started_at),
            kind,
            request_id: &ctx.request_id,
            client_ip: ctx.client_ip_text.as_deref(),
            user,
            method: req.method.as_str(),
            path: truncate(&path, 1024),
            query,
            route: ctx.route,
            slot: ctx.slot.as_ref().map(|s| s.as_str()),
            status,
            bytes_in,
            bytes_out,
            duration_ms: (took.as_secs_f64() * 1e6).round() / 1e3,
            tls: ctx.secure,
            served_by,
            user_agent,
            error: ctx.error,
            access: ctx.access,
            login: ctx.login.as_deref(),
            upstream_ms: ctx
                .upstream_took
                .map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
            frames_in: ctx.ws_frames.as_ref().map(|f| f[0].frames),
            frames_out: ctx.ws_frames.as_ref().map(|f| f[1].frames),
            recording,
        });
    }
}
