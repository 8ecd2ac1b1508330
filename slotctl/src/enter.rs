//! `slotctl __enter`: the step between the daemon and a slot's sandbox.
//!
//! The daemon spawns it (as root in the root install); it joins the slot's
//! cgroup with its own pid *before* anything forks, so every process the
//! sandbox makes is accounted for and capped (moving a pid after spawn
//! misses the children pasta and bubblewrap fork at once), sets the
//! address-space rlimit where there are no cgroups, the umask, and (for
//! what bubblewrap does not confine; bubblewrap sets it itself)
//! `no_new_privs`, drops to the slot's uid and gid with no supplementary
//! groups, and execs the sandbox. Nothing of the daemon's privilege
//! reaches the program: it starts as the slot's user, with no
//! capabilities.
//!
//! Arguments: `__enter [--cgroup FILE]... [--uid N --gid N] [--rlimit-as BYTES] [--no-new-privs] -- PROGRAM ARGS...`

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

#[derive(Debug, Default, PartialEq)]
pub struct Enter {
    pub cgroups: Vec<OsString>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub rlimit_as: Option<u64>,
    pub no_new_privs: bool,
    pub program: Vec<OsString>,
}

/// The hidden subcommand's name.
pub const SUBCOMMAND: &str = "__enter";

impl Enter {
    /// The argument list (after the program name) that [`parse`] reads back.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![SUBCOMMAND.into()];
        for c in &self.cgroups {
            a.push("--cgroup".into());
            a.push(c.clone());
        }
        if let (Some(u), Some(g)) = (self.uid, self.gid) {
            a.extend([
                "--uid".into(),
                u.to_string().into(),
                "--gid".into(),
                g.to_string().into(),
            ]);
        }
        if let Some(b) = self.rlimit_as {
            a.extend(["--rlimit-as".into(), b.to_string().into()]);
        }
        if self.no_new_privs {
            a.push("--no-new-privs".into());
        }
        a.push("--".into());
        a.extend(self.program.iter().cloned());
        a
    }
}

pub fn parse(args: &[OsString]) -> Result<Enter, String> {
    let mut e = Enter::default();
    let mut it = args.iter();
    let num = |v: Option<&OsString>, what: &str| -> Result<u64, String> {
        v.and_then(|v| v.to_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{what} needs a number"))
    };
    loop {
        let Some(a) = it.next() else {
            return Err("missing -- PROGRAM".into());
        };
        match a.to_str() {
            Some("--cgroup") => e
                .cgroups
                .push(it.next().ok_or("--cgroup needs a file")?.clone()),
            Some("--uid") => e.uid = Some(num(it.next(), "--uid")? as u32),
            Some("--gid") => e.gid = Some(num(it.next(), "--gid")? as u32),
            Some("--rlimit-as") => e.rlimit_as = Some(num(it.next(), "--rlimit-as")?),
            Some("--no-new-privs") => e.no_new_privs = true,
            Some("--") => break,
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    e.program = it.cloned().collect();
    if e.program.is_empty() {
        return Err("missing PROGRAM after --".into());
    }
    if e.uid.is_some() != e.gid.is_some() {
        return Err("--uid and --gid go together".into());
    }
    Ok(e)
}

/// Run it: on success this never returns (the program replaces us).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let e = match parse(&args[2..]) {
        Ok(e) => e,
        Err(why) => {
            eprintln!("slotctl {SUBCOMMAND}: {why}");
            return ExitCode::from(2);
        }
    };
    match enter(&e) {
        Ok(never) => match never {},
        Err(why) => {
            // The slot's log is our stderr: this is what its reader sees.
            eprintln!("slotctl {SUBCOMMAND}: {why}");
            ExitCode::from(126)
        }
    }
}

fn enter(e: &Enter) -> Result<std::convert::Infallible, String> {
    let me = std::process::id().to_string();
    for file in &e.cgroups {
        std::fs::write(file, &me)
            .map_err(|err| format!("joining the cgroup ({}): {err}", file.to_string_lossy()))?;
    }
    if let Some(bytes) = e.rlimit_as {
        let lim = rustix::process::Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        };
        rustix::process::setrlimit(rustix::process::Resource::As, lim)
            .map_err(|err| format!("setting the memory rlimit: {err}"))?;
    }
    // Files a slot makes are its own and its group's; never the world's.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o007));
    if e.no_new_privs {
        rustix::thread::set_no_new_privs(true).map_err(|err| format!("no_new_privs: {err}"))?;
    }
    let mut cmd = Command::new(&e.program[0]);
    cmd.args(&e.program[1..]);
    if let (Some(uid), Some(gid)) = (e.uid, e.gid) {
        // std sets the gid, then (running as root, with no groups given)
        // clears the supplementary groups, then sets the uid.
        cmd.gid(gid).uid(uid);
    }
    let err = cmd.exec();
    Err(format!("running {}: {err}", e.program[0].to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let e = Enter {
            cgroups: vec!["/sys/fs/cgroup/pids/slotgate/a/door/cgroup.procs".into()],
            uid: Some(200_001),
            gid: Some(200_001),
            rlimit_as: Some(1 << 30),
            no_new_privs: true,
            program: vec!["bwrap".into(), "--".into(), "tmux".into()],
        };
        let a = e.args();
        assert_eq!(a[0], SUBCOMMAND);
        assert_eq!(parse(&a[1..]).unwrap(), e);
    }

    #[test]
    fn bad_arguments_are_refused() {
        let p = |v: &[&str]| parse(&v.iter().map(OsString::from).collect::<Vec<_>>());
        assert!(p(&["--uid", "5", "--", "x"])
            .unwrap_err()
            .contains("together"));
        assert!(p(&["--uid", "x", "--gid", "1", "--", "x"])
            .unwrap_err()
            .contains("number"));
        assert!(p(&["--"]).unwrap_err().contains("PROGRAM"));
        assert!(p(&["--what"]).unwrap_err().contains("unexpected"));
    }
}
