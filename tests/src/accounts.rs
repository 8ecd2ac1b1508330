//! Local accounts for end-to-end tests: the gateway's `identity.db`, a
//! browser-like HTTP client with a cookie jar, and signing a user in through
//! the real sign-in form.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use identity::access::Role;
use identity::store::Store;

use crate::gateway::{self, Options, Slotgate};
use crate::ttyd::TtydClient;
use crate::TestEnv;

/// The gateway's identity store (the same SQLite file it uses).
pub fn store(gw: &Slotgate) -> Store {
    Store::open(&gw.paths.data_dir.join("identity.db")).expect("identity.db opens")
}

/// A browser-like client with its own cookie jar; redirects are not
/// followed so tests see them.
pub fn browser() -> (reqwest::Client, Arc<reqwest::cookie::Jar>) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let c = reqwest::Client::builder()
        .cookie_provider(Arc::clone(&jar))
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client");
    (c, jar)
}

/// The `slotgate_session=…` cookie the jar holds for the gateway.
pub fn session_cookie(gw: &Slotgate, jar: &reqwest::cookie::Jar) -> Option<String> {
    use reqwest::cookie::CookieStore;
    let url = reqwest::Url::parse(&format!("{}/slot/x/", gw.base_url())).ok()?;
    let all = jar.cookies(&url)?;
    all.to_str()
        .ok()?
        .split("; ")
        .find(|c| c.starts_with("slotgate_session="))
        .map(str::to_string)
}

/// Post the sign-in form as the gateway's own page would.
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
        .expect("sign-in request")
}

/// The password [`user_session`] gives `name`.
pub fn password_of(name: &str) -> String {
    format!("{name}-password-123")
}

/// Add a local user and sign them in; returns the `Cookie` header value.
pub async fn user_session(gw: &Slotgate, name: &str, role: Role) -> String {
    let pw = password_of(name);
    store(gw)
        .add_user(name, role, Some(&pw), None)
        .expect("user added");
    let (c, jar) = browser();
    let r = login(gw, &c, name, &pw, "/").await;
    assert_eq!(r.status(), 303, "{name} signs in");
    session_cookie(gw, &jar).expect("session cookie")
}

/// How long one end-to-end step may take.
pub const T: Duration = Duration::from_secs(20);

/// A slotctl daemon and a slotgate with `auth_extra` in `[slotgate]`.
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

/// A ttyd terminal on `slot` through the gateway, with `headers`.
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

/// Status of a (refused) WebSocket upgrade to `slot`.
pub async fn ws_status(gw: &Slotgate, slot: &str, headers: &[(&str, &str)]) -> u16 {
    ws_status_from(gw, None, slot, headers).await
}

/// Like [`ws_status`], from a chosen loopback source address.
pub async fn ws_status_from(
    gw: &Slotgate,
    source: Option<std::net::IpAddr>,
    slot: &str,
    headers: &[(&str, &str)],
) -> u16 {
    let mut all = gateway::upgrade_headers("tty");
    all.extend_from_slice(headers);
    let mut s = match source {
        Some(ip) => gw.connect_from(ip).await.unwrap(),
        None => gw.connect().await.unwrap(),
    };
    gateway::send_request(&mut s, "GET", &format!("/slot/{slot}/ws"), &all)
        .await
        .unwrap();
    gateway::read_response(&mut s, false).await.unwrap().status
}

/// The sign-in page's HTML as `c` gets it.
pub async fn login_page(gw: &Slotgate, c: &reqwest::Client) -> String {
    c.get(format!("{}/auth/login", gw.base_url()))
        .send()
        .await
        .expect("sign-in page")
        .text()
        .await
        .expect("sign-in page body")
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

/// The close code of a terminal the gateway ends, or `None` if it just
/// dropped; panics if it stays open for `within`.
pub async fn close_code<S>(ws: &mut S, within: Duration) -> Option<u16>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => return Some(u16::from(f.code)),
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("the WebSocket stayed open for {within:?}"),
        }
    }
}
