//! `pm2 logs [target] [--lines N] [--nostream] [--out|--err] [--raw]
//! [--json]`: the last lines of each instance's files, then (unless
//! `--nostream`) every new line, prefixed `<id>|<name> | ` as PM2 does.
//! `--json` prints PM2's log objects, one per line.

use std::io::Write;
use std::process::ExitCode;

use tokio::sync::mpsc;

use super::super::Ctx;
use super::{all, resolve};

#[derive(Debug, clap::Args)]
pub struct Args {
    target: Option<String>,
    /// Lines of history per file.
    #[arg(long, default_value_t = 15)]
    lines: usize,
    /// Print history and exit.
    #[arg(long)]
    nostream: bool,
    /// Only stdout.
    #[arg(long)]
    out: bool,
    /// Only stderr.
    #[arg(long)]
    err: bool,
    /// Lines without the `<id>|<name> |` prefix.
    #[arg(long)]
    raw: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let apps = all(ctx).await?;
    let picked = resolve(&apps, &[a.target.clone().unwrap_or_else(|| "all".into())])?;
    let streams: Vec<&str> = match (a.out, a.err) {
        (true, false) => vec!["out"],
        (false, true) => vec!["err"],
        _ => vec!["out", "err"],
    };
    let (tx, mut rx) = mpsc::channel::<String>(256);
    let mut tasks = Vec::new();
    for app in &picked {
        for s in &streams {
            let path = format!(
                "/v1/apps/{}/logs?stream={s}&lines={}&follow={}",
                app.pm_id, a.lines, !a.nostream
            );
            let client = ctx.client();
            let tx = tx.clone();
            let (id, name, kind, raw, json) = (
                app.pm_id,
                app.name.to_string(),
                s.to_string(),
                a.raw,
                ctx.json,
            );
            tasks.push(tokio::spawn(async move {
                let Ok(mut stream) = client.stream(&path).await else {
                    return;
                };
                while let Ok(Some(line)) = stream.next_line().await {
                    let text = if json {
                        serde_json::json!({
                            "message": line,
                            "timestamp": crate::clock::rfc3339_now(),
                            "type": kind,
                            "process_id": id,
                            "app_name": name,
                        })
                        .to_string()
                    } else if raw {
                        line
                    } else {
                        format!("{id}|{name} | {line}")
                    };
                    if tx.send(text).await.is_err() {
                        return;
                    }
                }
            }));
        }
    }
    drop(tx);
    let stdout = std::io::stdout();
    while let Some(line) = rx.recv().await {
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
