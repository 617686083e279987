// bbc web UI: the overview pages (waterfall, grid, console, pending
// requests, change sources and schedulers). Loaded before app.js, whose
// router calls `bbcViews[page]`; it uses app.js's helpers (el, api,
// render, table, …) only when a page is drawn. Each page reads one
// endpoint made for it (docs/api.md, "Views"), and, like app.js, puts
// what the API says into the page as text only.

"use strict";

// The filter form of the grid and the console: branch and tag, kept in
// the address (`#/grid?branch=main&tag=linux`) so a view can be linked.
function viewFilters(page, params, data) {
  const choose = (name, values) => {
    const sel = el("select", { name, "data-filter": name },
      el("option", { value: "", text: name === "branch" ? "all branches" : "all tags" }));
    for (const v of values) {
      sel.append(el("option", { value: v, text: v || "(no branch)", selected: params.get(name) === v }));
    }
    sel.addEventListener("change", () => {
      const q = new URLSearchParams(params);
      if (sel.value) q.set(name, sel.value);
      else q.delete(name);
      const s = q.toString();
      location.hash = "#/" + page + (s ? "?" + s : "");
    });
    return el("label", {}, name + " ", sel);
  };
  // The waterfall filters by tag only (it shows builds, not changes).
  return el("div", { class: "filters" },
    data.branches ? choose("branch", data.branches) : null, choose("tag", data.tags || []));
}

function viewQuery(params) {
  const q = new URLSearchParams();
  for (const k of ["branch", "tag"]) if (params.get(k)) q.set(k, params.get(k));
  return q;
}

// A small coloured box for a build, linking to it.
function buildBox(b) {
  const r = b.result || (b.complete ? "unknown" : "running");
  return el("a", {
    class: "box result " + r,
    href: "#/builds/" + b.id,
    title: b.builder + " #" + b.number + ": " + r,
    text: "#" + b.number,
  });
}

// ---- waterfall ---------------------------------------------------------
//
// Time flows down: one column per builder, one row per build start (the
// newest on top), each build a cell spanning the rows of the builds that
// started while it ran. The top row is each builder's current status.

const WATERFALL_ROWS = 80;

// A start time as short as it can be: the time of day for today's.
function shortTime(ms) {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

async function waterfallView(_parts, params) {
  const q = new URLSearchParams();
  if (params.get("tag")) q.set("tag", params.get("tag"));
  const data = await api("/views/waterfall?" + q.toString());
  const builders = data.builders;
  const now = data.now;
  const starts = builders
    .flatMap((b, col) => b.builds.map((x) => ({ build: x, col })))
    .sort((a, b) => b.build.started_at - a.build.started_at || b.build.id - a.build.id)
    .slice(0, WATERFALL_ROWS);
  // Row of each start; a build covers the rows that started before it ended.
  const cells = builders.map(() => new Map());
  const busy = builders.map(() => -1);
  starts.forEach((s, row) => {
    const end = s.build.finished_at || now;
    let top = row;
    while (top > 0 && starts[top - 1].build.started_at <= end) top--;
    // Two builds of a builder at once: the later one keeps its rows.
    top = Math.max(top, busy[s.col] + 1);
    cells[s.col].set(top, { build: s.build, span: row - top + 1 });
    busy[s.col] = row;
  });
  const head = el("tr", {}, el("th", { class: "when", text: "started" }),
    builders.map((b) => {
      const last = b.builds.find((x) => x.complete);
      const status = b.running ? "running" : (last ? last.result : "none");
      return el("th", { class: "builder-head" },
        builderLink(b.name), el("br"),
        el("span", { class: "result " + status, text: b.running ? b.running + " running" : status }),
        b.pending ? el("span", { class: "muted", text: " +" + b.pending + " waiting" }) : null);
    }));
  const rows = starts.map((s, row) => {
    const tr = el("tr", {}, el("td", { class: "when", title: time(s.build.started_at), text: shortTime(s.build.started_at) }));
    builders.forEach((_, col) => {
      const c = cells[col].get(row);
      if (c) {
        const b = c.build;
        const r = b.result || "running";
        tr.append(el("td", { class: "cell result-bg " + r, rowspan: c.span > 1 ? c.span : null },
          el("a", { href: "#/builds/" + b.id, text: "#" + b.number }), " ",
          el("span", { class: "state", text: b.state_string || r }),
          el("div", { class: "muted small", text: duration(b.started_at, b.finished_at || now) })));
      } else if (![...cells[col]].some(([top, x]) => top < row && top + x.span > row)) {
        tr.append(el("td", { class: "cell" }));
      }
    });
    return tr;
  });
  const tags = [...new Set(builders.flatMap((b) => b.tags || []))].sort();
  render(
    el("h1", { text: "Waterfall" }),
    tags.length || params.get("tag") ? viewFilters("waterfall", params, { tags }) : null,
    starts.length === 0 ? el("p", { class: "muted", text: "No builds yet." }) : null,
    el("div", { class: "scroll" }, el("table", { class: "waterfall" }, el("thead", {}, head), el("tbody", {}, rows))),
  );
}

// ---- grid and console --------------------------------------------------

async function consoleData(params) {
  return api("/views/console?" + viewQuery(params).toString());
}

function changeTitle(c) {
  return (c.comments || "").split("\n")[0];
}

// Builders down, revisions across (newest left): where a change broke.
async function gridView(_parts, params) {
  const data = await consoleData(params);
  const head = el("tr", {}, el("th", { text: "builder" }),
    data.changes.map((c) => el("th", { class: "rev-head", title: changeTitle(c) },
      webLink(c.link, shortRev(c.revision)), el("div", { class: "muted small", text: c.author }))));
  const rows = data.builders.map((b) => el("tr", {}, el("td", {}, builderLink(b.name)),
    data.changes.map((c) => el("td", { class: "grid-cell" },
      c.builds.filter((x) => x.builder === b.name).map(buildBox)))));
  render(
    el("h1", { text: "Grid" }),
    viewFilters("grid", params, data),
    data.changes.length === 0 ? el("p", { class: "muted", text: "No changes on this branch yet." }) : null,
    el("div", { class: "scroll" }, el("table", { class: "grid" }, el("thead", {}, head), el("tbody", {}, rows))),
  );
}

// Revisions down (newest on top), builders across, each revision with
// its author and message.
async function consoleView(_parts, params) {
  const data = await consoleData(params);
  const head = el("tr", {}, el("th", { text: "change" }),
    data.builders.map((b) => el("th", { class: "vertical" }, builderLink(b.name))));
  const rows = data.changes.map((c) => el("tr", {},
    el("td", { class: "change" },
      el("div", {}, webLink(c.link, shortRev(c.revision)), " ",
        el("span", { class: "author", text: c.author }), " ",
        c.branch ? el("span", { class: "tag", text: c.branch }) : null),
      el("div", { class: "message", text: changeTitle(c) })),
    data.builders.map((b) => el("td", { class: "grid-cell" },
      c.builds.filter((x) => x.builder === b.name).map(buildBox)))));
  render(
    el("h1", { text: "Console" }),
    viewFilters("console", params, data),
    data.changes.length === 0 ? el("p", { class: "muted", text: "No changes on this branch yet." }) : null,
    el("div", { class: "scroll" }, el("table", { class: "console" }, el("thead", {}, head), el("tbody", {}, rows))),
  );
}

// ---- pending requests --------------------------------------------------

async function pendingView() {
  const data = await api("/views/pending");
  const cancel = (r) => el("button", {
    class: "cancel-request",
    "data-request": r.id,
    text: "Cancel",
    onclick: async (ev) => {
      ev.target.disabled = true;
      try {
        await api("/requests/" + r.id + "/cancel", { method: "POST" });
        refresh();
      } catch (e) {
        ev.target.disabled = false;
        showError(e);
      }
    },
  });
  render(
    el("h1", { text: "Pending build requests" }),
    data.requests.length === 0
      ? el("p", { class: "muted", text: "Nothing is waiting for a worker." })
      : el("div", { class: "scroll" }, table(
          ["#", "builder", "priority", "builder priority", "waiting", "reason", "branch", "revision", ""],
          data.requests.map((r) => [
            String(r.id),
            builderLink(r.builder),
            String(r.request_priority || 0),
            String(r.priority),
            el("span", { title: time(r.submitted_at), text: duration(r.submitted_at, data.now) }),
            r.reason || "",
            r.branch || "",
            revisionCell(r.revision),
            mayAct(r.builder, "cancel") ? cancel(r) : "",
          ]),
        )),
  );
}

// ---- change sources and schedulers -------------------------------------

function when(ms) {
  return ms ? el("span", { title: time(ms), text: time(ms) }) : el("span", { class: "muted", text: "—" });
}

async function sourcesView() {
  const [{ change_sources: sources }, { schedulers }] = await Promise.all([
    api("/change_sources"),
    api("/schedulers"),
  ]);
  render(
    el("h1", { text: "Change sources" }),
    sources.length === 0
      ? el("p", { class: "muted", text: "No change sources configured." })
      : el("div", { class: "scroll" }, table(
          ["name", "kind", "watches", "last poll", "last error", "next poll"],
          sources.map((c) => {
            const st = c.status || {};
            return [
              c.name,
              c.kind,
              c.repo || c.hook || "",
              c.kind === "git-poller" ? when(st.last_poll_at) : "on delivery",
              st.last_error ? el("span", { class: "error-text", text: st.last_error }) : el("span", { class: "muted", text: "none" }),
              c.kind === "git-poller" ? when(st.next_poll_at) : "",
            ];
          }),
        )),
    el("h2", { text: "Schedulers" }),
    schedulers.length === 0
      ? el("p", { class: "muted", text: "No schedulers configured." })
      : el("div", { class: "scroll" }, table(
          ["name", "kind", "builders", "next timer", "last slot", "changes waiting"],
          schedulers.map((s) => {
            const t = s.timer || {};
            return [
              s.name,
              s.kind,
              (s.builders || []).flatMap((b, i) => [i ? ", " : null, builderLink(b)]),
              when(t.next_fire_at),
              when(t.last_fired_at),
              String(t.pending_changes || 0),
            ];
          }),
        )),
  );
}

// The pages app.js's router hands over to this file.
const bbcViews = {
  waterfall: waterfallView,
  grid: gridView,
  console: consoleView,
  pending: pendingView,
  sources: sourcesView,
};
