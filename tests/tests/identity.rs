//! Identity and access end to end: a real slotgate with sign-in in front of
//! a real slotctl daemon, real ttyd and tmux, and a real OpenID Provider
//! (oidc-provider) on loopback. Every refusal asserts its exact status.

use std::time::Duration;

use base64::Engine;
use identity::access::Role;
use identity::session::{Claims, Keys};
use serde_json::json;
use slotgate_tests::accounts::{
    browser, close_code, login, login_page, one_time_password, session_cookie, stack, store, tty,
    user_session, ws_status, T,
};
use slotgate_tests::gateway::free_port;
use slotgate_tests::oidc::{self, drive_login};

#[tokio::test]
async fn bootstrap_admin_changes_password_then_uses_a_terminal() {
    let (_env, gw) = stack("auth = \"local\"\n", None).await;
    let otp = one_time_password(&gw);
    assert_eq!(
        gw.stderr().matches(&otp).count(),
        1,
        "the one-time password is printed exactly once"
    );
    let (c, jar) = browser();

    // Wrong password: refused, logged without the password.
    let r = login(&gw, &c, "admin", "not-the-password-xyz", "/").await;
    assert_eq!(r.status(), 401);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Wrong user name or password"));
    let log = gw.stderr();
    assert!(log.contains("sign-in failed"), "{log}");
    assert!(
        !log.contains("not-the-password-xyz"),
        "password leaked: {log}"
    );

    // The one-time password leads to the password page, not to a session.
    let r = login(&gw, &c, "admin", &otp, "/slot/admin/").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Choose a new password"));
    assert!(session_cookie(&gw, &jar).is_none());

    // A cross-site form post is refused.
    let r = c
        .post(format!("{}/auth/password", gw.base_url()))
        .header("Origin", "https://evil.example")
        .form(&[
            ("password", "a-new-password-1"),
            ("confirm", "a-new-password-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let r = c
        .post(format!("{}/auth/password", gw.base_url()))
        .header("Origin", gw.base_url())
        .form(&[
            ("password", "a-new-password-1"),
            ("confirm", "a-new-password-1"),
            ("next", "/slot/admin/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/slot/admin/");
    let cookie = session_cookie(&gw, &jar).expect("session after the change");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Secure"),
        "{set}"
    );

    // The old password no longer works; the new one does.
    let (c2, _) = browser();
    assert_eq!(login(&gw, &c2, "admin", &otp, "/").await.status(), 401);
    assert_eq!(
        login(&gw, &c2, "admin", "a-new-password-1", "/")
            .await
            .status(),
        303
    );

    // The admin's own slot is created on first visit; type in it.
    let mut t = tty(&gw, "admin", &[("Cookie", &cookie)]).await.unwrap();
    t.input("echo adm-$((20+22))\r").await.unwrap();
    t.expect("adm-42", T).await.unwrap();
}

#[tokio::test]
async fn slots_are_private_viewers_cannot_type_and_forgeries_fail() {
    let (env, gw) = stack("auth = \"local\"\n", None).await;
    env.create_online("alice", "shell").await;
    let alice = user_session(&gw, "alice", Role::User).await;
    let bob = user_session(&gw, "bob", Role::User).await;
    let vic = user_session(&gw, "vic", Role::User).await;
    store(&gw).grant("alice", "vic", "viewer").unwrap();
    let (c, _) = browser();
    let get = |path: &str, cookie: Option<&str>| {
        let mut r = c
            .get(format!("{}{path}", gw.base_url()))
            .header("Accept", "text/html");
        if let Some(ck) = cookie {
            r = r.header("Cookie", ck);
        }
        r.send()
    };

    // Own slot: 200; someone else's: 403; nobody: redirect to sign-in.
    assert_eq!(
        get("/slot/alice/", Some(&alice)).await.unwrap().status(),
        200
    );
    assert_eq!(get("/slot/alice/", Some(&bob)).await.unwrap().status(), 403);
    assert_eq!(ws_status(&gw, "alice", &[("Cookie", &bob)]).await, 403);
    let r = get("/slot/alice/", None).await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "/auth/login?next=%2Fslot%2Falice%2F"
    );
    assert_eq!(ws_status(&gw, "alice", &[]).await, 401);

    // Forged, alg-none and expired session cookies.
    let token = alice.trim_start_matches("slotgate_session=");
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = "bob".into();
    let forged = format!(
        "slotgate_session={}.{}.{}",
        parts[0],
        b64.encode(payload.to_string()),
        parts[2]
    );
    let none = format!(
        "slotgate_session={}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let keys = Keys::load_or_create(&gw.paths.data_dir.join("identity/session-keys.json")).unwrap();
    let mut old = Claims::new("alice", Role::User, "no-such-session", "local", 60);
    old.exp = old.iat - 3600;
    let expired = format!("slotgate_session={}", keys.sign(&old));
    for bad in [&forged, &none, &expired] {
        let r = get("/slot/alice/", Some(bad)).await.unwrap();
        assert_eq!(r.status(), 302, "{bad}");
        assert_eq!(ws_status(&gw, "alice", &[("Cookie", bad)]).await, 401);
    }

    // Spoofed identity headers from the client are ignored.
    let r = c
        .get(format!("{}/slot/alice/token", gw.base_url()))
        .header("X-Slotgate-Auth", "alice")
        .header("X-Forwarded-User", "alice")
        .header("Remote-User", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A foreign Origin on the WebSocket, even with a valid session.
    assert_eq!(
        ws_status(
            &gw,
            "alice",
            &[("Cookie", &alice), ("Origin", "https://evil.example")]
        )
        .await,
        403
    );

    // The viewer watches; their keystrokes never reach the shell.
    let origin = gw.base_url();
    let mut owner = tty(&gw, "alice", &[("Cookie", &alice), ("Origin", &origin)])
        .await
        .unwrap();
    let mut viewer = tty(&gw, "alice", &[("Cookie", &vic)]).await.unwrap();
    viewer.input("echo VIEWER-$((2+2))\r").await.unwrap();
    viewer.resize(40, 10).await.unwrap();
    owner.input("echo OWNER-$((3+4))\r").await.unwrap();
    owner.expect("OWNER-7", T).await.unwrap();
    viewer.expect("OWNER-7", T).await.unwrap();
    owner.drain_for(Duration::from_millis(1500)).await;
    assert!(
        !owner.screen.contains("VIEWER"),
        "viewer input reached the shell: {}",
        owner.screen
    );
    viewer.close().await;
    gw.wait_for_log_line(T, |l| {
        l["kind"] == "ws" && l["user"] == "vic" && l["access"] == "read_only"
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn open_redirects_fall_back_and_revocation_closes_websockets() {
    let (env, gw) = stack("auth = \"local\"\n", None).await;
    env.create_online("alice", "shell").await;
    store(&gw)
        .add_user("alice", Role::User, Some("alice-password-123"), None)
        .unwrap();
    let (c, jar) = browser();
    for evil in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/%2F%2Fevil.example",
    ] {
        let r = login(&gw, &c, "alice", "alice-password-123", evil).await;
        assert_eq!(r.status(), 303, "{evil}");
        assert_eq!(r.headers()["location"], "/", "{evil}");
    }
    let page = c
        .get(format!("{}/auth/login?next=//evil.example", gw.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("name=\"next\" value=\"/\""), "{page}");

    // Sign in, open a terminal, sign out: the terminal is closed with 4001.
    let r = login(&gw, &c, "alice", "alice-password-123", "/slot/alice/").await;
    assert_eq!(r.status(), 303);
    let cookie = session_cookie(&gw, &jar).unwrap();
    let mut t = tty(&gw, "alice", &[("Cookie", &cookie)]).await.unwrap();
    t.input("echo live-$((1+1))\r").await.unwrap();
    t.expect("live-2", T).await.unwrap();
    let r = c
        .post(format!("{}/auth/logout", gw.base_url()))
        .header("Origin", gw.base_url())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let mut ws = t.into_inner();
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(3)).await,
        Some(4001)
    );
    // The revoked cookie no longer opens anything.
    assert_eq!(ws_status(&gw, "alice", &[("Cookie", &cookie)]).await, 401);

    // Revocation made outside the gateway (an admin disabling the user)
    // closes open terminals too.
    let r = login(&gw, &c, "alice", "alice-password-123", "/").await;
    assert_eq!(r.status(), 303);
    let cookie = session_cookie(&gw, &jar).unwrap();
    let mut t = tty(&gw, "alice", &[("Cookie", &cookie)]).await.unwrap();
    t.input("echo again-$((2+1))\r").await.unwrap();
    t.expect("again-3", T).await.unwrap();
    store(&gw).set_disabled("alice", true).unwrap();
    assert!(t.closed_within(Duration::from_secs(4)).await);
    let r = login(&gw, &c, "alice", "alice-password-123", "/").await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn oidc_sign_in_through_the_gateway() {
    let port = free_port();
    let redirect = format!("https://127.0.0.1:{port}/auth/oidc/op/callback");
    let (_op, extra) = oidc::for_gateway(
        port,
        json!({
            "alice": { "email": "alice@example.com", "name": "Alice A", "groups": ["eng"] },
            "sam": { "email": "sam@example.com", "groups": ["sales"] }
        }),
    );
    let (_env, gw) = stack(&extra, Some(port)).await;

    // The sign-in page offers the provider.
    let (c, jar) = browser();
    let page = login_page(&gw, &c).await;
    assert!(page.contains("Sign in with Test IdP"), "{page}");

    let start = c
        .get(format!(
            "{}/auth/oidc/op/start?next=/slot/alice/",
            gw.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 302);
    let auth_url = start.headers()["location"].to_str().unwrap().to_string();
    let back = drive_login(&c, &auth_url, "alice", &redirect)
        .await
        .unwrap();
    let done = c.get(&back).send().await.unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/slot/alice/");
    let cookie = session_cookie(&gw, &jar).expect("session cookie");

    // The callback is single use.
    let replay = c.get(&back).send().await.unwrap();
    assert_eq!(replay.status(), 401);

    // alice's default slot is created on first visit; use it.
    let mut t = tty(&gw, "alice", &[("Cookie", &cookie)]).await.unwrap();
    t.input("echo oidc-$((40+2))\r").await.unwrap();
    t.expect("oidc-42", T).await.unwrap();

    // A user outside the allowed groups.
    let (c2, jar2) = browser();
    let start = c2
        .get(format!("{}/auth/oidc/op/start", gw.base_url()))
        .send()
        .await
        .unwrap();
    let auth_url = start.headers()["location"].to_str().unwrap().to_string();
    let back = drive_login(&c2, &auth_url, "sam", &redirect).await.unwrap();
    let r = c2.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(session_cookie(&gw, &jar2).is_none());

    // A callback with a forged state.
    let r = c2
        .get(format!(
            "{}/auth/oidc/op/callback?code=x&state=forged",
            gw.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn embed_tokens_are_minted_by_service_tokens_and_used_once() {
    let host = "https://host.example";
    let (env, gw) = stack(
        &format!("auth = \"local\"\nframe_ancestors = [\"'self'\", \"{host}\"]\n"),
        None,
    )
    .await;
    env.create_online("ella", "shell").await;
    let st = store(&gw);
    st.add_user("ella", Role::User, Some("ella-password-123"), None)
        .unwrap();
    st.add_user("svc", Role::Admin, None, None).unwrap();
    let (_, service) = st
        .create_api_token("svc", "host app", &["embed".into()], None)
        .unwrap();
    let (_, no_scope) = st
        .create_api_token("svc", "other", &["read".into()], None)
        .unwrap();

    let (c, jar) = browser();
    let mint = |bearer: Option<String>, body: serde_json::Value| {
        let c = c.clone();
        let url = format!("{}/api/embed-tokens", gw.base_url());
        async move {
            let mut r = c.post(url).json(&body);
            if let Some(b) = bearer {
                r = r.header("Authorization", format!("Bearer {b}"));
            }
            r.send().await.unwrap()
        }
    };
    let body = serde_json::json!({"user": "ella", "slot": "ella", "origin": host});

    // Refusals: no token, a token without the scope, a foreign origin.
    assert_eq!(mint(None, body.clone()).await.status(), 401);
    assert_eq!(
        mint(Some("sgt_bogus_token".into()), body.clone())
            .await
            .status(),
        401
    );
    assert_eq!(mint(Some(no_scope), body.clone()).await.status(), 403);
    let foreign =
        serde_json::json!({"user": "ella", "slot": "ella", "origin": "https://evil.example"});
    assert_eq!(mint(Some(service.clone()), foreign).await.status(), 400);

    // A good request: a single-use link.
    let r = mint(Some(service.clone()), body.clone()).await;
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    let url = v["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("/slot/ella/?embed="), "{url}");

    // The iframe opens it: a partitioned cross-site cookie and a redirect
    // to the clean URL.
    let r = c
        .get(format!("{}{url}", gw.base_url()))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    assert_eq!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .trim_start_matches(&gw.base_url()),
        "/slot/ella/"
    );
    let set_cookie: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = set_cookie
        .iter()
        .find(|c| c.starts_with("slotgate_session="))
        .expect("session cookie");
    assert!(
        session.contains("SameSite=None")
            && session.contains("Secure")
            && session.contains("Partitioned"),
        "{session}"
    );
    let cookie = session_cookie(&gw, &jar).expect("cookie kept");

    // The embedded session opens ella's terminal.
    let mut t = tty(&gw, "ella", &[("Cookie", &cookie)]).await.unwrap();
    t.input("echo EMBED-$((3*3))\r").await.unwrap();
    t.expect("EMBED-9", T).await.unwrap();

    // Replayed link: 401.
    let r = c
        .get(format!("{}{url}", gw.base_url()))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
