//! The web portal's files, served from `[slotgate.portal] dir` (the Vite
//! build, `web/dist`): `index.html` for every page the single-page app
//! draws, and the build's files. Paths reach this module only after
//! [`crate::routing`] refused dot segments, escapes, backslashes and empty
//! segments; here a file must also resolve (symlinks included) inside the
//! portal directory and be a regular file, so there is no directory listing
//! and no way out. Hashed `/assets/*` are cached for a year; `index.html`
//! never (it names the current hashes). Files are read on the blocking
//! pool.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::pages::{self, Reply};

pub struct Portal {
    dir: PathBuf,
}

/// Why the portal directory cannot be served (for `check-config` and the
/// startup warning).
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let index = dir.join("index.html");
    if !dir.is_dir() {
        return Err(format!(
            "slotgate.portal.dir: {} is not a directory (build the portal with scripts/build-web.sh)",
            dir.display()
        ));
    }
    if !index.is_file() {
        return Err(format!(
            "slotgate.portal.dir: {} has no index.html (build the portal with scripts/build-web.sh)",
            dir.display()
        ));
    }
    Ok(())
}

/// The content type of a build file, by extension; `None` for anything the
/// portal does not ship (refused with 404 rather than guessed).
pub fn content_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "eot" => "application/vnd.ms-fontobject",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        _ => return None,
    })
}

/// Whether a build file's name carries its content hash (Vite:
/// `assets/<name>-<8 characters>.<ext>`), so it may be cached for good.
pub fn is_hashed(rel: &str) -> bool {
    let Some(name) = rel.strip_prefix("assets/") else {
        return false;
    };
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let n = stem.len();
    n > 9
        && stem.as_bytes()[n - 9] == b'-'
        && stem.as_bytes()[n - 8..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

impl Portal {
    /// `None` when no portal is configured, or (with a warning) when the
    /// directory is missing: the gateway then serves as without a portal.
    pub fn new(dir: Option<&Path>) -> Option<Portal> {
        let dir = dir?;
        if let Err(why) = check_dir(dir) {
            tracing::warn!("{why}; serving without the web portal");
            return None;
        }
        let dir = dir.canonicalize().ok()?;
        Some(Portal { dir })
    }

    async fn read(&self, rel: String) -> Option<Bytes> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let path = dir.join(&rel).canonicalize().ok()?;
            if !path.starts_with(&dir) || !path.metadata().ok()?.is_file() {
                return None;
            }
            std::fs::read(path).ok().map(Bytes::from)
        })
        .await
        .ok()
        .flatten()
    }

    /// The app's `index.html` (every portal page).
    pub async fn index(&self) -> Reply {
        match self.read("index.html".into()).await {
            Some(body) => pages::bytes(200, body, "text/html; charset=utf-8"),
            None => pages::error(
                503,
                "portal_missing",
                "Portal unavailable",
                "The web portal's files are missing on the server; tell an administrator.",
                true,
            ),
        }
    }

    /// A build file; 404 for anything that is not a regular file inside the
    /// portal directory with a known type.
    pub async fn file(&self, rel: &str, html: bool) -> Reply {
        let not_found = || pages::not_found(html);
        if rel == "index.html" {
            return not_found();
        }
        let Some(ctype) = content_type(rel) else {
            return not_found();
        };
        match self.read(rel.to_string()).await {
            None => not_found(),
            Some(body) => {
                let cache = if is_hashed(rel) {
                    "public, max-age=31536000, immutable"
                } else {
                    "public, max-age=3600"
                };
                pages::bytes(200, body, ctype).with_header("cache-control", cache)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        assert_eq!(
            content_type("assets/index-1a2b.js"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(
            content_type("assets/x.CSS"),
            Some("text/css; charset=utf-8")
        );
        assert_eq!(content_type("assets/f.woff2"), Some("font/woff2"));
        assert_eq!(content_type("assets/noext"), None);
        assert_eq!(content_type("assets/x.php"), None);
    }

    #[test]
    fn only_hashed_names_are_cached_for_good() {
        assert!(is_hashed("assets/index-DPdgXpqo.js"));
        assert!(is_hashed("assets/primeicons-BZF8q66I.eot"));
        assert!(is_hashed(
            "assets/AdminGate.vue_vue_type_script_setup_true_lang-Cy6l-_9v.js"
        ));
        assert!(!is_hashed("assets/favicon.svg"));
        assert!(!is_hashed("favicon-DPdgXpqo.svg"));
        assert!(!is_hashed("assets/app-1.js"));
    }

    #[tokio::test]
    async fn serves_only_regular_files_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::create_dir(dir.path().join("assets/sub.js")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<!doctype html>").unwrap();
        std::fs::write(dir.path().join("assets/app-AbCd1234.js"), "1").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.js"), "s").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.js"),
            dir.path().join("assets/link.js"),
        )
        .unwrap();
        let p = Portal::new(Some(dir.path())).unwrap();
        let ok = p.file("assets/app-AbCd1234.js", false).await;
        assert_eq!(ok.status, 200);
        assert_eq!(&ok.body[..], b"1");
        assert!(ok
            .headers
            .iter()
            .any(|(n, v)| *n == "cache-control" && v.contains("immutable")));
        assert_eq!(p.file("assets/link.js", false).await.status, 404);
        assert_eq!(p.file("assets/sub.js", false).await.status, 404);
        assert_eq!(p.file("assets/none.js", false).await.status, 404);
        assert_eq!(p.file("index.html", false).await.status, 404);
        assert_eq!(p.index().await.status, 200);
        assert!(Portal::new(Some(&dir.path().join("nope"))).is_none());
        assert!(check_dir(outside.path())
            .unwrap_err()
            .contains("no index.html"));
    }
}
