//! `slotctl list` / `ls`.

use std::process::ExitCode;

use super::{human_bytes, human_ms, print_json, table, Ctx};

pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let slots = ctx.client().list().await.map_err(|e| ctx.explain(e))?;
    if ctx.json {
        print_json(&slots);
        return Ok(ExitCode::SUCCESS);
    }
    if slots.is_empty() {
        eprintln!("no slots; create one with: slotctl create <id> --template shell");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = slots
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.template.clone(),
                s.owner.to_string(),
                s.status.to_string(),
                s.pid.map_or("-".into(), |p| p.to_string()),
                human_ms(s.uptime_ms),
                s.restarts.to_string(),
                format!("{:.1}%", s.cpu_percent),
                human_bytes(s.memory_bytes),
                s.clients.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "TEMPLATE", "OWNER", "STATUS", "PID", "UPTIME", "RESTARTS", "CPU", "MEMORY",
            "CLIENTS",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}
