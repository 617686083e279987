//! Locks, and the lock uses of builders and steps.

use super::*;

pub(super) fn lock(cx: &mut Cx, r: &mut NodeReader, name: String) -> Lock {
    let scope = kind_of(
        cx,
        r,
        "lock",
        &[("master", LockScope::Master), ("worker", LockScope::Worker)],
    )
    .unwrap_or(LockScope::Master);
    let max_count = r
        .prop(cx, "max-count")
        .and_then(|e| cx.int_in(e, 1, 1_000_000, "max-count"))
        .unwrap_or(1) as u32;
    Lock {
        name,
        scope,
        max_count,
        hash: String::new(),
    }
}

pub(super) fn lock_uses(cx: &mut Cx, r: &mut NodeReader, refs: &mut Vec<Named>) -> Vec<LockUse> {
    let mut out = Vec::new();
    for n in r.kids("lock") {
        let mut lr = NodeReader::new(n);
        let name = lr
            .req_arg(cx, 0, "a lock name", "lock \"db\" access=\"exclusive\"")
            .and_then(|e| cx.string(e).map(|s| (s, e.value_span)));
        let access = lr
            .prop(cx, "access")
            .and_then(|e| {
                cx.choice(
                    e,
                    "lock access",
                    &[
                        ("counting", LockAccess::Counting),
                        ("exclusive", LockAccess::Exclusive),
                    ],
                )
            })
            .unwrap_or(LockAccess::Counting);
        lr.finish(cx);
        if let Some((name, span)) = name {
            refs.push(Named {
                name: name.clone(),
                span,
            });
            out.push(LockUse { lock: name, access });
        }
    }
    out
}
