//! `slotctl doctor`: what this host gives slotctl — which ttyd (path and
//! version), tmux, bubblewrap, which resource control applies, the state of
//! the directories and of the daemon. It reads and reports; it changes
//! nothing except creating the (empty) cgroup root it probes with.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::cgroup::Cgroups;
use crate::config::{find_on_path, Config, IsolationPref};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    /// `ok`, `warn` or `fail`.
    pub status: &'static str,
    pub detail: String,
}

fn version_of(program: &Path, arg: &str) -> Result<String, String> {
    let out = Command::new(program)
        .arg(arg)
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .lines()
    .next()
    .unwrap_or("")
    .trim()
    .to_string();
    if out.status.success() || !text.is_empty() {
        Ok(text)
    } else {
        Err(format!("{} {arg} failed", program.display()))
    }
}

fn check(name: &str, status: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
    }
}

/// Run every local check. `daemon` is the daemon's health line, if any.
pub fn run(cfg: &Config, daemon: Result<String, String>) -> Vec<Check> {
    let mut out = vec![check("config", "ok", cfg.file.display().to_string())];
    match cfg.ttyd_binary() {
        Some(p) => match version_of(&p, "--version") {
            Ok(v) => out.push(check("ttyd", "ok", format!("{} ({v})", p.display()))),
            Err(e) => out.push(check(
                "ttyd",
                "fail",
                format!("{} does not run: {e}", p.display()),
            )),
        },
        None => out.push(check(
            "ttyd",
            "fail",
            "not found: run scripts/install-ttyd.sh or set [ttyd] binary",
        )),
    }
    let tmux = find_on_path(&cfg.ttyd.tmux.display().to_string());
    match tmux.as_deref().map(|p| (p, version_of(p, "-V"))) {
        Some((p, Ok(v))) => out.push(check("tmux", "ok", format!("{} ({v})", p.display()))),
        _ => out.push(check(
            "tmux",
            "fail",
            "tmux not found: apt-get install tmux",
        )),
    }
    let bwrap = find_on_path(&cfg.ttyd.bwrap.display().to_string());
    let bwrap_needed = cfg.templates.values().any(|t| t.bwrap);
    match bwrap.as_deref().map(|p| (p, version_of(p, "--version"))) {
        Some((p, Ok(v))) => out.push(check("bwrap", "ok", format!("{} ({v})", p.display()))),
        _ => out.push(check(
            "bwrap",
            if bwrap_needed { "fail" } else { "warn" },
            "bubblewrap not found (templates with sandbox.bwrap = true cannot start): apt-get install bubblewrap",
        )),
    }
    let cg = Cgroups::detect(
        &cfg.supervisor.cgroup_root,
        cfg.supervisor.isolation == IsolationPref::Auto,
    );
    out.push(check(
        "isolation",
        if cg.name() == "rlimit" { "warn" } else { "ok" },
        format!("{}: {}", cg.name(), cg.describe()),
    ));
    for (name, dir) in [
        ("data_dir", &cfg.paths.data_dir),
        ("run_dir", &cfg.paths.run_dir),
    ] {
        let st = if dir.is_dir() { "ok" } else { "warn" };
        let detail = if dir.is_dir() {
            dir.display().to_string()
        } else {
            format!("{} (created when the daemon starts)", dir.display())
        };
        out.push(check(name, st, detail));
    }
    out.push(check(
        "templates",
        if cfg.templates.is_empty() {
            "warn"
        } else {
            "ok"
        },
        if cfg.templates.is_empty() {
            format!("none in {}", cfg.paths.templates_dir.display())
        } else {
            cfg.templates.keys().cloned().collect::<Vec<_>>().join(", ")
        },
    ));
    match daemon {
        Ok(d) => out.push(check("daemon", "ok", d)),
        Err(e) => out.push(check("daemon", "warn", e)),
    }
    out
}
