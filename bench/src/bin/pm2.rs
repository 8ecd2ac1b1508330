//! slotctl vs PM2 on PM2's own numbers; prints a side-by-side table (see
//! docs/benchmarks.md, "slotctl vs PM2").
//!
//!   cargo build --release -p slotctl -p bench
//!   ./target/release/pm2 [--small 50] [--many 1000] [--restart 200] [--ttyd 5]
//!
//! Installs the real PM2 from the npm registry into a temp dir
//! (`npm install --prefix <tmp> pm2`, PM2_HOME in the same temp dir, `pm2
//! kill` at the end) and runs the same processes under both supervisors:
//! `sleep` apps started from one ecosystem file (interpreter none), plus a
//! few ttyd processes (PM2: ttyd apps on unix sockets; slotctl: shell slots,
//! i.e. ttyd + tmux). Each supervisor runs alone: PM2 first, then slotctl.
//!
//! Measured: daemon RSS at `small` and `many` apps; start of `many` apps
//! (CLI call → every app online, by polling the list); `jlist` latency at
//! `many` (the CLI as a whole process, what scripts see); `restart all`
//! with `restart` apps; `stop all` with `many` apps; `kill -9` of an app's
//! process → its replacement running (found by its unique command line in
//! /proc, polled every 0.5 ms).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::{arg, median};
use serde_json::Value;
use slotgate_tests::{bin, TestEnv};

fn rss_mib(pid: u32) -> f64 {
    bench::rss_kib(pid) as f64 / 1024.0
}

/// The `sleep` app number `i`: a unique command line so /proc finds it.
fn sleep_arg(i: usize) -> String {
    format!("{}", 900_000 + i)
}

fn ecosystem(dir: &Path, n: usize, ttyd: Option<(&Path, usize)>) -> PathBuf {
    let mut apps: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "name": format!("s{i}"),
                "script": "sleep",
                "args": [sleep_arg(i)],
                "interpreter": "none",
                "autorestart": true,
            })
        })
        .collect();
    if let Some((ttyd, k)) = ttyd {
        for i in 0..k {
            apps.push(serde_json::json!({
                "name": format!("ttyd{i}"),
                "script": ttyd.display().to_string(),
                "args": ["-i", dir.join(format!("t{i}.sock")).display().to_string(), "-W", "bash"],
                "interpreter": "none",
            }));
        }
    }
    let p = dir.join(format!("eco{n}.json"));
    std::fs::write(&p, serde_json::json!({ "apps": apps }).to_string()).unwrap();
    p
}

/// pid of the process whose argv is `[…/]sleep <arg>` (PM2 runs
/// `/usr/bin/sleep`, slotctl `sleep`).
fn find_sleep(arg: &str) -> Option<u32> {
    let tail = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let hit = cmd.ends_with(tail.as_bytes())
            && (cmd.len() == tail.len() || cmd[cmd.len() - tail.len() - 1] == b'/');
        hit.then_some(pid)
    })
}

fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// kill -9 the `sleep` of app `i`, time until a new one runs.
fn respawn_ms(i: usize) -> anyhow::Result<f64> {
    let arg = sleep_arg(i);
    let old = find_sleep(&arg).context("app process not found")?;
    let t0 = Instant::now();
    kill9(old);
    loop {
        if let Some(p) = find_sleep(&arg) {
            if p != old {
                return Ok(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("no replacement after 10 s");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// A supervisor under test, driven through its CLI.
trait Sup {
    fn name(&self) -> &'static str;
    fn cli(&self, args: &[&str]) -> Output;
    fn daemon_pid(&self) -> u32;
    fn jlist_cmd(&self) -> Vec<String>;
    fn online(&self) -> usize {
        let out = self.cli(&["jlist"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let start = text.find('[').unwrap_or(0);
        serde_json::from_str::<Value>(&text[start..])
            .ok()
            .and_then(|v| v.as_array().cloned())
            .map(|a| {
                a.iter()
                    .filter(|p| p["pm2_env"]["status"] == "online")
                    .count()
            })
            .unwrap_or(0)
    }
}

struct Pm2 {
    bin: PathBuf,
    home: PathBuf,
}

impl Sup for Pm2 {
    fn name(&self) -> &'static str {
        "PM2"
    }
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("PM2_HOME", &self.home)
            .stdin(Stdio::null())
            .output()
            .expect("running pm2")
    }
    fn daemon_pid(&self) -> u32 {
        std::fs::read_to_string(self.home.join("pm2.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
    fn jlist_cmd(&self) -> Vec<String> {
        vec!["jlist".into()]
    }
}

struct Slotctl<'a> {
    env: &'a TestEnv,
}

impl Sup for Slotctl<'_> {
    fn name(&self) -> &'static str {
        "slotctl"
    }
    fn cli(&self, args: &[&str]) -> Output {
        let mut a = vec!["pm2"];
        a.extend_from_slice(args);
        self.env.slotctl(&a)
    }
    fn daemon_pid(&self) -> u32 {
        std::fs::read_to_string(self.env.path("run/slotctl.lock"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
    fn jlist_cmd(&self) -> Vec<String> {
        vec!["jlist".into()]
    }
}

fn timed<S: Sup + ?Sized>(s: &S, args: &[&str]) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let out = s.cli(args);
    let t = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{} {args:?} failed: {}",
            s.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t)
}

fn wait_online<S: Sup + ?Sized>(s: &S, n: usize, limit: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let got = s.online();
        if got >= n {
            return Ok(());
        }
        if t0.elapsed() > limit {
            bail!("{}: only {got}/{n} online after {limit:?}", s.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Default, Debug)]
struct Row {
    rss_small: f64,
    rss_many: f64,
    start_many: f64,
    jlist_ms: f64,
    jlist_bytes: usize,
    restart_all: f64,
    stop_all: f64,
    respawn_ms: f64,
}

struct Plan {
    small: usize,
    many: usize,
    restart: usize,
    ttyd: usize,
}

fn run<S: Sup + ?Sized>(
    s: &S,
    dir: &Path,
    plan: &Plan,
    ttyd_bin: Option<&Path>,
) -> anyhow::Result<Row> {
    let mut row = Row::default();
    // Restart-all with `restart` apps.
    let eco = ecosystem(dir, plan.restart, None);
    timed(s, &["start", eco.to_str().unwrap()])?;
    wait_online(s, plan.restart, Duration::from_secs(120))?;
    row.restart_all = timed(s, &["restart", "all"])?;
    wait_online(s, plan.restart, Duration::from_secs(120))?;
    timed(s, &["delete", "all"])?;

    // RSS at `small`.
    let eco = ecosystem(dir, plan.small, None);
    timed(s, &["start", eco.to_str().unwrap()])?;
    wait_online(s, plan.small, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(3));
    row.rss_small = rss_mib(s.daemon_pid());
    timed(s, &["delete", "all"])?;

    // `many` apps (+ ttyd): start, RSS, jlist, respawn, stop.
    let extra = ttyd_bin.map(|t| (t, plan.ttyd));
    let eco = ecosystem(dir, plan.many, extra);
    let total = plan.many + extra.map_or(0, |(_, k)| k);
    let t0 = Instant::now();
    timed(s, &["start", eco.to_str().unwrap()])?;
    wait_online(s, total, Duration::from_secs(300))?;
    row.start_many = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(5));
    row.rss_many = rss_mib(s.daemon_pid());
    let cmd = s.jlist_cmd();
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let mut lat = Vec::new();
    for _ in 0..10 {
        let t0 = Instant::now();
        let out = s.cli(&args);
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        row.jlist_bytes = out.stdout.len();
    }
    row.jlist_ms = median(lat);
    let mut resp = Vec::new();
    for i in 0..10 {
        resp.push(respawn_ms((i * 7) % plan.many)?);
        std::thread::sleep(Duration::from_millis(300));
    }
    row.respawn_ms = median(resp);
    row.stop_all = timed(s, &["stop", "all"])?;
    timed(s, &["delete", "all"])?;
    Ok(row)
}

fn install_pm2(dir: &Path) -> anyhow::Result<PathBuf> {
    eprintln!(
        "installing pm2 from the npm registry into {} …",
        dir.display()
    );
    let st = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(dir)
        .arg("pm2")
        .status()
        .context("running npm")?;
    if !st.success() {
        bail!("npm install pm2 failed");
    }
    Ok(dir.join("node_modules/.bin/pm2"))
}

fn main() -> anyhow::Result<()> {
    let plan = Plan {
        small: arg("--small", 50),
        many: arg("--many", 1000),
        restart: arg("--restart", 200),
        ttyd: arg("--ttyd", 5),
    };
    let tmp = tempfile::Builder::new().prefix("pm2b").tempdir_in("/tmp")?;
    let ttyd_bin = [
        "/opt/slotgate/ttyd/bin/ttyd",
        "/usr/bin/ttyd",
        "/usr/local/bin/ttyd",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists());

    // PM2 (skipped with --skip-pm2, to iterate on slotctl alone).
    let skip_pm2 = std::env::args().any(|a| a == "--skip-pm2");
    let (version, pm2_row) = if skip_pm2 {
        ("(skipped)".to_string(), Row::default())
    } else {
        let pm2_bin = install_pm2(&tmp.path().join("npm"))?;
        let pm2 = Pm2 {
            bin: pm2_bin,
            home: tmp.path().join("pm2home"),
        };
        let version = String::from_utf8_lossy(&pm2.cli(&["--version"]).stdout)
            .trim()
            .to_string();
        eprintln!("PM2 {version}: running …");
        let row = run(&pm2, tmp.path(), &plan, ttyd_bin.as_deref());
        let _ = pm2.cli(&["kill"]);
        let row = row?;
        eprintln!("PM2: {row:?}");
        (version, row)
    };

    // slotctl (release build next to this binary), with the same apps;
    // the ttyd processes are real slots (ttyd + tmux).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut env = TestEnv::custom(&[], "idle_timeout = \"off\"\nmax_slots = 5000\n");
    rt.block_on(env.start_daemon());
    eprintln!("slotctl {}: running …", bin("slotctl").display());
    let sc = Slotctl { env: &env };
    for i in 0..plan.ttyd {
        let out = env.slotctl(&["create", &format!("t{i}"), "--template", "shell"]);
        if !out.status.success() {
            bail!(
                "slot create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let sc_row = run(&sc, tmp.path(), &plan, None)?;
    eprintln!("slotctl: {sc_row:?}");
    drop(env);

    println!();
    println!(
        "PM2 {version} vs slotctl, same host, same apps ({} `sleep` apps + {} ttyd)",
        plan.many, plan.ttyd
    );
    println!();
    println!("| measure | PM2 | slotctl | target |");
    println!("|---|---|---|---|");
    println!(
        "| supervisor RSS, {} apps | {:.1} MiB | {:.1} MiB | — |",
        plan.small, pm2_row.rss_small, sc_row.rss_small
    );
    println!(
        "| supervisor RSS, {} apps | {:.1} MiB | {:.1} MiB | < 20 MB |",
        plan.many, pm2_row.rss_many, sc_row.rss_many
    );
    println!(
        "| start {} apps (CLI → all online) | {:.2} s | {:.2} s | — |",
        plan.many, pm2_row.start_many, sc_row.start_many
    );
    println!(
        "| `jlist` at {} apps (p50 of 10, whole CLI process) | {:.0} ms ({} KB) | {:.0} ms ({} KB) | < 50 ms |",
        plan.many,
        pm2_row.jlist_ms,
        pm2_row.jlist_bytes / 1024,
        sc_row.jlist_ms,
        sc_row.jlist_bytes / 1024
    );
    println!(
        "| `restart all`, {} apps | {:.2} s | {:.2} s | < 2 s |",
        plan.restart, pm2_row.restart_all, sc_row.restart_all
    );
    println!(
        "| `stop all`, {} apps | {:.2} s | {:.2} s | < 3 s |",
        plan.many, pm2_row.stop_all, sc_row.stop_all
    );
    println!(
        "| kill -9 → replacement running (p50 of 10) | {:.1} ms | {:.1} ms | — |",
        pm2_row.respawn_ms, sc_row.respawn_ms
    );
    Ok(())
}
