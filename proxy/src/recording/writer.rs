//! The recording writer: one thread that owns every open `.cast` file.
//! Sessions hand it raw events through a bounded queue; here they are
//! decoded (UTF-8), redacted, encoded as asciicast v2 lines, merged in time
//! order and written. It also enforces the caps: `max_size` per recording
//! (then a truncation marker and nothing more), `max_total` over the
//! directory (oldest recordings deleted first) and `retention`.

use std::collections::HashMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::redact::Redactor;
use super::utf8::Utf8Stream;
use super::{Ev, Header, Msg, RecordingConfig, Shared};
use crate::metrics::Metrics;

/// Room kept for the truncation marker line under `max_size`.
const MARKER_ROOM: u64 = 96;
/// How often retention and the total cap are checked while idle.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Size used until the client says how large its terminal is.
const DEFAULT_SIZE: (u16, u16) = (80, 24);

struct Open {
    path: PathBuf,
    out: BufWriter<File>,
    bytes: u64,
    header: Header,
    header_done: bool,
    truncated: bool,
    dirty: bool,
    output: Redactor,
    input: Redactor,
    out_utf8: Utf8Stream,
    in_utf8: Utf8Stream,
    /// Released events waiting for older held text (time order).
    pending: Vec<(f64, &'static str, String)>,
    last_t: f64,
    shared: Arc<Shared>,
}

pub(super) struct Writer {
    cfg: Arc<RecordingConfig>,
    metrics: Arc<Metrics>,
    open: HashMap<u64, Open>,
    total: u64,
    last_sweep: Instant,
}

/// Create `dir` (and parents) with mode 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

impl crate::batch::Sink<Msg> for Writer {
    fn put(&mut self, m: Msg) {
        self.handle(m);
    }

    fn batch_done(&mut self, rx: &Receiver<Msg>) {
        self.housekeeping(rx);
    }
}

impl Writer {
    pub(super) fn new(cfg: Arc<RecordingConfig>, metrics: Arc<Metrics>) -> std::io::Result<Writer> {
        private_dir(&cfg.dir)?;
        let mut w = Writer {
            cfg,
            metrics,
            open: HashMap::new(),
            total: 0,
            last_sweep: Instant::now(),
        };
        w.sweep();
        Ok(w)
    }

    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        crate::batch::run(&rx, &mut self);
        let ids: Vec<u64> = self.open.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    /// Close sessions whose Close was lost, flush, sweep when due.
    fn housekeeping(&mut self, rx: &Receiver<Msg>) {
        // Sessions whose Close was lost to a full queue: everything they
        // enqueued before closing is in the queue now; drain, then end.
        let closed: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| o.shared.closed.load(Acquire))
            .map(|(id, _)| *id)
            .collect();
        if !closed.is_empty() {
            while let Ok(m) = rx.try_recv() {
                self.handle(m);
            }
            for id in closed {
                self.close(id);
            }
        }
        for o in self.open.values_mut() {
            if o.dirty {
                o.dirty = false;
                if o.out.flush().is_err() {
                    self.metrics.recording_write_errors.fetch_add(1, Relaxed);
                }
            }
        }
        let since = self.last_sweep.elapsed();
        // Over the total cap: sweep soon, but at most once a second (open
        // recordings cannot be deleted and may keep it over).
        if since >= SWEEP_EVERY
            || (self.total > self.cfg.max_total && since >= Duration::from_secs(1))
        {
            self.sweep();
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Open {
                id,
                path,
                header,
                shared,
            } => self.open(id, path, header, shared),
            Msg::Event { id, t, lost, ev } => {
                let Some(o) = self.open.get_mut(&id).filter(|o| !o.truncated) else {
                    return;
                };
                if lost > 0 {
                    o.pending
                        .push((t, "m", format!("{lost} events lost (recording queue full)")));
                }
                o.event(t, ev);
                let wrote = o.write_ready(&self.cfg, &self.metrics, false);
                self.total += wrote;
            }
            Msg::Close { id } => self.close(id),
        }
    }

    fn open(&mut self, id: u64, path: PathBuf, header: Header, shared: Arc<Shared>) {
        let file = path.parent().map_or(Ok(()), private_dir).and_then(|()| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
        });
        match file {
            Ok(f) => {
                self.metrics.recordings_started.fetch_add(1, Relaxed);
                self.open.insert(
                    id,
                    Open {
                        path,
                        out: BufWriter::with_capacity(32 * 1024, f),
                        bytes: 0,
                        header,
                        header_done: false,
                        truncated: false,
                        dirty: false,
                        output: Redactor::new(self.cfg.patterns.clone()),
                        input: Redactor::new(self.cfg.patterns.clone()),
                        out_utf8: Utf8Stream::default(),
                        in_utf8: Utf8Stream::default(),
                        pending: Vec::new(),
                        last_t: 0.0,
                        shared,
                    },
                );
            }
            Err(e) => {
                self.metrics.recording_write_errors.fetch_add(1, Relaxed);
                tracing::warn!(path = %path.display(), error = %e, "cannot create the recording file");
                shared.finish(0, false);
            }
        }
    }

    fn close(&mut self, id: u64) {
        let Some(mut o) = self.open.remove(&id) else {
            return;
        };
        let t = o.last_t;
        let rest = o.out_utf8.finish();
        o.output.push(t, &rest, &mut Vec::new());
        let mut released = Vec::new();
        o.output.finish(&mut released);
        o.pending
            .extend(released.into_iter().map(|(t, s)| (t, "o", s)));
        let mut released = Vec::new();
        let rest = o.in_utf8.finish();
        o.input.push(t, &rest, &mut Vec::new());
        o.input.finish(&mut released);
        o.pending
            .extend(released.into_iter().map(|(t, s)| (t, "i", s)));
        self.total += o.write_ready(&self.cfg, &self.metrics, true);
        if !o.header_done {
            self.total += o.write_header(&self.metrics);
        }
        if o.out.flush().is_err() {
            self.metrics.recording_write_errors.fetch_add(1, Relaxed);
        }
        self.metrics
            .recording_redactions
            .fetch_add(o.output.redactions + o.input.redactions, Relaxed);
        o.shared.finish(o.bytes, true);
        tracing::debug!(path = %o.path.display(), bytes = o.bytes, "recording closed");
    }

    /// Delete recordings past `retention`, then the oldest ones while the
    /// directory is over `max_total`. Open recordings are never deleted.
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        let open: Vec<&Path> = self.open.values().map(|o| o.path.as_path()).collect();
        let mut files = list_casts(&self.cfg.dir);
        let now = SystemTime::now();
        let mut deleted = 0u64;
        files.retain(|(p, modified, size)| {
            let expired = self
                .cfg
                .retention
                .is_some_and(|r| now.duration_since(*modified).unwrap_or_default() > r);
            if expired && !open.contains(&p.as_path()) && std::fs::remove_file(p).is_ok() {
                deleted += 1;
                let _ = size;
                return false;
            }
            true
        });
        files.sort_by_key(|(_, m, _)| *m);
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        for (p, _, size) in &files {
            if total <= self.cfg.max_total {
                break;
            }
            if open.contains(&p.as_path()) {
                continue;
            }
            if std::fs::remove_file(p).is_ok() {
                total -= size;
                deleted += 1;
            }
        }
        self.total = total;
        if deleted > 0 {
            self.metrics.recordings_deleted.fetch_add(deleted, Relaxed);
            tracing::info!(
                deleted,
                "recordings deleted by retention or the total size cap"
            );
        }
        // Empty day directories go too.
        if let Ok(rd) = std::fs::read_dir(&self.cfg.dir) {
            for e in rd.flatten() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

/// Every `<dir>/<day>/<id>.cast` with its modification time and size.
fn list_casts(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut out = Vec::new();
    let Ok(days) = std::fs::read_dir(dir) else {
        return out;
    };
    for day in days.flatten() {
        let Ok(files) = std::fs::read_dir(day.path()) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|x| x == "cast") {
                if let Ok(m) = f.metadata() {
                    out.push((p, m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
                }
            }
        }
    }
    out
}

impl Open {
    fn event(&mut self, t: f64, ev: Ev) {
        let t = t.max(self.last_t);
        self.last_t = t;
        let mut released = Vec::new();
        match ev {
            Ev::Output(bytes) => {
                let s = self.out_utf8.decode(&bytes);
                self.output.push(t, &s, &mut released);
            }
            Ev::Input(bytes) => {
                let s = self.in_utf8.decode(&bytes);
                let mut rel = Vec::new();
                self.input.push(t, &s, &mut rel);
                self.pending
                    .extend(rel.into_iter().map(|(t, s)| (t, "i", s)));
            }
            Ev::Resize(cols, rows) => {
                if !self.header_done && self.header.size.is_none() {
                    // The first size is the header's.
                    self.header.size = Some((cols, rows));
                } else {
                    self.pending.push((t, "r", format!("{cols}x{rows}")));
                }
            }
        }
        self.output.tick(t, &mut released);
        self.pending
            .extend(released.into_iter().map(|(t, s)| (t, "o", s)));
        let mut rel = Vec::new();
        self.input.tick(t, &mut rel);
        self.pending
            .extend(rel.into_iter().map(|(t, s)| (t, "i", s)));
    }

    fn write_header(&mut self, metrics: &Metrics) -> u64 {
        self.header_done = true;
        let (w, h) = self.header.size.unwrap_or(DEFAULT_SIZE);
        let mut line = serde_json::json!({
            "version": 2,
            "width": w,
            "height": h,
            "timestamp": self.header.timestamp,
            "title": self.header.title,
            "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"},
            "slotgate": {
                "session": self.header.session,
                "user": self.header.user,
                "slot": self.header.slot,
            },
        })
        .to_string();
        line.push('\n');
        self.put(line.as_bytes(), metrics)
    }

    /// Write the pending events that no held text precedes (all of them at
    /// the end). Returns bytes written.
    fn write_ready(&mut self, cfg: &RecordingConfig, metrics: &Metrics, all: bool) -> u64 {
        if self.pending.is_empty() {
            return 0;
        }
        let watermark = if all {
            f64::INFINITY
        } else {
            [self.output.held_since(), self.input.held_since()]
                .into_iter()
                .flatten()
                .fold(f64::INFINITY, f64::min)
        };
        self.pending.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = self.pending.partition_point(|e| e.0 < watermark);
        if n == 0 {
            return 0;
        }
        let ready: Vec<_> = self.pending.drain(..n).collect();
        let mut wrote = 0;
        if !self.header_done {
            wrote += self.write_header(metrics);
        }
        let mut line = Vec::with_capacity(128);
        for (t, code, text) in ready {
            if self.truncated {
                break;
            }
            event_line(&mut line, t, code, &text);
            if self.bytes + line.len() as u64 + MARKER_ROOM > cfg.max_size {
                self.truncated = true;
                self.shared.truncated.store(true, Relaxed);
                metrics.recordings_truncated.fetch_add(1, Relaxed);
                let marker = format!("recording truncated: max_size ({}) reached", cfg.max_size);
                event_line(&mut line, t, "m", &marker);
                wrote += self.put(&line, metrics);
                break;
            }
            wrote += self.put(&line, metrics);
        }
        wrote
    }

    fn put(&mut self, line: &[u8], metrics: &Metrics) -> u64 {
        match self.out.write_all(line) {
            Ok(()) => {
                self.bytes += line.len() as u64;
                self.shared.bytes.store(self.bytes, Relaxed);
                self.dirty = true;
                line.len() as u64
            }
            Err(_) => {
                metrics.recording_write_errors.fetch_add(1, Relaxed);
                0
            }
        }
    }
}

/// One asciicast event line, `[<t>, "<code>", <text as JSON>]`, into `line`
/// (cleared first). The time has six decimals, written from whole
/// microseconds: formatting the float with a precision cost more than the
/// rest of the writer's work per event.
fn event_line(line: &mut Vec<u8>, t: f64, code: &str, text: &str) {
    use std::io::Write;
    let micros = if t.is_finite() && t > 0.0 {
        (t * 1e6).round() as u64
    } else {
        0
    };
    line.clear();
    let _ = write!(
        line,
        "[{}.{:06}, \"{code}\", ",
        micros / 1_000_000,
        micros % 1_000_000
    );
    let _ = serde_json::to_writer(&mut *line, text);
    line.extend_from_slice(b"]\n");
}

#[cfg(test)]
mod tests {
    use super::event_line;

    #[test]
    fn event_lines_are_asciicast_json_with_six_decimals() {
        let mut line = Vec::new();
        event_line(&mut line, 1.5, "o", "a\"b\n\u{1b}[0m");
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "[1.500000, \"o\", \"a\\\"b\\n\\u001b[0m\"]\n"
        );
        // The same digits as formatting the float with a precision did,
        // except within a hair of a half microsecond, where the two round
        // differently (by one microsecond).
        for i in 0..5000u32 {
            let t = f64::from(i) * 0.731_337_1 + 0.000_000_3;
            if ((t * 1e6).fract() - 0.5).abs() < 1e-6 {
                continue;
            }
            event_line(&mut line, t, "r", "80x24");
            let want = format!("[{t:.6}, \"r\", \"80x24\"]\n");
            assert_eq!(String::from_utf8_lossy(&line), want, "t = {t}");
        }
        event_line(&mut line, -1.0, "m", "");
        assert_eq!(line, b"[0.000000, \"m\", \"\"]\n");
    }
}
