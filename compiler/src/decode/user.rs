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
            cx.record_values(e, Grant::ALL.iter().map(|(k, _)| *k));
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
    let token_entry = r.prop(cx, "token");
    let password_entry = r.prop(cx, "password");
    let token = token_entry.and_then(|e| credential(cx, e, "a user's API token"));
    let password = password_entry.and_then(|e| password(cx, e));
    let logins = super::oauth::user_logins(cx, r);
    // Presence, not validity: a malformed value is its own diagnostic.
    let (has_token, has_password) = (token_entry.is_some(), password_entry.is_some());
    if !has_token && !has_password && logins.is_empty() {
        cx.err(
            Code::MissingValue,
            r.node.name.span,
            format!(
                "user `{name}` has no way to log in: it needs `token=`, `password=` \
                 or a provider login (`github=`, `gitlab=`, `gitea=`)"
            ),
        )
        .label("token=, password= or a provider login missing")
        .help(format!(
            "for example: user \"{name}\" token=(secret)\"{name}-token\" roles=\"developer\" \
             (API clients), or password=(secret)\"{name}-password\" (the web login; \
             the secret holds what `bbc passwd` prints), or github=\"LOGIN\" with an \
             `oauth \"github\"` provider in `master`"
        ))
        .emit();
    }
    let roles: Vec<Named> = match r.prop(cx, "roles") {
        Some(e) => words(cx, e)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, span)| Named { name, span })
            .collect(),
        None => Vec::new(),
    };
    let mut names: Vec<String> = roles.iter().map(|n| n.name.clone()).collect();
    names.sort_unstable();
    names.dedup();
    UserDecl {
        item: User {
            name,
            // A user without a usable token or password is still
            // registered, so the mistake is reported once; it can never
            // log in.
            token,
            password,
            roles: names,
            logins: logins.iter().map(|(k, l, _)| (*k, l.clone())).collect(),
        },
        name_span,
        roles,
        logins,
    }
}

/// `password=`: a secret only. The secret holds an argon2id hash, but a
/// plain string here is refused outright (not a W0504 warning like a
/// plain token): it is either a hash that would then sit in every copy
/// of the config, or worse, the password itself.
fn password(cx: &mut Cx, e: &Entry) -> Option<Credential> {
    let (c, plain) = cx.credential(e)?;
    if plain {
        cx.err(
            Code::WrongType,
            e.value_span,
            "a user's password is written in the config as plain text",
        )
        .label("expected (secret)\"NAME\"")
        .help(
            "store what `bbc passwd` prints (an argon2id hash, not the password) as a secret \
             and write password=(secret)\"NAME\"",
        )
        .emit();
        return None;
    }
    Some(c)
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
