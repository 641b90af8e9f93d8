//! Internal health of capture: the one place that defines drop, overflow and delivery counters.
//!
//! The relay, the delivery worker and the spool count here; the session pipeline turns new
//! drops and overflows into `system` events (`capture_dropped`, `spool_overflow`) so loss is
//! never silent.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the stages of one capture.
#[derive(Debug, Default)]
pub struct CaptureHealth {
    /// Lines relayed but not handed to the parser (queue full).
    pub dropped_lines: AtomicU64,
    /// Bytes of those lines.
    pub dropped_bytes: AtomicU64,
    /// Events lost because the collector was away and the spool was full (or unusable).
    pub spool_overflow_events: AtomicU64,
    /// Events the collector refused as invalid.
    pub rejected_events: AtomicU64,
    /// Events the collector acknowledged.
    pub delivered_events: AtomicU64,
    /// Events written to the spool.
    pub spooled_events: AtomicU64,
    /// Bytes the spool holds on disk now, counted against its cap (a gauge).
    pub spool_bytes: AtomicU64,
    /// Of those, the bytes not yet delivered (a gauge).
    pub spool_pending_bytes: AtomicU64,
    /// Most bytes the spool may hold; 0 without a spool.
    pub spool_max_bytes: AtomicU64,
}

impl CaptureHealth {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
