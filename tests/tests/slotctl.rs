//! slotctl end to end: a real daemon supervising real ttyd + tmux slots in a
//! temp dir, driven through its CLI, its control API and ttyd's WebSocket
//! protocol over the slot's unix socket.

use std::time::Duration;

use slotapi::{Activity, ActivityKind, SlotId, SlotStatus};
use slotgate_tests::ttyd::connect_unix;
use slotgate_tests::{wait_for, TestEnv};

const T: Duration = Duration::from_secs(10);

fn sid(s: &str) -> SlotId {
    SlotId::new(s).unwrap()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
}

#[tokio::test]
async fn shell_slot_answers_and_survives_reconnect() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let info = env.create_online("alice", "shell").await;
    assert!(info.pid.is_some());

    let mut c = connect_unix(&env.slot_socket("alice"), "alice", "t1")
        .await
        .unwrap();
    c.input("echo $((6*7))\r").await.unwrap();
    c.expect("42", T).await.unwrap();
    c.input("export MARK=blue-$((40+2))-sky\r").await.unwrap();
    c.input("echo ok-$MARK\r").await.unwrap();
    c.expect("ok-blue-42-sky", T).await.unwrap();
    c.close().await;

    // A new connection attaches to the same tmux session: same shell.
    let mut c = connect_unix(&env.slot_socket("alice"), "alice", "t2")
        .await
        .unwrap();
    c.input("echo again-$MARK\r").await.unwrap();
    c.expect("again-blue-42-sky", T).await.unwrap();

    // The sandbox is the shell's HOME and working directory.
    let home = env.path("data/users/alice/home");
    let workdir = env.path("data/users/alice/workdir");
    c.input(&format!(
        "[ \"$HOME\" = {} ] && [ \"$PWD\" = {} ] && echo SANDBOX-OK-$((1+1))\r",
        home.display(),
        workdir.display()
    ))
    .await
    .unwrap();
    c.expect("SANDBOX-OK-2", T).await.unwrap();
    for d in ["home/.claude", "workdir", "history", "files"] {
        assert!(
            env.path(&format!("data/users/alice/{d}")).is_dir(),
            "{d} missing"
        );
    }
}

#[tokio::test]
async fn ttyd_killed_is_restarted_and_the_shell_is_intact() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let before = env.create_online("bob", "shell").await;
    let pid = before.pid.unwrap();
    let mut c = connect_unix(&env.slot_socket("bob"), "bob", "t")
        .await
        .unwrap();
    c.input("export KEEP=$((7*6))x\r").await.unwrap();
    c.input("echo set-$KEEP\r").await.unwrap();
    c.expect("set-42x", T).await.unwrap();

    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let client = env.client();
    wait_for("a new ttyd online", T, || async {
        client
            .get(&sid("bob"))
            .await
            .is_ok_and(|s| s.status == SlotStatus::Online && s.pid.is_some_and(|p| p != pid))
    })
    .await;
    let after = client.get(&sid("bob")).await.unwrap();
    assert_eq!(after.restarts, 1);
    assert!(
        after
            .last_exit
            .as_deref()
            .unwrap_or("")
            .contains("signal 9"),
        "{after:?}"
    );

    let mut c = connect_unix(&env.slot_socket("bob"), "bob", "t")
        .await
        .unwrap();
    c.input("echo still-$KEEP\r").await.unwrap();
    c.expect("still-42x", T).await.unwrap();
}

#[tokio::test]
async fn daemon_kill9_and_restart_readopts_the_same_ttyd() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let info = env.create_online("carol", "shell").await;
    let pid = info.pid.unwrap();
    let mut c = connect_unix(&env.slot_socket("carol"), "carol", "t")
        .await
        .unwrap();
    c.input("export SURVIVE=yes$((1+1))\r").await.unwrap();

    env.kill_daemon();
    assert!(alive(pid), "ttyd must outlive the daemon");
    // The open terminal keeps working while the daemon is away.
    c.input("echo during-$SURVIVE\r").await.unwrap();
    c.expect("during-yes2", T).await.unwrap();

    env.start_daemon().await;
    let again = env.wait_status("carol", SlotStatus::Online, T).await;
    assert_eq!(again.pid, Some(pid), "the same ttyd is re-adopted");
    assert_eq!(again.restarts, 0);
    assert!(again.uptime_ms > 0);
    c.input("echo after-$SURVIVE\r").await.unwrap();
    c.expect("after-yes2", T).await.unwrap();
    assert!(
        env.daemon_log().contains("re-adopting"),
        "{}",
        env.daemon_log()
    );

    // And it is watched again: killing it now is noticed and repaired.
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let client = env.client();
    wait_for("restart of the re-adopted ttyd", T, || async {
        client
            .get(&sid("carol"))
            .await
            .is_ok_and(|s| s.status == SlotStatus::Online && s.pid.is_some_and(|p| p != pid))
    })
    .await;
}

#[tokio::test]
async fn slot_that_died_while_the_daemon_was_down_is_restarted() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let pid = env.create_online("dave", "shell").await.pid.unwrap();
    env.kill_daemon();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    wait_for("ttyd gone", T, || async { !alive(pid) }).await;
    env.start_daemon().await;
    let info = env.wait_status("dave", SlotStatus::Online, T).await;
    assert_ne!(info.pid, Some(pid));
}

#[tokio::test]
async fn crash_looping_slot_ends_errored_with_a_reason() {
    // Real ttyd told to serve TLS with a certificate that does not exist:
    // it exits at start, every time.
    let crash = "command = [\"bash\"]\nttyd_args = [\"--ssl\", \"--ssl-cert\", \"/nonexistent.pem\", \"--ssl-key\", \"/nonexistent.key\"]\n";
    let mut env = TestEnv::new(&[("crashy", crash)], "");
    env.start_daemon().await;
    let out = env.slotctl(&["create", "eve", "--template", "crashy"]);
    assert!(!out.status.success(), "create must report the failed start");
    let info = env.wait_status("eve", SlotStatus::Errored, T).await;
    let reason = info.reason.unwrap();
    assert!(reason.contains("gave up after 4 failures"), "{reason}");
    assert!(reason.contains("ttyd ended (exit"), "{reason}");
    assert!(info.pid.is_none());
    assert!(info.restarts >= 3, "{}", info.restarts);
    // errored is sticky across a daemon restart until a human acts.
    env.kill_daemon();
    env.start_daemon().await;
    let again = env.client().get(&sid("eve")).await.unwrap();
    assert_eq!(again.status, SlotStatus::Errored);
}

#[tokio::test]
async fn a_crash_loop_ends_errored_however_often_it_is_asked_for() {
    // The gateway asks slotctl to `ensure` a slot on every request while it
    // is not online. Asking during a backoff starts the next attempt early
    // but must not forget the failures so far: the slot still ends
    // `errored` after `max_failures` (4 here) instead of looping forever.
    let crash = "command = [\"bash\"]\nttyd_args = [\"--ssl\", \"--ssl-cert\", \"/nonexistent.pem\", \"--ssl-key\", \"/nonexistent.key\"]\n";
    let mut env = TestEnv::new(&[("crashy", crash)], "");
    env.start_daemon().await;
    let out = env.slotctl(&["create", "ivy", "--template", "crashy", "--no-start"]);
    assert!(out.status.success());
    let client = env.client();
    let mut asked = 0;
    let status = loop {
        let info = client.get(&sid("ivy")).await.unwrap();
        if info.status == SlotStatus::Errored || asked == 30 {
            break info;
        }
        // Returns when the slot is errored, or after 100 ms still trying.
        // Four failures take at least the 50 + 100 ms of backoff, so the
        // second call arrives while the slot backs off.
        let _ = client.ensure(&sid("ivy"), Duration::from_millis(100)).await;
        asked += 1;
    };
    assert_eq!(status.status, SlotStatus::Errored, "asked {asked} times");
    let reason = status.reason.unwrap();
    assert!(reason.contains("gave up after 4 failures"), "{reason}");
    assert!(asked >= 2, "the loop asked during a backoff ({asked})");
    assert_eq!(status.restarts, 3, "four attempts, three of them restarts");
}

#[tokio::test]
async fn stop_ends_the_whole_tree_and_start_gives_a_fresh_session() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    env.create_online("frank", "shell").await;
    let mut c = connect_unix(&env.slot_socket("frank"), "frank", "t")
        .await
        .unwrap();
    // A shell, a background job in another session: all must go.
    c.input("export OLD=1; (setsid sleep 1000 &) ; echo started-$((2+3))\r")
        .await
        .unwrap();
    c.expect("started-5", T).await.unwrap();
    let client = env.client();
    wait_for("tree accounted (ttyd, tmux, shells, sleep)", T, || async {
        client
            .get(&sid("frank"))
            .await
            .is_ok_and(|s| s.processes >= 4 && s.memory_bytes > 0)
    })
    .await;

    let out = env.slotctl(&["stop", "frank"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = client.get(&sid("frank")).await.unwrap();
    assert_eq!(info.status, SlotStatus::Stopped);
    assert!(!info.enabled);
    assert!(
        env.instance_pids().is_empty(),
        "processes left: {:?}",
        env.instance_pids()
    );
    assert!(!env.slot_socket("frank").exists());

    let out = env.slotctl(&["start", "frank"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = connect_unix(&env.slot_socket("frank"), "frank", "t")
        .await
        .unwrap();
    c.input("echo fresh-${OLD:-none}\r").await.unwrap();
    c.expect("fresh-none", T).await.unwrap();
}

#[tokio::test]
async fn idle_slot_is_stopped_unless_a_client_is_connected() {
    let idle = "command = [\"bash\"]\nidle_timeout = \"1s\"\n";
    let mut env = TestEnv::new(&[("idle", idle)], "");
    env.start_daemon().await;
    env.create_online("gina", "idle").await;
    let client = env.client();
    client
        .activity(
            &sid("gina"),
            &Activity {
                kind: ActivityKind::Connect,
                session: "s1".into(),
                user: None,
            },
        )
        .await
        .unwrap();
    // Several idle periods pass while a client is connected: still online.
    let mut events = client.stream("/v1/events").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let info = client.get(&sid("gina")).await.unwrap();
    assert_eq!(info.status, SlotStatus::Online);
    assert_eq!(info.clients, 1);

    client
        .activity(
            &sid("gina"),
            &Activity {
                kind: ActivityKind::Disconnect,
                session: "s1".into(),
                user: None,
            },
        )
        .await
        .unwrap();
    let info = env.wait_status("gina", SlotStatus::Stopped, T).await;
    assert!(info.reason.unwrap().contains("idle for 1s"));
    // The event stream saw it too.
    let mut saw = false;
    while let Ok(Ok(Some(line))) = tokio::time::timeout(T, events.next_line()).await {
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
        if ev["slot"] == "gina" && ev["status"] == "stopped" {
            saw = true;
            break;
        }
    }
    assert!(saw, "stopped event on /v1/events");
}

#[tokio::test]
async fn list_json_has_the_documented_fields() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    env.create_online("hank", "shell").await;
    let mut c = connect_unix(&env.slot_socket("hank"), "hank", "t")
        .await
        .unwrap();
    c.input("echo hi-$((1+1))\r").await.unwrap();
    c.expect("hi-2", T).await.unwrap();
    let client = env.client();
    wait_for("memory sampled", T, || async {
        client
            .get(&sid("hank"))
            .await
            .is_ok_and(|s| s.memory_bytes > 0)
    })
    .await;
    let out = env.slotctl(&["list", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v[0];
    for key in [
        "id",
        "template",
        "owner",
        "status",
        "pid",
        "restarts",
        "uptime_ms",
        "cpu_percent",
        "memory_bytes",
        "socket",
    ] {
        assert!(s.get(key).is_some(), "missing {key} in {s}");
    }
    assert_eq!(s["id"], "hank");
    assert_eq!(s["status"], "online");
    assert!(s["memory_bytes"].as_u64().unwrap() > 1_000_000, "{s}");
    assert!(s["socket"]
        .as_str()
        .unwrap()
        .ends_with("/run/slots/hank/ttyd.sock"));

    let out = env.slotctl(&["ls"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("hank") && table.contains("online"),
        "{table}"
    );
}

#[tokio::test]
async fn cgroup_limits_from_the_template_are_applied() {
    let limited = "command = [\"bash\"]\n[limits]\nmemory = \"300M\"\npids = 77\ncpu = 0.5\n";
    let mut env = TestEnv::new(&[("limited", limited)], "");
    env.start_daemon().await;
    let info = env.create_online("ivan", "limited").await;
    match info.isolation.as_str() {
        "cgroup-v1" => {
            let read = |c: &str, f: &str| {
                std::fs::read_to_string(format!("/sys/fs/cgroup/{c}/{}/ivan/{f}", env.instance))
                    .unwrap()
                    .trim()
                    .to_string()
            };
            assert_eq!(
                read("memory", "memory.limit_in_bytes"),
                (300u64 << 20).to_string()
            );
            assert_eq!(read("pids", "pids.max"), "77");
            assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
            // ttyd's sandbox is in the slot's `door` part, the tmux server's
            // in `session`; the slot's limits cover both.
            let procs = read("pids", "door/cgroup.procs");
            assert!(
                procs.lines().any(|l| l == info.pid.unwrap().to_string()),
                "{procs}"
            );
            assert!(!read("pids", "session/cgroup.procs").is_empty());
        }
        "cgroup-v2" => {
            let read = |f: &str| {
                std::fs::read_to_string(format!("/sys/fs/cgroup/{}/ivan/{f}", env.instance))
                    .unwrap()
                    .trim()
                    .to_string()
            };
            assert_eq!(read("memory.max"), (300u64 << 20).to_string());
            assert_eq!(read("pids.max"), "77");
            assert_eq!(read("cpu.max"), "50000 100000");
        }
        other => panic!("this host should offer cgroups, got {other}"),
    }
}

#[tokio::test]
async fn bubblewrap_sandbox_hides_other_users_and_the_host() {
    let boxed = "command = [\"bash\", \"--norc\"]\n[sandbox]\nbwrap = true\n";
    let mut env = TestEnv::new(&[("boxed", boxed)], "");
    env.start_daemon().await;
    env.create_online("other", "shell").await;
    std::fs::write(env.path("data/users/other/files/secret.txt"), "TOPSECRET").unwrap();
    env.create_online("jill", "boxed").await;
    let mut c = connect_unix(&env.slot_socket("jill"), "jill", "t")
        .await
        .unwrap();
    let users = env.path("data/users");
    c.input(&format!("ls {}; echo ls-done-$((3*3))\r", users.display()))
        .await
        .unwrap();
    c.expect("ls-done-9", T).await.unwrap();
    let from = c.screen.len();
    c.input(&format!(
        "cat {}/other/files/secret.txt; touch /usr/bwrap-probe && echo WROTE || echo RO-$((5*5))\r",
        users.display()
    ))
    .await
    .unwrap();
    c.expect_from(from, "RO-25", T).await.unwrap();
    assert!(!c.screen.contains("TOPSECRET"), "{}", c.screen);
    assert!(!std::path::Path::new("/usr/bwrap-probe").exists());
    // The run directory (other slots' sockets) is hidden too.
    let from = c.screen.len();
    c.input(&format!(
        "ls {} | wc -l; echo n-$((4*4))\r",
        env.path("run/slots").display()
    ))
    .await
    .unwrap();
    c.expect_from(from, "n-16", T).await.unwrap();
}

#[tokio::test]
async fn logs_show_history_and_follow_new_lines() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    env.create_online("kim", "shell").await;
    let out = env.slotctl(&["logs", "kim", "-n", "200"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("started ttyd pid"), "{text}");
    assert!(
        text.contains("ttyd 1.7"),
        "ttyd's own output is in the log: {text}"
    );

    let mut follow = env
        .client()
        .stream("/v1/slots/kim/logs?lines=0&follow=true")
        .await
        .unwrap();
    let out = env.slotctl(&["restart", "kim"]);
    assert!(out.status.success());
    let mut saw = false;
    while let Ok(Ok(Some(line))) = tokio::time::timeout(T, follow.next_line()).await {
        if line.contains("stopped (restart)") {
            saw = true;
            break;
        }
    }
    assert!(saw, "follow delivered the restart note");
}

#[tokio::test]
async fn delete_keeps_the_sandbox_unless_purged() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    env.create_online("lee", "shell").await;
    assert!(env.slotctl(&["delete", "lee"]).status.success());
    assert!(env.path("data/users/lee/home").is_dir());
    assert!(env
        .client()
        .get(&sid("lee"))
        .await
        .unwrap_err()
        .is_not_found());
    assert!(env.instance_pids().is_empty());

    env.create_online("lee", "shell").await;
    assert!(env.slotctl(&["delete", "lee", "--purge"]).status.success());
    assert!(!env.path("data/users/lee").exists());
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let mut env = TestEnv::new(&[], "");
    // Daemon not running: one line saying how to start it, exit 1.
    let out = env.slotctl(&["ls"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("daemon is not running") && err.contains("daemon --background"),
        "{err}"
    );

    env.start_daemon().await;
    // Bad id: usage error, exit 2.
    let out = env.slotctl(&["create", "../etc", "--template", "shell"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("slot id"));
    // Unknown template: names the known ones.
    let out = env.slotctl(&["create", "mo", "--template", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no template named \"nope\"") && err.contains("shell"),
        "{err}"
    );
    assert!(
        env.client().list().await.unwrap().is_empty(),
        "nothing half-created"
    );
    // Duplicate: conflict.
    env.create_online("mo", "shell").await;
    let out = env.slotctl(&["create", "mo", "--template", "shell"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // Raw API: JSON errors with codes.
    let bad_body = env
        .client()
        .get_json::<serde_json::Value>("/v1/slots/NOT_VALID")
        .await
        .unwrap_err();
    assert_eq!(bad_body.status(), Some(400));
    let missing = env
        .client()
        .get_json::<serde_json::Value>("/v1/slots/nobody")
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(404));
    let route = env
        .client()
        .get_json::<serde_json::Value>("/v2/whatever")
        .await
        .unwrap_err();
    assert_eq!(route.status(), Some(404));

    // Config typo: file, key and reason; exit 1.
    std::fs::write(
        env.path("bad.toml"),
        "[supervisor]\nhealth_intervall = \"1s\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(slotgate_tests::bin("slotctl"))
        .args(["--config", env.path("bad.toml").to_str().unwrap(), "doctor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("supervisor") && err.contains("health_intervall"),
        "{err}"
    );

    // Bad template: the daemon refuses to start, naming the template file.
    std::fs::write(
        env.path("ttyd-templates/broken.toml"),
        "command = [\"bash\"]\ncwd = \"{nowhere}\"\n",
    )
    .unwrap();
    let out = env.slotctl(&["doctor"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.toml")
            && err.contains("cwd")
            && err.contains("unknown variable {nowhere}"),
        "{err}"
    );
}

#[tokio::test]
async fn doctor_reports_ttyd_and_isolation() {
    let open = "command = [\"bash\"]\n";
    let env = TestEnv::new(&[("open", open)], "");
    let out = env.slotctl(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name} in {v}"))
            .clone()
    };
    let ttyd = find("ttyd");
    assert_eq!(ttyd["status"], "ok", "{ttyd}");
    assert!(
        ttyd["detail"].as_str().unwrap().contains("ttyd version 1."),
        "{ttyd}"
    );
    assert!(find("resources")["detail"]
        .as_str()
        .unwrap()
        .contains("cgroup"));
    assert_eq!(find("daemon")["status"], "warn");
    // Isolation as facts, found by a real sandbox (CI runs as root).
    assert!(find("users")["detail"]
        .as_str()
        .unwrap()
        .contains("a uid per sandbox owner"));
    let sandbox = find("sandbox");
    assert_eq!(sandbox["status"], "ok", "{sandbox}");
    assert!(
        sandbox["detail"]
            .as_str()
            .unwrap()
            .contains("capabilities dropped yes"),
        "{sandbox}"
    );
    assert_eq!(
        find("template shell")["detail"],
        "sandboxed, network egress"
    );
    assert_eq!(find("template open")["status"], "warn");
    let verdict = find("verdict");
    assert_eq!(
        verdict["detail"], "isolated, except templates open (no sandbox or the host's network)",
        "{verdict}"
    );
}

/// Slots sharing the daemon's uid is weak isolation: the daemon says so,
/// and refuses to serve a gateway that signs several people in unless
/// the config accepts it.
#[tokio::test]
async fn weak_isolation_with_a_multi_user_gateway_needs_consent() {
    let env = TestEnv::new(&[], "users = \"shared\"\n");
    env.append_config("\n[slotgate]\nauth = \"local\"\n");
    let out = env.slotctl(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdict = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "verdict")
        .unwrap()
        .clone();
    assert_eq!(verdict["status"], "fail", "{verdict}");
    assert!(
        verdict["detail"].as_str().unwrap().contains("one uid"),
        "{verdict}"
    );
    let out = env.slotctl(&["daemon"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("supervisor.allow_weak_isolation"), "{err}");
    assert!(err.contains("slotgate.toml"), "{err}");

    let mut env = TestEnv::new(&[], "users = \"shared\"\nallow_weak_isolation = true\n");
    env.append_config("\n[slotgate]\nauth = \"local\"\n");
    env.start_daemon().await;
    let wes = env.create_online("wes", "shell").await;
    let xia = env.create_online("xia", "shell").await;
    // As root, "shared" is one unprivileged uid for all, never root's.
    assert_eq!(wes.uid, xia.uid);
    assert_ne!(wes.uid, Some(0));
}

#[tokio::test]
async fn ensure_starts_a_stopped_slot_and_reports_unknown_ones() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let out = env.slotctl(&["create", "nia", "--template", "shell", "--no-start"]);
    assert!(out.status.success());
    let client = env.client();
    assert_eq!(
        client.get(&sid("nia")).await.unwrap().status,
        SlotStatus::Stopped
    );
    let info = client.ensure(&sid("nia"), T).await.unwrap();
    assert_eq!(info.status, SlotStatus::Online);
    assert!(env.slot_socket("nia").exists());
    let err = client.ensure(&sid("ghost"), T).await.unwrap_err();
    assert!(err.is_not_found());
}

#[tokio::test]
async fn missing_required_share_fails_the_start_with_a_reason() {
    let t = "command = [\"bash\"]\n[sandbox]\nshared = [{ source = \"/nonexistent/skills\", target = \"{home}/skills\" }]\n";
    let mut env = TestEnv::new(&[("needs", t)], "");
    env.start_daemon().await;
    let out = env.slotctl(&["create", "pat", "--template", "needs"]);
    assert!(!out.status.success());
    let info = env.wait_status("pat", SlotStatus::Errored, T).await;
    let reason = info.reason.unwrap();
    assert!(
        reason.contains("/nonexistent/skills does not exist"),
        "{reason}"
    );
}

#[tokio::test]
async fn shipped_configs_and_templates_parse() {
    // Every file in config/ is checked by both programs that read it; the
    // templates are loaded with it (templates_dir points at ttyd-templates/).
    let root = slotgate_tests::repo_root();
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let out = std::process::Command::new(slotgate_tests::bin("slotctl"))
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for t in ["shell", "claude", "ssh", "demo"] {
            assert!(text.contains(t), "template {t} missing from {text}");
        }
        let out = std::process::Command::new(slotgate_tests::bin("slotgate"))
            .args(["check-config", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1);
}

#[tokio::test]
async fn user_accounts_are_managed_from_the_cli() {
    use identity::store::{LoginError, Store};
    use std::io::Write;
    let env = TestEnv::new(&[], "");
    let run_stdin = |args: &[&str], input: &str| {
        let mut child = std::process::Command::new(slotgate_tests::bin("slotctl"))
            .arg("--config")
            .arg(&env.config)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run_stdin(
        &[
            "user",
            "add",
            "quinn",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "a long enough password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = env.path("data/identity.db");
    let store = Store::open(&db).unwrap();
    let u = store
        .check_password("quinn", "a long enough password")
        .unwrap();
    assert_eq!(u.role.as_str(), "viewer");
    assert!(!u.must_change_password);

    // Generated password: printed once, must be changed at first sign-in.
    let out = env.slotctl(&["user", "passwd", "quinn"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let pw = text.rsplit(' ').next().unwrap().trim();
    assert!(
        store
            .check_password("quinn", pw)
            .unwrap()
            .must_change_password
    );

    assert!(env
        .slotctl(&["user", "role", "quinn", "admin"])
        .status
        .success());
    assert_eq!(store.user("quinn").unwrap().unwrap().role.as_str(), "admin");
    let sid = store
        .create_session("quinn", "local", 60_000, None, None)
        .unwrap();
    assert!(env.slotctl(&["user", "disable", "quinn"]).status.success());
    assert_eq!(store.check_password("quinn", pw), Err(LoginError::Disabled));
    assert!(
        !store.session_live(&sid).unwrap(),
        "disabling revokes sessions"
    );
    assert!(env.slotctl(&["user", "enable", "quinn"]).status.success());
    assert!(store.check_password("quinn", pw).is_ok());

    let out = env.slotctl(&["user", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "quinn");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("argon2"),
        "no hashes in output"
    );

    // Refusals: bad role is a usage error; short password and unknown users fail.
    assert_eq!(
        env.slotctl(&["user", "role", "quinn", "god"]).status.code(),
        Some(2)
    );
    let out = run_stdin(&["user", "add", "rex", "--password-stdin"], "short\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 10 characters"));
    assert_eq!(
        env.slotctl(&["user", "disable", "nobody"]).status.code(),
        Some(1)
    );
}
