//! Subjects: where on the stream an event goes, computed at the edge.
//!
//! Every event is published to `mcpw.ev.v1.<user>.<server>.<ip>`, where each part is the
//! partition (`0`–`15`) of one key family, or `_` when the event has no such key:
//! - `user`: `metadata.user_id`;
//! - `server`: `metadata.server`, so that everything grouped by server, or by server and tool,
//!   falls in one partition;
//! - `ip`: `metadata.ip_address`.
//!
//! A consumer of one family's partition filters on its token (`mcpw.ev.v1.3.*.*` for user
//! partition 3), so the server never has to re-partition anything: Debian's nats-server 2.9
//! ignores stream subject transforms. Keys themselves never become subject tokens (a user id
//! may hold dots, wildcards or a secret); only their partitions do.
//!
//! The hash is FNV-1a (64 bits) over the key's UTF-8 bytes, modulo [`PARTITIONS`]: stable
//! across versions, platforms and processes, which a partition must be, because edges and
//! collectors of different builds must agree on it. Changing it is a new subject version
//! (`v2`), never an edit of this one.

use mcpwatch_core::Event;

/// The subjects' common prefix; the stream captures `{PREFIX}.>`.
pub const PREFIX: &str = "mcpw.ev.v1";

/// Partitions per key family.
pub const PARTITIONS: u32 = 16;

/// The token of a family an event has no key for.
pub const NO_KEY: &str = "_";

/// The key families a subject carries, in subject order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `metadata.user_id`.
    User,
    /// `metadata.server`.
    Server,
    /// `metadata.ip_address`.
    Ip,
}

impl Family {
    /// Every family, in subject order.
    pub const ALL: [Family; 3] = [Family::User, Family::Server, Family::Ip];

    /// The family's name, as tasks and status output call it.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::User => "user",
            Family::Server => "server",
            Family::Ip => "ip",
        }
    }

    /// The metadata field whose value is this family's key.
    pub fn field(self) -> &'static str {
        match self {
            Family::User => "user_id",
            Family::Server => "server",
            Family::Ip => "ip_address",
        }
    }

    fn position(self) -> usize {
        match self {
            Family::User => 0,
            Family::Server => 1,
            Family::Ip => 2,
        }
    }

    /// The subject filter of one partition of this family, e.g. `mcpw.ev.v1.3.*.*`.
    pub fn filter(self, partition: u32) -> String {
        let mut tokens = ["*"; 3].map(String::from);
        tokens[self.position()] = partition.to_string();
        format!("{PREFIX}.{}", tokens.join("."))
    }
}

/// FNV-1a, 64 bits: the stable hash partitions are computed with.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of a key.
pub fn partition(key: &str) -> u32 {
    (fnv1a(key.as_bytes()) % u64::from(PARTITIONS)) as u32
}

/// The partition of `event`'s key in `family`; `None` when it has none (absent, empty, or
/// not a string).
pub fn event_partition(event: &Event, family: Family) -> Option<u32> {
    event
        .metadata
        .get(family.field())
        .and_then(|v| v.as_str())
        .filter(|k| !k.is_empty())
        .map(partition)
}

/// The subject `event` is published to.
pub fn subject_for(event: &Event) -> String {
    let mut s = String::with_capacity(PREFIX.len() + 9);
    s.push_str(PREFIX);
    for family in Family::ALL {
        s.push('.');
        match event_partition(event, family) {
            Some(p) => {
                use std::fmt::Write;
                let _ = write!(s, "{p}");
            }
            None => s.push_str(NO_KEY),
        }
    }
    s
}

/// The partitions a subject of this version carries, by family; `None` for a subject that is
/// not one.
pub fn parse_subject(subject: &str) -> Option<[Option<u32>; 3]> {
    let rest = subject.strip_prefix(PREFIX)?.strip_prefix('.')?;
    let mut out = [None; 3];
    let mut parts = rest.split('.');
    for slot in &mut out {
        let token = parts.next()?;
        if token != NO_KEY {
            let p: u32 = token.parse().ok()?;
            if p >= PARTITIONS {
                return None;
            }
            *slot = Some(p);
        }
    }
    parts.next().is_none().then_some(out)
}

/// A cluster task (SPEC 10): one partition of one key family, or the one `global` task that
/// runs what is grouped on no family's key. Each task reads its own subject filter, so every
/// event reaches one task of each family and the global task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// A partition of a family; `None` is the partition of events without that key (`_`).
    Part(FamilyOrd, Option<u32>),
    /// Everything.
    Global,
}

/// [`Family`] with an order, so tasks sort the same way everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FamilyOrd(u8);

impl FamilyOrd {
    /// The family.
    pub fn family(self) -> Family {
        Family::ALL[usize::from(self.0)]
    }
}

impl From<Family> for FamilyOrd {
    fn from(f: Family) -> Self {
        Self(u8::try_from(f.position()).unwrap_or(0))
    }
}

impl Task {
    /// Every task: each family's partitions `0`–`15` and `_`, then `global`.
    pub fn all() -> Vec<Task> {
        let mut out = Vec::with_capacity(Family::ALL.len() * (PARTITIONS as usize + 1) + 1);
        for f in Family::ALL {
            for p in 0..PARTITIONS {
                out.push(Task::Part(f.into(), Some(p)));
            }
            out.push(Task::Part(f.into(), None));
        }
        out.push(Task::Global);
        out
    }

    /// The family whose partition this is; `None` for `global`.
    pub fn family(self) -> Option<Family> {
        match self {
            Task::Part(f, _) => Some(f.family()),
            Task::Global => None,
        }
    }

    /// Its name: `user/3`, `server/_`, `global`.
    pub fn name(self) -> String {
        match self {
            Task::Part(f, Some(p)) => format!("{}/{p}", f.family().as_str()),
            Task::Part(f, None) => format!("{}/{NO_KEY}", f.family().as_str()),
            Task::Global => "global".to_owned(),
        }
    }

    /// The task a name names.
    pub fn parse(name: &str) -> Option<Task> {
        if name == "global" {
            return Some(Task::Global);
        }
        let (family, part) = name.split_once('/')?;
        let family = Family::ALL.into_iter().find(|f| f.as_str() == family)?;
        let part = match part {
            NO_KEY => None,
            p => Some(p.parse::<u32>().ok().filter(|p| *p < PARTITIONS)?),
        };
        Some(Task::Part(family.into(), part))
    }

    /// The subject filter it reads.
    pub fn filter(self) -> String {
        match self {
            Task::Global => format!("{PREFIX}.>"),
            Task::Part(f, Some(p)) => f.family().filter(p),
            Task::Part(f, None) => {
                let mut tokens = ["*"; 3];
                tokens[f.family().position()] = NO_KEY;
                format!("{PREFIX}.{}", tokens.join("."))
            }
        }
    }

    /// Whether a subject's partitions (from [`parse_subject`]) fall in this task.
    pub fn covers(self, parts: &[Option<u32>; 3]) -> bool {
        match self {
            Task::Global => true,
            Task::Part(f, p) => parts[f.family().position()] == p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(meta: serde_json::Value) -> Event {
        let mut e: Event = serde_json::from_value(serde_json::json!({
            "id": "0190b7c2-0000-7000-8000-000000000001",
            "timestamp": 1_700_000_000.0,
            "level": "info",
            "category": "security",
            "source": "wrap:fs",
            "event_type": "authentication",
            "message": "",
            "metadata": {},
            "tags": []
        }))
        .expect("an event");
        e.metadata = meta.as_object().cloned().unwrap_or_default();
        e
    }

    #[test]
    fn the_hash_is_pinned() {
        // FNV-1a's published test vectors: a different hash would move every key to another
        // partition and split live state between old and new edges.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(partition("alice"), (fnv1a(b"alice") % 16) as u32);
    }

    #[test]
    fn subjects_carry_partitions_never_keys() {
        let e = event(serde_json::json!({
            "user_id": "al.ice*>", "server": "fs", "ip_address": "10.0.0.1"
        }));
        let s = subject_for(&e);
        assert_eq!(
            s,
            format!(
                "{PREFIX}.{}.{}.{}",
                partition("al.ice*>"),
                partition("fs"),
                partition("10.0.0.1")
            )
        );
        assert!(!s.contains("al") && !s.contains('*') && !s.contains('>'));
        assert_eq!(
            parse_subject(&s),
            Some([
                Some(partition("al.ice*>")),
                Some(partition("fs")),
                Some(partition("10.0.0.1"))
            ])
        );
    }

    #[test]
    fn absent_empty_or_non_string_keys_are_no_key() {
        let e = event(serde_json::json!({"user_id": "", "server": 7}));
        assert_eq!(subject_for(&e), format!("{PREFIX}._._._"));
        assert_eq!(parse_subject(&subject_for(&e)), Some([None, None, None]));
    }

    #[test]
    fn a_family_filter_matches_its_partition_only() {
        assert_eq!(Family::User.filter(3), format!("{PREFIX}.3.*.*"));
        assert_eq!(Family::Server.filter(0), format!("{PREFIX}.*.0.*"));
        assert_eq!(Family::Ip.filter(15), format!("{PREFIX}.*.*.15"));
    }

    #[test]
    fn foreign_subjects_do_not_parse() {
        for s in [
            "mcpw.ev.v2.1.2.3",
            "mcpw.ev.v1.1.2",
            "mcpw.ev.v1.1.2.3.4",
            "mcpw.ev.v1.16.0.0",
            "mcpw.ev.v1.a.0.0",
        ] {
            assert_eq!(parse_subject(s), None, "{s}");
        }
    }

    #[test]
    fn keys_spread_over_every_partition() {
        let mut seen = [0u32; PARTITIONS as usize];
        for i in 0..1_000 {
            seen[partition(&format!("user-{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 30), "{seen:?}");
    }

    #[test]
    fn tasks_cover_every_subject_once_per_family() {
        let tasks = Task::all();
        assert_eq!(tasks.len(), 3 * 17 + 1);
        for t in &tasks {
            assert_eq!(Task::parse(&t.name()), Some(*t), "{}", t.name());
        }
        for parts in [
            [Some(3), None, Some(15)],
            [None, None, None],
            [Some(0), Some(9), Some(2)],
        ] {
            for f in Family::ALL {
                let n = tasks
                    .iter()
                    .filter(|t| t.family() == Some(f) && t.covers(&parts))
                    .count();
                assert_eq!(n, 1, "{parts:?} {f:?}");
            }
        }
        assert_eq!(
            Task::parse("user/_").map(Task::filter).as_deref(),
            Some("mcpw.ev.v1._.*.*")
        );
        assert_eq!(Task::parse("ip/16"), None);
        assert_eq!(Task::parse("tool/1"), None);
    }
}
