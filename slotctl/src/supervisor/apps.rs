//! The app flavour of the supervisor: generic services from `[[apps]]` and
//! from `slotctl pm2 start`, one actor per instance (one `pm_id`).
//!
//! An actor spawns its instance in the instance's own cgroup
//! (`<root>/app.<name>.<i>`), watches the main process through a pidfd, and
//! applies PM2's restart rules: `autorestart`, `stop_exit_codes`,
//! `min_uptime`/`max_restarts` (→ `errored`), `restart_delay` and the
//! ×1.5 exponential backoff capped at 15 s. On top of PM2 it restarts on a
//! failing health probe, checks `max_memory_restart` against the whole
//! tree's memory every 500 ms, fires `cron_restart` from croner and restarts
//! on watched file changes (notify, debounced by `watch_delay`).
//!
//! Stop is PM2's ladder made whole-tree: `stop_signal` to the main process,
//! then after `kill_timeout` SIGKILL to every process of the cgroup.
//! Instances outlive the daemon: log lines go straight to O_APPEND files, or
//! through a `slotctl __log-writer` process in the instance's cgroup, never
//! through the daemon; on start the daemon re-adopts every instance whose
//! recorded (pid, start time, boot id) is still alive in its cgroup.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pm2_compat::AppSpec;
use rustix::process::Signal;
use slotapi::{AppInfo, AppName, AppSource, AppStatus, DumpResult, StartApps};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};

use super::{kill_all, SupError, Supervisor};
use crate::app::{self, App, LogPaths, ProbeKind};
use crate::cgroup::{Usage, ROOT_ENV, SLOT_ENV};
use crate::clock::now_ms;
use crate::logs;
use crate::process::{self, ExitWatch};
use crate::store::AppRecord;
use crate::template::Limits;

/// How often the memory of apps with `max_memory_restart` is checked.
pub const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// PM2's cap on the exponential backoff.
const BACKOFF_CAP_MS: u64 = 15_000;
/// A run this long resets the exponential backoff (PM2's
/// EXP_BACKOFF_RESET_TIMER).
const BACKOFF_RESET: Duration = Duration::from_secs(30);
/// `sh -c` script: join the cgroups named by the first `$1` arguments,
/// then exec the rest. Exit 127 (and a message) when joining fails.
const CGROUP_SHIM: &str = r#"n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || { echo "slotctl: cannot join cgroup $1" >&2; exit 127; }; shift; n=$((n-1)); done; exec "$@""#;

/// Environment marker naming the app instance (besides the cgroup).
pub const APP_ENV: &str = "SLOTGATE_APP";

/// What an app's actor is asked to do. Kept to two words: every unit's
/// channel allocates room for 32 of these up front, so at a thousand units
/// each word is 256 KiB of the daemon's memory.
pub(super) enum AppCmd {
    Start(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
    /// Manual (`pm2 restart`), cron, watch or memory restart.
    Restart(Box<Restart>),
    Reset(oneshot::Sender<()>),
    Delete(oneshot::Sender<()>),
}

pub(super) struct Restart {
    reason: String,
    manual: bool,
    reply: Option<oneshot::Sender<()>>,
}

impl AppCmd {
    fn restart(reason: String, manual: bool, reply: Option<oneshot::Sender<()>>) -> AppCmd {
        AppCmd::Restart(Box::new(Restart {
            reason,
            manual,
            reply,
        }))
    }
}

pub(super) struct UnitState {
    rec: AppRecord,
    app: Arc<App>,
    started: Option<std::time::Instant>,
    usage: Usage,
    cpu_percent: f64,
    last_sample: Option<(std::time::Instant, Usage)>,
    healthy: Option<bool>,
}

pub(super) struct Unit {
    pm_id: u32,
    key: String,
    state: Mutex<UnitState>,
    tx: mpsc::UnboundedSender<AppCmd>,
    status: watch::Sender<AppStatus>,
}

impl Unit {
    fn lock(&self) -> std::sync::MutexGuard<'_, UnitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The app instances, by pm_id.
#[derive(Default)]
pub(super) struct AppTable {
    units: std::sync::RwLock<BTreeMap<u32, Arc<Unit>>>,
    /// Serialises registration (pm_id allocation, name checks).
    register: tokio::sync::Mutex<()>,
}

enum Initial {
    Idle,
    StartNow,
    Adopt { pid: u32 },
}

struct Proc {
    pid: u32,
    watch: ExitWatch,
    ready: bool,
    ready_deadline: Instant,
    next_probe: Instant,
    probe_failures: u32,
}

enum Phase {
    Idle,
    Running(Proc),
    Backoff(Instant),
}

impl Supervisor {
    fn units(&self) -> Vec<Arc<Unit>> {
        self.apps
            .units
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn unit(&self, pm_id: u32) -> Result<Arc<Unit>, SupError> {
        self.apps
            .units
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pm_id)
            .cloned()
            .ok_or(SupError::NotFoundApp(pm_id))
    }

    /// Bring the stored app instances in line with the config file and the
    /// runtime apps, re-adopting what still runs.
    pub(super) fn launch_apps(self: &Arc<Self>) -> anyhow::Result<()> {
        let rows = self.store.all_apps()?;
        let config: BTreeMap<&str, &App> =
            self.cfg.apps.iter().map(|a| (a.name.as_str(), a)).collect();
        let mut keep: Vec<(AppRecord, Arc<App>)> = Vec::new();
        for row in rows {
            let wanted: Option<Arc<App>> = match row.source {
                AppSource::Config => config
                    .get(row.name.as_str())
                    .filter(|a| row.instance < a.spec.instances)
                    .map(|a| Arc::new((*a).clone())),
                AppSource::Runtime if config.contains_key(row.name.as_str()) => {
                    warn!(app = %row.name, "runtime app shadowed by an [[apps]] table of the same name; dropping it");
                    None
                }
                AppSource::Runtime => match serde_json::from_str::<AppSpec>(&row.spec)
                    .map_err(|e| e.to_string())
                    .and_then(|s| App::validate(s).map_err(|e| format!("{}: {}", e.key, e.reason)))
                {
                    Ok(a) => Some(Arc::new(a)),
                    Err(e) => {
                        warn!(app = %row.name, error = %e, "stored app no longer valid; dropping it");
                        None
                    }
                },
            };
            match wanted {
                Some(app) => keep.push((row, app)),
                None => {
                    let key = app::unit_key(&row.name, row.instance);
                    let cg = self.cgroups.clone();
                    info!(app = %row.name, pm_id = row.pm_id, "app instance removed from the config; stopping it");
                    tokio::spawn(async move {
                        kill_all(&cg, &key, Duration::from_secs(3)).await;
                        cg.remove(&key);
                    });
                    self.store.delete_app(row.pm_id)?;
                }
            }
        }
        // New config apps (or new instances) get fresh pm_ids.
        for a in &self.cfg.apps {
            for i in 0..a.spec.instances {
                if keep
                    .iter()
                    .any(|(r, _)| r.name == a.name && r.instance == i)
                {
                    continue;
                }
                let rec = self.new_record(a, i, AppSource::Config)?;
                keep.push((rec, Arc::new(a.clone())));
            }
        }
        keep.sort_by_key(|(r, _)| r.pm_id);
        for (mut rec, app) in keep {
            if rec.source == AppSource::Config {
                rec.spec = serde_json::to_string(&app.spec).unwrap_or_default();
            }
            let initial = self.app_initial(&rec);
            self.spawn_unit(rec, app, initial);
        }
        tokio::spawn(app_sampler(Arc::downgrade(self)));
        Ok(())
    }

    fn new_record(
        &self,
        app: &App,
        instance: u32,
        source: AppSource,
    ) -> Result<AppRecord, SupError> {
        let pm_id = self.store.next_pm_id()?;
        let rec = AppRecord {
            pm_id,
            name: app.name.clone(),
            instance,
            source,
            spec: serde_json::to_string(&app.spec).unwrap_or_default(),
            enabled: app.spec.autostart,
            created_at_ms: now_ms(),
            restarts: 0,
            unstable: 0,
            status: AppStatus::Stopped,
            pid: None,
            start_ticks: None,
            boot_id: None,
            started_at_ms: None,
            last_exit: None,
            exit_code: None,
            reason: None,
        };
        self.store.save_app(&rec)?;
        Ok(rec)
    }

    fn app_initial(&self, rec: &AppRecord) -> Initial {
        if let (Some(pid), Some(start), Some(boot)) =
            (rec.pid, rec.start_ticks, rec.boot_id.as_deref())
        {
            let key = app::unit_key(&rec.name, rec.instance);
            let in_group = matches!(self.cgroups.mode, crate::cgroup::Mode::Rlimit { .. })
                || self.cgroups.contains(&key, pid);
            if boot == self.boot_id && process::same_process(pid, start) && in_group {
                return Initial::Adopt { pid };
            }
        }
        if rec.enabled
            && matches!(
                rec.status,
                AppStatus::Online
                    | AppStatus::Launching
                    | AppStatus::WaitingRestart
                    | AppStatus::Stopped
            )
            && !(rec.status == AppStatus::Stopped && rec.started_at_ms.is_some())
        {
            Initial::StartNow
        } else {
            Initial::Idle
        }
    }

    fn spawn_unit(self: &Arc<Self>, rec: AppRecord, app: Arc<App>, initial: Initial) -> Arc<Unit> {
        let (tx, rx) = mpsc::unbounded_channel();
        let status = match initial {
            Initial::Idle if rec.status == AppStatus::Errored => AppStatus::Errored,
            Initial::Idle => AppStatus::Stopped,
            _ => AppStatus::Launching,
        };
        let started =
            super::adopted_start(rec.started_at_ms, matches!(initial, Initial::Adopt { .. }));
        let mut rec = rec;
        rec.status = status;
        let (status_tx, _) = watch::channel(status);
        let unit = Arc::new(Unit {
            pm_id: rec.pm_id,
            key: app::unit_key(&rec.name, rec.instance),
            state: Mutex::new(UnitState {
                rec,
                app,
                started,
                usage: Usage::default(),
                cpu_percent: 0.0,
                last_sample: None,
                healthy: None,
            }),
            tx,
            status: status_tx,
        });
        self.apps
            .units
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(unit.pm_id, unit.clone());
        let actor = AppActor {
            sup: self.clone(),
            unit: unit.clone(),
            backoff_ms: None,
            watch_rx: None,
            _watcher: None,
        };
        tokio::spawn(actor.run(rx, initial));
        unit
    }

    fn app_info(&self, unit: &Unit) -> AppInfo {
        let st = unit.lock();
        let app = &st.app;
        let data = &self.cfg.paths.data_dir;
        let running = st.rec.pid.is_some();
        let logs = app.log_paths(data, unit.pm_id);
        let (program, args) = app.argv(data);
        let show = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        AppInfo {
            pm_id: unit.pm_id,
            name: st.rec.name.clone(),
            namespace: app.spec.namespace.clone(),
            instance: st.rec.instance,
            instances: app.spec.instances,
            status: st.rec.status,
            enabled: st.rec.enabled,
            source: st.rec.source,
            pid: st.rec.pid,
            restarts: st.rec.restarts,
            unstable_restarts: st.rec.unstable,
            uptime_ms: if running {
                st.started.map_or(0, |s| s.elapsed().as_millis() as u64)
            } else {
                0
            },
            started_at_ms: st.rec.started_at_ms,
            created_at_ms: st.rec.created_at_ms,
            cpu_percent: if running {
                (st.cpu_percent * 10.0).round() / 10.0
            } else {
                0.0
            },
            memory_bytes: if running { st.usage.rss_bytes } else { 0 },
            processes: if running { st.usage.processes } else { 0 },
            command: program,
            args,
            exec_path: app.exec_path(data).display().to_string(),
            interpreter: app.spec.interpreter.clone(),
            cwd: app.cwd(data).display().to_string(),
            out_log: show(&logs.out),
            err_log: show(&logs.err),
            combined_log: show(&logs.combined),
            pid_file: app.pid_path(data, unit.pm_id).display().to_string(),
            autorestart: app.spec.autorestart,
            watch: !app.spec.watch.is_empty(),
            cron_restart: app.spec.cron_restart.clone(),
            max_memory_bytes: app.spec.max_memory_bytes,
            kill_timeout_ms: app.spec.kill_timeout_ms,
            instance_var: app.spec.instance_var.clone(),
            env_keys: app.spec.env.keys().cloned().collect(),
            reason: st.rec.reason.clone(),
            last_exit: st.rec.last_exit.clone(),
            exit_code: st.rec.exit_code,
            health: if app.probe.is_some() {
                Some(st.healthy.unwrap_or(false))
            } else {
                None
            },
            isolation: self.cgroups.name().to_string(),
        }
    }

    pub fn list_apps(&self) -> Vec<AppInfo> {
        self.units().iter().map(|u| self.app_info(u)).collect()
    }

    pub fn get_app(&self, pm_id: u32) -> Result<AppInfo, SupError> {
        let u = self.unit(pm_id)?;
        Ok(self.app_info(&u))
    }

    /// The app's full definition (for `describe`, `save`).
    pub fn app_spec(&self, pm_id: u32) -> Result<AppSpec, SupError> {
        Ok(self.unit(pm_id)?.lock().app.spec.clone())
    }

    /// Register runtime apps (and start those with `autostart`). An app
    /// whose name is taken by a runtime app is started (or replaced with
    /// `replace`); a name taken by an `[[apps]]` table is a conflict.
    pub async fn start_apps(self: &Arc<Self>, req: StartApps) -> Result<Vec<AppInfo>, SupError> {
        let mut apps = Vec::new();
        for (i, v) in req.apps.into_iter().enumerate() {
            let spec: AppSpec = serde_json::from_value(v)
                .map_err(|e| SupError::BadRequest(format!("apps[{i}]: {e}")))?;
            let mut app = App::validate(spec)
                .map_err(|e| SupError::BadRequest(format!("apps[{i}].{}: {}", e.key, e.reason)))?;
            if app.spec.cwd.as_ref().is_some_and(|c| c.is_relative()) {
                return Err(SupError::BadRequest(format!(
                    "apps[{i}].cwd must be absolute"
                )));
            }
            if app.spec.cwd.is_none() {
                app.spec.cwd = Some(self.cfg.paths.data_dir.clone());
            }
            apps.push(app);
        }
        let _guard = self.apps.register.lock().await;
        let mut out = Vec::new();
        for app in apps {
            let existing: Vec<Arc<Unit>> = self
                .units()
                .into_iter()
                .filter(|u| u.lock().rec.name == app.name)
                .collect();
            if let Some(u) = existing.first() {
                if u.lock().rec.source == AppSource::Config {
                    return Err(SupError::Conflict(format!(
                        "app {} is defined in the config file; use restart, or edit the file",
                        app.name
                    )));
                }
                if !req.replace {
                    for u in &existing {
                        let (tx, rx) = oneshot::channel();
                        let _ = u.tx.send(AppCmd::Start(tx));
                        let _ = rx.await;
                        out.push(self.app_info(u));
                    }
                    continue;
                }
                for u in &existing {
                    self.delete_unit(u).await;
                }
            }
            let app = Arc::new(app);
            for i in 0..app.spec.instances {
                let rec = self.new_record(&app, i, AppSource::Runtime)?;
                let initial = if rec.enabled {
                    Initial::StartNow
                } else {
                    Initial::Idle
                };
                let u = self.spawn_unit(rec, app.clone(), initial);
                out.push(self.app_info(&u));
            }
            info!(app = %app.name, instances = app.spec.instances, "app registered");
        }
        Ok(out)
    }

    async fn send(&self, unit: &Unit, make: impl FnOnce(oneshot::Sender<()>) -> AppCmd) {
        let (tx, rx) = oneshot::channel();
        let _ = unit.tx.send(make(tx));
        let _ = rx.await;
    }

    /// `start`, `stop`, `restart`, `reload`, `reset`.
    pub async fn app_action(&self, pm_id: u32, action: &str) -> Result<AppInfo, SupError> {
        let unit = self.unit(pm_id)?;
        match action {
            "start" => self.send(&unit, AppCmd::Start).await,
            "stop" => self.send(&unit, AppCmd::Stop).await,
            "restart" | "reload" => {
                self.send(&unit, |tx| {
                    AppCmd::restart(format!("{action} requested"), true, Some(tx))
                })
                .await
            }
            "reset" => self.send(&unit, AppCmd::Reset).await,
            "flush" => {
                let logs = unit.lock().app.log_paths(&self.cfg.paths.data_dir, pm_id);
                for p in [logs.out, logs.err, logs.combined].into_iter().flatten() {
                    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) {
                        let _ = f.set_len(0);
                    }
                }
            }
            other => {
                return Err(SupError::BadRequest(format!(
                    "unknown app action {other:?}"
                )))
            }
        }
        Ok(self.app_info(&unit))
    }

    async fn delete_unit(&self, unit: &Arc<Unit>) {
        self.send(unit, AppCmd::Delete).await;
        self.apps
            .units
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&unit.pm_id);
    }

    pub async fn delete_app(&self, pm_id: u32) -> Result<AppInfo, SupError> {
        let unit = self.unit(pm_id)?;
        let mut info = self.app_info(&unit);
        self.delete_unit(&unit).await;
        info.status = AppStatus::Stopped;
        info.pid = None;
        Ok(info)
    }

    /// Wait until the instance is online (or has settled elsewhere).
    pub async fn wait_app(&self, pm_id: u32, wait: Duration) -> Result<AppInfo, SupError> {
        let unit = self.unit(pm_id)?;
        let mut rx = unit.status.subscribe();
        let deadline = Instant::now() + wait;
        loop {
            let s = *rx.borrow_and_update();
            if matches!(
                s,
                AppStatus::Online | AppStatus::Errored | AppStatus::Stopped
            ) {
                break;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                _ = sleep_until(deadline) => break,
            }
        }
        Ok(self.app_info(&unit))
    }

    fn dump_path(&self) -> PathBuf {
        self.cfg.paths.data_dir.join("dump.toml")
    }

    /// `pm2 save`: write every app (config and runtime) to
    /// `<data_dir>/dump.toml` through a temp file and a rename. An empty list
    /// never overwrites a dump (PM2's #2827 lesson) unless `force`.
    pub fn save_dump(&self, force: bool) -> Result<DumpResult, SupError> {
        let mut specs: Vec<AppSpec> = Vec::new();
        for u in self.units() {
            let st = u.lock();
            if !specs.iter().any(|s| s.name == st.app.spec.name) {
                let mut spec = st.app.spec.clone();
                // What runs now is what comes back.
                spec.autostart = st.rec.enabled;
                specs.push(spec);
            }
        }
        let path = self.dump_path();
        if specs.is_empty() && !force && path.exists() {
            return Err(SupError::Conflict(
                "no apps to save; refusing to empty the existing dump (use --force)".into(),
            ));
        }
        let text = format!(
            "# Written by `slotctl pm2 save` at {}; restore with `slotctl pm2 resurrect`.\n{}",
            crate::clock::rfc3339_now(),
            pm2_compat::to_toml(&specs)
        );
        write_atomic(&path, &text)
            .map_err(|e| SupError::Internal(format!("writing {}: {e}", path.display())))?;
        Ok(DumpResult {
            path: path.display().to_string(),
            apps: specs.len(),
        })
    }

    /// `pm2 resurrect`: start every app of the dump that is not already
    /// known (config apps are skipped: the file already runs them).
    pub async fn resurrect(self: &Arc<Self>) -> Result<DumpResult, SupError> {
        #[derive(serde::Deserialize)]
        struct Dump {
            #[serde(default)]
            apps: Vec<AppSpec>,
        }
        let path = self.dump_path();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| SupError::BadRequest(format!("reading {}: {e}", path.display())))?;
        let dump: Dump = toml::from_str(&text)
            .map_err(|e| SupError::BadRequest(format!("{}: {e}", path.display())))?;
        let known: Vec<AppName> = self
            .units()
            .iter()
            .map(|u| u.lock().rec.name.clone())
            .collect();
        let fresh: Vec<serde_json::Value> = dump
            .apps
            .into_iter()
            .filter(|s| !known.iter().any(|k| k.as_str() == s.name))
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .collect();
        let n = fresh.len();
        self.start_apps(StartApps {
            apps: fresh,
            replace: false,
        })
        .await?;
        Ok(DumpResult {
            path: path.display().to_string(),
            apps: n,
        })
    }
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    slotapi::files::write_atomic(path, text.as_bytes())
}

struct AppActor {
    sup: Arc<Supervisor>,
    unit: Arc<Unit>,
    /// Current exponential backoff delay, when active.
    backoff_ms: Option<u64>,
    watch_rx: Option<mpsc::Receiver<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl AppActor {
    fn app(&self) -> Arc<App> {
        self.unit.lock().app.clone()
    }

    fn name(&self) -> AppName {
        self.unit.lock().rec.name.clone()
    }

    fn note_path(&self) -> Option<PathBuf> {
        let logs = self
            .app()
            .log_paths(&self.sup.cfg.paths.data_dir, self.unit.pm_id);
        logs.err.or(logs.out)
    }

    fn note(&self, line: &str) {
        if let Some(p) = self.note_path() {
            logs::note(&p, line);
        }
    }

    fn set(&self, status: AppStatus, f: impl FnOnce(&mut AppRecord)) {
        let rec = {
            let mut st = self.unit.lock();
            st.rec.status = status;
            f(&mut st.rec);
            st.rec.clone()
        };
        if let Err(e) = self.sup.store.save_app(&rec) {
            warn!(app = %rec.name, pm_id = rec.pm_id, error = %e, "could not persist app state");
        }
        self.unit.status.send_replace(status);
    }

    fn start_watching(&mut self) {
        use notify::Watcher;
        let app = self.app();
        if app.spec.watch.is_empty() {
            return;
        }
        let data = self.sup.cfg.paths.data_dir.clone();
        let logs = app.log_paths(&data, self.unit.pm_id);
        let own: Vec<PathBuf> = [
            logs.out,
            logs.err,
            logs.combined,
            Some(app.pid_path(&data, self.unit.pm_id)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let roots: Vec<PathBuf> = app.spec.watch.clone();
        let ignore = app.spec.ignore_watch.clone();
        let (tx, rx) = mpsc::channel(1);
        let roots2 = roots.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            let relevant = ev.paths.iter().any(|p| {
                if own.iter().any(|o| o == p) {
                    return false;
                }
                let rel = roots2
                    .iter()
                    .find_map(|r| {
                        if r == p {
                            p.file_name().map(PathBuf::from)
                        } else {
                            p.strip_prefix(r).ok().map(Path::to_path_buf)
                        }
                    })
                    .unwrap_or_else(|| p.clone());
                !app::ignored(&ignore, &rel)
            });
            if relevant {
                let _ = tx.try_send(());
            }
        });
        match watcher {
            Ok(mut w) => {
                for r in &roots {
                    let mode = if r.is_dir() {
                        notify::RecursiveMode::Recursive
                    } else {
                        notify::RecursiveMode::NonRecursive
                    };
                    if let Err(e) = w.watch(r, mode) {
                        warn!(app = %self.name(), path = %r.display(), error = %e, "cannot watch");
                    }
                }
                self._watcher = Some(w);
                self.watch_rx = Some(rx);
            }
            Err(e) => warn!(app = %self.name(), error = %e, "cannot watch"),
        }
    }

    // The rare, deep paths (restart, stop, exit) are boxed where they are
    // awaited, so the future every idle instance keeps in memory stays small:
    // a thousand apps should cost kilobytes each, not tens of them.
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<AppCmd>, initial: Initial) {
        self.start_watching();
        let mut phase = match initial {
            Initial::Idle => Phase::Idle,
            Initial::StartNow => self.spawn(),
            Initial::Adopt { pid } => self.adopt(pid),
        };
        let mut cron_at = self.next_cron();
        let mut watch_due: Option<Instant> = None;
        let far = || Instant::now() + Duration::from_secs(86_400 * 365);
        loop {
            let enabled = self.unit.lock().rec.enabled;
            let cron_deadline = cron_at.filter(|_| enabled).unwrap_or_else(far);
            let watch_deadline = watch_due.unwrap_or_else(far);
            let mut wrx = self.watch_rx.take();
            let watched = async {
                match wrx.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            };
            phase = match phase {
                Phase::Idle | Phase::Backoff(_) => {
                    let until = match &phase {
                        Phase::Backoff(t) => *t,
                        _ => far(),
                    };
                    tokio::select! {
                        _ = sleep_until(until) => {
                            self.unit.lock().rec.restarts += 1;
                            self.spawn()
                        }
                        _ = sleep_until(cron_deadline) => {
                            cron_at = self.next_cron();
                            self.note("cron_restart: starting");
                            self.unit.lock().rec.restarts += 1;
                            self.spawn()
                        }
                        _ = watched => phase,
                        cmd = rx.recv() => match cmd {
                            None => return,
                            Some(cmd) => match Box::pin(self.command(cmd, None)).await {
                                Some(p) => p,
                                None => return,
                            },
                        },
                    }
                }
                Phase::Running(p) => {
                    let probe_at = if self.app().probe.is_some() || !p.ready {
                        p.next_probe
                    } else {
                        far()
                    };
                    tokio::select! {
                        exit = p.watch.wait() => Box::pin(self.exited(exit)).await,
                        _ = sleep_until(probe_at) => Box::pin(self.tick(p)).await,
                        _ = sleep_until(cron_deadline) => {
                            cron_at = self.next_cron();
                            Box::pin(self.restart(Some(p), "cron_restart".into(), false)).await
                        }
                        w = watched => {
                            if w.is_some() {
                                let delay = Duration::from_millis(self.app().spec.watch_delay_ms.max(50));
                                watch_due = Some(Instant::now() + delay);
                            }
                            Phase::Running(p)
                        }
                        _ = sleep_until(watch_deadline) => {
                            watch_due = None;
                            Box::pin(self.restart(Some(p), "watched files changed".into(), false)).await
                        }
                        cmd = rx.recv() => match cmd {
                            None => return,
                            Some(cmd) => {
                                match Box::pin(self.command(cmd, Some(p))).await {
                                    Some(ph) => ph,
                                    None => return,
                                }
                            }
                        },
                    }
                }
            };
            self.watch_rx = wrx;
        }
    }

    fn next_cron(&self) -> Option<Instant> {
        let app = self.app();
        let cron = app.cron.as_ref()?;
        app::next_cron_delay(cron).map(|d| Instant::now() + d)
    }

    /// Handle a command; `None` means the instance was deleted.
    async fn command(&mut self, cmd: AppCmd, proc_: Option<Proc>) -> Option<Phase> {
        match cmd {
            AppCmd::Start(reply) => {
                let phase = match proc_ {
                    Some(p) => Phase::Running(p),
                    None => {
                        self.backoff_ms = None;
                        {
                            let mut st = self.unit.lock();
                            st.rec.enabled = true;
                            st.rec.unstable = 0;
                        }
                        self.spawn()
                    }
                };
                let _ = reply.send(());
                Some(phase)
            }
            AppCmd::Stop(reply) => {
                self.unit.lock().rec.enabled = false;
                self.teardown(proc_, "stopped by request").await;
                let _ = reply.send(());
                Some(Phase::Idle)
            }
            AppCmd::Restart(r) => {
                let Restart {
                    reason,
                    manual,
                    reply,
                } = *r;
                let phase = self.restart(proc_, reason, manual).await;
                if let Some(r) = reply {
                    let _ = r.send(());
                }
                Some(phase)
            }
            AppCmd::Reset(reply) => {
                {
                    let mut st = self.unit.lock();
                    st.rec.restarts = 0;
                    st.rec.unstable = 0;
                }
                let status = self.unit.lock().rec.status;
                self.set(status, |_| {});
                let _ = reply.send(());
                Some(match proc_ {
                    Some(p) => Phase::Running(p),
                    None => Phase::Idle,
                })
            }
            AppCmd::Delete(reply) => {
                self.unit.lock().rec.enabled = false;
                self.teardown(proc_, "deleted").await;
                self.sup.cgroups.remove(&self.unit.key);
                if let Err(e) = self.sup.store.delete_app(self.unit.pm_id) {
                    warn!(pm_id = self.unit.pm_id, error = %e, "could not delete app row");
                }
                let _ = std::fs::remove_file(
                    self.app()
                        .pid_path(&self.sup.cfg.paths.data_dir, self.unit.pm_id),
                );
                info!(app = %self.name(), pm_id = self.unit.pm_id, "app instance deleted");
                let _ = reply.send(());
                None
            }
        }
    }

    async fn restart(&mut self, proc_: Option<Proc>, reason: String, manual: bool) -> Phase {
        info!(app = %self.name(), pm_id = self.unit.pm_id, %reason, "restarting");
        self.note(&format!("restarting: {reason}"));
        self.teardown(proc_, &reason).await;
        if manual {
            self.backoff_ms = None;
        }
        {
            let mut st = self.unit.lock();
            st.rec.enabled = true;
            st.rec.restarts += 1;
            if manual {
                st.rec.unstable = 0;
            }
        }
        self.spawn()
    }

    fn spawn(&mut self) -> Phase {
        match self.try_spawn() {
            Ok(p) => Phase::Running(p),
            Err(reason) => {
                warn!(app = %self.name(), pm_id = self.unit.pm_id, %reason, "could not start");
                self.note(&format!("could not start: {reason}"));
                self.set(AppStatus::Errored, |r| {
                    r.pid = None;
                    r.reason = Some(reason);
                });
                Phase::Idle
            }
        }
    }

    fn try_spawn(&mut self) -> Result<Proc, String> {
        let sup = &self.sup;
        let app = self.app();
        let pm_id = self.unit.pm_id;
        let instance = self.unit.lock().rec.instance;
        let key = &self.unit.key;
        let data = &sup.cfg.paths.data_dir;
        // Apps set no cgroup limits, so an existing group is ready as is.
        if !sup.cgroups.procs_files(key).iter().all(|f| f.exists()) {
            sup.cgroups
                .create(key, &Limits::default())
                .map_err(|e| format!("creating cgroup: {e}"))?;
        }
        let markers = [
            (ROOT_ENV.to_string(), sup.cgroups.instance().to_string()),
            (SLOT_ENV.to_string(), key.clone()),
            (APP_ENV.to_string(), app.name.to_string()),
        ];
        let logs = app.log_paths(data, pm_id);
        for p in [&logs.out, &logs.err, &logs.combined].into_iter().flatten() {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            }
        }
        let (stdout, stderr) = if app.needs_writer(&logs) {
            let out = self.log_writer(&app, &logs, logs.out.as_deref(), "out", &markers)?;
            let err = self.log_writer(&app, &logs, logs.err.as_deref(), "err", &markers)?;
            (out, err)
        } else {
            let open = |p: &Option<PathBuf>| -> Result<Stdio, String> {
                match p {
                    None => Ok(Stdio::null()),
                    Some(p) => logs::open_append(p)
                        .map(Stdio::from)
                        .map_err(|e| format!("opening {}: {e}", p.display())),
                }
            };
            (open(&logs.out)?, open(&logs.err)?)
        };
        let (program, args) = app.argv(data);
        // The app joins its cgroup before it execs: `sh` writes its own pid
        // into the group and then becomes the app (same pid), so nothing the
        // app forks in its first milliseconds can escape the group.
        let files = sup.cgroups.procs_files(key);
        let mut shim_args: Vec<String> = vec![
            "-c".into(),
            CGROUP_SHIM.into(),
            "slotctl-cgexec".into(),
            files.len().to_string(),
        ];
        shim_args.extend(files.iter().map(|f| f.display().to_string()));
        shim_args.push(program.clone());
        shim_args.extend(args);
        let mut env = app.env(instance, &sup.app_host_env);
        env.extend(markers.iter().cloned());
        let cwd = app.cwd(data);
        if !cwd.is_dir() {
            return Err(format!("cwd {} is not a directory", cwd.display()));
        }
        let mut cmd = Command::new("/bin/sh");
        cmd.args(&shim_args)
            .env_clear()
            .envs(&env)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        if let Some(u) = &app.spec.user {
            let (uid, gid) =
                app::resolve_id("/etc/passwd", u).ok_or_else(|| format!("no user {u:?}"))?;
            cmd.uid(uid);
            if let Some(g) = gid {
                cmd.gid(g);
            }
        }
        if let Some(g) = &app.spec.group {
            let (gid, _) =
                app::resolve_id("/etc/group", g).ok_or_else(|| format!("no group {g:?}"))?;
            cmd.gid(gid);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawning {program}: {e}"))?;
        // Drop closes our copies of the writer pipes' write ends.
        drop(cmd);
        let pid = child.id();
        drop(child);
        if let Err(e) = sup.cgroups.add(key, pid) {
            process::signal(pid, Signal::KILL);
            process::reap(pid);
            return Err(format!("moving pid {pid} into its cgroup: {e}"));
        }
        let watch = ExitWatch::new(pid).map_err(|e| format!("watching pid {pid}: {e}"))?;
        let start_ticks = process::start_time(pid);
        let pid_path = app.pid_path(data, pm_id);
        if let Some(d) = pid_path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = std::fs::write(&pid_path, format!("{pid}\n"));
        {
            let mut st = self.unit.lock();
            st.started = Some(std::time::Instant::now());
            st.last_sample = None;
            st.healthy = None;
        }
        let ready_now = app.probe.is_none() && !app.spec.wait_ready;
        let boot = sup.boot_id.clone();
        self.set(
            if ready_now {
                AppStatus::Online
            } else {
                AppStatus::Launching
            },
            |r| {
                r.pid = Some(pid);
                r.start_ticks = start_ticks;
                r.boot_id = Some(boot);
                r.started_at_ms = Some(now_ms());
            },
        );
        let now = Instant::now();
        Ok(Proc {
            pid,
            watch,
            ready: ready_now,
            ready_deadline: now + self.ready_window(&app),
            next_probe: if app.probe.is_some() {
                now + Duration::from_millis(20)
            } else {
                now + Duration::from_millis(app.spec.listen_timeout_ms)
            },
            probe_failures: 0,
        })
    }

    fn ready_window(&self, app: &App) -> Duration {
        let listen = Duration::from_millis(app.spec.listen_timeout_ms);
        match &app.probe {
            Some(p) => listen.max(p.interval * p.retries),
            None => listen,
        }
    }

    /// A `slotctl __log-writer` for one stream, in the instance's cgroup;
    /// returns the pipe the app writes into.
    fn log_writer(
        &self,
        app: &App,
        logs: &LogPaths,
        file: Option<&Path>,
        kind: &str,
        markers: &[(String, String)],
    ) -> Result<Stdio, String> {
        if file.is_none() && logs.combined.is_none() {
            return Ok(Stdio::null());
        }
        let exe = std::env::current_exe().map_err(|e| format!("finding slotctl: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("__log-writer");
        if let Some(f) = file {
            cmd.arg("--file").arg(f);
        }
        if let Some(c) = &logs.combined {
            cmd.arg("--combined").arg(c);
        }
        if let Some(ts) = &app.spec.log_timestamps {
            cmd.arg("--timestamp").arg(ts);
        }
        if app.spec.log_json {
            cmd.arg("--json")
                .arg("--app")
                .arg(app.name.as_str())
                .arg("--id")
                .arg(self.unit.pm_id.to_string())
                .arg("--type")
                .arg(kind);
        }
        let mut child = cmd
            .env_clear()
            .envs(markers.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting the log writer: {e}"))?;
        let pipe = child.stdin.take().ok_or("log writer has no stdin")?;
        let pid = child.id();
        drop(child);
        // The writer is reaped by nobody once we go away; a zombie until the
        // daemon exits is harmless, and its cgroup keeps it accounted.
        let _ = self.sup.cgroups.add(&self.unit.key, pid);
        tokio::spawn(async move {
            if let Ok(w) = ExitWatch::new(pid) {
                w.wait().await;
            }
        });
        Ok(Stdio::from(pipe))
    }

    fn adopt(&mut self, pid: u32) -> Phase {
        let Ok(watch) = ExitWatch::new(pid) else {
            return self.spawn();
        };
        info!(app = %self.name(), pm_id = self.unit.pm_id, pid, "re-adopting app instance");
        self.note(&format!("re-adopted pid {pid} after a daemon restart"));
        let app = self.app();
        let ready = app.probe.is_none();
        self.set(
            if ready {
                AppStatus::Online
            } else {
                AppStatus::Launching
            },
            |_| {},
        );
        let now = Instant::now();
        Phase::Running(Proc {
            pid,
            watch,
            ready,
            ready_deadline: now + self.ready_window(&app),
            next_probe: now,
            probe_failures: 0,
        })
    }

    async fn probe(&self, app: &App) -> Result<(), String> {
        let Some(p) = &app.probe else { return Ok(()) };
        let fut = async {
            match &p.kind {
                ProbeKind::Tcp(addr) => tokio::net::TcpStream::connect(addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("tcp {addr}: {e}")),
                ProbeKind::Http { authority, path } => http_probe(authority, path).await,
                ProbeKind::Unix { path, http_path } => match http_path {
                    Some(hp) => match slotapi::get_unix(path, hp, &[], p.timeout).await {
                        Ok((s, _)) if (200..400).contains(&s) => Ok(()),
                        Ok((s, _)) => Err(format!("GET {hp} on {} answered {s}", path.display())),
                        Err(e) => Err(e.to_string()),
                    },
                    None => tokio::net::UnixStream::connect(path)
                        .await
                        .map(drop)
                        .map_err(|e| format!("unix {}: {e}", path.display())),
                },
                ProbeKind::Command(c) => {
                    let env = app.env(self.unit.lock().rec.instance, &self.sup.app_host_env);
                    let status = tokio::process::Command::new("sh")
                        .arg("-c")
                        .arg(c)
                        .env_clear()
                        .envs(&env)
                        .current_dir(app.cwd(&self.sup.cfg.paths.data_dir))
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .kill_on_drop(true)
                        .status()
                        .await
                        .map_err(|e| format!("running {c:?}: {e}"))?;
                    if status.success() {
                        Ok(())
                    } else {
                        Err(format!("{c:?} exited with {status}"))
                    }
                }
            }
        };
        tokio::time::timeout(p.timeout, fut)
            .await
            .unwrap_or_else(|_| Err(format!("probe timed out after {:?}", p.timeout)))
    }

    async fn tick(&mut self, mut p: Proc) -> Phase {
        let app = self.app();
        let now = Instant::now();
        if app.probe.is_none() {
            // wait_ready without a probe: online once listen_timeout passed.
            p.ready = true;
            self.set(AppStatus::Online, |_| {});
            return Phase::Running(p);
        }
        let probe = app.probe.as_ref().expect("checked");
        let result = self.probe(&app).await;
        match result {
            Ok(()) => {
                p.probe_failures = 0;
                self.unit.lock().healthy = Some(true);
                if !p.ready {
                    p.ready = true;
                    self.set(AppStatus::Online, |_| {});
                }
                p.next_probe = Instant::now() + probe.interval;
                Phase::Running(p)
            }
            Err(e) if !p.ready => {
                if now >= p.ready_deadline {
                    let reason = format!("not healthy within {:?}: {e}", self.ready_window(&app));
                    self.unhealthy(p, reason).await
                } else {
                    p.next_probe = Instant::now() + Duration::from_millis(100).min(probe.interval);
                    Phase::Running(p)
                }
            }
            Err(e) => {
                p.probe_failures += 1;
                self.unit.lock().healthy = Some(false);
                warn!(app = %self.name(), pm_id = self.unit.pm_id, failures = p.probe_failures, error = %e, "health probe failed");
                if p.probe_failures >= probe.retries {
                    let reason = format!("health probe failed {} times: {e}", p.probe_failures);
                    self.unhealthy(p, reason).await
                } else {
                    p.next_probe = Instant::now() + probe.interval;
                    Phase::Running(p)
                }
            }
        }
    }

    async fn unhealthy(&mut self, p: Proc, reason: String) -> Phase {
        self.note(&reason);
        self.teardown(Some(p), &reason).await;
        self.unit.lock().rec.enabled = true;
        self.after_exit(reason, None, Duration::ZERO)
    }

    /// The main process ended by itself.
    async fn exited(&mut self, how: Option<String>) -> Phase {
        let how = how.unwrap_or_else(|| "exited".into());
        let code = how
            .strip_prefix("exit ")
            .and_then(|c| c.parse::<i32>().ok());
        let uptime = self
            .unit
            .lock()
            .started
            .map(|s| s.elapsed())
            .unwrap_or_default();
        self.note(&format!(
            "pid ended ({how}) after {}",
            humantime::format_duration(Duration::from_millis(uptime.as_millis() as u64))
        ));
        {
            let mut st = self.unit.lock();
            st.rec.last_exit = Some(how.clone());
            st.rec.exit_code = code;
        }
        // The main process is gone: end what is left of its tree (PM2's
        // treekill, without the racy ps snapshot).
        kill_all(
            &self.sup.cgroups,
            &self.unit.key,
            Duration::from_millis(500),
        )
        .await;
        self.after_exit(format!("exited ({how})"), code, uptime)
    }

    /// PM2's `handleExit`: stop, restart after a delay, or give up.
    fn after_exit(&mut self, reason: String, code: Option<i32>, uptime: Duration) -> Phase {
        let app = self.app();
        let spec = &app.spec;
        self.unit.lock().started = None;
        if !spec.autorestart || code.is_some_and(|c| spec.stop_exit_codes.contains(&c)) {
            self.set(AppStatus::Stopped, |r| {
                r.pid = None;
                r.reason = Some(reason);
            });
            return Phase::Idle;
        }
        let unstable = uptime < Duration::from_millis(spec.min_uptime_ms);
        let count = {
            let mut st = self.unit.lock();
            st.rec.unstable = if unstable { st.rec.unstable + 1 } else { 0 };
            st.rec.unstable
        };
        if count >= spec.max_restarts {
            let why = format!(
                "{reason}; {count} restarts each within min_uptime ({}), max_restarts is {}",
                pm2_compat::format_duration_ms(spec.min_uptime_ms),
                spec.max_restarts
            );
            self.note(&why);
            self.set(AppStatus::Errored, |r| {
                r.pid = None;
                r.reason = Some(why);
            });
            return Phase::Idle;
        }
        let mut delay = spec.restart_delay_ms;
        if let Some(init) = spec.exp_backoff_initial_ms {
            if uptime >= BACKOFF_RESET {
                self.backoff_ms = None;
            }
            let next = match self.backoff_ms {
                None => init,
                Some(prev) => ((prev as f64 * 1.5) as u64).min(BACKOFF_CAP_MS),
            };
            self.backoff_ms = Some(next);
            delay = delay.max(next);
        }
        if delay == 0 {
            self.set(AppStatus::Launching, |r| {
                r.pid = None;
                r.reason = Some(reason);
            });
            self.unit.lock().rec.restarts += 1;
            return self.spawn();
        }
        self.set(AppStatus::WaitingRestart, |r| {
            r.pid = None;
            r.reason = Some(format!("{reason}; restarting in {delay} ms"));
        });
        Phase::Backoff(Instant::now() + Duration::from_millis(delay))
    }

    /// Stop the instance: `stop_signal` to the main process, SIGKILL to the
    /// whole tree after `kill_timeout`.
    async fn teardown(&mut self, p: Option<Proc>, reason: &str) {
        let app = self.app();
        let key = self.unit.key.clone();
        let timeout = Duration::from_millis(app.spec.kill_timeout_ms);
        let running = p.is_some() || !self.sup.cgroups.pids(&key).is_empty();
        if running {
            self.set(AppStatus::Stopping, |_| {});
        }
        let deadline = Instant::now() + timeout;
        if let Some(p) = p {
            process::signal(p.pid, app.stop_signal);
            tokio::select! {
                how = p.watch.wait() => {
                    if let Some(how) = how {
                        let mut st = self.unit.lock();
                        st.rec.exit_code = how.strip_prefix("exit ").and_then(|c| c.parse().ok());
                        st.rec.last_exit = Some(how);
                    }
                }
                _ = sleep_until(deadline) => {}
            }
        }
        // What is left (children, log writers draining) gets the rest of
        // kill_timeout, then SIGKILL.
        while Instant::now() < deadline && !self.sup.cgroups.pids(&key).is_empty() {
            sleep(Duration::from_millis(10)).await;
        }
        kill_all(&self.sup.cgroups, &key, Duration::ZERO).await;
        if running {
            self.note(&format!("stopped ({reason})"));
        }
        self.unit.lock().started = None;
        self.set(AppStatus::Stopped, |r| {
            r.pid = None;
            r.start_ticks = None;
            r.reason = Some(reason.to_string());
        });
    }
}

/// `GET path` on `host:port`, HTTP/1.0; 2xx and 3xx are healthy.
async fn http_probe(authority: &str, path: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connecting to {authority}: {e}"))?;
    let req =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: slotctl-probe\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {path} answered {code}"))
    }
}

/// Samples whole-tree usage of running instances: every 500 ms for apps
/// with `max_memory_restart` (and restarts those over it), every
/// `sample_interval` for the rest.
async fn app_sampler(sup: std::sync::Weak<Supervisor>) {
    let mut tick: u64 = 0;
    loop {
        sleep(MEMORY_CHECK_INTERVAL).await;
        tick += 1;
        let Some(sup) = sup.upgrade() else { return };
        let every = (sup.cfg.supervisor.sample_interval.as_millis()
            / MEMORY_CHECK_INTERVAL.as_millis())
        .max(1) as u64;
        let full = tick.is_multiple_of(every);
        let picked: Vec<(Arc<Unit>, Option<u64>)> = sup
            .units()
            .into_iter()
            .filter_map(|u| {
                let (running, limit) = {
                    let st = u.lock();
                    (
                        st.rec.pid.is_some() && st.rec.status == AppStatus::Online,
                        st.app.spec.max_memory_bytes,
                    )
                };
                (running && (full || limit.is_some())).then_some((u, limit))
            })
            .collect();
        if picked.is_empty() {
            continue;
        }
        let cg = sup.cgroups.clone();
        let samples = tokio::task::spawn_blocking(move || {
            picked
                .into_iter()
                .map(|(u, limit)| {
                    let usage = cg.usage(&u.key);
                    (u, limit, usage)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let now = std::time::Instant::now();
        for (unit, limit, u) in samples {
            {
                let mut st = unit.lock();
                if let Some((t, prev)) = st.last_sample {
                    st.cpu_percent =
                        u.cpu_percent_since(&prev, now.duration_since(t).as_nanos() as u64);
                }
                st.usage = u;
                st.last_sample = Some((now, u));
            }
            if let Some(limit) = limit {
                if u.rss_bytes > limit {
                    let reason = format!(
                        "memory {} bytes over max_memory_restart {} bytes (whole tree)",
                        u.rss_bytes, limit
                    );
                    let _ = unit.tx.send(AppCmd::restart(reason, false, None));
                }
            }
        }
    }
}
