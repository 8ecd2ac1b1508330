//! What every benchmark binary shares: command-line numbers, order
//! statistics and the resident memory of a process. Benchmarks print
//! tables; nothing here asserts a time.

/// The number after `--name` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of `pid` in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid` in seconds, all its threads (0 when it is gone).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    // After the name: state, ppid, …; utime and stime are the 12th and
    // 13th fields.
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (num(11) + num(12)) as f64 / clock_ticks()
}

/// `getconf CLK_TCK` (100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The direct children of `pid` (e.g. nginx's workers).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    out
}

/// The `p` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// p50, p95 and p99 of `v`.
pub fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (quantile(&v, 0.5), quantile(&v, 0.95), quantile(&v, 0.99))
}

pub fn median(v: Vec<f64>) -> f64 {
    summary(v).0
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use slotgate_tests::gateway::{Options, Slotgate, Stream};
use slotgate_tests::ttyd::TtydClient;

/// The number in environment variable `name`, or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A temporary directory with one ttyd for slot `slot` on
/// `<dir>/run/slots/<slot>.sock` (see [`spawn_ttyd`]).
pub async fn ttyd_in_tempdir(slot: &str) -> anyhow::Result<(tempfile::TempDir, PathBuf, Killed)> {
    let tmp = tempfile::Builder::new()
        .prefix("sgbench")
        .tempdir_in("/tmp")?;
    let dir = tmp.path();
    let socket = dir.join("run/slots").join(format!("{slot}.sock"));
    std::fs::create_dir_all(socket.parent().unwrap_or(dir))?;
    let ttyd = spawn_ttyd(dir, &socket, slot).await?;
    Ok((tmp, socket, ttyd))
}

/// slotgate in front of [`ttyd_in_tempdir`]'s `dir` (plain HTTP on
/// loopback, data and run directories inside `dir`), with `extra` lines
/// for its `[slotgate]` section.
pub async fn slotgate_in(dir: &Path, extra: String) -> anyhow::Result<Slotgate> {
    let config = dir.join("slotgate.toml");
    std::fs::write(&config, "[paths]\ndata_dir = \"data\"\nrun_dir = \"run\"\n")?;
    Slotgate::start(
        &config,
        Options {
            tls: false,
            extra,
            ..Options::default()
        },
    )
    .await
}

/// A benchmark's exit: the error on stderr and exit 1, or success.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A child stopped when dropped: SIGTERM first, so a parent can take its
/// own children along (nginx's master stops its workers; SIGKILL would
/// leave them running, still bound to the benchmark's ports), then SIGKILL
/// after 5 s.
pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `SLOTGATE_TTYD`, else the installed ttyd.
pub fn find_ttyd() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("SLOTGATE_TTYD") {
        return Ok(PathBuf::from(p));
    }
    let opt = PathBuf::from("/opt/slotgate/ttyd/bin/ttyd");
    if opt.exists() {
        return Ok(opt);
    }
    bail!("no ttyd found; run scripts/install-ttyd.sh or set SLOTGATE_TTYD")
}

/// Poll `ok` until it holds, or fail after `within`.
pub async fn wait_until(
    what: &str,
    within: Duration,
    mut ok: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !ok().await {
        if Instant::now() > deadline {
            bail!("{what} not ready within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One ttyd running a plain bash (prompt `$ `) on `socket`, with the base
/// path and auth header slotctl would give slot `slot`; returns once it
/// answers.
pub async fn spawn_ttyd(dir: &Path, socket: &Path, slot: &str) -> anyhow::Result<Killed> {
    let ttyd = find_ttyd()?;
    let child = Killed(
        Command::new(&ttyd)
            .arg("-i")
            .arg(socket)
            .args([
                "-b",
                &format!("/slot/{slot}"),
                "-H",
                slotapi::TTYD_AUTH_HEADER,
                "-W",
            ])
            .args(["bash", "--norc", "--noprofile", "-i"])
            .env("PS1", "$ ")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("ttyd.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", ttyd.display()))?,
    );
    let path = format!("/slot/{slot}/token");
    wait_until("ttyd", Duration::from_secs(10), async || {
        matches!(
            slotapi::get_unix(
                socket,
                &path,
                &[(slotapi::TTYD_AUTH_HEADER, "bench")],
                Duration::from_secs(1)
            )
            .await,
            Ok((200, _))
        )
    })
    .await?;
    Ok(child)
}

/// A ttyd session typing one character at a time and timing each echo:
/// the character goes out as ttyd INPUT, the clock stops when it comes
/// back in OUTPUT. Several can be open at once, so a benchmark can take
/// turns between ways in short blocks.
pub struct Typist {
    tty: TtydClient<Stream>,
    typed: usize,
}

impl Typist {
    /// Waits for the shell's prompt and lets the first screen settle.
    pub async fn start(mut tty: TtydClient<Stream>) -> anyhow::Result<Self> {
        tty.expect("$ ", Duration::from_secs(10)).await?;
        tty.drain_for(Duration::from_millis(300)).await;
        Ok(Self { tty, typed: 0 })
    }

    /// Types `n` characters and appends each one's round trip to `samples`.
    pub async fn keys(&mut self, n: usize, samples: &mut Vec<Duration>) -> anyhow::Result<()> {
        let letters = b"abcdefghijklmnopqrstuvwxyz";
        for _ in 0..n {
            let i = self.typed;
            self.typed += 1;
            if i % 40 == 39 {
                // Ctrl-U: keep the line short so readline never redraws it.
                self.tty.input("\u{15}").await?;
                self.tty.drain_for(Duration::from_millis(30)).await;
            }
            let c = std::str::from_utf8(&letters[i % letters.len()..][..1])?;
            let from = self.tty.screen.len();
            let t0 = Instant::now();
            self.tty.input(c).await?;
            self.tty
                .expect_from(from, c, Duration::from_secs(5))
                .await
                .with_context(|| format!("echo of {c:?}"))?;
            samples.push(t0.elapsed());
        }
        Ok(())
    }

    /// Exits the shell and closes the session.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.tty.input("\u{15}exit\r").await?;
        self.tty.close().await;
        Ok(())
    }
}

/// Keystroke round trips: send one character as ttyd INPUT, wait for its
/// echo in OUTPUT, `n` times; then exit the shell.
pub async fn echo_latencies(tty: TtydClient<Stream>, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut typist = Typist::start(tty).await?;
    let mut samples = Vec::with_capacity(n);
    typist.keys(n, &mut samples).await?;
    typist.finish().await?;
    Ok(samples)
}
