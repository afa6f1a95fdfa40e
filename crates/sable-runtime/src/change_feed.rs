//! How long a process may keep trusting what it read of keys and org configurations: the
//! deployment's change count (`Store::change_count`), polled.
//!
//! Triggers raise the count in the transaction of every change a cached key or org
//! configuration must not outlive. A poll that finds the count unchanged confirms every
//! read begun after the last change it saw; a poll that finds it changed distrusts every
//! read begun before the poll ended, since each such read may predate the change. A read
//! is stamped with the instant before it began, so a read that raced a change is never
//! confirmed by it.
//!
//! When polls stop succeeding, confirmation lapses after [`TRUST_FOR`] and callers fall
//! back to their own time limits: the feed lets a cache hold longer, never longer than it
//! would without it once a change is seen.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sable_store::{Store, StoreError};

/// How often a process polls the change count.
pub const CHANGE_POLL: Duration = Duration::from_secs(1);

/// How long after its last successful poll the feed still confirms reads: a change
/// committed after that poll goes unseen at most this long.
pub const TRUST_FOR: Duration = Duration::from_secs(3);

/// The change count as this process last saw it; shared by its caches.
#[derive(Debug, Default)]
pub struct ChangeFeed {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The count at the last successful poll.
    known: Option<i64>,
    /// When the last successful poll began: every change committed before it was seen.
    confirmed: Option<Instant>,
    /// When the poll that last saw the count move ended: reads begun before it may
    /// predate that change.
    changed: Option<Instant>,
}

impl ChangeFeed {
    /// Whether a read begun at `read_at` still holds by the feed: no change was seen
    /// since, and the feed polled successfully within [`TRUST_FOR`].
    pub fn trusts(&self, read_at: Instant) -> bool {
        let state = self.state.lock().expect("change feed lock");
        state
            .confirmed
            .is_some_and(|confirmed| confirmed.elapsed() < TRUST_FOR)
            && state.changed.is_some_and(|changed| read_at > changed)
    }

    /// Whether a change was seen that a read begun at `read_at` may predate: such a read
    /// is not to be used again, whatever its age.
    pub fn changed_since(&self, read_at: Instant) -> bool {
        let state = self.state.lock().expect("change feed lock");
        state.changed.is_some_and(|changed| read_at <= changed)
    }

    /// Whether a read begun at `read_at` may be used without reading again: the feed
    /// trusts it, or, when the feed cannot confirm it (its polls fail or never ran), it is
    /// younger than `fallback` and no change was seen since it began.
    pub fn holds(&self, read_at: Instant, fallback: Duration) -> bool {
        self.trusts(read_at) || (!self.changed_since(read_at) && read_at.elapsed() < fallback)
    }

    /// Reads the change count once. The first poll counts as a change: what was read
    /// before it cannot be confirmed by it.
    pub async fn poll(&self, store: &Store) -> Result<(), StoreError> {
        let began = Instant::now();
        let count = store.change_count().await?;
        let ended = Instant::now();
        let mut state = self.state.lock().expect("change feed lock");
        if state.known != Some(count) {
            state.known = Some(count);
            state.changed = Some(ended);
        }
        state.confirmed = Some(began);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(known: i64, confirmed: Instant, changed: Instant) -> ChangeFeed {
        ChangeFeed {
            state: Mutex::new(State {
                known: Some(known),
                confirmed: Some(confirmed),
                changed: Some(changed),
            }),
        }
    }

    #[test]
    fn a_read_after_the_last_change_is_trusted_and_one_before_it_is_not() {
        let changed = Instant::now();
        let after = changed + Duration::from_millis(1);
        let feed = feed(1, Instant::now(), changed);
        assert!(feed.trusts(after));
        assert!(!feed.changed_since(after));
        assert!(
            feed.holds(after, Duration::ZERO),
            "trusted: no fallback needed"
        );
        let before = changed.checked_sub(Duration::from_millis(1)).unwrap();
        assert!(!feed.trusts(before));
        assert!(feed.changed_since(before));
        assert!(
            !feed.holds(before, TRUST_FOR),
            "a seen change beats the fallback"
        );
    }

    #[test]
    fn a_feed_that_stopped_polling_confirms_nothing_but_still_names_changes() {
        let long_ago = Instant::now().checked_sub(TRUST_FOR * 2).unwrap();
        let feed = feed(1, long_ago, long_ago);
        assert!(!feed.trusts(Instant::now()));
        assert!(!feed.changed_since(Instant::now()));
        assert!(!ChangeFeed::default().changed_since(Instant::now()));
        assert!(!ChangeFeed::default().trusts(Instant::now()));
        assert!(
            feed.holds(Instant::now(), TRUST_FOR),
            "the fallback decides"
        );
        assert!(!feed.holds(long_ago, TRUST_FOR), "too old for the fallback");
    }
}
