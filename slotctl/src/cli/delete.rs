//! `slotctl delete <ids|all> [--purge]`.

use std::process::ExitCode;

use super::{print_json, Ctx};

pub async fn run(ctx: &Ctx, ids: &[String], purge: bool) -> anyhow::Result<ExitCode> {
    let targets = ctx.targets(ids).await?;
    let client = ctx.client();
    let mut failed = 0;
    let mut done = Vec::new();
    for id in targets {
        match client.delete(&id, !purge).await {
            Ok(info) => {
                if !ctx.json {
                    println!(
                        "deleted {id}{}",
                        if purge { " and its sandbox" } else { "" }
                    );
                }
                done.push(info);
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {id}: {:#}", ctx.explain(e));
            }
        }
    }
    if ctx.json {
        print_json(&done);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
