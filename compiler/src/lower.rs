//! Lowering: checked model → [`Graph`].
//!
//! Resolves tag selectors to builder names, sorts every entity list by
//! name and stamps each entity with the content hash of its definition.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::check::resolve;
use crate::decode::Model;
use crate::graph::*;

pub fn lower(m: &Model) -> Graph {
    let mut g = Graph {
        format: FORMAT.to_string(),
        version: VERSION,
        master: m.master.clone(),
        workers: m.workers.iter().map(|d| d.item.clone()).collect(),
        locks: m.locks.iter().map(|d| d.item.clone()).collect(),
        change_sources: m.change_sources.iter().map(|d| d.item.clone()).collect(),
        schedulers: m
            .schedulers
            .iter()
            .map(|d| {
                let mut s = d.item.clone();
                s.builders = resolve(m, &d.selector);
                s
            })
            .collect(),
        builders: m.builders.iter().map(|d| d.item.clone()).collect(),
        reporters: m
            .reporters
            .iter()
            .map(|d| {
                let mut r = d.item.clone();
                r.builders = if d.selector.given {
                    resolve(m, &d.selector)
                } else {
                    // No selector: a reporter reports every builder.
                    let mut all: Vec<String> =
                        m.builders.iter().map(|b| b.item.name.clone()).collect();
                    all.sort();
                    all
                };
                r
            })
            .collect(),
    };
    g.workers.sort_by(|a, b| a.name.cmp(&b.name));
    g.locks.sort_by(|a, b| a.name.cmp(&b.name));
    g.change_sources.sort_by(|a, b| a.name.cmp(&b.name));
    g.schedulers.sort_by(|a, b| a.name.cmp(&b.name));
    g.builders.sort_by(|a, b| a.name.cmp(&b.name));
    g.reporters.sort_by(|a, b| a.name.cmp(&b.name));

    g.master.hash = String::new();
    g.master.hash = content_hash(&g.master);
    for w in &mut g.workers {
        w.hash = content_hash(w);
    }
    for l in &mut g.locks {
        l.hash = content_hash(l);
    }
    for c in &mut g.change_sources {
        c.hash = content_hash(c);
    }
    for s in &mut g.schedulers {
        s.hash = content_hash(s);
    }
    for b in &mut g.builders {
        for st in &mut b.steps {
            st.hash = content_hash(st);
        }
        b.hash = content_hash(b);
    }
    for r in &mut g.reporters {
        r.hash = content_hash(r);
    }
    g
}

/// SHA-256 (first 16 bytes, hex) of the entity's canonical JSON with its
/// own `hash` field empty. Canonical: serde_json objects are ordered maps.
pub fn content_hash<T: Serialize>(item: &T) -> String {
    let mut v = serde_json::to_value(item).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("hash".into(), serde_json::Value::String(String::new()));
    }
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}
