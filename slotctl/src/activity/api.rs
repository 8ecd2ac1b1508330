//! The activity store's control-API routes (`/v1/activity/…`,
//! `/v1/recordings…`, `/v1/replay-links/…`; docs/api.md). Merged into the
//! daemon's router; errors are the same JSON `{"code", "message"}`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use slotapi::activity::*;

use super::query::{self, Filter, QueryError};
use super::ActivityStore;
use crate::api::ApiError;
use crate::clock::now_ms;

type Store = State<Arc<ActivityStore>>;
type Q = Result<Query<ActivityQuery>, QueryRejection>;

/// The longest a replay link may live.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(30 * 86_400);

pub fn router(store: Arc<ActivityStore>) -> Router {
    Router::new()
        .route("/v1/activity/online", get(online))
        .route("/v1/activity/sessions", get(sessions))
        .route("/v1/activity/requests", get(requests))
        .route("/v1/activity/logins", get(logins))
        .route("/v1/activity/events", get(events))
        .route("/v1/activity/stats", get(stats))
        .route("/v1/activity/ingest", get(ingest))
        .route("/v1/activity/malformed", get(malformed))
        .route("/v1/recordings", get(recordings))
        .route("/v1/recordings/{id}", get(recording))
        .route("/v1/recordings/{id}/cast", get(cast))
        .route("/v1/recordings/{id}/links", post(create_link))
        .route(
            "/v1/replay-links/{token}",
            get(get_link).delete(revoke_link),
        )
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_request",
                "method not allowed on this route",
            )
        })
        .with_state(store)
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg)
}

fn internal(e: rusqlite::Error) -> ApiError {
    tracing::warn!(error = %e, "activity query failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("activity store: {e}"),
    )
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
}

fn gone(what: &str) -> ApiError {
    ApiError::new(StatusCode::GONE, "gone", what)
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Bad(m) => bad(m),
            QueryError::Db(e) => internal(e),
        }
    }
}

fn params(q: Q, allowed: &[&str]) -> Result<Filter, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    query::filter(&q, allowed).map_err(bad)
}

/// Run a query on a read connection.
async fn run<T: Send + 'static>(
    store: &ActivityStore,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, ApiError> {
    store
        .read(move |c| Ok(f(c)))
        .await
        .map_err(internal)?
        .map_err(ApiError::from)
}

/// Drop the internal row ids used for cursors.
fn strip<T: Serialize>(p: Page<(i64, T)>) -> Page<T> {
    Page {
        items: p.items.into_iter().map(|(_, t)| t).collect(),
        next_cursor: p.next_cursor,
    }
}

const LIST: &[&str] = &["user", "slot", "since", "until", "limit", "cursor"];

async fn online(State(s): Store, q: Q) -> Result<impl IntoResponse, ApiError> {
    let f = params(q, &["user", "slot"])?;
    let page = run(&s, move |c| query::online(c, &f)).await?;
    Ok(Json(serde_json::json!({ "items": page.items })))
}

async fn sessions(State(s): Store, q: Q) -> Result<impl IntoResponse, ApiError> {
    let f = params(q, LIST)?;
    Ok(Json(run(&s, move |c| query::sessions(c, &f)).await?))
}

async fn requests(State(s): Store, q: Q) -> Result<impl IntoResponse, ApiError> {
    let f = params(
        q,
        &[
            "user", "slot", "since", "until", "limit", "cursor", "status", "kind", "route", "q",
        ],
    )?;
    if let Some(k) = &f.kind {
        if k != "http" && k != "ws" {
            return Err(bad(format!("kind {k:?} is neither http nor ws")));
        }
    }
    Ok(Json(strip(run(&s, move |c| query::requests(c, &f)).await?)))
}

async fn logins(State(s): Store, q: Q) -> Result<impl IntoResponse, ApiError> {
    let f = params(q, &["user", "since", "until", "limit", "cursor"])?;
    Ok(Json(strip(run(&s, move |c| query::logins(c, &f)).await?)))
}

async fn events(State(s): Store, q: Q) -> Result<impl IntoResponse, ApiError> {
    let f = params(q, &["slot", "kind", "since", "until", "limit", "cursor"])?;
    Ok(Json(strip(run(&s, move |c| query::events(c, &f)).await?)))
}

async fn stats(State(s): Store, q: Q) -> Result<impl IntoResponse, ApiError> {
    let f = params(q, &["user", "slot", "since", "until", "period"])?;
    Ok(Json(run(&s, move |c| query::stats(c, &f)).await?))
}

async fn ingest(State(s): Store) -> Result<impl IntoResponse, ApiError> {
    let (lines, malformed, lag_bytes, files) = run(&s, |c| Ok(query::ingest(c)?)).await?;
    let tail = s.tail.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Json(IngestStatus {
        path: s.access_log().display().to_string(),
        lines,
        malformed,
        lag_bytes,
        last_ingest_ms: tail.last_ingest_ms,
        last_error: tail.last_error,
        files,
    }))
}

async fn malformed(State(s): Store, q: Q) -> Result<impl IntoResponse, ApiError> {
    let f = params(q, &["since", "until", "limit", "cursor"])?;
    Ok(Json(run(&s, move |c| query::malformed(c, &f)).await?))
}

async fn recordings(State(s): Store, q: Q) -> Result<impl IntoResponse, ApiError> {
    let f = params(q, LIST)?;
    Ok(Json(run(&s, move |c| query::recordings(c, &f)).await?))
}

fn recording_id(raw: &str) -> Result<String, ApiError> {
    if raw.is_empty() || raw.len() > 64 || !raw.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad(format!("{raw:?} is not a recording id")));
    }
    Ok(raw.to_string())
}

async fn find_recording(
    s: &ActivityStore,
    id: String,
) -> Result<(RecordingItem, String), ApiError> {
    let label = id.clone();
    run(s, move |c| Ok(query::recording(c, &id)?))
        .await?
        .ok_or_else(|| not_found(&format!("no recording {label}")))
}

async fn recording(State(s): Store, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let (item, _) = find_recording(&s, recording_id(&id)?).await?;
    Ok(Json(item))
}

/// The asciicast file, streamed; 410 once the file is gone.
async fn cast(State(s): Store, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (item, path) = find_recording(&s, recording_id(&id)?).await?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(gone(&format!(
                "the file of recording {} is gone (retention or removal)",
                item.id
            )))
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("opening the recording: {e}"),
            ))
        }
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    let stream = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 << 10];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/x-asciicast")
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"{}.cast\"", item.id),
        );
    if let Some(len) = len {
        resp = resp.header(header::CONTENT_LENGTH, len);
    }
    Ok(resp
        .body(Body::from_stream(stream))
        .expect("static response parts"))
}

fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_token(raw: &str) -> Result<&str, ApiError> {
    if raw.len() != 43
        || !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(not_found("no such replay link"));
    }
    Ok(raw)
}

async fn create_link(
    State(s): Store,
    Path(id): Path<String>,
    req: Result<Json<CreateReplayLink>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = recording_id(&id)?;
    let Json(req) = req.map_err(|e| bad(format!("invalid request body: {}", e.body_text())))?;
    let ttl = slotapi::config::parse_duration(&req.ttl).map_err(|e| bad(format!("ttl: {e}")))?;
    if ttl < Duration::from_secs(60) || ttl > MAX_LINK_TTL {
        return Err(bad("ttl must be from 1m to 30d"));
    }
    let (item, _) = find_recording(&s, id).await?;
    if !item.available {
        return Err(gone(&format!("the file of recording {} is gone", item.id)));
    }
    let mut raw = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let now = now_ms();
    let expires_ms = now + ttl.as_millis() as u64;
    let hash = token_hash(&token);
    let rec = item.id.clone();
    s.write(move |c| {
        c.execute(
            "INSERT INTO replay_links(token_hash, recording, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
            params![hash, rec, now as i64, expires_ms as i64],
        )
    })
    .await
    .map_err(internal)?;
    Ok((
        StatusCode::CREATED,
        Json(ReplayLink {
            url_path: format!("/replay/{token}"),
            token,
            expires_ms,
        }),
    ))
}

/// A link's recording, expiry and revocation time.
async fn find_link(s: &ActivityStore, token: &str) -> Result<(String, u64, Option<u64>), ApiError> {
    let hash = token_hash(check_token(token)?);
    run(s, move |c| {
        Ok(c.query_row(
            "SELECT recording, expires_ms, revoked_ms FROM replay_links WHERE token_hash = ?1",
            [hash],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                ))
            },
        )
        .optional()?)
    })
    .await?
    .ok_or_else(|| not_found("no such replay link"))
}

async fn get_link(
    State(s): Store,
    Path(token): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (recording, expires_ms, revoked) = find_link(&s, &token).await?;
    if revoked.is_some() {
        return Err(gone("this replay link was revoked"));
    }
    if expires_ms <= now_ms() {
        return Err(gone("this replay link has expired"));
    }
    Ok(Json(ReplayLinkInfo {
        recording,
        expires_ms,
    }))
}

async fn revoke_link(
    State(s): Store,
    Path(token): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (recording, _, _) = find_link(&s, &token).await?;
    let hash = token_hash(&token);
    let now = now_ms() as i64;
    s.write(move |c| {
        c.execute(
            "UPDATE replay_links SET revoked_ms = coalesce(revoked_ms, ?2) WHERE token_hash = ?1",
            params![hash, now],
        )
    })
    .await
    .map_err(internal)?;
    Ok(Json(
        serde_json::json!({ "ok": true, "recording": recording }),
    ))
}
