//! Lowering: checked model → [`Graph`].
//!
//! Resolves tag selectors to builder names, sorts every entity list by
//! name and stamps each entity with the content hash of its definition.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::check::Index;
use crate::decode::Model;
use crate::graph::*;

pub fn lower(m: Model) -> Graph {
    let ix = Index::new(&m);
    let scheduler_builders: Vec<Vec<String>> = ix
        .selected
        .iter()
        .map(|sel| Index::names(&m, sel))
        .collect();
    let all: Vec<String> = {
        let mut v: Vec<String> = m.builders.iter().map(|b| b.item.name.clone()).collect();
        v.sort();
        v
    };
    let reporter_builders: Vec<Vec<String>> = m
        .reporters
        .iter()
        .map(|d| {
            if d.selector.given {
                Index::names(&m, &ix.resolve(&m, &d.selector))
            } else {
                // No selector: a reporter reports every builder.
                all.clone()
            }
        })
        .collect();
    drop(ix);
    let mut g = Graph {
        format: FORMAT.to_string(),
        version: VERSION,
        master: m.master,
        workers: m.workers.into_iter().map(|d| d.item).collect(),
        locks: m.locks.into_iter().map(|d| d.item).collect(),
        change_sources: m.change_sources.into_iter().map(|d| d.item).collect(),
        schedulers: m
            .schedulers
            .into_iter()
            .zip(scheduler_builders)
            .map(|(d, builders)| Scheduler { builders, ..d.item })
            .collect(),
        builders: m.builders.into_iter().map(|d| d.item).collect(),
        reporters: m
            .reporters
            .into_iter()
            .zip(reporter_builders)
            .map(|(d, builders)| Reporter { builders, ..d.item })
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

/// SHA-256 (first 16 bytes, hex) of the entity's JSON serialisation, taken
/// while its own `hash` field is still empty. The serialisation is canonical:
/// struct fields in declaration order, maps ordered by key.
pub fn content_hash<T: Serialize>(item: &T) -> String {
    thread_local! {
        // One buffer reused for every entity: serialise, then hash once.
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        buf.clear();
        // Serialising plain data into memory cannot fail.
        let _ = serde_json::to_writer(&mut *buf, item);
        let digest = Sha256::digest(&buf[..]);
        let mut hex = String::with_capacity(32);
        for byte in &digest[..16] {
            use std::fmt::Write;
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    })
}
