//! The gateway's view of slots: where a slot's socket is, whether it is
//! there, and starting a slot on demand through slotctl's control API
//! (`ensure`). Concurrent requests for the same stopped slot share one start.
//! It also reports WebSocket activity to slotctl, fire-and-forget. This
//! module talks only to slotctl's socket; it never spawns or signals a
//! process and never blocks a request on anything but the start it asked
//! for.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use slotapi::config::Paths;
use slotapi::{
    Activity, ActivityKind, Client, ClientError, CreateSlot, Health, SlotId, SlotInfo, SlotStatus,
    UserName,
};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Why a slot cannot be reached. Each maps to one status and one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotError {
    /// slotctl has no such slot.
    NotFound,
    /// slotctl's control socket does not answer.
    DaemonDown,
    /// slotctl tried and the slot did not come up (detail is for the log).
    StartFailed(String),
    /// The slot did not come online within the wait.
    Timeout,
}

impl SlotError {
    pub fn status(&self) -> u16 {
        match self {
            SlotError::NotFound => 404,
            SlotError::DaemonDown => 503,
            SlotError::StartFailed(_) => 502,
            SlotError::Timeout => 504,
        }
    }

    /// Short code for the access log and the status endpoint.
    pub fn code(&self) -> &'static str {
        match self {
            SlotError::NotFound => "slot_not_found",
            SlotError::DaemonDown => "supervisor_unavailable",
            SlotError::StartFailed(_) => "start_failed",
            SlotError::Timeout => "start_timeout",
        }
    }

    fn from_client(e: ClientError) -> SlotError {
        match e {
            ClientError::NotRunning { .. } => SlotError::DaemonDown,
            ClientError::Api { status: 404, .. } => SlotError::NotFound,
            ClientError::Api { code, .. } if code == "timeout" => SlotError::Timeout,
            ClientError::Api { message, .. } => SlotError::StartFailed(message),
            ClientError::Timeout(_) => SlotError::Timeout,
            ClientError::Transport(m) | ClientError::Decode(m) => SlotError::StartFailed(m),
        }
    }
}

type StartResult = Option<Result<(), SlotError>>;

struct Start {
    rx: watch::Receiver<StartResult>,
    finished: Option<Instant>,
}

/// How long a finished start's outcome stays visible to the status endpoint.
const REMEMBER_OUTCOME: Duration = Duration::from_secs(15);

/// What `/slot/<id>/_slotgate/status` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusBody {
    pub slot: String,
    /// `online`, `starting`, `stopped`, `failed`, `not_found`, `unavailable`.
    pub state: &'static str,
    pub message: String,
}

pub struct Slots {
    paths: Paths,
    client: Client,
    start_timeout: Duration,
    starts: Mutex<HashMap<SlotId, Start>>,
    metrics: Arc<Metrics>,
    /// slotctl's last health answer (`None`: it did not answer) and when.
    health: tokio::sync::Mutex<Option<(Instant, Option<Health>)>>,
}

/// How long a health answer from slotctl is reused: a monitor polling
/// `/healthz` often must not become load on slotctl.
const HEALTH_FOR: Duration = Duration::from_secs(1);
/// How long slotctl has to answer a health question.
const HEALTH_WAIT: Duration = Duration::from_secs(1);

impl Slots {
    pub fn new(paths: Paths, start_timeout: Duration, metrics: Arc<Metrics>) -> Arc<Slots> {
        let client = Client::new(paths.control_socket()).with_timeout(Duration::from_secs(5));
        Arc::new(Slots {
            paths,
            client,
            start_timeout,
            starts: Mutex::new(HashMap::new()),
            metrics,
            health: tokio::sync::Mutex::new(None),
        })
    }

    /// slotctl's health, `None` when it does not answer (asked at most
    /// once per [`HEALTH_FOR`]; a change is logged once).
    pub async fn supervisor_health(&self) -> Option<Health> {
        let mut last = self.health.lock().await;
        if let Some((_, h)) = last.as_ref().filter(|(at, _)| at.elapsed() < HEALTH_FOR) {
            return h.clone();
        }
        let answer = match tokio::time::timeout(HEALTH_WAIT, self.client.health()).await {
            Ok(Ok(h)) => Ok(h),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {HEALTH_WAIT:?}")),
        };
        let answered_before = last.as_ref().is_none_or(|(_, h)| h.is_some());
        match &answer {
            Err(e) if answered_before => {
                tracing::warn!(error = %e, "health: slotctl does not answer")
            }
            Ok(_) if !answered_before => tracing::info!("health: slotctl answers again"),
            _ => {}
        }
        let answer = answer.ok();
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    pub fn socket(&self, id: &SlotId) -> PathBuf {
        self.paths.slot_socket(id)
    }

    /// Cheap liveness hint: the socket file exists. A stale socket (ttyd
    /// died without cleaning up) is caught when the connect fails.
    pub fn socket_present(&self, id: &SlotId) -> bool {
        std::fs::symlink_metadata(self.socket(id)).is_ok()
    }

    /// Ask slotctl about the slot.
    pub async fn info(&self, id: &SlotId) -> Result<SlotInfo, SlotError> {
        self.client.get(id).await.map_err(SlotError::from_client)
    }

    /// Whether the slot's template records keystrokes too (asked once per
    /// WebSocket session; when slotctl does not answer, no).
    pub async fn records_input(&self, id: &SlotId) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.info(id)).await,
            Ok(Ok(info)) if info.record_input
        )
    }

    /// Create (and start) a slot owned by `owner` from `template`.
    pub async fn create(
        &self,
        id: &SlotId,
        owner: &UserName,
        template: &str,
    ) -> Result<SlotInfo, SlotError> {
        let req = CreateSlot {
            id: id.clone(),
            template: template.to_string(),
            owner: Some(owner.clone()),
            start: true,
        };
        self.client
            .create(&req)
            .await
            .map_err(SlotError::from_client)
    }

    /// Start the slot unless a start is already under way; returns a handle
    /// that resolves when the start finishes.
    pub fn start(self: &Arc<Self>, id: &SlotId) -> watch::Receiver<StartResult> {
        let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        starts.retain(|_, s| s.finished.is_none_or(|t| t.elapsed() < REMEMBER_OUTCOME));
        if let Some(s) = starts.get(id) {
            if s.finished.is_none() {
                return s.rx.clone();
            }
        }
        let (tx, rx) = watch::channel(None);
        starts.insert(
            id.clone(),
            Start {
                rx: rx.clone(),
                finished: None,
            },
        );
        drop(starts);
        let this = Arc::clone(self);
        let id = id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = this
                .client
                .ensure(&id, this.start_timeout)
                .await
                .map(|_| ())
                .map_err(SlotError::from_client);
            this.metrics.slot_started(result.is_ok(), started.elapsed());
            match &result {
                Ok(()) => {
                    tracing::info!(slot = %id, took_ms = started.elapsed().as_millis() as u64, "slot started on demand");
                }
                Err(e) => {
                    tracing::warn!(slot = %id, error = ?e, "on-demand start failed");
                }
            }
            if let Some(s) = this
                .starts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&id)
            {
                s.finished = Some(Instant::now());
            }
            let _ = tx.send(Some(result));
        });
        rx
    }

    /// Start the slot if needed and wait (bounded) until it is online.
    pub async fn wait_online(self: &Arc<Self>, id: &SlotId) -> Result<(), SlotError> {
        let mut rx = self.start(id);
        let wait = self.start_timeout + Duration::from_secs(1);
        let outcome = tokio::time::timeout(wait, rx.wait_for(|r| r.is_some())).await;
        match outcome {
            Ok(Ok(r)) => r.clone().unwrap_or(Err(SlotError::Timeout)),
            Ok(Err(_)) => Err(SlotError::StartFailed(
                "start task ended without an outcome".into(),
            )),
            Err(_) => Err(SlotError::Timeout),
        }
    }

    /// The last start outcome, if one finished recently.
    fn recent_start(&self, id: &SlotId) -> Option<StartResult> {
        let starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        let s = starts.get(id)?;
        match s.finished {
            None => Some(None),
            Some(t) if t.elapsed() < REMEMBER_OUTCOME => Some(s.rx.borrow().clone()),
            Some(_) => None,
        }
    }

    /// Body and HTTP status for the status endpoint.
    pub async fn status(&self, id: &SlotId) -> (u16, StatusBody) {
        let body = |state, message: &str| StatusBody {
            slot: id.to_string(),
            state,
            message: message.to_string(),
        };
        match self.recent_start(id) {
            Some(None) => return (200, body("starting", "Starting your terminal…")),
            Some(Some(Err(e))) => return (200, body("failed", failure_message(&e))),
            _ => {}
        }
        match self.info(id).await {
            Err(SlotError::NotFound) => (404, body("not_found", "There is no terminal with this name.")),
            Err(e @ SlotError::DaemonDown) => (503, body("unavailable", failure_message(&e))),
            Err(e) => (502, body("failed", failure_message(&e))),
            Ok(info) => match info.status {
                SlotStatus::Online if self.socket_present(id) => (200, body("online", "Your terminal is ready.")),
                SlotStatus::Online | SlotStatus::Starting | SlotStatus::Backoff => {
                    (200, body("starting", "Starting your terminal…"))
                }
                SlotStatus::Errored => (
                    200,
                    body("failed", "The terminal keeps failing to start; an administrator needs to look at it."),
                ),
                SlotStatus::Stopped | SlotStatus::Stopping => (200, body("stopped", "The terminal is stopped.")),
            },
        }
    }

    /// Tell slotctl about a WebSocket session, without waiting for it.
    pub fn report(&self, id: &SlotId, kind: ActivityKind, session: &str, user: Option<&str>) {
        let client = self.client.clone();
        let id = id.clone();
        let activity = Activity {
            kind,
            session: session.to_string(),
            user: user.map(str::to_string),
        };
        let metrics = Arc::clone(&self.metrics);
        tokio::spawn(async move {
            if let Err(e) = client.activity(&id, &activity).await {
                metrics.activity_reports_failed.fetch_add(1, Relaxed);
                tracing::debug!(slot = %id, error = %e, "activity report not accepted");
            }
        });
    }
}

/// What a person is told when a slot cannot be reached: what happened and
/// what to do, never the upstream's own error text.
pub fn failure_message(e: &SlotError) -> &'static str {
    match e {
        SlotError::NotFound => "There is no terminal with this name.",
        SlotError::DaemonDown => {
            "The slot supervisor (slotctl) is not running, so the terminal cannot be started. Try again shortly or tell an administrator."
        }
        SlotError::StartFailed(_) => {
            "The terminal could not be started. An administrator can see why with `slotctl status <slot>`."
        }
        SlotError::Timeout => "The terminal took too long to start. Reload the page to try again.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_statuses() {
        let cases = [
            (
                ClientError::NotRunning {
                    path: "/x".into(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                },
                503,
            ),
            (
                ClientError::Api {
                    status: 404,
                    code: "not_found".into(),
                    message: "no slot".into(),
                },
                404,
            ),
            (
                ClientError::Api {
                    status: 504,
                    code: "timeout".into(),
                    message: "slow".into(),
                },
                504,
            ),
            (
                ClientError::Api {
                    status: 500,
                    code: "start_failed".into(),
                    message: "ttyd exited".into(),
                },
                502,
            ),
            (ClientError::Timeout(Duration::from_secs(1)), 504),
        ];
        for (e, want) in cases {
            let text = e.to_string();
            assert_eq!(SlotError::from_client(e).status(), want, "{text}");
        }
    }

    #[tokio::test]
    async fn daemon_down_is_reported_not_hidden() {
        let dir = std::env::temp_dir().join(format!("sg-slots-{}", std::process::id()));
        let paths = Paths {
            data_dir: dir.join("data"),
            run_dir: dir.join("run"),
            templates_dir: dir.join("t"),
        };
        let slots = Slots::new(
            paths,
            Duration::from_millis(300),
            Arc::new(Metrics::default()),
        );
        let id = SlotId::new("alice").unwrap();
        assert!(!slots.socket_present(&id));
        assert_eq!(slots.wait_online(&id).await, Err(SlotError::DaemonDown));
        // The failure stays visible to the status endpoint for a while.
        let (code, body) = slots.status(&id).await;
        assert_eq!((code, body.state), (200, "failed"));
        assert!(body.message.contains("slotctl"), "{}", body.message);
    }
}
