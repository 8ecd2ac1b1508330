//! The activity store: `activity.db` in the data directory, fed from
//! slotgate's access log (requests, WebSocket sessions, sign-ins,
//! recordings), the supervisor's lifecycle events, and slotgate's live
//! connect/disconnect reports (who is online now). See docs/activity.md.
//!
//! `ingest` tails the log on its own thread and connection; `lifecycle`
//! follows the supervisor's broadcast; `retention` prunes; `query` answers
//! the API in `api`. Everything here that touches SQLite runs on blocking
//! threads, never on the async workers.

pub mod api;
pub mod db;
pub mod ingest;
pub mod lifecycle;
pub mod parse;
pub mod query;
pub mod retention;
pub mod settings;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::Connection;
use tracing::{info, warn};

pub use settings::Settings;

use crate::clock::now_ms;
use crate::supervisor::Supervisor;

/// Shared by the API handlers and the background tasks.
pub struct ActivityStore {
    pub settings: Settings,
    writer: Arc<Mutex<Connection>>,
    readers: Mutex<Vec<Connection>>,
    pub tail: Arc<Mutex<ingest::TailStatus>>,
    stop: Arc<AtomicBool>,
    live_tx: tokio::sync::mpsc::UnboundedSender<(String, slotapi::Activity)>,
    live_rx: Mutex<Option<LiveRx>>,
}

type LiveRx = tokio::sync::mpsc::UnboundedReceiver<(String, slotapi::Activity)>;

impl ActivityStore {
    /// Open (and create) `activity.db`.
    pub fn open(settings: Settings) -> anyhow::Result<Arc<ActivityStore>> {
        let (live_tx, live_rx) = tokio::sync::mpsc::unbounded_channel();
        let writer =
            db::open(&settings.db).with_context(|| format!("opening {}", settings.db.display()))?;
        Ok(Arc::new(ActivityStore {
            settings,
            writer: Arc::new(Mutex::new(writer)),
            readers: Mutex::new(Vec::new()),
            tail: Default::default(),
            stop: Arc::new(AtomicBool::new(false)),
            live_tx,
            live_rx: Mutex::new(Some(live_rx)),
        }))
    }

    /// Start the tailer thread, the lifecycle recorder and the retention
    /// job.
    pub fn start(self: &Arc<Self>, sup: Arc<Supervisor>) -> anyhow::Result<()> {
        let tailer = ingest::Tailer::new(
            &self.settings.db,
            self.settings.access_log.clone(),
            self.settings.malformed_keep,
            self.tail.clone(),
        )
        .with_context(|| format!("opening {}", self.settings.db.display()))?;
        let stop = self.stop.clone();
        std::thread::Builder::new()
            .name("activity-ingest".into())
            .spawn(move || tailer.run(stop))
            .context("starting the access-log tailer")?;
        tokio::spawn(lifecycle::run(self.clone(), sup));
        if let Some(rx) = self
            .live_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            tokio::spawn(self.clone().apply_live(rx));
        }
        tokio::spawn(retention::run(self.clone()));
        info!(
            db = %self.settings.db.display(),
            access_log = %self.settings.access_log.display(),
            "activity store ready"
        );
        Ok(())
    }

    pub fn access_log(&self) -> PathBuf {
        self.settings.access_log.clone()
    }

    /// Run `f` with a read connection on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> rusqlite::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = {
            let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            pool.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => {
                let path = self.settings.db.clone();
                tokio::task::spawn_blocking(move || db::connect(&path))
                    .await
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))??
            }
        };
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&conn);
            (conn, out)
        })
        .await
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 4 {
            pool.push(conn);
        }
        out
    }

    /// Run `f` with the store's writer connection on a blocking thread.
    pub async fn write<T, F>(&self, f: F) -> rusqlite::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = writer.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?
    }

    /// slotgate reported a WebSocket connect or disconnect (the control
    /// API's `POST /v1/slots/{id}/activity`): queue it for `live_sessions`.
    /// The report's answer never waits for SQLite; one task applies the
    /// queue in order.
    pub async fn live(&self, slot: &str, a: &slotapi::Activity) {
        if a.kind == slotapi::ActivityKind::Active {
            return;
        }
        let _ = self.live_tx.send((slot.to_string(), a.clone()));
    }

    async fn apply_live(self: Arc<Self>, mut rx: LiveRx) {
        while let Some((slot, a)) = rx.recv().await {
            let (session, user) = (a.session, a.user);
            let connect = a.kind == slotapi::ActivityKind::Connect;
            let res = self
                .write(move |c| {
                    if connect {
                        c.execute(
                            "INSERT OR IGNORE INTO live_sessions(session, slot, user, since_ms)
                             VALUES (?1, ?2, ?3, ?4)",
                            rusqlite::params![session, slot, user, now_ms() as i64],
                        )
                    } else {
                        c.execute("DELETE FROM live_sessions WHERE session = ?1", [session])
                    }
                })
                .await;
            if let Err(e) = res {
                warn!(error = %e, "activity: cannot record a live session");
            }
        }
    }
}

impl Drop for ActivityStore {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
