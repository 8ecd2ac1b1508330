//! `slotctl start|stop|restart <ids|all>`: the same shape for all three, so
//! one file.

use std::process::ExitCode;
use std::time::Duration;

use slotapi::SlotInfo;

use super::{print_json, Ctx};

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

pub async fn run(ctx: &Ctx, ids: &[String], action: Action) -> anyhow::Result<ExitCode> {
    let targets = ctx.targets(ids).await?;
    let client = ctx.client();
    // All at once: stopping 1000 slots one by one would take minutes.
    let calls = targets.iter().map(|id| {
        let client = client.clone();
        async move {
            let r = match action {
                Action::Start => client.ensure(id, Duration::from_secs(15)).await,
                Action::Stop => client.action(id, "stop").await,
                Action::Restart => match client.action(id, "restart").await {
                    Ok(_) => client.ensure(id, Duration::from_secs(15)).await,
                    Err(e) => Err(e),
                },
            };
            (id.clone(), r)
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut ok: Vec<SlotInfo> = Vec::new();
    let mut failed = 0;
    for (id, r) in results {
        match r {
            Ok(info) => {
                if !ctx.json {
                    println!("{}: {}", info.id, info.status);
                }
                ok.push(info);
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {id}: {:#}", ctx.explain(e));
            }
        }
    }
    if ctx.json {
        print_json(&ok);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
