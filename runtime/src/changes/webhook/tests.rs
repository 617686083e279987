//! Payload parsing never panics; fixtures of real deliveries parse.

use super::payload::timestamp;
use super::*;

#[test]
fn malformed_payloads_are_errors_not_panics() {
    for v in [
        json!(null),
        json!([]),
        json!({"ref": 3}),
        json!({"ref": "refs/heads/x", "repository": {"clone_url": "u"}, "commits": [1]}),
        json!({"ref": "refs/heads/x", "repository": {"clone_url": "u"}, "commits": "no"}),
        json!({"action": "opened", "pull_request": []}),
        json!({"action": "opened", "number": "7", "pull_request": {}}),
    ] {
        for ev in ["push", "pull_request"] {
            let _ = github(ev, &v);
            let _ = gitea(ev, &v);
        }
        for ev in ["Push Hook", "Merge Request Hook", "Tag Push Hook"] {
            let _ = gitlab(ev, &v);
        }
        let _ = json_changes(&v);
    }
    let e = github("push", &json!({"ref": "refs/heads/x"})).unwrap_err();
    assert!(e.1.contains("repository.clone_url"), "{}", e.1);
    let e = github(
        "push",
        &json!({"ref": "refs/heads/x", "repository": {"clone_url": "u"}, "commits": [{"message": "m"}]}),
    )
    .unwrap_err();
    assert_eq!(e.1, "missing field `commits[0].id`");
}

/// Every value of every fixture replaced by every other JSON type:
/// the receivers answer (an outcome or a 400), they never panic.
#[test]
fn mutated_fixtures_never_panic() {
    fn paths(v: &Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let mut p = at.clone();
                    p.push(k.clone());
                    paths(x, p, out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let mut p = at.clone();
                    p.push(i.to_string());
                    paths(x, p, out);
                }
            }
            _ => {}
        }
    }
    fn slot<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
        path.iter().try_fold(v, |v, k| match v {
            Value::Object(m) => m.get_mut(k),
            Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        })
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/webhooks");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let original: Value = serde_json::from_str(&text).unwrap();
        let mut all = Vec::new();
        paths(&original, Vec::new(), &mut all);
        let replacements = [
            json!(null),
            json!(7),
            json!("x"),
            json!([]),
            json!({}),
            json!(true),
        ];
        for p in &all {
            for r in &replacements {
                let mut v = original.clone();
                if let Some(x) = slot(&mut v, p) {
                    *x = r.clone();
                }
                for ev in ["push", "pull_request"] {
                    let _ = github(ev, &v);
                    let _ = gitea(ev, &v);
                }
                for ev in ["Push Hook", "Tag Push Hook", "Merge Request Hook"] {
                    let _ = gitlab(ev, &v);
                }
                for ev in ["repo:push", "pullrequest:created"] {
                    let _ = bitbucket_cloud(ev, &v);
                }
                for ev in ["repo:refs_changed", "pr:opened", "pr:from_ref_updated"] {
                    let _ = bitbucket_server(ev, &v);
                }
                let _ = json_changes(&v);
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "{checked}");
}

#[test]
fn timestamps() {
    let v = json!({"a": "2015-05-05T19:40:15-04:00", "b": "2013-12-03 17:23:34 UTC", "c": "x"});
    assert_eq!(timestamp(&v, "a"), 1_430_869_215_000);
    assert_eq!(timestamp(&v, "b"), 1_386_091_414_000);
    assert_eq!(timestamp(&v, "c"), 0);
}

/// Bitbucket's errors name the field by its path in the payload.
#[test]
fn bitbucket_errors_name_the_field() {
    let e = bitbucket_cloud(
        "repo:push",
        &json!({"repository": {"links": {"html": {"href": "u"}}}}),
    )
    .unwrap_err();
    assert_eq!(e.1, "missing field `push.changes`");
    let e = bitbucket_cloud(
        "repo:push",
        &json!({"repository": {"links": {"html": {"href": "u"}}},
                "push": {"changes": [{"new": {"type": "branch", "name": "m", "target": {}}}]}}),
    )
    .unwrap_err();
    assert_eq!(e.1, "missing field `push.changes[0].new.target.hash`");
    let e = bitbucket_cloud("repo:push", &json!({"push": {"changes": []}})).unwrap_err();
    assert_eq!(e.1, "missing field `repository.links.html.href`");
    let repo = json!({"links": {"clone": [{"name": "http", "href": "https://h/scm/p/r.git"}]}});
    let e = bitbucket_server(
        "repo:refs_changed",
        &json!({"repository": repo, "changes": [{"ref": {"displayId": "main"}}]}),
    )
    .unwrap_err();
    assert_eq!(e.1, "missing field `changes[0].toHash`");
    let e = bitbucket_server(
        "repo:refs_changed",
        &json!({"repository": {}, "changes": []}),
    )
    .unwrap_err();
    assert!(e.1.contains("repository.links.clone"), "{}", e.1);
    let e = bitbucket_server("pr:opened", &json!({"pullRequest": {"id": 1}})).unwrap_err();
    assert_eq!(e.1, "missing field `pullRequest.fromRef.latestCommit`");
    // Server dates carry the offset without a colon.
    let v = json!({"d": "2024-03-02T10:20:30+1000"});
    assert_eq!(timestamp(&v, "d"), 1_709_338_830_000);
}
