//! `state.db`: desired state and runtime facts of every slot and every app
//! instance. The only module that contains SQL. WAL journal, so a crash of the daemon at any
//! point leaves a consistent database; every change is one transaction.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use slotapi::{AppName, AppSource, AppStatus, SlotId, SlotStatus, UserName};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("slot {0} already exists")]
    Exists(SlotId),
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// One slot row.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotRecord {
    pub id: SlotId,
    pub template: String,
    pub owner: UserName,
    pub enabled: bool,
    pub created_at_ms: u64,
    pub restarts: u32,
    pub status: SlotStatus,
    pub pid: Option<u32>,
    /// Start time of `pid` in clock ticks since boot.
    pub start_ticks: Option<u64>,
    pub boot_id: Option<String>,
    pub cgroup: String,
    pub started_at_ms: Option<u64>,
    pub last_exit: Option<String>,
    pub reason: Option<String>,
}

/// One app instance row. `spec` is the app's definition as `AppSpec` JSON
/// (for config apps a copy of the file's, for runtime apps the only one).
#[derive(Debug, Clone, PartialEq)]
pub struct AppRecord {
    pub pm_id: u32,
    pub name: AppName,
    pub instance: u32,
    pub source: AppSource,
    pub spec: String,
    pub enabled: bool,
    pub created_at_ms: u64,
    pub restarts: u32,
    pub unstable: u32,
    pub status: AppStatus,
    pub pid: Option<u32>,
    pub start_ticks: Option<u64>,
    pub boot_id: Option<String>,
    pub started_at_ms: Option<u64>,
    pub last_exit: Option<String>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

fn row_to_app(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppRecord> {
    let name: String = r.get("name")?;
    let status: String = r.get("status")?;
    let source: String = r.get("source")?;
    let bad = |what: &str, v: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("bad {what} {v:?} in state.db").into(),
        )
    };
    Ok(AppRecord {
        pm_id: r.get::<_, i64>("pm_id")? as u32,
        name: AppName::new(name.clone()).map_err(|_| bad("app name", &name))?,
        instance: r.get::<_, i64>("instance")? as u32,
        source: match source.as_str() {
            "config" => AppSource::Config,
            "runtime" => AppSource::Runtime,
            _ => return Err(bad("source", &source)),
        },
        spec: r.get("spec")?,
        enabled: r.get::<_, i64>("enabled")? != 0,
        created_at_ms: r.get::<_, i64>("created_at_ms")? as u64,
        restarts: r.get::<_, i64>("restarts")? as u32,
        unstable: r.get::<_, i64>("unstable")? as u32,
        status: AppStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        pid: r.get::<_, Option<i64>>("pid")?.map(|p| p as u32),
        start_ticks: r.get::<_, Option<i64>>("start_ticks")?.map(|p| p as u64),
        boot_id: r.get("boot_id")?,
        started_at_ms: r.get::<_, Option<i64>>("started_at_ms")?.map(|p| p as u64),
        last_exit: r.get("last_exit")?,
        exit_code: r.get::<_, Option<i64>>("exit_code")?.map(|c| c as i32),
        reason: r.get("reason")?,
    })
}

pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS slots (
    id            TEXT PRIMARY KEY,
    template      TEXT NOT NULL,
    owner         TEXT NOT NULL,
    enabled       INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    restarts      INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL,
    pid           INTEGER,
    start_ticks   INTEGER,
    boot_id       TEXT,
    cgroup        TEXT NOT NULL DEFAULT '',
    started_at_ms INTEGER,
    last_exit     TEXT,
    reason        TEXT
);
CREATE TABLE IF NOT EXISTS apps (
    pm_id         INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    instance      INTEGER NOT NULL,
    source        TEXT NOT NULL,
    spec          TEXT NOT NULL,
    enabled       INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    restarts      INTEGER NOT NULL DEFAULT 0,
    unstable      INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL,
    pid           INTEGER,
    start_ticks   INTEGER,
    boot_id       TEXT,
    started_at_ms INTEGER,
    last_exit     TEXT,
    exit_code     INTEGER,
    reason        TEXT,
    UNIQUE (name, instance)
);
CREATE TABLE IF NOT EXISTS tenants (
    name          TEXT PRIMARY KEY,
    uid           INTEGER NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
";

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<SlotRecord> {
    let id: String = r.get("id")?;
    let owner: String = r.get("owner")?;
    let status: String = r.get("status")?;
    let bad = |what: &str, v: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("bad {what} {v:?} in state.db").into(),
        )
    };
    Ok(SlotRecord {
        id: SlotId::new(id.clone()).map_err(|_| bad("slot id", &id))?,
        template: r.get("template")?,
        owner: UserName::new(owner.clone()).map_err(|_| bad("owner", &owner))?,
        enabled: r.get::<_, i64>("enabled")? != 0,
        created_at_ms: r.get::<_, i64>("created_at_ms")? as u64,
        restarts: r.get::<_, i64>("restarts")? as u32,
        status: SlotStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        pid: r.get::<_, Option<i64>>("pid")?.map(|p| p as u32),
        start_ticks: r.get::<_, Option<i64>>("start_ticks")?.map(|p| p as u64),
        boot_id: r.get("boot_id")?,
        cgroup: r.get("cgroup")?,
        started_at_ms: r.get::<_, Option<i64>>("started_at_ms")?.map(|p| p as u64),
        last_exit: r.get("last_exit")?,
        reason: r.get("reason")?,
    })
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // NORMAL under WAL never corrupts on a crash; it may only lose the
            // last commits on power loss, which re-adoption tolerates.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // The daemon reads the whole table once at start; a small page
            // cache keeps its resident memory low with thousands of units.
            conn.pragma_update(None, "cache_size", -256)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The uid recorded for sandbox owner `name`, or a new one: the lowest
    /// in `first..=last` that no other owner has and `taken` does not
    /// refuse (uids the host's accounts use). One transaction, so two
    /// owners never get the same uid. `None` when the range is full.
    pub fn tenant_uid(
        &self,
        name: &str,
        first: u32,
        last: u32,
        taken: impl Fn(u32) -> bool,
    ) -> Result<Option<u32>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let known: Option<i64> = tx
            .query_row("SELECT uid FROM tenants WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(uid) = known {
            return Ok(Some(uid as u32));
        }
        let used: std::collections::BTreeSet<u32> = {
            let mut st = tx.prepare("SELECT uid FROM tenants WHERE uid BETWEEN ?1 AND ?2")?;
            let rows = st.query_map(params![first, last], |r| r.get::<_, i64>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .map(|u| u as u32)
                .collect()
        };
        let Some(uid) = (first..=last).find(|u| !used.contains(u) && !taken(*u)) else {
            return Ok(None);
        };
        tx.execute(
            "INSERT INTO tenants (name, uid, created_at_ms) VALUES (?1, ?2, ?3)",
            params![name, uid, crate::clock::now_ms() as i64],
        )?;
        tx.commit()?;
        Ok(Some(uid))
    }

    /// Every recorded owner and uid, by uid.
    pub fn tenants(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT name, uid FROM tenants ORDER BY uid")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u32))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn insert(&self, rec: &SlotRecord) -> Result<(), StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "INSERT OR IGNORE INTO slots (id, template, owner, enabled, created_at_ms, restarts, status, cgroup)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                rec.id.as_str(),
                rec.template,
                rec.owner.as_str(),
                rec.enabled as i64,
                rec.created_at_ms as i64,
                rec.restarts as i64,
                rec.status.as_str(),
                rec.cgroup,
            ],
        )?;
        if n == 0 {
            return Err(StoreError::Exists(rec.id.clone()));
        }
        Ok(())
    }

    /// Write every mutable field of `rec` in one statement.
    pub fn save(&self, rec: &SlotRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE slots SET enabled = ?2, restarts = ?3, status = ?4, pid = ?5, start_ticks = ?6,
                boot_id = ?7, cgroup = ?8, started_at_ms = ?9, last_exit = ?10, reason = ?11
             WHERE id = ?1",
            params![
                rec.id.as_str(),
                rec.enabled as i64,
                rec.restarts as i64,
                rec.status.as_str(),
                rec.pid.map(|p| p as i64),
                rec.start_ticks.map(|p| p as i64),
                rec.boot_id,
                rec.cgroup,
                rec.started_at_ms.map(|p| p as i64),
                rec.last_exit,
                rec.reason,
            ],
        )?;
        Ok(())
    }

    pub fn delete(&self, id: &SlotId) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM slots WHERE id = ?1", params![id.as_str()])?
            > 0)
    }

    pub fn get(&self, id: &SlotId) -> Result<Option<SlotRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM slots WHERE id = ?1",
                params![id.as_str()],
                row_to_record,
            )
            .optional()?)
    }

    pub fn all(&self) -> Result<Vec<SlotRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM slots ORDER BY id")?;
        let rows = stmt.query_map([], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Store {
    /// Insert or replace every field of an app instance row.
    pub fn save_app(&self, rec: &AppRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO apps (pm_id, name, instance, source, spec, enabled, created_at_ms, restarts, unstable,
                status, pid, start_ticks, boot_id, started_at_ms, last_exit, exit_code, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT (pm_id) DO UPDATE SET name = ?2, instance = ?3, source = ?4, spec = ?5,
                enabled = ?6, created_at_ms = ?7, restarts = ?8, unstable = ?9, status = ?10, pid = ?11,
                start_ticks = ?12, boot_id = ?13, started_at_ms = ?14, last_exit = ?15, exit_code = ?16,
                reason = ?17",
            params![
                rec.pm_id as i64,
                rec.name.as_str(),
                rec.instance as i64,
                match rec.source {
                    AppSource::Config => "config",
                    AppSource::Runtime => "runtime",
                },
                rec.spec,
                rec.enabled as i64,
                rec.created_at_ms as i64,
                rec.restarts as i64,
                rec.unstable as i64,
                rec.status.as_str(),
                rec.pid.map(|p| p as i64),
                rec.start_ticks.map(|p| p as i64),
                rec.boot_id,
                rec.started_at_ms.map(|p| p as i64),
                rec.last_exit,
                rec.exit_code.map(|c| c as i64),
                rec.reason,
            ],
        )?;
        Ok(())
    }

    pub fn delete_app(&self, pm_id: u32) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM apps WHERE pm_id = ?1", params![pm_id as i64])?
            > 0)
    }

    pub fn all_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM apps ORDER BY pm_id")?;
        let rows = stmt.query_map([], row_to_app)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The next unused pm_id (one more than any ever stored in `meta`, so a
    /// deleted app's id is not handed to another app within this state.db).
    pub fn next_pm_id(&self) -> Result<u32, StoreError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let stored: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'next_pm_id'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let max: Option<i64> = tx.query_row("SELECT MAX(pm_id) FROM apps", [], |r| r.get(0))?;
        let next = stored
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
            .max(max.map_or(0, |m| m as u32 + 1));
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('next_pm_id', ?1)
             ON CONFLICT (key) DO UPDATE SET value = ?1",
            params![(next + 1).to_string()],
        )?;
        tx.commit()?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> SlotRecord {
        SlotRecord {
            id: SlotId::new(id).unwrap(),
            template: "shell".into(),
            owner: UserName::new("alice").unwrap(),
            enabled: true,
            created_at_ms: 1,
            restarts: 0,
            status: SlotStatus::Stopped,
            pid: None,
            start_ticks: None,
            boot_id: None,
            cgroup: String::new(),
            started_at_ms: None,
            last_exit: None,
            reason: None,
        }
    }

    #[test]
    fn tenant_uids_are_stable_distinct_and_skip_taken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let taken = |u: u32| u == 500_001;
        {
            let s = Store::open(&path).unwrap();
            assert_eq!(
                s.tenant_uid("alice", 500_000, 500_003, taken).unwrap(),
                Some(500_000)
            );
            assert_eq!(
                s.tenant_uid("bob", 500_000, 500_003, taken).unwrap(),
                Some(500_002)
            );
            assert_eq!(
                s.tenant_uid("alice", 500_000, 500_003, taken).unwrap(),
                Some(500_000)
            );
            assert_eq!(
                s.tenant_uid("carol", 500_000, 500_003, taken).unwrap(),
                Some(500_003)
            );
            // Full: refused, nothing recorded.
            assert_eq!(s.tenant_uid("dave", 500_000, 500_003, taken).unwrap(), None);
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.tenant_uid("bob", 500_000, 500_003, taken).unwrap(),
            Some(500_002)
        );
        assert_eq!(
            s.tenants().unwrap(),
            vec![
                ("alice".into(), 500_000),
                ("bob".into(), 500_002),
                ("carol".into(), 500_003)
            ]
        );
    }

    #[test]
    fn round_trip_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let s = Store::open(&path).unwrap();
            s.insert(&rec("a")).unwrap();
            let mut r = rec("a");
            r.pid = Some(42);
            r.start_ticks = Some(7);
            r.status = SlotStatus::Online;
            r.restarts = 3;
            s.save(&r).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let got = s.get(&SlotId::new("a").unwrap()).unwrap().unwrap();
        assert_eq!(got.pid, Some(42));
        assert_eq!(got.status, SlotStatus::Online);
        assert_eq!(got.restarts, 3);
    }

    #[test]
    fn app_rows_round_trip_and_ids_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db")).unwrap();
        let a = s.next_pm_id().unwrap();
        let b = s.next_pm_id().unwrap();
        assert_eq!((a, b), (0, 1));
        let rec = AppRecord {
            pm_id: b,
            name: AppName::new("api").unwrap(),
            instance: 0,
            source: AppSource::Runtime,
            spec: "{}".into(),
            enabled: true,
            created_at_ms: 5,
            restarts: 2,
            unstable: 1,
            status: AppStatus::WaitingRestart,
            pid: Some(9),
            start_ticks: Some(3),
            boot_id: Some("b".into()),
            started_at_ms: Some(4),
            last_exit: Some("exit 1".into()),
            exit_code: Some(1),
            reason: None,
        };
        s.save_app(&rec).unwrap();
        assert_eq!(s.all_apps().unwrap(), vec![rec.clone()]);
        assert!(s.delete_app(b).unwrap());
        assert_eq!(s.next_pm_id().unwrap(), 2);
    }

    #[test]
    fn duplicate_insert_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db")).unwrap();
        s.insert(&rec("a")).unwrap();
        assert!(matches!(s.insert(&rec("a")), Err(StoreError::Exists(_))));
        assert!(s.delete(&SlotId::new("a").unwrap()).unwrap());
        assert!(s.all().unwrap().is_empty());
    }
}
