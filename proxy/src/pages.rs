//! Responses the gateway writes itself: error pages, the "starting your
//! terminal" page, redirects, JSON for the status endpoint, 429s. Pages are
//! small and self-contained (inline CSS and script, no external assets), so
//! they work inside an iframe and while a slot is down. Browsers get HTML,
//! programs get JSON. Messages say what happened and what to do; they never
//! carry an upstream's own error text.

use bytes::Bytes;
use serde::Serialize;

use crate::limits::Limited;
use crate::slots::{failure_message, SlotError};

/// A complete response the gateway sends without a slot.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
    /// Short code for the access log (`bad_path`, `rate_limited`, …).
    pub error: Option<&'static str>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            error: None,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_error(mut self, code: &'static str) -> Reply {
        self.error = Some(code);
        self
    }
}

pub fn json<T: Serialize>(status: u16, body: &T) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Reply::new(status, "application/json", bytes)
}

pub fn bytes(status: u16, body: Bytes, content_type: &'static str) -> Reply {
    Reply::new(status, content_type, body)
}

pub fn text(status: u16, body: String, content_type: &'static str) -> Reply {
    Reply::new(status, content_type, body)
}

/// An error for a person (HTML) or a program (JSON).
pub fn error(status: u16, code: &'static str, title: &str, message: &str, html: bool) -> Reply {
    let reply = if html {
        Reply::new(
            status,
            "text/html; charset=utf-8",
            page(title, message, None),
        )
    } else {
        /// `code` is the API contract's name (docs/api.md); `error` the
        /// gateway's original one, kept for existing clients.
        #[derive(Serialize)]
        struct Body<'a> {
            code: &'a str,
            error: &'a str,
            message: &'a str,
        }
        json(
            status,
            &Body {
                code,
                error: code,
                message,
            },
        )
    };
    reply.with_error(code)
}

pub fn slot_error(e: &SlotError, html: bool) -> Reply {
    let title = match e {
        SlotError::NotFound => "No such terminal",
        SlotError::DaemonDown => "Terminals are unavailable",
        SlotError::StartFailed(_) => "The terminal did not start",
        SlotError::Timeout => "The terminal is taking too long",
    };
    let reply = error(e.status(), e.code(), title, failure_message(e), html);
    match e {
        SlotError::DaemonDown | SlotError::Timeout => reply.with_header("retry-after", "5"),
        _ => reply,
    }
}

pub fn rate_limited(l: &Limited, html: bool) -> Reply {
    let message = format!(
        "Too many requests ({} limit per {}). Try again in {} seconds.",
        l.category, l.scope, l.retry_after_secs
    );
    error(429, "rate_limited", "Slow down", &message, html)
        .with_header("retry-after", l.retry_after_secs.to_string())
}

pub fn redirect(location: &str) -> Reply {
    Reply::new(
        308,
        "text/plain; charset=utf-8",
        format!("Moved to {location}\n"),
    )
    .with_header("location", location.to_string())
}

/// `302 Found` (sign-in redirects: the next request is a fresh GET).
pub fn found(location: &str) -> Reply {
    Reply::new(302, "text/plain; charset=utf-8", "Redirecting\n")
        .with_header("location", location.to_string())
}

/// `303 See Other` after a form POST.
pub fn see_other(location: &str) -> Reply {
    Reply::new(303, "text/plain; charset=utf-8", "Redirecting\n")
        .with_header("location", location.to_string())
}

/// A sign-in button for an identity provider.
pub struct ProviderLink {
    pub href: String,
    pub label: String,
}

/// The sign-in page: the local form and one button per provider.
pub fn login(status: u16, next: &str, providers: &[ProviderLink], notice: Option<&str>) -> Reply {
    let mut inner = String::from("<h1>Sign in to slotgate</h1>");
    if let Some(n) = notice {
        inner.push_str(&format!(
            "<p class=\"notice\" role=\"alert\">{}</p>",
            escape(n)
        ));
    }
    inner.push_str(&format!(
        r#"<form method="post" action="/auth/login"><input type="hidden" name="next" value="{next}">
<label>User name<input name="user" autocomplete="username" required autofocus></label>
<label>Password<input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form>"#,
        next = escape(next)
    ));
    if !providers.is_empty() {
        inner.push_str("<p class=\"or\">or</p>");
        for p in providers {
            inner.push_str(&format!(
                "<p><a class=\"button\" href=\"{}\">Sign in with {}</a></p>",
                escape(&p.href),
                escape(&p.label)
            ));
        }
    }
    Reply::new(status, "text/html; charset=utf-8", shell("Sign in", &inner))
}

/// The page that makes a user choose a new password (the bootstrap
/// administrator at first sign-in).
pub fn change_password(status: u16, user: &str, next: &str, notice: Option<&str>) -> Reply {
    let mut inner = format!(
        "<h1>Choose a new password</h1><p>Signed in as <b>{}</b>. The password you used was a one-time password; choose your own (at least 10 characters).</p>",
        escape(user)
    );
    if let Some(n) = notice {
        inner.push_str(&format!(
            "<p class=\"notice\" role=\"alert\">{}</p>",
            escape(n)
        ));
    }
    inner.push_str(&format!(
        r#"<form method="post" action="/auth/password"><input type="hidden" name="next" value="{next}">
<label>New password<input name="password" type="password" autocomplete="new-password" minlength="10" required autofocus></label>
<label>Repeat it<input name="confirm" type="password" autocomplete="new-password" minlength="10" required></label>
<button type="submit">Save and continue</button></form>"#,
        next = escape(next)
    ));
    Reply::new(
        status,
        "text/html; charset=utf-8",
        shell("Choose a new password", &inner),
    )
}

fn shell(title: &str, inner: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title>
<style>
body{{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;background:#1e1e1e;color:#ddd;font:16px/1.5 system-ui,sans-serif}}
main{{width:22rem;max-width:90vw;padding:2rem}} h1{{font-size:1.25rem;margin:0 0 1rem}} a{{color:#8cf}}
label{{display:block;margin:.5rem 0}} input{{display:block;width:100%;box-sizing:border-box;margin-top:.25rem;padding:.5rem;border:1px solid #555;border-radius:4px;background:#2a2a2a;color:#eee;font:inherit}}
button,.button{{display:block;width:100%;box-sizing:border-box;margin-top:1rem;padding:.6rem;border:0;border-radius:4px;background:#2d6cdf;color:#fff;font:inherit;text-align:center;text-decoration:none;cursor:pointer}}
.notice{{background:#5a1d1d;border-radius:4px;padding:.5rem .75rem}} .or{{text-align:center;color:#999;margin:1rem 0 0}}
</style></head>
<body><main>{inner}</main></body></html>
"#,
        title = escape(title),
    )
}

pub fn landing() -> Reply {
    Reply::new(
        200,
        "text/html; charset=utf-8",
        page(
            "slotgate",
            "Open your terminal at /slot/<name>/ — for example the link your team shared with you.",
            None,
        ),
    )
}

/// The page a browser sees while its slot starts: it polls the status
/// endpoint and reloads once the slot is online. Served with 503 and
/// `Retry-After` so nothing caches it as the slot's page.
pub fn starting(slot: &str) -> Reply {
    let status_url = format!("/slot/{}/_slotgate/status", escape(slot));
    let script = format!(
        r#"(function(){{var u="{status_url}",n=0,m=document.getElementById("msg");
function stop(t){{m.textContent=t;document.getElementById("spin").hidden=true;document.getElementById("retry").hidden=false}}
function tick(){{fetch(u,{{cache:"no-store",credentials:"same-origin"}}).then(function(r){{return r.json()}}).then(function(s){{
if(s.state==="online"){{location.reload();return}}
if(s.state==="starting"){{m.textContent=s.message;setTimeout(tick,n++<20?500:2000);return}}
stop(s.message)}}).catch(function(){{setTimeout(tick,2000)}})}}
setTimeout(tick,300)}})();"#
    );
    Reply::new(
        503,
        "text/html; charset=utf-8",
        page(
            "Starting your terminal…",
            "Starting your terminal…",
            Some(&script),
        ),
    )
    .with_header("retry-after", "2")
    .with_error("slot_starting")
}

fn page(title: &str, message: &str, script: Option<&str>) -> String {
    let (spin, retry, noscript, script) = match script {
        Some(s) => (
            "<div id=\"spin\" class=\"spin\"></div>",
            "<p id=\"retry\" hidden><a href=\"\" onclick=\"location.reload();return false\">Try again</a></p>",
            "<noscript><meta http-equiv=\"refresh\" content=\"3\"></noscript>",
            format!("<script>{s}</script>"),
        ),
        None => ("", "", "", String::new()),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title>{noscript}
<style>
body{{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;background:#1e1e1e;color:#ddd;font:16px/1.5 system-ui,sans-serif}}
main{{max-width:32rem;padding:2rem;text-align:center}} h1{{font-size:1.25rem;margin:0 0 .75rem}} a{{color:#8cf}}
.spin{{width:28px;height:28px;margin:1rem auto;border:3px solid #555;border-top-color:#8cf;border-radius:50%;animation:r 1s linear infinite}}
@keyframes r{{to{{transform:rotate(360deg)}}}}
</style></head>
<body><main><h1>{title}</h1>{spin}<p id="msg">{message}</p>{retry}</main>{script}</body></html>
"#,
        title = escape(title),
        message = escape(message),
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_negotiate_html_or_json() {
        let r = slot_error(
            &SlotError::StartFailed("ttyd: /secret/path: EACCES".into()),
            true,
        );
        assert_eq!(r.status, 502);
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(body.contains("did not start"));
        assert!(
            !body.contains("/secret/path"),
            "upstream detail leaked: {body}"
        );
        let r = slot_error(&SlotError::DaemonDown, false);
        assert_eq!(r.status, 503);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "supervisor_unavailable");
        assert!(r.headers.iter().any(|(n, _)| *n == "retry-after"));
    }

    #[test]
    fn starting_page_polls_the_slot_status() {
        let r = starting("alice");
        assert_eq!(r.status, 503);
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(body.contains("/slot/alice/_slotgate/status"));
        assert!(body.contains("location.reload()"));
        assert!(!body.contains("src=\"http"), "page must be self-contained");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;"
        );
        let r = error(400, "bad", "<b>", "<script>", true);
        assert!(!std::str::from_utf8(&r.body).unwrap().contains("<script>"));
    }
}
