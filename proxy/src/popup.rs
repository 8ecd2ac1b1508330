//! Signing in from inside an iframe. Identity providers refuse to be
//! framed, and a cookie set by a framed sign-in form is a third-party
//! cookie that browsers block. So a terminal embedded in another site and
//! opened without a session gets a small page that tells the host page
//! (`postMessage` `slotgate:needs-auth`) and offers a button; the button
//! opens `/auth/popup?slot=<id>` as a top-level popup, where the normal
//! sign-in happens with first-party cookies. Once signed in, the popup mints
//! a single-use embed token for that slot and posts it to its opener — only
//! to slotgate's own origin, so only slotgate's own frame can receive it —
//! and closes; the frame then opens `/slot/<id>/?embed=<token>`, which
//! exchanges the token for a partitioned session cookie (see `signin`).
//!
//! The scripts are served as files under `/auth/` (no inline script, so a
//! strict `script-src 'self'` keeps working).

use crate::pages::{self, Reply};

/// `/auth/frame.js`: runs in the sign-in page shown inside the iframe.
const FRAME_JS: &str = r#"(function () {
  "use strict";
  var main = document.querySelector("main[data-slot]");
  var slot = main.getAttribute("data-slot");
  var note = document.getElementById("note");
  function tell(type) {
    if (window.parent !== window) {
      window.parent.postMessage({ type: type, slot: slot }, "*");
    }
  }
  tell("slotgate:needs-auth");
  document.getElementById("signin").addEventListener("click", function () {
    var w = window.open("/auth/popup?slot=" + encodeURIComponent(slot),
      "slotgate-signin", "popup,width=480,height=680");
    note.textContent = w ? "Finish signing in in the window that opened."
                         : "Your browser blocked the sign-in window. Allow pop-ups for this site and try again.";
  });
  window.addEventListener("message", function (e) {
    var d = e.data;
    if (e.origin !== location.origin || !d || d.type !== "slotgate:signed-in" || d.slot !== slot) {
      return;
    }
    location.replace("/slot/" + encodeURIComponent(slot) + "/?embed=" + encodeURIComponent(d.token));
  });
})();
"#;

/// `/auth/popup.js`: runs in the popup once the user is signed in.
const POPUP_JS: &str = r#"(function () {
  "use strict";
  var main = document.querySelector("main[data-token]");
  var msg = { type: "slotgate:signed-in", slot: main.getAttribute("data-slot"),
              token: main.getAttribute("data-token") };
  if (window.opener && !window.opener.closed) {
    window.opener.postMessage(msg, location.origin);
    window.close();
  } else {
    document.getElementById("note").textContent =
      "You are signed in. Go back to the page with the terminal and reload it.";
  }
})();
"#;

/// The scripts under `/auth/`, by file name.
pub fn script(name: &str) -> Option<Reply> {
    let body = match name {
        "frame.js" => FRAME_JS,
        "popup.js" => POPUP_JS,
        _ => return None,
    };
    Some(
        pages::text(200, body.to_string(), "text/javascript; charset=utf-8")
            .with_header("cache-control", "public, max-age=3600"),
    )
}

/// What an iframe gets for a terminal it may not open yet: `401`, a
/// sign-in button, and `slotgate:needs-auth` to the host page.
pub fn frame_sign_in(slot: &str) -> Reply {
    let inner = r#"<h1>Sign in to open this terminal</h1>
<p>Sign-in opens in a small window; this frame continues by itself afterwards.</p>
<button id="signin" type="button" autofocus>Sign in</button>
<p id="note" role="status"></p>
<script src="/auth/frame.js" defer></script>"#;
    pages::html_with_main(
        401,
        "Sign in",
        &format!("data-slot=\"{}\"", pages::escape(slot)),
        inner,
    )
    .with_header("cache-control", "no-store")
    .with_error("unauthenticated")
}

/// The popup after sign-in: hands a single-use token for `slot` to its
/// opener. Never cached; the token is in the body, never in a URL.
pub fn popup_done(slot: &str, token: &str) -> Reply {
    let inner = r#"<h1>Signed in</h1>
<p id="note" role="status">Returning to your terminal…</p>
<script src="/auth/popup.js" defer></script>"#;
    pages::html_with_main(
        200,
        "Signed in",
        &format!(
            "data-slot=\"{}\" data-token=\"{}\"",
            pages::escape(slot),
            pages::escape(token)
        ),
        inner,
    )
    .with_header("cache-control", "no-store")
}

/// Whether a navigation is an iframe loading us (`Sec-Fetch-Dest`).
pub fn is_frame_navigation(req: &pingora::http::RequestHeader) -> bool {
    req.headers
        .get("sec-fetch-dest")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|d| d == "iframe" || d == "frame")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_served_and_unknown_names_are_not() {
        let r = script("frame.js").unwrap();
        assert!(r.content_type.starts_with("text/javascript"));
        assert!(std::str::from_utf8(&r.body)
            .unwrap()
            .contains("slotgate:needs-auth"));
        assert!(script("popup.js").is_some());
        assert!(script("../x.js").is_none());
    }

    #[test]
    fn the_popup_posts_only_to_its_own_origin() {
        // The token must never be posted with a wildcard target.
        assert!(POPUP_JS.contains("postMessage(msg, location.origin)"));
        assert!(!POPUP_JS.contains("\"*\""));
        // And the frame accepts it only from its own origin.
        assert!(FRAME_JS.contains("e.origin !== location.origin"));
    }

    #[test]
    fn pages_escape_their_data() {
        let r = popup_done("alice", "t\"><script>");
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(body.contains("data-token=\"t&quot;&gt;&lt;script&gt;\""));
        assert_eq!(frame_sign_in("alice").status, 401);
    }
}
