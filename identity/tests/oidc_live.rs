//! OpenID Connect sign-in against a real OpenID Provider (oidc-provider on
//! loopback): the whole code flow with PKCE, state and nonce, and the
//! refusals a relying party must make.

use identity::access::Role;
use identity::oidc::{OidcConfig, OidcError, OidcProvider};
use serde_json::json;
use slotgate_tests::oidc::{browser, drive_login, OpenIdProvider};

const REDIRECT: &str = "https://127.0.0.1:7681/auth/oidc/op/callback";

fn provider() -> OpenIdProvider {
    OpenIdProvider::start(
        json!([{ "client_id": "slotgate", "client_secret": "test-secret-0123456789",
                 "redirect_uris": [REDIRECT],
                 "post_logout_redirect_uris": ["https://127.0.0.1:7681/"] }]),
        json!({
            "alice": { "email": "alice@example.com", "name": "Alice A", "groups": ["eng"] },
            "olga": { "email": "olga@example.com", "groups": ["eng", "ops"] },
            "sam": { "email": "sam@example.com", "groups": ["sales"] }
        }),
    )
}

fn config(issuer: &str) -> OidcConfig {
    serde_json::from_value(json!({
        "name": "op", "issuer": issuer, "client_id": "slotgate",
        "client_secret": "test-secret-0123456789", "redirect_uri": REDIRECT,
        "scopes": ["openid", "profile", "email", "groups"],
        "admin_groups": ["ops"], "allowed_groups": ["eng"]
    }))
    .unwrap()
}

fn query(url: &str, key: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn code_flow_signs_in_with_groups_and_roles() {
    let op = provider();
    let p = OidcProvider::discover(config(&op.issuer)).await.unwrap();
    let (url, pending) = p.begin("/slot/alice/").unwrap();
    assert!(
        url.contains("code_challenge_method=S256")
            && url.contains("nonce=")
            && url.contains("state="),
        "{url}"
    );
    let back = drive_login(&browser(), &url, "alice", REDIRECT)
        .await
        .unwrap();
    let user = p
        .finish(
            pending.clone(),
            &query(&back, "code"),
            &query(&back, "state"),
        )
        .await
        .unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(user.email.as_deref(), Some("alice@example.com"));
    assert_eq!(user.display_name.as_deref(), Some("Alice A"));
    assert_eq!(user.groups, vec!["eng"]);
    assert_eq!(user.role, Role::User);
    assert!(user.id_token.is_some());
    assert_eq!(pending.next, "/slot/alice/");

    // The same code again: the provider refuses a replayed code.
    let replay = p
        .finish(pending, &query(&back, "code"), &query(&back, "state"))
        .await;
    assert!(
        matches!(replay, Err(OidcError::Exchange { .. })),
        "{replay:?}"
    );

    // An admin group maps to admin.
    let (url, pending) = p.begin("/").unwrap();
    let back = drive_login(&browser(), &url, "olga", REDIRECT)
        .await
        .unwrap();
    let olga = p
        .finish(pending, &query(&back, "code"), &query(&back, "state"))
        .await
        .unwrap();
    assert_eq!(olga.role, Role::Admin);

    // RP-initiated logout is offered.
    let end = p
        .end_session_url(olga.id_token.as_deref(), "https://127.0.0.1:7681/")
        .unwrap();
    assert!(
        end.starts_with(&format!("{}/session/end", op.issuer)),
        "{end}"
    );
}

#[tokio::test]
async fn wrong_state_wrong_nonce_and_outsiders_are_refused() {
    let op = provider();
    let p = OidcProvider::discover(config(&op.issuer)).await.unwrap();

    // Wrong state: refused before the code is even exchanged.
    let (url, pending) = p.begin("/").unwrap();
    let back = drive_login(&browser(), &url, "alice", REDIRECT)
        .await
        .unwrap();
    let r = p
        .finish(pending.clone(), &query(&back, "code"), "forged-state")
        .await;
    assert!(matches!(r, Err(OidcError::State { .. })), "{r:?}");

    // A callback meant for another login attempt (its nonce differs): the
    // code is exchanged but the ID token's nonce does not match.
    let (url2, other) = p.begin("/").unwrap();
    let back2 = drive_login(&browser(), &url2, "alice", REDIRECT)
        .await
        .unwrap();
    let mut crossed = pending.clone();
    crossed.state = other.state.clone();
    // Same state check passes, PKCE verifier and nonce are the first login's.
    let r = p
        .finish(crossed, &query(&back2, "code"), &query(&back2, "state"))
        .await;
    assert!(
        matches!(
            r,
            Err(OidcError::Exchange { .. }) | Err(OidcError::IdToken { .. })
        ),
        "{r:?}"
    );

    // Someone outside the allowed groups.
    let (url, pending) = p.begin("/").unwrap();
    let back = drive_login(&browser(), &url, "sam", REDIRECT)
        .await
        .unwrap();
    let r = p
        .finish(pending, &query(&back, "code"), &query(&back, "state"))
        .await;
    assert!(matches!(r, Err(OidcError::NotAllowed { .. })), "{r:?}");
}

#[tokio::test]
async fn discovery_failure_is_a_clear_error() {
    let r = OidcProvider::discover(config("http://127.0.0.1:9")).await;
    let msg = r.err().unwrap().to_string();
    assert!(
        msg.contains("identity provider op: discovery failed"),
        "{msg}"
    );
}
