//! Forks of the expander: a large top-level matrix (the production
//! example's ~1,000 builders) expanded on several threads, with exactly
//! the result of one thread.
//!
//! The combinations are cut into consecutive runs, one per thread; the
//! expander does the first run itself and a fork of it each other one.
//! A fork starts from what a matrix at the top level reads — the
//! variables (all evaluated before expansion), the templates, the
//! templates resolved so far — and writes into its own share of the
//! offset space ([`SpanMap::fork`]) and its own lists (diagnostics,
//! run-time parts, expansions). They are appended in the order of the
//! runs, so every list is what one thread would have written, and the
//! copies' offsets keep their order.
//!
//! The one thing a fork cannot know is what the runs before it did to
//! the expander's lazily filled state: a template resolved there with a
//! mistake is reported once, at its first use, and is silent afterwards.
//! So a fork that resolves a template with a mistake stops
//! ([`Expander::bailed`]), and its run and the later ones are done again by
//! the expander itself, after its own run, as one thread would have. A
//! template that resolves cleanly reports nothing, wherever it is first
//! resolved.

use super::matrix::Axis;
use super::*;

/// How a matrix may be split across threads.
#[derive(Clone, Copy)]
pub(super) struct Threads {
    pub(super) threads: usize,
    /// Fewer combinations are expanded on one thread (a thread costs
    /// tens of microseconds to start).
    pub(super) min_combinations: usize,
}

impl Default for Threads {
    fn default() -> Threads {
        // Asked once per process: on Linux the answer reads the cgroup's
        // CPU quota, which is no work to repeat on every keystroke.
        static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let cores = *CORES.get_or_init(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        Threads {
            threads: cores.min(8),
            min_combinations: 32,
        }
    }
}

impl<'a> Expander<'a> {
    /// Into how many runs a matrix of `total` combinations is cut: 1 but
    /// for a top-level matrix (no variables around it, no template use
    /// under way) large enough.
    pub(super) fn parts(&self, total: usize, scope: &Scope) -> usize {
        let t = self.threads;
        if self.is_fork
            || t.threads < 2
            || total < t.min_combinations.max(2)
            || !scope.locals.is_empty()
            || *self.depth.borrow() != 0
            || !self.resolving.borrow().is_empty()
        {
            return 1;
        }
        // Every variable is evaluated before expansion; a fork copies the
        // values.
        let lets = self.lets.borrow();
        if lets
            .values()
            .any(|s| !matches!(s, LetState::Done(_) | LetState::Failed))
        {
            return 1;
        }
        t.threads.min(total)
    }

    /// A fork for one run, writing offsets into `spans`.
    fn fork(&self, spans: SpanMap) -> Expander<'a> {
        let lets = self
            .lets
            .borrow()
            .iter()
            .map(|(k, s)| {
                let s = match s {
                    LetState::Done(v) => LetState::Done(v.clone()),
                    _ => LetState::Failed,
                };
                (k.clone(), s)
            })
            .collect();
        Expander {
            sources: self.sources,
            spans: RefCell::new(spans),
            diags: RefCell::new(Vec::new()),
            lets: RefCell::new(lets),
            let_order: self.let_order.clone(),
            templates: self.templates.clone(),
            resolved: RefCell::new(self.resolved.borrow().clone()),
            resolving: RefCell::new(Vec::new()),
            depth: RefCell::new(0),
            notes: RefCell::new(HashMap::default()),
            run_parts: RefCell::new(RunParts::default()),
            expansions: RefCell::new(self.expansions.borrow().as_ref().map(|_| Vec::new())),
            asts: RefCell::new(HashMap::default()),
            threads: self.threads,
            bailed: std::cell::Cell::new(false),
            is_fork: true,
            forked: std::cell::Cell::new(false),
        }
    }

    /// In a fork, called after resolving a template: a resolution that
    /// reported something makes the fork stop (see the module's comment).
    pub(super) fn resolved_with_reports(&self, reports_before: usize) {
        if self.is_fork && self.diags.borrow().len() > reports_before {
            self.bailed.set(true);
        }
    }

    /// [`Expander::combinations`] of a whole top-level matrix, cut into
    /// `parts` runs expanded on as many threads.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn combinations_forked(
        &self,
        axes: &[Axis],
        excludes: &[&Entry],
        body: &[&Node],
        site: Span,
        total: usize,
        parts: usize,
        out: &mut Vec<Node>,
    ) {
        self.forked.set(true);
        let bounds: Vec<usize> = (0..=parts).map(|i| total * i / parts).collect();
        let base = self.spans.borrow().len();
        let shares = self.spans.borrow_mut().fork(parts);
        let forks: Vec<Expander<'a>> = shares.into_iter().map(|s| self.fork(s)).collect();
        // `None`: the system would not start that run's thread (a limit
        // on threads); it is done below on this one, like a run handed
        // back, rather than failing the compilation.
        let done: Vec<Option<(Expander<'a>, Vec<Node>)>> = std::thread::scope(|s| {
            let running: Vec<_> = forks
                .into_iter()
                .enumerate()
                .map(|(i, f)| {
                    let range = bounds[i + 1]..bounds[i + 2];
                    std::thread::Builder::new()
                        .spawn_scoped(s, move || {
                            let mut out = Vec::new();
                            f.combinations(axes, excludes, body, site, &[], range, &mut out);
                            (f, out)
                        })
                        .ok()
                })
                .collect();
            self.combinations(axes, excludes, body, site, &[], bounds[0]..bounds[1], out);
            running
                .into_iter()
                .map(|h| h.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))))
                .collect()
        });
        self.spans.borrow_mut().unfork();
        for (i, run) in done.into_iter().enumerate() {
            let Some((f, mut produced)) = run else {
                self.combinations(axes, excludes, body, site, &[], bounds[i + 1]..total, out);
                return;
            };
            if f.bailed.get() {
                // This run and the later ones, as one thread does them.
                self.combinations(axes, excludes, body, site, &[], bounds[i + 1]..total, out);
                return;
            }
            let Expander {
                spans,
                diags,
                run_parts,
                expansions,
                ..
            } = f;
            self.spans.borrow_mut().join(spans.into_inner(), base);
            self.diags.borrow_mut().append(&mut diags.into_inner());
            self.run_parts
                .borrow_mut()
                .append(&mut run_parts.into_inner());
            if let (Some(mine), Some(mut theirs)) = (
                self.expansions.borrow_mut().as_mut(),
                expansions.into_inner(),
            ) {
                mine.append(&mut theirs);
            }
            out.append(&mut produced);
        }
    }
}
