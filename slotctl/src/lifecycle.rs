//! The slot lifecycle as pure logic: which status changes are legal, and
//! what to do after a failure (exponential backoff, capped, and giving up
//! when failures crowd a time window). The supervisor drives it with real
//! events; tests drive it with a fake clock.
//!
//! Unlike PM2, which only counts deaths within `min_uptime` of a start, a
//! slot that fails `max_failures` times within `failure_window` — however
//! long each run lasted — ends `errored` with the last reason.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use slotapi::SlotStatus::{self, *};

/// Whether `from -> to` is a legal change.
pub fn allowed(from: SlotStatus, to: SlotStatus) -> bool {
    matches!(
        (from, to),
        (Stopped | Errored, Starting)
            // A start whose spawn fails goes straight to backoff.
            | (Stopped | Errored, Backoff)
            | (Starting, Online | Backoff | Errored | Stopping)
            | (Online, Backoff | Errored | Stopping | Starting)
            | (Backoff, Starting | Stopping | Stopped | Errored)
            | (Stopping, Stopped)
            | (Stopped | Errored, Stopped)
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Wait this long, then start again.
    Retry(Duration),
    /// Too many failures inside the window: stop trying.
    GiveUp,
}

#[derive(Debug, Clone)]
pub struct Policy {
    initial: Duration,
    max: Duration,
    max_failures: u32,
    window: Duration,
    /// Consecutive failures since the last stable run.
    attempt: u32,
    recent: VecDeque<Instant>,
}

impl Policy {
    pub fn new(initial: Duration, max: Duration, max_failures: u32, window: Duration) -> Self {
        Policy {
            initial,
            max,
            max_failures,
            window,
            attempt: 0,
            recent: VecDeque::new(),
        }
    }

    /// Record a failure at `now` and decide what comes next.
    pub fn on_failure(&mut self, now: Instant) -> AfterFailure {
        self.recent.push_back(now);
        while let Some(first) = self.recent.front() {
            if now.duration_since(*first) > self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() as u32 >= self.max_failures {
            return AfterFailure::GiveUp;
        }
        // The first restart is immediate (a one-off crash should cost the
        // user nothing); after that the delay doubles up to the cap.
        let delay = match self.attempt {
            0 => Duration::ZERO,
            n => self
                .initial
                .saturating_mul(2u32.saturating_pow((n - 1).min(30)))
                .min(self.max),
        };
        self.attempt = self.attempt.saturating_add(1);
        AfterFailure::Retry(delay)
    }

    /// The slot has been healthy long enough: the next failure starts the
    /// backoff from the beginning (the window still remembers it).
    pub fn on_stable(&mut self) {
        self.attempt = 0;
    }

    /// A human start/restart clears everything.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
            5,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut p = Policy::new(
            Duration::from_millis(100),
            Duration::from_millis(500),
            100,
            Duration::from_secs(60),
        );
        let t = Instant::now();
        let delays: Vec<_> = (0..6)
            .map(|i| p.on_failure(t + Duration::from_secs(i)))
            .collect();
        let ms = |n| AfterFailure::Retry(Duration::from_millis(n));
        assert_eq!(
            delays,
            vec![ms(0), ms(100), ms(200), ms(400), ms(500), ms(500)]
        );
        p.on_stable();
        assert_eq!(p.on_failure(t + Duration::from_secs(7)), ms(0));
    }

    #[test]
    fn gives_up_when_failures_crowd_the_window() {
        let mut p = policy();
        let t = Instant::now();
        for i in 0..4 {
            assert!(matches!(
                p.on_failure(t + Duration::from_secs(i * 10)),
                AfterFailure::Retry(_)
            ));
        }
        assert_eq!(
            p.on_failure(t + Duration::from_secs(45)),
            AfterFailure::GiveUp
        );
    }

    #[test]
    fn long_lived_failures_outside_the_window_never_give_up() {
        // PM2 would give up on a process that always dies; a slot that dies
        // once every two minutes keeps being restarted.
        let mut p = policy();
        let t = Instant::now();
        for i in 0..50 {
            assert!(matches!(
                p.on_failure(t + Duration::from_secs(i * 120)),
                AfterFailure::Retry(_)
            ));
        }
    }

    #[test]
    fn reset_forgets_the_window() {
        let mut p = policy();
        let t = Instant::now();
        for _ in 0..4 {
            p.on_failure(t);
        }
        p.reset();
        assert_eq!(p.on_failure(t), AfterFailure::Retry(Duration::ZERO));
    }

    #[test]
    fn transition_table() {
        let legal = [
            (Stopped, Starting),
            (Starting, Online),
            (Starting, Backoff),
            (Online, Backoff),
            (Backoff, Starting),
            (Backoff, Errored),
            (Online, Stopping),
            (Stopping, Stopped),
            (Errored, Starting),
        ];
        let illegal = [
            (Stopped, Online),
            (Errored, Online),
            (Stopping, Online),
            (Stopping, Starting),
        ];
        for (a, b) in legal {
            assert!(allowed(a, b), "{a} -> {b} should be legal");
        }
        for (a, b) in illegal {
            assert!(!allowed(a, b), "{a} -> {b} should be illegal");
        }
    }
}
