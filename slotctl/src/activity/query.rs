//! The read side of the activity store: filters, keyset pagination (newest
//! first, cursor = the last item's time and key) and the stats rollup.

use std::os::unix::fs::MetadataExt;

use rusqlite::types::Value;
use rusqlite::{Connection, Row};
use slotapi::activity::*;

use super::ingest::day_of;
use crate::clock::now_ms;

/// Default and largest page size.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// A validated list request.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub user: Option<String>,
    pub slot: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: usize,
    pub cursor: Option<(i64, String)>,
    pub status: Option<(u16, u16)>,
    pub kind: Option<String>,
    pub route: Option<String>,
    pub q: Option<String>,
    pub period: Option<String>,
}

/// A time given as RFC 3339 or milliseconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return (ms >= 0).then_some(ms);
    }
    super::parse::rfc3339_ms(s)
}

/// Check `q` against the parameters `allowed` for this list; the error is
/// the message of a 400.
pub fn filter(q: &ActivityQuery, allowed: &[&str]) -> Result<Filter, String> {
    let given = [
        ("user", q.user.is_some()),
        ("slot", q.slot.is_some()),
        ("since", q.since.is_some()),
        ("until", q.until.is_some()),
        ("limit", q.limit.is_some()),
        ("cursor", q.cursor.is_some()),
        ("status", q.status.is_some()),
        ("kind", q.kind.is_some()),
        ("route", q.route.is_some()),
        ("q", q.q.is_some()),
        ("period", q.period.is_some()),
    ];
    for (name, set) in given {
        if set && !allowed.contains(&name) {
            return Err(format!(
                "parameter {name:?} does not apply here; this list takes {}",
                allowed.join(", ")
            ));
        }
    }
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, String> {
        v.as_deref()
            .map(|s| {
                parse_time(s).ok_or_else(|| {
                    format!("{name} {s:?} is neither RFC 3339 nor milliseconds since the epoch")
                })
            })
            .transpose()
    };
    let since = time("since", &q.since)?;
    let until = time("until", &q.until)?;
    if let (Some(a), Some(b)) = (since, until) {
        if a > b {
            return Err("since is after until".into());
        }
    }
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(format!(
                    "limit {s:?} must be a number from 1 to {MAX_LIMIT}"
                ))
            }
        },
    };
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            c.split_once('.')
                .and_then(|(t, k)| Some((t.parse::<i64>().ok()?, k.to_string())))
                .filter(|(_, k)| !k.is_empty())
                .ok_or_else(|| format!("cursor {c:?} is not one this API gave out"))
        })
        .transpose()?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            parse_status(s).ok_or_else(|| {
                format!("status {s:?} is not a status such as 404 or a class such as 4xx")
            })
        })
        .transpose()?;
    let text = |name: &str, v: &Option<String>, max: usize| -> Result<Option<String>, String> {
        match v {
            Some(s) if s.is_empty() || s.len() > max => {
                Err(format!("{name} must be 1 to {max} characters"))
            }
            other => Ok(other.clone()),
        }
    };
    let kind = text("kind", &q.kind, 32)?;
    let period = match q.period.as_deref() {
        None => None,
        Some(p @ ("day" | "week" | "month")) => Some(p.to_string()),
        Some(p) => return Err(format!("period {p:?} is not one of day, week, month")),
    };
    Ok(Filter {
        user: text("user", &q.user, 128)?,
        slot: text("slot", &q.slot, 128)?,
        since,
        until,
        limit,
        cursor,
        status,
        kind,
        route: text("route", &q.route, 32)?,
        q: text("q", &q.q, 1024)?,
        period,
    })
}

/// `404` → (404, 404); `4xx` → (400, 499).
fn parse_status(s: &str) -> Option<(u16, u16)> {
    let b = s.as_bytes();
    if b.len() == 3 && b[1..].eq_ignore_ascii_case(b"xx") && (b'1'..=b'5').contains(&b[0]) {
        let c = (b[0] - b'0') as u16 * 100;
        return Some((c, c + 99));
    }
    let n: u16 = s.parse().ok()?;
    (n < 600).then_some((n, n))
}

/// Conditions and parameters of a query being built.
#[derive(Default)]
struct Where {
    conds: Vec<String>,
    params: Vec<Value>,
}

impl Where {
    fn add(&mut self, cond: &str, vals: impl IntoIterator<Item = Value>) {
        let mut vals = vals.into_iter();
        let mut out = String::new();
        for (i, part) in cond.split('?').enumerate() {
            if i > 0 {
                self.params
                    .push(vals.next().expect("one value per placeholder"));
                out.push_str(&format!("?{}", self.params.len()));
            }
            out.push_str(part);
        }
        self.conds.push(out);
    }

    fn eq(&mut self, col: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.add(&format!("{col} = ?"), [Value::Text(v.clone())]);
        }
    }

    /// since (inclusive), until (exclusive), and the cursor.
    fn time(
        &mut self,
        f: &Filter,
        time_col: &str,
        key_col: &str,
        int_key: bool,
    ) -> Result<(), String> {
        if let Some(s) = f.since {
            self.add(&format!("{time_col} >= ?"), [Value::Integer(s)]);
        }
        if let Some(u) = f.until {
            self.add(&format!("{time_col} < ?"), [Value::Integer(u)]);
        }
        if let Some((t, k)) = &f.cursor {
            let key = if int_key {
                Value::Integer(
                    k.parse()
                        .map_err(|_| "cursor is not one this API gave out".to_string())?,
                )
            } else {
                Value::Text(k.clone())
            };
            self.add(&format!("{time_col} <= ?"), [Value::Integer(*t)]);
            self.add(
                &format!("({time_col} < ? OR {key_col} < ?)"),
                [Value::Integer(*t), key],
            );
        }
        Ok(())
    }

    fn sql(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }
}

/// Errors of a query: bad input (400) or the database (500).
#[derive(Debug)]
pub enum QueryError {
    Bad(String),
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        QueryError::Db(e)
    }
}

impl From<String> for QueryError {
    fn from(e: String) -> Self {
        QueryError::Bad(e)
    }
}

/// Run a keyset-paginated query: `select` has no WHERE/ORDER; `key` gives
/// the cursor of an item.
fn page<T>(
    c: &Connection,
    select: &str,
    w: &Where,
    order: &str,
    limit: usize,
    map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
    key: impl Fn(&T) -> String,
) -> Result<Page<T>, QueryError> {
    let sql = format!("{select}{} ORDER BY {order} LIMIT {}", w.sql(), limit + 1);
    let mut st = c.prepare_cached(&sql)?;
    let mut items: Vec<T> = st
        .query_map(rusqlite::params_from_iter(w.params.iter()), map)?
        .collect::<rusqlite::Result<_>>()?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(&key)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

fn u(r: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, i64>(i)?.max(0) as u64)
}

pub fn online(c: &Connection, f: &Filter) -> Result<Page<OnlineItem>, QueryError> {
    let mut w = Where::default();
    w.eq("user", &f.user);
    w.eq("slot", &f.slot);
    page(
        c,
        "SELECT session, slot, user, since_ms FROM live_sessions",
        &w,
        "since_ms DESC, session DESC",
        MAX_LIMIT,
        |r| {
            Ok(OnlineItem {
                session: r.get(0)?,
                slot: r.get(1)?,
                user: r.get(2)?,
                client_ip: None,
                since_ms: u(r, 3)?,
            })
        },
        |_| String::new(),
    )
}

pub fn sessions(c: &Connection, f: &Filter) -> Result<Page<SessionItem>, QueryError> {
    let mut w = Where::default();
    w.eq("user", &f.user);
    w.eq("slot", &f.slot);
    w.time(f, "start_ms", "session", false)?;
    page(
        c,
        "SELECT session, user, slot, client_ip, start_ms, end_ms, duration_ms, bytes_in, bytes_out, recording FROM sessions",
        &w,
        "start_ms DESC, session DESC",
        f.limit,
        |r| {
            Ok(SessionItem {
                session: r.get(0)?,
                user: r.get(1)?,
                slot: r.get(2)?,
                client_ip: r.get(3)?,
                start_ms: u(r, 4)?,
                end_ms: u(r, 5)?,
                duration_ms: u(r, 6)?,
                bytes_in: u(r, 7)?,
                bytes_out: u(r, 8)?,
                recording: r.get(9)?,
            })
        },
        |s| format!("{}.{}", s.start_ms, s.session),
    )
}

pub fn requests(c: &Connection, f: &Filter) -> Result<Page<(i64, RequestItem)>, QueryError> {
    let mut w = Where::default();
    w.eq("user", &f.user);
    w.eq("slot", &f.slot);
    w.eq("kind", &f.kind);
    w.eq("route", &f.route);
    if let Some((lo, hi)) = f.status {
        if lo == hi {
            w.add(
                "class = ? AND status = ?",
                [Value::Integer(lo as i64 / 100), Value::Integer(lo as i64)],
            );
        } else {
            w.add("class = ?", [Value::Integer(hi as i64 / 100)]);
        }
    }
    if let Some(q) = &f.q {
        w.add("instr(path, ?) > 0", [Value::Text(q.clone())]);
    }
    w.time(f, "ts_ms", "id", true)?;
    page(
        c,
        "SELECT id, ts_ms, start_ms, kind, request_id, client_ip, user, method, path, query, route, slot,
                status, bytes_in, bytes_out, duration_ms, tls, served_by, user_agent, error FROM requests",
        &w,
        "ts_ms DESC, id DESC",
        f.limit,
        |r| {
            Ok((
                r.get(0)?,
                RequestItem {
                    ts_ms: u(r, 1)?,
                    start_ms: u(r, 2)?,
                    kind: r.get(3)?,
                    request_id: r.get(4)?,
                    client_ip: r.get(5)?,
                    user: r.get(6)?,
                    method: r.get(7)?,
                    path: r.get(8)?,
                    query: r.get(9)?,
                    route: r.get(10)?,
                    slot: r.get(11)?,
                    status: r.get(12)?,
                    bytes_in: u(r, 13)?,
                    bytes_out: u(r, 14)?,
                    duration_ms: r.get(15)?,
                    tls: r.get(16)?,
                    served_by: r.get(17)?,
                    user_agent: r.get(18)?,
                    error: r.get(19)?,
                },
            ))
        },
        |(id, r)| format!("{}.{id}", r.ts_ms),
    )
}

pub fn logins(c: &Connection, f: &Filter) -> Result<Page<(i64, LoginItem)>, QueryError> {
    let mut w = Where::default();
    w.eq("user", &f.user);
    w.time(f, "ts_ms", "id", true)?;
    page(
        c,
        "SELECT id, ts_ms, user, method, client_ip, ok, error FROM logins",
        &w,
        "ts_ms DESC, id DESC",
        f.limit,
        |r| {
            Ok((
                r.get(0)?,
                LoginItem {
                    ts_ms: u(r, 1)?,
                    user: r.get(2)?,
                    method: r.get(3)?,
                    client_ip: r.get(4)?,
                    ok: r.get(5)?,
                    error: r.get(6)?,
                },
            ))
        },
        |(id, l)| format!("{}.{id}", l.ts_ms),
    )
}

pub fn events(c: &Connection, f: &Filter) -> Result<Page<(i64, EventItem)>, QueryError> {
    if let Some(k) = &f.kind {
        if !EVENT_KINDS.contains(&k.as_str()) {
            return Err(QueryError::Bad(format!(
                "kind {k:?} is not one of {}",
                EVENT_KINDS.join(", ")
            )));
        }
    }
    let mut w = Where::default();
    w.eq("slot", &f.slot);
    w.eq("kind", &f.kind);
    w.time(f, "ts_ms", "id", true)?;
    page(
        c,
        "SELECT id, ts_ms, slot, owner, kind, detail FROM events",
        &w,
        "ts_ms DESC, id DESC",
        f.limit,
        |r| {
            Ok((
                r.get(0)?,
                EventItem {
                    ts_ms: u(r, 1)?,
                    slot: r.get(2)?,
                    owner: r.get(3)?,
                    kind: r.get(4)?,
                    detail: r.get(5)?,
                },
            ))
        },
        |(id, e)| format!("{}.{id}", e.ts_ms),
    )
}

pub fn malformed(c: &Connection, f: &Filter) -> Result<Page<MalformedItem>, QueryError> {
    let mut w = Where::default();
    w.time(f, "ts_ms", "id", true)?;
    page(
        c,
        "SELECT id, ts_ms, file, offset, reason, line FROM malformed",
        &w,
        "ts_ms DESC, id DESC",
        f.limit,
        |r| {
            Ok(MalformedItem {
                id: u(r, 0)?,
                ts_ms: u(r, 1)?,
                file: r.get(2)?,
                offset: u(r, 3)?,
                reason: r.get(4)?,
                line: r.get(5)?,
            })
        },
        |m| format!("{}.{}", m.ts_ms, m.id),
    )
}

fn recording_row(r: &Row<'_>) -> rusqlite::Result<(RecordingItem, String)> {
    let path: String = r.get(6)?;
    let id: String = r.get(0)?;
    Ok((
        RecordingItem {
            session: id.clone(),
            id,
            user: r.get(1)?,
            slot: r.get(2)?,
            start_ms: u(r, 3)?,
            duration_ms: u(r, 4)?,
            size_bytes: u(r, 5)?,
            input: r.get(7)?,
            available: std::path::Path::new(&path).is_file(),
        },
        path,
    ))
}

const RECORDING_COLS: &str =
    "SELECT id, user, slot, start_ms, duration_ms, size_bytes, path, input FROM recordings";

pub fn recordings(c: &Connection, f: &Filter) -> Result<Page<RecordingItem>, QueryError> {
    let mut w = Where::default();
    w.eq("user", &f.user);
    w.eq("slot", &f.slot);
    w.time(f, "start_ms", "id", false)?;
    let p = page(
        c,
        RECORDING_COLS,
        &w,
        "start_ms DESC, id DESC",
        f.limit,
        recording_row,
        |(r, _)| format!("{}.{}", r.start_ms, r.id),
    )?;
    Ok(Page {
        items: p.items.into_iter().map(|(r, _)| r).collect(),
        next_cursor: p.next_cursor,
    })
}

/// One recording and the path of its file.
pub fn recording(c: &Connection, id: &str) -> rusqlite::Result<Option<(RecordingItem, String)>> {
    use rusqlite::OptionalExtension;
    c.query_row(
        &format!("{RECORDING_COLS} WHERE id = ?1"),
        [id],
        recording_row,
    )
    .optional()
}

/// Start of the bucket of `day_ms` for a period, as SQL over `day_ms`.
fn bucket_sql(period: &str) -> &'static str {
    match period {
        "week" => "day_ms - (((day_ms / 86400000) + 3) % 7) * 86400000",
        "month" => {
            "CAST(strftime('%s', date(day_ms / 1000, 'unixepoch', 'start of month')) AS INTEGER) * 1000"
        }
        _ => "day_ms",
    }
}

/// Usage per day, week or month, from the daily rollup. Without `since`,
/// the last 30 days, 12 weeks or 12 months.
pub fn stats(c: &Connection, f: &Filter) -> Result<Stats, QueryError> {
    let period = f.period.clone().unwrap_or_else(|| "day".into());
    let back_days = match period.as_str() {
        "day" => 30,
        "week" => 7 * 12,
        _ => 366,
    };
    let since = f
        .since
        .unwrap_or_else(|| now_ms() as i64 - back_days * 86_400_000);
    let mut w = Where::default();
    w.add("day_ms >= ?", [Value::Integer(day_of(since))]);
    if let Some(until) = f.until {
        w.add("day_ms < ?", [Value::Integer(until)]);
    }
    w.eq("user", &f.user);
    w.eq("slot", &f.slot);
    // Per user and day unless a slot is asked for.
    let table = if f.slot.is_some() {
        "daily"
    } else {
        "daily_user"
    };
    let b = bucket_sql(&period);
    let sql = format!(
        "SELECT {b} AS b, sum(sessions), count(DISTINCT nullif(user, '')), sum(session_ms),
                sum(requests), sum(errors), sum(bytes_out)
         FROM {table}{} GROUP BY b ORDER BY b",
        w.sql()
    );
    let buckets = c
        .prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(w.params.iter()), |r| {
            Ok(StatsBucket {
                start_ms: u(r, 0)?,
                sessions: u(r, 1)?,
                users: u(r, 2)?,
                session_ms: u(r, 3)?,
                requests: u(r, 4)?,
                errors: u(r, 5)?,
                bytes_out: u(r, 6)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let sql = format!(
        "SELECT user, sum(sessions), sum(session_ms), sum(requests) FROM {table}{} {} user != ''
         GROUP BY user ORDER BY sum(session_ms) DESC, sum(requests) DESC, user LIMIT 50",
        w.sql(),
        if w.conds.is_empty() { "WHERE" } else { "AND" }
    );
    let per_user = c
        .prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(w.params.iter()), |r| {
            Ok(UserStats {
                user: r.get(0)?,
                sessions: u(r, 1)?,
                session_ms: u(r, 2)?,
                requests: u(r, 3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Stats {
        period,
        buckets,
        per_user,
    })
}

/// How far ingestion is: counters, the known files (newest 20) and the
/// bytes on disk not read yet.
pub fn ingest(c: &Connection) -> rusqlite::Result<(u64, u64, u64, Vec<IngestFile>)> {
    let lines = super::db::counter(c, "lines")?;
    let malformed = super::db::counter(c, "malformed")?;
    let mut st = c.prepare_cached(
        "SELECT path, dev, ino, fingerprint, offset, lines, malformed, updated_ms
         FROM ingest_files ORDER BY updated_ms DESC, id DESC LIMIT 20",
    )?;
    let mut lag = 0;
    let files = st
        .query_map([], |r| {
            let path: String = r.get(0)?;
            let (dev, ino) = (u(r, 1)?, u(r, 2)?);
            let offset = u(r, 4)?;
            let size = std::fs::metadata(&path)
                .ok()
                .filter(|m| m.dev() == dev && m.ino() == ino)
                .map(|m| m.len());
            Ok(IngestFile {
                path: size.is_some().then_some(path),
                dev,
                inode: ino,
                fingerprint: r.get(3)?,
                offset,
                size,
                lines: u(r, 5)?,
                malformed: u(r, 6)?,
                updated_ms: u(r, 7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for f in &files {
        if let Some(size) = f.size {
            lag += size.saturating_sub(f.offset);
        }
    }
    Ok((lines, malformed, lag, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> ActivityQuery {
        ActivityQuery::default()
    }

    #[test]
    fn params_are_checked() {
        let f = filter(&q(), &["user"]).unwrap();
        assert_eq!(f.limit, DEFAULT_LIMIT);
        let e = filter(
            &ActivityQuery {
                status: Some("404".into()),
                ..q()
            },
            &["user", "since"],
        )
        .unwrap_err();
        assert!(e.contains("\"status\" does not apply"), "{e}");
        for (bad, what) in [
            (
                ActivityQuery {
                    limit: Some("0".into()),
                    ..q()
                },
                "limit",
            ),
            (
                ActivityQuery {
                    limit: Some("501".into()),
                    ..q()
                },
                "limit",
            ),
            (
                ActivityQuery {
                    since: Some("yesterday".into()),
                    ..q()
                },
                "since",
            ),
            (
                ActivityQuery {
                    cursor: Some("zz".into()),
                    ..q()
                },
                "cursor",
            ),
            (
                ActivityQuery {
                    status: Some("7xx".into()),
                    ..q()
                },
                "status",
            ),
            (
                ActivityQuery {
                    period: Some("year".into()),
                    ..q()
                },
                "period",
            ),
            (
                ActivityQuery {
                    since: Some("2000".into()),
                    until: Some("1000".into()),
                    ..q()
                },
                "since",
            ),
        ] {
            let all = [
                "user", "slot", "since", "until", "limit", "cursor", "status", "kind", "route",
                "q", "period",
            ];
            let e = filter(&bad, &all).unwrap_err();
            assert!(e.contains(what), "{e}");
        }
        assert_eq!(parse_status("4xx"), Some((400, 499)));
        assert_eq!(parse_status("404"), Some((404, 404)));
        assert_eq!(
            parse_time("2026-11-23T13:34:04.447Z"),
            Some(1_795_440_844_447)
        );
        assert_eq!(parse_time("1795440844447"), Some(1_795_440_844_447));
    }

    #[test]
    fn buckets_start_on_monday_and_the_first_of_the_month() {
        let c = super::super::db::open(std::path::Path::new(":memory:")).unwrap();
        // 2026-11-25 is a Wednesday.
        let wed = super::super::parse::rfc3339_ms("2026-11-25T10:00:00.000Z").unwrap();
        c.execute(
            "INSERT INTO daily_user(day_ms, user, requests) VALUES (?1, 'a', 3)",
            [day_of(wed)],
        )
        .unwrap();
        let f = Filter {
            since: Some(0),
            period: Some("week".into()),
            ..Default::default()
        };
        let s = stats(&c, &f).unwrap();
        let monday = super::super::parse::rfc3339_ms("2026-11-23T00:00:00.000Z").unwrap();
        assert_eq!(s.buckets[0].start_ms as i64, monday);
        let s = stats(
            &c,
            &Filter {
                period: Some("month".into()),
                ..f
            },
        )
        .unwrap();
        let first = super::super::parse::rfc3339_ms("2026-11-01T00:00:00.000Z").unwrap();
        assert_eq!(s.buckets[0].start_ms as i64, first);
        assert_eq!(s.buckets[0].requests, 3);
        assert_eq!(s.per_user[0].user, "a");
    }
}
