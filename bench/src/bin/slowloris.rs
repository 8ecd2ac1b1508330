//! Slow-client benchmark: what one address that opens many connections and
//! trickles request headers into them (a "slowloris") costs slotgate, and
//! what a user at another address sees meanwhile. Not a test; prints a
//! table.
//!
//!   cargo build --release -p proxy -p bench && ./target/release/slowloris
//!
//! One ttyd (bash) on a unix socket and slotgate in front of it (plain HTTP
//! on loopback), run twice: with its default connection limits and with
//! them off (`connections_per_ip = 0`, `max_connections_per_ip = 0`,
//! `header_timeout = "5m"`, `max_header_size = "1M"`: Pingora's own
//! limit). Each run has three phases:
//!   quiet   the user alone
//!   attack  the attacker, at 127.0.0.2, keeps up to BENCH_ATTACK (default
//!           2000) connections: each sends a request line (and
//!           BENCH_HEADER_BYTES of header lines) and then one
//!           header line a second, never the end of the headers; a
//!           connection the gateway closes is opened again a second later
//!   after   the attacker gone
//! The user, at 127.0.0.1, meanwhile asks `GET /slot/<id>/token` on a fresh
//! connection every 20 ms (a new visitor each time) and types into a
//! terminal session opened in the quiet phase.
//! Per phase: the most connections slotgate serves at once (its
//! `slotgate_connections_open`, the user's included), the most attacker
//! connections open as the attacker sees them (connected and not yet seen
//! closed, so ones being refused count for a moment), the attacker's
//! connects, slotgate's refusals and header timeouts (its
//! /metrics), its most open file descriptors and resident memory, and the
//! user's /token and keystroke-echo latencies and failures.
//!
//! Environment: BENCH_ATTACK (attacker connections, default 2000),
//! BENCH_HEADER_BYTES (header bytes each attacker connection sends at once
//! before trickling, in lines of 1000; default 0),
//! BENCH_HEADER_TIMEOUT (slotgate's header_timeout in the defended run,
//! seconds, default 5), BENCH_ATTACK_SECS (default: header_timeout + 5),
//! SLOTGATE_TTYD (ttyd binary).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::{env_num, quantile, rss_kib, ttyd_in_tempdir, Typist};
use slotgate_tests::gateway::{tty_over, Slotgate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SLOT: &str = "bench";
const QUIET: Duration = Duration::from_secs(2);
const AFTER: Duration = Duration::from_secs(3);
/// How often the user's probe asks, and the sampler looks.
const PROBE_EVERY: Duration = Duration::from_millis(20);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The attacker's pace: a header line a second on each connection, and a
/// closed connection opened again a second later.
const TRICKLE_EVERY: Duration = Duration::from_secs(1);
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    bench::exit_code(run().await)
}

/// What the attacker's connections are doing, shared by its tasks.
#[derive(Default)]
struct Attack {
    open: AtomicU64,
    connects: AtomicU64,
    stop: AtomicBool,
}

/// One attacker connection, opened again whenever the gateway closes it,
/// until the attack stops.
async fn attacker(target: SocketAddr, attack: Arc<Attack>, fill: Arc<String>) {
    while !attack.stop.load(Relaxed) {
        let sock = match tokio::net::TcpSocket::new_v4() {
            Ok(s) => s,
            Err(_) => return,
        };
        if sock.bind(([127, 0, 0, 2], 0).into()).is_err() {
            return;
        }
        attack.connects.fetch_add(1, Relaxed);
        let Ok(mut s) = sock.connect(target).await else {
            tokio::time::sleep(RECONNECT_AFTER).await;
            continue;
        };
        attack.open.fetch_add(1, Relaxed);
        let mut line = 0u32;
        let mut sent = s
            .write_all(b"GET /slot/bench/token HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .is_ok()
            && s.write_all(fill.as_bytes()).await.is_ok();
        let mut buf = [0u8; 256];
        while sent && !attack.stop.load(Relaxed) {
            tokio::select! {
                r = s.read(&mut buf) => {
                    // Closed: reconnect. (Bytes, an answer, never come.)
                    if matches!(r, Ok(0) | Err(_)) { break; }
                }
                () = tokio::time::sleep(TRICKLE_EVERY) => {
                    line += 1;
                    sent = s.write_all(format!("X-Slow-{line}: a\r\n").as_bytes()).await.is_ok();
                }
            }
        }
        attack.open.fetch_sub(1, Relaxed);
        if !attack.stop.load(Relaxed) {
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }
}

/// The user's samples over one phase.
#[derive(Default)]
struct Phase {
    token_ms: Vec<f64>,
    token_failures: u64,
    echo_ms: Vec<f64>,
    echo_failures: u64,
    /// Attacker connections connected and not yet seen closed (includes
    /// ones the gateway is closing at that moment).
    attacker_max: u64,
    /// slotgate's own count of connections it serves (the user's included).
    gateway_open_max: u64,
    fds_max: u64,
    rss_max_kib: u64,
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// A counter's value in slotgate's /metrics text (0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[derive(Clone, Copy, Default)]
struct Counters {
    refused_rate: u64,
    refused_open: u64,
    header_timeouts: u64,
    too_large: u64,
}

async fn counters(gw: &Slotgate) -> anyhow::Result<Counters> {
    let m = gw.get("/metrics").await?.text();
    Ok(Counters {
        refused_rate: metric(
            &m,
            "slotgate_connections_refused_total{reason=\"per_ip_rate\"}",
        ),
        refused_open: metric(
            &m,
            "slotgate_connections_refused_total{reason=\"per_ip_open\"}",
        ),
        header_timeouts: metric(&m, "slotgate_header_timeouts_total"),
        too_large: metric(&m, "slotgate_headers_too_large_total"),
    })
}

/// The user's side and the sampler, for `length`.
async fn observe(gw: &Slotgate, typist: &mut Typist, attack: &Attack, length: Duration) -> Phase {
    let pid = gw.pid().unwrap_or(0);
    let mut phase = Phase::default();
    let end = Instant::now() + length;
    let mut next_sample = Instant::now();
    while Instant::now() < end {
        let t = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(2), gw.get("/slot/bench/token"))
            .await
            .is_ok_and(|r| r.is_ok_and(|r| r.status == 200));
        if ok {
            phase.token_ms.push(t.elapsed().as_secs_f64() * 1e3);
        } else {
            phase.token_failures += 1;
        }
        let mut echo = Vec::with_capacity(4);
        match tokio::time::timeout(Duration::from_secs(2), typist.keys(4, &mut echo)).await {
            Ok(Ok(())) => phase
                .echo_ms
                .extend(echo.iter().map(|d| d.as_secs_f64() * 1e3)),
            _ => phase.echo_failures += 1,
        }
        if Instant::now() >= next_sample {
            phase.attacker_max = phase.attacker_max.max(attack.open.load(Relaxed));
            if let Ok(m) = gw.get("/metrics").await {
                let open = metric(&m.text(), "slotgate_connections_open");
                phase.gateway_open_max = phase.gateway_open_max.max(open);
            }
            phase.fds_max = phase.fds_max.max(open_fds(pid));
            phase.rss_max_kib = phase.rss_max_kib.max(rss_kib(pid));
            next_sample += SAMPLE_EVERY;
        }
        tokio::time::sleep_until((t + PROBE_EVERY).into()).await;
    }
    phase
}

struct Row {
    config: &'static str,
    phase: &'static str,
    p: Phase,
    connects: u64,
    c: Counters,
}

async fn one_run(
    config: &'static str,
    extra: String,
    attack_conns: usize,
    attack_for: Duration,
    fill: Arc<String>,
) -> anyhow::Result<Vec<Row>> {
    let (tmp, _socket, _ttyd) = ttyd_in_tempdir(SLOT).await?;
    let gw = bench::slotgate_in(tmp.path(), extra).await?;
    let tty = tty_over(
        Box::new(tokio::net::TcpStream::connect(gw.addr).await?),
        &gw.authority(),
        &format!("/slot/{SLOT}/ws"),
        &[],
    )
    .await?;
    let mut typist = Typist::start(tty).await.context("the user's terminal")?;
    let attack = Arc::new(Attack::default());
    let mut rows = Vec::new();

    let c0 = counters(&gw).await?;
    let p = observe(&gw, &mut typist, &attack, QUIET).await;
    rows.push(Row {
        config,
        phase: "quiet",
        p,
        connects: 0,
        c: Counters::default(),
    });

    let mut tasks = Vec::with_capacity(attack_conns);
    for _ in 0..attack_conns {
        tasks.push(tokio::spawn(attacker(
            gw.addr,
            Arc::clone(&attack),
            Arc::clone(&fill),
        )));
    }
    let p = observe(&gw, &mut typist, &attack, attack_for).await;
    attack.stop.store(true, Relaxed);
    let c1 = counters(&gw).await?;
    rows.push(Row {
        config,
        phase: "attack",
        p,
        connects: attack.connects.load(Relaxed),
        c: diff(c1, c0),
    });
    for t in tasks {
        let _ = t.await;
    }
    let p = observe(&gw, &mut typist, &attack, AFTER).await;
    let c2 = counters(&gw).await?;
    rows.push(Row {
        config,
        phase: "after",
        p,
        connects: 0,
        c: diff(c2, c1),
    });
    typist.finish().await?;
    drop(gw);
    Ok(rows)
}

fn diff(a: Counters, b: Counters) -> Counters {
    Counters {
        refused_rate: a.refused_rate - b.refused_rate,
        refused_open: a.refused_open - b.refused_open,
        header_timeouts: a.header_timeouts - b.header_timeouts,
        too_large: a.too_large - b.too_large,
    }
}

fn pct(v: &[f64], p: f64) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    format!("{:.3}", quantile(&s, p))
}

async fn run() -> anyhow::Result<()> {
    // The attacker's sockets are this process's files.
    slotapi::rlimit::raise_open_files();
    let attack_conns = env_num("BENCH_ATTACK", 2000) as usize;
    let header_timeout = env_num("BENCH_HEADER_TIMEOUT", 5);
    let attack_for = Duration::from_secs(env_num("BENCH_ATTACK_SECS", header_timeout + 5));
    let fill_bytes = env_num("BENCH_HEADER_BYTES", 0) as usize;
    // Header lines of 1000 bytes (with their CRLF), sent at once.
    let fill = Arc::new(
        (0..fill_bytes.div_ceil(1000))
            .map(|i| format!("X-Fill-{i:05}: {}\r\n", "f".repeat(984)))
            .collect::<String>(),
    );
    let mut rows = one_run(
        "defaults",
        format!("header_timeout = \"{header_timeout}s\"\n"),
        attack_conns,
        attack_for,
        Arc::clone(&fill),
    )
    .await?;
    rows.extend(
        one_run(
            "limits off",
            "header_timeout = \"5m\"\nmax_header_size = \"1M\"\n[slotgate.rate_limits]\nconnections_per_ip = 0\nmax_connections_per_ip = 0\n"
                .into(),
            attack_conns,
            attack_for,
            Arc::clone(&fill),
        )
        .await?,
    );

    println!(
        "Slow-client benchmark: an attacker at 127.0.0.2 keeps up to {attack_conns} connections, each sending {} header bytes and then trickling header lines, for {}s \
         (defaults: header_timeout {header_timeout}s, connections_per_ip 1200/min, max_connections_per_ip 256, max_header_size 64K); \
         a user at 127.0.0.1 asks /token on a new connection every {} ms and types 4 keys\n",
        fill.len(),
        attack_for.as_secs(),
        PROBE_EVERY.as_millis()
    );
    println!("| slotgate   | phase  | slotgate open conns (max) | attacker's open (max) | attacker connects | refused at accept | refused open cap | header timeouts | headers too large | slotgate fds (max) | RSS MiB (max) | user /token p50 ms | p99 ms | failed | user echo p50 ms | p99 ms | failed |");
    println!("|------------|--------|---------------------------|-----------------------|-------------------|-------------------|------------------|-----------------|-------------------|--------------------|---------------|--------------------|--------|--------|------------------|--------|--------|");
    for r in &rows {
        println!(
            "| {:<10} | {:<6} | {:>25} | {:>21} | {:>17} | {:>17} | {:>16} | {:>15} | {:>17} | {:>18} | {:>13.1} | {:>18} | {:>6} | {:>6} | {:>16} | {:>6} | {:>6} |",
            r.config,
            r.phase,
            r.p.gateway_open_max,
            r.p.attacker_max,
            r.connects,
            r.c.refused_rate,
            r.c.refused_open,
            r.c.header_timeouts,
            r.c.too_large,
            r.p.fds_max,
            r.p.rss_max_kib as f64 / 1024.0,
            pct(&r.p.token_ms, 0.5),
            pct(&r.p.token_ms, 0.99),
            r.p.token_failures,
            pct(&r.p.echo_ms, 0.5),
            pct(&r.p.echo_ms, 0.99),
            r.p.echo_failures,
        );
    }
    Ok(())
}
