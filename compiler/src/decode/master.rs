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
    if let Some(n) = r.kid(cx, "store") {
        m.postgres = store(cx, n);
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

const STORE_EXAMPLE: &str =
    "store \"postgres://bbc@db.example.org:5432/bbc\" password=(secret)\"postgres-password\"";

/// `store "postgres://user@host:port/db" password=(secret)"NAME"
/// [schema="bbc"]`: the master's state in PostgreSQL. The password only
/// ever comes from a secret: one in the URL or as plain text would enter
/// the graph, `bbc compile`'s output and the config the API serves.
fn store(cx: &mut Cx, node: &Node) -> Option<PostgresStore> {
    let mut r = NodeReader::new(node);
    let url = r
        .req_arg(cx, 0, "a PostgreSQL URL", STORE_EXAMPLE)
        .and_then(|e| {
            let s = cx.string(e)?;
            match postgres_url_problem(&s) {
                None => Some(s),
                Some((problem, help)) => {
                    cx.err(Code::InvalidStore, e.value_span, problem)
                        .label("not a usable PostgreSQL URL")
                        .help(help)
                        .emit();
                    None
                }
            }
        });
    let password = match r.prop(cx, "password") {
        Some(e) => match cx.credential(e) {
            Some((Credential::Plain(_), _)) => {
                cx.err(
                    Code::WrongType,
                    e.value_span,
                    "the store's password must be a secret reference, not plain text",
                )
                .label("plain text")
                .help("store it as a secret and write password=(secret)\"NAME\"")
                .emit();
                None
            }
            Some((c, _)) => Some(c),
            None => None,
        },
        None => None,
    };
    let schema = match r.prop(cx, "schema") {
        Some(e) => cx.string(e).and_then(|s| {
            let ok = !s.is_empty()
                && s.len() <= 40
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !s.starts_with(|c: char| c.is_ascii_digit())
                && !s.starts_with("pg_");
            if !ok {
                cx.err(
                    Code::InvalidStore,
                    e.value_span,
                    format!("`{s}` is not a schema name bbc uses"),
                )
                .label("not a schema name")
                .help("use lower-case letters, digits and _ (at most 40, not starting with a digit or pg_), e.g. schema=\"bbc\"")
                .emit();
            }
            ok.then_some(s)
        }),
        None => Some(PostgresStore::DEFAULT_SCHEMA.to_string()),
    };
    r.finish(cx);
    Some(PostgresStore {
        url: url?,
        password,
        schema: schema?,
    })
}

/// What is wrong with a store URL, and how to fix it; `None` when bbc can
/// use it: `postgres://` or `postgresql://`, a user, a host, an optional
/// port, a database, no password and no options.
fn postgres_url_problem(url: &str) -> Option<(String, String)> {
    let example = format!("for example: {STORE_EXAMPLE}");
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Some((
            format!("`{url}` is not a PostgreSQL URL"),
            format!("write postgres://USER@HOST:PORT/DATABASE; {example}"),
        ));
    };
    if rest.contains('?') {
        return Some((
            "the store URL has options; bbc takes none yet".to_string(),
            "remove the `?…` part (TLS to PostgreSQL is not supported yet: keep the database on a trusted network)".to_string(),
        ));
    }
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (u, h),
        None => ("", authority),
    };
    if user.contains(':') {
        return Some((
            "the store URL holds a password".to_string(),
            "remove it from the URL and give it as a secret: password=(secret)\"NAME\"".to_string(),
        ));
    }
    if user.is_empty() {
        return Some((
            "the store URL names no user".to_string(),
            format!("write the role bbc logs in as before an @; {example}"),
        ));
    }
    // `[::1]` is an IPv6 host without a port.
    let (host, port) = match host.rsplit_once(':') {
        Some((h, p)) if !host.ends_with(']') => (h, Some(p)),
        _ => (host, None),
    };
    if host.is_empty() {
        return Some(("the store URL names no host".to_string(), example.clone()));
    }
    if let Some(p) = port {
        if !p.parse::<u16>().is_ok_and(|p| p > 0) {
            return Some((
                format!("`{p}` is not a port"),
                "use a port from 1 to 65535 (PostgreSQL's is 5432)".to_string(),
            ));
        }
    }
    if db.is_empty() || db.contains('/') {
        return Some((
            "the store URL names no database".to_string(),
            format!("end it with /DATABASE; {example}"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::postgres_url_problem;

    #[test]
    fn store_urls() {
        for ok in [
            "postgres://bbc@127.0.0.1:5432/bbc",
            "postgresql://bbc@db.example.org/ci",
            "postgres://bbc@[::1]:5432/bbc",
            "postgres://bbc@[::1]/bbc",
        ] {
            assert_eq!(postgres_url_problem(ok), None, "{ok}");
        }
        for (bad, says) in [
            ("mysql://bbc@h/db", "not a PostgreSQL URL"),
            ("postgres://bbc:pw@h/db", "password"),
            ("postgres://h/db", "no user"),
            ("postgres://bbc@/db", "no host"),
            ("postgres://bbc@h:0/db", "not a port"),
            ("postgres://bbc@h:99999/db", "not a port"),
            ("postgres://bbc@h", "no database"),
            ("postgres://bbc@h/", "no database"),
            ("postgres://bbc@h/db?sslmode=require", "options"),
        ] {
            let (problem, _) = postgres_url_problem(bad).unwrap_or_else(|| panic!("{bad} passed"));
            assert!(problem.contains(says), "{bad}: {problem}");
        }
    }
}
