//! Which changes a scheduler takes: its change filter (sources,
//! repository, codebases, branch, files) with the globs compiled once per scheduler
//! definition, and whether a change is important.

use std::collections::HashMap;
use std::sync::Arc;

use bbc_graph::{ChangeFilter, Graph, Scheduler, SchedulerKind};

use crate::glob::Globs;
use crate::store::Change;

/// A scheduler's change filter with its globs compiled: built once per
/// scheduler definition, not once per change.
pub struct Filter {
    branches: Globs,
    files: Globs,
    files_important: Globs,
}

impl Filter {
    pub fn new(s: &Scheduler, f: &ChangeFilter) -> Filter {
        let branches = match &s.kind {
            SchedulerKind::AnyBranch { branches, .. } => Globs::new(branches),
            _ => Globs::new(&[]),
        };
        Filter {
            branches,
            files: Globs::new(&f.files),
            files_important: Globs::new(&f.files_important),
        }
    }
}

/// Compiled filters by scheduler content hash (a new definition gets a
/// new entry; [`Engine::reconcile`] forgets the ones no longer in use).
#[derive(Default)]
pub(super) struct Filters(std::sync::Mutex<HashMap<String, Arc<Filter>>>);

impl Filters {
    pub(super) fn get(&self, s: &Scheduler, f: &ChangeFilter) -> Arc<Filter> {
        let mut m = match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(s.hash.clone())
            .or_insert_with(|| Arc::new(Filter::new(s, f)))
            .clone()
    }

    pub(super) fn retain(&self, g: &Graph) {
        let mut m = match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.retain(|hash, _| g.schedulers.iter().any(|s| &s.hash == hash));
    }
}

/// Whether a change passes a scheduler's filter, and if so whether it is
/// important.
pub fn classify(m: &Filter, s: &Scheduler, f: &ChangeFilter, c: &Change) -> Option<bool> {
    let ch = &c.change;
    if !f.change_sources.is_empty() && !f.change_sources.contains(&ch.source) {
        return None;
    }
    if f.repository.as_ref().is_some_and(|r| *r != ch.repository) {
        return None;
    }
    // A scheduler naming codebases takes changes of those only, each on
    // its codebase's branch (which the compiler defaults to the
    // scheduler's own `branch`).
    let codebase = if s.codebases.is_empty() {
        None
    } else {
        Some(s.codebases.iter().find(|cb| cb.name == ch.codebase)?)
    };
    let branch_ok = match (&s.kind, codebase) {
        (SchedulerKind::AnyBranch { .. }, _) => {
            m.branches.is_empty() || m.branches.is_match(&ch.branch)
        }
        (SchedulerKind::SingleBranch { .. } | SchedulerKind::Nightly { .. }, Some(cb))
            if !cb.branch.is_empty() =>
        {
            ch.branch == cb.branch
        }
        (SchedulerKind::SingleBranch { branch, .. }, _) => ch.branch == *branch,
        (SchedulerKind::Nightly { branch, .. }, _) => {
            branch.as_ref().is_none_or(|b| *b == ch.branch)
        }
        _ => false,
    };
    if !branch_ok {
        return None;
    }
    if !m.files.is_empty() && !ch.files.iter().any(|file| m.files.is_match(file)) {
        return None;
    }
    let important = m.files_important.is_empty()
        || ch.files.iter().any(|file| m.files_important.is_match(file));
    if !important && f.only_important {
        return None;
    }
    Some(important)
}
