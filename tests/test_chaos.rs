//! Bounded chaos (issue 12): the master is killed with SIGKILL again and
//! again under a steady load of forced builds, restarted on the same state
//! directory each time, and every request it acknowledged must still end in
//! exactly one successful build.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::{get_json, temp_dir, wait_for, write_secret, Master, Proc};

/// How many times the master is killed: each kill lands while builds run.
const KILLS: usize = 8;
/// New acknowledged requests each incarnation of the master takes before
/// it may be killed.
const PER_ROUND: usize = 10;

const CONFIG: &str = r#"worker "w1" password=(secret)"w1"
worker "w2" password=(secret)"w2"
scheduler "force" kind="force" {
    builders "b"
}
builder "b" {
    workers "w1" "w2"
    steps {
        shell "sleep 0.05; echo chaos" name="work"
    }
}
"#;

/// A request that does not panic when the master is gone: `None` when the
/// connection fails or is cut before a whole answer arrived.
fn try_post(addr: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let head = head.to_ascii_lowercase();
    // An answer cut short by the kill is no acknowledgement.
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    (body.len() == len).then(|| (status, body.to_string()))
}

/// The load: forces builds one after the other on whichever master is
/// current, recording the build set of every request answered with 201.
struct Client {
    addr: Mutex<String>,
    acked: Mutex<Vec<u64>>,
    stop: AtomicBool,
}

impl Client {
    fn run(&self) {
        let mut n = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            let addr = self.addr.lock().map(|a| a.clone()).unwrap_or_default();
            if addr.is_empty() {
                // Between a kill and the next start.
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            }
            n += 1;
            let body = format!(r#"{{"reason": "chaos {n}"}}"#);
            match try_post(&addr, "/api/v1/builders/b/force", &body) {
                Some((201, resp)) => {
                    let v: serde_json::Value =
                        serde_json::from_str(&resp).unwrap_or_else(|e| panic!("{e}: {resp}"));
                    let set = v["buildset"]["id"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("no buildset in {v}"));
                    if let Ok(mut a) = self.acked.lock() {
                        a.push(set);
                    }
                }
                Some((status, resp)) if status < 500 => {
                    panic!("force answered {status}: {resp}")
                }
                // The master is down or being restarted: try again soon.
                _ => {}
            }
            // A steady load rather than a flood: the queue stays short
            // enough for two workers to drain it at the end.
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
    }

    fn acked(&self) -> Vec<u64> {
        self.acked.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

fn start(dir: &std::path::Path) -> (Master, Proc, Proc) {
    let m = Master::start(dir, CONFIG);
    let w1 = m.worker("w1", "pw-chaos-w1-1234");
    let w2 = m.worker("w2", "pw-chaos-w2-1234");
    (m, w1, w2)
}

/// Every build of the master, oldest pages last.
fn all_builds(addr: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut before = String::new();
    loop {
        let v = get_json(addr, &format!("/api/v1/builds?limit=1000{before}"));
        let page = v["builds"].as_array().cloned().unwrap_or_default();
        let Some(last) = page.last().and_then(|b| b["id"].as_u64()) else {
            return out;
        };
        before = format!("&before={last}");
        out.extend(page);
    }
}

fn requests_in(addr: &str, state: &str) -> usize {
    get_json(addr, &format!("/api/v1/requests?state={state}&limit=1000"))["requests"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn every_acknowledged_request_builds_once_across_repeated_sigkills() {
    let dir = temp_dir("chaos");
    write_secret(&dir, "w1", "pw-chaos-w1-1234");
    write_secret(&dir, "w2", "pw-chaos-w2-1234");
    let (mut m, mut w1, mut w2) = start(&dir);
    m.wait_connected("w1");
    m.wait_connected("w2");

    let client = Arc::new(Client {
        addr: Mutex::new(m.http.clone()),
        acked: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let load = {
        let c = Arc::clone(&client);
        std::thread::spawn(move || c.run())
    };
    // Stops the load whatever happens below, so that a failing test does
    // not leave its thread forcing builds.
    struct StopOnDrop(Arc<Client>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.stop.store(true, Ordering::SeqCst);
        }
    }
    let stopper = StopOnDrop(Arc::clone(&client));

    let mut interrupted_at_kill = 0;
    for round in 1..=KILLS {
        // Kill only once this master acknowledged new requests and is in
        // the middle of running a build.
        let before = client.acked().len();
        wait_for(&format!("round {round}: new requests acknowledged"), || {
            (client.acked().len() >= before + PER_ROUND).then_some(())
        });
        wait_for(&format!("round {round}: a build running"), || {
            let v = get_json(&m.http, "/api/v1/builds?running=true");
            (!v["builds"].as_array()?.is_empty()).then_some(())
        });
        // No new request to the dead master's address: its port may be
        // given to another test's master meanwhile.
        if let Ok(mut a) = client.addr.lock() {
            a.clear();
        }
        let _ = m.proc.0.kill(); // SIGKILL
        let _ = m.proc.0.wait();
        interrupted_at_kill += 1;
        // The workers point at the dead master's port: replace them too.
        drop((w1, w2));
        (m, w1, w2) = start(&dir);
        if let Ok(mut a) = client.addr.lock() {
            *a = m.http.clone();
        }
        m.wait_connected("w1");
        m.wait_connected("w2");
    }
    // One last stretch of load on the last master, then stop it.
    let before = client.acked().len();
    wait_for("requests acknowledged after the last restart", || {
        (client.acked().len() >= before + PER_ROUND).then_some(())
    });
    drop(stopper);
    load.join()
        .unwrap_or_else(|_| panic!("the load thread panicked"));
    let acked = client.acked();
    assert!(
        acked.len() >= (KILLS + 1) * PER_ROUND,
        "only {} requests acknowledged",
        acked.len()
    );

    // The queue drains.
    wait_for("the queue to drain", || {
        (requests_in(&m.http, "pending") == 0 && requests_in(&m.http, "claimed") == 0).then_some(())
    });

    // Each acknowledged build set holds one request, complete and
    // successful…
    let mut request_of_set = BTreeMap::new();
    for &set in &acked {
        let v = get_json(&m.http, &format!("/api/v1/requests?buildset={set}"));
        let rqs = v["requests"].as_array().cloned().unwrap_or_default();
        assert_eq!(rqs.len(), 1, "build set {set}: {v}");
        let rq = &rqs[0];
        assert_eq!(rq["state"], "complete", "build set {set}: {rq}");
        assert_eq!(rq["result"], "success", "build set {set}: {rq}");
        let id = rq["id"].as_u64().unwrap_or_else(|| panic!("no id: {rq}"));
        assert!(
            request_of_set.insert(set, id).is_none(),
            "build set {set} acknowledged twice"
        );
    }
    // …built successfully by exactly one build; builds cut by a kill
    // ended as retry, never as success.
    let builds = all_builds(&m.http);
    let mut successes: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut retried = 0;
    for b in &builds {
        assert_eq!(b["complete"], true, "a build still runs: {b}");
        let id = b["id"].as_u64().unwrap_or_default();
        match b["result"].as_str() {
            Some("success") => {
                for r in b["requests"].as_array().into_iter().flatten() {
                    successes
                        .entry(r.as_u64().unwrap_or_default())
                        .or_default()
                        .push(id);
                }
            }
            Some("retry") => retried += 1,
            other => panic!("build {id} ended as {other:?}: {b}"),
        }
    }
    let wanted: BTreeSet<u64> = request_of_set.values().copied().collect();
    for (set, rq) in &request_of_set {
        let by = successes.get(rq).cloned().unwrap_or_default();
        assert_eq!(
            by.len(),
            1,
            "request {rq} (build set {set}) was built successfully by builds {by:?}"
        );
    }
    // The kills did cut builds: each was sent while a build ran (a build
    // may end between that check and the kill, but not in every round).
    assert!(
        retried > 0,
        "no build ended as retry after {interrupted_at_kill} kills"
    );
    eprintln!(
        "chaos: {KILLS} kills, {} requests acknowledged, {} builds ({retried} retried), {} other successful requests",
        acked.len(),
        builds.len(),
        successes.keys().filter(|r| !wanted.contains(r)).count()
    );
}
