//! Stopping and reloading the gateway, end to end: a real slotgate (HTTPS,
//! its generated certificate) in front of real slotctl, ttyd and tmux.
//! A reload starts a new slotgate process that takes the listening sockets
//! over; these tests follow both processes by their pids.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use slotgate_tests::accounts::close_code;
use slotgate_tests::gateway::{self, Options, Slotgate};
use slotgate_tests::{bin, wait_for, TestEnv};

const T: Duration = Duration::from_secs(20);

async fn stack(extra: &str) -> (TestEnv, Slotgate) {
    gateway::alice_behind_gateway(Options {
        extra: extra.into(),
        ..Options::default()
    })
    .await
}

/// `slotgate reload` with the gateway's configuration.
fn reload(gw: &Slotgate) -> Output {
    Command::new(bin("slotgate"))
        .arg("--config")
        .arg(&gw.config)
        .arg("reload")
        .output()
        .expect("slotgate reload runs")
}

/// A `slotgate reload` that must succeed: the pid now serving.
fn reloaded(gw: &Slotgate) -> u32 {
    let before = gw.serving_pid();
    let out = reload(gw);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reload: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = gw.serving_pid().expect("a gateway serves");
    assert_ne!(Some(new), before, "{said}");
    assert!(said.contains(&format!("pid {new} serves")), "{said}");
    new
}

fn edit_config(gw: &Slotgate, from: &str, to: &str) {
    let text = std::fs::read_to_string(&gw.config).unwrap();
    assert!(text.contains(from), "the config has {from:?}");
    std::fs::write(&gw.config, text.replacen(from, to, 1)).unwrap();
}

/// New connections to `/livez`, one after another, until stopped:
/// how many were answered 200 and how many were not.
struct Hammer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
    answered: Arc<AtomicU64>,
}

impl Hammer {
    fn start(gw: &Arc<Slotgate>) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (gw, flag, count) = (Arc::clone(gw), Arc::clone(&stop), Arc::clone(&answered));
        let task = tokio::spawn(async move {
            let mut failed = 0;
            // Bounded: 60 s of requests at most.
            for _ in 0..60_000 {
                if flag.load(Relaxed) {
                    break;
                }
                match gw.get("/livez").await {
                    Ok(r) if r.status == 200 => count.fetch_add(1, Relaxed),
                    _ => {
                        failed += 1;
                        0
                    }
                };
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (count.load(Relaxed), failed)
        });
        Hammer {
            stop,
            task,
            answered,
        }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Relaxed);
        self.task.await.unwrap()
    }
}

/// A reload starts a new gateway with the configuration as it is now,
/// which takes over the listening sockets: a client opening connection
/// after connection meanwhile sees no refusal and no error, a terminal
/// opened before keeps working on the old process, and the old process
/// exits when that terminal closes (its session's access-log line
/// written).
#[tokio::test]
async fn a_reload_changes_the_configuration_without_refusing_a_connection_or_dropping_a_terminal() {
    let (_env, gw) = stack("frame_ancestors = [\"https://before.example\"]\n").await;
    let gw = Arc::new(gw);
    let csp = |r: &gateway::HttpResponse| {
        r.header("content-security-policy")
            .unwrap_or_default()
            .to_string()
    };
    let old = gw.serving_pid().expect("the pid file names the gateway");
    assert_eq!(Some(old), gw.pid());
    assert!(csp(&gw.get("/livez").await.unwrap()).contains("https://before.example"));

    let mut term = gw.tty("alice").await.unwrap();
    term.input("echo before-$((6*7))\r").await.unwrap();
    term.expect("before-42", T).await.unwrap();

    let hammer = Hammer::start(&gw);
    wait_for("the client's first answers", T, || {
        let n = hammer.answered.load(Relaxed);
        async move { n >= 20 }
    })
    .await;
    edit_config(&gw, "https://before.example", "https://after.example");
    let new = reloaded(&gw);

    // The old gateway stops accepting a few seconds after the handover;
    // the client keeps opening connections through that moment.
    wait_for("the old gateway to stop accepting", T, || {
        let log = gw.stderr();
        async move { log.contains("handed over to the new gateway: waiting for open connections") }
    })
    .await;
    let before = hammer.answered.load(Relaxed);
    wait_for("answers after the old gateway stopped accepting", T, || {
        let n = hammer.answered.load(Relaxed);
        async move { n >= before + 20 }
    })
    .await;
    let (answered, failed) = hammer.stop().await;
    assert_eq!(
        failed, 0,
        "{answered} answered, {failed} failed during the reload"
    );
    let Ok(mut gw) = Arc::try_unwrap(gw) else {
        panic!("the client task has ended")
    };

    // New connections get the new configuration.
    assert!(csp(&gw.get("/livez").await.unwrap()).contains("https://after.example"));
    // The terminal opened before is still served, by the old process.
    assert!(!gw.exited(), "the old gateway serves its open terminal");
    term.input("echo during-$((6*8))\r").await.unwrap();
    term.expect("during-48", T).await.unwrap();
    // And a new terminal reaches the same tmux session through the new one.
    let mut fresh = gw.tty("alice").await.unwrap();
    fresh.input("echo fresh-$((6*9))\r").await.unwrap();
    fresh.expect("fresh-54", T).await.unwrap();

    // The old process leaves once its last connection has closed, long
    // before the one-hour default grace, and logs the session it served.
    term.close().await;
    gw.wait_exited(T).await.unwrap();
    let line = gw
        .wait_for_log_line(T, |l| {
            l["kind"] == "ws" && l["path"] == "/slot/alice/ws" && l["frames_in"].as_u64() >= Some(2)
        })
        .await
        .unwrap();
    assert_eq!(line["status"], 101);
    assert!(line["frames_out"].as_u64() >= Some(2), "{line}");
    assert_eq!(gw.serving_pid(), Some(new));
    fresh.close().await;
}

/// A reload that cannot happen changes nothing: a configuration error is
/// refused by `slotgate reload` before the gateway is asked, and a new
/// gateway that fails at start (here: a new listen address already taken)
/// leaves the old one serving; either way the command exits 1 and says
/// why. Once the cause is gone, the same reload works.
#[tokio::test]
async fn a_reload_that_cannot_start_changes_nothing_and_says_why() {
    let (_env, gw) = stack("").await;
    let old = gw.serving_pid().unwrap();
    let mut term = gw.tty("alice").await.unwrap();

    // A configuration error: the gateway is not even asked.
    edit_config(&gw, "[slotgate]\n", "[slotgate]\nheader_timeout = \"1h\"\n");
    let out = reload(&gw);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("slotgate.header_timeout"), "{err}");
    assert!(
        !gw.stderr().contains("SIGHUP"),
        "the gateway was not signalled"
    );
    edit_config(&gw, "header_timeout = \"1h\"\n", "");

    // A new listen address that another process holds: the new gateway
    // fails at start, after the configuration checked out.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let listen = format!("listen = [\"{}\"]", gw.addr);
    edit_config(
        &gw,
        &listen,
        &format!("listen = [\"{}\", \"{taken_addr}\"]", gw.addr),
    );
    let out = reload(&gw);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("cannot listen on {taken_addr}")),
        "{err}"
    );
    assert!(err.contains("still serves as before"), "{err}");
    assert_eq!(gw.serving_pid(), Some(old));
    assert_eq!(gw.get("/livez").await.unwrap().status, 200);
    term.input("echo still-$((7*7))\r").await.unwrap();
    term.expect("still-49", T).await.unwrap();

    // The address is free again: the same reload goes through.
    drop(taken);
    assert_ne!(reloaded(&gw), old);
    wait_for("the new listen address to answer", T, || async move {
        std::net::TcpStream::connect(taken_addr).is_ok()
    })
    .await;
    term.close().await;
}

/// At the end of `reload_grace` the old gateway ends the terminals it
/// still serves with "going away" (1001: ttyd's page reconnects), logs
/// each with `error: gateway_stopping`, and exits. Reconnecting lands in
/// the same shell.
#[tokio::test]
async fn at_the_end_of_the_reload_grace_open_terminals_are_told_going_away() {
    let (_env, mut gw) = stack("reload_grace = \"1s\"\n").await;
    let mut term = gw.tty("alice").await.unwrap();
    term.input("MARK=kept-$((5*5)); echo set-$MARK\r")
        .await
        .unwrap();
    term.expect("set-kept-25", T).await.unwrap();

    reloaded(&gw);
    let mut ws = term.into_inner();
    assert_eq!(close_code(&mut ws, T).await, Some(1001));
    gw.wait_exited(T).await.unwrap();
    let line = gw
        .wait_for_log_line(T, |l| l["kind"] == "ws" && l["error"] == "gateway_stopping")
        .await
        .unwrap();
    assert_eq!(line["path"], "/slot/alice/ws");

    let mut again = gw.tty("alice").await.unwrap();
    again.input("echo again-$MARK\r").await.unwrap();
    again.expect("again-kept-25", T).await.unwrap();
    again.close().await;
}

/// systemd's notify protocol (`Type=notify`, `NotifyAccess=all`), with
/// a datagram socket of the test's standing in for systemd (none runs on
/// the test machine): the gateway says READY=1 with its pid as MAINPID
/// once it serves, and after a reload the successor names itself, so
/// systemd follows the main process to it.
#[tokio::test]
async fn systemd_stand_in_hears_ready_and_the_main_pid_moving_on_reload() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let socket_path = env.path("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let gw = Slotgate::start(
        &env.config,
        Options {
            env: vec![("NOTIFY_SOCKET".into(), socket_path.display().to_string())],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let heard = |pid: u32| {
        let notify = &notify;
        async move {
            let want = format!("MAINPID={pid}");
            let mut buf = vec![0u8; 4096];
            loop {
                let n = tokio::time::timeout(T, notify.recv(&mut buf))
                    .await
                    .expect("a notification in time")
                    .unwrap();
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                if msg.lines().any(|l| l == want) {
                    return msg;
                }
            }
        }
    };
    let first = heard(gw.pid().unwrap()).await;
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");
    let new = reloaded(&gw);
    let moved = heard(new).await;
    assert!(moved.lines().any(|l| l == "READY=1"), "{moved}");
}

/// `SIGTERM` closes the listeners at once but lets an open terminal work
/// on through `shutdown_grace`; the process exits as soon as the terminal
/// closes, not at the end of the grace (a minute here).
#[tokio::test]
async fn sigterm_lets_open_terminals_finish_and_exits_when_the_last_closes() {
    let (_env, mut gw) = stack("shutdown_grace = \"60s\"\n").await;
    let mut term = gw.tty("alice").await.unwrap();
    gw.signal("TERM");
    wait_for("the listener to close", T, || {
        let addr = gw.addr;
        async move { tokio::net::TcpStream::connect(addr).await.is_err() }
    })
    .await;
    term.input("echo after-term-$((8*8))\r").await.unwrap();
    term.expect("after-term-64", T).await.unwrap();
    assert!(
        !gw.exited(),
        "an open terminal keeps the gateway up during the grace"
    );
    term.close().await;
    gw.wait_exited(T).await.unwrap();
    let line = gw
        .wait_for_log_line(T, |l| l["kind"] == "ws" && l["path"] == "/slot/alice/ws")
        .await
        .unwrap();
    assert_eq!(line["status"], 101);
}

/// A client whose connection was accepted just before the gateway stopped
/// listening, and whose request is still on its way, gets its answer:
/// Pingora drops the connections waiting for a request when it stops,
/// slotgate gives a connection without a first request a moment first.
#[tokio::test]
async fn a_connection_accepted_before_the_listener_closed_still_gets_its_answer() {
    let (_env, mut gw) = stack("shutdown_grace = \"30s\"\n").await;
    // Connected (and, over TLS, handshaken): accepted, no request yet.
    let mut early = gw.connect().await.unwrap();
    gw.signal("TERM");
    wait_for("the listener to close", T, || {
        let addr = gw.addr;
        async move { tokio::net::TcpStream::connect(addr).await.is_err() }
    })
    .await;
    gateway::send_request(
        &mut early,
        "GET",
        "/slot/alice/token",
        &[("Connection", "close")],
    )
    .await
    .unwrap();
    let answer = gateway::read_response(&mut early, false)
        .await
        .expect("an answer, not a closed connection");
    assert_eq!(answer.status, 200);
    gw.wait_exited(T).await.unwrap();
}
