//! Reporters: tell people and services about builds (mail, HTTP pushes,
//! commit statuses on GitHub, GitLab and Gitea, IRC).
//!
//! The master publishes a [`BuildEvent`] when the store has recorded the
//! start or the end of a build (`state::events::Hub::publish`); nothing is
//! published when no reporter listens. Each reporter of the graph has its
//! own task (started by [`spawn`]) that receives every event through a
//! broadcast channel, keeps those of its `builders`, evaluates `when`,
//! renders its templates and delivers, retrying failed deliveries with a
//! back-off ([`delivery::deliver`]).
//!
//! Architecture invariant: a reporter never delays or fails a build.
//! Publishing never waits (a broadcast send); a reporter that falls behind
//! loses its oldest events (logged), and every delivery error ends in the
//! log, never in the build.

pub mod commit_status;
pub mod delivery;
pub mod irc;
pub mod mail;
pub mod message;
pub mod push;

use std::collections::HashMap;
use std::sync::Arc;

use bbc_graph::{BuildResult, Graph, Reporter, ReporterKind, When};
use tokio::sync::broadcast;

use crate::state::events::{BuildEvent, Phase};
use crate::state::Shared;
// The `bbc` binary installs the TLS provider at start through this path.
pub use delivery::install_crypto_provider;

struct Running {
    hash: String,
    task: tokio::task::AbortHandle,
}

/// Starts one task per reporter of the current graph, then the task that
/// keeps them in line with every applied config (from [`Shared::configs`],
/// like every service): the tasks of reporters that were removed or
/// changed stop (what they still had queued is dropped; an IRC reporter
/// leaves its server), then the new and changed ones start.
pub fn spawn(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    // Subscribed before the graph is read: no applied config is missed.
    let mut configs = shared.configs.subscribe();
    let mut running = HashMap::new();
    spawn_missing(&shared, &mut running);
    tokio::spawn(async move {
        loop {
            let ev = match configs.recv().await {
                Ok(ev) => ev,
                // Applies wait for every listener, so none is missed.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            running.retain(|name: &String, r: &mut Running| {
                let keep = find(&ev.graph, name).is_some_and(|x| x.hash == r.hash);
                if !keep {
                    r.task.abort();
                }
                keep
            });
            spawn_missing(&shared, &mut running);
            ev.reconciled();
        }
    })
}

/// Starts a task for each reporter of the current graph that has none
/// running with the same definition (hash). Tasks are kept by
/// `Shared::track`, so shutdown stops them.
fn spawn_missing(shared: &Arc<Shared>, running: &mut HashMap<String, Running>) {
    let g = shared.graph();
    for r in &g.reporters {
        if running
            .get(&r.name)
            .is_some_and(|x| x.hash == r.hash && !x.task.is_finished())
        {
            continue;
        }
        let rx = shared.reporters.subscribe();
        let task = tokio::spawn(run(shared.clone(), r.name.clone(), r.hash.clone(), rx));
        running.insert(
            r.name.clone(),
            Running {
                hash: r.hash.clone(),
                task: task.abort_handle(),
            },
        );
        shared.track(task);
    }
}

fn find<'a>(g: &'a Graph, name: &str) -> Option<&'a Reporter> {
    g.reporters
        .binary_search_by(|r| r.name.as_str().cmp(name))
        .ok()
        .map(|i| &g.reporters[i])
}

async fn run(
    shared: Arc<Shared>,
    name: String,
    hash: String,
    mut rx: broadcast::Receiver<Arc<BuildEvent>>,
) {
    let (templates, bot) = match find(&shared.graph(), &name) {
        Some(r) => (message::Templates::of(r), irc_bot(&shared, r)),
        None => return,
    };
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    reporter = %name,
                    dropped = n,
                    "reporter fell behind: its {n} oldest build events were dropped"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let g = shared.graph();
        let r = match find(&g, &name) {
            Some(r) if r.hash == hash => r,
            // Removed or redefined: a task for the new definition (if
            // any) reports from now on.
            _ => {
                tracing::debug!(reporter = %name, "reporter removed or changed; its task stops");
                return;
            }
        };
        if r.builders.binary_search(&ev.build.build.builder).is_err() {
            continue;
        }
        report(&shared, &g, r, &templates, bot.as_ref(), &ev).await;
    }
}

/// An IRC reporter's client, connected for as long as its task runs.
fn irc_bot(shared: &Shared, r: &Reporter) -> Option<irc::Bot> {
    let ReporterKind::Irc {
        server,
        nick,
        channels,
        password,
        tls,
        ..
    } = &r.kind
    else {
        return None;
    };
    let (delivered, failed) = shared.metrics.deliveries(&r.name);
    Some(irc::Bot::spawn(irc::Config {
        delivered,
        failed,
        reporter: r.name.clone(),
        server: server.clone(),
        nick: nick.clone(),
        channels: channels.clone(),
        password: password
            .as_ref()
            .and_then(|p| shared.secrets().get(p).map(str::to_string)),
        tls: *tls,
    }))
}

async fn report(
    shared: &Arc<Shared>,
    g: &Graph,
    r: &Reporter,
    templates: &message::Templates,
    bot: Option<&irc::Bot>,
    ev: &BuildEvent,
) {
    let b = &ev.build;
    match &r.kind {
        ReporterKind::Mail { when, .. }
        | ReporterKind::HttpPush { when, .. }
        | ReporterKind::Irc { when, .. } => {
            if ev.phase != Phase::Finished {
                return;
            }
            let Some(result) = b.result else { return };
            let facts = message::facts(shared, ev).await;
            if !wanted(when, result, facts.previous) {
                tracing::debug!(
                    reporter = %r.name, builder = %b.build.builder, number = b.number,
                    result = result.name(), previous = ?facts.previous.map(BuildResult::name),
                    "not reported: `when` does not match"
                );
                return;
            }
            let cx = message::context(g, shared.reporters.http_addr(), r, ev, &facts);
            match &r.kind {
                ReporterKind::Mail {
                    smtp,
                    from,
                    to,
                    username,
                    password,
                    blamelist,
                    ..
                } => {
                    let login = username.as_ref().map(|u| {
                        let pw = password
                            .as_ref()
                            .and_then(|p| shared.secrets().get(p).map(str::to_string))
                            .unwrap_or_default();
                        (u.clone(), pw)
                    });
                    let m = mail::Mail {
                        reporter: &r.name,
                        smtp,
                        from,
                        to,
                        blamelist: blamelist.as_ref(),
                        login,
                    };
                    if let Some(ok) = m.send(templates, &cx, &message::authors(&facts)).await {
                        shared.metrics.delivery(&r.name, ok);
                    }
                }
                ReporterKind::HttpPush { url, .. } => {
                    let ok = push::send(&r.name, url, templates, &cx).await;
                    shared.metrics.delivery(&r.name, ok);
                }
                ReporterKind::Irc { .. } => {
                    if let Some(bot) = bot {
                        bot.say(irc::line(&cx));
                    }
                }
                _ => {}
            }
        }
        ReporterKind::GithubStatus {
            token,
            api_url,
            context,
        }
        | ReporterKind::GitlabStatus {
            token,
            api_url,
            context,
        }
        | ReporterKind::GiteaStatus {
            token,
            api_url,
            context,
        }
        | ReporterKind::BitbucketCloudStatus {
            token,
            api_url,
            context,
            ..
        }
        | ReporterKind::BitbucketServerStatus {
            token,
            api_url,
            context,
            ..
        } => {
            let forge = match &r.kind {
                ReporterKind::GithubStatus { .. } => commit_status::Forge::Github,
                ReporterKind::GitlabStatus { .. } => commit_status::Forge::Gitlab,
                ReporterKind::BitbucketCloudStatus { .. } => commit_status::Forge::BitbucketCloud,
                ReporterKind::BitbucketServerStatus { .. } => commit_status::Forge::BitbucketServer,
                _ => commit_status::Forge::Gitea,
            };
            // Read at each delivery: a reload may have rotated it.
            let secrets = shared.secrets();
            let Some(token) = secrets.get(token) else {
                tracing::error!(reporter = %r.name, "the API token's secret is not available; status not sent");
                shared.metrics.delivery(&r.name, false);
                return;
            };
            let username = match &r.kind {
                ReporterKind::BitbucketCloudStatus { username, .. }
                | ReporterKind::BitbucketServerStatus { username, .. } => username.as_deref(),
                _ => None,
            };
            let status = commit_status::Status {
                reporter: &r.name,
                forge,
                api_url,
                token,
                username,
                context,
            };
            if let Some(ok) = status.report(shared, g, r, templates, ev).await {
                shared.metrics.delivery(&r.name, ok);
            }
        }
    }
}

/// Whether a finished build is reported under these `when` values, given
/// the result of the builder's previous finished build (None when there is
/// none). Builds that end as `retry` (the worker was lost; the request runs
/// again) are reported only under `all`.
pub fn wanted(when: &[When], result: BuildResult, previous: Option<BuildResult>) -> bool {
    use BuildResult as R;
    when.iter().any(|w| match w {
        When::All => true,
        _ if result == R::Retry => false,
        When::Failing => result == R::Failure,
        When::Passing => result == R::Success,
        // A first build that fails is news too.
        When::Problem => result == R::Failure && previous != Some(R::Failure),
        When::Change => previous.is_some_and(|p| p != result),
        When::Warnings => result == R::Warnings,
        When::Exception => result == R::Exception,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use BuildResult as R;

    #[test]
    fn when_values() {
        let w = |v: &[When], r, p| wanted(v, r, p);
        assert!(w(&[When::All], R::Success, None));
        assert!(w(&[When::All], R::Retry, Some(R::Success)));
        assert!(w(&[When::Failing], R::Failure, Some(R::Failure)));
        assert!(!w(&[When::Failing], R::Success, None));
        assert!(!w(&[When::Failing], R::Exception, None));
        assert!(w(&[When::Passing], R::Success, Some(R::Failure)));
        assert!(!w(&[When::Passing], R::Warnings, None));
        // problem: a failure after anything but a failure.
        assert!(w(&[When::Problem], R::Failure, Some(R::Success)));
        assert!(w(&[When::Problem], R::Failure, None));
        assert!(!w(&[When::Problem], R::Failure, Some(R::Failure)));
        assert!(!w(&[When::Problem], R::Success, Some(R::Failure)));
        // change: differs from a previous build.
        assert!(w(&[When::Change], R::Success, Some(R::Failure)));
        assert!(w(&[When::Change], R::Failure, Some(R::Success)));
        assert!(!w(&[When::Change], R::Failure, Some(R::Failure)));
        assert!(!w(&[When::Change], R::Success, None));
        assert!(w(&[When::Warnings], R::Warnings, None));
        assert!(!w(&[When::Warnings], R::Failure, None));
        assert!(w(&[When::Exception], R::Exception, None));
        // Several values: any of them.
        assert!(w(
            &[When::Failing, When::Change],
            R::Success,
            Some(R::Failure)
        ));
        assert!(!w(
            &[When::Failing, When::Change],
            R::Success,
            Some(R::Success)
        ));
        // A lost worker is not news, except to `all`.
        assert!(!w(
            &[When::Change, When::Failing],
            R::Retry,
            Some(R::Success)
        ));
        assert!(!w(&[], R::Failure, None));
    }
}
