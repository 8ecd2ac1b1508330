//! Wiring: from a validated [`Config`] to a running Pingora server with the
//! gateway service on its listeners, the optional HTTPS redirect service,
//! the access log writer and the certificate watcher. Checks that can fail
//! (certificates load, addresses bind, the log opens) run before Pingora
//! starts, so a bad setup exits with a clear error instead of a panic in a
//! worker thread.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::access_log::AccessLog;
use crate::config::{AuthMode, Config, TlsSource};
use crate::connections::{AcceptFilter, ConnectionLimits, Guarded};
use crate::gateway::Gateway;
use crate::lifecycle::{Lifecycle, Successor};
use crate::metrics::Metrics;
use crate::redirect::RedirectToHttps;
use crate::slots::Slots;
use crate::tls::{self, CertStore};

/// The certificate and key files in use, generating the self-signed pair if
/// that is the configured source.
pub fn certificate_files(src: &TlsSource) -> anyhow::Result<(PathBuf, PathBuf)> {
    match src {
        TlsSource::Files { cert, key } => Ok((cert.clone(), key.clone())),
        TlsSource::SelfSigned { dir } => {
            let (cert, key, created) = tls::ensure_self_signed(dir)?;
            if created {
                tracing::warn!(
                    cert = %cert.display(),
                    "no certificate configured: generated a self-signed certificate; browsers will warn until you set slotgate.cert and slotgate.key"
                );
            } else {
                tracing::info!(cert = %cert.display(), "using the self-signed certificate generated earlier");
            }
            Ok((cert, key))
        }
    }
}

/// Everything `check-config` can verify without starting: the certificate
/// loads and the access log directory can be created.
pub fn preflight(cfg: &Config) -> anyhow::Result<()> {
    if let Some(TlsSource::Files { cert, key }) = &cfg.tls {
        tls::load_pair(cert, key).context("slotgate.cert / slotgate.key")?;
    }
    if cfg.access_log.enabled {
        if let Some(dir) = cfg.access_log.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("slotgate.access_log.path: cannot create {}", dir.display())
            })?;
        }
    }
    Ok(())
}

/// Bind each address once to see that it can be, except those a reload
/// hands over (the old gateway is listening on them).
fn check_bindable(addrs: &[SocketAddr], successor: Option<&Successor>) -> anyhow::Result<()> {
    for addr in addrs {
        if successor.is_some_and(|s| s.inherited.contains(&addr.to_string())) {
            continue;
        }
        TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    }
    Ok(())
}

/// Each client connection's read buffer. Pingora's default is 64 KiB,
/// which Tokio zero-fills, for every connection an idle browser tab or an
/// open terminal holds; what arrives from a browser is request headers
/// and keystrokes. The WebSocket relay reads 16 KiB at a time, so a read
/// that size skips the buffer instead of copying through it.
const CLIENT_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(crate::upgrade::CHUNK),
    write: None,
};

/// Below this many open files the gateway warns at start: each open
/// terminal holds two sockets (the browser's and the slot's).
const FEW_OPEN_FILES: u64 = 4096;

pub fn run(cfg: Config) -> anyhow::Result<()> {
    let files = slotapi::rlimit::raise_open_files();
    if files.after < FEW_OPEN_FILES {
        tracing::warn!(
            limit = files.after,
            was = files.before,
            "the open-files limit is low: each open terminal holds two; raise the hard limit (systemd: LimitNOFILE=)"
        );
    } else {
        tracing::info!(limit = files.after, was = files.before, "open-files limit");
    }
    preflight(&cfg)?;
    let files = crate::lifecycle::RunFiles::new(&cfg.paths.run_dir);
    let successor = Successor::from_env(&files)?;
    check_bindable(&cfg.listen, successor.as_ref())?;
    check_bindable(&cfg.redirect_listen, successor.as_ref())?;
    if cfg.auth == AuthMode::None {
        tracing::warn!(
            "AUTH IS OFF (slotgate.auth = \"none\"): anyone who can reach {:?} can open every slot. \
             This mode only binds to loopback; configure an identity mode before exposing slotgate.",
            cfg.listen
        );
    }

    if !cfg.host_network_templates.is_empty() {
        let templates = cfg.host_network_templates.join(", ");
        if cfg.loopback_trusted {
            tracing::warn!(
                %templates,
                "slots of these templates share the host's network, yet slotgate.trust_loopback = true: \
                 they can reach /metrics and pose as a trusted proxy or SSO header source from 127.0.0.1"
            );
        } else {
            tracing::warn!(
                %templates,
                "slots of these templates share the host's network: loopback sources are not trusted \
                 (no /metrics from loopback, no trusted headers or forwarded addresses from it); \
                 set slotgate.trust_loopback = true to trust them anyway"
            );
        }
    }

    let metrics = Arc::new(Metrics::default());
    let log = AccessLog::start(&cfg.access_log, Arc::clone(&metrics))
        .with_context(|| format!("opening the access log {}", cfg.access_log.path.display()))?;
    let slots = Slots::new(cfg.paths.clone(), cfg.start_timeout, Arc::clone(&metrics));
    let lifecycle = Lifecycle::new(&cfg, Arc::clone(&metrics), log.clone())?;

    let cert_store = match &cfg.tls {
        None => None,
        Some(src) => {
            let (cert, key) = certificate_files(src)?;
            let store = CertStore::new(tls::load_pair(&cert, &key)?);
            if let TlsSource::Files { .. } = src {
                tls::watch(Arc::clone(&store), cert, key, Arc::clone(&metrics))?;
            }
            Some(store)
        }
    };

    let mut conf = ServerConf {
        threads: cfg.threads,
        pid_file: files.pid.display().to_string(),
        upgrade_sock: files.upgrade_sock.display().to_string(),
        // The drain monitor (lifecycle.rs) ends the process when the last
        // connection closes; Pingora's sleep is the backstop.
        grace_period_seconds: Some(lifecycle.pingora_grace()),
        graceful_shutdown_timeout_seconds: Some(2),
        ..ServerConf::default()
    };
    // Pingora counts tries, not retries: a first try, and one more after a
    // refused connection has started the slot.
    conf.max_retries = 2;
    let opt = Opt {
        upgrade: successor.is_some(),
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);

    let auth = crate::identity::Auth::new(&cfg).context("opening the identity store")?;
    if let Some(a) = &auth {
        a.sessions.start_poller();
        tracing::info!(modes = ?cfg.identity.modes, db = %cfg.identity.db_path.display(), "sign-in required");
    }
    let conn_limits = ConnectionLimits::new(&cfg, Arc::clone(&metrics));
    let gateway = Gateway::new(&cfg, auth, slots, log, metrics, Arc::clone(&lifecycle))?;
    let mut proxy = Service::new(
        "slotgate".into(),
        Guarded::new(
            pingora::proxy::http_proxy(&server.configuration, gateway),
            Arc::clone(&conn_limits),
        ),
    );
    proxy.set_connection_filter(Arc::new(AcceptFilter(Arc::clone(&conn_limits))));
    for addr in &cfg.listen {
        let mut listener = ListenerConfig::tcp(addr.to_string()).l4_buffer(CLIENT_BUFFERS);
        if let Some(store) = &cert_store {
            let mut settings = TlsSettings::intermediate("", "")?;
            settings.set_cert_resolver(Arc::clone(store) as _);
            listener = listener.tls(settings);
        }
        proxy.add_listener(listener);
    }
    server.add_service(proxy);

    if !cfg.redirect_listen.is_empty() {
        let Some(https_port) = cfg.listen.first().map(SocketAddr::port) else {
            bail!("slotgate.redirect_listen needs an HTTPS listener");
        };
        let mut redirect = Service::new(
            "slotgate https redirect".into(),
            Guarded::new(RedirectToHttps { https_port }, Arc::clone(&conn_limits)),
        );
        redirect.set_connection_filter(Arc::new(AcceptFilter(Arc::clone(&conn_limits))));
        for addr in &cfg.redirect_listen {
            redirect.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(CLIENT_BUFFERS));
        }
        server.add_service(redirect);
    }

    // Everything that can fail has been built: only now, on a reload,
    // take the listening sockets over (the old gateway stops accepting
    // once they are sent).
    if let Some(s) = &successor {
        tracing::info!(from = s.of, "reload: taking over the listening sockets");
    }
    server.bootstrap();
    let scheme = if cfg.is_tls() { "https" } else { "http" };
    for addr in &cfg.listen {
        tracing::info!("slotgate listening on {scheme}://{addr}");
    }
    for addr in &cfg.redirect_listen {
        tracing::info!("redirecting http://{addr} to HTTPS");
    }
    lifecycle.start_monitor(server.watch_execution_phase())?;
    server.run(RunArgs {
        shutdown_signal: lifecycle.signals(),
    });
    lifecycle.exit()
}
