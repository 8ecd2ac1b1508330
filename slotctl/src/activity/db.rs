//! `activity.db`: the schema and how every connection to it is opened.
//! WAL journal with a busy timeout, because several writers share the
//! file (the access-log tailer, the lifecycle recorder, the API, and the
//! usage ingester's own `claude_*`/`quota_*` tables); every writer keeps
//! its transactions short.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// How long a connection waits for another writer before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS requests (
    id          INTEGER PRIMARY KEY,
    ts_ms       INTEGER NOT NULL,
    start_ms    INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    client_ip   TEXT,
    user        TEXT,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    query       TEXT,
    route       TEXT NOT NULL,
    slot        TEXT,
    status      INTEGER NOT NULL,
    -- status / 100, for the `4xx`-style filter.
    class       INTEGER NOT NULL,
    bytes_in    INTEGER NOT NULL,
    bytes_out   INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    tls         INTEGER NOT NULL,
    served_by   TEXT NOT NULL,
    user_agent  TEXT,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts_ms);
CREATE INDEX IF NOT EXISTS requests_user ON requests(user, ts_ms);
CREATE INDEX IF NOT EXISTS requests_slot ON requests(slot, ts_ms);
CREATE INDEX IF NOT EXISTS requests_class ON requests(class, ts_ms);

CREATE TABLE IF NOT EXISTS sessions (
    session     TEXT PRIMARY KEY,
    user        TEXT,
    slot        TEXT,
    client_ip   TEXT,
    start_ms    INTEGER NOT NULL,
    end_ms      INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    bytes_in    INTEGER NOT NULL,
    bytes_out   INTEGER NOT NULL,
    recording   TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_start ON sessions(start_ms, session);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user, start_ms);
CREATE INDEX IF NOT EXISTS sessions_slot ON sessions(slot, start_ms);

CREATE TABLE IF NOT EXISTS live_sessions (
    session  TEXT PRIMARY KEY,
    slot     TEXT NOT NULL,
    user     TEXT,
    since_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS logins (
    id         INTEGER PRIMARY KEY,
    ts_ms      INTEGER NOT NULL,
    user       TEXT,
    method     TEXT NOT NULL,
    client_ip  TEXT,
    ok         INTEGER NOT NULL,
    error      TEXT,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logins_ts ON logins(ts_ms);
CREATE INDEX IF NOT EXISTS logins_user ON logins(user, ts_ms);

CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY,
    ts_ms  INTEGER NOT NULL,
    slot   TEXT NOT NULL,
    owner  TEXT,
    kind   TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts_ms);
CREATE INDEX IF NOT EXISTS events_slot ON events(slot, ts_ms);

-- Slots the lifecycle recorder has seen, to notice creations and
-- deletions across daemon restarts.
CREATE TABLE IF NOT EXISTS known_slots (
    slot   TEXT PRIMARY KEY,
    owner  TEXT,
    status TEXT
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS recordings (
    id          TEXT PRIMARY KEY,
    user        TEXT,
    slot        TEXT,
    start_ms    INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    size_bytes  INTEGER NOT NULL,
    path        TEXT NOT NULL,
    input       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recordings_start ON recordings(start_ms, id);
CREATE INDEX IF NOT EXISTS recordings_user ON recordings(user, start_ms);

-- Replay links: only a SHA-256 of the token is kept.
CREATE TABLE IF NOT EXISTS replay_links (
    token_hash TEXT PRIMARY KEY,
    recording  TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    revoked_ms INTEGER
) WITHOUT ROWID;

-- One row per access-log file generation, recognised by device, inode and
-- a fingerprint of its first line. `offset` moves in the same transaction
-- as the rows of the lines before it.
CREATE TABLE IF NOT EXISTS ingest_files (
    id            INTEGER PRIMARY KEY,
    dev           INTEGER NOT NULL,
    ino           INTEGER NOT NULL,
    fingerprint   TEXT NOT NULL,
    path          TEXT NOT NULL,
    offset        INTEGER NOT NULL,
    lines         INTEGER NOT NULL DEFAULT 0,
    malformed     INTEGER NOT NULL DEFAULT 0,
    first_seen_ms INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    UNIQUE (dev, ino, fingerprint)
);

CREATE TABLE IF NOT EXISTS malformed (
    id      INTEGER PRIMARY KEY,
    ts_ms   INTEGER NOT NULL,
    file    TEXT NOT NULL,
    offset  INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    line    TEXT NOT NULL
);

-- The rollups the stats read, kept longer than the raw rows: per UTC
-- day and user ('' when anonymous), and per user, slot and day (for the
-- slot filter).
CREATE TABLE IF NOT EXISTS daily_user (
    day_ms     INTEGER NOT NULL,
    user       TEXT NOT NULL,
    requests   INTEGER NOT NULL DEFAULT 0,
    errors     INTEGER NOT NULL DEFAULT 0,
    bytes_out  INTEGER NOT NULL DEFAULT 0,
    sessions   INTEGER NOT NULL DEFAULT 0,
    session_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day_ms, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS daily (
    user       TEXT NOT NULL,
    slot       TEXT NOT NULL,
    day_ms     INTEGER NOT NULL,
    requests   INTEGER NOT NULL DEFAULT 0,
    errors     INTEGER NOT NULL DEFAULT 0,
    bytes_out  INTEGER NOT NULL DEFAULT 0,
    sessions   INTEGER NOT NULL DEFAULT 0,
    session_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, slot, day_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS daily_slot ON daily(slot, day_ms);

CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Open a connection with the pragmas every user of the file needs.
pub fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Open and create the schema (idempotent).
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = connect(path)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Add `n` to a named counter (inside the caller's transaction).
pub fn bump(conn: &Connection, name: &str, n: u64) -> rusqlite::Result<()> {
    if n == 0 {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO counters(name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(rusqlite::params![name, n as i64])?;
    Ok(())
}

pub fn counter(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .unwrap_or(0) as u64)
}
