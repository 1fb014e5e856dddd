//! Fair first bytes for a crowd: when many readers of one object start together (collapse
//! waiters released at once, readers of a fill in progress), each sends a small first share of
//! its answer, and none sends its bulk until the crowd's first shares have stopped arriving.
//!
//! Without this the last of a thousand followers waits for the bodies of all the others: the
//! cache lock releases its waiters a few at a time, so a follower woken late finds the bulk of
//! those woken early in front of it on the same cores. The bytes sent are the same; only
//! their order changes, so nobody waits for others' bodies to get their first byte. The cost:
//! a reader's bulk can wait up to [`MAX_HOLD`] behind a crowd that keeps arriving.
//!
//! [`quiet_in`] is the pure decision; [`CrowdGate`] is the per-object state readers share and
//! [`Pacing`] is one reader's progress through "first share, then wait, then the rest".

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How much of an answer goes out before the reader lets the rest of the crowd go first.
pub const FIRST_SHARE: usize = 16 * 1024;

/// The crowd is over when no reader has started for this long. Followers start tens of
/// microseconds apart; the margin is for a core taken away for a moment and for the timer's
/// millisecond steps.
pub const QUIET: Duration = Duration::from_millis(2);

/// The longest a reader holds its bulk back after its first share: a crowd that keeps
/// arriving (more readers than the cores can start in this time) does not starve anyone.
pub const MAX_HOLD: Duration = Duration::from_millis(50);

/// How long until the crowd counts as quiet, given when its latest first share went out;
/// `None` when it already is.
pub fn quiet_in(latest_first_share: Duration, now: Duration) -> Option<Duration> {
    let since = now.saturating_sub(latest_first_share);
    (since < QUIET).then(|| QUIET - since)
}

/// What the readers of one object share about their crowd.
#[derive(Debug)]
pub struct CrowdGate {
    /// Moments are kept as time since this, so they fit in an atomic.
    epoch: Instant,
    /// When the latest first share went out, in nanoseconds since `epoch` (0 before any:
    /// the same as one at `epoch`).
    latest_first_share: AtomicU64,
    /// First shares sent so far: a reader that finds none after its own is not in a crowd.
    first_shares: AtomicU64,
    /// One held reader watches the clock; the others wait to be told.
    watching: AtomicBool,
    quiet: Notify,
}

impl Default for CrowdGate {
    fn default() -> Self {
        Self::new()
    }
}

impl CrowdGate {
    /// A gate for a new object: no crowd yet.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            latest_first_share: AtomicU64::new(0),
            first_shares: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            quiet: Notify::new(),
        }
    }

    /// A reader is sending its first share now; returns how many have, this one included.
    fn first_share(&self) -> u64 {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.latest_first_share.fetch_max(now, Ordering::AcqRel);
        self.first_shares.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn quiet_in(&self) -> Option<Duration> {
        let latest = Duration::from_nanos(self.latest_first_share.load(Ordering::Acquire));
        quiet_in(latest, self.epoch.elapsed())
    }

    /// Returns once no reader has sent a first share for [`QUIET`], or at `deadline`.
    ///
    /// A thousand held readers each re-arming a timer every millisecond would cost the cores
    /// the crowd is waiting on, so one of them watches and wakes the others.
    async fn wait_for_quiet(&self, deadline: Instant) {
        loop {
            let notified = self.quiet.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.quiet_in().is_none() || Instant::now() >= deadline {
                return;
            }
            if self
                .watching
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let _watch = Watch(self);
                while let Some(wait) = self.quiet_in() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    tokio::time::sleep(wait.min(left)).await;
                }
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

/// The watcher's turn: when it ends (quiet, deadline, or the request dropped) the others are
/// woken to look for themselves.
struct Watch<'a>(&'a CrowdGate);

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.0.watching.store(false, Ordering::Release);
        self.0.quiet.notify_waiters();
    }
}

/// One reader's pacing. Readers that are not part of a crowd (plain hits, the request doing
/// the fetch) stay [`Pacing::Off`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Everything as fast as it comes.
    Off,
    /// The next read returns at most [`FIRST_SHARE`].
    First,
    /// The first share is out; the next read waits for the crowd (until the deadline).
    Hold {
        /// When the bulk goes regardless.
        deadline: Instant,
        /// The gate's count of first shares when this reader sent its own.
        ticket: u64,
    },
}

impl Pacing {
    /// The length to return of `n` available bytes.
    pub fn limit(&mut self, n: usize, gate: &CrowdGate) -> usize {
        if *self != Pacing::First {
            return n;
        }
        let ticket = gate.first_share();
        *self = Pacing::Hold {
            deadline: Instant::now() + MAX_HOLD,
            ticket,
        };
        n.min(FIRST_SHARE)
    }

    /// Called before a read that has more to return. A held reader first lets the tasks
    /// already woken run; if none of them sent a first share it is alone and goes on at once,
    /// otherwise it waits for the crowd to go quiet.
    pub async fn before_read(&mut self, gate: &CrowdGate) {
        if let Pacing::Hold { deadline, ticket } = *self {
            *self = Pacing::Off;
            tokio::task::yield_now().await;
            if gate.first_shares.load(Ordering::Acquire) > ticket {
                gate.wait_for_quiet(deadline).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_once_no_first_share_for_the_quiet_period() {
        let at = Duration::from_millis(100);
        assert_eq!(quiet_in(at, at), Some(QUIET));
        assert_eq!(
            quiet_in(at, at + Duration::from_micros(300)),
            Some(QUIET - Duration::from_micros(300))
        );
        assert!(quiet_in(at, at + QUIET - Duration::from_nanos(1)).is_some());
        assert_eq!(quiet_in(at, at + QUIET), None);
        assert_eq!(quiet_in(Duration::ZERO, at), None, "no first share yet");
        // A first share stamped after `now` was read (another core) is still "just now".
        assert_eq!(quiet_in(at, at - Duration::from_micros(5)), Some(QUIET));
    }

    #[test]
    fn only_the_first_read_is_cut() {
        let gate = CrowdGate::new();
        let mut pacing = Pacing::First;
        assert_eq!(pacing.limit(100_000, &gate), FIRST_SHARE);
        assert!(matches!(pacing, Pacing::Hold { .. }));
        assert_eq!(pacing.limit(100_000, &gate), 100_000);
        assert!(gate.quiet_in().is_some(), "a first share was just sent");
        let mut off = Pacing::Off;
        assert_eq!(off.limit(100_000, &gate), 100_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_alone_is_not_held() {
        let gate = CrowdGate::new();
        let mut pacing = Pacing::First;
        pacing.limit(FIRST_SHARE * 2, &gate);
        let start = Instant::now();
        pacing.before_read(&gate).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(pacing, Pacing::Off);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bulk_waits_while_the_crowd_keeps_starting() {
        let gate = std::sync::Arc::new(CrowdGate::new());
        let mut held = Pacing::First;
        held.limit(FIRST_SHARE * 2, &gate);
        // Another reader of the crowd starts right after.
        Pacing::First.limit(1, &gate);
        let start = Instant::now();
        let waiter = {
            let gate = std::sync::Arc::clone(&gate);
            tokio::spawn(async move {
                held.before_read(&gate).await;
                Instant::now()
            })
        };
        // Others keep sending first shares every millisecond for 10 ms.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Pacing::First.limit(1, &gate);
        }
        let released = waiter.await.expect("waiter");
        let held_for = released - start;
        assert!(
            held_for >= Duration::from_millis(10) + QUIET
                && held_for <= Duration::from_millis(11) + QUIET,
            "held {held_for:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_crowd_that_never_stops_holds_nobody_past_the_deadline() {
        let gate = std::sync::Arc::new(CrowdGate::new());
        let mut readers = Vec::new();
        for _ in 0..3 {
            let gate = std::sync::Arc::clone(&gate);
            let mut pacing = Pacing::First;
            pacing.limit(FIRST_SHARE * 2, &gate);
            readers.push(tokio::spawn(async move {
                let start = Instant::now();
                pacing.before_read(&gate).await;
                start.elapsed()
            }));
        }
        // And one more after them, so even the last of the three is in a crowd.
        Pacing::First.limit(1, &gate);
        let busy = {
            let gate = std::sync::Arc::clone(&gate);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Pacing::First.limit(1, &gate);
                }
            })
        };
        for reader in readers {
            let held = reader.await.expect("reader");
            assert!(
                held >= MAX_HOLD - Duration::from_millis(1)
                    && held <= MAX_HOLD + Duration::from_millis(2),
                "held {held:?}"
            );
        }
        busy.abort();
    }
}
