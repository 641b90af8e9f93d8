//! Bounded per-key state shared by rules and detectors: idle keys expire on event time, the
//! number of keys is capped, and every expiry and eviction is counted.
//!
//! Architecture Invariant: no detection state grows without bound; every map of keys is a
//! [`BoundedMap`].
//!
//! Determinism: which keys are evicted depends only on their last-seen event time and the key
//! text, never on hash order, so replay and live evict the same keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::mem::size_of;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Per-key state that knows when it was last touched (event time, µs).
pub(crate) trait Aged {
    /// Event time of the last update.
    fn last_seen(&self) -> i64;
    /// Bytes owned on the heap beyond `size_of::<Self>()`.
    fn heap_bytes(&self) -> usize {
        0
    }
}

/// A map of keys to state with a cap and idle expiry.
#[derive(Debug)]
pub(crate) struct BoundedMap<V> {
    map: HashMap<Box<str>, V, foldhash::fast::RandomState>,
    cap: usize,
    /// Keys removed because they were idle.
    pub expired: u64,
    /// Keys removed because the cap was reached.
    pub evicted: u64,
}

impl<V: Aged> BoundedMap<V> {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::default(),
            cap: cap.max(1),
            expired: 0,
            evicted: 0,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The state of `key`, created with `make` when absent. When the map is full, idle keys
    /// (last seen before `idle_before`) go first, then the least recently seen eighth.
    pub fn entry(&mut self, key: &str, idle_before: i64, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(key) {
            if self.map.len() >= self.cap {
                self.expire(idle_before);
            }
            if self.map.len() >= self.cap {
                self.evict_oldest();
            }
            self.map.insert(key.into(), make());
        }
        // Present: inserted just above or found.
        self.map.get_mut(key).unwrap_or_else(|| unreachable!())
    }

    /// Removes keys last seen before `before`; returns how many.
    pub fn expire(&mut self, before: i64) -> usize {
        let n = self.map.len();
        self.map.retain(|_, v| v.last_seen() >= before);
        let removed = n - self.map.len();
        self.expired += removed as u64;
        removed
    }

    fn evict_oldest(&mut self) {
        let k = (self.map.len() / 8).max(1);
        let mut ages: Vec<(i64, Box<str>)> = self
            .map
            .iter()
            .map(|(key, v)| (v.last_seen(), key.clone()))
            .collect();
        if k < ages.len() {
            ages.select_nth_unstable(k - 1);
        }
        for (_, key) in ages.iter().take(k) {
            self.map.remove(key);
        }
        self.evicted += k.min(ages.len()) as u64;
    }

    /// Moves every entry out (used on reload).
    pub fn take(&mut self) -> Self {
        Self {
            map: std::mem::take(&mut self.map),
            cap: self.cap,
            expired: self.expired,
            evicted: self.evicted,
        }
    }

    /// A map with `cap` holding what a snapshot of one held. Over the cap (settings changed),
    /// the least recently seen go first, counted as evicted.
    pub fn restore(cap: usize, snap: MapSnapshot<V>) -> Self {
        let mut m = Self::new(cap);
        m.expired = snap.expired;
        m.evicted = snap.evicted;
        let mut entries = snap.entries;
        if entries.len() > m.cap {
            entries.sort_by(|a, b| (a.1.last_seen(), &a.0).cmp(&(b.1.last_seen(), &b.0)));
            let surplus = entries.len() - m.cap;
            entries.drain(..surplus);
            m.evicted += surplus as u64;
        }
        m.map.reserve(entries.len());
        m.map.extend(entries);
        m
    }

    /// The cap on keys.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Approximate bytes of memory this map holds, including table overhead.
    pub fn state_bytes(&self) -> usize {
        let slot = size_of::<(Box<str>, V)>() + 1;
        let heap: usize = self.map.iter().map(|(k, v)| k.len() + v.heap_bytes()).sum();
        self.map.capacity() * slot + heap
    }
}

/// A [`BoundedMap`] as a snapshot holds it: entries in key order (equal maps give equal bytes)
/// and its counters; the cap comes from the settings on restore.
#[derive(Debug, Deserialize)]
pub(crate) struct MapSnapshot<V> {
    entries: Vec<(Box<str>, V)>,
    expired: u64,
    evicted: u64,
}

impl<V> MapSnapshot<V> {
    /// Keeps only the entries `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&V) -> bool) {
        self.entries.retain(|(_, v)| keep(v));
    }
}

impl<V: Serialize> Serialize for BoundedMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&str, &V)> = self.map.iter().map(|(k, v)| (&**k, v)).collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut st = s.serialize_struct("BoundedMap", 3)?;
        st.serialize_field("entries", &entries)?;
        st.serialize_field("expired", &self.expired)?;
        st.serialize_field("evicted", &self.evicted)?;
        st.end()
    }
}

/// Detection state as a JSON value, for [`crate::Engine::snapshot`].
pub(crate) fn to_value(state: &impl Serialize) -> Value {
    // Every state type serialises (plain numbers, strings, sequences, string-keyed maps).
    serde_json::to_value(state).unwrap_or_else(|e| unreachable!("detection state serialises: {e}"))
}

/// `f64` fields kept as their bits, so a restored baseline is bit-for-bit the saved one (and
/// NaN or infinities survive, which JSON numbers cannot hold).
pub(crate) mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

/// A stable 64-bit hash of a string (same value in every process), for distinct counting and
/// argument fingerprints.
pub(crate) fn stable_hash(parts: &[&str]) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x6d63_7077_6174_6368).build_hasher();
    for p in parts {
        h.write(p.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

/// An event id kept compactly: UUIDs as 16 bytes, anything else as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CompactId {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl CompactId {
    pub fn new(id: &str) -> Self {
        if id.len() == 36 {
            if let Ok(u) = uuid::Uuid::try_parse(id) {
                let mut buf = uuid::Uuid::encode_buffer();
                if u.hyphenated().encode_lower(&mut buf) == id {
                    return CompactId::Uuid(*u.as_bytes());
                }
            }
        }
        CompactId::Text(id.into())
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            CompactId::Uuid(_) => 0,
            CompactId::Text(t) => t.len(),
        }
    }
}

impl Serialize for CompactId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CompactId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| CompactId::new(&s))
    }
}

impl std::fmt::Display for CompactId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompactId::Uuid(b) => write!(f, "{}", uuid::Uuid::from_bytes(*b).hyphenated()),
            CompactId::Text(t) => f.write_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(i64);
    impl Aged for S {
        fn last_seen(&self) -> i64 {
            self.0
        }
    }

    #[test]
    fn cap_evicts_least_recently_seen_and_counts() {
        let mut m = BoundedMap::new(8);
        for i in 0..8 {
            m.entry(&format!("k{i}"), 0, || S(i));
        }
        m.entry("new", 0, || S(100));
        assert_eq!(m.len(), 8);
        assert_eq!(m.evicted, 1);
        assert!(!m.map.contains_key("k0"), "the oldest key goes first");
        assert_eq!(m.expire(5), 4);
        assert_eq!(m.expired, 4);
    }

    #[test]
    fn a_restored_map_keeps_entries_and_counters_and_over_a_smaller_cap_the_newest() {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        struct T(i64);
        impl Aged for T {
            fn last_seen(&self) -> i64 {
                self.0
            }
        }
        let mut m = BoundedMap::new(8);
        for i in 0..9 {
            m.entry(&format!("k{i}"), 0, || T(i));
        }
        let bytes = serde_json::to_vec(&m).expect("serialises");
        let snap = || serde_json::from_slice::<MapSnapshot<T>>(&bytes).expect("reads");
        let same = BoundedMap::restore(8, snap());
        assert_eq!(serde_json::to_vec(&same).expect("serialises"), bytes);
        assert_eq!((same.len(), same.evicted), (8, 1));
        let small = BoundedMap::restore(3, snap());
        let mut keys: Vec<&str> = small.map.keys().map(|k| &**k).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["k6", "k7", "k8"], "the least recently seen go");
        assert_eq!(small.evicted, 1 + 5);
    }

    #[test]
    fn compact_ids_round_trip() {
        for id in [
            "0193a4c2-7d1e-7f00-8a00-0123456789ab",
            "evt-1",
            "0193A4C2-7D1E-7F00-8A00-0123456789AB",
        ] {
            assert_eq!(CompactId::new(id).to_string(), id);
        }
        assert!(matches!(
            CompactId::new("0193a4c2-7d1e-7f00-8a00-0123456789ab"),
            CompactId::Uuid(_)
        ));
    }
}
