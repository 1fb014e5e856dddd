//! Bulk purges under way: a tombstone hides what a large purge selected until the
//! background removal is done.

use super::*;

/// Purges that select at least this many objects remove them in the background; until they
/// are gone, a tombstone hides them from lookups, so the purge takes effect at once.
pub const BULK_PURGE: usize = 10_000;

/// A large delete-purge still being carried out: copies it names that were stored before it
/// (generation below `before`) are treated as absent.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Tombstone {
    pub(super) selector: Selector,
    pub(super) before: u64,
}

/// The tombstones of bulk purges under way.
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    /// Fast path: lookups skip the lock while there are none.
    pub(super) any: AtomicBool,
    pub(super) list: Mutex<Vec<Tombstone>>,
}

impl Tombstones {
    pub(super) fn add(&self, tombstone: Tombstone) {
        lock(&self.list).push(tombstone);
        self.any.store(true, Ordering::Release);
    }

    pub(super) fn remove(&self, tombstone: &Tombstone) {
        let mut list = lock(&self.list);
        if let Some(i) = list.iter().position(|t| t == tombstone) {
            list.remove(i);
        }
        self.any.store(!list.is_empty(), Ordering::Release);
    }

    pub(super) fn hides(&self, obj: &CachedObject) -> bool {
        self.any.load(Ordering::Acquire)
            && lock(&self.list)
                .iter()
                .any(|t| obj.generation < t.before && t.selector.matches(&obj.key, &obj.tags))
    }
}
