//! The supervisor: the only module that spawns and signals processes.
//!
//! Each slot is one actor task that owns the slot's door (its ttyd process)
//! and walks the lifecycle: spawn ttyd in the slot's cgroup, wait for the
//! socket to answer, keep probing, restart the door with backoff when it
//! dies or stops answering, tear the whole tree down on stop. The tmux
//! server lives in the same cgroup but is never killed by a door restart,
//! which is why a crashed ttyd loses no terminal.
//!
//! ttyd and tmux run in their own process group and outlive the daemon. On
//! start the daemon re-adopts every slot whose recorded (pid, start time,
//! boot id) still names a live ttyd in the slot's cgroup whose socket
//! answers, and watches it again through a pidfd.
//!
//! Generic services ("apps") are the other flavour, in `apps`: same
//! cgroup-per-instance accounting, pidfd watch and re-adoption, with PM2's
//! restart rules instead of the slot lifecycle.

mod apps;

pub use apps::{APP_ENV, MEMORY_CHECK_INTERVAL};

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustix::process::Signal;
use slotapi::{Activity, ActivityKind, CreateSlot, Event, SlotId, SlotInfo, SlotStatus, UserName};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};

use crate::cgroup::{self, Cgroups, Usage};
use crate::clock::now_ms;
use crate::config::{Config, IsolationPref};
use crate::enter::Enter;
use crate::launch::{self, Context};
use crate::lifecycle::{AfterFailure, Policy};
use crate::logs;
use crate::process::{self, ExitWatch};
use crate::sandbox;
use crate::store::{SlotRecord, Store, StoreError};
use crate::tenant::{self, Tenant, Tenants};

/// How long `ensure` waits when the caller does not say.
pub const DEFAULT_ENSURE_WAIT: Duration = Duration::from_secs(10);
const PROBE_PATH_SUFFIX: &str = "/token";
/// The value the daemon's own probe sends in ttyd's auth header.
const PROBE_IDENTITY: &str = "slotctl-probe";

#[derive(Debug, thiserror::Error)]
pub enum SupError {
    #[error("no slot named {0}")]
    NotFound(SlotId),
    #[error("no app with pm_id {0}")]
    NotFoundApp(u32),
    #[error("slot {0} already exists")]
    Exists(SlotId),
    #[error("no template named {name:?}; templates: {known}")]
    UnknownTemplate { name: String, known: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("slot {slot} failed to start: {reason}")]
    StartFailed { slot: SlotId, reason: String },
    #[error("slot {slot} did not come online within {after:?} (status {status})")]
    Timeout {
        slot: SlotId,
        after: Duration,
        status: SlotStatus,
    },
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for SupError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(id) => SupError::Exists(id),
            other => SupError::Internal(other.to_string()),
        }
    }
}

enum Cmd {
    Start(oneshot::Sender<()>),
    Stop {
        reason: Option<String>,
        reply: Option<oneshot::Sender<()>>,
    },
    Restart(oneshot::Sender<()>),
    Delete {
        keep_sandbox: bool,
        reply: oneshot::Sender<Result<(), SupError>>,
    },
}

struct SlotState {
    rec: SlotRecord,
    /// When the current door started (for uptime).
    started: Option<std::time::Instant>,
    usage: Usage,
    cpu_percent: f64,
    last_sample: Option<(std::time::Instant, Usage)>,
    clients: BTreeSet<String>,
    last_activity: Instant,
    /// The uid the slot runs as, once known (first start or adoption).
    uid: Option<u32>,
}

struct Slot {
    id: SlotId,
    state: Mutex<SlotState>,
    tx: mpsc::UnboundedSender<Cmd>,
    status: watch::Sender<SlotStatus>,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Supervisor {
    cfg: Arc<Config>,
    store: Arc<Store>,
    cgroups: Cgroups,
    tenants: Tenants,
    ttyd: PathBuf,
    pasta: PathBuf,
    /// tmux and bubblewrap, found on PATH when configured by name (a
    /// sandbox needs the absolute path to show them).
    tmux: PathBuf,
    bwrap: PathBuf,
    /// The config file, absolute (sandboxes hide it).
    config_file: PathBuf,
    /// This program, run as `slotctl __enter` in front of every sandbox.
    enter: PathBuf,
    boot_id: String,
    host_path: String,
    lang: String,
    slots: RwLock<BTreeMap<SlotId, Arc<Slot>>>,
    events: broadcast::Sender<Event>,
    started: std::time::Instant,
    apps: apps::AppTable,
    /// PATH, HOME and LANG of the daemon, given to apps that do not set them.
    app_host_env: BTreeMap<String, String>,
    /// Notified by `POST /v1/shutdown` (`slotctl pm2 kill`).
    pub shutdown: tokio::sync::Notify,
}

/// How an actor begins.
enum Initial {
    Idle,
    StartNow,
    Adopt {
        pid: u32,
    },
    /// Running in the layout of an older slotctl (ttyd and tmux outside
    /// the sandbox, as the daemon's user): ended and started again, once.
    Legacy,
}

/// A running ttyd.
struct Door {
    pid: u32,
    watch: ExitWatch,
    healthy: bool,
    probe_failures: u32,
    deadline: Instant,
    online_since: Option<Instant>,
}

impl Supervisor {
    /// Open the store, find the isolation mode, re-adopt or restart every
    /// slot that should run, and start the background samplers.
    pub async fn launch(cfg: Arc<Config>) -> anyhow::Result<Arc<Supervisor>> {
        use anyhow::Context as _;
        let store = Arc::new(Store::open(&cfg.paths.data_dir.join("state.db"))?);
        let tenants = Tenants::new(
            cfg.supervisor.users,
            cfg.supervisor.gateway_group.as_deref(),
            store.clone(),
        )
        .map_err(anyhow::Error::msg)?;
        info!(users = %tenants.describe(), "slot identities");
        let cgroups = Cgroups::detect(
            &cfg.supervisor.cgroup_root,
            cfg.supervisor.isolation == IsolationPref::Auto,
        );
        info!(isolation = %cgroups.describe(), "resource control");
        let ttyd = cfg.ttyd_binary().context(
            "no ttyd found: set [ttyd] binary in the config, put ttyd on PATH, or run scripts/install-ttyd.sh",
        )?;
        let (events, _) = broadcast::channel(1024);
        let sup = Arc::new(Supervisor {
            store,
            cgroups,
            tenants,
            ttyd,
            pasta: crate::config::find_on_path("pasta").unwrap_or_else(|| "pasta".into()),
            tmux: absolute(&cfg.ttyd.tmux),
            bwrap: absolute(&cfg.ttyd.bwrap),
            config_file: std::path::absolute(&cfg.file).unwrap_or_else(|_| cfg.file.clone()),
            enter: std::env::current_exe().context("finding slotctl's own path")?,
            boot_id: process::boot_id(),
            host_path: std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            lang: std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
            slots: RwLock::new(BTreeMap::new()),
            events,
            started: std::time::Instant::now(),
            apps: apps::AppTable::default(),
            app_host_env: ["PATH", "HOME", "LANG"]
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
                .collect(),
            shutdown: tokio::sync::Notify::new(),
            cfg,
        });
        for rec in sup.store.all()? {
            let initial = sup.initial_for(&rec);
            sup.spawn_actor(rec, initial);
        }
        tokio::spawn(sampler(Arc::downgrade(&sup)));
        sup.launch_apps()?;
        Ok(sup)
    }

    /// Decide how a stored slot comes back after a daemon (re)start.
    fn initial_for(&self, rec: &SlotRecord) -> Initial {
        if !rec.enabled || rec.status == SlotStatus::Errored {
            return Initial::Idle;
        }
        let legacy_socket = self.cfg.paths.slots_dir().join(format!("{}.sock", rec.id));
        if legacy_socket.exists() {
            return Initial::Legacy;
        }
        if let (Some(pid), Some(start), Some(boot)) =
            (rec.pid, rec.start_ticks, rec.boot_id.as_deref())
        {
            let in_group = matches!(self.cgroups.mode, crate::cgroup::Mode::Rlimit { .. })
                || self.cgroups.contains(rec.id.as_str(), pid);
            if boot == self.boot_id && process::same_process(pid, start) && in_group {
                return Initial::Adopt { pid };
            }
            info!(slot = %rec.id, pid, "recorded ttyd is gone; starting a new one");
        }
        Initial::StartNow
    }

    fn spawn_actor(self: &Arc<Self>, rec: SlotRecord, initial: Initial) -> Arc<Slot> {
        let (tx, rx) = mpsc::unbounded_channel();
        let status = match initial {
            Initial::Idle => {
                if rec.status == SlotStatus::Errored {
                    SlotStatus::Errored
                } else {
                    SlotStatus::Stopped
                }
            }
            _ => SlotStatus::Starting,
        };
        let (status_tx, _) = watch::channel(status);
        let started = adopted_start(rec.started_at_ms, matches!(initial, Initial::Adopt { .. }));
        let mut rec = rec;
        rec.status = status;
        let slot = Arc::new(Slot {
            id: rec.id.clone(),
            state: Mutex::new(SlotState {
                rec,
                started,
                usage: Usage::default(),
                cpu_percent: 0.0,
                last_sample: None,
                clients: BTreeSet::new(),
                last_activity: Instant::now(),
                uid: None,
            }),
            tx,
            status: status_tx,
        });
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot.id.clone(), slot.clone());
        let actor = Actor {
            sup: self.clone(),
            slot: slot.clone(),
            policy: Policy::new(
                self.cfg.supervisor.backoff_initial,
                self.cfg.supervisor.backoff_max,
                self.cfg.supervisor.max_failures,
                self.cfg.supervisor.failure_window,
            ),
        };
        tokio::spawn(actor.run(rx, initial));
        slot
    }

    fn slot(&self, id: &SlotId) -> Result<Arc<Slot>, SupError> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| SupError::NotFound(id.clone()))
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn isolation(&self) -> &str {
        self.cgroups.name()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn info(&self, slot: &Slot) -> SlotInfo {
        let st = slot.lock();
        let running = st.rec.pid.is_some();
        SlotInfo {
            id: st.rec.id.clone(),
            template: st.rec.template.clone(),
            owner: st.rec.owner.clone(),
            status: st.rec.status,
            enabled: st.rec.enabled,
            pid: st.rec.pid,
            restarts: st.rec.restarts,
            uptime_ms: if running {
                st.started.map_or(0, |s| s.elapsed().as_millis() as u64)
            } else {
                0
            },
            cpu_percent: if running {
                (st.cpu_percent * 10.0).round() / 10.0
            } else {
                0.0
            },
            memory_bytes: if running { st.usage.rss_bytes } else { 0 },
            processes: if running { st.usage.processes } else { 0 },
            socket: self.cfg.paths.slot_socket(&st.rec.id).display().to_string(),
            clients: st.clients.len() as u32,
            reason: st.rec.reason.clone(),
            last_exit: st.rec.last_exit.clone(),
            created_at_ms: st.rec.created_at_ms,
            isolation: self.cgroups.name().to_string(),
            record_input: self
                .cfg
                .templates
                .get(&st.rec.template)
                .is_some_and(|t| t.record_input),
            uid: st.uid,
        }
    }

    pub fn list(&self) -> Vec<SlotInfo> {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        slots.iter().map(|s| self.info(s)).collect()
    }

    pub fn get(&self, id: &SlotId) -> Result<SlotInfo, SupError> {
        let slot = self.slot(id)?;
        Ok(self.info(&slot))
    }

    pub fn log_path(&self, id: &SlotId) -> Result<PathBuf, SupError> {
        self.slot(id)?;
        Ok(logs::log_path(&self.cfg.paths.data_dir, id.as_str()))
    }

    pub async fn create(self: &Arc<Self>, req: CreateSlot) -> Result<SlotInfo, SupError> {
        if !self.cfg.templates.contains_key(&req.template) {
            return Err(SupError::UnknownTemplate {
                name: req.template,
                known: self
                    .cfg
                    .templates
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if self.slots.read().unwrap_or_else(|e| e.into_inner()).len() as u32
            >= self.cfg.supervisor.max_slots
        {
            return Err(SupError::Conflict(format!(
                "the supervisor already has its maximum of {} slots (supervisor.max_slots)",
                self.cfg.supervisor.max_slots
            )));
        }
        let owner = match req.owner {
            Some(o) => o,
            None => {
                UserName::new(req.id.as_str()).map_err(|e| SupError::BadRequest(e.to_string()))?
            }
        };
        let rec = SlotRecord {
            id: req.id.clone(),
            template: req.template,
            owner,
            enabled: req.start,
            created_at_ms: now_ms(),
            restarts: 0,
            status: SlotStatus::Stopped,
            pid: None,
            start_ticks: None,
            boot_id: None,
            cgroup: self.cgroups.path_of(req.id.as_str()),
            started_at_ms: None,
            last_exit: None,
            reason: None,
        };
        // A quick check for the common case; the store's primary key is the
        // real guard: of two racing creates, one insert fails with Exists.
        {
            let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
            if slots.contains_key(&rec.id) {
                return Err(SupError::Exists(rec.id));
            }
        }
        self.store.insert(&rec)?;
        info!(slot = %rec.id, template = %rec.template, owner = %rec.owner, "slot created");
        let initial = if req.start {
            Initial::StartNow
        } else {
            Initial::Idle
        };
        let slot = self.spawn_actor(rec, initial);
        Ok(self.info(&slot))
    }

    pub async fn start(&self, id: &SlotId) -> Result<SlotInfo, SupError> {
        let slot = self.slot(id)?;
        let (tx, rx) = oneshot::channel();
        let _ = slot.tx.send(Cmd::Start(tx));
        let _ = rx.await;
        Ok(self.info(&slot))
    }

    pub async fn stop(&self, id: &SlotId, reason: Option<String>) -> Result<SlotInfo, SupError> {
        let slot = self.slot(id)?;
        let (tx, rx) = oneshot::channel();
        let _ = slot.tx.send(Cmd::Stop {
            reason,
            reply: Some(tx),
        });
        let _ = rx.await;
        Ok(self.info(&slot))
    }

    pub async fn restart(&self, id: &SlotId) -> Result<SlotInfo, SupError> {
        let slot = self.slot(id)?;
        let (tx, rx) = oneshot::channel();
        let _ = slot.tx.send(Cmd::Restart(tx));
        let _ = rx.await;
        Ok(self.info(&slot))
    }

    pub async fn delete(&self, id: &SlotId, keep_sandbox: bool) -> Result<SlotInfo, SupError> {
        let slot = self.slot(id)?;
        let info = self.info(&slot);
        if !keep_sandbox {
            let owner = info.owner.clone();
            let others: Vec<String> = self
                .list()
                .into_iter()
                .filter(|s| s.owner == owner && s.id != *id)
                .map(|s| s.id.to_string())
                .collect();
            if !others.is_empty() {
                return Err(SupError::Conflict(format!(
                    "the sandbox of {owner} is also used by slot(s) {}; delete those first or keep the sandbox",
                    others.join(", ")
                )));
            }
        }
        let (tx, rx) = oneshot::channel();
        let _ = slot.tx.send(Cmd::Delete {
            keep_sandbox,
            reply: tx,
        });
        rx.await
            .map_err(|_| SupError::Internal("slot actor went away".into()))??;
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let mut info = info;
        info.status = SlotStatus::Stopped;
        info.pid = None;
        Ok(info)
    }

    /// Start the slot if needed and wait until it is online.
    pub async fn ensure(&self, id: &SlotId, wait: Duration) -> Result<SlotInfo, SupError> {
        let slot = self.slot(id)?;
        let mut rx = slot.status.subscribe();
        if *rx.borrow_and_update() == SlotStatus::Online {
            return Ok(self.info(&slot));
        }
        let (tx, started) = oneshot::channel();
        let _ = slot.tx.send(Cmd::Start(tx));
        let _ = started.await;
        let deadline = Instant::now() + wait;
        loop {
            let status = *rx.borrow_and_update();
            match status {
                SlotStatus::Online => return Ok(self.info(&slot)),
                SlotStatus::Errored | SlotStatus::Stopped | SlotStatus::Stopping => {
                    let reason = slot
                        .lock()
                        .rec
                        .reason
                        .clone()
                        .unwrap_or_else(|| status.to_string());
                    return Err(SupError::StartFailed {
                        slot: id.clone(),
                        reason,
                    });
                }
                _ => {}
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    return Err(SupError::NotFound(id.clone()));
                },
                _ = sleep_until(deadline) => {
                    return Err(SupError::Timeout { slot: id.clone(), after: wait, status });
                }
            }
        }
    }

    pub fn activity(&self, id: &SlotId, a: Activity) -> Result<(), SupError> {
        let slot = self.slot(id)?;
        let mut st = slot.lock();
        st.last_activity = Instant::now();
        match a.kind {
            ActivityKind::Connect => {
                st.clients.insert(a.session);
            }
            ActivityKind::Disconnect => {
                st.clients.remove(&a.session);
            }
            ActivityKind::Active => {}
        }
        Ok(())
    }

    fn emit(&self, slot: &Slot) {
        let (event, rec) = {
            let st = slot.lock();
            (
                Event {
                    ts_ms: now_ms(),
                    slot: st.rec.id.clone(),
                    status: st.rec.status,
                    pid: st.rec.pid,
                    reason: st.rec.reason.clone(),
                },
                st.rec.clone(),
            )
        };
        if let Err(e) = self.store.save(&rec) {
            warn!(slot = %rec.id, error = %e, "could not persist slot state");
        }
        slot.status.send_replace(rec.status);
        let _ = self.events.send(event);
    }

    fn launch_context(&self) -> Context<'_> {
        Context {
            paths: &self.cfg.paths,
            config_file: &self.config_file,
            pasta: &self.pasta,
            ttyd: &self.ttyd,
            tmux: &self.tmux,
            bwrap: &self.bwrap,
            ping_interval: self.cfg.ttyd.ping_interval,
            instance: self.cgroups.instance(),
            host_path: self.host_path.clone(),
            lang: self.lang.clone(),
        }
    }
}

struct Actor {
    sup: Arc<Supervisor>,
    slot: Arc<Slot>,
    policy: Policy,
}

enum Phase {
    Idle,
    Running(Door),
    Backoff(Instant),
}

impl Actor {
    fn id(&self) -> &SlotId {
        &self.slot.id
    }

    fn log(&self) -> PathBuf {
        logs::log_path(&self.sup.cfg.paths.data_dir, self.id().as_str())
    }

    fn set(&self, status: SlotStatus, f: impl FnOnce(&mut SlotRecord)) {
        {
            let mut st = self.slot.lock();
            let from = st.rec.status;
            if from != status && !crate::lifecycle::allowed(from, status) {
                warn!(slot = %self.id(), %from, to = %status, "unexpected lifecycle change");
            }
            st.rec.status = status;
            f(&mut st.rec);
        }
        info!(slot = %self.id(), %status, "status");
        self.sup.emit(&self.slot);
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>, initial: Initial) {
        let mut phase = match initial {
            Initial::Idle => {
                self.reap_leftovers().await;
                Phase::Idle
            }
            Initial::StartNow => self.spawn_door().await,
            Initial::Adopt { pid } => self.adopt(pid).await,
            Initial::Legacy => {
                let paths = &self.sup.cfg.paths;
                kill_tree(
                    &self.sup.cgroups,
                    self.id().as_str(),
                    self.sup.cfg.supervisor.kill_timeout,
                )
                .await;
                for old in [format!("{}.sock", self.id()), format!("{}.tmux", self.id())] {
                    let _ = std::fs::remove_file(paths.slots_dir().join(old));
                }
                let note = "restarted once: slots now run as their owner's own uid, inside the sandbox (tmux included)";
                logs::note(&self.log(), note);
                info!(slot = %self.id(), "{note}");
                self.spawn_door().await
            }
        };
        loop {
            phase = match phase {
                Phase::Idle => match rx.recv().await {
                    None => return,
                    Some(cmd) => match self.command(cmd, None).await {
                        Some(p) => p,
                        None => return,
                    },
                },
                Phase::Backoff(until) => tokio::select! {
                    _ = sleep_until(until) => self.restart_now().await,
                    cmd = rx.recv() => match cmd {
                        None => return,
                        // Asked for while backing off (the gateway's lazy
                        // start, `slotctl start`, the `ensure` after a
                        // create): the next attempt happens now, but the
                        // failures so far still count, so a crash loop ends
                        // in `errored` however often someone asks for it.
                        Some(Cmd::Start(reply)) => {
                            let _ = reply.send(());
                            self.restart_now().await
                        }
                        Some(cmd) => match self.command(cmd, None).await {
                            Some(p) => p,
                            None => return,
                        },
                    },
                },
                Phase::Running(door) => {
                    let period = if door.healthy {
                        self.sup.cfg.supervisor.health_interval
                    } else {
                        Duration::from_millis(5)
                    };
                    tokio::select! {
                        exit = door.watch.wait() => {
                            let how = exit.unwrap_or_else(|| "exited".into());
                            logs::note(&self.log(), &format!("ttyd pid {} ended ({how})", door.pid));
                            self.slot.lock().rec.last_exit = Some(how.clone());
                            self.failure(format!("ttyd ended ({how})")).await
                        }
                        _ = sleep(period) => self.tick(door).await,
                        cmd = rx.recv() => match cmd {
                            None => return,
                            Some(cmd) => match self.command(cmd, Some(door)).await {
                                Some(p) => p,
                                None => return,
                            },
                        },
                    }
                }
            };
        }
    }

    /// Handle a command; `None` means the slot was deleted.
    async fn command(&mut self, cmd: Cmd, door: Option<Door>) -> Option<Phase> {
        match cmd {
            Cmd::Start(reply) => {
                let phase = match door {
                    Some(d) => Phase::Running(d),
                    None => {
                        self.policy.reset();
                        self.slot.lock().rec.enabled = true;
                        self.spawn_door().await
                    }
                };
                let _ = reply.send(());
                Some(phase)
            }
            Cmd::Stop { reason, reply } => {
                self.slot.lock().rec.enabled = false;
                self.teardown(door, reason).await;
                if let Some(r) = reply {
                    let _ = r.send(());
                }
                Some(Phase::Idle)
            }
            Cmd::Restart(reply) => {
                self.teardown(door, Some("restart".into())).await;
                self.policy.reset();
                {
                    let mut st = self.slot.lock();
                    st.rec.enabled = true;
                    st.rec.restarts += 1;
                }
                let phase = self.spawn_door().await;
                let _ = reply.send(());
                Some(phase)
            }
            Cmd::Delete {
                keep_sandbox,
                reply,
            } => {
                self.slot.lock().rec.enabled = false;
                self.teardown(door, Some("deleted".into())).await;
                let result = self.purge(keep_sandbox);
                let failed = result.is_err();
                let _ = reply.send(result);
                if failed {
                    Some(Phase::Idle)
                } else {
                    None
                }
            }
        }
    }

    fn purge(&self, keep_sandbox: bool) -> Result<(), SupError> {
        let id = self.id().as_str();
        self.sup.cgroups.remove(id);
        self.sup.store.delete(self.id())?;
        let log = self.log();
        let _ = std::fs::remove_file(&log);
        for n in 1..=self.sup.cfg.supervisor.log_keep {
            let _ = std::fs::remove_file(format!("{}.{n}", log.display()));
        }
        if !keep_sandbox {
            let owner = self.slot.lock().rec.owner.to_string();
            sandbox::remove(&self.sup.cfg.paths.data_dir, &owner)
                .map_err(|e| SupError::Internal(format!("removing the sandbox of {owner}: {e}")))?;
        }
        info!(slot = %id, keep_sandbox, "slot deleted");
        Ok(())
    }

    /// Spawn ttyd for the slot. Failure to spawn is a failure like any
    /// other: it goes through backoff and, if it persists, `errored`.
    /// The next attempt after a failure (counted in `restarts`).
    async fn restart_now(&mut self) -> Phase {
        self.slot.lock().rec.restarts += 1;
        self.spawn_door().await
    }

    async fn spawn_door(&mut self) -> Phase {
        match self.try_spawn().await {
            Ok(door) => Phase::Running(door),
            Err(reason) => {
                logs::note(&self.log(), &format!("could not start: {reason}"));
                self.after_failure(reason)
            }
        }
    }

    async fn try_spawn(&mut self) -> Result<Door, String> {
        let sup = &self.sup;
        let (template_name, owner) = {
            let st = self.slot.lock();
            (st.rec.template.clone(), st.rec.owner.to_string())
        };
        let template = sup
            .cfg
            .templates
            .get(&template_name)
            .ok_or_else(|| format!("template {template_name:?} no longer exists"))?;
        let key = tenant::sandbox_key(self.id(), &owner).to_string();
        let who = sup.tenants.resolve(&key)?;
        self.slot.lock().uid = Some(who.uid);
        let ctx = sup.launch_context();
        let mut plan = launch::plan(&ctx, template, self.id(), &owner, who);
        crate::claude::keys::inject(&sup.cfg.paths.data_dir, &owner, &mut plan.session_env);
        plan.session_env.extend(launch::owner_env(
            &owner,
            owner_account(&sup.cfg.paths.data_dir, &owner).as_ref(),
        ));
        let vars = launch::vars(&sup.cfg.paths, self.id(), &owner);
        let reowned = sandbox::prepare(template, &vars, &key, who)
            .map_err(|e| format!("preparing sandbox: {e}"))?;
        if reowned > 0 {
            let note = format!(
                "gave {reowned} entries of the sandbox {} to uid {}",
                vars.sandbox.display(),
                who.uid
            );
            logs::note(&self.log(), &note);
            info!(slot = %self.id(), "{note}");
        }
        sandbox::prepare_slot_dir(&sup.cfg.paths, self.id(), who, sup.tenants.gateway_gid())
            .map_err(|e| format!("preparing the slot directory: {e}"))?;
        sandbox::identity_files(&sup.cfg.paths, &key, who, &vars.home())
            .map_err(|e| format!("writing the slot's passwd and group: {e}"))?;
        sup.cgroups
            .create_slot(self.id().as_str(), &template.limits)
            .map_err(|e| format!("creating cgroup: {e}"))?;
        if !session_alive(&plan.tmux_socket) {
            let session = cgroup::part_key(self.id().as_str(), "session");
            kill_all(&sup.cgroups, &session, Duration::from_millis(500)).await;
            let _ = std::fs::remove_file(&plan.tmux_socket);
            let pid = self.spawn_part(
                "session",
                &plan.session,
                &plan.session_env,
                &plan.cwd,
                who,
                template,
            )?;
            logs::note(
                &self.log(),
                &format!("started the session (tmux) pid {pid} as uid {}", who.uid),
            );
            // Reap it whenever it ends (it is our child until we restart).
            let watch =
                ExitWatch::new(pid).map_err(|e| format!("watching the session pid {pid}: {e}"))?;
            tokio::spawn(async move { watch.wait().await });
            let deadline = Instant::now() + sup.cfg.supervisor.start_timeout;
            while !session_alive(&plan.tmux_socket) {
                if Instant::now() >= deadline || process::is_dead(pid) {
                    process::signal(pid, Signal::KILL);
                    return Err(format!(
                        "the session (tmux) did not open {} within {:?}",
                        plan.tmux_socket.display(),
                        sup.cfg.supervisor.start_timeout
                    ));
                }
                sleep(Duration::from_millis(2)).await;
            }
        }
        // A socket file left by a ttyd that died would make bind() fail.
        let _ = std::fs::remove_file(&plan.socket);
        let pid = self.spawn_part(
            "door",
            &plan.door,
            &plan.door_env,
            Path::new("/"),
            who,
            template,
        )?;
        let watch = ExitWatch::new(pid).map_err(|e| format!("watching ttyd pid {pid}: {e}"))?;
        let start_ticks = process::start_time(pid);
        logs::note(
            &self.log(),
            &format!("started ttyd pid {pid} as uid {}", who.uid),
        );
        {
            let mut st = self.slot.lock();
            st.started = Some(std::time::Instant::now());
            st.last_activity = Instant::now();
            st.last_sample = None;
        }
        let boot = sup.boot_id.clone();
        self.set(SlotStatus::Starting, |r| {
            r.pid = Some(pid);
            r.start_ticks = start_ticks;
            r.boot_id = Some(boot);
            r.started_at_ms = Some(now_ms());
            r.reason = None;
        });
        Ok(Door {
            pid,
            watch,
            healthy: false,
            probe_failures: 0,
            deadline: Instant::now() + sup.cfg.supervisor.start_timeout,
            online_since: None,
        })
    }

    /// Spawn one part of the slot through `slotctl __enter`, which joins
    /// the part's cgroup before anything forks and becomes the slot's user.
    fn spawn_part(
        &self,
        part: &str,
        argv: &[String],
        env: &BTreeMap<String, String>,
        cwd: &Path,
        who: Tenant,
        template: &crate::template::Template,
    ) -> Result<u32, String> {
        let sup = &self.sup;
        let rlimit = matches!(sup.cgroups.mode, crate::cgroup::Mode::Rlimit { .. });
        let enter = Enter {
            cgroups: sup
                .cgroups
                .procs_files(&cgroup::part_key(self.id().as_str(), part))
                .into_iter()
                .map(Into::into)
                .collect(),
            uid: sup.tenants.drops_to(who).then_some(who.uid),
            gid: sup.tenants.drops_to(who).then_some(who.gid),
            rlimit_as: template.limits.memory_bytes.filter(|_| rlimit),
            // bubblewrap sets it for what it runs (and pasta in front of it
            // must not have it: bubblewrap could not map its user inside).
            no_new_privs: !template.bwrap,
            program: argv.iter().map(Into::into).collect(),
        };
        let log = logs::open_append(&self.log()).map_err(|e| format!("opening log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("opening log: {e}"))?;
        let cwd = if cwd.is_dir() { cwd } else { Path::new("/") };
        let child = Command::new(&sup.enter)
            .args(enter.args())
            .env_clear()
            .envs(env)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Own process group: signals aimed at the daemon's group (a
            // terminal's ^C, a service manager) do not reach the slot.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawning the {part} ({}): {e}", argv[0]))?;
        // The Child handle is dropped without waiting: the pidfd watch (or
        // the cgroup) tracks it, and after a daemon restart it is no longer
        // our child.
        let pid = child.id();
        drop(child);
        Ok(pid)
    }

    async fn adopt(&mut self, pid: u32) -> Phase {
        let watch = match ExitWatch::new(pid) {
            Ok(w) => w,
            Err(_) => return self.spawn_door().await,
        };
        logs::note(
            &self.log(),
            &format!("re-adopted ttyd pid {pid} after a daemon restart"),
        );
        info!(slot = %self.id(), pid, "re-adopting ttyd");
        let owner = self.slot.lock().rec.owner.to_string();
        let uid = self
            .sup
            .tenants
            .resolve(tenant::sandbox_key(self.id(), &owner))
            .ok()
            .map(|t| t.uid);
        self.slot.lock().uid = uid;
        let door = Door {
            pid,
            watch,
            healthy: false,
            probe_failures: 0,
            deadline: Instant::now() + self.sup.cfg.supervisor.start_timeout,
            online_since: None,
        };
        // Emits `starting`; the first good probe makes it `online`.
        self.set(SlotStatus::Starting, |_| {});
        Phase::Running(door)
    }

    async fn probe(&self) -> Result<(), String> {
        let socket = self.sup.cfg.paths.slot_socket(self.id());
        let path = format!("/slot/{}{PROBE_PATH_SUFFIX}", self.id());
        match slotapi::get_unix(
            &socket,
            &path,
            &[(slotapi::TTYD_AUTH_HEADER, PROBE_IDENTITY)],
            self.sup.cfg.supervisor.health_timeout,
        )
        .await
        {
            Ok((200, _)) => Ok(()),
            Ok((status, _)) => Err(format!("GET {path} answered {status}")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn tick(&mut self, mut door: Door) -> Phase {
        let result = self.probe().await;
        let now = Instant::now();
        match result {
            // ttyd answers but the session is gone (`tmux kill-server` from
            // inside, its sandbox killed): every connection would close at
            // once. Restart the slot, which starts a new session first.
            Ok(()) if !session_alive(&launch::tmux_socket(&self.sup.cfg.paths, self.id())) => {
                let reason = "the session (tmux server) ended".to_string();
                logs::note(&self.log(), &reason);
                self.kill_door(door).await;
                self.failure(reason).await
            }
            Ok(()) => {
                door.probe_failures = 0;
                if !door.healthy {
                    door.healthy = true;
                    door.online_since = Some(now);
                    self.set(SlotStatus::Online, |r| r.reason = None);
                } else if door.online_since.is_some_and(|t| {
                    now.duration_since(t) >= self.sup.cfg.supervisor.health_interval * 2
                }) {
                    self.policy.on_stable();
                }
                if let Some(reason) = self.idle_reason() {
                    logs::note(&self.log(), &format!("stopping: {reason}"));
                    self.slot.lock().rec.enabled = false;
                    self.teardown(Some(door), Some(reason)).await;
                    return Phase::Idle;
                }
                Phase::Running(door)
            }
            Err(e) if !door.healthy => {
                if now >= door.deadline {
                    let reason = format!(
                        "ttyd did not answer within {:?} ({e})",
                        self.sup.cfg.supervisor.start_timeout
                    );
                    self.kill_door(door).await;
                    self.failure(reason).await
                } else {
                    Phase::Running(door)
                }
            }
            Err(e) => {
                door.probe_failures += 1;
                warn!(slot = %self.id(), failures = door.probe_failures, error = %e, "health probe failed");
                if door.probe_failures >= self.sup.cfg.supervisor.health_failures {
                    let reason = format!("health probe failed {} times: {e}", door.probe_failures);
                    logs::note(&self.log(), &reason);
                    self.kill_door(door).await;
                    self.failure(reason).await
                } else {
                    Phase::Running(door)
                }
            }
        }
    }

    fn idle_reason(&self) -> Option<String> {
        let st = self.slot.lock();
        let template_idle = self
            .sup
            .cfg
            .templates
            .get(&st.rec.template)
            .and_then(|t| t.idle_timeout);
        let idle = template_idle.unwrap_or(self.sup.cfg.supervisor.idle_timeout)?;
        if st.clients.is_empty() && st.last_activity.elapsed() >= idle {
            Some(format!("idle for {}", humantime::format_duration(idle)))
        } else {
            None
        }
    }

    /// The door died or failed: back off and retry, or give up.
    async fn failure(&mut self, reason: String) -> Phase {
        warn!(slot = %self.id(), %reason, "slot failure");
        self.slot.lock().started = None;
        self.after_failure(reason)
    }

    fn after_failure(&mut self, reason: String) -> Phase {
        let _ = std::fs::remove_file(self.sup.cfg.paths.slot_socket(self.id()));
        match self.policy.on_failure(std::time::Instant::now()) {
            AfterFailure::Retry(delay) => {
                self.set(SlotStatus::Backoff, |r| {
                    r.pid = None;
                    r.reason = Some(reason);
                });
                Phase::Backoff(Instant::now() + delay)
            }
            AfterFailure::GiveUp => {
                let s = &self.sup.cfg.supervisor;
                let reason = format!(
                    "gave up after {} failures within {}: {reason}",
                    s.max_failures,
                    humantime::format_duration(s.failure_window)
                );
                logs::note(&self.log(), &reason);
                // Nothing serves the tree any more; free it.
                let id = self.id().as_str().to_string();
                let cg = self.sup.cgroups.clone();
                let timeout = s.kill_timeout;
                tokio::spawn(async move { kill_tree(&cg, &id, timeout).await });
                self.set(SlotStatus::Errored, |r| {
                    r.pid = None;
                    r.reason = Some(reason);
                });
                Phase::Idle
            }
        }
    }

    /// Kill only the door, ttyd's sandbox (the tmux session survives), and
    /// wait for it.
    async fn kill_door(&self, door: Door) {
        process::signal(door.pid, Signal::KILL);
        let key = cgroup::part_key(self.id().as_str(), "door");
        self.sup.cgroups.signal_all(&key, Signal::KILL);
        let _ = tokio::time::timeout(Duration::from_secs(2), door.watch.wait()).await;
    }

    /// Stop the whole tree: SIGTERM, then SIGKILL after `kill_timeout`.
    async fn teardown(&mut self, door: Option<Door>, reason: Option<String>) {
        let was_running = door.is_some() || !self.sup.cgroups.pids(self.id().as_str()).is_empty();
        if was_running {
            self.set(SlotStatus::Stopping, |_| {});
        }
        if let Some(d) = &door {
            process::signal(d.pid, Signal::TERM);
        }
        kill_tree(
            &self.sup.cgroups,
            self.id().as_str(),
            self.sup.cfg.supervisor.kill_timeout,
        )
        .await;
        if let Some(d) = door {
            if tokio::time::timeout(Duration::from_millis(500), d.watch.wait())
                .await
                .is_err()
            {
                process::signal(d.pid, Signal::KILL);
                let _ = tokio::time::timeout(Duration::from_secs(1), d.watch.wait()).await;
            }
        }
        let _ = std::fs::remove_file(self.sup.cfg.paths.slot_socket(self.id()));
        let _ = std::fs::remove_file(launch::tmux_socket(&self.sup.cfg.paths, self.id()));
        let _ = std::fs::remove_dir_all(self.sup.cfg.paths.slot_dir(self.id()));
        if was_running {
            logs::note(
                &self.log(),
                &format!("stopped ({})", reason.as_deref().unwrap_or("requested")),
            );
        }
        self.policy.reset();
        {
            let mut st = self.slot.lock();
            st.started = None;
            st.clients.clear();
        }
        self.set(SlotStatus::Stopped, |r| {
            r.pid = None;
            r.start_ticks = None;
            r.reason = reason;
        });
    }

    /// A stopped slot must not have processes; remove any a crash left.
    async fn reap_leftovers(&self) {
        let id = self.id().as_str();
        if !self.sup.cgroups.pids(id).is_empty() {
            warn!(slot = %id, "stopped slot still had processes; ending them");
            kill_tree(&self.sup.cgroups, id, self.sup.cfg.supervisor.kill_timeout).await;
        }
    }
}

/// For a re-adopted process, when it started (from the stored wall-clock
/// time) as a monotonic instant, so uptime survives a daemon restart.
pub(super) fn adopted_start(
    started_at_ms: Option<u64>,
    adopted: bool,
) -> Option<std::time::Instant> {
    started_at_ms.filter(|_| adopted).map(|ms| {
        let age = Duration::from_millis(now_ms().saturating_sub(ms));
        std::time::Instant::now()
            .checked_sub(age)
            .unwrap_or_else(std::time::Instant::now)
    })
}

/// SIGTERM every member, wait (polling the group) up to `timeout`, then
/// SIGKILL whatever is left until the group is empty (bounded).
async fn kill_tree(cgroups: &Cgroups, slot: &str, timeout: Duration) {
    if cgroups.signal_all(slot, Signal::TERM) == 0 {
        return;
    }
    // SIGHUP too: shells ignore SIGTERM but not a hang-up.
    cgroups.signal_all(slot, Signal::HUP);
    kill_all(cgroups, slot, timeout).await;
}

/// Wait up to `grace` for the group to empty by itself, then SIGKILL every
/// member until it is empty (bounded). Shared by slots and apps.
pub(super) async fn kill_all(cgroups: &Cgroups, key: &str, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if cgroups.pids(key).is_empty() {
            return;
        }
        sleep(Duration::from_millis(10)).await;
    }
    let hard = Instant::now() + Duration::from_secs(3);
    while Instant::now() < hard {
        if cgroups.signal_all(key, Signal::KILL) == 0 {
            return;
        }
        sleep(Duration::from_millis(5)).await;
    }
    warn!(unit = key, "processes survived SIGKILL for 3 s");
}

/// Samples whole-tree usage of running slots and rotates their logs.
async fn sampler(sup: std::sync::Weak<Supervisor>) {
    let mut rotate_every = 0u32;
    loop {
        let interval = match sup.upgrade() {
            Some(s) => s.cfg.supervisor.sample_interval,
            None => return,
        };
        sleep(interval).await;
        let Some(sup) = sup.upgrade() else { return };
        let slots: Vec<Arc<Slot>> = sup
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let cg = sup.cgroups.clone();
        let ids: Vec<(Arc<Slot>, bool)> = slots
            .into_iter()
            .map(|s| {
                let running = s.lock().rec.pid.is_some();
                (s, running)
            })
            .collect();
        let samples = tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .map(|(s, running)| {
                    let u = if running {
                        Some(cg.usage(s.id.as_str()))
                    } else {
                        None
                    };
                    (s, u)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let now = std::time::Instant::now();
        for (slot, usage) in samples {
            let Some(u) = usage else { continue };
            let mut st = slot.lock();
            if let Some((t, prev)) = st.last_sample {
                st.cpu_percent =
                    u.cpu_percent_since(&prev, now.duration_since(t).as_nanos() as u64);
            }
            st.usage = u;
            st.last_sample = Some((now, u));
        }
        rotate_every += 1;
        if rotate_every.is_multiple_of(5) {
            let dir = logs::log_dir(&sup.cfg.paths.data_dir);
            let (max, keep) = (
                sup.cfg.supervisor.log_max_bytes,
                sup.cfg.supervisor.log_keep,
            );
            let _ = tokio::task::spawn_blocking(move || {
                if let Ok(rd) = std::fs::read_dir(dir) {
                    for e in rd.flatten() {
                        let p = e.path();
                        if p.extension().is_some_and(|x| x == "log") {
                            let _ = logs::rotate_if_needed(&p, max, keep);
                        }
                    }
                }
            })
            .await;
        }
    }
}

/// The owner's account in `identity.db`, if the gateway keeps one there
/// (no database, no account, or an unreadable one: `None`, and the slot gets
/// only `SLOTGATE_USER`). Read-only: a slot start never writes the gateway's
/// database.
/// `p` itself when it has a directory part, else where PATH has it.
fn absolute(p: &Path) -> PathBuf {
    if p.components().count() > 1 {
        return p.to_path_buf();
    }
    crate::config::find_on_path(&p.display().to_string()).unwrap_or_else(|| p.to_path_buf())
}

/// Whether the tmux server of a slot answers on its socket.
fn session_alive(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

fn owner_account(data_dir: &std::path::Path, owner: &str) -> Option<identity::store::User> {
    let path = data_dir.join("identity.db");
    let read = identity::store::Store::open_existing_read_only(&path)
        .and_then(|s| s.map(|s| s.user(owner)).transpose());
    match read {
        Ok(u) => u.flatten(),
        Err(e) => {
            warn!(owner, error = %e, "cannot read the owner's account for the slot environment");
            None
        }
    }
}
