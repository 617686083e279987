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
    // Where the worker address was written, for the plaintext lint, and
    // whether plain TCP beyond loopback was chosen on purpose.
    let mut workers_at = None;
    let mut plaintext = false;
    if let Some(l) = r.kid(cx, "listen") {
        let mut lr = NodeReader::new(l);
        if let Some(e) = lr.prop(cx, "workers") {
            if let Some(a) = socket_addr(cx, e, "worker listen") {
                m.worker_listen = a;
                workers_at = Some(e.value_span);
            }
        }
        if let Some(e) = lr.prop(cx, "plaintext") {
            plaintext = cx.boolean(e).unwrap_or(false);
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
    if let Some(t) = r.kid(cx, "tls") {
        tls(cx, t, &mut m);
    }
    if let Some(n) = r.kid(cx, "secrets-command") {
        let mut cr = NodeReader::new(n);
        let example = "secrets-command \"pass\" \"show\" \"bbc/{name}\"";
        if cr.req_arg(cx, 0, "a program", example).is_some() {
            for e in cr.rest_args(0) {
                if let Some(s) = cx.string(e) {
                    m.secrets_command.push(s);
                }
            }
        }
        cr.finish(cx);
    }
    m.properties = properties(cx, &mut r);
    if let Some(n) = r.kid(cx, "private") {
        let mut pr = NodeReader::new(n);
        if let Some(e) = pr.req_arg(cx, 0, "#true or #false", "private #true") {
            m.access.private = cx.boolean(e).unwrap_or(false);
        }
        pr.finish(cx);
    }
    m.access.oauth = super::oauth::providers(cx, &mut r);
    if let Some(n) = r.kid(cx, "retention") {
        m.retention = Some(retention(cx, n));
    }
    // How many latent workers may be up (or starting) at once.
    if let Some(n) = r.kid(cx, "latent-workers") {
        let mut lr = NodeReader::new(n);
        if let Some(e) = lr.prop(cx, "max") {
            m.latent_max = cx
                .int_in(e, 1, 10_000, "latent-workers max")
                .map(|i| i as u32);
        }
        lr.finish(cx);
    }
    r.finish(cx);
    if let Some(span) = workers_at {
        plaintext_lint(cx, &m, span, plaintext);
    }
    m
}

/// `tls cert="…" key="…" [workers=#false] [http=#false]`: one certificate
/// for both ports unless a port is turned off.
fn tls(cx: &mut Cx, node: &Node, m: &mut Master) {
    let mut r = NodeReader::new(node);
    let example = "tls cert=\"tls/master.crt\" key=\"tls/master.key\"";
    let file = |cx: &mut Cx, r: &mut NodeReader, name: &'static str, what: &str| {
        let Some(e) = r.prop(cx, name) else {
            cx.err(
                Code::MissingValue,
                node.name.span,
                format!("`tls` needs `{name}=`, the {what}"),
            )
            .label(format!("{name}= missing"))
            .help(format!("for example: {example}"))
            .emit();
            return None;
        };
        let s = cx.string(e)?;
        if s.trim().is_empty() {
            cx.err(
                Code::MissingValue,
                e.value_span,
                format!("empty {what} path"),
            )
            .label("empty path")
            .help(format!("for example: {example}"))
            .emit();
            return None;
        }
        Some(s)
    };
    let cert = file(cx, &mut r, "cert", "certificate chain (PEM)");
    let key = file(cx, &mut r, "key", "private key (PEM)");
    let on = |cx: &mut Cx, r: &mut NodeReader, name: &'static str| {
        r.prop(cx, name)
            .is_none_or(|e| cx.boolean(e).unwrap_or(true))
    };
    let workers = on(cx, &mut r, "workers");
    let http = on(cx, &mut r, "http");
    r.finish(cx);
    if let (Some(cert), Some(key)) = (cert, key) {
        let t = Tls { cert, key };
        m.worker_tls = workers.then(|| t.clone());
        m.http_tls = http.then_some(t);
    }
}

/// W0508: worker passwords (in `hello`) and all build output cross the
/// network in clear when the worker port listens beyond loopback without
/// TLS. Plain TCP stays possible, but only as a choice written down.
fn plaintext_lint(cx: &mut Cx, m: &Master, span: Span, chosen: bool) {
    let loopback = m
        .worker_listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if loopback || chosen || m.worker_tls.is_some() {
        return;
    }
    cx.err(
        Code::PlaintextWorkerPort,
        span,
        format!(
            "workers connect to {} without TLS: their passwords and build output cross the network in clear",
            m.worker_listen
        ),
    )
    .label("plain TCP beyond loopback")
    .help("add `tls cert=\"…\" key=\"…\"` to `master` (`bbc cert` makes a pair), or write `plaintext=#true` on `listen` if the network is trusted")
    .emit();
}

/// `retention { builds "180d"; logs "30d"; keep-last 20; audit "365d";
/// every "1h" }`.
fn retention(cx: &mut Cx, node: &Node) -> Retention {
    let mut r = NodeReader::new(node);
    let (builds, builds_ms) = duration_kid(cx, &mut r, "builds", "builds \"180d\"");
    let (logs, logs_ms) = duration_kid(cx, &mut r, "logs", "logs \"30d\"");
    // Independent of the builds': an entry names a build by id, and says
    // who did what whether or not the build is still kept.
    let (_, audit_ms) = duration_kid(cx, &mut r, "audit", "audit \"365d\"");
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
        audit_ms,
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
