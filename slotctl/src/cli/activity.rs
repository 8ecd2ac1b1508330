//! `slotctl activity`: who is online, top users and recent sessions; and
//! `activity sessions|requests|logins|events|stats|ingest|malformed`, the
//! activity store's lists (`/v1/activity/…`) as tables or `--json`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use slotapi::activity::*;

use super::{human_bytes, human_ms, print_json, table, Ctx};

#[derive(Debug, Args)]
pub struct ActivityArgs {
    #[command(subcommand)]
    pub cmd: Option<ActivityCmd>,
}

/// Filters shared by the lists.
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    /// From: a duration back from now (`7d`, `12h`), RFC 3339 or
    /// milliseconds since the epoch.
    #[arg(long)]
    pub since: Option<String>,
    /// Until (exclusive), same forms as --since.
    #[arg(long)]
    pub until: Option<String>,
    /// How many rows (1 to 500).
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    /// Continue after a previous page (the `more:` line).
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ActivityCmd {
    /// WebSocket sessions (closed), newest first.
    Sessions {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        slot: Option<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Search the access log as stored.
    Requests {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        slot: Option<String>,
        /// A status (`404`) or class (`5xx`).
        #[arg(long)]
        status: Option<String>,
        /// `http` or `ws`.
        #[arg(long)]
        kind: Option<String>,
        /// The gateway's route label (`slot`, `auth`, `rejected`, …).
        #[arg(long)]
        route: Option<String>,
        /// Paths containing this text.
        #[arg(long)]
        path: Option<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Sign-in attempts.
    Logins {
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Slot lifecycle events (created, started, stopped, exited, restarted,
    /// errored, deleted).
    Events {
        #[arg(long)]
        slot: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Usage per day, week or month, and per user.
    Stats {
        /// day, week or month.
        #[arg(long, default_value = "day")]
        period: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        slot: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
    },
    /// How far the access log has been read.
    Ingest,
    /// Malformed access-log lines kept aside.
    Malformed {
        #[command(flatten)]
        list: ListArgs,
    },
}

/// A relative duration (`7d`) becomes an absolute time in ms; anything
/// else goes to the API as written (it validates).
pub fn time_arg(s: &str) -> String {
    match slotapi::config::parse_duration(s) {
        Ok(d) if s.chars().any(|c| c.is_ascii_alphabetic()) => crate::clock::now_ms()
            .saturating_sub(d.as_millis() as u64)
            .to_string(),
        _ => s.to_string(),
    }
}

/// `key=value&…` with the values percent-encoded; `None`s left out.
pub fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn list_pairs(l: &ListArgs) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("since", l.since.as_deref().map(time_arg)),
        ("until", l.until.as_deref().map(time_arg)),
        ("limit", Some(l.limit.to_string())),
        ("cursor", l.cursor.clone()),
    ]
}

async fn get<T: DeserializeOwned>(ctx: &Ctx, path: &str) -> anyhow::Result<T> {
    ctx.client()
        .get_json(path)
        .await
        .map_err(|e| ctx.explain(e))
}

/// A time in ms as `YYYY-MM-DD HH:MM:SS` UTC.
fn when(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn or_dash(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

fn more(next: &Option<String>) {
    if let Some(c) = next {
        eprintln!("more: --cursor {c}");
    }
}

pub async fn run(ctx: &Ctx, args: ActivityArgs) -> anyhow::Result<ExitCode> {
    match args.cmd {
        None => overview(ctx).await,
        Some(ActivityCmd::Sessions { user, slot, list }) => {
            let mut pairs = vec![("user", user), ("slot", slot)];
            pairs.extend(list_pairs(&list));
            let p: Page<SessionItem> = get(
                ctx,
                &format!("/v1/activity/sessions{}", query_string(&pairs)),
            )
            .await?;
            if ctx.json {
                print_json(&p);
            } else {
                print_sessions(&p.items);
                more(&p.next_cursor);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(ActivityCmd::Requests {
            user,
            slot,
            status,
            kind,
            route,
            path,
            list,
        }) => {
            let mut pairs = vec![
                ("user", user),
                ("slot", slot),
                ("status", status),
                ("kind", kind),
                ("route", route),
                ("q", path),
            ];
            pairs.extend(list_pairs(&list));
            let p: Page<RequestItem> = get(
                ctx,
                &format!("/v1/activity/requests{}", query_string(&pairs)),
            )
            .await?;
            if ctx.json {
                print_json(&p);
            } else {
                let rows: Vec<Vec<String>> = p
                    .items
                    .iter()
                    .map(|r| {
                        vec![
                            when(r.ts_ms),
                            r.kind.clone(),
                            or_dash(&r.user),
                            r.method.clone(),
                            r.path.clone(),
                            r.status.to_string(),
                            format!("{:.1}ms", r.duration_ms),
                            human_bytes(r.bytes_out),
                            or_dash(&r.error),
                            or_dash(&r.client_ip),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "TIME", "KIND", "USER", "METHOD", "PATH", "STATUS", "TOOK", "OUT", "ERROR",
                        "CLIENT",
                    ],
                    &rows,
                );
                more(&p.next_cursor);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(ActivityCmd::Logins { user, list }) => {
            let mut pairs = vec![("user", user)];
            pairs.extend(list_pairs(&list));
            let p: Page<LoginItem> =
                get(ctx, &format!("/v1/activity/logins{}", query_string(&pairs))).await?;
            if ctx.json {
                print_json(&p);
            } else {
                let rows: Vec<Vec<String>> = p
                    .items
                    .iter()
                    .map(|l| {
                        vec![
                            when(l.ts_ms),
                            or_dash(&l.user),
                            l.method.clone(),
                            if l.ok { "ok".into() } else { "refused".into() },
                            or_dash(&l.error),
                            or_dash(&l.client_ip),
                        ]
                    })
                    .collect();
                table(
                    &["TIME", "USER", "METHOD", "RESULT", "ERROR", "CLIENT"],
                    &rows,
                );
                more(&p.next_cursor);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(ActivityCmd::Events { slot, kind, list }) => {
            let mut pairs = vec![("slot", slot), ("kind", kind)];
            pairs.extend(list_pairs(&list));
            let p: Page<EventItem> =
                get(ctx, &format!("/v1/activity/events{}", query_string(&pairs))).await?;
            if ctx.json {
                print_json(&p);
            } else {
                let rows: Vec<Vec<String>> = p
                    .items
                    .iter()
                    .map(|e| {
                        vec![
                            when(e.ts_ms),
                            e.slot.clone(),
                            or_dash(&e.owner),
                            e.kind.clone(),
                            or_dash(&e.detail),
                        ]
                    })
                    .collect();
                table(&["TIME", "SLOT", "OWNER", "EVENT", "DETAIL"], &rows);
                more(&p.next_cursor);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(ActivityCmd::Stats {
            period,
            user,
            slot,
            since,
            until,
        }) => {
            let pairs = vec![
                ("period", Some(period)),
                ("user", user),
                ("slot", slot),
                ("since", since.as_deref().map(time_arg)),
                ("until", until.as_deref().map(time_arg)),
            ];
            let s: Stats = get(ctx, &format!("/v1/activity/stats{}", query_string(&pairs))).await?;
            if ctx.json {
                print_json(&s);
            } else {
                let rows: Vec<Vec<String>> = s
                    .buckets
                    .iter()
                    .map(|b| {
                        vec![
                            when(b.start_ms)[..10].to_string(),
                            b.users.to_string(),
                            b.sessions.to_string(),
                            human_ms(b.session_ms),
                            b.requests.to_string(),
                            b.errors.to_string(),
                            human_bytes(b.bytes_out),
                        ]
                    })
                    .collect();
                table(
                    &[
                        &s.period.to_uppercase(),
                        "USERS",
                        "SESSIONS",
                        "SESSION TIME",
                        "REQUESTS",
                        "ERRORS",
                        "OUT",
                    ],
                    &rows,
                );
                println!();
                print_users(&s.per_user);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(ActivityCmd::Ingest) => {
            let s: IngestStatus = get(ctx, "/v1/activity/ingest").await?;
            if ctx.json {
                print_json(&s);
                return Ok(ExitCode::SUCCESS);
            }
            println!("log:       {}", s.path);
            println!("lines:     {}", s.lines);
            println!("malformed: {}", s.malformed);
            println!("behind:    {}", human_bytes(s.lag_bytes));
            println!(
                "last:      {}",
                s.last_ingest_ms.map(when).unwrap_or_else(|| "-".into())
            );
            if let Some(e) = &s.last_error {
                println!("error:     {e}");
            }
            let rows: Vec<Vec<String>> = s
                .files
                .iter()
                .map(|f| {
                    vec![
                        f.path.clone().unwrap_or_else(|| "(gone)".into()),
                        f.inode.to_string(),
                        f.offset.to_string(),
                        f.size.map_or("-".into(), |s| s.to_string()),
                        f.lines.to_string(),
                        f.malformed.to_string(),
                    ]
                })
                .collect();
            println!();
            table(
                &["FILE", "INODE", "OFFSET", "SIZE", "LINES", "MALFORMED"],
                &rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(ActivityCmd::Malformed { list }) => {
            let pairs = list_pairs(&list);
            let p: Page<MalformedItem> = get(
                ctx,
                &format!("/v1/activity/malformed{}", query_string(&pairs)),
            )
            .await?;
            if ctx.json {
                print_json(&p);
            } else {
                let rows: Vec<Vec<String>> = p
                    .items
                    .iter()
                    .map(|m| {
                        vec![
                            when(m.ts_ms),
                            format!("{}@{}", m.file, m.offset),
                            m.reason.chars().take(60).collect(),
                            m.line.chars().take(80).collect(),
                        ]
                    })
                    .collect();
                table(&["SEEN", "WHERE", "REASON", "LINE"], &rows);
                more(&p.next_cursor);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_sessions(items: &[SessionItem]) {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|s| {
            vec![
                when(s.start_ms),
                or_dash(&s.user),
                or_dash(&s.slot),
                human_ms(s.duration_ms),
                human_bytes(s.bytes_in),
                human_bytes(s.bytes_out),
                or_dash(&s.client_ip),
                or_dash(&s.recording),
            ]
        })
        .collect();
    table(
        &[
            "STARTED",
            "USER",
            "SLOT",
            "DURATION",
            "IN",
            "OUT",
            "CLIENT",
            "RECORDING",
        ],
        &rows,
    );
}

fn print_users(users: &[UserStats]) {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.user.clone(),
                u.sessions.to_string(),
                human_ms(u.session_ms),
                u.requests.to_string(),
            ]
        })
        .collect();
    table(&["USER", "SESSIONS", "SESSION TIME", "REQUESTS"], &rows);
}

/// The overview: online now, top users of the last 7 days, recent
/// sessions.
async fn overview(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Online {
        items: Vec<OnlineItem>,
    }
    let online: Online = get(ctx, "/v1/activity/online").await?;
    let week = query_string(&[("since", Some(time_arg("7d")))]);
    let stats: Stats = get(ctx, &format!("/v1/activity/stats{week}")).await?;
    let recent: Page<SessionItem> = get(ctx, "/v1/activity/sessions?limit=10").await?;
    if ctx.json {
        print_json(&serde_json::json!({
            "online": online.items,
            "top_users": stats.per_user.iter().take(10).collect::<Vec<_>>(),
            "recent_sessions": recent.items,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!("Online now ({})", online.items.len());
    let now = crate::clock::now_ms();
    let rows: Vec<Vec<String>> = online
        .items
        .iter()
        .map(|o| {
            vec![
                or_dash(&o.user),
                o.slot.clone(),
                o.session.clone(),
                human_ms(now.saturating_sub(o.since_ms)),
            ]
        })
        .collect();
    table(&["USER", "SLOT", "SESSION", "FOR"], &rows);
    println!("\nTop users, last 7 days");
    print_users(&stats.per_user[..stats.per_user.len().min(10)]);
    println!("\nRecent sessions");
    print_sessions(&recent.items);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_encode_and_skip_missing() {
        assert_eq!(query_string(&[("user", None)]), "");
        assert_eq!(
            query_string(&[
                ("q", Some("/slot/a b".into())),
                ("user", None),
                ("limit", Some("5".into()))
            ]),
            "?q=%2Fslot%2Fa%20b&limit=5"
        );
        let t: u64 = time_arg("1h").parse().unwrap();
        assert!(crate::clock::now_ms() - t >= 3_600_000);
        assert_eq!(time_arg("2026-11-23T00:00:00Z"), "2026-11-23T00:00:00Z");
        assert_eq!(time_arg("1700000000000"), "1700000000000");
    }
}
