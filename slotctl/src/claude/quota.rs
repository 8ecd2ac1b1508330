//! Per-user quotas: daily and monthly limits on tokens and cost, defaults
//! from `[claude.quotas]`, per-user overrides in `quota_overrides`, and the
//! verdict slotgate asks for before it opens a new terminal session.

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Deserializer, Serialize};

use super::config::Limits;
use super::query::{self, Sums};

/// `Some(None)` for an explicit `null` (no limit), `None` when absent.
fn double<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A user's override (`PUT /v1/quotas/{user}`). A limit that is absent
/// inherits the default; `null` removes it for this user; a number replaces
/// it. `exempt_until_ms` lets the user in whatever they used, until then.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    #[serde(
        default,
        deserialize_with = "double",
        skip_serializing_if = "Option::is_none"
    )]
    pub daily_tokens: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "double",
        skip_serializing_if = "Option::is_none"
    )]
    pub monthly_tokens: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "double",
        skip_serializing_if = "Option::is_none"
    )]
    pub daily_cost_usd: Option<Option<f64>>,
    #[serde(
        default,
        deserialize_with = "double",
        skip_serializing_if = "Option::is_none"
    )]
    pub monthly_cost_usd: Option<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exempt_until_ms: Option<i64>,
    /// Why (shown to admins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Override {
    pub fn apply(&self, d: &Limits) -> Limits {
        Limits {
            daily_tokens: self.daily_tokens.unwrap_or(d.daily_tokens),
            monthly_tokens: self.monthly_tokens.unwrap_or(d.monthly_tokens),
            daily_cost_usd: self.daily_cost_usd.unwrap_or(d.daily_cost_usd),
            monthly_cost_usd: self.monthly_cost_usd.unwrap_or(d.monthly_cost_usd),
        }
    }

    pub fn check(&self) -> Result<(), String> {
        let limits = self.apply(&Limits::default());
        super::config::check_limits(&limits).map_err(|(k, r)| format!("{k} {r}"))?;
        if self.note.as_ref().is_some_and(|n| n.len() > 500) {
            return Err("note must be at most 500 characters".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Used {
    pub daily_tokens: u64,
    pub monthly_tokens: u64,
    pub daily_cost_usd: f64,
    pub monthly_cost_usd: f64,
}

/// The answer of `GET /v1/quotas/{user}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub user: String,
    pub daily_tokens: Option<u64>,
    pub monthly_tokens: Option<u64>,
    pub daily_cost_usd: Option<f64>,
    pub monthly_cost_usd: Option<f64>,
    pub used: Used,
    /// New terminal sessions are refused.
    pub over: bool,
    /// What was exceeded (or why the user is let in anyway).
    pub reason: Option<String>,
    /// When the quota resets (start of the next UTC day or month).
    pub until_ms: Option<i64>,
    /// The user has an override (`PUT /v1/quotas/{user}`).
    #[serde(rename = "override")]
    pub overridden: Option<Override>,
}

/// The verdict, pure: limits, what was used, and the time.
pub fn evaluate(
    user: &str,
    limits: Limits,
    ov: Option<Override>,
    day: &Sums,
    month: &Sums,
    now_ms: i64,
) -> Status {
    let (_, next_day, _, next_month) = query::periods(now_ms);
    let used = Used {
        daily_tokens: day.quota_tokens(),
        monthly_tokens: month.quota_tokens(),
        daily_cost_usd: day.cost_usd,
        monthly_cost_usd: month.cost_usd,
    };
    let mut over: Vec<(String, i64)> = Vec::new();
    if let Some(l) = limits.daily_tokens.filter(|l| used.daily_tokens >= *l) {
        over.push((
            format!(
                "daily token quota reached ({} of {l} tokens)",
                used.daily_tokens
            ),
            next_day,
        ));
    }
    if let Some(l) = limits.monthly_tokens.filter(|l| used.monthly_tokens >= *l) {
        over.push((
            format!(
                "monthly token quota reached ({} of {l} tokens)",
                used.monthly_tokens
            ),
            next_month,
        ));
    }
    if let Some(l) = limits.daily_cost_usd.filter(|l| used.daily_cost_usd >= *l) {
        over.push((
            format!(
                "daily cost quota reached (${:.2} of ${l:.2})",
                used.daily_cost_usd
            ),
            next_day,
        ));
    }
    if let Some(l) = limits
        .monthly_cost_usd
        .filter(|l| used.monthly_cost_usd >= *l)
    {
        over.push((
            format!(
                "monthly cost quota reached (${:.2} of ${l:.2})",
                used.monthly_cost_usd
            ),
            next_month,
        ));
    }
    let exempt = ov
        .as_ref()
        .and_then(|o| o.exempt_until_ms)
        .filter(|t| *t > now_ms);
    let (is_over, reason, until_ms) = match (over.is_empty(), exempt) {
        (true, _) => (false, None, None),
        (false, Some(t)) => (
            false,
            Some(format!(
                "{}; exempted by an administrator until {}",
                over.iter()
                    .map(|(r, _)| r.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                crate::clock::rfc3339(t as u64)
            )),
            Some(t),
        ),
        (false, None) => {
            let until = over.iter().map(|(_, t)| *t).max();
            let reason = over
                .into_iter()
                .map(|(r, _)| r)
                .collect::<Vec<_>>()
                .join("; ");
            (true, Some(reason), until)
        }
    };
    Status {
        user: user.to_string(),
        daily_tokens: limits.daily_tokens,
        monthly_tokens: limits.monthly_tokens,
        daily_cost_usd: limits.daily_cost_usd,
        monthly_cost_usd: limits.monthly_cost_usd,
        used,
        over: is_over,
        reason,
        until_ms,
        overridden: ov,
    }
}

pub fn get_override(conn: &Connection, user: &str) -> rusqlite::Result<Option<Override>> {
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM quota_overrides WHERE user = ?1",
            [user],
            |r| r.get(0),
        )
        .optional()?;
    Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
}

pub fn set_override(conn: &Connection, user: &str, ov: &Override) -> rusqlite::Result<()> {
    let body = serde_json::to_string(ov).expect("override serialises");
    conn.execute(
        "INSERT INTO quota_overrides (user, body, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(user) DO UPDATE SET body = ?2, updated_ms = ?3",
        rusqlite::params![user, body, crate::clock::now_ms() as i64],
    )?;
    Ok(())
}

pub fn clear_override(conn: &Connection, user: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM quota_overrides WHERE user = ?1", [user])? > 0)
}

/// Users worth listing: with usage, with an override, or with a HOME.
pub fn known_users(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare(
        "SELECT DISTINCT user FROM claude_messages UNION SELECT user FROM quota_overrides",
    )?;
    let v = st.query_map([], |r| r.get(0))?;
    v.collect()
}

pub fn status(
    conn: &Connection,
    defaults: &Limits,
    user: &str,
    now_ms: i64,
) -> rusqlite::Result<Status> {
    let (d, nd, m, nm) = query::periods(now_ms);
    let ov = get_override(conn, user)?;
    let limits = ov.as_ref().map(|o| o.apply(defaults)).unwrap_or(*defaults);
    let day = query::sums(conn, user, d, nd)?;
    let month = query::sums(conn, user, m, nm)?;
    Ok(evaluate(user, limits, ov, &day, &month, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(tokens: u64, cost: f64) -> Sums {
        Sums {
            input_tokens: tokens,
            cache_read_tokens: 1_000_000_000,
            cost_usd: cost,
            ..Sums::default()
        }
    }

    const NOW: i64 = 1_795_132_800_000 + 3_600_000; // 2026-11-20T01:00Z

    #[test]
    fn under_and_over_with_reason_and_reset_time() {
        let l = Limits {
            daily_tokens: Some(1000),
            monthly_cost_usd: Some(10.0),
            ..Limits::default()
        };
        let s = evaluate("a", l, None, &sums(999, 1.0), &sums(999, 1.0), NOW);
        assert!(!s.over, "cache reads do not count toward token quotas");
        let s = evaluate("a", l, None, &sums(1000, 1.0), &sums(5000, 1.0), NOW);
        assert!(s.over);
        assert_eq!(s.until_ms, Some(1_795_132_800_000 + query::DAY_MS));
        assert!(s.reason.unwrap().contains("daily token quota"));
        let s = evaluate("a", l, None, &sums(1, 0.5), &sums(1, 10.5), NOW);
        assert!(s.over);
        assert_eq!(s.until_ms, Some(1_796_083_200_000)); // 2026-12-01
        assert!(s
            .reason
            .unwrap()
            .contains("monthly cost quota reached ($10.50 of $10.00)"));
    }

    #[test]
    fn overrides_raise_remove_and_exempt() {
        let d = Limits {
            daily_tokens: Some(1000),
            ..Limits::default()
        };
        let ov: Override = serde_json::from_str(r#"{"daily_tokens": null}"#).unwrap();
        assert_eq!(ov.apply(&d).daily_tokens, None);
        let ov: Override = serde_json::from_str(r#"{"daily_tokens": 5000}"#).unwrap();
        assert_eq!(ov.apply(&d).daily_tokens, Some(5000));
        let ov: Override = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(ov.apply(&d).daily_tokens, Some(1000));
        let ex = Override {
            exempt_until_ms: Some(NOW + 1000),
            ..Override::default()
        };
        let s = evaluate(
            "a",
            d,
            Some(ex.clone()),
            &sums(2000, 0.0),
            &sums(2000, 0.0),
            NOW,
        );
        assert!(!s.over);
        assert!(s.reason.unwrap().contains("exempted"));
        let s = evaluate(
            "a",
            d,
            Some(ex),
            &sums(2000, 0.0),
            &sums(2000, 0.0),
            NOW + 2000,
        );
        assert!(s.over, "an expired exemption no longer applies");
        assert!(serde_json::from_str::<Override>(r#"{"daily_tokenz": 1}"#).is_err());
        let bad: Override = serde_json::from_str(r#"{"daily_cost_usd": -1}"#).unwrap();
        assert!(bad.check().is_err());
    }
}
