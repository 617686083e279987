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
