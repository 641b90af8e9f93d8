//! Events a cluster node relays from its ingest API to the stream carry proof that a node
//! sent them.
//!
//! The ingest API fills in `source = "api:<token>"` for what a token posts, and ingest refuses
//! an `api:` source from anyone else, so that one client cannot pass its events off as another
//! token's. On the stream, a message could come from any edge allowed to publish; so a relayed
//! message carries `Mcpwatch-Relay-Mac`, an HMAC-SHA256 over its id and body under a key only
//! the cluster's nodes hold (kept in their shared PostgreSQL database), and the consumer
//! accepts an `api:` source only with a valid one. A wrong MAC refuses the message outright.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header a relayed message carries.
pub const RELAY_HEADER: &str = "Mcpwatch-Relay-Mac";

/// The cluster's relay key.
#[derive(Clone)]
pub struct RelayKey([u8; 32]);

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKey(…)")
    }
}

impl RelayKey {
    /// A key from its bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn mac(&self, msg_id: &str, payload: &[u8]) -> Hmac<Sha256> {
        // Any length is a valid HMAC key.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(&(msg_id.len() as u64).to_be_bytes());
        m.update(msg_id.as_bytes());
        m.update(payload);
        m
    }

    /// The header value for a message.
    pub fn sign(&self, msg_id: &str, payload: &[u8]) -> String {
        let tag = self.mac(msg_id, payload).finalize().into_bytes();
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `value` is this key's MAC of the message (compared in constant time).
    pub fn verify(&self, msg_id: &str, payload: &[u8], value: &str) -> bool {
        let Some(tag) = decode_hex(value) else {
            return false;
        };
        self.mac(msg_id, payload).verify_slice(&tag).is_ok()
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_verifies_only_for_its_message_and_key() {
        let k = RelayKey::new([7; 32]);
        let tag = k.sign("id-1", b"{\"a\":1}");
        assert_eq!(tag.len(), 64);
        assert!(k.verify("id-1", b"{\"a\":1}", &tag));
        assert!(!k.verify("id-2", b"{\"a\":1}", &tag));
        assert!(!k.verify("id-1", b"{\"a\":2}", &tag));
        assert!(!RelayKey::new([8; 32]).verify("id-1", b"{\"a\":1}", &tag));
        // The id's length is bound in: moving bytes between id and body changes the MAC.
        assert!(!k.verify("id-1{", b"\"a\":1}", &tag));
        assert!(!k.verify("id-1", b"{\"a\":1}", "zz"));
        assert!(!k.verify("id-1", b"{\"a\":1}", &"é".repeat(32)));
    }
}
