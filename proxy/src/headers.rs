//! Header policy in both directions. Downstream, every response (proxied
//! or generated) gets the same security headers: a `frame-ancestors`
//! allowlist, `nosniff`, a referrer policy, HSTS under TLS and the request
//! id. Upstream, a slot sees only what it needs: the ttyd auth header with a
//! short opaque value, the request id and forwarding facts, and never the
//! client's cookies or credentials. Values are built once at startup.
//!
//! Headers are edited through [`http::HeaderMap`] with names parsed once
//! ([`edit_response`], [`edit_request`]), not through Pingora's
//! `insert_header`, which parses every name from bytes and keeps a second,
//! case-preserving map (~1 500 instructions per header on the request path).
//! What goes on the wire then carries canonical name case (`Content-Type`;
//! names outside the standard set in lower case), which HTTP/1.1 peers
//! treat the same (names are case-insensitive).

use std::net::IpAddr;

use http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, SERVER, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::ErrorType::InvalidHTTPHeader;
use pingora::{OrErr, Result};

use crate::config::Config;

pub const REQUEST_ID: &str = "x-request-id";
const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Room for `n` more headers in `h`: the inserts that follow cannot grow
/// the map (nor panic at `http`'s 32 768-entry limit; Pingora's parser
/// refuses far fewer headers long before).
fn reserve(h: &mut HeaderMap, n: usize) -> Result<()> {
    h.try_reserve(n)
        .or_err(InvalidHTTPHeader, "too many headers")
}

/// Edit a response's headers as one [`HeaderMap`] (see the module docs).
/// The status, version, extensions and a non-default reason phrase are kept.
pub fn edit_response(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<()>,
) -> Result<()> {
    let reason = match resp.get_reason_phrase() {
        r if r == resp.status.canonical_reason() => None,
        r => r.map(str::to_owned),
    };
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, empty));
    let edited = edit(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    resp.set_reason_phrase(reason.as_deref())?;
    edited
}

/// Edit a request's headers as one [`HeaderMap`] (see the module docs).
/// Method, URI, version and extensions are kept, and so are a
/// request-target the URI does not reproduce (absolute-form, non-UTF-8)
/// and HTTP/2's end-of-stream flag.
pub fn edit_request(
    req: &mut RequestHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<()>,
) -> Result<()> {
    let from_uri = req.uri.path_and_query().map(|p| p.as_str().as_bytes());
    let round_trips = req.raw_path_is_utf8() && from_uri == Some(req.raw_path());
    let raw = (!round_trips).then(|| req.raw_path().to_vec());
    let end_stream = req.send_end_stream();
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(req, empty));
    let edited = edit(&mut parts.headers);
    *req = RequestHeader::from(parts);
    if let Some(raw) = raw {
        req.set_raw_path(&raw)?;
    }
    if let Some(end) = end_stream {
        req.set_send_end_stream(end);
    }
    edited
}

/// Precomputed downstream header values.
pub struct HeaderPolicy {
    csp: HeaderValue,
    /// The policy for the portal's pages and the sign-in page: scripts,
    /// styles, workers and connections (WebSockets included) from this
    /// origin only, no inline script and no `eval`, no plugins. WebAssembly
    /// may compile (`'wasm-unsafe-eval'`): the recording player is a wasm
    /// module served from this origin.
    portal_csp: String,
    frame_options: Option<HeaderValue>,
    hsts: Option<HeaderValue>,
}

impl HeaderPolicy {
    pub fn new(cfg: &Config) -> HeaderPolicy {
        let csp = format!("frame-ancestors {}", cfg.frame_ancestors.join(" "));
        // Old browsers ignore frame-ancestors; give them the closest
        // X-Frame-Options where one exists. Listing other origins has no
        // X-Frame-Options equivalent, and sending one would break the
        // embedding that CSP allows.
        let frame_options = match cfg.frame_ancestors.as_slice() {
            [one] if one == "'none'" => Some(HeaderValue::from_static("DENY")),
            [one] if one == "'self'" => Some(HeaderValue::from_static("SAMEORIGIN")),
            _ => None,
        };
        let hsts = match (&cfg.tls, cfg.hsts_max_age) {
            (Some(_), Some(age)) => {
                HeaderValue::from_str(&format!("max-age={}", age.as_secs())).ok()
            }
            _ => None,
        };
        let portal_csp = format!(
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; \
             worker-src 'self' blob:; object-src 'none'; base-uri 'none'; {csp}"
        );
        HeaderPolicy {
            portal_csp,
            // Validated in config: only keywords, schemes and origins.
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'self'")),
            frame_options,
            hsts,
        }
    }

    /// The `Content-Security-Policy` of portal and sign-in pages.
    pub fn portal_csp(&self) -> &str {
        &self.portal_csp
    }

    /// Security headers and the request id on a response to the client.
    pub fn downstream(&self, resp: &mut ResponseHeader, request_id: &str) -> Result<()> {
        let request_id = HeaderValue::from_str(request_id)
            .or_err(InvalidHTTPHeader, "request id is not a header value")?;
        edit_response(resp, |h| {
            reserve(h, 6)?;
            h.insert(CONTENT_SECURITY_POLICY, self.csp.clone());
            if let Some(v) = &self.frame_options {
                h.insert(X_FRAME_OPTIONS, v.clone());
            }
            h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
            if let Some(v) = &self.hsts {
                h.insert(STRICT_TRANSPORT_SECURITY, v.clone());
            }
            h.insert(REQUEST_ID_NAME, request_id);
            h.remove(SERVER);
            Ok(())
        })
    }
}

/// What a slot must never receive from the client: credentials meant for
/// the gateway, forwarding claims the gateway makes itself, WebSocket
/// compression (the gateway inspects frames).
const NEVER_UPSTREAM: &[&str] = &[
    "cookie",
    "authorization",
    "proxy-authorization",
    "forwarded",
    "x-real-ip",
    "x-forwarded-for",
    "sec-websocket-extensions",
    slotapi::TTYD_AUTH_HEADER,
    REQUEST_ID,
];

/// How the request a slot receives is rewritten. The names to drop are
/// parsed once; per request the client's headers are scanned once against
/// them (a typical request carries none), instead of a lookup per name.
pub struct UpstreamPolicy {
    drop: http::HeaderMap<()>,
    /// [`slotapi::TTYD_AUTH_HEADER`], parsed.
    ttyd_auth: HeaderName,
}

impl UpstreamPolicy {
    /// `extra`: more header names no client may pass on (identity headers
    /// of the trusted-header mode and of common auth proxies). Names that
    /// are not valid header names cannot arrive and are skipped.
    pub fn new<S: AsRef<str>>(extra: &[S]) -> UpstreamPolicy {
        let mut drop = http::HeaderMap::with_capacity(NEVER_UPSTREAM.len() + extra.len());
        let extra = extra.iter().map(|s| s.as_ref());
        for name in NEVER_UPSTREAM.iter().copied().chain(extra) {
            if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
                drop.insert(n, ());
            }
        }
        let ttyd_auth = HeaderName::from_bytes(slotapi::TTYD_AUTH_HEADER.as_bytes())
            .expect("TTYD_AUTH_HEADER is a valid header name");
        UpstreamPolicy { drop, ttyd_auth }
    }

    /// Rewrite the request a slot receives.
    pub fn apply(
        &self,
        req: &mut RequestHeader,
        request_id: &str,
        client: Option<&str>,
        tls: bool,
    ) -> Result<()> {
        let value =
            |v: &str| HeaderValue::from_str(v).or_err(InvalidHTTPHeader, "not a header value");
        // ttyd -H: any non-empty value under 30 bytes is accepted; a
        // client-supplied value is dropped below, never passed on.
        let auth = value(&request_id[..request_id.len().min(16)])?;
        let request_id = value(request_id)?;
        let client = client.map(value).transpose()?;
        edit_request(req, |h| {
            let doomed: Vec<HeaderName> = h
                .keys()
                .filter(|k| self.drop.contains_key(*k))
                .cloned()
                .collect();
            for name in &doomed {
                h.remove(name);
            }
            reserve(h, 4)?;
            h.insert(self.ttyd_auth.clone(), auth);
            h.insert(REQUEST_ID_NAME, request_id);
            if let Some(ip) = client {
                h.insert(X_FORWARDED_FOR, ip);
            }
            let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
            h.insert(X_FORWARDED_PROTO, proto);
            Ok(())
        })
    }
}

/// What a trusted reverse proxy says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub client: IpAddr,
    /// `X-Forwarded-Proto`, when it says `https` or `http`.
    pub https: Option<bool>,
}

/// Believe `X-Forwarded-For` and `X-Forwarded-Proto` only when the TCP
/// peer is one of `trusted` proxies. The client is the right-most address
/// in the chain that is not itself a trusted proxy (addresses further left
/// were written by the client and prove nothing); a malformed entry ends
/// the walk there; no header at all leaves the peer as the client. `None`
/// when the peer is not a trusted proxy.
pub fn forwarded(req: &RequestHeader, peer: IpAddr, trusted: &[IpNet]) -> Option<Forwarded> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return None;
    }
    let mut client = None;
    'walk: for value in req.headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else { break };
        for hop in value.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if is_trusted(&ip) => client = Some(ip),
                Ok(ip) => {
                    client = Some(ip);
                    break 'walk;
                }
                Err(_) => break 'walk,
            }
        }
    }
    let https = req
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|p| match p.trim().to_ascii_lowercase().as_str() {
            "https" => Some(true),
            "http" => Some(false),
            _ => None,
        });
    Some(Forwarded {
        client: client.unwrap_or(peer),
        https,
    })
}

/// An address as text, as `Display` writes it; IPv4 (every request's
/// `X-Forwarded-For` and access-log line) without the formatting
/// machinery, which cost ~1 300 instructions per request.
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if octet >= 100 {
                    s.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    s.push(char::from(b'0' + octet / 10 % 10));
                }
                s.push(char::from(b'0' + octet % 10));
            }
            s
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// A fresh request id: 16 lowercase hex characters.
pub fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotapi::config::ConfigFile;

    #[test]
    fn ip_text_writes_what_display_writes() {
        for octet in 0..=255u8 {
            for ip in [
                IpAddr::from([octet, 0, 10, 255]),
                IpAddr::from([1, octet, 100, 9]),
                IpAddr::from([127, 0, 0, octet]),
            ] {
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
        for v6 in [
            "::1",
            "fe80::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = v6.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let req = |xff: &[&str], proto: Option<&str>| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            for v in xff {
                r.append_header("x-forwarded-for", *v).unwrap();
            }
            if let Some(p) = proto {
                r.insert_header("x-forwarded-proto", p).unwrap();
            }
            r
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxy = ip("10.0.0.5");
        // An untrusted peer's headers are ignored entirely.
        assert_eq!(
            forwarded(&req(&["1.2.3.4"], Some("https")), ip("192.0.2.9"), &nets),
            None
        );
        // The right-most untrusted hop is the client; spoofed entries to
        // its left do not count.
        let f = forwarded(
            &req(&["6.6.6.6, 1.2.3.4, 10.0.0.7"], Some("https")),
            proxy,
            &nets,
        )
        .unwrap();
        assert_eq!(
            f,
            Forwarded {
                client: ip("1.2.3.4"),
                https: Some(true)
            }
        );
        // Several header lines read as one list.
        let f = forwarded(&req(&["6.6.6.6", "1.2.3.4"], Some("http")), proxy, &nets).unwrap();
        assert_eq!(
            f,
            Forwarded {
                client: ip("1.2.3.4"),
                https: Some(false)
            }
        );
        // Garbage stops the walk where it is.
        let f = forwarded(&req(&["1.2.3.4, junk, 10.0.0.7"], None), proxy, &nets).unwrap();
        assert_eq!(
            f,
            Forwarded {
                client: ip("10.0.0.7"),
                https: None
            }
        );
        // No header: the proxy itself; an odd proto is not believed.
        let f = forwarded(&req(&[], Some("gopher")), proxy, &nets).unwrap();
        assert_eq!(
            f,
            Forwarded {
                client: proxy,
                https: None
            }
        );
        assert_eq!(forwarded(&req(&["1.2.3.4"], None), proxy, &[]), None);
    }

    fn cfg(text: &str) -> Config {
        let f = ConfigFile::parse(std::path::Path::new("/x/c.toml"), text).unwrap();
        Config::from_file(&f).unwrap()
    }

    #[test]
    fn downstream_headers() {
        let p = HeaderPolicy::new(&cfg(
            "[slotgate]\nframe_ancestors = [\"'self'\", \"https://app.example.com\"]\n",
        ));
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("server", "ttyd").unwrap();
        p.downstream(&mut resp, "abcd").unwrap();
        let h = |n: &str| resp.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            h("content-security-policy").unwrap(),
            "frame-ancestors 'self' https://app.example.com"
        );
        assert_eq!(h("x-frame-options"), None);
        assert_eq!(h("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(h("strict-transport-security").unwrap(), "max-age=15552000");
        assert_eq!(h("x-request-id").unwrap(), "abcd");
        assert_eq!(h("server"), None);

        let plain = HeaderPolicy::new(&cfg("[slotgate]\ntls = false\n"));
        let mut resp = ResponseHeader::build(200, None).unwrap();
        plain.downstream(&mut resp, "x").unwrap();
        assert!(resp.headers.get("strict-transport-security").is_none());
        assert_eq!(resp.headers.get("x-frame-options").unwrap(), "SAMEORIGIN");
    }

    #[test]
    fn upstream_strips_credentials_and_sets_auth() {
        let mut req = RequestHeader::build("GET", b"/slot/a/ws", None).unwrap();
        req.insert_header("cookie", "sg_session=secret").unwrap();
        req.insert_header("authorization", "Bearer x").unwrap();
        req.insert_header(slotapi::TTYD_AUTH_HEADER, "forged")
            .unwrap();
        req.insert_header("sec-websocket-extensions", "permessage-deflate")
            .unwrap();
        req.insert_header("x-forwarded-for", "1.2.3.4").unwrap();
        req.insert_header("x-remote-user", "mallory").unwrap();
        req.insert_header("X-Forwarded-Email", "m@example.com")
            .unwrap();
        req.insert_header("user-agent", "test").unwrap();
        let rid = new_request_id();
        let policy = UpstreamPolicy::new(&["x-remote-user", "x-forwarded-email", "bad name"]);
        policy
            .apply(&mut req, &rid, Some("127.0.0.1"), true)
            .unwrap();
        let h = |n: &str| req.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(h("cookie"), None);
        assert_eq!(h("authorization"), None);
        assert_eq!(h("sec-websocket-extensions"), None);
        assert_eq!(h("x-remote-user"), None);
        assert_eq!(h("x-forwarded-email"), None);
        assert_eq!(h("user-agent").unwrap(), "test", "other headers pass");
        let auth = h(slotapi::TTYD_AUTH_HEADER).unwrap();
        assert!(!auth.is_empty() && auth.len() < 30 && auth != "forged");
        assert_eq!(h("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(h("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h("x-request-id").unwrap(), rid);
        assert_eq!(rid.len(), 16);
        // What goes on the wire agrees with the map.
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap().to_ascii_lowercase();
        assert!(
            !wire.contains("cookie") && !wire.contains("mallory"),
            "{wire}"
        );
        assert_eq!(wire.matches("x-forwarded-for").count(), 1, "{wire}");
    }

    #[test]
    fn without_a_client_address_a_forwarded_for_claim_is_dropped() {
        let mut req = RequestHeader::build("GET", b"/slot/a/", None).unwrap();
        req.insert_header("x-forwarded-for", "6.6.6.6").unwrap();
        let no_extra: &[&str] = &[];
        UpstreamPolicy::new(no_extra)
            .apply(&mut req, "0123456789abcdef", None, false)
            .unwrap();
        assert!(req.headers.get("x-forwarded-for").is_none());
        assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), "http");
    }

    #[test]
    fn editing_a_response_keeps_everything_but_the_edit() {
        let mut resp = ResponseHeader::build(299, None).unwrap();
        resp.set_reason_phrase(Some("Fine Indeed")).unwrap();
        resp.set_version(http::Version::HTTP_10);
        resp.insert_header("X-Custom", "1").unwrap();
        edit_response(&mut resp, |h| {
            h.insert(SERVER, HeaderValue::from_static("x"));
            Ok(())
        })
        .unwrap();
        assert_eq!(resp.status.as_u16(), 299);
        assert_eq!(resp.version, http::Version::HTTP_10);
        assert_eq!(resp.get_reason_phrase(), Some("Fine Indeed"));
        assert_eq!(resp.headers.get("x-custom").unwrap(), "1");
        assert_eq!(resp.headers.get("server").unwrap(), "x");
        let mut wire = Vec::new();
        resp.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(
            wire.contains("Server: x\r\n") && wire.contains("x-custom: 1\r\n"),
            "{wire}"
        );

        // A failed edit is reported and leaves a usable response.
        let err = edit_response(&mut resp, |_| {
            Err(pingora::Error::explain(InvalidHTTPHeader, "refused"))
        });
        assert!(err.is_err());
        assert_eq!(resp.status.as_u16(), 299);
    }

    #[test]
    fn editing_a_request_keeps_a_target_the_uri_does_not_reproduce() {
        let no_extra: &[&str] = &[];
        let policy = UpstreamPolicy::new(no_extra);
        for target in [
            &b"/slot/a/token?x=1"[..],
            b"http://example.com/slot/a/token?x=1",
            b"/slot/a/\xff",
        ] {
            let mut req = RequestHeader::build("GET", target, None).unwrap();
            let (uri, utf8) = (req.uri.clone(), req.raw_path_is_utf8());
            policy
                .apply(&mut req, "0123456789abcdef", None, false)
                .unwrap();
            assert_eq!(req.raw_path(), target);
            assert_eq!((&req.uri, req.raw_path_is_utf8()), (&uri, utf8));
            assert_eq!(req.method, http::Method::GET);
            assert_eq!(req.headers.get("x-request-id").unwrap(), "0123456789abcdef");
        }
    }
}
