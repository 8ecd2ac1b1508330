//! The `slotctl` command line: clap definitions, config discovery, output
//! helpers and dispatch. One file per verb; every verb except `daemon` and
//! `doctor` is a thin client of the control API.

mod action;
mod activity;
mod create;
mod daemon;
mod delete;
mod doctor;
mod import;
mod keys;
mod list;
mod log_writer;
mod logs;
mod pm2;
mod quota;
mod replay;
mod status;
mod usage;
mod user;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use slotapi::{Client, ClientError, SlotId};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "slotctl",
    version,
    about = "Supervise slotgate's terminal slots (the PM2 replacement)"
)]
pub struct Cli {
    /// Config file [default: $SLOTGATE_CONFIG, ./slotgate.toml, /etc/slotgate/slotgate.toml, built-in defaults]
    #[arg(long, short = 'c', global = true, env = "SLOTGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print stable JSON instead of tables (read commands).
    #[arg(long, global = true)]
    pub json: bool,
    /// More diagnostics on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the supervisor daemon (foreground unless --background).
    Daemon {
        /// Detach, log to <data_dir>/logs/slotctl.log, return once ready.
        #[arg(long)]
        background: bool,
    },
    /// List slots.
    #[command(visible_alias = "ls")]
    List,
    /// Create a slot from a template (and start it).
    Create {
        id: String,
        #[arg(long, short)]
        template: String,
        /// Sandbox owner [default: the slot id].
        #[arg(long)]
        owner: Option<String>,
        /// Create without starting.
        #[arg(long)]
        no_start: bool,
    },
    /// Start slots (ids or `all`) and wait until they are online.
    Start { ids: Vec<String> },
    /// Stop slots (ids or `all`): the whole tree, SIGTERM then SIGKILL.
    Stop { ids: Vec<String> },
    /// Restart slots (ids or `all`) with a fresh session.
    Restart { ids: Vec<String> },
    /// Delete slots (ids or `all`); the sandbox is kept unless --purge.
    Delete {
        ids: Vec<String>,
        /// Also remove the owner's sandbox (`data/users/<owner>`).
        #[arg(long)]
        purge: bool,
    },
    /// Show one slot in detail.
    Status { id: String },
    /// Show a slot's log (ttyd output and supervisor notes).
    Logs {
        id: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// How many lines of history.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
    /// Play a session recording in this terminal at its real pace.
    Replay {
        /// Session id (the WebSocket's request id), fetched from the daemon.
        session: Option<String>,
        /// Play a local .cast file instead.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Playback speed (2 = twice as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Cap every pause at this many seconds.
        #[arg(long, value_name = "SECONDS")]
        max_idle: Option<f64>,
        /// Print the final screen as text and exit (no playback).
        #[arg(long)]
        dump: bool,
    },
    /// Check this host: ttyd, tmux, bubblewrap, cgroups, directories, daemon.
    Doctor,
    /// Who is online, top users, recent sessions; and the activity store's
    /// lists (sessions, requests, logins, events, stats).
    Activity(activity::ActivityArgs),
    /// Local accounts for slotgate's sign-in (identity.db).
    #[command(subcommand)]
    User(user::UserCmd),
    /// Claude Code usage: tokens, cost, prompts and tool calls per user.
    Usage(usage::UsageArgs),
    /// Per-user Claude quotas (daily/monthly tokens and cost).
    #[command(subcommand)]
    Quota(quota::QuotaCmd),
    /// Anthropic API keys for slots (shared, per user, or a pool).
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// Validate the config file and templates (like `nginx -t`).
    CheckConfig,
    /// PM2's commands over slotctl's apps (`slotctl pm2 ls`, `pm2 jlist`, …).
    /// A `pm2` symlink to slotctl runs these directly.
    Pm2 {
        #[command(subcommand)]
        verb: pm2::Verb,
    },
    /// Import another supervisor's configuration into the config file.
    Import {
        #[command(subcommand)]
        what: import::What,
    },
    /// Internal: copies an app's output into its log files (runs in the
    /// app's cgroup, outlives the daemon).
    #[command(name = "__log-writer", hide = true)]
    LogWriter(log_writer::Args),
}

/// Which config file applies.
pub fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    ["slotgate.toml", "/etc/slotgate/slotgate.toml"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

pub struct Ctx {
    pub cfg: Config,
    pub config_arg: Option<PathBuf>,
    pub json: bool,
}

impl Ctx {
    pub fn client(&self) -> Client {
        Client::new(self.cfg.paths.control_socket())
    }

    /// Turn a client error into the message users see; the not-running
    /// case says how to start the daemon.
    pub fn explain(&self, e: ClientError) -> anyhow::Error {
        match e {
            ClientError::NotRunning { path, .. } => {
                let cfg = self
                    .config_arg
                    .as_ref()
                    .map(|p| format!(" --config {}", p.display()))
                    .unwrap_or_default();
                anyhow::anyhow!(
                    "slotctl daemon is not running (nothing answers on {}); start it with: slotctl{cfg} daemon --background",
                    path.display()
                )
            }
            other => anyhow::Error::new(other),
        }
    }

    /// Expand `all` into every slot id; validate the others.
    pub async fn targets(&self, ids: &[String]) -> anyhow::Result<Vec<SlotId>> {
        if ids.is_empty() {
            return Err(Usage("name at least one slot id, or `all`".into()).into());
        }
        if ids.iter().any(|i| i == "all") {
            let list = self.client().list().await.map_err(|e| self.explain(e))?;
            return Ok(list.into_iter().map(|s| s.id).collect());
        }
        ids.iter()
            .map(|i| SlotId::new(i.as_str()).map_err(|e| Usage(e.to_string()).into()))
            .collect()
    }
}

/// A usage error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Print rows as an aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}

pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 if ms == 0 => "-".into(),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn init_tracing(verbose: u8, quiet: bool, daemon: bool) {
    let level = match (quiet, verbose, daemon) {
        (true, _, _) => "error",
        (_, 0, true) => "info",
        (_, 0, false) => "warn",
        (_, 1, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLOTCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only on a terminal: a file or the journal would keep the
    // escape codes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// argv with `pm2` inserted when slotctl runs under the name `pm2` (a
/// symlink on PATH), so `pm2 ls` means `slotctl pm2 ls`.
fn argv() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let called = args
        .first()
        .and_then(|a| Path::new(a).file_name().map(|n| n.to_os_string()));
    if called.as_deref() == Some(std::ffi::OsStr::new("pm2")) {
        args.insert(1, "pm2".into());
    }
    args
}

pub fn main() -> ExitCode {
    let args = argv();
    // The log writer must not build a multi-threaded runtime or read the
    // config: it is one tiny process per app stream.
    if args.get(1).is_some_and(|a| a == "__log-writer") {
        return log_writer::main(args);
    }
    // Nor the step in front of a slot's sandbox (see enter.rs).
    if args.get(1).is_some_and(|a| a == crate::enter::SUBCOMMAND) {
        return crate::enter::main(args);
    }
    let cli = Cli::parse_from(args);
    init_tracing(
        cli.verbose,
        cli.quiet,
        matches!(cli.cmd, Cmd::Daemon { .. }),
    );
    if matches!(cli.cmd, Cmd::Daemon { .. }) {
        crate::memory::limit_arenas();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking work (spawning, /proc and cgroupfs reads) is short; a small
        // pool keeps the daemon's memory flat when a thousand units start.
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_arg = config_path(cli.config.as_deref());
    let cfg = Config::load(config_arg.as_deref())?;
    let ctx = Ctx {
        cfg,
        config_arg,
        json: cli.json,
    };
    match cli.cmd {
        Cmd::Daemon { background } => daemon::run(ctx, background).await,
        Cmd::List => list::run(&ctx).await,
        Cmd::Create {
            id,
            template,
            owner,
            no_start,
        } => create::run(&ctx, id, template, owner, !no_start).await,
        Cmd::Start { ids } => action::run(&ctx, &ids, action::Action::Start).await,
        Cmd::Stop { ids } => action::run(&ctx, &ids, action::Action::Stop).await,
        Cmd::Restart { ids } => action::run(&ctx, &ids, action::Action::Restart).await,
        Cmd::Delete { ids, purge } => delete::run(&ctx, &ids, purge).await,
        Cmd::Status { id } => status::run(&ctx, &id).await,
        Cmd::Logs { id, follow, lines } => logs::run(&ctx, &id, follow, lines).await,
        Cmd::Doctor => doctor::run(&ctx).await,
        Cmd::Activity(args) => activity::run(&ctx, args).await,
        Cmd::Replay {
            session,
            file,
            speed,
            max_idle,
            dump,
        } => {
            let args = replay::Args {
                session,
                file,
                speed,
                max_idle,
                dump,
            };
            replay::run(&ctx, args).await
        }
        Cmd::User(cmd) => user::run(&ctx, cmd),
        Cmd::Usage(args) => usage::run(&ctx, args).await,
        Cmd::Quota(cmd) => quota::run(&ctx, cmd).await,
        Cmd::Keys(cmd) => keys::run(&ctx, cmd),
        Cmd::Pm2 { verb } => pm2::run(&ctx, verb).await,
        Cmd::Import { what } => import::run(&ctx, what).await,
        Cmd::LogWriter(_) => Ok(ExitCode::SUCCESS),
        Cmd::CheckConfig => {
            let file = ctx.cfg.file.display().to_string();
            let templates: Vec<&str> = ctx.cfg.templates.keys().map(String::as_str).collect();
            if ctx.json {
                print_json(&serde_json::json!({"ok": true, "file": file, "templates": templates}));
            } else {
                println!(
                    "{file}: ok ({} templates: {})",
                    templates.len(),
                    templates.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
