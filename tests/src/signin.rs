//! Helpers for end-to-end tests that sign in: a gateway stack with an
//! identity mode, a browser-like client, local sign-in and the session
//! cookie, and raw WebSocket upgrades for refusals.

use std::sync::Arc;
use std::time::Duration;

use identity::access::Role;
use identity::store::Store;

use crate::gateway::{self, Options, Slotgate};
use crate::ttyd::TtydClient;
use crate::TestEnv;

/// How long an end-to-end step may take.
pub const T: Duration = Duration::from_secs(20);

pub async fn stack(auth_extra: &str, port: Option<u16>) -> (TestEnv, Slotgate) {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let gw = Slotgate::start(
        &env.config,
        Options {
            extra: auth_extra.to_string(),
            port,
            ..Options::default()
        },
    )
    .await
    .expect("slotgate starts");
    (env, gw)
}

pub fn store(gw: &Slotgate) -> Store {
    Store::open(&gw.paths.data_dir.join("identity.db")).unwrap()
}

/// A browser-like client with its own cookie jar (read back for WebSockets).
pub fn browser() -> (reqwest::Client, Arc<reqwest::cookie::Jar>) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let c = reqwest::Client::builder()
        .cookie_provider(Arc::clone(&jar))
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(T)
        .build()
        .unwrap();
    (c, jar)
}

pub fn session_cookie(gw: &Slotgate, jar: &reqwest::cookie::Jar) -> Option<String> {
    use reqwest::cookie::CookieStore;
    let url = reqwest::Url::parse(&format!("{}/slot/x/", gw.base_url())).unwrap();
    let all = jar.cookies(&url)?;
    all.to_str()
        .ok()?
        .split("; ")
        .find(|c| c.starts_with("slotgate_session="))
        .map(str::to_string)
}

pub async fn login(
    gw: &Slotgate,
    c: &reqwest::Client,
    user: &str,
    password: &str,
    next: &str,
) -> reqwest::Response {
    c.post(format!("{}/auth/login", gw.base_url()))
        .header("Origin", gw.base_url())
        .form(&[("user", user), ("password", password), ("next", next)])
        .send()
        .await
        .unwrap()
}

/// Add a local user and sign them in; returns the `Cookie` header value.
pub async fn user_session(gw: &Slotgate, name: &str, role: Role) -> String {
    let pw = format!("{name}-password-123");
    store(gw).add_user(name, role, Some(&pw), None).unwrap();
    let (c, jar) = browser();
    let r = login(gw, &c, name, &pw, "/").await;
    assert_eq!(r.status(), 303, "{name} signs in");
    session_cookie(gw, &jar).expect("session cookie")
}

pub async fn tty(
    gw: &Slotgate,
    slot: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<TtydClient<gateway::Stream>> {
    let stream = gw.connect().await?;
    gateway::tty_over(
        stream,
        &gw.authority(),
        &format!("/slot/{slot}/ws"),
        headers,
    )
    .await
}

/// Status of a refused WebSocket upgrade.
pub async fn ws_status(gw: &Slotgate, slot: &str, headers: &[(&str, &str)]) -> u16 {
    let mut all = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Protocol", "tty"),
    ];
    all.extend_from_slice(headers);
    let mut s = gw.connect().await.unwrap();
    gateway::send_request(&mut s, "GET", &format!("/slot/{slot}/ws"), &all)
        .await
        .unwrap();
    gateway::read_response(&mut s, false).await.unwrap().status
}

pub fn one_time_password(gw: &Slotgate) -> String {
    let log = gw.stderr();
    let at = log
        .find("one-time password ")
        .unwrap_or_else(|| panic!("no bootstrap password in the log:\n{log}"));
    log[at + "one-time password ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
