//! One cgroup per slot: the slot's identity for accounting, limits and
//! teardown. ttyd gives every client its own session and process group, so
//! only a cgroup sees the whole tree (ttyd, the tmux server, every shell).
//!
//! cgroup v2 is used where the host has it, the v1 memory/cpu/cpuacct/pids
//! controllers where that is what exists, and plain rlimits (with a /proc
//! scan for the tree) as the last resort. This module reads and writes
//! cgroupfs and signals the members it finds; it never spawns anything.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::process;
use crate::template::Limits;

/// Environment variable every slot process inherits; in rlimit mode it is
/// how the tree is found.
pub const SLOT_ENV: &str = "SLOTGATE_SLOT";
/// Names the supervisor instance (its cgroup root) in the same way.
pub const ROOT_ENV: &str = "SLOTGATE_INSTANCE";
/// Which part of a slot a process belongs to (`door`: ttyd; `session`: the
/// tmux server and everything it runs); the same as the slot's sub-group.
pub const PART_ENV: &str = "SLOTGATE_PART";

/// A slot's two parts, each a sub-group of the slot's group (the slot's
/// limits hold for both together): ttyd can be killed and restarted while
/// the session lives on.
pub const PARTS: [&str; 2] = ["session", "door"];

/// The group key of one part of a slot: `<slot>/<part>`.
pub fn part_key(slot: &str, part: &str) -> String {
    format!("{slot}/{part}")
}

#[derive(Debug, Clone)]
pub enum Mode {
    V2 {
        dir: PathBuf,
    },
    V1 {
        controllers: BTreeMap<&'static str, PathBuf>,
    },
    Rlimit {
        why: String,
    },
}

#[derive(Debug, Clone)]
pub struct Cgroups {
    pub mode: Mode,
    root: String,
}

/// CPU time (nanoseconds, cumulative) and resident memory of a slot tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_ns: u64,
    pub rss_bytes: u64,
    pub processes: u32,
}

const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "freezer"];
const V1_REQUIRED: &[&str] = &["memory", "cpuacct", "pids"];

fn v1_mounts() -> BTreeMap<&'static str, PathBuf> {
    let mut out = BTreeMap::new();
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return out;
    };
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[2] != "cgroup" {
            continue;
        }
        for opt in f[3].split(',') {
            if let Some(c) = V1_CONTROLLERS.iter().find(|c| **c == opt) {
                out.entry(*c).or_insert_with(|| PathBuf::from(f[1]));
            }
        }
    }
    out
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", path.display()),
        )
    })
}

impl Cgroups {
    /// Find what this host offers, and check that it is writable by making
    /// the instance's root group.
    pub fn detect(root: &str, allow: bool) -> Cgroups {
        let mode = if !allow {
            Mode::Rlimit {
                why: "cgroups disabled by supervisor.isolation = \"rlimit\"".into(),
            }
        } else {
            Self::probe(root)
        };
        Cgroups {
            mode,
            root: root.to_string(),
        }
    }

    fn probe(root: &str) -> Mode {
        let unified = Path::new("/sys/fs/cgroup");
        if unified.join("cgroup.controllers").exists() {
            let dir = unified.join(root);
            let ok = fs::create_dir_all(&dir).and_then(|_| {
                let _ = write(
                    &unified.join("cgroup.subtree_control"),
                    "+memory +cpu +pids",
                );
                write(&dir.join("cgroup.subtree_control"), "+memory +cpu +pids")
            });
            return match ok {
                Ok(()) => Mode::V2 { dir },
                Err(e) => Mode::Rlimit {
                    why: format!("cgroup v2 present but not usable: {e}"),
                },
            };
        }
        let controllers = v1_mounts();
        if let Some(missing) = V1_REQUIRED.iter().find(|c| !controllers.contains_key(*c)) {
            return Mode::Rlimit {
                why: format!("no cgroup v2 and no cgroup v1 {missing} controller"),
            };
        }
        for (name, mount) in &controllers {
            if let Err(e) = fs::create_dir_all(mount.join(root)) {
                if V1_REQUIRED.contains(name) {
                    return Mode::Rlimit {
                        why: format!("cgroup v1 {name} controller not writable: {e}"),
                    };
                }
            }
        }
        let controllers = controllers
            .into_iter()
            .filter(|(_, m)| m.join(root).is_dir())
            .collect();
        Mode::V1 { controllers }
    }

    pub fn name(&self) -> &'static str {
        match self.mode {
            Mode::V2 { .. } => "cgroup-v2",
            Mode::V1 { .. } => "cgroup-v1",
            Mode::Rlimit { .. } => "rlimit",
        }
    }

    pub fn instance(&self) -> &str {
        &self.root
    }

    pub fn describe(&self) -> String {
        match &self.mode {
            Mode::V2 { dir } => format!("cgroup v2 at {}", dir.display()),
            Mode::V1 { controllers } => format!(
                "cgroup v1 ({}) under /{}",
                controllers.keys().copied().collect::<Vec<_>>().join(", "),
                self.root
            ),
            Mode::Rlimit { why } => format!("rlimits only ({why})"),
        }
    }

    /// The slot's group directory for each controller (one for v2).
    fn dirs(&self, slot: &str) -> Vec<(&'static str, PathBuf)> {
        match &self.mode {
            Mode::V2 { dir } => vec![("unified", dir.join(slot))],
            Mode::V1 { controllers } => controllers
                .iter()
                .map(|(c, m)| (*c, m.join(&self.root).join(slot)))
                .collect(),
            Mode::Rlimit { .. } => vec![],
        }
    }

    fn dir(&self, slot: &str, controller: &str) -> Option<PathBuf> {
        match &self.mode {
            Mode::V2 { dir } => Some(dir.join(slot)),
            Mode::V1 { controllers } => controllers
                .get(controller)
                .map(|m| m.join(&self.root).join(slot)),
            Mode::Rlimit { .. } => None,
        }
    }

    /// A printable name of the slot's group, stored with the slot.
    pub fn path_of(&self, slot: &str) -> String {
        match &self.mode {
            Mode::Rlimit { .. } => String::new(),
            _ => format!("/{}/{}", self.root, slot),
        }
    }

    /// Make the slot's group(s) and apply the limits. Idempotent.
    pub fn create(&self, slot: &str, limits: &Limits) -> io::Result<()> {
        for (_, d) in self.dirs(slot) {
            fs::create_dir_all(&d)?;
        }
        self.apply(slot, limits)
    }

    /// [`create`](Self::create), plus a sub-group for each of the slot's
    /// [`PARTS`] (no limits of their own: the slot's cover both).
    pub fn create_slot(&self, slot: &str, limits: &Limits) -> io::Result<()> {
        self.create(slot, limits)?;
        for part in PARTS {
            for (_, d) in self.dirs(&part_key(slot, part)) {
                fs::create_dir_all(&d)?;
            }
        }
        Ok(())
    }

    fn apply(&self, slot: &str, limits: &Limits) -> io::Result<()> {
        match &self.mode {
            Mode::V2 { .. } => {
                let d = self.dir(slot, "unified").expect("v2 dir");
                write(
                    &d.join("memory.max"),
                    &limits.memory_bytes.map_or("max".into(), |b| b.to_string()),
                )?;
                if limits.memory_bytes.is_some() {
                    let _ = write(&d.join("memory.swap.max"), "0");
                }
                write(
                    &d.join("pids.max"),
                    &limits.pids.map_or("max".into(), |p| p.to_string()),
                )?;
                let cpu = limits.cpu.map_or("max 100000".into(), |c| {
                    format!("{} 100000", (c * 100_000.0) as u64)
                });
                write(&d.join("cpu.max"), &cpu)?;
            }
            Mode::V1 { .. } => {
                if let Some(d) = self.dir(slot, "memory") {
                    // -1 removes a previous limit.
                    write(
                        &d.join("memory.limit_in_bytes"),
                        &limits.memory_bytes.map_or("-1".into(), |b| b.to_string()),
                    )?;
                }
                if let Some(d) = self.dir(slot, "pids") {
                    write(
                        &d.join("pids.max"),
                        &limits.pids.map_or("max".into(), |p| p.to_string()),
                    )?;
                }
                if let Some(d) = self.dir(slot, "cpu") {
                    write(&d.join("cpu.cfs_period_us"), "100000")?;
                    let quota = limits.cpu.map_or(-1, |c| (c * 100_000.0) as i64);
                    write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            Mode::Rlimit { .. } => {}
        }
        Ok(())
    }

    /// Move `pid` into the slot's group(s). Its future children follow.
    pub fn add(&self, slot: &str, pid: u32) -> io::Result<()> {
        for (_, d) in self.dirs(slot) {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes its pid into to join the
    /// group (one per v1 controller, one for v2, none in rlimit mode).
    pub fn procs_files(&self, slot: &str) -> Vec<PathBuf> {
        self.dirs(slot)
            .into_iter()
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect()
    }

    /// Every process of the tree: the group's own members and its
    /// sub-groups' (a slot's parts).
    pub fn pids(&self, key: &str) -> Vec<u32> {
        match &self.mode {
            Mode::Rlimit { .. } => match key.split_once('/') {
                Some((slot, part)) => process::pids_with_env(&[
                    (SLOT_ENV, slot),
                    (ROOT_ENV, &self.root),
                    (PART_ENV, part),
                ]),
                None => process::pids_with_env(&[(SLOT_ENV, key), (ROOT_ENV, &self.root)]),
            },
            _ => {
                let Some(d) = self.dir(key, "pids").or_else(|| self.dir(key, "memory")) else {
                    return vec![];
                };
                let read = |d: &Path| -> Vec<u32> {
                    fs::read_to_string(d.join("cgroup.procs"))
                        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
                        .unwrap_or_default()
                };
                let mut pids = read(&d);
                if let Ok(rd) = fs::read_dir(&d) {
                    for sub in rd.flatten().filter(|e| e.path().is_dir()) {
                        pids.extend(read(&sub.path()));
                    }
                }
                pids
            }
        }
    }

    pub fn contains(&self, slot: &str, pid: u32) -> bool {
        self.pids(slot).contains(&pid)
    }

    /// Whole-tree usage. In rlimit mode the tree is summed from /proc.
    pub fn usage(&self, slot: &str) -> Usage {
        let read = |p: Option<PathBuf>| {
            p.and_then(|p| fs::read_to_string(p).ok())
                .unwrap_or_default()
        };
        let stat_field = |text: &str, key: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
        };
        match &self.mode {
            Mode::V2 { .. } => {
                let d = self.dir(slot, "unified");
                let cpu = stat_field(&read(d.as_ref().map(|d| d.join("cpu.stat"))), "usage_usec ")
                    .unwrap_or(0);
                let mem = read(d.as_ref().map(|d| d.join("memory.stat")));
                let rss = stat_field(&mem, "anon ").unwrap_or(0)
                    + stat_field(&mem, "shmem ").unwrap_or(0);
                Usage {
                    cpu_ns: cpu * 1000,
                    rss_bytes: rss,
                    processes: self.pids(slot).len() as u32,
                }
            }
            Mode::V1 { .. } => {
                let cpu = read(self.dir(slot, "cpuacct").map(|d| d.join("cpuacct.usage")))
                    .trim()
                    .parse()
                    .unwrap_or(0);
                let mem = read(self.dir(slot, "memory").map(|d| d.join("memory.stat")));
                let rss = stat_field(&mem, "total_rss ").unwrap_or(0)
                    + stat_field(&mem, "total_shmem ").unwrap_or(0);
                Usage {
                    cpu_ns: cpu,
                    rss_bytes: rss,
                    processes: self.pids(slot).len() as u32,
                }
            }
            Mode::Rlimit { .. } => {
                let pids = self.pids(slot);
                let mut u = process::usage_of(&pids);
                u.processes = pids.len() as u32;
                u
            }
        }
    }

    /// Send `signal` to every member of the tree. Returns how many were hit.
    pub fn signal_all(&self, slot: &str, signal: rustix::process::Signal) -> usize {
        let pids = self.pids(slot);
        pids.iter().filter(|p| process::signal(**p, signal)).count()
    }

    /// Remove the slot's group(s) and their sub-groups; they must be empty.
    pub fn remove(&self, slot: &str) {
        for (_, d) in self.dirs(slot) {
            if let Ok(rd) = fs::read_dir(&d) {
                for sub in rd.flatten().filter(|e| e.path().is_dir()) {
                    let _ = fs::remove_dir(sub.path());
                }
            }
            let _ = fs::remove_dir(&d);
        }
    }

    /// Slots that have a group under this instance (for cleanup and
    /// adoption checks).
    pub fn existing(&self) -> Vec<String> {
        let base = match &self.mode {
            Mode::V2 { dir } => dir.clone(),
            Mode::V1 { controllers } => match controllers.get("pids") {
                Some(m) => m.join(&self.root),
                None => return vec![],
            },
            Mode::Rlimit { .. } => return vec![],
        };
        fs::read_dir(base)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Usage {
    /// CPU percent of one core between two samples `wall_ns` apart.
    pub fn cpu_percent_since(&self, earlier: &Usage, wall_ns: u64) -> f64 {
        if wall_ns == 0 || self.cpu_ns < earlier.cpu_ns {
            return 0.0;
        }
        (self.cpu_ns - earlier.cpu_ns) as f64 * 100.0 / wall_ns as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_delta_over_wall() {
        let a = Usage {
            cpu_ns: 1_000_000_000,
            ..Default::default()
        };
        let b = Usage {
            cpu_ns: 1_500_000_000,
            ..Default::default()
        };
        assert!((b.cpu_percent_since(&a, 1_000_000_000) - 50.0).abs() < 1e-9);
        // A counter that went backwards (group re-created) reads as 0, not garbage.
        assert_eq!(a.cpu_percent_since(&b, 1_000_000_000), 0.0);
        assert_eq!(b.cpu_percent_since(&a, 0), 0.0);
    }
}
