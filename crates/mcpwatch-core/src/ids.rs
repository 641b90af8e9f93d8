//! Time-ordered event ids (UUIDv7), taken from the injected clock.
//!
//! Ids from one generator sort in the order they were made, even within one millisecond, so the
//! store's id index is appended to rather than written all over. A time more than a second
//! older than the newest seen (a clock stepped back, or one wild timestamp before) starts a
//! fresh sequence, so ids follow time again instead of staying pinned to the newest.

use std::sync::Mutex;

use uuid::{ContextV7, Uuid};

use crate::event::Timestamp;

/// Makes UUIDv7 ids that sort by time and, within a millisecond, by creation order.
/// Shareable between threads.
#[derive(Default)]
pub struct IdGenerator {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    context: ContextV7,
    /// The newest time an id was made for, in microseconds.
    newest: u64,
}

/// How far back a time may be and still continue the sequence (keeping ids in creation order).
const MAX_STEP_BACK_MICROS: u64 = 1_000_000;

impl IdGenerator {
    /// A new generator.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new id for something that happened at `at`.
    pub fn next(&self, at: Timestamp) -> String {
        let micros = at.as_micros().max(0) as u64;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if micros.saturating_add(MAX_STEP_BACK_MICROS) < state.newest {
            state.context = ContextV7::new();
            state.newest = micros;
        }
        state.newest = state.newest.max(micros);
        let ts = uuid::Timestamp::from_unix(
            &state.context,
            micros / 1_000_000,
            (micros % 1_000_000) as u32 * 1_000,
        );
        drop(state);
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

    /// The year an id's UUIDv7 timestamp says.
    fn id_millis(id: &str) -> u64 {
        let uuid = Uuid::parse_str(id).unwrap();
        let (secs, _) = uuid.get_timestamp().unwrap().to_unix();
        secs * 1000
    }

    #[test]
    fn one_far_future_time_does_not_pin_later_ids() {
        let g = IdGenerator::new();
        let now = Timestamp::from_micros(1_790_000_000_000_000);
        let year_9999 = Timestamp::from_micros(253_402_300_799_000_000);
        let far = g.next(year_9999);
        assert_eq!(id_millis(&far), 253_402_300_799_000);
        let after = g.next(now);
        assert_eq!(
            id_millis(&after),
            1_790_000_000_000,
            "{after} is pinned to 9999"
        );
        // And the sequence continues in order from there.
        let next = g.next(now);
        assert!(next > after, "{next} <= {after}");
    }

    #[test]
    fn a_small_step_back_keeps_creation_order() {
        let g = IdGenerator::new();
        let t = Timestamp::from_micros(1_790_000_000_500_000);
        let first = g.next(t);
        let second = g.next(Timestamp::from_micros(1_790_000_000_000_000));
        assert!(second > first, "{second} <= {first}");
    }
}
