//! Which principal opened each session. With authentication on, an `Mcp-Session-Id` is usable
//! only by the user who opened it, so a leaked session id does not let another caller ride on
//! someone else's session. A session the gateway knows no owner of (it restarted, or forgot
//! the binding to stay bounded) is refused to everyone: its owner initializes a new one.
//! Bounded: beyond the limit the oldest binding is forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Whose a session is, to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The caller opened it.
    Caller,
    /// Another user did.
    Other,
    /// Nobody the gateway knows of.
    Unknown,
}

/// Session → the user id that opened it (and when, in binding order), per upstream.
pub struct SessionOwners {
    map: Mutex<Bindings>,
    max: usize,
}

#[derive(Default)]
struct Bindings {
    owners: HashMap<String, (Arc<str>, u64)>,
    next: u64,
}

fn key(server: &str, session: &str) -> String {
    format!("{server}\0{session}")
}

impl SessionOwners {
    /// Remembers at most `max` sessions.
    pub fn new(max: usize) -> Self {
        Self {
            map: Mutex::new(Bindings::default()),
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bindings> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `user` opened `session` on `server`.
    pub fn bind(&self, server: &str, session: &str, user: &Arc<str>) {
        let mut b = self.lock();
        let k = key(server, session);
        if b.owners.len() >= self.max && !b.owners.contains_key(&k) {
            let oldest = b
                .owners
                .iter()
                .min_by_key(|(_, (_, n))| *n)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                b.owners.remove(&oldest);
            }
        }
        let n = b.next;
        b.next += 1;
        b.owners.insert(k, (user.clone(), n));
    }

    /// Whose `session` on `server` is, to `user`.
    pub fn owner(&self, server: &str, session: &str, user: &str) -> Ownership {
        match self.lock().owners.get(&key(server, session)) {
            Some((owner, _)) if owner.as_ref() == user => Ownership::Caller,
            Some(_) => Ownership::Other,
            None => Ownership::Unknown,
        }
    }

    /// The session ended.
    pub fn forget(&self, server: &str, session: &str) {
        self.lock().owners.remove(&key(server, session));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_owners_and_the_map_stays_bounded() {
        let o = SessionOwners::new(2);
        let alice: Arc<str> = Arc::from("alice");
        o.bind("fs", "s1", &alice);
        assert_eq!(o.owner("fs", "s1", "alice"), Ownership::Caller);
        assert_eq!(o.owner("fs", "s1", "bob"), Ownership::Other);
        assert_eq!(
            o.owner("other", "s1", "bob"),
            Ownership::Unknown,
            "per upstream"
        );
        o.forget("fs", "s1");
        assert_eq!(
            o.owner("fs", "s1", "alice"),
            Ownership::Unknown,
            "fails closed"
        );
        for s in ["a", "b", "c"] {
            o.bind("fs", s, &alice);
        }
        assert_eq!(o.lock().owners.len(), 2);
        assert_eq!(
            o.owner("fs", "a", "alice"),
            Ownership::Unknown,
            "the oldest went"
        );
        assert_eq!(o.owner("fs", "c", "alice"), Ownership::Caller);
    }
}
