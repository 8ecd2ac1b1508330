//! `slotctl daemon [--background]`.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use super::Ctx;

pub async fn run(ctx: Ctx, background: bool) -> anyhow::Result<ExitCode> {
    if !background {
        crate::daemon::run(ctx.cfg).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let client = ctx.client();
    if let Ok(h) = client.health().await {
        bail!("a slotctl daemon is already running (pid {})", h.pid);
    }
    let log_dir = ctx.cfg.paths.data_dir.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let log_path = log_dir.join("slotctl.log");
    let log = crate::logs::open_append(&log_path)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    if let Some(c) = &ctx.config_arg {
        cmd.arg("--config").arg(std::path::absolute(c)?);
    }
    cmd.arg("daemon")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = cmd.spawn().context("starting the daemon")?;
    let pid = child.id();
    drop(child);
    for _ in 0..200 {
        if client.health().await.is_ok() {
            println!(
                "slotctl daemon started (pid {pid}, log {})",
                log_path.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if crate::process::reap(pid).is_some() {
            bail!("the daemon exited during start; see {}", log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the daemon did not answer within 10 s; see {}",
        log_path.display()
    )
}
