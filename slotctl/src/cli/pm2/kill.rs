//! `pm2 kill`: stop every app (whole trees, in parallel), then ask the
//! daemon to exit. Unlike PM2, slots are not touched: they outlive the
//! daemon by design and are re-adopted by the next one.

use std::process::ExitCode;
use std::time::Duration;

use super::super::Ctx;

pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let client = ctx.client();
    let Ok(health) = client.health().await else {
        eprintln!("[slotctl] daemon is not running");
        return Ok(ExitCode::SUCCESS);
    };
    let apps = client.list_apps().await.map_err(|e| ctx.explain(e))?;
    let calls = apps.iter().map(|a| client.app_action(a.pm_id, "stop"));
    let results = futures_util::future::join_all(calls).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let _: serde_json::Value = client
        .post_json::<serde_json::Value, ()>("/v1/shutdown", None)
        .await
        .map_err(|e| ctx.explain(e))?;
    // Return once the daemon is gone, as `pm2 kill` does.
    for _ in 0..500 {
        if client.health().await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "[slotctl] {} app(s) stopped; daemon (pid {}) exited",
        apps.len() - failed,
        health.pid
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
