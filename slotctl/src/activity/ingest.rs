//! The access-log tailer: follows slotgate's log like `tail -F` and stores
//! every complete line exactly once.
//!
//! A log file generation is known by device, inode and a fingerprint (a
//! hash of its first line), so a renamed file keeps its identity and a
//! recreated or truncated file is a new one even when the inode is
//! reused. Each batch of rows is inserted in the same transaction that
//! moves that file's offset past them: after a crash (even `kill -9`) the
//! store holds exactly the lines before the stored offset, and reading
//! resumes there. Only complete lines (up to the last `\n`) are read.
//!
//! Each sweep looks at the rotated files (`access.log.N`, oldest first) and
//! then `access.log` itself; a file already read to its size is skipped
//! without being read. The live file stays open between sweeps, so when
//! slotgate deletes it instead of keeping it (`keep = 0`) the rest is
//! still read through the open descriptor.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::db;
use super::parse::{self, Parsed};
use crate::clock::now_ms;

/// Lines per transaction: big enough to be fast, short enough that other
/// writers of `activity.db` never wait long.
pub const BATCH: usize = 32_768;
/// Bytes read at once, at most (the buffer is sized to what is there and
/// shrunk again after a catch-up, so a quiet log costs little memory).
const CHUNK: usize = 16 << 20;
/// The longest first line used as a fingerprint.
const FINGERPRINT_MAX: usize = 64 << 10;
/// Malformed lines keep at most this much of the line.
const KEEP_LINE: usize = 4096;
/// How often rows of files that are gone are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long a gone file's row is kept (a file rotated away can still be
/// renamed back into sight only within this time).
const FORGET_AFTER_MS: u64 = 7 * 86_400_000;
/// How often the tailer looks even when notify said nothing.
pub const POLL: Duration = Duration::from_secs(2);

/// What the API reports about the tailer.
#[derive(Debug, Default, Clone)]
pub struct TailStatus {
    pub last_ingest_ms: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
struct Known {
    fingerprint: String,
    id: i64,
    offset: u64,
    /// The file's modification time when it was last read to `offset`.
    mtime: (i64, i64),
}

/// One item of a batch.
enum Item {
    Ok(Box<Parsed>),
    Bad {
        offset: u64,
        reason: String,
        raw: String,
    },
}

pub struct Tailer {
    conn: Connection,
    log: PathBuf,
    malformed_keep: u64,
    /// (dev, inode) → what the store knows about that file.
    known: HashMap<(u64, u64), Known>,
    /// The live file as of the last sweep.
    held: Option<(File, (u64, u64))>,
    buf: Vec<u8>,
    status: Arc<Mutex<TailStatus>>,
    last_prune: Instant,
}

impl Tailer {
    pub fn new(
        db_path: &Path,
        log: PathBuf,
        malformed_keep: u64,
        status: Arc<Mutex<TailStatus>>,
    ) -> rusqlite::Result<Tailer> {
        let conn = db::open(db_path)?;
        // The tailer appends to several indexes at once; a bigger page
        // cache keeps their hot pages in memory, and fewer checkpoints
        // keep the WAL from copying the same pages over and over.
        conn.pragma_update(None, "cache_size", -32_768)?;
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
        Ok(Tailer {
            conn,
            log,
            malformed_keep,
            known: HashMap::new(),
            held: None,
            buf: Vec::new(),
            status,
            last_prune: Instant::now(),
        })
    }

    /// Follow the log until `stop` is set: sweep on every change notify
    /// reports in its directory, and every [`POLL`] regardless.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        use notify::Watcher;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = tx.try_send(());
        })
        .ok();
        let mut watching = false;
        while !stop.load(Ordering::Relaxed) {
            if !watching {
                if let (Some(w), Some(dir)) = (watcher.as_mut(), self.log.parent()) {
                    watching = w.watch(dir, notify::RecursiveMode::NonRecursive).is_ok();
                }
            }
            match self.sweep() {
                Ok(_) => {
                    let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
                    st.last_error = None;
                }
                Err(e) => {
                    warn!(error = %e, log = %self.log.display(), "access-log ingestion failed; retrying");
                    let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
                    st.last_error = Some(e.to_string());
                    drop(st);
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
            let _ = rx.recv_timeout(POLL);
        }
    }

    /// The log files in reading order: rotated ones oldest first, then the
    /// live one.
    fn candidates(&self) -> Vec<PathBuf> {
        let mut out: Vec<(u32, PathBuf)> = Vec::new();
        if let (Some(dir), Some(name)) = (self.log.parent(), self.log.file_name()) {
            let prefix = format!("{}.", name.to_string_lossy());
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    if let Some(num) = n.strip_prefix(&prefix).and_then(|s| s.parse::<u32>().ok()) {
                        out.push((num, e.path()));
                    }
                }
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut paths: Vec<PathBuf> = out.into_iter().map(|(_, p)| p).collect();
        paths.push(self.log.clone());
        paths
    }

    /// Read every log file to its last complete line. Returns the number
    /// of lines stored.
    pub fn sweep(&mut self) -> anyhow::Result<u64> {
        let previous = self.held.take();
        let mut seen = HashSet::new();
        let mut stored = 0;
        for path in self.candidates() {
            let Ok(file) = File::open(&path) else {
                continue; // rotated away between listing and opening
            };
            let meta = file.metadata()?;
            let key = (meta.dev(), meta.ino());
            seen.insert(key);
            stored += self.follow(&file, key, &path)?;
            if path == self.log {
                self.held = Some((file, key));
            }
        }
        if self.last_prune.elapsed() > PRUNE_EVERY {
            self.prune(&seen)?;
        }
        if let Some((file, key)) = previous {
            if !seen.contains(&key) {
                // Deleted (or moved out of sight) since the last sweep:
                // what is left is only reachable through our descriptor.
                let gone = PathBuf::from(format!("{} (deleted)", self.log.display()));
                stored += self.follow(&file, key, &gone)?;
            }
        }
        Ok(stored)
    }

    /// Read one file from its stored offset to its last complete line.
    fn follow(&mut self, file: &File, key: (u64, u64), path: &Path) -> anyhow::Result<u64> {
        let meta = file.metadata()?;
        let (len, mtime) = (meta.len(), (meta.mtime(), meta.mtime_nsec()));
        if self
            .known
            .get(&key)
            .is_some_and(|k| k.offset == len && k.mtime == mtime)
        {
            return Ok(0);
        }
        let Some(fp) = fingerprint(file)? else {
            return Ok(0); // not even one complete line yet
        };
        let mut k = match self.known.get(&key) {
            Some(k) if k.fingerprint == fp => k.clone(),
            _ => self.lookup(key, &fp, path)?,
        };
        if k.offset > len {
            // Truncated, then refilled with the same first line: what is
            // there now was written after the truncation.
            warn!(file = %path.display(), offset = k.offset, len, "log file shrank; reading it again from the start");
            k.offset = 0;
        }
        let path_text = path.display().to_string();
        let mut stored = 0u64;
        loop {
            let want = (len.saturating_sub(k.offset) as usize).clamp(4096, CHUNK);
            let filled = read_at_most(file, &mut self.buf, k.offset, want)?;
            if filled == 0 {
                break;
            }
            let Some(last_nl) = memrchr(b'\n', &self.buf[..filled]) else {
                if filled < want || want < CHUNK {
                    break; // a line still being written
                }
                // One line longer than CHUNK: keep it aside, skip it.
                match skip_long_line(file, k.offset + filled as u64)? {
                    None => break,
                    Some(end) => {
                        let raw = String::from_utf8_lossy(&self.buf[..KEEP_LINE]).into_owned();
                        let items = vec![Item::Bad {
                            offset: k.offset,
                            reason: format!("line longer than {} bytes", CHUNK),
                            raw,
                        }];
                        self.write(&mut k, end, &items, &path_text)?;
                        continue;
                    }
                }
            };
            let data = &self.buf[..=last_nl];
            let mut items: Vec<Item> = Vec::with_capacity(BATCH);
            let mut pos = 0usize;
            let mut batches: Vec<(u64, Vec<Item>)> = Vec::new();
            while pos < data.len() {
                let end = pos + memchr(b'\n', &data[pos..]).expect("data ends with a newline");
                let raw = &data[pos..end];
                let at = k.offset + pos as u64;
                items.push(match parse::parse(raw) {
                    Ok(p) => Item::Ok(Box::new(p)),
                    Err(reason) => Item::Bad {
                        offset: at,
                        reason,
                        raw: String::from_utf8_lossy(&raw[..raw.len().min(KEEP_LINE)]).into_owned(),
                    },
                });
                pos = end + 1;
                if items.len() == BATCH {
                    batches.push((k.offset + pos as u64, std::mem::take(&mut items)));
                }
            }
            if !items.is_empty() {
                batches.push((k.offset + pos as u64, items));
            }
            for (end, items) in batches {
                stored += items.len() as u64;
                self.write(&mut k, end, &items, &path_text)?;
            }
        }
        k.mtime = mtime;
        self.known.insert(key, k);
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Ok(stored)
    }

    /// Forget files that are no longer on disk and have not moved for a
    /// week. Files still present are never forgotten: that would read
    /// them again.
    fn prune(&mut self, present: &HashSet<(u64, u64)>) -> rusqlite::Result<()> {
        self.last_prune = Instant::now();
        let cutoff = now_ms().saturating_sub(FORGET_AFTER_MS) as i64;
        let old: Vec<(i64, i64, i64)> = self
            .conn
            .prepare("SELECT id, dev, ino FROM ingest_files WHERE updated_ms < ?1")?
            .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, dev, ino) in old {
            let key = (dev as u64, ino as u64);
            if !present.contains(&key) && self.held.as_ref().is_none_or(|h| h.1 != key) {
                self.conn
                    .execute("DELETE FROM ingest_files WHERE id = ?1", [id])?;
                self.known.remove(&key);
            }
        }
        Ok(())
    }

    /// The store's row for this file generation, created at offset 0.
    fn lookup(&mut self, key: (u64, u64), fp: &str, path: &Path) -> rusqlite::Result<Known> {
        let found: Option<(i64, i64)> = self
            .conn
            .query_row(
                "SELECT id, offset FROM ingest_files WHERE dev = ?1 AND ino = ?2 AND fingerprint = ?3",
                params![key.0 as i64, key.1 as i64, fp],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (id, offset) = match found {
            Some(f) => f,
            None => {
                let now = now_ms() as i64;
                self.conn.execute(
                    "INSERT INTO ingest_files(dev, ino, fingerprint, path, offset, first_seen_ms, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
                    params![key.0 as i64, key.1 as i64, fp, path.display().to_string(), now],
                )?;
                debug!(file = %path.display(), "new access-log file");
                (self.conn.last_insert_rowid(), 0)
            }
        };
        Ok(Known {
            fingerprint: fp.to_string(),
            id,
            offset: offset as u64,
            mtime: (0, 0),
        })
    }

    /// Store `items` and move the file's offset to `end`, in one
    /// transaction.
    fn write(
        &mut self,
        k: &mut Known,
        end: u64,
        items: &[Item],
        path: &str,
    ) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (good, bad) = store_items(&tx, items, path, self.malformed_keep)?;
        tx.prepare_cached(
            "UPDATE ingest_files SET offset = ?1, lines = lines + ?2, malformed = malformed + ?3,
                    path = ?4, updated_ms = ?5 WHERE id = ?6",
        )?
        .execute(params![
            end as i64,
            good as i64,
            bad as i64,
            path,
            now_ms() as i64,
            k.id
        ])?;
        tx.commit()?;
        k.offset = end;
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.last_ingest_ms = Some(now_ms());
        Ok(())
    }
}

/// Insert the rows of a batch; returns (stored lines, malformed lines).
fn store_items(
    tx: &Connection,
    items: &[Item],
    file: &str,
    malformed_keep: u64,
) -> rusqlite::Result<(u64, u64)> {
    let mut req = tx.prepare_cached(
        "INSERT INTO requests(ts_ms, start_ms, kind, request_id, client_ip, user, method, path, query,
             route, slot, status, class, bytes_in, bytes_out, duration_ms, tls, served_by, user_agent, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?;
    let mut rollup: HashMap<(i64, &str, &str), [i64; 5]> = HashMap::new();
    let (mut good, mut bad) = (0u64, 0u64);
    let now = now_ms() as i64;
    for item in items {
        let p = match item {
            Item::Ok(p) => p,
            Item::Bad {
                offset,
                reason,
                raw,
            } => {
                bad += 1;
                tx.prepare_cached(
                    "INSERT INTO malformed(ts_ms, file, offset, reason, line) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![now, file, *offset as i64, reason, raw])?;
                continue;
            }
        };
        good += 1;
        let l = &p.line;
        req.execute(params![
            p.ts_ms,
            p.start_ms,
            l.kind,
            l.request_id,
            l.client_ip,
            l.user,
            l.method,
            l.path,
            l.query,
            l.route,
            l.slot,
            l.status,
            l.status / 100,
            l.bytes_in as i64,
            l.bytes_out as i64,
            l.duration_ms,
            l.tls,
            l.served_by,
            l.user_agent,
            l.error,
        ])?;
        let user = l.user.as_deref().unwrap_or("");
        let slot = l.slot.as_deref().unwrap_or("");
        let r = rollup.entry((day_of(p.ts_ms), user, slot)).or_default();
        r[0] += 1;
        r[1] += l.error.is_some() as i64;
        r[2] += l.bytes_out as i64;
        if l.kind == "ws" {
            let duration = l.duration_ms.max(0.0).round() as i64;
            let end_ms = p.start_ms + duration;
            tx.prepare_cached(
                "INSERT OR IGNORE INTO sessions(session, user, slot, client_ip, start_ms, end_ms,
                     duration_ms, bytes_in, bytes_out, recording)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                l.request_id,
                l.user,
                l.slot,
                l.client_ip,
                p.start_ms,
                end_ms,
                duration,
                l.bytes_in as i64,
                l.bytes_out as i64,
                l.recording.as_ref().map(|_| &l.request_id),
            ])?;
            tx.prepare_cached("DELETE FROM live_sessions WHERE session = ?1")?
                .execute([&l.request_id])?;
            if let Some(path) = &l.recording {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO recordings(id, user, slot, start_ms, duration_ms, size_bytes, path, input)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    l.request_id,
                    l.user,
                    l.slot,
                    p.start_ms,
                    duration,
                    l.recording_bytes.unwrap_or(0) as i64,
                    path,
                    l.recording_input.unwrap_or(false),
                ])?;
            }
            let s = rollup.entry((day_of(p.start_ms), user, slot)).or_default();
            s[3] += 1;
            s[4] += duration;
        }
        if let Some((method, user)) = parse::login(l) {
            let ok = l.error.is_none() && l.status < 400;
            tx.prepare_cached(
                "INSERT INTO logins(ts_ms, user, method, client_ip, ok, error, request_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                p.ts_ms,
                user,
                method,
                l.client_ip,
                ok,
                l.error,
                l.request_id
            ])?;
        }
    }
    const ADD: &str = "DO UPDATE SET
            requests = requests + excluded.requests, errors = errors + excluded.errors,
            bytes_out = bytes_out + excluded.bytes_out, sessions = sessions + excluded.sessions,
            session_ms = session_ms + excluded.session_ms";
    let mut up = tx.prepare_cached(&format!(
        "INSERT INTO daily(user, slot, day_ms, requests, errors, bytes_out, sessions, session_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(user, slot, day_ms) {ADD}"
    ))?;
    let mut per_user: HashMap<(i64, &str), [i64; 5]> = HashMap::new();
    for ((day, user, slot), v) in &rollup {
        up.execute(params![user, slot, day, v[0], v[1], v[2], v[3], v[4]])?;
        let u = per_user.entry((*day, user)).or_default();
        for (a, b) in u.iter_mut().zip(v) {
            *a += b;
        }
    }
    let mut up = tx.prepare_cached(&format!(
        "INSERT INTO daily_user(day_ms, user, requests, errors, bytes_out, sessions, session_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(day_ms, user) {ADD}"
    ))?;
    for ((day, user), v) in &per_user {
        up.execute(params![day, user, v[0], v[1], v[2], v[3], v[4]])?;
    }
    db::bump(tx, "lines", good)?;
    db::bump(tx, "malformed", bad)?;
    if bad > 0 {
        tx.prepare_cached(
            "DELETE FROM malformed WHERE id <= (SELECT max(id) FROM malformed) - ?1",
        )?
        .execute([malformed_keep as i64])?;
    }
    Ok((good, bad))
}

/// Start of the UTC day of `ms`.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000) * 86_400_000
}

/// A hash of the file's first line; `None` until it has one complete line
/// (or [`FINGERPRINT_MAX`] bytes).
fn fingerprint(file: &File) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = read_at_most(file, &mut buf, 0, FINGERPRINT_MAX)?;
    let first = match memchr(b'\n', &buf[..n]) {
        Some(i) => &buf[..i],
        None if n == FINGERPRINT_MAX => &buf[..n],
        None => return Ok(None),
    };
    let digest = Sha256::digest(first);
    Ok(Some(
        digest[..16].iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

/// Read up to `max` bytes at `offset` into `buf`; returns how many.
fn read_at_most(file: &File, buf: &mut Vec<u8>, offset: u64, max: usize) -> std::io::Result<usize> {
    buf.resize(max, 0);
    let mut filled = 0;
    while filled < max {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The offset just past the next `\n` at or after `from`, if there is one.
fn skip_long_line(file: &File, mut from: u64) -> std::io::Result<Option<u64>> {
    let mut buf = Vec::new();
    loop {
        let n = read_at_most(file, &mut buf, from, 1 << 20)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = memchr(b'\n', &buf[..n]) {
            return Ok(Some(from + i as u64 + 1));
        }
        from += n as u64;
    }
}

fn memchr(b: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == b)
}

fn memrchr(b: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().rposition(|&c| c == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(id: usize) -> String {
        format!(
            r#"{{"v":1,"ts":"2026-11-23T13:34:04.447Z","start":"2026-11-23T13:34:04.446Z","kind":"http","request_id":"{id:016x}","client_ip":"127.0.0.1","user":"u{u}","method":"GET","path":"/slot/a/","query":null,"route":"slot","slot":"a","status":200,"bytes_in":0,"bytes_out":13,"duration_ms":0.769,"tls":true,"served_by":"slot","user_agent":null,"error":null}}"#,
            u = id % 3
        )
    }

    fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    fn ids(db: &Path) -> Vec<String> {
        let c = db::open(db).unwrap();
        let mut st = c
            .prepare("SELECT request_id FROM requests ORDER BY request_id")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn tailer(dir: &Path) -> Tailer {
        Tailer::new(
            &dir.join("activity.db"),
            dir.join("access.log"),
            10,
            Default::default(),
        )
        .unwrap()
    }

    fn expect(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("{i:016x}")).collect()
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, (0..3).map(line));
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let l3 = line(3);
        f.write_all(&l3.as_bytes()[..40]).unwrap();
        let mut t = tailer(dir.path());
        assert_eq!(t.sweep().unwrap(), 3);
        assert_eq!(ids(&dir.path().join("activity.db")), expect(0..3));
        f.write_all(&l3.as_bytes()[40..]).unwrap();
        f.write_all(b"\n").unwrap();
        assert_eq!(t.sweep().unwrap(), 1);
        assert_eq!(ids(&dir.path().join("activity.db")), expect(0..4));
    }

    #[test]
    fn rotation_and_a_new_tailer_read_each_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, (0..10).map(line));
        let mut t = tailer(dir.path());
        t.sweep().unwrap();
        // More lines land in the old file, then it is rotated twice over
        // while the tailer is away (a restart).
        append(&log, (10..20).map(line));
        std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
        append(&log, (20..30).map(line));
        drop(t);
        std::fs::rename(
            dir.path().join("access.log.1"),
            dir.path().join("access.log.2"),
        )
        .unwrap();
        std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
        append(&log, (30..35).map(line));
        let mut t = tailer(dir.path());
        assert_eq!(t.sweep().unwrap(), 25);
        assert_eq!(t.sweep().unwrap(), 0);
        assert_eq!(ids(&dir.path().join("activity.db")), expect(0..35));
    }

    #[test]
    fn a_deleted_live_file_is_read_through_the_open_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, (0..5).map(line));
        let mut t = tailer(dir.path());
        t.sweep().unwrap();
        append(&log, (5..8).map(line));
        std::fs::remove_file(&log).unwrap();
        append(&log, (8..9).map(line));
        t.sweep().unwrap();
        assert_eq!(ids(&dir.path().join("activity.db")), expect(0..9));
    }

    #[test]
    fn truncation_starts_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, (0..50).map(line));
        let mut t = tailer(dir.path());
        t.sweep().unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        t.sweep().unwrap();
        append(&log, (100..160).map(line));
        t.sweep().unwrap();
        let mut want = expect(0..50);
        want.extend(expect(100..160));
        assert_eq!(ids(&dir.path().join("activity.db")), want);
        let c = db::open(&dir.path().join("activity.db")).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM ingest_files", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2, "two generations of the same inode");
    }

    #[test]
    fn malformed_lines_are_kept_aside_bounded_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let mut lines = vec![line(0)];
        for i in 0..15 {
            lines.push(format!("garbage {i}"));
        }
        lines.push(line(1));
        append(&log, lines);
        let mut t = tailer(dir.path());
        t.sweep().unwrap();
        assert_eq!(ids(&dir.path().join("activity.db")), expect(0..2));
        let c = db::open(&dir.path().join("activity.db")).unwrap();
        assert_eq!(db::counter(&c, "malformed").unwrap(), 15);
        assert_eq!(db::counter(&c, "lines").unwrap(), 2);
        let kept: Vec<String> = c
            .prepare("SELECT line FROM malformed ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(kept.len(), 10, "bounded by malformed_keep");
        assert_eq!(kept.last().unwrap(), "garbage 14");
    }

    #[test]
    fn many_batches_move_the_offset_with_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, (0..BATCH * 2 + 7).map(line));
        let mut t = tailer(dir.path());
        assert_eq!(t.sweep().unwrap() as usize, BATCH * 2 + 7);
        let c = db::open(&dir.path().join("activity.db")).unwrap();
        let (off, lines): (i64, i64) = c
            .query_row("SELECT offset, lines FROM ingest_files", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(off as u64, std::fs::metadata(&log).unwrap().len());
        assert_eq!(lines as usize, BATCH * 2 + 7);
        let day_total: i64 = c
            .query_row("SELECT sum(requests) FROM daily_user", [], |r| r.get(0))
            .unwrap();
        assert_eq!(day_total as usize, BATCH * 2 + 7);
    }
}
