//! The loop behind the gateway's writer threads (access log, recordings).
//!
//! The proxy thread hands items over with `try_send` on a bounded channel
//! and never waits. What it must not pay for is waking the writer: a
//! `try_send` to a receiver blocked in `recv` is a futex wake, and the woken
//! thread then competes for a core with the proxy, the slot and the client.
//! Measured on the 2-core development machine, waking the recording writer
//! once per echoed keystroke added ~15 µs to the keystroke round trip.
//!
//! So a writer blocks only while it is idle. Once something arrives it
//! handles it at once (the first line after a quiet spell is on disk
//! without delay), then keeps *polling* every [`PAUSE`] until nothing has
//! arrived for [`LINGER`]: a polling writer is not a registered waiter, so
//! a burst of requests or a typing session enqueues without any wake-ups.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// How long items accumulate between batches while the writer is busy.
pub const PAUSE: Duration = Duration::from_millis(20);

/// How long after its last item a writer keeps polling before it blocks.
pub const LINGER: Duration = Duration::from_secs(2);

/// How often an idle writer wakes anyway (for [`Sink::batch_done`]'s
/// housekeeping: sweeps, lost closes).
const IDLE_TICK: Duration = Duration::from_millis(100);

/// What a writer thread does with what it receives.
pub trait Sink<T> {
    /// One item, in order.
    fn put(&mut self, item: T);
    /// After each batch (and each idle tick): flush, housekeeping. `rx` is
    /// there for sinks that must drain before they act.
    fn batch_done(&mut self, rx: &Receiver<T>);
}

/// Run `sink` until every sender is gone and the channel is drained.
pub fn run<T>(rx: &Receiver<T>, sink: &mut impl Sink<T>) {
    let mut last_item: Option<Instant> = None;
    loop {
        if last_item.is_some_and(|t| t.elapsed() < LINGER) {
            std::thread::sleep(PAUSE);
        } else {
            last_item = None;
            match rx.recv_timeout(IDLE_TICK) {
                Ok(item) => {
                    sink.put(item);
                    last_item = Some(Instant::now());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(item) => {
                    sink.put(item);
                    last_item = Some(Instant::now());
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    sink.batch_done(rx);
                    return;
                }
            }
        }
        sink.batch_done(rx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Log {
        items: Vec<u32>,
        batches: usize,
    }
    struct Shared(Arc<Mutex<Log>>);
    impl Sink<u32> for Shared {
        fn put(&mut self, item: u32) {
            self.0.lock().unwrap().items.push(item);
        }
        fn batch_done(&mut self, _rx: &Receiver<u32>) {
            self.0.lock().unwrap().batches += 1;
        }
    }

    #[test]
    fn every_item_arrives_in_order_and_the_loop_ends_with_its_senders() {
        let (tx, rx) = sync_channel(4);
        let log = Arc::new(Mutex::new(Log::default()));
        let mut sink = Shared(Arc::clone(&log));
        let writer = std::thread::spawn(move || run(&rx, &mut sink));
        // More items than the queue holds: the sender waits for the writer.
        for i in 0..100 {
            tx.send(i).unwrap();
        }
        drop(tx);
        writer.join().unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log.items, (0..100).collect::<Vec<_>>());
        assert!(log.batches >= 1, "the last batch is flushed before return");
    }
}
