//! Admission of connections: at most `max` open at once, at most `per_address` from one address
//! (one IPv4 address, or one IPv6 /64, since whoever has one address in a /64 usually has all).
//!
//! A [`Permit`] is held for the life of the connection and gives its places back when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    Full,
    /// `max_connections_per_address` are open from this address.
    AddressFull,
}

/// Counts open connections, in total and per address.
#[derive(Debug)]
pub struct Gate {
    max: usize,
    per_address: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One admitted connection's places; given back on drop.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    address: IpAddr,
}

impl Gate {
    /// A gate admitting `max` connections, `per_address` from any one address.
    pub fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_address,
            open: Mutex::default(),
        })
    }

    /// Admits a connection from `peer`, or says why not.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, Refusal> {
        let address = bucket(peer);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.max {
            return Err(Refusal::Full);
        }
        let from_here = open.by_address.entry(address).or_default();
        if *from_here >= self.per_address {
            return Err(Refusal::AddressFull);
        }
        *from_here += 1;
        open.total += 1;
        Ok(Permit {
            gate: self.clone(),
            address,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

/// The address a connection counts against: IPv4 as is (also when mapped into IPv6), IPv6 by /64.
fn bucket(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_total_and_per_address_and_gives_places_back() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refusal::AddressFull);
        let _b1 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(c).unwrap_err(), Refusal::Full);
        drop(a1);
        assert_eq!(gate.open(), 2);
        let _c1 = gate.admit(c).unwrap();
    }

    #[test]
    fn one_ipv6_slash_64_is_one_address_and_mapped_ipv4_is_ipv4() {
        let gate = Gate::new(10, 1);
        let _p = gate.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let other_host: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(gate.admit(other_host).unwrap_err(), Refusal::AddressFull);
        let _q = gate.admit("2001:db8:1:3::1".parse().unwrap()).unwrap();
        let _v4 = gate.admit("10.0.0.1".parse().unwrap()).unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(gate.admit(mapped).unwrap_err(), Refusal::AddressFull);
    }
}
