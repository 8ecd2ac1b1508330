//! What exactly runs for a slot: the ttyd command line, the tmux command it
//! starts for each client, and the environment. Pure: it builds a
//! description that the supervisor spawns, so it is tested without
//! starting anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use slotapi::config::Paths;
use slotapi::{SlotId, TTYD_AUTH_HEADER};

use crate::cgroup::{ROOT_ENV, SLOT_ENV};
use crate::sandbox;
use crate::template::{expand, Template, Vars};

#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub socket: PathBuf,
    pub tmux_socket: PathBuf,
    pub cwd: PathBuf,
}

/// Everything `plan` needs besides the template.
pub struct Context<'a> {
    pub paths: &'a Paths,
    pub ttyd: &'a Path,
    pub tmux: &'a Path,
    pub bwrap: &'a Path,
    pub ping_interval: Duration,
    pub instance: &'a str,
    /// PATH and locale handed to slots.
    pub host_path: String,
    pub lang: String,
}

pub fn vars(paths: &Paths, id: &SlotId, owner: &str) -> Vars {
    Vars {
        slot: id.to_string(),
        owner: owner.to_string(),
        sandbox: sandbox::sandbox_dir(&paths.data_dir, owner),
        data_dir: paths.data_dir.clone(),
    }
}

pub fn tmux_socket(paths: &Paths, id: &SlotId) -> PathBuf {
    paths.slots_dir().join(format!("{id}.tmux"))
}

pub fn tmux_conf(paths: &Paths) -> PathBuf {
    paths.run_dir.join("tmux.conf")
}

/// The tmux configuration every slot uses: no status bar (the browser page
/// has its own), a long scrollback.
pub const TMUX_CONF: &str = "\
set -g status off
set -g history-limit 50000
set -g default-terminal screen-256color
set -s escape-time 10
set -g set-titles on
set -g set-titles-string '#{session_name}'
";

/// The owner's identity as the slot's processes see it, from their account
/// in `identity.db` (the gateway records provider sign-ins there):
/// `SLOTGATE_USER`, and when known `SLOTGATE_USER_EMAIL`,
/// `SLOTGATE_USER_NAME` (display name), `SLOTGATE_USER_GROUPS`
/// (comma-separated) and `SLOTGATE_USER_ROLE`. Set after the template's
/// own `env`, so a template cannot pose as someone else.
pub fn owner_env(owner: &str, account: Option<&identity::store::User>) -> Vec<(String, String)> {
    let mut env = vec![("SLOTGATE_USER".to_string(), owner.to_string())];
    if let Some(u) = account {
        env.push(("SLOTGATE_USER_ROLE".into(), u.role.as_str().into()));
        if let Some(e) = &u.email {
            env.push(("SLOTGATE_USER_EMAIL".into(), e.clone()));
        }
        if let Some(n) = &u.display_name {
            env.push(("SLOTGATE_USER_NAME".into(), n.clone()));
        }
        if !u.groups.is_empty() {
            env.push(("SLOTGATE_USER_GROUPS".into(), u.groups.join(",")));
        }
    }
    env
}

pub fn plan(ctx: &Context<'_>, template: &Template, id: &SlotId, owner: &str) -> Launch {
    let vars = vars(ctx.paths, id, owner);
    let socket = ctx.paths.slot_socket(id);
    let tmux_socket = tmux_socket(ctx.paths, id);
    let cwd = expand(&template.cwd, &vars);

    let mut env = BTreeMap::new();
    env.insert("PATH".into(), ctx.host_path.clone());
    env.insert("LANG".into(), ctx.lang.clone());
    env.insert("TERM".into(), "xterm-256color".into());
    env.insert("HOME".into(), vars.home().display().to_string());
    env.insert("SHELL".into(), "/bin/bash".into());
    env.insert(
        "HISTFILE".into(),
        vars.history().join("bash_history").display().to_string(),
    );
    env.insert(SLOT_ENV.into(), id.to_string());
    env.insert(ROOT_ENV.into(), ctx.instance.to_string());
    env.insert("SLOTGATE_OWNER".into(), owner.to_string());
    env.insert("SLOTGATE_TEMPLATE".into(), template.name.clone());
    for (k, v) in &template.env {
        env.insert(k.clone(), expand(v, &vars));
    }

    let mut args: Vec<String> = vec![
        "--interface".into(),
        socket.display().to_string(),
        "--base-path".into(),
        format!("/slot/{id}"),
        "--auth-header".into(),
        TTYD_AUTH_HEADER.into(),
        "--ping-interval".into(),
        ctx.ping_interval.as_secs().max(1).to_string(),
    ];
    if template.writable {
        args.push("--writable".into());
    }
    if template.max_clients > 0 {
        args.push("--max-clients".into());
        args.push(template.max_clients.to_string());
    }
    args.push("--client-option".into());
    args.push(format!("titleFixed={id}"));
    for (k, v) in &template.client {
        args.push("--client-option".into());
        args.push(format!("{k}={v}"));
    }
    args.extend(template.ttyd_args.iter().cloned());

    // ttyd runs this once per client; -A attaches to the slot's session when
    // it exists, so every client (and every ttyd restart) sees the same one.
    args.extend([
        ctx.tmux.display().to_string(),
        "-S".into(),
        tmux_socket.display().to_string(),
        "-f".into(),
        tmux_conf(ctx.paths).display().to_string(),
        "new-session".into(),
        "-A".into(),
        "-s".into(),
        id.to_string(),
        "-c".into(),
        cwd.clone(),
    ]);
    if template.bwrap {
        args.push(ctx.bwrap.display().to_string());
        args.extend(sandbox::bwrap_args(
            template,
            &vars,
            &ctx.paths.run_dir,
            &cwd,
        ));
    }
    args.extend(template.command.iter().map(|a| expand(a, &vars)));

    Launch {
        program: ctx.ttyd.to_path_buf(),
        args,
        env,
        socket,
        tmux_socket,
        cwd: PathBuf::from(cwd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            data_dir: "/d".into(),
            run_dir: "/r".into(),
            templates_dir: "/t".into(),
        }
    }

    fn ctx(p: &Paths) -> Context<'_> {
        Context {
            paths: p,
            ttyd: Path::new("/usr/bin/ttyd"),
            tmux: Path::new("/usr/bin/tmux"),
            bwrap: Path::new("/usr/bin/bwrap"),
            ping_interval: Duration::from_secs(30),
            instance: "slotgate",
            host_path: "/usr/bin:/bin".into(),
            lang: "C.UTF-8".into(),
        }
    }

    fn template(extra: &str) -> Template {
        crate::template::parse(
            "claude",
            Path::new("claude.toml"),
            &format!("command = [\"claude\", \"--dir\", \"{{workdir}}\"]\nenv = {{ CLAUDE_CONFIG_DIR = \"{{home}}/.claude\" }}\n{extra}"),
        )
        .unwrap()
    }

    #[test]
    fn ttyd_listens_on_the_slot_socket_behind_the_auth_header() {
        let p = paths();
        let l = plan(
            &ctx(&p),
            &template(""),
            &SlotId::new("alice").unwrap(),
            "alice",
        );
        let a = l.args.join(" ");
        assert!(a.starts_with("--interface /r/slots/alice.sock --base-path /slot/alice --auth-header X-Slotgate-Auth"), "{a}");
        assert!(a.contains("--writable"));
        assert!(a.contains(
            "/usr/bin/tmux -S /r/slots/alice.tmux -f /r/tmux.conf new-session -A -s alice -c /d/users/alice/workdir claude --dir /d/users/alice/workdir"
        ), "{a}");
        assert_eq!(l.env["HOME"], "/d/users/alice/home");
        assert_eq!(l.env["CLAUDE_CONFIG_DIR"], "/d/users/alice/home/.claude");
        assert_eq!(l.env["SLOTGATE_SLOT"], "alice");
    }

    #[test]
    fn read_only_template_drops_writable_and_sets_client_options() {
        let p = paths();
        let l = plan(
            &ctx(&p),
            &template("writable = false\nmax_clients = 2\n[client]\nfontSize = 16\n"),
            &SlotId::new("demo").unwrap(),
            "demo",
        );
        assert!(!l.args.contains(&"--writable".to_string()));
        let a = l.args.join(" ");
        assert!(a.contains("--max-clients 2"));
        assert!(a.contains("--client-option fontSize=16"));
    }

    #[test]
    fn bwrap_wraps_only_the_command_and_hides_other_sandboxes() {
        let p = paths();
        let l = plan(
            &ctx(&p),
            &template("[sandbox]\nbwrap = true\nnetwork = false\nshared = [{ source = \"/opt/skills\", target = \"{home}/.claude/skills\" }]\n"),
            &SlotId::new("bob").unwrap(),
            "bob",
        );
        let a = l.args.join(" ");
        let tmux_at = a.find("new-session").unwrap();
        let bwrap_at = a.find("/usr/bin/bwrap").unwrap();
        assert!(bwrap_at > tmux_at, "bwrap runs inside tmux: {a}");
        assert!(
            a.contains("--tmpfs /d --tmpfs /r --bind /d/users/bob /d/users/bob"),
            "{a}"
        );
        assert!(
            a.contains("--ro-bind /opt/skills /d/users/bob/home/.claude/skills"),
            "{a}"
        );
        assert!(a.contains("--unshare-net"));
        assert!(a.ends_with("-- claude --dir /d/users/bob/workdir"), "{a}");
    }
}
