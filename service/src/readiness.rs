//! What `/readyz` waits for. Each component that must finish something before the node may take
//! traffic (listeners bound, purge topic caught up, ...) holds a [`Gate`] and opens it when done.
//! A node that is shutting down is never ready, so load balancers drain it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The node's readiness: every gate open and not draining.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    closed_gates: BTreeMap<u64, String>,
    draining: bool,
}

/// One condition that keeps the node unready until [`Gate::open`] is called.
#[derive(Debug)]
pub struct Gate {
    id: u64,
    state: Arc<Mutex<State>>,
}

impl Readiness {
    /// A readiness with no conditions: ready until a gate is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a closed condition, described by `what` in `/readyz` answers.
    pub fn gate(&self, what: impl Into<String>) -> Gate {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        s.closed_gates.insert(id, what.into());
        Gate {
            id,
            state: Arc::clone(&self.state),
        }
    }

    /// Marks the node as shutting down; it stays unready from now on.
    pub fn start_draining(&self) {
        self.lock().draining = true;
    }

    /// `Ok` when ready, else what it is still waiting for.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let s = self.lock();
        let mut waiting: Vec<String> = s.closed_gates.values().cloned().collect();
        if s.draining {
            waiting.insert(0, "shutting down".into());
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Gate {
    /// The condition is met.
    pub fn open(self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed_gates
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_gate_is_open_and_not_draining() {
        let r = Readiness::new();
        assert!(r.check().is_ok());
        let listeners = r.gate("listeners bound");
        let purges = r.gate("purge topic caught up");
        assert_eq!(
            r.check().unwrap_err(),
            ["listeners bound", "purge topic caught up"]
        );
        listeners.open();
        assert_eq!(r.check().unwrap_err(), ["purge topic caught up"]);
        purges.open();
        assert!(r.check().is_ok());
        r.start_draining();
        assert_eq!(r.check().unwrap_err(), ["shutting down"]);
    }
}
