//! Writes that wait for the next write transaction: the step records and
//! build states a running build produces (`put_step`, `set_build_state`).
//!
//! They are the most frequent writes and none needs to be durable at once,
//! yet each would take redb's one write lock, which durable commits hold
//! through their `fsync`s. Kept here instead, they cost no transaction:
//! every write transaction applies the waiting ones first (so the next
//! durable commit makes them durable), and every read sees them.
//!
//! Reads take their redb snapshot under this module's lock, and an entry is
//! dropped (under the same lock) only after the transaction that applied it
//! has committed; so a reader finds each write either in its snapshot or
//! here, and the value here, when there is one, is always the newest.

use std::collections::{BTreeMap, HashMap};

use crate::store::{Properties, StepRecord};

/// A build state waiting to be stored.
#[derive(Clone)]
pub(super) struct State {
    pub state_string: String,
    pub properties: Properties,
}

#[derive(Default)]
pub(super) struct Pending {
    /// Increases with every write; an entry is forgotten only if it is
    /// still the version that was applied.
    version: u64,
    steps: BTreeMap<(u64, u32), (u64, StepRecord)>,
    states: HashMap<u64, (u64, State)>,
    /// Entries a non-durable commit stored, by that commit's sequence
    /// number, until a durable commit covers it. They are out of `steps`
    /// and `states` (so later transactions do not store them again: under
    /// a burst that made every commit rewrite every waiting record) but
    /// kept here: if the database has to be reopened after a failed write,
    /// such a commit is lost, and [`Pending::restore`] puts them back.
    parked: Vec<(u64, Parked)>,
}

#[derive(Default)]
struct Parked {
    steps: Vec<((u64, u32), (u64, StepRecord))>,
    states: Vec<(u64, (u64, State))>,
}

/// A copy of everything waiting: step records (with their build) and
/// build states, and what to forget once they are stored.
pub(super) struct Copy {
    pub steps: Vec<(u64, StepRecord)>,
    pub states: Vec<(u64, State)>,
    pub applied: Applied,
}

/// What one transaction applied, to forget once it has committed.
#[derive(Default)]
pub(super) struct Applied {
    steps: Vec<((u64, u32), u64)>,
    states: Vec<(u64, u64)>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.steps.len() + self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.states.is_empty()
    }

    pub fn put_step(&mut self, build: u64, step: StepRecord) {
        self.version += 1;
        self.steps.insert((build, step.index), (self.version, step));
    }

    pub fn put_state(&mut self, build: u64, state: State) {
        self.version += 1;
        self.states.insert(build, (self.version, state));
    }

    /// Everything waiting, for a transaction to apply.
    pub fn copy(&self) -> Copy {
        let mut applied = Applied::default();
        let steps = self
            .steps
            .iter()
            .map(|(k, (v, s))| {
                applied.steps.push((*k, *v));
                (k.0, s.clone())
            })
            .collect();
        let states = self
            .states
            .iter()
            .map(|(k, (v, s))| {
                applied.states.push((*k, *v));
                (*k, s.clone())
            })
            .collect();
        Copy {
            steps,
            states,
            applied,
        }
    }

    /// Drops what a committed transaction stored, unless written again
    /// since.
    pub fn forget(&mut self, applied: &Applied) {
        for (k, v) in &applied.steps {
            if self.steps.get(k).is_some_and(|(now, _)| now == v) {
                self.steps.remove(k);
            }
        }
        for (k, v) in &applied.states {
            if self.states.get(k).is_some_and(|(now, _)| now == v) {
                self.states.remove(k);
            }
        }
    }

    /// Like [`Pending::forget`], for a commit that is not durable yet
    /// (sequence number `seq`): what it stored is kept aside until
    /// [`Pending::confirm`] says a durable commit covers `seq`.
    pub fn park(&mut self, applied: &Applied, seq: u64) {
        let mut parked = Parked::default();
        for (k, v) in &applied.steps {
            if self.steps.get(k).is_some_and(|(now, _)| now == v) {
                if let Some(e) = self.steps.remove(k) {
                    parked.steps.push((*k, e));
                }
            }
        }
        for (k, v) in &applied.states {
            if self.states.get(k).is_some_and(|(now, _)| now == v) {
                if let Some(e) = self.states.remove(k) {
                    parked.states.push((*k, e));
                }
            }
        }
        if !parked.steps.is_empty() || !parked.states.is_empty() {
            self.parked.push((seq, parked));
        }
    }

    /// Drops what commits up to `durable` stored: it is durable now.
    pub fn confirm(&mut self, durable: u64) {
        self.parked.retain(|(seq, _)| *seq > durable);
    }

    /// Puts back what non-durable commits stored, for a database reopened
    /// after a failure (those commits are lost with it); an entry written
    /// again meanwhile keeps its newer value.
    pub fn restore(&mut self) {
        for (_, p) in std::mem::take(&mut self.parked) {
            for (k, e) in p.steps {
                self.steps.entry(k).or_insert(e);
            }
            for (k, e) in p.states {
                self.states.entry(k).or_insert(e);
            }
        }
    }

    pub fn state(&self, build: u64) -> Option<State> {
        self.states.get(&build).map(|(_, s)| s.clone())
    }

    pub fn states(&self) -> HashMap<u64, State> {
        self.states
            .iter()
            .map(|(k, (_, s))| (*k, s.clone()))
            .collect()
    }

    pub fn steps_of(&self, build: u64) -> Vec<StepRecord> {
        self.steps
            .range((build, 0)..=(build, u32::MAX))
            .map(|(_, (_, s))| s.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(index: u32, state: &str) -> StepRecord {
        StepRecord {
            index,
            state_string: state.into(),
            ..Default::default()
        }
    }

    /// A non-durable commit's records leave the waiting set (later
    /// transactions do not store them again), are dropped once durable,
    /// and come back if the database had to be reopened — unless written
    /// again meanwhile.
    #[test]
    fn parked_records_wait_for_durability_and_come_back_after_a_failure() {
        let mut p = Pending::default();
        p.put_step(1, step(0, "a"));
        p.put_step(1, step(1, "b"));
        let first = p.copy();
        p.park(&first.applied, 7);
        assert!(p.is_empty() && p.copy().steps.is_empty());
        p.confirm(6);
        p.restore();
        assert_eq!(p.steps_of(1).len(), 2, "not durable yet: restored");

        let again = p.copy();
        p.park(&again.applied, 8);
        p.put_step(1, step(1, "newer"));
        p.restore();
        let states: Vec<String> = p.steps_of(1).into_iter().map(|s| s.state_string).collect();
        assert_eq!(
            states,
            ["a", "newer"],
            "a newer write wins over a restored one"
        );

        let third = p.copy();
        p.park(&third.applied, 9);
        p.confirm(9);
        p.restore();
        assert!(p.is_empty(), "durable: nothing to restore");
    }
}
