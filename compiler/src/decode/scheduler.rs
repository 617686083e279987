//! Schedulers, their builder selectors, change filters and force parameters.

use super::*;

pub(super) fn selector(cx: &mut Cx, r: &mut NodeReader) -> Selector {
    let mut s = Selector::default();
    for n in r.kids("builders") {
        s.given = true;
        let mut br = NodeReader::new(n);
        for e in br.rest_args(0) {
            if let Some(v) = cx.string(e) {
                s.names.push(Named {
                    name: v,
                    span: e.value_span,
                });
            }
        }
        if let Some(e) = br.prop(cx, "tag") {
            if let Some(v) = cx.string(e) {
                s.tags.push(Named {
                    name: v,
                    span: e.value_span,
                });
            }
        }
        if n.entries.is_empty() {
            cx.err(Code::MissingValue, n.name.span, "`builders` names no builder")
                .label("empty list")
                .help("name builders (builders \"a\" \"b\") or select them by tag (builders tag=\"tests\")")
                .emit();
        }
        br.finish(cx);
    }
    s
}

pub(super) fn filter(cx: &mut Cx, r: &mut NodeReader) -> (ChangeFilter, Vec<Named>) {
    let sources: Vec<Named> = r
        .kid_strings(cx, "change-sources")
        .into_iter()
        .map(|(name, span)| Named { name, span })
        .collect();
    let repository = r.kid_string(cx, "repository").map(|(s, _)| s);
    let files = {
        let v = r.kid_strings(cx, "files");
        globs(cx, v)
    };
    let files_important = {
        let v = r.kid_strings(cx, "files-important");
        globs(cx, v)
    };
    let only_important = r
        .kid_with(cx, "only-important", "only-important #true", |cx, e| {
            cx.boolean(e)
        })
        .unwrap_or(false);
    (
        ChangeFilter {
            change_sources: sources.iter().map(|n| n.name.clone()).collect(),
            repository,
            files,
            files_important,
            only_important,
        },
        sources,
    )
}

pub(super) fn scheduler(
    cx: &mut Cx,
    r: &mut NodeReader,
    name: String,
    name_span: Span,
) -> Option<SchedulerDecl> {
    #[derive(Clone, Copy, PartialEq)]
    enum K {
        Single,
        Any,
        Periodic,
        Nightly,
        Triggerable,
        Dependent,
        Force,
    }
    let k = kind_of(
        cx,
        r,
        "scheduler",
        &[
            ("single-branch", K::Single),
            ("any-branch", K::Any),
            ("periodic", K::Periodic),
            ("nightly", K::Nightly),
            ("triggerable", K::Triggerable),
            ("dependent", K::Dependent),
            ("force", K::Force),
        ],
    );
    let selector = selector(cx, r);
    let Some(k) = k else {
        // Keep the builder references alive so that they are still checked
        // and builders are not reported as unreachable because of this typo.
        return Some(SchedulerDecl {
            item: Scheduler {
                name,
                builders: vec![],
                kind: SchedulerKind::Force { params: vec![] },
                priority: 0,
                codebases: vec![],
                hash: String::new(),
            },
            name_span,
            selector,
            upstream: None,
            sources: vec![],
        });
    };
    if !selector.given {
        cx.err(
            Code::MissingValue,
            r.node.name.span,
            format!("scheduler `{name}` starts no builders"),
        )
        .label("no `builders`")
        .help("add `builders \"NAME\" …` or `builders tag=\"TAG\"` inside the block")
        .add_child("builders \"NAME\"")
        .emit();
    }
    let mut upstream = None;
    let mut sources = Vec::new();
    let mut codebases = Vec::new();
    let tree_stable = |cx: &mut Cx, r: &mut NodeReader| {
        r.kid_with(
            cx,
            "tree-stable-timer",
            "tree-stable-timer \"2m\"",
            |cx, e| cx.duration_ms(e),
        )
        .unwrap_or(0)
    };
    let kind = match k {
        K::Single => {
            let branch = r.kid_string(cx, "branch");
            if branch.is_none()
                && r.node
                    .children
                    .as_ref()
                    .is_none_or(|c| !c.nodes.iter().any(|n| n.name.value == "branch"))
            {
                cx.err(
                    Code::MissingValue,
                    r.node.name.span,
                    "a single-branch scheduler needs a `branch`",
                )
                .label("no branch")
                .help("add `branch \"main\"`, or use kind=\"any-branch\" to build every branch")
                .add_child("branch \"main\"")
                .emit();
            }
            if let Some((b, sp)) = &branch {
                if b.contains(['*', '?', '[']) {
                    cx.err(Code::Conflict, *sp, "a single-branch scheduler takes one branch name, not a glob")
                        .label("a glob")
                        .help("use kind=\"any-branch\" with `branches \"release/*\"` to build matching branches")
                        .emit();
                }
            }
            let t = tree_stable(cx, r);
            let (f, s) = filter(cx, r);
            sources = s;
            codebases = codebase_list(cx, r, branch.as_ref().map(|b| b.0.as_str()));
            SchedulerKind::SingleBranch {
                branch: branch.map(|b| b.0).unwrap_or_default(),
                tree_stable_timer_ms: t,
                filter: f,
            }
        }
        K::Any => {
            let b = r.kid_strings(cx, "branches");
            let branches = globs(cx, b);
            let t = tree_stable(cx, r);
            let (f, s) = filter(cx, r);
            sources = s;
            codebases = codebase_list(cx, r, None);
            SchedulerKind::AnyBranch {
                branches,
                tree_stable_timer_ms: t,
                filter: f,
            }
        }
        K::Periodic => {
            let interval = r.kid_with(cx, "interval", "interval \"1h\"", |cx, e| {
                let ms = cx.duration_ms(e)?;
                if ms < 1000 {
                    cx.err(Code::OutOfRange, e.value_span, "a periodic interval must be at least 1s")
                        .label("too short")
                        .help("periodic schedulers start whole builds; use an interval of minutes or hours")
                        .emit();
                    return None;
                }
                Some(ms)
            });
            if interval.is_none() && !has_kid(r.node, "interval") {
                cx.err(
                    Code::MissingValue,
                    r.node.name.span,
                    "a periodic scheduler needs an `interval`",
                )
                .label("no interval")
                .help("add `interval \"1h\"`")
                .add_child("interval \"1h\"")
                .emit();
            }
            let branch = r.kid_string(cx, "branch").map(|b| b.0);
            codebases = codebase_list(cx, r, branch.as_deref());
            SchedulerKind::Periodic {
                interval_ms: interval.unwrap_or(3_600_000),
                branch,
            }
        }
        K::Nightly => {
            let cron = r.kid_with(cx, "cron", "cron \"0 3 * * *\"", |cx, e| {
                let s = cx.string(e)?;
                let verdict = cx.checked.get(CheckKind::Cron, &s, |s| {
                    s.parse::<croner::Cron>().err().map(|err| err.to_string())
                });
                match verdict {
                    None => Some(s),
                    Some(err) => {
                        cx.err(Code::InvalidCron, e.value_span, format!("invalid cron expression \"{s}\": {err}"))
                            .label("not a cron expression")
                            .help("five fields: minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\" (03:00 every day) or \"30 2 * * 1-5\"")
                            .emit();
                        None
                    }
                }
            });
            if cron.is_none() && !has_kid(r.node, "cron") {
                cx.err(
                    Code::MissingValue,
                    r.node.name.span,
                    "a nightly scheduler needs a `cron` expression",
                )
                .label("no cron")
                .help("add `cron \"0 3 * * *\"` for 03:00 every day")
                .add_child("cron \"0 3 * * *\"")
                .emit();
            }
            let tz = r
                .kid_with(cx, "tz", "tz \"Europe/Prague\"", time_zone)
                .unwrap_or_else(|| "UTC".into());
            let branch = r.kid_string(cx, "branch").map(|b| b.0);
            let only_if_changed = r
                .kid_with(cx, "only-if-changed", "only-if-changed #true", |cx, e| {
                    cx.boolean(e)
                })
                .unwrap_or(false);
            let (f, s) = filter(cx, r);
            sources = s;
            codebases = codebase_list(cx, r, branch.as_deref());
            SchedulerKind::Nightly {
                cron: cron.unwrap_or_default(),
                tz,
                branch,
                only_if_changed,
                filter: f,
            }
        }
        K::Triggerable => SchedulerKind::Triggerable {},
        K::Dependent => {
            upstream = r
                .kid_string(cx, "upstream")
                .map(|(name, span)| Named { name, span });
            if upstream.is_none() && !has_kid(r.node, "upstream") {
                cx.err(Code::MissingValue, r.node.name.span, "a dependent scheduler needs an `upstream` scheduler")
                    .label("no upstream")
                    .help("add `upstream \"NAME\"`: this scheduler runs when all builds of that one succeed")
                    .add_child("upstream \"NAME\"")
                    .emit();
            }
            SchedulerKind::Dependent {
                upstream: upstream
                    .as_ref()
                    .map(|u| u.name.clone())
                    .unwrap_or_default(),
            }
        }
        K::Force => SchedulerKind::Force {
            params: force_params(cx, r),
        },
    };
    // The priority of the requests it submits: the same range as a
    // builder's (the queue orders by it first).
    let priority = r
        .kid_with(cx, "priority", "priority 10", |cx, e| {
            cx.int_in(e, -1_000_000, 1_000_000, "priority")
        })
        .unwrap_or(0);
    Some(SchedulerDecl {
        item: Scheduler {
            name,
            builders: vec![],
            kind,
            priority,
            codebases,
            hash: String::new(),
        },
        name_span,
        selector,
        upstream,
        sources,
    })
}

/// `codebase "app" repository="…" branch="main"`, repeatable: the
/// codebases the scheduler's build sets span, in the order written.
/// `default_branch` (the scheduler's own `branch`) is the branch of a
/// codebase that names none.
fn codebase_list(cx: &mut Cx, r: &mut NodeReader, default_branch: Option<&str>) -> Vec<Codebase> {
    let mut out: Vec<Codebase> = Vec::new();
    let mut seen: HashMap<String, Span> = HashMap::default();
    for n in r.kids("codebase") {
        let mut cr = NodeReader::new(n);
        let name = cr
            .req_arg(
                cx,
                0,
                "a codebase name",
                "codebase \"app\" repository=\"https://…/app.git\" branch=\"main\"",
            )
            .and_then(|e| codebase_name(cx, e).map(|s| (s, e.value_span)));
        let repository = cr.prop(cx, "repository").and_then(|e| git_repo(cx, e));
        let branch = cr.prop(cx, "branch").and_then(|e| cx.string(e));
        cr.finish(cx);
        let Some((name, span)) = name else { continue };
        if let Some(first) = seen.get(&name) {
            cx.err(
                Code::DuplicateName,
                span,
                format!("codebase `{name}` is named twice in this scheduler"),
            )
            .label("second definition")
            .also(*first, "first defined here")
            .help("a build set has one source stamp per codebase: remove one, or rename it")
            .emit();
            continue;
        }
        seen.insert(name.clone(), span);
        out.push(Codebase {
            name,
            repository: repository.unwrap_or_default(),
            branch: branch
                .or_else(|| default_branch.map(str::to_string))
                .unwrap_or_default(),
        });
    }
    out
}

pub(super) fn has_kid(n: &Node, name: &str) -> bool {
    n.children
        .as_ref()
        .is_some_and(|c| c.nodes.iter().any(|k| k.name.value == name))
}

pub(super) fn force_params(cx: &mut Cx, r: &mut NodeReader) -> Vec<ForceParam> {
    let mut out: Vec<ForceParam> = Vec::new();
    let mut spans: HashMap<String, Span> = HashMap::default();
    for n in r.kids("param") {
        let mut pr = NodeReader::new(n);
        let name = pr
            .req_arg(
                cx,
                0,
                "a parameter name",
                "param \"reason\" type=\"string\"",
            )
            .and_then(|e| cx.string(e).map(|s| (s, e.value_span)));
        let ty_entry = pr.prop(cx, "type");
        let ty = match ty_entry {
            Some(e) => cx.choice(
                e,
                "parameter type",
                &[
                    ("string", ParamType::String),
                    ("int", ParamType::Int),
                    ("bool", ParamType::Bool),
                    ("choice", ParamType::Choice),
                ],
            ),
            None => Some(ParamType::String),
        };
        let label = pr.prop(cx, "label").and_then(|e| cx.string(e));
        let required = pr
            .prop(cx, "required")
            .and_then(|e| cx.boolean(e))
            .unwrap_or(false);
        let default_e = pr.prop(cx, "default");
        let choices_w = pr.kid_strings(cx, "choices");
        pr.finish(cx);
        let (Some((name, nspan)), Some(ty)) = (name, ty) else {
            continue;
        };
        if !valid_prop_name(&name) {
            cx.err(
                Code::InvalidChoice,
                nspan,
                format!("invalid parameter name \"{name}\""),
            )
            .label("not a property name")
            .help("a parameter becomes the build property of that name: letters, digits and `_`")
            .emit();
            continue;
        }
        if let Some(first) = spans.get(&name) {
            cx.err(
                Code::DuplicateName,
                nspan,
                format!("two parameters are named `{name}`"),
            )
            .label("second definition")
            .also(*first, "first defined here")
            .help("rename one of them")
            .emit();
            continue;
        }
        spans.insert(name.clone(), nspan);
        let choices: Vec<String> = choices_w.iter().map(|c| c.0.clone()).collect();
        if ty == ParamType::Choice && choices.is_empty() {
            cx.err(
                Code::MissingValue,
                n.name.span,
                format!("choice parameter `{name}` lists no choices"),
            )
            .label("no choices")
            .help("add a child: param \"target\" type=\"choice\" { choices \"debug\" \"release\" }")
            .emit();
        }
        if ty != ParamType::Choice && !choices_w.is_empty() {
            cx.err(
                Code::Conflict,
                choices_w[0].1,
                "only a choice parameter has choices",
            )
            .label("choices on a non-choice parameter")
            .help("set type=\"choice\", or remove the choices")
            .emit();
        }
        let default = default_e.and_then(|e| {
            let v = cx.scalar(e)?;
            let ok = matches!(
                (ty, &v),
                (ParamType::String, Scalar::String(_))
                    | (ParamType::Int, Scalar::Int(_))
                    | (ParamType::Bool, Scalar::Bool(_))
                    | (ParamType::Choice, Scalar::String(_))
            );
            if !ok {
                let want = match ty {
                    ParamType::String | ParamType::Choice => "a string",
                    ParamType::Int => "an integer",
                    ParamType::Bool => "a boolean",
                };
                cx.err(
                    Code::WrongType,
                    e.value_span,
                    format!(
                        "default of `{name}` must be {want}, found {}",
                        e.value.kind_name()
                    ),
                )
                .label(format!("not {want}"))
                .help("the default must have the parameter's type")
                .emit();
                return None;
            }
            if let (ParamType::Choice, Scalar::String(s)) = (ty, &v) {
                if !choices.is_empty() && !choices.contains(s) {
                    cx.err(
                        Code::InvalidChoice,
                        e.value_span,
                        format!("default \"{s}\" is not one of the choices"),
                    )
                    .label("not a choice")
                    .help_opt(did_you_mean(
                        s,
                        choices.iter().map(|c| c.as_str()),
                        "the choices are",
                    ))
                    .emit();
                    return None;
                }
            }
            Some(v)
        });
        out.push(ForceParam {
            label: label.unwrap_or_else(|| name.clone()),
            name,
            ty,
            default,
            required,
            choices,
        });
    }
    out
}
