//! Whom the bus expects to apply a purge: the nodes named in `purge_bus.nodes`, plus every node
//! that sent a heartbeat recently. A node that stops reporting drops out after
//! [`MEMBER_TIMEOUT`], so a dead node does not hold every later purge incomplete forever; a
//! configured node is always expected.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A node that has not reported for this long is no longer expected.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(10);

/// Most nodes tracked from heartbeats; a flood of made-up ids cannot grow it past this.
pub const MAX_MEMBERS: usize = 10_000;

/// Known nodes.
#[derive(Debug, Default)]
pub struct Membership {
    configured: BTreeSet<String>,
    last_seen: BTreeMap<String, Instant>,
}

impl Membership {
    /// Membership that always includes `configured`.
    pub fn new(configured: impl IntoIterator<Item = String>) -> Self {
        Self {
            configured: configured.into_iter().collect(),
            last_seen: BTreeMap::new(),
        }
    }

    /// Records that `node` reported at `now`.
    pub fn seen(&mut self, node: &str, now: Instant) {
        if let Some(at) = self.last_seen.get_mut(node) {
            *at = now;
            return;
        }
        if self.last_seen.len() >= MAX_MEMBERS {
            self.forget_silent(now);
            if self.last_seen.len() >= MAX_MEMBERS {
                return;
            }
        }
        self.last_seen.insert(node.to_owned(), now);
    }

    fn forget_silent(&mut self, now: Instant) {
        self.last_seen
            .retain(|_, at| now.saturating_duration_since(*at) < MEMBER_TIMEOUT);
    }

    /// The nodes a purge accepted at `now` must reach, sorted.
    pub fn expected(&mut self, now: Instant) -> Vec<String> {
        self.forget_silent(now);
        self.configured
            .iter()
            .chain(self.last_seen.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_nodes_stay_and_silent_heartbeaters_drop_out() {
        let t0 = Instant::now();
        let mut members = Membership::new(["shield-1".to_owned()]);
        assert_eq!(members.expected(t0), ["shield-1"]);
        members.seen("edge-2", t0);
        members.seen("edge-1", t0);
        members.seen("shield-1", t0);
        assert_eq!(members.expected(t0), ["edge-1", "edge-2", "shield-1"]);
        members.seen("edge-1", t0 + Duration::from_secs(8));
        assert_eq!(
            members.expected(t0 + Duration::from_secs(12)),
            ["edge-1", "shield-1"],
            "edge-2 went quiet; shield-1 is configured"
        );
    }

    #[test]
    fn a_flood_of_ids_is_bounded() {
        let t0 = Instant::now();
        let mut members = Membership::default();
        for i in 0..MAX_MEMBERS + 50 {
            members.seen(&format!("n{i}"), t0);
        }
        assert_eq!(members.expected(t0).len(), MAX_MEMBERS);
        members.seen("late", t0 + MEMBER_TIMEOUT);
        assert_eq!(members.expected(t0 + MEMBER_TIMEOUT), ["late"]);
    }
}
