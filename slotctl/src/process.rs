//! Facts about processes read from /proc, and the few calls that act on a
//! pid (signal, wait through a pidfd). Identity of a process is
//! (pid, start time, boot id): a pid alone may have been reused.

use std::fs;
use std::os::fd::OwnedFd;

use rustix::process::{Pid, Signal};
use tokio::io::unix::AsyncFd;

use crate::cgroup::Usage;

/// Start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` if it is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses; skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // rest starts at field 3 (state); start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is a zombie (dead, not yet reaped) or gone.
pub fn is_dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_none_or(|s| s == 'Z' || s == 'X'),
    }
}

/// This boot's id; a pid recorded under another boot id is meaningless.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether the process recorded as (`pid`, `start`) is still that process.
pub fn same_process(pid: u32, start: u64) -> bool {
    !is_dead(pid) && start_time(pid) == Some(start)
}

/// Send a signal; `false` if the process is gone or not ours to signal.
pub fn signal(pid: u32, sig: Signal) -> bool {
    match Pid::from_raw(pid as i32) {
        Some(p) => rustix::process::kill_process(p, sig).is_ok(),
        None => false,
    }
}

/// Processes whose environment holds every `(name, value)` pair.
pub fn pids_with_env(pairs: &[(&str, &str)]) -> Vec<u32> {
    let needles: Vec<Vec<u8>> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}").into_bytes())
        .collect();
    let Ok(rd) = fs::read_dir("/proc") else {
        return vec![];
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    needles
                        .iter()
                        .all(|n| env.split(|b| *b == 0).any(|var| var == n.as_slice()))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Summed CPU time and RSS of `pids` (sysinfo's per-process figures).
pub fn usage_of(pids: &[u32]) -> Usage {
    use sysinfo::{Pid as SPid, ProcessRefreshKind, ProcessesToUpdate, System};
    let mut sys = System::new();
    let list: Vec<SPid> = pids.iter().map(|p| SPid::from_u32(*p)).collect();
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&list),
        true,
        ProcessRefreshKind::nothing().with_memory().with_cpu(),
    );
    let mut u = Usage::default();
    for p in &list {
        if let Some(proc_) = sys.process(*p) {
            u.rss_bytes += proc_.memory();
            u.cpu_ns += proc_.accumulated_cpu_time() * 1_000_000;
        }
    }
    u
}

/// A handle that becomes ready when the process exits. Works for processes
/// that are not our children (re-adopted after a daemon restart).
pub struct ExitWatch {
    fd: AsyncFd<OwnedFd>,
    pid: u32,
}

impl ExitWatch {
    pub fn new(pid: u32) -> std::io::Result<ExitWatch> {
        let p = Pid::from_raw(pid as i32)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "pid 0"))?;
        let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::NONBLOCK)?;
        // `AsyncFd::new` is deprecated because a caller could close a raw
        // fd while it is registered; here the AsyncFd owns the OwnedFd, so
        // the fd lives exactly as long as the registration.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(ExitWatch { fd, pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Wait for the exit; for our own child also reap it and describe how
    /// it ended (`exit 1`, `signal 9`).
    pub async fn wait(&self) -> Option<String> {
        match self.fd.readable().await {
            Ok(mut guard) => guard.retain_ready(),
            Err(_) => return None,
        }
        reap(self.pid)
    }
}

/// Reap `pid` if it is our exited child and describe its end.
pub fn reap(pid: u32) -> Option<String> {
    let p = Pid::from_raw(pid as i32)?;
    match rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG) {
        Ok(Some((_, status))) => Some(describe(status)),
        _ => None,
    }
}

fn describe(status: rustix::process::WaitStatus) -> String {
    if let Some(code) = status.exit_status() {
        format!("exit {code}")
    } else if let Some(sig) = status.terminating_signal() {
        format!("signal {sig}")
    } else {
        "ended".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_stable_and_identifies_us() {
        let me = std::process::id();
        let t = start_time(me).expect("our own stat");
        assert!(same_process(me, t));
        assert!(!same_process(me, t + 1));
        assert!(!is_dead(me));
    }

    #[test]
    fn boot_id_is_a_uuid() {
        assert_eq!(boot_id().len(), 36);
    }

    #[tokio::test]
    async fn exit_watch_reports_exit_code_of_child() {
        // Reaped by `wait` below through waitpid.
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let w = ExitWatch::new(child.id()).unwrap();
        assert_eq!(w.wait().await.as_deref(), Some("exit 3"));
    }
}
