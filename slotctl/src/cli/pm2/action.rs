//! `pm2 stop|restart|reload|delete|reset|flush <targets>`: one shape, so
//! one file. Instances are acted on all at once (PM2 does two at a time),
//! except `reload`, which takes an app's instances one by one, each waited
//! online, so an app with several instances keeps serving.

use std::process::ExitCode;

use slotapi::AppInfo;

use super::super::{print_json, Ctx};
use super::{all, list, resolve};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Stop,
    Restart,
    Reload,
    Delete,
    Reset,
    Flush,
}

impl Action {
    fn route(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Reload => "reload",
            Action::Delete => "delete",
            Action::Reset => "reset",
            Action::Flush => "flush",
        }
    }
}

pub async fn run(ctx: &Ctx, targets: &[String], action: Action) -> anyhow::Result<ExitCode> {
    let list_now = all(ctx).await?;
    let targets: Vec<String> = if targets.is_empty() && action == Action::Flush {
        vec!["all".into()]
    } else {
        targets.to_vec()
    };
    let picked = resolve(&list_now, &targets)?;
    let client = ctx.client();
    let results: Vec<(AppInfo, Result<AppInfo, slotapi::ClientError>)> = if action == Action::Reload
    {
        // Apps in parallel, instances of one app in sequence.
        let mut names: Vec<String> = picked.iter().map(|a| a.name.to_string()).collect();
        names.dedup();
        let per_app = names.into_iter().map(|name| {
            let client = client.clone();
            let insts: Vec<AppInfo> = picked
                .iter()
                .filter(|a| a.name.as_str() == name)
                .cloned()
                .collect();
            async move {
                let mut out = Vec::new();
                for a in insts {
                    let r = match client.app_action(a.pm_id, "reload").await {
                        Ok(_) => {
                            client
                                .post_json::<AppInfo, ()>(
                                    &format!("/v1/apps/{}/wait?timeout_ms=15000", a.pm_id),
                                    None,
                                )
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    out.push((a, r));
                }
                out
            }
        });
        futures_util::future::join_all(per_app)
            .await
            .into_iter()
            .flatten()
            .collect()
    } else {
        let calls = picked.iter().map(|a| {
            let client = client.clone();
            async move {
                let r = match action {
                    Action::Delete => client.delete_app(a.pm_id).await,
                    _ => client.app_action(a.pm_id, action.route()).await,
                };
                (a.clone(), r)
            }
        });
        futures_util::future::join_all(calls).await
    };
    let mut failed = 0;
    let mut done = Vec::new();
    for (a, r) in results {
        match r {
            Ok(info) => done.push(info),
            Err(e) => {
                failed += 1;
                eprintln!("error: {} ({}): {:#}", a.name, a.pm_id, ctx.explain(e));
            }
        }
    }
    if ctx.json {
        print_json(&done);
    } else {
        let ids: Vec<String> = done.iter().map(|a| a.pm_id.to_string()).collect();
        eprintln!(
            "[slotctl] {} applied to {} instance(s) [{}]",
            action.route(),
            done.len(),
            ids.join(", ")
        );
        if action != Action::Flush {
            let fresh = all(ctx).await?;
            list::print_table(&fresh);
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
