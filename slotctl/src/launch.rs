//! What exactly runs for a slot: the ttyd command line, the tmux command it
//! starts for each client, and the environment. Pure: it builds a
//! description that the supervisor spawns, so it is tested without
//! starting anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use slotapi::config::Paths;
use slotapi::{SlotId, TTYD_AUTH_HEADER};

use crate::cgroup::{PART_ENV, ROOT_ENV, SLOT_ENV};
use crate::sandbox;
use crate::template::{expand, Network, Template, Vars};
use crate::tenant::Tenant;

/// A slot is two sandboxes, both as the slot's identity and in the slot's
/// cgroup: the *session* (the tmux server in the foreground, so every
/// window and pane, `run-shell` included, is forked inside it) and the
/// *door* (ttyd, whose per-client tmux client reaches the server through
/// the slot directory). Killing or restarting the door leaves the session.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The session's command line, program first.
    pub session: Vec<String>,
    pub session_env: BTreeMap<String, String>,
    /// The door's command line, program first.
    pub door: Vec<String>,
    pub door_env: BTreeMap<String, String>,
    pub socket: PathBuf,
    pub tmux_socket: PathBuf,
    pub cwd: PathBuf,
}

/// Everything `plan` needs besides the template.
pub struct Context<'a> {
    pub paths: &'a Paths,
    /// The config file (hidden from sandboxes).
    pub config_file: &'a Path,
    pub ttyd: &'a Path,
    pub tmux: &'a Path,
    pub bwrap: &'a Path,
    pub pasta: &'a Path,
    pub ping_interval: Duration,
    pub instance: &'a str,
    /// PATH and locale handed to slots.
    pub host_path: String,
    pub lang: String,
}

/// The template variables of a slot whose sandbox is `key`'s (see
/// [`crate::tenant::sandbox_key`]).
pub fn vars(paths: &Paths, id: &SlotId, owner: &str) -> Vars {
    let key = crate::tenant::sandbox_key(id, owner);
    Vars {
        slot: id.to_string(),
        owner: owner.to_string(),
        sandbox: sandbox::sandbox_dir(&paths.data_dir, key),
        data_dir: paths.data_dir.clone(),
    }
}

/// The tmux server's socket, `<run>/slots/<id>/tmux/sock`: the only part of
/// the slot directory the session sandbox sees.
pub fn tmux_socket(paths: &Paths, id: &SlotId) -> PathBuf {
    tmux_dir(paths, id).join("sock")
}

pub fn tmux_dir(paths: &Paths, id: &SlotId) -> PathBuf {
    paths.slot_dir(id).join("tmux")
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

pub fn plan(
    ctx: &Context<'_>,
    template: &Template,
    id: &SlotId,
    owner: &str,
    who: Tenant,
) -> Launch {
    let vars = vars(ctx.paths, id, owner);
    let socket = ctx.paths.slot_socket(id);
    let tmux_socket = tmux_socket(ctx.paths, id);
    let conf = tmux_conf(ctx.paths);
    let cwd = expand(&template.cwd, &vars);
    let d = |p: &Path| p.display().to_string();

    let mut env = BTreeMap::new();
    env.insert("PATH".into(), ctx.host_path.clone());
    env.insert("LANG".into(), ctx.lang.clone());
    env.insert("TERM".into(), "xterm-256color".into());
    env.insert(SLOT_ENV.into(), id.to_string());
    env.insert(ROOT_ENV.into(), ctx.instance.to_string());
    let mut door_env = env.clone();
    door_env.insert(PART_ENV.into(), "door".into());
    env.insert(PART_ENV.into(), "session".into());
    env.insert("HOME".into(), vars.home().display().to_string());
    env.insert("SHELL".into(), "/bin/bash".into());
    env.insert(
        "HISTFILE".into(),
        vars.history().join("bash_history").display().to_string(),
    );
    env.insert("SLOTGATE_OWNER".into(), owner.to_string());
    env.insert("SLOTGATE_TEMPLATE".into(), template.name.clone());
    for (k, v) in &template.env {
        env.insert(k.clone(), expand(v, &vars));
    }

    // The session: the tmux server, in the foreground (`-D`: it stays up
    // with no session, and every window it forks is inside its sandbox).
    let tmux_server = [
        d(ctx.tmux),
        "-D".into(),
        "-S".into(),
        d(&tmux_socket),
        "-f".into(),
        d(&conf),
    ];
    let mut session: Vec<String> = Vec::new();
    if template.bwrap {
        if template.network == Network::Egress {
            session.push(d(ctx.pasta));
            session.extend(sandbox::pasta_args());
        }
        session.push(d(ctx.bwrap));
        session.extend(sandbox::confinement(
            template.network,
            &format!("slot-{id}"),
        ));
        if template.network == Network::Egress {
            // pasta's namespace makes us root in it; be the slot's user
            // again inside (the same number the host sees).
            session.extend([
                "--uid".into(),
                who.uid.to_string(),
                "--gid".into(),
                who.gid.to_string(),
            ]);
        }
        session.extend(sandbox::system_view(
            ctx.paths,
            ctx.config_file,
            &[ctx.tmux],
        ));
        let tmux_dir = tmux_dir(ctx.paths, id);
        session.extend([
            "--bind".into(),
            d(&vars.sandbox),
            d(&vars.sandbox),
            "--bind".into(),
            d(&tmux_dir),
            d(&tmux_dir),
            "--ro-bind".into(),
            d(&conf),
            d(&conf),
        ]);
        let (passwd, group) =
            sandbox::identity_paths(ctx.paths, crate::tenant::sandbox_key(id, owner));
        session.extend([
            "--ro-bind".into(),
            d(&passwd),
            "/etc/passwd".into(),
            "--ro-bind".into(),
            d(&group),
            "/etc/group".into(),
        ]);
        session.extend(sandbox::shares(template, &vars));
        session.extend(["--chdir".into(), cwd.clone(), "--".into()]);
    }
    session.extend(tmux_server);

    // The door: ttyd, with no network at all (it only listens on its unix
    // socket), seeing the slot directory and nothing of the sandbox.
    let mut door: Vec<String> = Vec::new();
    if template.bwrap {
        let slot_dir = ctx.paths.slot_dir(id);
        let ttyd_prefix = ctx.ttyd.parent().and_then(Path::parent).unwrap_or(ctx.ttyd);
        door.push(d(ctx.bwrap));
        door.extend(sandbox::confinement(Network::None, &format!("slot-{id}")));
        door.extend(sandbox::system_view(
            ctx.paths,
            ctx.config_file,
            &[ttyd_prefix, ctx.tmux],
        ));
        door.extend([
            "--bind".into(),
            d(&slot_dir),
            d(&slot_dir),
            "--ro-bind".into(),
            d(&conf),
            d(&conf),
            "--chdir".into(),
            "/".into(),
            "--".into(),
        ]);
    }
    door.push(d(ctx.ttyd));
    door.extend([
        "--interface".into(),
        socket.display().to_string(),
        "--base-path".into(),
        format!("/slot/{id}"),
        "--auth-header".into(),
        TTYD_AUTH_HEADER.into(),
        "--ping-interval".into(),
        ctx.ping_interval.as_secs().max(1).to_string(),
    ]);
    if template.writable {
        door.push("--writable".into());
    }
    if template.max_clients > 0 {
        door.push("--max-clients".into());
        door.push(template.max_clients.to_string());
    }
    door.push("--client-option".into());
    door.push(format!("titleFixed={id}"));
    for (k, v) in &template.client {
        door.push("--client-option".into());
        door.push(format!("{k}={v}"));
    }
    door.extend(template.ttyd_args.iter().cloned());

    // ttyd runs this once per client; -A attaches to the slot's session when
    // it exists, so every client (and every ttyd restart) sees the same one.
    // -N: never start a server here (outside the session's sandbox); with
    // none running the client fails and the supervisor restarts the session.
    door.extend([
        d(ctx.tmux),
        "-N".into(),
        "-S".into(),
        d(&tmux_socket),
        "-f".into(),
        d(&conf),
        "new-session".into(),
        "-A".into(),
        "-s".into(),
        id.to_string(),
        "-c".into(),
        cwd.clone(),
    ]);
    door.extend(template.command.iter().map(|a| expand(a, &vars)));

    Launch {
        session,
        session_env: env,
        door,
        door_env,
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

    const WHO: Tenant = Tenant {
        uid: 200_007,
        gid: 200_007,
    };

    fn ctx(p: &Paths) -> Context<'_> {
        ctx_with(p, Path::new("/nonexistent/slotgate.toml"))
    }

    fn ctx_with<'a>(p: &'a Paths, config_file: &'a Path) -> Context<'a> {
        Context {
            paths: p,
            config_file,
            ttyd: Path::new("/opt/slotgate/ttyd/bin/ttyd"),
            tmux: Path::new("/usr/bin/tmux"),
            bwrap: Path::new("/usr/bin/bwrap"),
            pasta: Path::new("/usr/bin/pasta"),
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
            WHO,
        );
        let a = l.door.join(" ");
        assert!(a.starts_with("/opt/slotgate/ttyd/bin/ttyd --interface /r/slots/alice/ttyd.sock --base-path /slot/alice --auth-header X-Slotgate-Auth"), "{a}");
        assert!(a.contains("--writable"));
        assert!(a.ends_with(
            "/usr/bin/tmux -N -S /r/slots/alice/tmux/sock -f /r/tmux.conf new-session -A -s alice -c /d/users/alice/workdir claude --dir /d/users/alice/workdir"
        ), "{a}");
        assert_eq!(
            l.session.join(" "),
            "/usr/bin/tmux -D -S /r/slots/alice/tmux/sock -f /r/tmux.conf"
        );
        assert_eq!(l.session_env["HOME"], "/d/users/alice/home");
        assert_eq!(
            l.session_env["CLAUDE_CONFIG_DIR"],
            "/d/users/alice/home/.claude"
        );
        assert_eq!(l.session_env["SLOTGATE_SLOT"], "alice");
        assert_eq!(l.session_env["SLOTGATE_PART"], "session");
        assert_eq!(l.door_env["SLOTGATE_PART"], "door");
        // The door never sees the owner's secrets or settings.
        assert!(!l.door_env.contains_key("CLAUDE_CONFIG_DIR"));
        assert!(!l.door_env.contains_key("HOME"));
    }

    #[test]
    fn read_only_template_drops_writable_and_sets_client_options() {
        let p = paths();
        let l = plan(
            &ctx(&p),
            &template("writable = false\nmax_clients = 2\n[client]\nfontSize = 16\n"),
            &SlotId::new("demo").unwrap(),
            "demo",
            WHO,
        );
        assert!(!l.door.contains(&"--writable".to_string()));
        let a = l.door.join(" ");
        assert!(a.contains("--max-clients 2"));
        assert!(a.contains("--client-option fontSize=16"));
    }

    /// The argument that follows `flag` each time it appears.
    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn the_tmux_server_runs_inside_the_sandbox_and_sees_only_its_own() {
        let p = paths();
        let etc = tempfile::tempdir().unwrap();
        let config = etc.path().join("slotgate.toml");
        std::fs::write(&config, "").unwrap();
        let l = plan(
            &ctx_with(&p, &config),
            &template("[sandbox]\nbwrap = true\nnetwork = \"none\"\nshared = [{ source = \"/opt/skills\", target = \"{home}/.claude/skills\" }]\n"),
            &SlotId::new("bob").unwrap(),
            "bob",
            WHO,
        );
        let s = &l.session;
        assert_eq!(s[0], "/usr/bin/bwrap");
        let a = s.join(" ");
        assert!(
            a.ends_with("-- /usr/bin/tmux -D -S /r/slots/bob/tmux/sock -f /r/tmux.conf"),
            "{a}"
        );
        for flag in [
            "--unshare-user",
            "--disable-userns",
            "--unshare-pid",
            "--unshare-net",
            "--new-session",
        ] {
            assert!(s.iter().any(|x| x == flag), "{flag} missing: {a}");
        }
        assert_eq!(after(s, "--cap-drop"), ["ALL"]);
        // Nothing of the host's root but system directories, read-only.
        assert!(
            !a.contains("--ro-bind / /") && !a.contains("--bind / /"),
            "{a}"
        );
        assert_eq!(after(s, "--bind"), ["/d/users/bob", "/r/slots/bob/tmux"]);
        assert!(after(s, "--ro-bind").contains(&"/usr"));
        let etc = etc.path().display().to_string();
        for hidden in ["/d", "/r", "/t", etc.as_str(), "/tmp"] {
            assert!(
                after(s, "--tmpfs").contains(&hidden),
                "{hidden} not hidden: {a}"
            );
        }
        assert!(
            a.contains("--ro-bind /opt/skills /d/users/bob/home/.claude/skills"),
            "{a}"
        );
        // The door: no network, the slot directory, not the sandbox.
        let d = &l.door;
        assert_eq!(d[0], "/usr/bin/bwrap");
        assert!(d.iter().any(|x| x == "--unshare-net"));
        assert_eq!(after(d, "--bind"), ["/r/slots/bob"]);
    }

    #[test]
    fn egress_puts_pasta_in_front_of_the_session_and_not_the_door() {
        let p = paths();
        let l = plan(
            &ctx(&p),
            &template("[sandbox]\nbwrap = true\nnetwork = \"egress\"\n"),
            &SlotId::new("bob").unwrap(),
            "bob",
            WHO,
        );
        assert_eq!(l.session[0], "/usr/bin/pasta");
        let a = l.session.join(" ");
        assert!(
            a.contains("--tcp-ports=none --udp-ports=none --tcp-ns=none --udp-ns=none --no-map-gw"),
            "{a}"
        );
        assert!(a.contains("-- /usr/bin/bwrap "), "{a}");
        assert!(!l.session.iter().any(|x| x == "--unshare-net"), "{a}");
        assert!(a.contains("--uid 200007 --gid 200007"), "{a}");
        assert_eq!(l.door[0], "/usr/bin/bwrap");
        assert!(l.door.iter().any(|x| x == "--unshare-net"));
        let host = plan(
            &ctx(&p),
            &template("[sandbox]\nbwrap = true\nnetwork = \"host\"\n"),
            &SlotId::new("bob").unwrap(),
            "bob",
            WHO,
        );
        assert_eq!(host.session[0], "/usr/bin/bwrap");
        assert!(!host.session.iter().any(|x| x == "--unshare-net"));
    }

    #[test]
    fn a_team_slot_uses_the_teams_sandbox_not_its_creators() {
        let p = paths();
        let l = plan(
            &ctx(&p),
            &template(""),
            &SlotId::new("team-ops").unwrap(),
            "root",
            WHO,
        );
        assert_eq!(l.session_env["HOME"], "/d/users/team-ops/home");
        assert_eq!(l.session_env["SLOTGATE_OWNER"], "root");
    }
}
