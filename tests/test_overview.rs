//! The overview pages (issue 13) in headless Chromium against a real
//! master and worker: commits pushed to a real git repository and polled
//! start real builds; the waterfall, grid, console, pending requests and
//! sources pages are driven through WebDriver, the badges and an uploaded
//! file fetched, and each page is saved as a screenshot at desktop
//! (1280×800) and phone (390×844) widths into `target/screenshots/`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{get_json, git, http, temp_dir, wait_for, write_secret, Master};
use crate::test_web::{chromium, Driver};

fn config(remote: &Path) -> String {
    format!(
        r#"master {{
    title "views test"
}}
worker "w" password=(secret)"w" max-builds=2
worker "away" password=(secret)"away"
change-source "repo" kind="git-poller" {{
    repo "{remote}"
    branches "main" "feature"
    poll-interval "1h"
}}
scheduler "ci" kind="any-branch" {{
    branches "main" "feature"
    tree-stable-timer "100ms"
    builders tag="ci"
}}
scheduler "hourly" kind="periodic" {{
    interval "1h"
    branch "main"
    builders "lin"
}}
scheduler "force" kind="force" {{
    builders "lin" "win" "held"
}}
builder "lin" {{
    workers "w"
    tags "ci" "linux"
    steps {{
        git repo="{remote}" mode="full" method="fresh"
        shell "mkdir -p out && cat hello.txt > out/report.txt" name="report"
        upload "out/report.txt" to="reports/${{{{ prop.buildnumber }}}}.txt"
    }}
}}
builder "win" {{
    workers "w"
    tags "ci" "windows"
    steps {{
        git repo="{remote}" mode="full" method="fresh"
        shell "! grep -q broken hello.txt" name="check"
    }}
}}
builder "held" {{
    workers "away"
    steps {{
        shell "true"
    }}
}}
"#,
        remote = remote.display()
    )
}

/// A working copy pushing to a bare repository (the one polled).
struct Repo {
    work: PathBuf,
}

impl Repo {
    fn new(dir: &Path) -> (Repo, PathBuf) {
        let remote = dir.join("remote.git");
        std::fs::create_dir_all(&remote).unwrap();
        git(&remote, &["init", "-q", "--bare", "-b", "main"]);
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(
            &work,
            &["remote", "add", "origin", &remote.display().to_string()],
        );
        (Repo { work }, remote)
    }

    fn commit_push(&self, branch: &str, text: &str, author: &str, message: &str) -> String {
        std::fs::write(self.work.join("hello.txt"), text).unwrap();
        git(&self.work, &["add", "."]);
        git(
            &self.work,
            &[
                "-c",
                &format!("user.name={author}"),
                "-c",
                &format!("user.email={author}@example.org"),
                "commit",
                "-q",
                "--author",
                &format!("{author} <{author}@example.org>"),
                "-m",
                message,
            ],
        );
        git(
            &self.work,
            &["push", "-q", "origin", &format!("HEAD:{branch}")],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

fn poll(m: &Master) -> usize {
    let (st, body) = http("POST", &m.http, "/api/v1/change_sources/repo/poll", None);
    assert_eq!(st, 200, "poll: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["changes"].as_array().map_or(0, Vec::len)
}

/// Waits until every build of the `ci` builders for `n` changes is done.
fn wait_builds(m: &Master, n: usize) -> Value {
    wait_for(&format!("builds of {n} change(s)"), || {
        let v = get_json(&m.http, "/api/v1/views/console");
        let rows = v["changes"].as_array()?;
        let done = rows.len() == n
            && rows.iter().all(|c| {
                let b = c["builds"].as_array().map_or(&[][..], Vec::as_slice);
                b.len() == 2 && b.iter().all(|b| b["complete"] == true)
            });
        done.then_some(v)
    })
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | (u32::from(val(*c)) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn screenshots_dir() -> PathBuf {
    let d = crate::common::root().join("target/screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The page at both widths, as PNG files named `NAME-desktop.png` and
/// `NAME-phone.png`; `ready` is an element the page has once drawn.
fn shoot(d: &Driver, url: &str, name: &str, ready: &str) {
    for (width, height, kind) in [(1280, 800, "desktop"), (390, 844, "phone")] {
        let (st, v) = d.call(
            "POST",
            "/window/rect",
            serde_json::json!({"width": width, "height": height}),
        );
        assert_eq!(st, 200, "resize: {v}");
        d.go(url);
        d.element(ready);
        let (st, v) = d.call("GET", "/screenshot", Value::Null);
        assert_eq!(st, 200, "screenshot: {v}");
        let png = base64_decode(v.as_str().unwrap_or_default());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(screenshots_dir().join(format!("{name}-{kind}.png")), png).unwrap();
    }
}

#[test]
fn overview_pages_in_a_browser() {
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("overview");
    let (repo, remote) = Repo::new(&dir);
    repo.commit_push("main", "v1\n", "ada", "Add the widget");
    write_secret(&dir, "w", "pw-w");
    write_secret(&dir, "away", "pw-away");
    let m = Master::start(&dir, &config(&remote));
    let _w = m.worker("w", "pw-w");
    m.wait_connected("w");
    // The poller's first poll records the heads; later pushes are changes.
    wait_for("the first poll", || {
        let v = get_json(&m.http, "/api/v1/change_sources/repo");
        v["change_source"]["status"]["last_success_at"].as_i64()
    });
    let good = repo.commit_push("main", "v2\n", "ada", "Polish the widget\n\nWith a body.");
    assert_eq!(poll(&m), 1);
    wait_builds(&m, 1);
    let bad = repo.commit_push("main", "broken\n", "bob", "Break the windows build");
    repo.commit_push("feature", "feature\n", "cy", "Try a feature");
    assert_eq!(poll(&m), 2);
    let console = wait_builds(&m, 3);

    // The console: newest change first, with its author, message and
    // both builders' results; the broken commit is red on win only.
    let rows = console["changes"].as_array().unwrap();
    assert_eq!(rows[2]["revision"], good.as_str(), "{console}");
    let broken = rows.iter().find(|c| c["revision"] == bad.as_str()).unwrap();
    assert_eq!(broken["author"], "bob <bob@example.org>", "{broken}");
    let result_of = |c: &Value, b: &str| {
        c["builds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["builder"] == b)
            .unwrap()["result"]
            .clone()
    };
    assert_eq!(result_of(broken, "win"), "failure", "{broken}");
    assert_eq!(result_of(broken, "lin"), "success", "{broken}");
    // Filters: a branch, a tag.
    let main = get_json(&m.http, "/api/v1/views/console?branch=main");
    assert_eq!(main["changes"].as_array().map(Vec::len), Some(2), "{main}");
    let linux = get_json(&m.http, "/api/v1/views/console?tag=linux");
    assert_eq!(
        linux["builders"],
        serde_json::json!([{"name": "lin", "tags": ["ci", "linux"]}])
    );
    assert!(linux["changes"][0]["builds"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["builder"] == "lin"));
    let (st, body) = http("GET", &m.http, "/api/v1/views/console?limit=0", None);
    assert_eq!(st, 400, "{body}");

    // A request that waits: its builder's only worker never connects.
    let set = m.force("held", "{}");
    let waiting = get_json(&m.http, "/api/v1/views/pending");
    assert_eq!(waiting["requests"][0]["builder"], "held", "{waiting}");
    assert_eq!(waiting["requests"][0]["buildset"], set, "{waiting}");
    let held = waiting["requests"][0]["id"].as_u64().unwrap();

    let profile = dir.join("profile");
    let Some(d) = Driver::start(&browser, &profile) else {
        return;
    };
    let base = format!("http://{}/", m.http);

    // Waterfall: a column per builder, current status on top; each build
    // links to its page.
    shoot(
        &d,
        &format!("{base}#/waterfall"),
        "waterfall",
        "table.waterfall td.cell a",
    );
    let head = d.text("table.waterfall thead");
    for b in ["lin", "win", "held"] {
        assert!(head.contains(b), "{head}");
    }
    assert!(
        head.contains("1 waiting"),
        "held has a request waiting: {head}"
    );
    d.click("table.waterfall td.cell.failure a");
    let title = d.text("main h1");
    assert!(title.starts_with("win #"), "{title}");

    // Grid: builders × revisions, filtered by branch through its form.
    shoot(&d, &format!("{base}#/grid"), "grid", "table.grid a.box");
    let grid = d.text("table.grid");
    assert!(grid.contains(&bad[..10]) && grid.contains("bob"), "{grid}");
    d.go(&format!("{base}#/grid?branch=feature"));
    wait_for("the feature branch only", || {
        let t = d.text("table.grid thead");
        (!t.contains(&bad[..10]) && t.contains("cy")).then_some(())
    });

    // Console: the change's author and message beside its builds.
    shoot(
        &d,
        &format!("{base}#/console"),
        "console",
        "table.console a.box",
    );
    let text = d.text("table.console");
    assert!(
        text.contains("Break the windows build") && text.contains("bob <bob@example.org>"),
        "{text}"
    );
    d.go(&format!("{base}#/console?tag=windows"));
    wait_for("the windows builder only", || {
        let t = d.text("table.console thead");
        (t.contains("win") && !t.contains("lin")).then_some(())
    });

    // Sources: the poller's last poll and next one; the schedulers' timers.
    shoot(&d, &format!("{base}#/sources"), "sources", "main table");
    let text = d.text("main");
    assert!(
        text.contains("git-poller") && text.contains("none"),
        "{text}"
    );
    assert!(
        text.contains("hourly") && text.contains("periodic"),
        "{text}"
    );
    let sch = get_json(&m.http, "/api/v1/schedulers");
    let hourly = sch["schedulers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "hourly")
        .unwrap();
    assert!(
        hourly["timer"]["next_fire_at"].as_i64().is_some(),
        "{hourly}"
    );

    // Pending: the held request, cancelled from the page.
    shoot(
        &d,
        &format!("{base}#/pending"),
        "pending",
        "button.cancel-request",
    );
    let text = d.text("main table");
    assert!(text.contains("held"), "{text}");
    d.click(&format!("button[data-request=\"{held}\"]"));
    wait_for("the request to go", || {
        let v = get_json(&m.http, "/api/v1/views/pending");
        v["requests"].as_array()?.is_empty().then_some(())
    });
    d.element("main p.muted");

    // The uploaded file: listed on its build's page and served.
    let lin = get_json(&m.http, "/api/v1/builds?builder=lin&limit=1");
    let id = lin["builds"][0]["id"].as_u64().unwrap();
    let n = lin["builds"][0]["number"].as_u64().unwrap();
    let build = get_json(&m.http, &format!("/api/v1/builds/{id}"));
    assert_eq!(
        build["build"]["uploads"],
        serde_json::json!([format!("reports/{n}.txt")]),
        "{build}"
    );
    shoot(
        &d,
        &format!("{base}#/builds/{id}"),
        "build-uploads",
        "ul.uploads a",
    );
    let (st, body) = http("GET", &m.http, &format!("/files/reports/{n}.txt"), None);
    assert_eq!(st, 200, "{body}");
    let built = if build["build"]["origin"]["branch"] == "feature" {
        "feature\n"
    } else {
        "broken\n"
    };
    assert_eq!(body, built, "the file the build uploaded: {build}");
    let (st, _) = http("GET", &m.http, "/files/../state/bbc.redb", None);
    assert_ne!(st, 200);

    // Badges: the builder's last result, and the tag's worst.
    let (st, svg) = http("GET", &m.http, "/badges/win.svg", None);
    assert_eq!(st, 200, "{svg}");
    assert!(
        svg.starts_with("<svg") && svg.contains(">win</text>"),
        "{svg}"
    );
    let (_, lin_svg) = http("GET", &m.http, "/badges/lin.svg", None);
    assert!(lin_svg.contains(">passing</text>"), "{lin_svg}");
    let (_, held_svg) = http("GET", &m.http, "/badges/held.svg", None);
    assert!(held_svg.contains(">no builds</text>"), "{held_svg}");
    let (st, tag) = http("GET", &m.http, "/badges/tag/ci.svg", None);
    assert_eq!(st, 200, "{tag}");
    let (st, _) = http("GET", &m.http, "/badges/nope.svg", None);
    assert_eq!(st, 404);
    shoot(
        &d,
        &format!("http://{}/badges/lin.svg", m.http),
        "badge-lin",
        "svg",
    );
}
