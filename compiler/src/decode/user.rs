//! Users and roles: who may do what through the API (`user`, `role`).

use super::*;

#[derive(Debug, Clone)]
pub struct UserDecl {
    pub item: User,
    pub name_span: Span,
    /// The roles it names, checked once every role is known.
    pub roles: Vec<Named>,
    /// Its logins at OAuth providers, checked once the master is known.
    pub logins: Vec<(OAuthKind, String, Span)>,
}

/// The words of a space-separated list, each with the span of the whole
/// value (the diagnostics point at the property that holds it); `None`
/// when the value is not a string (reported once, here).
fn words(cx: &mut Cx, e: &Entry) -> Option<Vec<(String, Span)>> {
    cx.string(e).map(|s| {
        s.split_whitespace()
            .map(|w| (w.to_string(), e.value_span))
            .collect()
    })
}

pub(super) fn role(cx: &mut Cx, r: &mut NodeReader, name: String) -> Role {
    let example = "role \"developer\" grant=\"view force cancel\"";
    let mut grants = Vec::new();
    match r.prop(cx, "grant") {
        Some(e) => {
            let ws = words(cx, e);
            if ws.as_ref().is_some_and(Vec::is_empty) {
                cx.err(
                    Code::MissingValue,
                    e.value_span,
                    "a role that grants nothing",
                )
                .label("no grants")
                .help(format!("list what it may do, for example: {example}"))
                .emit();
            }
            for (w, span) in ws.unwrap_or_default() {
                match Grant::ALL.iter().find(|(k, _)| *k == w) {
                    Some((_, g)) => grants.push(*g),
                    None => cx
                        .err(Code::InvalidChoice, span, format!("unknown grant `{w}`"))
                        .label("not a grant")
                        .help_opt(did_you_mean(
                            &w,
                            Grant::ALL.iter().map(|(k, _)| *k),
                            "the grants are",
                        ))
                        .emit(),
                }
            }
        }
        None => cx
            .err(
                Code::MissingValue,
                r.node.name.span,
                format!("role `{name}` needs `grant=`"),
            )
            .label("grant= missing")
            .help(format!("for example: {example}"))
            .emit(),
    }
    grants.sort_unstable();
    grants.dedup();
    let builders = match r.prop(cx, "builders") {
        Some(e) => {
            let ws = words(cx, e).unwrap_or_default();
            globs(cx, ws)
        }
        None => Vec::new(),
    };
    Role {
        name,
        grants,
        builders,
    }
}

pub(super) fn user(cx: &mut Cx, r: &mut NodeReader, name: String, name_span: Span) -> UserDecl {
    let token = match r.prop(cx, "token") {
        Some(e) => credential(cx, e, "a user's API token"),
        None => {
            cx.err(
                Code::MissingValue,
                r.node.name.span,
                format!("user `{name}` needs `token=`"),
            )
            .label("token= missing")
            .help(format!(
                "for example: user \"{name}\" token=(secret)\"{name}-token\" roles=\"developer\""
            ))
            .emit();
            None
        }
    };
    let roles: Vec<Named> = match r.prop(cx, "roles") {
        Some(e) => words(cx, e)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, span)| Named { name, span })
            .collect(),
        None => Vec::new(),
    };
    let logins = super::oauth::user_logins(cx, r);
    let mut names: Vec<String> = roles.iter().map(|n| n.name.clone()).collect();
    names.sort_unstable();
    names.dedup();
    UserDecl {
        item: User {
            name,
            // A user without a usable token is still registered, so the
            // mistake is reported once; it can never log in.
            token: token.unwrap_or(Credential::Secret {
                secret: String::new(),
            }),
            roles: names,
            logins: logins.iter().map(|(k, l, _)| (*k, l.clone())).collect(),
        },
        name_span,
        roles,
        logins,
    }
}

/// E0201 for every role a user names that no `role` defines.
pub(super) fn check_roles(cx: &mut Cx, m: &Model) {
    let known: Vec<&str> = m.roles.iter().map(|d| d.item.name.as_str()).collect();
    for u in &m.users {
        for r in &u.roles {
            if known.contains(&r.name.as_str()) {
                continue;
            }
            let help = if known.is_empty() {
                Some("define it with `role \"NAME\" grant=\"view\"`".to_string())
            } else {
                did_you_mean(&r.name, known.iter().copied(), "the roles are")
            };
            cx.err(
                Code::UnknownReference,
                r.span,
                format!("unknown role `{}`", r.name),
            )
            .label("no role has this name")
            .help_opt(help)
            .emit();
        }
    }
}
