//! How the gateway stops and how it reloads without a gap.
//!
//! - `SIGTERM` (stop): the listeners close, idle connections close, open
//!   ones (terminals) get `shutdown_grace`; the process exits as soon as
//!   none is left, or at the end of the grace after telling each open
//!   terminal "going away" (its browser reconnects).
//! - `SIGHUP` (reload): this process starts its *successor*: the same
//!   binary path and arguments, so a binary replaced on disk and the
//!   configuration file as it is now. The successor builds everything
//!   that can fail (configuration, certificates, identity store, new
//!   listen addresses), then takes over the listening sockets through
//!   Pingora's descriptor transfer: the sockets never close, so no
//!   connection is refused. This process then stops accepting and keeps
//!   serving its open connections for `reload_grace`, exiting when the
//!   last one ends. If the successor fails, nothing changed: this process
//!   keeps serving with what it has and says why (log, and the reload
//!   status file `slotgate reload` reads).
//! - `SIGINT`: exit at once.
//!
//! Pingora runs the signal side (its `ShutdownSignalWatch` is ours here)
//! and stops the listeners; the waiting for open connections is this
//! module's, because Pingora's grace is a fixed sleep and ends by dropping
//! every task (a terminal's session would end without its access-log
//! line).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::metrics::Metrics;

/// Set by a gateway for the successor it starts.
const ENV_SUCCESSOR_OF: &str = "SLOTGATE_SUCCESSOR_OF";
/// The listen addresses whose sockets the successor will receive.
const ENV_INHERITED: &str = "SLOTGATE_INHERITED_LISTENERS";
/// Where the successor must take them from.
const ENV_UPGRADE_SOCK: &str = "SLOTGATE_UPGRADE_SOCK";
/// Where a successor that cannot start writes why (the reload status file).
const ENV_REPORT: &str = "SLOTGATE_RELOAD_REPORT";

/// How long a successor may take to build everything and ask for the
/// sockets (it takes ~20 ms here; a slow disk or a loaded host is what the
/// margin is for).
const SUCCESSOR_READY: Duration = Duration::from_secs(60);
/// After the grace, how long the terminals told "going away" have to close
/// before the process exits regardless.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// With no connection open for this long, a stopping gateway exits. A
/// connection still in its TLS handshake is not counted yet; this covers
/// the ones the listener accepted just before it closed.
const IDLE_EXIT: Duration = Duration::from_millis(300);
/// How often a stopping gateway looks at its open connections.
const DRAIN_TICK: Duration = Duration::from_millis(50);

/// The WebSocket close code and reason a terminal gets when the gateway
/// ends it at the end of a grace period: "going away", which ttyd's page
/// answers by reconnecting (to the new gateway, after a reload).
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_GOING_AWAY_REASON: &str = "gateway restarting";

/// The files in the run directory through which a gateway, its successor
/// and `slotgate reload` find each other.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// The serving gateway's process id.
    pub pid: PathBuf,
    /// Where a successor receives the listening sockets; in a directory of
    /// its own (mode 0700) because Pingora makes the socket itself 0666.
    pub upgrade_sock: PathBuf,
    /// Written by a gateway whose reload failed: why.
    pub reload_failed: PathBuf,
}

impl RunFiles {
    pub fn new(run_dir: &Path) -> RunFiles {
        RunFiles {
            pid: run_dir.join("slotgate.pid"),
            upgrade_sock: run_dir.join("slotgate-upgrade").join("upgrade.sock"),
            reload_failed: run_dir.join("slotgate-reload-failed"),
        }
    }

    /// The process id in the pid file, if it names a running process.
    pub fn running_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.pid)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// How long `slotgate reload` waits for the new gateway.
const RELOAD_WAIT: Duration = Duration::from_secs(90);

/// `slotgate reload`: signal the gateway in the pid file and wait until a
/// new one serves (its pid, with the old one's) or the old one reports
/// why it could not.
pub fn request_reload(cfg: &Config) -> anyhow::Result<(u32, u32)> {
    let files = RunFiles::new(&cfg.paths.run_dir);
    let Some(pid) = files.running_pid() else {
        bail!(
            "no running slotgate: {} does not name a running process",
            files.pid.display()
        );
    };
    let asked = std::time::SystemTime::now();
    let target = rustix::process::Pid::from_raw(pid as i32).context("the pid file's process id")?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP)
        .with_context(|| format!("signalling slotgate (pid {pid})"))?;
    let until = Instant::now() + RELOAD_WAIT;
    loop {
        if let Some(new) = files.running_pid().filter(|p| *p != pid) {
            return Ok((pid, new));
        }
        let failed = std::fs::metadata(&files.reload_failed)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= asked);
        if failed {
            let why = std::fs::read_to_string(&files.reload_failed).unwrap_or_default();
            bail!(
                "reload failed: {}; pid {pid} still serves as before",
                why.trim()
            );
        }
        if !alive(pid) {
            bail!("slotgate (pid {pid}) exited during the reload; see its log");
        }
        if Instant::now() > until {
            bail!("no new gateway within {RELOAD_WAIT:?}; see slotgate's log");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A gateway started by another one's reload: what it inherits.
#[derive(Debug)]
pub struct Successor {
    /// The process handing over.
    pub of: u32,
    /// Addresses it listens on; their sockets arrive by transfer, so they
    /// are not free to bind here.
    pub inherited: HashSet<String>,
}

impl Successor {
    /// `Some` when this process was started by a reload. Fails when the
    /// new configuration moved the run directory: the old gateway offers
    /// its sockets at the old one's path.
    pub fn from_env(files: &RunFiles) -> anyhow::Result<Option<Successor>> {
        let Some(of) = std::env::var_os(ENV_SUCCESSOR_OF) else {
            return Ok(None);
        };
        let of = of
            .to_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{ENV_SUCCESSOR_OF} is not a process id"))?;
        let offered = std::env::var_os(ENV_UPGRADE_SOCK).map(PathBuf::from);
        if offered.as_deref() != Some(files.upgrade_sock.as_path()) {
            bail!(
                "the new configuration moves the run directory (the running gateway hands over at {}, this one would take over at {}): a reload cannot move it; restart slotgate instead",
                offered.unwrap_or_default().display(),
                files.upgrade_sock.display()
            );
        }
        let inherited = std::env::var(ENV_INHERITED)
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(String::from)
            .collect();
        Ok(Some(Successor { of, inherited }))
    }
}

/// Why the gateway is stopping, and until when it waits for open
/// connections.
#[derive(Debug, Clone, Copy)]
struct Drain {
    reload: bool,
    deadline: Instant,
}

/// The gateway's stop and reload state, shared by the signal watch, the
/// drain monitor and the WebSocket relays.
pub struct Lifecycle {
    exe: PathBuf,
    args: Vec<OsString>,
    listen: Vec<String>,
    files: RunFiles,
    shutdown_grace: Duration,
    reload_grace: Duration,
    metrics: Arc<Metrics>,
    log: AccessLog,
    drain: Mutex<Option<Drain>>,
    terminals: OpenTerminals,
}

impl Lifecycle {
    pub fn new(
        cfg: &Config,
        metrics: Arc<Metrics>,
        log: AccessLog,
    ) -> anyhow::Result<Arc<Lifecycle>> {
        let exe = match std::env::args_os().next().and_then(|a0| {
            program_path(
                Path::new(&a0),
                &std::env::current_dir().ok()?,
                std::env::var_os("PATH").as_deref(),
            )
        }) {
            Some(p) => p,
            None => std::env::current_exe().context("finding slotgate's own binary")?,
        };
        let listen = cfg
            .listen
            .iter()
            .chain(&cfg.redirect_listen)
            .map(ToString::to_string)
            .collect();
        Ok(Arc::new(Lifecycle {
            exe,
            args: std::env::args_os().skip(1).collect(),
            listen,
            files: RunFiles::new(&cfg.paths.run_dir),
            shutdown_grace: cfg.shutdown_grace,
            reload_grace: cfg.reload_grace,
            metrics,
            log,
            drain: Mutex::new(None),
            terminals: OpenTerminals::default(),
        }))
    }

    /// The open terminal sessions, which a grace's end closes.
    pub fn terminals(&self) -> &OpenTerminals {
        &self.terminals
    }

    /// Pingora's grace sleep after the listeners close: only a backstop,
    /// the drain monitor exits first.
    pub fn pingora_grace(&self) -> u64 {
        self.shutdown_grace.max(self.reload_grace).as_secs() + 2 * CLOSE_LINGER.as_secs()
    }

    /// Say this process serves: the pid file, and systemd's notify socket
    /// (`Type=notify`: ready, and after a reload the main process moved
    /// here).
    pub fn serving(&self) {
        if let Some(dir) = self.files.pid.parent().filter(|d| !d.exists()) {
            let _ = slotapi::files::private_dir(dir);
        }
        if let Err(e) = slotapi::files::write_atomic(
            &self.files.pid,
            format!("{}\n", std::process::id()).as_bytes(),
        ) {
            tracing::warn!(path = %self.files.pid.display(), error = %e, "cannot write the pid file");
        }
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::MainPid(std::process::id()),
            sd_notify::NotifyState::Ready,
        ]);
    }

    /// The signal watch Pingora's main loop waits on.
    pub fn signals(self: &Arc<Self>) -> Box<dyn ShutdownSignalWatch> {
        Box::new(Signals(Arc::clone(self)))
    }

    /// Watch Pingora's phases on a thread of its own: say when the gateway
    /// serves, and once it stops, wait for its open connections.
    pub fn start_monitor(
        self: &Arc<Self>,
        phases: broadcast::Receiver<ExecutionPhase>,
    ) -> anyhow::Result<()> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("slotgate-lifecycle".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the lifecycle monitor");
                        return;
                    }
                };
                rt.block_on(me.monitor(phases));
            })
            .context("starting the lifecycle monitor")?;
        Ok(())
    }

    async fn monitor(self: Arc<Self>, mut phases: broadcast::Receiver<ExecutionPhase>) {
        loop {
            match phases.recv().await {
                Ok(ExecutionPhase::Running) => self.serving(),
                Ok(ExecutionPhase::ShutdownStarted) => break,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        // SIGINT: Pingora drops everything at once, and `run` ends the
        // process.
        let Some(drain) = *self.drain.lock().unwrap_or_else(|p| p.into_inner()) else {
            return;
        };
        self.wait_for_connections(drain).await;
        self.exit();
    }

    /// The listeners are closed: wait until no connection is open, the
    /// grace has ended (then tell each terminal "going away"), or a signal
    /// says not to wait.
    async fn wait_for_connections(&self, drain: Drain) {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        let mut deadline = drain.deadline;
        let mut closed_at: Option<Instant> = None;
        let mut idle_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(DRAIN_TICK);
        let open = self.metrics.connections_open.load(Relaxed);
        tracing::info!(
            open,
            grace = ?deadline.saturating_duration_since(Instant::now()),
            "{}: waiting for open connections",
            if drain.reload { "handed over to the new gateway" } else { "stopped accepting" }
        );
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = term.recv() => {
                    tracing::info!("SIGTERM: closing the open connections now");
                    deadline = Instant::now();
                }
                _ = int.recv() => return,
                _ = hup.recv() => tracing::info!("SIGHUP ignored: this gateway is already stopping"),
            }
            let now = Instant::now();
            if self.metrics.connections_open.load(Relaxed) == 0 {
                if now.duration_since(*idle_since.get_or_insert(now)) >= IDLE_EXIT {
                    return;
                }
            } else {
                idle_since = None;
            }
            match closed_at {
                None if now >= deadline => {
                    let n = self.terminals.close_all();
                    tracing::info!(
                        terminals = n,
                        "grace over: closing the open terminals (their pages reconnect)"
                    );
                    closed_at = Some(now);
                }
                Some(t) if now.duration_since(t) >= CLOSE_LINGER => return,
                _ => {}
            }
        }
    }

    /// The end: every access-log line written, the pid file removed if it
    /// is still this process's, exit.
    pub fn exit(&self) -> ! {
        if !self.log.flush(Duration::from_secs(2)) {
            tracing::warn!("the access log did not finish writing before exit");
        }
        if self.files.running_pid() == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.files.pid);
        }
        tracing::info!("slotgate exits");
        std::process::exit(0)
    }

    fn begin_drain(&self, reload: bool) {
        let grace = if reload {
            self.reload_grace
        } else {
            self.shutdown_grace
        };
        *self.drain.lock().unwrap_or_else(|p| p.into_inner()) = Some(Drain {
            reload,
            deadline: Instant::now() + grace,
        });
    }

    /// Start the successor and wait until it has built everything and asks
    /// for the sockets (its transfer socket appears). Its own log says
    /// what went wrong if it exits instead.
    async fn start_successor(&self) -> anyhow::Result<u32> {
        let _ = std::fs::remove_file(&self.files.reload_failed);
        let dir = self.files.upgrade_sock.parent().unwrap_or(Path::new("/"));
        slotapi::files::private_dir(dir)
            .with_context(|| format!("creating {} (mode 0700)", dir.display()))?;
        let _ = std::fs::remove_file(&self.files.upgrade_sock);
        let child = std::process::Command::new(&self.exe)
            .args(&self.args)
            .env(ENV_SUCCESSOR_OF, std::process::id().to_string())
            .env(ENV_INHERITED, self.listen.join(" "))
            .env(ENV_UPGRADE_SOCK, &self.files.upgrade_sock)
            .env(ENV_REPORT, &self.files.reload_failed)
            .stdin(std::process::Stdio::null())
            // Its own process group: a terminal's Ctrl-C for the old
            // gateway is not for the new one.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        let pid = child.id();
        tracing::info!(pid, exe = %self.exe.display(), "reload: started the new gateway");
        // Stopped on every way out but success (an error, the timeout, or
        // this future dropped because the gateway is told to stop).
        let mut starting = Starting(Some(child));
        let started = Instant::now();
        loop {
            if self.files.upgrade_sock.exists() {
                starting.0 = None;
                return Ok(pid);
            }
            if let Some(status) = starting.0.as_mut().and_then(|c| c.try_wait().transpose()) {
                bail!("the new gateway (pid {pid}) exited with {} before taking over; its log says why", status?);
            }
            if started.elapsed() > SUCCESSOR_READY {
                bail!("the new gateway (pid {pid}) was not ready within {SUCCESSOR_READY:?}; stopped it");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn reload_failed(&self, e: &anyhow::Error) {
        tracing::error!(error = %format!("{e:#}"), "reload failed; still serving as before");
        // A successor that failed has written its own reason, which says
        // more than its exit status.
        if !self.files.reload_failed.exists() {
            write_reason(&self.files.reload_failed, e);
        }
    }
}

/// In a successor that cannot start: tell the gateway that started it
/// (and `slotgate reload`) why.
pub fn report_failed_start(e: &anyhow::Error) {
    if let Some(path) = std::env::var_os(ENV_REPORT) {
        write_reason(Path::new(&path), e);
    }
}

/// Why a reload failed, for `slotgate reload` to print.
fn write_reason(path: &Path, e: &anyhow::Error) {
    let _ = slotapi::files::write_atomic(path, format!("{e:#}\n").as_bytes());
}

/// The program a command line's `arg0` ran, as the shell found it: with a
/// `/`, relative to the start directory; without, the first executable
/// of that name on `PATH`. A symlink stays a symlink, so a deployment that
/// switches one to a new release is followed by the next reload (the
/// resolved `/proc/self/exe` would start the old release again).
fn program_path(arg0: &Path, cwd: &Path, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if arg0.as_os_str().as_bytes().contains(&b'/') {
        return Some(cwd.join(arg0));
    }
    std::env::split_paths(path?)
        .map(|dir| cwd.join(dir).join(arg0))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A successor not yet ready: killed (and reaped) when dropped.
struct Starting(Option<std::process::Child>);

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Signals(Arc<Lifecycle>);

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let lc = &self.0;
        let (mut term, mut int, mut hup) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => (t, i, h),
            _ => {
                tracing::error!("cannot watch signals; stopping");
                return ShutdownSignal::FastShutdown;
            }
        };
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!(grace = ?lc.shutdown_grace, "SIGTERM: stopping");
                    lc.begin_drain(false);
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: exiting now");
                    return ShutdownSignal::FastShutdown;
                }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    // A stop signal meanwhile wins: the new gateway, not
                    // ready yet, is stopped with the attempt.
                    let outcome = tokio::select! {
                        r = lc.start_successor() => Ok(r),
                        _ = term.recv() => Err(false),
                        _ = int.recv() => Err(true),
                    };
                    match outcome {
                        Ok(Ok(pid)) => {
                            tracing::info!(pid, grace = ?lc.reload_grace, "reload: handing the listening sockets to the new gateway");
                            lc.begin_drain(true);
                            return ShutdownSignal::GracefulUpgrade;
                        }
                        Ok(Err(e)) => lc.reload_failed(&e),
                        Err(now) => {
                            tracing::info!("stop signal during the reload: the new gateway was stopped");
                            if now {
                                return ShutdownSignal::FastShutdown;
                            }
                            lc.begin_drain(false);
                            return ShutdownSignal::GracefulTerminate;
                        }
                    }
                }
            }
        }
    }
}

/// The open terminal sessions, each by a duplicate of its slot socket:
/// shutting that down ends the relay the way the slot hanging up would,
/// through its normal end (close frame, access-log line, activity report).
#[derive(Default)]
pub struct OpenTerminals {
    next: AtomicU64,
    open: Mutex<HashMap<u64, OwnedFd>>,
    going_away: AtomicBool,
}

/// A terminal's place in [`OpenTerminals`], given up on drop.
pub struct Registered<'a> {
    all: &'a OpenTerminals,
    id: u64,
}

impl OpenTerminals {
    /// Register a session by its slot socket. `None` if the descriptor
    /// cannot be duplicated (out of descriptors): the session then ends
    /// with the process.
    pub fn add(&self, slot: &impl AsFd) -> Option<Registered<'_>> {
        let fd = slot.as_fd().try_clone_to_owned().ok()?;
        let id = self.next.fetch_add(1, Relaxed);
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, fd);
        Some(Registered { all: self, id })
    }

    /// Whether the gateway is ending the sessions (a session whose slot
    /// side closes now tells its browser "going away").
    pub fn going_away(&self) -> bool {
        self.going_away.load(Acquire)
    }

    /// End every open session; returns how many.
    pub fn close_all(&self) -> usize {
        self.going_away.store(true, Release);
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for fd in open.values() {
            let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
        }
        open.len()
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.all
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn closing_all_ends_each_registered_session_and_dropping_unregisters() {
        let terminals = OpenTerminals::default();
        let (gateway_end, mut slot_end) = UnixStream::pair().unwrap();
        let (other, _other_peer) = UnixStream::pair().unwrap();
        let kept = terminals.add(&gateway_end).unwrap();
        let gone = terminals.add(&other).unwrap();
        drop(gone);
        assert!(!terminals.going_away());
        assert_eq!(terminals.close_all(), 1);
        assert!(terminals.going_away());
        // The slot's side sees the gateway's side end.
        let mut buf = [0u8; 8];
        assert_eq!(slot_end.read(&mut buf).unwrap(), 0);
        drop(kept);
        assert_eq!(terminals.close_all(), 0);
    }

    #[test]
    fn the_program_is_found_as_the_shell_found_it_symlinks_kept() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("sg-prog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("release-2")).unwrap();
        std::fs::create_dir_all(base.join("bin")).unwrap();
        let real = base.join("release-2/slotgate");
        std::fs::write(&real, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&real, base.join("bin/slotgate")).unwrap();
        std::fs::write(base.join("release-2/notexec"), b"").unwrap();

        let cwd = Path::new("/srv");
        assert_eq!(
            program_path(Path::new("/usr/local/bin/slotgate"), cwd, None),
            Some(PathBuf::from("/usr/local/bin/slotgate"))
        );
        assert_eq!(
            program_path(Path::new("target/release/slotgate"), cwd, None),
            Some(PathBuf::from("/srv/target/release/slotgate"))
        );
        let path = std::env::join_paths([
            base.join("nothing"),
            base.join("bin"),
            base.join("release-2"),
        ])
        .unwrap();
        assert_eq!(
            program_path(Path::new("slotgate"), cwd, Some(&path)),
            Some(base.join("bin/slotgate")),
            "the symlink on PATH, not its target"
        );
        assert_eq!(program_path(Path::new("notexec"), cwd, Some(&path)), None);
        assert_eq!(program_path(Path::new("slotgate"), cwd, None), None);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_successor_must_take_over_at_the_path_the_old_gateway_offers() {
        // Environment variables are process-wide; this test is the only
        // one in the crate that sets them.
        let files = RunFiles::new(Path::new("/run/sg-a"));
        std::env::set_var(ENV_SUCCESSOR_OF, "4242");
        std::env::set_var(ENV_UPGRADE_SOCK, "/run/sg-b/slotgate-upgrade/upgrade.sock");
        std::env::set_var(ENV_INHERITED, "127.0.0.1:7681 127.0.0.1:8080");
        let moved = Successor::from_env(&files).unwrap_err().to_string();
        assert!(moved.contains("moves the run directory"), "{moved}");
        std::env::set_var(ENV_UPGRADE_SOCK, &files.upgrade_sock);
        let s = Successor::from_env(&files).unwrap().unwrap();
        assert_eq!(s.of, 4242);
        assert!(s.inherited.contains("127.0.0.1:8080") && s.inherited.len() == 2);
        for k in [ENV_SUCCESSOR_OF, ENV_UPGRADE_SOCK, ENV_INHERITED] {
            std::env::remove_var(k);
        }
        assert!(Successor::from_env(&files).unwrap().is_none());
    }
}
