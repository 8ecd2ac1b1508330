//! slotctl benchmark: prints a table (see docs/benchmarks.md).
//!
//!   cargo run --release -p bench --bin slots -- [--cold N] [--restarts N] [--many N]
//!
//! Measures, on this machine with real ttyd + tmux:
//! - cold start: create → first OUTPUT byte of the prompt over the slot
//!   socket (includes the first WebSocket client starting tmux and bash);
//! - restart after `kill -9` of ttyd → the socket serves `/token` again;
//! - N slots online at once: daemon RSS, `slotctl list --json` latency,
//!   `slotctl stop all` time.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::{arg, rss_kib, summary};
use slotapi::{CreateSlot, SlotId, SlotStatus};
use slotgate_tests::{ttyd, TestEnv};

const SUPERVISOR_DEFAULTS: &str = "idle_timeout = \"off\"\nmax_slots = 5000\n";

async fn cold_starts(n: usize) -> anyhow::Result<Vec<f64>> {
    let mut env = TestEnv::custom(&[], SUPERVISOR_DEFAULTS);
    env.start_daemon().await;
    let client = env.client();
    let mut out = Vec::new();
    for i in 0..n {
        let id = SlotId::new(format!("cold{i}"))?;
        let t0 = Instant::now();
        client
            .create(&CreateSlot {
                id: id.clone(),
                template: "shell".into(),
                owner: None,
                start: true,
            })
            .await?;
        client.ensure(&id, Duration::from_secs(10)).await?;
        let mut c = ttyd::connect_unix(&env.slot_socket(id.as_str()), id.as_str(), "bench").await?;
        // The first OUTPUT frame is tmux drawing the new session.
        c.expect("", Duration::from_secs(10)).await.ok();
        while c.screen.is_empty() {
            c.drain_for(Duration::from_millis(1)).await;
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("no output from {id}");
            }
        }
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
        c.close().await;
    }
    Ok(out)
}

async fn restarts(n: usize) -> anyhow::Result<Vec<f64>> {
    // Quick probes so each run counts as stable (2 intervals) between kills,
    // and no give-up: every sample is a first failure, restarted at once.
    let mut env = TestEnv::custom(
        &[],
        &format!("{SUPERVISOR_DEFAULTS}health_interval = \"100ms\"\nmax_failures = 100000\n"),
    );
    env.start_daemon().await;
    let client = env.client();
    let id = SlotId::new("victim")?;
    client
        .create(&CreateSlot {
            id: id.clone(),
            template: "shell".into(),
            owner: None,
            start: true,
        })
        .await?;
    let mut out = Vec::new();
    let sock = env.slot_socket("victim");
    for _ in 0..n {
        let info = client.ensure(&id, Duration::from_secs(10)).await?;
        // Wait out the "stable" period so every sample is a first restart.
        let pid = info.pid.context("pid")?;
        let t0 = Instant::now();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).context("pid")?,
            rustix::process::Signal::KILL,
        )?;
        // Serving again = a /token request answered 200 by a new ttyd.
        loop {
            if let Ok((200, _)) = slotapi::get_unix(
                &sock,
                "/slot/victim/token",
                &[(slotapi::TTYD_AUTH_HEADER, "bench")],
                Duration::from_millis(200),
            )
            .await
            {
                if client.get(&id).await.is_ok_and(|s| s.pid != Some(pid))
                    || t0.elapsed() > Duration::from_millis(5)
                {
                    break;
                }
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("ttyd did not come back");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
        // Let the supervisor reach online and count the run as stable
        // (2 health intervals) so the next kill is again a first failure.
        let deadline = Instant::now() + Duration::from_secs(15);
        while client.get(&id).await?.status != SlotStatus::Online && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(out)
}

struct Many {
    n: usize,
    create_all_s: f64,
    daemon_rss_mib: f64,
    list_ms: (f64, f64, f64),
    stop_all_s: f64,
}

async fn many(n: usize) -> anyhow::Result<Many> {
    let mut env = TestEnv::custom(
        &[],
        &format!("{SUPERVISOR_DEFAULTS}health_interval = \"10s\"\n"),
    );
    let daemon = env.start_daemon().await;
    let client = env.client();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let calls = chunk.iter().map(|i| {
            let client = client.clone();
            async move {
                let id = SlotId::new(format!("m{i}")).unwrap();
                client
                    .create(&CreateSlot {
                        id: id.clone(),
                        template: "shell".into(),
                        owner: None,
                        start: true,
                    })
                    .await?;
                client.ensure(&id, Duration::from_secs(60)).await
            }
        });
        tasks.extend(futures_util::future::join_all(calls).await);
    }
    let failed = tasks.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        bail!(
            "{failed} of {n} slots did not come online: {:?}",
            tasks.iter().find(|r| r.is_err())
        );
    }
    let create_all_s = t0.elapsed().as_secs_f64();
    // Let a sampling round pass so the daemon holds its steady-state data.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let daemon_rss_mib = rss_kib(daemon) as f64 / 1024.0;
    let mut lat = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = env.slotctl(&["list", "--json"]);
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        if v.as_array().map(|a| a.len()) != Some(n) {
            bail!("list returned the wrong number of slots");
        }
    }
    let t = Instant::now();
    let out = env.slotctl(&["stop", "all"]);
    let stop_all_s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("stop all failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let left = env.instance_pids().len();
    if left > 0 {
        bail!("{left} processes left after stop all");
    }
    Ok(Many {
        n,
        create_all_s,
        daemon_rss_mib,
        list_ms: summary(lat),
        stop_all_s,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cold_n = arg("--cold", 50);
    let restart_n = arg("--restarts", 30);
    let many_n = arg("--many", 1000);
    eprintln!("cold starts ({cold_n})…");
    let (c50, c95, _) = summary(cold_starts(cold_n).await?);
    eprintln!("restarts after kill -9 ({restart_n})…");
    let (r50, r95, _) = summary(restarts(restart_n).await?);
    eprintln!("{many_n} slots online…");
    let m = many(many_n).await?;

    println!("| measure | result | target |");
    println!("|---|---|---|");
    println!("| slot cold start, create → first prompt byte (n={cold_n}) | p50 {c50:.1} ms, p95 {c95:.1} ms | p50 < 150 ms |");
    println!("| kill -9 ttyd → socket serving again (n={restart_n}) | p50 {r50:.1} ms, p95 {r95:.1} ms | p50 ≤ 50 ms |");
    println!(
        "| {} slots: create + online (all) | {:.1} s | — |",
        m.n, m.create_all_s
    );
    println!(
        "| {} slots: daemon RSS | {:.1} MiB | < 20 MB |",
        m.n, m.daemon_rss_mib
    );
    println!(
        "| {} slots: `slotctl list --json` (n=20) | p50 {:.1} ms, p95 {:.1} ms | < 50 ms |",
        m.n, m.list_ms.0, m.list_ms.1
    );
    println!(
        "| {} slots: `slotctl stop all` | {:.2} s | < 3 s |",
        m.n, m.stop_all_s
    );
    Ok(())
}
