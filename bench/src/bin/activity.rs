//! Activity-store benchmark: how fast slotctl's tailer stores access-log
//! lines, and how long the store's queries take once it holds a million
//! requests. Not a test; prints a table.
//!
//!   cargo build --release -p bench --bin activity && ./target/release/activity
//!
//! A temporary directory gets an access log of `--lines` lines (default
//! 1 000 000) in slotgate's format (docs/access-log.md): 200 users with a
//! slot each (one request in ten goes to someone else's slot), 30 days,
//! 4 % WebSocket sessions, 3 % refusals, 1 % sign-ins. The
//! same `Tailer` the daemon runs reads it into a fresh `activity.db`
//! (ingest rate = lines / wall time of the sweep, batches and rollup
//! included). Then each query the control API runs is timed on that
//! database, `--runs` times (default 50), through the same functions the
//! API handlers call (without the unix-socket hop).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use bench::{arg, summary};
use slotapi::activity::ActivityQuery;
use slotctl::activity::{db, ingest::Tailer, query};

const DAY_MS: u64 = 86_400_000;

fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (d, s) = ((secs / 86_400) as i64, secs % 86_400);
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// A cheap deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn write_log(path: &Path, lines: usize, now: u64) -> anyhow::Result<u64> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let span = 30 * DAY_MS;
    for i in 0..lines {
        let ts = now - span + (i as u64 * span / lines as u64);
        let r = rng.next();
        // Most traffic is people in their own slot; some visit others'.
        let user = format!("user{}", r % 200);
        let slot = if (r >> 8).is_multiple_of(10) {
            format!("user{}", (r >> 9) % 200)
        } else {
            user.clone()
        };
        let (kind, status, route, path, dur) = match (r >> 20) % 100 {
            0..=3 => (
                "ws",
                101,
                "slot",
                format!("/slot/{slot}/ws"),
                (r >> 30) % 3_600_000,
            ),
            4..=6 => ("http", 403, "slot", format!("/slot/{slot}/"), 1),
            7 => ("http", 303, "auth", "/auth/login".to_string(), 40),
            _ => ("http", 200, "slot", format!("/slot/{slot}/token"), 1),
        };
        let error = if status == 403 {
            "\"forbidden\""
        } else {
            "null"
        };
        let login = if route == "auth" {
            format!(",\"login\":\"{user}\"")
        } else {
            String::new()
        };
        writeln!(
            f,
            "{{\"v\":1,\"ts\":\"{}\",\"start\":\"{}\",\"kind\":\"{kind}\",\"request_id\":\"{i:016x}\",\"client_ip\":\"10.0.{}.{}\",\"user\":\"{user}\",\"method\":\"{}\",\"path\":\"{path}\",\"query\":null,\"route\":\"{route}\",\"slot\":\"{slot}\",\"status\":{status},\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":{dur}.25,\"tls\":true,\"served_by\":\"slot\",\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0\",\"error\":{error}{login}}}",
            rfc3339(ts + dur),
            rfc3339(ts),
            (r >> 40) % 256,
            (r >> 48) % 256,
            if route == "auth" { "POST" } else { "GET" },
            (r >> 12) % 4096,
            (r >> 24) % 65_536,
        )?;
    }
    f.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("activity bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let lines = arg("--lines", 1_000_000);
    let runs = arg("--runs", 50);
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("access.log");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let bytes = write_log(&log, lines, now)?;
    let dbp = dir.path().join("activity.db");

    // Parsing alone, for comparison with the whole ingest.
    let raw = std::fs::read(&log)?;
    let t = Instant::now();
    let mut parsed = 0usize;
    for l in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        parsed += slotctl::activity::parse::parse(l).is_ok() as usize;
    }
    let parse_rate = parsed as f64 / t.elapsed().as_secs_f64();
    drop(raw);

    let mut tailer = Tailer::new(&dbp, log.clone(), 1000, Default::default())?;
    let t = Instant::now();
    let stored = tailer.sweep()?;
    let took = t.elapsed().as_secs_f64();
    anyhow::ensure!(stored as usize == lines, "stored {stored} of {lines} lines");
    let rate = lines as f64 / took;

    let conn = db::connect(&dbp)?;
    let q = |s: &[(&str, &str)]| -> ActivityQuery {
        let mut q = ActivityQuery::default();
        for (k, v) in s {
            let v = Some(v.to_string());
            match *k {
                "user" => q.user = v,
                "slot" => q.slot = v,
                "status" => q.status = v,
                "kind" => q.kind = v,
                "q" => q.q = v,
                "since" => q.since = v,
                "period" => q.period = v,
                _ => unreachable!(),
            }
        }
        q
    };
    let all = [
        "user", "slot", "since", "until", "limit", "cursor", "status", "kind", "route", "q",
        "period",
    ];
    let week_ago = (now - 7 * DAY_MS).to_string();
    let day_ago = (now - DAY_MS).to_string();
    type Case<'a> = (
        &'a str,
        ActivityQuery,
        fn(&rusqlite::Connection, &query::Filter) -> usize,
    );
    let cases: Vec<Case> = vec![
        ("requests, newest page", q(&[]), |c, f| {
            query::requests(c, f).map(|p| p.items.len()).unwrap_or(0)
        }),
        ("requests, user=…", q(&[("user", "user42")]), |c, f| {
            query::requests(c, f).map(|p| p.items.len()).unwrap_or(0)
        }),
        (
            "requests, slot=… since 7d",
            q(&[("slot", "user7"), ("since", &week_ago)]),
            |c, f| query::requests(c, f).map(|p| p.items.len()).unwrap_or(0),
        ),
        ("requests, status=4xx", q(&[("status", "4xx")]), |c, f| {
            query::requests(c, f).map(|p| p.items.len()).unwrap_or(0)
        }),
        ("requests, kind=ws", q(&[("kind", "ws")]), |c, f| {
            query::requests(c, f).map(|p| p.items.len()).unwrap_or(0)
        }),
        (
            "requests, q=path text",
            q(&[("q", "/slot/user199/ws")]),
            |c, f| query::requests(c, f).map(|p| p.items.len()).unwrap_or(0),
        ),
        (
            "requests, q=path text since 1d",
            q(&[("q", "/slot/user199/ws"), ("since", &day_ago)]),
            |c, f| query::requests(c, f).map(|p| p.items.len()).unwrap_or(0),
        ),
        ("sessions, newest page", q(&[]), |c, f| {
            query::sessions(c, f).map(|p| p.items.len()).unwrap_or(0)
        }),
        ("sessions, user=…", q(&[("user", "user42")]), |c, f| {
            query::sessions(c, f).map(|p| p.items.len()).unwrap_or(0)
        }),
        ("logins, newest page", q(&[]), |c, f| {
            query::logins(c, f).map(|p| p.items.len()).unwrap_or(0)
        }),
        ("stats, day (30 d)", q(&[("period", "day")]), |c, f| {
            query::stats(c, f).map(|s| s.buckets.len()).unwrap_or(0)
        }),
        (
            "stats, week, since 0",
            q(&[("period", "week"), ("since", "0")]),
            |c, f| query::stats(c, f).map(|s| s.buckets.len()).unwrap_or(0),
        ),
        (
            "stats, month, user=…",
            q(&[("period", "month"), ("user", "user42")]),
            |c, f| query::stats(c, f).map(|s| s.buckets.len()).unwrap_or(0),
        ),
    ];

    let db_size = std::fs::metadata(&dbp)?.len();
    println!(
        "activity store, {lines} lines ({:.0} MiB log, {:.0} MiB activity.db)\n",
        bytes as f64 / 1048576.0,
        db_size as f64 / 1048576.0
    );
    println!("| measure | result | target |");
    println!("|---|---|---|");
    println!(
        "| ingest {lines} lines (one sweep, batches of {}) | {:.0} lines/s ({took:.2} s) | ≥ 100 000 lines/s |",
        slotctl::activity::ingest::BATCH,
        rate
    );
    println!("| parse only (serde_json, no SQLite) | {parse_rate:.0} lines/s | — |");
    for (name, aq, f) in cases {
        let filter = query::filter(&aq, &all).map_err(anyhow::Error::msg)?;
        let mut times = Vec::with_capacity(runs);
        let mut n = 0;
        for _ in 0..runs {
            let t = Instant::now();
            n = f(&conn, &filter);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        anyhow::ensure!(n > 0, "{name} returned nothing");
        let (p50, p95, _) = summary(times);
        println!("| {name} ({n} rows) | p50 {p50:.2} ms, p95 {p95:.2} ms | < 50 ms |");
    }
    Ok(())
}
