//! `pm2 list` (`ls`, `l`, `ps`, `status`) with PM2's columns, and the small
//! `pid`/`id` printers.

use std::process::ExitCode;

use slotapi::AppInfo;

use super::super::{human_bytes, human_ms, print_json, table, Ctx};
use super::{all, resolve, username};

pub fn print_table(apps: &[AppInfo]) {
    if apps.is_empty() {
        eprintln!("no apps; start one with: slotctl pm2 start <ecosystem file|script>");
        return;
    }
    let user = username();
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            vec![
                a.pm_id.to_string(),
                a.name.to_string(),
                a.namespace.clone(),
                "N/A".into(),
                "fork".into(),
                a.pid.map_or("0".into(), |p| p.to_string()),
                human_ms(a.uptime_ms),
                a.restarts.to_string(),
                a.status.to_string(),
                format!("{}%", a.cpu_percent),
                human_bytes(a.memory_bytes),
                user.clone(),
                if a.watch { "enabled" } else { "disabled" }.into(),
            ]
        })
        .collect();
    table(
        &[
            "id",
            "name",
            "namespace",
            "version",
            "mode",
            "pid",
            "uptime",
            "↺",
            "status",
            "cpu",
            "mem",
            "user",
            "watching",
        ],
        &rows,
    );
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let apps = all(ctx).await?;
    if ctx.json {
        print_json(&apps);
    } else {
        print_table(&apps);
    }
    Ok(ExitCode::SUCCESS)
}

/// `pm2 pid [name]`: one pid per line (0 for a stopped instance).
pub async fn pids(ctx: &Ctx, target: Option<&str>) -> anyhow::Result<ExitCode> {
    let apps = all(ctx).await?;
    let picked = match target {
        Some(t) => resolve(&apps, &[t.to_string()])?,
        None => apps,
    };
    for a in picked {
        println!("{}", a.pid.unwrap_or(0));
    }
    Ok(ExitCode::SUCCESS)
}

/// `pm2 id <name>`: PM2 prints a JS array.
pub async fn ids(ctx: &Ctx, name: &str) -> anyhow::Result<ExitCode> {
    let apps = all(ctx).await?;
    let ids: Vec<u32> = apps
        .iter()
        .filter(|a| a.name.as_str() == name)
        .map(|a| a.pm_id)
        .collect();
    println!("{}", serde_json::to_string(&ids)?);
    Ok(ExitCode::SUCCESS)
}
