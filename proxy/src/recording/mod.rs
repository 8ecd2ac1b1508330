//! Session recording: every terminal WebSocket through the gateway is
//! recorded as an asciicast v2 file (`<dir>/<YYYY-MM-DD>/<request_id>.cast`,
//! mode 0600 in 0700 directories). See `docs/recording.md`.
//!
//! The proxy side ([`Recording`], one per session) runs beside the stream
//! in the body filters: it parses the raw upgraded bytes with the shared
//! WebSocket parser ([`identity::frames::MessageReader`]) and hands ttyd's
//! OUTPUT payloads, RESIZE sizes (and INPUT when the slot's template asks
//! for it) to the writer thread through a bounded queue. Nothing is
//! buffered or delayed on the stream: when the queue is full the event is
//! dropped, counted, and a marker in the file says how many were lost. The
//! writer ([`writer`]) decodes UTF-8, redacts secrets ([`redact`]) and
//! writes; it alone touches the disk.

pub mod redact;
pub mod utf8;
pub mod writer;

use std::path::PathBuf;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use identity::frames::{Direction, Message, MessageReader};
use serde::Deserialize;

use crate::metrics::Metrics;
use redact::Patterns;

/// `[slotgate.recording]`, validated.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    pub enabled: bool,
    /// Absolute.
    pub dir: PathBuf,
    pub max_size: u64,
    pub max_total: u64,
    /// `None`: keep until `max_total` needs the room.
    pub retention: Option<Duration>,
    pub patterns: Patterns,
    pub queue: usize,
}

/// What the writer needs for the file's header.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    session: String,
    user: Option<String>,
    slot: String,
    title: String,
    timestamp: u64,
    input: bool,
    size: Option<(u16, u16)>,
}

pub(crate) enum Ev {
    Output(Vec<u8>),
    Input(Vec<u8>),
    Resize(u16, u16),
}

pub(crate) enum Msg {
    Open {
        id: u64,
        path: PathBuf,
        header: Header,
        shared: Arc<Shared>,
    },
    Event {
        id: u64,
        t: f64,
        /// Events of this session dropped just before this one.
        lost: u64,
        ev: Ev,
    },
    Close {
        id: u64,
    },
}

/// State one session and the writer share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The session ended (set after its last event was sent).
    closed: AtomicBool,
    /// Bytes written so far.
    bytes: AtomicU64,
    truncated: AtomicBool,
    done: Mutex<Option<tokio::sync::oneshot::Sender<(u64, bool)>>>,
}

impl Shared {
    /// The file is complete (`ok`) or could not be created.
    fn finish(&self, bytes: u64, ok: bool) {
        if let Some(tx) = self.done.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send((bytes, ok));
        }
    }
}

/// The gateway's recorder: cheap to clone; `None` in the gateway when
/// recording is off.
#[derive(Clone)]
pub struct Recorder {
    cfg: Arc<RecordingConfig>,
    tx: SyncSender<Msg>,
    metrics: Arc<Metrics>,
    next_id: Arc<AtomicU64>,
}

impl Recorder {
    /// Start the writer thread; fails when the directory cannot be made.
    pub fn start(cfg: &RecordingConfig, metrics: Arc<Metrics>) -> std::io::Result<Option<Recorder>> {
        if !cfg.enabled {
            return Ok(None);
        }
        let cfg = Arc::new(cfg.clone());
        let writer = writer::Writer::new(Arc::clone(&cfg), Arc::clone(&metrics))?;
        let (tx, rx) = sync_channel(cfg.queue);
        std::thread::Builder::new()
            .name("slotgate-recording".into())
            .spawn(move || writer.run(rx))?;
        Ok(Some(Recorder {
            cfg,
            tx,
            metrics,
            next_id: Arc::new(AtomicU64::new(1)),
        }))
    }

    /// Begin recording the session `session` (the request id) of `user`
    /// on `slot`; `input` records keystrokes too.
    pub fn open(
        &self,
        session: &str,
        user: Option<&str>,
        slot: &str,
        input: bool,
        started: SystemTime,
    ) -> Recording {
        let id = self.next_id.fetch_add(1, Relaxed);
        let day = humantime::format_rfc3339(started).to_string();
        let path = self
            .cfg
            .dir
            .join(&day[..10])
            .join(format!("{session}.cast"));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = Arc::new(Shared {
            done: Mutex::new(Some(tx)),
            ..Shared::default()
        });
        let header = Header {
            session: session.to_string(),
            user: user.map(str::to_string),
            slot: slot.to_string(),
            title: format!("{} on slot {slot}", user.unwrap_or("anonymous")),
            timestamp: started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            input,
            size: None,
        };
        let sent = self
            .tx
            .try_send(Msg::Open {
                id,
                path: path.clone(),
                header,
                shared: Arc::clone(&shared),
            })
            .is_ok();
        if !sent {
            self.metrics.recording_events_dropped.fetch_add(1, Relaxed);
        }
        Recording {
            id,
            path: sent.then_some(path),
            tx: self.tx.clone(),
            metrics: Arc::clone(&self.metrics),
            start: Instant::now(),
            client: MessageReader::new(Direction::ClientToServer),
            server: MessageReader::new(Direction::ServerToClient),
            input,
            client_msg: None,
            server_msg: None,
            json: Vec::new(),
            lost: 0,
            broken: false,
            shared,
            done: Some(rx),
        }
    }
}

/// Largest RESIZE or hello JSON kept for parsing.
const MAX_JSON: usize = 4096;

/// One session's recorder, on the proxy side.
pub struct Recording {
    id: u64,
    /// `None` when the recording could not begin.
    path: Option<PathBuf>,
    tx: SyncSender<Msg>,
    metrics: Arc<Metrics>,
    start: Instant,
    client: MessageReader,
    server: MessageReader,
    input: bool,
    /// Command byte of the message in progress in each direction.
    client_msg: Option<u8>,
    server_msg: Option<u8>,
    json: Vec<u8>,
    lost: u64,
    broken: bool,
    shared: Arc<Shared>,
    done: Option<tokio::sync::oneshot::Receiver<(u64, bool)>>,
}

#[derive(Deserialize)]
struct Size {
    columns: u16,
    rows: u16,
}

impl Recording {
    fn send(&mut self, ev: Ev) {
        let msg = Msg::Event {
            id: self.id,
            t: self.start.elapsed().as_secs_f64(),
            lost: self.lost,
            ev,
        };
        match self.tx.try_send(msg) {
            Ok(()) => self.lost = 0,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.lost += 1;
                self.metrics.recording_events_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    fn active(&self) -> bool {
        self.path.is_some() && !self.broken && !self.shared.truncated.load(Relaxed)
    }

    /// Bytes the client sent (after the viewer filter, when there is one).
    pub fn client_bytes(&mut self, bytes: &[u8]) {
        if !self.active() {
            return;
        }
        let mut input = Vec::new();
        let mut sizes = Vec::new();
        let (cur, json, record_input) = (&mut self.client_msg, &mut self.json, self.input);
        let r = self.client.feed(bytes, |m| match m {
            Message::Start { first } => {
                *cur = Some(first);
                json.clear();
                if first == b'{' {
                    json.push(b'{');
                }
            }
            Message::Data(d) => match *cur {
                Some(b'0') if record_input => input.extend_from_slice(d),
                Some(b'1') | Some(b'{') if json.len() + d.len() <= MAX_JSON => {
                    json.extend_from_slice(d)
                }
                _ => {}
            },
            Message::End => {
                if matches!(*cur, Some(b'1') | Some(b'{')) {
                    // The hello also carries the AuthToken: only the size
                    // is read, nothing of it is kept.
                    if let Ok(s) = serde_json::from_slice::<Size>(json) {
                        sizes.push((s.columns, s.rows));
                    }
                    json.clear();
                }
                *cur = None;
            }
        });
        if !input.is_empty() {
            self.send(Ev::Input(input));
        }
        for (c, r) in sizes {
            self.send(Ev::Resize(c, r));
        }
        if let Err(e) = r {
            self.stop(&e.to_string());
        }
    }

    /// Bytes ttyd sent.
    pub fn server_bytes(&mut self, bytes: &[u8]) {
        if !self.active() {
            return;
        }
        let mut output = Vec::new();
        let cur = &mut self.server_msg;
        let r = self.server.feed(bytes, |m| match m {
            Message::Start { first } => *cur = Some(first),
            Message::Data(d) if *cur == Some(b'0') => output.extend_from_slice(d),
            Message::Data(_) => {}
            Message::End => *cur = None,
        });
        if !output.is_empty() {
            self.send(Ev::Output(output));
        }
        if let Err(e) = r {
            self.stop(&e.to_string());
        }
    }

    /// The stream cannot be parsed: stop recording (the stream itself is
    /// not touched).
    fn stop(&mut self, why: &str) {
        self.broken = true;
        tracing::warn!(path = ?self.path, error = why, "recording stopped: unparsable frames");
    }

    /// Whether keystrokes are recorded.
    pub fn records_input(&self) -> bool {
        self.input
    }

    /// The session ended: close the file and wait (bounded) for its final
    /// size. Returns (path, bytes); path `None` when nothing was recorded.
    pub async fn finish(mut self) -> (Option<PathBuf>, u64) {
        let Some(path) = self.path.take() else {
            return (None, 0);
        };
        self.shared.closed.store(true, Release);
        let _ = self.tx.try_send(Msg::Close { id: self.id });
        let done = self.done.take();
        let waited = match done {
            Some(rx) => tokio::time::timeout(Duration::from_secs(2), rx).await.ok(),
            None => None,
        };
        match waited {
            Some(Ok((bytes, true))) => (Some(path), bytes),
            Some(Ok((_, false))) => (None, 0),
            // Still being written: the size so far.
            _ => (Some(path), self.shared.bytes.load(Relaxed)),
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // Dropped without `finish` (an aborted request): still close.
        if self.path.is_some() {
            self.shared.closed.store(true, Release);
            let _ = self.tx.try_send(Msg::Close { id: self.id });
        }
    }
}
