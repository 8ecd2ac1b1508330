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
    let pasta = find_on_path("pasta");
    let egress: Vec<&str> = cfg
        .templates
        .values()
        .filter(|t| t.bwrap && t.network == crate::template::Network::Egress)
        .map(|t| t.name.as_str())
        .collect();
    match pasta.as_deref().map(|p| (p, version_of(p, "--version"))) {
        Some((p, Ok(v))) => out.push(check("pasta", "ok", format!("{} ({v})", p.display()))),
        _ => out.push(check(
            "pasta",
            if egress.is_empty() { "warn" } else { "fail" },
            format!(
                "pasta not found (network = \"egress\" slots cannot start: {}): apt-get install passt",
                if egress.is_empty() { "none configured".to_string() } else { egress.join(", ") }
            ),
        )),
    }
    if let Ok(meta) = std::fs::metadata("/dev/net/tun") {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        out.push(check(
            "tun",
            if mode & 0o006 == 0o006 || egress.is_empty() { "ok" } else { "fail" },
            if mode & 0o006 == 0o006 {
                format!("/dev/net/tun mode {mode:o}")
            } else {
                format!("/dev/net/tun mode {mode:o}: slot users cannot open it (pasta needs it; chmod 0666 as udev does)")
            },
        ));
    }
    let facts = crate::isolation::facts(cfg, bwrap.as_deref().unwrap_or(&cfg.ttyd.bwrap));
    out.push(check(
        "users",
        if facts.per_user_uids { "ok" } else { "warn" },
        facts.users.clone(),
    ));
    match &facts.probe {
        Ok(p) => {
            let yes = |b: bool| if b { "yes" } else { "NO" };
            out.push(check(
                "sandbox",
                if facts.sandbox_weaknesses().is_empty() { "ok" } else { "warn" },
                format!(
                    "probe as uid {}: capabilities dropped {}, no_new_privs {}, user namespaces refused {}, slotgate's data hidden {}",
                    p.uid,
                    yes(p.no_capabilities),
                    yes(p.no_new_privs),
                    yes(p.userns_refused),
                    yes(p.data_hidden)
                ),
            ));
        }
        Err(e) => out.push(check("sandbox", "warn", format!("probe failed: {e}"))),
    }
    let hidden = facts.probe.as_ref().is_ok_and(|p| p.data_hidden);
    out.push(check(
        "filesystem",
        if hidden { "ok" } else { "warn" },
        "system directories read-only (/usr, /etc, /opt); the owner's sandbox read-write; \
         own /tmp, /var/tmp, /dev, /proc; no /home, /root, /var, /run; slotgate's data, run and \
         templates directories and config file hidden",
    ));
    for (name, sandboxed, net) in &facts.templates {
        let (st, detail) = match (sandboxed, *net) {
            (false, _) => (
                "warn",
                "no sandbox: runs as its owner's uid but sees the host's filesystem and network"
                    .to_string(),
            ),
            (true, "host") => (
                "warn",
                "sandboxed, with the host's network (loopback services reachable)".to_string(),
            ),
            (true, net) => ("ok", format!("sandboxed, network {net}")),
        };
        out.push(check(&format!("template {name}"), st, detail));
    }
    let cg = Cgroups::detect(
        &cfg.supervisor.cgroup_root,
        cfg.supervisor.isolation == IsolationPref::Auto,
    );
    out.push(check(
        "resources",
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
    let weak = !facts.weaknesses().is_empty();
    out.push(check(
        "verdict",
        match (weak, cfg.supervisor.multi_user, cfg.supervisor.allow_weak_isolation) {
            (false, _, _) => "ok",
            (true, true, false) => "fail",
            (true, _, _) => "warn",
        },
        if weak && cfg.supervisor.multi_user && !cfg.supervisor.allow_weak_isolation {
            format!(
                "{} (the gateway signs several people in: the daemon refuses to start unless supervisor.allow_weak_isolation = true)",
                facts.verdict()
            )
        } else {
            facts.verdict()
        },
    ));
    out
}
