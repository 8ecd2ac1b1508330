//! How well this host keeps slots apart, found by trying it: a throwaway
//! sandbox, made exactly as a slot's is (through `slotctl __enter`, as an
//! unprivileged uid when the daemon is root), reports its capabilities,
//! `no_new_privs`, whether it may make a user namespace and what it sees
//! of slotgate's data directory. `slotctl doctor` prints the facts and a
//! verdict; the daemon refuses to serve a multi-user gateway on a weak host
//! unless `supervisor.allow_weak_isolation = true`.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::config::{Config, UsersPref};
use crate::sandbox;
use crate::template::Network;
use crate::tenant::{self, Tenant};

/// The uid the probe runs as when the daemon is root: `nobody`.
const PROBE_UID: u32 = 65534;

/// What a sandbox reported about itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Probe {
    pub uid: u32,
    /// Effective and bounding capability sets are both empty.
    pub no_capabilities: bool,
    pub no_new_privs: bool,
    /// `unshare -U` failed inside (no nested user namespaces).
    pub userns_refused: bool,
    /// slotgate's data directory shows nothing of its files.
    pub data_hidden: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// Whether every owner has a uid of their own, and in words.
    pub per_user_uids: bool,
    pub users: String,
    pub probe: Result<Probe, String>,
    /// `(template, sandboxed, network)`.
    pub templates: Vec<(String, bool, &'static str)>,
}

impl Facts {
    /// Weak host-wide: slots share a uid, or the sandbox does not hold.
    /// (Single templates without a sandbox or with the host's network are
    /// reported, not counted: they are the operator's choice.)
    pub fn weaknesses(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.per_user_uids {
            out.push("slots of different users run as one uid".to_string());
        }
        out.extend(self.sandbox_weaknesses());
        out
    }

    /// What the probe sandbox showed that it should not have.
    pub fn sandbox_weaknesses(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.probe {
            Err(e) => out.push(format!("no sandbox could be made: {e}")),
            Ok(p) => {
                if !p.no_capabilities {
                    out.push("a sandboxed process keeps capabilities".into());
                }
                if !p.no_new_privs {
                    out.push("no_new_privs is not set in the sandbox".into());
                }
                if !p.userns_refused {
                    out.push("a sandboxed process can make a user namespace".into());
                }
                if !p.data_hidden {
                    out.push("slotgate's data directory is visible in the sandbox".into());
                }
            }
        }
        out
    }

    pub fn verdict(&self) -> String {
        let weak = self.weaknesses();
        if weak.is_empty() {
            let loose: Vec<&str> = self
                .templates
                .iter()
                .filter(|(_, sandboxed, net)| !sandboxed || *net == "host")
                .map(|(n, _, _)| n.as_str())
                .collect();
            if loose.is_empty() {
                "isolated: every slot is its owner's uid, without capabilities, in its own sandbox"
                    .into()
            } else {
                format!(
                    "isolated, except templates {} (no sandbox or the host's network)",
                    loose.join(", ")
                )
            }
        } else {
            format!("weak: {}", weak.join("; "))
        }
    }
}

pub fn facts(cfg: &Config, bwrap: &Path) -> Facts {
    let daemon = tenant::daemon_identity();
    let (per_user_uids, users) = match tenant::users_mode(cfg.supervisor.users, daemon) {
        Ok(m) => m,
        Err(e) => (false, e),
    };
    let probe_as = if daemon.uid == 0 && cfg.supervisor.users != UsersPref::Shared {
        Some(Tenant {
            uid: PROBE_UID,
            gid: PROBE_UID,
        })
    } else {
        None
    };
    Facts {
        per_user_uids,
        users,
        probe: probe(cfg, bwrap, probe_as),
        templates: cfg
            .templates
            .values()
            .map(|t| {
                let net = if t.bwrap { t.network.as_str() } else { "host" };
                (t.name.clone(), t.bwrap, net)
            })
            .collect(),
    }
}

fn probe(cfg: &Config, bwrap: &Path, who: Option<Tenant>) -> Result<Probe, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding slotctl: {e}"))?;
    let config = std::path::absolute(&cfg.file).unwrap_or_else(|_| cfg.file.clone());
    let data = cfg.paths.data_dir.display().to_string();
    let mut argv: Vec<String> = vec![bwrap.display().to_string()];
    argv.extend(sandbox::confinement(Network::None, "slotgate-probe"));
    argv.extend(sandbox::system_view(&cfg.paths, &config, &[]));
    argv.extend([
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status; \
             unshare -U true 2>/dev/null && echo userns=yes || echo userns=no; \
             echo data=$(ls -A {data} 2>/dev/null | wc -l)"
        ),
    ]);
    let enter = crate::enter::Enter {
        uid: who.map(|t| t.uid),
        gid: who.map(|t| t.gid),
        program: argv.into_iter().map(Into::into).collect(),
        ..Default::default()
    };
    let out = Command::new(exe)
        .args(enter.args())
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running bubblewrap: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err
            .lines()
            .last()
            .unwrap_or("bubblewrap failed")
            .to_string());
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

fn parse(text: &str) -> Result<Probe, String> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
    };
    let uid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("unexpected probe output {text:?}"))?;
    let zero = |v: Option<String>| v.is_some_and(|v| v.chars().all(|c| c == '0'));
    Ok(Probe {
        uid,
        no_capabilities: zero(field("CapEff:")) && zero(field("CapBnd:")),
        no_new_privs: field("NoNewPrivs:").as_deref() == Some("1"),
        userns_refused: field("userns=").as_deref() == Some("no"),
        data_hidden: field("data=").as_deref() == Some("0"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_reads_as_facts() {
        let good = "65534\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nNoNewPrivs:\t1\nuserns=no\ndata=0\n";
        let p = parse(good).unwrap();
        assert_eq!(
            p,
            Probe {
                uid: 65534,
                no_capabilities: true,
                no_new_privs: true,
                userns_refused: true,
                data_hidden: true
            }
        );
        let bad = "0\nCapEff:\t000001fffeffffff\nCapBnd:\t000001fffeffffff\nNoNewPrivs:\t0\nuserns=yes\ndata=5\n";
        let p = parse(bad).unwrap();
        let f = Facts {
            per_user_uids: false,
            users: String::new(),
            probe: Ok(p),
            templates: vec![],
        };
        assert_eq!(f.weaknesses().len(), 5, "{:?}", f.weaknesses());
        assert!(f.verdict().starts_with("weak: "));
        assert!(parse("garbage").is_err());
    }
}
