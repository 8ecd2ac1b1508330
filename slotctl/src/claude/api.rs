//! The control API's Claude routes: `/v1/usage…`, `/v1/quotas…`,
//! `/v1/keys`. Queries run on the blocking pool; bad parameters are 400s
//! that name the parameter. No route ever answers a key's value.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use slotapi::UserName;

use super::query::{self, Filter, Group};
use super::quota::{self, Override};
use super::{ingest, keys, Claude};
use crate::api::ApiError;

type S = State<Arc<Claude>>;

pub fn router(c: Arc<Claude>) -> Router {
    Router::new()
        .route("/v1/usage", get(usage))
        .route("/v1/usage/tools", get(tools))
        .route("/v1/usage/prompts", get(prompts))
        .route("/v1/usage/ingest", get(ingest_status))
        .route("/v1/usage/prices", get(prices))
        .route("/v1/quotas", get(list_quotas))
        .route(
            "/v1/quotas/{user}",
            get(get_quota).put(put_quota).delete(clear_quota),
        )
        .route("/v1/keys", get(keys_overview))
        .with_state(c)
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("usage store: {e}"),
    )
}

/// Run `f` with the connection on the blocking pool.
async fn with_db<T: Send + 'static>(
    c: &Arc<Claude>,
    f: impl FnOnce(&Claude, &rusqlite::Connection) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let c = c.clone();
    tokio::task::spawn_blocking(move || {
        let conn = c.db.lock();
        f(&c, &conn)
    })
    .await
    .map_err(internal)?
}

/// RFC 3339, a `YYYY-MM-DD` date (UTC midnight), or milliseconds.
pub fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    if let Some(ms) = crate::activity::query::parse_time(s) {
        return Ok(ms);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(bad(format!(
        "{name}={s:?} is not a time: use RFC 3339, YYYY-MM-DD or milliseconds since the epoch"
    )))
}

fn user_name(raw: &str) -> Result<String, ApiError> {
    UserName::new(raw)
        .map(|u| u.to_string())
        .map_err(|e| bad(e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    user: Option<String>,
    model: Option<String>,
    slot: Option<String>,
    since: Option<String>,
    until: Option<String>,
    group: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

impl UsageQuery {
    fn filter(&self) -> Result<Filter, ApiError> {
        if self.slot.is_some() {
            return Err(bad(
                "slot: Claude usage is per user (a user's slots share one HOME and so one transcript directory); filter by user",
            ));
        }
        Ok(Filter {
            user: self.user.as_deref().map(user_name).transpose()?,
            model: self.model.clone(),
            since_ms: self
                .since
                .as_deref()
                .map(|s| parse_time("since", s))
                .transpose()?,
            until_ms: self
                .until
                .as_deref()
                .map(|s| parse_time("until", s))
                .transpose()?,
        })
    }
}

fn query_of(q: Result<Query<UsageQuery>, QueryRejection>) -> Result<UsageQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|e| bad(e.body_text()))
}

async fn usage(
    State(c): S,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<query::UsageAnswer>, ApiError> {
    let q = query_of(q)?;
    let f = q.filter()?;
    let g = match q.group.as_deref() {
        None => Group::Day,
        Some(s) => Group::parse(s).ok_or_else(|| {
            bad(format!(
                "group={s:?} is not one of day, week, month, user, model"
            ))
        })?,
    };
    with_db(&c, move |_, conn| {
        query::usage(conn, g, &f).map(Json).map_err(internal)
    })
    .await
}

#[derive(Serialize)]
struct Items<T> {
    items: Vec<T>,
}

async fn tools(
    State(c): S,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<Items<query::ToolItem>>, ApiError> {
    let f = query_of(q)?.filter()?;
    with_db(&c, move |_, conn| {
        query::tools(conn, &f)
            .map(|items| Json(Items { items }))
            .map_err(internal)
    })
    .await
}

async fn prompts(
    State(c): S,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<query::Page<query::PromptItem>>, ApiError> {
    let q = query_of(q)?;
    let f = q.filter()?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(bad("limit must be 1 to 500"));
    }
    let cursor = match q.cursor.as_deref() {
        None => None,
        Some(s) => {
            Some(query::parse_cursor(s).ok_or_else(|| bad("cursor is not one this API gave"))?)
        }
    };
    with_db(&c, move |_, conn| {
        query::prompts(conn, &f, limit, cursor)
            .map(Json)
            .map_err(internal)
    })
    .await
}

#[derive(Serialize)]
struct FileRow {
    path: String,
    user: String,
    offset: i64,
    lines: i64,
    malformed: i64,
    updated_ms: i64,
}

#[derive(Serialize)]
struct IngestStatus {
    watching: bool,
    users: Vec<String>,
    files: Vec<FileRow>,
    lines: i64,
    malformed: i64,
}

async fn ingest_status(State(c): S) -> Result<Json<IngestStatus>, ApiError> {
    with_db(&c, |c, conn| {
        let mut st = conn
            .prepare("SELECT path, user, offset, lines, malformed, updated_ms FROM claude_files ORDER BY path")
            .map_err(internal)?;
        let files: Vec<FileRow> = st
            .query_map([], |r| {
                Ok(FileRow {
                    path: r.get(0)?,
                    user: r.get(1)?,
                    offset: r.get(2)?,
                    lines: r.get(3)?,
                    malformed: r.get(4)?,
                    updated_ms: r.get(5)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(internal)?;
        Ok(Json(IngestStatus {
            watching: c.cfg.watch,
            users: ingest::users(&c.data_dir),
            lines: files.iter().map(|f| f.lines).sum(),
            malformed: files.iter().map(|f| f.malformed).sum(),
            files,
        }))
    })
    .await
}

async fn prices(State(c): S) -> Json<BTreeMap<String, super::config::Price>> {
    Json(c.cfg.prices.entries().clone())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaQuery {
    user: Option<String>,
}

async fn list_quotas(
    State(c): S,
    q: Result<Query<QuotaQuery>, QueryRejection>,
) -> Result<Json<Items<quota::Status>>, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let only = q.user.as_deref().map(user_name).transpose()?;
    with_db(&c, move |c, conn| {
        let mut users = match only {
            Some(u) => vec![u],
            None => {
                let mut v = quota::known_users(conn).map_err(internal)?;
                v.extend(ingest::users(&c.data_dir));
                v
            }
        };
        users.sort();
        users.dedup();
        let now = crate::clock::now_ms() as i64;
        let items = users
            .iter()
            .map(|u| quota::status(conn, &c.cfg.quotas, u, now))
            .collect::<rusqlite::Result<_>>()
            .map_err(internal)?;
        Ok(Json(Items { items }))
    })
    .await
}

/// A user's quota status now.
fn status_now(
    c: &Claude,
    conn: &rusqlite::Connection,
    user: &str,
) -> Result<Json<quota::Status>, ApiError> {
    quota::status(conn, &c.cfg.quotas, user, crate::clock::now_ms() as i64)
        .map(Json)
        .map_err(internal)
}

async fn get_quota(State(c): S, Path(user): Path<String>) -> Result<Json<quota::Status>, ApiError> {
    let user = user_name(&user)?;
    with_db(&c, move |c, conn| status_now(c, conn, &user)).await
}

async fn put_quota(
    State(c): S,
    Path(user): Path<String>,
    body: Result<Json<Override>, JsonRejection>,
) -> Result<Json<quota::Status>, ApiError> {
    let user = user_name(&user)?;
    let ov = body
        .map(|Json(b)| b)
        .map_err(|e| bad(format!("invalid quota override: {}", e.body_text())))?;
    ov.check().map_err(bad)?;
    with_db(&c, move |c, conn| {
        quota::set_override(conn, &user, &ov).map_err(internal)?;
        tracing::info!(user = %user, "quota override set");
        status_now(c, conn, &user)
    })
    .await
}

async fn clear_quota(
    State(c): S,
    Path(user): Path<String>,
) -> Result<Json<quota::Status>, ApiError> {
    let user = user_name(&user)?;
    with_db(&c, move |c, conn| {
        if !quota::clear_override(conn, &user).map_err(internal)? {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{user} has no quota override"),
            ));
        }
        tracing::info!(user = %user, "quota override cleared");
        status_now(c, conn, &user)
    })
    .await
}

async fn keys_overview(State(c): S) -> Result<Json<keys::Overview>, ApiError> {
    with_db(&c, |c, conn| {
        keys::overview(conn, &c.data_dir)
            .map(Json)
            .map_err(internal)
    })
    .await
}
