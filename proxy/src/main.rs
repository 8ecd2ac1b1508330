//! `slotgate`: the gateway in front of slotctl's slots. This file only reads
//! the command line, loads the configuration and hands it to
//! [`server::run`]; `check-config` validates like `nginx -t`.

mod access_log;
mod api;
mod batch;
mod config;
mod connections;
mod gateway;
mod headers;
mod identity;
mod lifecycle;
mod limits;
mod metrics;
mod pages;
mod popup;
mod portal;
mod quota;
mod recording;
mod redirect;
mod routing;
mod server;
mod sessions;
mod signin;
mod slot_acl;
mod slots;
mod tls;
mod upgrade;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use slotapi::config::ConfigFile;

use crate::config::Config;

// glibc's allocator showed up as a sixth of the proxy's CPU time under load
// (arena contention and consolidation between worker threads).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The slotgate gateway: TLS, routing to slots over unix sockets, lazy
/// start, rate limits, access log and metrics.
#[derive(Parser)]
#[command(name = "slotgate", version)]
struct Cli {
    /// Configuration file (TOML, shared with slotctl). Without it,
    /// ./slotgate.toml is used if present, else built-in defaults.
    #[arg(long, short = 'c', global = true, env = "SLOTGATE_CONFIG")]
    config: Option<PathBuf>,
    /// More logging (-v: debug, -vv: trace). SLOTGATE_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in the foreground (the default).
    Run,
    /// Validate the configuration (and load the certificate) without
    /// starting; exit 0 when it is usable, 1 when not.
    CheckConfig,
    /// Reload without a gap: check the configuration, then have the
    /// running gateway start a new one (the binary at the same path, the
    /// configuration as it is now) and hand it the listening sockets. Open
    /// terminals stay with the old process for `reload_grace`. Exit 0 once
    /// the new gateway serves, 1 (and nothing changed) when it could not.
    Reload,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.quiet);
    slotapi::files::close_new_files_to_others();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => load(cli.config.as_deref())
            .and_then(server::run)
            .inspect_err(lifecycle::report_failed_start),
        Command::CheckConfig => check_config(cli.config.as_deref()),
        Command::Reload => reload(cli.config.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let implicit = Path::new("slotgate.toml");
    let file = match path {
        Some(p) => ConfigFile::load(p)?,
        None if implicit.exists() => ConfigFile::load(implicit)?,
        None => ConfigFile::empty(&std::env::current_dir()?),
    };
    Ok(Config::from_file(&file)?)
}

/// The configuration, checked as far as it can be without starting:
/// what `check-config` reports on and `reload` requires.
fn checked(path: Option<&Path>) -> anyhow::Result<Config> {
    let cfg = load(path)?;
    server::preflight(&cfg)?;
    if let Some(dir) = &cfg.portal.dir {
        portal::check_dir(dir).map_err(anyhow::Error::msg)?;
    }
    Ok(cfg)
}

fn reload(path: Option<&Path>) -> anyhow::Result<()> {
    let cfg = checked(path)?;
    let (old, new) = lifecycle::request_reload(&cfg)?;
    println!(
        "slotgate reloaded: pid {new} serves; pid {old} finishes its open connections (at most {})",
        humantime::format_duration(cfg.reload_grace)
    );
    Ok(())
}

fn check_config(path: Option<&Path>) -> anyhow::Result<()> {
    let cfg = checked(path)?;
    let scheme = if cfg.is_tls() { "https" } else { "http" };
    println!("slotgate: configuration {} is OK", cfg.file.display());
    for addr in &cfg.listen {
        println!("  listen      {scheme}://{addr}");
    }
    for addr in &cfg.redirect_listen {
        println!("  redirect    http://{addr} -> https");
    }
    match &cfg.tls {
        Some(config::TlsSource::Files { cert, .. }) => println!("  certificate {}", cert.display()),
        Some(config::TlsSource::SelfSigned { dir }) => {
            println!(
                "  certificate self-signed, generated into {}",
                dir.display()
            )
        }
        None => println!("  certificate none (plain HTTP, loopback only)"),
    }
    match cfg.auth {
        config::AuthMode::None => println!("  auth        none (loopback only)"),
        config::AuthMode::Accounts => {
            println!("  auth        {}", cfg.identity.modes.join(", "));
            println!("  identity db {}", cfg.identity.db_path.display());
            for p in &cfg.identity.oidc {
                println!("  oidc        {} ({})", p.name, p.issuer);
            }
            for p in &cfg.identity.oauth2 {
                println!("  oauth2      {} ({})", p.name, p.auth_url);
            }
        }
    }
    if cfg.recording.enabled {
        println!("  recordings  {}", cfg.recording.dir.display());
    } else {
        println!("  recordings  off");
    }
    println!("  slots       {}", cfg.paths.slots_dir().display());
    println!("  slotctl     {}", cfg.paths.control_socket().display());
    match &cfg.portal.dir {
        Some(dir) => println!("  portal      {}", dir.display()),
        None => println!("  portal      off (no [slotgate.portal] dir)"),
    }
    if cfg.access_log.enabled {
        println!("  access log  {}", cfg.access_log.path.display());
    } else {
        println!("  access log  off");
    }
    Ok(())
}

fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info,pingora_core=warn,pingora_proxy=warn",
        (false, 1) => "debug,pingora_core=info,pingora_proxy=info",
        (false, _) => "trace",
    };
    let filter =
        EnvFilter::try_from_env("SLOTGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal: a file or the journal would keep the
    // escape codes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
