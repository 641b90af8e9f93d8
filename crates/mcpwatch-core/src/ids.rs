//! Time-ordered event ids (UUIDv7), taken from the injected clock.
//!
//! Ids from one generator sort in the order they were made, even within one millisecond, so the
//! store's id index is appended to rather than written all over.

use std::sync::Mutex;

use uuid::{ContextV7, Uuid};

use crate::event::Timestamp;

/// Makes UUIDv7 ids that sort by time and, within a millisecond, by creation order.
/// Shareable between threads.
#[derive(Default)]
pub struct IdGenerator {
    context: Mutex<ContextV7>,
}

impl IdGenerator {
    /// A new generator.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new id for something that happened at `at`.
    pub fn next(&self, at: Timestamp) -> String {
        let micros = at.as_micros().max(0) as u64;
        let ts = uuid::Timestamp::from_unix(
            &self.context,
            micros / 1_000_000,
            (micros % 1_000_000) as u32 * 1_000,
        );
        let mut buf = Uuid::encode_buffer();
        Uuid::new_v7(ts)
            .hyphenated()
            .encode_lower(&mut buf)
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order_within_a_millisecond() {
        let g = IdGenerator::new();
        let at = Timestamp::from_micros(1_790_000_000_000_000);
        let ids: Vec<String> = (0..1000).map(|_| g.next(at)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
    }
}
