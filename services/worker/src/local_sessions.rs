//! Sessions this process is draining right now, so two wake-ups of one session never run
//! two drains in one worker (the lease, shared by the whole process, cannot tell them
//! apart).

use std::collections::HashMap;
use std::sync::Mutex;

use sable_core::SessionId;

/// Session → whether another wake-up arrived while it was being drained.
#[derive(Debug, Default)]
pub(crate) struct LocalSessions {
    draining: Mutex<HashMap<SessionId, bool>>,
}

impl LocalSessions {
    /// True when the caller should drain the session; false when a drain is already
    /// running here, which is then asked for one more pass.
    pub fn enter(&self, session_id: SessionId) -> bool {
        let mut draining = self.draining.lock().expect("local sessions lock");
        match draining.get_mut(&session_id) {
            Some(asked_again) => {
                *asked_again = true;
                false
            }
            None => {
                draining.insert(session_id, false);
                true
            }
        }
    }

    /// Leaves the session unless a wake-up arrived meanwhile; false means drain again.
    pub fn leave_unless_asked_again(&self, session_id: SessionId) -> bool {
        let mut draining = self.draining.lock().expect("local sessions lock");
        match draining.get_mut(&session_id) {
            Some(asked_again) if *asked_again => {
                *asked_again = false;
                false
            }
            _ => {
                draining.remove(&session_id);
                true
            }
        }
    }

    pub fn leave(&self, session_id: SessionId) {
        self.draining
            .lock()
            .expect("local sessions lock")
            .remove(&session_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_entry_asks_the_running_drain_for_one_more_pass() {
        let sessions = LocalSessions::default();
        let session = SessionId::new();
        assert!(sessions.enter(session));
        assert!(!sessions.enter(session));
        assert!(
            !sessions.leave_unless_asked_again(session),
            "asked again: drain once more"
        );
        assert!(sessions.leave_unless_asked_again(session));
        assert!(sessions.enter(session), "free again after leaving");
    }
}
