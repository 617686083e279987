//! Whole-config checks over the decoded model: references, cycles, build
//! property uses, and lints.
//!
//! Architecture invariant: every reference is checked exactly once, at the
//! span where it is written, so one mistake gives one diagnostic.

use std::collections::BTreeSet;

use crate::{FastMap as HashMap, FastSet as HashSet};

use petgraph::graphmap::DiGraphMap;

use crate::decode::{Model, Named, Selector};
use crate::diagnostic::{did_you_mean, Code, Diagnostic};
use crate::graph::{SchedulerKind, StepKind, Worker};
use crate::interp::BUILTIN_PROPERTIES;
use crate::source::FileId;
use crate::syntax::Span;

pub fn check(file: FileId, m: &Model, diags: &mut Vec<Diagnostic>) {
    let ix = Index::new(m);
    let mut c = Checker {
        file,
        m,
        ix: &ix,
        diags,
    };
    c.references();
    c.cycles();
    c.properties();
    // Lints speak about a config that is otherwise right: with errors, an
    // "unused worker" is usually the consequence of one of them.
    if !c
        .diags
        .iter()
        .any(|d| d.severity == crate::diagnostic::Severity::Error)
    {
        c.lints();
    }
}

/// Name → position maps, built once, so that every check is linear in the
/// size of the config (10,000 builders must check in well under a second).
pub struct Index<'a> {
    pub builders: HashMap<&'a str, usize>,
    pub by_tag: HashMap<&'a str, Vec<usize>>,
    pub schedulers: HashMap<&'a str, usize>,
    pub workers: HashMap<&'a str, usize>,
    /// For each scheduler, the builders its selector picks (sorted by name).
    pub selected: Vec<Vec<usize>>,
}

impl<'a> Index<'a> {
    pub fn new(m: &'a Model) -> Index<'a> {
        let mut builders = HashMap::with_capacity_and_hasher(m.builders.len(), Default::default());
        let mut by_tag: HashMap<&str, Vec<usize>> = HashMap::default();
        for (i, b) in m.builders.iter().enumerate() {
            builders.entry(b.item.name.as_str()).or_insert(i);
            for t in &b.item.tags {
                by_tag.entry(t.as_str()).or_default().push(i);
            }
        }
        let schedulers = m
            .schedulers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.item.name.as_str(), i))
            .collect();
        let workers = m
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| (w.item.name.as_str(), i))
            .collect();
        let mut ix = Index {
            builders,
            by_tag,
            schedulers,
            workers,
            selected: Vec::new(),
        };
        ix.selected = m
            .schedulers
            .iter()
            .map(|s| ix.resolve(m, &s.selector))
            .collect();
        ix
    }

    /// The builders a selector picks, sorted by name, each once.
    pub fn resolve(&self, m: &Model, sel: &Selector) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for n in &sel.names {
            if let Some(&i) = self.builders.get(n.name.as_str()) {
                out.push(i);
            }
        }
        for t in &sel.tags {
            if let Some(v) = self.by_tag.get(t.name.as_str()) {
                out.extend_from_slice(v);
            }
        }
        out.sort_unstable_by(|a, b| m.builders[*a].item.name.cmp(&m.builders[*b].item.name));
        out.dedup();
        out
    }

    pub fn names(m: &Model, idx: &[usize]) -> Vec<String> {
        idx.iter()
            .map(|i| m.builders[*i].item.name.clone())
            .collect()
    }
}

struct Checker<'a> {
    file: FileId,
    m: &'a Model,
    ix: &'a Index<'a>,
    diags: &'a mut Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    fn unknown(&mut self, what: &str, r: &Named, known: Vec<&str>, help_if_none: &str) {
        let help = if known.is_empty() {
            help_if_none.to_string()
        } else {
            did_you_mean(&r.name, known.iter().copied(), &format!("the {what}s are"))
                .unwrap_or_else(|| help_if_none.to_string())
        };
        self.diags.push(
            Diagnostic::new(
                Code::UnknownReference,
                self.file,
                r.span,
                format!("unknown {what} `{}`", r.name),
            )
            .label(format!("no {what} has this name"))
            .help(help),
        );
    }

    fn builder_names(&self) -> Vec<&'a str> {
        let m: &'a Model = self.m;
        m.builders.iter().map(|b| b.item.name.as_str()).collect()
    }

    fn selector(&mut self, sel: &Selector) {
        for r in &sel.names {
            if !self.ix.builders.contains_key(r.name.as_str()) {
                let names = self.builder_names();
                self.unknown(
                    "builder",
                    r,
                    names,
                    "define it with `builder \"NAME\" { … }`",
                );
            }
        }
        for t in &sel.tags {
            if !self.ix.by_tag.contains_key(t.name.as_str()) {
                let mut tags: Vec<&str> = self.ix.by_tag.keys().copied().collect();
                tags.sort_unstable();
                let help = if tags.is_empty() {
                    "no builder has any tag: add `tags \"…\"` to the builders meant".into()
                } else {
                    did_you_mean(&t.name, tags.iter().copied(), "tags in use are")
                        .unwrap_or_default()
                };
                self.diags.push(
                    Diagnostic::new(
                        Code::EmptySelection,
                        self.file,
                        t.span,
                        format!("no builder is tagged `{}`", t.name),
                    )
                    .label("selects nothing")
                    .help(help),
                );
            }
        }
    }

    fn references(&mut self) {
        let m = self.m;
        let workers: Vec<&str> = m.workers.iter().map(|w| w.item.name.as_str()).collect();
        let locks: Vec<&str> = m.locks.iter().map(|l| l.item.name.as_str()).collect();
        let lock_set: HashSet<&str> = locks.iter().copied().collect();
        let sources: Vec<&str> = m
            .change_sources
            .iter()
            .map(|s| s.item.name.as_str())
            .collect();
        let scheds: HashMap<&str, &SchedulerKind> = m
            .schedulers
            .iter()
            .map(|s| (s.item.name.as_str(), &s.item.kind))
            .collect();
        let sched_names: Vec<&str> = m.schedulers.iter().map(|s| s.item.name.as_str()).collect();
        let triggerable: Vec<&str> = m
            .schedulers
            .iter()
            .filter(|s| matches!(s.item.kind, SchedulerKind::Triggerable {}))
            .map(|s| s.item.name.as_str())
            .collect();
        for b in &m.builders {
            for w in &b.workers {
                if !self.ix.workers.contains_key(w.name.as_str()) {
                    self.unknown(
                        "worker",
                        w,
                        workers.clone(),
                        "define it with `worker \"NAME\" password=(secret)\"NAME\"`",
                    );
                }
            }
            for l in &b.locks {
                if !lock_set.contains(l.name.as_str()) {
                    self.unknown(
                        "lock",
                        l,
                        locks.clone(),
                        "define it with `lock \"NAME\" kind=\"master\" max-count=1`",
                    );
                }
            }
            for (_, t) in &b.triggers {
                match scheds.get(t.name.as_str()) {
                    None => self.unknown(
                        "scheduler",
                        t,
                        if triggerable.is_empty() {
                            sched_names.clone()
                        } else {
                            triggerable.clone()
                        },
                        "define it with `scheduler \"NAME\" kind=\"triggerable\" { builders … }`",
                    ),
                    Some(SchedulerKind::Triggerable {}) => {}
                    Some(k) => {
                        let d = Diagnostic::new(
                            Code::WrongReferenceKind,
                            self.file,
                            t.span,
                            format!("a trigger step can only start a triggerable scheduler, and `{}` is {}", t.name, article(k.name())),
                        )
                        .label("not triggerable");
                        let d = match self.ix.schedulers.get(t.name.as_str()) {
                            Some(&s) => {
                                d.with(self.file, m.schedulers[s].name_span, "defined here")
                            }
                            None => d,
                        };
                        self.diags.push(d.help(format!(
                            "point the trigger at a scheduler with kind=\"triggerable\"{}",
                            match did_you_mean(&t.name, triggerable.iter().copied(), "") {
                                Some(h) if h.starts_with("did") => format!(" ({h})"),
                                _ => String::new(),
                            }
                        )));
                    }
                }
            }
        }
        for s in &m.schedulers {
            let sel = s.selector.clone();
            self.selector(&sel);
            if let Some(u) = &s.upstream {
                if !scheds.contains_key(u.name.as_str()) {
                    self.unknown(
                        "scheduler",
                        u,
                        sched_names.clone(),
                        "name the scheduler whose builds this one waits for",
                    );
                }
            }
            for src in &s.sources {
                if !sources.contains(&src.name.as_str()) {
                    self.unknown(
                        "change source",
                        src,
                        sources.clone(),
                        "define it with `change-source \"NAME\" kind=…`",
                    );
                }
            }
        }
        for r in &m.reporters {
            let sel = r.selector.clone();
            self.selector(&sel);
        }
    }

    /// Scheduler graph: S → T when a builder run by S triggers T, and
    /// U → D when dependent D waits for U. It must be acyclic.
    fn cycles(&mut self) {
        let m = self.m;
        let idx: HashMap<&str, usize> = m
            .schedulers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.item.name.as_str(), i))
            .collect();
        // Edge label: (span, text) saying why the edge exists.
        let mut edges: HashMap<(usize, usize), (Span, String)> = HashMap::default();
        let mut g: DiGraphMap<usize, ()> = DiGraphMap::new();
        for (i, _) in m.schedulers.iter().enumerate() {
            g.add_node(i);
        }
        for (si, s) in m.schedulers.iter().enumerate() {
            for &bi in &self.ix.selected[si] {
                let b = &m.builders[bi];
                for (_, t) in &b.triggers {
                    // Triggers of non-triggerable schedulers are already
                    // errors (E0202) and start nothing.
                    let Some(&ti) = idx.get(t.name.as_str()) else {
                        continue;
                    };
                    if !matches!(m.schedulers[ti].item.kind, SchedulerKind::Triggerable {}) {
                        continue;
                    }
                    g.add_edge(si, ti, ());
                    edges.entry((si, ti)).or_insert_with(|| {
                        (
                            t.span,
                            format!(
                                "builder `{}` (started by `{}`) triggers `{}`",
                                b.item.name, s.item.name, t.name
                            ),
                        )
                    });
                }
            }
            if let Some(u) = &s.upstream {
                if let Some(&ui) = idx.get(u.name.as_str()) {
                    g.add_edge(ui, si, ());
                    edges.entry((ui, si)).or_insert_with(|| {
                        (u.span, format!("`{}` runs after `{}`", s.item.name, u.name))
                    });
                }
            }
        }
        for scc in petgraph::algo::tarjan_scc(&g) {
            let cyclic = scc.len() > 1 || g.contains_edge(scc[0], scc[0]);
            if !cyclic {
                continue;
            }
            let members: HashSet<usize> = scc.iter().copied().collect();
            let start = *scc.iter().min().unwrap_or(&scc[0]);
            let path = find_cycle(&g, start, &members);
            let names: Vec<&str> = path
                .iter()
                .map(|i| m.schedulers[*i].item.name.as_str())
                .collect();
            let mut chain = names.join(" → ");
            chain.push_str(&format!(" → {}", names[0]));
            let mut labels: Vec<(Span, String)> = Vec::new();
            for w in 0..path.len() {
                let a = path[w];
                let b = path[(w + 1) % path.len()];
                if let Some(e) = edges.get(&(a, b)) {
                    labels.push(e.clone());
                }
            }
            labels.sort_by_key(|l| l.0);
            let Some((first_span, first_text)) = labels.first().cloned() else {
                continue;
            };
            let mut d = Diagnostic::new(
                Code::Cycle,
                self.file,
                first_span,
                format!("schedulers trigger each other in a cycle: {chain}"),
            )
            .label(first_text);
            for (sp, t) in labels.into_iter().skip(1) {
                d = d.with(self.file, sp, t);
            }
            self.diags
                .push(d.help("builds would start each other forever; remove one of these edges"));
        }
    }

    fn properties(&mut self) {
        let m = self.m;
        // Properties each builder can receive from outside its own steps:
        // force parameters and what trigger steps pass in.
        let mut incoming: HashMap<usize, BTreeSet<&str>> = HashMap::default();
        for (si, s) in m.schedulers.iter().enumerate() {
            if let SchedulerKind::Force { params } = &s.item.kind {
                for &bi in &self.ix.selected[si] {
                    incoming
                        .entry(bi)
                        .or_default()
                        .extend(params.iter().map(|p| p.name.as_str()));
                }
            }
        }
        for b in &m.builders {
            for st in &b.item.steps {
                let StepKind::Trigger {
                    schedulers,
                    copy_properties,
                    set_properties,
                    ..
                } = &st.kind
                else {
                    continue;
                };
                for s in schedulers {
                    let Some(&si) = self.ix.schedulers.get(s.as_str()) else {
                        continue;
                    };
                    for &tb in &self.ix.selected[si] {
                        let e = incoming.entry(tb).or_default();
                        e.extend(copy_properties.iter().map(String::as_str));
                        e.extend(set_properties.keys().map(String::as_str));
                    }
                }
            }
        }
        let empty = BTreeSet::new();
        for (bi, b) in m.builders.iter().enumerate() {
            if b.prop_uses.is_empty() {
                continue;
            }
            let passed_in = incoming.get(&bi).unwrap_or(&empty);
            let workers: Vec<&Worker> = b
                .item
                .workers
                .iter()
                .filter_map(|w| self.ix.workers.get(w.as_str()).map(|&i| &m.workers[i].item))
                .collect();
            let declared = |name: &str| {
                BUILTIN_PROPERTIES.contains(&name)
                    || m.master.properties.contains_key(name)
                    || b.item.properties.contains_key(name)
                    || workers.iter().any(|w| w.properties.contains_key(name))
                    || passed_in.contains(name)
            };
            // Every name that exists at the start of the build (for suggestions).
            let known = || -> BTreeSet<String> {
                let mut k: BTreeSet<String> =
                    BUILTIN_PROPERTIES.iter().map(|s| s.to_string()).collect();
                k.extend(m.master.properties.keys().cloned());
                k.extend(b.item.properties.keys().cloned());
                for w in &workers {
                    k.extend(w.properties.keys().cloned());
                }
                k.extend(passed_in.iter().map(|s| s.to_string()));
                k
            };
            // Properties the steps set, with the index of the setting step.
            let mut set_at: Vec<(usize, &str, &str)> = Vec::new();
            let mut first_git: Option<usize> = None;
            for (i, st) in b.item.steps.iter().enumerate() {
                match &st.kind {
                    StepKind::SetProperty { property, .. }
                    | StepKind::SetPropertyFromCommand { property, .. } => {
                        set_at.push((i, property.as_str(), st.name.as_str()));
                    }
                    StepKind::Git { .. } if first_git.is_none() => first_git = Some(i),
                    _ => {}
                }
            }
            for (at, p) in &b.prop_uses {
                let step = *at;
                // got_revision exists once a git step has run (or when it
                // is passed in, e.g. copied by a trigger step).
                if p.name == "got_revision" && !passed_in.contains("got_revision") {
                    match (first_git, step) {
                        (Some(g), Some(s)) if g < s => {}
                        (Some(g), Some(_)) => self.prop_error(
                            b.item.name.as_str(),
                            p,
                            &known(),
                            Some(format!("`got_revision` is set by the git step `{}`, which runs after this one", b.item.steps[g].name)),
                        ),
                        // Builder-level settings apply to every step; fine once a git step exists.
                        (Some(_), None) => {}
                        (None, _) => self.prop_error(
                            b.item.name.as_str(),
                            p,
                            &known(),
                            Some("`got_revision` is set by a git step, and this builder has none; use `prop.revision` for the requested revision".into()),
                        ),
                    }
                    continue;
                }
                if declared(&p.name) {
                    continue;
                }
                let earlier = set_at
                    .iter()
                    .any(|(i, n, _)| *n == p.name && step.is_some_and(|s| *i < s));
                if earlier {
                    continue;
                }
                let later = set_at.iter().find(|(_, n, _)| *n == p.name);
                let help = later.map(|(_, _, sname)| {
                    format!("`{}` is set by the step `{sname}`, which runs after this point; move the use after it", p.name)
                });
                let mut k = known();
                k.extend(
                    set_at
                        .iter()
                        .filter(|(i, _, _)| step.is_some_and(|s| *i < s))
                        .map(|(_, n, _)| n.to_string()),
                );
                self.prop_error(b.item.name.as_str(), p, &k, help);
            }
        }
    }

    fn prop_error(
        &mut self,
        builder: &str,
        p: &crate::interp::PropRef,
        known: &BTreeSet<String>,
        help: Option<String>,
    ) {
        let help = help
            .or_else(|| {
                // Buildbot's old names are not accepted: say what bbc calls them.
                crate::interp::bbc_spelling(&p.name).map(|ours| {
                    format!("`{}` is Buildbot's old name: write `prop.{ours}`", p.name)
                })
            })
            .or_else(|| {
                let s = crate::diagnostic::suggest(&p.name, known.iter().map(String::as_str))?;
                Some(match crate::interp::bbc_spelling(s) {
                    Some(ours) => format!(
                        "did you mean `{ours}`? (bbc's name; Buildbot's `{s}` is accepted too)"
                    ),
                    None => format!("did you mean `{s}`?"),
                })
            })
            .unwrap_or_else(|| {
                "declare it with `property \"NAME\" …` on the master, builder or worker, as a force parameter, or set it in an earlier `set-property` step".into()
            });
        self.diags.push(
            Diagnostic::new(
                Code::UnknownBuildProperty,
                self.file,
                p.span,
                format!(
                    "build property `{}` cannot exist here in builder `{builder}`",
                    p.name
                ),
            )
            .label("unknown property")
            .help(help),
        );
    }

    fn lints(&mut self) {
        let m = self.m;
        // Reachability: a builder is reachable when a scheduler that starts
        // on its own (not triggerable, not dependent) selects it, or a
        // triggerable/dependent scheduler fed by reachable ones does.
        let mut triggered_by: HashMap<&str, Vec<usize>> = HashMap::default();
        for (bi, b) in m.builders.iter().enumerate() {
            for (_, t) in &b.triggers {
                triggered_by.entry(t.name.as_str()).or_default().push(bi);
            }
        }
        let mut reachable_sched = vec![false; m.schedulers.len()];
        let mut reachable = vec![false; m.builders.len()];
        loop {
            let mut changed = false;
            for (i, s) in m.schedulers.iter().enumerate() {
                if reachable_sched[i] {
                    continue;
                }
                let ok = match &s.item.kind {
                    SchedulerKind::Triggerable {} => triggered_by
                        .get(s.item.name.as_str())
                        .is_some_and(|v| v.iter().any(|&b| reachable[b])),
                    SchedulerKind::Dependent { upstream } => self
                        .ix
                        .schedulers
                        .get(upstream.as_str())
                        .is_some_and(|&u| reachable_sched[u]),
                    _ => true,
                };
                if ok {
                    reachable_sched[i] = true;
                    changed = true;
                    for &b in &self.ix.selected[i] {
                        reachable[b] = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        self.codebases(&triggered_by);
        let reachable_builders: HashSet<&str> = m
            .builders
            .iter()
            .zip(&reachable)
            .filter(|(_, r)| **r)
            .map(|(b, _)| b.item.name.as_str())
            .collect();
        for b in &m.builders {
            if !reachable_builders.contains(b.item.name.as_str()) {
                self.diags.push(
                    Diagnostic::new(Code::UnreachableBuilder, self.file, b.name_span, format!("no scheduler can start builder `{}`", b.item.name))
                        .label("never runs")
                        .help("name it in a scheduler's `builders` (a force scheduler is enough to run it by hand), or tag it and select the tag"),
                );
            }
        }
        let used_workers: HashSet<&str> = m
            .builders
            .iter()
            .flat_map(|b| b.item.workers.iter().map(String::as_str))
            .collect();
        for w in &m.workers {
            if !used_workers.contains(w.item.name.as_str()) {
                self.diags.push(
                    Diagnostic::new(
                        Code::UnusedWorker,
                        self.file,
                        w.name_span,
                        format!("no builder runs on worker `{}`", w.item.name),
                    )
                    .label("unused worker")
                    .help("add it to a builder's `workers`, or remove it"),
                );
            }
        }
        let used_locks: HashSet<&str> = m
            .builders
            .iter()
            .flat_map(|b| b.locks.iter().map(|l| l.name.as_str()))
            .collect();
        for l in &m.locks {
            if !used_locks.contains(l.item.name.as_str()) {
                self.diags.push(
                    Diagnostic::new(Code::UnusedLock, self.file, l.name_span, format!("no builder or step takes lock `{}`", l.item.name))
                        .label("unused lock")
                        .help("take it with `lock \"NAME\"` in a builder or locks=\"NAME\" on a step, or remove it"),
                );
            }
        }
        // Change-driven schedulers listen to the sources they name, or to all.
        let mut all_sources = false;
        let mut named: HashSet<&str> = HashSet::default();
        for s in &m.schedulers {
            let filter = match &s.item.kind {
                SchedulerKind::SingleBranch { filter, .. }
                | SchedulerKind::AnyBranch { filter, .. } => filter,
                SchedulerKind::Nightly {
                    filter,
                    only_if_changed: true,
                    ..
                } => filter,
                _ => continue,
            };
            if filter.change_sources.is_empty() {
                all_sources = true;
            }
            named.extend(filter.change_sources.iter().map(String::as_str));
        }
        for cs in &m.change_sources {
            if !all_sources && !named.contains(cs.item.name.as_str()) {
                self.diags.push(
                    Diagnostic::new(Code::UnusedChangeSource, self.file, cs.name_span, format!("no scheduler looks at the changes of `{}`", cs.item.name))
                        .label("changes go nowhere")
                        .help("add a single-branch or any-branch scheduler (or list this source in a scheduler's `change-sources`), or remove it"),
                );
            }
        }
        // Every report links to the build; without `url` the link is built
        // from the listen address, which nobody else can open.
        if m.master.url.is_none() {
            if let Some(r) = m.reporters.first() {
                let more = match m.reporters.len() {
                    1 => String::new(),
                    n => format!(
                        " (and {} more reporter{})",
                        n - 1,
                        if n == 2 { "" } else { "s" }
                    ),
                };
                self.diags.push(
                    Diagnostic::new(
                        Code::ReporterWithoutUrl,
                        self.file,
                        r.name_span,
                        format!(
                            "reporter `{}`{more} will link to http://{}/, the address the master listens on",
                            r.item.name, m.master.http_listen
                        ),
                    )
                    .label("links nobody else can open")
                    .help("set the address people reach the master at: `master { url \"https://ci.example.org/\" }`"),
                );
            }
        }
    }
}

impl Checker<'_> {
    /// `git codebase="x"` on a builder whose build sets can never carry
    /// codebase x: the step always checks out its own `repo`/`branch` at
    /// the head, which is a typo or a scheduler without its `codebase`
    /// more often than the intent. The codebases reaching a builder are
    /// those of the schedulers starting it: their own, a dependent's
    /// upstream's, a triggerable's triggering builders' (a fixed point).
    fn codebases(&mut self, triggered_by: &HashMap<&str, Vec<usize>>) {
        let m = self.m;
        if m.builders.iter().all(|b| b.codebases.is_empty()) {
            return;
        }
        let mut of_sched: Vec<BTreeSet<&str>> = m
            .schedulers
            .iter()
            .map(|s| s.item.codebases.iter().map(|c| c.name.as_str()).collect())
            .collect();
        let mut of_builder: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); m.builders.len()];
        loop {
            let mut changed = false;
            for (i, s) in m.schedulers.iter().enumerate() {
                let inherited: Vec<&str> = match &s.item.kind {
                    SchedulerKind::Dependent { upstream } => self
                        .ix
                        .schedulers
                        .get(upstream.as_str())
                        .map(|&u| of_sched[u].iter().copied().collect())
                        .unwrap_or_default(),
                    SchedulerKind::Triggerable {} => triggered_by
                        .get(s.item.name.as_str())
                        .map(|v| {
                            v.iter()
                                .flat_map(|&b| of_builder[b].iter().copied())
                                .collect()
                        })
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                for c in inherited {
                    changed |= of_sched[i].insert(c);
                }
                for &b in &self.ix.selected[i] {
                    for c in &of_sched[i] {
                        changed |= of_builder[b].insert(c);
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let declared: BTreeSet<&str> = of_sched.iter().flatten().copied().collect();
        for (bi, b) in m.builders.iter().enumerate() {
            for (step, cb) in &b.codebases {
                if of_builder[bi].contains(cb.name.as_str()) {
                    continue;
                }
                let step_name = b.item.steps.get(*step).map_or("", |s| s.name.as_str());
                let reach = &of_builder[bi];
                let help = (!reach.is_empty())
                    .then(|| {
                        did_you_mean(
                            &cb.name,
                            reach.iter().copied(),
                            "the codebases its schedulers declare are",
                        )
                    })
                    .flatten()
                    .unwrap_or_else(|| {
                    let elsewhere = if declared.contains(cb.name.as_str()) {
                        format!(
                            "a scheduler declares `{}` but none that starts `{}`; ",
                            cb.name, b.item.name
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        "{elsewhere}add `codebase \"{}\" repository=\"…\"` to a scheduler that starts `{}`; until then the step checks out its own `repo` and `branch` at the head",
                        cb.name, b.item.name
                    )
                });
                self.diags.push(
                    Diagnostic::new(
                        Code::UnknownCodebase,
                        self.file,
                        cb.span,
                        format!(
                            "git step `{step_name}` checks out codebase `{}`, which no scheduler starting builder `{}` declares",
                            cb.name, b.item.name
                        ),
                    )
                    .label("no build set carries it")
                    .help(help),
                );
            }
        }
    }
}

/// One cycle through `start` inside a strongly connected component, by DFS.
fn find_cycle(g: &DiGraphMap<usize, ()>, start: usize, members: &HashSet<usize>) -> Vec<usize> {
    let mut path = vec![start];
    let mut seen: HashSet<usize> = HashSet::from_iter([start]);
    fn dfs(
        g: &DiGraphMap<usize, ()>,
        start: usize,
        members: &HashSet<usize>,
        path: &mut Vec<usize>,
        seen: &mut HashSet<usize>,
    ) -> bool {
        let Some(&cur) = path.last() else {
            return false;
        };
        let mut next: Vec<usize> = g.neighbors(cur).filter(|n| members.contains(n)).collect();
        next.sort_unstable();
        for n in next {
            if n == start {
                return true;
            }
            if seen.insert(n) {
                path.push(n);
                if dfs(g, start, members, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    if dfs(g, start, members, &mut path, &mut seen) {
        path
    } else {
        vec![start]
    }
}

fn article(kind: &str) -> String {
    match kind.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => format!("an {kind} scheduler"),
        _ => format!("a {kind} scheduler"),
    }
}
