//! A real OpenID Provider for tests: `tests/oidc/provider.mjs` (the
//! certified `oidc-provider` package) started on loopback, plus a driver
//! that walks its development login and consent forms over HTTP like a
//! browser would, up to the redirect back to the relying party.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

pub struct OpenIdProvider {
    pub issuer: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl OpenIdProvider {
    /// Start the provider with `clients` (oidc-provider client metadata) and
    /// `users` (`{"alice": {"groups": [...], "email": ...}}`).
    pub fn start(clients: serde_json::Value, users: serde_json::Value) -> OpenIdProvider {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("op.json");
        std::fs::write(
            &cfg,
            json!({"port": 0, "clients": clients, "users": users}).to_string(),
        )
        .unwrap();
        let script = crate::repo_root().join("tests/oidc/provider.mjs");
        assert!(
            crate::repo_root()
                .join("tests/oidc/node_modules/oidc-provider")
                .exists(),
            "oidc-provider is not installed: run scripts/install-deps.sh (npm ci in tests/oidc)"
        );
        let mut child = Command::new("node")
            .arg(script)
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node must be installed to run the OpenID Provider");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("provider did not start ({e}): {line:?}"));
        OpenIdProvider {
            issuer: v["issuer"].as_str().unwrap().to_string(),
            child,
            _dir: dir,
        }
    }
}

/// The client secret [`for_gateway`] registers.
pub const CLIENT_SECRET: &str = "test-secret-0123456789";

/// A provider with a gateway on `https://127.0.0.1:<port>` registered as
/// client `slotgate`, and the `[slotgate]` keys that use it: provider `op`
/// shown as "Test IdP", local accounts too, members of group `eng` allowed.
pub fn for_gateway(port: u16, users: serde_json::Value) -> (OpenIdProvider, String) {
    let redirect = format!("https://127.0.0.1:{port}/auth/oidc/op/callback");
    let op = OpenIdProvider::start(
        json!([{ "client_id": "slotgate", "client_secret": CLIENT_SECRET,
                 "redirect_uris": [redirect],
                 "post_logout_redirect_uris": [format!("https://127.0.0.1:{port}/auth/login")] }]),
        users,
    );
    let config = format!(
        "auth = [\"local\", \"oidc\"]\n[[slotgate.oidc]]\nname = \"op\"\ndisplay_name = \"Test IdP\"\n\
         issuer = \"{}\"\nclient_id = \"slotgate\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
         redirect_uri = \"{redirect}\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\n\
         allowed_groups = [\"eng\"]\n",
        op.issuer
    );
    (op, config)
}

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attr<'a>(html: &'a str, after: &str, name: &str) -> Option<&'a str> {
    let at = html.find(after)?;
    let rest = &html[at..];
    let key = format!("{name}=\"");
    let start = rest.find(&key)? + key.len();
    let end = rest[start..].find('"')?;
    Some(&rest[start..start + end])
}

fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("<input") {
        let tag_end = rest[at..].find('>').map_or(rest.len(), |e| at + e);
        let tag = &rest[at..tag_end];
        if tag.contains("type=\"hidden\"") {
            if let (Some(n), Some(v)) = (attr(tag, "<input", "name"), attr(tag, "<input", "value"))
            {
                out.push((n.to_string(), v.to_string()));
            }
        }
        rest = &rest[tag_end..];
    }
    out
}

/// Follow `auth_url` through the provider's login (as `login`) and consent
/// pages with `browser` (a cookie-keeping client that does not follow
/// redirects) until it redirects to a URL starting with `redirect_prefix`;
/// returns that URL.
pub async fn drive_login(
    browser: &reqwest::Client,
    auth_url: &str,
    login: &str,
    redirect_prefix: &str,
) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(auth_url)?;
    let mut form: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        let resp = match form.take() {
            Some(f) => browser.post(url.clone()).form(&f).send().await?,
            None => browser.get(url.clone()).send().await?,
        };
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| anyhow::anyhow!("redirect without location"))?;
            let next = url.join(loc)?;
            if next.as_str().starts_with(redirect_prefix) {
                return Ok(next.to_string());
            }
            url = next;
            continue;
        }
        let html = resp.text().await?;
        if !status.is_success() {
            anyhow::bail!(
                "provider answered {status}: {}",
                &html[..html.len().min(300)]
            );
        }
        let action = attr(&html, "<form", "action").ok_or_else(|| {
            anyhow::anyhow!("no form on provider page: {}", &html[..html.len().min(300)])
        })?;
        url = url.join(action)?;
        // The form's hidden fields (`prompt=login` / `prompt=consent`),
        // plus the credentials on the login page (any password works).
        let mut fields = hidden_inputs(&html);
        if html.contains("name=\"login\"") {
            fields.push(("login".into(), login.into()));
            fields.push(("password".into(), "any".into()));
        }
        form = Some(fields);
    }
    anyhow::bail!("login did not finish within 20 steps")
}

/// A browser-like HTTP client: keeps cookies, does not follow redirects,
/// accepts the gateway's self-signed certificate.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}
