//! `slotctl logs <id> [-f] [-n N]`: streams lines as the daemon sends them.

use std::io::Write;
use std::process::ExitCode;

use slotapi::SlotId;

use super::{Ctx, Usage};

pub async fn run(ctx: &Ctx, id: &str, follow: bool, lines: usize) -> anyhow::Result<ExitCode> {
    let id = SlotId::new(id).map_err(|e| Usage(e.to_string()))?;
    let path = format!("/v1/slots/{id}/logs?lines={lines}&follow={follow}");
    let mut stream = ctx
        .client()
        .stream(&path)
        .await
        .map_err(|e| ctx.explain(e))?;
    let stdout = std::io::stdout();
    while let Some(line) = stream.next_line().await.map_err(|e| ctx.explain(e))? {
        let mut out = stdout.lock();
        if ctx.json {
            writeln!(out, "{}", serde_json::json!({"slot": id, "line": line}))?;
        } else {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
