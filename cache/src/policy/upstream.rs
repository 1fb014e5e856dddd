//! Which upstream fills a miss. An edge picks shields by consistent hashing (Ketama) on the
//! cache key, so each object is fetched through one shield and adding or removing a shield
//! moves only its share of keys; unhealthy shields are skipped in ring order, then the origin
//! (if configured) is the last resort. A shield tries its origins in configured order: the
//! primary, then backups. Health is kept as flags here; the checker that sets them is in the
//! server shell.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

/// Points each node gets on the ring (Ketama uses 160: 40 hashes × 4 points).
const POINTS_PER_NODE: usize = 160;

/// A consistent-hash ring over named nodes.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, node index), sorted by point.
    points: Vec<(u32, usize)>,
    nodes: usize,
}

impl Ring {
    /// A ring over `names` (e.g. `host:port`); node `i` is `names[i]`.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let mut points = Vec::with_capacity(names.len() * POINTS_PER_NODE);
        for (index, name) in names.iter().enumerate() {
            for block in 0..POINTS_PER_NODE / 4 {
                let digest = Sha256::digest(format!("{}-{block}", name.as_ref()).as_bytes());
                for word in digest.chunks_exact(4).take(4) {
                    points.push((
                        u32::from_be_bytes([word[0], word[1], word[2], word[3]]),
                        index,
                    ));
                }
            }
        }
        points.sort_unstable();
        Self {
            points,
            nodes: names.len(),
        }
    }

    /// Nodes in ring order starting at `key`'s position, each once: the first is the owner,
    /// the rest the failover order.
    pub fn candidates(&self, key: &[u8]) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes);
        if self.points.is_empty() {
            return out;
        }
        let digest = Sha256::digest(key);
        let h = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        let start = self.points.partition_point(|&(p, _)| p < h);
        for i in 0..self.points.len() {
            let (_, node) = self.points[(start + i) % self.points.len()];
            if !out.contains(&node) {
                out.push(node);
                if out.len() == self.nodes {
                    break;
                }
            }
        }
        out
    }
}

/// How candidates are ordered for a key.
#[derive(Debug)]
enum Order {
    /// Ring order from the key's position: each key has its own owner.
    Hashed(Ring),
    /// Configuration order for every key: a primary and its backups.
    Fixed,
}

/// The upstreams of a tier with their health.
#[derive(Debug)]
pub struct Upstreams {
    nodes: Vec<SocketAddr>,
    healthy: Vec<AtomicBool>,
    order: Order,
    last_resort: Option<SocketAddr>,
}

impl Upstreams {
    /// Shields (hashed over) and an optional origin used when no shield is healthy. Every
    /// upstream starts healthy.
    pub fn new(shields: Vec<SocketAddr>, origin: Option<SocketAddr>) -> Self {
        let names: Vec<String> = shields.iter().map(ToString::to_string).collect();
        Self::build(shields, Order::Hashed(Ring::new(&names)), origin)
    }

    /// Origins tried in the given order for every key: the primary, then the backups.
    pub fn ordered(origins: Vec<SocketAddr>) -> Self {
        Self::build(origins, Order::Fixed, None)
    }

    fn build(nodes: Vec<SocketAddr>, order: Order, last_resort: Option<SocketAddr>) -> Self {
        let healthy = nodes.iter().map(|_| AtomicBool::new(true)).collect();
        Self {
            nodes,
            healthy,
            order,
            last_resort,
        }
    }

    /// Every health-checked upstream (shields, or origins).
    pub fn nodes(&self) -> &[SocketAddr] {
        &self.nodes
    }

    /// Records a health verdict for `addr`; returns true when it changed.
    pub fn set_healthy(&self, addr: SocketAddr, healthy: bool) -> bool {
        match self.nodes.iter().position(|a| *a == addr) {
            Some(i) => self.healthy[i].swap(healthy, Ordering::Relaxed) != healthy,
            None => false,
        }
    }

    /// Whether `addr` is currently considered healthy.
    pub fn is_healthy(&self, addr: SocketAddr) -> bool {
        self.nodes
            .iter()
            .position(|a| *a == addr)
            .is_some_and(|i| self.healthy[i].load(Ordering::Relaxed))
    }

    fn candidates(&self, key: &[u8]) -> Vec<usize> {
        match &self.order {
            Order::Hashed(ring) => ring.candidates(key),
            Order::Fixed => (0..self.nodes.len()).collect(),
        }
    }

    /// The upstream to try next for `key`, skipping those already `tried`: healthy nodes in
    /// order, then the last resort (the edge's origin). With no node healthy and no last
    /// resort, the nodes are tried anyway in order (they may have recovered since the last
    /// check).
    pub fn choose(&self, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        let candidates = self.candidates(key);
        let is_healthy = |i: usize| self.healthy[i].load(Ordering::Relaxed);
        let healthy = candidates
            .iter()
            .filter(|&&i| is_healthy(i))
            .map(|&i| self.nodes[i])
            .find(|a| !tried.contains(a));
        if healthy.is_some() {
            return healthy;
        }
        match self.last_resort {
            Some(last) => Some(last).filter(|a| !tried.contains(a)),
            None if candidates.iter().all(|&i| !is_healthy(i)) => candidates
                .iter()
                .map(|&i| self.nodes[i])
                .find(|a| !tried.contains(a)),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn keys() -> Vec<Vec<u8>> {
        (0..10_000)
            .map(|i| format!("cdn.example.com/live/s/720p/{i}.m4s").into_bytes())
            .collect()
    }

    #[test]
    fn keys_spread_evenly_over_nodes() {
        let ring = Ring::new(&["a:1", "b:1", "c:1", "d:1"]);
        let mut counts = [0usize; 4];
        for k in keys() {
            counts[ring.candidates(&k)[0]] += 1;
        }
        for c in counts {
            assert!((1_500..3_500).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let before = Ring::new(&["a:1", "b:1", "c:1", "d:1"]);
        let after = Ring::new(&["a:1", "b:1", "c:1"]);
        for k in keys() {
            let owner = before.candidates(&k)[0];
            if owner != 3 {
                assert_eq!(
                    after.candidates(&k)[0],
                    owner,
                    "a key of a surviving node moved"
                );
            }
        }
    }

    #[test]
    fn candidates_list_every_node_once() {
        let ring = Ring::new(&["a:1", "b:1", "c:1"]);
        let mut c = ring.candidates(b"key");
        c.sort_unstable();
        assert_eq!(c, [0, 1, 2]);
        assert!(Ring::new::<&str>(&[]).candidates(b"key").is_empty());
    }

    #[test]
    fn failover_skips_unhealthy_and_tried_shields_then_uses_the_origin() {
        let u = Upstreams::new(vec![addr(1), addr(2)], Some(addr(9)));
        let owner = u.choose(b"k", &[]).unwrap();
        let second = u.choose(b"k", &[owner]).unwrap();
        assert_ne!(owner, second);
        assert_eq!(u.choose(b"k", &[owner, second]), Some(addr(9)));
        assert_eq!(u.choose(b"k", &[owner, second, addr(9)]), None);
        // The owner fails and is marked down during the request: the next try is the other.
        assert!(u.set_healthy(owner, false));
        assert!(!u.set_healthy(owner, false), "no change the second time");
        assert_eq!(u.choose(b"k", &[owner]), Some(second));
        assert_eq!(
            u.choose(b"k", &[]),
            Some(second),
            "new requests skip the unhealthy owner"
        );
        assert!(u.set_healthy(second, false));
        assert_eq!(
            u.choose(b"k", &[]),
            Some(addr(9)),
            "origin when every shield is down"
        );
        let no_origin = Upstreams::new(vec![addr(1)], None);
        no_origin.set_healthy(addr(1), false);
        assert_eq!(
            no_origin.choose(b"k", &[]),
            Some(addr(1)),
            "with nothing else, try the owner anyway"
        );
        assert_eq!(no_origin.choose(b"k", &[addr(1)]), None);
    }

    #[test]
    fn ordered_origins_fail_over_from_the_primary_to_backups_in_order() {
        let u = Upstreams::ordered(vec![addr(1), addr(2), addr(3)]);
        for key in [b"a".as_slice(), b"b", b"c"] {
            assert_eq!(
                u.choose(key, &[]),
                Some(addr(1)),
                "the primary for every key"
            );
        }
        assert_eq!(u.choose(b"a", &[addr(1)]), Some(addr(2)));
        assert_eq!(u.choose(b"a", &[addr(1), addr(2)]), Some(addr(3)));
        assert_eq!(u.choose(b"a", &[addr(1), addr(2), addr(3)]), None);
        u.set_healthy(addr(1), false);
        assert_eq!(
            u.choose(b"a", &[]),
            Some(addr(2)),
            "a down primary is skipped"
        );
        u.set_healthy(addr(2), false);
        u.set_healthy(addr(3), false);
        assert_eq!(
            u.choose(b"a", &[]),
            Some(addr(1)),
            "all down: try them in order anyway"
        );
        assert_eq!(u.choose(b"a", &[addr(1)]), Some(addr(2)));
    }
}
