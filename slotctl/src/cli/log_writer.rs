//! `slotctl __log-writer` (hidden): reads one stream of an app (its stdin is
//! the pipe the app writes to) and appends each line, with a timestamp or
//! as a PM2 JSON log object, to the stream's file and the combined file. It
//! runs in the app's cgroup and outlives the daemon, so a daemon restart
//! never breaks the app's pipe. It ignores SIGINT/SIGTERM/SIGHUP and ends at
//! end of input (when the app and its children are gone); SIGKILL from the
//! stop ladder ends it otherwise. SIGUSR2 is ignored too: files are opened
//! per batch, so rotation needs no signal.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long)]
    combined: Option<PathBuf>,
    /// day.js format of the line prefix.
    #[arg(long)]
    timestamp: Option<String>,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    app: Option<String>,
    #[arg(long)]
    id: Option<u32>,
    #[arg(long = "type")]
    kind: Option<String>,
}

#[derive(Debug, Parser)]
#[command(name = "slotctl __log-writer")]
struct Standalone {
    #[command(flatten)]
    args: Args,
}

pub fn main(argv: Vec<OsString>) -> ExitCode {
    let mut argv = argv;
    argv.remove(1);
    let a = match Standalone::try_parse_from(argv) {
        Ok(s) => s.args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    // Registering the handlers is what ignores the signals: tokio's
    // handler only records them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let _guards = rt.as_ref().ok().map(|rt| {
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            [
                SignalKind::interrupt(),
                SignalKind::terminate(),
                SignalKind::hangup(),
                SignalKind::user_defined2(),
            ]
            .into_iter()
            .filter_map(|k| signal(k).ok())
            .collect::<Vec<_>>()
        })
    });
    match copy(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

fn open(p: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}

fn copy(a: &Args) -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n');
        let now = chrono::Local::now();
        let out = if a.json {
            let mut obj = serde_json::json!({
                "message": text,
                "timestamp": crate::app::format_timestamp(a.timestamp.as_deref().unwrap_or("YYYY-MM-DDTHH:mm:ss"), &now),
                "type": a.kind.as_deref().unwrap_or("out"),
                "process_id": a.id.unwrap_or(0),
                "app_name": a.app.as_deref().unwrap_or(""),
            });
            if a.timestamp.is_none() {
                obj["timestamp"] = serde_json::Value::String(
                    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                );
            }
            format!("{obj}\n")
        } else if let Some(fmt) = &a.timestamp {
            format!("{}: {text}\n", crate::app::format_timestamp(fmt, &now))
        } else {
            format!("{text}\n")
        };
        // Open per line: a rotated or flushed file is picked up at once, and
        // O_APPEND keeps lines from two writers whole.
        for p in [&a.file, &a.combined].into_iter().flatten() {
            if let Ok(mut f) = open(p) {
                let _ = f.write_all(out.as_bytes());
            }
        }
    }
}
