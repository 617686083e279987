# bbc import: loads a Buildbot master.cfg with Buildbot's own loader and
# prints, as JSON on standard output, the bbc entities it translates to, as
# a tree of KDL nodes (the Rust side, src/import/, prints, groups and
# checks them). What cannot be translated is recorded with where it occurred.
#
# Usage: python dump.py MASTER_CFG
# Exit codes: 0 done; 3 no Buildbot in this Python; 4 Buildbot refused the
# config (its messages on standard error).
import json
import os
import re
import sys

try:
    import buildbot
    from buildbot.config.master import FileLoader
    from buildbot.config.errors import ConfigErrors
    from buildbot.process import properties as bbprops
    from buildbot.changes.filter import ChangeFilter
    from buildbot import locks as bblocks
except ImportError as e:  # pragma: no cover - reported by the Rust side
    sys.stderr.write(f"no Buildbot in {sys.executable}: {e}\n")
    sys.exit(3)

# ChangeFilter keeps its arguments only in a compiled form: record them as
# given, before master.cfg makes any.
_cf_init = ChangeFilter.__init__


def _recording_init(self, *args, **kwargs):
    self._bbc_kwargs = dict(kwargs)
    _cf_init(self, *args, **kwargs)


ChangeFilter.__init__ = _recording_init

RESULTS = ["success", "warnings", "failure", "skipped", "exception", "retry", "cancelled"]


class Out:
    def __init__(self):
        self.untranslated = []  # {"where", "what"}

    def lost(self, where, what):
        self.untranslated.append({"where": where, "what": what})
        return f"bbc import: not translated: {what}"


OUT = Out()


def node(name, args=(), props=(), children=None, comments=()):
    n = {"name": name, "args": list(args), "props": [[k, v] for k, v in props]}
    if children is not None:
        n["children"] = children
    if comments:
        n["comments"] = list(comments)
    return n


def secret(name):
    return {"secret": name}


def describe(v):
    """A short description of a Python object for messages."""
    if callable(v) and hasattr(v, "__name__"):
        mod = getattr(v, "__module__", "") or ""
        return f"the Python function `{v.__name__}`" + (f" from {mod}" if mod not in ("", "__builtin__") else "")
    return f"`{type(v).__name__}` object {v!r:.80}"


INTERP = re.compile(r"%\(([^)]*)\)s|%%")


def interpolate(fmt, kwargs, where, comments):
    """Buildbot's Interpolate format string as a bbc run-time string, or None."""

    def one(m):
        if m.group(0) == "%%":
            return "%"
        spec = m.group(1)
        parts = spec.split(":", 1)
        kind = parts[0]
        rest = parts[1] if len(parts) > 1 else ""
        if kind == "prop" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rest):
            return "${{ prop.%s }}" % rest
        dm = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*):(.)(.*)", rest, re.S) if kind == "prop" else None
        if dm:
            name, op, arg = dm.groups()
            if op == "-":
                # The default when the property is not set: bbc's `??`.
                q = "'" if "'" not in arg else '"'
                if q in arg or "}}" in arg:
                    raise LookupError(spec, "a default holding both quote marks or `}}`")
                return "${{ prop.%s ?? %s%s%s }}" % (name, q, arg, q)
            why = {
                "~": "a default for a property that is unset *or false*; bbc's `??` replaces only an unset one",
                "+": "a replacement when the property is set; bbc has no run-time test of whether a property is set",
                "?": "a choice by whether the property is set; bbc has no run-time test of whether a property is set",
                "#": "a choice by whether the property is true; bbc's run-time expressions have no `if`",
            }.get(op, "an operator bbc does not know")
            raise LookupError(spec, why)
        if kind == "src":
            # %(src:CODEBASE:ATTR)s: the first codebase's attributes are properties.
            attr = rest.rsplit(":", 1)[-1]
            if attr in ("branch", "revision", "repository", "project", "codebase"):
                return "${{ prop.%s }}" % attr
        if kind == "kw" and rest in kwargs:
            v = value(kwargs[rest], where, comments)
            if isinstance(v, (str, int, float, bool)):
                return str(v) if not isinstance(v, bool) else ("true" if v else "false")
        raise LookupError(spec)

    try:
        return INTERP.sub(one, fmt)
    except LookupError as e:
        why = f" ({e.args[1]})" if len(e.args) > 1 else ""
        comments.append(OUT.lost(where, f"Interpolate `%({e.args[0]})s` in {fmt!r}{why}"))
        return None


def value(v, where, comments):
    """A Python value as a JSON scalar for KDL, renderables as `${{ … }}` strings."""
    if isinstance(v, bool) or v is None or isinstance(v, (int, float)):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, str):
        return v
    if isinstance(v, bbprops.Interpolate):
        if v.args:
            comments.append(OUT.lost(where, f"Interpolate with positional arguments {v!r}"))
            return None
        return interpolate(v.fmtstring, v.kwargs, where, comments)
    if isinstance(v, bbprops.Property):
        if v.default is not None:
            comments.append(OUT.lost(where, f"the default of Property({v.key!r}, default={v.default!r})"))
        return "${{ prop.%s }}" % v.key
    if isinstance(v, bbprops.WithProperties):
        fmt = v.fmtstring
        if v.args:
            fmt = fmt % tuple("%%(prop:%s)s" % a for a in v.args)
        else:
            fmt = re.sub(r"%\((\w+)\)s", r"%(prop:\1)s", fmt)
        return interpolate(fmt, {}, where, comments)
    if isinstance(v, bbprops._SecretRenderer):
        return secret(v.secret_name)
    comments.append(OUT.lost(where, describe(v)))
    return None


def secret_of(v, fallback, where, comments):
    """A credential: Buildbot's Secret/Interpolate('%(secret:x)s') by name,
    a plain password as a secret named after its owner (never copied)."""
    if isinstance(v, bbprops._SecretRenderer):
        return secret(v.secret_name)
    if isinstance(v, bbprops.Interpolate) and not v.args:
        m = re.fullmatch(r"%\(secret:([^)]+)\)s", v.fmtstring)
        if m:
            return secret(m.group(1))
    if isinstance(v, str):
        return secret(fallback)
    comments.append(OUT.lost(where, describe(v)))
    return secret(fallback)


def duration(seconds):
    if seconds is None:
        return None
    s = int(seconds)
    if s % 3600 == 0 and s:
        return f"{s // 3600}h"
    if s % 60 == 0 and s:
        return f"{s // 60}m"
    return f"{s}s"


def props_nodes(p, where, comments):
    out = []
    if p is None:
        return out
    items = p.asDict().items() if hasattr(p, "asDict") else p.items()
    for k, v in sorted(items):
        if isinstance(v, tuple):  # Properties.asDict gives (value, source)
            v = v[0]
        val = value(v, f"{where} property `{k}`", comments)
        if val is not None:
            out.append(node("property", [k, val]))
    return out


def as_list(v):
    if v is None:
        return []
    if isinstance(v, (list, tuple, set)):
        return list(v)
    return [v]


# --- master


def master_node(cfg):
    ch = []
    comments = []
    if cfg.title and cfg.title != "Buildbot":
        ch.append(node("title", [cfg.title]))
    if cfg.buildbotURL and cfg.buildbotURL != "http://localhost:8080/":
        ch.append(node("url", [cfg.buildbotURL]))
    listen = []
    pb = (cfg.protocols or {}).get("pb") or (cfg.protocols or {}).get("msgpack_experimental_v7")
    workers = address_of(pb.get("port")) if isinstance(pb, dict) else None
    if workers:
        listen.append(("workers", workers))
    http = address_of((cfg.www or {}).get("port"))
    if http:
        listen.append(("http", http))
    if workers and not workers.startswith("127."):
        listen.append(("plaintext", True))
        comments.append("Buildbot's worker port was plain TCP beyond this machine; consider `tls` (docs/security.md)")
    if listen:
        ch.append(node("listen", props=listen))
    ch.extend(props_nodes(cfg.properties, "master", comments))
    return node("master", children=ch, comments=comments)


def address_of(p):
    """Buildbot's port (8010, "tcp:8010", "tcp:8010:interface=127.0.0.1")
    as the socket address bbc listens on; Buildbot's default is every address."""
    if isinstance(p, int):
        return f"0.0.0.0:{p}"
    if isinstance(p, str):
        m = re.fullmatch(r"(?:tcp:)?(\d+)(?::interface=([0-9.]+))?", p)
        if m:
            return f"{m.group(2) or '0.0.0.0'}:{m.group(1)}"
    return None


# --- workers


def worker_node(w):
    where = f"worker `{w.name}`"
    comments = []
    kw = dict(w._config_kwargs)
    args = list(w._config_args)
    password = worker_password(w)
    kw.pop("password", None)
    props = [("password", secret_of(password, w.name, where + " password", comments))]
    if w.max_builds:
        props.append(("max-builds", w.max_builds))
    if "keepalive_interval" in kw and kw["keepalive_interval"]:
        props.append(("keepalive", duration(kw["keepalive_interval"])))
    if "missing_timeout" in kw and kw["missing_timeout"]:
        props.append(("missing-timeout", duration(kw["missing_timeout"])))
    props.append(("protocol", "buildbot"))
    ch = props_nodes(kw.get("properties"), where, comments)
    for k in sorted(kw):
        if k not in ("max_builds", "keepalive_interval", "missing_timeout", "properties") and kw[k] not in (None, [], {}):
            comments.append(OUT.lost(where, f"the option `{k}={kw[k]!r:.60}`"))
    if type(w).__name__ not in ("Worker",):
        comments.append(OUT.lost(where, f"the worker class `{type(w).__name__}` (a plain worker is written)"))
    return node("worker", [w.name], props, ch or None, comments)


def worker_password(w):
    """Worker(name, password, ...): the name is the first positional argument."""
    args = list(w._config_args)
    return w._config_kwargs.get("password", args[1] if len(args) > 1 else None)


# --- locks


def lock_node(lk):
    kind = "master" if isinstance(lk, bblocks.MasterLock) else "worker"
    props = [("kind", kind)]
    if lk.maxCount != 1:
        props.append(("max-count", lk.maxCount))
    comments = []
    if kind == "worker" and getattr(lk, "maxCountForWorker", None):
        comments.append(OUT.lost(f"lock `{lk.name}`", "maxCountForWorker (one max-count for every worker)"))
    return node("lock", [lk.name], props, None, comments)


def lock_uses(ls, locks, where, comments):
    out = []
    for la in as_list(ls):
        lid, mode = (la.lockid, la.mode) if isinstance(la, bblocks.LockAccess) else (la, "counting")
        if not isinstance(lid, bblocks.BaseLockId):
            comments.append(OUT.lost(where, describe(la)))
            continue
        locks[lid.name] = lid
        props = [("access", "exclusive")] if mode == "exclusive" else []
        out.append(node("lock", [lid.name], props))
    return out


# --- change sources


def change_source_node(cs, names):
    cls = type(cs).__name__
    kw = dict(cs._config_kwargs)
    args = list(cs._config_args)
    comments = []
    if cls == "GitPoller":
        repo = kw.get("repourl", args[0] if args else None)
        base = re.sub(r"\.git$", "", str(repo).rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]) or "git"
        name = unique(names, base)
        where = f"change source `{name}`"
        ch = [node("repo", [repo])]
        branches = kw.get("branches", kw.get("branch"))
        if branches is True:
            pass
        elif callable(branches):
            comments.append(OUT.lost(where, "branches " + describe(branches) + " (every branch is watched)"))
        elif branches:
            ch.append(node("branches", as_list(branches)))
        if kw.get("only_tags"):
            ch.append(node("only-tags", [True]))
        if kw.get("pollInterval"):
            ch.append(node("poll-interval", [duration(kw["pollInterval"])]))
        cb = kw.get("codebase")
        # Buildbot 3 takes a name; Buildbot 4 a `util.Codebase(name, project)`.
        cb = getattr(cb, "name", cb)
        if isinstance(cb, str) and cb:
            ch.append(node("codebase", [cb]))
        elif cb:
            comments.append(OUT.lost(where, "codebase " + describe(cb) + " (its changes carry no codebase)"))
        return node("change-source", [name], [("kind", "git-poller")], ch, comments)
    name = unique(names, getattr(cs, "name", None) or cls)
    return node(
        "change-source",
        [name],
        [("kind", "json-webhook")],
        None,
        [OUT.lost(f"change source `{name}`", f"the change source class `{cls}` (written as a JSON webhook)")],
    )


def unique(names, base):
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(base)).strip("-") or "x"
    n, i = base, 2
    while n in names:
        n = f"{base}-{i}"
        i += 1
    names.add(n)
    return n


# --- schedulers

SCHED_KINDS = {
    "SingleBranchScheduler": "single-branch",
    "Scheduler": "single-branch",
    "AnyBranchScheduler": "any-branch",
    "Periodic": "periodic",
    "Nightly": "nightly",
    "Triggerable": "triggerable",
    "Dependent": "dependent",
    "ForceScheduler": "force",
}


def scheduler_node(s):
    cls = type(s).__name__
    where = f"scheduler `{s.name}`"
    comments = []
    kind = SCHED_KINDS.get(cls)
    if kind is None:
        comments.append(OUT.lost(where, f"the scheduler class `{cls}` (written as a force scheduler)"))
        kind = "force"
    kw = dict(s._config_kwargs)
    ch = []
    branch_node = None
    cf = kw.get("change_filter")
    cfk = getattr(cf, "_bbc_kwargs", {}) if cf is not None else {}
    for k in cfk:
        if k not in ("branch", "repository"):
            comments.append(OUT.lost(where, f"the change filter's `{k}`"))
    cf_branch = cfk.get("branch")
    if kind == "single-branch":
        b = kw.get("branch", cf_branch)
        if isinstance(b, (list, tuple)) and len(b) == 1:
            b = b[0]
        if not isinstance(b, str):
            comments.append(OUT.lost(where, f"the branch {b!r} (written as `main`)"))
            b = "main"
        branch_node = node("branch", [b])
    elif kind == "any-branch":
        bs = as_list(cf_branch if cf_branch is not None else kw.get("branches"))
        if bs and all(isinstance(b, str) for b in bs):
            ch.append(node("branches", bs))
    elif kind in ("periodic", "nightly") and kw.get("branch"):
        branch_node = node("branch", [kw["branch"]])
    if branch_node:
        ch.append(branch_node)
    if "repository" in cfk and isinstance(cfk["repository"], str):
        ch.append(node("repository", [cfk["repository"]]))
    if kind in ("single-branch", "any-branch") and kw.get("treeStableTimer"):
        ch.append(node("tree-stable-timer", [duration(kw["treeStableTimer"])]))
    if kind in ("single-branch", "any-branch", "nightly"):
        fii = kw.get("fileIsImportant")
        if fii is not None:
            comments.append(OUT.lost(where, "fileIsImportant " + describe(fii)))
        if kw.get("onlyImportant"):
            ch.append(node("only-important", [True]))
    if kind == "periodic":
        ch.append(node("interval", [duration(kw.get("periodicBuildTimer"))]))
    if kind == "nightly":
        ch.append(node("cron", [cron_of(kw)]))
        if kw.get("onlyIfChanged"):
            ch.append(node("only-if-changed", [True]))
    if kind == "dependent":
        up = kw.get("upstream")
        ch.append(node("upstream", [getattr(up, "name", str(up))]))
    if kind == "force":
        for p in as_list(kw.get("properties")):
            ch.append(force_param(p, where, comments))
    if "codebases" in kw:
        ch.extend(codebase_nodes(kw["codebases"], kind, where, comments))
    ch.append(node("builders", list(s.builderNames)))
    ch = [c for c in ch if c is not None]
    handled = {"name", "builderNames", "change_filter", "branch", "branches", "treeStableTimer",
               "fileIsImportant", "onlyImportant", "periodicBuildTimer", "minute", "hour",
               "dayOfMonth", "month", "dayOfWeek", "onlyIfChanged", "upstream", "codebases"}
    if kind == "force":
        handled |= {"properties", "buttonName", "label", "reason", "username"}
    for k in sorted(kw):
        if k not in handled and kw[k] not in (None, {}, [], ""):
            comments.append(OUT.lost(where, f"the option `{k}={kw[k]!r:.60}`"))
    return node("scheduler", [s.name], [("kind", kind)], ch, comments)


def codebase_nodes(cbs, kind, where, comments):
    """A scheduler's `codebases` (a dict of name → {repository, branch}, or
    a list of names) as bbc's `codebase` children, in the order written."""
    if isinstance(cbs, dict):
        items = list(cbs.items())
    elif isinstance(cbs, (list, tuple)):
        items = [(n, {}) for n in cbs]
    else:
        comments.append(OUT.lost(where, "codebases " + describe(cbs)))
        return []
    # Buildbot's default, one codebase named "": what bbc does without any.
    if [n for n, _ in items] == [""]:
        return []
    if kind not in ("single-branch", "any-branch", "periodic", "nightly"):
        comments.append(OUT.lost(where, f"codebases (a {kind} scheduler takes its source from elsewhere)"))
        return []
    out = []
    for name, spec in items:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            comments.append(OUT.lost(where, f"the codebase {name!r} (bbc's are named by letters, digits, `_` and `-`)"))
            continue
        props = []
        spec = spec if isinstance(spec, dict) else {}
        for k in ("repository", "branch"):
            v = spec.get(k)
            if isinstance(v, str) and v:
                props.append((k, v))
        if spec.get("revision"):
            comments.append(OUT.lost(where, f"codebase `{name}`'s fixed revision (its branch's head is built)"))
        out.append(node("codebase", [name], props))
    return out


def cron_of(kw):
    def f(v):
        if v is None or v == "*":
            return "*"
        if isinstance(v, (list, tuple)):
            return ",".join(str(x) for x in v)
        return str(v)

    dow = kw.get("dayOfWeek", "*")
    # Buildbot counts weekdays from Monday = 0, cron from Sunday = 0.
    if dow not in (None, "*"):
        dow = [(int(d) + 1) % 7 for d in as_list(dow)]
    return " ".join(
        [f(kw.get("minute", 0)), f(kw.get("hour", "*")), f(kw.get("dayOfMonth", "*")), f(kw.get("month", "*")), f(dow)]
    )


def force_param(p, where, comments):
    cls = type(p).__name__
    types = {
        "StringParameter": "string",
        "TextParameter": "string",
        "IntParameter": "int",
        "BooleanParameter": "bool",
        "ChoiceStringParameter": "choice",
    }
    t = types.get(cls)
    if t is None:
        comments.append(OUT.lost(where, f"the force parameter `{getattr(p, 'name', '?')}` of class `{cls}`"))
        return None
    props = []
    if t != "string":
        props.append(("type", t))
    if p.label and p.label != p.name:
        props.append(("label", p.label))
    if p.required:
        props.append(("required", True))
    d = p.default
    if t == "int" and isinstance(d, str) and re.fullmatch(r"-?\d+", d):
        d = int(d)
    if d not in (None, "") and not (t == "bool" and d is False):
        props.append(("default", d))
    ch = [node("choices", list(p.choices))] if t == "choice" else None
    return node("param", [p.name], props, ch)


# --- builders and steps


def builder_node(b, locks, global_collapse=None):
    where = f"builder `{b.name}`"
    comments = []
    ch = [node("workers", list(b.workernames))]
    if b.tags:
        ch.append(node("tags", list(b.tags)))
    if b.description:
        ch.append(node("description", [b.description]))
    # Buildbot: the builder's, else c['collapseRequests'], else True; bbc's
    # default is the same rule (collapse-requests #true).
    collapse = b.collapseRequests if b.collapseRequests is not None else global_collapse
    if b.collapseRequests is True:
        ch.append(node("collapse-requests", [True]))
    elif collapse is False:
        ch.append(node("collapse-requests", [False]))
    elif callable(collapse):
        comments.append(OUT.lost(where, "collapseRequests " + describe(collapse)))
    for attr in ("nextWorker", "nextBuild", "canStartBuild"):
        if getattr(b, attr, None) is not None:
            comments.append(OUT.lost(where, f"{attr} " + describe(getattr(b, attr))))
    if b.env:
        ch.append(env_node(b.env, where, comments))
    ch.extend(props_nodes(b.properties, where, comments))
    if b.workerbuilddir and b.workerbuilddir != b.name:
        ch.append(node("workdir", [b.workerbuilddir]))
    ch.extend(lock_uses(b.locks, locks, where, comments))
    steps = []
    for i, sf in enumerate(b.factory.steps, 1):
        steps.append(step_node(sf, f"{where} step {i}", locks))
    if type(b.factory).__name__ != "BuildFactory":
        comments.append(OUT.lost(where, f"the factory class `{type(b.factory).__name__}` (its steps are kept)"))
    ch.append(node("steps", children=steps))
    return node("builder", [b.name], (), ch, comments)


def env_node(env, where, comments):
    ch = []
    for k, v in sorted(env.items()):
        val = value(v, f"{where} env `{k}`", comments)
        if isinstance(val, list):
            val = " ".join(str(x) for x in val)
        if val is not None:
            ch.append(node(k, [val]))
    return node("env", children=ch)


STEP_KINDS = [
    ("Git", "git"),
    ("SetPropertyFromCommand", "set-property"),
    ("SetProperty", "set-property"),
    ("Trigger", "trigger"),
    ("DirectoryUpload", "upload"),
    ("FileUpload", "upload"),
    ("FileDownload", "download"),
    ("MasterShellCommand", "master-shell"),
    ("Compile", "compile"),
    ("Test", "test"),
    ("ShellCommand", "shell"),
]

# Options every step kind takes: Buildbot's keyword → bbc's property.
COMMON = {
    "name": "name",
    "description": "description",
    "haltOnFailure": "halt-on-failure",
    "flunkOnFailure": "flunk-on-failure",
    "warnOnFailure": "warn-on-failure",
    "warnOnWarnings": "warn-on-warnings",
    "alwaysRun": "always-run",
    "timeout": "timeout",
    "maxTime": "max-time",
    "sigtermTime": "sigterm-time",
    "workdir": "workdir",
}
# Buildbot's options that change nothing in bbc, or that bbc does by itself.
QUIET = {"logEnviron", "descriptionDone", "descriptionSuffix", "usePTY", "interruptSignal", "progressMetrics",
         "logfiles", "lazylogfiles", "updateBuildSummaryPolicy", "want_stdout", "want_stderr"}


def step_kind(cls):
    for c in cls.__mro__:
        for bb, kind in STEP_KINDS:
            if c.__name__ == bb:
                return kind, c is cls
    return None, False


def step_node(sf, where, locks):
    cls = sf.step_class
    kw = dict(sf.kwargs)
    args = list(sf.args)
    comments = []
    kind, exact = step_kind(cls)
    if kind is None:
        comments.append(OUT.lost(where, f"the step class `{cls.__name__}` (written as a `shell` step that fails)"))
        return node("shell", [f"echo 'bbc import: {cls.__name__} is not translated' >&2; exit 1"],
                    [("name", kw.get("name", cls.__name__))], None, comments)
    if not exact:
        comments.append(OUT.lost(where, f"the step class `{cls.__name__}` (written as its Buildbot base, `{kind}`)"))
    if "name" in kw:
        where = f"{where} (`{kw['name']}`)"
    a = []
    p = []
    ch = []

    def take(key, pos=None, default=None):
        if key in kw:
            return kw.pop(key)
        if pos is not None and len(args) > pos:
            return args[pos]
        return default

    def val(v, what):
        return value(v, f"{where} {what}", comments)

    if kind in ("shell", "compile", "test", "master-shell"):
        cmd = take("command", 0, default=["./configure"] if cls.__name__ == "Configure" else None)
        if isinstance(cmd, (list, tuple)):
            a = [val(x, "command") for x in cmd]
        else:
            a = [val(cmd, "command")]
        a = [x for x in a if x is not None]
        if not a:
            comments.append(OUT.lost(where, "a command of no translatable parts (written as `false`)"))
            a = ["false"]
        if kind != "master-shell" and "warningPattern" in kw:
            wp = kw.pop("warningPattern")
            p.append(("warning-pattern", wp if isinstance(wp, str) else wp.pattern))
    elif kind == "git":
        p.append(("repo", val(take("repourl", 0), "repourl")))
        if "branch" in kw:
            p.append(("branch", val(kw.pop("branch"), "branch")))
        mode = kw.pop("mode", "incremental")
        method = kw.pop("method", None)
        if mode != "incremental":
            p.append(("mode", mode))
            if method:
                p.append(("method", method))
        shallow = kw.pop("shallow", False)
        if shallow is True or (isinstance(shallow, int) and not isinstance(shallow, bool) and shallow > 0):
            p.append(("shallow", shallow))
        if kw.pop("submodules", False):
            p.append(("submodules", True))
        retry = kw.pop("retry", None)
        retry_fetch = kw.pop("retryFetch", False)
        if isinstance(retry, (list, tuple)) and len(retry) == 2:
            # Source steps' retry=(delay, repeats).
            delay, repeats = retry
            if isinstance(repeats, int) and repeats > 0:
                p.append(("retry", repeats))
                if isinstance(delay, (int, float)) and delay >= 0:
                    p.append(("retry-delay", f"{int(delay)}s"))
        elif retry is not None:
            comments.append(OUT.lost(where, f"retry={retry!r} (Buildbot takes a (delay, repeats) pair)"))
        elif retry_fetch:
            # retryFetch: a failed fetch is tried once more.
            p.append(("retry", 1))
        key = kw.pop("sshPrivateKey", None)
        if key is not None:
            if isinstance(key, bbprops._SecretRenderer):
                p.append(("ssh-key", secret(key.secret_name)))
            else:
                comments.append(OUT.lost(where, "an sshPrivateKey that is not a Secret (store the key as a secret and write ssh-key=(secret)\"NAME\")"))
        hosts = kw.pop("sshKnownHosts", None)
        if isinstance(hosts, str):
            p.append(("ssh-known-hosts", hosts))
        elif hosts is not None:
            comments.append(OUT.lost(where, f"sshKnownHosts {describe(hosts)}"))
        cb = kw.pop("codebase", "")
        if isinstance(cb, str) and cb:
            p.append(("codebase", cb))
        if kw.pop("sshHostKey", None) is not None:
            comments.append(OUT.lost(where, "sshHostKey (write the host's known_hosts line as ssh-known-hosts=\"…\")"))
    elif kind == "set-property":
        if cls.__name__ == "SetPropertyFromCommand" or issubclass(cls, _class("SetPropertyFromCommand")):
            a = [take("property", 0)]
            cmd = take("command", 1)
            if isinstance(cmd, (list, tuple)):
                cmd = " ".join(str(val(x, "command")) for x in cmd)
            p.append(("command", val(cmd, "command")))
        else:
            a = [take("property", 0)]
            p.append(("value", str(val(take("value", 1), "value"))))
    elif kind == "trigger":
        a = list(take("schedulerNames", 0, default=[]))
        if take("waitForFinish"):
            p.append(("wait", True))
        cp = take("copy_properties")
        if cp:
            ch.append(node("copy-properties", list(cp)))
        for k, v in sorted((take("set_properties") or {}).items()):
            ch.append(node("property", [k, str(val(v, f"set_properties `{k}`"))]))
    elif kind == "upload":
        a = [val(take("workersrc", 0), "workersrc")]
        p.append(("to", val(take("masterdest", 1), "masterdest")))
        if cls.__name__ == "DirectoryUpload":
            p.append(("directory", True))
    elif kind == "download":
        a = [val(take("mastersrc", 0), "mastersrc")]
        p.append(("to", val(take("workerdest", 1), "workerdest")))
    for bb, ours in COMMON.items():
        if bb not in kw:
            continue
        v = kw.pop(bb)
        if bb in ("timeout", "maxTime", "sigtermTime"):
            v = duration(v) if isinstance(v, (int, float)) else None
        elif bb == "description" and isinstance(v, (list, tuple)):
            v = " ".join(str(x) for x in v)
        else:
            v = val(v, bb)
        if v is not None:
            p.append((ours, v))
    for cond, ours in (("doStepIf", "do-step-if"), ("hideStepIf", "hide-step-if")):
        if cond not in kw:
            continue
        v = kw.pop(cond)
        if v is True or v is False:
            if (v is False) == (cond == "doStepIf"):
                p.append((ours, "false" if cond == "doStepIf" else "true"))
        elif cond == "doStepIf":
            # Safer skipped than run where the Python said not to (a deploy).
            p.append((ours, "false"))
            comments.append(OUT.lost(where, f"{cond}=" + describe(v) +
                                     " (the step is skipped: write its condition as do-step-if)"))
        else:
            comments.append(OUT.lost(where, f"{cond}=" + describe(v) + " (the step is never hidden)"))
    if "env" in kw:
        ch.insert(0, env_node(kw.pop("env"), where, comments))
    if "locks" in kw:
        ch.extend(lock_uses(kw.pop("locks"), locks, where, comments))
    if "decodeRC" in kw:
        rc = kw.pop("decodeRC")
        ch.append(node("decode-rc", props=[(str(k), RESULTS[r] if isinstance(r, int) and r < len(RESULTS) else str(r))
                                           for k, r in sorted(rc.items())]))
    for k in sorted(kw):
        if k not in QUIET:
            comments.append(OUT.lost(where, f"the option `{k}={kw[k]!r:.60}`"))
    p = [(k, v) for k, v in p if v is not None]
    return node(kind, a, p, ch or None, comments)


def _class(name):
    from buildbot.plugins import steps

    return getattr(steps, name, type(None))


# --- reporters

WHEN = {"all": "all", "failing": "failing", "passing": "passing", "problem": "problem", "change": "change",
        "warnings": "warnings", "exception": "exception"}


def reporter_node(r, names):
    cls = type(r).__name__
    kw = dict(r._config_kwargs)
    args = list(r._config_args)
    name = unique(names, getattr(r, "name", None) or cls)
    where = f"reporter `{name}`"
    comments = []
    ch = []
    if cls == "MailNotifier":
        host = kw.get("relayhost", "localhost")
        ch.append(node("smtp", [f"{host}:{kw.get('smtpPort', 25)}"]))
        ch.append(node("from", [kw.get("fromaddr", args[0] if args else "buildbot@localhost")]))
        to = as_list(kw.get("extraRecipients"))
        if not to:
            comments.append(OUT.lost(where, "mail to interested users (no extraRecipients; written to the sender)"))
            to = [kw.get("fromaddr", "buildbot@localhost")]
        ch.append(node("to", to))
        if kw.get("smtpUser"):
            ch.append(node("username", [kw["smtpUser"]]))
        if kw.get("smtpPassword"):
            ch.append(node("password", [secret_of(kw["smtpPassword"], f"{name}-password", where, comments)]))
        kind = "mail"
    elif cls in ("HttpStatusPush",):
        ch.append(node("url", [kw.get("serverUrl", args[0] if args else None)]))
        kind = "http"
    elif cls in ("GitHubStatusPush", "GitLabStatusPush", "GiteaStatusPush"):
        kind = {"GitHubStatusPush": "github-status", "GitLabStatusPush": "gitlab-status",
                "GiteaStatusPush": "gitea-status"}[cls]
        tok = kw.get("token", args[0] if args else None) if kind != "gitea-status" else kw.get("token", args[1] if len(args) > 1 else None)
        ch.append(node("token", [secret_of(tok, f"{name}-token", where, comments)]))
        base = kw.get("baseURL") or (args[0] if kind == "gitea-status" and args else None)
        if base:
            ch.append(node("api-url", [base if kind != "gitea-status" else base.rstrip("/") + "/api/v1"]))
    elif cls == "BitbucketStatusPush":
        # Buildbot's default base_url ends in /repositories; bbc's api-url
        # is the API root. Its OAuth consumer (oauth_key/oauth_secret)
        # has no bbc counterpart: an access token or app password does it.
        kind = "bitbucket-cloud-status"
        auth = kw.get("auth")
        if isinstance(auth, (tuple, list)) and len(auth) == 2:
            ch.append(node("username", [auth[0]]))
            ch.append(node("token", [secret_of(auth[1], f"{name}-token", where, comments)]))
        else:
            if kw.get("oauth_key") or args:
                comments.append(OUT.lost(where, "the OAuth consumer (oauth_key/oauth_secret): give an access token "
                                                f"in the secret `{name}-token` instead"))
            ch.append(node("token", [secret(f"{name}-token")]))
        base = kw.get("base_url")
        if base and base.rstrip("/") != "https://api.bitbucket.org/2.0/repositories":
            ch.append(node("api-url", [re.sub(r"/repositories/?$", "", base)]))
        ch.append(node("context", ["{{builder}}"]))
    elif cls in ("BitbucketServerStatusPush", "BitbucketServerCoreAPIStatusPush"):
        kind = "bitbucket-server-status"
        ch.append(node("api-url", [kw.get("base_url", args[0] if args else None)]))
        auth = kw.get("auth")
        user = kw.get("user", args[1] if len(args) > 1 else None)
        if cls == "BitbucketServerStatusPush" and user is not None:
            auth = (user, kw.get("password", args[2] if len(args) > 2 else None))
        if isinstance(auth, (tuple, list)) and len(auth) == 2:
            ch.append(node("username", [auth[0]]))
            ch.append(node("token", [secret_of(auth[1], f"{name}-token", where, comments)]))
        else:
            ch.append(node("token", [secret_of(kw.get("token"), f"{name}-token", where, comments)]))
        ch.append(node("context", ["{{builder}}"]))
    elif cls == "IRC":
        host = kw.get("host", args[0] if args else None)
        ch.append(node("server", [f"{host}:{kw.get('port', 6667)}"]))
        ch.append(node("nick", [kw.get("nick", args[1] if len(args) > 1 else "bbc")]))
        chans = [c["channel"] if isinstance(c, dict) else c for c in as_list(kw.get("channels"))]
        ch.append(node("channel", chans or ["#buildbot"]))
        if kw.get("password"):
            ch.append(node("password", [secret_of(kw["password"], f"{name}-password", where, comments)]))
        if not kw.get("useSSL"):
            ch.append(node("tls", [False]))
        kind = "irc"
    else:
        return None, OUT.lost(where, f"the reporter class `{cls}` (left out)")
    mode = kw.get("mode")
    if kind in ("mail", "irc", "http") and mode:
        ws = [WHEN[m] for m in as_list(mode) if m in WHEN]
        if ws:
            ch.append(node("when", ws))
    bs = kw.get("builders")
    if bs:
        ch.append(node("builders", list(bs)))
    gen = kw.get("generators")
    if gen:
        comments.append(OUT.lost(where, "its generators (the kind's default messages are used)"))
    used = {"generators", "mode", "builders", "relayhost", "smtpPort", "fromaddr", "extraRecipients",
            "smtpUser", "smtpPassword", "serverUrl", "token", "baseURL", "host", "port", "nick",
            "channels", "password", "useSSL", "auth", "base_url", "user", "oauth_key", "oauth_secret"}
    for k in sorted(kw):
        if k not in used and kw[k] not in (None, [], {}):
            comments.append(OUT.lost(where, f"the option `{k}={kw[k]!r:.60}`"))
    return node("reporter", [name], [("kind", kind)], ch, comments), None


def main():
    path = os.path.abspath(sys.argv[1])
    basedir, fname = os.path.split(path)
    os.chdir(basedir)
    try:
        cfg = FileLoader(basedir, fname).loadConfig()
    except ConfigErrors as e:
        for m in e.errors:
            sys.stderr.write(f"Buildbot: {m}\n")
        sys.exit(4)
    doc = {"buildbot": buildbot.version, "header": [], "sections": []}
    locks = {}
    sect = doc["sections"]
    sect.append({"title": "The master", "nodes": [master_node(cfg)]})
    sect.append({"title": "Workers", "nodes": [worker_node(w) for w in cfg.workers]})
    cs_names = set()
    sect.append({"title": "Change sources", "nodes": [change_source_node(c, cs_names) for c in cfg.change_sources]})
    www = cfg.www or {}
    hooks = www.get("change_hook_dialects") or {}
    for dialect in sorted(hooks):
        if dialect == "base":
            # Buildbot's change_hook_auth is HTTP Basic; bbc checks the
            # password against the source's secret (never copied here).
            auth = www.get("change_hook_auth")
            ch = [node("secret", [secret("change-hook")])] if auth else None
            if auth:
                doc["header"].append(
                    "The base change hook's password (Buildbot's change_hook_auth) is not copied: "
                    "put it in the secret `change-hook`."
                )
            sect[-1]["nodes"].append(node("change-source", ["base"], [("kind", "json-webhook")], ch,
                                          ["POST /change_hook/base, Buildbot's form-encoded changes"]))
        elif dialect in ("bitbucketcloud", "bitbucketserver"):
            # Same URL as Buildbot's (/change_hook/DIALECT); Buildbot's
            # hook checks no signature, bbc can: say so.
            kind = "bitbucket-cloud-webhook" if dialect == "bitbucketcloud" else "bitbucket-server-webhook"
            sect[-1]["nodes"].append(node("change-source", [dialect], [("kind", kind)], None,
                                          [f"POST /change_hook/{dialect}; give the webhook a Secret and add "
                                           f"`secret (secret)\"{dialect}-hook\"` here to have deliveries checked"]))
        else:
            OUT.lost("www", f"the change hook dialect `{dialect}` (bbc has github-, gitlab-, gitea-, "
                            "bitbucket-cloud-, bitbucket-server- and json-webhook)")
    sect.append({"title": "Schedulers", "nodes": [scheduler_node(s) for s in cfg.schedulers.values()]})
    global_collapse = getattr(cfg, "collapseRequests", None)
    builders = [builder_node(b, locks, global_collapse) for b in cfg.builders]
    rnames = set()
    reporters = []
    for svc in cfg.services.values() if isinstance(cfg.services, dict) else cfg.services:
        n, lost = reporter_node(svc, rnames)
        if n:
            reporters.append(n)
    sect.insert(2, {"title": "Locks", "nodes": [lock_node(lk) for _, lk in sorted(locks.items())]})
    sect.append({"title": "Builders", "nodes": builders, "group": True})
    sect.append({"title": "Reporters", "nodes": reporters})
    doc["sections"] = [s for s in sect if s["nodes"]]
    passwords = [w.name for w in cfg.workers if isinstance(worker_password(w), str)]
    if passwords:
        doc["header"].append(
            "Worker passwords are not copied: put each in the master's secrets directory, "
            "named as its `(secret)` says (docs/operations.md, \"Secrets\"). Buildbot workers connect "
            "with protocol='msgpack_experimental_v7' in their buildbot.tac."
        )
    doc["untranslated"] = OUT.untranslated
    json.dump(doc, sys.stdout)


if __name__ == "__main__":
    main()
