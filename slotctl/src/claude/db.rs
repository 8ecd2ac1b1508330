//! The Claude tables in `activity.db` (`claude_*`, `quota_*`): transcript
//! offsets, messages, tool calls, prompt summaries, quota overrides and the
//! encrypted API keys. The activity store shares the file; this module has
//! its own connection and migration (`CREATE TABLE IF NOT EXISTS`), WAL and
//! a busy timeout, and keeps every transaction short.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::transcript::{Record, Tokens};

pub const FILE: &str = "activity.db";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS claude_files (
    path TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    inode INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    lines INTEGER NOT NULL DEFAULT 0,
    malformed INTEGER NOT NULL DEFAULT 0,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS claude_messages (
    message_id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    session TEXT NOT NULL,
    project TEXT,
    model TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL
);
-- Covering indexes for the usage queries (by UTC day = ts_ms / 86400000)
-- and the quota sums: no table lookups, no sort for GROUP BY.
CREATE INDEX IF NOT EXISTS claude_messages_day ON claude_messages(
    ts_ms / 86400000, user, model, ts_ms,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd);
CREATE INDEX IF NOT EXISTS claude_messages_user ON claude_messages(
    user, ts_ms, model,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd);
CREATE TABLE IF NOT EXISTS claude_tools (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    user TEXT NOT NULL,
    session TEXT NOT NULL,
    model TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    tool TEXT NOT NULL,
    file TEXT
);
CREATE INDEX IF NOT EXISTS claude_tools_day ON claude_tools(ts_ms / 86400000, user, model, ts_ms);
CREATE INDEX IF NOT EXISTS claude_tools_user ON claude_tools(user, ts_ms, model);
CREATE TABLE IF NOT EXISTS claude_prompts (
    uuid TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    session TEXT NOT NULL,
    project TEXT,
    ts_ms INTEGER NOT NULL,
    summary TEXT NOT NULL,
    model TEXT
);
CREATE INDEX IF NOT EXISTS claude_prompts_ts ON claude_prompts(ts_ms);
CREATE INDEX IF NOT EXISTS claude_prompts_day ON claude_prompts(ts_ms / 86400000, user, model, ts_ms);
CREATE INDEX IF NOT EXISTS claude_prompts_user ON claude_prompts(user, ts_ms, model);
CREATE INDEX IF NOT EXISTS claude_prompts_session ON claude_prompts(session, model);
CREATE TABLE IF NOT EXISTS quota_overrides (
    user TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS claude_keys (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    nonce BLOB NOT NULL,
    secret BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS claude_key_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS claude_key_assignments (
    user TEXT PRIMARY KEY,
    key_name TEXT NOT NULL,
    assigned_ms INTEGER NOT NULL
);
";

/// One connection to `activity.db` with the Claude tables migrated.
pub struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        use anyhow::Context as _;
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("migrating the claude tables in {}", path.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    /// Open the store only if it exists and has the Claude tables, without
    /// migrating (the supervisor's path: quick, never creates anything).
    pub fn open_existing(path: &Path) -> anyhow::Result<Option<Db>> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        conn.busy_timeout(Duration::from_secs(2))?;
        let ready: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'claude_keys')",
            [],
            |r| r.get(0),
        )?;
        Ok(ready.then(|| Db {
            conn: Mutex::new(conn),
        }))
    }

    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where ingestion of one file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileState {
    pub inode: u64,
    pub offset: u64,
}

pub fn file_state(conn: &Connection, path: &str) -> rusqlite::Result<Option<FileState>> {
    conn.query_row(
        "SELECT inode, offset FROM claude_files WHERE path = ?1",
        [path],
        |r| {
            Ok(FileState {
                inode: r.get::<_, i64>(0)? as u64,
                offset: r.get::<_, i64>(1)? as u64,
            })
        },
    )
    .optional()
}

/// What one batch of complete lines yields, stored in one transaction with
/// the file's new offset.
pub struct Batch<'a> {
    pub path: &'a str,
    pub user: &'a str,
    pub inode: u64,
    pub offset: u64,
    pub lines: u64,
    pub malformed: u64,
    pub records: Vec<Record>,
}

/// Lines of one assistant message folded into one record (in the order the
/// messages first appear): Claude Code writes a line per content block.
fn merge(records: &[Record]) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::with_capacity(records.len());
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for rec in records {
        if let Record::Assistant {
            message_id,
            tokens,
            tools,
            ..
        } = rec
        {
            if let Some(&i) = at.get(message_id.as_str()) {
                if let Record::Assistant {
                    tokens: t,
                    tools: tl,
                    ..
                } = &mut out[i]
                {
                    *t = t.max(*tokens);
                    tl.extend(tools.iter().cloned());
                }
                continue;
            }
            at.insert(message_id, out.len());
        }
        out.push(rec.clone());
    }
    out
}

/// Store a batch: messages (merged by id), tools and prompts (once each by
/// id), the file's offset, all or nothing.
pub fn store_batch(
    conn: &mut Connection,
    b: &Batch<'_>,
    cost: impl Fn(&str, Tokens) -> f64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut msg = tx.prepare_cached(
            "INSERT INTO claude_messages (message_id, user, session, project, model, ts_ms,
                 input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(message_id) DO UPDATE SET
                 input_tokens = ?7, output_tokens = ?8, cache_read_tokens = ?9,
                 cache_write_tokens = ?10, cost_usd = ?11",
        )?;
        let mut get = tx.prepare_cached(
            "SELECT input_tokens, output_tokens, cache_read_tokens, cache_write_tokens
             FROM claude_messages WHERE message_id = ?1",
        )?;
        let mut tool = tx.prepare_cached(
            "INSERT OR IGNORE INTO claude_tools (id, message_id, user, session, model, ts_ms, tool, file)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut prompt = tx.prepare_cached(
            "INSERT OR IGNORE INTO claude_prompts (uuid, user, session, project, ts_ms, summary)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut answered = tx.prepare_cached(
            "UPDATE claude_prompts SET model = ?1
             WHERE session = ?2 AND model IS NULL AND ts_ms <= ?3",
        )?;
        for rec in &merge(&b.records) {
            match rec {
                Record::Prompt { meta, summary } => {
                    prompt.execute(params![
                        meta.uuid,
                        b.user,
                        meta.session,
                        meta.cwd,
                        meta.ts_ms,
                        summary
                    ])?;
                }
                Record::Assistant {
                    meta,
                    message_id,
                    model,
                    tokens,
                    tools,
                } => {
                    let before: Option<Tokens> = get
                        .query_row([message_id], |r| {
                            Ok(Tokens {
                                input: r.get::<_, i64>(0)? as u64,
                                output: r.get::<_, i64>(1)? as u64,
                                cache_read: r.get::<_, i64>(2)? as u64,
                                cache_write: r.get::<_, i64>(3)? as u64,
                            })
                        })
                        .optional()?;
                    let t = before.map(|b| b.max(*tokens)).unwrap_or(*tokens);
                    msg.execute(params![
                        message_id,
                        b.user,
                        meta.session,
                        meta.cwd,
                        model,
                        meta.ts_ms,
                        t.input as i64,
                        t.output as i64,
                        t.cache_read as i64,
                        t.cache_write as i64,
                        cost(model, t)
                    ])?;
                    for c in tools {
                        tool.execute(params![
                            c.id,
                            message_id,
                            b.user,
                            meta.session,
                            model,
                            meta.ts_ms,
                            c.name,
                            c.file
                        ])?;
                    }
                    if model != "<synthetic>" {
                        answered.execute(params![model, meta.session, meta.ts_ms])?;
                    }
                }
            }
        }
        tx.execute(
            "INSERT INTO claude_files (path, user, inode, offset, lines, malformed, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(path) DO UPDATE SET inode = ?3, offset = ?4,
                 lines = CASE WHEN claude_files.inode = ?3 THEN claude_files.lines + ?5 ELSE ?5 END,
                 malformed = CASE WHEN claude_files.inode = ?3 THEN claude_files.malformed + ?6 ELSE ?6 END,
                 updated_ms = ?7",
            params![
                b.path,
                b.user,
                b.inode as i64,
                b.offset as i64,
                b.lines as i64,
                b.malformed as i64,
                crate::clock::now_ms() as i64
            ],
        )?;
    }
    tx.commit()
}

/// Blank the text of prompt summaries older than `cutoff_ms` (the rows and
/// so the prompt counts stay). Returns how many were blanked.
pub fn expire_prompts(conn: &Connection, cutoff_ms: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE claude_prompts SET summary = '' WHERE ts_ms < ?1 AND summary != ''",
        [cutoff_ms],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claude::transcript::{parse_line, Record};

    #[test]
    fn a_batch_is_stored_once_and_old_prompt_text_expires() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(FILE)).unwrap();
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../tests/fixtures/claude/alice/-work-shop/6f1c2a9e-3b1d-4c55-9a0e-1d2f3c4b5a60.jsonl",
        ))
        .unwrap();
        let records: Vec<Record> = text
            .lines()
            .filter_map(|l| parse_line(l, 100).ok())
            .collect();
        let batch = |offset| Batch {
            path: "f",
            user: "alice",
            inode: 1,
            offset,
            lines: 3,
            malformed: 0,
            records: records.clone(),
        };
        let mut conn = db.lock();
        store_batch(&mut conn, &batch(10), |_, t| t.output as f64).unwrap();
        // The same lines again (a file read twice) add nothing.
        store_batch(&mut conn, &batch(20), |_, t| t.output as f64).unwrap();
        let (n, out, cost): (i64, i64, f64) = conn
            .query_row(
                "SELECT COUNT(*), SUM(output_tokens), SUM(cost_usd) FROM claude_messages",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((n, out, cost), (3, 566, 566.0));
        let tools: i64 = conn
            .query_row("SELECT COUNT(*) FROM claude_tools", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tools, 3);
        assert_eq!(file_state(&conn, "f").unwrap().unwrap().offset, 20);

        // 2026-11-20T09:01Z: the first prompt is older, the second is not.
        assert_eq!(expire_prompts(&conn, 1_795_165_260_000).unwrap(), 1);
        let page = crate::claude::query::prompts(&conn, &Default::default(), 10, None).unwrap();
        assert_eq!(page.items.len(), 1, "expired text is not listed");
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM claude_prompts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2, "the prompt still counts");
    }
}
