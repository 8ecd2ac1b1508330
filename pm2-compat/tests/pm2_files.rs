//! pm2-compat against the real PM2 files under `tests/fixtures/pm2/`: the
//! product owner's ecosystem in all three formats, a file using every field
//! of the PM2 reference table, a JSON5-style file, a `dump.pm2`, JavaScript
//! modules evaluated by the real `node`, and broken files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pm2_compat::{
    load, load_dump, parse_str, to_toml, AppSpec, Diagnostic, Format, Level, Options, Pm2Error,
    Translation,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/pm2")
        .canonicalize()
        .unwrap()
}

fn fixture(rel: &str) -> PathBuf {
    fixtures().join(rel)
}

fn opts() -> Options {
    Options {
        cpu_count: 4,
        ..Options::default()
    }
}

fn with_profile(profile: &str) -> Options {
    Options {
        env_profile: Some(profile.into()),
        ..opts()
    }
}

fn app<'a>(t: &'a Translation, name: &str) -> &'a AppSpec {
    t.apps
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no app {name}: {:#?}", t.diagnostics))
}

fn find<'a>(t: &'a Translation, level: Level, app: &str, key: &str) -> Option<&'a Diagnostic> {
    t.diagnostics.iter().find(|d| {
        d.level == level && d.app.as_deref() == Some(app) && d.key.as_deref() == Some(key)
    })
}

fn warned(t: &Translation, app: &str, key: &str) -> bool {
    find(t, Level::Warning, app, key).is_some()
}

fn env(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Diagnostics without the file they came from, to compare formats.
fn diagnostics_sans_file(t: &Translation) -> Vec<Diagnostic> {
    t.diagnostics
        .iter()
        .cloned()
        .map(|mut d| {
            d.file = None;
            d
        })
        .collect()
}

// --- the product owner's file --------------------------------------------

const OWNER_FORMATS: [&str; 3] = [
    "owner/ecosystem.json",
    "owner/ecosystem.yaml",
    "owner/ecosystem.config.js",
];

#[test]
fn owner_file_translates_identically_from_json_yaml_and_javascript() {
    for o in [opts(), with_profile("production")] {
        let [json, yaml, js] = OWNER_FORMATS.map(|f| load(&fixture(f), &o).unwrap());
        assert_eq!(json.apps, yaml.apps, "JSON vs YAML");
        assert_eq!(json.apps, js.apps, "JSON vs JavaScript");
        assert_eq!(diagnostics_sans_file(&json), diagnostics_sans_file(&yaml));
        assert_eq!(diagnostics_sans_file(&json), diagnostics_sans_file(&js));
        assert_eq!(json.apps.len(), 3);
    }
}

#[test]
fn owner_file_translates_to_these_specs() {
    let dir = fixture("owner");
    let t = load(&fixture("owner/ecosystem.json"), &opts()).unwrap();
    assert!(!t.has_errors(), "{:#?}", t.diagnostics);
    let names: Vec<&str> = t.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["claudebox-router", "slot-manager", "health-monitor"]
    );

    let mut router = AppSpec::new("claudebox-router", dir.join("router/server.js"));
    router.interpreter = Some("node".into());
    router.interpreter_args = vec!["--max-old-space-size=512".into()];
    router.cwd = Some(dir.clone());
    router.env = env(&[
        ("NODE_ENV", "development"),
        ("PORT", "3000"),
        ("SLOT_MANAGER_URL", "http://127.0.0.1:4100"),
    ]);
    router.instances = 2;
    router.increment_var = Some("PORT".into());
    router.max_memory_bytes = Some(300 << 20);
    router.kill_timeout_ms = 5000;
    router.wait_ready = true;
    router.listen_timeout_ms = 10_000;
    router.out_file = Some(dir.join("logs/router-out.log"));
    router.error_file = Some(dir.join("logs/router-error.log"));
    router.merge_logs = true;
    router.log_timestamps = Some("YYYY-MM-DD HH:mm:ss Z".into());
    assert_eq!(t.apps[0], router);

    let sm_dir = dir.join("slot-manager");
    let mut sm = AppSpec::new("slot-manager", sm_dir.join("slot_manager.py"));
    sm.interpreter = Some("python3".into());
    sm.args = vec!["--config".into(), "slots.toml".into()];
    sm.cwd = Some(sm_dir.clone());
    sm.env = env(&[
        ("MAX_SLOTS", "10"),
        ("SLOT_TIMEOUT", "30m"),
        ("PYTHONUNBUFFERED", "1"),
    ]);
    sm.cron_restart = Some("0 4 * * *".into());
    sm.max_memory_bytes = Some(1 << 30);
    sm.max_restarts = 10;
    sm.min_uptime_ms = 10_000;
    sm.restart_delay_ms = 2000;
    sm.watch = vec![sm_dir.join("slot_manager.py"), sm_dir.join("slots")];
    sm.ignore_watch = vec!["__pycache__".into(), "*.log".into()];
    sm.watch_delay_ms = 1000;
    sm.out_file = Some(dir.join("logs/slot-manager-out.log"));
    sm.error_file = Some(dir.join("logs/slot-manager-error.log"));
    sm.log_timestamps = Some("YYYY-MM-DDTHH:mm:ss".into());
    assert_eq!(t.apps[1], sm);

    let mut hm = AppSpec::new("health-monitor", dir.join("scripts/health-monitor.sh"));
    hm.interpreter = Some("bash".into());
    hm.cwd = Some(dir.clone());
    hm.env = env(&[
        ("CHECK_INTERVAL", "30s"),
        ("TARGETS", "claudebox-router,slot-manager"),
        ("MAX_SLOTS", "10"),
    ]);
    hm.cron_restart = Some("*/15 * * * *".into());
    hm.exp_backoff_initial_ms = Some(100);
    hm.stop_exit_codes = vec![0];
    hm.max_memory_bytes = Some(50 << 20);
    hm.log_file = Some(dir.join("logs/health-monitor.log"));
    assert_eq!(t.apps[2], hm);

    // What does not carry over is said, once, about the right app and key.
    let warnings: Vec<(&str, &str)> = t
        .warnings()
        .map(|d| (d.app.as_deref().unwrap(), d.key.as_deref().unwrap()))
        .collect();
    assert_eq!(
        warnings,
        [
            ("claudebox-router", "exec_mode"),
            ("claudebox-router", "wait_ready")
        ]
    );
    for d in t.warnings() {
        assert_eq!(
            d.file.as_deref(),
            Some(fixture("owner/ecosystem.json").as_path())
        );
    }
}

#[test]
fn env_profile_merges_env_production_over_env() {
    let t = load(
        &fixture("owner/ecosystem.yaml"),
        &with_profile("production"),
    )
    .unwrap();
    assert_eq!(
        app(&t, "claudebox-router").env,
        env(&[
            ("NODE_ENV", "production"),
            ("PORT", "8080"),
            ("SLOT_MANAGER_URL", "http://127.0.0.1:4100"),
        ])
    );
    assert_eq!(
        app(&t, "slot-manager").env,
        env(&[
            ("MAX_SLOTS", "50"),
            ("SLOT_TIMEOUT", "2h"),
            ("PYTHONUNBUFFERED", "1"),
        ])
    );
    assert_eq!(app(&t, "health-monitor").env["CHECK_INTERVAL"], "10s");
    assert!(!t.has_errors());
}

#[test]
fn env_profile_missing_from_an_app_is_a_warning_like_pm2s() {
    let t = load(&fixture("owner/ecosystem.json"), &with_profile("qa")).unwrap();
    for name in ["claudebox-router", "slot-manager", "health-monitor"] {
        let d = find(&t, Level::Warning, name, "env_qa").expect(name);
        assert!(d.message.contains("not defined"), "{d}");
        assert_eq!(app(&t, name).env.get("NODE_ENV").map(String::as_str), {
            (name == "claudebox-router").then_some("development")
        });
    }
}

#[test]
fn only_selects_apps_by_name() {
    let o = Options {
        only: vec!["slot-manager,health-monitor".into()],
        ..opts()
    };
    let t = load(&fixture("owner/ecosystem.config.js"), &o).unwrap();
    let names: Vec<&str> = t.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["slot-manager", "health-monitor"]);
    // The router's warnings go with it.
    assert!(t
        .diagnostics
        .iter()
        .all(|d| d.app.as_deref() != Some("claudebox-router")));

    let o = Options {
        only: vec!["slot-manager".into(), "nope".into()],
        ..opts()
    };
    let t = load(&fixture("owner/ecosystem.json"), &o).unwrap();
    assert_eq!(t.apps.len(), 1);
    let d = t
        .warnings()
        .find(|d| d.key.as_deref() == Some("--only"))
        .unwrap();
    assert!(d.message.contains("nope"), "{d}");
}

#[test]
fn toml_export_of_the_owner_file_reads_back_as_the_same_specs() {
    #[derive(serde::Deserialize)]
    struct Section {
        apps: Vec<AppSpec>,
    }
    let t = load(
        &fixture("owner/ecosystem.json"),
        &with_profile("production"),
    )
    .unwrap();
    let text = to_toml(&t.apps);
    assert_eq!(text.matches("[[apps]]").count(), 3, "{text}");
    assert!(text.contains("restart_delay_ms = \"2s\""), "{text}");
    assert!(text.contains("min_uptime_ms = \"10s\""), "{text}");
    assert!(
        text.contains(&format!("max_memory_bytes = {}", 1u64 << 30)),
        "{text}"
    );
    let back: Section = toml::from_str(&text).unwrap();
    assert_eq!(back.apps, t.apps);
}

// --- every field of the reference table -----------------------------------

/// The `apps[]` field table of docs/pm2-reference.md §1.2, plus the
/// Node/APM-only keys listed under it.
const REFERENCE_FIELDS: &[&str] = &[
    "script",
    "name",
    "namespace",
    "cwd",
    "args",
    "interpreter",
    "interpreter_args",
    "env",
    "env_<name>",
    "filter_env",
    "port",
    "append_env_to_name",
    "instances",
    "exec_mode",
    "instance_var",
    "increment_var",
    "uid",
    "gid",
    "autostart",
    "autorestart",
    "stop_exit_codes",
    "min_uptime",
    "max_restarts",
    "restart_delay",
    "exp_backoff_restart_delay",
    "max_memory_restart",
    "cron_restart",
    "kill_timeout",
    "kill_retry_time",
    "shutdown_with_message",
    "treekill",
    "wait_ready",
    "listen_timeout",
    "watch",
    "ignore_watch",
    "watch_options",
    "watch_delay",
    "out_file",
    "error_file",
    "log_file",
    "merge_logs",
    "log_date_format",
    "time",
    "log_type",
    "disable_logs",
    "pid_file",
    "force",
    "source_map_support",
    "disable_source_map_support",
    "vizion",
    "post_update",
    "pmx",
    "automation",
    "trace",
    "disable_trace",
    "v8",
    "event_loop_inspector",
    "deep_monitoring",
    "io",
    "windowsHide",
    "install_url",
    "name_prefix",
    "execute_command",
    "write",
    "username",
];

/// Fields that are only warned about (ignored, with a reason).
const WARNED: &[&str] = &[
    "kill_retry_time",
    "shutdown_with_message",
    "treekill",
    "watch_options",
    "force",
    "source_map_support",
    "disable_source_map_support",
    "vizion",
    "post_update",
    "pmx",
    "automation",
    "trace",
    "disable_trace",
    "v8",
    "event_loop_inspector",
    "deep_monitoring",
    "io",
    "windowsHide",
    "install_url",
    "name_prefix",
    "execute_command",
    "write",
    "username",
];

#[test]
fn every_reference_field_is_translated_or_warned_about() {
    let path = fixture("all-fields.json");
    let t = load(&path, &with_profile("staging")).unwrap();
    let a = app(&t, "every-field-staging");
    let mut honoured = BTreeSet::new();
    let mut check = |field: &'static str, ok: bool| {
        assert!(ok, "{field} not translated: {a:#?}");
        honoured.insert(field);
    };
    let srv = Path::new("/srv/every");
    check("script", a.command == srv.join("server.js"));
    check("name", a.name.starts_with("every-field"));
    check("append_env_to_name", a.name == "every-field-staging");
    check("namespace", a.namespace == "edge");
    check("cwd", a.cwd.as_deref() == Some(srv));
    check("args", a.args == ["--port", "4000", "--mode", "two words"]);
    check(
        "interpreter",
        a.interpreter.as_deref() == Some("/usr/local/bin/node"),
    );
    check(
        "interpreter_args",
        a.interpreter_args == ["--enable-source-maps"],
    );
    // deploy.staging.env < env < env_staging < port
    check(
        "env",
        a.env
            == env(&[
                ("DEPLOYED", "yes"),
                ("NODE_ENV", "staging"),
                ("PORT", "4000"),
                ("SHARED", "base"),
            ]),
    );
    check("env_<name>", a.env["NODE_ENV"] == "staging");
    check("port", a.env["PORT"] == "4000");
    check("filter_env", !warned(&t, "every-field", "filter_env"));
    check("instances", a.instances == 3);
    check("exec_mode", !warned(&t, "every-field", "exec_mode"));
    check("instance_var", a.instance_var == "INSTANCE_ID");
    check("increment_var", a.increment_var.as_deref() == Some("PORT"));
    check("uid", a.user.as_deref() == Some("www-data"));
    check("gid", a.group.as_deref() == Some("www-data"));
    check("autostart", !a.autostart);
    check("autorestart", !a.autorestart);
    check("stop_exit_codes", a.stop_exit_codes == [0, 3]);
    check("min_uptime", a.min_uptime_ms == 5000);
    check("max_restarts", a.max_restarts == 7);
    check("restart_delay", a.restart_delay_ms == 250);
    check(
        "exp_backoff_restart_delay",
        a.exp_backoff_initial_ms == Some(150),
    );
    check("max_memory_restart", a.max_memory_bytes == Some(512 << 10));
    check(
        "cron_restart",
        a.cron_restart.as_deref() == Some("0 0 3 * * *"),
    );
    check("kill_timeout", a.kill_timeout_ms == 3000);
    check("wait_ready", a.wait_ready);
    check("listen_timeout", a.listen_timeout_ms == 8000);
    check(
        "watch",
        a.watch == [srv.join("src"), srv.join("config/app.json")],
    );
    check("ignore_watch", a.ignore_watch == ["node_modules"]);
    check("watch_delay", a.watch_delay_ms == 1500);
    check(
        "out_file",
        a.out_file.as_deref() == Some(&*srv.join("logs/out.log")),
    );
    check(
        "error_file",
        a.error_file.as_deref() == Some(Path::new("/var/log/every/err.log")),
    );
    check(
        "log_file",
        a.log_file.as_deref() == Some(&*srv.join("logs/combined.log")),
    );
    check("merge_logs", !a.merge_logs);
    check(
        "log_date_format",
        a.log_timestamps.as_deref() == Some("YYYY-MM-DD HH:mm Z"),
    );
    check("log_type", a.log_json);
    check(
        "pid_file",
        a.pid_file.as_deref() == Some(&*srv.join("run/every.pid")),
    );

    // `time` only matters without log_date_format, and `disable_logs` is in
    // another app: both are checked there.
    let legacy = app(&t, "alias-err-log");
    check(
        "disable_logs",
        legacy.out_file.as_deref() == Some(Path::new("/dev/null")),
    );
    let t_time = parse_str(
        r#"{ "script": "a.js", "time": true }"#,
        Format::Json,
        &opts(),
    )
    .unwrap();
    check(
        "time",
        t_time.apps[0].log_timestamps.as_deref() == Some("YYYY-MM-DDTHH:mm:ss"),
    );

    for field in WARNED {
        let d = find(&t, Level::Warning, "every-field", field)
            .unwrap_or_else(|| panic!("no warning naming {field} and the app"));
        assert_eq!(d.file.as_deref(), Some(path.as_path()));
        assert!(d.message.contains("ignored"), "{d}");
    }

    let covered: BTreeSet<&str> = honoured
        .iter()
        .copied()
        .chain(WARNED.iter().copied())
        .collect();
    let reference: BTreeSet<&str> = REFERENCE_FIELDS.iter().copied().collect();
    assert_eq!(
        reference.difference(&covered).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "reference fields neither translated nor warned about"
    );
    assert!(honoured.is_disjoint(&WARNED.iter().copied().collect()));
}

#[test]
fn aliases_translate_like_their_canonical_keys() {
    let t = load(&fixture("all-fields.json"), &opts()).unwrap();
    let base = fixtures();

    let a = app(&t, "alias-exec");
    assert_eq!(a.command, base.join("worker.py"));
    assert_eq!(a.interpreter.as_deref(), Some("python3.11"));
    assert_eq!(a.interpreter_args, ["-u", "-X", "dev"]);
    assert_eq!(a.out_file, Some(base.join("o.log")));
    assert_eq!(a.error_file, Some(base.join("e.log")));
    assert_eq!(a.log_file, Some(base.join("all.log")));
    assert!(a.merge_logs);
    assert_eq!(a.cron_restart.as_deref(), Some("0 * * * *"));
    assert_eq!(a.user.as_deref(), Some("1000"));
    assert_eq!(a.pid_file, Some(base.join("w.pid")));

    let a = app(&t, "alias-cmd");
    assert_eq!(a.command, Path::new("bash"));
    assert_eq!(a.args, ["-c", "./bin/tool --verbose"]);
    assert_eq!(a.out_file, Some(base.join("o2.log")));
    assert_eq!(a.error_file, Some(base.join("e2.log")));

    let a = app(&t, "alias-command");
    assert_eq!(a.command, base.join("job.rb"));
    assert_eq!(a.interpreter.as_deref(), Some("ruby"));
    assert_eq!(a.interpreter_args, ["-W0"]);
    assert_eq!(a.out_file, Some(base.join("o3.log")));
    assert_eq!(a.error_file, Some(base.join("e3.log")));

    let a = app(&t, "alias-err-log");
    assert_eq!(a.interpreter, None, "interpreter: none");
    assert_eq!(a.command, base.join("legacy.pl"));
    assert_eq!(a.instances, 4, "instances: max with 4 CPUs");
    assert_eq!(a.stop_exit_codes, [2]);
    assert_eq!(a.cron_restart, None, "cron_restart: 0 disables");
    assert_eq!(
        a.error_file.as_deref(),
        Some(Path::new("/dev/null")),
        "disable_logs wins"
    );
    assert!(!a.merge_logs, "PM2 merges by default only for one instance");
    for key in ["exec_mode", "filter_env", "log_file", "disable_logs"] {
        assert!(warned(&t, "alias-err-log", key), "{key}");
    }
    let d = find(&t, Level::Warning, "alias-err-log", "exec_mode").unwrap();
    assert!(d.message.contains("4 independent fork instance"), "{d}");
}

#[test]
fn slotgate_extensions_and_unknown_keys() {
    let t = load(&fixture("all-fields.json"), &opts()).unwrap();
    let a = app(&t, "ttyd");
    assert_eq!(a.command, Path::new("/usr/bin/ttyd"));
    assert_eq!(a.interpreter, None);
    assert_eq!(a.args, ["-p", "7681", "bash"]);
    assert_eq!(a.stop_signal, "SIGTERM");
    assert_eq!(a.health.as_ref().unwrap().url, "http://127.0.0.1:7681/");
    assert_eq!(a.instances, 3, "instances: -1 is CPUs minus one");
    assert!(
        !warned(&t, "ttyd", "wait_ready"),
        "a health check makes wait_ready real"
    );
    assert!(warned(&t, "ttyd", "favourite_colour"));
    let d = find(&t, Level::Warning, "ttyd", "autorestar").unwrap();
    assert!(d.message.contains("did you mean `autorestart`"), "{d}");

    let top: Vec<&str> = t
        .warnings()
        .filter(|d| d.app.is_none())
        .map(|d| d.key.as_deref().unwrap())
        .collect();
    assert_eq!(top, ["deploy", "extra_top_level"]);
    assert!(!t.has_errors(), "{:#?}", t.errors().collect::<Vec<_>>());
}

// --- lenient JSON, bare arrays, single objects ----------------------------

#[test]
fn json_files_may_be_javascript_object_literals() {
    let t = load(&fixture("lenient.json"), &opts()).unwrap();
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    let a = app(&t, "lenient");
    assert_eq!(
        a.env,
        env(&[
            ("GREETING", "it's fine"),
            ("HEX", "31"),
            ("RATIO", "0.5"),
            ("RETRIES", "3"),
        ])
    );
    assert_eq!(a.watch.len(), 2);
    assert_eq!(a.max_memory_bytes, Some(200 << 20));
    assert_eq!(a.min_uptime_ms, 30_000);
}

#[test]
fn a_single_app_object_or_a_bare_list_is_accepted() {
    let single = parse_str("script: api.js\nname: api\n", Format::Yaml, &opts()).unwrap();
    let list = parse_str(
        r#"[{"script": "api.js", "name": "api"}]"#,
        Format::Json,
        &opts(),
    )
    .unwrap();
    let wrapped = parse_str(
        r#"{apps: {script: "api.js", name: "api"}}"#,
        Format::Json,
        &opts(),
    )
    .unwrap();
    assert_eq!(single.apps, list.apps);
    assert_eq!(single.apps, wrapped.apps);
    assert_eq!(
        single.apps[0].command,
        Path::new("api.js"),
        "no base dir: stays relative"
    );
}

#[test]
fn parse_str_resolves_against_base_dir() {
    let o = Options {
        base_dir: Some("/opt/site".into()),
        ..opts()
    };
    let t = parse_str(r#"{"script": "bin/www", "cwd": "web"}"#, Format::Json, &o).unwrap();
    assert_eq!(t.apps[0].cwd.as_deref(), Some(Path::new("/opt/site/web")));
    assert_eq!(t.apps[0].command, Path::new("/opt/site/web/bin/www"));
}

// --- dump.pm2 ----------------------------------------------------------------

#[test]
fn dump_pm2_translates_to_the_same_specs() {
    let path = fixture("dump.pm2");
    let t = load_dump(&path).unwrap();
    assert!(!t.has_errors(), "{:#?}", t.diagnostics);
    let names: Vec<&str> = t.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["api", "tick", "reporter"],
        "instances grouped by name"
    );
    assert_eq!(
        load(&path, &opts()).unwrap(),
        t,
        "load() knows dump.pm2 too"
    );

    let api = app(&t, "api");
    assert_eq!(api.instances, 2);
    assert_eq!(api.command, Path::new("/srv/api/dist/server.js"));
    assert_eq!(api.interpreter.as_deref(), Some("node"));
    assert_eq!(api.cwd.as_deref(), Some(Path::new("/srv/api")));
    assert_eq!(api.max_memory_bytes, Some(209_715_200));
    assert_eq!(api.kill_timeout_ms, 3000);
    assert_eq!(api.exp_backoff_initial_ms, Some(100));
    assert_eq!(
        api.out_file.as_deref(),
        Some(Path::new("/home/deploy/.pm2/logs/api-out.log"))
    );
    assert_eq!(
        api.pid_file, None,
        "PM2's per-process pid path is not carried over"
    );
    assert_eq!(api.env["NODE_ENV"], "production");
    assert_eq!(api.env["PORT"], "8080");
    assert_eq!(api.env["PATH"], "/usr/local/bin:/usr/bin:/bin");
    for injected in [
        "PM2_HOME",
        "PM2_USAGE",
        "NODE_APP_INSTANCE",
        "pm_id",
        "name",
        "unique_id",
    ] {
        assert!(!api.env.contains_key(injected), "{injected}");
    }
    assert!(warned(&t, "api", "exec_mode"));
    assert!(
        warned(&t, "api", "env"),
        "the shell snapshot is pointed out"
    );

    let tick = app(&t, "tick");
    assert_eq!(tick.interpreter, None);
    assert_eq!(tick.args, ["--every", "5"]);
    assert_eq!(tick.cron_restart.as_deref(), Some("0 */6 * * *"));

    let rep = app(&t, "reporter");
    assert!(!rep.autorestart);
    assert_eq!(rep.watch, [Path::new("/srv/reports/templates")]);
    assert_eq!(rep.ignore_watch, ["*.tmp"]);

    // Runtime state and PM2 bookkeeping are dropped silently; only the
    // things above are worth a word.
    let noise: Vec<String> = t
        .warnings()
        .filter(|d| !matches!(d.key.as_deref(), Some("exec_mode" | "env")))
        .map(ToString::to_string)
        .collect();
    assert!(noise.is_empty(), "{noise:#?}");
}

// --- JavaScript through node ------------------------------------------------

#[test]
fn mjs_default_export_is_loaded() {
    let t = load(&fixture("js/esm.config.mjs"), &opts()).unwrap();
    assert_eq!(app(&t, "esm-app").env["MODE"], "esm");
}

#[test]
fn cjs_bare_array_is_loaded() {
    let t = load(&fixture("js/array.config.cjs"), &opts()).unwrap();
    assert_eq!(app(&t, "one").interpreter.as_deref(), Some("node"));
    assert_eq!(app(&t, "two").interpreter.as_deref(), Some("bash"));
    assert_eq!(app(&t, "two").args, ["--fast"]);
}

#[test]
fn js_in_a_type_module_package_falls_back_to_import() {
    let t = load(&fixture("js/type-module/ecosystem.config.js"), &opts()).unwrap();
    assert_eq!(t.apps[0].name, "typed-module");
}

#[test]
fn js_that_prints_while_loading_and_uses_regexps() {
    let t = load(&fixture("js/noisy.config.js"), &opts()).unwrap();
    let a = app(&t, "noisy");
    assert_eq!(a.env["LOADED_BY"], "node");
    assert_eq!(a.ignore_watch, ["/node_modules|\\.git/i", "tmp"]);
    assert_eq!(a.watch, [fixture("js")]);
}

#[test]
fn node_missing_from_path_is_a_clear_error() {
    // A real condition: a machine without Node.js. An empty directory as
    // PATH is exactly what such a machine looks like to the loader.
    let empty = tempfile::tempdir().unwrap();
    let o = Options {
        search_path: Some(empty.path().as_os_str().to_owned()),
        ..opts()
    };
    let path = fixture("owner/ecosystem.config.js");
    let err = load(&path, &o).unwrap_err();
    assert!(matches!(err, Pm2Error::NodeMissing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(msg.contains("install Node.js"), "{msg}");
    assert!(msg.contains("JSON or YAML"), "{msg}");
}

#[test]
fn node_that_never_finishes_is_killed_at_the_timeout() {
    let o = Options {
        node_timeout: Duration::from_millis(800),
        ..opts()
    };
    let started = Instant::now();
    let err = load(&fixture("bad/slow.config.js"), &o).unwrap_err();
    assert!(matches!(err, Pm2Error::NodeTimeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("slow.config.js"), "{err}");
}

#[test]
fn js_that_throws_reports_nodes_error() {
    let err = load(&fixture("bad/throws.config.js"), &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Pm2Error::NodeFailed { .. }), "{err:?}");
    assert!(msg.contains("throws.config.js"), "{msg}");
    assert!(msg.contains("does-not-exist"), "{msg}");
}

// --- broken files -------------------------------------------------------------

#[test]
fn app_without_script_is_an_error_naming_file_app_and_key() {
    let path = fixture("bad/no-script.json");
    let t = load(&path, &opts()).unwrap();
    assert_eq!(t.apps.len(), 1, "the good app survives");
    assert_eq!(t.apps[0].name, "fine");
    let d = find(&t, Level::Error, "forgot-script", "script").unwrap();
    let msg = d.to_string();
    assert!(
        msg.starts_with(&format!("error: {}: ", path.display())),
        "{msg}"
    );
    assert!(msg.contains("app `forgot-script`"), "{msg}");
    assert!(msg.contains("`script`"), "{msg}");
}

#[test]
fn invalid_cron_is_an_error_naming_file_app_and_key() {
    let path = fixture("bad/bad-cron.yaml");
    let t = load(&path, &opts()).unwrap();
    assert_eq!(
        t.apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["fine"]
    );
    let d = find(&t, Level::Error, "nightly", "cron_restart").unwrap();
    assert_eq!(d.file.as_deref(), Some(path.as_path()));
    assert!(d.message.contains("0 25 * * *"), "{d}");
}

#[test]
fn syntax_errors_name_file_and_line() {
    for (rel, line) in [("bad/syntax-error.json", 6), ("bad/syntax-error.yaml", 4)] {
        let path = fixture(rel);
        let err = load(&path, &opts()).unwrap_err();
        match &err {
            Pm2Error::Syntax { line: l, .. } => assert_eq!(*l, Some(line), "{err}"),
            other => panic!("{rel}: {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with(&format!("{}:{line}:", path.display())),
            "{err}"
        );
    }
}

#[test]
fn list_of_non_objects_gives_an_error_per_entry() {
    let t = load(&fixture("bad/not-an-app.yaml"), &opts()).unwrap();
    assert!(t.apps.is_empty());
    let apps: Vec<&str> = t.errors().map(|d| d.app.as_deref().unwrap()).collect();
    assert_eq!(apps, ["apps[0]", "apps[1]"]);
}

#[test]
fn unreadable_and_unrecognised_files() {
    let err = load(&fixture("nope.json"), &opts()).unwrap_err();
    assert!(matches!(err, Pm2Error::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.json"));
    let err = load(&fixture("README.txt"), &opts()).unwrap_err();
    assert!(matches!(err, Pm2Error::UnknownFormat { .. }), "{err:?}");
}

#[test]
fn hostile_input_never_panics() {
    let docs = [
        "null",
        "[]",
        "{}",
        r#"{"apps": []}"#,
        r#"{"apps": [null, 1, "x", [], {}]}"#,
        r#"{"script": {"a": 1}, "name": [], "env": "X=1", "watch": {"a": 1}}"#,
        r#"{"script": "a", "instances": 1e300, "max_memory_restart": -1, "kill_timeout": 1e400}"#,
        r#"{"script": "a", "args": [[], {}], "stop_exit_codes": [1e20], "cron": "@"}"#,
        r#"{"script": "a", "env_": 5, "env_x": [], "port": {}, "log_file": 5, "uid": []}"#,
        r#"{"script": " ", "interpreter": "", "exec_mode": 3, "min_uptime": "1e9h"}"#,
        r#"{"script": "a", "max_memory_restart": 18446744073709551615}"#,
        r#"{"script": "a b", "env": {"a.b c": "\n\u0001", "é": "\"'"}, "watch": "x y"}"#,
        r#"[{"name": "x", "pm_exec_path": "/x", "env": {"PM2_HOME": 1}}, {"name": "x"}]"#,
    ];
    #[derive(serde::Deserialize)]
    struct Section {
        apps: Vec<AppSpec>,
    }
    for text in docs {
        for format in [Format::Json, Format::Yaml, Format::Dump] {
            // Whatever survives translation must render and read back.
            if let Ok(t) = parse_str(text, format, &opts()) {
                let back: Section = toml::from_str(&to_toml(&t.apps)).unwrap();
                assert_eq!(back.apps, t.apps, "{text}");
            }
        }
    }
}
