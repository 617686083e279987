//! `bbc diff OLD NEW`: what changes between two configs, at the level of
//! the lowered graph. Entities are matched by kind and name and compared
//! by content hash; a changed builder lists its changed steps and fields.
//! This is the plan `bbc apply` shows before it reloads a master.

use std::collections::BTreeMap;

use bbc_compiler::graph::Graph;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    /// "added", "removed" or "changed".
    pub change: &'static str,
    /// Top-level fields whose value changed (for "changed").
    pub fields: Vec<String>,
    /// Steps added, removed or changed (builders only), as "+name", "-name", "~name".
    pub steps: Vec<String>,
}

fn entities(g: &Graph) -> Vec<(&'static str, String, Value)> {
    let mut out = Vec::new();
    let mut push = |kind: &'static str, v: Value| {
        if let Some(arr) = v.as_array() {
            for e in arr {
                let name = e["name"].as_str().unwrap_or("").to_string();
                out.push((kind, name, e.clone()));
            }
        }
    };
    push(
        "worker",
        serde_json::to_value(&g.workers).unwrap_or_default(),
    );
    push("lock", serde_json::to_value(&g.locks).unwrap_or_default());
    push(
        "change-source",
        serde_json::to_value(&g.change_sources).unwrap_or_default(),
    );
    push(
        "scheduler",
        serde_json::to_value(&g.schedulers).unwrap_or_default(),
    );
    push(
        "builder",
        serde_json::to_value(&g.builders).unwrap_or_default(),
    );
    push(
        "reporter",
        serde_json::to_value(&g.reporters).unwrap_or_default(),
    );
    out.push((
        "master",
        "master".into(),
        serde_json::to_value(&g.master).unwrap_or_default(),
    ));
    out
}

fn step_changes(old: &Value, new: &Value) -> Vec<String> {
    let index = |v: &Value| -> BTreeMap<String, String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or("").to_string(),
                    s["hash"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let (a, b) = (index(old), index(new));
    let mut out = Vec::new();
    for (n, h) in &b {
        match a.get(n) {
            None => out.push(format!("+{n}")),
            Some(x) if x != h => out.push(format!("~{n}")),
            _ => {}
        }
    }
    for n in a.keys() {
        if !b.contains_key(n) {
            out.push(format!("-{n}"));
        }
    }
    // Same steps, different order.
    if out.is_empty() && a.len() == b.len() {
        let order = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|s| s["name"].as_str().unwrap_or("").to_string())
                .collect()
        };
        if order(old) != order(new) {
            out.push("~(order)".into());
        }
    }
    out
}

pub fn diff(old: &Graph, new: &Graph) -> Vec<Change> {
    let a: BTreeMap<(&str, String), Value> = entities(old)
        .into_iter()
        .map(|(k, n, v)| ((k, n), v))
        .collect();
    let b: BTreeMap<(&str, String), Value> = entities(new)
        .into_iter()
        .map(|(k, n, v)| ((k, n), v))
        .collect();
    let mut out = Vec::new();
    for ((kind, name), v) in &b {
        match a.get(&(*kind, name.clone())) {
            None => out.push(Change {
                kind,
                name: name.clone(),
                change: "added",
                ..Default::default()
            }),
            Some(old_v) if old_v["hash"] != v["hash"] => {
                let mut fields = Vec::new();
                if let (Some(o), Some(n)) = (old_v.as_object(), v.as_object()) {
                    for (k, nv) in n {
                        if k != "hash" && o.get(k) != Some(nv) {
                            fields.push(k.clone());
                        }
                    }
                    for k in o.keys() {
                        if !n.contains_key(k) {
                            fields.push(k.clone());
                        }
                    }
                }
                let steps = if *kind == "builder" {
                    step_changes(&old_v["steps"], &v["steps"])
                } else {
                    Vec::new()
                };
                out.push(Change {
                    kind,
                    name: name.clone(),
                    change: "changed",
                    fields,
                    steps,
                });
            }
            _ => {}
        }
    }
    for (kind, name) in a.keys() {
        if !b.contains_key(&(*kind, name.clone())) {
            out.push(Change {
                kind,
                name: name.clone(),
                change: "removed",
                ..Default::default()
            });
        }
    }
    out.sort_by(|x, y| (x.kind, &x.name).cmp(&(y.kind, &y.name)));
    out
}

pub fn human(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes\n".into();
    }
    let mut s = String::new();
    for c in changes {
        let mark = match c.change {
            "added" => '+',
            "removed" => '-',
            _ => '~',
        };
        s.push_str(&format!("{mark} {} {}", c.kind, c.name));
        if !c.fields.is_empty() {
            s.push_str(&format!(" ({})", c.fields.join(", ")));
        }
        s.push('\n');
        for st in &c.steps {
            s.push_str(&format!("    step {st}\n"));
        }
    }
    let count = |k: &str| changes.iter().filter(|c| c.change == k).count();
    s.push_str(&format!(
        "{} added, {} changed, {} removed\n",
        count("added"),
        count("changed"),
        count("removed")
    ));
    s
}
