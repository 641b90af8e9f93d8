//! Short bursts for background work.
//!
//! On this kernel (EEVDF, `PREEMPT_NONE`, 250 Hz), a thread that wakes on a core where a
//! CPU-bound thread runs often waits until the next tick ends that thread's slice: up to 4–8
//! ms. Measured on 2 cores with `perf sched` while a client called through the gateway: the
//! client waited 3.8 ms on the runqueue behind one 5.5 ms run of the collector, while the other
//! core sat idle. mcpwatch's background work (the monitor draining a queue of copies, delivery
//! writing a batch, the collector validating, storing and scanning a thousand events) comes in
//! exactly such runs. Lower OS priorities are no answer for an unprivileged process (it may not
//! raise its priority again when it falls behind, and `SCHED_IDLE` work starves under load,
//! which would let anyone blind the monitor by keeping the CPUs busy). So background loops
//! give the core away themselves: a [`Pacer`] yields the thread once its current burst has
//! lasted a slice. That keeps the thread's fair share (a yield lets only what already waits go
//! first) and costs one `sched_yield` per slice, which returns at once when nothing waits.

use std::time::{Duration, Instant};

/// Yields the current thread when its burst of work has lasted a slice.
#[derive(Debug)]
pub struct Pacer {
    slice: Duration,
    since: Instant,
    steps: u32,
}

impl Pacer {
    /// The default slice: a few proxied round trips (~100 µs each), and 250 times a
    /// `sched_yield`. Not shorter: each yield moves the thread's EEVDF deadline a slice later,
    /// and at 100 µs the gateway's monitor fell behind at 16 connections and dropped copies
    /// (`benches/gateway.rs`: 189,500 of 265,879 calls; none at 250 µs).
    pub const SLICE: Duration = Duration::from_micros(250);

    /// Looks at the clock only every this many steps.
    const EVERY: u32 = 4;

    /// A pacer with the default slice; its first burst starts now.
    pub fn new() -> Pacer {
        Pacer::with_slice(Pacer::SLICE)
    }

    /// A pacer whose bursts last about `slice` at most.
    pub fn with_slice(slice: Duration) -> Pacer {
        Pacer {
            slice,
            since: Instant::now(),
            steps: 0,
        }
    }

    /// One step of work done: yields if the burst has lasted a slice. Returns whether it did.
    #[inline]
    pub fn step(&mut self) -> bool {
        self.steps = self.steps.wrapping_add(1);
        if !self.steps.is_multiple_of(Pacer::EVERY) {
            return false;
        }
        let now = Instant::now();
        if now.duration_since(self.since) < self.slice {
            return false;
        }
        std::thread::yield_now();
        self.since = Instant::now();
        true
    }

    /// The thread waited (or is about to): the next burst starts now.
    pub fn rest(&mut self) {
        self.since = Instant::now();
        self.steps = 0;
    }
}

impl Default for Pacer {
    fn default() -> Pacer {
        Pacer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_longer_than_the_slice_yields_and_a_short_one_does_not() {
        let mut long = Pacer::with_slice(Duration::from_secs(3600));
        assert!(
            !(0..10_000).any(|_| long.step()),
            "a one-hour slice never ends here"
        );

        let mut p = Pacer::with_slice(Duration::from_micros(200));
        let start = Instant::now();
        let mut yields = 0;
        while start.elapsed() < Duration::from_millis(20) {
            std::hint::black_box((0..200u64).sum::<u64>());
            if p.step() {
                yields += 1;
            }
        }
        // 20 ms of work in 200 µs slices: about 100 yields, at least a few whatever the load.
        assert!(yields >= 5, "{yields} yields in 20 ms of work");
        assert!(yields <= 110, "{yields} yields: more than one per slice");
    }

    #[test]
    fn rest_starts_a_new_burst() {
        let mut p = Pacer::with_slice(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        p.rest();
        assert!(!(0..64).any(|_| p.step()), "the burst began at rest()");
    }
}
