//! Claude Code usage end to end with the real daemon: transcripts (the
//! committed fixtures, in Claude Code's JSONL format) copied into a user's
//! slot HOME are ingested with the right tokens and cost, exactly once
//! across a `kill -9`; an over-quota owner is refused by the real slotgate
//! until an administrator exempts them; an API key set through the CLI
//! reaches a real slot's environment and appears in no output or log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use slotgate_tests::gateway::{Options, Slotgate};
use slotgate_tests::ttyd::connect_unix;
use slotgate_tests::{bin, repo_root, wait_for, TestEnv};

const T: Duration = Duration::from_secs(20);

/// Settings that make the tests quick: a fast rescan as well as inotify.
const CLAUDE: &str = "[claude]\nrescan_interval = \"300ms\"\n";

/// The harness's quick supervisor settings, with health checks that
/// tolerate a machine busy with the large-transcript test next door (a
/// probe that times out twice would restart ttyd under a typing test).
const PATIENT: &str = r#"
health_interval = "500ms"
health_timeout = "5s"
health_failures = 5
start_timeout = "15s"
backoff_initial = "50ms"
backoff_max = "400ms"
max_failures = 4
failure_window = "30s"
kill_timeout = "2s"
sample_interval = "300ms"
"#;

fn patient_env() -> TestEnv {
    TestEnv::custom(&[], PATIENT)
}

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/claude")
}

fn projects(env: &TestEnv, user: &str) -> PathBuf {
    env.path(&format!("data/users/{user}/home/.claude/projects"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

async fn get(env: &TestEnv, path: &str) -> Value {
    env.client().get_json(path).await.unwrap()
}

fn user_row<'a>(usage: &'a Value, user: &str) -> Option<&'a Value> {
    usage["items"]
        .as_array()?
        .iter()
        .find(|i| i["user"] == user)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[tokio::test]
async fn transcripts_are_ingested_with_tokens_and_cost_exactly_once_across_kill9() {
    let mut env = patient_env();
    env.append_config(CLAUDE);
    env.start_daemon().await;
    copy_dir(&fixtures().join("alice"), &projects(&env, "alice"));
    copy_dir(&fixtures().join("bob"), &projects(&env, "bob"));

    // alice: session 1 (sonnet 4.5) + the complete message of session 2
    // (opus 4.5); the partial last line of session 2 is not read yet.
    let sonnet = (20.0 * 3.0 + 566.0 * 15.0 + 13000.0 * 3.75 + 24800.0 * 0.3) / 1e6;
    let opus_a = (8.0 * 5.0 + 300.0 * 25.0 + 5000.0 * 6.25 + 1000.0 * 0.5) / 1e6;
    let opus_b = (3.0 * 5.0 + 120.0 * 25.0 + 100.0 * 6.25 + 6000.0 * 0.5) / 1e6;
    let haiku = (12.0 * 1.0 + 200.0 * 5.0 + 3000.0 * 1.25) / 1e6;
    wait_for("both users' transcripts ingested", T, || async {
        let u = get(&env, "/v1/usage?group=user").await;
        user_row(&u, "alice").is_some_and(|a| a["output_tokens"] == 566 + 300)
            && user_row(&u, "bob").is_some()
    })
    .await;
    let u = get(&env, "/v1/usage?group=user").await;
    let alice = user_row(&u, "alice").unwrap();
    assert_eq!(alice["input_tokens"], 28, "{alice}");
    assert_eq!(alice["cache_write_tokens"], 18000);
    assert_eq!(alice["cache_read_tokens"], 25800);
    assert_eq!(alice["messages"], 4, "one per message id, not per line");
    assert_eq!(alice["prompts"], 3);
    assert_eq!(alice["tool_calls"], 5);
    assert!(
        close(alice["cost_usd"].as_f64().unwrap(), sonnet + opus_a),
        "{alice}"
    );
    let bob = user_row(&u, "bob").unwrap();
    assert!(close(bob["cost_usd"].as_f64().unwrap(), haiku), "{bob}");
    assert!(close(
        u["totals"]["cost_usd"].as_f64().unwrap(),
        sonnet + opus_a + haiku
    ));

    // By model and by day; the fixtures are from 2026-11-20 and -21.
    let m = get(&env, "/v1/usage?group=model").await;
    let models: Vec<&str> = m["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["model"].as_str().unwrap())
        .collect();
    assert!(
        models.contains(&"claude-sonnet-4-5-20250929")
            && models.contains(&"claude-haiku-4-5-20251001"),
        "{m}"
    );
    let d = get(&env, "/v1/usage?group=day&user=alice&since=2026-11-21").await;
    let days: Vec<&str> = d["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["day"].as_str().unwrap())
        .collect();
    assert_eq!(days, ["2026-11-21"], "{d}");

    // Tools (with their files) and sanitised prompts.
    let tools = get(&env, "/v1/usage/tools").await;
    let calls = |name: &str| {
        tools["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tool"] == name)
            .map(|t| t["calls"].as_u64().unwrap())
    };
    for t in [
        "Read",
        "Edit",
        "Bash",
        "Write",
        "NotebookEdit",
        "Grep",
        "MultiEdit",
    ] {
        assert_eq!(calls(t), Some(1), "{t}: {tools}");
    }
    let prompts = get(&env, "/v1/usage/prompts?user=alice").await;
    let text = prompts.to_string();
    assert!(text.contains("Add a price filter"), "{text}");
    assert!(
        text.contains("[redacted]") && !text.contains("sk-ant-api03"),
        "{text}"
    );
    assert_eq!(prompts["items"][0]["model"], "claude-opus-4-5-20251101");
    let page = get(&env, "/v1/usage/prompts?user=alice&limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let rest = get(
        &env,
        &format!("/v1/usage/prompts?user=alice&limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());

    // The malformed line is counted, not fatal.
    let ing = get(&env, "/v1/usage/ingest").await;
    assert_eq!(ing["malformed"], 1, "{ing}");

    // The rest of the partial line arrives: the message counts once.
    let s2 = projects(&env, "alice").join("-work-shop/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d.jsonl");
    append(
        &s2,
        &std::fs::read_to_string(fixtures().join("alice-session2-rest.txt")).unwrap(),
    );
    wait_for("the completed line", T, || async {
        let u = get(&env, "/v1/usage?group=user&user=alice").await;
        user_row(&u, "alice").is_some_and(|a| a["output_tokens"] == 566 + 300 + 120)
    })
    .await;

    // kill -9, append while it is down (one new message over two lines),
    // restart: the new lines count once and nothing is read twice.
    env.kill_daemon();
    let line = |block: &str, uuid: &str| {
        format!(
            r#"{{"type":"assistant","uuid":"{uuid}","sessionId":"9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d","timestamp":"2026-11-21T14:40:00.000Z","cwd":"/work/shop","message":{{"id":"msg_02Opus0003","model":"claude-opus-4-5-20251101","role":"assistant","content":[{block}],"usage":{{"input_tokens":2,"output_tokens":40,"cache_creation_input_tokens":0,"cache_read_input_tokens":7000}}}}}}"#
        ) + "\n"
    };
    append(
        &s2,
        &line(r#"{"type":"text","text":"Checking."}"#, "a2-0006"),
    );
    append(
        &s2,
        &line(
            r#"{"type":"tool_use","id":"toolu_02Read003","name":"Read","input":{"file_path":"/work/shop/README.md"}}"#,
            "a2-0007",
        ),
    );
    env.start_daemon().await;
    let opus_c = (2.0 * 5.0 + 40.0 * 25.0 + 7000.0 * 0.5) / 1e6;
    wait_for(
        "the lines appended while the daemon was down",
        T,
        || async {
            let u = get(&env, "/v1/usage?group=user&user=alice").await;
            user_row(&u, "alice").is_some_and(|a| a["output_tokens"] == 566 + 300 + 120 + 40)
        },
    )
    .await;
    let u = get(&env, "/v1/usage?group=user&user=alice").await;
    let alice = user_row(&u, "alice").unwrap();
    assert_eq!(alice["messages"], 6, "{alice}");
    assert_eq!(alice["tool_calls"], 6);
    assert!(
        close(
            alice["cost_usd"].as_f64().unwrap(),
            sonnet + opus_a + opus_b + opus_c
        ),
        "{alice}"
    );
    // Every complete line of every file was read exactly once.
    let ing = get(&env, "/v1/usage/ingest").await;
    for f in ing["files"].as_array().unwrap() {
        let text = std::fs::read_to_string(f["path"].as_str().unwrap()).unwrap();
        assert_eq!(
            f["lines"].as_u64().unwrap(),
            text.lines().count() as u64,
            "{f}"
        );
        assert_eq!(f["offset"].as_u64().unwrap(), text.len() as u64, "{f}");
    }

    // The CLI shows the same.
    let out = env.slotctl(&["usage", "--by", "user", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(close(
        v["totals"]["cost_usd"].as_f64().unwrap(),
        sonnet + opus_a + opus_b + opus_c + haiku
    ));
    let out = env.slotctl(&["usage", "--by", "model"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("claude-haiku-4-5-20251001") && table.contains("TOTAL"),
        "{table}"
    );
    let out = env.slotctl(&["usage", "--by", "fortnight"]);
    assert_eq!(out.status.code(), Some(2));
    let bad = env
        .client()
        .get_json::<Value>("/v1/usage?since=yesterday")
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(400));
    assert!(bad.to_string().contains("since"), "{bad}");
}

/// A transcript line for today with `tokens` input tokens.
fn today_line(id: &str, tokens: u64) -> String {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    format!(
        r#"{{"type":"assistant","uuid":"{id}-u","sessionId":"s-today","timestamp":"{now}","cwd":"/w","message":{{"id":"{id}","model":"claude-sonnet-4-5-20250929","role":"assistant","content":[{{"type":"text","text":"hi"}}],"usage":{{"input_tokens":{tokens},"output_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}}}}"#
    ) + "\n"
}

#[tokio::test]
async fn an_owner_over_quota_is_refused_by_slotgate_until_an_admin_exempts_them() {
    let mut env = patient_env();
    env.append_config(&format!("{CLAUDE}[claude.quotas]\ndaily_tokens = 1000\n"));
    env.start_daemon().await;
    env.create_online("alice", "shell").await;
    env.create_online("bob", "shell").await;
    let dir = projects(&env, "alice").join("-w");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s-today.jsonl"), today_line("msg_today_1", 5000)).unwrap();
    wait_for("alice over quota", T, || async {
        get(&env, "/v1/quotas/alice").await["over"] == true
    })
    .await;
    let q = get(&env, "/v1/quotas/alice").await;
    assert!(
        q["reason"].as_str().unwrap().contains("daily token quota"),
        "{q}"
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let next_day = now_ms - now_ms % 86_400_000 + 86_400_000;
    assert_eq!(q["until_ms"].as_u64(), Some(next_day), "{q}");
    assert_eq!(get(&env, "/v1/quotas/bob").await["over"], false);

    let gw = Slotgate::start(&env.config, Options::default())
        .await
        .unwrap();
    // A person gets a page that says why and until when.
    let page = gw
        .request(
            "GET",
            "/slot/alice/",
            &[("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
        )
        .await
        .unwrap();
    assert_eq!(page.status, 429, "{}", page.text());
    let body = page.text();
    assert!(
        body.contains("Usage limit reached") && body.contains("daily token quota"),
        "{body}"
    );
    assert!(page.header("retry-after").is_some());
    // The terminal's WebSocket is refused too.
    let err = gw
        .tty("alice")
        .await
        .err()
        .expect("alice's terminal refused");
    assert!(format!("{err:#}").contains("429"), "{err:#}");
    // Under quota: bob's terminal opens.
    let mut b = gw.tty("bob").await.expect("bob is under quota");
    b.input("echo bob-$((20+22))\r").await.unwrap();
    b.expect("bob-42", T).await.unwrap();
    // A program gets JSON with the reason and reset time.
    let js = gw
        .request("GET", "/slot/alice/", &[("Accept", "application/json")])
        .await
        .unwrap();
    // Not a navigation and not a WebSocket: no new session, so not refused.
    assert_eq!(js.status, 200);
    gw.wait_for_log_line(T, |l| l["error"] == "quota_exceeded")
        .await
        .unwrap();

    // An administrator exempts alice for an hour: her terminal opens.
    let out = env.slotctl(&[
        "quota",
        "set",
        "alice",
        "--exempt-for",
        "1h",
        "--note",
        "deadline",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = get(&env, "/v1/quotas/alice").await;
    assert_eq!(q["over"], false, "{q}");
    assert!(q["reason"].as_str().unwrap().contains("exempted"), "{q}");
    wait_for(
        "alice's terminal opening after the exemption",
        T,
        || async {
            match gw.tty("alice").await {
                Ok(mut c) => {
                    c.input("echo alice-$((40+2))\r").await.is_ok()
                        && c.expect("alice-42", T).await.is_ok()
                }
                Err(_) => false,
            }
        },
    )
    .await;

    // Clearing the override puts the limit back; raising it lifts it.
    let out = env.slotctl(&["quota", "clear", "alice"]);
    assert!(out.status.success());
    assert_eq!(get(&env, "/v1/quotas/alice").await["over"], true);
    let out = env.slotctl(&["quota", "set", "alice", "--daily-tokens", "1M"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = get(&env, "/v1/quotas/alice").await;
    assert_eq!(
        (q["over"].clone(), q["daily_tokens"].clone()),
        (Value::Bool(false), Value::from(1_000_000))
    );
    // Bad input is refused and changes nothing.
    let out = env.slotctl(&["quota", "set", "alice", "--daily-cost", "-3"]);
    assert_eq!(out.status.code(), Some(2));
    let bad = env
        .client()
        .put_json::<Value, _>("/v1/quotas/alice", &serde_json::json!({"daily_tokenz": 5}))
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(400));
    assert_eq!(
        get(&env, "/v1/quotas/alice").await["daily_tokens"],
        1_000_000
    );
}

#[tokio::test]
async fn api_keys_set_through_the_cli_reach_the_slot_and_are_never_shown() {
    let mut env = patient_env();
    let shared = format!("sk-ant-api03-SHARED{}", "q".repeat(40));
    let carols = format!("sk-ant-api03-CAROL{}", "w".repeat(40));
    let set = |args: &[&str], secret: &str| {
        let mut child = Command::new(bin("slotctl"))
            .arg("--config")
            .arg(&env.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{secret}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // Set before the daemon runs (the CLI works on the store directly).
    let mut shown = set(&["keys", "set", "--shared"], &shared);
    let out = env.slotctl(&["keys", "mode", "per_user"]);
    assert!(out.status.success());
    shown += &set(&["keys", "set", "--user", "carol"], &carols);
    let key_file = env.path("data/claude-keys.secret");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    env.start_daemon().await;
    env.create_online("alice", "shell").await;
    let out = env.slotctl(&[
        "create",
        "carol-1",
        "--template",
        "shell",
        "--owner",
        "carol",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.wait_status("carol-1", slotapi::SlotStatus::Online, T)
        .await;

    // Each slot's shell has its key: alice the shared one, carol her own.
    for (slot, owner, want) in [("alice", "alice", &shared), ("carol-1", "carol", &carols)] {
        let mut c = connect_unix(&env.slot_socket(slot), slot, "t")
            .await
            .unwrap();
        c.input("env > ~/env.txt; echo DUMPED-$((1+1))\r")
            .await
            .unwrap();
        c.expect("DUMPED-2", T).await.unwrap();
        let dump =
            std::fs::read_to_string(env.path(&format!("data/users/{owner}/home/env.txt"))).unwrap();
        assert!(
            dump.lines()
                .any(|l| l == format!("ANTHROPIC_API_KEY={want}")),
            "{slot}: no key in its env"
        );
    }

    // A per-slot Claude login (its own .claude.json in the owner's HOME)
    // stays in that sandbox: carol's slot cannot read alice's.
    let login = env.path("data/users/alice/home/.claude.json");
    std::fs::write(&login, "{\"oauthAccount\":\"alice-login-secret\"}").unwrap();
    let mut c = connect_unix(&env.slot_socket("carol-1"), "carol-1", "t2")
        .await
        .unwrap();
    c.input(&format!(
        "cat {} 2>/dev/null || echo HIDDEN-$((40+2))\r",
        login.display()
    ))
    .await
    .unwrap();
    c.expect("HIDDEN-42", T).await.unwrap();
    assert!(!c.screen.contains("alice-login-secret"));

    // Never in any answer, listing, log or the store file.
    let overview = get(&env, "/v1/keys").await;
    assert_eq!(overview["mode"], "per_user");
    assert_eq!(overview["shared"], true);
    assert_eq!(overview["users"], serde_json::json!(["carol"]));
    for args in [
        &["keys", "list"][..],
        &["keys", "list", "--json"],
        &["list", "--json"],
        &["status", "alice", "--json"],
        &["usage", "--json"],
    ] {
        let out = env.slotctl(args);
        shown += &String::from_utf8_lossy(&out.stdout);
        shown += &String::from_utf8_lossy(&out.stderr);
    }
    shown += &overview.to_string();
    shown += &get(&env, "/v1/slots").await.to_string();
    shown += &env.daemon_log();
    shown += &std::fs::read_to_string(env.slot_log("alice")).unwrap_or_default();
    let store = std::fs::read(env.path("data/activity.db")).unwrap();
    shown += &String::from_utf8_lossy(&store);
    shown += &String::from_utf8_lossy(
        &std::fs::read(env.path("data/activity.db-wal")).unwrap_or_default(),
    );
    for secret in [&shared, &carols] {
        assert!(!shown.contains(secret.as_str()), "a key leaked");
        assert!(!shown.contains(&secret[13..40]), "part of a key leaked");
    }

    // A key is never taken from the command line.
    let out = env.slotctl(&["keys", "set", "--shared", &shared]);
    assert_eq!(out.status.code(), Some(2), "a positional secret is refused");
    // Too short (e.g. an empty stdin) is refused with a reason.
    let out = env.slotctl(&["keys", "set", "--shared"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("20 to 512"));
}

/// Sign a new local account in; returns its `Cookie` header value.
async fn session(gw: &Slotgate, name: &str, role: identity::access::Role) -> String {
    let pw = format!("{name}-password-123");
    identity::store::Store::open(&gw.paths.data_dir.join("identity.db"))
        .unwrap()
        .add_user(name, role, Some(&pw), None)
        .unwrap();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(T)
        .build()
        .unwrap();
    let r = c
        .post(format!("{}/auth/login", gw.base_url()))
        .header("Origin", gw.base_url())
        .form(&[("user", name), ("password", pw.as_str()), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{name} signs in");
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("slotgate_session="))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_string()
}

#[tokio::test]
async fn signed_in_owner_over_quota_is_refused_but_an_administrator_and_a_viewer_are_let_in() {
    use identity::access::Role;
    let mut env = patient_env();
    env.append_config(&format!(
        "{CLAUDE}[claude.quotas]\nmonthly_cost_usd = 0.01\n"
    ));
    env.start_daemon().await;
    env.create_online("alice", "shell").await;
    let dir = projects(&env, "alice").join("-w");
    std::fs::create_dir_all(&dir).unwrap();
    // 10k input tokens of Sonnet: $0.03, over the $0.01 monthly limit.
    std::fs::write(dir.join("s.jsonl"), today_line("msg_cost_1", 10_000)).unwrap();
    wait_for("alice over her cost quota", T, || async {
        get(&env, "/v1/quotas/alice").await["over"] == true
    })
    .await;
    let gw = Slotgate::start(
        &env.config,
        Options {
            extra: "auth = \"local\"\n".into(),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let alice = session(&gw, "alice", Role::User).await;
    let root = session(&gw, "root", Role::Admin).await;
    let vic = session(&gw, "vic", Role::User).await;
    identity::store::Store::open(&gw.paths.data_dir.join("identity.db"))
        .unwrap()
        .grant("alice", "vic", "viewer")
        .unwrap();

    let page = gw
        .request(
            "GET",
            "/slot/alice/",
            &[("Accept", "text/html"), ("Cookie", &alice)],
        )
        .await
        .unwrap();
    assert_eq!(page.status, 429, "{}", page.text());
    assert!(
        page.text().contains("monthly cost quota"),
        "{}",
        page.text()
    );
    let stream = gw.connect().await.unwrap();
    let refused = slotgate_tests::gateway::tty_over(
        stream,
        &gw.authority(),
        "/slot/alice/ws",
        &[("Cookie", &alice)],
    )
    .await;
    assert!(refused.is_err(), "alice's WebSocket is refused");

    // A read-only viewer of alice's slot cannot spend: they may watch.
    let stream = gw.connect().await.unwrap();
    let mut v = slotgate_tests::gateway::tty_over(
        stream,
        &gw.authority(),
        "/slot/alice/ws",
        &[("Cookie", &vic)],
    )
    .await
    .expect("a viewer's read-only terminal opens");
    v.drain_for(Duration::from_millis(200)).await;

    // The administrator is not refused (and is the one who raises quotas).
    let page = gw
        .request(
            "GET",
            "/slot/alice/",
            &[("Accept", "text/html"), ("Cookie", &root)],
        )
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    let stream = gw.connect().await.unwrap();
    let mut c = slotgate_tests::gateway::tty_over(
        stream,
        &gw.authority(),
        "/slot/alice/ws",
        &[("Cookie", &root)],
    )
    .await
    .expect("the administrator's terminal opens");
    c.input("echo admin-$((40+2))\r").await.unwrap();
    c.expect("admin-42", T).await.unwrap();
}

/// One turn of a generated session: a prompt, an assistant message written
/// as two lines (text, tool use) and a tool result.
fn turn(session: &str, n: usize) -> String {
    let common = format!(
        r#""sessionId":"{session}","cwd":"/work/big","timestamp":"2026-11-22T10:00:00.000Z""#
    );
    let usage = format!(
        r#""usage":{{"input_tokens":3,"cache_creation_input_tokens":10,"cache_read_input_tokens":5000,"output_tokens":{}}}"#,
        n % 100 + 1
    );
    format!(
        "{{\"type\":\"user\",\"uuid\":\"{session}-{n}-u\",{common},\"message\":{{\"role\":\"user\",\"content\":\"step {n}: keep going with the refactor\"}}}}\n\
         {{\"type\":\"assistant\",\"uuid\":\"{session}-{n}-a\",{common},\"message\":{{\"id\":\"msg_{session}_{n}\",\"model\":\"claude-haiku-4-5\",\"content\":[{{\"type\":\"text\",\"text\":\"On it.\"}}],{usage}}}}}\n\
         {{\"type\":\"assistant\",\"uuid\":\"{session}-{n}-b\",{common},\"message\":{{\"id\":\"msg_{session}_{n}\",\"model\":\"claude-haiku-4-5\",\"content\":[{{\"type\":\"tool_use\",\"id\":\"toolu_{session}_{n}\",\"name\":\"Read\",\"input\":{{\"file_path\":\"/work/big/f.rs\"}}}}],{usage}}}}}\n\
         {{\"type\":\"user\",\"uuid\":\"{session}-{n}-r\",{common},\"message\":{{\"role\":\"user\",\"content\":[{{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_{session}_{n}\",\"content\":\"ok\"}}]}}}}\n"
    )
}

#[tokio::test]
async fn kill9_in_the_middle_of_a_large_transcript_loses_and_repeats_nothing() {
    let mut env = patient_env();
    env.append_config(CLAUDE);
    let dir = projects(&env, "dora").join("-work-big");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.jsonl");
    let turns = 30_000;
    let mut text = String::new();
    for n in 0..turns {
        text.push_str(&turn("big", n));
    }
    std::fs::write(&path, &text).unwrap();
    let len = text.len() as u64;
    let output: u64 = (0..turns as u64).map(|n| n % 100 + 1).sum();

    env.start_daemon().await;
    // Kill -9 as soon as part of the file is stored, not all of it.
    let deadline = std::time::Instant::now() + T;
    let at_kill = loop {
        let ing = get(&env, "/v1/usage/ingest").await;
        let offset = ing["files"][0]["offset"].as_u64().unwrap_or(0);
        if offset > 0 {
            break offset;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ingestion never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    env.kill_daemon();
    assert!(
        at_kill < len,
        "the daemon was killed mid-file ({at_kill} of {len} bytes)"
    );

    env.start_daemon().await;
    wait_for("the whole file", Duration::from_secs(120), || async {
        get(&env, "/v1/usage/ingest").await["files"][0]["offset"] == len
    })
    .await;
    let ing = get(&env, "/v1/usage/ingest").await;
    assert_eq!(
        ing["files"][0]["lines"],
        turns as u64 * 4,
        "each line read once: {ing}"
    );
    let u = get(&env, "/v1/usage?group=user").await;
    let dora = user_row(&u, "dora").unwrap();
    assert_eq!(dora["messages"], turns as u64);
    assert_eq!(dora["prompts"], turns as u64);
    assert_eq!(dora["tool_calls"], turns as u64);
    assert_eq!(dora["output_tokens"], output);
    assert_eq!(dora["input_tokens"], 3 * turns as u64);
}

#[tokio::test]
async fn file_events_alone_bring_new_transcripts_in() {
    // A rescan only every hour: what arrives within seconds came by inotify.
    let mut env = patient_env();
    env.append_config("[claude]\nrescan_interval = \"1h\"\n");
    env.start_daemon().await;
    // A user's HOME and transcript directory appear after the daemon started.
    copy_dir(&fixtures().join("bob"), &projects(&env, "bob"));
    wait_for("bob's transcript, through file events", T, || async {
        let u = get(&env, "/v1/usage?group=user").await;
        user_row(&u, "bob").is_some_and(|b| b["output_tokens"] == 200)
    })
    .await;
    // A line appended to a watched file.
    let file =
        projects(&env, "bob").join("-home-bob-api/0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f.jsonl");
    append(&file, &today_line("msg_bob_2", 7));
    wait_for("the appended line, through file events", T, || async {
        let u = get(&env, "/v1/usage?group=user").await;
        user_row(&u, "bob").is_some_and(|b| b["output_tokens"] == 210)
    })
    .await;
}
