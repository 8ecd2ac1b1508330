//! PM2 compatibility end to end: the product owner's ecosystem file imported
//! into the config and run (stand-in scripts from
//! `tests/fixtures/pm2/scripts/`), `slotctl pm2 …` verbs with PM2's targets,
//! the `jlist` contract, save/resurrect, `dump.pm2` import, the `pm2` name.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use slotapi::AppStatus;
use slotgate_tests::{bin, pm2_fixture, TestEnv};

const T: Duration = Duration::from_secs(15);

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
}

/// The owner's project laid out as the ecosystem file expects, with the
/// stand-in scripts as the apps. Ports are rewritten to free ones (the
/// host is shared); nothing else of the file changes.
fn owner_project(env: &TestEnv) -> (PathBuf, u16) {
    let root = env.path("claudebox");
    let eco = std::fs::read_to_string(pm2_fixture("owner/ecosystem.config.js")).unwrap();
    let port = free_port();
    let eco = eco
        .replace("PORT: 3000", &format!("PORT: {port}"))
        .replace("PORT: 8080", &format!("PORT: {port}"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("ecosystem.config.js"), eco).unwrap();
    copy(
        &pm2_fixture("scripts/server.js"),
        &root.join("router/server.js"),
    );
    copy(
        &pm2_fixture("scripts/slot_manager.py"),
        &root.join("slot-manager/slot_manager.py"),
    );
    std::fs::create_dir_all(root.join("slot-manager/slots")).unwrap();
    copy(
        &pm2_fixture("scripts/health-monitor.sh"),
        &root.join("scripts/health-monitor.sh"),
    );
    std::fs::create_dir_all(root.join("logs")).unwrap();
    (root, port)
}

fn by_name<'a>(list: &'a [slotapi::AppInfo], name: &str) -> Vec<&'a slotapi::AppInfo> {
    list.iter().filter(|a| a.name.as_str() == name).collect()
}

#[tokio::test]
async fn owners_ecosystem_file_is_imported_and_runs() {
    let mut env = TestEnv::new(&[], "");
    let (root, port) = owner_project(&env);
    let eco = root.join("ecosystem.config.js");
    let config_before = std::fs::read_to_string(&env.config).unwrap();

    // Without --yes (and no terminal) nothing is written.
    let out = env.slotctl(&[
        "import",
        "pm2",
        eco.to_str().unwrap(),
        "--env",
        "production",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&env.config).unwrap(), config_before);
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(diff.contains("+name = \"claudebox-router\""), "{diff}");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.contains("exec_mode"),
        "cluster mode is warned about: {warnings}"
    );

    ok(&env.slotctl(&[
        "import",
        "pm2",
        eco.to_str().unwrap(),
        "--env",
        "production",
        "--yes",
    ]));
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    assert!(cfg.starts_with(&config_before), "import only appends");
    ok(&env.slotctl(&["check-config"]));

    env.start_daemon().await;
    let apps = env.apps().await;
    assert_eq!(apps.len(), 4, "{apps:#?}");
    let routers = by_name(&apps, "claudebox-router");
    assert_eq!(routers.len(), 2);
    let sm = by_name(&apps, "slot-manager")[0].pm_id;
    let hm = by_name(&apps, "health-monitor")[0].pm_id;

    // slot-manager: python3 with the production profile and its args.
    env.wait_app(sm, "online", T, |a| a.status == AppStatus::Online)
        .await;
    let sm_out = root.join("logs/slot-manager-out.log");
    let text = wait_contains(
        &sm_out,
        "MAX_SLOTS=50 SLOT_TIMEOUT=2h args=--config slots.toml",
    )
    .await;
    // `time: true` → PM2's YYYY-MM-DDTHH:mm:ss prefix.
    assert_eq!(&text[4..5], "-");
    assert_eq!(&text[10..11], "T", "{text}");

    // health-monitor: bash, combined log file with both streams.
    env.wait_app(hm, "online", T, |a| a.status == AppStatus::Online)
        .await;
    let hm_log = root.join("logs/health-monitor.log");
    wait_contains(
        &hm_log,
        "CHECK_INTERVAL=10s TARGETS=claudebox-router,slot-manager MAX_SLOTS=10",
    )
    .await;
    wait_contains(&hm_log, "health-monitor stderr line").await;
    let info = env.client().get_app(hm).await.unwrap();
    assert_eq!(info.cron_restart.as_deref(), Some("*/15 * * * *"));
    assert_eq!(info.max_memory_bytes, Some(50 << 20));

    // The router: two node instances, PORT incremented per instance,
    // NODE_ENV from the profile; wait_ready without a probe → online after
    // listen_timeout (10 s), reachable before.
    for (i, r) in routers.iter().enumerate() {
        let p = port + i as u16;
        let body = wait_http(p).await;
        assert!(
            body.contains(&format!("instance={i} env=production")),
            "{body}"
        );
        assert_eq!(r.instance, i as u32);
    }
    let router_log = root.join("logs/router-out.log");
    wait_contains(&router_log, "args=--max-old-space-size=512").await;

    // watch: touching the watched script restarts slot-manager (after
    // watch_delay 1 s); an ignored file does not.
    let before = env.client().get_app(sm).await.unwrap();
    std::fs::write(root.join("slot-manager/debug.log"), "x").unwrap();
    std::fs::write(
        root.join("slot-manager/slot_manager.py"),
        std::fs::read(pm2_fixture("scripts/slot_manager.py")).unwrap(),
    )
    .unwrap();
    let after = env
        .wait_app(sm, "restarted by watch", T, |a| {
            a.restarts == before.restarts + 1 && a.status == AppStatus::Online
        })
        .await;
    assert_ne!(after.pid, before.pid);

    // Through the pm2 verbs: restart by name hits both router instances.
    ok(&env.slotctl(&["pm2", "restart", "claudebox-router"]));
    for r in &routers {
        let now = env.client().get_app(r.pm_id).await.unwrap();
        assert_eq!(now.restarts, 1, "{now:?}");
    }
    ok(&env.slotctl(&["pm2", "stop", "all"]));
    for a in env.apps().await {
        assert_eq!(a.status, AppStatus::Stopped, "{a:?}");
    }
}

async fn wait_contains(path: &Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + T;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never had {needle:?}:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn wait_http(port: u16) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + T;
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /x HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.contains("router") {
                return body;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing answers on {port}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn jlist_has_pm2s_field_names_and_never_the_secrets() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let eco = env.path("eco.json");
    std::fs::write(
        &eco,
        format!(
            r#"{{ apps: [ {{ name: "api", script: "{}", instances: 2, namespace: "web",
                 env: {{ API_TOKEN: "hunter2-secret", MODE: "x" }}, max_memory_restart: "200M" }} ] }}"#,
            pm2_fixture("scripts/sleeper.sh").display()
        ),
    )
    .unwrap();
    ok(&env.slotctl(&["pm2", "start", eco.to_str().unwrap()]));
    env.wait_app(1, "online", T, |a| a.status == AppStatus::Online)
        .await;
    let out = env.slotctl(&["pm2", "jlist"]);
    let text = ok(&out);
    assert!(!text.contains("hunter2"), "a secret leaked: {text}");
    let list: Value = serde_json::from_str(&text).expect("jlist is pure JSON");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for (i, p) in list.iter().enumerate() {
        assert_eq!(p["name"], "api");
        assert_eq!(p["pm_id"], i as u64);
        assert!(p["pid"].as_u64().unwrap() > 0);
        assert!(p["monit"]["memory"].is_u64());
        assert!(p["monit"]["cpu"].is_number());
        let e = &p["pm2_env"];
        assert_eq!(e["status"], "online");
        assert_eq!(e["restart_time"], 0);
        assert_eq!(e["unstable_restarts"], 0);
        assert!(e["pm_uptime"].as_u64().unwrap() > 1_600_000_000_000);
        assert!(e["created_at"].is_u64());
        assert_eq!(e["namespace"], "web");
        assert_eq!(e["exec_mode"], "fork_mode");
        assert_eq!(e["exec_interpreter"], "bash");
        assert!(e["pm_exec_path"].as_str().unwrap().ends_with("sleeper.sh"));
        // Several instances: PM2 names their files with a -<pm_id> suffix.
        assert!(e["pm_out_log_path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("api-out-{i}.log")));
        assert!(e["pm_err_log_path"].is_string());
        assert!(e["pm_pid_path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("api-{i}.pid")));
        assert_eq!(e["NODE_APP_INSTANCE"], i as u64);
        assert_eq!(e["max_memory_restart"], 200u64 << 20);
        assert_eq!(e["env"]["API_TOKEN"], "[redacted]");
    }
    // `pm2 stop web` (a namespace) and `pm2 restart 1` (an id).
    ok(&env.slotctl(&["pm2", "restart", "1"]));
    let list: Value = serde_json::from_str(&ok(&env.slotctl(&["pm2", "jlist"]))).unwrap();
    assert_eq!(list[1]["pm2_env"]["restart_time"], 1);
    assert_eq!(list[0]["pm2_env"]["restart_time"], 0);
    ok(&env.slotctl(&["pm2", "stop", "web"]));
    let list: Value = serde_json::from_str(&ok(&env.slotctl(&["pm2", "jlist"]))).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["pm2_env"]["status"] == "stopped" && p["pid"] == 0));
    let out = env.slotctl(&["pm2", "stop", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope not found"));
}

#[tokio::test]
async fn scripts_start_save_resurrect_and_the_pm2_name() {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let sleeper = pm2_fixture("scripts/sleeper.sh");
    ok(&env.slotctl(&[
        "pm2",
        "start",
        sleeper.to_str().unwrap(),
        "-n",
        "sl",
        "-i",
        "2",
    ]));
    env.wait_app(1, "online", T, |a| a.status == AppStatus::Online)
        .await;
    let ls = ok(&env.slotctl(&["pm2", "ls"]));
    for col in [
        "id",
        "name",
        "namespace",
        "mode",
        "pid",
        "uptime",
        "↺",
        "status",
        "cpu",
        "mem",
        "user",
        "watching",
    ] {
        assert!(ls.contains(col), "{col} missing: {ls}");
    }
    // pm_ids survive a daemon restart; runtime apps come back.
    let pid0 = env.client().get_app(0).await.unwrap().pid;
    env.kill_daemon();
    env.start_daemon().await;
    let again = env
        .wait_app(0, "online", T, |a| a.status == AppStatus::Online)
        .await;
    assert_eq!(again.pid, pid0);

    ok(&env.slotctl(&["pm2", "save"]));
    assert!(env.path("data/dump.toml").exists());
    ok(&env.slotctl(&["pm2", "delete", "all"]));
    assert!(env.apps().await.is_empty());
    // An empty list never overwrites the dump.
    assert!(!env.slotctl(&["pm2", "save"]).status.success());
    ok(&env.slotctl(&["pm2", "resurrect"]));
    let back = env.apps().await;
    assert_eq!(back.len(), 2);
    assert!(back.iter().all(|a| a.name.as_str() == "sl"));

    // argv[0] == "pm2" dispatches to the pm2 verbs.
    let link = env.path("pm2");
    std::os::unix::fs::symlink(bin("slotctl"), &link).unwrap();
    let out = std::process::Command::new(&link)
        .args(["--config", env.config.to_str().unwrap(), "jlist"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);

    // startup writes a unit that runs the daemon and resurrects.
    let unit = env.path("slotctl.service");
    ok(&env.slotctl(&["pm2", "startup", "--output", unit.to_str().unwrap()]));
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(
        text.contains(" daemon\n")
            && text.contains("pm2 resurrect")
            && text.contains("KillMode=process"),
        "{text}"
    );

    // kill: apps stopped, daemon gone.
    ok(&env.slotctl(&["pm2", "kill"]));
    assert!(env.client().health().await.is_err());
}

#[tokio::test]
async fn dump_pm2_imports_into_the_config() {
    let env = TestEnv::new(&[], "");
    let dump = pm2_fixture("dump.pm2");
    let before = std::fs::read_to_string(&env.config).unwrap();
    let out = env.slotctl(&["import", "pm2", dump.to_str().unwrap(), "--dry-run"]);
    ok(&out);
    assert_eq!(std::fs::read_to_string(&env.config).unwrap(), before);
    ok(&env.slotctl(&["import", "pm2", dump.to_str().unwrap(), "--yes"]));
    let after = std::fs::read_to_string(&env.config).unwrap();
    assert!(after.contains("[[apps]]"), "{after}");
    ok(&env.slotctl(&["check-config"]));
    // A second import of the same apps is refused, and changes nothing.
    let again = env.slotctl(&["import", "pm2", dump.to_str().unwrap(), "--yes"]);
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&env.config).unwrap(), after);
}
