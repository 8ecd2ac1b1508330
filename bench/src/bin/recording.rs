//! Recording benchmark: what session recording costs a terminal. Not a
//! test; prints a table.
//!
//!   cargo build --release -p proxy && cargo run --release -p bench --bin recording
//!
//! One ttyd (plain bash, no tmux, so output reaches the client unbatched)
//! behind two release slotgates on loopback: one with recording on (the
//! default: asciicast writer, default redaction patterns), one with
//! `[slotgate.recording] enabled = false`. Measured through each:
//!   echo     keystroke round trip (one character as INPUT, its echo in
//!            OUTPUT), rounds alternating between the gateways;
//!   output   a burst of `yes` lines (BENCH_LINES, default 200 000 lines of
//!            64 bytes) until a marker arrives: MB/s at the client, and
//!            slotgate's CPU time per MB relayed (from /proc, all threads,
//!            summed over the bursts).
//! Environment: BENCH_KEYS (default 400), BENCH_ROUNDS (default 3),
//! BENCH_LINES, SLOTGATE_TTYD.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::{cpu_secs, echo_latencies, env_num, median, ttyd_in_tempdir};
use futures_util::StreamExt;
use slotgate_tests::gateway::{Options, Slotgate};
use tokio_tungstenite::tungstenite::Message;

const SLOT: &str = "bench";

/// Seconds and bytes for `lines` lines of output through `gw`, and the
/// gateway's CPU seconds meanwhile.
async fn burst(gw: &Slotgate, pid: u32, lines: u64) -> anyhow::Result<(f64, u64, f64)> {
    let mut tty = gw.tty(SLOT).await?;
    tty.expect("$ ", Duration::from_secs(10)).await?;
    tty.drain_for(Duration::from_millis(200)).await;
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0";
    tty.input(&format!(
        "yes {line} | head -n {lines}; echo BURST-$((20+22))\r"
    ))
    .await?;
    let mut ws = tty.into_inner();
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let mut bytes = 0u64;
    let mut tail: Vec<u8> = Vec::new();
    let deadline = t0 + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(other) => bail!("stream ended before the marker: {other:?}"),
            Err(_) => bail!("no marker within 120 s"),
        };
        let data = match msg {
            Message::Binary(b) => b.to_vec(),
            Message::Text(t) => t.as_bytes().to_vec(),
            _ => continue,
        };
        if data.first() != Some(&b'0') {
            continue;
        }
        bytes += data.len() as u64 - 1;
        tail.extend_from_slice(&data[1..]);
        if tail.windows(8).any(|w| w == b"BURST-42") {
            break;
        }
        let keep = tail.len().saturating_sub(16);
        tail.drain(..keep);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let _ = ws.close(None).await;
    Ok((secs, bytes, cpu))
}

async fn metric(gw: &Slotgate, name: &str) -> String {
    let text = gw
        .get("/metrics")
        .await
        .map(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("-")
        .to_string()
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

async fn run() -> anyhow::Result<()> {
    let keys = env_num("BENCH_KEYS", 400) as usize;
    let rounds = env_num("BENCH_ROUNDS", 3) as usize;
    let lines = env_num("BENCH_LINES", 200_000);

    let (tmp, _socket, _ttyd) = ttyd_in_tempdir(SLOT).await?;
    let dir = tmp.path();
    // The second gateway has its own run directory (pid file) whose slots
    // directory is the same one.
    std::fs::create_dir_all(dir.join("run-off"))?;
    std::os::unix::fs::symlink(dir.join("run/slots"), dir.join("run-off/slots"))?;

    let on_cfg = dir.join("on.toml");
    std::fs::write(
        &on_cfg,
        "[paths]\ndata_dir = \"data-on\"\nrun_dir = \"run\"\n",
    )?;
    let off_cfg = dir.join("off.toml");
    std::fs::write(
        &off_cfg,
        "[paths]\ndata_dir = \"data-off\"\nrun_dir = \"run-off\"\n",
    )?;
    let opts = |extra: &str| Options {
        tls: false,
        extra: extra.into(),
        ..Options::default()
    };
    let on = Slotgate::start(&on_cfg, opts("")).await?;
    let off = Slotgate::start(&off_cfg, opts("[slotgate.recording]\nenabled = false\n")).await?;
    let gws = [("on", &on), ("off", &off)];

    for (_, gw) in &gws {
        echo_latencies(gw.tty(SLOT).await?, 50).await?;
    }
    let mut echo: Vec<Vec<Duration>> = vec![Vec::new(), Vec::new()];
    let mut rate: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
    let mut mb = [0.0f64; 2];
    for round in 0..rounds {
        for k in 0..2 {
            let i = (k + round) % 2;
            let (name, gw) = &gws[i];
            echo[i].extend(
                echo_latencies(gw.tty(SLOT).await?, keys)
                    .await
                    .with_context(|| name.to_string())?,
            );
            let (secs, bytes, cpu_s) =
                burst(gw, gw.pid().context("slotgate is not running")?, lines).await?;
            rate[i].push(bytes as f64 / 1e6 / secs);
            // CPU time is counted in 10 ms ticks: sum over the bursts.
            cpu[i].push(cpu_s * 1e3);
            mb[i] += bytes as f64 / 1e6;
        }
    }

    println!(
        "Recording benchmark: {} keystrokes per gateway ({rounds} rounds of {keys}), {rounds} bursts of {lines} x 64-byte lines (MB/s: median; CPU: total / total MB)",
        echo[0].len()
    );
    println!();
    println!("| recording | echo p50 ms | echo p99 ms | output MB/s | slotgate CPU ms/MB |");
    println!("|-----------|-------------|-------------|-------------|--------------------|");
    for (i, (name, _)) in gws.iter().enumerate() {
        let mut s: Vec<f64> = echo[i].iter().map(|d| d.as_secs_f64() * 1e3).collect();
        s.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {:<9} | {:>11.3} | {:>11.3} | {:>11.1} | {:>18.2} |",
            name,
            bench::quantile(&s, 0.5),
            bench::quantile(&s, 0.99),
            median(rate[i].clone()),
            cpu[i].iter().sum::<f64>() / mb[i],
        );
    }
    println!();
    println!(
        "recording on: {} recordings, {:.1} MB on disk, events dropped: {}, redactions: {}",
        metric(&on, "slotgate_recordings_total").await,
        dir_bytes(&dir.join("data-on/recordings")) as f64 / 1e6,
        metric(&on, "slotgate_recording_events_dropped_total").await,
        metric(&on, "slotgate_recording_redactions_total").await,
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    bench::exit_code(run().await)
}
