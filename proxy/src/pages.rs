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
    /// The account a sign-in attempt was for, for the access log's `login`.
    pub login: Option<String>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            error: None,
            login: None,
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

    /// Mark the reply as the outcome of a sign-in attempt for `user` (at
    /// most 64 bytes of the name are kept).
    pub fn with_login(mut self, user: &str) -> Reply {
        let mut cut = user.len().min(64);
        while !user.is_char_boundary(cut) {
            cut -= 1;
        }
        self.login = Some(user[..cut].to_string());
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

/// 404 for an address where nothing lives.
pub fn not_found(html: bool) -> Reply {
    error(
        404,
        "not_found",
        "Not found",
        "Nothing lives at this address.",
        html,
    )
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
/// `user` pre-fills the user name (after a failed attempt).
pub fn login(
    status: u16,
    next: &str,
    providers: &[ProviderLink],
    notice: Option<&str>,
    user: &str,
) -> Reply {
    let mut inner = String::from("<h1>Sign in</h1>");
    if let Some(n) = notice {
        inner.push_str(&format!(
            "<p class=\"notice\" role=\"alert\">{}</p>",
            escape(n)
        ));
    }
    inner.push_str(&format!(
        r#"<form method="post" action="/auth/login"><input type="hidden" name="next" value="{next}">
<label>User name<input name="user" value="{user}" autocomplete="username" required{user_focus}></label>
<label>Password<input name="password" type="password" autocomplete="current-password" required{password_focus}></label>
<button type="submit">Sign in</button></form>"#,
        next = escape(next),
        user = escape(user),
        user_focus = if user.is_empty() { " autofocus" } else { "" },
        password_focus = if user.is_empty() { "" } else { " autofocus" },
    ));
    if !providers.is_empty() {
        inner.push_str("<p class=\"or\">or</p>");
        for p in providers {
            inner.push_str(&format!(
                "<a class=\"button secondary\" href=\"{}\">Sign in with {}</a>",
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

/// The look of every page the gateway draws itself: the portal's colours
/// (dark by default, light when the system prefers it), no external assets
/// and no script, so the sign-in page works without JavaScript and inside
/// the portal's strict CSP.
const STYLE: &str = "
:root{color-scheme:dark light;--bg:#09090b;--card:#18181b;--border:#27272a;--text:#e4e4e7;--muted:#a1a1aa;--input:#0f0f12;
--primary:#10b981;--primary-hover:#34d399;--on-primary:#04130d;--danger-bg:#3b0d0d;--danger-border:#7f1d1d;--danger-text:#fecaca;
--info-bg:#0c2a1f;--info-border:#065f46;--info-text:#a7f3d0}
@media (prefers-color-scheme: light){:root{--bg:#f4f4f5;--card:#ffffff;--border:#e4e4e7;--text:#18181b;--muted:#52525b;--input:#ffffff;
--primary:#059669;--primary-hover:#047857;--on-primary:#ffffff;--danger-bg:#fef2f2;--danger-border:#fecaca;--danger-text:#991b1b;
--info-bg:#ecfdf5;--info-border:#a7f3d0;--info-text:#065f46}}
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;background:var(--bg);color:var(--text);font:15px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif}
main{width:24rem;max-width:92vw;padding:2rem;background:var(--card);border:1px solid var(--border);border-radius:12px;box-shadow:0 10px 30px rgba(0,0,0,.25)}
main.wide{width:32rem;text-align:center}
.brand{display:flex;align-items:center;gap:.5rem;font-weight:700;font-size:1.15rem;margin:0 0 1.25rem}
.brand svg{width:1.75rem;height:1.75rem}
h1{font-size:1.2rem;margin:0 0 1rem} p{margin:.5rem 0} a{color:var(--primary)}
label{display:block;margin:.75rem 0;font-size:.9rem;color:var(--muted)}
input{display:block;width:100%;margin-top:.3rem;padding:.6rem .7rem;border:1px solid var(--border);border-radius:8px;background:var(--input);color:var(--text);font:inherit}
input:focus,button:focus-visible,.button:focus-visible{outline:2px solid var(--primary);outline-offset:2px}
button,.button{display:block;width:100%;margin-top:1.25rem;padding:.65rem;border:0;border-radius:8px;background:var(--primary);color:var(--on-primary);font:inherit;font-weight:600;text-align:center;text-decoration:none;cursor:pointer}
button:hover,.button:hover{background:var(--primary-hover)}
.button.secondary{background:transparent;color:var(--text);border:1px solid var(--border);margin-top:.6rem;font-weight:500}
.button.secondary:hover{background:var(--border)}
.notice{background:var(--danger-bg);border:1px solid var(--danger-border);color:var(--danger-text);border-radius:8px;padding:.6rem .8rem;margin:0 0 1rem}
.notice.info{background:var(--info-bg);border-color:var(--info-border);color:var(--info-text)}
.or{display:flex;align-items:center;gap:.75rem;color:var(--muted);margin:1.25rem 0 .25rem;font-size:.85rem}
.or::before,.or::after{content:\"\";flex:1;border-top:1px solid var(--border)}
.spin{width:28px;height:28px;margin:1rem auto;border:3px solid var(--border);border-top-color:var(--primary);border-radius:50%;animation:r 1s linear infinite}
@keyframes r{to{transform:rotate(360deg)}}
";

/// The portal's mark (the favicon's shape), inline.
const LOGO: &str = r##"<svg viewBox="0 0 32 32" aria-hidden="true"><rect width="32" height="32" rx="6" fill="#10b981"/><path d="M8 11l6 5-6 5" stroke="#0b1220" stroke-width="3" fill="none" stroke-linecap="round" stroke-linejoin="round"/><path d="M16 22h8" stroke="#0b1220" stroke-width="3" stroke-linecap="round"/></svg>"##;

fn shell(title: &str, inner: &str) -> String {
    shell_with(title, "", inner)
}

/// A page in the sign-in pages' look whose `<main>` carries `main_attrs`
/// (already escaped `data-…` attributes for a script file to read).
pub fn html_with_main(status: u16, title: &str, main_attrs: &str, inner: &str) -> Reply {
    Reply::new(
        status,
        "text/html; charset=utf-8",
        shell_with(title, main_attrs, inner),
    )
}

fn shell_with(title: &str, main_attrs: &str, inner: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="color-scheme" content="dark light"><title>{title} · slotgate</title>
<style>{STYLE}</style></head>
<body><main {main_attrs}><div class="brand">{LOGO}<span>slotgate</span></div>{inner}</main></body></html>
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
<meta name="color-scheme" content="dark light"><style>{STYLE}</style></head>
<body><main class="wide"><h1>{title}</h1>{spin}<p id="msg">{message}</p>{retry}</main>{script}</body></html>
"#,
        title = escape(title),
        message = escape(message),
    )
}

pub fn escape(s: &str) -> String {
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
