//! Commit statuses on GitHub, GitLab, Gitea and Bitbucket (Cloud and
//! Server / Data Center): pending when a build
//! starts, the final state when it ends, on the build's revision
//! (`got_revision` when a git step set it, else the source stamp's).
//!
//! The repository (owner/repo, or a GitLab project path) comes from the
//! build's repository URL, https or scp-like (`git@host:owner/repo.git`).
//! A build without a revision, or whose repository lives on another host
//! than the API, is skipped with a debug log.

use std::sync::Arc;

use bbc_graph::{BuildResult, Graph, Reporter, Scalar};
use serde_json::json;

use super::delivery::{deliver, post};
use super::message::{self, Templates, CONTEXT};
use crate::state::events::{BuildEvent, Phase};
use crate::state::Shared;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    Github,
    Gitlab,
    Gitea,
    BitbucketCloud,
    BitbucketServer,
}

/// A repository on a forge: its host (lower case, no port) and its path
/// without `.git` ("owner/repo", or "group/sub/project" on GitLab).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub host: String,
    pub path: String,
}

/// Parses `https://host[:port]/owner/repo[.git]`, `ssh://[user@]host[:port]/owner/repo`,
/// `git://…` and the scp-like `[user@]host:owner/repo[.git]`. None for local
/// paths and anything without a host and at least two path segments.
pub fn parse_repository(url: &str) -> Option<Repo> {
    let url = url.trim();
    let (host, path) = if let Some((scheme, rest)) = url.split_once("://") {
        if scheme.is_empty() || scheme.eq_ignore_ascii_case("file") {
            return None;
        }
        let (authority, path) = rest.split_once('/')?;
        (host_of(authority)?, path)
    } else {
        // scp-like: a colon before any slash; not a local path.
        let (authority, path) = url.split_once(':')?;
        if authority.contains('/') || authority.is_empty() {
            return None;
        }
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        (host.to_ascii_lowercase(), path)
    };
    if host.is_empty() {
        return None;
    }
    let path = path.trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    let segments = path.split('/').count();
    if segments < 2
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return None;
    }
    Some(Repo {
        host,
        path: path.to_string(),
    })
}

/// The host of `[user[:pass]@]host[:port]`, lower case, without the port.
fn host_of(authority: &str) -> Option<String> {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(rest) = hostport.strip_prefix('[') {
        // [v6]:port
        rest.split_once(']')?.0
    } else {
        hostport.split(':').next()?
    };
    Some(host.to_ascii_lowercase())
}

/// The host the repositories of an API live on: the API URL's host
/// without a leading `api.` (api.github.com serves github.com).
pub fn api_host(api_url: &str) -> Option<String> {
    let rest = api_url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let h = host_of(authority)?;
    Some(h.strip_prefix("api.").map(str::to_string).unwrap_or(h))
}

/// Whether a repository is served by the API at `api_url`.
pub fn same_host(repo: &Repo, api_url: &str) -> bool {
    let h = repo.host.strip_prefix("api.").unwrap_or(&repo.host);
    api_host(api_url).is_some_and(|a| a == h)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (a GitLab
/// project path becomes one path segment: `group%2Fproject`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The state a forge shows for a build in this phase with this result.
pub fn state(forge: Forge, phase: Phase, result: Option<BuildResult>) -> &'static str {
    use BuildResult as R;
    let result = match (phase, result) {
        (Phase::Started, _) | (_, None) => {
            return match forge {
                Forge::Gitlab => "running",
                Forge::Github | Forge::Gitea => "pending",
                Forge::BitbucketCloud | Forge::BitbucketServer => "INPROGRESS",
            }
        }
        (Phase::Finished, Some(r)) => r,
    };
    match (forge, result) {
        // Bitbucket: INPROGRESS, SUCCESSFUL, FAILED, and on Cloud STOPPED.
        (Forge::BitbucketCloud | Forge::BitbucketServer, R::Retry) => "INPROGRESS",
        (Forge::BitbucketCloud | Forge::BitbucketServer, R::Success | R::Warnings | R::Skipped) => {
            "SUCCESSFUL"
        }
        (Forge::BitbucketCloud, R::Cancelled) => "STOPPED",
        (Forge::BitbucketCloud | Forge::BitbucketServer, _) => "FAILED",
        // The request runs again: that build will say how it went.
        (_, R::Retry) => "pending",
        (Forge::Gitea, R::Warnings) => "warning",
        (_, R::Success | R::Warnings | R::Skipped) => "success",
        (Forge::Gitlab, R::Failure | R::Exception) => "failed",
        (Forge::Gitlab, R::Cancelled) => "canceled",
        (Forge::Github | Forge::Gitea, R::Failure) => "failure",
        (Forge::Github | Forge::Gitea, R::Exception | R::Cancelled) => "error",
    }
}

/// A commit id: 4 to 64 hex digits (a branch name is not a commit).
fn is_commit(s: &str) -> bool {
    (4..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The revision a status goes on: `got_revision`, else the source stamp's.
pub fn revision(ev: &BuildEvent) -> &str {
    match ev.build.build.properties.get("got_revision") {
        Some(Scalar::String(s)) if !s.is_empty() => s,
        _ => &ev.set.set.source.revision,
    }
}

/// One status update, ready to send (no `Debug`: it holds the token).
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: serde_json::Value,
}

/// One status reporter's settings, with its token resolved.
pub struct Status<'a> {
    pub reporter: &'a str,
    pub forge: Forge,
    pub api_url: &'a str,
    pub token: &'a str,
    /// Bitbucket: with a user name, the token is a password (HTTP Basic:
    /// a Cloud app password, a Server personal access token); without,
    /// an access token (Bearer).
    pub username: Option<&'a str>,
    pub context: &'a str,
}

impl Status<'_> {
    /// The request for this event, or why the build is not one this
    /// reporter can report.
    pub fn request(
        &self,
        ev: &BuildEvent,
        context: &str,
        target_url: &str,
    ) -> Result<Request, String> {
        let b = &ev.build;
        let sha = revision(ev);
        if sha.is_empty() {
            return Err("the build has no revision yet".into());
        }
        if !is_commit(sha) {
            return Err(format!("revision `{sha}` is not a commit id"));
        }
        let repository = &ev.set.set.source.repository;
        let repo = parse_repository(repository)
            .ok_or_else(|| format!("repository `{repository}` is not a forge URL"))?;
        if !same_host(&repo, self.api_url) {
            return Err(format!(
                "repository `{repository}` is not on the host of {}",
                self.api_url
            ));
        }
        let api = self.api_url.trim_end_matches('/');
        let st = state(self.forge, ev.phase, b.result);
        let mut description = match ev.phase {
            Phase::Started => format!("Build #{} started", b.number),
            Phase::Finished => format!("Build #{}: {}", b.number, b.state_string),
        };
        // GitHub refuses descriptions over 140 characters.
        if description.chars().count() > 140 {
            description = description.chars().take(139).collect();
            description.push('…');
        }
        let owner_repo = |p: &str| -> Result<String, String> {
            let mut it = p.split('/');
            match (it.next(), it.next(), it.next()) {
                (Some(o), Some(r), None) => {
                    Ok(format!("{}/{}", encode_segment(o), encode_segment(r)))
                }
                _ => Err(format!("repository path `{p}` is not owner/repo")),
            }
        };
        Ok(match self.forge {
            Forge::Github => Request {
                url: format!("{api}/repos/{}/statuses/{sha}", owner_repo(&repo.path)?),
                headers: vec![
                    ("Authorization", format!("Bearer {}", self.token)),
                    ("Accept", "application/vnd.github+json".into()),
                    ("X-GitHub-Api-Version", "2022-11-28".into()),
                ],
                body: json!({"state": st, "target_url": target_url, "description": description, "context": context}),
            },
            Forge::Gitea => Request {
                url: format!("{api}/repos/{}/statuses/{sha}", owner_repo(&repo.path)?),
                headers: vec![("Authorization", format!("token {}", self.token))],
                body: json!({"state": st, "target_url": target_url, "description": description, "context": context}),
            },
            Forge::Gitlab => {
                let mut body = json!({"state": st, "name": context, "target_url": target_url, "description": description});
                let branch = &ev.set.set.source.branch;
                if !branch.is_empty() {
                    body["ref"] = json!(branch);
                }
                Request {
                    url: format!(
                        "{api}/projects/{}/statuses/{sha}",
                        encode_segment(&repo.path)
                    ),
                    headers: vec![("PRIVATE-TOKEN", self.token.to_string())],
                    body,
                }
            }
            // key identifies the status (a later one with the same key
            // replaces it), name is what the page shows.
            Forge::BitbucketCloud => Request {
                url: format!(
                    "{api}/repositories/{}/commit/{sha}/statuses/build",
                    owner_repo(&repo.path)?
                ),
                headers: vec![("Authorization", self.authorization())],
                body: json!({"state": st, "key": context, "name": context, "url": target_url, "description": description}),
            },
            // The build-status API needs only the commit; the repository
            // is checked above to be on this server.
            Forge::BitbucketServer => Request {
                url: format!("{api}/rest/build-status/1.0/commits/{sha}"),
                headers: vec![("Authorization", self.authorization())],
                body: json!({"state": st, "key": context, "name": context, "url": target_url, "description": description}),
            },
        })
    }

    /// Bitbucket's Authorization header: Basic with a user name, else
    /// Bearer.
    fn authorization(&self) -> String {
        use base64::Engine;
        match self.username {
            Some(user) => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", self.token))
            ),
            None => format!("Bearer {}", self.token),
        }
    }

    /// Whether the status was delivered; `None` when the build has none
    /// to report (no revision on a known forge).
    pub async fn report(
        &self,
        shared: &Arc<Shared>,
        g: &Graph,
        r: &Reporter,
        templates: &Templates,
        ev: &BuildEvent,
    ) -> Option<bool> {
        let b = &ev.build;
        let facts = message::facts(shared, ev).await;
        let cx = message::context(g, shared.reporters.http_addr(), r, ev, &facts);
        let context = templates
            .render(CONTEXT, &cx)
            .unwrap_or_else(|| self.context.to_string());
        let target = message::build_url(g, shared.reporters.http_addr(), b.id);
        let Request { url, headers, body } = match self.request(ev, &context, &target) {
            Ok(x) => x,
            Err(why) => {
                tracing::debug!(
                    reporter = self.reporter, builder = %b.build.builder, number = b.number,
                    "no commit status: {why}"
                );
                return None;
            }
        };
        let body = body.to_string();
        let what = format!(
            "{} status of {} #{}",
            ev.phase.name(),
            b.build.builder,
            b.number
        );
        let ok = deliver(self.reporter, &what, || {
            let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (url, body) = (url.clone(), body.clone());
            async move { post(&url, &hs, "application/json", body).await }
        })
        .await;
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(host: &str, path: &str) -> Option<Repo> {
        Some(Repo {
            host: host.into(),
            path: path.into(),
        })
    }

    #[test]
    fn repository_urls() {
        assert_eq!(
            parse_repository("https://github.com/acme/widget.git"),
            repo("github.com", "acme/widget")
        );
        assert_eq!(
            parse_repository("https://github.com/acme/widget"),
            repo("github.com", "acme/widget")
        );
        assert_eq!(
            parse_repository("https://user:pw@GitHub.com:443/acme/widget/"),
            repo("github.com", "acme/widget")
        );
        assert_eq!(
            parse_repository("git@github.com:acme/widget.git"),
            repo("github.com", "acme/widget")
        );
        assert_eq!(
            parse_repository("gitlab.example.org:group/sub/proj.git"),
            repo("gitlab.example.org", "group/sub/proj")
        );
        assert_eq!(
            parse_repository("ssh://git@git.example.org:2222/acme/widget.git"),
            repo("git.example.org", "acme/widget")
        );
        assert_eq!(
            parse_repository("http://[::1]:3000/acme/widget"),
            repo("::1", "acme/widget")
        );
        assert_eq!(parse_repository("/srv/git/widget.git"), None);
        assert_eq!(parse_repository("file:///srv/git/acme/widget.git"), None);
        assert_eq!(parse_repository("../widget"), None);
        assert_eq!(parse_repository("https://github.com/acme"), None);
        assert_eq!(parse_repository("https://github.com/acme//x"), None);
        assert_eq!(parse_repository(""), None);
    }

    #[test]
    fn api_hosts() {
        let r = |u: &str| parse_repository(u).unwrap_or_else(|| panic!("{u}"));
        assert!(same_host(
            &r("git@github.com:a/b.git"),
            "https://api.github.com"
        ));
        assert!(same_host(
            &r("https://ghe.example/a/b"),
            "https://ghe.example/api/v3"
        ));
        assert!(same_host(
            &r("https://gitlab.com/g/s/p.git"),
            "https://gitlab.com/api/v4/"
        ));
        assert!(same_host(
            &r("git@127.0.0.1:a/b.git"),
            "http://127.0.0.1:8080"
        ));
        assert!(!same_host(
            &r("https://gitlab.com/a/b"),
            "https://api.github.com"
        ));
        assert!(!same_host(&r("https://github.com/a/b"), "not a url"));
    }

    #[test]
    fn gitlab_paths_are_one_segment() {
        assert_eq!(encode_segment("group/sub/proj"), "group%2Fsub%2Fproj");
        assert_eq!(encode_segment("a.b-c_d~e"), "a.b-c_d~e");
        assert_eq!(encode_segment("a b"), "a%20b");
    }

    #[test]
    fn states() {
        use BuildResult as R;
        use Forge::*;
        use Phase::*;
        assert_eq!(state(Github, Started, None), "pending");
        assert_eq!(state(Gitea, Started, None), "pending");
        assert_eq!(state(Gitlab, Started, None), "running");
        assert_eq!(state(Github, Finished, Some(R::Success)), "success");
        assert_eq!(state(Github, Finished, Some(R::Warnings)), "success");
        assert_eq!(state(Github, Finished, Some(R::Failure)), "failure");
        assert_eq!(state(Github, Finished, Some(R::Exception)), "error");
        assert_eq!(state(Github, Finished, Some(R::Cancelled)), "error");
        assert_eq!(state(Github, Finished, Some(R::Retry)), "pending");
        assert_eq!(state(Gitlab, Finished, Some(R::Success)), "success");
        assert_eq!(state(Gitlab, Finished, Some(R::Failure)), "failed");
        assert_eq!(state(Gitlab, Finished, Some(R::Exception)), "failed");
        assert_eq!(state(Gitlab, Finished, Some(R::Cancelled)), "canceled");
        assert_eq!(state(Gitea, Finished, Some(R::Warnings)), "warning");
        assert_eq!(state(Gitea, Finished, Some(R::Failure)), "failure");
        assert_eq!(state(Gitea, Finished, Some(R::Skipped)), "success");
        for f in [BitbucketCloud, BitbucketServer] {
            assert_eq!(state(f, Started, None), "INPROGRESS");
            assert_eq!(state(f, Finished, Some(R::Success)), "SUCCESSFUL");
            assert_eq!(state(f, Finished, Some(R::Warnings)), "SUCCESSFUL");
            assert_eq!(state(f, Finished, Some(R::Failure)), "FAILED");
            assert_eq!(state(f, Finished, Some(R::Exception)), "FAILED");
            assert_eq!(state(f, Finished, Some(R::Retry)), "INPROGRESS");
        }
        assert_eq!(
            state(BitbucketCloud, Finished, Some(R::Cancelled)),
            "STOPPED"
        );
        assert_eq!(
            state(BitbucketServer, Finished, Some(R::Cancelled)),
            "FAILED"
        );
    }

    #[test]
    fn commit_ids() {
        assert!(is_commit("0123abcdef"));
        assert!(!is_commit("main"));
        assert!(!is_commit(""));
        assert!(!is_commit("abc"));
    }
}
