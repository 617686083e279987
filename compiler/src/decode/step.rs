//! Build steps: the kinds, their commands and the options every step shares.

use super::*;

pub const STEP_KINDS: &[&str] = &[
    "shell",
    "compile",
    "test",
    "git",
    "upload",
    "download",
    "trigger",
    "set-property",
    "master-shell",
];

pub(super) fn command(
    cx: &mut Cx,
    r: &mut NodeReader,
    props: &mut Vec<PropRef>,
    example: &str,
) -> Option<Command> {
    let args = r.rest_args(0);
    if args.is_empty() {
        cx.err(Code::MissingValue, r.node.name.span, format!("`{}` needs a command", r.name()))
            .label("no command")
            .help(format!("for example: {example} (one string runs through sh -c; several are an argv list run directly)"))
            .emit();
        return None;
    }
    let mut texts = Vec::new();
    for e in &args {
        let s = cx.string(e)?;
        texts.push(interp(cx, props, &s, e.value_span));
    }
    if texts.len() == 1 {
        texts.pop().map(Command::Shell)
    } else {
        Some(Command::Argv(texts))
    }
}

pub(super) fn step(
    cx: &mut Cx,
    n: &Node,
    index: usize,
    d: &mut BuilderDecl,
    props: &mut Vec<PropRef>,
    names: &mut HashMap<String, Span>,
) -> Option<Step> {
    let kind_name = n.name.value.as_str();
    if !STEP_KINDS.contains(&kind_name) {
        // `use` never gets here: expansion replaced it with its steps.
        let help = did_you_mean(kind_name, STEP_KINDS.iter().copied(), "step kinds are");
        cx.err(
            Code::UnknownNode,
            n.name.span,
            format!("unknown step kind `{kind_name}`"),
        )
        .label("not a step")
        .help_opt(help)
        .emit();
        return None;
    }
    let mut r = NodeReader::new(n);
    let warning_pattern =
        |cx: &mut Cx, r: &mut NodeReader, default: Option<&str>| -> Option<std::sync::Arc<str>> {
            match r.prop(cx, "warning-pattern") {
                Some(e) => regex(cx, e),
                None => default.map(std::sync::Arc::from),
            }
        };
    let kind = match kind_name {
        "shell" => StepKind::Shell {
            command: command(cx, &mut r, props, "shell \"make test\"")?,
            warning_pattern: warning_pattern(cx, &mut r, None),
        },
        "compile" => StepKind::Compile {
            command: command(cx, &mut r, props, "compile \"make -j4\"")?,
            warning_pattern: warning_pattern(cx, &mut r, Some("(?i)warning[: ]")),
        },
        "test" => StepKind::Test {
            command: command(cx, &mut r, props, "test \"make check\"")?,
            warning_pattern: warning_pattern(cx, &mut r, None),
            junit: match r.prop(cx, "junit") {
                Some(e) => Some(cx.string(e)?),
                None => None,
            },
        },
        "master-shell" => StepKind::MasterShell {
            command: command(cx, &mut r, props, "master-shell \"./publish.sh\"")?,
        },
        "git" => {
            let repo = match r.prop(cx, "repo") {
                Some(e) => {
                    let s = cx.string(e)?;
                    if !s.contains("${{") {
                        git_repo(cx, e)?;
                    }
                    interp(cx, props, &s, e.value_span)
                }
                None => {
                    cx.err(Code::MissingValue, n.name.span, "a git step needs a `repo`")
                        .label("no repo=")
                        .help("add repo=\"https://…/project.git\"")
                        .emit();
                    Text::default()
                }
            };
            let branch = r
                .prop(cx, "branch")
                .and_then(|e| cx.string(e).map(|s| interp(cx, props, &s, e.value_span)));
            let mode = r
                .prop(cx, "mode")
                .and_then(|e| {
                    cx.choice(
                        e,
                        "git mode",
                        &[
                            ("full", GitMode::Full),
                            ("incremental", GitMode::Incremental),
                        ],
                    )
                })
                .unwrap_or(GitMode::Incremental);
            let method_e = r.prop(cx, "method");
            let method = method_e
                .and_then(|e| {
                    cx.choice(
                        e,
                        "git method",
                        &[
                            ("clobber", GitMethod::Clobber),
                            ("fresh", GitMethod::Fresh),
                            ("clean", GitMethod::Clean),
                            ("copy", GitMethod::Copy),
                        ],
                    )
                })
                .unwrap_or(GitMethod::Fresh);
            if let (Some(e), GitMode::Incremental) = (method_e, mode) {
                cx.err(
                    Code::Conflict,
                    e.span,
                    "`method` only applies to mode=\"full\"",
                )
                .label("ignored in incremental mode")
                .help("set mode=\"full\" to choose how the tree is cleaned, or remove `method`")
                .emit();
            }
            let shallow = r.prop(cx, "shallow").and_then(|e| match &e.value {
                crate::syntax::Value::Bool(b) => b.then_some(1),
                _ => cx
                    .int_in(e, 1, i64::MAX, "shallow (the fetch depth)")
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            });
            let submodules = r
                .prop(cx, "submodules")
                .and_then(|e| cx.boolean(e))
                .unwrap_or(false);
            let retry = r
                .prop(cx, "retry")
                .and_then(|e| {
                    cx.int_in(
                        e,
                        0,
                        100,
                        "retry (how many times a failed fetch is tried again)",
                    )
                })
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0);
            let retry_delay_e = r.prop(cx, "retry-delay");
            let retry_delay_ms = retry_delay_e.and_then(|e| cx.duration_ms(e));
            if let (Some(e), 0) = (retry_delay_e, retry) {
                cx.err(
                    Code::Conflict,
                    e.span,
                    "`retry-delay` without `retry`",
                )
                .label("no retry to wait before")
                .help("add retry=N (how many times a failed fetch is tried again), or remove `retry-delay`")
                .emit();
            }
            let ssh_key = r.prop(cx, "ssh-key").and_then(|e| {
                let (c, plain) = cx.credential(e)?;
                if plain {
                    cx.err(
                        Code::WrongType,
                        e.value_span,
                        "an ssh private key is read only from a secret",
                    )
                    .label("the key itself, in the config")
                    .help("store the key as a secret and write ssh-key=(secret)\"NAME\"; the master reads it from its secrets directory or environment")
                    .emit();
                    return None;
                }
                Some(c)
            });
            let ssh_known_hosts = r.prop(cx, "ssh-known-hosts").and_then(|e| cx.string(e));
            let codebase = r.prop(cx, "codebase").and_then(|e| {
                let name = codebase_name(cx, e)?;
                d.codebases.push((
                    index,
                    Named {
                        name: name.clone(),
                        span: e.value_span,
                    },
                ));
                Some(name)
            });
            StepKind::Git {
                repo,
                branch,
                mode,
                method,
                shallow,
                submodules,
                retry,
                retry_delay_ms,
                ssh_key,
                ssh_known_hosts,
                codebase,
            }
        }
        "upload" | "download" => {
            let src = r
                .req_arg(
                    cx,
                    0,
                    "a source path",
                    &format!("{kind_name} \"dist/app.tar.gz\" to=\"…\""),
                )
                .and_then(|e| cx.string(e).map(|s| interp(cx, props, &s, e.value_span)));
            let dest = match r.prop(cx, "to") {
                Some(e) => cx.string(e).map(|s| interp(cx, props, &s, e.value_span)),
                None => {
                    cx.err(
                        Code::MissingValue,
                        n.name.span,
                        format!("`{kind_name}` needs a destination"),
                    )
                    .label("no to=")
                    .help(format!(
                        "add to=\"…\": where the file goes on the {}",
                        if kind_name == "upload" {
                            "master"
                        } else {
                            "worker"
                        }
                    ))
                    .emit();
                    None
                }
            };
            let directory = r
                .prop(cx, "directory")
                .and_then(|e| cx.boolean(e))
                .unwrap_or(false);
            let (src, dest) = (src?, dest?);
            if kind_name == "upload" {
                StepKind::Upload {
                    src,
                    dest,
                    directory,
                }
            } else {
                StepKind::Download {
                    src,
                    dest,
                    directory,
                }
            }
        }
        "trigger" => {
            let mut schedulers = Vec::new();
            for e in r.rest_args(0) {
                if let Some(s) = cx.string(e) {
                    d.triggers.push((
                        index,
                        Named {
                            name: s.clone(),
                            span: e.value_span,
                        },
                    ));
                    schedulers.push(s);
                }
            }
            if schedulers.is_empty() && n.entries.iter().all(|e| e.name.is_some()) {
                cx.err(
                    Code::MissingValue,
                    n.name.span,
                    "a trigger step names no scheduler",
                )
                .label("nothing to trigger")
                .help("name triggerable schedulers: trigger \"release\" wait=#true")
                .emit();
            }
            let wait = r
                .prop(cx, "wait")
                .and_then(|e| cx.boolean(e))
                .unwrap_or(false);
            let copy_properties: Vec<String> = r
                .kid_strings(cx, "copy-properties")
                .into_iter()
                .map(|c| c.0)
                .collect();
            let mut set_properties = BTreeMap::new();
            for pn in r.kids("property") {
                let mut pr = NodeReader::new(pn);
                let k = pr
                    .req_arg(cx, 0, "a property name", "property \"version\" \"1.2\"")
                    .and_then(|e| cx.string(e).map(|s| (s, e.value_span)));
                let v = pr
                    .req_arg(cx, 1, "a value", "property \"version\" \"1.2\"")
                    .and_then(|e| cx.string(e).map(|s| (s, e.value_span)));
                pr.finish(cx);
                if let (Some((k, ks)), Some((v, vs))) = (k, v) {
                    if !valid_prop_name(&k) {
                        cx.err(
                            Code::InvalidChoice,
                            ks,
                            format!("invalid property name \"{k}\""),
                        )
                        .label("not a property name")
                        .help("property names are letters, digits and `_`")
                        .emit();
                        continue;
                    }
                    let t = interp(cx, props, &v, vs);
                    set_properties.insert(k, t);
                }
            }
            StepKind::Trigger {
                schedulers,
                wait,
                copy_properties,
                set_properties,
            }
        }
        "set-property" => {
            let prop = r
                .req_arg(
                    cx,
                    0,
                    "a property name",
                    "set-property \"version\" command=\"git describe\"",
                )
                .and_then(|e| cx.string(e).map(|s| (s, e.value_span)));
            let value_e = r.prop(cx, "value");
            let command_e = r.prop(cx, "command");
            let (prop, pspan) = prop?;
            if !valid_prop_name(&prop) {
                cx.err(Code::InvalidChoice, pspan, format!("invalid property name \"{prop}\""))
                    .label("not a property name")
                    .help("property names are letters, digits and `_`, so that ${{ prop.NAME }} can name them")
                    .emit();
                return None;
            }
            match (value_e, command_e) {
                (Some(v), Some(c)) => {
                    cx.err(
                        Code::Conflict,
                        c.span,
                        "`set-property` takes `value` or `command`, not both",
                    )
                    .label("command given")
                    .also(v.span, "value given")
                    .help("use value= for a literal, command= to take the output of a command")
                    .emit();
                    return None;
                }
                (Some(v), None) => {
                    let s = cx.string(v)?;
                    StepKind::SetProperty {
                        property: prop,
                        value: interp(cx, props, &s, v.value_span),
                    }
                }
                (None, Some(c)) => {
                    let s = cx.string(c)?;
                    StepKind::SetPropertyFromCommand {
                        property: prop,
                        command: Command::Shell(interp(cx, props, &s, c.value_span)),
                    }
                }
                (None, None) => {
                    cx.err(Code::MissingValue, n.name.span, "`set-property` needs `value` or `command`")
                        .label("no value")
                        .help("set-property \"version\" value=\"1.2\", or command=\"git describe\" to use a command's output")
                        .emit();
                    return None;
                }
            }
        }
        _ => return None,
    };
    // Options common to every step.
    let name_e = r.prop(cx, "name");
    let name = name_e.and_then(|e| cx.string(e));
    let description = r.prop(cx, "description").and_then(|e| cx.string(e));
    let flag = |cx: &mut Cx, r: &mut NodeReader, k: &'static str, def: bool| {
        r.prop(cx, k).and_then(|e| cx.boolean(e)).unwrap_or(def)
    };
    let halt_on_failure = flag(cx, &mut r, "halt-on-failure", false);
    let flunk_on_failure = flag(cx, &mut r, "flunk-on-failure", true);
    let warn_on_failure = flag(cx, &mut r, "warn-on-failure", false);
    let warn_on_warnings = flag(cx, &mut r, "warn-on-warnings", false);
    let always_run = flag(cx, &mut r, "always-run", false);
    let mut cond = |cx: &mut Cx, r: &mut NodeReader, k: &'static str| {
        let e = r.prop(cx, k)?;
        crate::interp::condition(cx, props, e)
    };
    let do_step_if = cond(cx, &mut r, "do-step-if");
    let hide_step_if = cond(cx, &mut r, "hide-step-if");
    let timeout_ms = r.prop(cx, "timeout").and_then(|e| cx.duration_ms(e));
    let max_time_ms = r.prop(cx, "max-time").and_then(|e| cx.duration_ms(e));
    let sigterm_time_ms = r
        .prop(cx, "sigterm-time")
        .and_then(|e| cx.duration_ms(e))
        .unwrap_or(10_000);
    let workdir = r
        .prop(cx, "workdir")
        .and_then(|e| cx.string(e).map(|s| interp(cx, props, &s, e.value_span)));
    let mut locks = Vec::new();
    if let Some(e) = r.prop(cx, "locks") {
        if let Some(s) = cx.string(e) {
            let map = crate::interp::StrMap::new(cx.source, e.value_span, &s);
            let mut at = 0;
            for part in s.split([',', ' ']) {
                if !part.is_empty() {
                    d.locks.push(Named {
                        name: part.to_string(),
                        span: map.span(at, at + part.len()),
                    });
                    locks.push(LockUse {
                        lock: part.to_string(),
                        access: LockAccess::Counting,
                    });
                }
                at += part.len() + 1;
            }
        }
    }
    locks.extend(lock_uses(cx, &mut r, &mut d.locks));
    let env = env(cx, &mut r, props);
    let decode_rc = decode_rc(cx, &mut r);
    r.finish(cx);

    let name = match (name, name_e) {
        (Some(nm), Some(e)) => {
            if let Some(first) = names.get(&nm) {
                cx.err(
                    Code::DuplicateName,
                    e.value_span,
                    format!("two steps of builder `{}` are named `{nm}`", d.item.name),
                )
                .label("second step with this name")
                .also(*first, "first named here")
                .help("step names must be unique within a builder; rename one")
                .emit();
            }
            names.insert(nm.clone(), e.value_span);
            nm
        }
        _ => {
            // Buildbot's rule: an unnamed step is called after its kind, with
            // a suffix when that name is already taken.
            let base = kind.name();
            let mut nm = base.to_string();
            let mut k = 2;
            while names.contains_key(&nm) || d.item.steps.iter().any(|s| s.name == nm) {
                nm = format!("{base}_{k}");
                k += 1;
            }
            names.insert(nm.clone(), n.name.span);
            nm
        }
    };
    Some(Step {
        name,
        description,
        kind,
        halt_on_failure,
        flunk_on_failure,
        warn_on_failure,
        warn_on_warnings,
        always_run,
        do_step_if,
        hide_step_if,
        timeout_ms,
        max_time_ms,
        sigterm_time_ms,
        env: env.vars,
        env_secrets: env.secrets,
        workdir,
        decode_rc,
        locks,
        hash: String::new(),
    })
}

pub(super) fn decode_rc(cx: &mut Cx, r: &mut NodeReader) -> BTreeMap<i32, BuildResult> {
    let mut out = BTreeMap::new();
    let Some(n) = r.kid(cx, "decode-rc") else {
        return out;
    };
    for e in &n.entries {
        let Some(k) = &e.name else {
            cx.err(
                Code::UnexpectedArgument,
                e.span,
                "decode-rc maps exit codes to results",
            )
            .label("expected CODE=RESULT")
            .help("write decode-rc \"0\"=\"success\" \"1\"=\"warnings\" \"2\"=\"failure\"")
            .emit();
            continue;
        };
        let Ok(code) = k.value.parse::<i32>() else {
            cx.err(
                Code::WrongType,
                k.span,
                format!("`{}` is not an exit code", k.value),
            )
            .label("not a number")
            .help("keys are exit codes written as strings: \"1\"=\"warnings\"")
            .emit();
            continue;
        };
        if let Some(res) = cx.choice(e, "result", &BuildResult::ALL) {
            out.insert(code, res);
        }
    }
    if n.entries.is_empty() {
        cx.err(
            Code::MissingValue,
            n.name.span,
            "decode-rc maps no exit code",
        )
        .label("empty")
        .help("write decode-rc \"0\"=\"success\" \"1\"=\"warnings\"")
        .emit();
    }
    if let Some(c) = &n.children {
        cx.err(
            Code::UnexpectedArgument,
            c.span,
            "decode-rc takes no children block",
        )
        .label("unexpected block")
        .help("write the map as properties: decode-rc \"1\"=\"warnings\"")
        .emit();
    }
    out
}
