//! Claude Code transcript ingestion and usage queries: how fast the daemon's
//! ingester turns transcript lines into stored usage, what a rescan with
//! nothing new costs, and how long the usage and quota queries take. Runs
//! the library code (`slotctl::claude`) on a temporary data directory with
//! generated transcripts shaped like Claude Code's (see
//! tests/fixtures/claude/): per turn a prompt, an assistant message written
//! as three lines (thinking, text, tool use), and a tool result.
//!
//! ```sh
//! cargo build --release -p bench && ./target/release/usage --users 50 --turns 4000
//! ```

use std::io::Write;
use std::time::Instant;

use bench::{arg, summary};
use slotctl::claude::query::{self, Filter, Group};
use slotctl::claude::{quota, Claude, ClaudeConfig};

fn turn(w: &mut impl Write, session: &str, n: usize, day: usize) -> std::io::Result<()> {
    let ts = format!(
        "2026-11-{:02}T10:{:02}:{:02}.000Z",
        1 + day % 28,
        n / 60 % 60,
        n % 60
    );
    let common = format!(
        r#""sessionId":"{session}","cwd":"/work/shop","version":"2.0.37","gitBranch":"main","timestamp":"{ts}""#
    );
    writeln!(
        w,
        r#"{{"parentUuid":null,"isSidechain":false,"userType":"external",{common},"type":"user","uuid":"{session}-{n}-u","message":{{"role":"user","content":"Please refactor the filters module, step {n}, and keep the tests green."}}}}"#
    )?;
    let usage = format!(
        r#""usage":{{"input_tokens":{},"cache_creation_input_tokens":{},"cache_read_input_tokens":{},"output_tokens":{},"service_tier":"standard"}}"#,
        4 + n % 7,
        200 + n % 500,
        12000 + n,
        100 + n % 300
    );
    let blocks = [
        r#"{"type":"thinking","thinking":"Let me look at the module first.","signature":"EqQB"}"#
            .to_string(),
        r#"{"type":"text","text":"I'll edit the filters."}"#.to_string(),
        format!(
            r#"{{"type":"tool_use","id":"toolu_{session}_{n}","name":"Edit","input":{{"file_path":"/work/shop/src/f{}.ts","old_string":"a","new_string":"b"}}}}"#,
            n % 13
        ),
    ];
    for (i, b) in blocks.iter().enumerate() {
        writeln!(
            w,
            r#"{{"parentUuid":"{session}-{n}-u",{common},"type":"assistant","uuid":"{session}-{n}-a{i}","requestId":"req_{n}","message":{{"model":"claude-sonnet-4-5-20250929","id":"msg_{session}_{n}","type":"message","role":"assistant","content":[{b}],"stop_reason":null,{usage}}}}}"#
        )?;
    }
    writeln!(
        w,
        r#"{{"parentUuid":"{session}-{n}-a2",{common},"type":"user","uuid":"{session}-{n}-r","message":{{"role":"user","content":[{{"tool_use_id":"toolu_{session}_{n}","type":"tool_result","content":"The file has been updated."}}]}}}}"#
    )
}

fn main() -> anyhow::Result<()> {
    let users = arg("--users", 50);
    let turns = arg("--turns", 4000); // per user, over 4 sessions
    let dir = tempfile::tempdir()?;
    let data = dir.path();
    let mut lines = 0usize;
    let mut bytes = 0u64;
    for u in 0..users {
        let projects = data.join(format!("users/u{u}/home/.claude/projects/-work-shop"));
        std::fs::create_dir_all(&projects)?;
        for s in 0..4 {
            let session = format!("s{u}x{s}");
            let path = projects.join(format!("{session}.jsonl"));
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
            for n in 0..turns / 4 {
                turn(&mut f, &session, n, n * 28 / (turns / 4).max(1))?;
                lines += 5;
            }
            f.flush()?;
            bytes += std::fs::metadata(&path)?.len();
        }
    }
    let claude = Claude::open(data, ClaudeConfig::default())?;

    let t = Instant::now();
    let (pass, _) = claude.scan();
    let cold = t.elapsed().as_secs_f64();
    assert_eq!(pass.lines as usize, lines, "every line read once");

    let mut idle = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (p, _) = claude.scan();
        assert_eq!(p.lines, 0);
        idle.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (idle50, idle95, _) = summary(idle);

    // One turn appended to one file, then a pass (what a live session costs).
    let mut incr = Vec::new();
    let target = data.join("users/u0/home/.claude/projects/-work-shop/s0x0.jsonl");
    for i in 0..50 {
        let mut f = std::fs::OpenOptions::new().append(true).open(&target)?;
        turn(&mut f, "s0x0", 1_000_000 + i, 3)?;
        drop(f);
        let t = Instant::now();
        let p = claude.ingest_file(&target, "u0")?;
        assert_eq!(p.lines, 5);
        incr.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (incr50, incr95, _) = summary(incr);

    let messages = users * turns + 50;
    let time = |f: &dyn Fn()| {
        let mut v = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            f();
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
        summary(v)
    };
    let conn = claude.db.lock();
    let by_day = time(&|| {
        query::usage(&conn, Group::Day, &Filter::default()).unwrap();
    });
    let by_user = time(&|| {
        query::usage(&conn, Group::User, &Filter::default()).unwrap();
    });
    let one_user = time(&|| {
        let f = Filter {
            user: Some("u7".into()),
            ..Filter::default()
        };
        query::usage(&conn, Group::Day, &f).unwrap();
    });
    let quota = time(&|| {
        quota::status(&conn, &Default::default(), "u7", 1_795_132_800_000).unwrap();
    });
    let tools = time(&|| {
        query::tools(&conn, &Filter::default()).unwrap();
    });

    println!(
        "transcripts: {users} users × 4 sessions, {lines} lines ({:.1} MiB), {messages} assistant messages",
        bytes as f64 / (1 << 20) as f64
    );
    println!("| measure | result |");
    println!("|---|---|");
    println!(
        "| cold ingest, {lines} lines | {:.2} s, {:.0} lines/s, {:.1} MiB/s |",
        cold,
        lines as f64 / cold,
        bytes as f64 / (1 << 20) as f64 / cold
    );
    println!(
        "| rescan with nothing new ({} files, n=20) | p50 {idle50:.2} ms, p95 {idle95:.2} ms |",
        users * 4
    );
    println!(
        "| one appended turn (5 lines) → stored (n=50) | p50 {incr50:.2} ms, p95 {incr95:.2} ms |"
    );
    println!(
        "| `/v1/usage?group=day` over {messages} messages (n=20) | p50 {:.1} ms, p95 {:.1} ms |",
        by_day.0, by_day.1
    );
    println!(
        "| `/v1/usage?group=user` (n=20) | p50 {:.1} ms, p95 {:.1} ms |",
        by_user.0, by_user.1
    );
    println!(
        "| `/v1/usage?user=…&group=day` (n=20) | p50 {:.1} ms, p95 {:.1} ms |",
        one_user.0, one_user.1
    );
    println!(
        "| `/v1/usage/tools` (n=20) | p50 {:.1} ms, p95 {:.1} ms |",
        tools.0, tools.1
    );
    println!(
        "| quota status of one user (n=20) | p50 {:.2} ms, p95 {:.2} ms |",
        quota.0, quota.1
    );
    Ok(())
}
