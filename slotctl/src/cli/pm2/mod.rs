//! `slotctl pm2 <verb>` (and `pm2 <verb>` through a symlink): PM2's command
//! names, aliases, targets and output shapes over slotctl's apps. One file
//! per verb (or per family of verbs with one shape); this module holds the
//! clap definitions and target resolution: `all`, a pm_id, a name (every
//! instance) or a namespace, as PM2 resolves them.

mod action;
mod describe;
mod jlist;
mod kill;
mod list;
mod logs;
mod save;
mod start;
mod startup;

use std::process::ExitCode;

use clap::Subcommand;
use slotapi::AppInfo;

use super::{Ctx, Usage};

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Start an ecosystem file, a script, or existing apps (names, ids,
    /// namespaces, `all`).
    Start(start::Args),
    /// Stop apps; they stay in the list.
    Stop { targets: Vec<String> },
    /// Restart apps (stop, then start; counters kept).
    Restart { targets: Vec<String> },
    /// Restart apps one instance at a time, each waited online.
    Reload { targets: Vec<String> },
    /// Stop apps and remove them from the list.
    #[command(visible_alias = "del")]
    Delete { targets: Vec<String> },
    /// Zero the restart counters.
    Reset { targets: Vec<String> },
    /// The process table.
    #[command(visible_aliases = ["ls", "l", "ps", "status"])]
    List,
    /// PM2's JSON process list on stdout (env values never included).
    Jlist,
    /// `jlist`, indented.
    Prettylist,
    /// Everything about one app.
    #[command(visible_aliases = ["desc", "info", "show"])]
    Describe { target: String },
    /// Print or follow app logs.
    Logs(logs::Args),
    /// Empty the log files.
    Flush { targets: Vec<String> },
    /// Write the app list to <data_dir>/dump.toml.
    #[command(visible_alias = "dump")]
    Save {
        /// Write even an empty list over an existing dump.
        #[arg(long)]
        force: bool,
    },
    /// Start every app of the saved dump (starting the daemon if needed).
    Resurrect,
    /// Write a systemd unit that starts the daemon at boot and resurrects.
    Startup(startup::Args),
    /// Stop every app, then the daemon (slots keep running).
    Kill,
    /// Print pids.
    Pid { target: Option<String> },
    /// Print pm_ids of an app.
    Id { name: String },
    /// Start the daemon if it is down; print `{ msg: 'pong' }`.
    Ping,
}

pub async fn run(ctx: &Ctx, verb: Verb) -> anyhow::Result<ExitCode> {
    match verb {
        Verb::Start(a) => start::run(ctx, a).await,
        Verb::Stop { targets } => action::run(ctx, &targets, action::Action::Stop).await,
        Verb::Restart { targets } => action::run(ctx, &targets, action::Action::Restart).await,
        Verb::Reload { targets } => action::run(ctx, &targets, action::Action::Reload).await,
        Verb::Delete { targets } => action::run(ctx, &targets, action::Action::Delete).await,
        Verb::Reset { targets } => action::run(ctx, &targets, action::Action::Reset).await,
        Verb::Flush { targets } => action::run(ctx, &targets, action::Action::Flush).await,
        Verb::List => list::run(ctx).await,
        Verb::Jlist => jlist::run(ctx, false).await,
        Verb::Prettylist => jlist::run(ctx, true).await,
        Verb::Describe { target } => describe::run(ctx, &target).await,
        Verb::Logs(a) => logs::run(ctx, a).await,
        Verb::Save { force } => save::save(ctx, force).await,
        Verb::Resurrect => save::resurrect(ctx).await,
        Verb::Startup(a) => startup::run(ctx, a),
        Verb::Kill => kill::run(ctx).await,
        Verb::Pid { target } => list::pids(ctx, target.as_deref()).await,
        Verb::Id { name } => list::ids(ctx, &name).await,
        Verb::Ping => {
            ensure_daemon(ctx).await?;
            println!("{{ msg: 'pong' }}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Every app instance, or the daemon-not-running explanation.
pub async fn all(ctx: &Ctx) -> anyhow::Result<Vec<AppInfo>> {
    ctx.client().list_apps().await.map_err(|e| ctx.explain(e))
}

/// Resolve PM2 targets against the list: `all`, pm_ids, names (every
/// instance), namespaces. Unknown targets are an error naming them.
pub fn resolve(list: &[AppInfo], targets: &[String]) -> anyhow::Result<Vec<AppInfo>> {
    if targets.is_empty() {
        return Err(
            Usage("name at least one app: a name, an id, a namespace, or `all`".into()).into(),
        );
    }
    let mut out: Vec<AppInfo> = Vec::new();
    for t in targets {
        let hits: Vec<&AppInfo> = if t == "all" {
            list.iter().collect()
        } else if let Ok(id) = t.parse::<u32>() {
            list.iter().filter(|a| a.pm_id == id).collect()
        } else {
            let by_name: Vec<&AppInfo> = list.iter().filter(|a| a.name.as_str() == t).collect();
            if by_name.is_empty() {
                list.iter().filter(|a| &a.namespace == t).collect()
            } else {
                by_name
            }
        };
        if hits.is_empty() && t != "all" {
            anyhow::bail!("process or namespace {t} not found");
        }
        for h in hits {
            if !out.iter().any(|o| o.pm_id == h.pm_id) {
                out.push(h.clone());
            }
        }
    }
    Ok(out)
}

/// Start the daemon in the background if nothing answers (PM2 spawns its
/// daemon on demand too).
pub async fn ensure_daemon(ctx: &Ctx) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let client = ctx.client();
    if client.health().await.is_ok() {
        return Ok(());
    }
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    if let Some(c) = &ctx.config_arg {
        cmd.arg("--config").arg(std::path::absolute(c)?);
    }
    let out = cmd
        .args(["daemon", "--background"])
        .stdin(std::process::Stdio::null())
        .output()
        .context("starting the daemon")?;
    if !out.status.success() && client.health().await.is_err() {
        anyhow::bail!(
            "could not start the daemon: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    eprintln!("[slotctl] daemon started");
    Ok(())
}

/// PM2's user column: the name of the daemon's user.
pub fn username() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            let uid = rustix::process::getuid().as_raw();
            crate::app::resolve_name("/etc/passwd", uid).unwrap_or_else(|| uid.to_string())
        })
}
