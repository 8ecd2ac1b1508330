//! The activity store end to end: a real slotctl daemon tailing the access
//! log into a real `activity.db`, real slots for lifecycle events, and a
//! real slotgate for WebSocket sessions and sign-ins.
//!
//! Tests named `written_log_*` write access-log lines in slotgate's
//! documented format themselves (docs/access-log.md): they need control
//! over volume, rotation, truncation and timing that driving slotgate
//! cannot give. The others use slotgate's own lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use slotgate_tests::gateway::{Options, Slotgate};
use slotgate_tests::{wait_for, TestEnv};

const T: Duration = Duration::from_secs(30);

fn access_log(env: &TestEnv) -> PathBuf {
    env.path("data/logs/access.log")
}

fn db(env: &TestEnv) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(env.path("data/activity.db")).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// One line in slotgate's format.
fn line(id: u64, user: &str, status: u16, kind: &str, ts_ms: u64) -> String {
    let t = |ms: u64| {
        let secs = ms / 1000;
        let (d, s) = (secs / 86_400, secs % 86_400);
        // Civil date from days (H. Hinnant).
        let z = d as i64 + 719_468;
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
    };
    json!({
        "v": 1, "ts": t(ts_ms), "start": t(ts_ms.saturating_sub(5)), "kind": kind,
        "request_id": format!("{id:016x}"), "client_ip": "127.0.0.1",
        "user": user, "method": "GET", "path": format!("/slot/{user}/p{id}"), "query": null,
        "route": "slot", "slot": user, "status": status, "bytes_in": 3, "bytes_out": 100,
        "duration_ms": 5.0, "tls": true, "served_by": "slot", "user_agent": "t/1",
        "error": if status >= 400 { json!("forbidden") } else { Value::Null },
    })
    .to_string()
}

/// Poll `f` until it yields a value (bounded by `T`).
async fn until<V, F, Fut>(what: &str, mut f: F) -> V
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<V>>,
{
    let deadline = std::time::Instant::now() + T;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {T:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap(),
    );
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
}

async fn get(env: &TestEnv, path: &str) -> Value {
    env.client()
        .get_json::<Value>(path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Status and error code of a refused GET.
async fn refused(env: &TestEnv, path: &str) -> (u16, String) {
    match env.client().get_json::<Value>(path).await {
        Ok(v) => panic!("GET {path} was accepted: {v}"),
        Err(slotapi::ClientError::Api { status, code, .. }) => (status, code),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

async fn stored_lines(env: &TestEnv) -> u64 {
    env.client()
        .get_json::<Value>("/v1/activity/ingest")
        .await
        .map(|v| v["lines"].as_u64().unwrap_or(0))
        .unwrap_or(0)
}

async fn wait_lines(env: &TestEnv, n: u64) {
    wait_for(&format!("{n} stored lines"), T, || async {
        stored_lines(env).await >= n
    })
    .await;
}

/// (rows, distinct request ids) in the requests table.
fn counts(env: &TestEnv) -> (i64, i64) {
    db(env)
        .query_row(
            "SELECT count(*), count(DISTINCT request_id) FROM requests",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

#[tokio::test]
async fn written_log_exactly_once_across_kill_9_mid_file() {
    let mut env = TestEnv::new(&[], "");
    let total: u64 = 200_000;
    let now = now_ms();
    append(
        &access_log(&env),
        (0..total).map(|i| line(i, &format!("u{}", i % 7), 200, "http", now)),
    );
    env.start_daemon().await;
    wait_for("ingestion to begin", T, || async {
        stored_lines(&env).await > 0
    })
    .await;
    env.kill_daemon();
    let (at_kill, _) = counts(&env);
    assert!(
        at_kill > 0 && (at_kill as u64) < total,
        "the kill must land mid-file (stored {at_kill} of {total})"
    );
    // More lines arrive while the daemon is down.
    append(
        &access_log(&env),
        (total..total + 1000).map(|i| line(i, "late", 200, "http", now)),
    );
    env.start_daemon().await;
    wait_lines(&env, total + 1000).await;
    let (rows, distinct) = counts(&env);
    assert_eq!(distinct as u64, total + 1000, "every line stored");
    assert_eq!(rows, distinct, "no line stored twice");
    let st = get(&env, "/v1/activity/ingest").await;
    assert_eq!(st["lines"], total + 1000);
    assert_eq!(st["lag_bytes"], 0);
    assert_eq!(st["malformed"], 0);
}

#[tokio::test]
async fn written_log_rotation_and_truncation_while_running() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let log = access_log(&env);
    let now = now_ms();
    append(&log, (0..1000).map(|i| line(i, "a", 200, "http", now)));
    wait_lines(&env, 1000).await;
    // Rotation as slotgate does it: lines land in the old file, it is
    // renamed, a new file starts. Both are read to the end, once.
    append(&log, (1000..1500).map(|i| line(i, "a", 200, "http", now)));
    std::fs::rename(&log, env.path("data/logs/access.log.1")).unwrap();
    append(&log, (1500..2200).map(|i| line(i, "b", 200, "http", now)));
    wait_lines(&env, 2200).await;
    // Truncation in place: the new content is a new generation.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    append(&log, (5000..5300).map(|i| line(i, "c", 200, "http", now)));
    wait_lines(&env, 2500).await;
    let (rows, distinct) = counts(&env);
    assert_eq!((rows, distinct), (2500, 2500));
    let st = get(&env, "/v1/activity/ingest").await;
    let files = st["files"].as_array().unwrap();
    assert_eq!(
        files.len(),
        3,
        "two generations of access.log and the rotated file: {st}"
    );
    assert_eq!(st["lag_bytes"], 0);
    // A restart reads nothing again.
    env.kill_daemon();
    env.start_daemon().await;
    append(&log, (9000..9001).map(|i| line(i, "d", 200, "http", now)));
    wait_lines(&env, 2501).await;
    assert_eq!(counts(&env), (2501, 2501));
}

#[tokio::test]
async fn written_log_malformed_lines_are_counted_kept_and_skipped() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let log = access_log(&env);
    let now = now_ms();
    append(
        &log,
        [
            line(1, "a", 200, "http", now),
            "this is not json".to_string(),
            r#"{"v":1,"kind":"http"}"#.to_string(),
            line(2, "a", 200, "http", now).replace("\"v\":1", "\"v\":9"),
            line(3, "a", 200, "http", now),
        ],
    );
    wait_lines(&env, 2).await;
    let st = get(&env, "/v1/activity/ingest").await;
    assert_eq!(st["malformed"], 3, "{st}");
    let m = get(&env, "/v1/activity/malformed").await;
    let items = m["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().any(|i| i["line"] == "this is not json"));
    assert!(items
        .iter()
        .any(|i| i["reason"].as_str().unwrap().contains("version 9")));
    // The lines around them were stored, and ingestion goes on.
    append(&log, [line(4, "a", 200, "http", now)]);
    wait_lines(&env, 3).await;
    let r = get(&env, "/v1/activity/requests").await;
    let ids: Vec<&str> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        3,
        "lines 1, 3 and 4, not the malformed ones: {ids:?}"
    );
    let out = env.slotctl(&["activity", "malformed", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn written_log_filters_pagination_and_refusals() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let now = now_ms();
    let mut lines = Vec::new();
    for i in 0..30u64 {
        let user = if i % 3 == 0 { "ann" } else { "bob" };
        let status = if i % 5 == 0 { 403 } else { 200 };
        let kind = if i % 10 == 9 { "ws" } else { "http" };
        lines.push(line(i, user, status, kind, now - 1000 + i));
    }
    append(&access_log(&env), lines);
    wait_lines(&env, 30).await;

    let ann = get(&env, "/v1/activity/requests?user=ann&limit=500").await;
    assert_eq!(ann["items"].as_array().unwrap().len(), 10);
    assert!(ann["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["user"] == "ann"));
    let failed = get(&env, "/v1/activity/requests?status=4xx").await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 6);
    let exact = get(&env, "/v1/activity/requests?status=403&user=bob").await;
    assert_eq!(exact["items"].as_array().unwrap().len(), 4);
    let ws = get(&env, "/v1/activity/requests?kind=ws").await;
    assert_eq!(ws["items"].as_array().unwrap().len(), 3);
    let q = get(&env, "/v1/activity/requests?q=%2Fp17").await;
    assert_eq!(q["items"][0]["request_id"], format!("{:016x}", 17));
    let since = get(
        &env,
        &format!("/v1/activity/requests?since={}", now - 1000 + 25),
    )
    .await;
    assert_eq!(since["items"].as_array().unwrap().len(), 5);
    let sessions = get(&env, "/v1/activity/sessions?user=bob").await;
    assert_eq!(sessions["items"].as_array().unwrap().len(), 2);

    // Pages of 7, newest first, every line once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            None => "/v1/activity/requests?limit=7".to_string(),
            Some(c) => format!("/v1/activity/requests?limit=7&cursor={c}"),
        };
        let page = get(&env, &path).await;
        for i in page["items"].as_array().unwrap() {
            seen.push(i["ts_ms"].as_u64().unwrap());
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 30);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );

    let stats = get(&env, "/v1/activity/stats?period=week").await;
    let total: u64 = stats["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 30);
    assert_eq!(stats["per_user"].as_array().unwrap().len(), 2);

    for (path, status) in [
        ("/v1/activity/requests?limit=0", 400),
        ("/v1/activity/requests?limit=501", 400),
        ("/v1/activity/requests?status=7xx", 400),
        ("/v1/activity/requests?kind=smtp", 400),
        ("/v1/activity/requests?since=yesterday", 400),
        ("/v1/activity/requests?cursor=nonsense", 400),
        ("/v1/activity/requests?colour=red", 400),
        ("/v1/activity/sessions?status=404", 400),
        ("/v1/activity/stats?period=year", 400),
        ("/v1/activity/events?kind=exploded", 400),
        ("/v1/recordings/no-such!", 400),
        ("/v1/recordings/abc", 404),
        ("/v1/replay-links/short", 404),
    ] {
        let (got, code) = refused(&env, path).await;
        assert_eq!(got, status, "{path}");
        assert_eq!(
            code,
            if status == 400 {
                "bad_request"
            } else {
                "not_found"
            },
            "{path}"
        );
    }
}

#[tokio::test]
async fn written_log_recordings_and_replay_links() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let cast = env.path("rec-1.cast");
    let body = "{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"hello\"]\n";
    std::fs::write(&cast, body).unwrap();
    let mut l: Value = serde_json::from_str(&line(77, "ann", 101, "ws", now_ms())).unwrap();
    l["recording"] = json!(cast.display().to_string());
    l["recording_bytes"] = json!(body.len());
    append(&access_log(&env), [l.to_string()]);
    wait_lines(&env, 1).await;
    let id = format!("{:016x}", 77);

    let list = get(&env, "/v1/recordings?user=ann").await;
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["size_bytes"], body.len());
    assert_eq!(list["items"][0]["available"], true);
    let s = get(&env, "/v1/activity/sessions").await;
    assert_eq!(s["items"][0]["recording"], id.as_str());
    let (status, bytes) = slotapi::get_unix(
        &env.control_socket(),
        &format!("/v1/recordings/{id}/cast"),
        &[],
        T,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(bytes, body.as_bytes());

    let c = env.client();
    let link: Value = c
        .post_json(
            &format!("/v1/recordings/{id}/links"),
            Some(&json!({"ttl": "1h"})),
        )
        .await
        .unwrap();
    let token = link["token"].as_str().unwrap().to_string();
    assert_eq!(link["url_path"], format!("/replay/{token}"));
    let exp = link["expires_ms"].as_u64().unwrap();
    assert!(exp > now_ms() + 3_500_000 && exp < now_ms() + 3_700_000);
    // Only a hash of the token is stored.
    let stored: Vec<String> = db(&env)
        .prepare("SELECT token_hash FROM replay_links")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token);
    let valid = get(&env, &format!("/v1/replay-links/{token}")).await;
    assert_eq!(valid["recording"], id.as_str());
    let _: Value = c
        .delete_json(&format!("/v1/replay-links/{token}"))
        .await
        .unwrap();
    assert_eq!(
        refused(&env, &format!("/v1/replay-links/{token}")).await,
        (410, "gone".to_string())
    );
    let other = "A".repeat(43);
    assert_eq!(
        refused(&env, &format!("/v1/replay-links/{other}")).await.0,
        404
    );
    for ttl in ["10s", "31d", "soon"] {
        let e = c
            .post_json::<Value, _>(
                &format!("/v1/recordings/{id}/links"),
                Some(&json!({ "ttl": ttl })),
            )
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "ttl {ttl}");
    }
    // The file goes away: the index says so and the cast is 410.
    std::fs::remove_file(&cast).unwrap();
    let one = get(&env, &format!("/v1/recordings/{id}")).await;
    assert_eq!(one["available"], false);
    assert_eq!(
        refused(&env, &format!("/v1/recordings/{id}/cast")).await,
        (410, "gone".to_string())
    );
    let e = c
        .post_json::<Value, _>(
            &format!("/v1/recordings/{id}/links"),
            Some(&json!({"ttl": "1h"})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(410));
}

#[tokio::test]
async fn written_log_retention_removes_old_rows_only() {
    let mut env = TestEnv::new(&[], "");
    env.append_config("[activity]\nretention.requests = \"1h\"\nretention_interval = \"1s\"\n");
    env.start_daemon().await;
    let now = now_ms();
    append(
        &access_log(&env),
        [
            line(1, "a", 200, "http", now - 3 * 86_400_000),
            line(2, "a", 200, "http", now),
        ],
    );
    wait_lines(&env, 2).await;
    wait_for("the old request to be removed", T, || async {
        counts(&env).0 == 1
    })
    .await;
    let r = get(&env, "/v1/activity/requests").await;
    assert_eq!(r["items"][0]["request_id"], format!("{:016x}", 2));
    // The rollup keeps the old day for the stats.
    let s = get(&env, "/v1/activity/stats?since=0").await;
    assert_eq!(s["buckets"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_activity_config_names_file_key_and_reason() {
    let env = TestEnv::new(&[], "");
    env.append_config("[activity]\nretention.sessions = \"a while\"\n");
    let out = env.slotctl(&["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("slotgate.toml"), "{err}");
    assert!(err.contains("activity.retention.sessions"), "{err}");
    assert!(err.contains("not a duration"), "{err}");
}

#[tokio::test]
async fn lifecycle_events_from_a_real_slot() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    env.create_online("evt", "shell").await;
    let out = env.slotctl(&["restart", "evt"]);
    assert!(out.status.success());
    env.wait_status("evt", slotapi::SlotStatus::Online, T).await;
    assert!(env.slotctl(&["stop", "evt"]).status.success());
    assert!(env.slotctl(&["delete", "evt"]).status.success());
    let want = [
        "created",
        "started",
        "restarted",
        "started",
        "stopped",
        "deleted",
    ];
    let kinds: Vec<String> = until("the lifecycle events", || async {
        let v = get(&env, "/v1/activity/events?slot=evt").await;
        let kinds: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        (kinds.len() >= want.len()).then_some(kinds)
    })
    .await;
    assert_eq!(kinds, want);
    let started = get(&env, "/v1/activity/events?slot=evt&kind=started").await;
    let items = started["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["owner"], "evt");
    assert!(items[0]["detail"].as_str().unwrap().starts_with("pid "));
    // A restart of the daemon does not invent events. `created` comes
    // from the periodic slot-list comparison, so once a slot made after the
    // restart has its `created`, that comparison has run at least once.
    env.kill_daemon();
    env.start_daemon().await;
    env.create_online("evt2", "shell").await;
    until("a comparison pass after the restart", || async {
        let v = get(&env, "/v1/activity/events?slot=evt2&kind=created").await;
        (!v["items"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    let v = get(&env, "/v1/activity/events?slot=evt").await;
    assert_eq!(v["items"].as_array().unwrap().len(), want.len());
    let out = env.slotctl(&["activity", "events", "--slot", "evt"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("restarted"), "{text}");
}

#[tokio::test]
async fn a_websocket_session_through_slotgate_is_online_then_stored() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    env.create_online("alice", "shell").await;
    let gw = Slotgate::start(&env.config, Options::default())
        .await
        .expect("slotgate starts");
    let mut tty = gw.tty("alice").await.unwrap();
    tty.input("echo act-$((6*7))\r").await.unwrap();
    tty.expect("act-42", T).await.unwrap();
    let session: String = until("the session to be online", || async {
        let v = get(&env, "/v1/activity/online?slot=alice").await;
        v["items"][0]["session"].as_str().map(str::to_string)
    })
    .await;
    let out = env.slotctl(&["activity", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["online"][0]["session"], session.as_str());
    tty.close().await;
    wait_for("the session to be stored", T, || async {
        let v = get(&env, "/v1/activity/sessions?slot=alice").await;
        v["items"][0]["session"] == session.as_str()
    })
    .await;
    let v = get(&env, "/v1/activity/sessions?slot=alice").await;
    let s = &v["items"][0];
    assert!(s["bytes_out"].as_u64().unwrap() > 0);
    assert!(s["bytes_in"].as_u64().unwrap() > 0);
    assert!(s["end_ms"].as_u64().unwrap() >= s["start_ms"].as_u64().unwrap());
    assert_eq!(s["client_ip"], "127.0.0.1");
    let line = gw
        .wait_for_log_line(T, |l| l["kind"] == "ws")
        .await
        .unwrap();
    assert_eq!(line["request_id"], session.as_str());
    wait_for("nobody to be online", T, || async {
        get(&env, "/v1/activity/online").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    let stats = get(&env, "/v1/activity/stats?slot=alice").await;
    assert_eq!(stats["buckets"][0]["sessions"], 1);
}

#[tokio::test]
async fn sign_ins_through_slotgate_become_logins() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let gw = Slotgate::start(
        &env.config,
        Options {
            extra: "auth = \"local\"\n".into(),
            ..Options::default()
        },
    )
    .await
    .expect("slotgate starts");
    identity::store::Store::open(&gw.paths.data_dir.join("identity.db"))
        .unwrap()
        .add_user(
            "carol",
            identity::access::Role::User,
            Some("carol-password-123"),
            None,
        )
        .unwrap();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(T)
        .build()
        .unwrap();
    let login = |pw: &'static str| {
        c.post(format!("{}/auth/login", gw.base_url()))
            .header("Origin", gw.base_url())
            .form(&[("user", "carol"), ("password", pw), ("next", "/")])
            .send()
    };
    assert_eq!(login("wrong-password-0").await.unwrap().status(), 401);
    assert_eq!(login("carol-password-123").await.unwrap().status(), 303);
    // A form without Origin is refused before any account is named.
    let r = c
        .post(format!("{}/auth/login", gw.base_url()))
        .form(&[("user", "carol"), ("password", "x"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let items: Vec<Value> = until("three logins", || async {
        let v = get(&env, "/v1/activity/logins").await;
        let items = v["items"].as_array().unwrap().clone();
        (items.len() >= 3).then_some(items)
    })
    .await;
    assert_eq!(items[0]["user"], Value::Null);
    assert_eq!(items[0]["ok"], false);
    assert_eq!(items[0]["error"], "csrf");
    assert_eq!(items[1]["user"], "carol");
    assert_eq!(items[1]["ok"], true);
    assert_eq!(items[1]["method"], "password");
    assert_eq!(items[2]["user"], "carol");
    assert_eq!(items[2]["ok"], false);
    assert_eq!(items[2]["error"], "login_failed");
    let mine = get(&env, "/v1/activity/logins?user=carol").await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 2);
    let raw = std::fs::read_to_string(&gw.access_log).unwrap();
    assert!(
        !raw.contains("carol-password-123"),
        "a password reached the log"
    );
}

#[tokio::test]
async fn crashes_become_exited_restarted_and_errored_events() {
    // Real ttyd told to serve TLS with a certificate that does not exist:
    // it exits at start, every time, until the supervisor gives up.
    let crash = "command = [\"bash\"]\nttyd_args = [\"--ssl\", \"--ssl-cert\", \"/nonexistent.pem\", \"--ssl-key\", \"/nonexistent.key\"]\n";
    let mut env = TestEnv::new(&[("crashy", crash)], "");
    env.start_daemon().await;
    // A healthy slot whose ttyd is killed: exited, restarted, started.
    let info = env.create_online("ok1", "shell").await;
    let pid = info.pid.unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let kinds: Vec<String> = until("exited, restarted, started", || async {
        let v = get(&env, "/v1/activity/events?slot=ok1").await;
        let kinds: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        (kinds.len() >= 5).then_some(kinds)
    })
    .await;
    assert_eq!(
        kinds,
        ["created", "started", "exited", "restarted", "started"]
    );
    let exited = get(&env, "/v1/activity/events?slot=ok1&kind=exited").await;
    let detail = exited["items"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("ttyd ended"), "{detail}");

    let _ = env.slotctl(&["create", "eve", "--template", "crashy"]);
    env.wait_status("eve", slotapi::SlotStatus::Errored, T)
        .await;
    let errored = until("the errored event", || async {
        let v = get(&env, "/v1/activity/events?slot=eve&kind=errored").await;
        v["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert!(errored["detail"]
        .as_str()
        .unwrap()
        .contains("gave up after 4 failures"));
    let exits = get(&env, "/v1/activity/events?slot=eve&kind=exited").await;
    // Three failures back off (exited); the fourth is the errored event.
    assert_eq!(exits["items"].as_array().unwrap().len(), 3, "{exits}");
}
