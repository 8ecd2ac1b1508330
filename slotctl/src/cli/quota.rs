//! `slotctl quota show|set|clear`: per-user Claude quotas through the
//! daemon's `/v1/quotas` routes. `set` merges into the user's existing
//! override; `none` removes a limit for that user; `--exempt-for` lets an
//! over-quota user in for a while.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::{print_json, table, Ctx, Usage};

#[derive(Debug, Subcommand)]
pub enum QuotaCmd {
    /// Every user's quota and use (or one user's).
    Show { user: Option<String> },
    /// Override a user's limits (merged into any existing override).
    Set {
        user: String,
        /// Tokens per UTC day (`2M`, `500k`, a number, or `none`).
        #[arg(long)]
        daily_tokens: Option<String>,
        /// Tokens per UTC month.
        #[arg(long)]
        monthly_tokens: Option<String>,
        /// US dollars per UTC day (or `none`).
        #[arg(long)]
        daily_cost: Option<String>,
        /// US dollars per UTC month (or `none`).
        #[arg(long)]
        monthly_cost: Option<String>,
        /// Let the user in regardless of use for this long (`2h`, `1d`).
        #[arg(long)]
        exempt_for: Option<String>,
        /// Why (shown with the quota).
        #[arg(long)]
        note: Option<String>,
    },
    /// Remove a user's override (the defaults apply again).
    Clear { user: String },
}

fn tokens(flag: &str, s: &str) -> Result<Value, Usage> {
    if s == "none" {
        return Ok(Value::Null);
    }
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1_000.0),
        Some('m') => (&t[..t.len() - 1], 1_000_000.0),
        Some('g') | Some('b') => (&t[..t.len() - 1], 1_000_000_000.0),
        _ => (t.as_str(), 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(json!((v * mult).round() as u64)),
        _ => Err(Usage(format!(
            "{flag} {s:?}: write a token count such as 2M, 500k, 100000, or none"
        ))),
    }
}

fn dollars(flag: &str, s: &str) -> Result<Value, Usage> {
    if s == "none" {
        return Ok(Value::Null);
    }
    match s.trim().trim_start_matches('$').parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(json!(v)),
        _ => Err(Usage(format!(
            "{flag} {s:?}: write US dollars such as 25 or 7.50, or none"
        ))),
    }
}

fn limit(v: &Value, cost: bool) -> String {
    match (v.as_f64(), cost) {
        (None, _) => "-".into(),
        (Some(x), true) => format!("${x:.2}"),
        (Some(x), false) => format!("{}", x as u64),
    }
}

fn print(ctx: &Ctx, items: &[Value]) {
    if ctx.json {
        print_json(&items);
        return;
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|q| {
            let u = &q["used"];
            vec![
                q["user"].as_str().unwrap_or("-").to_string(),
                format!(
                    "{} / {}",
                    limit(&u["daily_tokens"], false),
                    limit(&q["daily_tokens"], false)
                ),
                format!(
                    "{} / {}",
                    limit(&u["monthly_tokens"], false),
                    limit(&q["monthly_tokens"], false)
                ),
                format!(
                    "{} / {}",
                    limit(&u["daily_cost_usd"], true),
                    limit(&q["daily_cost_usd"], true)
                ),
                format!(
                    "{} / {}",
                    limit(&u["monthly_cost_usd"], true),
                    limit(&q["monthly_cost_usd"], true)
                ),
                if q["over"].as_bool() == Some(true) {
                    "OVER"
                } else {
                    "ok"
                }
                .into(),
                q["until_ms"]
                    .as_u64()
                    .map_or("-".into(), crate::clock::rfc3339),
                q["reason"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(
        &[
            "USER",
            "DAY TOKENS",
            "MONTH TOKENS",
            "DAY COST",
            "MONTH COST",
            "STATE",
            "UNTIL",
            "REASON",
        ],
        &rows,
    );
}

pub async fn run(ctx: &Ctx, cmd: QuotaCmd) -> anyhow::Result<ExitCode> {
    let client = ctx.client();
    let check = |u: &str| {
        slotapi::UserName::new(u)
            .map(|u| u.to_string())
            .map_err(|e| Usage(e.to_string()))
    };
    match cmd {
        QuotaCmd::Show { user: None } => {
            let v: Value = client
                .get_json("/v1/quotas")
                .await
                .map_err(|e| ctx.explain(e))?;
            print(ctx, v["items"].as_array().map(Vec::as_slice).unwrap_or(&[]));
        }
        QuotaCmd::Show { user: Some(u) } => {
            let v: Value = client
                .get_json(&format!("/v1/quotas/{}", check(&u)?))
                .await
                .map_err(|e| ctx.explain(e))?;
            print(ctx, &[v]);
        }
        QuotaCmd::Set {
            user,
            daily_tokens,
            monthly_tokens,
            daily_cost,
            monthly_cost,
            exempt_for,
            note,
        } => {
            let user = check(&user)?;
            let path = format!("/v1/quotas/{user}");
            let current: Value = client.get_json(&path).await.map_err(|e| ctx.explain(e))?;
            let mut body: Map<String, Value> =
                current["override"].as_object().cloned().unwrap_or_default();
            let before = body.clone();
            if let Some(s) = daily_tokens {
                body.insert("daily_tokens".into(), tokens("--daily-tokens", &s)?);
            }
            if let Some(s) = monthly_tokens {
                body.insert("monthly_tokens".into(), tokens("--monthly-tokens", &s)?);
            }
            if let Some(s) = daily_cost {
                body.insert("daily_cost_usd".into(), dollars("--daily-cost", &s)?);
            }
            if let Some(s) = monthly_cost {
                body.insert("monthly_cost_usd".into(), dollars("--monthly-cost", &s)?);
            }
            if let Some(s) = exempt_for {
                let d = slotapi::config::parse_duration(&s)
                    .map_err(|r| Usage(format!("--exempt-for: {r}")))?;
                let until = crate::clock::now_ms() + d.as_millis() as u64;
                body.insert("exempt_until_ms".into(), json!(until));
            }
            if let Some(n) = note {
                body.insert("note".into(), json!(n));
            }
            if body == before {
                return Err(Usage(
                    "nothing to change: give at least one limit, --exempt-for or --note".into(),
                )
                .into());
            }
            let v: Value = client
                .put_json(&path, &Value::Object(body))
                .await
                .map_err(|e| ctx.explain(e))?;
            print(ctx, &[v]);
        }
        QuotaCmd::Clear { user } => {
            let v: Value = client
                .delete_json(&format!("/v1/quotas/{}", check(&user)?))
                .await
                .map_err(|e| ctx.explain(e))?;
            print(ctx, &[v]);
        }
    }
    Ok(ExitCode::SUCCESS)
}
