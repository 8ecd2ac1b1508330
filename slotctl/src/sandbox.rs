//! Per-user sandboxes: `data/users/<owner>/` with `home/` (and its own
//! `.claude/`), `workdir/`, `history/` and `files/`, plus the bubblewrap
//! argument list that confines a slot to it. Creating directories is all
//! this module does to the system.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::template::{expand, Template, Vars};

pub fn sandbox_dir(data_dir: &Path, owner: &str) -> PathBuf {
    data_dir.join("users").join(owner)
}

/// Make the sandbox (idempotent) and link shared resources into it when
/// bubblewrap is not in use. Without bubblewrap a link is only a
/// convenience: read-only is enforced by bubblewrap's bind mounts.
pub fn prepare(template: &Template, vars: &Vars) -> io::Result<()> {
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
    let mut b = fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    b.create(&vars.sandbox)?;
    fs::set_permissions(&vars.sandbox, fs::Permissions::from_mode(0o700))?;
    for d in [
        vars.home(),
        vars.home().join(".claude"),
        vars.workdir(),
        vars.history(),
        vars.files(),
    ] {
        b.create(&d)?;
    }
    if !template.bwrap {
        for share in template
            .shared
            .iter()
            .filter(|s| !s.optional || s.source.exists())
        {
            let target = PathBuf::from(expand(&share.target, vars));
            if target.symlink_metadata().is_err() {
                if let Some(parent) = target.parent() {
                    b.create(parent)?;
                }
                symlink(&share.source, &target)?;
            }
        }
    }
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

/// bubblewrap arguments (without the program name and without the command)
/// that show the slot the host read-only, hide every other sandbox and the
/// run directory, and give it its own writable sandbox, /tmp, pid namespace.
pub fn bwrap_args(template: &Template, vars: &Vars, run_dir: &Path, cwd: &str) -> Vec<String> {
    let s = |p: &Path| p.display().to_string();
    let mut a: Vec<String> = vec![
        "--ro-bind".into(),
        "/".into(),
        "/".into(),
        "--dev".into(),
        "/dev".into(),
        "--proc".into(),
        "/proc".into(),
        "--tmpfs".into(),
        "/tmp".into(),
        "--tmpfs".into(),
        "/home".into(),
        "--tmpfs".into(),
        "/root".into(),
        "--tmpfs".into(),
        s(&vars.data_dir),
        "--tmpfs".into(),
        s(run_dir),
        "--bind".into(),
        s(&vars.sandbox),
        s(&vars.sandbox),
        "--unshare-pid".into(),
        "--unshare-ipc".into(),
        "--unshare-uts".into(),
        "--hostname".into(),
        format!("slot-{}", vars.slot),
    ];
    if !template.network {
        a.push("--unshare-net".into());
    }
    for share in template
        .shared
        .iter()
        .filter(|s| !s.optional || s.source.exists())
    {
        a.push(if share.writable {
            "--bind".into()
        } else {
            "--ro-bind".into()
        });
        a.push(s(&share.source));
        a.push(expand(&share.target, vars));
    }
    a.push("--chdir".into());
    a.push(cwd.to_string());
    a.push("--".into());
    a
}
