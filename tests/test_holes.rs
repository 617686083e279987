//! The holes probing found (issue 11), each closed and kept closed: real
//! masters and workers, real TCP on 127.0.0.1.

use std::path::Path;

use crate::common::{bbc, get_json, http, temp_dir, write_secret, Master, Proc};

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => {
                    let bytes = std::fs::read(&p).unwrap_or_default();
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        hits.push(p.display().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    hits
}

const SECRET: &str = "pw-one-1234";

/// `set-property command=` used to store the command's raw stdout: a
/// secret the step printed came back from the API and sat in the store,
/// while the step's log showed `[secret]`.
#[test]
fn a_secret_printed_by_set_property_is_stored_redacted() {
    let dir = temp_dir("holes-setprop");
    write_secret(&dir, "w1", SECRET);
    let m = Master::start(
        &dir,
        r#"worker "w1" password=(secret)"w1"
scheduler "force" kind="force" {
    builders "b"
}
builder "b" {
    workers "w1"
    steps {
        set-property "p" command="echo x-$TOKEN-y; echo len=${#TOKEN} >&2"
        shell "echo got ${{ prop.p }}" name="use"
    }
}
"#,
    );
    // The secret reaches the step from the worker's environment, never
    // through the config (the graph is stored too).
    let pw = dir.join("w1.password");
    std::fs::write(&pw, SECRET).unwrap();
    let _w = Proc(
        bbc_testkit::worker_args(&mut bbc(), &m.workers, "w1", &pw, &dir)
            .env("TOKEN", SECRET)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    m.wait_connected("w1");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b}");
    // The step did print the secret: its log shows it masked, and its length.
    let log = m.log(b["id"].as_u64().unwrap(), 0);
    assert!(log.contains("x-[secret]-y"), "{log}");
    assert!(log.contains(&format!("len={}", SECRET.len())), "{log}");
    assert_eq!(b["properties"]["p"], "x-[secret]-y", "{b}");
    let used = m.log(b["id"].as_u64().unwrap(), 1);
    assert!(used.contains("got x-[secret]-y"), "{used}");
    for path in [
        format!("/api/v1/builds/{}", b["id"]),
        "/api/v1/builds".to_string(),
    ] {
        let (st, body) = http("GET", &m.http, &path, None);
        assert_eq!(st, 200, "{body}");
        assert!(
            !body.contains(SECRET),
            "GET {path} shows the secret: {body}"
        );
    }
    drop(m);
    let hits = files_containing(&dir.join("state"), SECRET.as_bytes());
    assert!(hits.is_empty(), "the secret is stored in {hits:?}");
}

#[allow(dead_code)]
fn unused(_: &str) -> serde_json::Value {
    get_json("", "")
}
