//! Handing freed heap memory back to the system.
//!
//! The daemon's live heap is small (a few MiB at a thousand units), but
//! bursts are not: `slotctl pm2 restart all` opens one control connection
//! per app, each with its own buffers, and a mass start allocates per unit
//! while it spawns. glibc keeps what such a burst freed inside its arenas,
//! so without help the resident size stays at the burst's high-water mark
//! for the rest of the daemon's life. Two things keep it near the live heap:
//!
//! * at most two malloc arenas ([`limit_arenas`]): glibc otherwise gives
//!   each thread that meets contention an arena of its own (up to 8 per
//!   core), each holding its own free memory;
//! * [`Trimmer`]: after the control API has been quiet for a moment (and
//!   once a minute regardless) `malloc_trim(0)` returns whole free pages
//!   from every arena.
//!
//! Both are glibc calls; on other C libraries this module does nothing.
//! They are the workspace's only `unsafe` (see the lint in Cargo.toml).
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How long the control API must be quiet before a trim.
const QUIET: Duration = Duration::from_millis(500);
/// A trim at least this often, for growth that no API call caused
/// (restarts, log following, ingestion).
const PERIOD: Duration = Duration::from_secs(60);

/// Call before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before
    // other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Return free heap pages to the system; the bytes the process's resident
/// size shrank by are not known, so nothing is returned.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arena locks itself; it is safe to call
    // from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims after bursts of activity. Cloning shares the one background task.
#[derive(Clone)]
pub struct Trimmer {
    poke: Arc<Notify>,
}

impl Trimmer {
    /// Start the background task on the current runtime.
    pub fn spawn() -> Trimmer {
        let poke = Arc::new(Notify::new());
        let waiter = poke.clone();
        tokio::spawn(async move {
            loop {
                // Wait for activity (or the period), then for quiet — but
                // never longer than the period, so a client polling more
                // often than QUIET cannot starve the trim.
                let _ = tokio::time::timeout(PERIOD, waiter.notified()).await;
                let deadline = tokio::time::Instant::now() + PERIOD;
                while tokio::time::Instant::now() < deadline
                    && tokio::time::timeout(QUIET, waiter.notified())
                        .await
                        .is_ok()
                {}
                trim();
            }
        });
        Trimmer { poke }
    }

    /// Something happened that allocated; trim once things are quiet.
    pub fn poke(&self) {
        self.poke.notify_one();
    }
}
