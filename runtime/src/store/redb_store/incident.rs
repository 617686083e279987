//! What the log says while the store keeps failing. A full disk can last
//! hours, and every write meanwhile fails the same way — the assignment
//! loop's tries, each build's records, every health probe (which reopens
//! the database). One line per failure would bury the log; none would
//! hide that it goes on. So: the first failure is an error, each new
//! reason a warning, each reason again at most once a minute with how
//! many were not logged, and the database's reopening once per incident.
//!
//! Pure: time comes in as an argument.

use std::time::{Duration, Instant};

/// How often the same failure is logged again while it lasts.
pub(super) const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// How many reasons an incident remembers; more are rare (a disk that
/// fails in many ways at once) and only cost a line each.
const REASONS: usize = 16;

#[derive(Debug, Default)]
pub(super) struct Incident {
    /// Each reason logged in this incident: when it was last logged and
    /// how many of its failures were not logged since. Empty between
    /// incidents.
    logged: Vec<(String, Instant, u64)>,
    /// Failures in this incident.
    failures: u64,
    /// Whether this incident's reopening was logged.
    reopen_logged: bool,
}

/// What to log for a failure.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Say {
    /// The first failure after writes succeeded.
    First,
    /// A failure for a reason not yet logged in this incident.
    Changed,
    /// A reason logged before, a minute or more after it was last logged;
    /// `unlogged` more failures for it happened meanwhile.
    Again { unlogged: u64 },
    /// Nothing: the same failure was logged less than a minute ago.
    Nothing,
}

impl Incident {
    pub(super) fn failed(&mut self, reason: &str, now: Instant) -> Say {
        self.failures += 1;
        // Two writes failing in turn for two reasons (the database and a
        // log file, say) are each logged once a minute, not at every turn.
        if let Some((_, at, unlogged)) = self.logged.iter_mut().find(|(r, ..)| r == reason) {
            if now.saturating_duration_since(*at) < REPEAT_EVERY {
                *unlogged += 1;
                return Say::Nothing;
            }
            let say = Say::Again {
                unlogged: *unlogged,
            };
            *at = now;
            *unlogged = 0;
            return say;
        }
        let say = if self.logged.is_empty() {
            Say::First
        } else {
            Say::Changed
        };
        if self.logged.len() >= REASONS {
            self.logged.remove(0);
        }
        self.logged.push((reason.to_string(), now, 0));
        say
    }

    /// Whether to log that the database was reopened: once an incident.
    pub(super) fn reopened(&mut self) -> bool {
        !std::mem::replace(&mut self.reopen_logged, true)
    }

    /// A write succeeded: `Some(failures)` if that ends an incident.
    pub(super) fn ended(&mut self) -> Option<u64> {
        let failures = std::mem::take(&mut self.failures);
        *self = Incident::default();
        (failures > 0).then_some(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_failure_is_logged_once_a_minute_with_a_count() {
        let t0 = Instant::now();
        let mut i = Incident::default();
        assert_eq!(i.failed("full", t0), Say::First);
        for s in 1..=5 {
            assert_eq!(i.failed("full", t0 + Duration::from_secs(s)), Say::Nothing);
        }
        assert_eq!(
            i.failed("full", t0 + REPEAT_EVERY),
            Say::Again { unlogged: 5 }
        );
        assert_eq!(
            i.failed("full", t0 + REPEAT_EVERY + Duration::from_secs(1)),
            Say::Nothing
        );
        // Another reason is news at once; after that, two reasons taking
        // turns are each logged once a minute, not at every turn.
        let t1 = t0 + REPEAT_EVERY + Duration::from_secs(2);
        assert_eq!(i.failed("gone", t1), Say::Changed);
        assert_eq!(i.failed("full", t1), Say::Nothing);
        assert_eq!(i.failed("gone", t1), Say::Nothing);
        assert_eq!(i.failed("full", t1), Say::Nothing);
        assert_eq!(i.ended(), Some(12));
        assert_eq!(i.ended(), None);
        // A new incident starts over.
        assert_eq!(i.failed("full", t0 + REPEAT_EVERY * 2), Say::First);
    }

    #[test]
    fn reopening_is_logged_once_an_incident() {
        let mut i = Incident::default();
        i.failed("full", Instant::now());
        assert!(i.reopened());
        assert!(!i.reopened());
        assert!(!i.reopened());
        i.ended();
        assert!(i.reopened());
    }
}
