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
    r.finish(cx);
    m
}
