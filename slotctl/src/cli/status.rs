//! `slotctl status <id>`.

use std::process::ExitCode;

use slotapi::SlotId;

use super::{human_bytes, human_ms, print_json, Ctx, Usage};

pub async fn run(ctx: &Ctx, id: &str) -> anyhow::Result<ExitCode> {
    let id = SlotId::new(id).map_err(|e| Usage(e.to_string()))?;
    let s = ctx.client().get(&id).await.map_err(|e| ctx.explain(e))?;
    if ctx.json {
        print_json(&s);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = [
        ("id", s.id.to_string()),
        ("template", s.template.clone()),
        ("owner", s.owner.to_string()),
        ("status", s.status.to_string()),
        ("enabled", s.enabled.to_string()),
        ("pid", s.pid.map_or("-".into(), |p| p.to_string())),
        ("uptime", human_ms(s.uptime_ms)),
        ("restarts", s.restarts.to_string()),
        ("cpu", format!("{:.1}%", s.cpu_percent)),
        ("memory", human_bytes(s.memory_bytes)),
        ("processes", s.processes.to_string()),
        ("clients", s.clients.to_string()),
        ("socket", s.socket.clone()),
        ("isolation", s.isolation.clone()),
        (
            "last exit",
            s.last_exit.clone().unwrap_or_else(|| "-".into()),
        ),
        ("reason", s.reason.clone().unwrap_or_else(|| "-".into())),
        ("created", crate::clock::rfc3339(s.created_at_ms)),
    ];
    for (k, v) in rows {
        println!("{k:<10} {v}");
    }
    Ok(ExitCode::SUCCESS)
}
