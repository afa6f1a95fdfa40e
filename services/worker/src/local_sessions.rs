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
    /// The session's drain, when the caller should run it; `None` when a drain is already
    /// running here, which is then asked for one more pass.
    pub fn enter(&self, session_id: SessionId) -> Option<Draining<'_>> {
        let mut draining = self.lock();
        match draining.get_mut(&session_id) {
            Some(asked_again) => {
                *asked_again = true;
                None
            }
            None => {
                draining.insert(session_id, false);
                Some(Draining {
                    sessions: self,
                    session_id,
                })
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, bool>> {
        // A panic elsewhere cannot leave the map half-changed: every change is one call.
        self.draining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One running drain of a session. Dropping it (however the drain ended, a panic
/// included) lets the session go, so the next wake-up drains it again instead of asking a
/// drain that no longer runs.
#[derive(Debug)]
pub(crate) struct Draining<'a> {
    sessions: &'a LocalSessions,
    session_id: SessionId,
}

impl<'a> Draining<'a> {
    /// Ends the drain unless a wake-up arrived since it began (or since the last call),
    /// in one look: `Some` means drain again. A wake-up arriving after this look finds
    /// the session free and drains it itself, so none is lost in between.
    pub fn finish(self) -> Option<Draining<'a>> {
        let mut draining = self.sessions.lock();
        if let Some(asked_again) = draining.get_mut(&self.session_id)
            && std::mem::take(asked_again)
        {
            drop(draining);
            return Some(self);
        }
        draining.remove(&self.session_id);
        drop(draining);
        // Already let go, under the same lock as the look: dropping it would remove the
        // entry of a drain that began since.
        std::mem::forget(self);
        None
    }
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.session_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_entry_asks_the_running_drain_for_one_more_pass() {
        let sessions = LocalSessions::default();
        let session = SessionId::new();
        let drain = sessions.enter(session).expect("the first entry drains");
        assert!(sessions.enter(session).is_none());
        let drain = drain.finish().expect("asked again: drain once more");
        assert!(drain.finish().is_none(), "not asked again: done");
        let again = sessions.enter(session).expect("free again after finishing");
        drop(again);
        assert!(sessions.enter(session).is_some(), "free again after a drop");
    }

    #[test]
    fn a_drain_that_panics_lets_its_session_go() {
        let sessions = LocalSessions::default();
        let session = SessionId::new();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _drain = sessions.enter(session).expect("the first entry drains");
            panic!("a drain fails");
        }));
        assert!(panicked.is_err());
        assert!(
            sessions.enter(session).is_some(),
            "the next wake-up drains the session"
        );
    }
}
