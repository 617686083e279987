//! Several masters on one store (PostgreSQL): who a master is, how long
//! its word holds, and the decisions made from that. Every decision here
//! is a pure function of the rows and of the time, passed in as an
//! argument (as the schedulers' engine takes it), so the tests drive
//! them with any clock; the PostgreSQL backend reads the rows, asks these
//! functions and writes what they say in the same transaction.
//!
//! - A master *joins* with a fresh id and renews a row in `masters` every
//!   heartbeat; the row's `expires_at` is its lease. A master whose lease
//!   has expired is dead to the others: its running builds are
//!   interrupted and their requests run again elsewhere.
//! - A named lease (`leases`: the schedulers, the pollers) has one holder
//!   at a time: taken when free or expired, renewed by its holder.

use super::Millis;

/// How often a master renews its row, and how long the row holds without
/// renewal. The defaults: every 2 s, for 10 s (four renewals can be missed
/// before the others take over). `BBC_MASTER_LEASE_MS` shortens both
/// (the heartbeat is a fifth of the lease), for the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    pub heartbeat_ms: Millis,
    pub lease_ms: Millis,
}

impl Default for LeaseTimes {
    fn default() -> Self {
        LeaseTimes {
            heartbeat_ms: 2_000,
            lease_ms: 10_000,
        }
    }
}

impl LeaseTimes {
    /// The defaults, or a lease of `BBC_MASTER_LEASE_MS` (at least 500 ms).
    pub fn from_env() -> LeaseTimes {
        match std::env::var("BBC_MASTER_LEASE_MS")
            .ok()
            .and_then(|v| v.trim().parse::<Millis>().ok())
        {
            Some(ms) => LeaseTimes::of(ms),
            None => LeaseTimes::default(),
        }
    }

    /// A lease of `lease_ms` (at least 500 ms), renewed five times a lease.
    pub fn of(lease_ms: Millis) -> LeaseTimes {
        let lease_ms = lease_ms.max(500);
        LeaseTimes {
            heartbeat_ms: (lease_ms / 5).max(100),
            lease_ms,
        }
    }
}

/// How long one renewal (this master's row and its named leases) may
/// take before the master gives it up as failed: a third of the lease.
/// The heartbeat comes every fifth of a lease and waits for nothing else,
/// so the next renewal after a successful one has started within a third
/// of a lease and ended (renewed, or failed and the master stopped acting
/// as a holder) within two thirds: never after the lease it renewed last
/// has expired, which is when another master may take it.
pub fn renewal_bound(lease_ms: Millis) -> Millis {
    (lease_ms / 3).max(1)
}

/// What one renewal found ([`crate::store::Store::renew`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// `false`: this master's row was gone (another master found its
    /// lease expired and took its builds over); it is back now, with a
    /// new lease, and must stop the builds it still runs.
    pub alive: bool,
    /// For each named lease asked for, in order: whether this master
    /// holds it now, until `now + lease_ms`.
    pub held: Vec<bool>,
}

/// Who a master process is: a fresh `id` per process (host, pid and a
/// random part), and a stable `name` that a restarted master shares with
/// its previous incarnation (by default the host and the state
/// directory), so that it takes its own builds back at once instead of
/// waiting for its old lease to expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterIdentity {
    pub id: String,
    pub name: String,
}

impl MasterIdentity {
    /// A new identity named `name`.
    pub fn new(name: &str) -> MasterIdentity {
        let mut r = [0u8; 4];
        // The system's generator (ring, as session ids); a failure only
        // makes the id less unique, which the pid and time still cover.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
        let host = hostname();
        let t = crate::state::now_ms() % 1_000_000;
        MasterIdentity {
            id: format!(
                "{host}-{}-{t:06}-{:08x}",
                std::process::id(),
                u32::from_be_bytes(r)
            ),
            name: name.to_string(),
        }
    }

    /// The default name of a master using `state_dir`: `HOST:DIR`.
    pub fn default_name(state_dir: &std::path::Path) -> String {
        let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        format!("{}:{}", hostname(), dir.display())
    }
}

/// The host's name (the kernel's), or `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// One master's row as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MasterRecord {
    pub id: String,
    pub name: String,
    pub started_at: Millis,
    pub last_seen: Millis,
    /// Its lease: dead to the others from this instant.
    pub expires_at: Millis,
    /// The hash of the config it runs (none until it said, or a row
    /// written before schema version 3).
    pub config: Option<String>,
    /// The newest shared config it could not apply (its hash), and why
    /// (a secret it lacks, a graph its bbc cannot read).
    pub config_failed: Option<String>,
    pub config_error: Option<String>,
}

/// Where one master stands with a shared config (`bbc apply` through
/// any master reaches all of them; docs/store.md, "Several masters").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigAck {
    /// It runs that config.
    Applied,
    /// It tried and refused it: the error says why; it keeps the config
    /// it ran.
    Failed(String),
    /// It has not said yet.
    Waiting,
}

/// What `m`'s row says of the config `hash`.
pub fn config_ack(m: &MasterRecord, hash: &str) -> ConfigAck {
    if m.config.as_deref() == Some(hash) {
        ConfigAck::Applied
    } else if m.config_failed.as_deref() == Some(hash) {
        ConfigAck::Failed(m.config_error.clone().unwrap_or_default())
    } else {
        ConfigAck::Waiting
    }
}

/// The live masters (lease not expired at `now`) with where each stands
/// with config `hash`; `done` when none of them is still `Waiting`.
pub fn config_acks(
    masters: &[MasterRecord],
    hash: &str,
    now: Millis,
) -> (Vec<(MasterRecord, ConfigAck)>, bool) {
    let live: Vec<_> = masters
        .iter()
        .filter(|m| !expired(m.expires_at, now))
        .map(|m| (m.clone(), config_ack(m, hash)))
        .collect();
    let done = live.iter().all(|(_, a)| *a != ConfigAck::Waiting);
    (live, done)
}

/// Whether a master that has handled the shared configs up to `seen`
/// (their sequence number) and runs `running` must apply the newest one,
/// `(seq, hash)`: only a newer one than it handled, and only if it does
/// not run it already (its own apply, heard back). A config it could not
/// apply is not tried again until a newer one comes.
pub fn must_apply(newest: Option<(u64, &str)>, seen: u64, running: &str) -> bool {
    newest.is_some_and(|(seq, hash)| seq > seen && hash != running)
}

/// Whether a lease ending at `expires_at` is over at `now`.
pub fn expired(expires_at: Millis, now: Millis) -> bool {
    expires_at <= now
}

/// Whether the build a master recorded as `runner` (none: a build stored
/// before masters were recorded) is left without a live master, as seen
/// by `me` at `now` from the rows `masters`: nobody runs it, or its master
/// has no row (already taken over), its lease expired, or it is a previous
/// incarnation of `me` (same name, another id).
pub fn orphaned(
    runner: Option<&str>,
    masters: &[MasterRecord],
    me: Option<&MasterIdentity>,
    now: Millis,
) -> bool {
    let Some(runner) = runner else {
        return true;
    };
    if me.is_some_and(|m| m.id == runner) {
        return false;
    }
    match masters.iter().find(|m| m.id == runner) {
        None => true,
        Some(m) => expired(m.expires_at, now) || me.is_some_and(|me| me.name == m.name),
    }
}

/// Whether `me` may take (or renew) a named lease held by `holder` until
/// `expires_at` (none: nobody ever took it).
pub fn can_take(holder: Option<(&str, Millis)>, me: &str, now: Millis) -> bool {
    match holder {
        None => true,
        Some((h, until)) => h == me || expired(until, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str, expires_at: Millis) -> MasterRecord {
        MasterRecord {
            id: id.into(),
            name: name.into(),
            started_at: 0,
            last_seen: expires_at - 10_000,
            expires_at,
            config: None,
            config_failed: None,
            config_error: None,
        }
    }

    #[test]
    fn a_shared_config_is_acknowledged_by_each_live_master() {
        let mut a = rec("a", "host:/a", 20_000);
        a.config = Some("h2".into());
        let mut b = rec("b", "host:/b", 20_000);
        b.config = Some("h1".into());
        b.config_failed = Some("h2".into());
        b.config_error = Some("secret `x` is missing".into());
        let mut c = rec("c", "host:/c", 20_000);
        c.config = Some("h1".into());
        // A dead master is not waited for.
        let dead = rec("d", "host:/d", 5_000);
        let rows = vec![a.clone(), b, c.clone(), dead];
        let (live, done) = config_acks(&rows, "h2", 10_000);
        let acks: Vec<_> = live
            .iter()
            .map(|(m, a)| (m.id.as_str(), a.clone()))
            .collect();
        assert_eq!(
            acks,
            vec![
                ("a", ConfigAck::Applied),
                ("b", ConfigAck::Failed("secret `x` is missing".into())),
                ("c", ConfigAck::Waiting),
            ]
        );
        assert!(!done);
        c.config = Some("h2".into());
        let (_, done) = config_acks(&[a, c], "h2", 10_000);
        assert!(done);
    }

    #[test]
    fn a_master_applies_only_a_newer_shared_config_it_does_not_run() {
        // Nothing shared yet.
        assert!(!must_apply(None, 0, "h1"));
        // A newer one it does not run.
        assert!(must_apply(Some((3, "h2")), 2, "h1"));
        // Its own apply, heard back: it runs it already.
        assert!(!must_apply(Some((3, "h2")), 2, "h2"));
        // One it handled already (applied, or refused: not tried again).
        assert!(!must_apply(Some((3, "h2")), 3, "h1"));
        // At start (nothing handled), the newest one wins over its file.
        assert!(must_apply(Some((1, "h2")), 0, "h1"));
    }

    #[test]
    fn a_lease_is_over_at_its_end() {
        assert!(!expired(1_000, 999));
        assert!(expired(1_000, 1_000));
        assert!(expired(1_000, 5_000));
    }

    #[test]
    fn only_builds_of_dead_masters_are_orphaned() {
        let me = MasterIdentity {
            id: "m2".into(),
            name: "host:/b".into(),
        };
        let rows = vec![
            rec("m1", "host:/a", 20_000),
            rec("m2", "host:/b", 20_000),
            rec("m0", "host:/b", 20_000),
        ];
        // A live master's build stays.
        assert!(!orphaned(Some("m1"), &rows, Some(&me), 10_000));
        // Mine stays.
        assert!(!orphaned(Some("m2"), &rows, Some(&me), 10_000));
        // My previous incarnation's (same name), even with time left.
        assert!(orphaned(Some("m0"), &rows, Some(&me), 10_000));
        // The live master's lease ran out.
        assert!(orphaned(Some("m1"), &rows, Some(&me), 20_000));
        // Nobody recorded, or a master without a row (taken over).
        assert!(orphaned(None, &rows, Some(&me), 10_000));
        assert!(orphaned(Some("gone"), &rows, Some(&me), 10_000));
        // Without an identity (one master alone): every running build.
        assert!(orphaned(Some("m1"), &[], None, 10_000));
    }

    #[test]
    fn a_named_lease_goes_to_one_holder_until_it_expires() {
        assert!(can_take(None, "a", 0));
        assert!(can_take(Some(("a", 10_000)), "a", 5_000));
        assert!(!can_take(Some(("a", 10_000)), "b", 5_000));
        assert!(can_take(Some(("a", 10_000)), "b", 10_000));
    }

    #[test]
    fn a_renewal_ends_before_the_lease_it_follows() {
        // A renewal that succeeded at t renewed until t + lease; the next
        // one starts by t + max(heartbeat, bound) and ends by that plus
        // the bound.
        for lease in [500, 1_500, 10_000, 60_000] {
            let t = LeaseTimes::of(lease);
            let b = renewal_bound(t.lease_ms);
            assert!(t.heartbeat_ms.max(b) + b < t.lease_ms, "{t:?}");
        }
    }

    #[test]
    fn lease_times_keep_five_renewals_a_lease() {
        assert_eq!(
            LeaseTimes::default(),
            LeaseTimes {
                heartbeat_ms: 2_000,
                lease_ms: 10_000
            }
        );
        assert_eq!(LeaseTimes::of(1_500).heartbeat_ms, 300);
        assert_eq!(LeaseTimes::of(10).lease_ms, 500);
    }

    #[test]
    fn identities_differ_per_process_start_and_keep_the_name() {
        let a = MasterIdentity::new("n");
        let b = MasterIdentity::new("n");
        assert_ne!(a.id, b.id);
        assert_eq!(a.name, b.name);
        assert!(a.id.contains(&std::process::id().to_string()));
    }
}
