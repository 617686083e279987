//! Content hashes: of each entity (and step), and of a whole graph.
//!
//! Hashes decide what a reload changes and which definition a build ran,
//! so the compiler sets them ([`set_hashes`]) and the runtime checks them
//! on every graph it reads from outside ([`verify_hashes`]).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Builder, Graph};

/// Sets every entity's (and step's) content hash, each taken with its own
/// `hash` field empty; a builder's covers its steps' hashes.
pub fn set_hashes(g: &mut Graph) {
    fn rehash<T: Serialize>(item: &mut T, field: impl Fn(&mut T) -> &mut String) {
        field(item).clear();
        let h = content_hash(item);
        *field(item) = h;
    }
    rehash(&mut g.master, |x| &mut x.hash);
    for w in &mut g.workers {
        rehash(w, |x| &mut x.hash);
    }
    for l in &mut g.locks {
        rehash(l, |x| &mut x.hash);
    }
    for c in &mut g.change_sources {
        rehash(c, |x| &mut x.hash);
    }
    for s in &mut g.schedulers {
        rehash(s, |x| &mut x.hash);
    }
    let mut steps = StepMemo::default();
    for b in &mut g.builders {
        for st in &mut b.steps {
            st.hash = steps.hash(st);
        }
        b.hash = builder_hash(b);
    }
    for r in &mut g.reporters {
        rehash(r, |x| &mut x.hash);
    }
}

/// Step hashes of one [`set_hashes`], remembered by content: a large
/// config repeats the same steps (a template's, with one of a dozen shared
/// ~600-character `warning-pattern`s) in thousands of builders, and
/// escaping each pattern into JSON and hashing it again was most of `bbc
/// check` on issue 12's shape (docs/perf.md). The key is the step's
/// serialisation without its pattern, plus the pattern itself: both
/// compared in full, so a hit is a step whose serialisation is byte for
/// byte the same, and its hash is what [`content_hash`] computes.
#[derive(Default)]
struct StepMemo {
    /// Serialisation without the pattern → (pattern, hash) of each
    /// variant seen (a handful: the distinct patterns).
    seen: std::collections::HashMap<Vec<u8>, Vec<(std::sync::Arc<str>, String)>>,
    key: Vec<u8>,
}

/// Patterns shorter than this are hashed in place: cheap to escape, and
/// not worth keeping a copy of the step's serialisation for.
const MEMO_MIN_PATTERN: usize = 64;

fn pattern_slot(kind: &mut crate::StepKind) -> Option<&mut Option<std::sync::Arc<str>>> {
    use crate::StepKind::*;
    match kind {
        Shell {
            warning_pattern, ..
        }
        | Compile {
            warning_pattern, ..
        }
        | Test {
            warning_pattern, ..
        } => Some(warning_pattern),
        _ => None,
    }
}

impl StepMemo {
    /// The content hash of `st` (whose `hash` it clears).
    fn hash(&mut self, st: &mut crate::Step) -> String {
        st.hash.clear();
        let pattern = match pattern_slot(&mut st.kind) {
            Some(slot) if slot.as_ref().is_some_and(|p| p.len() >= MEMO_MIN_PATTERN) => slot.take(),
            _ => return content_hash(&*st),
        };
        self.key.clear();
        // Serialising plain data into memory cannot fail.
        let _ = serde_json::to_writer(&mut self.key, &*st);
        if let Some(slot) = pattern_slot(&mut st.kind) {
            *slot = pattern;
        }
        let pattern: std::sync::Arc<str> = match pattern_slot(&mut st.kind) {
            Some(Some(p)) => p.clone(),
            _ => std::sync::Arc::from(""),
        };
        // The same allocation (steps sharing the config's one copy) is the
        // same text; otherwise the texts are compared.
        if let Some((_, h)) = self.seen.get(&self.key[..]).and_then(|v| {
            v.iter()
                .find(|(p, _)| std::sync::Arc::ptr_eq(p, &pattern) || **p == *pattern)
        }) {
            return h.clone();
        }
        let h = content_hash(&*st);
        self.seen
            .entry(self.key.clone())
            .or_default()
            .push((pattern, h.clone()));
        h
    }
}

/// Checks that a graph read from outside (a file, an API request) carries
/// the content hashes of what it holds: hashes decide what a reload
/// changes and which definition a build ran, so a hand-edited graph with
/// stale hashes is refused. Returns the entities whose hash is wrong.
pub fn verify_hashes(g: &Graph) -> Result<(), String> {
    // One entity at a time: a copy of the whole graph would double the
    // memory an apply of a large config needs.
    fn fresh<T: Serialize + Clone>(item: &T, field: impl Fn(&mut T) -> &mut String) -> String {
        let mut copy = item.clone();
        field(&mut copy).clear();
        content_hash(&copy)
    }
    let mut wrong = Vec::new();
    let mut check = |kind: &str, name: &str, given: &str, real: String| {
        if given != real {
            wrong.push(format!("{kind} `{name}`"));
        }
    };
    check(
        "master",
        "",
        &g.master.hash,
        fresh(&g.master, |x| &mut x.hash),
    );
    macro_rules! each {
        ($field:ident, $kind:expr) => {
            for x in &g.$field {
                check($kind, &x.name, &x.hash, fresh(x, |x| &mut x.hash));
            }
        };
    }
    each!(workers, "worker");
    each!(locks, "lock");
    each!(change_sources, "change source");
    each!(schedulers, "scheduler");
    each!(reporters, "reporter");
    for b in &g.builders {
        // A builder's hash covers its steps' hashes: check those first, then
        // the builder over them.
        let steps_ok = b
            .steps
            .iter()
            .all(|st| st.hash == fresh(st, |x| &mut x.hash));
        if !steps_ok || builder_hash(b) != b.hash {
            wrong.push(format!("builder `{}`", b.name));
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    let n = wrong.len();
    wrong.truncate(5);
    Err(format!(
        "{n} content hash(es) do not match their entity ({}{}): the graph was edited after `bbc compile`; compile the config again",
        wrong.join(", "),
        if n > 5 { ", …" } else { "" }
    ))
}

/// A builder's content hash: of its serialisation with each step replaced
/// by the step's hash (and its own `hash` empty). The step hashes already
/// cover the steps' content, so each step is serialised and hashed once,
/// not a second time inside its builder: in a config where thousands of
/// steps carry ~600-character warning patterns that was a fifth of `bbc
/// check` (docs/perf.md). Takes the step hashes as they stand: set them
/// first.
pub fn builder_hash(b: &Builder) -> String {
    /// `Builder` with `steps` as their hashes. Field for field in the order
    /// of `Builder`; the destructuring below is exhaustive, so a field
    /// added to `Builder` does not compile until it is added here too.
    #[derive(Serialize)]
    struct View<'a> {
        name: &'a String,
        description: &'a Option<String>,
        workers: &'a Vec<String>,
        tags: &'a Vec<String>,
        env: &'a std::collections::BTreeMap<String, crate::Text>,
        // As `Builder` serialises it: absent when empty.
        #[serde(skip_serializing_if = "no_secrets")]
        env_secrets: &'a std::collections::BTreeMap<String, crate::Credential>,
        properties: &'a std::collections::BTreeMap<String, crate::Scalar>,
        workdir: &'a String,
        collapse_requests: bool,
        priority: i64,
        locks: &'a Vec<crate::LockUse>,
        max_time_ms: Option<u64>,
        steps: Vec<&'a str>,
        hash: &'a str,
    }
    fn no_secrets(m: &&std::collections::BTreeMap<String, crate::Credential>) -> bool {
        m.is_empty()
    }
    let Builder {
        name,
        description,
        workers,
        tags,
        env,
        env_secrets,
        properties,
        workdir,
        collapse_requests,
        priority,
        locks,
        max_time_ms,
        steps,
        hash: _,
    } = b;
    content_hash(&View {
        name,
        description,
        workers,
        tags,
        env,
        env_secrets,
        properties,
        workdir,
        collapse_requests: *collapse_requests,
        priority: *priority,
        locks,
        max_time_ms: *max_time_ms,
        steps: steps.iter().map(|s| s.hash.as_str()).collect(),
        hash: "",
    })
}

/// The content hash of a whole graph, from its entities' hashes (each of
/// which covers its entity's whole definition, name included) rather than
/// from the graph's serialisation: a master with a thousand builders hashes
/// a few kilobytes at start-up instead of megabytes.
pub fn graph_hash(g: &Graph) -> String {
    let mut h = Sha256::new();
    h.update(g.format.as_bytes());
    h.update(g.version.to_le_bytes());
    let mut entity = |kind: &str, name: &str, hash: &str| {
        for part in [kind, name, hash] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
    };
    entity("master", "", &g.master.hash);
    for x in &g.workers {
        entity("worker", &x.name, &x.hash);
    }
    for x in &g.locks {
        entity("lock", &x.name, &x.hash);
    }
    for x in &g.change_sources {
        entity("change-source", &x.name, &x.hash);
    }
    for x in &g.schedulers {
        entity("scheduler", &x.name, &x.hash);
    }
    for x in &g.builders {
        entity("builder", &x.name, &x.hash);
    }
    for x in &g.reporters {
        entity("reporter", &x.name, &x.hash);
    }
    hex16(&h.finalize())
}

fn hex16(digest: &[u8]) -> String {
    let mut hex = String::with_capacity(32);
    for byte in &digest[..16] {
        use std::fmt::Write;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
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
        hex16(&Sha256::digest(&buf[..]))
    })
}
