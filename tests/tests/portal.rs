//! The web portal in a real browser: the real stack (slotctl, ttyd, tmux,
//! slotgate with local accounts serving `web/dist`), Debian's chromium
//! driven by playwright-core through the spec files in `tests/web/`. Each
//! test prepares users and slots, runs one spec with the base URL and
//! credentials in its environment, and asserts it exits 0 (the spec prints
//! the step that failed). Screenshots land in `docs/screenshots/`.
//!
//! Needs `scripts/build-web.sh` (web/dist), `npm ci` in tests/web and the
//! `chromium` package: `scripts/install-deps.sh` and `scripts/test` do both.

use std::path::PathBuf;
use std::time::Duration;

use identity::access::Role;
use serde_json::json;
use slotgate_tests::accounts::{password_of, store};
use slotgate_tests::gateway::{free_port, Options, Slotgate};
use slotgate_tests::oidc;
use slotgate_tests::{repo_root, TestEnv};

fn portal_dir() -> PathBuf {
    let dir = repo_root().join("web/dist");
    assert!(
        dir.join("index.html").exists(),
        "{} is not built: run scripts/build-web.sh",
        dir.display()
    );
    dir
}

async fn stack(extra: &str, port: Option<u16>) -> (TestEnv, Slotgate) {
    stack_with("", extra, port).await
}

/// `stack` with `slotctl_extra` appended to slotctl's config first.
async fn stack_with(slotctl_extra: &str, extra: &str, port: Option<u16>) -> (TestEnv, Slotgate) {
    let mut env = TestEnv::new(&[], "");
    env.append_config(slotctl_extra);
    env.start_daemon().await;
    let gw = Slotgate::start(
        &env.config,
        Options {
            extra: format!(
                "{extra}\n[slotgate.portal]\ndir = {:?}\n",
                portal_dir().display().to_string()
            ),
            port,
            ..Options::default()
        },
    )
    .await
    .expect("slotgate starts");
    (env, gw)
}

fn add_user(gw: &Slotgate, name: &str, role: Role) -> (String, String) {
    let pw = password_of(name);
    store(gw).add_user(name, role, Some(&pw), None).unwrap();
    (name.to_string(), pw)
}

/// Run `tests/web/<spec>` with `vars`; panics with its output unless it
/// exits 0.
async fn run_spec(spec: &str, gw: &Slotgate, vars: &[(&str, String)]) {
    let web = repo_root().join("tests/web");
    assert!(
        web.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/install-deps.sh (npm ci in tests/web)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/install-deps.sh (apt package chromium)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(web.join(spec))
        .current_dir(&web)
        .env("SLOTGATE_URL", gw.base_url())
        .env("SCREENSHOT_DIR", repo_root().join("docs/screenshots"))
        .env("CHROMIUM", &chromium)
        // The host app's backend (embed spec) calls the gateway's
        // self-signed HTTPS.
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
        .env("NODE_NO_WARNINGS", "1")
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{spec} did not finish within 240 s"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{spec} failed ({}):\n{stdout}\n{stderr}\n--- slotgate ---\n{}",
        out.status,
        gw.stderr()
    );
    println!("{stdout}");
}

#[tokio::test]
async fn local_user_terminal_reload_viewer_and_admin_in_chromium() {
    let (_env, gw) = stack("auth = \"local\"", None).await;
    let (user, user_pw) = add_user(&gw, "alice", Role::User);
    let (viewer, viewer_pw) = add_user(&gw, "vic", Role::Viewer);
    let (admin, admin_pw) = add_user(&gw, "root", Role::Admin);
    // alice's default slot does not exist yet: opening it creates it. It
    // is shared with the viewer up front.
    store(&gw).grant("alice", "vic", "viewer").unwrap();
    run_spec(
        "terminal.mjs",
        &gw,
        &[
            ("USER_NAME", user),
            ("USER_PASSWORD", user_pw),
            ("VIEWER_NAME", viewer),
            ("VIEWER_PASSWORD", viewer_pw),
            ("ADMIN_NAME", admin),
            ("ADMIN_PASSWORD", admin_pw),
        ],
    )
    .await;
}

#[tokio::test]
async fn my_slots_create_share_embed_stop_delete_in_chromium() {
    let (_env, gw) = stack("auth = \"local\"", None).await;
    let (user, user_pw) = add_user(&gw, "alice", Role::User);
    let (viewer, _) = add_user(&gw, "vic", Role::Viewer);
    run_spec(
        "slots.mjs",
        &gw,
        &[
            ("USER_NAME", user),
            ("USER_PASSWORD", user_pw),
            ("VIEWER_NAME", viewer),
        ],
    )
    .await;
}

#[tokio::test]
async fn single_sign_on_through_the_openid_provider_in_chromium() {
    let port = free_port();
    let (_op, extra) = oidc::for_gateway(
        port,
        json!({ "olivia": { "email": "olivia@example.com", "name": "Olivia O", "groups": ["eng"] } }),
    );
    let (_env, gw) = stack(&extra, Some(port)).await;
    run_spec(
        "oidc.mjs",
        &gw,
        &[
            ("OIDC_LOGIN", "olivia".into()),
            ("OIDC_LABEL", "Test IdP".into()),
        ],
    )
    .await;
}

#[tokio::test]
async fn embedded_from_another_origin_with_third_party_cookies_blocked_in_chromium() {
    // The host app lives on a second loopback address: another site.
    let host_origin = format!("http://127.0.0.2:{}", free_port());
    let (env, gw) = stack(
        &format!("auth = \"local\"\nframe_ancestors = [\"'self'\", \"{host_origin}\"]"),
        None,
    )
    .await;
    env.create_online("ella", "shell").await;
    let st = store(&gw);
    st.add_user("ella", Role::User, Some(&password_of("ella")), None)
        .unwrap();
    st.add_user("svc", Role::Admin, None, None).unwrap();
    let (_, service) = st
        .create_api_token("svc", "host app", &["embed".into()], None)
        .unwrap();
    run_spec(
        "embed.mjs",
        &gw,
        &[
            ("HOST_ORIGIN", host_origin),
            ("SERVICE_TOKEN", service),
            ("EMBED_USER", "ella".into()),
            ("EMBED_SLOT", "ella".into()),
        ],
    )
    .await;
}

/// Copy the committed Claude Code transcripts of `user`
/// (tests/fixtures/claude/<user>) into their HOME, moved to yesterday and
/// today so the stats page's default window holds them.
fn claude_transcripts(env: &TestEnv, user: &str) {
    let day = |ago: u64| {
        let t = std::time::SystemTime::now() - Duration::from_secs(86_400 * ago);
        humantime::format_rfc3339(t).to_string()[..10].to_string()
    };
    let (yesterday, today) = (day(1), day(0));
    let from = repo_root().join("tests/fixtures/claude").join(user);
    let to = env.path(&format!("data/users/{user}/home/.claude/projects"));
    for project in std::fs::read_dir(&from).unwrap() {
        let project = project.unwrap();
        let dir = to.join(project.file_name());
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(project.path()).unwrap() {
            let f = f.unwrap();
            let text = std::fs::read_to_string(f.path()).unwrap();
            let text = text
                .replace("2026-11-20", &yesterday)
                .replace("2026-11-21", &today);
            std::fs::write(dir.join(f.file_name()), text).unwrap();
        }
    }
}

#[tokio::test]
async fn admin_stats_logs_recordings_and_replay_link_in_chromium() {
    let (env, gw) = stack_with(
        "[claude]\nrescan_interval = \"300ms\"\n",
        "auth = \"local\"",
        None,
    )
    .await;
    let (user, user_pw) = add_user(&gw, "alice", Role::User);
    let (other, other_pw) = add_user(&gw, "bob", Role::User);
    let (admin, admin_pw) = add_user(&gw, "root", Role::Admin);
    claude_transcripts(&env, "alice");
    // alice's complete messages (tests/tests/usage.rs): sonnet 4.5 and the
    // first opus 4.5 message; the transcript's last line is partial.
    let cost = (20.0 * 3.0 + 566.0 * 15.0 + 13000.0 * 3.75 + 24800.0 * 0.3) / 1e6
        + (8.0 * 5.0 + 300.0 * 25.0 + 5000.0 * 6.25 + 1000.0 * 0.5) / 1e6;
    slotgate_tests::wait_for(
        "alice's transcripts ingested",
        Duration::from_secs(30),
        || async {
            let u: serde_json::Value = env
                .client()
                .get_json("/v1/usage?group=user&user=alice")
                .await
                .unwrap();
            u["items"][0]["output_tokens"] == 866
        },
    )
    .await;
    run_spec(
        "stats-replay.mjs",
        &gw,
        &[
            ("USER_NAME", user),
            ("USER_PASSWORD", user_pw),
            ("OTHER_NAME", other),
            ("OTHER_PASSWORD", other_pw),
            ("ADMIN_NAME", admin),
            ("ADMIN_PASSWORD", admin_pw),
            ("USER_TOKENS", "866".into()),
            ("USER_COST", format!("${cost:.2}")),
        ],
    )
    .await;
}

#[tokio::test]
async fn framed_without_a_token_signs_in_through_a_popup_in_chromium() {
    // The host app lives on a second loopback address: another site. It
    // frames the slot without an embed token.
    let host_origin = format!("http://127.0.0.2:{}", free_port());
    let (env, gw) = stack(
        &format!("auth = \"local\"\nframe_ancestors = [\"'self'\", \"{host_origin}\"]"),
        None,
    )
    .await;
    env.create_online("ella", "shell").await;
    let st = store(&gw);
    st.add_user("ella", Role::User, Some(&password_of("ella")), None)
        .unwrap();
    // The spec revokes ella's sessions through the admin API.
    st.add_user("root", Role::Admin, None, None).unwrap();
    let (_, admin) = st
        .create_api_token("root", "revoker", &["api".into()], None)
        .unwrap();
    run_spec(
        "embed-popup.mjs",
        &gw,
        &[
            ("HOST_ORIGIN", host_origin),
            ("ADMIN_TOKEN", admin),
            ("EMBED_USER", "ella".into()),
            ("EMBED_PASSWORD", password_of("ella")),
            ("EMBED_SLOT", "ella".into()),
        ],
    )
    .await;
}
