//! `slotctl keys mode|set|unset|pool|list`: the Anthropic API keys slots
//! get as `ANTHROPIC_API_KEY`. Works on `<data_dir>/activity.db` directly
//! (like `slotctl user`), so keys can be set before the daemon runs. A
//! secret is read from standard input or `--from-file`, never from the
//! command line (where `ps` and shell history would keep it), and no
//! command ever prints one.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{print_json, table, Ctx, Usage};
use crate::claude::db::{self, Db};
use crate::claude::keys::{self, Mode, Secret};

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Which keys slots get: shared, per_user or pool.
    Mode { mode: String },
    /// Store the shared key or a user's key (read from stdin or --from-file).
    Set {
        #[command(flatten)]
        target: Target,
        /// Read the key from this file instead of stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Remove the shared key or a user's key.
    Unset {
        #[command(flatten)]
        target: Target,
    },
    /// The shared pool (mode `pool`).
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Show the configuration (never a key's value).
    List,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The key everybody (or everybody without their own) gets.
    #[arg(long)]
    shared: bool,
    /// This user's own key.
    #[arg(long)]
    user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// Add (or replace) a named pool key (read from stdin or --from-file).
    Add {
        name: String,
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Remove a pool key; its users are assigned another at their next start.
    Remove { name: String },
    /// Same as `slotctl keys list`.
    List,
}

fn read_secret(from: Option<PathBuf>) -> anyhow::Result<Secret> {
    let raw = match from {
        Some(p) => std::fs::read_to_string(&p)
            .map_err(|e| Usage(format!("--from-file {}: {e}", p.display())))?,
        None => {
            let mut s = String::new();
            if std::io::stdin().is_terminal() {
                eprintln!("Paste the API key, then press Enter (it is not shown):");
                std::io::stdin().read_line(&mut s)?;
            } else {
                std::io::stdin().read_to_string(&mut s)?;
            }
            s
        }
    };
    Secret::new(&raw).map_err(|e| Usage(e.to_string()).into())
}

fn target(t: &Target) -> Result<(&'static str, String), Usage> {
    match (&t.user, t.shared) {
        (Some(u), _) => slotapi::UserName::new(u)
            .map(|u| ("user", u.to_string()))
            .map_err(|e| Usage(e.to_string())),
        (None, _) => Ok(("shared", "shared".into())),
    }
}

fn name(s: &str) -> Result<String, Usage> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(Usage(format!(
            "{s:?}: a pool key name is 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(s.to_string())
}

fn list(ctx: &Ctx, conn: &rusqlite::Connection) -> anyhow::Result<ExitCode> {
    let o = keys::overview(conn, &ctx.cfg.paths.data_dir)?;
    if ctx.json {
        print_json(&o);
        return Ok(ExitCode::SUCCESS);
    }
    println!("mode: {}", o.mode.as_str());
    println!("shared key: {}", if o.shared { "set" } else { "not set" });
    let mut rows: Vec<Vec<String>> = o
        .users
        .iter()
        .map(|u| vec!["user".into(), u.clone(), String::new()])
        .collect();
    for k in &o.pool_keys {
        let users: Vec<&str> = o
            .assignments
            .iter()
            .filter(|(_, v)| *v == k)
            .map(|(u, _)| u.as_str())
            .collect();
        rows.push(vec!["pool".into(), k.clone(), users.join(", ")]);
    }
    if !rows.is_empty() {
        table(&["KIND", "NAME", "ASSIGNED TO"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(ctx: &Ctx, cmd: KeysCmd) -> anyhow::Result<ExitCode> {
    let data_dir = &ctx.cfg.paths.data_dir;
    let store = Db::open(&db::path(data_dir))?;
    let conn = store.lock();
    match cmd {
        KeysCmd::Mode { mode } => {
            let m = Mode::parse(&mode).ok_or_else(|| {
                Usage(format!(
                    "{mode:?} is not a mode; use shared, per_user or pool"
                ))
            })?;
            keys::set_mode(&conn, m)?;
            eprintln!(
                "key mode is now {} (applies to slots started from now on)",
                m.as_str()
            );
        }
        KeysCmd::Set {
            target: t,
            from_file,
        } => {
            let (kind, who) = target(&t)?;
            let secret = read_secret(from_file)?;
            keys::put(&conn, data_dir, kind, &who, &secret)?;
            if kind == "user" && keys::mode(&conn)? != Mode::PerUser {
                eprintln!("note: the key mode is {}; user keys are used in mode per_user (slotctl keys mode per_user)", keys::mode(&conn)?.as_str());
            }
            eprintln!(
                "stored the {kind} key{} (encrypted)",
                if kind == "user" {
                    format!(" of {who}")
                } else {
                    String::new()
                }
            );
        }
        KeysCmd::Unset { target: t } => {
            let (kind, who) = target(&t)?;
            if !keys::remove(&conn, kind, &who)? {
                anyhow::bail!(
                    "no {kind} key{} is set",
                    if kind == "user" {
                        format!(" for {who}")
                    } else {
                        String::new()
                    }
                );
            }
            eprintln!("removed the {kind} key");
        }
        KeysCmd::Pool(PoolCmd::Add { name: n, from_file }) => {
            let n = name(&n)?;
            let secret = read_secret(from_file)?;
            keys::put(&conn, data_dir, "pool", &n, &secret)?;
            if keys::mode(&conn)? != Mode::Pool {
                eprintln!("note: the key mode is {}; pool keys are used in mode pool (slotctl keys mode pool)", keys::mode(&conn)?.as_str());
            }
            eprintln!("stored pool key {n} (encrypted)");
        }
        KeysCmd::Pool(PoolCmd::Remove { name: n }) => {
            if !keys::remove(&conn, "pool", &name(&n)?)? {
                anyhow::bail!("no pool key is named {n}");
            }
            eprintln!("removed pool key {n}");
        }
        KeysCmd::Pool(PoolCmd::List) | KeysCmd::List => return list(ctx, &conn),
    }
    Ok(ExitCode::SUCCESS)
}
