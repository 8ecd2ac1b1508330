//! `slotctl doctor`: works with or without a running daemon.

use std::process::ExitCode;

use super::{print_json, table, Ctx};

pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let daemon = match ctx.client().health().await {
        Ok(h) => Ok(format!(
            "running, pid {}, {} slots ({} online)",
            h.pid, h.slots, h.online
        )),
        Err(e) => Err(format!("{:#}", ctx.explain(e))),
    };
    let checks = crate::doctor::run(&ctx.cfg, daemon);
    if ctx.json {
        print_json(&checks);
    } else {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| vec![c.name.clone(), c.status.to_string(), c.detail.clone()])
            .collect();
        table(&["CHECK", "STATUS", "DETAIL"], &rows);
    }
    let failed = checks.iter().any(|c| c.status == "fail");
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
