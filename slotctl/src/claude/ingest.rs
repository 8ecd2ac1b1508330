//! Incremental ingestion of Claude Code transcripts from every user's HOME
//! (`<data_dir>/users/<user>/home/.claude/projects/**/*.jsonl`).
//!
//! Exactly once: per file, the complete lines read since the stored offset
//! and the new offset are written in one transaction, so a crash (even
//! `kill -9`) between reading and committing re-reads the same lines, and a
//! committed line is never read again. Only complete lines (ending in `\n`)
//! are consumed: Claude Code appends line by line, so a partial last line is
//! left for the next pass. Messages, tool calls and prompts are also keyed
//! by their own ids, so even a file that is replaced (new inode) or
//! truncated and re-read from 0 adds nothing twice.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use slotapi::UserName;
use tracing::{debug, info, warn};

use super::db::{self, Batch};
use super::transcript::{self, Skip};
use super::Claude;

/// Bytes read per transaction.
const CHUNK: usize = 4 << 20;
/// Longest line read (a pasted image makes a user line of megabytes);
/// longer ones are counted malformed and skipped.
const MAX_LINE: usize = 64 << 20;
/// Directory depth searched under `projects/` (subagent transcripts sit at
/// `<project>/<session>/subagents/*.jsonl`).
const MAX_DEPTH: usize = 4;

pub fn users_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("users")
}

/// Claude Code's config directory in a user's slot HOME (the templates set
/// `CLAUDE_CONFIG_DIR = "{home}/.claude"`, which is also its default).
pub fn claude_dir(data_dir: &Path, user: &str) -> PathBuf {
    users_dir(data_dir).join(user).join("home").join(".claude")
}

pub fn projects_dir(data_dir: &Path, user: &str) -> PathBuf {
    claude_dir(data_dir, user).join("projects")
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub files: u64,
    pub lines: u64,
    pub records: u64,
    pub malformed: u64,
}

impl Pass {
    fn add(&mut self, o: Pass) {
        self.files += o.files;
        self.lines += o.lines;
        self.records += o.records;
        self.malformed += o.malformed;
    }
}

fn jsonl_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let p = e.path();
        if ft.is_dir() && depth > 0 {
            jsonl_files(&p, depth - 1, out);
        } else if ft.is_file() && p.extension().is_some_and(|x| x == "jsonl") {
            out.push(p);
        }
    }
}

/// Users with a directory under `<data_dir>/users`.
pub fn users(data_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(users_dir(data_dir))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| UserName::new(n).is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl Claude {
    /// Ingest whatever is new in one file.
    pub fn ingest_file(&self, path: &Path, user: &str) -> anyhow::Result<Pass> {
        let key = path.display().to_string();
        let mut pass = Pass::default();
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pass),
            Err(e) => return Err(e.into()),
        };
        let meta = f.metadata()?;
        let inode = meta.ino();
        let len = meta.len();
        let stored = db::file_state(&self.db.lock(), &key)?;
        let mut offset = match stored {
            // Same file, not shrunk: carry on.
            Some(s) if s.inode == inode && s.offset <= len => s.offset,
            // Replaced or truncated: read it again from the start (ids keep
            // the stored facts unique).
            Some(_) => 0,
            None => 0,
        };
        if offset == len && stored.is_some() {
            return Ok(pass);
        }
        pass.files = 1;
        let mut buf = Vec::new();
        let mut chunk = CHUNK;
        loop {
            let want = ((len.saturating_sub(offset)) as usize).min(chunk);
            if want == 0 {
                break;
            }
            f.seek(SeekFrom::Start(offset))?;
            buf.clear();
            (&mut f).take(want as u64).read_to_end(&mut buf)?;
            let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') else {
                if want == CHUNK && chunk < MAX_LINE {
                    // A line longer than a chunk: read it whole.
                    chunk = MAX_LINE;
                    continue;
                }
                if want == MAX_LINE {
                    // Longer still: count it malformed and skip to its end
                    // so the file does not stall.
                    warn!(file = %key, offset, "transcript line longer than {MAX_LINE} bytes skipped");
                    let mut b = [0u8; 8192];
                    let mut skipped = buf.len() as u64;
                    loop {
                        let n = f.read(&mut b)?;
                        if n == 0 {
                            return Ok(pass);
                        }
                        if let Some(i) = b[..n].iter().position(|x| *x == b'\n') {
                            skipped += i as u64 + 1;
                            break;
                        }
                        skipped += n as u64;
                    }
                    offset += skipped;
                    let batch = Batch {
                        path: &key,
                        user,
                        inode,
                        offset,
                        lines: 1,
                        malformed: 1,
                        records: Vec::new(),
                    };
                    db::store_batch(&mut self.db.lock(), &batch, |_, _| 0.0)?;
                    pass.lines += 1;
                    pass.malformed += 1;
                    continue;
                }
                break; // only a partial line: wait for the rest
            };
            chunk = CHUNK;
            let complete = &buf[..=last_nl];
            let mut records = Vec::new();
            let (mut lines, mut malformed) = (0u64, 0u64);
            for raw in complete.split(|b| *b == b'\n') {
                if raw.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                lines += 1;
                let Ok(line) = std::str::from_utf8(raw) else {
                    malformed += 1;
                    continue;
                };
                match transcript::parse_line(line, self.cfg.prompt_chars) {
                    Ok(rec) => records.push(rec),
                    Err(Skip::Malformed(why)) => {
                        malformed += 1;
                        debug!(file = %key, reason = %why, "malformed transcript line");
                    }
                    Err(Skip::Ignored) => {}
                }
            }
            if self.cfg.prompt_chars == 0 {
                records.retain(|r| !matches!(r, transcript::Record::Prompt { .. }));
            }
            offset += complete.len() as u64;
            pass.lines += lines;
            pass.malformed += malformed;
            pass.records += records.len() as u64;
            let batch = Batch {
                path: &key,
                user,
                inode,
                offset,
                lines,
                malformed,
                records,
            };
            let prices = &self.cfg.prices;
            db::store_batch(&mut self.db.lock(), &batch, |m, t| prices.cost(m, t))?;
        }
        Ok(pass)
    }

    /// One pass over every user's transcripts. Returns the pass totals and
    /// the directories worth watching.
    pub fn scan(&self) -> (Pass, Vec<(PathBuf, bool)>) {
        let mut total = Pass::default();
        let mut watch = vec![(users_dir(&self.data_dir), false)];
        for user in users(&self.data_dir) {
            let claude = claude_dir(&self.data_dir, &user);
            let projects = projects_dir(&self.data_dir, &user);
            if claude.is_dir() {
                watch.push((claude, false));
            } else if let Some(home) = claude.parent().filter(|h| h.is_dir()) {
                watch.push((home.to_path_buf(), false));
            }
            if !projects.is_dir() {
                continue;
            }
            watch.push((projects.clone(), true));
            let mut files = Vec::new();
            jsonl_files(&projects, MAX_DEPTH, &mut files);
            for file in files {
                match self.ingest_file(&file, &user) {
                    Ok(p) => total.add(p),
                    Err(e) => warn!(file = %file.display(), error = %e, "ingesting a transcript"),
                }
            }
        }
        (total, watch)
    }
}

/// Run the watcher until the daemon ends: a pass at start, after every
/// burst of file events, and every `rescan_interval` in case inotify missed
/// something (new users, filesystems without events).
pub fn spawn(claude: Arc<Claude>) {
    tokio::spawn(async move {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut watcher = match notify::recommended_watcher(
            move |_r: notify::Result<notify::Event>| {
                let _ = tx.try_send(());
            },
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "no file watcher; transcripts are rescanned periodically only");
                None
            }
        };
        let mut watched: HashSet<PathBuf> = HashSet::new();
        let every = claude.cfg.rescan_interval;
        let mut expired_at: Option<tokio::time::Instant> = None;
        loop {
            if let Some(keep) = claude.cfg.prompt_retention {
                if expired_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                    expired_at = Some(tokio::time::Instant::now());
                    let c = claude.clone();
                    let cutoff = crate::clock::now_ms().saturating_sub(keep.as_millis() as u64);
                    let done = tokio::task::spawn_blocking(move || {
                        super::db::expire_prompts(&c.db.lock(), cutoff as i64)
                    })
                    .await;
                    match done {
                        Ok(Ok(n)) if n > 0 => info!(prompts = n, "expired old prompt summaries"),
                        Ok(Err(e)) => warn!(error = %e, "expiring prompt summaries"),
                        _ => {}
                    }
                }
            }
            let c = claude.clone();
            let Ok((pass, dirs)) = tokio::task::spawn_blocking(move || c.scan()).await else {
                return;
            };
            if pass.records > 0 || pass.malformed > 0 {
                info!(
                    files = pass.files,
                    lines = pass.lines,
                    records = pass.records,
                    malformed = pass.malformed,
                    "ingested Claude Code transcripts"
                );
            }
            let mut added = false;
            if let Some(w) = watcher.as_mut() {
                watched.retain(|d| d.is_dir());
                for (dir, recursive) in dirs {
                    if watched.contains(&dir) {
                        continue;
                    }
                    let mode = if recursive {
                        notify::RecursiveMode::Recursive
                    } else {
                        notify::RecursiveMode::NonRecursive
                    };
                    if w.watch(&dir, mode).is_ok() {
                        watched.insert(dir);
                        added = true;
                    }
                }
            }
            if added {
                // What was written after that pass walked a directory but
                // before its watch existed: one more pass catches it.
                continue;
            }
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() {
                        watcher = None;
                    }
                    // Let a burst of appends settle into one pass.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claude::ClaudeConfig;

    #[test]
    fn partial_lines_wait_and_lines_longer_than_a_chunk_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let c = Claude::open(dir.path(), ClaudeConfig::default()).unwrap();
        let p = projects_dir(dir.path(), "ann").join("-w");
        std::fs::create_dir_all(&p).unwrap();
        let file = p.join("s.jsonl");
        // A prompt with a pasted image: one line of 5 MiB.
        let big = format!(
            r#"{{"type":"user","uuid":"u1","sessionId":"s","timestamp":"2026-11-20T10:00:00Z","message":{{"role":"user","content":[{{"type":"text","text":"what is in this picture?"}},{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{}"}}}}]}}}}"#,
            "A".repeat(5 << 20)
        );
        let reply = r#"{"type":"assistant","uuid":"a1","sessionId":"s","timestamp":"2026-11-20T10:00:05Z","message":{"id":"msg_1","model":"claude-haiku-4-5","content":[{"type":"text","text":"A cat."}],"usage":{"input_tokens":1500,"output_tokens":4}}}"#;
        std::fs::write(&file, format!("{big}\n{}", &reply[..40])).unwrap();
        let pass = c.ingest_file(&file, "ann").unwrap();
        assert_eq!((pass.lines, pass.records, pass.malformed), (1, 1, 0));
        let stored = db::file_state(&c.db.lock(), &file.display().to_string())
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.offset,
            big.len() as u64 + 1,
            "the partial line is left"
        );
        // The rest of the line arrives.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        writeln!(f, "{}", &reply[40..]).unwrap();
        let pass = c.ingest_file(&file, "ann").unwrap();
        assert_eq!((pass.lines, pass.records), (1, 1));
        let pass = c.ingest_file(&file, "ann").unwrap();
        assert_eq!(pass, Pass::default(), "nothing is read twice");
        let page =
            super::super::query::prompts(&c.db.lock(), &Default::default(), 5, None).unwrap();
        assert_eq!(page.items[0].summary, "what is in this picture?");
        assert_eq!(page.items[0].model.as_deref(), Some("claude-haiku-4-5"));
    }
}
