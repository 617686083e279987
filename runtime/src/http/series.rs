//! A builder's figures over its recent builds (docs/api.md, "Series"):
//! build and step durations, warnings, test counts with the tests that
//! started failing since the build before, and the figures steps printed.
//! Read from the build and step records the store keeps (no table of its
//! own): one page of builds and one steps read per build, bounded by
//! [`MAX_BUILDS`]. `charts.rs` draws the same series as SVG.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api_error::{ApiError, ApiResult as R};
use crate::state::Shared;
use crate::store::{BuildFilter, Page, Store, TestCounts};
use crate::test_results::new_failures;

/// At most this many builds in a series.
pub const MAX_BUILDS: usize = 100;
/// Builds in a series unless `limit` says otherwise.
pub const DEFAULT_BUILDS: usize = 30;

/// One finished build's point in its builder's series.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Point {
    pub id: u64,
    pub number: u64,
    pub result: String,
    pub started_at: i64,
    pub duration_ms: i64,
    /// Warnings counted over its steps.
    pub warnings: u64,
    /// Over its `test` steps; null when none reported results.
    pub tests: Option<TestCounts>,
    /// Failing tests that did not fail in the previous build of the
    /// series that reported tests (all of them when there is none).
    pub new_failures: Vec<String>,
    pub steps: Vec<StepPoint>,
    /// Figures by name (a name printed by two steps: the later one).
    pub figures: BTreeMap<String, FigurePoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepPoint {
    pub name: String,
    pub result: String,
    pub duration_ms: Option<i64>,
    pub warnings: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FigurePoint {
    pub value: f64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub unit: String,
}

/// The newest `limit` finished builds of `builder`, oldest first.
pub fn load(st: &dyn Store, builder: &str, limit: usize) -> crate::store::Result<Vec<Point>> {
    let f = BuildFilter {
        builder: Some(builder.to_string()),
        ..Default::default()
    };
    // Running builds are skipped, so ask for a few more than `limit`.
    let builds = st.builds(
        &f,
        Page {
            before: None,
            limit: limit + 4,
        },
    )?;
    let mut points = Vec::new();
    for b in builds
        .iter()
        .filter(|b| b.finished_at.is_some())
        .take(limit)
    {
        let steps = st.steps(b.id)?;
        let mut p = Point {
            id: b.id,
            number: b.number,
            result: b.result.map(|r| r.name().to_string()).unwrap_or_default(),
            started_at: b.build.started_at,
            duration_ms: b.finished_at.unwrap_or(b.build.started_at) - b.build.started_at,
            ..Default::default()
        };
        for s in &steps {
            p.warnings += s.warnings;
            if let Some(t) = &s.tests {
                let all = p.tests.get_or_insert_with(TestCounts::default);
                all.passed += t.passed;
                all.failed += t.failed;
                all.skipped += t.skipped;
                for n in &t.failing {
                    crate::test_results::add_failing(&mut all.failing, n);
                }
            }
            for fig in &s.figures {
                p.figures.insert(
                    fig.name.clone(),
                    FigurePoint {
                        value: fig.value,
                        unit: fig.unit.clone(),
                    },
                );
            }
            p.steps.push(StepPoint {
                name: s.name.clone(),
                result: s.result.map(|r| r.name().to_string()).unwrap_or_default(),
                duration_ms: s.started_at.zip(s.finished_at).map(|(a, e)| e - a),
                warnings: s.warnings,
            });
        }
        points.push(p);
    }
    points.reverse();
    let mut before: Option<Vec<String>> = None;
    for p in &mut points {
        if let Some(t) = &p.tests {
            p.new_failures = new_failures(&t.failing, before.as_deref().unwrap_or(&[]))
                .into_iter()
                .map(str::to_string)
                .collect();
            before = Some(t.failing.clone());
        }
    }
    Ok(points)
}

#[derive(Deserialize)]
pub(super) struct SeriesQuery {
    pub(super) limit: Option<usize>,
}

pub(super) fn limit(q: Option<usize>) -> R<usize> {
    match q.unwrap_or(DEFAULT_BUILDS) {
        n @ 1..=MAX_BUILDS => Ok(n),
        n => Err(ApiError::bad(format!(
            "limit={n} is out of range: a series holds 1 to {MAX_BUILDS} builds"
        ))),
    }
}

/// The series of a builder the config names, or one whose builds are
/// still stored.
pub(super) async fn points(s: &Arc<Shared>, name: String, n: usize) -> R<Vec<Point>> {
    let known = s.graph().builder(&name).is_some();
    let key = name.clone();
    let points = s.db(move |st| load(st, &key, n)).await?;
    if points.is_empty() && !known {
        return Err(ApiError::not_found(format!("no builder named `{name}`")));
    }
    Ok(points)
}

/// `GET /api/v1/builders/{name}/series[?limit=N]`.
pub(super) async fn series(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<SeriesQuery>,
) -> R<Json<Value>> {
    let n = limit(q.limit)?;
    let points = points(&s, name.clone(), n).await?;
    Ok(Json(serde_json::json!({
        "builder": name,
        "builds": points,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Figure, NewBuild, RedbStore, StepRecord};
    use bbc_graph::BuildResult;

    /// New failures are against the previous build that reported tests;
    /// running builds are left out; the oldest first.
    #[test]
    fn series_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let st = RedbStore::open(dir.path()).unwrap();
        let failing = [vec![], vec!["a", "b"], vec![], vec!["b", "c"]];
        for (i, f) in failing.iter().enumerate() {
            let b = st
                .start_build(NewBuild {
                    builder: "b".into(),
                    builder_hash: String::new(),
                    worker: "w".into(),
                    requests: vec![],
                    properties: Default::default(),
                    started_at: 1000 * i as i64,
                })
                .unwrap();
            let tests = (i != 2).then(|| TestCounts {
                passed: 3,
                failed: f.len() as u64,
                skipped: 0,
                failing: f.iter().map(|s| s.to_string()).collect(),
            });
            st.put_step(
                b.id,
                &StepRecord {
                    index: 0,
                    name: "t".into(),
                    started_at: Some(1000 * i as i64),
                    finished_at: Some(1000 * i as i64 + 250),
                    result: Some(BuildResult::Success),
                    warnings: i as u64,
                    tests,
                    figures: vec![Figure {
                        name: "size".into(),
                        value: i as f64,
                        unit: "B".into(),
                    }],
                    ..Default::default()
                },
            )
            .unwrap();
            st.finish_build(b.id, BuildResult::Success, 1000 * i as i64 + 500)
                .unwrap();
        }
        // A running build is not in the series.
        st.start_build(NewBuild {
            builder: "b".into(),
            builder_hash: String::new(),
            worker: "w".into(),
            requests: vec![],
            properties: Default::default(),
            started_at: 9000,
        })
        .unwrap();
        let p = load(&st, "b", 30).unwrap();
        assert_eq!(p.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let fresh: Vec<Vec<String>> = p.iter().map(|p| p.new_failures.clone()).collect();
        // Build 3 reported no tests: build 4 is compared with build 2.
        assert_eq!(fresh, [vec![], vec!["a", "b"], vec![], vec!["c"]]);
        assert!(p[2].tests.is_none());
        assert_eq!(p[3].duration_ms, 500);
        assert_eq!(p[3].steps[0].duration_ms, Some(250));
        assert_eq!(p[3].warnings, 3);
        assert_eq!(p[3].figures["size"].value, 3.0);
        assert_eq!(load(&st, "b", 2).unwrap()[0].number, 3);
        assert!(load(&st, "nobody", 30).unwrap().is_empty());
    }
}
