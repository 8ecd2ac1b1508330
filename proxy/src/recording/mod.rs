//! Session recording: every terminal WebSocket through the gateway is
//! recorded as an asciicast v2 file (`<dir>/<YYYY-MM-DD>/<request_id>.cast`,
//! mode 0600 in 0700 directories). See `docs/recording.md`.
//!
//! The proxy side ([`Recording`], one per session) runs beside the stream
//! in the WebSocket relay's hooks: it parses the raw upgraded bytes with the shared
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

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
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
    /// Whether keystrokes are recorded: [`INPUT_UNKNOWN`] until slotctl
    /// answers (just after the session starts), then off or on.
    input: AtomicU8,
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
    pub fn start(
        cfg: &RecordingConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Option<Recorder>> {
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
    /// on `slot`. Keystrokes are recorded once [`InputSwitch::set`] says so.
    pub fn open(
        &self,
        session: &str,
        user: Option<&str>,
        slot: &str,
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
            client_msg: None,
            server_msg: None,
            json: Vec::new(),
            early_input: Vec::new(),
            lost: 0,
            broken: false,
            shared,
            done: Some(rx),
        }
    }
}

const INPUT_UNKNOWN: u8 = 0;
const INPUT_OFF: u8 = 1;
const INPUT_ON: u8 = 2;

/// Keystrokes typed before the template's answer is known are kept (up to
/// this many bytes) and recorded or forgotten when it comes.
const MAX_EARLY_INPUT: usize = 64 * 1024;

/// Says whether a session's keystrokes are recorded, once its template is
/// known.
pub struct InputSwitch(Arc<Shared>);

impl InputSwitch {
    pub fn set(&self, on: bool) {
        self.0
            .input
            .store(if on { INPUT_ON } else { INPUT_OFF }, Release);
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
    /// Command byte of the message in progress in each direction.
    client_msg: Option<u8>,
    server_msg: Option<u8>,
    json: Vec<u8>,
    /// Keystrokes (time, bytes) while input recording is still undecided.
    early_input: Vec<(f64, Vec<u8>)>,
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
        let t = self.start.elapsed().as_secs_f64();
        self.send_at(t, ev);
    }

    fn send_at(&mut self, t: f64, ev: Ev) {
        let msg = Msg::Event {
            id: self.id,
            t,
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
        let mode = self.shared.input.load(Acquire);
        if mode != INPUT_UNKNOWN && !self.early_input.is_empty() {
            for (t, bytes) in std::mem::take(&mut self.early_input) {
                if mode == INPUT_ON {
                    self.send_at(t, Ev::Input(bytes));
                }
            }
        }
        let record_input = mode != INPUT_OFF;
        let (cur, json) = (&mut self.client_msg, &mut self.json);
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
            if mode == INPUT_ON {
                self.send(Ev::Input(input));
            } else if self.early_input.iter().map(|e| e.1.len()).sum::<usize>() < MAX_EARLY_INPUT {
                let t = self.start.elapsed().as_secs_f64();
                self.early_input.push((t, input));
            }
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
        self.shared.input.load(Acquire) == INPUT_ON
    }

    /// Turns input recording on for this session (from another task).
    pub fn input_switch(&self) -> InputSwitch {
        InputSwitch(Arc::clone(&self.shared))
    }

    /// The session ended: close the file and wait (bounded) for its final
    /// size. Returns (path, bytes); path `None` when nothing was recorded.
    pub async fn finish(mut self) -> (Option<PathBuf>, u64) {
        if self.shared.input.load(Acquire) == INPUT_ON && !self.early_input.is_empty() {
            for (t, bytes) in std::mem::take(&mut self.early_input) {
                self.send_at(t, Ev::Input(bytes));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, max_size: u64, max_total: u64) -> RecordingConfig {
        RecordingConfig {
            enabled: true,
            dir: dir.to_path_buf(),
            max_size,
            max_total,
            retention: Some(Duration::from_secs(3600)),
            patterns: Patterns::new(true, &[]).unwrap(),
            queue: 1024,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sg-rec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A WebSocket frame; masked like a client's when `mask` is set.
    fn frame(opcode: u8, fin: bool, payload: &[u8], mask: bool) -> Vec<u8> {
        let m = [0x11, 0x22, 0x33, 0x44];
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let bit = if mask { 0x80 } else { 0 };
        if payload.len() < 126 {
            f.push(bit | payload.len() as u8);
        } else {
            f.push(bit | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        if mask {
            f.extend_from_slice(&m);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        f
    }

    const KEY: &str = "sk-ant-api03-Zq8xWv3LmN5pR7tY9uKj2Hg4Fd6Sa1QeXc0Bn";

    /// A session whose output splits a key and a UTF-8 character across
    /// frames (one of them fragmented), fed in chunks of `chunk` bytes.
    async fn record(dir: &Path, chunk: usize, input: bool) -> (String, u64) {
        let metrics = Arc::new(Metrics::default());
        let rec = Recorder::start(&config(dir, 1 << 20, 1 << 30), metrics)
            .unwrap()
            .unwrap();
        let mut r = rec.open(
            &format!("s{chunk}"),
            Some("alice"),
            "alice",
            SystemTime::now(),
        );
        let mut client = frame(
            2,
            true,
            br#"{"AuthToken":"secret-token","columns":90,"rows":20}"#,
            true,
        );
        client.extend(frame(2, true, format!("0echo {KEY}\r").as_bytes(), true));
        client.extend(frame(2, true, br#"1{"columns":70,"rows":10}"#, true));
        let key = KEY.as_bytes();
        let mut server = frame(2, true, b"1alice@slot", false);
        server.extend(frame(2, true, b"0caf\xc3", false));
        server.extend(frame(
            2,
            false,
            &[b"0\xa9 ".as_slice(), &key[..10]].concat(),
            false,
        ));
        server.extend(frame(0, false, &key[10..30], false));
        server.extend(frame(9, true, b"", false));
        server.extend(frame(
            0,
            true,
            &[&key[30..], b" \xe2\x86".as_slice()].concat(),
            false,
        ));
        server.extend(frame(2, true, b"0\x92 done\r\n", false));
        for c in client.chunks(chunk) {
            r.client_bytes(c);
        }
        // slotctl's answer comes after the first keystrokes: they wait.
        r.input_switch().set(input);
        for c in server.chunks(chunk) {
            r.server_bytes(c);
        }
        let (path, bytes) = r.finish().await;
        let path = path.unwrap();
        (std::fs::read_to_string(path).unwrap(), bytes)
    }

    #[tokio::test]
    async fn frames_split_anywhere_give_the_same_redacted_recording() {
        let dir = tmp("split");
        for chunk in [1, 2, 3, 5, 11, 4096] {
            let (text, bytes) = record(&dir, chunk, false).await;
            assert_eq!(bytes, text.len() as u64);
            let mut lines = text.lines();
            let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
            assert_eq!(
                (header["width"].as_u64(), header["height"].as_u64()),
                (Some(90), Some(20))
            );
            assert!(
                !text.contains("sk-ant") && !text.contains("secret-token"),
                "{text}"
            );
            let events: Vec<serde_json::Value> =
                lines.map(|l| serde_json::from_str(l).unwrap()).collect();
            let output: String = events
                .iter()
                .filter(|e| e[1] == "o")
                .map(|e| e[2].as_str().unwrap())
                .collect();
            assert_eq!(output, "café [REDACTED] → done\r\n", "chunk {chunk}");
            assert!(events.iter().any(|e| e[1] == "r" && e[2] == "70x10"));
            assert!(!events.iter().any(|e| e[1] == "i"));
        }
        let (text, _) = record(&dir, 7, true).await;
        let typed: String = text
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e[1] == "i")
            .map(|e| e[2].as_str().unwrap().to_string())
            .collect();
        assert_eq!(typed, "echo [REDACTED]\r", "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retention_deletes_old_recordings_at_start() {
        let dir = tmp("retention");
        let day = dir.join("2020-01-01");
        writer::private_dir(&day).unwrap();
        let old = day.join("old.cast");
        let fresh = day.join("fresh.cast");
        for p in [&old, &fresh] {
            std::fs::write(p, "{}\n").unwrap();
        }
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        let metrics = Arc::new(Metrics::default());
        let _rec = Recorder::start(&config(&dir, 4096, 1 << 30), Arc::clone(&metrics)).unwrap();
        assert!(!old.exists(), "a recording past retention (1h) was kept");
        assert!(fresh.exists());
        assert_eq!(metrics.recordings_deleted.load(Relaxed), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn caps_truncate_and_sweep_oldest_first() {
        let dir = tmp("caps");
        let metrics = Arc::new(Metrics::default());
        let rec = Recorder::start(&config(&dir, 4096, 10_000), Arc::clone(&metrics))
            .unwrap()
            .unwrap();
        let mut paths = vec![];
        for i in 0..4 {
            let mut r = rec.open(&format!("cap{i}"), None, "alice", SystemTime::now());
            for _ in 0..100 {
                r.server_bytes(&frame(2, true, &[b'0'; 100], false));
            }
            let (p, bytes) = r.finish().await;
            assert!(bytes <= 4096, "{bytes}");
            let text = std::fs::read_to_string(p.as_ref().unwrap()).unwrap();
            assert!(text.trim_end().ends_with(r#"reached"]"#), "{text}");
            paths.push(p.unwrap());
            // Distinct modification times order the sweep.
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(metrics.recordings_truncated.load(Relaxed), 4);
        // 4 x ~4 KB is over 10 000 bytes: the oldest go first.
        let deadline = Instant::now() + Duration::from_secs(5);
        while paths[0].exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !paths[0].exists(),
            "the oldest recording was kept over max_total"
        );
        assert!(paths[3].exists(), "the newest recording was deleted");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
