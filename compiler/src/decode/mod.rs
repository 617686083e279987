//! Decoding: KDL document → checked AST ([`Model`]).
//!
//! Each entity is decoded into its graph type plus the spans that later
//! phases need (names, references, property uses). Decoding reports every
//! local mistake (unknown names, types, values) and keeps going: a broken
//! entity is still registered under its name, so a mistake inside a builder
//! does not also produce "unknown builder" errors wherever it is named.

use std::collections::BTreeMap;

use crate::FastMap as HashMap;

use crate::diagnostic::{did_you_mean, Code};
use crate::graph::*;
use crate::interp::PropRef;
use crate::reader::{CheckKind, Cx, NodeReader};
use crate::syntax::{Document, Entry, Node, Span};

mod builder;
mod change_source;
mod lock;
mod master;
mod oauth;
mod regex_check;
mod reporter;
mod scheduler;
mod step;
mod user;
mod values;
mod worker;

use builder::*;
use change_source::*;
use lock::*;
use master::*;
use reporter::*;
use scheduler::*;
pub use step::STEP_KINDS;
use step::*;
pub use user::UserDecl;
use user::*;
use values::*;
use worker::*;

/// A name written in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub span: Span,
}

/// `builders "a" "b"` / `builders tag="x"`, possibly repeated.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub names: Vec<Named>,
    pub tags: Vec<Named>,
    /// Whether any `builders` node was written at all.
    pub given: bool,
}

#[derive(Debug, Clone)]
pub struct Decl<T> {
    pub item: T,
    pub name_span: Span,
}

#[derive(Debug, Clone)]
pub struct BuilderDecl {
    pub item: Builder,
    pub name_span: Span,
    pub workers: Vec<Named>,
    pub locks: Vec<Named>,
    /// (step index, scheduler named by a trigger step)
    pub triggers: Vec<(usize, Named)>,
    /// (step index, codebase named by a git step's `codebase=`)
    pub codebases: Vec<(usize, Named)>,
    /// (step index or None for builder-level settings, use)
    pub prop_uses: Vec<(Option<usize>, PropRef)>,
}

#[derive(Debug, Clone)]
pub struct SchedulerDecl {
    pub item: Scheduler,
    pub name_span: Span,
    pub selector: Selector,
    pub upstream: Option<Named>,
    pub sources: Vec<Named>,
}

#[derive(Debug, Clone)]
pub struct ReporterDecl {
    pub item: Reporter,
    pub name_span: Span,
    pub selector: Selector,
}

/// The checked AST of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub master: Master,
    pub workers: Vec<Decl<Worker>>,
    pub locks: Vec<Decl<Lock>>,
    pub change_sources: Vec<Decl<ChangeSource>>,
    pub schedulers: Vec<SchedulerDecl>,
    pub builders: Vec<BuilderDecl>,
    pub reporters: Vec<ReporterDecl>,
    pub roles: Vec<Decl<Role>>,
    pub users: Vec<UserDecl>,
}

pub const TOP_LEVEL: &[&str] = &[
    "master",
    "worker",
    "lock",
    "change-source",
    "scheduler",
    "builder",
    "reporter",
    "role",
    "user",
];

pub fn decode(cx: &mut Cx, doc: &Document) -> Model {
    let mut m = Model::default();
    let mut seen: HashMap<(&'static str, String), Span> = HashMap::default();
    let mut master_seen: Option<Span> = None;
    for node in &doc.nodes {
        let kind = node.name.value.as_str();
        match kind {
            "master" => {
                if let Some(first) = master_seen {
                    cx.err(
                        Code::DuplicateSetting,
                        node.name.span,
                        "`master` is given twice",
                    )
                    .label("second master block")
                    .also(first, "first master block")
                    .help("put all master settings in one `master { … }` block")
                    .emit();
                    continue;
                }
                master_seen = Some(node.name.span);
                m.master = master(cx, node);
            }
            "worker" | "lock" | "change-source" | "scheduler" | "builder" | "reporter" | "role"
            | "user" => {
                let kind: &'static str =
                    TOP_LEVEL.iter().copied().find(|k| *k == kind).unwrap_or("");
                let mut r = NodeReader::new(node);
                let Some((name, name_span)) = entity_name(cx, &mut r, kind) else {
                    // Still check the rest of the node, to report everything
                    // at once, but register nothing under a broken name.
                    let mut scratch = Model::default();
                    let _ = decode_entity(cx, r, kind, String::new(), node.name.span, &mut scratch);
                    continue;
                };
                if let Some(first) = seen.get(&(kind, name.clone())) {
                    cx.err(
                        Code::DuplicateName,
                        name_span,
                        format!("there are two {kind}s named `{name}`"),
                    )
                    .label("second definition")
                    .also(*first, "first defined here")
                    .help(format!("rename one of them; {kind} names must be unique"))
                    .emit();
                    continue;
                }
                seen.insert((kind, name.clone()), name_span);
                decode_entity(cx, r, kind, name, name_span, &mut m);
            }
            other => {
                cx.err(
                    Code::UnknownNode,
                    node.name.span,
                    format!("unknown top-level node `{other}`"),
                )
                .label("unknown node")
                .help_opt(did_you_mean(
                    other,
                    TOP_LEVEL.iter().chain(crate::expand::DECLARATIONS).copied(),
                    "a config is made of",
                ))
                .emit();
                // Read a misspelt entity as the kind it was meant to be, so
                // that references to it do not fail as well.
                let meant = crate::diagnostic::suggest(other, TOP_LEVEL.iter().copied());
                if let Some(kind) = meant.filter(|k| *k != "master") {
                    let mut r = NodeReader::new(node);
                    if let Some((name, name_span)) = entity_name(cx, &mut r, kind) {
                        if let std::collections::hash_map::Entry::Vacant(slot) =
                            seen.entry((kind, name.clone()))
                        {
                            slot.insert(name_span);
                            decode_entity(cx, r, kind, name, name_span, &mut m);
                        }
                    }
                }
            }
        }
    }
    check_roles(cx, &m);
    oauth::check_logins(cx, &m);
    m
}

fn entity_name(cx: &mut Cx, r: &mut NodeReader, kind: &str) -> Option<(String, Span)> {
    let e = r.req_arg(cx, 0, "a name", &format!("{kind} \"NAME\" {{ … }}"))?;
    let s = cx.string(e)?;
    if s.trim().is_empty() {
        cx.err(
            Code::MissingValue,
            e.value_span,
            format!("empty {kind} name"),
        )
        .label("empty name")
        .help("give it a name that says what it is")
        .emit();
        return None;
    }
    Some((s, e.value_span))
}

fn decode_entity(
    cx: &mut Cx,
    mut r: NodeReader,
    kind: &str,
    name: String,
    name_span: Span,
    m: &mut Model,
) -> Option<()> {
    match kind {
        "worker" => {
            let item = worker(cx, &mut r, name);
            r.finish(cx);
            m.workers.push(Decl { item, name_span });
        }
        "lock" => {
            let item = lock(cx, &mut r, name);
            r.finish(cx);
            m.locks.push(Decl { item, name_span });
        }
        "change-source" => {
            let item = change_source(cx, &mut r, name);
            r.finish(cx);
            m.change_sources.push(Decl {
                item: item?,
                name_span,
            });
        }
        "scheduler" => {
            let d = scheduler(cx, &mut r, name, name_span);
            r.finish(cx);
            m.schedulers.push(d?);
        }
        "builder" => {
            let d = builder(cx, &mut r, name, name_span);
            r.finish(cx);
            m.builders.push(d);
        }
        "reporter" => {
            let d = reporter(cx, &mut r, name, name_span);
            r.finish(cx);
            m.reporters.push(d?);
        }
        "role" => {
            let item = role(cx, &mut r, name);
            r.finish(cx);
            m.roles.push(Decl { item, name_span });
        }
        "user" => {
            let d = user(cx, &mut r, name, name_span);
            r.finish(cx);
            m.users.push(d);
        }
        _ => {}
    }
    Some(())
}

/// Reads `kind="…"` and checks it against the variants.
fn kind_of<T: Copy>(
    cx: &mut Cx,
    r: &mut NodeReader,
    what: &str,
    options: &[(&'static str, T)],
) -> Option<T> {
    let k = match r.prop(cx, "kind") {
        Some(e) => cx.choice(e, &format!("{what} kind"), options),
        None => {
            let list = options
                .iter()
                .map(|(k, _)| format!("\"{}\"", k))
                .collect::<Vec<_>>()
                .join(", ");
            cx.err(
                Code::MissingValue,
                r.node.name.span,
                format!("{what} needs a `kind`"),
            )
            .label("no kind= property")
            .help(format!("add kind=… with one of {list}"))
            .emit();
            None
        }
    };
    if k.is_none() {
        // Which settings are valid depends on the kind; with none known,
        // reporting them all as unknown would only repeat this mistake.
        r.accept_any();
    }
    k
}

fn properties(cx: &mut Cx, r: &mut NodeReader) -> BTreeMap<String, Scalar> {
    let mut out = BTreeMap::new();
    let mut spans: HashMap<String, Span> = HashMap::default();
    for n in r.kids("property") {
        let mut pr = NodeReader::new(n);
        let name = pr
            .req_arg(cx, 0, "a property name", "property \"os\" \"linux\"")
            .and_then(|e| cx.string(e).map(|s| (s, e.value_span)));
        let value = pr
            .req_arg(cx, 1, "a value", "property \"os\" \"linux\"")
            .and_then(|e| cx.scalar(e));
        pr.finish(cx);
        if let (Some((k, sp)), Some(v)) = (name, value) {
            if !valid_prop_name(&k) {
                cx.err(Code::InvalidChoice, sp, format!("invalid property name \"{k}\""))
                    .label("not a property name")
                    .help("property names are letters, digits and `_`, starting with a letter or `_`, so that `${{ prop.NAME }}` can name them")
                    .emit();
                continue;
            }
            if let Some(first) = spans.get(&k) {
                cx.err(
                    Code::DuplicateSetting,
                    sp,
                    format!("property `{k}` is set twice"),
                )
                .label("set again here")
                .also(*first, "first set here")
                .help("remove one of them")
                .emit();
                continue;
            }
            spans.insert(k.clone(), sp);
            out.insert(k, v);
        }
    }
    out
}
