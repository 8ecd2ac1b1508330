//! Generic services ("apps") end to end: a real slotctl daemon runs the
//! stand-in scripts of `tests/fixtures/pm2/scripts/` (real bash, python3 and
//! node processes) from `[[apps]]` tables, and the tests check restarts,
//! whole-tree stop, logs, re-adoption, memory limits, cron and watch.

use std::path::Path;
use std::time::Duration;

use slotapi::AppStatus;
use slotgate_tests::{pm2_fixture, TestEnv};

const T: Duration = Duration::from_secs(30);

fn script(name: &str) -> String {
    pm2_fixture(&format!("scripts/{name}"))
        .display()
        .to_string()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false)
}

fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|c| *c == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn kill9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

async fn wait_file(path: &Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + T;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never contained {needle:?}: {text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn config_app_instances_restart_on_crash_and_stop_as_a_whole_tree() {
    let mut env = TestEnv::new(&[], "");
    env.append_config(&format!(
        "[[apps]]\nname = \"sleeper\"\ncommand = \"{}\"\ninstances = 2\nkill_timeout_ms = \"3s\"\nenv = {{ GREETING = \"hi\" }}\n",
        script("sleeper.sh")
    ));
    env.start_daemon().await;
    let a0 = env
        .wait_app(0, "online", T, |a| {
            a.status == AppStatus::Online && a.pid.is_some()
        })
        .await;
    let a1 = env
        .wait_app(1, "online", T, |a| {
            a.status == AppStatus::Online && a.pid.is_some()
        })
        .await;
    assert_eq!((a0.name.as_str(), a1.name.as_str()), ("sleeper", "sleeper"));
    assert_eq!((a0.instance, a1.instance), (0, 1));
    let pid = a1.pid.unwrap();
    let vars = environ(pid);
    assert!(
        vars.contains(&"NODE_APP_INSTANCE=1".to_string()),
        "{vars:?}"
    );
    assert!(vars.contains(&"GREETING=hi".to_string()), "{vars:?}");
    // The app's own environment only: nothing of the test's leaks in.
    assert!(!vars.iter().any(|v| v.starts_with("CARGO")), "{vars:?}");

    // Logs go to <data>/logs/apps/<name>-out.log, straight from the app.
    let out = env.path("data/logs/apps/sleeper-out.log");
    wait_file(&out, "sleeper instance=1").await;

    // kill -9 → a new process, restart counted, exit recorded.
    kill9(pid);
    let after = env
        .wait_app(1, "restarted", T, |a| {
            a.status == AppStatus::Online && a.pid.is_some_and(|p| p != pid)
        })
        .await;
    assert_eq!(after.restarts, 1);
    assert_eq!(after.last_exit.as_deref(), Some("signal 9"), "{after:?}");

    // Stop: SIGINT to the main process; its child ignores SIGINT and is
    // ended with the tree.
    let main = after.pid.unwrap();
    let mut kids = Vec::new();
    for _ in 0..100 {
        kids = children_of(main);
        if !kids.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!kids.is_empty(), "sleeper forked no child");
    let stopped = env.client().app_action(1, "stop").await.unwrap();
    assert_eq!(stopped.status, AppStatus::Stopped);
    assert!(!alive(main));
    for k in kids {
        assert!(!alive(k), "child {k} survived the stop");
    }
    wait_file(&out, "sleeper got SIGINT").await;
    // The other instance is untouched.
    assert_eq!(env.client().get_app(0).await.unwrap().pid, a0.pid);
}

#[tokio::test]
async fn crash_loop_ends_errored_and_stop_exit_codes_are_not_restarted() {
    let mut env = TestEnv::new(&[], "");
    env.append_config(&format!(
        "[[apps]]\nname = \"crashy\"\ncommand = \"{s}\"\nmax_restarts = 3\n\n\
         [[apps]]\nname = \"done\"\ncommand = \"{s}\"\nargs = [\"0\"]\nstop_exit_codes = [0]\n\n\
         [[apps]]\nname = \"slow\"\ncommand = \"{s}\"\nexp_backoff_initial_ms = 300\n",
        s = script("crash.sh")
    ));
    env.start_daemon().await;
    let c = env
        .wait_app(0, "errored", T, |a| a.status == AppStatus::Errored)
        .await;
    assert_eq!(c.unstable_restarts, 3, "{c:?}");
    assert_eq!(c.restarts, 2, "{c:?}");
    assert_eq!(c.exit_code, Some(3));
    assert!(
        c.reason.as_deref().unwrap_or("").contains("max_restarts"),
        "{c:?}"
    );
    let d = env
        .wait_app(1, "stopped", T, |a| {
            a.status == AppStatus::Stopped && a.exit_code.is_some()
        })
        .await;
    assert_eq!((d.exit_code, d.restarts), (Some(0), 0), "{d:?}");
    // Backoff: PM2's status string while the delay runs.
    env.wait_app(2, "waiting restart", T, |a| {
        a.status == AppStatus::WaitingRestart
    })
    .await;
    // A manual restart clears the errored state.
    let again = env.client().app_action(0, "restart").await.unwrap();
    assert!(again.restarts > c.restarts, "{again:?}");
}

#[tokio::test]
async fn daemon_kill9_readopts_apps_and_their_log_pipes_survive() {
    let mut env = TestEnv::new(&[], "");
    let logs = env.path("mon");
    std::fs::create_dir_all(&logs).unwrap();
    env.append_config(&format!(
        "[[apps]]\nname = \"mon\"\ncommand = \"{}\"\nlog_timestamps = \"YYYY-MM-DD HH:mm:ss\"\nlog_file = \"{}/all.log\"\n",
        script("health-monitor.sh"),
        logs.display()
    ));
    env.start_daemon().await;
    let before = env
        .wait_app(0, "online", T, |a| a.status == AppStatus::Online)
        .await;
    let out = env.path("data/logs/apps/mon-out.log");
    let text = wait_file(&out, "check 2").await;
    // Timestamped by the log writer: "2026-11-23 14:05:01: check 1".
    let first = text.lines().next().unwrap();
    assert!(
        first.len() > 21 && first.as_bytes()[4] == b'-' && &first[19..21] == ": ",
        "{first:?}"
    );
    wait_file(&logs.join("all.log"), "health-monitor stderr line").await;

    env.kill_daemon();
    // The app keeps writing with no daemon at all: its pipe's reader is the
    // log writer in its own cgroup, not the daemon.
    let len = std::fs::metadata(&out).unwrap().len();
    let deadline = std::time::Instant::now() + T;
    while std::fs::metadata(&out).unwrap().len() == len {
        assert!(
            std::time::Instant::now() < deadline,
            "log stopped growing without the daemon"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(alive(before.pid.unwrap()));

    env.start_daemon().await;
    let after = env
        .wait_app(0, "online again", T, |a| a.status == AppStatus::Online)
        .await;
    assert_eq!(after.pid, before.pid, "re-adopted, not restarted");
    assert_eq!(after.restarts, 0);
    wait_file(&env.path("data/logs/apps/mon-error.log"), "re-adopted pid").await;
}

#[tokio::test]
async fn max_memory_restart_counts_the_whole_tree() {
    let mut env = TestEnv::new(&[], "");
    env.append_config(&format!(
        "[[apps]]\nname = \"hog\"\ncommand = \"{}\"\ninterpreter = \"python3\"\nmax_memory_bytes = {}\nenv = {{ STANDIN_ALLOC_MB = \"96\" }}\n",
        script("slot_manager.py"),
        48 << 20
    ));
    env.start_daemon().await;
    let first = env
        .wait_app(0, "online", T, |a| a.status == AppStatus::Online)
        .await;
    // The main python process stays small; its grandchild holds 96 MiB.
    let restarted = env
        .wait_app(0, "restarted for memory", Duration::from_secs(20), |a| {
            a.restarts >= 1
        })
        .await;
    assert_ne!(restarted.pid, first.pid);
    assert!(
        restarted
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("max_memory_restart"),
        "{restarted:?}"
    );
}

#[tokio::test]
async fn cron_restart_and_watch_restart_the_app() {
    let mut env = TestEnv::new(&[], "");
    let dir = env.path("watched");
    std::fs::create_dir_all(&dir).unwrap();
    env.append_config(&format!(
        "[[apps]]\nname = \"cronned\"\ncommand = \"{s}\"\ncron_restart = \"*/2 * * * * *\"\n\n\
         [[apps]]\nname = \"watched\"\ncommand = \"{s}\"\ncwd = \"{d}\"\nwatch = [\"{d}\"]\nignore_watch = [\"*.log\"]\nwatch_delay_ms = 200\n",
        s = script("sleeper.sh"),
        d = dir.display()
    ));
    env.start_daemon().await;
    env.wait_app(0, "restarted by cron", T, |a| {
        a.restarts >= 1 && a.status == AppStatus::Online
    })
    .await;
    let w = env
        .wait_app(1, "online", T, |a| a.status == AppStatus::Online)
        .await;
    // An ignored file changes nothing…
    std::fs::write(dir.join("noise.log"), "x").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let still = env.client().get_app(1).await.unwrap();
    assert_eq!((still.restarts, still.pid), (0, w.pid));
    // …a watched one restarts the app once the delay has passed.
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    let r = env
        .wait_app(1, "restarted by watch", T, |a| {
            a.restarts >= 1 && a.status == AppStatus::Online
        })
        .await;
    assert_ne!(r.pid, w.pid);
}

#[tokio::test]
async fn tcp_health_probe_gates_online() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut env = TestEnv::new(&[], "");
    env.append_config(&format!(
        "[[apps]]\nname = \"router\"\ncommand = \"{}\"\ninterpreter = \"node\"\nenv = {{ PORT = \"{port}\" }}\n\
         [apps.health]\ntcp = \"127.0.0.1:{port}\"\ninterval_ms = \"200ms\"\n",
        script("server.js")
    ));
    env.start_daemon().await;
    let a = env
        .wait_app(0, "online", T, |a| a.status == AppStatus::Online)
        .await;
    assert_eq!(a.health, Some(true));
    // Online means the port answers.
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
}
