//! Reporters and the build results they report.

use super::*;

pub(super) fn when_list(cx: &mut Cx, r: &mut NodeReader, default: &[When]) -> Vec<When> {
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

pub(super) fn reporter(
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
        BitbucketCloud,
        BitbucketServer,
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
            ("bitbucket-cloud-status", K::BitbucketCloud),
            ("bitbucket-server-status", K::BitbucketServer),
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
            .add_child(example)
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
            let blamelist = r.kid(cx, "blamelist").map(|n| blamelist(cx, n));
            // With a blamelist, `to` is optional: the authors may be all.
            if blamelist.is_none() {
                require(cx, r, "to", "to \"dev@example.org\"");
            }
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
                .unwrap_or_else(|| DEFAULT_MAIL_BODY.into());
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
                blamelist,
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
        K::Github | K::Gitlab | K::Gitea | K::BitbucketCloud | K::BitbucketServer => {
            // An app password goes with the account's user name (HTTP
            // Basic); an access token goes alone.
            let username = match k {
                K::BitbucketCloud | K::BitbucketServer => r.kid_string(cx, "username").map(|s| s.0),
                _ => None,
            };
            let token = r.kid_with(cx, "token", "token (secret)\"api-token\"", |cx, e| {
                credential(cx, e, "the API token")
            });
            require(cx, r, "token", "token (secret)\"api-token\"");
            let api_example = match k {
                K::BitbucketServer => "api-url \"https://bitbucket.example.org\"",
                _ => "api-url \"https://gitea.example.org/api/v1\"",
            };
            let api = r.kid_with(cx, "api-url", api_example, |cx, e| {
                http_url(cx, e, "API URL")
            });
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
                K::BitbucketCloud => ReporterKind::BitbucketCloudStatus {
                    token,
                    username,
                    api_url: api.unwrap_or_else(|| "https://api.bitbucket.org/2.0".into()),
                    context,
                },
                K::BitbucketServer => {
                    require(cx, r, "api-url", api_example);
                    ReporterKind::BitbucketServerStatus {
                        token,
                        username,
                        api_url: api.unwrap_or_default(),
                        context,
                    }
                }
                _ => {
                    require(cx, r, "api-url", api_example);
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

/// The body of a mail reporter without `body`: which build, revision and
/// changes, who is on the blamelist, which steps failed and the last lines
/// of the first one's log, with links (docs/language.md, `kind="mail"`).
pub const DEFAULT_MAIL_BODY: &str = "\
{{title}}{{#if title}}: {{/if}}{{builder}} #{{number}} {{result}}{{#if previous_result}} (previous: {{previous_result}}){{/if}}
{{url}}

Revision: {{#if got_revision}}{{got_revision}}{{else}}{{#if revision}}{{revision}}{{else}}latest{{/if}}{{/if}}{{#if branch}} on {{branch}}{{/if}}{{#if repository}} of {{repository}}{{/if}}
{{#if changes}}

Changes:
{{#each changes}}  {{revision}} {{author}}: {{title}}{{#if link}}
    {{link}}{{/if}}
{{/each}}{{/if}}{{#if blamelist}}
Blamelist: {{#each blamelist}}{{this}}{{#unless @last}}, {{/unless}}{{/each}}
{{/if}}{{#if failed_steps}}
Failed: {{#each failed_steps}}{{this}}{{#unless @last}}, {{/unless}}{{/each}}
{{/if}}{{#if log_tail}}
The last lines of {{log_tail.step}}'s log ({{log_tail.url}}):

{{log_tail.text}}
{{/if}}";

/// `blamelist { domain "acme.example"; address "IDENTITY" "ADDRESS" }`
/// (both optional: a bare `blamelist` mails the authors' own addresses).
fn blamelist(cx: &mut Cx, node: &Node) -> Blamelist {
    let mut r = NodeReader::new(node);
    let domain = r.kid_string(cx, "domain").and_then(|(d, span)| {
        let ok = !d.is_empty()
            && !d.starts_with('.')
            && !d.ends_with('.')
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            cx.err(
                Code::InvalidAddress,
                span,
                format!("`{d}` is not a mail domain"),
            )
            .label("letters, digits, `-` and `.` only")
            .help("for example: domain \"acme.example\"")
            .emit();
        }
        ok.then_some(d)
    });
    let mut addresses = BTreeMap::new();
    for n in r.kids("address") {
        let mut ar = NodeReader::new(n);
        let example = "address \"Ada <ada@home.example>\" \"ada@acme.example\"";
        let who = ar
            .req_arg(cx, 0, "a commit identity", example)
            .and_then(|e| cx.string(e));
        let to = ar
            .req_arg(cx, 1, "an address", example)
            .and_then(|e| cx.string(e).map(|s| (s, e.value_span)));
        ar.finish(cx);
        if let (Some(who), Some((to, span))) = (who, to) {
            if !plausible_address(&to) {
                cx.err(
                    Code::InvalidAddress,
                    span,
                    format!("`{to}` is not a mail address"),
                )
                .label("expected name@domain")
                .help(format!("for example: {example}"))
                .emit();
            } else {
                addresses.insert(who, to);
            }
        }
    }
    r.finish(cx);
    Blamelist { addresses, domain }
}

/// `local@domain` with no spaces or angle brackets: what a mapping must
/// give (the full check is the mail library's, at sending).
fn plausible_address(s: &str) -> bool {
    match s.split_once('@') {
        Some((l, d)) => {
            !l.is_empty()
                && !d.is_empty()
                && !d.contains('@')
                && !s.contains(|c: char| c.is_whitespace() || c == '<' || c == '>')
        }
        None => false,
    }
}
