//! Change sources (git pollers and webhooks).

use super::*;

pub(super) fn change_source(cx: &mut Cx, r: &mut NodeReader, name: String) -> Option<ChangeSource> {
    #[derive(Clone, Copy)]
    enum K {
        Poller,
        Github,
        Gitlab,
        Gitea,
        BitbucketCloud,
        BitbucketServer,
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
            ("bitbucket-cloud-webhook", K::BitbucketCloud),
            ("bitbucket-server-webhook", K::BitbucketServer),
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
                .add_child("repo \"https://…/project.git\"")
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
        K::Github | K::Gitlab | K::Gitea | K::BitbucketCloud | K::BitbucketServer | K::Json => {
            let secret = r.kid_with(cx, "secret", "secret (secret)\"hook-secret\"", |cx, e| {
                credential(cx, e, "the webhook secret")
            });
            match k {
                K::Github => ChangeSourceKind::GithubWebhook { secret },
                K::Gitlab => ChangeSourceKind::GitlabWebhook { secret },
                K::Gitea => ChangeSourceKind::GiteaWebhook { secret },
                K::BitbucketCloud => ChangeSourceKind::BitbucketCloudWebhook { secret },
                K::BitbucketServer => ChangeSourceKind::BitbucketServerWebhook { secret },
                _ => ChangeSourceKind::JsonWebhook { secret },
            }
        }
    };
    // The codebase the source's changes carry (a delivery naming its own
    // keeps it): what a scheduler's `codebase` children match.
    let codebase = r
        .kid_with(cx, "codebase", "codebase \"lib\"", codebase_name)
        .unwrap_or_default();
    Some(ChangeSource {
        name,
        kind,
        codebase,
        hash: String::new(),
    })
}
