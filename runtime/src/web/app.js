// bbc web UI: a small single-page app over the REST API (/api/v1).
//
// Everything from the API is put into the page as text (textContent),
// never as HTML, so builder names, logs and commit messages cannot inject
// markup. Views re-read the API every few seconds; a step's log is followed
// by offset, so only new bytes travel and the page keeps a bounded tail.

"use strict";

const REFRESH_MS = 2000;
// The most log text kept on the page per step; older output is dropped
// from the top (the raw log link always has everything).
const LOG_KEEP = 2 * 1024 * 1024;
const LOG_CHUNK = 256 * 1024;

let timer = null;
let followers = [];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// Who the master takes this page for (GET /api/v1/whoami): a user logged
// in through the login form (a session cookie the page cannot read, and
// the CSRF token every state-changing request repeats), a user or the
// control token by API token, or no one. Buttons for actions the caller
// may not do are not shown (`may_act`).
let me = null;

async function loadMe() {
  try {
    const r = await fetch("/api/v1/whoami", withToken({}));
    me = r.ok ? await r.json() : null;
  } catch (_) {
    me = null;
  }
  showMe();
  return me;
}

// Whether to offer the login form rather than the token prompt: the
// master has users with passwords and no token is in use.
function passwordLogin() {
  return !!(me && me.password_login && !sessionStorage.getItem("bbc-token"));
}

// Whether the caller may do `action` (force, cancel, rebuild) on a
// builder. An anonymous caller on a master with only tokens still sees
// the buttons: pressing one asks for a token, as before.
function mayAct(builder, action) {
  if (!me) return true;
  const acts = (me.builders || {})[builder];
  if (acts && acts.includes(action)) return true;
  return me.caller === "anonymous" && !me.password_login;
}

function showMe() {
  const box = document.getElementById("me");
  if (!box) return;
  const parts = [];
  if (me && me.via === "session") {
    parts.push(el("span", { class: "who", text: me.caller }), " · ",
      el("a", { href: "#/logout", class: "logout", text: "log out", onclick: logout }));
  } else if (me && me.via === "token") {
    parts.push(el("span", { class: "who", text: me.caller + " (token)" }), " · ",
      el("a", { href: "#/logout", class: "logout", text: "forget token", onclick: logout }));
  } else {
    if (me && me.password_login) {
      parts.push(el("a", { href: "#/login", class: "login", text: "log in" }));
    }
    if (providers.length) {
      const links = el("span", { class: "providers" });
      for (const p of providers) {
        links.append(el("a", { href: p.login, class: "oauth-login", "data-provider": p.kind, text: "Log in with " + p.label }));
      }
      parts.push(links);
    }
  }
  box.replaceChildren(...parts);
}

async function logout(ev) {
  if (ev) ev.preventDefault();
  sessionStorage.removeItem("bbc-token");
  try {
    await api("/logout", { method: "POST" });
  } catch (e) {
    showError(e);
  }
  await loadMe();
  location.hash = "#/";
  navigate();
}

// A master with a control token asks for it (401) on actions, a private
// master on reads too; the token (a user's, or the control token) is kept
// for this browser tab only. Masters with password users show the login
// form instead.
let askedForReads = false;

function withToken(options) {
  const token = sessionStorage.getItem("bbc-token");
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.authorization = "Bearer " + token;
  // Every state-changing request repeats the session's CSRF token; the
  // master refuses one the session cookie alone would authenticate.
  const method = (options.method || "GET").toUpperCase();
  if (method !== "GET" && method !== "HEAD" && me && me.csrf) headers["x-bbc-csrf"] = me.csrf;
  return Object.assign({}, options, { headers });
}

function askToken(action) {
  const token = window.prompt(
    action ? "This master needs a token for this action:" : "This master is private: your API token:",
  );
  if (token) sessionStorage.setItem("bbc-token", token.trim());
  return !!token;
}

async function api(path, options) {
  options = options || {};
  let r = await fetch("/api/v1" + path, withToken(options));
  const action = options.method && options.method !== "GET";
  // Reads are retried by the refresh timer: ask once per page, not at
  // every refresh.
  if (r.status === 401 && passwordLogin() && path !== "/login") {
    if (location.hash !== "#/login") location.hash = "#/login";
    throw new Error(action ? "Log in to do this." : "This master is private: log in.");
  }
  if (r.status === 401 && path !== "/login" && (action || !askedForReads)) {
    if (!action) askedForReads = true;
    if (askToken(action)) {
      r = await fetch("/api/v1" + path, withToken(options));
      loadMe();
    }
  }
  let body = null;
  try {
    body = await r.json();
  } catch (_) {
    body = null;
  }
  if (!r.ok) {
    const msg = body && body.error ? body.error.message : r.status + " " + r.statusText;
    throw new Error(msg);
  }
  return body;
}

function showError(e) {
  const box = document.getElementById("error");
  if (e) {
    box.textContent = String(e.message || e);
    box.hidden = false;
  } else {
    box.hidden = true;
  }
}

// The banner shown while GET /api/v1/health fails (the store cannot
// write, e.g. a full disk): builds and changes may not be recorded then,
// whatever page is open. A master that does not answer at all is the
// error box's business, not this one.
async function checkHealth() {
  const box = document.getElementById("health");
  let body = null;
  let status = 0;
  try {
    const r = await fetch("/api/v1/health");
    status = r.status;
    body = await r.json();
  } catch (_) {
    return;
  }
  if (status === 503 && body && body.status === "failing") {
    box.textContent = "The master is failing: its store cannot write (" + String(body.store || "no reason given") +
      "). New builds, results and changes may not be recorded until this is fixed.";
    box.hidden = false;
  } else if (status === 200) {
    box.hidden = true;
  }
}

function time(ms) {
  if (!ms) return "";
  return new Date(ms).toLocaleString();
}

function duration(from, to) {
  if (!from) return "";
  const s = Math.max(0, Math.round(((to || Date.now()) - from) / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function resultBadge(b) {
  const r = b.result || (b.finished_at ? "unknown" : (b.started_at ? "running" : "pending"));
  return el("span", { class: "result " + r, text: r });
}

function buildLink(b) {
  return el("a", { href: "#/builds/" + b.id, text: b.builder + " #" + b.number });
}

// What caused a build (the API's `origin`): its reason, branch and
// revision, so a forced build and a commit build look different.
function shortRev(r) {
  return (r || "").slice(0, 10);
}

function originOf(b) {
  const o = b.origin || {};
  return {
    reason: o.reason || (b.properties || {}).reason || "",
    branch: o.branch || "",
    revision: o.got_revision || o.revision || "",
  };
}

// A link only to a web page: an address from a webhook could say
// `javascript:`, which must never become a link.
function webLink(url, text) {
  return /^https?:\/\//.test(url || "") ? el("a", { href: url, text }) : text;
}

function revisionCell(rev) {
  return rev ? el("code", { class: "rev", title: rev, text: shortRev(rev) }) : "";
}

function builderLink(name) {
  return el("a", { href: "#/builders/" + encodeURIComponent(name), text: name });
}

function table(headers, rows) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))),
  );
}

function render(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
}

// ---- views -------------------------------------------------------------

async function buildersView() {
  // One request: each builder with its newest build and running count.
  const { builders } = await api("/builders?last_build=true");
  render(
    el("h1", { text: "Builders" }),
    builders.length === 0
      ? el("p", { class: "muted", text: "No builders are configured." })
      : table(
          ["builder", "last build", "", "running", "tags", "workers"],
          builders.map((x) => {
            const b = x.last_build;
            return [
              builderLink(x.name),
              b ? buildLink(b) : el("span", { class: "muted", text: "never built" }),
              b ? resultBadge(b) : "",
              String(x.running || 0),
              (x.tags || []).map((t) => el("span", { class: "tag", text: t })),
              (x.workers || []).join(", "),
            ];
          }),
        ),
  );
}

// Pages of builds, newest first: `?before=ID` in the page's address shows
// the builds older than ID (the API's own pagination).
const PAGE = 50;

function pager(base, builds, before) {
  const links = [];
  if (before) links.push(el("a", { href: base, text: "← newest" }));
  if (builds.length === PAGE) {
    const last = builds[builds.length - 1].id;
    links.push(el("a", { href: base + "?before=" + last, class: "older", text: "older →" }));
  }
  return links.length ? el("p", { class: "pager" }, links.flatMap((l, i) => (i ? [" · ", l] : [l]))) : null;
}

function buildsTable(builds) {
  if (builds.length === 0) return el("p", { class: "muted", text: "No builds yet." });
  return table(
    ["build", "result", "reason", "branch", "revision", "state", "worker", "started", "duration"],
    builds.map((b) => [
      buildLink(b),
      resultBadge(b),
      el("span", { class: "reason", text: originOf(b).reason }),
      originOf(b).branch,
      revisionCell(originOf(b).revision),
      b.state_string || "",
      b.worker || "",
      time(b.started_at),
      duration(b.started_at, b.finished_at),
    ]),
  );
}

async function buildsView(before) {
  const { builds } = await api("/builds?limit=" + PAGE + (before ? "&before=" + before : ""));
  render(el("h1", { text: "Recent builds" }), buildsTable(builds), pager("#/builds", builds, before));
}

function forceForm(builder, scheduler) {
  const inputs = [];
  const fields = (scheduler.params || []).map((p) => {
    // Defaults go in as attributes, so a form reset restores them.
    const def = p.default === null || p.default === undefined ? null : String(p.default);
    let input;
    if (p.type === "bool") {
      input = el("input", { type: "checkbox", name: p.name, checked: p.default === true });
    } else if (p.type === "choice") {
      input = el(
        "select",
        { name: p.name },
        (p.choices || []).map((c) => el("option", { value: c, text: c, selected: String(c) === def })),
      );
    } else {
      input = el("input", { type: p.type === "int" ? "number" : "text", name: p.name, value: def });
    }
    inputs.push([p, input]);
    return el("label", {}, (p.label || p.name) + (p.required ? " *" : ""), input);
  });
  const reason = el("input", { type: "text", name: "reason", value: "forced from the web UI" });
  const priority = el("input", { type: "number", name: "priority", value: String(scheduler.priority || 0) });
  const status = el("span", { class: "muted" });
  const form = el(
    "form",
    {
      class: "force",
      onsubmit: async (ev) => {
        ev.preventDefault();
        const properties = {};
        for (const [p, input] of inputs) {
          if (p.type === "bool") properties[p.name] = input.checked;
          else if (p.type === "int") {
            if (input.value !== "") properties[p.name] = Number(input.value);
          } else if (input.value !== "") properties[p.name] = input.value;
        }
        status.textContent = "submitting…";
        try {
          const r = await api("/builders/" + encodeURIComponent(builder) + "/force", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({
              reason: reason.value,
              properties,
              scheduler: scheduler.name,
              priority: priority.value === "" ? undefined : Number(priority.value),
            }),
          });
          const set = r.buildset ? r.buildset.id : "";
          status.textContent = "queued (build set " + set + ")";
          refresh();
        } catch (e) {
          status.textContent = "";
          showError(e);
        }
      },
    },
    fields,
    el("label", {}, "reason", reason),
    el("label", {}, "priority", priority),
    el("button", { class: "primary", type: "submit", text: "Force build" }),
    status,
  );
  return form;
}

// A builder's figures over its recent builds: SVG charts the master draws
// (GET /api/v1/builders/NAME/charts/CHART.svg), one per series that has
// values, and the tests that started failing in its newest build.
function trends(name, series) {
  const points = series.builds || [];
  if (points.length === 0) return null;
  const base = "/api/v1/builders/" + encodeURIComponent(name) + "/charts/";
  const charts = ["duration"];
  if (points.some((p) => p.tests)) charts.push("tests");
  if (points.some((p) => p.warnings > 0)) charts.push("warnings");
  const figures = new Set();
  for (const p of points) for (const f of Object.keys(p.figures || {})) figures.add(f);
  for (const f of Array.from(figures).sort()) charts.push("figure-" + f);
  const last = points[points.length - 1];
  const fresh = last.new_failures || [];
  return el("section", { class: "trends" },
    el("h2", { text: "Trends" }),
    el("div", { class: "charts" }, charts.map((c) =>
      el("img", { class: "chart", "data-chart": c, alt: name + " " + c, src: base + encodeURIComponent(c) + ".svg" }))),
    fresh.length
      ? el("div", { class: "new-failures" },
          el("p", { text: "New failures in #" + last.number + ":" }),
          el("ul", {}, fresh.map((t) => el("li", { text: t }))))
      : null,
  );
}

function testsText(t) {
  return t.passed + " passed, " + t.failed + " failed, " + t.skipped + " skipped";
}

async function builderView(name, before) {
  const [{ builds }, { schedulers }, { builder }, series] = await Promise.all([
    api("/builds?limit=" + PAGE + "&builder=" + encodeURIComponent(name) + (before ? "&before=" + before : "")),
    api("/schedulers"),
    api("/builders/" + encodeURIComponent(name)).then((b) => ({ builder: b.builder || b })),
    api("/builders/" + encodeURIComponent(name) + "/series").catch(() => ({ builds: [] })),
  ]);
  // Charts already on the page stay (no reload on each refresh) unless
  // a build finished since.
  const shown = document.querySelector("section.trends");
  const lastId = String(((series.builds || []).slice(-1)[0] || {}).id || "");
  const keep = shown && shown.dataset.builder === name && shown.dataset.last === lastId;
  const force = mayAct(name, "force")
    ? schedulers.filter((s) => s.kind === "force" && (s.builders || []).includes(name))
    : [];
  // Keep half-filled force forms across refreshes.
  const existing = Array.from(document.querySelectorAll("form.force")).filter(
    (f) => f.dataset.builder === name,
  );
  render(
    el("h1", { text: name }),
    builder && builder.description ? el("p", { text: builder.description }) : null,
    force.length ? el("h2", { text: "Force a build" }) : null,
    existing.length ? existing : force.map((s) => {
      const f = forceForm(name, s);
      f.dataset.builder = name;
      return f;
    }),
    keep ? shown : trends(name, series),
    el("h2", { text: "Builds" }),
    buildsTable(builds),
    pager("#/builders/" + encodeURIComponent(name), builds, before),
  );
  const section = document.querySelector("section.trends");
  if (section) {
    section.dataset.builder = name;
    section.dataset.last = lastId;
  }
}

function followLog(pre, buildId, step, info) {
  const f = { offset: 0, shown: 0, done: false, busy: false, pre, buildId, step, info };
  followers.push(f);
  pollLog(f);
}

async function pollLog(f) {
  if (f.busy || f.done) return;
  f.busy = true;
  try {
    for (;;) {
      const r = await fetch(
        "/api/v1/builds/" + f.buildId + "/steps/" + f.step + "/log?offset=" + f.offset + "&limit=" + LOG_CHUNK,
      );
      if (!r.ok) break;
      const text = await r.text();
      const length = Number(r.headers.get("x-log-length") || 0);
      const complete = r.headers.get("x-log-complete") === "true";
      // Bytes, not characters, move the offset.
      f.offset += new TextEncoder().encode(text).length;
      if (text) {
        f.pre.append(document.createTextNode(text));
        f.shown += text.length;
        while (f.shown > LOG_KEEP && f.pre.childNodes.length > 1) {
          f.shown -= f.pre.firstChild.textContent.length;
          f.pre.removeChild(f.pre.firstChild);
          f.info.textContent = "earlier output not shown; ";
        }
      }
      if (complete && f.offset >= length) {
        f.done = true;
        break;
      }
      if (!text) break;
    }
  } catch (e) {
    showError(e);
  } finally {
    f.busy = false;
  }
}

// Rebuilds asked for from this tab, by build id: the page is redrawn at
// every refresh, so what the button said is kept here, not in the button.
const rebuilt = new Map();

// "Rebuild" on a finished build's page: a new request with the same
// source and properties (POST /builds/{id}/rebuild, the `rebuild` grant).
function rebuildButton(b) {
  if (!b.finished_at || !mayAct(b.builder, "rebuild")) return null;
  const done = rebuilt.get(b.id);
  if (done) {
    return el("span", { class: "muted rebuilt", text: "rebuild queued (build set " + done + ")" });
  }
  return el("button", {
    class: "rebuild",
    text: "Rebuild",
    onclick: async () => {
      try {
        const r = await api("/builds/" + b.id + "/rebuild", { method: "POST" });
        rebuilt.set(b.id, r.buildset ? r.buildset.id : "?");
        refresh();
      } catch (e) {
        showError(e);
      }
    },
  });
}

async function buildView(id, openStep) {
  const { build: b } = await api("/builds/" + id);
  const open = new Set(
    Array.from(document.querySelectorAll("details.step[open]"))
      .filter((d) => d.dataset.build === String(b.id))
      .map((d) => d.dataset.step),
  );
  // Steps whose logs are already on the page are kept, not rebuilt.
  const kept = new Map(
    Array.from(document.querySelectorAll("details.step"))
      .filter((d) => d.dataset.build === String(b.id))
      .map((d) => [d.dataset.step, d]),
  );
  const steps = (b.steps || []).filter((s) => !s.hidden).map((s) => {
    const key = String(s.index);
    let d = kept.get(key);
    const head = [
      resultBadge(s),
      " ",
      el("strong", { text: s.name }),
      " ",
      el("span", { class: "muted", text: s.state_string + " · " + duration(s.started_at, s.finished_at) }),
      s.tests ? el("span", { class: "tests", text: " · " + testsText(s.tests) }) : null,
      (s.figures || []).length
        ? el("span", { class: "figures", text: " · " + s.figures.map((f) => f.name + "=" + f.value + (f.unit ? " " + f.unit : "")).join(", ") })
        : null,
    ];
    if (d) {
      d.querySelector("summary").replaceChildren(...head);
      return d;
    }
    const pre = el("pre", { class: "log" });
    const info = el("span", { class: "muted" });
    const raw = el("a", {
      href: "/api/v1/builds/" + b.id + "/steps/" + s.index + "/log?limit=8388608",
      text: "raw log",
    });
    d = el("details", { class: "step" }, el("summary", {}, head), el("div", {}, info, raw), pre);
    d.dataset.build = String(b.id);
    d.dataset.step = key;
    d.addEventListener("toggle", () => {
      if (d.open && !d.dataset.following) {
        d.dataset.following = "1";
        followLog(pre, b.id, s.index, info);
      }
    });
    if (open.has(key) || key === openStep || (!s.finished_at && s.started_at)) d.open = true;
    return d;
  });
  const facts = el(
    "dl",
    { class: "facts" },
    el("dt", { text: "builder" }), el("dd", {}, builderLink(b.builder)),
    el("dt", { text: "result" }), el("dd", {}, resultBadge(b), " ", b.state_string || ""),
    el("dt", { text: "worker" }), el("dd", { text: b.worker || "" }),
    el("dt", { text: "started" }), el("dd", { text: time(b.started_at) }),
    el("dt", { text: "duration" }), el("dd", { text: duration(b.started_at, b.finished_at) }),
    b.eta ? el("dt", { text: "eta" }) : null, b.eta ? el("dd", { text: time(b.eta) }) : null,
    el("dt", { text: "reason" }), el("dd", { class: "reason", text: originOf(b).reason }),
    el("dt", { text: "branch" }), el("dd", { class: "branch", text: originOf(b).branch }),
    el("dt", { text: "revision" }), el("dd", { class: "revision", text: originOf(b).revision }),
    (b.origin || {}).repository ? el("dt", { text: "repository" }) : null,
    (b.origin || {}).repository ? el("dd", { text: b.origin.repository }) : null,
  );
  const changes = ((b.origin || {}).changes || []);
  const changeList = changes.length === 0
    ? el("p", { class: "muted", text: "No changes: this build was not started by a commit." })
    : table(
        ["change", "author", "revision", "message"],
        changes.map((c) => [
          String(c.id),
          c.author || "",
          webLink(c.link, shortRev(c.revision)),
          el("span", { class: "title", text: c.title || "" }),
        ]),
      );
  const cancel = !b.finished_at && mayAct(b.builder, "cancel")
    ? el("button", {
        text: "Cancel build",
        onclick: async () => {
          try {
            await api("/builds/" + b.id + "/cancel", { method: "POST" });
            refresh();
          } catch (e) {
            showError(e);
          }
        },
      })
    : null;
  const props = Object.entries(b.properties || {}).map(([k, v]) => [k, JSON.stringify(v)]);
  const failing = (b.steps || []).flatMap((s) => ((s.tests || {}).failing || []).map((t) => [s.name, t]));
  render(
    el("h1", {}, b.builder + " #" + b.number + " "),
    facts,
    cancel,
    rebuildButton(b),
    el("h2", { text: "Changes" }),
    el("div", { id: "changes" }, changeList),
    el("h2", { text: "Steps" }),
    el("div", { id: "steps" }, steps),
    failing.length ? el("h2", { text: "Failing tests" }) : null,
    failing.length ? el("div", { id: "failing" }, table(["step", "test"], failing)) : null,
    // Files its upload steps wrote, served by the master (/files/PATH).
    (b.uploads || []).length ? el("h2", { text: "Uploaded files" }) : null,
    (b.uploads || []).length
      ? el("ul", { class: "uploads" }, b.uploads.map((p) => el("li", {},
          el("a", { href: "/files/" + p.split("/").map(encodeURIComponent).join("/"), text: p }))))
      : null,
    el("h2", { text: "Properties" }),
    table(["name", "value"], props),
  );
  for (const f of followers) {
    if (!f.done) pollLog(f);
  }
}

async function workersView() {
  const { workers } = await api("/workers");
  render(
    el("h1", { text: "Workers" }),
    table(
      ["worker", "state", "running", "max builds", "downtime", "last connected"],
      workers.map((w) => [
        w.name,
        // A missing worker (away longer than its missing-timeout) stands out.
        w.missing
          ? el("span", { class: "result missing", title: "missing since " + time(w.missing_since), text: "missing" })
          : el("span", { class: "result " + (w.state === "offline" ? "cancelled" : w.state === "busy" ? "running" : "success"), text: w.state }),
        (w.running || []).map((r) => el("a", { href: "#/builds/" + r.build, text: r.builder + " (" + r.build + ") " })),
        String(w.max_builds === undefined ? "" : w.max_builds),
        w.in_downtime ? "in downtime" : "",
        time(w.last_connected),
      ]),
    ),
  );
}

async function changesView() {
  const { changes } = await api("/changes?limit=100");
  render(
    el("h1", { text: "Changes" }),
    changes.length === 0
      ? el("p", { class: "muted", text: "No changes yet." })
      : table(
          ["#", "branch", "revision", "who", "comments", "when", "builds"],
          changes.map((c) => [
            String(c.id),
            c.branch || "",
            webLink(c.link, shortRev(c.revision)),
            c.who || c.author || "",
            (c.comments || "").split("\n")[0],
            time(c.when || c.received_at || c.created_at),
            // The builds that included the change, each with its result.
            (c.builds || []).length === 0
              ? el("span", { class: "muted", text: "no builds" })
              : c.builds.flatMap((b, i) => [i ? " " : null, buildLink(b), " ", resultBadge(b)]),
          ]),
        ),
  );
}

// The login form: POST /api/v1/login with the user's name and password;
// the answer sets the session cookie (HttpOnly: this script never sees
// it) and gives the CSRF token, kept in memory only.
function loginView() {
  if (document.querySelector("form.login")) return;
  const user = el("input", { type: "text", name: "user", autocomplete: "username", required: true });
  const password = el("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const status = el("span", { class: "muted" });
  const form = el(
    "form",
    {
      class: "login",
      onsubmit: async (ev) => {
        ev.preventDefault();
        status.textContent = "logging in…";
        try {
          sessionStorage.removeItem("bbc-token");
          await api("/login", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ user: user.value, password: password.value }),
          });
          password.value = "";
          status.textContent = "";
          await loadMe();
          // navigate() itself: the address may be "#/" already (a
          // private master shows this form there), so no hashchange.
          location.hash = "#/";
          navigate();
        } catch (e) {
          status.textContent = "";
          password.value = "";
          showError(e);
        }
      },
    },
    el("label", {}, "user", user),
    el("label", {}, "password", password),
    el("button", { class: "primary", type: "submit", text: "Log in" }),
    status,
  );
  const token = el("a", {
    href: "#/",
    class: "use-token",
    text: "use an API token instead",
    onclick: async (ev) => {
      ev.preventDefault();
      if (askToken(false)) {
        await loadMe();
        location.hash = "#/";
        navigate();
      }
    },
  });
  render(el("h1", { text: "Log in" }), form, el("p", {}, token));
}

// ---- routing -----------------------------------------------------------

function route() {
  const [h, query] = (location.hash.replace(/^#/, "") || "/").split("?");
  const before = Number(new URLSearchParams(query || "").get("before")) || null;
  const parts = h.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "login") return async () => loginView();
  // A private master shows nothing but the login form to a stranger.
  if (me && me.private && me.caller === "anonymous" && passwordLogin()) return async () => loginView();
  if (parts.length === 0 || (parts[0] === "builders" && parts.length === 1)) return buildersView;
  if (parts[0] === "builders") return () => builderView(parts[1], before);
  if (parts[0] === "builds" && parts.length === 1) return () => buildsView(before);
  // #/builds/ID/steps/N opens step N's log.
  if (parts[0] === "builds") return () => buildView(parts[1], parts[2] === "steps" ? parts[3] : null);
  if (parts[0] === "workers") return workersView;
  if (parts[0] === "changes") return changesView;
  // The overview pages of views.js.
  if (typeof bbcViews !== "undefined" && Object.hasOwn(bbcViews, parts[0])) {
    return () => bbcViews[parts[0]](parts.slice(1), new URLSearchParams(query || ""));
  }
  return async () => render(el("h1", { text: "Not found" }), el("p", { text: "No page " + h }));
}

async function refresh() {
  // On the same cadence as the page: the timer and the event stream.
  checkHealth();
  try {
    await route()();
    showError(null);
  } catch (e) {
    showError(e);
  }
}

function navigate() {
  followers = [];
  document.getElementById("main").replaceChildren();
  refresh();
}

// The OAuth providers people can log in through ("Log in with …" links:
// the master redirects to the provider and back, then sets the session
// cookie); read once, open even on a private master.
let providers = [];

async function loadProviders() {
  try {
    const r = await fetch("/api/v1/login/providers");
    providers = r.ok ? (await r.json()).providers || [] : [];
  } catch (_) {
    providers = [];
  }
}

async function start() {
  await loadProviders();
  await loadMe();
  // A private master's first read sends the page to its login form by
  // changing the address: the hashchange then shows it. Drawing the page
  // here as well would draw it twice, replacing a form being typed into.
  window.addEventListener("hashchange", navigate);
  const first = location.hash;
  try {
    const info = await api("");
    document.getElementById("title").textContent = info.title || "bbc";
    document.title = info.title || "bbc";
  } catch (e) {
    showError(e);
  }
  if (location.hash === first) navigate();
  timer = setInterval(refresh, REFRESH_MS);
  // Builds starting and ending, changes and build sets arriving: the page
  // is read again at once (a short pause gathers bursts); the timer above
  // still follows logs and covers a lost event stream (EventSource
  // reconnects by itself). `?live=0` in the address turns the stream off,
  // for proxies that buffer it.
  const live = new URLSearchParams(location.search).get("live") !== "0";
  if (live && window.EventSource) {
    const events = new EventSource("/api/v1/events");
    let pending = null;
    const soon = () => {
      if (pending) return;
      pending = setTimeout(() => {
        pending = null;
        refresh();
      }, 100);
    };
    for (const kind of ["build", "change", "buildset", "lagged"]) events.addEventListener(kind, soon);
  }
}

start();
