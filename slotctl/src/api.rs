//! The control API: HTTP/1.1 + JSON on `<run>/slotctl.sock`, versioned under
//! `/v1`. One handler per route; each maps its request onto one supervisor
//! call and supervisor errors onto a status and a JSON error body. Nothing
//! here spawns, signals or stores: a request that fails validation has
//! changed nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use slotapi::{
    Activity, CreateSlot, DeleteSlot, EnsureSlot, ErrorBody, Health, SlotId, SlotStatus, StartApps,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::logs;
use crate::supervisor::{SupError, Supervisor, DEFAULT_ENSURE_WAIT};

type Sup = State<Arc<Supervisor>>;

/// An error response: status plus `{"code": .., "message": ..}`.
pub struct ApiError(StatusCode, &'static str, String);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError(status, code, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.1.into(),
            message: self.2,
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<SupError> for ApiError {
    fn from(e: SupError) -> Self {
        let (status, code) = match &e {
            SupError::NotFound(_) | SupError::NotFoundApp(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            SupError::Exists(_) | SupError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            SupError::UnknownTemplate { .. } | SupError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            SupError::StartFailed { .. } => (StatusCode::SERVICE_UNAVAILABLE, "start_failed"),
            SupError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            SupError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError(status, code, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request", msg.into())
}

fn slot_id(raw: &str) -> Result<SlotId, ApiError> {
    SlotId::new(raw).map_err(|e| bad(e.to_string()))
}

fn body<T>(r: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    r.map(|Json(v)| v)
        .map_err(|e| bad(format!("invalid request body: {}", e.body_text())))
}

pub fn router(sup: Arc<Supervisor>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/slots", get(list).post(create))
        .route("/v1/templates", get(templates))
        .route("/v1/slots/{id}", get(get_slot).delete(delete))
        .route("/v1/slots/{id}/start", post(start))
        .route("/v1/slots/{id}/stop", post(stop))
        .route("/v1/slots/{id}/restart", post(restart))
        .route("/v1/slots/{id}/ensure", post(ensure))
        .route("/v1/slots/{id}/activity", post(activity))
        .route("/v1/slots/{id}/logs", get(slot_logs))
        .route("/v1/events", get(events))
        .route("/v1/apps", get(list_apps).post(start_apps))
        .route("/v1/apps/save", post(save_apps))
        .route("/v1/apps/resurrect", post(resurrect_apps))
        .route("/v1/apps/{pm_id}", get(get_app).delete(delete_app))
        .route("/v1/apps/{pm_id}/spec", get(app_spec))
        .route("/v1/apps/{pm_id}/start", post(start_app))
        .route("/v1/apps/{pm_id}/stop", post(stop_app))
        .route("/v1/apps/{pm_id}/restart", post(restart_app))
        .route("/v1/apps/{pm_id}/reload", post(reload_app))
        .route("/v1/apps/{pm_id}/reset", post(reset_app))
        .route("/v1/apps/{pm_id}/flush", post(flush_app))
        .route("/v1/apps/{pm_id}/wait", post(wait_app))
        .route("/v1/apps/{pm_id}/logs", get(app_logs))
        .route("/v1/shutdown", post(shutdown))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; the API lives under /v1".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_request",
                "method not allowed on this route".into(),
            )
        })
        .with_state(sup)
}

async fn health(State(sup): Sup) -> Json<Health> {
    let slots = sup.list();
    Json(Health {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_ms: sup.uptime().as_millis() as u64,
        online: slots
            .iter()
            .filter(|s| s.status == SlotStatus::Online)
            .count(),
        slots: slots.len(),
    })
}

async fn list(State(sup): Sup) -> impl IntoResponse {
    Json(sup.list())
}

/// `GET /v1/templates`: `{"items": [{"name", "description"}]}`.
async fn templates(State(sup): Sup) -> impl IntoResponse {
    let items: Vec<serde_json::Value> = sup
        .config()
        .templates
        .values()
        .map(|t| serde_json::json!({"name": t.name, "description": t.description}))
        .collect();
    Json(serde_json::json!({ "items": items }))
}

async fn get_slot(State(sup): Sup, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.get(&slot_id(&id)?)?))
}

async fn create(
    State(sup): Sup,
    req: Result<Json<CreateSlot>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let req = body(req)?;
    let info = sup.create(req).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn start(State(sup): Sup, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.start(&slot_id(&id)?).await?))
}

async fn stop(State(sup): Sup, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        sup.stop(&slot_id(&id)?, Some("stopped by request".into()))
            .await?,
    ))
}

async fn restart(State(sup): Sup, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.restart(&slot_id(&id)?).await?))
}

async fn delete(
    State(sup): Sup,
    Path(id): Path<String>,
    q: Result<Query<DeleteSlot>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    Ok(Json(
        sup.delete(&slot_id(&id)?, q.keep_sandbox.unwrap_or(true))
            .await?,
    ))
}

async fn ensure(
    State(sup): Sup,
    Path(id): Path<String>,
    req: Result<Json<EnsureSlot>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = slot_id(&id)?;
    // An empty body means "defaults".
    let req = match req {
        Err(JsonRejection::MissingJsonContentType(_)) => EnsureSlot::default(),
        other => body(other)?,
    };
    let wait = req
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_ENSURE_WAIT)
        .min(Duration::from_secs(60));
    Ok(Json(sup.ensure(&id, wait).await?))
}

async fn activity(
    State(sup): Sup,
    store: Option<axum::Extension<Arc<crate::activity::ActivityStore>>>,
    Path(id): Path<String>,
    req: Result<Json<Activity>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = slot_id(&id)?;
    let a = body(req)?;
    if a.session.is_empty() || a.session.len() > 128 {
        return Err(bad("session must be 1 to 128 characters"));
    }
    // The activity store keeps who is online now.
    let live = store.map(|s| (s.0, a.clone()));
    sup.activity(&id, a)?;
    if let Some((store, a)) = live {
        store.live(id.as_str(), &a).await;
    }
    Ok(Json(serde_json::json!({"ok": true})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    lines: Option<usize>,
    follow: Option<bool>,
}

fn stream_response(rx: mpsc::Receiver<Bytes>, content_type: &'static str) -> Response {
    use futures_util::StreamExt;
    let stream = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("static response parts")
}

async fn slot_logs(
    State(sup): Sup,
    Path(id): Path<String>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let path = sup.log_path(&slot_id(&id)?)?;
    stream_log(path, q.lines.unwrap_or(100), q.follow.unwrap_or(false))
}

/// The last `lines` lines of a log file, then (with `follow`) every line
/// appended to it, as a streamed text response.
fn stream_log(path: std::path::PathBuf, lines: usize, follow: bool) -> Result<Response, ApiError> {
    let (history, offset) =
        logs::tail(&path, lines.min(100_000)).map_err(|e| bad(format!("reading log: {e}")))?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        for l in history {
            if tx.send(Bytes::from(format!("{l}\n"))).await.is_err() {
                return;
            }
        }
        if follow {
            follow_file(path, offset, tx).await;
        }
    });
    Ok(stream_response(rx, "text/plain; charset=utf-8"))
}

/// Send lines appended to `path` until the receiver goes away. notify
/// wakes us on changes; a slow poll covers filesystems where it cannot.
async fn follow_file(path: std::path::PathBuf, mut offset: u64, tx: mpsc::Sender<Bytes>) {
    use notify::Watcher;
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = wake_tx.try_send(());
    })
    .ok();
    if let (Some(w), Some(dir)) = (watcher.as_mut(), path.parent()) {
        let _ = w.watch(dir, notify::RecursiveMode::NonRecursive);
    }
    loop {
        let p = path.clone();
        let read = tokio::task::spawn_blocking(move || logs::read_from(&p, offset)).await;
        if let Ok(Ok((lines, next))) = read {
            offset = next;
            for l in lines {
                if tx.send(Bytes::from(format!("{l}\n"))).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            _ = wake.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tx.closed() => return,
        }
    }
}

async fn events(State(sup): Sup) -> Response {
    let mut rx = sup.subscribe();
    let (tx, out) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                        line.push(b'\n');
                        if tx.send(Bytes::from(line)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let line = format!("{{\"lagged\":{n}}}\n");
                        if tx.send(Bytes::from(line)).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    stream_response(out, "application/x-ndjson")
}

fn pm_id(raw: &str) -> Result<u32, ApiError> {
    raw.parse()
        .map_err(|_| bad(format!("{raw:?} is not a pm_id (a non-negative integer)")))
}

async fn list_apps(State(sup): Sup) -> impl IntoResponse {
    Json(sup.list_apps())
}

async fn start_apps(
    State(sup): Sup,
    req: Result<Json<StartApps>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let req = body(req)?;
    Ok(Json(sup.start_apps(req).await?))
}

async fn get_app(State(sup): Sup, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.get_app(pm_id(&id)?)?))
}

async fn app_spec(State(sup): Sup, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.app_spec(pm_id(&id)?)?))
}

async fn delete_app(
    State(sup): Sup,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.delete_app(pm_id(&id)?).await?))
}

async fn start_app(State(sup): Sup, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.app_action(pm_id(&id)?, "start").await?))
}

async fn stop_app(State(sup): Sup, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.app_action(pm_id(&id)?, "stop").await?))
}

async fn restart_app(
    State(sup): Sup,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.app_action(pm_id(&id)?, "restart").await?))
}

async fn reload_app(
    State(sup): Sup,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.app_action(pm_id(&id)?, "reload").await?))
}

async fn reset_app(State(sup): Sup, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.app_action(pm_id(&id)?, "reset").await?))
}

async fn flush_app(State(sup): Sup, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.app_action(pm_id(&id)?, "flush").await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    timeout_ms: Option<u64>,
}

async fn wait_app(
    State(sup): Sup,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let wait = Duration::from_millis(q.timeout_ms.unwrap_or(10_000).min(60_000));
    Ok(Json(sup.wait_app(pm_id(&id)?, wait).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppLogQuery {
    /// `out`, `err` or `combined` (default: out).
    stream: Option<String>,
    lines: Option<usize>,
    follow: Option<bool>,
}

async fn app_logs(
    State(sup): Sup,
    Path(id): Path<String>,
    q: Result<Query<AppLogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let info = sup.get_app(pm_id(&id)?)?;
    let path = match q.stream.as_deref().unwrap_or("out") {
        "out" => info.out_log,
        "err" => info.err_log,
        "combined" => info.combined_log,
        other => return Err(bad(format!("stream {other:?} is not out, err or combined"))),
    };
    let Some(path) = path.map(std::path::PathBuf::from) else {
        // No such log (e.g. logs disabled): an empty stream.
        let (_, rx) = mpsc::channel::<Bytes>(1);
        return Ok(stream_response(rx, "text/plain; charset=utf-8"));
    };
    stream_log(path, q.lines.unwrap_or(15), q.follow.unwrap_or(false))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveQuery {
    force: Option<bool>,
}

async fn save_apps(
    State(sup): Sup,
    q: Result<Query<SaveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    Ok(Json(sup.save_dump(q.force.unwrap_or(false))?))
}

async fn resurrect_apps(State(sup): Sup) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(sup.resurrect().await?))
}

async fn shutdown(State(sup): Sup) -> impl IntoResponse {
    sup.shutdown.notify_one();
    Json(serde_json::json!({"ok": true, "pid": std::process::id()}))
}
