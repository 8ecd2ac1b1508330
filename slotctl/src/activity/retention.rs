//! The retention job: every `retention_interval`, delete the rows older
//! than their table's `[activity] retention.<table>`, in small batches so
//! other writers never wait long. Expired replay links go a day after
//! they expire. (The tailer forgets log files that are gone itself.)

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tracing::{info, warn};

use super::ActivityStore;
use crate::clock::now_ms;

/// Rows deleted per transaction.
const CHUNK: i64 = 5000;

/// Table → (time column, how rows are addressed in a chunked delete).
const TABLES: &[(&str, &str, &str)] = &[
    ("requests", "ts_ms", "id"),
    ("sessions", "start_ms", "session"),
    ("logins", "ts_ms", "id"),
    ("events", "ts_ms", "id"),
    ("recordings", "start_ms", "id"),
    ("malformed", "ts_ms", "id"),
    ("daily", "day_ms", ""),
    ("daily_user", "day_ms", ""),
];

pub async fn run(store: Arc<ActivityStore>) {
    let every = store.settings.retention_interval;
    loop {
        match enforce(&store).await {
            Ok(0) => {}
            Ok(n) => info!(rows = n, "activity: retention removed old rows"),
            Err(e) => warn!(error = %e, "activity: retention failed; will retry"),
        }
        tokio::time::sleep(every).await;
    }
}

/// One pass over every table; returns the rows removed.
pub async fn enforce(store: &ActivityStore) -> rusqlite::Result<u64> {
    let mut total = 0;
    let now = now_ms() as i64;
    for (table, col, key) in TABLES {
        let setting = if table.starts_with("daily") {
            "rollup"
        } else {
            table
        };
        let Some(keep) = store.settings.keep(setting) else {
            continue;
        };
        let cutoff = now - keep.as_millis() as i64;
        loop {
            let n = store
                .write(move |c| delete_chunk(c, table, col, key, cutoff))
                .await?;
            total += n;
            if n < CHUNK as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    total += store
        .write(move |c| {
            c.execute(
                "DELETE FROM replay_links WHERE expires_ms < ?1",
                [now - 86_400_000],
            )
        })
        .await? as u64;
    Ok(total)
}

fn delete_chunk(
    c: &mut Connection,
    table: &str,
    col: &str,
    key: &str,
    cutoff: i64,
) -> rusqlite::Result<u64> {
    // The rollups hold few rows per day: one statement.
    let sql = if key.is_empty() {
        format!("DELETE FROM {table} WHERE {col} < ?1")
    } else {
        format!(
            "DELETE FROM {table} WHERE {key} IN
               (SELECT {key} FROM {table} WHERE {col} < ?1 LIMIT {CHUNK})"
        )
    };
    Ok(c.execute(&sql, [cutoff])? as u64)
}
