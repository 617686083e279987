//! Entity diffing: two graphs matched entity by entity (by kind and name)
//! and compared by content hash; only changed entities are looked into
//! field by field, so a large config with few changes diffs quickly.
//! `bbc diff`, `bbc apply`'s plan and the master's apply report all start
//! from here.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::Graph;

/// Entities added, removed or changed (by hash) between two lists:
/// `(None, Some(new))`, `(Some(old), None)` or `(Some(old), Some(new))`.
pub fn pairs<'a, T>(
    old: &'a [T],
    new: &'a [T],
    name: impl Fn(&T) -> &str,
    hash: impl Fn(&T) -> &str,
) -> Vec<(Option<&'a T>, Option<&'a T>)> {
    let mut out = Vec::new();
    let old_by: HashMap<&str, &T> = old.iter().map(|x| (name(x), x)).collect();
    let new_by: HashMap<&str, &T> = new.iter().map(|x| (name(x), x)).collect();
    for n in new {
        match old_by.get(name(n)) {
            None => out.push((None, Some(n))),
            Some(o) if hash(o) != hash(n) => out.push((Some(*o), Some(n))),
            _ => {}
        }
    }
    for o in old {
        if !new_by.contains_key(name(o)) {
            out.push((Some(o), None));
        }
    }
    out
}

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

/// The changes of one kind of entity. Entities are matched by name and
/// compared by hash first; only changed ones are looked into field by
/// field (so a large config with few changes diffs quickly).
fn diff_kind<T: Serialize>(
    kind: &'static str,
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &str,
    hash: impl Fn(&T) -> &str,
    out: &mut Vec<Change>,
) {
    for pair in pairs(old, new, &name, hash) {
        let change = match pair {
            (None, Some(n)) => Change {
                kind,
                name: name(n).to_string(),
                change: "added",
                ..Default::default()
            },
            (Some(o), None) => Change {
                kind,
                name: name(o).to_string(),
                change: "removed",
                ..Default::default()
            },
            (Some(o), Some(n)) => {
                let old_v = serde_json::to_value(o).unwrap_or_default();
                let v = serde_json::to_value(n).unwrap_or_default();
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
                let steps = if kind == "builder" {
                    step_changes(&old_v["steps"], &v["steps"])
                } else {
                    Vec::new()
                };
                Change {
                    kind,
                    name: name(n).to_string(),
                    change: "changed",
                    fields,
                    steps,
                }
            }
            (None, None) => continue,
        };
        out.push(change);
    }
}

/// What changes between two graphs, sorted by kind and name.
pub fn diff(old: &Graph, new: &Graph) -> Vec<Change> {
    let mut out = Vec::new();
    let o = &mut out;
    diff_kind(
        "worker",
        &old.workers,
        &new.workers,
        |x| &x.name,
        |x| &x.hash,
        o,
    );
    diff_kind("lock", &old.locks, &new.locks, |x| &x.name, |x| &x.hash, o);
    diff_kind(
        "change-source",
        &old.change_sources,
        &new.change_sources,
        |x| &x.name,
        |x| &x.hash,
        o,
    );
    diff_kind(
        "scheduler",
        &old.schedulers,
        &new.schedulers,
        |x| &x.name,
        |x| &x.hash,
        o,
    );
    diff_kind(
        "builder",
        &old.builders,
        &new.builders,
        |x| &x.name,
        |x| &x.hash,
        o,
    );
    diff_kind(
        "reporter",
        &old.reporters,
        &new.reporters,
        |x| &x.name,
        |x| &x.hash,
        o,
    );
    diff_kind(
        "master",
        std::slice::from_ref(&old.master),
        std::slice::from_ref(&new.master),
        |_| "master",
        |x| &x.hash,
        o,
    );
    out.sort_by(|x, y| (x.kind, &x.name).cmp(&(y.kind, &y.name)));
    out
}
