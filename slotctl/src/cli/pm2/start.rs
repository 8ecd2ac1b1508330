//! `pm2 start <ecosystem file | script | targets…>`: an ecosystem file
//! (`.config.js`, `.json`, `.yaml`) goes through pm2-compat (`--only`,
//! `--env`) and its apps are registered as runtime apps; a script is turned
//! into a one-app PM2 document first, so it gets exactly PM2's defaults
//! (name from the file name, interpreter from the extension); anything else
//! names existing apps to start. Starts the daemon when it is not running.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pm2_compat::{Format, Level, Options};
use slotapi::StartApps;

use super::super::{print_json, Ctx};
use super::{all, ensure_daemon, list, resolve};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ecosystem file, script, or app names / ids / namespaces / `all`
    /// [default: ecosystem.config.js].
    targets: Vec<String>,
    /// App name (script mode).
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// Instances (script mode); `max` for one per CPU.
    #[arg(long, short = 'i')]
    instances: Option<String>,
    /// Interpreter (script mode); `none` to exec directly.
    #[arg(long)]
    interpreter: Option<String>,
    /// Working directory (script mode).
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Watch the app's directory (script mode).
    #[arg(long)]
    watch: bool,
    /// Namespace (script mode).
    #[arg(long)]
    namespace: Option<String>,
    /// Only these apps of the ecosystem file (comma-separated).
    #[arg(long)]
    only: Option<String>,
    /// Merge `env_<name>` over `env`.
    #[arg(long)]
    env: Option<String>,
    /// Arguments for the script, after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

fn is_ecosystem(p: &Path) -> bool {
    matches!(
        Format::from_path(p),
        Some(Format::Json | Format::Yaml | Format::JavaScript)
    ) && p.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        n.contains(".config.")
            || n.ends_with(".json")
            || n.ends_with(".json5")
            || n.ends_with(".yaml")
            || n.ends_with(".yml")
    })
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let mut targets = a.targets.clone();
    if targets.is_empty() {
        if Path::new("ecosystem.config.js").exists() {
            targets.push("ecosystem.config.js".into());
        } else {
            return Err(
                super::Usage("name an ecosystem file, a script or apps to start".into()).into(),
            );
        }
    }
    let first = PathBuf::from(&targets[0]);
    let opts = Options {
        env_profile: a.env.clone(),
        only: a.only.iter().cloned().collect(),
        ..Options::default()
    };
    let translation = if targets.len() == 1 && first.is_file() && is_ecosystem(&first) {
        Some(pm2_compat::load(&first, &opts)?)
    } else if targets.len() == 1 && first.is_file() {
        let cwd = match &a.cwd {
            Some(c) => std::path::absolute(c)?,
            None => std::env::current_dir()?,
        };
        let mut app = serde_json::json!({
            "script": std::path::absolute(&first)?.display().to_string(),
            "cwd": cwd.display().to_string(),
        });
        let o = app.as_object_mut().expect("object");
        if let Some(n) = &a.name {
            o.insert("name".into(), n.clone().into());
        }
        if let Some(i) = &a.instances {
            let v: serde_json::Value = i
                .parse::<i64>()
                .map(Into::into)
                .unwrap_or_else(|_| i.clone().into());
            o.insert("instances".into(), v);
        }
        if let Some(i) = &a.interpreter {
            o.insert("interpreter".into(), i.clone().into());
        }
        if let Some(n) = &a.namespace {
            o.insert("namespace".into(), n.clone().into());
        }
        if a.watch {
            o.insert("watch".into(), true.into());
        }
        if !a.args.is_empty() {
            o.insert("args".into(), a.args.clone().into());
        }
        let text = serde_json::json!({ "apps": [app] }).to_string();
        let opts = Options {
            base_dir: Some(cwd),
            ..opts
        };
        Some(pm2_compat::parse_str(&text, Format::Json, &opts)?)
    } else {
        None
    };
    ensure_daemon(ctx).await?;
    let client = ctx.client();
    let started = match translation {
        Some(t) => {
            for d in &t.diagnostics {
                eprintln!("{d}");
            }
            if t.apps.is_empty() {
                anyhow::bail!("nothing to start");
            }
            let req = StartApps {
                apps: t
                    .apps
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<Result<_, _>>()?,
                replace: false,
            };
            let infos = client.start_apps(&req).await.map_err(|e| ctx.explain(e))?;
            if t.diagnostics.iter().any(|d| d.level == Level::Error) {
                eprintln!("[slotctl] some apps were left out (see the errors above)");
            }
            infos
        }
        None => {
            let list_now = all(ctx).await?;
            let picked = resolve(&list_now, &targets)?;
            let calls = picked.iter().map(|x| client.app_action(x.pm_id, "start"));
            futures_util::future::join_all(calls)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ctx.explain(e))?
        }
    };
    if ctx.json {
        print_json(&started);
    } else {
        let names: Vec<String> = started
            .iter()
            .map(|x| format!("{}({})", x.name, x.pm_id))
            .collect();
        eprintln!("[slotctl] started {}", names.join(", "));
        list::print_table(&all(ctx).await?);
    }
    Ok(ExitCode::SUCCESS)
}
