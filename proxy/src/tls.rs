//! The TLS certificate: where it comes from and how it changes. The HTTPS
//! listeners resolve their certificate through a [`CertStore`] on every
//! handshake, so replacing the store's contents changes what new handshakes
//! see without touching open connections. Operator-provided PEM files are
//! watched (notify on their directories) and reloaded when they change; a
//! file that fails to load leaves the previous certificate in place. With no
//! files configured, a self-signed certificate is generated once into the
//! data directory. This module owns no listener and no socket.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{anyhow, Context};
use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::Metrics;

/// The certificate every HTTPS listener presents.
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertStore")
    }
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: RwLock::new(Arc::new(key)),
        })
    }

    pub fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

fn provider() -> Arc<CryptoProvider> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Load a PEM certificate chain and its private key, and check they match.
pub fn load_pair(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!("{} holds no PEM certificate", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .with_context(|| format!("unsupported private key in {}", key.display()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match()
        .map_err(|e| anyhow!("{} does not match {}: {e}", key.display(), cert.display()))?;
    Ok(pair)
}

/// Paths of the generated certificate in `dir`.
pub fn self_signed_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("selfsigned.crt"), dir.join("selfsigned.key"))
}

/// Make sure a self-signed certificate exists in `dir`; returns its paths
/// and whether it was generated now.
pub fn ensure_self_signed(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, bool)> {
    let (cert, key) = self_signed_paths(dir);
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_string());
        }
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    write_private(
        &key,
        generated.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_private(&cert, generated.cert.pem().as_bytes(), 0o644)?;
    Ok((cert, key, true))
}

/// Write through a temporary file and rename, so a reader never sees half a
/// file.
fn write_private(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Watch `cert` and `key` and swap them into `store` when they change.
/// Runs on its own thread for the life of the process.
pub fn watch(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .context("starting the certificate watcher")?;
    let mut dirs: Vec<PathBuf> = [&cert, &key]
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.dedup();
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
    }
    let names: Vec<_> = [&cert, &key]
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_owned()))
        .collect();
    std::thread::Builder::new()
        .name("slotgate-cert-watch".into())
        .spawn(move || {
            let _watcher = watcher;
            while let Ok(res) = rx.recv() {
                let relevant = match res {
                    Ok(ev) => ev
                        .paths
                        .iter()
                        .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n))),
                    Err(_) => true,
                };
                if !relevant {
                    continue;
                }
                // Certificate and key usually change within moments of each
                // other; let the burst settle before reading either.
                std::thread::sleep(Duration::from_millis(200));
                while rx.try_recv().is_ok() {}
                match load_pair(&cert, &key) {
                    Ok(pair) => {
                        store.replace(pair);
                        metrics.tls_reloads_ok.fetch_add(1, Relaxed);
                        tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        metrics.tls_reloads_failed.fetch_add(1, Relaxed);
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "TLS certificate changed but did not load; keeping the previous one"
                        );
                    }
                }
            }
        })
        .context("spawning the certificate watcher")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_generated_once_and_loads() {
        let dir = std::env::temp_dir().join(format!("sg-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (cert, key, created) = ensure_self_signed(&dir).unwrap();
        assert!(created);
        let first = std::fs::read(&cert).unwrap();
        let (_, _, created) = ensure_self_signed(&dir).unwrap();
        assert!(!created);
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        load_pair(&cert, &key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mismatched_pair_is_refused() {
        let a = std::env::temp_dir().join(format!("sg-tls-a-{}", std::process::id()));
        let b = std::env::temp_dir().join(format!("sg-tls-b-{}", std::process::id()));
        let (cert_a, _, _) = ensure_self_signed(&a).unwrap();
        let (_, key_b, _) = ensure_self_signed(&b).unwrap();
        let err = load_pair(&cert_a, &key_b).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        let err = load_pair(&a.join("missing.crt"), &key_b)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.crt"), "{err}");
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }
}
