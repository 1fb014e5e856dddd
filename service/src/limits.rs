//! Per-listener limits shared by every service: connection caps (in total and per client
//! address) and a per-address limit on failed authentication.
//!
//! A client address is an IPv4 address or an IPv6 /64, since one IPv6 host usually holds a
//! whole /64. Both limiters take the time as an argument, so their logic is tested without
//! sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// The unit a per-address limit counts: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(u128);

impl From<IpAddr> for AddressKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                None => Self((u128::from(v6) >> 64) << 64 | 1),
            },
        }
    }
}

/// How many connections a listener holds open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// In all.
    pub total: usize,
    /// From one client address.
    pub per_address: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    /// The listener is full.
    #[error("the listener already holds its {0} connections")]
    Full(usize),
    /// This address holds its share.
    #[error("this address already holds its {0} connections")]
    AddressFull(usize),
}

/// Counts a listener's open connections; each accepted one holds a [`ConnectionSlot`].
#[derive(Debug)]
pub struct ConnectionCaps {
    limits: ConnectionLimits,
    open: Mutex<(usize, HashMap<AddressKey, usize>)>,
}

/// One open connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    caps: Arc<ConnectionCaps>,
    key: AddressKey,
}

impl ConnectionCaps {
    /// Caps at `limits`.
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// Takes a slot for a connection from `peer`, or says why not.
    pub fn try_open(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionSlot, CapError> {
        let key = AddressKey::from(peer);
        let mut open = lock(&self.open);
        if open.0 >= self.limits.total {
            return Err(CapError::Full(self.limits.total));
        }
        let from_here = open.1.entry(key).or_insert(0);
        if *from_here >= self.limits.per_address {
            return Err(CapError::AddressFull(self.limits.per_address));
        }
        *from_here += 1;
        open.0 += 1;
        Ok(ConnectionSlot {
            caps: Arc::clone(self),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.open).0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.caps.open);
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.key);
            }
        }
    }
}

/// Failed authentications allowed per address in a window before refusing that address.
#[derive(Debug)]
pub struct AuthFailures {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<AddressKey, (Instant, u32)>>,
}

/// Addresses remembered at most; past this, expired entries are dropped, and if none has
/// expired the new address is not tracked (so memory stays bounded under a spray of sources).
const MAX_TRACKED: usize = 65_536;

impl Default for AuthFailures {
    /// 10 failures per minute.
    fn default() -> Self {
        Self::new(10, Duration::from_secs(60))
    }
}

impl AuthFailures {
    /// Allows `max` failures per `window` per address.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(wait)` when `peer` has used up its failures and must wait before trying again.
    pub fn blocked(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let seen = lock(&self.seen);
        let &(start, count) = seen.get(&AddressKey::from(peer))?;
        let end = start + self.window;
        (count >= self.max && now < end).then(|| end - now)
    }

    /// Counts a failed authentication from `peer`.
    pub fn record(&self, peer: IpAddr, now: Instant) {
        let key = AddressKey::from(peer);
        let mut seen = lock(&self.seen);
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&key) {
            let window = self.window;
            seen.retain(|_, (start, _)| now.duration_since(*start) < window);
            if seen.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = seen.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_capped_in_total_and_per_address_and_freed_on_drop() {
        let caps = ConnectionCaps::new(ConnectionLimits {
            total: 3,
            per_address: 2,
        });
        let a1 = caps.try_open(ip("10.0.0.1")).unwrap();
        let _a2 = caps.try_open(ip("10.0.0.1")).unwrap();
        assert_eq!(
            caps.try_open(ip("10.0.0.1")).unwrap_err(),
            CapError::AddressFull(2)
        );
        let _b = caps.try_open(ip("10.0.0.2")).unwrap();
        assert_eq!(
            caps.try_open(ip("10.0.0.3")).unwrap_err(),
            CapError::Full(3)
        );
        drop(a1);
        assert_eq!(caps.open(), 2);
        caps.try_open(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address_and_mapped_ipv4_as_its_ipv4() {
        assert_eq!(
            AddressKey::from(ip("2001:db8::1")),
            AddressKey::from(ip("2001:db8::ffff:1"))
        );
        assert_ne!(
            AddressKey::from(ip("2001:db8::1")),
            AddressKey::from(ip("2001:db8:0:1::1"))
        );
        assert_eq!(
            AddressKey::from(ip("::ffff:10.0.0.1")),
            AddressKey::from(ip("10.0.0.1"))
        );
        assert_ne!(AddressKey::from(ip("::")), AddressKey::from(ip("0.0.0.0")));
    }

    #[test]
    fn failures_block_an_address_until_its_window_ends() {
        let failures = AuthFailures::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let bad = ip("192.0.2.7");
        for i in 0..3 {
            assert_eq!(failures.blocked(bad, t0), None, "failure {i}");
            failures.record(bad, t0 + Duration::from_secs(i));
        }
        assert_eq!(
            failures.blocked(bad, t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(failures.blocked(ip("192.0.2.8"), t0), None);
        assert_eq!(failures.blocked(bad, t0 + Duration::from_secs(60)), None);
        failures.record(bad, t0 + Duration::from_secs(61));
        assert_eq!(failures.blocked(bad, t0 + Duration::from_secs(62)), None);
    }
}
