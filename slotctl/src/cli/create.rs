//! `slotctl create <id> --template T [--owner U] [--no-start]`.

use std::process::ExitCode;
use std::time::Duration;

use slotapi::{CreateSlot, SlotId, SlotStatus, UserName};

use super::{print_json, Ctx, Usage};

pub async fn run(
    ctx: &Ctx,
    id: String,
    template: String,
    owner: Option<String>,
    start: bool,
) -> anyhow::Result<ExitCode> {
    let id = SlotId::new(id).map_err(|e| Usage(e.to_string()))?;
    let owner = owner
        .map(UserName::new)
        .transpose()
        .map_err(|e| Usage(e.to_string()))?;
    let client = ctx.client();
    let mut info = client
        .create(&CreateSlot {
            id: id.clone(),
            template,
            owner,
            start,
        })
        .await
        .map_err(|e| ctx.explain(e))?;
    if start {
        info = client
            .ensure(&id, Duration::from_secs(15))
            .await
            .map_err(|e| ctx.explain(e))?;
    }
    if ctx.json {
        print_json(&info);
    } else if info.status == SlotStatus::Online {
        println!(
            "created {} ({}), online, pid {}",
            info.id,
            info.template,
            info.pid.unwrap_or(0)
        );
    } else {
        println!("created {} ({}), {}", info.id, info.template, info.status);
    }
    Ok(ExitCode::SUCCESS)
}
