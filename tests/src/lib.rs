//! The end-to-end harness: a temporary slotgate installation (config,
//! templates, data and run directories) with a real slotctl daemon, real
//! ttyd and real tmux, and a client that speaks ttyd's WebSocket protocol.
//! Everything it starts is ended when the `TestEnv` drops, found through
//! the instance's own environment marker, so parallel tests never touch
//! each other's processes.

pub mod accounts;
pub mod gateway;
pub mod oidc;
pub mod ttyd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use slotapi::{Client, SlotId, SlotInfo, SlotStatus};

/// Path of a workspace binary built next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// The repository root (for shipped templates and configs).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Wait for `cond` to hold, polling; panics with `what` after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `program` run as `uid` (gid the same, no supplementary groups), through
/// util-linux's `setpriv`: a slot's user, for checks made from the host.
pub fn as_uid(uid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        &uid.to_string(),
        "--regid",
        &uid.to_string(),
        "--clear-groups",
    ])
    .arg(program);
    c
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub instance: String,
    daemon: Option<Child>,
    /// Run the daemon and the CLI as this uid (the unprivileged layout);
    /// `None`: as the test (root in CI).
    pub run_as: Option<u32>,
}

/// Settings that make lifecycle tests quick without changing behaviour.
/// Fast to start, back off and sample, but patient with health probes: a
/// test machine under load can take seconds to answer one, and a ttyd
/// restarted for that would cut a test's terminal off mid-session.
pub const FAST_SUPERVISOR: &str = r#"
health_interval = "200ms"
health_timeout = "5s"
health_failures = 4
start_timeout = "15s"
backoff_initial = "50ms"
backoff_max = "400ms"
max_failures = 4
failure_window = "30s"
kill_timeout = "2s"
sample_interval = "300ms"
"#;

impl TestEnv {
    /// A fresh installation with the repository's templates plus `extra`
    /// templates (name, TOML), and `supervisor_extra` appended to the
    /// `[supervisor]` section.
    pub fn new(extra_templates: &[(&str, &str)], supervisor_extra: &str) -> TestEnv {
        Self::custom(
            extra_templates,
            &format!("{FAST_SUPERVISOR}{supervisor_extra}"),
        )
    }

    /// Like `new`, with `supervisor` as the whole `[supervisor]` body
    /// (besides the instance's cgroup root): benchmarks use the defaults.
    pub fn custom(extra_templates: &[(&str, &str)], supervisor: &str) -> TestEnv {
        // Short paths: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("sg")
            .tempdir_in("/tmp")
            .expect("tempdir");
        // Passable by everyone, as an install's parent directories are:
        // each slot runs as its owner's uid and must reach its sandbox.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod tempdir");
        let templates = dir.path().join("ttyd-templates");
        std::fs::create_dir_all(&templates).unwrap();
        for entry in std::fs::read_dir(repo_root().join("ttyd-templates")).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                std::fs::copy(&p, templates.join(p.file_name().unwrap())).unwrap();
            }
        }
        for (name, text) in extra_templates {
            std::fs::write(templates.join(format!("{name}.toml")), text).unwrap();
        }
        let instance = format!(
            "sgtest-{}",
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("sg")
                .to_lowercase()
        );
        let config = dir.path().join("slotgate.toml");
        std::fs::write(
            &config,
            format!(
                "[paths]\ndata_dir = \"data\"\nrun_dir = \"run\"\ntemplates_dir = \"ttyd-templates\"\n\n\
                 [supervisor]\ncgroup_root = \"{instance}\"\n{supervisor}\n"
            ),
        )
        .unwrap();
        TestEnv {
            dir,
            config,
            instance,
            daemon: None,
            run_as: None,
        }
    }

    /// The unprivileged layout: the whole installation belongs to `uid`
    /// (gid the same) and the daemon and CLI run as it, as on one person's
    /// workstation.
    pub fn unprivileged(
        extra_templates: &[(&str, &str)],
        supervisor_extra: &str,
        uid: u32,
    ) -> TestEnv {
        let mut env = Self::new(extra_templates, supervisor_extra);
        let out = Command::new("chown")
            .args(["-R", &format!("{uid}:{uid}")])
            .arg(env.dir.path())
            .output()
            .expect("chown");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        env.run_as = Some(uid);
        env
    }

    /// `program`, as [`run_as`](Self::run_as) when set.
    fn command(&self, program: &Path) -> Command {
        match self.run_as {
            None => Command::new(program),
            Some(uid) => {
                let mut c = as_uid(uid, program);
                c.env("HOME", self.dir.path());
                c
            }
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn control_socket(&self) -> PathBuf {
        self.path("run/slotctl.sock")
    }

    pub fn slot_socket(&self, id: &str) -> PathBuf {
        self.path(&format!("run/slots/{id}/ttyd.sock"))
    }

    pub fn slot_log(&self, id: &str) -> PathBuf {
        self.path(&format!("data/logs/slots/{id}.log"))
    }

    pub fn client(&self) -> Client {
        Client::new(self.control_socket())
    }

    /// Run `slotctl --config <env> args…` to completion.
    pub fn slotctl(&self, args: &[&str]) -> Output {
        self.command(&bin("slotctl"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running slotctl")
    }

    /// Start the daemon and wait until its API answers.
    pub async fn start_daemon(&mut self) -> u32 {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .unwrap();
        let child = self
            .command(&bin("slotctl"))
            .arg("--config")
            .arg(&self.config)
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting slotctl daemon");
        let pid = child.id();
        self.daemon = Some(child);
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if client.health().await.is_ok() {
                return pid;
            }
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(|c| c.try_wait()) {
                panic!("daemon exited with {status}: {}", self.daemon_log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}",
                self.daemon_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    /// kill -9 the daemon (slots must survive).
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Create a slot through the CLI and wait until it is online.
    pub async fn create_online(&self, id: &str, template: &str) -> SlotInfo {
        let out = self.slotctl(&["create", id, "--template", template]);
        assert!(
            out.status.success(),
            "create {id} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_status(id, SlotStatus::Online, Duration::from_secs(15))
            .await
    }

    pub async fn wait_status(&self, id: &str, want: SlotStatus, limit: Duration) -> SlotInfo {
        let client = self.client();
        let sid = SlotId::new(id).unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(info) = client.get(&sid).await {
                if info.status == want {
                    return info;
                }
                assert!(
                    Instant::now() < deadline,
                    "slot {id} is {} ({:?}), wanted {want}",
                    info.status,
                    info.reason
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "slot {id} not reachable through the API"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every process this installation started (slot trees carry
    /// `SLOTGATE_INSTANCE=<instance>`).
    pub fn instance_pids(&self) -> Vec<u32> {
        let needle = format!("SLOTGATE_INSTANCE={}", self.instance).into_bytes();
        std::fs::read_dir("/proc")
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
                    .filter(|pid| {
                        std::fs::read(format!("/proc/{pid}/environ"))
                            .map(|env| env.split(|b| *b == 0).any(|v| v == needle.as_slice()))
                            .unwrap_or(false)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A PM2 fixture under `tests/fixtures/pm2/`.
pub fn pm2_fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures/pm2").join(rel)
}

impl TestEnv {
    /// Append TOML (e.g. `[[apps]]` tables) to the config file; takes
    /// effect at the next daemon start.
    pub fn append_config(&self, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)
            .unwrap();
        writeln!(f, "\n{text}").unwrap();
    }

    /// Every app instance through the API (empty while the daemon is down).
    pub async fn apps(&self) -> Vec<slotapi::AppInfo> {
        self.client().list_apps().await.unwrap_or_default()
    }

    /// Wait until the app instance `pm_id` satisfies `pred`; returns it.
    pub async fn wait_app<F>(
        &self,
        pm_id: u32,
        what: &str,
        limit: Duration,
        pred: F,
    ) -> slotapi::AppInfo
    where
        F: Fn(&slotapi::AppInfo) -> bool,
    {
        let client = self.client();
        let deadline = Instant::now() + limit;
        loop {
            let got = client.get_app(pm_id).await;
            if let Ok(info) = &got {
                if pred(info) {
                    return info.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for app {pm_id} to be {what}; last: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.kill_daemon();
        for _ in 0..50 {
            let pids = self.instance_pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = Command::new("kill")
                    .args(["-9", &p.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Remove the instance's cgroups (v1 controllers or v2).
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            for line in mounts.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2") {
                    let root = Path::new(f[1]).join(&self.instance);
                    if let Ok(rd) = std::fs::read_dir(&root) {
                        for e in rd.flatten() {
                            if e.path().is_dir() {
                                let _ = std::fs::remove_dir(e.path());
                            }
                        }
                    }
                    let _ = std::fs::remove_dir(&root);
                }
            }
        }
    }
}
