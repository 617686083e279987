//! OAuth2 login: `oauth "KIND" …` in `master`, and the provider logins
//! users map (`user "alice" github="alice-gh"`), checked against each other.

use super::*;

const EXAMPLE: &str =
    "oauth \"github\" client-id=\"Iv1.0123abcd\" client-secret=(secret)\"github-oauth-secret\"";

/// Every `oauth` child of `master`; one per kind (a second is E0114).
pub(super) fn providers(cx: &mut Cx, r: &mut NodeReader) -> Vec<OAuthProvider> {
    let mut out: Vec<OAuthProvider> = Vec::new();
    let mut seen: Vec<(OAuthKind, Span)> = Vec::new();
    for n in r.kids("oauth") {
        let mut pr = NodeReader::new(n);
        let kind = pr.req_arg(cx, 0, "a provider kind", EXAMPLE).and_then(|e| {
            cx.choice(e, "OAuth provider kind", &OAuthKind::ALL)
                .map(|k| (k, e.value_span))
        });
        let p = provider(cx, &mut pr, kind.map(|k| k.0));
        pr.finish(cx);
        let (Some((kind, span)), Some(p)) = (kind, p) else {
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == kind) {
            cx.err(
                Code::DuplicateSetting,
                span,
                format!("`oauth \"{}\"` is given twice", kind.as_str()),
            )
            .label("second definition")
            .also(*first, "first defined here")
            .help("a master logs in through one application per provider; keep one")
            .emit();
            continue;
        }
        seen.push((kind, span));
        out.push(p);
    }
    out.sort_by_key(|p| p.kind);
    out
}

fn provider(cx: &mut Cx, r: &mut NodeReader, kind: Option<OAuthKind>) -> Option<OAuthProvider> {
    let node_span = r.node.name.span;
    let missing = |cx: &mut Cx, name: &str, what: &str| {
        cx.err(
            Code::MissingValue,
            node_span,
            format!("`oauth` needs `{name}=`, {what}"),
        )
        .label(format!("{name}= missing"))
        .help(format!("for example: {EXAMPLE}"))
        .emit();
    };
    let client_id = match r.prop(cx, "client-id") {
        Some(e) => match cx.string(e) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                cx.err(Code::MissingValue, e.value_span, "empty client id")
                    .label("empty")
                    .help("copy the application's client id from the provider's settings")
                    .emit();
                None
            }
            None => None,
        },
        None => {
            missing(cx, "client-id", "the id the provider gave the application");
            None
        }
    };
    let client_secret = match r.prop(cx, "client-secret") {
        Some(e) => match cx.credential(e) {
            // A plain secret would enter the graph, `bbc compile`'s output
            // and the config the API serves: refused, not merely warned of.
            Some((Credential::Plain(_), _)) => {
                cx.err(
                    Code::WrongType,
                    e.value_span,
                    "an OAuth client secret must be a secret reference, not plain text",
                )
                .label("plain text")
                .help("store it as a secret and write client-secret=(secret)\"NAME\"")
                .emit();
                None
            }
            Some((c, _)) => Some(c),
            None => None,
        },
        None => {
            missing(
                cx,
                "client-secret",
                "a reference to the application's secret",
            );
            None
        }
    };
    // Both read before either may end this: an unread property would be
    // reported as unknown.
    let url = r
        .prop(cx, "url")
        .map(|e| http_url(cx, e, "OAuth provider URL"));
    let api_url = r
        .prop(cx, "api-url")
        .and_then(|e| http_url(cx, e, "OAuth API URL"));
    let url = match url {
        Some(u) => Some(u?),
        None => None,
    };
    let kind = kind?;
    let url = url.map(|u| u.trim_end_matches('/').to_string());
    let web = match (&url, kind) {
        (Some(u), _) => u.clone(),
        (None, OAuthKind::Github) => "https://github.com".into(),
        (None, OAuthKind::Gitlab) => "https://gitlab.com".into(),
        (None, OAuthKind::Gitea) => {
            cx.err(
                Code::MissingValue,
                node_span,
                "`oauth \"gitea\"` needs `url=`, the Gitea server's address",
            )
            .label("url= missing")
            .help("Gitea has no public default: write url=\"https://gitea.example.org\"")
            .emit();
            return None;
        }
    };
    let api = match (api_url, kind, &url) {
        (Some(a), _, _) => a.trim_end_matches('/').to_string(),
        (None, OAuthKind::Github, None) => "https://api.github.com".into(),
        // GitHub Enterprise Server serves its REST API under /api/v3.
        (None, OAuthKind::Github, Some(u)) => format!("{u}/api/v3"),
        (None, OAuthKind::Gitlab, _) => format!("{web}/api/v4"),
        (None, OAuthKind::Gitea, _) => format!("{web}/api/v1"),
    };
    Some(OAuthProvider {
        kind,
        client_id: client_id?,
        client_secret: client_secret?,
        url: web,
        api_url: api,
    })
}

/// `github="…"`, `gitlab="…"`, `gitea="…"` on a `user`.
pub(super) fn user_logins(cx: &mut Cx, r: &mut NodeReader) -> Vec<(OAuthKind, String, Span)> {
    let mut out = Vec::new();
    for (name, kind) in OAuthKind::ALL {
        let Some(e) = r.prop(cx, name) else { continue };
        let Some(s) = cx.string(e) else { continue };
        if s.trim().is_empty() || s.trim() != s {
            cx.err(
                Code::MissingValue,
                e.value_span,
                format!("empty or padded {} login", kind.label()),
            )
            .label("not a login")
            .help(format!("write the account's login, e.g. {name}=\"alice\""))
            .emit();
            continue;
        }
        out.push((kind, s, e.value_span));
    }
    out
}

/// Every login names a configured provider (E0201), and no login is
/// claimed by two users (E0111): a browser would not know whom it is.
pub(super) fn check_logins(cx: &mut Cx, m: &Model) {
    let configured: Vec<OAuthKind> = m.master.access.oauth.iter().map(|p| p.kind).collect();
    let mut claimed: Vec<(OAuthKind, String, &str, Span)> = Vec::new();
    for u in &m.users {
        for (kind, login, span) in &u.logins {
            if !configured.contains(kind) {
                cx.err(
                    Code::UnknownReference,
                    *span,
                    format!(
                        "user `{}` has a {} login, but the master has no `oauth \"{}\"`",
                        u.item.name,
                        kind.label(),
                        kind.as_str()
                    ),
                )
                .label("no such provider configured")
                .help(format!(
                    "add `oauth \"{}\" client-id=\"…\" client-secret=(secret)\"…\"` to `master`, or remove this login",
                    kind.as_str()
                ))
                .emit();
                continue;
            }
            // GitHub logins are one account whatever their case.
            let key = match kind {
                OAuthKind::Github => login.to_ascii_lowercase(),
                OAuthKind::Gitlab | OAuthKind::Gitea => login.clone(),
            };
            if let Some((_, _, other, first)) =
                claimed.iter().find(|(k, l, _, _)| k == kind && *l == key)
            {
                cx.err(
                    Code::Conflict,
                    *span,
                    format!(
                        "the {} login `{login}` is given to both `{other}` and `{}`",
                        kind.label(),
                        u.item.name
                    ),
                )
                .label("claimed again here")
                .also(*first, "first claimed here")
                .help("one provider account logs in as one user; remove one of them")
                .emit();
                continue;
            }
            claimed.push((*kind, key, &u.item.name, *span));
        }
    }
}
