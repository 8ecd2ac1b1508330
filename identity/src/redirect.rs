//! Return-to (`next`) parameters: only same-origin relative paths, so a
//! sign-in link can never send a user to another site (no open redirect).

/// `Some(path)` when `next` is a safe same-origin path, else `None`.
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= 2048
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace())
        // An encoded slash or backslash at the start can be decoded into
        // "//host" by a later hop.
        && !next.to_ascii_lowercase().starts_with("/%2f")
        && !next.to_ascii_lowercase().starts_with("/%5c");
    ok.then_some(next)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_same_origin_paths_pass() {
        for ok in ["/", "/slot/alice/", "/admin/slots?x=1#y", "/a/%2F"] {
            assert_eq!(safe_next(ok), Some(ok), "{ok}");
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "\\\\evil.example",
            "javascript:alert(1)",
            "evil.example",
            "/%2F%2Fevil.example",
            "/%5cevil.example",
            "/\t/evil.example",
            "/ok\r\nSet-Cookie: x=1",
            "",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }
}
