//! Handing freed heap memory back to the system.
//!
//! The daemon's live heap is small (a few MiB at a thousand units), but
//! bursts are not: `slotctl pm2 restart all` opens one control connection
//! per app, each with its own buffers, and a mass start allocates per unit
//! while it spawns. glibc keeps what such a burst freed inside its arenas,
//! so without help the resident size stays at the burst's high-water mark
//! for the rest of the daemon's life. Two things keep it near the live heap:
//!
//! * one malloc arena ([`limit_arenas`]): glibc otherwise gives each thread
//!   that meets contention an arena of its own (up to 8 per core), each
//!   holding its own free memory. The daemon allocates little outside
//!   bursts, so the shared lock costs nothing measurable (the `pm2`
//!   benchmark's latencies are the same with 1, 2 or 8 arenas; RSS at 1000
//!   apps 18.6 vs 19.7 MiB);
//! * [`Trimmer`]: after the control API has been quiet for a moment (and
//!   once a minute regardless) `malloc_trim(0)` returns whole free pages
//!   from every arena.
//!
//! Both are glibc calls; on other C libraries this module does nothing.
//! They are the workspace's only `unsafe` (see the lint in Cargo.toml).
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long the control API must be quiet before a trim.
const QUIET: Duration = Duration::from_millis(500);
/// A trim at least this often, for growth that no API call caused
/// (restarts, log following, ingestion).
const PERIOD: Duration = Duration::from_secs(60);

/// Call before any thread starts. `MALLOC_ARENA_MAX` in the environment
/// (glibc's own knob) wins.
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before
    // other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
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
                // Idle: the period passes without calls → trim anyway.
                if tokio::time::timeout(PERIOD, waiter.notified())
                    .await
                    .is_err()
                {
                    trim();
                    continue;
                }
                let first = Instant::now();
                let mut last = first;
                while tokio::time::timeout_at(trim_due(first, last).into(), waiter.notified())
                    .await
                    .is_ok()
                {
                    last = Instant::now();
                }
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

/// When a burst that began at `first` and was last active at `last` gets
/// its trim: after QUIET without calls, but no later than PERIOD after it
/// began, so a client polling more often than QUIET cannot starve it.
fn trim_due(first: Instant, last: Instant) -> Instant {
    (last + QUIET).min(first + PERIOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_trimmed_once_it_goes_quiet() {
        let t0 = Instant::now();
        assert_eq!(trim_due(t0, t0), t0 + QUIET);
        let last = t0 + Duration::from_secs(3);
        assert_eq!(trim_due(t0, last), last + QUIET);
    }

    #[test]
    fn a_client_polling_faster_than_quiet_cannot_starve_it() {
        let t0 = Instant::now();
        // A call every 200 ms: each one moves the quiet point, never the cap.
        let mut last = t0;
        let mut due = trim_due(t0, last);
        while last < due {
            last += Duration::from_millis(200);
            due = trim_due(t0, last);
        }
        assert_eq!(due, t0 + PERIOD);
    }
}
