//! The web UI in a real browser: Debian's chromium, headless, loads the
//! page from a real master and runs its JavaScript against the real API.
//! Most tests read the DOM the browser built (`--dump-dom`); the force
//! button and the token prompt are driven through chromedriver (WebDriver).
//!
//! Without chromium (or chromedriver) the tests say they skipped, unless
//! `BBC_REQUIRE_BROWSER=1` (set by `.ci/run`) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{http, temp_dir, write_secret, Master};

pub(crate) fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("BBC_CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.exists());
    if found.is_none() {
        if std::env::var("BBC_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("chromium is required (BBC_REQUIRE_BROWSER=1) but not installed");
        }
        eprintln!("skipped: chromium not found (apt-get install chromium)");
    }
    found
}

/// The DOM after the page's scripts ran, as chromium serialises it. The
/// page's event stream is turned off (`?live=0`): a dump waits for the
/// network to go quiet, which an open stream never does.
pub(crate) fn dump_dom(browser: &Path, profile: &Path, url: &str) -> String {
    let url = match url.split_once('#') {
        Some((page, hash)) => format!("{page}?live=0#{hash}"),
        None => format!("{url}?live=0"),
    };
    let url = url.as_str();
    let o = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Virtual time: the page's fetches complete before the dump,
            // without a wall-clock wait.
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", browser.display()));
    assert!(
        o.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const CONFIG: &str = r#"master {
    title "web test"
}
worker "w1" password=(secret)"w1"
scheduler "force" kind="force" {
    builders "app" "broken"
    param "who" type="string" default="world"
}
builder "app" {
    description "The <b>app</b> builder"
    workers "w1"
    tags "web"
    steps {
        shell "echo compiling-marker-1234; echo '<img src=x onerror=alert(1)><b>not bold</b>'" name="compile"
        shell "echo tests-ok" name="tests"
    }
}
builder "broken" {
    workers "w1"
    steps {
        shell "echo about-to-fail; exit 3" name="fails"
    }
}
"#;

#[test]
fn pages_show_builders_builds_logs_and_workers() {
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("web");
    write_secret(&dir, "w1", "pw-web-1234");
    let m = Master::start(&dir, CONFIG);
    let _w = m.worker("w1", "pw-web-1234");
    m.wait_connected("w1");
    let ok = m.force_and_wait("app", "{}");
    assert_eq!(ok["result"], "success", "{ok}");
    let bad = m.force_and_wait("broken", "{}");
    assert_eq!(bad["result"], "failure", "{bad}");
    let profile = dir.join("chromium");
    let base = format!("http://{}/", m.http);

    // The page itself is served with its assets.
    let (status, html) = http("GET", &m.http, "/", None);
    assert_eq!(status, 200);
    assert!(html.contains("/ui/app.js"), "{html}");
    assert_eq!(http("GET", &m.http, "/ui/app.js", None).0, 200);
    assert_eq!(http("GET", &m.http, "/ui/app.css", None).0, 200);

    // The overview's one request: each builder's newest build.
    let v = crate::common::get_json(&m.http, "/api/v1/builders?last_build=true");
    let app = v["builders"]
        .as_array()
        .and_then(|b| b.iter().find(|x| x["name"] == "app"))
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(app["last_build"]["id"], ok["id"], "{v}");
    assert_eq!(app["last_build"]["result"], "success", "{v}");
    assert_eq!(app["running"], 0, "{v}");
    let plain = crate::common::get_json(&m.http, "/api/v1/builders");
    assert!(plain["builders"][0].get("last_build").is_none(), "{plain}");

    // Builders: each with its last build and result.
    let dom = dump_dom(&browser, &profile, &base);
    assert!(dom.contains("<title>web test</title>"), "{dom}");
    assert!(
        dom.contains(r##"<a href="#/builders/app">app</a>"##),
        "{dom}"
    );
    assert!(
        dom.contains(r##"<a href="#/builds/1">app #1</a>"##),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<span class="result success">success</span>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<span class="result failure">failure</span>"#),
        "{dom}"
    );
    assert!(dom.contains(r#"<span class="tag">web</span>"#), "{dom}");

    // A build: its steps, and the log of the step named in the URL; output
    // from the build is text, never markup.
    let id = ok["id"].as_u64().unwrap_or_else(|| panic!("no id in {ok}"));
    let dom = dump_dom(&browser, &profile, &format!("{base}#/builds/{id}/steps/0"));
    assert!(dom.contains("<strong>compile</strong>"), "{dom}");
    assert!(dom.contains("<strong>tests</strong>"), "{dom}");
    assert!(
        dom.contains("compiling-marker-1234"),
        "log not shown: {dom}"
    );
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;not bold&lt;/b&gt;"),
        "log output must be escaped: {dom}"
    );
    assert!(!dom.contains("<b>not bold</b>"), "{dom}");
    assert!(
        !dom.contains(">null<"),
        "a null leaked into the page: {dom}"
    );

    // The failed build shows its failing step.
    let bid = bad["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {bad}"));
    let dom = dump_dom(&browser, &profile, &format!("{base}#/builds/{bid}/steps/0"));
    assert!(dom.contains("about-to-fail"), "{dom}");
    assert!(
        dom.contains(r#"<span class="result failure">failure</span> <strong>fails</strong>"#),
        "{dom}"
    );

    // A builder: the force form from the force scheduler's parameters, the
    // description as text, and its builds.
    let dom = dump_dom(&browser, &profile, &format!("{base}#/builders/app"));
    assert!(dom.contains(r#"name="who""#), "no force form: {dom}");
    assert!(dom.contains(r#"name="who" value="world""#), "{dom}");
    assert!(dom.contains("The &lt;b&gt;app&lt;/b&gt; builder"), "{dom}");
    assert!(
        dom.contains(r##"<a href="#/builds/1">app #1</a>"##),
        "{dom}"
    );

    // Workers.
    let dom = dump_dom(&browser, &profile, &format!("{base}#/workers"));
    assert!(dom.contains("<td>w1</td>"), "{dom}");
    assert!(dom.contains(">idle<"), "{dom}");

    // An unknown page says so instead of going blank.
    let dom = dump_dom(&browser, &profile, &format!("{base}#/nowhere"));
    assert!(dom.contains("Not found"), "{dom}");
}

#[test]
fn a_running_build_shows_its_live_log() {
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("web-live");
    let gate = dir.join("go");
    let (m, _w, id) = held_build(&dir, &gate);
    let dom = dump_dom(
        &browser,
        &dir.join("chromium"),
        &format!("http://{}/#/builds/{id}", m.http),
    );
    // The running step is opened by itself and its log followed.
    assert!(
        dom.contains(r#"<span class="result running">running</span>"#),
        "{dom}"
    );
    assert!(dom.contains("live-marker-5678"), "{dom}");
    assert!(dom.contains("Cancel build"), "{dom}");
    std::fs::write(&gate, "").unwrap_or_else(|e| panic!("{e}"));
    let b = crate::common::wait_for("the build to finish", || {
        let d = crate::common::get_json(&m.http, &format!("/api/v1/builds/{id}"));
        d["build"]["finished_at"]
            .as_u64()
            .map(|_| d["build"].clone())
    });
    assert_eq!(b["result"], "success", "{b}");
}

/// A WebDriver session on Debian's chromedriver, for the interactive paths
/// (clicks, the token prompt) that a DOM dump cannot reach.
pub(crate) struct Driver {
    _proc: crate::common::Proc,
    addr: String,
    session: String,
}

impl Driver {
    pub(crate) fn start(browser: &Path, profile: &Path) -> Option<Driver> {
        let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let Some(driver) = driver else {
            if std::env::var("BBC_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
                panic!("chromedriver is required (BBC_REQUIRE_BROWSER=1) but not installed");
            }
            eprintln!("skipped: chromedriver not found (apt-get install chromium-driver)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver: {e}"));
        let proc = crate::common::Proc(child);
        let addr = format!("127.0.0.1:{port}");
        crate::common::wait_for("chromedriver to listen", || {
            std::net::TcpStream::connect(&addr).ok().map(|_| ())
        });
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": browser.to_string_lossy(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let (status, body) = http("POST", &addr, "/session", Some(&caps.to_string()));
        assert_eq!(status, 200, "new session: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}"));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session in {v}"))
            .to_string();
        Some(Driver {
            _proc: proc,
            addr,
            session,
        })
    }

    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let body = (method == "POST").then(|| body.to_string());
        let (status, text) = http(
            method,
            &self.addr,
            &format!("/session/{}{path}", self.session),
            body.as_deref(),
        );
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, v["value"].clone())
    }

    pub(crate) fn go(&self, url: &str) {
        let (status, v) = self.call("POST", "/url", serde_json::json!({ "url": url }));
        assert_eq!(status, 200, "navigate: {v}");
    }

    /// Waits for the element (the page renders asynchronously).
    pub(crate) fn element(&self, css: &str) -> String {
        crate::common::wait_for(&format!("element {css}"), || {
            let (status, v) = self.call(
                "POST",
                "/element",
                serde_json::json!({"using": "css selector", "value": css}),
            );
            if status != 200 {
                return None;
            }
            v.as_object()?.values().next()?.as_str().map(str::to_string)
        })
    }

    /// Clicks the element. The page re-renders itself when it refreshes,
    /// so an element found a moment ago may have been replaced: a "stale
    /// element reference" means find it again, anything else fails.
    pub(crate) fn click(&self, css: &str) {
        crate::common::wait_for(&format!("click {css}"), || {
            let id = self.element(css);
            let (status, v) = self.call(
                "POST",
                &format!("/element/{id}/click"),
                serde_json::json!({}),
            );
            if status != 200 && v["error"] == "stale element reference" {
                return None;
            }
            assert_eq!(status, 200, "click {css}: {v}");
            Some(())
        })
    }

    /// The element's text; found again if the page replaced it meanwhile.
    pub(crate) fn text(&self, css: &str) -> String {
        crate::common::wait_for(&format!("text of {css}"), || {
            let id = self.element(css);
            let (status, v) = self.call(
                "GET",
                &format!("/element/{id}/text"),
                serde_json::Value::Null,
            );
            if status != 200 && v["error"] == "stale element reference" {
                return None;
            }
            Some(v.as_str().unwrap_or_default().to_string())
        })
    }

    /// Waits for a `window.prompt`, answers it and accepts it.
    pub(crate) fn answer_prompt(&self, answer: &str) -> String {
        let question = crate::common::wait_for("the prompt", || {
            let (status, v) = self.call("GET", "/alert/text", serde_json::Value::Null);
            (status == 200).then(|| v.as_str().unwrap_or_default().to_string())
        });
        let (status, v) = self.call("POST", "/alert/text", serde_json::json!({ "text": answer }));
        assert_eq!(status, 200, "prompt text: {v}");
        let (status, v) = self.call("POST", "/alert/accept", serde_json::json!({}));
        assert_eq!(status, 200, "accept: {v}");
        question
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http(
            "DELETE",
            &self.addr,
            &format!("/session/{}", self.session),
            None,
        );
    }
}

#[test]
fn force_from_the_page_asks_for_the_token_and_queues_a_build() {
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("web-force");
    write_secret(&dir, "w1", "pw-web-1234");
    write_secret(&dir, "bbc-control-token", "ctl-web-5678");
    let m = Master::start(&dir, CONFIG);
    let _w = m.worker("w1", "pw-web-1234");
    m.wait_connected("w1");
    let Some(d) = Driver::start(&browser, &dir.join("chromium")) else {
        return;
    };
    d.go(&format!("http://{}/#/builders/app", m.http));
    // Change a parameter, then press the button.
    let field = d.element(r#"input[name="who"]"#);
    let (status, v) = d.call(
        "POST",
        &format!("/element/{field}/clear"),
        serde_json::json!({}),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = d.call(
        "POST",
        &format!("/element/{field}/value"),
        serde_json::json!({"text": "browser"}),
    );
    assert_eq!(status, 200, "{v}");
    d.click("form.force button");
    // The master wants the control token: the page asks for it once.
    let question = d.answer_prompt("ctl-web-5678");
    assert!(question.contains("token"), "{question}");
    let status = crate::common::wait_for("the page to say it queued the build", || {
        let t = d.text("form.force span.muted");
        t.starts_with("queued").then_some(t)
    });
    assert!(status.contains("build set"), "{status}");
    // The build ran with the value typed into the form.
    let b = crate::common::wait_for("the forced build to finish", || {
        let v = crate::common::get_json(&m.http, "/api/v1/builds?builder=app");
        let b = v["builds"].as_array()?.first()?.clone();
        b["finished_at"].as_u64().map(|_| b)
    });
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["properties"]["who"], "browser", "{b}");
    assert_eq!(b["properties"]["reason"], "forced from the web UI", "{b}");
}

#[test]
fn build_lists_are_paged() {
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("web-pages");
    write_secret(&dir, "w1", "pw-web-1234");
    let m = Master::start(&dir, CONFIG);
    let _w = m.worker("w1", "pw-web-1234");
    m.wait_connected("w1");
    // 51 builds: one more than a page.
    for _ in 0..51 {
        let (status, body) = http("POST", &m.http, "/api/v1/builders/broken/force", Some("{}"));
        assert_eq!(status, 201, "{body}");
    }
    crate::common::wait_for("51 finished builds", || {
        let v = crate::common::get_json(&m.http, "/api/v1/builds?builder=broken&limit=100");
        let b = v["builds"].as_array()?;
        (b.len() == 51 && b.iter().all(|x| x["finished_at"].is_u64())).then_some(())
    });
    let profile = dir.join("chromium");
    let dom = dump_dom(
        &browser,
        &profile,
        &format!("http://{}/#/builders/broken", m.http),
    );
    assert!(dom.contains("broken #51"), "{dom}");
    assert!(
        !dom.contains("broken #1<"),
        "the oldest is on the next page: {dom}"
    );
    // The link to the next page names the oldest build shown.
    let v = crate::common::get_json(&m.http, "/api/v1/builds?builder=broken&limit=50");
    let oldest_shown = v["builds"][49]["id"].as_u64().unwrap_or(0);
    let older = format!(r##"href="#/builders/broken?before={oldest_shown}""##);
    assert!(
        dom.contains(&older),
        "no link to older builds ({older}): {dom}"
    );
    let dom = dump_dom(
        &browser,
        &profile,
        &format!("http://{}/#/builders/broken?before={oldest_shown}", m.http),
    );
    assert!(dom.contains("broken #1<"), "{dom}");
    assert!(!dom.contains("broken #2<"), "{dom}");
    assert!(dom.contains("← newest"), "{dom}");
    assert!(
        !dom.contains(r#"class="older""#),
        "no page after the last: {dom}"
    );
}

#[test]
fn cancel_then_rebuild_from_the_page() {
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("web-cancel");
    let (m, _w, id) = held_build(&dir, &dir.join("never"));
    let Some(d) = Driver::start(&browser, &dir.join("chromium")) else {
        return;
    };
    d.go(&format!("http://{}/#/builds/{id}", m.http));
    // The button is the only one on a running build's page.
    d.click("main > button");
    let b = crate::common::wait_for("the build to end", || {
        let v = crate::common::get_json(&m.http, &format!("/api/v1/builds/{id}"));
        v["build"]["finished_at"]
            .as_u64()
            .map(|_| v["build"].clone())
    });
    assert_eq!(b["result"], "cancelled", "{b}");
    // The page shows it (it refreshes by itself), and offers a rebuild
    // of the finished build instead.
    crate::common::wait_for("the page to show the result", || {
        let t = d.text("dl.facts");
        t.contains("cancelled").then_some(())
    });
    std::fs::write(dir.join("never"), "").unwrap_or_else(|e| panic!("{e}"));
    d.click("main > button.rebuild");
    let said = crate::common::wait_for("the page to say it queued the rebuild", || {
        let t = d.text("main > span.rebuilt");
        t.contains("build set").then_some(t)
    });
    let rebuilt = crate::common::wait_for("the rebuild to finish", || {
        let v = crate::common::get_json(&m.http, "/api/v1/builds?builder=slow");
        let b = v["builds"].as_array()?.first()?.clone();
        (b["id"] != id && b["finished_at"].is_u64()).then_some(b)
    });
    assert_eq!(rebuilt["result"], "success", "{rebuilt}");
    assert_eq!(
        rebuilt["properties"]["reason"], "rebuild of slow #1",
        "{rebuilt}"
    );
    let r = crate::common::get_json(&m.http, "/api/v1/requests?builder=slow&limit=1");
    assert_eq!(r["requests"][0]["id"], rebuilt["requests"][0], "{r}");
    assert!(
        said.contains(&format!("build set {}", r["requests"][0]["buildset"])),
        "{said} / {r}"
    );
}

/// A master whose one build is running: its step prints `live-marker-5678`
/// and waits for `gate` to exist. Returns once that first line is stored.
fn held_build(dir: &Path, gate: &Path) -> (Master, crate::common::Proc, u64) {
    write_secret(dir, "w1", "pw-web-1234");
    let config = format!(
        r#"worker "w1" password=(secret)"w1"
scheduler "force" kind="force" {{
    builders "slow"
}}
builder "slow" {{
    workers "w1"
    steps {{
        shell "echo live-marker-5678; while [ ! -f '{}' ]; do sleep 0.05; done; echo released" name="wait"
    }}
}}
"#,
        gate.display()
    );
    let m = Master::start(dir, &config);
    let w = m.worker("w1", "pw-web-1234");
    m.wait_connected("w1");
    let (status, resp) = http("POST", &m.http, "/api/v1/builders/slow/force", Some("{}"));
    assert_eq!(status, 201, "{resp}");
    let id = crate::common::wait_for("the step's first output", || {
        let v = crate::common::get_json(&m.http, "/api/v1/builds?running=true");
        let id = v["builds"].as_array()?.first()?["id"].as_u64()?;
        let d = crate::common::get_json(&m.http, &format!("/api/v1/builds/{id}"));
        (d["build"]["steps"][0]["log_len"].as_u64()? > 0).then_some(id)
    });
    (m, w, id)
}

/// The workers page marks a worker away past its missing-timeout, and
/// every page carries a banner while `GET /api/v1/health` fails (here: the
/// state disk is full), gone once it is healthy again.
#[test]
fn missing_workers_and_a_failing_store_are_shown() {
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("web_health");
    let Some(disk) = crate::test_faults::SmallDisk::mount(&dir.join("state"), "24m") else {
        return;
    };
    write_secret(&dir, "w1", "pw-web-health-1234");
    // `gone` never connects: missing a quarter of a second after the start.
    let config = r#"worker "w1" password=(secret)"w1"
worker "gone" password=(secret)"w1" missing-timeout="250ms"
scheduler "force" kind="force" {
    builders "b"
}
builder "b" {
    workers "w1" "gone"
    steps {
        shell "true"
    }
}
"#;
    let m = Master::start(&dir, config);
    let profile = dir.join("profile");
    let base = format!("http://{}/", m.http);
    crate::common::wait_for("gone to be missing", || {
        let v = crate::common::get_json(&m.http, "/api/v1/workers");
        v["workers"]
            .as_array()?
            .iter()
            .find(|w| w["name"] == "gone" && w["missing"] == true)
            .map(|_| ())
    });
    let dom = dump_dom(&browser, &profile, &format!("{base}#/workers"));
    assert!(dom.contains(">missing<"), "{dom}");
    assert!(
        dom.contains(r#"<div id="health" role="alert" hidden="">"#),
        "no banner while healthy: {dom}"
    );

    let ballast = disk.fill("ballast");
    // Large enough to need new pages, which the full disk refuses.
    let body = serde_json::json!({ "reason": "r".repeat(1_500_000) }).to_string();
    let (status, _) = http("POST", &m.http, "/api/v1/builders/b/force", Some(&body));
    assert_eq!(status, 500);
    crate::common::wait_for("health to fail", || {
        (http("GET", &m.http, "/api/v1/health", None).0 == 503).then_some(())
    });
    let dom = dump_dom(&browser, &profile, &format!("{base}#/"));
    assert!(dom.contains("its store cannot write"), "{dom}");
    assert!(
        !dom.contains(r#"<div id="health" role="alert" hidden="">"#),
        "{dom}"
    );

    std::fs::remove_file(&ballast).unwrap_or_else(|e| panic!("{e}"));
    crate::common::wait_for("health to recover", || {
        (http("GET", &m.http, "/api/v1/health", None).0 == 200).then_some(())
    });
    let dom = dump_dom(&browser, &profile, &format!("{base}#/"));
    assert!(!dom.contains("its store cannot write"), "{dom}");
    drop(m);
}

/// A private master answers the page's reads with 401: the page asks for
/// a token once and shows the builders with a viewer's.
#[test]
fn a_private_master_asks_the_page_for_a_token() {
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("web-private");
    write_secret(&dir, "w1", "pw-web-1234");
    write_secret(&dir, "vic-token", "vic-web-0003");
    let config = CONFIG.replace(
        "    title \"web test\"\n",
        "    title \"web test\"\n    private #true\n",
    ) + "role \"viewer\" grant=\"view\"\nuser \"vic\" token=(secret)\"vic-token\" roles=\"viewer\"\n";
    let m = Master::start(&dir, &config);
    assert_eq!(http("GET", &m.http, "/api/v1/builders", None).0, 401);
    let Some(d) = Driver::start(&browser, &dir.join("chromium")) else {
        return;
    };
    d.go(&format!("http://{}/", m.http));
    let question = d.answer_prompt("vic-web-0003");
    assert!(question.contains("private"), "{question}");
    d.element(r##"a[href="#/builders/app"]"##);
}
