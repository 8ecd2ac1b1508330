//! `pm2 describe <name|id>` (`desc`, `info`, `show`): PM2's key/value table
//! for each matching instance; with `--json`, the `jlist` entries.

use std::process::ExitCode;

use super::super::{human_bytes, human_ms, print_json, Ctx};
use super::{all, jlist, resolve, username};

pub async fn run(ctx: &Ctx, target: &str) -> anyhow::Result<ExitCode> {
    let apps = all(ctx).await?;
    let picked = resolve(&apps, &[target.to_string()])?;
    if ctx.json {
        let user = username();
        print_json(
            &picked
                .iter()
                .map(|a| jlist::entry(a, &user))
                .collect::<Vec<_>>(),
        );
        return Ok(ExitCode::SUCCESS);
    }
    for a in picked {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "N/A".into());
        let rows: Vec<(&str, String)> = vec![
            ("status", a.status.to_string()),
            ("name", a.name.to_string()),
            ("namespace", a.namespace.clone()),
            ("version", "N/A".into()),
            ("restarts", a.restarts.to_string()),
            ("uptime", human_ms(a.uptime_ms)),
            ("script path", a.command.clone()),
            ("script args", a.args.join(" ")),
            ("error log path", opt(&a.err_log)),
            ("out log path", opt(&a.out_log)),
            ("entire log path", opt(&a.combined_log)),
            ("pid path", a.pid_file.clone()),
            (
                "interpreter",
                a.interpreter.clone().unwrap_or_else(|| "none".into()),
            ),
            ("interpreter args", "N/A".into()),
            ("script id", a.pm_id.to_string()),
            ("exec cwd", a.cwd.clone()),
            ("exec mode", "fork_mode".into()),
            ("node.js version", "N/A".into()),
            ("watch & reload", if a.watch { "✔" } else { "✘" }.into()),
            ("unstable restarts", a.unstable_restarts.to_string()),
            ("created at", crate::clock::rfc3339(a.created_at_ms)),
            ("pid", a.pid.map_or("N/A".into(), |p| p.to_string())),
            ("memory (whole tree)", human_bytes(a.memory_bytes)),
            ("processes", a.processes.to_string()),
            ("cpu", format!("{}%", a.cpu_percent)),
            ("cron restart", opt(&a.cron_restart)),
            (
                "max memory restart",
                a.max_memory_bytes.map_or("N/A".into(), human_bytes),
            ),
            (
                "health",
                a.health.map_or("N/A".into(), |h| {
                    if h { "healthy" } else { "unhealthy" }.into()
                }),
            ),
            ("last exit", opt(&a.last_exit)),
            ("reason", opt(&a.reason)),
            ("env (names only)", a.env_keys.join(", ")),
            ("isolation", a.isolation.clone()),
        ];
        println!("Describing process with id {} - name {}", a.pm_id, a.name);
        let w = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (k, v) in rows {
            println!("│ {k:<w$} │ {v}");
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
