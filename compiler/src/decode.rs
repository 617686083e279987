//! Decoding: KDL document → checked AST ([`Model`]).
//!
//! Each entity is decoded into its graph type plus the spans that later
//! phases need (names, references, property uses). Decoding reports every
//! local mistake (unknown names, types, values) and keeps going: a broken
//! entity is still registered under its name, so a mistake inside a builder
//! does not also produce "unknown builder" errors wherever it is named.

use std::collections::{BTreeMap, HashMap};

use crate::diagnostic::{did_you_mean, Code};
use crate::graph::*;
use crate::interp::{Interp, PropRef};
use crate::reader::{Cx, NodeReader};
use crate::syntax::{Document, Entry, Node, Span};

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
}

const TOP_LEVEL: &[&str] = &[
    "master",
    "worker",
    "lock",
    "change-source",
    "scheduler",
    "builder",
    "reporter",
];

pub fn decode(cx: &mut Cx, doc: &Document) -> Model {
    let mut m = Model::default();
    let mut seen: HashMap<(&'static str, String), Span> = HashMap::new();
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
            "worker" | "lock" | "change-source" | "scheduler" | "builder" | "reporter" => {
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
        _ => {}
    }
    Some(())
}

/// Reads `kind="…"` and checks it against the variants.
fn kind_of<T: Copy>(
    cx: &mut Cx,
    r: &mut NodeReader,
    what: &str,
    options: &[(&str, T)],
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
    let mut spans: HashMap<String, Span> = HashMap::new();
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

pub fn valid_prop_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn socket_addr(cx: &mut Cx, e: &Entry, what: &str) -> Option<String> {
    let s = cx.string(e)?;
    match s.parse::<std::net::SocketAddr>() {
        Ok(_) => Some(s),
        Err(_) => {
            cx.err(
                Code::InvalidAddress,
                e.value_span,
                format!("\"{s}\" is not a socket address"),
            )
            .label(format!("invalid {what} address"))
            .help("write an IP address and a port, e.g. \"127.0.0.1:9989\" or \"[::]:9989\"")
            .emit();
            None
        }
    }
}

fn host_port(cx: &mut Cx, e: &Entry, what: &str, example: &str) -> Option<String> {
    let s = cx.string(e)?;
    let ok = s.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !h.contains(char::is_whitespace) && p.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if ok {
        Some(s)
    } else {
        cx.err(
            Code::InvalidAddress,
            e.value_span,
            format!("\"{s}\" is not a host:port"),
        )
        .label(format!("invalid {what}"))
        .help(format!(
            "write a host name or address and a port, e.g. \"{example}\""
        ))
        .emit();
        None
    }
}

fn http_url(cx: &mut Cx, e: &Entry, what: &str) -> Option<String> {
    let s = cx.string(e)?;
    match url::Url::parse(&s) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Some(s),
        Ok(u) => {
            cx.err(
                Code::InvalidAddress,
                e.value_span,
                format!("{what} must be an http or https URL, not `{}:`", u.scheme()),
            )
            .label("not http(s)")
            .help("write it as https://host/path")
            .emit();
            None
        }
        Err(err) => {
            cx.err(
                Code::InvalidAddress,
                e.value_span,
                format!("invalid {what} \"{s}\": {err}"),
            )
            .label("not a URL")
            .help("write a full URL, e.g. \"https://ci.example.org/\"")
            .emit();
            None
        }
    }
}

/// Git remotes: URLs with a scheme git knows, scp-like `user@host:path`, or paths.
fn git_repo(cx: &mut Cx, e: &Entry) -> Option<String> {
    let s = cx.string(e)?;
    let bad = |cx: &mut Cx, why: String| {
        cx.err(
            Code::InvalidAddress,
            e.value_span,
            format!("invalid repository \"{s}\": {why}"),
        )
        .label("not a git remote")
        .help("write a URL (https://…, ssh://…, git://…, file://…), user@host:path, or a path")
        .emit();
    };
    if s.trim().is_empty() {
        bad(cx, "it is empty".into());
        return None;
    }
    if s.contains("://") {
        match url::Url::parse(&s) {
            Ok(u) if ["http", "https", "ssh", "git", "file"].contains(&u.scheme()) => {}
            Ok(u) => {
                bad(cx, format!("git does not speak `{}:`", u.scheme()));
                return None;
            }
            Err(err) => {
                bad(cx, err.to_string());
                return None;
            }
        }
    }
    Some(s)
}

fn glob(cx: &mut Cx, s: &str, span: Span) -> bool {
    match globset::Glob::new(s) {
        Ok(_) => true,
        Err(err) => {
            cx.err(
                Code::InvalidPattern,
                span,
                format!("invalid glob \"{s}\": {}", err.kind()),
            )
            .label("not a glob")
            .help("globs use `*` (within a path segment), `**` (across segments), `?`, `[abc]` and `{a,b}`")
            .emit();
            false
        }
    }
}

fn globs(cx: &mut Cx, items: Vec<(String, Span)>) -> Vec<String> {
    items
        .into_iter()
        .filter(|(s, sp)| glob(cx, s, *sp))
        .map(|(s, _)| s)
        .collect()
}

fn regex(cx: &mut Cx, e: &Entry) -> Option<String> {
    let s = cx.string(e)?;
    match regex::Regex::new(&s) {
        Ok(_) => Some(s),
        Err(err) => {
            let msg = err.to_string();
            let last = msg.lines().last().unwrap_or("").trim().to_string();
            cx.err(
                Code::InvalidPattern,
                e.value_span,
                format!("invalid regular expression: {last}"),
            )
            .label("does not compile")
            .help("this is a Rust `regex` pattern; escape literal characters such as `(`, `[` and `.` with `\\`")
            .emit();
            None
        }
    }
}

fn time_zone(cx: &mut Cx, e: &Entry) -> Option<String> {
    let s = cx.string(e)?;
    if jiff::tz::TimeZone::get(&s).is_ok() {
        return Some(s);
    }
    cx.err(
        Code::InvalidTimeZone,
        e.value_span,
        format!("unknown time zone \"{s}\""),
    )
    .label("not an IANA time zone")
    .help("use a name from the IANA time zone database, e.g. \"UTC\", \"Europe/Prague\", \"America/New_York\"")
    .emit();
    None
}

fn handlebars_template(cx: &mut Cx, e: &Entry) -> Option<String> {
    let s = cx.string(e)?;
    let err = match handlebars::Template::compile(&s) {
        Ok(_) => return Some(s),
        Err(err) => err,
    };
    let mut reason = err.reason().to_string();
    // The parser's own message lists every token it could have accepted.
    if let Some(cut) = reason.find(": expected ") {
        reason.truncate(cut);
    }
    // Point at the place inside the template when the parser says where.
    let map = crate::interp::StrMap::new(cx.source, e.value_span, &s);
    let span = err
        .pos()
        .and_then(|(line, col)| {
            let start: usize = s
                .split_inclusive('\n')
                .take(line.saturating_sub(1))
                .map(str::len)
                .sum();
            let at = start + col.saturating_sub(1);
            let end = s[at.min(s.len())..]
                .chars()
                .next()
                .map_or(at, |c| at + c.len_utf8());
            (at <= s.len() && s.is_char_boundary(at.min(s.len())))
                .then(|| map.span(at.min(s.len()), end.min(s.len())))
        })
        .unwrap_or(e.value_span);
    cx.err(
        Code::InvalidTemplate,
        span,
        format!("invalid message template: {reason}"),
    )
    .label("the template breaks here")
    .help("templates use handlebars syntax: {{builder}}, {{#if failed}}…{{/if}}; every block opened with {{#…}} needs its {{/…}}")
    .emit();
    None
}

fn master(cx: &mut Cx, node: &Node) -> Master {
    let mut r = NodeReader::new(node);
    let mut m = Master::default();
    if let Some((t, _)) = r.kid_string(cx, "title") {
        m.title = t;
    }
    m.url = r.kid_with(cx, "url", "url \"https://ci.example.org/\"", |cx, e| {
        http_url(cx, e, "master URL")
    });
    if let Some(l) = r.kid(cx, "listen") {
        let mut lr = NodeReader::new(l);
        if let Some(e) = lr.prop(cx, "workers") {
            if let Some(a) = socket_addr(cx, e, "worker listen") {
                m.worker_listen = a;
            }
        }
        if let Some(e) = lr.prop(cx, "http") {
            if let Some(a) = socket_addr(cx, e, "HTTP listen") {
                m.http_listen = a;
            }
        }
        lr.finish(cx);
    }
    if let Some((s, sp)) = r.kid_string(cx, "state") {
        if s.trim().is_empty() {
            cx.err(Code::MissingValue, sp, "empty state directory")
                .label("empty path")
                .help("name a directory, e.g. state \"state\"")
                .emit();
        } else {
            m.state_dir = s;
        }
    }
    m.properties = properties(cx, &mut r);
    r.finish(cx);
    m
}

fn plain_secret_lint(cx: &mut Cx, e: &Entry, what: &str) {
    cx.err(Code::PlainSecret, e.value_span, format!("{what} is written in the config as plain text"))
        .label("plain text")
        .help("store it as a secret and write (secret)\"NAME\"; the master reads it from its secrets directory or environment")
        .emit();
}

fn credential(cx: &mut Cx, e: &Entry, what: &str) -> Option<Credential> {
    let (c, plain) = cx.credential(e)?;
    if plain {
        plain_secret_lint(cx, e, what);
    }
    Some(c)
}

fn worker(cx: &mut Cx, r: &mut NodeReader, name: String) -> Worker {
    let password = match r.prop(cx, "password") {
        Some(e) => credential(cx, e, "the worker password"),
        None => {
            cx.err(
                Code::MissingValue,
                r.node.name.span,
                format!("worker `{name}` needs a password"),
            )
            .label("no password= property")
            .help(format!(
                "add password=(secret)\"{name}\" and put the password in the master's secrets"
            ))
            .emit();
            None
        }
    };
    let max_builds = r
        .prop(cx, "max-builds")
        .and_then(|e| cx.int_in(e, 1, 10_000, "max-builds"))
        .unwrap_or(1) as u32;
    let keepalive_ms = r
        .prop(cx, "keepalive")
        .and_then(|e| cx.duration_ms(e))
        .unwrap_or(60_000);
    let missing_timeout_ms = r
        .prop(cx, "missing-timeout")
        .and_then(|e| cx.duration_ms(e))
        .unwrap_or(3_600_000);
    let properties = properties(cx, r);
    let mut downtime = Vec::new();
    for n in r.kids("downtime") {
        let mut dr = NodeReader::new(n);
        let spec = dr.req_arg(cx, 0, "a window", "downtime \"Sat 02:00-06:00\" tz=\"UTC\"");
        let tz = match dr.prop(cx, "tz") {
            Some(e) => time_zone(cx, e),
            None => Some("UTC".to_string()),
        };
        dr.finish(cx);
        if let (Some(e), Some(tz)) = (spec, tz) {
            if let Some(s) = cx.string(e) {
                match parse_downtime(&s) {
                    Ok((days, start_minute, end_minute)) => downtime.push(Downtime {
                        days,
                        start_minute,
                        end_minute,
                        tz,
                    }),
                    Err(why) => cx
                        .err(Code::InvalidDowntime, e.value_span, format!("invalid downtime \"{s}\": {why}"))
                        .label("not a downtime window")
                        .help("write days and a time range: \"Sat 02:00-06:00\", \"Mon-Fri 22:00-06:00\" (crosses midnight), \"Sat,Sun 00:00-24:00\", \"daily 01:00-02:00\"")
                        .emit(),
                }
            }
        }
    }
    Worker {
        name,
        password: password.unwrap_or(Credential::Secret {
            secret: String::new(),
        }),
        max_builds,
        properties,
        keepalive_ms,
        missing_timeout_ms,
        downtime,
        hash: String::new(),
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// "Sat 02:00-06:00", "Mon-Fri 22:00-06:00", "Sat,Sun …", "daily …".
pub fn parse_downtime(s: &str) -> Result<(Vec<u8>, u16, u16), String> {
    let mut parts = s.split_whitespace();
    let (Some(days), Some(range), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected days, a space, then HH:MM-HH:MM".into());
    };
    let day = |d: &str| -> Result<u8, String> {
        let l = d.to_ascii_lowercase();
        DAYS.iter()
            .position(|x| {
                l.len() >= 3
                    && x.starts_with(&l[..3])
                    && (l.len() == 3
                        || [
                            "monday",
                            "tuesday",
                            "wednesday",
                            "thursday",
                            "friday",
                            "saturday",
                            "sunday",
                        ]
                        .contains(&l.as_str()))
            })
            .map(|i| i as u8)
            .ok_or_else(|| format!("`{d}` is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
    };
    let mut out = Vec::new();
    if days.eq_ignore_ascii_case("daily") || days == "*" {
        out.extend(0..7);
    } else {
        for part in days.split(',') {
            if let Some((a, b)) = part.split_once('-') {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    out.push(d);
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            } else {
                out.push(day(part)?);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    let (a, b) = range
        .split_once('-')
        .ok_or_else(|| "the time range needs a `-`, as in 02:00-06:00".to_string())?;
    let hm = |t: &str, end: bool| -> Result<u16, String> {
        let (h, m) = t
            .split_once(':')
            .ok_or_else(|| format!("`{t}` is not HH:MM"))?;
        let h: u16 = h.parse().map_err(|_| format!("`{t}` is not HH:MM"))?;
        let m: u16 = m.parse().map_err(|_| format!("`{t}` is not HH:MM"))?;
        if m > 59 || h > 24 || (h == 24 && (m != 0 || !end)) {
            return Err(format!("`{t}` is not a time of day"));
        }
        Ok(h * 60 + m)
    };
    let start = hm(a, false)?;
    let end = hm(b, true)?;
    if start == end {
        return Err("the window is empty (start equals end)".into());
    }
    Ok((out, start, end % (24 * 60)))
}

fn lock(cx: &mut Cx, r: &mut NodeReader, name: String) -> Lock {
    let scope = kind_of(
        cx,
        r,
        "lock",
        &[("master", LockScope::Master), ("worker", LockScope::Worker)],
    )
    .unwrap_or(LockScope::Master);
    let max_count = r
        .prop(cx, "max-count")
        .and_then(|e| cx.int_in(e, 1, 1_000_000, "max-count"))
        .unwrap_or(1) as u32;
    Lock {
        name,
        scope,
        max_count,
        hash: String::new(),
    }
}

fn change_source(cx: &mut Cx, r: &mut NodeReader, name: String) -> Option<ChangeSource> {
    #[derive(Clone, Copy)]
    enum K {
        Poller,
        Github,
        Gitlab,
        Gitea,
        Json,
    }
    let k = kind_of(
        cx,
        r,
        "change source",
        &[
            ("git-poller", K::Poller),
            ("github-webhook", K::Github),
            ("gitlab-webhook", K::Gitlab),
            ("gitea-webhook", K::Gitea),
            ("json-webhook", K::Json),
        ],
    )?;
    let kind = match k {
        K::Poller => {
            let repo = r.kid_with(
                cx,
                "repo",
                "repo \"https://example.org/repo.git\"",
                git_repo,
            );
            if repo.is_none()
                && r.node
                    .children
                    .as_ref()
                    .is_none_or(|c| !c.nodes.iter().any(|n| n.name.value == "repo"))
            {
                cx.err(
                    Code::MissingValue,
                    r.node.name.span,
                    "a git poller needs a `repo`",
                )
                .label("no repo")
                .help("add `repo \"https://…/project.git\"` inside the block")
                .emit();
            }
            let branches_w = r.kid_strings(cx, "branches");
            let only_tags_node = r.kid(cx, "only-tags");
            let only_tags = only_tags_node
                .map(|n| {
                    let mut nr = NodeReader::new(n);
                    let v = nr
                        .req_arg(cx, 0, "#true or #false", "only-tags #true")
                        .and_then(|e| cx.boolean(e));
                    nr.finish(cx);
                    v.unwrap_or(false)
                })
                .unwrap_or(false);
            if only_tags && !branches_w.is_empty() {
                if let Some(n) = only_tags_node {
                    cx.err(Code::Conflict, n.span, "`only-tags` cannot be combined with `branches`")
                        .label("polls tags only")
                        .also(branches_w[0].1, "branches given here")
                        .help("a poller watches either branches or tags: remove one, or use two change sources")
                        .emit();
                }
            }
            let branches = globs(cx, branches_w);
            let poll_interval_ms = r
                .kid_with(cx, "poll-interval", "poll-interval \"5m\"", |cx, e| {
                    cx.duration_ms(e)
                })
                .unwrap_or(600_000);
            ChangeSourceKind::GitPoller {
                repo: repo.unwrap_or_default(),
                branches,
                poll_interval_ms,
                only_tags,
            }
        }
        K::Github | K::Gitlab | K::Gitea | K::Json => {
            let secret = r.kid_with(cx, "secret", "secret (secret)\"hook-secret\"", |cx, e| {
                credential(cx, e, "the webhook secret")
            });
            match k {
                K::Github => ChangeSourceKind::GithubWebhook { secret },
                K::Gitlab => ChangeSourceKind::GitlabWebhook { secret },
                K::Gitea => ChangeSourceKind::GiteaWebhook { secret },
                _ => ChangeSourceKind::JsonWebhook { secret },
            }
        }
    };
    Some(ChangeSource {
        name,
        kind,
        hash: String::new(),
    })
}

fn selector(cx: &mut Cx, r: &mut NodeReader) -> Selector {
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

fn filter(cx: &mut Cx, r: &mut NodeReader) -> (ChangeFilter, Vec<Named>) {
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

fn scheduler(
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
        .emit();
    }
    let mut upstream = None;
    let mut sources = Vec::new();
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
                .emit();
            }
            SchedulerKind::Periodic {
                interval_ms: interval.unwrap_or(3_600_000),
                branch: r.kid_string(cx, "branch").map(|b| b.0),
            }
        }
        K::Nightly => {
            let cron = r.kid_with(cx, "cron", "cron \"0 3 * * *\"", |cx, e| {
                let s = cx.string(e)?;
                match s.parse::<croner::Cron>() {
                    Ok(_) => Some(s),
                    Err(err) => {
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
    Some(SchedulerDecl {
        item: Scheduler {
            name,
            builders: vec![],
            kind,
            hash: String::new(),
        },
        name_span,
        selector,
        upstream,
        sources,
    })
}

fn has_kid(n: &Node, name: &str) -> bool {
    n.children
        .as_ref()
        .is_some_and(|c| c.nodes.iter().any(|k| k.name.value == name))
}

fn force_params(cx: &mut Cx, r: &mut NodeReader) -> Vec<ForceParam> {
    let mut out: Vec<ForceParam> = Vec::new();
    let mut spans: HashMap<String, Span> = HashMap::new();
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

fn lock_uses(cx: &mut Cx, r: &mut NodeReader, refs: &mut Vec<Named>) -> Vec<LockUse> {
    let mut out = Vec::new();
    for n in r.kids("lock") {
        let mut lr = NodeReader::new(n);
        let name = lr
            .req_arg(cx, 0, "a lock name", "lock \"db\" access=\"exclusive\"")
            .and_then(|e| cx.string(e).map(|s| (s, e.value_span)));
        let access = lr
            .prop(cx, "access")
            .and_then(|e| {
                cx.choice(
                    e,
                    "lock access",
                    &[
                        ("counting", LockAccess::Counting),
                        ("exclusive", LockAccess::Exclusive),
                    ],
                )
            })
            .unwrap_or(LockAccess::Counting);
        lr.finish(cx);
        if let Some((name, span)) = name {
            refs.push(Named {
                name: name.clone(),
                span,
            });
            out.push(LockUse { lock: name, access });
        }
    }
    out
}

fn env(cx: &mut Cx, r: &mut NodeReader, ip: &mut Vec<PropRef>) -> BTreeMap<String, Text> {
    let mut out = BTreeMap::new();
    let Some(n) = r.kid(cx, "env") else {
        return out;
    };
    let mut er = NodeReader::new(n);
    for var in er.all_kids() {
        let mut vr = NodeReader::new(var);
        let val = vr.req_arg(cx, 0, "a value", "env { CC \"clang\" }");
        let name = &var.name.value;
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            cx.err(
                Code::InvalidChoice,
                var.name.span,
                "invalid environment variable name",
            )
            .label("not a variable name")
            .help("a variable name cannot be empty or contain `=`")
            .emit();
        } else if let Some(e) = val {
            if let Some(s) = cx.string(e) {
                let t = interp(cx, ip, &s, e.value_span);
                if out.insert(name.clone(), t).is_some() {
                    cx.err(
                        Code::DuplicateSetting,
                        var.name.span,
                        format!("`{name}` is set twice"),
                    )
                    .label("set again here")
                    .help("remove one of them")
                    .emit();
                }
            }
        }
        vr.finish(cx);
    }
    er.finish(cx);
    out
}

fn interp(cx: &mut Cx, props: &mut Vec<PropRef>, s: &str, span: Span) -> Text {
    let mut i = Interp {
        file: cx.file,
        source: cx.source,
        diags: &mut cx.diags,
        props,
    };
    i.text(s, span)
}

fn builder(cx: &mut Cx, r: &mut NodeReader, name: String, name_span: Span) -> BuilderDecl {
    let mut d = BuilderDecl {
        item: Builder {
            name: name.clone(),
            description: None,
            workers: vec![],
            tags: vec![],
            env: BTreeMap::new(),
            properties: BTreeMap::new(),
            workdir: name.clone(),
            collapse_requests: false,
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
        .emit();
    }
    d.item.workers = d.workers.iter().map(|w| w.name.clone()).collect();
    let mut tags: Vec<String> = r.kid_strings(cx, "tags").into_iter().map(|t| t.0).collect();
    tags.sort();
    tags.dedup();
    d.item.tags = tags;
    d.item.description = r.kid_string(cx, "description").map(|s| s.0);
    let mut builder_props = Vec::new();
    d.item.env = env(cx, r, &mut builder_props);
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
            "collapse-requests #true",
            |cx, e| cx.boolean(e),
        )
        .unwrap_or(false);
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
            let mut names: HashMap<String, Span> = HashMap::new();
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
            .emit();
        }
    }
    d
}

const STEP_KINDS: &[&str] = &[
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

fn command(
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

fn step(
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
        |cx: &mut Cx, r: &mut NodeReader, default: Option<&str>| -> Option<String> {
            match r.prop(cx, "warning-pattern") {
                Some(e) => regex(cx, e),
                None => default.map(str::to_string),
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
            StepKind::Git {
                repo,
                branch,
                mode,
                method,
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
        let mut i = Interp {
            file: cx.file,
            source: cx.source,
            diags: &mut cx.diags,
            props,
        };
        i.condition(e)
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
        env,
        workdir,
        decode_rc,
        locks,
        hash: String::new(),
    })
}

fn decode_rc(cx: &mut Cx, r: &mut NodeReader) -> BTreeMap<i32, BuildResult> {
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

fn when_list(cx: &mut Cx, r: &mut NodeReader, default: &[When]) -> Vec<When> {
    let mut out = Vec::new();
    for n in r.kids("when") {
        let mut wr = NodeReader::new(n);
        for e in wr.rest_args(0) {
            if let Some(w) = cx.choice(e, "`when` value", &When::ALL) {
                if !out.contains(&w) {
                    out.push(w);
                }
            }
        }
        wr.finish(cx);
    }
    if out.is_empty() {
        out.extend_from_slice(default);
    }
    out
}

fn reporter(
    cx: &mut Cx,
    r: &mut NodeReader,
    name: String,
    name_span: Span,
) -> Option<ReporterDecl> {
    #[derive(Clone, Copy)]
    enum K {
        Mail,
        Http,
        Github,
        Gitlab,
        Gitea,
        Irc,
    }
    let k = kind_of(
        cx,
        r,
        "reporter",
        &[
            ("mail", K::Mail),
            ("http", K::Http),
            ("github-status", K::Github),
            ("gitlab-status", K::Gitlab),
            ("gitea-status", K::Gitea),
            ("irc", K::Irc),
        ],
    );
    let selector = selector(cx, r);
    let k = k?;
    let require = |cx: &mut Cx, r: &NodeReader, what: &str, example: &str| {
        if !has_kid(r.node, what) {
            cx.err(
                Code::MissingValue,
                r.node.name.span,
                format!("this reporter needs `{what}`"),
            )
            .label(format!("no `{what}`"))
            .help(format!("add `{example}` inside the block"))
            .emit();
        }
    };
    let kind = match k {
        K::Mail => {
            let smtp = r.kid_with(cx, "smtp", "smtp \"127.0.0.1:25\"", |cx, e| {
                host_port(cx, e, "SMTP server", "smtp.example.org:587")
            });
            require(cx, r, "smtp", "smtp \"smtp.example.org:587\"");
            let from = r.kid_string(cx, "from").map(|s| s.0);
            require(cx, r, "from", "from \"ci@example.org\"");
            let to: Vec<String> = r.kid_strings(cx, "to").into_iter().map(|s| s.0).collect();
            require(cx, r, "to", "to \"dev@example.org\"");
            let when = when_list(cx, r, &[When::Failing]);
            let subject = r
                .kid_with(
                    cx,
                    "subject",
                    "subject \"{{builder}}: {{result}}\"",
                    handlebars_template,
                )
                .unwrap_or_else(|| "{{builder}}: {{result}} on {{branch}}".into());
            let body = r
                .kid_with(cx, "body", "body \"…\"", handlebars_template)
                .unwrap_or_else(|| {
                    "Build {{number}} of {{builder}} finished: {{result}}.\n{{url}}\n".into()
                });
            let username = r.kid_string(cx, "username").map(|s| s.0);
            let password = r.kid_with(cx, "password", "password (secret)\"smtp\"", |cx, e| {
                credential(cx, e, "the SMTP password")
            });
            ReporterKind::Mail {
                smtp: smtp.unwrap_or_default(),
                from: from.unwrap_or_default(),
                to,
                when,
                subject,
                body,
                username,
                password,
            }
        }
        K::Http => {
            let url = r.kid_with(
                cx,
                "url",
                "url \"https://hooks.example.org/ci\"",
                |cx, e| http_url(cx, e, "push URL"),
            );
            require(cx, r, "url", "url \"https://hooks.example.org/ci\"");
            let template = r.kid_with(
                cx,
                "template",
                "template \"{\\\"text\\\": \\\"{{builder}}\\\"}\"",
                handlebars_template,
            );
            let when = when_list(cx, r, &[When::All]);
            ReporterKind::HttpPush {
                url: url.unwrap_or_default(),
                template,
                when,
            }
        }
        K::Github | K::Gitlab | K::Gitea => {
            let token = r.kid_with(cx, "token", "token (secret)\"api-token\"", |cx, e| {
                credential(cx, e, "the API token")
            });
            require(cx, r, "token", "token (secret)\"api-token\"");
            let api = r.kid_with(
                cx,
                "api-url",
                "api-url \"https://gitea.example.org/api/v1\"",
                |cx, e| http_url(cx, e, "API URL"),
            );
            let context = r
                .kid_string(cx, "context")
                .map(|s| s.0)
                .unwrap_or_else(|| "bbc/{{builder}}".into());
            let token = token.unwrap_or(Credential::Secret {
                secret: String::new(),
            });
            match k {
                K::Github => ReporterKind::GithubStatus {
                    token,
                    api_url: api.unwrap_or_else(|| "https://api.github.com".into()),
                    context,
                },
                K::Gitlab => ReporterKind::GitlabStatus {
                    token,
                    api_url: api.unwrap_or_else(|| "https://gitlab.com/api/v4".into()),
                    context,
                },
                _ => {
                    require(
                        cx,
                        r,
                        "api-url",
                        "api-url \"https://gitea.example.org/api/v1\"",
                    );
                    ReporterKind::GiteaStatus {
                        token,
                        api_url: api.unwrap_or_default(),
                        context,
                    }
                }
            }
        }
        K::Irc => {
            let server = r.kid_with(cx, "server", "server \"irc.libera.chat:6697\"", |cx, e| {
                host_port(cx, e, "IRC server", "irc.libera.chat:6697")
            });
            require(cx, r, "server", "server \"irc.libera.chat:6697\"");
            let nick = r
                .kid_string(cx, "nick")
                .map(|s| s.0)
                .unwrap_or_else(|| "bbc".into());
            let channels: Vec<String> = r
                .kid_strings(cx, "channel")
                .into_iter()
                .map(|s| s.0)
                .collect();
            require(cx, r, "channel", "channel \"#project\"");
            let when = when_list(cx, r, &[When::Failing, When::Change]);
            let password = r.kid_with(cx, "password", "password (secret)\"irc\"", |cx, e| {
                credential(cx, e, "the IRC password")
            });
            let tls = r
                .kid_with(cx, "tls", "tls #true", |cx, e| cx.boolean(e))
                .unwrap_or(true);
            ReporterKind::Irc {
                server: server.unwrap_or_default(),
                nick,
                channels,
                when,
                password,
                tls,
            }
        }
    };
    Some(ReporterDecl {
        item: Reporter {
            name,
            builders: vec![],
            kind,
            hash: String::new(),
        },
        name_span,
        selector,
    })
}
