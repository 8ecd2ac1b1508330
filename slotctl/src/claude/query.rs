//! Read side of the Claude tables: usage grouped by period, user or model;
//! the most-used tools; prompt summaries. Periods are UTC calendar days,
//! ISO weeks (Monday) and months.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration as Days, NaiveDate, Utc};
use rusqlite::{params_from_iter, Connection};
use serde::Serialize;

/// A UTC day in milliseconds; `ts_ms / 86400000` (spelt like this in the
/// covering indexes of `db.rs`) is the day number.
pub const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Day,
    Week,
    Month,
    User,
    Model,
}

impl Group {
    pub fn parse(s: &str) -> Option<Group> {
        Some(match s {
            "day" => Group::Day,
            "week" => Group::Week,
            "month" => Group::Month,
            "user" => Group::User,
            "model" => Group::Model,
            _ => return None,
        })
    }
}

/// Filters shared by the usage queries.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub user: Option<String>,
    pub model: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Filter {
    /// ` AND …` clauses over `user`, `model`, `ts_ms` and their values.
    fn sql(&self, with_model: bool) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut s = String::new();
        let mut v = Vec::new();
        if let Some(u) = &self.user {
            s.push_str(" AND user = ?");
            v.push(Value::Text(u.clone()));
        }
        if let (Some(m), true) = (&self.model, with_model) {
            s.push_str(" AND model LIKE ? ESCAPE '\\'");
            let esc = m
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            v.push(Value::Text(format!("{esc}%")));
        }
        if let Some(t) = self.since_ms {
            s.push_str(" AND ts_ms >= ?");
            v.push(Value::Integer(t));
        }
        if let Some(t) = self.until_ms {
            s.push_str(" AND ts_ms < ?");
            v.push(Value::Integer(t));
        }
        (s, v)
    }
}

/// Token and cost sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sums {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
    pub messages: u64,
    pub prompts: u64,
    pub tool_calls: u64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_read_tokens += o.cache_read_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
        self.cost_usd += o.cost_usd;
        self.messages += o.messages;
        self.prompts += o.prompts;
        self.tool_calls += o.tool_calls;
    }

    /// Tokens as quotas count them: input + output + cache writes.
    pub fn quota_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_write_tokens
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageItem {
    pub user: Option<String>,
    /// First day of the period (`YYYY-MM-DD`, UTC) for day/week/month.
    pub day: Option<String>,
    pub start_ms: Option<i64>,
    pub model: Option<String>,
    #[serde(flatten)]
    pub sums: Sums,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageAnswer {
    pub group: &'static str,
    pub items: Vec<UsageItem>,
    pub totals: Sums,
}

fn day_start(day: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(day * DAY_MS)
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

fn bucket(g: Group, day: i64) -> Option<NaiveDate> {
    let d = day_start(day);
    match g {
        Group::Day => Some(d),
        Group::Week => Some(d - Days::days(d.weekday().num_days_from_monday() as i64)),
        Group::Month => d.with_day(1),
        Group::User | Group::Model => None,
    }
}

fn ms_of(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0)
}

/// Start of the UTC day and month holding `now_ms`, and of the next ones.
pub fn periods(now_ms: i64) -> (i64, i64, i64, i64) {
    let d = day_start(now_ms.div_euclid(DAY_MS));
    let m = d.with_day(1).unwrap_or(d);
    let next_m = if m.month() == 12 {
        NaiveDate::from_ymd_opt(m.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(m.year(), m.month() + 1, 1)
    }
    .unwrap_or(m);
    (ms_of(d), ms_of(d) + DAY_MS, ms_of(m), ms_of(next_m))
}

type Key = (Option<NaiveDate>, Option<String>, Option<String>);

pub fn usage(conn: &Connection, g: Group, f: &Filter) -> rusqlite::Result<UsageAnswer> {
    let mut rows: BTreeMap<Key, Sums> = BTreeMap::new();
    let key = |day: i64, user: String, model: Option<String>| -> Key {
        let model = model.unwrap_or_default();
        match g {
            Group::User => (None, Some(user), None),
            Group::Model => (None, None, Some(model)),
            _ => (bucket(g, day), Some(user), Some(model)),
        }
    };
    let (w, v) = f.sql(true);
    let mut st = conn.prepare(&format!(
        "SELECT ts_ms / {DAY_MS}, user, model, {SUMS} FROM claude_messages WHERE 1=1{w} GROUP BY 1, 2, 3"
    ))?;
    let mut q = st.query(params_from_iter(v.iter()))?;
    while let Some(r) = q.next()? {
        let s = sums_at(r, 3)?;
        rows.entry(key(r.get(0)?, r.get(1)?, r.get(2)?))
            .or_default()
            .add(&s);
    }
    for (table, prompts) in [("claude_prompts", true), ("claude_tools", false)] {
        let (w, v) = f.sql(true);
        let mut st = conn.prepare(&format!(
            "SELECT ts_ms / {DAY_MS}, user, model, COUNT(*) FROM {table} WHERE 1=1{w} GROUP BY 1, 2, 3"
        ))?;
        let mut q = st.query(params_from_iter(v.iter()))?;
        while let Some(r) = q.next()? {
            let n = r.get::<_, i64>(3)? as u64;
            let e = rows
                .entry(key(r.get(0)?, r.get(1)?, r.get(2)?))
                .or_default();
            if prompts {
                e.prompts += n;
            } else {
                e.tool_calls += n;
            }
        }
    }
    let mut totals = Sums::default();
    let mut items: Vec<UsageItem> = rows
        .into_iter()
        .map(|((d, user, model), sums)| {
            totals.add(&sums);
            UsageItem {
                user,
                day: d.map(|d| d.format("%Y-%m-%d").to_string()),
                start_ms: d.map(ms_of),
                model,
                sums,
            }
        })
        .collect();
    // Newest period first; within it, the biggest spender first.
    items.sort_by(|a, b| {
        b.start_ms.cmp(&a.start_ms).then(
            b.sums
                .cost_usd
                .partial_cmp(&a.sums.cost_usd)
                .unwrap_or(std::cmp::Ordering::Equal),
        )
    });
    let group = match g {
        Group::Day => "day",
        Group::Week => "week",
        Group::Month => "month",
        Group::User => "user",
        Group::Model => "model",
    };
    Ok(UsageAnswer {
        group,
        items,
        totals,
    })
}

/// Sums for one user in `[since, until)`.
pub fn sums(conn: &Connection, user: &str, since: i64, until: i64) -> rusqlite::Result<Sums> {
    conn.query_row(
        &format!(
            "SELECT {SUMS} FROM claude_messages WHERE user = ?1 AND ts_ms >= ?2 AND ts_ms < ?3"
        ),
        rusqlite::params![user, since, until],
        |r| sums_at(r, 0),
    )
}

/// The message sums as SQL, read back by [`sums_at`].
const SUMS: &str = "COALESCE(SUM(input_tokens),0), COALESCE(SUM(output_tokens),0), \
    COALESCE(SUM(cache_read_tokens),0), COALESCE(SUM(cache_write_tokens),0), \
    COALESCE(SUM(cost_usd),0.0), COUNT(*)";

fn sums_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Sums> {
    Ok(Sums {
        input_tokens: r.get::<_, i64>(i)? as u64,
        output_tokens: r.get::<_, i64>(i + 1)? as u64,
        cache_read_tokens: r.get::<_, i64>(i + 2)? as u64,
        cache_write_tokens: r.get::<_, i64>(i + 3)? as u64,
        cost_usd: r.get(i + 4)?,
        messages: r.get::<_, i64>(i + 5)? as u64,
        ..Sums::default()
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolItem {
    pub tool: String,
    pub calls: u64,
    pub users: u64,
    /// Distinct files the tool touched (file tools only).
    pub files: u64,
}

pub fn tools(conn: &Connection, f: &Filter) -> rusqlite::Result<Vec<ToolItem>> {
    let (w, v) = f.sql(true);
    let mut st = conn.prepare(&format!(
        "SELECT tool, COUNT(*), COUNT(DISTINCT user), COUNT(DISTINCT file)
         FROM claude_tools WHERE 1=1{w} GROUP BY tool ORDER BY 2 DESC, 1"
    ))?;
    let rows = st.query_map(params_from_iter(v.iter()), |r| {
        Ok(ToolItem {
            tool: r.get(0)?,
            calls: r.get::<_, i64>(1)? as u64,
            users: r.get::<_, i64>(2)? as u64,
            files: r.get::<_, i64>(3)? as u64,
        })
    })?;
    rows.collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptItem {
    pub ts_ms: i64,
    pub user: String,
    pub session: String,
    pub project: Option<String>,
    pub summary: String,
    /// The model that answered (null until it has).
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Prompt summaries, newest first; `cursor` is the previous page's
/// `next_cursor`.
pub fn prompts(
    conn: &Connection,
    f: &Filter,
    limit: usize,
    cursor: Option<(i64, String)>,
) -> rusqlite::Result<Page<PromptItem>> {
    use rusqlite::types::Value;
    let (mut w, mut v) = f.sql(true);
    if let Some((ts, uuid)) = cursor {
        w.push_str(" AND (ts_ms < ? OR (ts_ms = ? AND uuid < ?))");
        v.extend([Value::Integer(ts), Value::Integer(ts), Value::Text(uuid)]);
    }
    v.push(Value::Integer(limit as i64 + 1));
    let mut st = conn.prepare(&format!(
        "SELECT ts_ms, user, session, project, summary, model, uuid FROM claude_prompts
         WHERE summary != ''{w} ORDER BY ts_ms DESC, uuid DESC LIMIT ?"
    ))?;
    let mut rows: Vec<(PromptItem, String)> = st
        .query_map(params_from_iter(v.iter()), |r| {
            Ok((
                PromptItem {
                    ts_ms: r.get(0)?,
                    user: r.get(1)?,
                    session: r.get(2)?,
                    project: r.get(3)?,
                    summary: r.get(4)?,
                    model: r.get(5)?,
                },
                r.get(6)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(p, u)| format!("{}.{u}", p.ts_ms))
    } else {
        None
    };
    Ok(Page {
        items: rows.into_iter().map(|(p, _)| p).collect(),
        next_cursor,
    })
}

/// Parse a `next_cursor` back.
pub fn parse_cursor(s: &str) -> Option<(i64, String)> {
    let (ts, uuid) = s.split_once('.')?;
    Some((ts.parse().ok()?, uuid.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_calendar_days_and_months() {
        // 2026-12-31T23:30:00Z
        let now = 1_798_759_800_000;
        let (d, nd, m, nm) = periods(now);
        assert_eq!(d, 1_798_675_200_000); // 2026-12-31
        assert_eq!(nd, d + DAY_MS);
        assert_eq!(m, 1_796_083_200_000); // 2026-12-01
        assert_eq!(nm, 1_798_761_600_000); // 2027-01-01
                                           // 2026-11-20 is a Friday; its ISO week starts Monday 2026-11-16.
        let fri = 1_795_132_800_000 / DAY_MS;
        assert_eq!(bucket(Group::Week, fri).unwrap().to_string(), "2026-11-16");
        assert_eq!(bucket(Group::Month, fri).unwrap().to_string(), "2026-11-01");
    }
}
