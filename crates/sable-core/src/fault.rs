//! Named fault points: places in the code where a fault-injection test can make a process
//! stop, so that it can be SIGKILLed exactly there.
//!
//! A point is a name passed to [`FaultPoints::reach`] at the place it describes; adding a
//! point is that one line. The points in the code today:
//!
//! | point | role | where |
//! |---|---|---|
//! | `before_provider_call` | worker | the turn is started (attempt counted), the model not yet asked |
//! | `mid_stream` | worker | a text delta of the answer arrived, the stream is not finished |
//! | `mid_tool` | worker | a tool round is recorded with the call `running`; its result is not |
//! | `after_reply_persisted` | worker | the reply and its delivery are committed; no event, no delivery wake-up, no ack yet |
//! | `delivery_sent_before_record` | gateway | the dispatcher sent a reply to its channel but has not marked it delivered |
//!
//! Armed points come from settings; what "stopping" means is the binary's business (it
//! prints a marker and stops the whole process with SIGSTOP, or, at a point armed to
//! panic, panics there once), so this crate stays free of I/O. Disarmed, `reach` is one empty-set check.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What to do at an armed point that is due: called with the point's name.
pub type FaultAction = Arc<dyn Fn(&str) + Send + Sync>;

/// The armed points of one process. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct FaultPoints {
    armed: Option<Arc<Armed>>,
}

struct Armed {
    points: BTreeSet<String>,
    /// Hits of armed points still to let pass before acting: a test picks it at random
    /// so that the process stops at a different turn each time.
    hits_to_pass: AtomicU64,
    action: FaultAction,
}

impl FaultPoints {
    /// No point armed: `reach` does nothing.
    pub fn disarmed() -> Self {
        Self::default()
    }

    /// Arms the points named in `list` (comma-separated, blanks ignored). The first
    /// `hits_to_pass` hits of any armed point pass; every later hit calls `action`.
    pub fn arm(list: &str, hits_to_pass: u64, action: FaultAction) -> Self {
        let points: BTreeSet<String> = list
            .split(',')
            .map(str::trim)
            .filter(|point| !point.is_empty())
            .map(str::to_owned)
            .collect();
        if points.is_empty() {
            return Self::disarmed();
        }
        Self {
            armed: Some(Arc::new(Armed {
                points,
                hits_to_pass: AtomicU64::new(hits_to_pass),
                action,
            })),
        }
    }

    /// Marks the place named `point`. When that point is armed and its hit is due, runs
    /// the action (which, in the `sable` binary, does not return until the process is
    /// resumed or killed).
    pub fn reach(&self, point: &'static str) {
        let Some(armed) = &self.armed else { return };
        if !armed.points.contains(point) {
            return;
        }
        let passed = armed
            .hits_to_pass
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if !passed {
            (armed.action)(point);
        }
    }
}

impl fmt::Debug for FaultPoints {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.armed {
            None => formatter.write_str("FaultPoints(disarmed)"),
            Some(armed) => write!(formatter, "FaultPoints({:?})", armed.points),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn recording(list: &str, hits_to_pass: u64) -> (FaultPoints, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let action: FaultAction = Arc::new(move |point| sink.lock().unwrap().push(point.into()));
        (FaultPoints::arm(list, hits_to_pass, action), seen)
    }

    #[test]
    fn an_armed_point_acts_after_the_hits_it_lets_pass() {
        let (faults, seen) = recording(" mid_stream , before_provider_call", 2);
        faults.reach("mid_stream");
        faults.reach("before_provider_call");
        assert!(seen.lock().unwrap().is_empty());
        faults.reach("mid_stream");
        assert_eq!(*seen.lock().unwrap(), ["mid_stream"]);
    }

    #[test]
    fn points_not_armed_never_act_nor_count() {
        let (faults, seen) = recording("mid_stream", 0);
        faults.reach("after_reply_persisted");
        assert!(seen.lock().unwrap().is_empty());
        faults.reach("mid_stream");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn an_empty_list_arms_nothing() {
        let (faults, seen) = recording(" , ", 0);
        faults.reach("mid_stream");
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(format!("{faults:?}"), "FaultPoints(disarmed)");
    }
}
