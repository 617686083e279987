//! Throttling logins — workers' `hello` and people's `POST /api/v1/login`,
//! each with its own table ([`Logins::new`] names which in its log
//! lines): failed logins make the next attempt from the
//! same address, or for the same name, wait — refused without its
//! password being checked — for a back-off that doubles with each failure
//! (up to a cap); and they are logged once, then summarised, instead of a
//! line each.
//!
//! A plain state machine, like the scheduler engine: every method takes the
//! time, so the tests drive it with any clock. The worker listener
//! (`master/workers.rs`) holds one behind a mutex and logs what it
//! returns; the web login (`http/login.rs`) holds another in `Shared`.
//!
//! The policy (`docs/protocol.md`, "Login throttling"):
//! - Failures are counted per source address, per worker name and per
//!   (name, address) pair. The first [`Policy::free`] failures of a key
//!   cost nothing; each further one blocks the key for `base`, doubled per
//!   failure, at most `max`. A key with no failure for `forget` is cleared.
//! - An attempt is checked only if none of its keys is blocked; otherwise
//!   it is refused at once, saying when to try again.
//! - A worker that logged in successfully from an address is *trusted*
//!   there: the blocks of its name and of the address (which another
//!   client's failures may have caused) do not apply to it, only the pair's
//!   own. So a worker reconnecting from where it always runs is not locked
//!   out by someone guessing its password elsewhere, and never waits longer
//!   than `max` after its own failures.
//! - The first failure from an address is logged; the further failures and
//!   refusals from it are counted and logged as one line per
//!   [`Policy::summary`] ("N more failed worker logins from ADDR …").
//! - Memory is bounded: each table holds at most [`Policy::max_keys`]
//!   keys; cleared keys go first, then the ones that failed longest ago.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;

use crate::store::Millis;

/// The numbers of the policy (the defaults are the master's).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures of a key before it is blocked at all.
    pub free: u32,
    /// The first block, in ms; doubled with each further failure.
    pub base_ms: Millis,
    /// The longest block.
    pub max_ms: Millis,
    /// A key with no failure for this long starts afresh.
    pub forget_ms: Millis,
    /// At most one summary line per address in this time.
    pub summary_ms: Millis,
    /// Keys per table.
    pub max_keys: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            free: 3,
            base_ms: 1_000,
            max_ms: 30_000,
            forget_ms: 15 * 60_000,
            summary_ms: 60_000,
            max_keys: 4096,
        }
    }
}

/// What to do with a `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Check its name and password.
    Check,
    /// Refuse it unchecked: a key of it is blocked until `retry_at`.
    /// `log` is the line to log now, if any (else it was counted).
    Refuse {
        retry_at: Millis,
        log: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    failures: u32,
    last_failure: Millis,
    until: Millis,
}

/// What an address did since its last log line.
#[derive(Debug, Default)]
struct Summary {
    logged_at: Millis,
    count: u64,
    /// A few of the names tried, for the line (bounded).
    names: BTreeSet<String>,
    more_names: u64,
}

const NAMES_SHOWN: usize = 5;

#[derive(Debug, Default)]
pub struct Logins {
    /// Whose logins, for the log lines: "worker", "web".
    what: &'static str,
    policy: Policy,
    by_addr: HashMap<IpAddr, Record>,
    by_name: HashMap<String, Record>,
    by_pair: HashMap<(String, IpAddr), Record>,
    /// Where each worker last logged in successfully.
    trusted: HashMap<String, IpAddr>,
    summaries: HashMap<IpAddr, Summary>,
}

impl Logins {
    /// Worker logins.
    pub fn new(policy: Policy) -> Logins {
        Logins::of("worker", policy)
    }

    /// Logins of `what` ("web"), named so in the log lines.
    pub fn of(what: &'static str, policy: Policy) -> Logins {
        Logins {
            what,
            policy,
            ..Logins::default()
        }
    }

    /// Whether to check a `hello` for `name` from `addr` now.
    pub fn admit(&mut self, name: &str, addr: IpAddr, now: Millis) -> Admission {
        let pair = blocked_until(self.by_pair.get(&(name.to_string(), addr)), now);
        let others = if self.trusted.get(name) == Some(&addr) {
            None
        } else {
            blocked_until(self.by_addr.get(&addr), now)
                .max(blocked_until(self.by_name.get(name), now))
        };
        match pair.max(others) {
            None => Admission::Check,
            Some(retry_at) => Admission::Refuse {
                retry_at,
                log: self.note(name, addr, now, None),
            },
        }
    }

    /// A `hello` that was checked and failed (unknown name or wrong
    /// password). Returns the line to log now, if any.
    pub fn failed(&mut self, name: &str, addr: IpAddr, now: Millis) -> Option<String> {
        let p = self.policy;
        fail(&mut self.by_addr, addr, now, &p);
        fail(&mut self.by_name, name.to_string(), now, &p);
        fail(&mut self.by_pair, (name.to_string(), addr), now, &p);
        self.note(
            name,
            addr,
            now,
            Some(format!(
                "{} login: wrong name or password for `{name}` from {addr} \
                 (further failed logins from {addr} are summarised every {} s)",
                self.what,
                self.policy.summary_ms / 1000
            )),
        )
    }

    /// A `hello` that was checked and accepted.
    pub fn succeeded(&mut self, name: &str, addr: IpAddr) {
        self.by_pair.remove(&(name.to_string(), addr));
        self.trusted.insert(name.to_string(), addr);
    }

    /// The summary lines due at `now`; forgets what is old. Call it at
    /// [`Logins::next_due`].
    pub fn flush(&mut self, now: Millis) -> Vec<String> {
        let period = self.policy.summary_ms;
        let mut lines = Vec::new();
        self.summaries.retain(|addr, s| {
            if s.logged_at + period > now {
                return true;
            }
            if s.count == 0 {
                // A quiet period: the next failure is logged at once.
                return false;
            }
            let mut names: Vec<String> = s.names.iter().map(|n| format!("`{n}`")).collect();
            if s.more_names > 0 {
                names.push(format!("{} other names", s.more_names));
            }
            lines.push(format!(
                "{} more failed {} logins from {addr} in the last {} s (names: {})",
                s.count,
                self.what,
                (now - s.logged_at) / 1000,
                names.join(", ")
            ));
            *s = Summary {
                logged_at: now,
                ..Summary::default()
            };
            true
        });
        let forget = self.policy.forget_ms;
        let fresh = |r: &Record| r.until > now || r.last_failure + forget > now;
        self.by_addr.retain(|_, r| fresh(r));
        self.by_name.retain(|_, r| fresh(r));
        self.by_pair.retain(|_, r| fresh(r));
        lines.sort();
        lines
    }

    /// When [`Logins::flush`] has something to do next.
    pub fn next_due(&self) -> Option<Millis> {
        let period = self.policy.summary_ms;
        self.summaries.values().map(|s| s.logged_at + period).min()
    }

    /// Counts an attempt in its address's summary; returns `first` (the
    /// line for a failure) when nothing was logged for the address lately.
    fn note(
        &mut self,
        name: &str,
        addr: IpAddr,
        now: Millis,
        first: Option<String>,
    ) -> Option<String> {
        if let Some(s) = self.summaries.get_mut(&addr) {
            s.count += 1;
            if s.names.contains(name) || s.names.len() < NAMES_SHOWN {
                s.names.insert(name.to_string());
            } else {
                s.more_names += 1;
            }
            return None;
        }
        // Refusals before any logged failure (after a restart of the
        // summary) are logged like a first failure.
        let line = first.unwrap_or_else(|| {
            format!(
                "too many failed logins: {} `{name}` from {addr} refused unchecked \
                 (further refusals from {addr} are summarised every {} s)",
                self.what,
                self.policy.summary_ms / 1000
            )
        });
        if self.summaries.len() >= self.policy.max_keys {
            // Bounded: the oldest summary goes (its count is lost).
            if let Some(oldest) = self
                .summaries
                .iter()
                .min_by_key(|(_, s)| s.logged_at)
                .map(|(a, _)| *a)
            {
                self.summaries.remove(&oldest);
            }
        }
        self.summaries.insert(
            addr,
            Summary {
                logged_at: now,
                ..Summary::default()
            },
        );
        Some(line)
    }
}

fn blocked_until(r: Option<&Record>, now: Millis) -> Option<Millis> {
    r.map(|r| r.until).filter(|&u| u > now)
}

fn fail<K: Hash + Eq + Clone>(table: &mut HashMap<K, Record>, key: K, now: Millis, p: &Policy) {
    if !table.contains_key(&key) && table.len() >= p.max_keys {
        evict(table, now, p);
    }
    let r = table.entry(key).or_default();
    if r.failures > 0 && r.last_failure + p.forget_ms <= now {
        *r = Record::default();
    }
    r.failures = r.failures.saturating_add(1);
    r.last_failure = now;
    if r.failures > p.free {
        let doublings = (r.failures - p.free - 1).min(30);
        let block = p.base_ms.saturating_mul(1 << doublings).min(p.max_ms);
        r.until = now + block;
    }
}

/// Makes room for one key: the forgotten ones go, else the one that
/// failed longest ago.
fn evict<K: Hash + Eq + Clone>(table: &mut HashMap<K, Record>, now: Millis, p: &Policy) {
    table.retain(|_, r| r.until > now || r.last_failure + p.forget_ms > now);
    if table.len() >= p.max_keys {
        if let Some(k) = table
            .iter()
            .min_by_key(|(_, r)| r.last_failure)
            .map(|(k, _)| k.clone())
        {
            table.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests;
