//! The `master { … }` block.

use super::*;

pub(super) fn master(cx: &mut Cx, node: &Node) -> Master {
    let mut r = NodeReader::new(node);
    let mut m = Master::default();
    if let Some((t, _)) = r.kid_string(cx, "title") {
        m.title = t;
    }
    m.url = r.kid_with(cx, "url", "url \"https://ci.example.org/\"", |cx, e| {
        http_url(cx, e, "master URL")
    });
    if let Some(l) = r.kid(cx, "listen") {
        let mut lr = NodeReader::new(l);
        if let Some(e) = lr.prop(cx, "workers") {
            if let Some(a) = socket_addr(cx, e, "worker listen") {
                m.worker_listen = a;
            }
        }
        if let Some(e) = lr.prop(cx, "http") {
            if let Some(a) = socket_addr(cx, e, "HTTP listen") {
                m.http_listen = a;
            }
        }
        lr.finish(cx);
    }
    if let Some((s, sp)) = r.kid_string(cx, "state") {
        if s.trim().is_empty() {
            cx.err(Code::MissingValue, sp, "empty state directory")
                .label("empty path")
                .help("name a directory, e.g. state \"state\"")
                .emit();
        } else {
            m.state_dir = s;
        }
    }
    m.properties = properties(cx, &mut r);
    if let Some(n) = r.kid(cx, "retention") {
        m.retention = Some(retention(cx, n));
    }
    r.finish(cx);
    m
}

/// `retention { builds "180d"; logs "30d"; keep-last 20; every "1h" }`.
fn retention(cx: &mut Cx, node: &Node) -> Retention {
    let mut r = NodeReader::new(node);
    let (builds, builds_ms) = duration_kid(cx, &mut r, "builds", "builds \"180d\"");
    let (logs, logs_ms) = duration_kid(cx, &mut r, "logs", "logs \"30d\"");
    let keep_last = r
        .kid_with(cx, "keep-last", "keep-last 20", |cx, e| {
            cx.int_in(e, 0, 1_000_000, "keep-last")
        })
        .map_or(0, |n| n as u64);
    let (every, every_ms) = duration_kid(cx, &mut r, "every", "every \"1h\"");
    if let (Some(ms), Some(sp)) = (every_ms, every) {
        if ms < 1000 {
            cx.err(
                Code::OutOfRange,
                sp,
                format!("the janitor cannot run every {ms}ms"),
            )
            .label("shorter than a second")
            .help("use at least \"1s\"; the default is \"1h\"")
            .emit();
        }
    }
    if let (Some(b), Some(l), Some(bsp), Some(lsp)) = (builds_ms, logs_ms, builds, logs) {
        if l > b {
            cx.err(
                Code::Conflict,
                lsp,
                "logs are kept longer than the builds they belong to",
            )
            .label("longer than `builds`")
            .also(bsp, "builds, with their logs, go after this")
            .help("a build's logs go with it: make `logs` at most `builds`, or drop it")
            .emit();
        }
    }
    r.finish(cx);
    Retention {
        builds_ms,
        logs_ms,
        keep_last,
        every_ms: every_ms
            .filter(|ms| *ms >= 1000)
            .unwrap_or(Retention::DEFAULT_EVERY_MS),
    }
}

/// A `name "DURATION"` child: where its name is, and its value if valid.
fn duration_kid(
    cx: &mut Cx,
    r: &mut NodeReader<'_>,
    name: &'static str,
    example: &str,
) -> (Option<Span>, Option<u64>) {
    let Some(n) = r.kid(cx, name) else {
        return (None, None);
    };
    let mut kr = NodeReader::new(n);
    let ms = kr
        .req_arg(cx, 0, "a value", example)
        .and_then(|e| cx.duration_ms(e));
    kr.finish(cx);
    (Some(n.name.span), ms)
}
