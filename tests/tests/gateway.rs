//! End to end through the gateway: a real slotgate (HTTPS with its
//! generated certificate, verified by the client) in front of a real slotctl
//! daemon, real ttyd and real tmux, all on loopback.

use std::time::Duration;

use slotapi::{SlotId, SlotStatus};
use slotgate_tests::gateway::{self, free_port, Options, Slotgate};
use slotgate_tests::{bin, wait_for, TestEnv};

const T: Duration = Duration::from_secs(20);

/// A daemon with slot `alice` online and slotgate in front of it.
async fn stack(opts: Options) -> (TestEnv, Slotgate) {
    gateway::alice_behind_gateway(opts).await
}

/// [`stack`] over TLS with `extra` config lines.
async fn stack_with(extra: String) -> (TestEnv, Slotgate) {
    stack(Options {
        extra,
        ..Options::default()
    })
    .await
}

/// [`stack`], then `alice` stopped and the daemon killed: nothing answers
/// on alice's socket and slotctl cannot start her.
async fn stack_with_alice_stopped_and_no_daemon() -> (TestEnv, Slotgate) {
    let (mut env, gw) = stack(Options::default()).await;
    let out = env.slotctl(&["stop", "alice"]);
    assert!(out.status.success());
    env.wait_status("alice", SlotStatus::Stopped, T).await;
    env.kill_daemon();
    (env, gw)
}

fn html() -> [(&'static str, &'static str); 1] {
    [("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")]
}

/// The HTTP and WebSocket requests the slot's ttyd logged (its own log notes
/// each request line).
fn slot_requests(env: &TestEnv, id: &str) -> Vec<String> {
    std::fs::read_to_string(env.slot_log(id))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" HTTP ") || l.contains(" WS "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn page_token_and_headers_over_tls() {
    let redirect_port = free_port();
    let (env, gw) = stack_with(format!(
        "redirect_listen = [\"127.0.0.1:{redirect_port}\"]\n"
    ))
    .await;

    let page = gw.get("/slot/alice/").await.unwrap();
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.text().contains("<html"),
        "ttyd's page: {}",
        &page.text()[..200.min(page.body.len())]
    );
    assert_eq!(
        page.header("content-security-policy"),
        Some("frame-ancestors 'self'")
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(page
        .header("strict-transport-security")
        .is_some_and(|v| v.starts_with("max-age=")));
    let rid = page.header("x-request-id").expect("request id").to_string();
    assert_eq!(rid.len(), 16);

    let token = gw.get("/slot/alice/token").await.unwrap();
    assert_eq!(token.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&token.body).unwrap();
    assert_eq!(v["token"], "");
    wait_for("ttyd to log the proxied /token", T, || async {
        slot_requests(&env, "alice")
            .iter()
            .any(|l| l.contains("HTTP /slot/alice/token"))
    })
    .await;

    let bare = gw.get("/slot/alice").await.unwrap();
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location"), Some("/slot/alice/"));

    let health = gw.get("/healthz").await.unwrap();
    assert_eq!(health.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(body["slotctl"]["reachable"], true, "{body}");
    let metrics = gw.get("/metrics").await.unwrap();
    assert!(
        metrics
            .text()
            .contains("slotgate_requests_total{route=\"slot\",class=\"2xx\"}"),
        "{}",
        metrics.text()
    );

    // The plain-HTTP listener only redirects to HTTPS.
    let r = gateway::plain_request(
        ([127, 0, 0, 1], redirect_port).into(),
        "GET",
        "/slot/alice/?x=1",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://127.0.0.1:{}/slot/alice/?x=1", gw.addr.port()).as_str())
    );
}

#[tokio::test]
async fn websocket_session_runs_commands_and_is_reported() {
    let (env, gw) = stack(Options::default()).await;
    let client = env.client();
    let alice = SlotId::new("alice").unwrap();

    let mut tty = gw.tty("alice").await.unwrap();
    let from = tty.screen.len();
    // The typed line reads `$((6*7))`; only the shell's answer reads 42.
    tty.input("echo sg-$((6*7))-ok\r").await.unwrap();
    tty.expect_from(from, "sg-42-ok", T).await.unwrap();

    wait_for("slotctl to count the connected client", T, || async {
        client
            .get(&alice)
            .await
            .map(|i| i.clients == 1)
            .unwrap_or(false)
    })
    .await;
    tty.close().await;
    wait_for("slotctl to see the disconnect", T, || async {
        client
            .get(&alice)
            .await
            .map(|i| i.clients == 0)
            .unwrap_or(false)
    })
    .await;

    let line = gw
        .wait_for_log_line(T, |l| l["kind"] == "ws" && l["slot"] == "alice")
        .await
        .unwrap();
    assert_eq!(line["status"], 101);
    assert!(line["bytes_in"].as_u64().unwrap() > 10, "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > 10, "{line}");
    assert_eq!(line["served_by"], "slot");
    // Frames from the client: its hello, the typed line and its close
    // (pongs may add more); each at least 6 bytes (header and mask).
    let frames_in = line["frames_in"].as_u64().unwrap();
    assert!(frames_in >= 3, "{line}");
    assert!(
        frames_in * 6 <= line["bytes_in"].as_u64().unwrap(),
        "{line}"
    );
    // To the client: ttyd's title and preferences, then the shell's output.
    assert!(line["frames_out"].as_u64().unwrap() >= 3, "{line}");
}

/// `/healthz` is healthy only while slotctl answers too (a stopped slot
/// cannot start without it); `/livez` only says the gateway serves.
#[tokio::test]
async fn healthz_says_whether_slotctl_answers_and_livez_only_that_the_gateway_serves() {
    async fn health(gw: &Slotgate) -> (u16, serde_json::Value) {
        let r = gw.get("/healthz").await.unwrap();
        let body = serde_json::from_slice(&r.body).unwrap();
        (r.status, body)
    }
    let (mut env, gw) = stack(Options {
        extra: "trusted_proxies = [\"127.0.0.3/32\"]\n".into(),
        ..Options::default()
    })
    .await;
    let (status, body) = health(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["slotctl"]["online"], 1, "{body}");
    // Counts and versions are for who may read /metrics (loopback): not
    // for a client a trusted proxy forwards from elsewhere.
    let mut far = gw.connect_from([127, 0, 0, 3].into()).await.unwrap();
    let headers = [("X-Forwarded-For", "203.0.113.9"), ("Connection", "close")];
    gateway::send_request(&mut far, "GET", "/healthz", &headers)
        .await
        .unwrap();
    let r = gateway::read_response(&mut far, false).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (r.status, &body["slotctl"]["reachable"]),
        (200, &serde_json::json!(true))
    );
    assert!(body["slotctl"].get("online").is_none(), "{body}");

    env.kill_daemon();
    wait_for("/healthz to see slotctl gone", T, || async {
        health(&gw).await.0 == 503
    })
    .await;
    let (_, body) = health(&gw).await;
    assert_eq!(body["slotctl"]["reachable"], false, "{body}");
    assert!(
        !body.to_string().contains(".sock"),
        "no paths for anyone: {body}"
    );
    assert_eq!(gw.get("/livez").await.unwrap().status, 200);

    env.start_daemon().await;
    wait_for("/healthz to see slotctl back", T, || async {
        health(&gw).await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn stopped_slot_starts_on_demand() {
    let (env, gw) = stack(Options::default()).await;
    let out = env.slotctl(&["stop", "alice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.wait_status("alice", SlotStatus::Stopped, T).await;
    wait_for("alice's socket to go", T, || async {
        !env.slot_socket("alice").exists()
    })
    .await;

    // A browser gets the "starting" page at once, which polls the status
    // endpoint until the slot is online.
    let page = gw.request("GET", "/slot/alice/", &html()).await.unwrap();
    assert_eq!(page.status, 503, "{}", page.text());
    assert!(
        page.text().contains("/slot/alice/_slotgate/status"),
        "{}",
        page.text()
    );
    assert!(page.header("retry-after").is_some());
    wait_for("the status endpoint to say online", T, || async {
        match gw.get("/slot/alice/_slotgate/status").await {
            Ok(r) => serde_json::from_slice::<serde_json::Value>(&r.body)
                .map(|v| v["state"] == "online")
                .unwrap_or(false),
            Err(_) => false,
        }
    })
    .await;
    let page = gw.request("GET", "/slot/alice/", &html()).await.unwrap();
    assert_eq!(page.status, 200);

    // A WebSocket waits for the start and then connects.
    let out = env.slotctl(&["stop", "alice"]);
    assert!(out.status.success());
    env.wait_status("alice", SlotStatus::Stopped, T).await;
    let mut tty = gw.tty("alice").await.expect("upgrade waits for the start");
    let from = tty.screen.len();
    tty.input("echo sg-$((6*7))-ok\r").await.unwrap();
    if let Err(e) = tty.expect_from(from, "sg-42-ok", T).await {
        panic!(
            "{e:#}\n--- slotgate\n{}\n--- slot log\n{}\n--- daemon\n{}",
            gw.stderr(),
            std::fs::read_to_string(env.slot_log("alice")).unwrap_or_default(),
            env.daemon_log()
        );
    }
    tty.close().await;
    // Both starts are in the start-time histogram.
    let m = metrics_text(&gw).await;
    assert!(
        m.contains("slotgate_slot_start_duration_seconds_count 2"),
        "{m}"
    );
    assert!(
        m.contains("slotgate_slot_starts_total{result=\"ok\"} 2"),
        "{m}"
    );

    // Unknown slots are a 404 page, for people and programs.
    let r = gw.request("GET", "/slot/nobody/", &html()).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.text().contains("No such terminal"), "{}", r.text());
    let r = gw.get("/slot/nobody/ws").await.unwrap();
    assert_eq!(r.status, 404);
}

/// The answer to a WebSocket upgrade to alice's terminal for `protocol`.
async fn upgrade_answer(gw: &Slotgate, protocol: &str) -> gateway::HttpResponse {
    let mut s = gw.connect().await.unwrap();
    let headers = gateway::upgrade_headers(protocol);
    gateway::send_request(&mut s, "GET", "/slot/alice/ws", &headers)
        .await
        .unwrap();
    gateway::read_response(&mut s, false).await.unwrap()
}

#[tokio::test]
async fn a_websocket_the_slot_refuses_gets_the_gateways_answer_and_others_go_on() {
    let (_env, gw) = stack(Options::default()).await;
    let mut open = gw.tty("alice").await.unwrap();

    // ttyd hangs up on an upgrade for a protocol it does not speak.
    let r = upgrade_answer(&gw, "nope").await;
    assert_eq!(r.status, 502, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "slot_unreachable");
    let line = gw
        .wait_for_log_line(T, |l| l["path"] == "/slot/alice/ws" && l["status"] == 502)
        .await
        .unwrap();
    assert_eq!(line["served_by"], "gateway");
    assert_eq!(line["error"], "slot_unreachable");

    // The session already open is untouched, and a new one opens.
    let from = open.screen.len();
    open.input("echo still-$((20+1))\r").await.unwrap();
    open.expect_from(from, "still-21", T).await.unwrap();
    let mut again = gw.tty("alice").await.unwrap();
    let from = again.screen.len();
    again.input("echo again-$((20+2))\r").await.unwrap();
    again.expect_from(from, "again-22", T).await.unwrap();
}

#[tokio::test]
async fn stand_in_slot_answering_an_upgrade_with_403_gets_the_gateways_page_not_its_words() {
    // ttyd never answers an upgrade with an HTTP error (it hangs up, see
    // above), so a stand-in listens on the slot's socket: the daemon is
    // gone and the slot stopped, so nothing else answers there.
    let (env, gw) = stack_with_alice_stopped_and_no_daemon().await;
    let path = env.slot_socket("alice");
    // Stopping removed the slot's directory with its socket.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let stand_in = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut c, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        c.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 17\r\n\r\nSTAND-IN-SECRET\r\n")
            .await
            .unwrap();
        String::from_utf8(head).unwrap()
    });

    let r = upgrade_answer(&gw, "tty").await;
    assert_eq!(r.status, 403, "the slot's status is kept: {}", r.text());
    assert!(!r.text().contains("STAND-IN-SECRET"), "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "slot_refused");
    assert!(r.header("content-security-policy").is_some());

    // What the slot was sent: the upgrade, with the gateway's headers.
    let head = tokio::time::timeout(T, stand_in).await.unwrap().unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with("GET /slot/alice/ws HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(lower.contains("\r\nx-slotgate-auth: "), "{head}");
    assert!(lower.contains("\r\nx-request-id: "), "{head}");
}

#[tokio::test]
async fn supervisor_down_is_explained() {
    let (_env, gw) = stack_with_alice_stopped_and_no_daemon().await;
    let r = gw.request("GET", "/slot/alice/", &html()).await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("slotctl"), "{}", r.text());
    assert!(
        !r.text().contains("slotctl.sock"),
        "no raw upstream error text: {}",
        r.text()
    );
    let r = gw.get("/slot/alice/token").await.unwrap();
    assert_eq!(r.status, 503);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "supervisor_unavailable");
    // Both count as upstream errors; a refused path does not.
    assert_eq!(gw.get("/slot/alice/%2e%2e/").await.unwrap().status, 400);
    let want = "slotgate_upstream_errors_total{error=\"supervisor_unavailable\"} 2";
    wait_for("the upstream errors counted", T, || async {
        metrics_text(&gw).await.contains(want)
    })
    .await;
    let m = metrics_text(&gw).await;
    assert!(!m.contains("error=\"bad_path\""), "{m}");
}

#[tokio::test]
async fn path_attacks_never_reach_a_slot() {
    let (env, gw) = stack(Options::default()).await;
    env.create_online("bob", "shell").await;
    let long = format!("/slot/alice/{}", "a".repeat(5000));
    let table: Vec<(&str, &str, u16)> = vec![
        ("GET", "/slot/alice/../bob/", 400),
        ("GET", "/slot/alice/%2e%2e/bob/", 400),
        ("GET", "/slot/alice/%2E%2E/bob/ws", 400),
        ("GET", "/slot/alice%2f..%2fbob/", 400),
        ("GET", "/slot/alice/..%2fws", 400),
        ("GET", "/slot/alice/%252e%252e/bob/", 400),
        ("GET", "/slot/alice/%00", 400),
        ("GET", "/slot/alice\\..\\bob/", 400),
        ("GET", "//slot/alice/", 400),
        ("GET", "/slot//alice/", 400),
        ("GET", "/slot/alice//ws", 400),
        ("GET", "/slot/./alice/", 400),
        ("GET", "/slot/bob/..;/alice/", 400),
        ("GET", "/slot/alice/_slotgate/../ws", 400),
        ("GET", "/slot/Alice/", 400),
        ("GET", "/slot/al.ice/", 400),
        ("GET", &long, 400),
        ("GET", "http://127.0.0.1/slot/alice/", 400),
        ("GET", "/slotx/alice/", 404),
        ("GET", "/slot/nobody/", 404),
        ("GET", "/slot/alice/_slotgate/other", 404),
        ("POST", "/slot/alice/ws", 405),
        ("DELETE", "/slot/alice/", 405),
    ];
    let before_alice = slot_requests(&env, "alice").len();
    let before_bob = slot_requests(&env, "bob").len();
    for (method, target, want) in &table {
        let r = gw.request(method, target, &[]).await.unwrap();
        assert_eq!(
            r.status,
            *want,
            "{method} {}: {}",
            &target[..target.len().min(60)],
            r.text()
        );
    }
    // A sentinel that does reach alice: once ttyd logged it, everything sent
    // before it has been handled, so the log can be checked.
    let sentinel = format!("/slot/alice/sentinel-{}", free_port());
    let r = gw.get(&sentinel).await.unwrap();
    assert_eq!(r.status, 404, "ttyd itself answers unknown paths");
    wait_for("the sentinel in alice's log", T, || async {
        slot_requests(&env, "alice")
            .iter()
            .any(|l| l.contains(&sentinel))
    })
    .await;
    // The daemon's health probe (GET /slot/<id>/token) also shows up; anything
    // else would be an attack that got through.
    let probe = |id: &str, l: &str| l.contains(&format!("HTTP /slot/{id}/token "));
    let leaked: Vec<String> = slot_requests(&env, "alice")[before_alice..]
        .iter()
        .filter(|l| !probe("alice", l) && !l.contains(&sentinel))
        .cloned()
        .collect();
    assert!(leaked.is_empty(), "requests reached alice: {leaked:#?}");
    let leaked: Vec<String> = slot_requests(&env, "bob")[before_bob..]
        .iter()
        .filter(|l| !probe("bob", l))
        .cloned()
        .collect();
    assert!(leaked.is_empty(), "requests reached bob: {leaked:#?}");
}

#[tokio::test]
async fn ws_connects_are_rate_limited() {
    let (_env, gw) =
        stack_with("[slotgate.rate_limits]\nwindow = \"1m\"\nws_connect_per_ip = 3\n".into()).await;
    for i in 0..3 {
        let tty = gw
            .tty("alice")
            .await
            .unwrap_or_else(|e| panic!("connect {i}: {e:#}"));
        tty.close().await;
    }
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Protocol", "tty"),
    ];
    let mut s = gw.connect().await.unwrap();
    gateway::send_request(&mut s, "GET", "/slot/alice/ws", &upgrade)
        .await
        .unwrap();
    let r = gateway::read_response(&mut s, false).await.unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Plain requests are a different limit and still pass.
    assert_eq!(gw.get("/slot/alice/token").await.unwrap().status, 200);
    let m = gw.get("/metrics").await.unwrap().text();
    assert!(
        m.contains("slotgate_rate_limited_total{category=\"ws_connect\",scope=\"ip\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn access_log_lines_carry_the_documented_fields() {
    let (_env, gw) = stack(Options::default()).await;
    let r = gw
        .request(
            "GET",
            "/slot/alice/token?token=hunter2&view=1",
            &[("User-Agent", "e2e/1")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let rid = r.header("x-request-id").unwrap().to_string();
    let bad = gw.get("/slot/alice/%2e%2e/").await.unwrap();
    assert_eq!(bad.status, 400);
    let mut tty = gw.tty("alice").await.unwrap();
    tty.input("echo sg-$((6*7))-ok\r").await.unwrap();
    tty.expect("sg-42-ok", T).await.unwrap();
    tty.close().await;

    let line = gw
        .wait_for_log_line(T, |l| l["request_id"] == rid.as_str())
        .await
        .unwrap();
    let fields = [
        "v",
        "ts",
        "start",
        "kind",
        "request_id",
        "client_ip",
        "user",
        "method",
        "path",
        "query",
        "route",
        "slot",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_ms",
        "tls",
        "served_by",
        "user_agent",
        "error",
    ];
    for f in fields {
        assert!(line.get(f).is_some(), "field {f} missing from {line}");
    }
    assert_eq!(line["v"], 1);
    assert_eq!(line["kind"], "http");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/slot/alice/token");
    assert_eq!(line["query"], "token=REDACTED&view=1");
    assert_eq!(line["slot"], "alice");
    assert_eq!(line["status"], 200);
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["tls"], true);
    assert_eq!(line["served_by"], "slot");
    assert_eq!(line["user_agent"], "e2e/1");
    assert!(line["bytes_out"].as_u64().unwrap() > 0);
    let (took, upstream) = (
        line["duration_ms"].as_f64().unwrap(),
        line["upstream_ms"].as_f64().unwrap(),
    );
    assert!(upstream > 0.0 && upstream <= took, "{line}");
    assert!(line["ts"].as_str().unwrap().ends_with('Z'));

    let bad = gw
        .wait_for_log_line(T, |l| {
            l["status"] == 400 && l["path"] == "/slot/alice/%2e%2e/"
        })
        .await
        .unwrap();
    assert_eq!(bad["error"], "bad_path");
    assert_eq!(bad["served_by"], "gateway");
    // The slot was not asked.
    assert!(bad["upstream_ms"].is_null(), "{bad}");
    let ws = gw
        .wait_for_log_line(T, |l| l["kind"] == "ws")
        .await
        .unwrap();
    // Until the slot's 101.
    let upstream = ws["upstream_ms"].as_f64().unwrap();
    assert!(
        upstream > 0.0 && upstream < ws["duration_ms"].as_f64().unwrap(),
        "{ws}"
    );

    let raw = std::fs::read_to_string(&gw.access_log).unwrap();
    assert!(!raw.contains("hunter2"), "a secret reached the access log");
    for line in raw.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[tokio::test]
async fn certificate_files_are_reloaded_without_dropping_connections() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    env.create_online("alice", "shell").await;
    let certs = env.path("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (cert, key) = gateway::write_test_cert(&certs, "host").unwrap();
    let (next_cert, next_key) = gateway::write_test_cert(&env.path(""), "next").unwrap();
    let mut gw = Slotgate::start(
        &env.config,
        Options {
            cert: Some((cert.clone(), key.clone())),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    gw.trust(&next_cert).unwrap();
    let first = gateway::cert_der(&cert).unwrap();
    let second = gateway::cert_der(&next_cert).unwrap();

    let (mut open, leaf) = gw.connect_with_cert().await.unwrap();
    assert_eq!(leaf.as_deref(), Some(first.as_slice()));
    assert_eq!(status_on(&mut open, "/slot/alice/token").await, 200);

    gateway::replace_file(&next_key, &key).unwrap();
    gateway::replace_file(&next_cert, &cert).unwrap();
    wait_for(
        "new handshakes to present the new certificate",
        T,
        || async { matches!(gw.connect_with_cert().await, Ok((_, Some(leaf))) if leaf == second) },
    )
    .await;

    // The connection opened before the reload still works.
    assert_eq!(status_on(&mut open, "/slot/alice/token").await, 200);

    // A broken file keeps the current certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    wait_for("the failed reload to be counted", T, || async {
        gw.get("/metrics")
            .await
            .map(|r| {
                r.text()
                    .contains("slotgate_tls_reloads_total{result=\"failed\"} 1")
            })
            .unwrap_or(false)
    })
    .await;
    let (_, leaf) = gw.connect_with_cert().await.unwrap();
    assert_eq!(leaf.as_deref(), Some(second.as_slice()));
}

/// systemd starts services with a soft open-files limit of 1024, and each
/// open terminal holds two sockets in the gateway. slotgate lifts the soft
/// limit to the hard one at start: started with a soft limit of 256 it
/// still answers 400 connections held open at once (without the lift it
/// stops accepting at about 230).
#[tokio::test]
async fn a_low_open_files_limit_is_lifted_at_start() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SOFT: u64 = 256;
    const CONNS: usize = 400;
    let env = TestEnv::new(&[], "");
    let gw = Slotgate::start(
        &env.config,
        Options {
            tls: false,
            open_files: Some(SOFT),
            // One address holding 400 connections is what the per-address
            // cap is for; this test is about the process's own limit.
            extra: "[slotgate.rate_limits]\nmax_connections_per_ip = 0\n".into(),
            ..Options::default()
        },
    )
    .await
    .expect("slotgate starts");
    let pid = gw.pid().expect("running");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line");
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (soft, hard) = (n[0], n[1]);
    assert!(
        hard >= 1024,
        "this test needs a hard open-files limit of at least 1024; this machine's is {hard}"
    );
    assert_eq!(soft, hard, "{line}");
    // It started from the low limit (the log says what it was; a log that
    // is not a terminal has no colour codes).
    let log = gw.stderr();
    assert!(log.contains(&format!("was={SOFT}")), "{log}");
    assert!(!log.contains('\x1b'), "{log:?}");

    let mut conns = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        conns.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    let answers = conns.iter_mut().map(|c| async move {
        // No slotctl runs here: /livez, the gateway alone.
        c.write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        c.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    });
    let answers = tokio::time::timeout(T, futures_util::future::join_all(answers))
        .await
        .expect("every connection answered");
    for a in answers {
        assert_eq!(&a.expect("an answer"), b"HTTP/1.1 200");
    }
}

/// `max_header_size` (default 64 KiB) counts each request's header bytes:
/// two 40 KB requests on one kept-alive connection are both answered (also
/// more than the gateway's 16 KiB client read buffer); one request with
/// three 25 KB header lines (75 KB) has its connection closed unanswered.
#[tokio::test]
async fn request_headers_are_capped_per_request() {
    let (_env, gw) = stack(Options::default()).await;
    let big = "b".repeat(40_000);
    let mut kept = gw.connect().await.unwrap();
    for i in 0..2 {
        gateway::send_request(&mut kept, "GET", "/healthz", &[("X-Big", big.as_str())])
            .await
            .unwrap();
        let r = gateway::read_response(&mut kept, false).await.unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }

    let line = "c".repeat(25_000);
    let mut s = gw.connect().await.unwrap();
    let headers = [("X-A", line.as_str()), ("X-B", &line), ("X-C", &line)];
    let answer = match gateway::send_request(&mut s, "GET", "/healthz", &headers).await {
        Ok(()) => gateway::read_response(&mut s, false)
            .await
            .map(|r| r.status)
            .ok(),
        Err(_) => None,
    };
    assert_eq!(answer, None, "75 KB of headers were answered");
    let m = metrics_text(&gw).await;
    assert!(m.contains("slotgate_headers_too_large_total 1\n"), "{m}");
    assert!(gw.stderr().contains("larger than max_header_size"));
}

/// A paste bigger than the gateway's 16 KiB client read buffer and relay
/// chunk, in one WebSocket frame, arrives whole (`wc -c` in the slot
/// counts it).
#[tokio::test]
async fn a_large_paste_arrives_whole() {
    let (_env, gw) = stack(Options::default()).await;
    let mut tty = gw.tty("alice").await.unwrap();
    // Once READY shows (the typed line reads RE''ADY), the shell has left
    // line editing and the terminal is in cooked mode for wc.
    let from = tty.screen.len();
    tty.input("stty -echo; echo RE''ADY; wc -c\r")
        .await
        .unwrap();
    tty.expect_from(from, "READY", T).await.unwrap();
    // 600 lines of 99 characters and a newline (the terminal turns the
    // carriage return into one), then end of input.
    let line = format!("{}\r", "x".repeat(99));
    let from = tty.screen.len();
    tty.input(&format!("{}\u{4}", line.repeat(600)))
        .await
        .unwrap();
    tty.expect_from(from, "60000", T).await.unwrap();
    tty.close().await;
}

/// One `Connection: close` GET from a chosen loopback source address.
async fn get_from(
    gw: &Slotgate,
    source: [u8; 4],
    target: &str,
) -> anyhow::Result<gateway::HttpResponse> {
    let mut s = gw.connect_from(source.into()).await?;
    gateway::send_request(&mut s, "GET", target, &[("Connection", "close")]).await?;
    gateway::read_response(&mut s, false).await
}

/// A connection from `source` whose `/healthz` was answered 200 and which
/// stays open (kept alive).
async fn answered_and_kept(gw: &Slotgate, source: [u8; 4], what: &str) -> gateway::Stream {
    let mut s = gw.connect_from(source.into()).await.unwrap();
    assert_eq!(status_on(&mut s, "/healthz").await, 200, "{what}");
    s
}

/// The status of a GET for `target` on an open, kept-alive connection.
async fn status_on(s: &mut gateway::Stream, target: &str) -> u16 {
    gateway::send_request(s, "GET", target, &[]).await.unwrap();
    gateway::read_response(s, false).await.unwrap().status
}

/// The gateway's counters as text (asked from 127.0.0.1).
async fn metrics_text(gw: &Slotgate) -> String {
    gw.get("/metrics").await.expect("/metrics answers").text()
}

/// A client that sends its request headers a line at a time and never
/// finishes them (slowloris) is closed at `header_timeout`, without an
/// answer. A terminal session opened before it, and a kept-alive connection
/// idle since before it, both outlive that deadline: it is for headers, not
/// for connections.
#[tokio::test]
async fn headers_that_never_finish_are_cut_off_at_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_env, gw) = stack_with("header_timeout = \"1s\"\n".into()).await;
    let mut tty = gw.tty("alice").await.unwrap();
    let mut kept = gw.connect().await.unwrap();
    assert_eq!(status_on(&mut kept, "/healthz").await, 200);

    let mut slow = gw.connect().await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut closed = false;
    // One header line every 200 ms, for at most 10 s.
    for i in 0..50 {
        let line = format!("X-Slow-{i}: a\r\n");
        if slow.write_all(line.as_bytes()).await.is_err() {
            closed = true;
            break;
        }
        let _ = slow.flush().await;
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let took = started.elapsed();
    assert!(closed, "a client trickling headers for 10 s was not closed");
    assert!(
        answer.is_empty(),
        "the trickling client got an answer: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before header_timeout"
    );

    // Both older than the deadline, both still served.
    let from = tty.screen.len();
    tty.input("echo sg-$((6*7))-late\r").await.unwrap();
    tty.expect_from(from, "sg-42-late", T).await.unwrap();
    assert_eq!(status_on(&mut kept, "/healthz").await, 200);
    let m = metrics_text(&gw).await;
    assert!(m.contains("slotgate_header_timeouts_total 1\n"), "{m}");
    tty.close().await;
}

/// `max_connections_per_ip` caps the connections one address holds open;
/// the next is closed before its request is read, other addresses are not
/// affected, a trusted proxy (which carries many clients) is exempt, and
/// closing a connection frees its place.
#[tokio::test]
async fn open_connections_per_address_are_capped() {
    const CAP: usize = 3;
    let (_env, gw) = stack_with(format!(
            "trusted_proxies = [\"127.0.0.3/32\"]\n[slotgate.rate_limits]\nmax_connections_per_ip = {CAP}\n"
        )).await;
    let client = [127, 0, 0, 2];
    let mut held = Vec::new();
    for i in 0..CAP {
        held.push(answered_and_kept(&gw, client, &format!("connection {i}")).await);
    }
    let over = get_from(&gw, client, "/healthz").await;
    assert!(
        over.is_err(),
        "connection {} from one address was answered: {:?}",
        CAP + 1,
        over.map(|r| r.status)
    );
    // Another address is not affected.
    assert_eq!(gw.get("/healthz").await.unwrap().status, 200);
    // A trusted proxy holds more than the cap.
    let mut proxied = Vec::new();
    for i in 0..CAP + 2 {
        proxied
            .push(answered_and_kept(&gw, [127, 0, 0, 3], &format!("proxy connection {i}")).await);
    }
    // A closed connection gives its place back.
    drop(held.pop());
    wait_for("a place to free up for 127.0.0.2", T, || async {
        get_from(&gw, client, "/healthz")
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;

    // Two held by 127.0.0.2, five by the proxy, and the one asking (the
    // closed ones are let go as their tasks end).
    wait_for("the open-connections gauge to settle at 8", T, || async {
        metrics_text(&gw)
            .await
            .contains("slotgate_connections_open 8\n")
    })
    .await;
    let m = metrics_text(&gw).await;
    assert!(
        m.lines().any(|l| l
            .strip_prefix("slotgate_connections_refused_total{reason=\"per_ip_open\"} ")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 1)),
        "{m}"
    );
    let log = gw.stderr();
    let warnings = log
        .lines()
        .filter(|l| l.contains("per-address limit") && l.contains("127.0.0.2"))
        .count();
    assert_eq!(warnings, 1, "one warning per address per window:\n{log}");
}

/// `connections_per_ip` counts new connections per address per window,
/// checked at accept: over it, the connection is closed before the TLS
/// handshake. The plain-HTTP redirect listener counts in the same window.
#[tokio::test]
async fn new_connections_per_address_are_limited_per_window() {
    use tokio::io::AsyncReadExt;
    const PER_WINDOW: usize = 4;
    let redirect_port = free_port();
    let (_env, gw) = stack_with(format!(
        "redirect_listen = [\"127.0.0.1:{redirect_port}\"]\n[slotgate.rate_limits]\nwindow = \"1m\"\nconnections_per_ip = {PER_WINDOW}\n"
    ))
    .await;
    let client = [127, 0, 0, 2];
    for i in 0..PER_WINDOW {
        let r = get_from(&gw, client, "/healthz").await;
        assert_eq!(r.map(|r| r.status).ok(), Some(200), "connection {i}");
    }
    let over = gw.connect_from(client.into()).await;
    assert!(
        over.is_err(),
        "connection {} in the window completed its TLS handshake",
        PER_WINDOW + 1
    );
    assert_eq!(gw.get("/healthz").await.unwrap().status, 200);
    // The redirect listener: closed for 127.0.0.2, answered for 127.0.0.1.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(([127, 0, 0, 2], 0).into()).unwrap();
    let mut s = sock
        .connect(([127, 0, 0, 1], redirect_port).into())
        .await
        .unwrap();
    // Bounded well under header_timeout (20 s), which would close it too.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the redirect listener kept a connection over the window's count: {read:?}"
    );
    let r = gateway::plain_request(([127, 0, 0, 1], redirect_port).into(), "GET", "/")
        .await
        .unwrap();
    assert_eq!(r.status, 308);
    let m = metrics_text(&gw).await;
    assert!(
        m.contains("slotgate_connections_refused_total{reason=\"per_ip_rate\"} 2\n"),
        "{m}"
    );
}

#[test]
fn check_config_validates_like_nginx_t() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[paths]\ndata_dir = \"d\"\n[slotgate]\nlisten = [\"127.0.0.1:9443\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("slotgate"))
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is OK"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[slotgate]\nlisten = [\"0.0.0.0:7681\"]\nauth = \"none\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("slotgate"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("bad.toml") && err.contains("slotgate.auth"),
        "{err}"
    );

    let out = std::process::Command::new(bin("slotgate"))
        .args(["check-config", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
