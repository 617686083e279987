//! `GET /metrics` on a real master with a real worker: builds that pass
//! and fail, webhook deliveries signed right and wrong, reporters whose
//! endpoint (an HTTP server in the test) accepts or refuses, a request no
//! worker can take; then the Prometheus text is parsed and the counters
//! checked against what happened. Nothing sleeps: the test waits for the
//! builds and for the counters to reach their values.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::Value;

use crate::common::{get_json, http_with, temp_dir, wait_for, write_secret, Master};
use crate::recorder::Recorder;

/// `GET /metrics`: its content type and body.
fn scrape_raw(addr: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("write: {e}"));
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("read: {e}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let ct = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_string()
    };
    (ct, body)
}

fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((len, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n.min(after.len())]);
        rest = after.get(n + 2..).unwrap_or("");
    }
    out
}

/// Every sample of the exposition: `name{labels}` as written → value.
/// Checks the shape of every line on the way.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        assert!(series.starts_with("bbc_"), "not a bbc metric: {line}");
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line}: {e}")),
        };
        assert!(
            out.insert(series.to_string(), v).is_none(),
            "{series} twice"
        );
    }
    out
}

/// The samples of `GET /metrics` (other tests check theirs with it).
pub(crate) fn scrape(addr: &str) -> BTreeMap<String, f64> {
    parse(&scrape_raw(addr).1)
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no {series} in {m:#?}"))
}

fn post_hook(m: &Master, name: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    http_with(
        "POST",
        &m.http,
        &format!("/change_hook/{name}"),
        headers,
        Some(body),
    )
    .0
}

#[test]
fn metrics_count_builds_webhooks_reporters_and_the_queue() {
    // The reporters' endpoint: `/ok` accepts (201), `/refused` answers 400
    // (a refusal that is not retried) as often as it is asked.
    let hook = Recorder::start();
    hook.answer("/refused", &[400; 1000]);
    let rep = hook.addr.clone();
    let dir = temp_dir("metrics");
    write_secret(&dir, "w1", "pw-one-1234");
    write_secret(&dir, "hook", "hook secret");
    let config = format!(
        r#"worker "w1" password=(secret)"w1" max-builds=4
worker "w2" password=(secret)"w1"
change-source "hook" kind="json-webhook" {{
    secret (secret)"hook"
}}
scheduler "force" kind="force" {{
    builders "job" "stuck"
    param "code" type="int" default=0
}}
builder "job" {{
    workers "w1"
    steps {{
        shell "echo code ${{{{ prop.code }}}}; exit ${{{{ prop.code }}}}" name="run"
    }}
}}
builder "stuck" {{
    workers "w2"
    steps {{
        shell "true"
    }}
}}
reporter "accepting" kind="http" {{
    url "http://{rep}/ok"
    builders "job"
}}
reporter "refusing" kind="http" {{
    url "http://{rep}/refused"
    builders "job"
}}
"#
    );
    let m = Master::start(&dir, &config);
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");

    let (ct, text) = scrape_raw(&m.http);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        text.contains("# TYPE bbc_store_commit_seconds histogram"),
        "{text}"
    );
    let before = parse(&text);
    assert_eq!(get(&before, "bbc_workers_connected"), 1.0);
    assert_eq!(get(&before, r#"bbc_worker_up{worker="w1"}"#), 1.0);
    assert_eq!(get(&before, r#"bbc_worker_up{worker="w2"}"#), 0.0);
    assert_eq!(get(&before, "bbc_store_healthy"), 1.0);
    assert_eq!(get(&before, r#"bbc_queue_requests{builder="job"}"#), 0.0);
    // Opening the store and recording the config were commits.
    assert!(get(&before, "bbc_store_commit_seconds_count") >= 1.0);
    assert!(!before.keys().any(|k| k.starts_with("bbc_builds_started")));

    // One build that passes and one that fails.
    let ok = m.force_and_wait("job", r#"{"properties": {"code": 0}}"#);
    let failed = m.force_and_wait("job", r#"{"properties": {"code": 1}}"#);
    assert_eq!(ok["result"], "success", "{ok}");
    assert_eq!(failed["result"], "failure", "{failed}");

    // Webhooks: one accepted, two unauthorized (no signature, a wrong
    // one), one unreadable, one to a source the config lacks (not counted:
    // clients cannot make up label values).
    let body = r#"{"branch": "main", "revision": "1234abcd"}"#;
    let sig = |b: &str| {
        format!(
            "sha256={}",
            bbc_runtime::changes::webhook::hmac_sha256_hex(b"hook secret", b.as_bytes())
        )
    };
    let h = "X-BBC-Signature-256";
    assert_eq!(post_hook(&m, "hook", &[(h, &sig(body))], body), 201);
    assert_eq!(post_hook(&m, "hook", &[], body), 401);
    assert_eq!(post_hook(&m, "hook", &[(h, &sig("other"))], body), 403);
    assert_eq!(post_hook(&m, "hook", &[(h, &sig("{"))], "{"), 400);
    assert_eq!(post_hook(&m, "nosuch", &[], body), 404);

    // A request no connected worker can take waits in the queue.
    m.force("stuck", "{}");

    // The reporters deliver in their own tasks: wait until both are done
    // with both builds, then every value is final.
    let after = wait_for("the reporters' deliveries", || {
        let s = scrape(&m.http);
        let n = |k: &str| s.get(k).copied().unwrap_or(0.0);
        let done = n(r#"bbc_reporter_deliveries_total{reporter="accepting",result="ok"}"#) >= 2.0
            && n(r#"bbc_reporter_deliveries_total{reporter="refusing",result="failed"}"#) >= 2.0
            && n(r#"bbc_queue_oldest_age_seconds{builder="stuck"}"#) > 0.0;
        done.then_some(s)
    });
    let is = |series: &str, v: f64| assert_eq!(get(&after, series), v, "{series}");
    let absent = |series: &str| assert!(!after.contains_key(series), "{series} present");

    is(r#"bbc_builds_started_total{builder="job"}"#, 2.0);
    is(
        r#"bbc_builds_finished_total{builder="job",result="success"}"#,
        1.0,
    );
    is(
        r#"bbc_builds_finished_total{builder="job",result="failure"}"#,
        1.0,
    );
    absent(r#"bbc_builds_started_total{builder="stuck"}"#);
    is("bbc_build_duration_seconds_count", 2.0);
    is(r#"bbc_build_duration_seconds_bucket{le="+Inf"}"#, 2.0);
    is("bbc_request_start_latency_seconds_count", 2.0);
    is("bbc_builds_running", 0.0);

    // Log bytes: exactly what the store holds for the two builds' steps.
    let stored: u64 = [&ok, &failed]
        .iter()
        .flat_map(|b| b["steps"].as_array().cloned().unwrap_or_default())
        .map(|s: Value| s["log_len"].as_u64().unwrap_or(0))
        .sum();
    assert!(stored > 0, "{ok}");
    is(r#"bbc_log_bytes_total{builder="job"}"#, stored as f64);

    is(
        r#"bbc_reporter_deliveries_total{reporter="accepting",result="ok"}"#,
        2.0,
    );
    absent(r#"bbc_reporter_deliveries_total{reporter="accepting",result="failed"}"#);
    is(
        r#"bbc_reporter_deliveries_total{reporter="refusing",result="failed"}"#,
        2.0,
    );
    absent(r#"bbc_reporter_deliveries_total{reporter="refusing",result="ok"}"#);

    is(
        r#"bbc_webhook_deliveries_total{source="hook",result="accepted"}"#,
        1.0,
    );
    is(
        r#"bbc_webhook_deliveries_total{source="hook",result="unauthorized"}"#,
        2.0,
    );
    is(
        r#"bbc_webhook_deliveries_total{source="hook",result="bad_request"}"#,
        1.0,
    );
    assert!(
        !after.keys().any(|k| k.contains("nosuch")),
        "an unknown source became a label"
    );

    is(r#"bbc_queue_requests{builder="job"}"#, 0.0);
    is(r#"bbc_queue_oldest_age_seconds{builder="job"}"#, 0.0);
    is(r#"bbc_queue_requests{builder="stuck"}"#, 1.0);
    is(r#"bbc_worker_up{worker="w2"}"#, 0.0);
    is("bbc_store_healthy", 1.0);
    // Every write since: two builds' starts and ends, the change, the
    // requests.
    assert!(
        get(&after, "bbc_store_commit_seconds_count")
            >= get(&before, "bbc_store_commit_seconds_count") + 7.0
    );
    // The API still answers beside it.
    assert_eq!(
        get_json(&m.http, "/api/v1")["version"],
        env!("CARGO_PKG_VERSION")
    );
}
