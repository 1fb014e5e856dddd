//! When a node has caught up with the purge topic: it noted each partition's end when it
//! started, and it is caught up once it has applied (or found committed) everything before
//! those ends. Until then it must not report ready: it could serve something already purged.

use std::collections::BTreeMap;

/// Progress towards the ends a node saw at start.
#[derive(Debug, Clone, Default)]
pub struct CatchUp {
    /// Partition → offset to reach (the end at start).
    targets: BTreeMap<i32, i64>,
    /// Partition → next offset to process.
    positions: BTreeMap<i32, i64>,
}

impl CatchUp {
    /// Catch-up to `targets` (partition → end offset at start).
    pub fn new(targets: impl IntoIterator<Item = (i32, i64)>) -> Self {
        Self {
            targets: targets.into_iter().collect(),
            positions: BTreeMap::new(),
        }
    }

    /// Records that everything before `next` on `partition` is done (a committed offset, or a
    /// message just applied at `next - 1`).
    pub fn advance(&mut self, partition: i32, next: i64) {
        let position = self.positions.entry(partition).or_insert(next);
        *position = (*position).max(next);
    }

    /// True once every partition reached its target.
    pub fn is_caught_up(&self) -> bool {
        self.targets.iter().all(|(partition, target)| {
            *target <= 0 || self.positions.get(partition).is_some_and(|p| p >= target)
        })
    }

    /// Messages still to process, summed over partitions (for logs).
    pub fn behind(&self) -> i64 {
        self.targets
            .iter()
            .map(|(p, target)| (target - self.positions.get(p).copied().unwrap_or(0)).max(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_once_every_partition_reaches_its_start_end() {
        let mut c = CatchUp::new([(0, 5), (1, 0), (2, 3)]);
        assert!(!c.is_caught_up());
        assert_eq!(c.behind(), 8);
        c.advance(0, 5);
        assert!(!c.is_caught_up(), "partition 2 is behind");
        c.advance(2, 2);
        c.advance(2, 1);
        assert_eq!(c.behind(), 1, "positions never go back");
        c.advance(2, 3);
        assert!(c.is_caught_up(), "an empty partition needs nothing");
        assert!(CatchUp::new([]).is_caught_up());
    }
}
