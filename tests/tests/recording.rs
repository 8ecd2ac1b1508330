//! Session recording end to end: a real slotgate in front of a real slotctl
//! daemon, ttyd and tmux records each terminal WebSocket as an asciicast v2
//! file; `slotctl replay --dump` renders it back to the screen the live
//! terminal (tmux's own pane) showed; secrets never reach the file; input
//! is recorded only for templates that ask; caps hold.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use slotgate_tests::gateway::{Options, Slotgate};
use slotgate_tests::{bin, wait_for, TestEnv};

const T: Duration = Duration::from_secs(20);

/// An Anthropic-style key as a user would paste it.
const KEY: &str = "sk-ant-api03-Zq8xWv3LmN5pR7tY9uKj2Hg4Fd6Sa1QeXc0Bn-AbCdEfGh_IjKl";

const TYPED: &str = r#"
description = "shell that records keystrokes too"
command = ["bash", "--login"]
[sandbox]
bwrap = true
[recording]
input = true
"#;

async fn stack(slots: &[(&str, &str)], extra: &str) -> (TestEnv, Slotgate) {
    let mut env = TestEnv::new(&[("typed", TYPED)], "");
    env.start_daemon().await;
    for (id, template) in slots {
        env.create_online(id, template).await;
    }
    let gw = Slotgate::start(
        &env.config,
        Options {
            extra: extra.into(),
            ..Options::default()
        },
    )
    .await
    .expect("slotgate starts");
    (env, gw)
}

/// The closed session's access log line for `slot`.
async fn ws_line(gw: &Slotgate, slot: &str) -> Value {
    gw.wait_for_log_line(T, |l| l["kind"] == "ws" && l["slot"] == slot)
        .await
        .unwrap()
}

/// Header and events of a cast file.
fn read_cast(path: &Path) -> (Value, Vec<Value>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = serde_json::from_str(lines.next().expect("header")).unwrap();
    let events = lines
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (header, events)
}

fn codes(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e[1].as_str().unwrap()).collect()
}

/// stdout of a command that must succeed.
fn stdout_of(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn replay_dump(env: &TestEnv, cast: &Path) -> String {
    stdout_of(env.slotctl(&["replay", "--dump", "--file", cast.to_str().unwrap()]))
}

/// What tmux shows in the slot's pane now (the live terminal), asked as
/// the slot's own user: its tmux server answers no one else.
fn tmux_screen(env: &TestEnv, uid: u32, slot: &str) -> String {
    let out = slotgate_tests::as_uid(uid, "tmux")
        .arg("-S")
        .arg(env.path(&format!("run/slots/{slot}/tmux/sock")))
        .args(["capture-pane", "-p", "-t", slot])
        .output()
        .unwrap();
    normalise(&stdout_of(out))
}

async fn slot_uid(env: &TestEnv, slot: &str) -> u32 {
    let id = slotapi::SlotId::new(slot).unwrap();
    env.client()
        .get(&id)
        .await
        .unwrap()
        .uid
        .expect("the slot's uid")
}

/// Lines without trailing blanks, no blank lines at the end.
fn normalise(s: &str) -> String {
    let mut lines: Vec<&str> = s.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n") + "\n"
}

fn recording_path(line: &Value) -> PathBuf {
    PathBuf::from(
        line["recording"]
            .as_str()
            .unwrap_or_else(|| panic!("no recording in {line}")),
    )
}

#[tokio::test]
async fn a_session_replays_to_the_screen_the_terminal_showed() {
    let (env, gw) = stack(&[("alice", "shell")], "").await;
    let mut tty = gw.tty("alice").await.unwrap();
    tty.input("clear; echo one-$((40+2)); printf 'caf\\303\\251 \\342\\206\\222 ok\\n'\r")
        .await
        .unwrap();
    tty.expect("café → ok", T).await.unwrap();
    tty.resize(100, 20).await.unwrap();
    let from = tty.screen.len();
    tty.input("seq 1 5; echo done-$((6*7))\r").await.unwrap();
    tty.expect_from(from, "done-42", T).await.unwrap();
    // Let tmux finish redrawing (cursor, prompt) before comparing.
    let uid = slot_uid(&env, "alice").await;
    let mut live = String::new();
    wait_for("the prompt after done-42 in the pane", T, || {
        live = tmux_screen(&env, uid, "alice");
        let ok =
            live.lines().last().is_some_and(|l| !l.contains("done-42")) && live.contains("done-42");
        async move { ok }
    })
    .await;
    tty.drain_for(Duration::from_millis(300)).await;
    let live = tmux_screen(&env, uid, "alice");
    tty.close().await;

    let line = ws_line(&gw, "alice").await;
    let cast = recording_path(&line);
    let (header, events) = read_cast(&cast);
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(120), Some(30))
    );
    assert!(
        header["title"].as_str().unwrap().contains("alice"),
        "{header}"
    );
    assert!(
        events.iter().any(|e| e[1] == "r" && e[2] == "100x20"),
        "resize not recorded"
    );
    let times: Vec<f64> = events.iter().map(|e| e[0].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "times go backwards");

    let replayed = replay_dump(&env, &cast);
    assert_eq!(
        normalise(&replayed),
        live,
        "replayed screen differs from the live pane"
    );
    assert!(replayed.contains("café → ok"), "{replayed}");
}

#[tokio::test]
async fn a_typed_key_never_reaches_the_file_and_input_is_off_by_default() {
    let (env, gw) = stack(&[("alice", "shell")], "").await;
    let mut tty = gw.tty("alice").await.unwrap();
    // The key arrives in the output twice: the echo of the typed line and
    // echo's answer; ttyd sends both in whatever frames it likes.
    tty.input(&format!("echo {KEY} | tr a-z A-Z | wc -c; echo {KEY}\r"))
        .await
        .unwrap();
    tty.expect(&format!("\n{KEY}"), T).await.unwrap();
    tty.close().await;

    let line = ws_line(&gw, "alice").await;
    let cast = recording_path(&line);
    assert!(cast.is_absolute());
    let raw = std::fs::read_to_string(&cast).unwrap();
    assert!(
        !raw.contains("sk-ant-"),
        "the key reached the recording:\n{raw}"
    );
    assert!(
        !raw.contains(&KEY[20..]),
        "part of the key reached the recording"
    );
    assert!(raw.matches("[REDACTED]").count() >= 2, "{raw}");
    let (header, events) = read_cast(&cast);
    assert_eq!(header["slotgate"]["session"], line["request_id"]);
    assert!(
        !codes(&events).contains(&"i"),
        "input recorded without the template asking"
    );
    assert!(codes(&events).contains(&"o"));

    // The log line names the file and its size; the file is private.
    assert_eq!(
        line["recording_bytes"].as_u64(),
        Some(raw.len() as u64),
        "{line}"
    );
    assert_eq!(line["recording_input"], false);
    assert!(cast.ends_with(format!("{}.cast", line["request_id"].as_str().unwrap())));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cast), 0o600);
    assert_eq!(mode(cast.parent().unwrap()), 0o700);
    assert_eq!(mode(&env.path("data/recordings")), 0o700);
    let access = std::fs::read_to_string(&gw.access_log).unwrap();
    assert!(!access.contains("sk-ant-"));
}

#[tokio::test]
async fn a_template_that_asks_records_input_redacted() {
    let (_env, gw) = stack(&[("bob", "typed")], "").await;
    let mut tty = gw.tty("bob").await.unwrap();
    tty.input("echo typed-$((1+1))\r").await.unwrap();
    tty.expect("typed-2", T).await.unwrap();
    tty.input(&format!("export ANTHROPIC_API_KEY={KEY}\r"))
        .await
        .unwrap();
    tty.input("echo after-$((2+3))\r").await.unwrap();
    tty.expect("after-5", T).await.unwrap();
    tty.close().await;

    let line = ws_line(&gw, "bob").await;
    assert_eq!(line["recording_input"], true, "{line}");
    let cast = recording_path(&line);
    let raw = std::fs::read_to_string(&cast).unwrap();
    assert!(
        !raw.contains("sk-ant-"),
        "the key reached the recording:\n{raw}"
    );
    let (_, events) = read_cast(&cast);
    let typed: String = events
        .iter()
        .filter(|e| e[1] == "i")
        .map(|e| e[2].as_str().unwrap())
        .collect();
    assert!(typed.contains("echo typed-$((1+1))\r"), "{typed:?}");
    assert!(
        typed.contains("export ANTHROPIC_API_KEY=[REDACTED]\r"),
        "{typed:?}"
    );
}

#[tokio::test]
async fn max_size_truncates_and_recording_can_be_switched_off() {
    let (_env, gw) = stack(
        &[("alice", "shell")],
        "[slotgate.recording]\nmax_size = \"4K\"\n",
    )
    .await;
    let mut tty = gw.tty("alice").await.unwrap();
    // tmux sends screen updates, not the raw stream: pace the output so
    // that every line reaches the client (and the recording).
    tty.input("for i in $(seq 1 150); do echo line-$i-of-a-long-output-that-fills-the-cap; sleep 0.005; done; echo end-$((3*3))\r")
        .await
        .unwrap();
    // 150 forks of `sleep` in the sandbox: slow on a busy 2-core machine.
    tty.expect("end-9", Duration::from_secs(90)).await.unwrap();
    tty.close().await;
    let line = ws_line(&gw, "alice").await;
    let cast = recording_path(&line);
    let size = std::fs::metadata(&cast).unwrap().len();
    assert!(size <= 4096, "{size} bytes");
    assert_eq!(line["recording_bytes"].as_u64(), Some(size));
    let (_, events) = read_cast(&cast);
    let last = events.last().unwrap();
    assert_eq!(last[1], "m");
    assert!(last[2].as_str().unwrap().contains("truncated"), "{last}");
    let metrics = gw.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("slotgate_recordings_truncated_total 1"),
        "{metrics}"
    );

    let (env, gw) = stack(
        &[("carol", "shell")],
        "[slotgate.recording]\nenabled = false\n",
    )
    .await;
    let mut tty = gw.tty("carol").await.unwrap();
    tty.input("echo off-$((2*2))\r").await.unwrap();
    tty.expect("off-4", T).await.unwrap();
    tty.close().await;
    let line = ws_line(&gw, "carol").await;
    assert_eq!(line["recording"], Value::Null, "{line}");
    assert_eq!(line["recording_bytes"], 0);
    assert!(!env.path("data/recordings").exists());
}

#[test]
fn bad_recording_config_is_refused_with_file_key_and_reason() {
    let env = TestEnv::new(&[], "");
    env.append_config("[slotgate]\nauth = \"none\"\ntls = false\n[slotgate.recording]\nredact = [\"(unclosed\"]\n");
    let out = Command::new(bin("slotgate"))
        .arg("--config")
        .arg(&env.config)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("slotgate.toml"), "{err}");
    assert!(err.contains("slotgate.recording.redact"), "{err}");
    assert!(err.contains("redact[0]"), "{err}");
}

/// `slotctl replay <session-id>`: the daemon's activity store indexes the
/// session slotgate recorded (from the access log), and replaying it by id
/// prints the same screen as replaying the file and as tmux's pane. An
/// unknown id is refused with a clear message and a failing exit status.
#[tokio::test]
async fn replay_by_session_id_goes_through_the_activity_store() {
    let (env, gw) = stack(&[("alice", "shell")], "").await;
    let mut tty = gw.tty("alice").await.unwrap();
    tty.input("clear; echo by-id-$((6*7)); printf 'r\\303\\251play ok\\n'\r")
        .await
        .unwrap();
    tty.expect("réplay ok", T).await.unwrap();
    let uid = slot_uid(&env, "alice").await;
    let mut live = String::new();
    wait_for("the prompt after réplay ok in the pane", T, || {
        live = tmux_screen(&env, uid, "alice");
        let ok = live.contains("réplay ok")
            && live
                .lines()
                .last()
                .is_some_and(|l| !l.contains("réplay ok"));
        async move { ok }
    })
    .await;
    tty.drain_for(Duration::from_millis(300)).await;
    let live = tmux_screen(&env, uid, "alice");
    tty.close().await;

    let line = ws_line(&gw, "alice").await;
    let id = line["request_id"].as_str().unwrap().to_string();
    let cast = recording_path(&line);

    // The daemon tails the access log: wait (bounded) until it lists it.
    let client = env.client();
    let deadline = std::time::Instant::now() + T;
    let listed = loop {
        let page = client.get_json::<Value>("/v1/recordings").await;
        let found = page.as_ref().ok().and_then(|v| {
            v["items"]
                .as_array()?
                .iter()
                .find(|i| i["id"] == id.as_str())
                .cloned()
        });
        if let Some(item) = found {
            break item;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} not in GET /v1/recordings after {T:?}: {page:?}\nlog line: {line}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed["slot"], "alice", "{listed}");
    assert_eq!(listed["available"], true, "{listed}");
    assert_eq!(
        listed["size_bytes"].as_u64(),
        Some(std::fs::metadata(&cast).unwrap().len()),
        "{listed}"
    );

    let by_id = stdout_of(env.slotctl(&["replay", &id, "--dump"]));
    let by_file = replay_dump(&env, &cast);
    assert_eq!(by_id, by_file, "replay by id and by file differ");
    assert_eq!(
        normalise(&by_id),
        live,
        "replayed screen differs from the live pane"
    );
    assert!(by_id.contains("by-id-42"), "{by_id}");

    // An id the store does not know.
    let out = env.slotctl(&["replay", "00000000deadbeef", "--dump"]);
    assert_eq!(out.status.code(), Some(1), "an unknown id replayed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("00000000deadbeef"), "{err}");
    assert!(err.contains("not found") || err.contains("404"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
