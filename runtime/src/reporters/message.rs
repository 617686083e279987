//! What a report says: the facts about a build read from the store, the
//! message context (the variables of the handlebars templates, documented
//! in docs/language.md "Message templates") and the compiled templates.

use std::net::SocketAddr;
use std::sync::Arc;

use bbc_graph::{BuildResult, Graph, Reporter, ReporterKind, Scalar};
use handlebars::Handlebars;
use serde_json::{json, Map, Value};

use crate::state::events::{BuildEvent, Facts, LogTail, Phase};
use crate::state::Shared;
use crate::store::{BuildFilter, Page, Store};

/// At most this many changes of a build set are shown to templates.
const MAX_CHANGES: usize = 50;
/// A failed step's log is quoted from at most its last this many bytes…
pub const LOG_TAIL_BYTES: u64 = 8 * 1024;
/// …and at most this many lines of them.
pub const LOG_TAIL_LINES: usize = 25;

/// What reporters need beyond the event itself, read once per event
/// (by the first reporter that needs it).
pub async fn facts(shared: &Arc<Shared>, ev: &BuildEvent) -> Arc<Facts> {
    ev.facts(|| load(shared, ev)).await
}

async fn load(shared: &Arc<Shared>, ev: &BuildEvent) -> Arc<Facts> {
    let id = ev.build.id;
    let builder = ev.build.build.builder.clone();
    let finished = ev.phase == Phase::Finished;
    let change_ids: Vec<u64> = ev
        .set
        .set
        .changes
        .iter()
        .take(MAX_CHANGES)
        .copied()
        .collect();
    let loaded = shared
        .db(move |s| {
            let steps = s.steps(id)?;
            let previous = if finished {
                previous_result(s, &builder, id)?
            } else {
                None
            };
            let mut changes = Vec::with_capacity(change_ids.len());
            for c in change_ids {
                if let Some(c) = s.change(c)? {
                    changes.push(c);
                }
            }
            let failed = steps.iter().find(|st| {
                !st.hidden
                    && matches!(
                        st.result,
                        Some(BuildResult::Failure | BuildResult::Exception)
                    )
            });
            let log_tail = match failed {
                Some(st) if finished => {
                    let len = s.log_len(id, st.index)?;
                    let from = len.saturating_sub(LOG_TAIL_BYTES);
                    let data = s.read_log(id, st.index, from, LOG_TAIL_BYTES as usize)?;
                    Some(LogTail {
                        step: st.index,
                        name: st.name.clone(),
                        text: last_lines(&data, from > 0),
                    })
                }
                _ => None,
            };
            Ok(Facts {
                steps,
                previous,
                changes,
                log_tail,
            })
        })
        .await;
    match loaded {
        Ok(f) => Arc::new(f),
        Err(e) => {
            tracing::warn!(build = id, "reporters cannot read the build's details: {e}");
            Arc::new(Facts::default())
        }
    }
}

/// The last [`LOG_TAIL_LINES`] lines of a log's end (`cut`: the bytes
/// start inside the log, so the first, partial line is left out).
fn last_lines(data: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(data);
    let text = text.trim_end_matches(['\n', '\r']);
    let mut lines: Vec<&str> = text.lines().collect();
    if cut && lines.len() > 1 {
        lines.remove(0);
    }
    let keep = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[keep..].join("\n")
}

/// The result of the newest finished build of `builder` older than build
/// `id`, skipping builds that ended as `retry`.
pub fn previous_result(
    s: &dyn Store,
    builder: &str,
    id: u64,
) -> crate::store::Result<Option<BuildResult>> {
    let f = BuildFilter {
        builder: Some(builder.to_string()),
        ..Default::default()
    };
    let list = s.builds(
        &f,
        Page {
            before: Some(id),
            limit: 50,
        },
    )?;
    Ok(list
        .iter()
        .filter_map(|b| b.result)
        .find(|r| *r != BuildResult::Retry))
}

/// The link to a build: its page in the web UI under the master's `url`, or
/// under the address the HTTP server listens on when the config sets none.
pub fn build_url(g: &Graph, http_addr: SocketAddr, id: u64) -> String {
    format!("{}/#/builds/{id}", base_url(g, http_addr))
}

/// The master's address as links use it: its `url`, else where the HTTP
/// server listens.
fn base_url(g: &Graph, http_addr: SocketAddr) -> String {
    match g.master.url.as_deref() {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("http://{http_addr}"),
    }
}

/// The distinct authors of a build's changes, in order (Buildbot's
/// blamelist).
pub fn authors(facts: &Facts) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in &facts.changes {
        let a = c.change.author.trim();
        if !a.is_empty() && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn timestamp(ms: i64) -> String {
    jiff::Timestamp::from_second(ms.div_euclid(1000))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// "3s", "2m 5s", "1h 0m 7s".
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

fn prop(props: &crate::store::Properties, name: &str) -> String {
    match props.get(name) {
        Some(Scalar::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// The variables a template sees (docs/language.md, "Message templates").
pub fn context(
    g: &Graph,
    http_addr: SocketAddr,
    r: &Reporter,
    ev: &BuildEvent,
    facts: &Facts,
) -> Value {
    let b = &ev.build;
    let set = &ev.set.set;
    let result = b.result.map(BuildResult::name).unwrap_or("");
    let failed = matches!(
        b.result,
        Some(BuildResult::Failure | BuildResult::Exception)
    );
    let steps: Vec<Value> = facts
        .steps
        .iter()
        .map(|st| {
            json!({
                "number": st.index,
                "name": st.name,
                "result": st.result.map(BuildResult::name).unwrap_or(""),
                "state": st.state_string,
                "warnings": st.warnings,
                "hidden": st.hidden,
                "failed": matches!(st.result, Some(BuildResult::Failure | BuildResult::Exception)),
            })
        })
        .collect();
    let failed_steps: Vec<&str> = facts
        .steps
        .iter()
        .filter(|st| {
            !st.hidden
                && matches!(
                    st.result,
                    Some(BuildResult::Failure | BuildResult::Exception)
                )
        })
        .map(|st| st.name.as_str())
        .collect();
    let changes: Vec<Value> = facts
        .changes
        .iter()
        .map(|c| {
            let c2 = &c.change;
            json!({
                "id": c.id,
                "repository": c2.repository,
                "branch": c2.branch,
                "revision": c2.revision,
                "author": c2.author,
                "comments": c2.comments,
                "title": c2.comments.lines().next().unwrap_or(""),
                "link": crate::change_json::link(c),
            })
        })
        .collect();
    let mut cx = Map::new();
    let mut put = |k: &str, v: Value| {
        cx.insert(k.to_string(), v);
    };
    put("reporter", json!(r.name));
    put("event", json!(ev.phase.name()));
    put("title", json!(g.master.title));
    put("builder", json!(b.build.builder));
    put("number", json!(b.number));
    put("build_id", json!(b.id));
    put("result", json!(result));
    put("finished", json!(b.result.is_some()));
    put("failed", json!(failed));
    put("state", json!(b.state_string));
    put(
        "previous_result",
        json!(facts.previous.map(BuildResult::name)),
    );
    put("repository", json!(set.source.repository));
    put("branch", json!(set.source.branch));
    put("revision", json!(set.source.revision));
    put(
        "got_revision",
        json!(prop(&b.build.properties, "got_revision")),
    );
    put("reason", json!(set.reason));
    put("scheduler", json!(set.scheduler));
    put("worker", json!(b.build.worker));
    put("url", json!(build_url(g, http_addr, b.id)));
    put("buildset", json!(ev.set.id));
    put("started_at", json!(timestamp(b.build.started_at)));
    put(
        "finished_at",
        json!(b.finished_at.map(timestamp).unwrap_or_default()),
    );
    put(
        "duration",
        json!(b
            .finished_at
            .map(|f| duration(f - b.build.started_at))
            .unwrap_or_default()),
    );
    put(
        "properties",
        serde_json::to_value(&b.build.properties).unwrap_or(Value::Null),
    );
    put("steps", Value::Array(steps));
    put("failed_steps", json!(failed_steps));
    put("changes", Value::Array(changes));
    put("blamelist", json!(authors(facts)));
    put(
        "log_tail",
        match &facts.log_tail {
            Some(t) => json!({
                "step": t.name,
                "text": t.text,
                "url": format!(
                    "{}/api/v1/builds/{}/steps/{}/log",
                    base_url(g, http_addr),
                    b.id,
                    t.step
                ),
            }),
            None => Value::Null,
        },
    );
    Value::Object(cx)
}

// `{{json x}}`: x as JSON text (a quoted, escaped string for a string), for
// templates that build a JSON body.
handlebars::handlebars_helper!(json_helper: |v: Json| serde_json::to_string(v).unwrap_or_default());

/// A reporter's templates, compiled once when its task starts. Output is
/// never HTML-escaped: mail is plain text and HTTP bodies are what the
/// template says.
pub struct Templates {
    hb: Handlebars<'static>,
    reporter: String,
}

pub const SUBJECT: &str = "subject";
pub const BODY: &str = "body";
pub const TEMPLATE: &str = "template";
pub const CONTEXT: &str = "context";

impl Templates {
    pub fn of(r: &Reporter) -> Templates {
        let mut t = Templates {
            hb: Handlebars::new(),
            reporter: r.name.clone(),
        };
        t.hb.register_escape_fn(handlebars::no_escape);
        t.hb.register_helper("json", Box::new(json_helper));
        match &r.kind {
            ReporterKind::Mail { subject, body, .. } => {
                t.add(SUBJECT, subject);
                t.add(BODY, body);
            }
            ReporterKind::HttpPush {
                template: Some(tpl),
                ..
            } => t.add(TEMPLATE, tpl),
            ReporterKind::GithubStatus { context, .. }
            | ReporterKind::GitlabStatus { context, .. }
            | ReporterKind::GiteaStatus { context, .. }
            | ReporterKind::BitbucketCloudStatus { context, .. }
            | ReporterKind::BitbucketServerStatus { context, .. } => t.add(CONTEXT, context),
            ReporterKind::HttpPush { template: None, .. } | ReporterKind::Irc { .. } => {}
        }
        t
    }

    fn add(&mut self, name: &str, text: &str) {
        if let Err(e) = self.hb.register_template_string(name, text) {
            // The compiler checks mail and http templates; a status
            // `context` is checked only here, and is then used as written.
            tracing::warn!(reporter = %self.reporter, "template `{name}` does not parse, used as plain text: {e}");
            let _ = self.hb.register_template_string(name, escape(text));
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.hb.has_template(name)
    }

    /// Renders a template; a failure is logged and gives None.
    pub fn render(&self, name: &str, cx: &Value) -> Option<String> {
        if !self.hb.has_template(name) {
            return None;
        }
        match self.hb.render(name, cx) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(reporter = %self.reporter, "template `{name}` failed: {e}");
                None
            }
        }
    }
}

/// `text` as a template that renders to itself.
fn escape(text: &str) -> String {
    text.replace("{{", "\\{{")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        Build, BuildSet, Change, NewBuild, NewBuildSet, NewChange, SourceStamp, StepRecord,
    };

    fn graph(url: Option<&str>) -> Graph {
        let mut g: Graph = Graph {
            format: bbc_graph::FORMAT.into(),
            version: bbc_graph::VERSION,
            master: Default::default(),
            workers: vec![],
            locks: vec![],
            change_sources: vec![],
            schedulers: vec![],
            builders: vec![],
            reporters: vec![],
        };
        g.master.title = "Acme CI".into();
        g.master.url = url.map(str::to_string);
        g
    }

    fn reporter(kind: ReporterKind) -> Reporter {
        Reporter {
            name: "r".into(),
            builders: vec!["b".into()],
            kind,
            hash: String::new(),
        }
    }

    fn event(result: Option<BuildResult>) -> BuildEvent {
        let mut props = crate::store::Properties::new();
        props.insert("got_revision".into(), Scalar::String("abc123".into()));
        props.insert("jobs".into(), Scalar::Int(4));
        let build = Build {
            id: 7,
            number: 3,
            build: NewBuild {
                builder: "b".into(),
                builder_hash: String::new(),
                worker: "w1".into(),
                requests: vec![1],
                properties: props,
                started_at: 1_700_000_000_000,
            },
            finished_at: result.map(|_| 1_700_000_065_500),
            result,
            state_string: "failed test".into(),
            logs_deleted_at: None,
            master: None,
        };
        let set = BuildSet {
            id: 2,
            set: NewBuildSet {
                priority: 0,
                scheduler: "force".into(),
                reason: "forced".into(),
                source: SourceStamp {
                    codebase: String::new(),
                    repository: "git@github.com:acme/widget.git".into(),
                    branch: "main".into(),
                    revision: "abc".into(),
                },
                sources: Vec::new(),
                changes: vec![],
                properties: Default::default(),
                parent_build: None,
                submitted_at: 0,
            },
            result: None,
            completed_at: None,
        };
        let phase = if result.is_some() {
            Phase::Finished
        } else {
            Phase::Started
        };
        BuildEvent::new(phase, build, Arc::new(set))
    }

    fn facts() -> Facts {
        Facts {
            steps: vec![
                StepRecord {
                    index: 0,
                    name: "compile".into(),
                    result: Some(BuildResult::Success),
                    state_string: "compile".into(),
                    ..Default::default()
                },
                StepRecord {
                    index: 1,
                    name: "test".into(),
                    result: Some(BuildResult::Failure),
                    state_string: "failed test".into(),
                    warnings: 2,
                    ..Default::default()
                },
            ],
            previous: Some(BuildResult::Success),
            changes: vec![Change {
                id: 9,
                received_at: 0,
                change: NewChange {
                    author: "Ada <ada@example.org>".into(),
                    comments: "Fix the widget\n\nLonger text.".into(),
                    revision: "abc".into(),
                    ..Default::default()
                },
            }],
            log_tail: Some(LogTail {
                step: 1,
                name: "test".into(),
                text: "FAILED t::x\nexit code 1 after 0.1 s".into(),
            }),
        }
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8010))
    }

    #[test]
    fn context_has_the_documented_variables() {
        let g = graph(Some("https://ci.example.org/"));
        let r = reporter(ReporterKind::HttpPush {
            url: "http://x/".into(),
            template: None,
            when: vec![],
        });
        let cx = context(&g, addr(), &r, &event(Some(BuildResult::Failure)), &facts());
        assert_eq!(cx["builder"], "b");
        assert_eq!(cx["number"], 3);
        assert_eq!(cx["build_id"], 7);
        assert_eq!(cx["result"], "failure");
        assert_eq!(cx["failed"], true);
        assert_eq!(cx["finished"], true);
        assert_eq!(cx["event"], "finished");
        assert_eq!(cx["previous_result"], "success");
        assert_eq!(cx["branch"], "main");
        assert_eq!(cx["revision"], "abc");
        assert_eq!(cx["got_revision"], "abc123");
        assert_eq!(cx["repository"], "git@github.com:acme/widget.git");
        assert_eq!(cx["reason"], "forced");
        assert_eq!(cx["worker"], "w1");
        assert_eq!(cx["title"], "Acme CI");
        assert_eq!(cx["url"], "https://ci.example.org/#/builds/7");
        assert_eq!(cx["properties"]["jobs"], 4);
        assert_eq!(cx["steps"][1]["name"], "test");
        assert_eq!(cx["steps"][1]["result"], "failure");
        assert_eq!(cx["steps"][1]["warnings"], 2);
        assert_eq!(cx["failed_steps"], json!(["test"]));
        assert_eq!(cx["changes"][0]["title"], "Fix the widget");
        assert_eq!(cx["changes"][0]["link"], Value::Null);
        assert_eq!(cx["blamelist"], json!(["Ada <ada@example.org>"]));
        assert_eq!(cx["log_tail"]["step"], "test");
        assert_eq!(
            cx["log_tail"]["url"],
            "https://ci.example.org/api/v1/builds/7/steps/1/log"
        );
        assert_eq!(cx["started_at"], "2023-11-14T22:13:20Z");
        assert_eq!(cx["duration"], "1m 5s");
        // Every variable the docs list is there.
        let doc = include_str!("../../../docs/language.md");
        let section = doc
            .split("### Message templates")
            .nth(1)
            .and_then(|s| s.split("\n### ").next())
            .unwrap_or("");
        let obj = cx.as_object().map(|o| o.len()).unwrap_or(0);
        let documented = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| l.split('`').nth(1))
            .filter(|name| !name.contains('.'))
            .inspect(|name| assert!(cx.get(*name).is_some(), "documented `{name}` missing"))
            .count();
        assert_eq!(documented, obj, "every variable is documented");
    }

    #[test]
    fn started_builds_and_the_api_url() {
        let g = graph(None);
        let r = reporter(ReporterKind::HttpPush {
            url: "http://x/".into(),
            template: None,
            when: vec![],
        });
        let cx = context(&g, addr(), &r, &event(None), &Facts::default());
        assert_eq!(cx["result"], "");
        assert_eq!(cx["event"], "started");
        assert_eq!(cx["finished"], false);
        assert_eq!(cx["failed"], false);
        assert_eq!(cx["previous_result"], Value::Null);
        assert_eq!(cx["url"], "http://127.0.0.1:8010/#/builds/7");
    }

    #[test]
    fn templates_render_without_html_escaping() {
        let r = reporter(ReporterKind::Mail {
            smtp: "x:25".into(),
            from: "a@b".into(),
            to: vec![],
            when: vec![],
            subject: "[{{title}}] {{builder}} #{{number}} {{result}}".into(),
            body: "{{#if failed}}Broken{{else}}Fine{{/if}} <{{branch}}>\n{{#each steps}}{{name}}={{result}}\n{{/each}}{{json builder}}".into(),
            username: None,
            password: None,
            blamelist: None,
        });
        let t = Templates::of(&r);
        let g = graph(None);
        let cx = context(&g, addr(), &r, &event(Some(BuildResult::Failure)), &facts());
        assert_eq!(
            t.render(SUBJECT, &cx).as_deref(),
            Some("[Acme CI] b #3 failure")
        );
        assert_eq!(
            t.render(BODY, &cx).as_deref(),
            Some("Broken <main>\ncompile=success\ntest=failure\n\"b\"")
        );
        assert_eq!(t.render(TEMPLATE, &cx), None);
        // A status context that does not parse is used as written.
        let s = reporter(ReporterKind::GithubStatus {
            token: bbc_graph::Credential::Plain("t".into()),
            api_url: "https://api.github.com".into(),
            context: "ci/{{#if}}".into(),
        });
        let t = Templates::of(&s);
        assert_eq!(t.render(CONTEXT, &cx).as_deref(), Some("ci/{{#if}}"));
    }

    #[test]
    fn log_tails_keep_the_last_whole_lines() {
        let many: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let t = last_lines(many.as_bytes(), false);
        assert_eq!(t.lines().count(), LOG_TAIL_LINES);
        assert!(t.starts_with("line 15\n") && t.ends_with("line 39"), "{t}");
        assert_eq!(last_lines(b"ial line\nwhole\n", true), "whole");
        assert_eq!(last_lines(b"only\n", true), "only");
        assert_eq!(last_lines(b"", false), "");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(999), "0s");
        assert_eq!(duration(65_000), "1m 5s");
        assert_eq!(duration(3_607_000), "1h 0m 7s");
        assert_eq!(duration(-5), "0s");
    }
}
