//! Reload benchmark: what clients see while the gateway is replaced, by a
//! reload (`slotgate reload`: the new gateway takes the listening sockets
//! over) and by a restart (SIGTERM, then a new process, as `systemctl
//! restart` does). Not a test; prints a table.
//!
//!   cargo build --release -p proxy -p bench && ./target/release/reload
//!
//! One ttyd (bash) on a unix socket and slotgate in front of it (plain HTTP
//! on loopback, release build). Meanwhile:
//!   visitors  BENCH_CLIENTS (default 4) tasks, each opening a new
//!             connection for `GET /slot/<id>/token` again and again
//!             (`Connection: close`); an answer other than 200, a refused
//!             or reset connection or 2 s without an answer is a failure
//!   typist    one terminal session typing a key every 20 ms and timing
//!             its echo; when the session ends it reconnects (a new
//!             WebSocket, as ttyd's page does) and the time until keys
//!             echo again is an outage
//! BENCH_ROUNDS (default 5) restarts, then as many reloads (in that order:
//! after a reload the typist's session stays with the old gateway, which
//! a restart of the new one would not end).
//! The visitors connect far faster than `connections_per_ip` allows, so
//! that limit is off. Per event: failed requests, the longest time without a
//! successful answer (from 0.5 s before the event to 1 s after the new
//! gateway serves; for a reload the window also covers the old gateway's
//! closing of its listeners 5 s after the handover), how long the event
//! took (reload: `slotgate reload` until it exits; restart: SIGTERM until
//! `/livez` answers), and the typist's failures and slowest echo.
//! The gateway runs with `shutdown_grace = "0s"`, so a restart waits for
//! nothing (the best case: with the default 5 s and a terminal open, the
//! old process waits up to 5 s before the new one can start).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::{env_num, quantile, ttyd_in_tempdir, Killed, Typist};
use slotgate_tests::gateway::Slotgate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SLOT: &str = "bench";
const TYPE_EVERY: Duration = Duration::from_millis(20);
/// A request or an echo that takes longer than this failed.
const TOO_LONG: Duration = Duration::from_secs(2);
/// How long after a reload the old gateway still accepts (Pingora's fixed
/// close timeout), plus a margin.
const OLD_ACCEPTS_FOR: Duration = Duration::from_millis(6000);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    bench::exit_code(run().await)
}

/// Every visitor request: when it ended and whether it was answered 200.
#[derive(Default)]
struct Requests(Mutex<Vec<(Instant, bool)>>);

/// The typist's record: echo times and the failures, each with the time
/// until keys echoed again.
#[derive(Default)]
struct Typing {
    echoes: Mutex<Vec<(Instant, Duration)>>,
    outages: Mutex<Vec<(Instant, Duration)>>,
}

async fn visitor(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, log: Arc<Requests>) {
    let path = format!("/slot/{SLOT}/token");
    // Bounded: at most 10 minutes of requests.
    let end = Instant::now() + Duration::from_secs(600);
    while !stop.load(Relaxed) && Instant::now() < end {
        let ok = answered_200(addr, &path, TOO_LONG).await;
        log.0.lock().unwrap().push((Instant::now(), ok));
        if !ok {
            // A refused connection fails at once: do not spin.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn typist(gw: Arc<Slotgate>, stop: Arc<AtomicBool>, log: Arc<Typing>) {
    let end = Instant::now() + Duration::from_secs(600);
    let mut session: Option<Typist> = None;
    let mut down_since: Option<Instant> = None;
    while !stop.load(Relaxed) && Instant::now() < end {
        let t = Instant::now();
        if session.is_none() {
            let open = async { Typist::start(gw.tty(SLOT).await?).await };
            session = tokio::time::timeout(Duration::from_secs(10), open)
                .await
                .ok()
                .and_then(Result::ok);
            if session.is_none() {
                down_since.get_or_insert(t);
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        }
        let Some(s) = session.as_mut() else { continue };
        let mut one = Vec::with_capacity(1);
        match tokio::time::timeout(TOO_LONG, s.keys(1, &mut one)).await {
            Ok(Ok(())) => {
                if let Some(since) = down_since.take() {
                    log.outages.lock().unwrap().push((since, since.elapsed()));
                }
                log.echoes.lock().unwrap().push((Instant::now(), one[0]));
            }
            _ => {
                session = None;
                down_since.get_or_insert(t);
                continue;
            }
        }
        tokio::time::sleep_until((t + TYPE_EVERY).into()).await;
    }
}

/// Whether `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// `GET path` on a new connection (`Connection: close`) answered 200
/// within `within`.
async fn answered_200(addr: std::net::SocketAddr, path: &str, within: Duration) -> bool {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::with_capacity(512);
        s.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(within, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// One event's window and how long it took.
struct Event {
    kind: &'static str,
    start: Instant,
    took: Duration,
    window_end: Instant,
}

async fn reload(gw: &Slotgate, bin: &Path) -> anyhow::Result<Event> {
    let old = gw.serving_pid().context("no serving gateway")?;
    let start = Instant::now();
    let out = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&gw.config)
        .arg("reload")
        .output()
        .await?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("slotgate reload: {}", String::from_utf8_lossy(&out.stderr));
    }
    let new = gw.serving_pid().context("no gateway after the reload")?;
    if new == old {
        bail!("the reload did not change the serving process");
    }
    // Through the old gateway's closing of the listeners.
    tokio::time::sleep(OLD_ACCEPTS_FOR).await;
    Ok(Event {
        kind: "reload",
        start,
        took,
        window_end: start + took + OLD_ACCEPTS_FOR,
    })
}

async fn restart(gw: &Slotgate, bin: &Path, started: &mut Vec<Killed>) -> anyhow::Result<Event> {
    let old = gw.serving_pid().context("no serving gateway")?;
    let start = Instant::now();
    let pid = rustix::process::Pid::from_raw(old as i32).context("pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    bench::wait_until(
        "the old gateway to exit",
        Duration::from_secs(20),
        async || ended(old),
    )
    .await?;
    let child = Command::new(bin)
        .arg("--config")
        .arg(&gw.config)
        .env("SLOTGATE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::options()
                .append(true)
                .open(&gw.stderr_path)?,
        )
        .spawn()?;
    started.push(Killed(child));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answered_200(gw.addr, "/livez", Duration::from_secs(1)).await {
        if Instant::now() > deadline {
            bail!("the restarted gateway did not answer within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Event {
        kind: "restart",
        start,
        took,
        window_end: start + took + Duration::from_secs(1),
    })
}

/// Per event: failed requests, the longest time without an answer, the
/// typist's failures and slowest echo in the window.
struct Seen {
    requests: usize,
    failed: usize,
    longest_gap: Duration,
    key_failures: usize,
    slowest_echo: Duration,
    longest_outage: Duration,
}

fn seen(e: &Event, requests: &Requests, typing: &Typing) -> Seen {
    let from = e.start - Duration::from_millis(500);
    let all = requests.0.lock().unwrap();
    let window: Vec<&(Instant, bool)> = all
        .iter()
        .filter(|(t, _)| *t >= from && *t <= e.window_end)
        .collect();
    let mut ok: Vec<Instant> = window
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(t, _)| *t)
        .collect();
    ok.sort();
    let mut marks = vec![from];
    marks.extend(ok);
    marks.push(e.window_end);
    let longest_gap = marks
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or_default();
    let in_window = |t: &Instant| *t >= from && *t <= e.window_end;
    let outages = typing.outages.lock().unwrap();
    let mine: Vec<Duration> = outages
        .iter()
        .filter(|(t, _)| in_window(t))
        .map(|(_, d)| *d)
        .collect();
    let slowest_echo = typing
        .echoes
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| in_window(t))
        .map(|(_, d)| *d)
        .max()
        .unwrap_or_default();
    Seen {
        requests: window.len(),
        failed: window.iter().filter(|(_, ok)| !ok).count(),
        longest_gap,
        key_failures: mine.len(),
        slowest_echo,
        longest_outage: mine.into_iter().max().unwrap_or_default(),
    }
}

async fn run() -> anyhow::Result<()> {
    let rounds = env_num("BENCH_ROUNDS", 5) as usize;
    let clients = env_num("BENCH_CLIENTS", 4) as usize;
    let (tmp, _socket, _ttyd) = ttyd_in_tempdir(SLOT).await?;
    // The visitors open thousands of connections a second from one
    // address: the per-address connection limit would refuse them.
    let extra = "[slotgate.rate_limits]\nconnections_per_ip = 0\n".to_string();
    let gw = Arc::new(bench::slotgate_in(tmp.path(), extra).await?);
    let bin = slotgate_tests::bin("slotgate");

    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(Requests::default());
    let typing = Arc::new(Typing::default());
    let mut tasks = Vec::new();
    for _ in 0..clients {
        tasks.push(tokio::spawn(visitor(
            gw.addr,
            Arc::clone(&stop),
            Arc::clone(&requests),
        )));
    }
    tasks.push(tokio::spawn(typist(
        Arc::clone(&gw),
        Arc::clone(&stop),
        Arc::clone(&typing),
    )));
    // Settle: every visitor answered, the typist typing.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut started = Vec::new();
    let mut events = Vec::new();
    // Restarts first: after a reload the typist's session stays with an
    // old gateway (for `reload_grace`), which a restart of the serving
    // one would not touch.
    for _ in 0..rounds {
        events.push(restart(&gw, &bin, &mut started).await?);
    }
    for _ in 0..rounds {
        events.push(reload(&gw, &bin).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(pid) = gw.serving_pid() {
        let pid = rustix::process::Pid::from_raw(pid as i32).context("pid")?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }

    println!(
        "{rounds} rounds, {clients} visitors opening a connection per request to /slot/{SLOT}/token, one terminal typing every {} ms",
        TYPE_EVERY.as_millis()
    );
    println!();
    println!("| event | requests | failed | longest without an answer ms (median / max) | took ms (median / max) | terminal failures | longest terminal outage ms | slowest echo ms (max) |");
    println!("|---|---|---|---|---|---|---|---|");
    for kind in ["restart", "reload"] {
        let mine: Vec<(&Event, Seen)> = events
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| (e, seen(e, &requests, &typing)))
            .collect();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut gaps: Vec<f64> = mine.iter().map(|(_, s)| ms(s.longest_gap)).collect();
        gaps.sort_by(f64::total_cmp);
        let mut took: Vec<f64> = mine.iter().map(|(e, _)| ms(e.took)).collect();
        took.sort_by(f64::total_cmp);
        let sum = |f: fn(&Seen) -> usize| mine.iter().map(|(_, s)| f(s)).sum::<usize>();
        let max = |f: fn(&Seen) -> Duration| mine.iter().map(|(_, s)| ms(f(s))).fold(0.0, f64::max);
        println!(
            "| {kind} | {} | {} | {:.1} / {:.1} | {:.0} / {:.0} | {} | {:.0} | {:.1} |",
            sum(|s| s.requests),
            sum(|s| s.failed),
            quantile(&gaps, 0.5),
            gaps.last().copied().unwrap_or_default(),
            quantile(&took, 0.5),
            took.last().copied().unwrap_or_default(),
            sum(|s| s.key_failures),
            max(|s| s.longest_outage),
            max(|s| s.slowest_echo),
        );
    }
    drop(started);
    Ok(())
}
