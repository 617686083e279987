//! Builders, with their environment and the run-time text of their settings.

use super::*;

/// A builder's or step's `env`: plain values (with `${…}` interpolation)
/// and secret references, apart so a secret's value never meets the graph.
#[derive(Default)]
pub(super) struct Env {
    pub vars: BTreeMap<String, Text>,
    pub secrets: BTreeMap<String, Credential>,
}

pub(super) fn env(cx: &mut Cx, r: &mut NodeReader, ip: &mut Vec<PropRef>) -> Env {
    let mut out = Env::default();
    let Some(n) = r.kid(cx, "env") else {
        return out;
    };
    let mut er = NodeReader::new(n);
    // Both forms, `env NAME="value"` and `env { NAME "value" }`, fill the
    // same map, so they lower to the same graph; properties come first, as
    // they come first in the text, so "set twice" points at the later one.
    for e in er.all_props() {
        let Some(name) = &e.name else { continue };
        env_var(cx, ip, &mut out, &name.value, name.span, Some(e));
    }
    for var in er.all_kids() {
        let mut vr = NodeReader::new(var);
        let val = vr.req_arg(cx, 0, "a value", "env { CC \"clang\" }");
        env_var(cx, ip, &mut out, &var.name.value, var.name.span, val);
        vr.finish(cx);
    }
    er.finish(cx);
    out
}

/// One variable of an `env` map, from either form.
fn env_var(
    cx: &mut Cx,
    ip: &mut Vec<PropRef>,
    out: &mut Env,
    name: &str,
    name_span: Span,
    val: Option<&Entry>,
) {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        cx.err(
            Code::InvalidChoice,
            name_span,
            "invalid environment variable name",
        )
        .label("not a variable name")
        .help("a variable name cannot be empty or contain `=`")
        .emit();
        return;
    }
    let Some(e) = val else { return };
    let added = if e.ty.as_ref().is_some_and(|t| t.value == "secret") {
        // `(secret)"NAME"`: resolved by the master when the step starts.
        let Some((c, _)) = cx.credential(e) else {
            return;
        };
        !out.vars.contains_key(name) && out.secrets.insert(name.to_string(), c).is_none()
    } else {
        let Some(s) = cx.string(e) else { return };
        let t = interp(cx, ip, &s, e.value_span);
        !out.secrets.contains_key(name) && out.vars.insert(name.to_string(), t).is_none()
    };
    if !added {
        cx.err(
            Code::DuplicateSetting,
            name_span,
            format!("`{name}` is set twice"),
        )
        .label("set again here")
        .help("remove one of them")
        .emit();
    }
}

pub(super) fn interp(cx: &mut Cx, props: &mut Vec<PropRef>, s: &str, span: Span) -> Text {
    crate::interp::text(cx, props, s, span)
}

pub(super) fn builder(
    cx: &mut Cx,
    r: &mut NodeReader,
    name: String,
    name_span: Span,
) -> BuilderDecl {
    let mut d = BuilderDecl {
        item: Builder {
            name: name.clone(),
            description: None,
            workers: vec![],
            tags: vec![],
            env: BTreeMap::new(),
            env_secrets: BTreeMap::new(),
            properties: BTreeMap::new(),
            workdir: name.clone(),
            collapse_requests: true,
            priority: 0,
            locks: vec![],
            max_time_ms: None,
            steps: vec![],
            hash: String::new(),
        },
        name_span,
        workers: vec![],
        locks: vec![],
        triggers: vec![],
        codebases: vec![],
        prop_uses: vec![],
    };
    d.workers = r
        .kid_strings(cx, "workers")
        .into_iter()
        .map(|(name, span)| Named { name, span })
        .collect();
    if d.workers.is_empty() && !has_kid(r.node, "workers") {
        cx.err(
            Code::MissingValue,
            r.node.name.span,
            format!("builder `{name}` has no workers"),
        )
        .label("no `workers`")
        .help("add `workers \"NAME\" …` inside the block: the workers this builder may run on")
        .add_child("workers \"NAME\"")
        .emit();
    }
    d.item.workers = d.workers.iter().map(|w| w.name.clone()).collect();
    let mut tags: Vec<String> = r.kid_strings(cx, "tags").into_iter().map(|t| t.0).collect();
    tags.sort();
    tags.dedup();
    d.item.tags = tags;
    d.item.description = r.kid_string(cx, "description").map(|s| s.0);
    let mut builder_props = Vec::new();
    let e = env(cx, r, &mut builder_props);
    d.item.env = e.vars;
    d.item.env_secrets = e.secrets;
    d.item.properties = properties(cx, r);
    if let Some((w, sp)) = r.kid_string(cx, "workdir") {
        if w.trim().is_empty() || w.starts_with('/') || w.split('/').any(|p| p == "..") {
            cx.err(
                Code::InvalidChoice,
                sp,
                "a builder workdir must be a relative path inside the worker's basedir",
            )
            .label("leaves the basedir")
            .help("write a relative path without `..`, e.g. workdir \"linux-build\"")
            .emit();
        } else {
            d.item.workdir = w;
        }
    }
    d.item.collapse_requests = r
        .kid_with(
            cx,
            "collapse-requests",
            "collapse-requests #false",
            |cx, e| cx.boolean(e),
        )
        .unwrap_or(true);
    d.item.priority = r
        .kid_with(cx, "priority", "priority 10", |cx, e| {
            cx.int_in(e, -1_000_000, 1_000_000, "priority")
        })
        .unwrap_or(0);
    d.item.locks = lock_uses(cx, r, &mut d.locks);
    d.item.max_time_ms = r.kid_with(cx, "max-time", "max-time \"2h\"", |cx, e| cx.duration_ms(e));
    d.prop_uses
        .extend(builder_props.into_iter().map(|p| (None, p)));
    match r.kid(cx, "steps") {
        Some(steps) => {
            let mut sr = NodeReader::new(steps);
            let mut names: HashMap<String, Span> = HashMap::default();
            let nodes = sr.all_kids();
            for sn in nodes {
                // Index this step will have (also for a broken step, whose
                // property uses are still checked).
                let at = d.item.steps.len();
                let mut props = Vec::new();
                if let Some(step) = step(cx, sn, at, &mut d, &mut props, &mut names) {
                    d.item.steps.push(step);
                }
                d.prop_uses.extend(props.into_iter().map(|p| (Some(at), p)));
            }
            if nodes.is_empty() {
                cx.err(
                    Code::MissingValue,
                    steps.name.span,
                    format!("builder `{name}` has no steps"),
                )
                .label("empty steps")
                .help("add steps, e.g. steps { shell \"make test\" }")
                .emit();
            }
            sr.finish(cx);
        }
        None => {
            cx.err(
                Code::MissingValue,
                r.node.name.span,
                format!("builder `{name}` has no steps"),
            )
            .label("no `steps` block")
            .help("add a block: steps { git repo=\"…\"; shell \"make test\" }")
            .add_child("steps { shell \"make test\" }")
            .emit();
        }
    }
    d
}
