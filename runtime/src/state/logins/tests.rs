use std::net::{IpAddr, Ipv4Addr};

use super::*;

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const S: Millis = 1_000;

fn refused_until(l: &mut Logins, name: &str, addr: IpAddr, now: Millis) -> Option<Millis> {
    match l.admit(name, addr, now) {
        Admission::Check => None,
        Admission::Refuse { retry_at, .. } => Some(retry_at),
    }
}

#[test]
fn failures_past_the_free_ones_block_for_a_doubling_time_up_to_the_cap() {
    let p = Policy::default();
    let mut l = Logins::new(p);
    let mut now = 0;
    let mut blocks = Vec::new();
    for _ in 0..10 {
        // Each attempt comes as soon as the previous block ends.
        if let Some(until) = refused_until(&mut l, "w", A, now) {
            now = until;
        }
        assert_eq!(l.admit("w", A, now), Admission::Check);
        l.failed("w", A, now);
        blocks.push(refused_until(&mut l, "w", A, now).map(|u| u - now));
    }
    assert_eq!(
        blocks,
        [
            None,
            None,
            None,
            Some(S),
            Some(2 * S),
            Some(4 * S),
            Some(8 * S),
            Some(16 * S),
            Some(30 * S),
            Some(30 * S)
        ]
    );
}

#[test]
fn the_right_password_is_checked_again_once_the_block_ends() {
    let mut l = Logins::new(Policy::default());
    for t in 0..6 {
        l.failed("w", A, t);
    }
    let until = refused_until(&mut l, "w", A, 10).expect("blocked");
    assert!(refused_until(&mut l, "w", A, until - 1).is_some());
    assert_eq!(l.admit("w", A, until), Admission::Check);
    l.succeeded("w", A);
    // The pair starts afresh; the address and the name keep their count
    // (another client may share them) until forgotten.
    assert_eq!(l.admit("w", A, until), Admission::Check);
    l.failed("x", A, until + 1);
    assert!(refused_until(&mut l, "x", A, until + 1).is_some());
}

#[test]
fn others_failures_do_not_lock_out_a_worker_where_it_logged_in_before() {
    let mut l = Logins::new(Policy::default());
    assert_eq!(l.admit("w", A, 0), Admission::Check);
    l.succeeded("w", A);
    // Someone guesses w's password from B, and other names from A.
    for t in 1..20 {
        l.failed("w", B, t);
        l.failed("intruder", A, t);
    }
    assert!(refused_until(&mut l, "w", B, 20).is_some(), "B is blocked");
    assert!(
        refused_until(&mut l, "other", A, 20).is_some(),
        "A is blocked"
    );
    assert!(refused_until(&mut l, "w2", B, 20).is_some(), "B is blocked");
    // w from A is not: neither the name's nor the address's block applies.
    assert_eq!(l.admit("w", A, 20), Admission::Check);
    // Its own failures from A still count.
    for t in 21..30 {
        l.failed("w", A, t);
    }
    assert!(refused_until(&mut l, "w", A, 30).is_some());
}

#[test]
fn the_name_is_blocked_whatever_the_address() {
    let mut l = Logins::new(Policy::default());
    for (i, t) in (0..8).enumerate() {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8));
        l.failed("w", addr, t);
    }
    assert!(refused_until(&mut l, "w", B, 10).is_some());
    assert_eq!(l.admit("v", B, 10), Admission::Check);
}

#[test]
fn failures_are_forgotten_after_a_quiet_time() {
    let p = Policy::default();
    let mut l = Logins::new(p);
    for t in 0..6 {
        l.failed("w", A, t);
    }
    let later = 5 + p.forget_ms;
    assert_eq!(l.admit("w", A, later), Admission::Check);
    // A new failure counts from one again: free, not blocked.
    l.failed("w", A, later);
    assert_eq!(l.admit("w", A, later), Admission::Check);
    l.flush(later + p.forget_ms);
    assert!(l.by_addr.is_empty() && l.by_name.is_empty() && l.by_pair.is_empty());
}

#[test]
fn the_first_failure_is_logged_and_the_rest_summarised() {
    let p = Policy::default();
    let mut l = Logins::new(p);
    let first = l.failed("w", A, 0).expect("first failure logged");
    assert!(
        first.contains("wrong name or password for `w` from 10.0.0.1"),
        "{first}"
    );
    let mut logged = 0;
    for t in 1..1000 {
        let log = match l.admit("w", A, t) {
            Admission::Check => l.failed("w", A, t),
            Admission::Refuse { log, .. } => log,
        };
        logged += usize::from(log.is_some());
    }
    assert_eq!(logged, 0);
    assert_eq!(l.next_due(), Some(p.summary_ms));
    assert!(l.flush(p.summary_ms - 1).is_empty());
    let lines = l.flush(p.summary_ms);
    assert_eq!(
        lines,
        ["999 more failed worker logins from 10.0.0.1 in the last 60 s (names: `w`)"]
    );
    // Quiet for a period: the summary goes, and the next failure is
    // logged at once again.
    assert!(l.flush(2 * p.summary_ms).is_empty());
    assert_eq!(l.next_due(), None);
    assert!(l.failed("v", A, 2 * p.summary_ms + 1).is_some());
}

#[test]
fn a_summary_names_a_few_names_and_counts_the_rest() {
    let p = Policy::default();
    let mut l = Logins::new(p);
    // The first is logged by itself; the summary names the next ones.
    for i in 0..20 {
        l.failed(&format!("n{i:02}"), A, i);
    }
    let lines = l.flush(p.summary_ms);
    assert_eq!(
        lines,
        [
            "19 more failed worker logins from 10.0.0.1 in the last 60 s \
          (names: `n01`, `n02`, `n03`, `n04`, `n05`, 14 other names)"
        ]
    );
}

#[test]
fn the_tables_stay_bounded() {
    let p = Policy {
        max_keys: 8,
        ..Policy::default()
    };
    let mut l = Logins::new(p);
    for i in 0..100u8 {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 2, 0, i));
        l.failed(&format!("name-{i}"), addr, Millis::from(i));
    }
    assert!(l.by_addr.len() <= 8 && l.by_name.len() <= 8 && l.by_pair.len() <= 8);
    assert!(l.summaries.len() <= 8);
}
