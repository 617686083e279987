//! A trigger step: build sets submitted to triggerable schedulers, with
//! this build's source and chosen properties, and (with `wait`) their
//! results awaited and combined.

use std::collections::BTreeMap;

use bbc_graph::{BuildResult, Scalar, SchedulerKind};

use super::{Ctx, Outcome};
use crate::master::properties::worst;
use crate::state::now_ms;
use crate::store::{NewBuildSet, Properties};
use bbc_graph::eval::render;

impl Ctx {
    pub(super) async fn trigger(
        &mut self,
        index: u32,
        schedulers: &[String],
        wait: bool,
        copy: &[String],
        set: &BTreeMap<String, bbc_graph::Text>,
    ) -> Outcome {
        let g = self.shared.graph();
        let mut props = Properties::new();
        for c in copy {
            if let Some(v) = self.props.get(c) {
                props.insert(c.clone(), v.clone());
            }
        }
        for (k, v) in set {
            props.insert(k.clone(), Scalar::String(render(v, &self.props)));
        }
        // A set spanning codebases passes each one on, at the commit this
        // build checked out of it when a git step did (Buildbot's
        // `updateSourceStamp`).
        let sources: Vec<crate::store::SourceStamp> =
            if self.sources.iter().any(|st| !st.codebase.is_empty()) {
                self.sources
                    .iter()
                    .map(|st| crate::store::SourceStamp {
                        revision: self
                            .prop(&format!("got_revision.{}", st.codebase))
                            .unwrap_or_else(|| st.revision.clone()),
                        ..st.clone()
                    })
                    .collect()
            } else {
                Vec::new()
            };
        let source = crate::store::SourceStamp {
            codebase: self.prop("codebase").unwrap_or_default(),
            repository: self.prop("repository").unwrap_or_default(),
            branch: self.prop("branch").unwrap_or_default(),
            revision: self
                .prop("got_revision")
                .or_else(|| self.prop("revision"))
                .unwrap_or_default(),
        };
        let mut sets = Vec::new();
        for name in schedulers {
            let Some(s) = g
                .scheduler(name)
                .filter(|s| matches!(s.kind, SchedulerKind::Triggerable {}))
            else {
                self.log(
                    index,
                    format!("scheduler `{name}` is not triggerable in the current config\n")
                        .as_bytes(),
                )
                .await;
                return Outcome::of(BuildResult::Exception, format!("cannot trigger {name}"));
            };
            let bs = NewBuildSet {
                priority: s.priority,
                scheduler: name.clone(),
                reason: format!("triggered by {} #{}", self.builder.name, self.build.number),
                source: source.clone(),
                sources: sources.clone(),
                changes: Vec::new(),
                properties: props.clone(),
                parent_build: Some(self.build.id),
                submitted_at: now_ms(),
            };
            match self.shared.submit(bs, s.builders.clone()).await {
                Ok((set, reqs)) => {
                    self.log(
                        index,
                        format!(
                            "triggered {name}: build set {} ({} builds)\n",
                            set.id,
                            reqs.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                    sets.push(set.id);
                }
                Err(e) => {
                    return Outcome::of(
                        BuildResult::Exception,
                        format!("cannot trigger {name}: {e}"),
                    )
                }
            }
        }
        if !wait {
            return Outcome::of(
                BuildResult::Success,
                format!("triggered {}", schedulers.join(", ")),
            );
        }
        let mut result = BuildResult::Success;
        let all = sets.clone();
        for id in sets {
            loop {
                let notified = self.shared.build_finished.notified();
                let set = self.shared.db(move |s| s.buildset(id)).await;
                if let Ok(Some(bs)) = &set {
                    if let Some(r) = bs.result {
                        result = worst(result, r);
                        break;
                    }
                }
                tokio::select! {
                    _ = notified => {}
                    _ = self.cancel.changed() => {
                        if *self.cancel.borrow() {
                            // The builds this step waits for are cancelled too.
                            let n = self.shared.cancel_buildsets(&all).await;
                            self.log(index, format!("cancelled; cancelled {n} triggered build(s) and request(s)\n").as_bytes()).await;
                            return Outcome::of(BuildResult::Cancelled, "cancelled while waiting");
                        }
                    }
                }
            }
        }
        Outcome::of(
            result,
            format!("triggered {}: {}", schedulers.join(", "), result.name()),
        )
    }
}
