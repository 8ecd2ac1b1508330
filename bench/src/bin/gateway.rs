//! Gateway benchmark: what slotgate adds on the way to a slot, next to what
//! nginx adds on the same way. Not a test; prints a table.
//!
//!   cargo build --release -p proxy -p bench && ./target/release/gateway
//!
//! One ttyd (running bash) listens on a unix socket with the base path and
//! auth header slotctl would give it. Five ways in:
//!   direct    WebSocket straight to the unix socket
//!   nginx     nginx 1.22 with the configuration ttyd's documentation gives
//!             (bench/nginx/nginx.conf, first server) → unix socket
//!   nginx-ka  the same nginx tuned with upstream keepalive (second server)
//!   tokio     bench's bare-relay: a byte copy both ways on a tokio runtime
//!             shaped like slotgate's, nothing else (the floor for a tokio
//!             proxy; the client sends ttyd's auth header itself)
//!   slotgate  slotgate (plain HTTP on loopback, default settings: access
//!             log on, rate limits on, session recording on) → unix socket
//! Keystroke round trip: send one character as ttyd INPUT, wait for its echo
//! in OUTPUT. One session per way stays open; the ways take turns in
//! blocks of 40 keystrokes, so noise over time falls on all of them alike,
//! and a paired bootstrap over the turns puts a 95 % interval on
//! slotgate's difference from each nginx, tokio's from nginx, and
//! slotgate's from tokio.
//! Throughput: wrk on `GET /slot/<id>/token` through each proxy, in turns
//! (rotated order), median reported, with the CPU time per request of the
//! proxy's processes (nginx: its workers) and of ttyd during the run, and
//! slotgate's req/s over each nginx's with a 95 % interval over the turns.
//!
//! Environment: BENCH_KEYS (keystrokes per way, default 6000: p99 then
//! rests on 60 samples per way), BENCH_WRK_SECS (default 2), BENCH_WRK_RUNS
//! (default 10: wrk turns per proxy, in a rotated order),
//! BENCH_WORKERS (nginx workers, default 2), BENCH_THREADS (slotgate
//! threads; default: slotgate's own default), BENCH_EXTRA (more lines for
//! slotgate's config, after its `[slotgate]` section's own keys),
//! SLOTGATE_TTYD (ttyd binary).

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use bench::{cpu_secs, env_num, median, quantile, ttyd_in_tempdir, wait_until, Killed, Typist};
use slotgate_tests::gateway::{free_port, tty_over, Slotgate, Stream};
use slotgate_tests::ttyd::TtydClient;

type Tty = TtydClient<Stream>;

const SLOT: &str = "bench";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Direct,
    Nginx,
    NginxKa,
    Tokio,
    Slotgate,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Direct => "direct",
            Way::Nginx => "nginx",
            Way::NginxKa => "nginx-ka",
            Way::Tokio => "tokio",
            Way::Slotgate => "slotgate",
        }
    }
}

struct Setup {
    socket: PathBuf,
    nginx_port: u16,
    nginx_ka_port: u16,
    tokio_port: u16,
    gateway: Slotgate,
}

impl Setup {
    fn port(&self, way: Way) -> u16 {
        match way {
            Way::Direct => 0,
            Way::Nginx => self.nginx_port,
            Way::NginxKa => self.nginx_ka_port,
            Way::Tokio => self.tokio_port,
            Way::Slotgate => self.gateway.addr.port(),
        }
    }
}

async fn connect(setup: &Setup, way: Way) -> anyhow::Result<Tty> {
    let path = format!("/slot/{SLOT}/ws");
    match way {
        Way::Direct => {
            let s: Stream = Box::new(tokio::net::UnixStream::connect(&setup.socket).await?);
            tty_over(
                s,
                "localhost",
                &path,
                &[(slotapi::TTYD_AUTH_HEADER, "bench")],
            )
            .await
        }
        Way::Nginx | Way::NginxKa => {
            let port = setup.port(way);
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            tcp.set_nodelay(true)?;
            tty_over(Box::new(tcp), &format!("127.0.0.1:{port}"), &path, &[]).await
        }
        Way::Tokio => {
            let port = setup.port(way);
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            tcp.set_nodelay(true)?;
            tty_over(
                Box::new(tcp),
                &format!("127.0.0.1:{port}"),
                &path,
                &[(slotapi::TTYD_AUTH_HEADER, "bench")],
            )
            .await
        }
        Way::Slotgate => setup.gateway.tty(SLOT).await,
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One wrk run: requests per second, and the CPU time per request spent
/// by the proxy's processes (`proxy`) and by ttyd, in µs.
struct WrkRun {
    rps: f64,
    proxy_us: f64,
    ttyd_us: f64,
}

/// `header`: one more request header (`Name: value`), if any.
fn wrk(
    port: u16,
    secs: u64,
    proxy: &[u32],
    ttyd: u32,
    header: Option<&str>,
) -> anyhow::Result<WrkRun> {
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    let (proxy0, ttyd0) = (cpu(proxy), cpu_secs(ttyd));
    let url = format!("http://127.0.0.1:{port}/slot/{SLOT}/token");
    let out = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{secs}s"), &url])
        .args(header.map(|h| ["-H", h]).into_iter().flatten())
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw non-2xx answers from port {port}:\n{text}");
    }
    let (proxy_s, ttyd_s) = (cpu(proxy) - proxy0, cpu_secs(ttyd) - ttyd0);
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    // "  123456 requests in 5.00s, …"
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|x| x.0))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no request count in wrk output:\n{text}"))?;
    let per_request = |s: f64| s * 1e6 / requests.max(1.0);
    Ok(WrkRun {
        rps,
        proxy_us: per_request(proxy_s),
        ttyd_us: per_request(ttyd_s),
    })
}

/// A wrk column's value, or a dash when wrk did not run (`BENCH_WRK_RUNS=0`).
fn wrk_col(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.decimals$}")
    }
}

/// Waits (10 s at most) until something accepts on loopback `port`.
async fn listening(what: &str, port: u16) -> anyhow::Result<()> {
    wait_until(what, Duration::from_secs(10), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

async fn run() -> anyhow::Result<()> {
    let keys = env_num("BENCH_KEYS", 6000) as usize;
    let wrk_secs = env_num("BENCH_WRK_SECS", 2);
    let wrk_runs = env_num("BENCH_WRK_RUNS", 10) as usize;
    let workers = env_num("BENCH_WORKERS", 2);

    let (tmp, socket, ttyd) = ttyd_in_tempdir(SLOT).await?;
    let dir = tmp.path();

    let nginx_port = free_port();
    let nginx_ka_port = free_port();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp"))?;
    let template = include_str!("../../nginx/nginx.conf");
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let conf = template
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@PORT@", &nginx_port.to_string())
        .replace("@PORT_KA@", &nginx_ka_port.to_string())
        .replace("@SLOT@", SLOT)
        .replace("@WORKERS@", &workers.to_string())
        .replace("@USER@", &user);
    std::fs::write(prefix.join("nginx.conf"), conf)?;
    let nginx = Killed(
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (apt-get install nginx-light)")?,
    );
    listening("nginx", nginx_port).await?;

    let tokio_port = free_port();
    let relay = Killed(
        Command::new(slotgate_tests::bin("bare-relay"))
            .arg(format!("127.0.0.1:{tokio_port}"))
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .context("starting bench's bare-relay (cargo build --release -p bench)")?,
    );
    listening("bare-relay", tokio_port).await?;

    let gateway = bench::slotgate_in(
        dir,
        match std::env::var("BENCH_THREADS") {
            Ok(t) => format!("threads = {t}\n"),
            Err(_) => String::new(),
        } + &std::env::var("BENCH_EXTRA").unwrap_or_default(),
    )
    .await?;
    // CPU accounting: nginx's workers (children of its master), slotgate's
    // one process, ttyd.
    let nginx_workers = bench::children(nginx.0.id());
    if nginx_workers.is_empty() {
        bail!("nginx has no worker processes");
    }
    let gateway_pids = [gateway.pid().context("slotgate is not running")?];
    let relay_pids = [relay.0.id()];
    let ttyd_pid = ttyd.0.id();
    let setup = Setup {
        socket,
        nginx_port,
        nginx_ka_port,
        tokio_port,
        gateway,
    };
    let load_before = load_average();
    let threads = std::env::var("BENCH_THREADS").unwrap_or_else(|_| "default".into());

    let ways = [
        Way::Direct,
        Way::Nginx,
        Way::NginxKa,
        Way::Tokio,
        Way::Slotgate,
    ];
    // One session per way, open for the whole run. The ways take turns in
    // blocks of BLOCK keystrokes, each turn in a rotated order, so whatever
    // the machine does over time (another process waking, the CPU's clock
    // moving) falls on every way alike rather than on whichever way's
    // round it happened in.
    let mut typists = Vec::with_capacity(ways.len());
    for way in ways {
        let tty = connect(&setup, way).await?;
        typists.push(Typist::start(tty).await.context(way.name())?);
    }
    // Warm every path once (allocator, caches) before measuring.
    for t in &mut typists {
        t.keys(50, &mut Vec::new()).await?;
    }
    // CPU the proxy spends per keystroke (both frames of the round trip).
    let proxy_pids = |way: Way| -> &[u32] {
        match way {
            Way::Direct => &[],
            Way::Slotgate => &gateway_pids,
            Way::Tokio => &relay_pids,
            Way::Nginx | Way::NginxKa => &nginx_workers,
        }
    };
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    let mut key_cpu = vec![0.0f64; ways.len()];
    // blocks[way][turn]: the round trips of one block.
    let turns = keys.div_ceil(BLOCK);
    let mut blocks: Vec<Vec<Vec<Duration>>> = vec![Vec::with_capacity(turns); ways.len()];
    for turn in 0..turns {
        for k in 0..ways.len() {
            let i = (k + turn) % ways.len();
            let before = cpu(proxy_pids(ways[i]));
            let mut block = Vec::with_capacity(BLOCK);
            typists[i]
                .keys(BLOCK, &mut block)
                .await
                .context(ways[i].name())?;
            key_cpu[i] += cpu(proxy_pids(ways[i])) - before;
            blocks[i].push(block);
        }
    }
    for t in typists {
        t.finish().await?;
    }
    let mut runs: Vec<Vec<WrkRun>> = (0..ways.len()).map(|_| Vec::new()).collect();
    // The proxies take turns too, in a rotated order.
    for turn in 0..wrk_runs {
        for k in 0..ways.len() - 1 {
            let i = 1 + (k + turn) % (ways.len() - 1);
            let way = &ways[i];
            let header =
                (*way == Way::Tokio).then(|| format!("{}: bench", slotapi::TTYD_AUTH_HEADER));
            runs[i].push(wrk(
                setup.port(*way),
                wrk_secs,
                proxy_pids(*way),
                ttyd_pid,
                header.as_deref(),
            )?);
        }
    }
    let col = |f: fn(&WrkRun) -> f64| -> Vec<f64> {
        runs.iter()
            .map(|r| median(r.iter().map(f).collect()))
            .collect()
    };
    let rps = col(|r| r.rps);
    let proxy_us = col(|r| r.proxy_us);
    let ttyd_us = col(|r| r.ttyd_us);

    let mut samples: Vec<Vec<Duration>> = blocks.iter().map(|b| b.concat()).collect();
    for s in &mut samples {
        s.sort();
    }
    let p50: Vec<Duration> = samples.iter().map(|s| percentile(s, 50)).collect();
    let p99: Vec<Duration> = samples.iter().map(|s| percentile(s, 99)).collect();
    let added = |i: usize, p: &[Duration]| p[i].saturating_sub(p[0]);

    println!(
        "Gateway benchmark: {} keystrokes per way (in turns of {BLOCK}), wrk -t1 -c16 -d{wrk_secs}s x{wrk_runs} (median), \
         {workers} nginx workers, slotgate threads: {threads}, load average before: {load_before}",
        samples[0].len(),
    );
    println!();
    println!(
        "| way      | echo p50 ms | echo p99 ms | added p50 ms | added p99 ms | proxy CPU µs/key | /token req/s | proxy CPU µs/req | ttyd CPU µs/req |"
    );
    println!(
        "|----------|-------------|-------------|--------------|--------------|------------------|--------------|------------------|-----------------|"
    );
    for (i, way) in ways.iter().enumerate() {
        let (a50, a99, kc, r, pc, tc) = if i == 0 {
            let dash = || "-".to_string();
            (dash(), dash(), dash(), dash(), dash(), dash())
        } else {
            (
                ms(added(i, &p50)),
                ms(added(i, &p99)),
                format!("{:.1}", key_cpu[i] * 1e6 / samples[i].len().max(1) as f64),
                wrk_col(rps[i], 0),
                wrk_col(proxy_us[i], 1),
                wrk_col(ttyd_us[i], 1),
            )
        };
        println!(
            "| {:<8} | {:>11} | {:>11} | {:>12} | {:>12} | {:>16} | {:>12} | {:>16} | {:>15} |",
            way.name(),
            ms(p50[i]),
            ms(p99[i]),
            a50,
            a99,
            kc,
            r,
            pc,
            tc
        );
    }
    println!();
    let at = |w: Way| ways.iter().position(|x| *x == w).unwrap_or(0);
    let sg = at(Way::Slotgate);
    for way in [Way::Nginx, Way::NginxKa] {
        let i = at(way);
        let pass = |ok: bool| if ok { "met" } else { "MISSED" };
        let throughput = if rps[i].is_nan() {
            "not run".to_string()
        } else {
            format!(
                "{} ({:.2}x)",
                pass(rps[sg] >= 0.95 * rps[i]),
                rps[sg] / rps[i].max(1.0)
            )
        };
        println!(
            "targets vs {:<8}: added p50 <= {:.3} ms: {} | p99 <= 1.1x {:.3} ms: {} | req/s >= 0.95x: {throughput}",
            way.name(),
            added(i, &p50).as_secs_f64() * 1e3,
            pass(added(sg, &p50) <= added(i, &p50)),
            p99[i].as_secs_f64() * 1e3,
            pass(p99[sg].as_secs_f64() <= 1.1 * p99[i].as_secs_f64()),
        );
    }
    println!();
    println!(
        "Differences with 95 % intervals from a paired block bootstrap ({RESAMPLES} resamples of the turns; \
         an interval that spans the target means this run cannot tell):"
    );
    let pairs = [
        (Way::Slotgate, Way::Nginx),
        (Way::Slotgate, Way::NginxKa),
        (Way::Tokio, Way::Nginx),
        (Way::Slotgate, Way::Tokio),
    ];
    let mut rng = rand::rng();
    for (x, y) in pairs {
        let (a, b) = (&blocks[at(x)], &blocks[at(y)]);
        let p50 = echo_bootstrap(a, b, 50, |a, b| a - b, &mut rng);
        let p99 = echo_bootstrap(a, b, 99, |a, b| a / b, &mut rng);
        println!(
            "  {:<20} p50 {:+.3} ms ({:+.3} .. {:+.3}) | p99 {:.2}x ({:.2} .. {:.2})",
            format!("{} - {}:", x.name(), y.name()),
            p50.0 * 1e3,
            p50.1 * 1e3,
            p50.2 * 1e3,
            p99.0,
            p99.1,
            p99.2,
        );
    }
    if wrk_runs > 0 {
        for y in [Way::Nginx, Way::NginxKa] {
            let r = rps_bootstrap(&runs[sg], &runs[at(y)], &mut rng);
            println!(
                "  {:<20} req/s {:.2}x ({:.2} .. {:.2}) over {wrk_runs} paired wrk turns",
                format!("slotgate / {}:", y.name()),
                r.0,
                r.1,
                r.2,
            );
        }
    }
    Ok(())
}

/// Keystrokes per turn: one readline line (the typist clears it every 40).
const BLOCK: usize = 40;
const RESAMPLES: usize = 1000;

/// `stat` over every turn, with a 95 % interval: the turns are resampled
/// with replacement and `stat` sees the picked turns' indices, the same for
/// both ways it compares (turn `t` of one way ran next to turn `t` of the
/// other), so the interval keeps the pairing.
fn bootstrap(
    turns: usize,
    mut stat: impl FnMut(&[usize]) -> f64,
    rng: &mut impl rand::Rng,
) -> (f64, f64, f64) {
    if turns == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let all: Vec<usize> = (0..turns).collect();
    let point = stat(&all);
    let mut pick = vec![0; turns];
    let mut draws: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            for x in &mut pick {
                *x = rng.random_range(0..turns);
            }
            stat(&pick)
        })
        .collect();
    draws.sort_by(f64::total_cmp);
    (point, quantile(&draws, 0.025), quantile(&draws, 0.975))
}

/// Percentile `p` (seconds) of the picked turns' keystrokes.
fn picked_percentile(
    blocks: &[Vec<Duration>],
    pick: &[usize],
    p: usize,
    buf: &mut Vec<f64>,
) -> f64 {
    buf.clear();
    for &t in pick {
        buf.extend(blocks[t].iter().map(Duration::as_secs_f64));
    }
    let k = (buf.len() * p / 100).min(buf.len().saturating_sub(1));
    *buf.select_nth_unstable_by(k, f64::total_cmp).1
}

/// `f(percentile p of a, percentile p of b)` over paired echo turns.
fn echo_bootstrap(
    a: &[Vec<Duration>],
    b: &[Vec<Duration>],
    p: usize,
    f: fn(f64, f64) -> f64,
    rng: &mut impl rand::Rng,
) -> (f64, f64, f64) {
    let (mut buf_a, mut buf_b) = (Vec::new(), Vec::new());
    bootstrap(
        a.len().min(b.len()),
        |pick| {
            f(
                picked_percentile(a, pick, p, &mut buf_a),
                picked_percentile(b, pick, p, &mut buf_b),
            )
        },
        rng,
    )
}

/// Requests per second of `a` over `b`, summed over the picked wrk turns.
fn rps_bootstrap(a: &[WrkRun], b: &[WrkRun], rng: &mut impl rand::Rng) -> (f64, f64, f64) {
    let sum = |runs: &[WrkRun], pick: &[usize]| pick.iter().map(|&t| runs[t].rps).sum::<f64>();
    bootstrap(
        a.len().min(b.len()),
        |pick| sum(a, pick) / sum(b, pick),
        rng,
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    bench::exit_code(run().await)
}
