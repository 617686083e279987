//! Checks of single values shared by the entity decoders: property names,
//! addresses, URLs, git repositories, globs, regexes, time zones, message
//! templates and credentials.

use super::*;

pub(super) fn valid_prop_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// A codebase name: letters, digits, `_` and `-` (it ends the property
/// name `got_revision.CODEBASE`).
pub(super) fn codebase_name(cx: &mut Cx, e: &Entry) -> Option<String> {
    let s = cx.string(e)?;
    if !s.is_empty()
        && s.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    {
        return Some(s);
    }
    cx.err(
        Code::InvalidChoice,
        e.value_span,
        format!("invalid codebase name \"{s}\""),
    )
    .label("not a codebase name")
    .help("a codebase name is letters, digits, `_` and `-`, e.g. \"app\" or \"lib-core\"")
    .emit();
    None
}

pub(super) fn socket_addr(cx: &mut Cx, e: &Entry, what: &str) -> Option<String> {
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

pub(super) fn host_port(cx: &mut Cx, e: &Entry, what: &str, example: &str) -> Option<String> {
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

pub(super) fn http_url(cx: &mut Cx, e: &Entry, what: &str) -> Option<String> {
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
pub(super) fn git_repo(cx: &mut Cx, e: &Entry) -> Option<String> {
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

pub(super) fn glob(cx: &mut Cx, s: &str, span: Span) -> bool {
    let verdict = cx.checked.get(CheckKind::Glob, s, |s| {
        globset::Glob::new(s)
            .err()
            .map(|err| err.kind().to_string())
    });
    match verdict {
        None => true,
        Some(kind) => {
            cx.err(
                Code::InvalidPattern,
                span,
                format!("invalid glob \"{s}\": {kind}"),
            )
            .label("not a glob")
            .help("globs use `*` (within a path segment), `**` (across segments), `?`, `[abc]` and `{a,b}`")
            .emit();
            false
        }
    }
}

pub(super) fn globs(cx: &mut Cx, items: Vec<(String, Span)>) -> Vec<String> {
    items
        .into_iter()
        .filter(|(s, sp)| glob(cx, s, *sp))
        .map(|(s, _)| s)
        .collect()
}

pub(super) fn regex(cx: &mut Cx, e: &Entry) -> Option<std::sync::Arc<str>> {
    let s = cx.shared_string(e)?;
    let verdict = cx
        .checked
        .get(CheckKind::Regex, &s, super::regex_check::verdict);
    match verdict {
        None => Some(s),
        Some(last) => {
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

pub(super) fn time_zone(cx: &mut Cx, e: &Entry) -> Option<String> {
    let s = cx.string(e)?;
    let verdict = cx.checked.get(CheckKind::TimeZone, &s, |s| {
        jiff::tz::TimeZone::get(s).err().map(|_| String::new())
    });
    if verdict.is_none() {
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

pub(super) fn handlebars_template(cx: &mut Cx, e: &Entry) -> Option<String> {
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

pub(super) fn plain_secret_lint(cx: &mut Cx, e: &Entry, what: &str) {
    cx.err(Code::PlainSecret, e.value_span, format!("{what} is written in the config as plain text"))
        .label("plain text")
        .help("store it as a secret and write (secret)\"NAME\"; the master reads it from its secrets directory or environment")
        .emit();
}

pub(super) fn credential(cx: &mut Cx, e: &Entry, what: &str) -> Option<Credential> {
    let (c, plain) = cx.credential(e)?;
    if plain {
        plain_secret_lint(cx, e, what);
    }
    Some(c)
}
