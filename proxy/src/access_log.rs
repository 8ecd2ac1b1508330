//! The access log: one JSON line per HTTP request and one per WebSocket
//! session (written when it closes), in the format documented in
//! `docs/access-log.md`, the contract for slotctl's activity store. Requests
//! serialise their line and hand it to a dedicated writer thread through a
//! bounded queue; when the queue is full the line is dropped and counted,
//! so a slow disk never slows a request. The writer rotates by size. This
//! module never sees cookies or credentials: query values whose names look
//! secret are redacted before a line is built.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::AccessLogConfig;
use crate::metrics::Metrics;

/// Version of the line format; bumped only for incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// One access log line. Field meanings are documented in docs/access-log.md.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub v: u32,
    /// When the line was produced (end of request / end of session).
    pub ts: String,
    /// When the request arrived.
    pub start: String,
    /// `http` or `ws`.
    pub kind: &'static str,
    pub request_id: &'a str,
    pub client_ip: Option<&'a str>,
    pub user: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<String>,
    pub route: &'a str,
    pub slot: Option<&'a str>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    /// From connecting to the slot until its response head arrived;
    /// `None` when the gateway answered without the slot.
    pub upstream_ms: Option<f64>,
    pub tls: bool,
    /// `slot` when the response came from the slot, `gateway` otherwise.
    pub served_by: &'static str,
    pub user_agent: Option<&'a str>,
    /// Why the gateway refused or failed the request (a short code).
    pub error: Option<&'a str>,
    /// How the user may use the slot: `write`, `read_only`, or `admin` (an
    /// administrator in a slot that is not theirs: the audit trail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<&'a str>,
    /// On the outcome of a sign-in attempt: the account it was for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<&'a str>,
    /// WebSocket lines only: complete frames from the client and to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_out: Option<u64>,
    /// WebSocket lines only: the session's recording.
    #[serde(flatten)]
    pub recording: Option<RecordingFields>,
}

/// `recording` and `recording_bytes` of a WebSocket line.
#[derive(Debug, Default, Serialize)]
pub struct RecordingFields {
    /// Absolute path of the `.cast` file; `None` when not recorded.
    pub recording: Option<String>,
    pub recording_bytes: u64,
    /// Keystrokes were recorded too (the template's `[recording] input`).
    pub recording_input: bool,
}

pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Query parameter names whose values never reach the log.
const SECRET_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "embed_token",
    "embed",
    "code",
    "state",
    "password",
    "passwd",
    "pass",
    "secret",
    "client_secret",
    "key",
    "api_key",
    "apikey",
    "auth",
    "authorization",
    "session",
    "sid",
    "sig",
    "signature",
    "jwt",
    "ticket",
    "credential",
    "otp",
];

const MAX_QUERY: usize = 512;

/// Path prefixes whose next segment is a secret (a replay link's token).
const SECRET_SEGMENT_PREFIXES: &[&str] = &["/replay/", "/api/replay-links/"];

/// A raw request target as logs may show it: the path with a secret
/// segment replaced by `REDACTED`, the query through [`redact_query`].
pub fn redact_target(raw: &str) -> (String, Option<String>) {
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(redact_query(q))),
        None => (raw, None),
    };
    let path = SECRET_SEGMENT_PREFIXES
        .iter()
        .find_map(|prefix| {
            let rest = path.strip_prefix(prefix)?;
            let tail = rest.find('/').map_or("", |i| &rest[i..]);
            Some(format!("{prefix}REDACTED{tail}"))
        })
        .unwrap_or_else(|| path.to_string());
    (path, query)
}

/// The query string with secret-looking values replaced by `REDACTED`.
pub fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len().min(MAX_QUERY));
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_secret(name) => {
                out.push_str(name);
                out.push_str("=REDACTED");
            }
            _ => out.push_str(pair),
        }
        if out.len() > MAX_QUERY {
            let mut cut = MAX_QUERY;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str("...");
            break;
        }
    }
    out
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str())
        || name.ends_with("_token")
        || name.ends_with("password")
        || name.ends_with("secret")
}

/// The request side of the log: cheap to clone, never blocks.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Item>>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Start the writer thread (or a no-op log when disabled). Fails if the
    /// log file cannot be opened, so a bad path fails at startup.
    pub fn start(cfg: &AccessLogConfig, metrics: Arc<Metrics>) -> std::io::Result<AccessLog> {
        if !cfg.enabled {
            return Ok(AccessLog { tx: None, metrics });
        }
        let writer = Writer::open(cfg, Arc::clone(&metrics))?;
        let (tx, rx) = sync_channel(cfg.queue);
        std::thread::Builder::new()
            .name("slotgate-access-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(AccessLog {
            tx: Some(tx),
            metrics,
        })
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
        // Room for a typical line at once (serde_json's default start is
        // 128 bytes, grown by doubling: three copies per line).
        let mut line = Vec::with_capacity(512);
        if serde_json::to_writer(&mut line, entry).is_err() {
            return;
        }
        line.push(b'\n');
        match tx.try_send(Item::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.access_log_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Wait until every line handed over so far is written to the file
    /// (before the process exits); `false` if that took longer than
    /// `within`.
    pub fn flush(&self, within: Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        let deadline = Instant::now() + within;
        let (done, written) = channel();
        let mut item = Item::Flush(done);
        loop {
            match tx.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Full(again)) if Instant::now() < deadline => {
                    item = again;
                    std::thread::sleep(crate::batch::PAUSE);
                }
                Err(_) => return false,
            }
        }
        written
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// What the writer thread receives.
enum Item {
    Line(Vec<u8>),
    /// Flush, then say so.
    Flush(Sender<()>),
}

struct Writer {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    out: BufWriter<File>,
    size: u64,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn open(cfg: &AccessLogConfig, metrics: Arc<Metrics>) -> std::io::Result<Writer> {
        if let Some(dir) = cfg.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(&cfg.path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: cfg.path.clone(),
            max_size: cfg.max_size,
            keep: cfg.keep,
            out: BufWriter::with_capacity(64 * 1024, file),
            size,
            metrics,
        })
    }

    fn run(mut self, rx: Receiver<Item>) {
        crate::batch::run(&rx, &mut self);
        let _ = self.out.flush();
    }
}

impl crate::batch::Sink<Item> for Writer {
    fn put(&mut self, item: Item) {
        match item {
            Item::Line(line) => self.write_line(&line),
            Item::Flush(done) => {
                self.batch_done_flush();
                let _ = done.send(());
            }
        }
    }

    fn batch_done(&mut self, _rx: &Receiver<Item>) {
        self.batch_done_flush();
        self.follow_rotation();
    }
}

impl Writer {
    fn batch_done_flush(&mut self) {
        if self.out.flush().is_err() {
            self.metrics.access_log_write_errors.fetch_add(1, Relaxed);
        }
    }

    /// Another process writing the same log (the old gateway finishing
    /// its connections after a reload, or the new one) may have rotated
    /// it: then the path names a different file than the one open here,
    /// and the next lines belong in the new one.
    fn follow_rotation(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Ok(open) = self.out.get_ref().metadata() else {
            return;
        };
        let moved = match std::fs::metadata(&self.path) {
            Ok(on_disk) => (on_disk.dev(), on_disk.ino()) != (open.dev(), open.ino()),
            Err(_) => true,
        };
        if !moved {
            return;
        }
        match open_append(&self.path) {
            Ok(file) => {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.out = BufWriter::with_capacity(64 * 1024, file);
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot reopen the access log");
            }
        }
    }

    fn write_line(&mut self, line: &[u8]) {
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            if let Err(e) = self.rotate() {
                tracing::error!(path = %self.path.display(), error = %e, "access log rotation failed");
            }
        }
        match self.out.write_all(line) {
            Ok(()) => {
                self.size += line.len() as u64;
                self.metrics.access_log_lines.fetch_add(1, Relaxed);
            }
            Err(_) => {
                self.metrics.access_log_write_errors.fetch_add(1, Relaxed);
            }
        }
    }

    /// `access.log` → `access.log.1` → … → `access.log.<keep>` (dropped).
    /// Renames keep the inode, so a tailer holding the old file reads it to
    /// its end before switching.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(&self.path, self.keep));
            for n in (1..self.keep).rev() {
                let from = numbered(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, numbered(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        self.out = BufWriter::with_capacity(64 * 1024, open_append(&self.path)?);
        self.size = 0;
        self.metrics.access_log_rotations.fetch_add(1, Relaxed);
        Ok(())
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_table() {
        let cases = [
            ("", ""),
            ("arg=ls", "arg=ls"),
            ("token=abc", "token=REDACTED"),
            ("a=1&Access_Token=x&b=2", "a=1&Access_Token=REDACTED&b=2"),
            ("code=xyz&state=s", "code=REDACTED&state=REDACTED"),
            ("my_password=p&x", "my_password=REDACTED&x"),
            ("client_secret=s", "client_secret=REDACTED"),
            ("refresh_token=t", "refresh_token=REDACTED"),
            ("tokenish=1", "tokenish=1"),
        ];
        for (q, want) in cases {
            assert_eq!(redact_query(q), want, "{q}");
        }
        let long = format!("a={}", "x".repeat(2000));
        assert!(redact_query(&long).len() <= MAX_QUERY + 3);
    }

    fn entry<'a>(path: &'a str) -> Entry<'a> {
        Entry {
            v: FORMAT_VERSION,
            ts: timestamp(SystemTime::UNIX_EPOCH),
            start: timestamp(SystemTime::UNIX_EPOCH),
            kind: "http",
            request_id: "r1",
            client_ip: Some("127.0.0.1"),
            user: None,
            method: "GET",
            path,
            query: None,
            route: "slot",
            slot: Some("alice"),
            status: 200,
            bytes_in: 0,
            bytes_out: 17,
            duration_ms: 0.25,
            upstream_ms: Some(0.2),
            tls: true,
            served_by: "slot",
            user_agent: None,
            error: None,
            access: None,
            login: None,
            frames_in: None,
            frames_out: None,
            recording: None,
        }
    }

    /// A log at `path` rotated at `max_size`, keeping two old files.
    fn log_config(path: PathBuf, max_size: u64) -> AccessLogConfig {
        AccessLogConfig {
            enabled: true,
            path,
            max_size,
            keep: 2,
            queue: 1024,
        }
    }

    /// Two gateways write one log during a reload; when one rotates it,
    /// the other's next lines go to the new file, not the renamed one.
    #[test]
    fn a_rotation_by_another_writer_is_followed() {
        use crate::batch::Sink;
        let dir = std::env::temp_dir().join(format!("sg-al-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = log_config(dir.join("access.log"), 1 << 20);
        let metrics = Arc::new(Metrics::default());
        let mut writer = Writer::open(&cfg, Arc::clone(&metrics)).unwrap();
        let (_tx, rx) = sync_channel(1);
        writer.put(Item::Line(b"before\n".to_vec()));
        writer.batch_done(&rx);
        std::fs::rename(&cfg.path, numbered(&cfg.path, 1)).unwrap();
        std::fs::write(&cfg.path, b"other\n").unwrap();
        writer.batch_done(&rx);
        writer.put(Item::Line(b"after\n".to_vec()));
        let (done, flushed) = channel();
        writer.put(Item::Flush(done));
        flushed.recv().unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&numbered(&cfg.path, 1)), "before\n");
        assert_eq!(read(&cfg.path), "other\nafter\n");
        assert_eq!(writer.size, "other\nafter\n".len() as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writes_lines_and_rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("sg-al-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = log_config(dir.join("logs/access.log"), 4096);
        let metrics = Arc::new(Metrics::default());
        // `start` without the detached thread: joined below, so every line
        // is written and flushed when the assertions run.
        let writer = Writer::open(&cfg, Arc::clone(&metrics)).unwrap();
        let (tx, rx) = sync_channel(cfg.queue);
        let thread = std::thread::spawn(move || writer.run(rx));
        let log = AccessLog {
            tx: Some(tx),
            metrics: Arc::clone(&metrics),
        };
        for _ in 0..100 {
            log.write(&entry("/slot/alice/token"));
        }
        drop(log);
        thread.join().unwrap();
        assert_eq!(metrics.access_log_lines.load(Relaxed), 100);
        assert!(metrics.access_log_rotations.load(Relaxed) >= 1);
        let mut total = 0;
        for p in [
            cfg.path.clone(),
            numbered(&cfg.path, 1),
            numbered(&cfg.path, 2),
        ] {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            assert!(
                text.len() as u64 <= cfg.max_size,
                "{} is {} bytes",
                p.display(),
                text.len()
            );
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["status"], 200);
                assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
                total += 1;
            }
        }
        assert!(!numbered(&cfg.path, 3).exists());
        assert!(total > 0 && total <= 100);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn replay_tokens_in_paths_are_redacted() {
        assert_eq!(
            redact_target("/replay/s3cret-tok/cast?x=1"),
            ("/replay/REDACTED/cast".to_string(), Some("x=1".to_string()))
        );
        assert_eq!(redact_target("/replay/s3cret-tok").0, "/replay/REDACTED");
        assert_eq!(
            redact_target("/api/replay-links/s3cret-tok").0,
            "/api/replay-links/REDACTED"
        );
        assert_eq!(
            redact_target("/slot/alice/ws"),
            ("/slot/alice/ws".to_string(), None)
        );
    }
}
