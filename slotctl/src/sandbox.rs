//! Per-user sandboxes: `data/users/<owner>/` with `home/` (and its own
//! `.claude/`), `workdir/`, `history/` and `files/`, plus the bubblewrap
//! argument list that confines a slot to it. Creating directories is all
//! this module does to the system.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use slotapi::config::Paths;
use slotapi::SlotId;

use crate::template::{expand, Network, Template, Vars};
use crate::tenant::{self, Tenant};

/// `data/users/<key>`: the sandbox of an owner (or of a team, for
/// `team-…` slots; see [`tenant::sandbox_key`]).
pub fn sandbox_dir(data_dir: &Path, key: &str) -> PathBuf {
    data_dir.join("users").join(key)
}

/// Make the sandbox (idempotent), owned by the slot's identity with mode
/// 0700, and link shared resources into it when bubblewrap is not in use
/// (a link is only a convenience there: read-only is enforced by
/// bubblewrap's bind mounts). Nothing is followed: a symlink a tenant left
/// where a directory belongs is an error, not a path the daemon walks.
/// Returns how many entries of an older sandbox were re-owned to `tenant`.
pub fn prepare(template: &Template, vars: &Vars, key: &str, tenant: Tenant) -> io::Result<u64> {
    // A required shared resource that is missing fails the start with a
    // reason, instead of a slot whose every connection closes at once.
    if let Some(missing) = template
        .shared
        .iter()
        .find(|s| !s.optional && !s.source.exists())
    {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "shared resource {} does not exist (mark it optional = true to skip it)",
                missing.source.display()
            ),
        ));
    }
    let users = tenant::daemon_dir(&vars.data_dir.join("users"), 0o711)?;
    let (top, reowned) = tenant::owned_dir(&users, key, tenant, tenant.gid, 0o700)?;
    for d in ["home/.claude", "workdir", "history", "files"] {
        tenant::open_dirs(&top, Path::new(d), tenant, 0o700)?;
    }
    if !template.bwrap {
        for share in template
            .shared
            .iter()
            .filter(|s| !s.optional || s.source.exists())
        {
            let target = PathBuf::from(expand(&share.target, vars));
            let Ok(rel) = target.strip_prefix(&vars.sandbox) else {
                continue;
            };
            let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                continue;
            };
            let dir = tenant::open_dirs(&top, parent, tenant, 0o700)?;
            match rustix::fs::symlinkat(&share.source, &dir, name) {
                Ok(()) => {
                    let _ = rustix::fs::chownat(
                        &dir,
                        name,
                        Some(rustix::process::Uid::from_raw(tenant.uid)),
                        Some(rustix::process::Gid::from_raw(tenant.gid)),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    );
                }
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(reowned)
}

/// `/etc/passwd` and `/etc/group` as a sandbox of `key` sees them: the
/// host's, plus the slot's own user and group (named after the owner, with
/// the sandbox's home), so `id`, `whoami`, the prompt and ssh know who they
/// are. Written by the daemon to `<run>/passwd/`, a directory no slot can
/// write; the sandbox binds them read-only.
pub fn identity_files(paths: &Paths, key: &str, who: Tenant, home: &Path) -> io::Result<()> {
    let dir = paths.run_dir.join("passwd");
    tenant::daemon_dir(&dir, 0o711)?;
    let keep = |line: &&str| {
        let f: Vec<&str> = line.split(':').collect();
        f.first() != Some(&key) && f.get(2) != Some(&who.uid.to_string().as_str())
    };
    let mut passwd: String = fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter(keep)
        .map(|l| format!("{l}\n"))
        .collect();
    passwd.push_str(&format!(
        "{key}:x:{}:{}:{key}:{}:/bin/bash\n",
        who.uid,
        who.gid,
        home.display()
    ));
    let mut group: String = fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.first() != Some(&key) && f.get(2) != Some(&who.gid.to_string().as_str())
        })
        .map(|l| format!("{l}\n"))
        .collect();
    group.push_str(&format!("{key}:x:{}:\n", who.gid));
    let (p, g) = identity_paths(paths, key);
    for (path, text) in [(&p, passwd), (&g, group)] {
        slotapi::files::write_atomic(path, text.as_bytes())?;
        fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    }
    Ok(())
}

/// Where [`identity_files`] puts `key`'s passwd and group files.
pub fn identity_paths(paths: &Paths, key: &str) -> (PathBuf, PathBuf) {
    let dir = paths.run_dir.join("passwd");
    (
        dir.join(format!("{key}.passwd")),
        dir.join(format!("{key}.group")),
    )
}

/// Make the slot's directory, `<run>/slots/<id>/`: the tenant's, with the
/// gateway's group and setgid, so the socket ttyd makes there is the
/// gateway's to reach and no one else's; and `tmux/` in it, the tenant's
/// alone, for the tmux server's socket. Anything left from an earlier run
/// (another tenant's, or root's) is replaced.
pub fn prepare_slot_dir(
    paths: &Paths,
    id: &SlotId,
    tenant: Tenant,
    gateway_gid: u32,
) -> io::Result<()> {
    let slots = tenant::daemon_dir(&paths.slots_dir(), 0o711)?;
    let dir = paths.slot_dir(id);
    if let Ok(st) = rustix::fs::statat(&slots, id.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        let is_dir =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
        if !is_dir || st.st_uid != tenant.uid || st.st_gid != gateway_gid {
            if is_dir {
                fs::remove_dir_all(&dir)?;
            } else {
                fs::remove_file(&dir)?;
            }
        }
    }
    let (fd, _) = tenant::owned_dir(&slots, id.as_str(), tenant, gateway_gid, 0o2750)?;
    tenant::owned_dir(&fd, "tmux", tenant, tenant.gid, 0o700)?;
    Ok(())
}

/// Remove a sandbox and everything in it.
pub fn remove(data_dir: &Path, owner: &str) -> io::Result<()> {
    let dir = sandbox_dir(data_dir, owner);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// What every sandbox (a slot's session and its door) sees of the host:
/// the system directories read-only (`/usr`, `/etc`, `/opt`, and the
/// merged-usr links or directories `/bin`, `/lib`…), its own `/dev`,
/// `/proc`, `/tmp` and `/var/tmp`; nothing of `/home`, `/root`, `/var`,
/// `/run` or `/srv`; slotgate's data, run and templates directories and its
/// config file hidden even where they live below a system directory.
/// `extra_ro` are paths the sandbox needs besides (ttyd's prefix when it is
/// elsewhere).
pub fn system_view(paths: &Paths, config_file: &Path, extra_ro: &[&Path]) -> Vec<String> {
    let s = |p: &Path| p.display().to_string();
    let mut a: Vec<String> = Vec::with_capacity(64);
    let mut arg = |v: &[&str]| a.extend(v.iter().map(|x| x.to_string()));
    arg(&["--ro-bind", "/usr", "/usr"]);
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match fs::read_link(&host) {
            Ok(target) => arg(&["--symlink", &target.display().to_string(), &s(&host)]),
            Err(_) if host.is_dir() => arg(&["--ro-bind", &s(&host), &s(&host)]),
            Err(_) => {}
        }
    }
    arg(&["--ro-bind", "/etc", "/etc"]);
    arg(&["--ro-bind-try", "/opt", "/opt"]);
    arg(&[
        "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--dir", "/var", "--tmpfs",
        "/var/tmp",
    ]);
    for p in extra_ro {
        if p.is_absolute() && !under_view(p) {
            arg(&["--ro-bind", &s(p), &s(p)]);
        }
    }
    for d in [&paths.data_dir, &paths.run_dir, &paths.templates_dir] {
        arg(&["--tmpfs", &s(d)]);
    }
    if config_file.is_absolute() && config_file.is_file() {
        match config_file.parent() {
            // Its directory holds its secrets too (TLS keys, client
            // secrets' files); hide it whole unless it is a system one.
            Some(dir) if !matches!(dir.to_str(), Some("/" | "/etc" | "/usr" | "/opt")) => {
                arg(&["--tmpfs", &s(dir)])
            }
            _ => arg(&["--ro-bind", "/dev/null", &s(config_file)]),
        }
    }
    a
}

/// Whether `p` is already visible in [`system_view`].
fn under_view(p: &Path) -> bool {
    ["/usr", "/etc", "/opt", "/bin", "/sbin", "/lib", "/lib64"]
        .iter()
        .any(|top| p.starts_with(top))
}

/// The confinement flags every sandbox gets: its own user namespace, in
/// which it has no capabilities and may not make another; its own pid, IPC,
/// UTS and cgroup namespaces; a new session (no ioctl reaches the
/// daemon's terminal). `network`: `none` is a namespace with only loopback;
/// `egress` and `host` keep the namespace bubblewrap starts in (pasta's,
/// or the host's).
pub fn confinement(network: Network, hostname: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "--unshare-user",
        "--disable-userns",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        hostname,
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    if network == Network::None {
        a.push("--unshare-net".into());
    }
    a
}

/// The template's shared resources as bind mounts.
pub fn shares(template: &Template, vars: &Vars) -> Vec<String> {
    let mut a = Vec::new();
    for share in template
        .shared
        .iter()
        .filter(|s| !s.optional || s.source.exists())
    {
        a.push(
            if share.writable {
                "--bind"
            } else {
                "--ro-bind"
            }
            .to_string(),
        );
        a.push(share.source.display().to_string());
        a.push(expand(&share.target, vars));
    }
    a
}

/// pasta in front of a sandbox with `egress` network: a network namespace
/// of its own, reached through a user-space TCP/IP stack, with nothing of
/// the host's forwarded in (no ports), no route to the host's loopback
/// (`--no-map-gw`), ending with the sandbox it runs.
pub fn pasta_args() -> Vec<String> {
    [
        "--config-net",
        "--tcp-ports=none",
        "--udp-ports=none",
        "--tcp-ns=none",
        "--udp-ns=none",
        "--no-map-gw",
        "--quiet",
        "--foreground",
        "--",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}
