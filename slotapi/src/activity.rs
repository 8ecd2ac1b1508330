//! Types of the activity-store routes of the control API (`/v1/activity/…`,
//! `/v1/recordings…`, `/v1/replay-links/…`), shared by slotctl's daemon,
//! its CLI and slotgate's `/api/`. The meaning of every field is in
//! `docs/api.md` and `docs/activity.md`.

use serde::{Deserialize, Serialize};

/// One page of a list: newest first; pass `next_cursor` back as `cursor`
/// for the next page (`null` on the last page).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Query parameters of every activity list. Each route accepts only the
/// ones that apply to it and refuses the others with 400.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// RFC 3339 or milliseconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// requests: `404` or a class such as `4xx`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// requests: `http` or `ws`; events: the event kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// requests: the gateway's route label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// requests: a substring of the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// stats: `day`, `week` or `month`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
}

/// `GET /v1/activity/online`: a WebSocket session open now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineItem {
    pub user: Option<String>,
    pub slot: String,
    pub session: String,
    /// Not known while the session is open (slotgate reports it at close).
    pub client_ip: Option<String>,
    pub since_ms: u64,
}

/// `GET /v1/activity/sessions`: a closed WebSocket session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionItem {
    pub session: String,
    pub user: Option<String>,
    pub slot: Option<String>,
    pub client_ip: Option<String>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub duration_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Id of the session's recording, if slotgate recorded it.
    pub recording: Option<String>,
}

/// `GET /v1/activity/requests`: one access-log line (docs/access-log.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestItem {
    pub ts_ms: u64,
    pub start_ms: u64,
    pub kind: String,
    pub request_id: String,
    pub client_ip: Option<String>,
    pub user: Option<String>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub route: String,
    pub slot: Option<String>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub tls: bool,
    pub served_by: String,
    pub user_agent: Option<String>,
    pub error: Option<String>,
}

/// `GET /v1/activity/logins`: one sign-in attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginItem {
    pub ts_ms: u64,
    /// The account the attempt was for; `null` when slotgate could not
    /// tell (a refused form, a provider error).
    pub user: Option<String>,
    /// `password`, `oidc:<name>`, `oauth2:<name>` or `embed`.
    pub method: String,
    pub client_ip: Option<String>,
    pub ok: bool,
    pub error: Option<String>,
}

/// `GET /v1/activity/events`: one slot lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventItem {
    pub ts_ms: u64,
    pub slot: String,
    pub owner: Option<String>,
    /// `created`, `started`, `stopped`, `exited`, `restarted`, `errored`,
    /// `deleted`.
    pub kind: String,
    pub detail: Option<String>,
}

/// The lifecycle event kinds, in the order of a slot's life.
pub const EVENT_KINDS: &[&str] = &[
    "created",
    "started",
    "stopped",
    "exited",
    "restarted",
    "errored",
    "deleted",
];

/// `GET /v1/activity/stats`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub period: String,
    pub buckets: Vec<StatsBucket>,
    pub per_user: Vec<UserStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsBucket {
    pub start_ms: u64,
    pub sessions: u64,
    pub users: u64,
    pub session_ms: u64,
    pub requests: u64,
    pub errors: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserStats {
    pub user: String,
    pub sessions: u64,
    pub session_ms: u64,
    pub requests: u64,
}

/// `GET /v1/activity/ingest`: how far the access log has been read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestStatus {
    /// The access log being followed.
    pub path: String,
    /// Lines stored since the store was created.
    pub lines: u64,
    /// Malformed lines seen (also those no longer kept).
    pub malformed: u64,
    /// Bytes written to the log files on disk but not yet read.
    pub lag_bytes: u64,
    /// When the last batch was stored.
    pub last_ingest_ms: Option<u64>,
    /// The last error the tailer hit (it keeps retrying), if any.
    pub last_error: Option<String>,
    pub files: Vec<IngestFile>,
}

/// A log file the store knows, recognised by device, inode and a
/// fingerprint of its first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestFile {
    /// Where the file was last seen (`null` once it is gone).
    pub path: Option<String>,
    pub dev: u64,
    pub inode: u64,
    pub fingerprint: String,
    pub offset: u64,
    /// Its size on disk, when it is still there.
    pub size: Option<u64>,
    pub lines: u64,
    pub malformed: u64,
    pub updated_ms: u64,
}

/// `GET /v1/activity/malformed`: a line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MalformedItem {
    pub id: u64,
    pub ts_ms: u64,
    pub file: String,
    pub offset: u64,
    pub reason: String,
    /// The line (at most 4 KiB of it, lossily decoded).
    pub line: String,
}

/// `GET /v1/recordings`: one session recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingItem {
    /// The recording's id: the WebSocket session's request id.
    pub id: String,
    pub session: String,
    pub user: Option<String>,
    pub slot: Option<String>,
    pub start_ms: u64,
    pub duration_ms: u64,
    pub size_bytes: u64,
    /// Whether keyboard input was recorded too.
    pub input: bool,
    /// Whether the file is still on disk.
    pub available: bool,
}

/// `POST /v1/recordings/{id}/links`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateReplayLink {
    /// How long the link stays valid: `10m`, `1h`, `7d` (at most 30 days).
    pub ttl: String,
}

/// The answer to `POST /v1/recordings/{id}/links`. The token is shown once;
/// the store keeps only its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayLink {
    pub token: String,
    pub url_path: String,
    pub expires_ms: u64,
}

/// `GET /v1/replay-links/{token}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayLinkInfo {
    pub recording: String,
    pub expires_ms: u64,
}
