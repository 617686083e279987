//! Workers, and their downtime windows.

use super::*;

pub(super) fn worker(cx: &mut Cx, r: &mut NodeReader, name: String) -> Worker {
    let password = match r.prop(cx, "password") {
        Some(e) => credential(cx, e, "the worker password"),
        None => {
            cx.err(
                Code::MissingValue,
                r.node.name.span,
                format!("worker `{name}` needs a password"),
            )
            .label("no password= property")
            .help(format!(
                "add password=(secret)\"{name}\" and put the password in the master's secrets"
            ))
            .emit();
            None
        }
    };
    let max_builds = r
        .prop(cx, "max-builds")
        .and_then(|e| cx.int_in(e, 1, 10_000, "max-builds"))
        .unwrap_or(1) as u32;
    let keepalive_ms = r
        .prop(cx, "keepalive")
        .and_then(|e| cx.duration_ms(e))
        .unwrap_or(60_000);
    let missing_timeout_ms = r
        .prop(cx, "missing-timeout")
        .and_then(|e| cx.duration_ms(e))
        .unwrap_or(3_600_000);
    let protocol = r
        .prop(cx, "protocol")
        .and_then(|e| {
            cx.choice(
                e,
                "worker protocol",
                &[
                    ("bbc", WorkerProtocol::Bbc),
                    ("buildbot", WorkerProtocol::Buildbot),
                ],
            )
        })
        .unwrap_or_default();
    let latent = latent(cx, r, &name, protocol);
    let properties = properties(cx, r);
    let mut downtime = Vec::new();
    for n in r.kids("downtime") {
        let mut dr = NodeReader::new(n);
        let spec = dr.req_arg(cx, 0, "a window", "downtime \"Sat 02:00-06:00\" tz=\"UTC\"");
        let tz = match dr.prop(cx, "tz") {
            Some(e) => time_zone(cx, e),
            None => Some("UTC".to_string()),
        };
        dr.finish(cx);
        if let (Some(e), Some(tz)) = (spec, tz) {
            if let Some(s) = cx.string(e) {
                match parse_downtime(&s) {
                    Ok((days, start_minute, end_minute)) => downtime.push(Downtime {
                        days,
                        start_minute,
                        end_minute,
                        tz,
                    }),
                    Err(why) => cx
                        .err(Code::InvalidDowntime, e.value_span, format!("invalid downtime \"{s}\": {why}"))
                        .label("not a downtime window")
                        .help("write days and a time range: \"Sat 02:00-06:00\", \"Mon-Fri 22:00-06:00\" (crosses midnight), \"Sat,Sun 00:00-24:00\", \"daily 01:00-02:00\"")
                        .emit(),
                }
            }
        }
    }
    Worker {
        name,
        password: password.unwrap_or(Credential::Secret {
            secret: String::new(),
        }),
        max_builds,
        properties,
        keepalive_ms,
        missing_timeout_ms,
        downtime,
        protocol,
        latent,
        hash: String::new(),
    }
}

/// What kind of worker this is: one that connects by itself (the default),
/// or a latent one the master starts (`kind="docker"`, `kind="command"`)
/// with its own properties, asked for only for that kind so that the
/// others are unknown to the rest.
fn latent(cx: &mut Cx, r: &mut NodeReader, name: &str, protocol: WorkerProtocol) -> Option<Latent> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Connect,
        Docker,
        Command,
    }
    let kind_entry = r.prop(cx, "kind");
    let kind_at = kind_entry.map(|e| e.value_span);
    let kind = match kind_entry {
        None => Some(Kind::Connect),
        Some(e) => cx.choice(
            e,
            "worker kind",
            &[
                ("connect", Kind::Connect),
                ("docker", Kind::Docker),
                ("command", Kind::Command),
            ],
        ),
    };
    let Some(kind) = kind else {
        // A kind that does not exist is the one mistake: the properties of
        // the kinds that do are not unknown on top of it.
        for p in ["image", "start", "stop", "idle", "start-timeout", "connect"] {
            let _ = r.prop(cx, p);
        }
        return None;
    };
    let kind_span = kind_at.unwrap_or(r.node.name.span);
    let required = |cx: &mut Cx, r: &mut NodeReader, prop: &'static str, example: &str| {
        let kind_word = if prop == "image" { "docker" } else { "command" };
        match r
            .prop(cx, prop)
            .and_then(|e| cx.string(e).map(|s| (s, e.value_span)))
        {
            Some((s, sp)) if s.trim().is_empty() => {
                cx.err(
                    Code::MissingValue,
                    sp,
                    format!("empty {prop}= for worker `{name}`"),
                )
                .label("empty")
                .help(format!("write it out: {example}"))
                .emit();
                None
            }
            Some((s, _)) => Some(s),
            None => {
                cx.err(
                    Code::MissingValue,
                    kind_span,
                    format!("worker `{name}` of kind=\"{kind_word}\" needs {prop}="),
                )
                .label(format!("no {prop}= property"))
                .help(format!("add {example}"))
                .emit();
                None
            }
        }
    };
    let kind: Option<LatentKind> = match kind {
        Kind::Connect => return None,
        Kind::Docker => {
            if protocol != WorkerProtocol::Bbc {
                cx.err(
                    Code::InvalidChoice,
                    kind_span,
                    format!("worker `{name}` of kind=\"docker\" runs `bbc worker`, so its protocol is bbc's"),
                )
                .label("a container runs bbc's own worker")
                .help("remove protocol=, or use kind=\"command\" to start another worker")
                .emit();
            }
            required(
                cx,
                r,
                "image",
                "image=\"registry.example.org/bbc-worker:1\"",
            )
            .map(|image| LatentKind::Docker { image })
        }
        Kind::Command => {
            let start = required(cx, r, "start", "start=\"kubectl apply -f worker.yaml\"");
            let stop = required(cx, r, "stop", "stop=\"kubectl delete -f worker.yaml\"");
            start
                .zip(stop)
                .map(|(start, stop)| LatentKind::Command { start, stop })
        }
    };
    let idle_ms = r
        .prop(cx, "idle")
        .and_then(|e| cx.duration_ms(e))
        .unwrap_or(600_000);
    let start_timeout_ms = r
        .prop(cx, "start-timeout")
        .and_then(|e| cx.duration_ms(e))
        .unwrap_or(120_000);
    let connect = r
        .prop(cx, "connect")
        .and_then(|e| host_port(cx, e, "master", "connect=\"ci.example.org:9989\""));
    // Every property read first: a missing one is its own error only.
    Some(Latent {
        kind: kind?,
        idle_ms,
        start_timeout_ms,
        connect,
    })
}

pub(super) const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// "Sat 02:00-06:00", "Mon-Fri 22:00-06:00", "Sat,Sun …", "daily …".
pub(super) fn parse_downtime(s: &str) -> Result<(Vec<u8>, u16, u16), String> {
    let mut parts = s.split_whitespace();
    let (Some(days), Some(range), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected days, a space, then HH:MM-HH:MM".into());
    };
    let day = |d: &str| -> Result<u8, String> {
        let l = d.to_ascii_lowercase();
        DAYS.iter()
            .position(|x| {
                l.len() >= 3
                    && x.starts_with(&l[..3])
                    && (l.len() == 3
                        || [
                            "monday",
                            "tuesday",
                            "wednesday",
                            "thursday",
                            "friday",
                            "saturday",
                            "sunday",
                        ]
                        .contains(&l.as_str()))
            })
            .map(|i| i as u8)
            .ok_or_else(|| format!("`{d}` is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
    };
    let mut out = Vec::new();
    if days.eq_ignore_ascii_case("daily") || days == "*" {
        out.extend(0..7);
    } else {
        for part in days.split(',') {
            if let Some((a, b)) = part.split_once('-') {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    out.push(d);
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            } else {
                out.push(day(part)?);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    let (a, b) = range
        .split_once('-')
        .ok_or_else(|| "the time range needs a `-`, as in 02:00-06:00".to_string())?;
    let hm = |t: &str, end: bool| -> Result<u16, String> {
        let (h, m) = t
            .split_once(':')
            .ok_or_else(|| format!("`{t}` is not HH:MM"))?;
        let h: u16 = h.parse().map_err(|_| format!("`{t}` is not HH:MM"))?;
        let m: u16 = m.parse().map_err(|_| format!("`{t}` is not HH:MM"))?;
        if m > 59 || h > 24 || (h == 24 && (m != 0 || !end)) {
            return Err(format!("`{t}` is not a time of day"));
        }
        Ok(h * 60 + m)
    };
    let start = hm(a, false)?;
    let end = hm(b, true)?;
    if start == end {
        return Err("the window is empty (start equals end)".into());
    }
    Ok((out, start, end % (24 * 60)))
}
