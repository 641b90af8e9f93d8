//! Which principal opened each session. With authentication on, an `Mcp-Session-Id` is usable
//! only by the user who opened it, so a leaked session id does not let another caller ride on
//! someone else's session. Bounded: beyond the limit an arbitrary binding is forgotten (its
//! session then accepts any authenticated caller, as before the gateway saw it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Session → the user id that opened it, per upstream.
pub struct SessionOwners {
    map: Mutex<HashMap<String, Arc<str>>>,
    max: usize,
}

fn key(server: &str, session: &str) -> String {
    format!("{server}\0{session}")
}

impl SessionOwners {
    /// Remembers at most `max` sessions.
    pub fn new(max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<str>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `user` opened `session` on `server`.
    pub fn bind(&self, server: &str, session: &str, user: &Arc<str>) {
        let mut map = self.lock();
        if map.len() >= self.max {
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
        map.insert(key(server, session), user.clone());
    }

    /// Whether `user` may use `session`: it opened it, or the session is not known.
    pub fn may_use(&self, server: &str, session: &str, user: &str) -> bool {
        self.lock()
            .get(&key(server, session))
            .is_none_or(|owner| owner.as_ref() == user)
    }

    /// The session ended.
    pub fn forget(&self, server: &str, session: &str) {
        self.lock().remove(&key(server, session));
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
        assert!(o.may_use("fs", "s1", "alice"));
        assert!(!o.may_use("fs", "s1", "bob"));
        assert!(o.may_use("other", "s1", "bob"), "per upstream");
        assert!(o.may_use("fs", "unknown", "bob"));
        o.forget("fs", "s1");
        assert!(o.may_use("fs", "s1", "bob"));
        for s in ["a", "b", "c"] {
            o.bind("fs", s, &alice);
        }
        assert!(o.lock().len() <= 2);
    }
}
