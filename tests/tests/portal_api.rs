//! slotgate's public API (`/api/`) and portal serving, end to end: a real
//! slotgate with local accounts in front of a real slotctl daemon (ttyd,
//! tmux). Every access decision is checked both ways: the refusal (exact
//! status and code) and the permission.

use std::time::Duration;

use identity::access::Role;
use serde_json::{json, Value};
use slotgate_tests::accounts::{browser, login, password_of, session_cookie, store, user_session};
use slotgate_tests::gateway::{Options, Slotgate};
use slotgate_tests::TestEnv;

async fn stack(extra: &str) -> (TestEnv, Slotgate) {
    let mut env = TestEnv::new(&[], "");
    env.start_daemon().await;
    let gw = Slotgate::start(
        &env.config,
        Options {
            extra: if extra.contains("auth =") {
                extra.to_string()
            } else {
                format!("auth = \"local\"\n{extra}")
            },
            ..Options::default()
        },
    )
    .await
    .expect("slotgate starts");
    (env, gw)
}

/// One API client: calls carry a cookie (or a bearer token) and, for
/// state-changing calls, the gateway's own `Origin` unless told otherwise.
struct Client<'a> {
    gw: &'a Slotgate,
    c: reqwest::Client,
}

enum Who<'a> {
    Nobody,
    Cookie(&'a str),
    /// A cookie, but the call comes from another site (no same-origin proof).
    CrossSite(&'a str),
    Bearer(&'a str),
}

impl Client<'_> {
    async fn call(
        &self,
        method: &str,
        path: &str,
        who: Who<'_>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.c.request(m, format!("{}{path}", self.gw.base_url()));
        match who {
            Who::Nobody => {}
            Who::Cookie(c) => {
                r = r.header("Cookie", c);
                if method != "GET" {
                    r = r.header("Origin", self.gw.base_url());
                }
            }
            Who::CrossSite(c) => {
                r = r
                    .header("Cookie", c)
                    .header("Origin", "https://evil.example");
            }
            Who::Bearer(t) => r = r.header("Authorization", format!("Bearer {t}")),
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            assert!(
                ctype.starts_with("application/json"),
                "{method} {path}: JSON expected, got {ctype}: {text}"
            );
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        (status, v)
    }
}

/// A terminal through the gateway with `cookie`.
async fn tty(
    gw: &Slotgate,
    slot: &str,
    cookie: &str,
) -> slotgate_tests::ttyd::TtydClient<slotgate_tests::gateway::Stream> {
    let stream = gw.connect().await.unwrap();
    slotgate_tests::gateway::tty_over(
        stream,
        &gw.authority(),
        &format!("/slot/{slot}/ws"),
        &[("Cookie", cookie)],
    )
    .await
    .unwrap()
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["items"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn api_identity_slots_sharing_and_csrf() {
    let (env, gw) =
        stack("[slotgate.portal]\nuser_templates = [\"shell\"]\nmax_slots_per_user = 3\n").await;
    env.create_online("alice", "shell").await;
    env.create_online("bob", "shell").await;
    let alice = user_session(&gw, "alice", Role::User).await;
    let bob = user_session(&gw, "bob", Role::User).await;
    let vic = user_session(&gw, "vic", Role::Viewer).await;
    let root = user_session(&gw, "root", Role::Admin).await;
    let api = Client {
        gw: &gw,
        c: browser().0,
    };

    // Who am I: nobody is refused with a JSON 401; a session is recognised.
    let (s, v) = api.call("GET", "/api/me", Who::Nobody, None).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthenticated")));
    let (s, v) = api.call("GET", "/api/me", Who::Cookie(&alice), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["user"].as_str(), v["role"].as_str()),
        (Some("alice"), Some("user"))
    );
    assert_eq!(v["amr"], "local");
    let (s, _) = api
        .call("GET", "/api/nothing-here", Who::Cookie(&alice), None)
        .await;
    assert_eq!(s, 404);

    // Lists: a user sees their own slot, an admin every slot, a viewer
    // nothing until a slot is shared with them.
    let (_, v) = api
        .call("GET", "/api/slots", Who::Cookie(&alice), None)
        .await;
    assert_eq!(ids(&v), ["alice"]);
    assert_eq!(v["items"][0]["access"], "owner");
    assert!(
        v["items"][0].get("socket").is_none(),
        "no socket paths leak"
    );
    let (_, v) = api
        .call("GET", "/api/slots", Who::Cookie(&root), None)
        .await;
    assert_eq!(ids(&v), ["alice", "bob"]);
    let (_, v) = api.call("GET", "/api/slots", Who::Cookie(&vic), None).await;
    assert_eq!(ids(&v), Vec::<String>::new());

    // Detail: someone else's slot is 404 (not 403: it does not leak).
    let (s, _) = api
        .call("GET", "/api/slots/alice", Who::Cookie(&bob), None)
        .await;
    assert_eq!(s, 404);
    let (s, v) = api
        .call("GET", "/api/slots/alice", Who::Cookie(&alice), None)
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("online")));
    let (s, v) = api
        .call("GET", "/api/slots/alice", Who::Cookie(&root), None)
        .await;
    assert_eq!((s, v["access"].as_str()), (200, Some("admin")));

    // Sharing: only the owner (or an admin); users grant `viewer` only.
    let viewer = json!({"level": "viewer"});
    let (s, _) = api
        .call(
            "PUT",
            "/api/slots/alice/access/vic",
            Who::Cookie(&bob),
            Some(viewer.clone()),
        )
        .await;
    assert_eq!(s, 404);
    let (s, v) = api
        .call(
            "PUT",
            "/api/slots/alice/access/vic",
            Who::Cookie(&alice),
            Some(json!({"level": "member"})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")));
    let (s, v) = api
        .call(
            "PUT",
            "/api/slots/alice/access/nobody",
            Who::Cookie(&alice),
            Some(viewer.clone()),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("no_such_user")));
    // CSRF: the same call from another site is refused before anything
    // changes; with the portal's own Origin it works.
    let (s, v) = api
        .call(
            "PUT",
            "/api/slots/alice/access/vic",
            Who::CrossSite(&alice),
            Some(viewer.clone()),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("cross_site")));
    assert!(store(&gw).acl("alice", "alice").unwrap().viewers.is_empty());
    let (s, v) = api
        .call(
            "PUT",
            "/api/slots/alice/access/vic",
            Who::Cookie(&alice),
            Some(viewer.clone()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["viewers"], json!(["vic"]));

    // The viewer now sees the slot, read-only, without its access list…
    let (_, v) = api.call("GET", "/api/slots", Who::Cookie(&vic), None).await;
    assert_eq!(ids(&v), ["alice"]);
    assert_eq!(v["items"][0]["access"], "viewer");
    assert_eq!(v["items"][0]["viewers"], json!([]));
    // …and the gateway lets them watch it right away (no stale ACL cache).
    let r = api
        .c
        .get(format!("{}/slot/alice/token", gw.base_url()))
        .header("Cookie", &vic)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // …but cannot operate it.
    let (s, v) = api
        .call("POST", "/api/slots/alice/stop", Who::Cookie(&vic), None)
        .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")));
    let (s, _) = api
        .call("DELETE", "/api/slots/alice", Who::Cookie(&vic), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .call("GET", "/api/slots/alice/access", Who::Cookie(&vic), None)
        .await;
    assert_eq!(s, 403);

    // Actions: not someone else's; the owner's work.
    let (s, _) = api
        .call("POST", "/api/slots/alice/restart", Who::Cookie(&bob), None)
        .await;
    assert_eq!(s, 404);
    let (s, v) = api
        .call(
            "POST",
            "/api/slots/alice/stop",
            Who::CrossSite(&alice),
            None,
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("cross_site")));
    let (s, v) = api
        .call("POST", "/api/slots/alice/stop", Who::Cookie(&alice), None)
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("stopped")), "{v}");
    let (s, v) = api
        .call("POST", "/api/slots/alice/start", Who::Cookie(&alice), None)
        .await;
    assert_eq!(s, 200, "{v}");

    // Unsharing ends the viewer's open terminal (close code 4003), not
    // the owner's.
    let mut watching = tty(&gw, "alice", &vic).await;
    let mut owning = tty(&gw, "alice", &alice).await;
    // Who is on the slot ("also here" in the terminal): those who may see
    // the slot ask for it by slot; others get 404, a viewer without a slot
    // 403. Allowed asks reach slotctl (200 where the activity store is
    // built, its own 404 otherwise) and keep only this slot's rows.
    let (s, v) = api
        .call(
            "GET",
            "/api/activity/online?slot=alice",
            Who::Cookie(&bob),
            None,
        )
        .await;
    assert_eq!((s, v["message"].as_str()), (404, Some("No such slot.")));
    let (s, _) = api
        .call("GET", "/api/activity/online", Who::Cookie(&vic), None)
        .await;
    assert_eq!(s, 403);
    for who in [&vic, &alice] {
        let (s, v) = api
            .call(
                "GET",
                "/api/activity/online?slot=alice",
                Who::Cookie(who),
                None,
            )
            .await;
        assert!(s == 200 || v["message"] != "No such slot.", "{s} {v}");
        for item in v["items"].as_array().into_iter().flatten() {
            assert_eq!(item["slot"], "alice", "{v}");
        }
    }
    let (s, v) = api
        .call(
            "DELETE",
            "/api/slots/alice/access/vic",
            Who::Cookie(&alice),
            None,
        )
        .await;
    assert_eq!((s, v["viewers"].clone()), (200, json!([])));
    assert!(
        watching.closed_within(Duration::from_secs(10)).await,
        "the viewer's terminal closes"
    );
    gw.wait_for_log_line(Duration::from_secs(10), |l| {
        l["user"] == "vic" && l["kind"] == "ws" && l["error"] == "access_removed"
    })
    .await
    .unwrap();
    // The owner keeps theirs. (Under heavy load a slot restart can still
    // drop any terminal; that is told apart by the access log.)
    let kept = match owning.input("echo still-$((20+1))\r").await {
        Ok(()) => owning.expect("still-21", Duration::from_secs(20)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = kept {
        let line = gw
            .wait_for_log_line(Duration::from_secs(10), |l| {
                l["user"] == "alice" && l["kind"] == "ws"
            })
            .await
            .unwrap();
        assert_ne!(
            line["error"], "access_removed",
            "the owner's terminal was closed as if unshared: {e}"
        );
        let mut again = tty(&gw, "alice", &alice).await;
        again.input("echo still-$((20+1))\r").await.unwrap();
        again
            .expect("still-21", Duration::from_secs(20))
            .await
            .unwrap();
    }
    let (_, v) = api.call("GET", "/api/slots", Who::Cookie(&vic), None).await;
    assert_eq!(ids(&v), Vec::<String>::new());

    // Templates: a user gets the allowed ones, an admin all, a viewer none.
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, v) = api
        .call("GET", "/api/templates", Who::Cookie(&alice), None)
        .await;
    assert_eq!(names(&v), ["shell"]);
    let (_, v) = api
        .call("GET", "/api/templates", Who::Cookie(&root), None)
        .await;
    assert!(
        names(&v).len() > 1 && names(&v).contains(&"demo".to_string()),
        "{v}"
    );
    let (_, v) = api
        .call("GET", "/api/templates", Who::Cookie(&vic), None)
        .await;
    assert_eq!(names(&v), Vec::<String>::new());

    // Creating: id rules, allowed templates, viewers never.
    let (s, v) = api
        .call(
            "POST",
            "/api/slots",
            Who::Cookie(&alice),
            Some(json!({"id": "bob-2", "template": "shell"})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_slot_id")));
    let (s, v) = api
        .call(
            "POST",
            "/api/slots",
            Who::Cookie(&alice),
            Some(json!({"id": "alice-2", "template": "demo"})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("template_not_allowed")));
    let (s, _) = api
        .call(
            "POST",
            "/api/slots",
            Who::Cookie(&vic),
            Some(json!({"id": "vic", "template": "shell"})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, v) = api
        .call(
            "POST",
            "/api/slots",
            Who::Cookie(&alice),
            Some(json!({"id": "alice-2", "template": "shell", "start": false})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["owner"].as_str(), v["access"].as_str()),
        (Some("alice"), Some("owner"))
    );
    let (s, v) = api
        .call(
            "POST",
            "/api/slots",
            Who::Cookie(&alice),
            Some(json!({"id": "alice-2", "template": "shell"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = api
        .call(
            "POST",
            "/api/slots",
            Who::Cookie(&alice),
            Some(json!({"id": "alice-3"})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_request")));
    // At most `max_slots_per_user` (3: alice, alice-2, alice-3).
    let new = |id: &str| Some(json!({"id": id, "template": "shell", "start": false}));
    let (s, _) = api
        .call("POST", "/api/slots", Who::Cookie(&alice), new("alice-3"))
        .await;
    assert_eq!(s, 201);
    let (s, v) = api
        .call("POST", "/api/slots", Who::Cookie(&alice), new("alice-4"))
        .await;
    assert_eq!((s, v["code"].as_str()), (409, Some("too_many_slots")));
    // An administrator may create for someone else, past the limit.
    let (s, v) = api
        .call(
            "POST",
            "/api/slots",
            Who::Cookie(&root),
            Some(json!({"id": "alice-4", "template": "demo", "owner": "alice", "start": false})),
        )
        .await;
    assert_eq!((s, v["owner"].as_str()), (201, Some("alice")), "{v}");
    let (s, _) = api
        .call(
            "POST",
            "/api/slots",
            Who::Cookie(&bob),
            Some(json!({"id": "bob-2", "template": "shell", "owner": "alice"})),
        )
        .await;
    assert_eq!(s, 403, "a user creates only for themselves");
    for id in ["alice-3", "alice-4"] {
        let (s, _) = api
            .call(
                "DELETE",
                &format!("/api/slots/{id}"),
                Who::Cookie(&root),
                None,
            )
            .await;
        assert_eq!(s, 200, "an admin deletes any slot");
    }

    // Members (granted by an admin only) operate a slot but neither delete
    // nor share it.
    let member = json!({"level": "member"});
    let (s, v) = api
        .call(
            "PUT",
            "/api/slots/alice/access/bob",
            Who::Cookie(&root),
            Some(member),
        )
        .await;
    assert_eq!((s, v["members"].clone()), (200, json!(["bob"])));
    let (s, v) = api
        .call("POST", "/api/slots/alice/restart", Who::Cookie(&bob), None)
        .await;
    assert_eq!((s, v["access"].as_str()), (200, Some("member")), "{v}");
    let (s, _) = api
        .call("DELETE", "/api/slots/alice", Who::Cookie(&bob), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .call(
            "PUT",
            "/api/slots/alice/access/vic",
            Who::Cookie(&bob),
            Some(viewer.clone()),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .call(
            "DELETE",
            "/api/slots/alice/access/bob",
            Who::Cookie(&root),
            None,
        )
        .await;
    assert_eq!(s, 200);

    // Deleting: not someone else's; the owner's.
    let (s, _) = api
        .call("DELETE", "/api/slots/alice-2", Who::Cookie(&bob), None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call("DELETE", "/api/slots/alice-2", Who::Cookie(&alice), None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = api
        .call("GET", "/api/slots/alice-2", Who::Cookie(&alice), None)
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn api_users_sessions_tokens_and_forwarding() {
    let (env, gw) = stack("").await;
    env.create_online("bob", "shell").await;
    let alice = user_session(&gw, "alice", Role::User).await;
    let bob = user_session(&gw, "bob", Role::User).await;
    let vic = user_session(&gw, "vic", Role::Viewer).await;
    let root = user_session(&gw, "root", Role::Admin).await;
    let api = Client {
        gw: &gw,
        c: browser().0,
    };

    // Users: administrators only.
    let (s, _) = api
        .call("GET", "/api/users", Who::Cookie(&alice), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = api.call("GET", "/api/users", Who::Cookie(&vic), None).await;
    assert_eq!(s, 403);
    let (s, v) = api
        .call("GET", "/api/users", Who::Cookie(&root), None)
        .await;
    assert_eq!(s, 200);
    let bob_row = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "bob")
        .cloned()
        .unwrap();
    assert_eq!(
        (bob_row["role"].as_str(), bob_row["sessions"].as_u64()),
        (Some("user"), Some(1))
    );
    assert!(bob_row.get("password_hash").is_none());

    // One user: themselves or an admin.
    let (s, v) = api
        .call("GET", "/api/users/alice", Who::Cookie(&alice), None)
        .await;
    assert_eq!((s, v["name"].as_str()), (200, Some("alice")));
    let (s, _) = api
        .call("GET", "/api/users/bob", Who::Cookie(&alice), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .call("GET", "/api/users/bob", Who::Cookie(&root), None)
        .await;
    assert_eq!(s, 200);

    // Roles.
    let (s, _) = api
        .call(
            "POST",
            "/api/users/bob/role",
            Who::Cookie(&alice),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, v) = api
        .call(
            "POST",
            "/api/users/bob/role",
            Who::Cookie(&root),
            Some(json!({"role": "god"})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_request")));
    let (s, v) = api
        .call(
            "POST",
            "/api/users/alice/role",
            Who::Cookie(&root),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!((s, v["role"].as_str()), (200, Some("viewer")));
    let (s, _) = api
        .call(
            "POST",
            "/api/users/alice/role",
            Who::Cookie(&root),
            Some(json!({"role": "user"})),
        )
        .await;
    assert_eq!(s, 200);

    // Disabling: refused to a user; an admin's ends bob's sessions and
    // closes his open terminal.
    let mut t = tty(&gw, "bob", &bob).await;
    t.input("echo bob-$((40+2))\r").await.unwrap();
    t.expect("bob-42", Duration::from_secs(20)).await.unwrap();
    let (s, _) = api
        .call("POST", "/api/users/bob/disable", Who::Cookie(&alice), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .call(
            "POST",
            "/api/users/bob/disable",
            Who::CrossSite(&root),
            None,
        )
        .await;
    assert_eq!(s, 403);
    assert!(!store(&gw).user("bob").unwrap().unwrap().disabled);
    let (s, v) = api
        .call("POST", "/api/users/bob/disable", Who::Cookie(&root), None)
        .await;
    assert_eq!((s, v["disabled"].as_bool()), (200, Some(true)));
    assert!(
        t.closed_within(Duration::from_secs(10)).await,
        "bob's terminal closes"
    );
    let (s, _) = api.call("GET", "/api/me", Who::Cookie(&bob), None).await;
    assert_eq!(s, 401);
    let (s, v) = api
        .call("POST", "/api/users/bob/enable", Who::Cookie(&root), None)
        .await;
    assert_eq!((s, v["disabled"].as_bool()), (200, Some(false)));
    // Enabled again, bob can sign in again.
    let (bc, bjar) = browser();
    assert_eq!(
        login(&gw, &bc, "bob", &password_of("bob"), "/")
            .await
            .status(),
        303
    );
    let bob = session_cookie(&gw, &bjar).unwrap();
    let (s, _) = api
        .call("POST", "/api/users/root/disable", Who::Cookie(&root), None)
        .await;
    assert_eq!(s, 409, "an admin cannot lock themselves out");

    // Sessions: a user lists their own only; ends their own only.
    let (s, v) = api
        .call("GET", "/api/sessions", Who::Cookie(&alice), None)
        .await;
    assert_eq!(s, 200);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0]["user"].as_str(), items[0]["current"].as_bool()),
        (Some("alice"), Some(true))
    );
    let (s, _) = api
        .call("GET", "/api/sessions?user=root", Who::Cookie(&alice), None)
        .await;
    assert_eq!(s, 403);
    let (_, v) = api
        .call("GET", "/api/sessions?user=root", Who::Cookie(&root), None)
        .await;
    let root_sid = v["items"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = api
        .call(
            "DELETE",
            &format!("/api/sessions/{root_sid}"),
            Who::Cookie(&alice),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (_, v) = api
        .call("GET", "/api/sessions", Who::Cookie(&vic), None)
        .await;
    let vic_sid = v["items"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = api
        .call(
            "DELETE",
            &format!("/api/sessions/{vic_sid}"),
            Who::Cookie(&root),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = api.call("GET", "/api/me", Who::Cookie(&vic), None).await;
    assert_eq!(s, 401, "a revoked session is over");
    let (vc, vjar) = browser();
    assert_eq!(
        login(&gw, &vc, "vic", &password_of("vic"), "/")
            .await
            .status(),
        303
    );
    let vic = session_cookie(&gw, &vjar).unwrap();

    // API tokens: own for users, anyone's for admins; shown once.
    let (s, _) = api
        .call(
            "POST",
            "/api/tokens",
            Who::Cookie(&alice),
            Some(json!({"name": "x", "scopes": ["api"], "user": "root"})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, v) = api
        .call(
            "POST",
            "/api/tokens",
            Who::Cookie(&alice),
            Some(json!({"name": "x", "scopes": ["sudo"]})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_request")));
    let (s, v) = api
        .call(
            "POST",
            "/api/tokens",
            Who::Cookie(&alice),
            Some(json!({"name": "laptop", "scopes": ["api"], "ttl": "1h"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    let token_id = v["item"]["id"].as_str().unwrap().to_string();
    let (s, v) = api
        .call(
            "POST",
            "/api/tokens",
            Who::Cookie(&alice),
            Some(json!({"name": "embed only", "scopes": ["embed"]})),
        )
        .await;
    assert_eq!(s, 201);
    let embed_only = v["token"].as_str().unwrap().to_string();
    let (_, v) = api
        .call("GET", "/api/tokens", Who::Cookie(&root), None)
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert!(
        !v.to_string().contains(&token),
        "the secret is never listed"
    );
    let (_, v) = api
        .call("GET", "/api/tokens?user=bob", Who::Cookie(&root), None)
        .await;
    assert_eq!(v["items"], json!([]));
    let (_, v) = api
        .call("GET", "/api/tokens", Who::Cookie(&alice), None)
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let (s, _) = api
        .call("GET", "/api/tokens?user=root", Who::Cookie(&alice), None)
        .await;
    assert_eq!(s, 403);

    // A bearer token acts as its user, needs the `api` scope, and needs no
    // Origin for changes (no ambient credential).
    let (s, v) = api.call("GET", "/api/me", Who::Bearer(&token), None).await;
    assert_eq!(
        (s, v["user"].as_str(), v["amr"].as_str()),
        (200, Some("alice"), Some("token"))
    );
    let (s, _) = api
        .call("GET", "/api/me", Who::Bearer(&embed_only), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .call("GET", "/api/me", Who::Bearer("sgt_nope_nope"), None)
        .await;
    assert_eq!(s, 401);
    let (s, v) = api
        .call(
            "POST",
            "/api/tokens",
            Who::Bearer(&token),
            Some(json!({"name": "from token", "scopes": []})),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    let (s, _) = api
        .call(
            "DELETE",
            &format!("/api/tokens/{token_id}"),
            Who::Cookie(&bob),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call(
            "DELETE",
            &format!("/api/tokens/{token_id}"),
            Who::Cookie(&alice),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = api.call("GET", "/api/me", Who::Bearer(&token), None).await;
    assert_eq!(s, 401, "a revoked token is refused");

    // Forwarded routes: refused in slotgate before slotctl sees them…
    for (who, path) in [
        (&vic, "/api/activity/sessions"),
        (&vic, "/api/recordings"),
        (&alice, "/api/activity/sessions?user=bob"),
        (&alice, "/api/usage?user=alice&user=bob"),
        (&alice, "/api/recordings?user=root"),
        (&alice, "/api/quotas/bob"),
        (&alice, "/api/activity/ingest"),
        (&alice, "/api/keys"),
    ] {
        let (s, v) = api.call("GET", path, Who::Cookie(who), None).await;
        assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{path}");
    }
    let (s, _) = api
        .call(
            "PUT",
            "/api/quotas/alice",
            Who::Cookie(&alice),
            Some(json!({"daily_tokens": 1})),
        )
        .await;
    assert_eq!(s, 403);
    // …and let through to slotctl when allowed: the answer is slotctl's
    // (200 where the activity store is built, its 404 where it is not),
    // never slotgate's 403, and a user's list holds only their rows.
    for (who, path) in [
        (&alice, "/api/activity/sessions"),
        (&alice, "/api/usage"),
        (&root, "/api/activity/sessions?user=bob"),
        (&root, "/api/keys"),
    ] {
        let (s, v) = api.call("GET", path, Who::Cookie(who), None).await;
        assert!(s == 200 || s == 404, "{path}: {s} {v}");
        if s == 200 && who == &alice {
            for item in v["items"].as_array().into_iter().flatten() {
                assert_eq!(item["user"], "alice", "{path}: {v}");
            }
        }
    }
    // API calls are in the access log with their user.
    gw.wait_for_log_line(Duration::from_secs(10), |l| {
        l["path"] == "/api/activity/sessions" && l["user"] == "alice" && l["route"] == "api"
    })
    .await
    .unwrap();

    // A replay link that slotctl does not know: 404 JSON, no account needed.
    let (s, v) = api
        .call("GET", "/replay/no-such-link/cast", Who::Nobody, None)
        .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")));
    // The link's token never reaches the access log.
    gw.wait_for_log_line(Duration::from_secs(10), |l| {
        l["path"] == "/replay/REDACTED/cast" && l["route"] == "replay"
    })
    .await
    .unwrap();
    assert!(!std::fs::read_to_string(&gw.access_log)
        .unwrap()
        .contains("no-such-link"));
}

#[tokio::test]
async fn portal_files_pages_and_terminal_view() {
    let portal = tempfile::tempdir().unwrap();
    std::fs::create_dir(portal.path().join("assets")).unwrap();
    std::fs::write(
        portal.path().join("index.html"),
        "<!doctype html><title>portal-index</title><script type=module src=/assets/app-AbCd1234.js></script>",
    )
    .unwrap();
    std::fs::write(
        portal.path().join("assets/app-AbCd1234.js"),
        "console.log(1)",
    )
    .unwrap();
    std::fs::write(portal.path().join("assets/app-AbCd1234.css"), "body{}").unwrap();
    std::fs::write(portal.path().join("assets/favicon.svg"), "<svg/>").unwrap();
    std::fs::create_dir(portal.path().join("assets/dir.js")).unwrap();
    let (env, gw) = stack(&format!("[slotgate.portal]\ndir = {:?}\n", portal.path())).await;
    env.create_online("alice", "shell").await;
    env.create_online("bob", "shell").await;
    let alice = user_session(&gw, "alice", Role::User).await;
    let (c, _) = browser();
    let get = |path: &str, cookie: Option<&str>, nav: bool| {
        let mut r = c.get(format!("{}{path}", gw.base_url()));
        if nav {
            r = r
                .header("Accept", "text/html")
                .header("Sec-Fetch-Mode", "navigate");
        }
        if let Some(ck) = cookie {
            r = r.header("Cookie", ck);
        }
        r.send()
    };

    // Files: typed, cached for a year, nothing else.
    let r = get("/assets/app-AbCd1234.js", None, false).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = get("/assets/app-AbCd1234.css", None, false).await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
    // An unhashed file (the favicon) may change: an hour.
    let r = get("/assets/favicon.svg", None, false).await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert_eq!(r.headers()["cache-control"], "public, max-age=3600");
    for (path, status) in [
        ("/assets/", 404),
        ("/assets/dir.js", 404),
        ("/assets/missing.js", 404),
        ("/index.html", 404),
        ("/assets/../index.html", 400),
        ("/assets/%2e%2e/index.html", 400),
        ("/assets//app-AbCd1234.js", 400),
        ("/assets/..%2findex.html", 400),
    ] {
        // Sent byte for byte (an HTTP library would normalise the dots).
        let r = gw.get(path).await.unwrap();
        assert_eq!(r.status, status, "{path}");
    }

    // Pages: nobody is sent to sign in (and comes back); a user gets the
    // app with the portal's CSP (no inline script).
    for path in ["/", "/admin", "/admin/users"] {
        let r = get(path, None, true).await.unwrap();
        assert_eq!(r.status(), 302, "{path}");
        let to = r.headers()["location"].to_str().unwrap().to_string();
        assert!(to.starts_with("/auth/login?next="), "{path} -> {to}");
    }
    let r = get("/", Some(&alice), true).await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    // Scripts: this origin and WebAssembly only; no inline script, no eval.
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .unwrap_or_default();
    assert_eq!(script_src, "script-src 'self' 'wasm-unsafe-eval'", "{csp}");
    assert!(
        csp.contains("connect-src 'self'") && csp.contains("frame-ancestors 'self'"),
        "{csp}"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.text().await.unwrap().contains("portal-index"));
    let r = get("/admin/stats", Some(&alice), true).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the API, not the page, decides what a role sees"
    );
    let r = get("/replay/some-link", None, true).await.unwrap();
    assert_eq!(r.status(), 200, "a replay link needs no account");

    // The terminal: a person's navigation gets the portal's terminal view,
    // `?raw=1` ttyd's own page; someone else's slot is still refused.
    let r = get("/slot/alice/", Some(&alice), true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("portal-index"));
    let r = get("/slot/alice/?raw=1", Some(&alice), true).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("portal-index") && body.contains("<html"),
        "ttyd's page"
    );
    let r = get("/slot/bob/", Some(&alice), true).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(!r.text().await.unwrap().contains("portal-index"));
    let r = get("/slot/alice/", None, true).await.unwrap();
    assert_eq!(r.status(), 302);
    // Scripts (not navigations) still reach ttyd.
    let r = get("/slot/alice/token", Some(&alice), false).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("token"));
}

#[tokio::test]
async fn missing_portal_dir_keeps_the_gateway_as_before_and_check_config_says_so() {
    let (env, gw) = stack("[slotgate.portal]\ndir = \"no-such-dir\"\n").await;
    env.create_online("alice", "shell").await;
    let alice = user_session(&gw, "alice", Role::User).await;
    assert!(
        gw.stderr().contains("serving without the web portal"),
        "{}",
        gw.stderr()
    );
    let (c, _) = browser();
    let r = c
        .get(format!("{}/", gw.base_url()))
        .header("Cookie", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["location"],
        "/slot/alice/",
        "the landing redirect as before"
    );
    let r = c
        .get(format!("{}/assets/app.js", gw.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let out = std::process::Command::new(slotgate_tests::bin("slotgate"))
        .arg("--config")
        .arg(&env.config)
        .arg("check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("slotgate.portal.dir") && err.contains("no-such-dir"),
        "{err}"
    );
}

#[tokio::test]
async fn sign_in_page_messages_and_policy() {
    // An OpenID Provider that does not answer (nothing listens there).
    let down = format!("http://127.0.0.1:{}", slotgate_tests::gateway::free_port());
    let (_env, gw) = stack(&format!(
        "auth = [\"local\", \"oidc\"]\n[[slotgate.oidc]]\nname = \"op\"\ndisplay_name = \"Company SSO\"\n\
         issuer = \"{down}\"\nclient_id = \"slotgate\"\nclient_secret = \"test-secret-0123456789\"\n\
         redirect_uri = \"https://127.0.0.1/auth/oidc/op/callback\"\n"
    ))
    .await;
    store(&gw)
        .add_user("dora", Role::User, Some(&password_of("dora")), None)
        .unwrap();
    store(&gw).set_disabled("dora", true).unwrap();
    let (c, _) = browser();
    let page = |path: String| {
        let c = c.clone();
        async move {
            let r = c.get(path).send().await.unwrap();
            let csp = r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_string();
            (r.status().as_u16(), csp, r.text().await.unwrap())
        }
    };

    // The page itself: the portal's look, no script, a strict policy.
    let (s, csp, body) = page(format!("{}/auth/login", gw.base_url())).await;
    assert_eq!(s, 200);
    assert!(
        csp.contains("script-src 'self' 'wasm-unsafe-eval';"),
        "{csp}"
    );
    assert!(
        !body.contains("<script"),
        "the sign-in page works without script"
    );
    assert!(
        body.contains("prefers-color-scheme: light") && body.contains("Sign in with Company SSO")
    );

    // Wrong password and disabled account: distinct, clear messages.
    let r = login(&gw, &c, "dora", "wrong-password-1", "/").await;
    assert_eq!(r.status(), 401);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Wrong user name or password"));
    // The user name is kept for the next try, escaped.
    let r = login(&gw, &c, "x\"><b>bold", "wrong-password-1", "/").await;
    let body = r.text().await.unwrap();
    assert!(
        body.contains("value=\"x&quot;&gt;&lt;b&gt;bold\"") && !body.contains("<b>bold"),
        "{body}"
    );
    let r = login(&gw, &c, "dora", &password_of("dora"), "/").await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("This account is disabled"));

    // Provider down: the sign-in page again, saying so, other ways in kept.
    let (s, _, body) = page(format!("{}/auth/oidc/op/start?next=/", gw.base_url())).await;
    assert_eq!(s, 502);
    assert!(body.contains("identity provider did not answer"), "{body}");
    assert!(
        body.contains("name=\"password\""),
        "the local form is still there"
    );

    // Notices by code (over quota, session ended); unknown codes and any
    // text in the URL are never echoed.
    let (_, _, body) = page(format!("{}/auth/login?notice=over_quota", gw.base_url())).await;
    assert!(body.contains("quota is used up"), "{body}");
    let (_, _, body) = page(format!("{}/auth/login?notice=session_ended", gw.base_url())).await;
    assert!(body.contains("Your session ended"));
    let (_, _, body) = page(format!(
        "{}/auth/login?notice=%3Cb%3Epwned%3C%2Fb%3E",
        gw.base_url()
    ))
    .await;
    assert!(!body.contains("pwned") && !body.contains("class=\"notice\""));
}

#[tokio::test]
async fn api_calls_count_against_the_api_rate_limit() {
    let (_env, gw) = stack("[slotgate.rate_limits]\napi_per_user = 3\napi_per_ip = 0\n").await;
    let alice = user_session(&gw, "alice", Role::User).await;
    let bob = user_session(&gw, "bob", Role::User).await;
    let api = Client {
        gw: &gw,
        c: browser().0,
    };
    for _ in 0..3 {
        let (s, _) = api.call("GET", "/api/me", Who::Cookie(&alice), None).await;
        assert_eq!(s, 200);
    }
    let r = api
        .c
        .get(format!("{}/api/me", gw.base_url()))
        .header("Cookie", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "rate_limited");
    // Per user: bob still has his.
    let (s, _) = api.call("GET", "/api/me", Who::Cookie(&bob), None).await;
    assert_eq!(s, 200);
}
