//! Request and response bodies of the `/v1` control API. Field names here are
//! the stable JSON that `slotctl --json` prints and that scripts read; they
//! are documented in `docs/cli.md` and must only grow, never change meaning.

use serde::{Deserialize, Serialize};

use crate::{SlotId, UserName};

/// Where a slot is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    /// ttyd spawned, socket not yet answering the health probe.
    Starting,
    /// Socket answers `GET /slot/<id>/token` with 200.
    Online,
    /// Stop requested; the tree is being terminated.
    Stopping,
    /// Not running, and not meant to run.
    Stopped,
    /// Kept failing inside the failure window; needs a human (see `reason`).
    Errored,
    /// Died or went unhealthy; waiting out the backoff delay before a restart.
    Backoff,
}

impl SlotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Starting => "starting",
            SlotStatus::Online => "online",
            SlotStatus::Stopping => "stopping",
            SlotStatus::Stopped => "stopped",
            SlotStatus::Errored => "errored",
            SlotStatus::Backoff => "backoff",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "starting" => SlotStatus::Starting,
            "online" => SlotStatus::Online,
            "stopping" => SlotStatus::Stopping,
            "stopped" => SlotStatus::Stopped,
            "errored" => SlotStatus::Errored,
            "backoff" => SlotStatus::Backoff,
            _ => return None,
        })
    }
}

impl std::fmt::Display for SlotStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One slot as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub id: SlotId,
    pub template: String,
    pub owner: UserName,
    pub status: SlotStatus,
    /// Whether the slot is meant to run (`true` after create/start, `false`
    /// after stop or idle stop).
    pub enabled: bool,
    /// ttyd's pid while it runs.
    pub pid: Option<u32>,
    /// Restarts since the slot was created (crash, health or manual).
    pub restarts: u32,
    /// Milliseconds since the current ttyd started; 0 when not running.
    pub uptime_ms: u64,
    /// CPU use of the whole slot tree (ttyd, tmux, every shell), percent of
    /// one core, averaged since the previous sample.
    pub cpu_percent: f64,
    /// Resident memory of the whole slot tree in bytes.
    pub memory_bytes: u64,
    /// Number of processes in the slot tree.
    pub processes: u32,
    /// Path of the slot's unix socket.
    pub socket: String,
    /// Connected WebSocket clients, as reported through the activity call.
    pub clients: u32,
    /// Why the slot is errored or last went into backoff.
    pub reason: Option<String>,
    /// How ttyd last exited (`exit 1`, `signal 9`), if it ever did.
    pub last_exit: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Which resource control applies: `cgroup-v2`, `cgroup-v1`, `rlimit`.
    pub isolation: String,
    /// The template records keystrokes in session recordings
    /// (`[recording] input = true`); absent in older answers.
    #[serde(default)]
    pub record_input: bool,
    /// The Unix uid the slot's processes run as (its sandbox owner's);
    /// absent while it has not started yet, and in older answers.
    #[serde(default)]
    pub uid: Option<u32>,
}

/// `POST /v1/slots`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSlot {
    pub id: SlotId,
    pub template: String,
    /// Defaults to the slot id.
    #[serde(default)]
    pub owner: Option<UserName>,
    /// Start right away (default true).
    #[serde(default = "yes")]
    pub start: bool,
}

fn yes() -> bool {
    true
}

/// `POST /v1/slots/{id}/ensure`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsureSlot {
    /// How long to wait for the slot to come online (default 10 s, at most
    /// 60 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `DELETE /v1/slots/{id}` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeleteSlot {
    /// Keep `data/users/<owner>/` (default true: a sandbox holds the user's
    /// work and is only removed when asked).
    #[serde(default)]
    pub keep_sandbox: Option<bool>,
}

/// What the proxy reports through `POST /v1/slots/{id}/activity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityKind {
    Connect,
    Disconnect,
    /// Traffic on an open session; resets the idle clock.
    Active,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    pub kind: ActivityKind,
    /// Opaque id of the WebSocket session (the proxy's request id).
    pub session: String,
    #[serde(default)]
    pub user: Option<String>,
}

/// One lifecycle change on `GET /v1/events` (JSON Lines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub ts_ms: u64,
    pub slot: SlotId,
    pub status: SlotStatus,
    pub pid: Option<u32>,
    pub reason: Option<String>,
}

/// Body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable: `not_found`, `conflict`, `bad_request`,
    /// `start_failed`, `timeout`, `internal`.
    pub code: String,
    /// For people.
    pub message: String,
}

/// `GET /v1/health`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    pub pid: u32,
    pub uptime_ms: u64,
    pub slots: usize,
    pub online: usize,
}
