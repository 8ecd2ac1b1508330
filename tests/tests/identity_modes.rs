//! The other identity modes and session mechanics end to end, with a real
//! slotgate, slotctl, ttyd and tmux: trusted-header sign-in (only from the
//! configured source address), generic OAuth2 against a real provider
//! (oidc-provider's plain OAuth 2.0 endpoints, no discovery), RP-initiated
//! logout with `id_token_hint`, "log out everywhere", and the sliding
//! renewal of session cookies.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use identity::access::Role;
use identity::session::{Claims, Keys};
use serde_json::json;
use slotgate_tests::accounts::{
    browser, close_code, login, login_page, session_cookie, stack, store, tty, user_session,
    ws_status, ws_status_from, T,
};
use slotgate_tests::gateway::{self, free_port, Slotgate};
use slotgate_tests::oidc::{self, drive_login, OpenIdProvider};

#[tokio::test]
async fn trusted_headers_count_only_from_trusted_sources() {
    let extra = "auth = [\"local\", \"header\"]\n[slotgate.header]\n\
                 user_header = \"X-Forwarded-User\"\ngroups_header = \"X-Forwarded-Groups\"\n\
                 trusted_sources = [\"127.0.0.2\"]\nallowed_groups = [\"eng\"]\nadmin_groups = [\"ops\"]\n";
    let (env, gw) = stack(extra, None).await;
    let proxy: IpAddr = "127.0.0.2".parse().unwrap();
    let elsewhere: IpAddr = "127.0.0.3".parse().unwrap();
    let carol = [
        ("X-Forwarded-User", "carol"),
        ("X-Forwarded-Groups", "eng,dev"),
    ];

    // From the SSO proxy's address: carol is signed in, her default slot is
    // created on first visit, and her keystrokes reach her shell.
    let stream = gw.connect_from(proxy).await.unwrap();
    let mut t = gateway::tty_over(stream, &gw.authority(), "/slot/carol/ws", &carol)
        .await
        .expect("carol's terminal opens through the trusted proxy");
    t.input("echo header-$((6*7))\r").await.unwrap();
    t.expect("header-42", T).await.unwrap();
    let slot = env
        .client()
        .get(&slotapi::SlotId::new("carol").unwrap())
        .await
        .unwrap();
    assert_eq!(slot.owner.as_str(), "carol");

    // The same headers from any other address assert nothing.
    assert_eq!(
        ws_status_from(&gw, Some(elsewhere), "carol", &carol).await,
        401
    );
    assert_eq!(ws_status(&gw, "carol", &carol).await, 401);
    let mut s = gw.connect_from(elsewhere).await.unwrap();
    gateway::send_request(
        &mut s,
        "GET",
        "/slot/carol/",
        &[
            ("X-Forwarded-User", "carol"),
            ("Accept", "text/html"),
            ("Connection", "close"),
        ],
    )
    .await
    .unwrap();
    let page = gateway::read_response(&mut s, false).await.unwrap();
    assert_eq!(
        page.status, 302,
        "untrusted headers send the browser to sign-in"
    );
    assert!(page.header("location").unwrap().starts_with("/auth/login"));

    // From the trusted address: a user outside the allowed groups is
    // refused, and a signed-in user still cannot open someone else's slot.
    let sam = [("X-Forwarded-User", "sam"), ("X-Forwarded-Groups", "sales")];
    assert_eq!(ws_status_from(&gw, Some(proxy), "sam", &sam).await, 403);
    env.create_online("dave", "shell").await;
    assert_eq!(ws_status_from(&gw, Some(proxy), "dave", &carol).await, 403);

    // The access log names the user the header asserted.
    drop(t);
    gw.wait_for_log_line(Duration::from_secs(10), |l| {
        l["kind"] == "ws" && l["user"] == "carol" && l["status"] == 101
    })
    .await
    .expect("carol's terminal session is logged under her name");
}

#[tokio::test]
async fn generic_oauth2_sign_in_with_userinfo_mapping() {
    let port = free_port();
    let redirect = format!("https://127.0.0.1:{port}/auth/oauth2/op/callback");
    let op = OpenIdProvider::start(
        json!([{ "client_id": "slotgate-oauth", "client_secret": "oauth-secret-0123456789",
                 "redirect_uris": [redirect] }]),
        json!({
            "alice": { "email": "alice@example.com", "name": "Alice A", "groups": ["eng"] },
            "root": { "email": "root@example.com", "groups": ["eng", "ops"] },
            "sam": { "email": "sam@example.com", "groups": ["sales"] }
        }),
    );
    // Plain OAuth 2.0: endpoints configured by hand, identity from the
    // userinfo answer's fields; the provider's ID token is not used.
    let extra = format!(
        "auth = [\"local\", \"oauth2\"]\n[[slotgate.oauth2]]\nname = \"op\"\ndisplay_name = \"Team Git\"\n\
         auth_url = \"{i}/auth\"\ntoken_url = \"{i}/token\"\nuserinfo_url = \"{i}/me\"\n\
         client_id = \"slotgate-oauth\"\nclient_secret = \"oauth-secret-0123456789\"\n\
         redirect_uri = \"{redirect}\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\n\
         username_field = \"preferred_username\"\ndisplay_name_field = \"name\"\n\
         groups_field = \"groups\"\nallowed_groups = [\"eng\"]\nadmin_groups = [\"ops\"]\n",
        i = op.issuer
    );
    let (_env, gw) = stack(&extra, Some(port)).await;

    let (c, jar) = browser();
    let page = login_page(&gw, &c).await;
    assert!(page.contains("Sign in with Team Git"), "{page}");

    let sign_in = |c: reqwest::Client, who: &'static str| {
        let base = gw.base_url();
        let redirect = redirect.clone();
        let issuer = op.issuer.clone();
        async move {
            let start = c
                .get(format!("{base}/auth/oauth2/op/start?next=/slot/{who}/"))
                .send()
                .await
                .unwrap();
            assert_eq!(start.status(), 302);
            let auth_url = start.headers()["location"].to_str().unwrap().to_string();
            assert!(
                auth_url.starts_with(&format!("{issuer}/auth?")),
                "{auth_url}"
            );
            assert!(auth_url.contains("code_challenge="), "PKCE: {auth_url}");
            let back = drive_login(&c, &auth_url, who, &redirect).await.unwrap();
            (c.get(&back).send().await.unwrap(), back)
        }
    };

    let (done, back) = sign_in(c.clone(), "alice").await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/slot/alice/");
    let cookie = session_cookie(&gw, &jar).expect("session cookie");
    let user = store(&gw)
        .user("alice")
        .unwrap()
        .expect("alice was created");
    assert_eq!(user.role, Role::User);
    assert_eq!(user.email.as_deref(), Some("alice@example.com"));
    assert_eq!(user.display_name.as_deref(), Some("Alice A"));
    // The callback is single use.
    assert_eq!(c.get(&back).send().await.unwrap().status(), 401);
    let mut t = tty(&gw, "alice", &[("Cookie", &cookie)]).await.unwrap();
    t.input("echo oauth-$((40+2))\r").await.unwrap();
    t.expect("oauth-42", T).await.unwrap();

    // Group mapping gives admins their role; a role an administrator set
    // by hand survives the next provider sign-in.
    let (root, _) = sign_in(browser().0, "root").await;
    assert_eq!(root.status(), 303);
    assert_eq!(store(&gw).user("root").unwrap().unwrap().role, Role::Admin);
    store(&gw).set_role("root", Role::Viewer).unwrap();
    let (root, _) = sign_in(browser().0, "root").await;
    assert_eq!(root.status(), 303);
    assert_eq!(store(&gw).user("root").unwrap().unwrap().role, Role::Viewer);
    store(&gw).unpin_role("root").unwrap();
    let (root, _) = sign_in(browser().0, "root").await;
    assert_eq!(root.status(), 303);
    assert_eq!(store(&gw).user("root").unwrap().unwrap().role, Role::Admin);

    // Outside the allowed groups: refused, no session.
    let (c2, jar2) = browser();
    let (r, _) = sign_in(c2, "sam").await;
    assert_eq!(r.status(), 403);
    assert!(session_cookie(&gw, &jar2).is_none());
    assert!(store(&gw).user("sam").unwrap().is_none());

    // A callback with a forged state.
    let r = c
        .get(format!(
            "{}/auth/oauth2/op/callback?code=x&state=forged",
            gw.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn oidc_logout_hints_the_provider_with_the_id_token() {
    let port = free_port();
    let base = format!("https://127.0.0.1:{port}");
    let redirect = format!("{base}/auth/oidc/op/callback");
    let (op, extra) = oidc::for_gateway(port, json!({ "alice": { "groups": ["eng"] } }));
    let (_env, gw) = stack(&extra, Some(port)).await;
    let (c, jar) = browser();
    let start = c
        .get(format!("{}/auth/oidc/op/start", gw.base_url()))
        .send()
        .await
        .unwrap();
    let auth_url = start.headers()["location"].to_str().unwrap().to_string();
    let back = drive_login(&c, &auth_url, "alice", &redirect)
        .await
        .unwrap();
    assert_eq!(c.get(&back).send().await.unwrap().status(), 303);
    assert!(session_cookie(&gw, &jar).is_some());

    // Without a same-origin Origin the logout is refused and changes nothing.
    let r = c
        .post(format!("{}/auth/logout", gw.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(session_cookie(&gw, &jar).is_some());

    let r = c
        .post(format!("{}/auth/logout", gw.base_url()))
        .header("Origin", gw.base_url())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(to.as_str().starts_with(&op.issuer), "{to}");
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(q["post_logout_redirect_uri"], format!("{base}/auth/login"));
    // The hint is the ID token the provider issued for alice's sign-in.
    let hint = q.get("id_token_hint").expect("id_token_hint");
    let payload = hint.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["iss"], op.issuer.as_str());
    assert_eq!(claims["aud"], "slotgate");
    // The provider accepts it: its logout page answers (a confirmation
    // form), not an error about the hint.
    let confirm = c.get(to.clone()).send().await.unwrap();
    assert!(confirm.status().is_success(), "{}", confirm.status());
}

#[tokio::test]
async fn log_out_everywhere_ends_every_session_and_terminal() {
    let (env, gw) = stack("auth = \"local\"\n", None).await;
    env.create_online("alice", "shell").await;
    store(&gw)
        .add_user("alice", Role::User, Some("alice-password-123"), None)
        .unwrap();
    let other = user_session(&gw, "bob", Role::User).await;
    let (c1, jar1) = browser();
    let (c2, jar2) = browser();
    for c in [&c1, &c2] {
        assert_eq!(
            login(&gw, c, "alice", "alice-password-123", "/")
                .await
                .status(),
            303
        );
    }
    let (k1, k2) = (
        session_cookie(&gw, &jar1).unwrap(),
        session_cookie(&gw, &jar2).unwrap(),
    );
    let mut terminals = Vec::new();
    for k in [&k1, &k2] {
        let mut t = tty(&gw, "alice", &[("Cookie", k)]).await.unwrap();
        t.input("echo both-$((1+1))\r").await.unwrap();
        t.expect("both-2", T).await.unwrap();
        terminals.push(t.into_inner());
    }

    // A cross-site form cannot do it.
    let r = c1
        .post(format!("{}/auth/logout-all", gw.base_url()))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_ne!(ws_status(&gw, "alice", &[("Cookie", &k2)]).await, 401);

    let r = c1
        .post(format!("{}/auth/logout-all", gw.base_url()))
        .header("Origin", gw.base_url())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    for ws in terminals.iter_mut() {
        assert_eq!(close_code(ws, Duration::from_secs(4)).await, Some(4001));
    }
    for k in [&k1, &k2] {
        assert_eq!(ws_status(&gw, "alice", &[("Cookie", k)]).await, 401);
    }
    let sessions = store(&gw).sessions(Some("alice")).unwrap();
    assert!(!sessions.is_empty() && sessions.iter().all(|s| s.revoked));
    // Someone else's session is untouched.
    assert!(store(&gw)
        .sessions(Some("bob"))
        .unwrap()
        .iter()
        .all(|s| !s.revoked));
    assert_ne!(ws_status(&gw, "bob", &[("Cookie", &other)]).await, 401);
}

#[tokio::test]
async fn session_cookies_are_renewed_while_the_session_lives() {
    let (env, gw) = stack("auth = \"local\"\n", None).await;
    env.create_online("alice", "shell").await;
    let cookie = user_session(&gw, "alice", Role::User).await;
    let keys = Keys::load_or_create(&gw.paths.data_dir.join("identity/session-keys.json")).unwrap();
    let token = cookie.trim_start_matches("slotgate_session=");
    let issued = keys
        .verify(token)
        .expect("the gateway's own token verifies");
    let ttl = issued.exp - issued.iat;

    // A request with a fresh token gets no new cookie.
    let fetch = |cookie: String| {
        let url = format!("{}/slot/alice/token", gw.base_url());
        async move {
            browser()
                .0
                .get(url)
                .header("Cookie", cookie)
                .send()
                .await
                .unwrap()
        }
    };
    let r = fetch(cookie.clone()).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());

    // Past half its lifetime, or already expired: the same live session
    // gets a fresh token on the next request, with a new expiry.
    let renewed = |r: &reqwest::Response| -> Claims {
        let set = r.headers()["set-cookie"].to_str().unwrap();
        let t = set
            .trim_start_matches("slotgate_session=")
            .split(';')
            .next()
            .unwrap();
        keys.verify(t).expect("the renewed token verifies")
    };
    for age in [ttl / 2 + 10, ttl + 60] {
        let mut old = issued.clone();
        old.iat -= age;
        old.exp -= age;
        let r = fetch(format!("slotgate_session={}", keys.sign(&old))).await;
        assert_eq!(r.status(), 200, "a token {age} s old");
        let fresh = renewed(&r);
        assert_eq!(
            (fresh.sub.as_str(), fresh.sid.as_str()),
            ("alice", issued.sid.as_str())
        );
        assert!(fresh.exp >= issued.exp, "{} < {}", fresh.exp, issued.exp);
    }

    // A role change reaches the renewed token.
    store(&gw).set_role("alice", Role::Viewer).unwrap();
    let mut old = issued.clone();
    old.iat -= ttl;
    old.exp -= ttl;
    let r = fetch(format!("slotgate_session={}", keys.sign(&old))).await;
    assert_eq!(renewed(&r).role, Role::Viewer);
    store(&gw).set_role("alice", Role::User).unwrap();

    // Once the session is revoked, an old token is not renewed.
    store(&gw).revoke_session(&issued.sid).unwrap();
    let r = fetch(format!("slotgate_session={}", keys.sign(&old))).await;
    assert_eq!(r.status(), 401);
    assert!(r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| !v.contains("Max-Age=") || v.contains("Max-Age=0")));
}

#[tokio::test]
async fn demo_is_watchable_without_an_account_and_teams_share_a_slot() {
    let (env, gw) = stack("auth = \"local\"\ndemo_slot = \"demo\"\n", None).await;
    env.create_online("demo", "shell").await;
    let demo_owner = user_session(&gw, "demo", Role::User).await;
    let alice = user_session(&gw, "alice", Role::User).await;
    let bob = user_session(&gw, "bob", Role::User).await;

    // `/demo` leads to the demo slot; anyone may watch it, nobody anonymous
    // may type, and no other slot opens without a session.
    let r = gw.get("/demo").await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/slot/demo/"));
    let origin = gw.base_url();
    let mut owner = tty(&gw, "demo", &[("Cookie", &demo_owner), ("Origin", &origin)])
        .await
        .unwrap();
    let mut watcher = gw
        .tty("demo")
        .await
        .expect("an anonymous visitor watches the demo");
    watcher.input("echo ANON-$((2+2))\r").await.unwrap();
    owner.input("echo SHOW-$((3+4))\r").await.unwrap();
    owner.expect("SHOW-7", T).await.unwrap();
    watcher.expect("SHOW-7", T).await.unwrap();
    owner.drain_for(Duration::from_millis(1500)).await;
    assert!(
        !owner.screen.contains("ANON"),
        "anonymous input reached the demo shell: {}",
        owner.screen
    );
    env.create_online("secret", "shell").await;
    assert_eq!(ws_status(&gw, "secret", &[]).await, 401);
    watcher.close().await;
    gw.wait_for_log_line(T, |l| {
        l["kind"] == "ws"
            && l["slot"] == "demo"
            && l["user"].is_null()
            && l["access"] == "read_only"
    })
    .await
    .expect("the anonymous watch is logged as read-only");

    // `/team/ops` is the team's slot `team-ops`: members type, others don't
    // get in, and nobody's first visit creates it.
    let r = gw
        .request("GET", "/team/ops", &[("Cookie", &alice)])
        .await
        .unwrap();
    // (Unknown and not-yours look the same to a non-admin.)
    assert_eq!(r.status, 403, "no team slot yet: {}", r.text());
    assert!(env
        .client()
        .get(&slotapi::SlotId::new("team-ops").unwrap())
        .await
        .is_err());
    env.slotctl(&[
        "create",
        "team-ops",
        "--template",
        "shell",
        "--owner",
        "admin",
    ]);
    env.wait_status("team-ops", slotapi::SlotStatus::Online, T)
        .await;
    store(&gw).grant("team-ops", "alice", "member").unwrap();
    let r = gw
        .request("GET", "/team/ops", &[("Cookie", &alice)])
        .await
        .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/slot/team-ops/"));
    let mut t = tty(&gw, "team-ops", &[("Cookie", &alice)]).await.unwrap();
    t.input("echo team-$((5*5))\r").await.unwrap();
    t.expect("team-25", T).await.unwrap();
    let r = gw
        .request("GET", "/team/ops", &[("Cookie", &bob)])
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(ws_status(&gw, "team-ops", &[("Cookie", &bob)]).await, 403);
}

#[tokio::test]
async fn without_a_demo_slot_demo_is_not_found() {
    let (env, gw) = stack("auth = \"local\"\n", None).await;
    env.create_online("demo", "shell").await;
    assert_eq!(gw.get("/demo").await.unwrap().status, 404);
    assert_eq!(ws_status(&gw, "demo", &[]).await, 401);
}

/// The `data-…` attribute `name` of the page's `<main>`.
fn main_attr(html: &str, name: &str) -> Option<String> {
    let at = html.find("<main")?;
    let tag = &html[at..at + html[at..].find('>')?];
    let key = format!("{name}=\"");
    let start = tag.find(&key)? + key.len();
    Some(tag[start..start + tag[start..].find('"')?].to_string())
}

#[tokio::test]
async fn framed_terminals_sign_in_through_a_popup() {
    let (env, gw) = stack("auth = \"local\"\n", None).await;
    env.create_online("alice", "shell").await;
    store(&gw)
        .add_user("alice", Role::User, Some("alice-password-123"), None)
        .unwrap();
    let bob = user_session(&gw, "bob", Role::User).await;
    let nav = |dest: &'static str| {
        [
            ("Sec-Fetch-Mode", "navigate"),
            ("Sec-Fetch-Dest", dest),
            ("Accept", "text/html"),
        ]
    };

    // Inside an iframe without a session: a sign-in page for the frame (it
    // tells the host page and opens the popup), not the sign-in form, which
    // providers and cookie rules would break in a frame. At top level the
    // browser still goes to the sign-in form.
    let framed = gw
        .request("GET", "/slot/alice/", &nav("iframe"))
        .await
        .unwrap();
    assert_eq!(framed.status, 401);
    let page = framed.text();
    assert_eq!(main_attr(&page, "data-slot").as_deref(), Some("alice"));
    assert!(page.contains("<script src=\"/auth/frame.js\""), "{page}");
    let top = gw
        .request("GET", "/slot/alice/", &nav("document"))
        .await
        .unwrap();
    assert_eq!(top.status, 302);
    assert!(top
        .header("location")
        .unwrap()
        .starts_with("/auth/login?next="));
    let js = gw.get("/auth/frame.js").await.unwrap();
    assert_eq!(js.status, 200);
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.text().contains("slotgate:needs-auth"));
    assert_eq!(gw.get("/auth/other.js").await.unwrap().status, 404);

    // The popup: sign in first, then come back to it.
    let (c, _jar) = browser();
    let r = c
        .get(format!("{}/auth/popup?slot=alice", gw.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to_login = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(to_login, "/auth/login?next=%2Fauth%2Fpopup%3Fslot%3Dalice");
    let r = login(
        &gw,
        &c,
        "alice",
        "alice-password-123",
        "/auth/popup?slot=alice",
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/auth/popup?slot=alice");
    let done = c
        .get(format!("{}/auth/popup?slot=alice", gw.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(done.headers()["cache-control"], "no-store");
    let html = done.text().await.unwrap();
    let token = main_attr(&html, "data-token").expect("the popup carries a token");
    assert!(html.contains("/auth/popup.js"));

    // The frame trades the token for a partitioned cookie, once.
    let url = format!("/slot/alice/?embed={token}");
    let r = gw.request("GET", &url, &nav("iframe")).await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/slot/alice/"));
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("SameSite=None") && cookie.contains("Partitioned"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let mut t = tty(&gw, "alice", &[("Cookie", &session)]).await.unwrap();
    t.input("echo framed-$((9*9))\r").await.unwrap();
    t.expect("framed-81", T).await.unwrap();
    assert_eq!(
        gw.request("GET", &url, &nav("iframe"))
            .await
            .unwrap()
            .status,
        401
    );

    // A token is only as good as its holder's own access: bob's popup for
    // alice's slot signs bob in, and bob still cannot open alice's slot.
    let r = gw
        .request("GET", "/auth/popup?slot=alice", &[("Cookie", &bob)])
        .await
        .unwrap();
    let bobs = main_attr(&r.text(), "data-token").unwrap();
    let r = gw
        .request("GET", &format!("/slot/alice/?embed={bobs}"), &nav("iframe"))
        .await
        .unwrap();
    let bob_framed = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        ws_status(&gw, "alice", &[("Cookie", &bob_framed)]).await,
        403
    );

    // A bad slot name is refused.
    let r = gw
        .request("GET", "/auth/popup?slot=..%2F", &[("Cookie", &bob)])
        .await
        .unwrap();
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    // slotgate in plain HTTP behind a TLS-terminating proxy at 127.0.0.2.
    let mut env = slotgate_tests::TestEnv::new(&[], "");
    env.start_daemon().await;
    let gw = Slotgate::start(
        &env.config,
        slotgate_tests::gateway::Options {
            tls: false,
            extra: "auth = \"local\"\ntrusted_proxies = [\"127.0.0.2\"]\n".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    store(&gw)
        .add_user("alice", Role::User, Some("alice-password-123"), None)
        .unwrap();
    let public = format!("https://{}", gw.authority());
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let sign_in = |c: reqwest::Client| {
        let (url, public) = (format!("{}/auth/login", gw.base_url()), public.clone());
        async move {
            c.post(url)
                .header("Origin", public)
                .header("X-Forwarded-For", "198.51.100.1, 203.0.113.9")
                .header("X-Forwarded-Proto", "https")
                .form(&[
                    ("user", "alice"),
                    ("password", "alice-password-123"),
                    ("next", "/"),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Through the proxy: the browser's https Origin is slotgate's own, and
    // the log names the real client and scheme.
    assert_eq!(sign_in(from("127.0.0.2")).await, 303);
    // Anyone else claiming the same is not believed: the Origin is foreign
    // to a plain-HTTP gateway, so the form is refused as cross-site.
    assert_eq!(sign_in(from("127.0.0.3")).await, 403);
    let lines = gw.access_log_lines();
    let refused = gw
        .wait_for_log_line(T, |l| l["route"] == "auth" && l["status"] == 403)
        .await
        .unwrap();
    let ok = gw
        .wait_for_log_line(T, |l| l["route"] == "auth" && l["status"] == 303)
        .await
        .unwrap();
    assert_eq!(
        (ok["client_ip"].as_str(), ok["tls"].as_bool()),
        (Some("203.0.113.9"), Some(true)),
        "{lines:?}"
    );
    assert_eq!(
        (refused["client_ip"].as_str(), refused["tls"].as_bool()),
        (Some("127.0.0.3"), Some(false))
    );
}

#[tokio::test]
async fn slot_processes_see_their_owners_identity() {
    let (env, gw) = stack("auth = \"local\"\n", None).await;
    store(&gw)
        .upsert_external(
            "carol",
            Role::User,
            Some("carol@example.com"),
            Some("Carol C"),
            &["eng".into(), "ops".into()],
        )
        .unwrap();
    env.create_online("carol", "shell").await;
    env.create_online("dave", "shell").await;
    let mut t = slotgate_tests::ttyd::connect_unix(&env.slot_socket("carol"), "carol", "t")
        .await
        .unwrap();
    t.input("echo \"<$SLOTGATE_USER|$SLOTGATE_USER_EMAIL|$SLOTGATE_USER_GROUPS|$SLOTGATE_USER_NAME|$SLOTGATE_USER_ROLE>\"\r")
        .await
        .unwrap();
    t.expect("<carol|carol@example.com|eng,ops|Carol C|user>", T)
        .await
        .unwrap();
    // Without an account: the name only.
    let mut t = slotgate_tests::ttyd::connect_unix(&env.slot_socket("dave"), "dave", "t")
        .await
        .unwrap();
    t.input("echo \"<$SLOTGATE_USER|${SLOTGATE_USER_EMAIL-unset}>\"\r")
        .await
        .unwrap();
    t.expect("<dave|unset>", T).await.unwrap();
}
