//! `slotctl usage`: Claude Code usage (tokens, cost, prompts, tool calls)
//! from the daemon's `/v1/usage` routes, as a table or `--json`.

use std::process::ExitCode;

use clap::Args;

use super::activity::{query_string, time_arg};
use super::{print_json, table, Ctx, Usage};

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this user.
    #[arg(long)]
    pub user: Option<String>,
    /// From: a duration back from now (`7d`, `12h`), a date (`2026-11-01`),
    /// RFC 3339 or milliseconds since the epoch.
    #[arg(long)]
    pub since: Option<String>,
    /// Until (exclusive), same forms as --since.
    #[arg(long)]
    pub until: Option<String>,
    /// Group by day, week, month, user or model.
    #[arg(long, default_value = "day")]
    pub by: String,
    /// Only models whose name starts with this.
    #[arg(long)]
    pub model: Option<String>,
    /// Show the most-used tools instead.
    #[arg(long, conflicts_with = "prompts")]
    pub tools: bool,
    /// Show recent prompt summaries instead.
    #[arg(long)]
    pub prompts: bool,
    /// How many prompts (with --prompts).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

fn cost(v: &serde_json::Value) -> String {
    format!("${:.4}", v.as_f64().unwrap_or(0.0))
}

fn n(v: &serde_json::Value) -> String {
    v.as_u64().map_or("-".into(), |n| n.to_string())
}

fn s(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

pub async fn run(ctx: &Ctx, a: UsageArgs) -> anyhow::Result<ExitCode> {
    if !a.tools && !a.prompts && !["day", "week", "month", "user", "model"].contains(&a.by.as_str())
    {
        return Err(Usage(format!(
            "--by {:?}: use day, week, month, user or model",
            a.by
        ))
        .into());
    }
    let mut pairs: Vec<(&str, Option<String>)> = vec![
        ("user", a.user.clone()),
        ("since", a.since.as_deref().map(time_arg)),
        ("until", a.until.as_deref().map(time_arg)),
        ("model", a.model.clone()),
    ];
    let route = if a.tools {
        "/v1/usage/tools"
    } else if a.prompts {
        pairs.push(("limit", Some(a.limit.to_string())));
        "/v1/usage/prompts"
    } else {
        pairs.push(("group", Some(a.by.clone())));
        "/v1/usage"
    };
    let path = format!("{route}{}", query_string(&pairs));
    let v: serde_json::Value = ctx
        .client()
        .get_json(&path)
        .await
        .map_err(|e| ctx.explain(e))?;
    if ctx.json {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let empty = Vec::new();
    let items = v["items"].as_array().unwrap_or(&empty);
    if a.tools {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                vec![
                    s(&i["tool"]),
                    n(&i["calls"]),
                    n(&i["users"]),
                    n(&i["files"]),
                ]
            })
            .collect();
        table(&["TOOL", "CALLS", "USERS", "FILES"], &rows);
    } else if a.prompts {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                vec![
                    i["ts_ms"]
                        .as_u64()
                        .map_or("-".into(), crate::clock::rfc3339),
                    s(&i["user"]),
                    s(&i["model"]),
                    s(&i["summary"]),
                ]
            })
            .collect();
        table(&["TIME", "USER", "MODEL", "PROMPT"], &rows);
    } else {
        let mut rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                vec![
                    s(&i["day"]),
                    s(&i["user"]),
                    s(&i["model"]),
                    n(&i["input_tokens"]),
                    n(&i["output_tokens"]),
                    n(&i["cache_write_tokens"]),
                    n(&i["cache_read_tokens"]),
                    n(&i["prompts"]),
                    n(&i["tool_calls"]),
                    cost(&i["cost_usd"]),
                ]
            })
            .collect();
        let t = &v["totals"];
        rows.push(vec![
            "TOTAL".into(),
            String::new(),
            String::new(),
            n(&t["input_tokens"]),
            n(&t["output_tokens"]),
            n(&t["cache_write_tokens"]),
            n(&t["cache_read_tokens"]),
            n(&t["prompts"]),
            n(&t["tool_calls"]),
            cost(&t["cost_usd"]),
        ]);
        let period = match a.by.as_str() {
            "week" => "WEEK",
            "month" => "MONTH",
            _ => "DAY",
        };
        table(
            &[
                period, "USER", "MODEL", "INPUT", "OUTPUT", "CACHE_W", "CACHE_R", "PROMPTS",
                "TOOLS", "COST",
            ],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}
