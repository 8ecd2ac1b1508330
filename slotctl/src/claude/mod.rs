//! Claude Code accounting: transcripts from each user's slot HOME ingested
//! into `activity.db` (tokens, cost, tool calls, prompt summaries), per-user
//! quotas that slotgate enforces, and the Anthropic API keys slots get.
//!
//! - `transcript`: one JSONL line → a record (pure).
//! - `config`: `[claude]`: prices, quotas, ingestion settings.
//! - `db`: the `claude_*`/`quota_*` tables (the only SQL besides `query`).
//! - `ingest`: watching and incremental, exactly-once reading.
//! - `query`: usage, tools and prompt queries.
//! - `quota`: limits, overrides and the verdict.
//! - `keys`: encrypted keys and their injection into a slot's environment.
//! - `api`: the `/v1/usage`, `/v1/quotas` and `/v1/keys` routes.

pub mod api;
pub mod config;
pub mod db;
pub mod ingest;
pub mod keys;
pub mod query;
pub mod quota;
pub mod transcript;

use std::path::PathBuf;
use std::sync::Arc;

pub use config::ClaudeConfig;

/// The daemon's Claude service: configuration plus its own connection.
pub struct Claude {
    pub cfg: ClaudeConfig,
    pub data_dir: PathBuf,
    pub db: db::Db,
}

impl Claude {
    pub fn open(data_dir: &std::path::Path, cfg: ClaudeConfig) -> anyhow::Result<Arc<Claude>> {
        let db = db::Db::open(&db::path(data_dir))?;
        Ok(Arc::new(Claude {
            cfg,
            data_dir: data_dir.to_path_buf(),
            db,
        }))
    }

    /// Open the store and, unless `[claude] watch = false`, start watching.
    pub fn launch(data_dir: &std::path::Path, cfg: ClaudeConfig) -> anyhow::Result<Arc<Claude>> {
        let c = Self::open(data_dir, cfg)?;
        if c.cfg.watch {
            // Watched from the start, so the first user's HOME is seen at once.
            use std::os::unix::fs::DirBuilderExt;
            let users = ingest::users_dir(data_dir);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&users)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", users.display()))?;
            ingest::spawn(c.clone());
        }
        Ok(c)
    }
}
