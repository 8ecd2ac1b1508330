//! The optional plain-HTTP listener whose only job is sending browsers to
//! HTTPS. It answers every request with a 308 to the same path on the HTTPS
//! port and proxies nothing, so no slot is ever reachable without TLS.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

pub struct RedirectToHttps {
    /// Port of the HTTPS listener (omitted from the URL when 443).
    pub https_port: u16,
}

/// Where to send a request for `host` (the Host header) and `target`.
/// `None` when the host is missing or not a plain host name / address.
pub fn location(host: Option<&str>, target: &str, https_port: u16) -> Option<String> {
    let host = host?;
    let name = match host.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next()?),
        None => host.split(':').next()?.to_string(),
    };
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !valid {
        return None;
    }
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = if target.starts_with('/') { target } else { "/" };
    Some(format!("https://{name}{port}{target}"))
}

#[async_trait]
impl ServeHttp for RedirectToHttps {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        crate::connections::headers_read();
        let req = session.req_header();
        let host = req.headers.get("host").and_then(|v| v.to_str().ok());
        let target = String::from_utf8_lossy(req.raw_path()).into_owned();
        let builder = Response::builder()
            .header("cache-control", "no-store")
            .header("connection", "close");
        let resp = match location(host, &target, self.https_port) {
            Some(loc) => builder
                .status(308)
                .header("location", &loc)
                .header("content-type", "text/plain; charset=utf-8")
                .body(format!("Use {loc}\n").into_bytes()),
            None => builder
                .status(400)
                .header("content-type", "text/plain; charset=utf-8")
                .body(b"Missing or invalid Host header\n".to_vec()),
        };
        resp.unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let cases = [
            (
                Some("host.lan"),
                "/slot/a/",
                7681,
                Some("https://host.lan:7681/slot/a/"),
            ),
            (
                Some("host.lan:80"),
                "/x?y=1",
                443,
                Some("https://host.lan/x?y=1"),
            ),
            (Some("[::1]:8080"), "/", 7681, Some("https://[::1]:7681/")),
            (Some("10.0.0.2"), "*", 7681, Some("https://10.0.0.2:7681/")),
            (Some("evil.com/x"), "/", 7681, None),
            (Some("a\"b"), "/", 7681, None),
            (None, "/", 7681, None),
        ];
        for (host, target, port, want) in cases {
            assert_eq!(
                location(host, target, port).as_deref(),
                want,
                "{host:?} {target}"
            );
        }
    }
}
