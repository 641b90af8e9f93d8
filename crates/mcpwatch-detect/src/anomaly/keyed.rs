//! The keyed state every detector keeps: a [`BoundedMap`] addressed by parts of a call (user,
//! server, tool, …) joined into one key without allocating per call, with idle expiry taken
//! from the settings, and the accounting `AnomalyDetectors` reports ([`KeyedStats`]).

use serde::{Serialize, Serializer};

use super::AnomalySettings;
use crate::state::{Aged, BoundedMap, MapSnapshot};

/// Separates the parts of a key (a control character no name should contain; one that does
/// only shares a key with another name containing it).
const SEP: char = '\u{1f}';

/// State per key for one detector.
pub(crate) struct Keyed<V> {
    map: BoundedMap<V>,
    key: String,
    idle_us: i64,
}

impl<V: Aged> Keyed<V> {
    pub fn new(s: &AnomalySettings) -> Self {
        Self {
            map: BoundedMap::new(s.max_keys),
            key: String::new(),
            idle_us: s.idle_us,
        }
    }

    fn build(&mut self, parts: &[&str]) {
        self.key.clear();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                self.key.push(SEP);
            }
            self.key.push_str(p);
        }
    }

    /// Takes the keys of a snapshot (the cap stays the settings').
    pub fn restore(&mut self, snap: MapSnapshot<V>) {
        self.map = BoundedMap::restore(self.map.cap(), snap);
    }

    /// Whether the key made of `parts` is tracked.
    pub fn contains(&mut self, parts: &[&str]) -> bool {
        self.build(parts);
        self.map.contains(&self.key)
    }

    /// The state of the key made of `parts` at event time `ts`, created with `make` when absent.
    pub fn entry(&mut self, parts: &[&str], ts: i64, make: impl FnOnce() -> V) -> &mut V {
        self.build(parts);
        self.map
            .entry(&self.key, ts.saturating_sub(self.idle_us), make)
    }
}

/// A snapshot holds the keys and counters; the key buffer and idle time are not state.
impl<V: Serialize> Serialize for Keyed<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

/// What the detectors' aggregate needs of each keyed map.
pub(crate) trait KeyedStats {
    /// Forgets keys last seen before `idle_before`.
    fn sweep(&mut self, idle_before: i64);
    /// Keys tracked.
    fn tracked_keys(&self) -> usize;
    /// Approximate bytes held.
    fn state_bytes(&self) -> usize;
    /// Keys expired and evicted so far.
    fn expired_and_evicted(&self) -> (u64, u64);
}

impl<V: Aged> KeyedStats for Keyed<V> {
    fn sweep(&mut self, idle_before: i64) {
        self.map.expire(idle_before);
    }

    fn tracked_keys(&self) -> usize {
        self.map.len()
    }

    fn state_bytes(&self) -> usize {
        self.map.state_bytes()
    }

    fn expired_and_evicted(&self) -> (u64, u64) {
        (self.map.expired, self.map.evicted)
    }
}
