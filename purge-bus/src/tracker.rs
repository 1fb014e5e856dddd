//! Completion tracking: which nodes each purge is expected on, which have acknowledged
//! applying it and when, whether it is complete, and how long it took. Pure bookkeeping with
//! times passed in; the API and the ack consumer feed it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use cascade_purge_follower::request::PurgeRequest;

/// Purges remembered for status queries; older ones are forgotten.
pub const REMEMBERED: usize = 10_000;

/// One purge as the API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeStatus {
    /// Purge id.
    pub id: String,
    /// What was asked.
    pub request: PurgeRequest,
    /// When the API accepted it (ms since the Unix epoch).
    pub accepted_ms: u64,
    /// Nodes expected to apply it.
    pub expected: Vec<String>,
    /// Nodes that applied it, with when (ms since the Unix epoch).
    pub applied: BTreeMap<String, u64>,
    /// Expected nodes that have not applied it yet.
    pub pending: Vec<String>,
    /// Every expected node applied it.
    pub complete: bool,
    /// From acceptance to the last expected node's ack, once complete.
    pub latency_ms: Option<u64>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Recent purges by id, oldest first.
#[derive(Debug, Default)]
pub struct PurgeTracker {
    purges: VecDeque<PurgeStatus>,
}

impl PurgeTracker {
    /// Records an accepted purge expected on `expected` nodes.
    pub fn accepted(
        &mut self,
        id: String,
        request: PurgeRequest,
        expected: Vec<String>,
        at: SystemTime,
    ) {
        let mut status = PurgeStatus {
            id,
            request,
            accepted_ms: millis(at),
            expected,
            applied: BTreeMap::new(),
            pending: Vec::new(),
            complete: false,
            latency_ms: None,
        };
        Self::settle(&mut status);
        self.purges.push_back(status);
        while self.purges.len() > REMEMBERED {
            self.purges.pop_front();
        }
    }

    /// Records that `node` applied purge `id` at `at`. Duplicates keep the first time; acks
    /// for unknown purges are ignored. Returns whether the purge became complete.
    pub fn applied(&mut self, id: &str, node: &str, at: SystemTime) -> bool {
        let Some(status) = self.purges.iter_mut().rev().find(|p| p.id == id) else {
            return false;
        };
        let was_complete = status.complete;
        status.applied.entry(node.to_owned()).or_insert(millis(at));
        Self::settle(status);
        status.complete && !was_complete
    }

    fn settle(status: &mut PurgeStatus) {
        status.pending = status
            .expected
            .iter()
            .filter(|n| !status.applied.contains_key(*n))
            .cloned()
            .collect();
        let times: Option<Vec<u64>> = status
            .expected
            .iter()
            .map(|n| status.applied.get(n).copied())
            .collect();
        if let Some(times) = times {
            status.complete = true;
            let last = times.into_iter().max().unwrap_or(status.accepted_ms);
            status.latency_ms = Some(last.saturating_sub(status.accepted_ms));
        }
    }

    /// Forgets purge `id` (it was never published).
    pub fn forget(&mut self, id: &str) {
        self.purges.retain(|p| p.id != id);
    }

    /// The status of purge `id`.
    pub fn get(&self, id: &str) -> Option<&PurgeStatus> {
        self.purges.iter().rev().find(|p| p.id == id)
    }

    /// The newest `limit` purges, newest first.
    pub fn recent(&self, limit: usize) -> Vec<&PurgeStatus> {
        self.purges.iter().rev().take(limit).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_purge_follower::request::{PurgeAction, PurgeKind};
    use std::time::Duration;

    fn request() -> PurgeRequest {
        PurgeRequest {
            kind: PurgeKind::Url,
            targets: vec!["https://cdn.example/a.m4s".into()],
            action: PurgeAction::Delete,
            confirm_all: false,
        }
    }

    #[test]
    fn a_purge_completes_when_every_expected_node_acked() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut tracker = PurgeTracker::default();
        tracker.accepted(
            "p1".into(),
            request(),
            vec!["edge-1".into(), "shield-1".into()],
            t0,
        );
        assert!(!tracker.get("p1").unwrap().complete);
        assert_eq!(tracker.get("p1").unwrap().pending, ["edge-1", "shield-1"]);
        assert!(!tracker.applied("p1", "edge-1", t0 + Duration::from_millis(12)));
        assert_eq!(
            tracker.get("p1").unwrap().pending,
            ["shield-1"],
            "the status names who is still missing"
        );
        assert!(!tracker.applied("p1", "stranger", t0 + Duration::from_millis(13)));
        assert!(tracker.applied("p1", "shield-1", t0 + Duration::from_millis(30)));
        assert!(
            !tracker.applied("p1", "shield-1", t0 + Duration::from_millis(90)),
            "a duplicate ack changes nothing"
        );
        let status = tracker.get("p1").unwrap();
        assert!(status.complete);
        assert!(status.pending.is_empty());
        assert_eq!(status.latency_ms, Some(30));
        assert_eq!(status.applied["shield-1"], 1_700_000_000_030);
        assert!(!tracker.applied("unknown", "edge-1", t0));
    }

    #[test]
    fn no_expected_nodes_is_complete_at_once_and_old_purges_are_forgotten() {
        let t0 = SystemTime::now();
        let mut tracker = PurgeTracker::default();
        tracker.accepted("lonely".into(), request(), vec![], t0);
        assert_eq!(tracker.get("lonely").unwrap().latency_ms, Some(0));
        for i in 0..REMEMBERED {
            tracker.accepted(format!("p{i}"), request(), vec!["n".into()], t0);
        }
        assert!(tracker.get("lonely").is_none());
        let recent = tracker.recent(2);
        assert_eq!(recent[0].id, format!("p{}", REMEMBERED - 1));
        assert_eq!(recent.len(), 2);
    }
}
