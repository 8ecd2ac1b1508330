//! `pm2 save` / `dump` and `pm2 resurrect`: the app list in
//! `<data_dir>/dump.toml` (the `[[apps]]` shape), written atomically by the
//! daemon and never emptied by accident.

use std::process::ExitCode;

use slotapi::DumpResult;

use super::super::{print_json, Ctx};
use super::ensure_daemon;

pub async fn save(ctx: &Ctx, force: bool) -> anyhow::Result<ExitCode> {
    let r: DumpResult = ctx
        .client()
        .post_json::<DumpResult, ()>(&format!("/v1/apps/save?force={force}"), None)
        .await
        .map_err(|e| ctx.explain(e))?;
    if ctx.json {
        print_json(&r);
    } else {
        println!("[slotctl] saved {} app(s) to {}", r.apps, r.path);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn resurrect(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    ensure_daemon(ctx).await?;
    let r: DumpResult = ctx
        .client()
        .post_json::<DumpResult, ()>("/v1/apps/resurrect", None)
        .await
        .map_err(|e| ctx.explain(e))?;
    if ctx.json {
        print_json(&r);
    } else {
        println!("[slotctl] resurrected {} app(s) from {}", r.apps, r.path);
    }
    Ok(ExitCode::SUCCESS)
}
