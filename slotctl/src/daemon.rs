//! `slotctl daemon`: prepare the directories, take the instance lock, start
//! the supervisor (which re-adopts running slots) and serve the control API
//! until SIGTERM/SIGINT. Leaving never stops a slot: slots outlive the
//! daemon by design.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::UnixListener;
use tracing::info;

use crate::config::Config;
use crate::launch;
use crate::supervisor::Supervisor;

fn private_dir(p: &Path) -> anyhow::Result<()> {
    slotapi::files::private_dir(p).with_context(|| format!("creating {} (mode 0700)", p.display()))
}

/// Take the world's access away from whatever an older version (or another
/// program with a looser umask) left directly in `dir`: with `dir` passable
/// by everyone, a file readable by others there (identity.db, a key) would
/// be readable by every slot. `users/` and `slots/` are passable on purpose
/// and keep their mode (as do `passwd/` and `tmux.conf`, read by slots);
/// symlinks are left alone.
fn close_to_others(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if matches!(
            entry.file_name().to_str(),
            Some("users" | "slots" | "passwd" | "tmux.conf")
        ) {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o007 != 0 {
            fs::set_permissions(
                entry.path(),
                fs::Permissions::from_mode(mode & !0o007 & 0o7777),
            )
            .with_context(|| format!("closing {} to others", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Hold an exclusive lock on `<run>/slotctl.lock` for the daemon's life.
fn lock(run_dir: &Path) -> anyhow::Result<fs::File> {
    let path = run_dir.join("slotctl.lock");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let other = fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another slotctl daemon is already running for {} (pid {})",
            run_dir.display(),
            other.trim()
        );
    }
    f.set_len(0)?;
    write!(f, "{}", std::process::id())?;
    Ok(f)
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // Each running slot holds a pidfd and, while probed, a socket.
    let files = slotapi::rlimit::raise_open_files();
    tracing::debug!(
        before = files.before,
        after = files.after,
        "open-files limit"
    );
    let cfg = Arc::new(cfg);
    let paths = &cfg.paths;
    // What the daemon makes is never the world's: data_dir and run_dir are
    // only passable (0711, so a slot's own user reaches its sandbox and
    // socket directory), and everything in them is 0750 or tighter.
    slotapi::files::close_new_files_to_others();
    for dir in [&paths.data_dir, &paths.run_dir, &paths.slots_dir()] {
        crate::tenant::daemon_dir(dir, 0o711)
            .with_context(|| format!("preparing {} (mode 0711)", dir.display()))?;
    }
    for dir in [&paths.data_dir, &paths.run_dir] {
        close_to_others(dir)?;
    }
    private_dir(&crate::logs::log_dir(&paths.data_dir))?;
    let _lock = lock(&paths.run_dir)?;
    let bwrap = crate::config::find_on_path(&cfg.ttyd.bwrap.display().to_string())
        .unwrap_or_else(|| cfg.ttyd.bwrap.clone());
    let facts = crate::isolation::facts(&cfg, &bwrap);
    let weak = facts.weaknesses();
    if !weak.is_empty() {
        if cfg.supervisor.multi_user && !cfg.supervisor.allow_weak_isolation {
            bail!(
                "{}: isolation between slots is weak ({}), and the gateway in this config signs several people in; \
                 fix the host (see slotctl doctor) or set supervisor.allow_weak_isolation = true to accept it",
                cfg.file.display(),
                weak.join("; ")
            );
        }
        tracing::warn!(verdict = %facts.verdict(), "slot isolation is weak");
    } else {
        info!(verdict = %facts.verdict(), "slot isolation");
    }
    fs::write(launch::tmux_conf(paths), launch::TMUX_CONF).context("writing tmux.conf")?;
    // Read by every slot's tmux (as the slot's user).
    fs::set_permissions(launch::tmux_conf(paths), fs::Permissions::from_mode(0o644))?;

    let sup = Supervisor::launch(cfg.clone()).await?;
    let activity = if cfg.activity.enabled {
        let store = crate::activity::ActivityStore::open(cfg.activity.clone())?;
        store.start(sup.clone())?;
        Some(store)
    } else {
        None
    };
    let claude = crate::claude::Claude::launch(&paths.data_dir, cfg.claude.clone())?;

    let sock = paths.control_socket();
    // We hold the lock, so a socket file here is a leftover.
    let _ = fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o600))?;
    info!(
        socket = %sock.display(),
        config = %cfg.file.display(),
        slots = sup.list().len(),
        isolation = sup.isolation(),
        "slotctl daemon ready"
    );

    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("shutting down; slots keep running and are re-adopted on the next start");
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let asked = sup.clone();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = asked.shutdown.notified() => info!("shutdown requested through the API"),
        }
    };
    let mut app = crate::api::router(sup).merge(crate::claude::api::router(claude));
    if let Some(store) = activity {
        app = app
            .merge(crate::activity::api::router(store.clone()))
            .layer(axum::Extension(store));
    }
    // Every call may allocate (a `restart all` is one connection per app);
    // give the memory back once the burst is over.
    let trimmer = crate::memory::Trimmer::spawn();
    let app = app.layer(axum::middleware::from_fn_with_state(trimmer, trim_after));
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    tokio::select! {
        r = server => r.context("serving the control API")?,
        _ = shutdown => {
            let _ = stop_tx.send(());
            // Followers of logs and events never end by themselves; the
            // slots do not need the daemon, so leaving promptly is safe.
        }
    }
    let _ = fs::remove_file(&sock);
    Ok(())
}

async fn trim_after(
    axum::extract::State(trimmer): axum::extract::State<crate::memory::Trimmer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    trimmer.poke();
    let resp = next.run(req).await;
    trimmer.poke();
    resp
}
