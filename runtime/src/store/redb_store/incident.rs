//! What the log says while the store keeps failing. A full disk can last
//! hours, and every write meanwhile fails the same way — the assignment
//! loop's tries, each build's records, every health probe (which reopens
//! the database). One line per failure would bury the log; none would
//! hide that it goes on. So: the first failure is an error, a different
//! reason a warning, the same reason at most once a minute with how many
//! were not logged, and the database's reopening once per incident.
//!
//! Pure: time comes in as an argument.

use std::time::{Duration, Instant};

/// How often the same failure is logged again while it lasts.
pub(super) const REPEAT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(super) struct Incident {
    /// The reason last logged and when; `None` between incidents.
    last: Option<(String, Instant)>,
    /// Failures since the last line, not logged.
    unlogged: u64,
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
    /// A failure for another reason than the last one logged.
    Changed,
    /// The same failure again, a minute or more after it was last logged;
    /// `unlogged` more happened meanwhile.
    Again { unlogged: u64 },
    /// Nothing: the same failure was logged less than a minute ago.
    Nothing,
}

impl Incident {
    pub(super) fn failed(&mut self, reason: &str, now: Instant) -> Say {
        self.failures += 1;
        let say = match &self.last {
            None => Say::First,
            Some((r, _)) if r != reason => Say::Changed,
            Some((_, at)) if now.saturating_duration_since(*at) >= REPEAT_EVERY => Say::Again {
                unlogged: self.unlogged,
            },
            Some(_) => {
                self.unlogged += 1;
                return Say::Nothing;
            }
        };
        self.last = Some((reason.to_string(), now));
        self.unlogged = 0;
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
        // Another reason is news at once.
        assert_eq!(
            i.failed("gone", t0 + REPEAT_EVERY + Duration::from_secs(2)),
            Say::Changed
        );
        assert_eq!(i.ended(), Some(9));
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
