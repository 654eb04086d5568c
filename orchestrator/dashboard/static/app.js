/* GLO dashboard: fetches JSON from this server and draws it.
 *
 * Every value from the database goes into the page as a DOM text node or an attribute value
 * (h() below), never through innerHTML, so a run name like "<script>…" is shown as text.
 * Pages poll their JSON every 2 s and redraw only the sections whose data changed.
 */
"use strict";

const POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

// -- DOM helpers ----------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}
function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const q = (obj) => new URLSearchParams(obj).toString();
const runHref = (id) => "/run?" + q({ id });
const candHref = (uid) => "/candidate?" + q({ uid });
const jobHref = (id) => "/job?" + q({ id });

// -- formatting -----------------------------------------------------------------------------------
const fmtFit = (f) => (f === null || f === undefined ? "-" : Number(f).toFixed(4));
const fmtNum = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"));
function fmtSecs(sec) {
  if (sec === null || sec === undefined) return "-";
  sec = Math.max(0, Math.floor(sec));
  if (sec >= 86400) return `${Math.floor(sec / 86400)}d${String(Math.floor((sec % 86400) / 3600)).padStart(2, "0")}h`;
  if (sec >= 3600) return `${Math.floor(sec / 3600)}h${String(Math.floor((sec % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(sec / 60)}m${String(sec % 60).padStart(2, "0")}s`;
}
function fmtTime(t) {
  if (!t) return "-";
  const d = new Date(t * 1000);
  return d.toLocaleString("sv-SE").replace("T", " ");
}
const fmtRate = (r) => (r === null || r === undefined ? "-" : `${r >= 10 ? Math.round(r) : r.toFixed(1)} / h`);
function fmtPM(mean, sd) {
  if (mean === null || mean === undefined) return "-";
  return sd === null || sd === undefined ? Number(mean).toFixed(4) : `${Number(mean).toFixed(4)} ± ${Number(sd).toFixed(4)}`;
}
function fmtP(p) {
  if (p === null || p === undefined) return "-";
  return p < 1e-4 ? p.toExponential(1) : p.toFixed(4);
}
const badge = (text, cls) => h("span", { class: "badge " + (cls || text) }, text);
const formula = (short, full) => h("span", { class: "formula", title: full && full !== short ? full : null }, short || full || "");
const empty = (text) => h("p", { class: "empty" }, text);

function kv(pairs) {
  const dl = h("dl", { class: "kv" });
  for (const [k, v] of pairs) {
    if (v === null || v === undefined || v === "") continue;
    append(dl, [h("dt", {}, k), h("dd", {}, v)]);
  }
  return dl;
}
function table(headers, rows, opts) {
  const t = h("table", opts || {});
  const tr = h("tr", {});
  for (const hd of headers) {
    const [label, cls] = Array.isArray(hd) ? hd : [hd, null];
    tr.appendChild(h("th", { class: cls }, label));
  }
  t.appendChild(h("thead", {}, tr));
  const body = h("tbody", {});
  for (const r of rows) body.appendChild(r);
  t.appendChild(body);
  return h("div", { class: "scroll" }, t);
}
const td = (v, cls) => h("td", { class: cls }, v);
const card = (title, ...children) => h("section", { class: "card" }, title ? h("h2", {}, title) : null, children);
function stat(k, v, id, small) {
  return h("div", { class: "stat" }, h("div", { class: "k" }, k), h("div", { class: "v" + (small ? " smallv" : ""), id }, v));
}

// -- fetching and live updates ----------------------------------------------------------------------
async function getJSON(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    const err = new Error((data && data.error) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

/* A page made of named sections; each is redrawn only when its data changed. */
class Sections {
  constructor(root) { this.root = root; this.parts = new Map(); }
  set(name, data, render) {
    const sig = JSON.stringify(data === undefined ? null : data);
    const prev = this.parts.get(name);
    if (prev && prev.sig === sig) return prev.el;
    const el = render(data) || h("div", {});
    el.dataset.section = name;
    if (prev) {
      keepOpen(prev.el, el);
      prev.el.replaceWith(el);
      if (prev.cleanup) prev.cleanup();
    } else this.root.appendChild(el);
    const part = { sig, el, cleanup: el._cleanup };
    this.parts.set(name, part);
    return el;
  }
}
function keepOpen(oldEl, newEl) {  // a <details> the user opened stays open across redraws
  const opened = new Set([...oldEl.querySelectorAll("details[data-key]")].filter((d) => d.open).map((d) => d.dataset.key));
  for (const d of newEl.querySelectorAll("details[data-key]")) if (opened.has(d.dataset.key)) d.open = true;
}

let pollTimer = null;
let lastOk = null;
function live(loop) {
  const tick = async () => {
    const liveEl = document.getElementById("live");
    try {
      await loop();
      lastOk = new Date();
      liveEl.textContent = "● live · updated " + lastOk.toLocaleTimeString("en-GB");
      liveEl.classList.remove("stale");
    } catch (e) {
      if (e.status === 404 || e.status === 400) { showError(e.message); return; }
      liveEl.textContent = "○ cannot reach the server (" + e.message + "); retrying";
      liveEl.classList.add("stale");
    }
    pollTimer = setTimeout(tick, POLL_MS);
  };
  tick();
}
function showError(msg) {
  const main = document.getElementById("main");
  main.replaceChildren(h("div", { class: "banner bad", id: "error" }, msg), h("p", {}, h("a", { href: "/" }, "All runs")));
}

// -- charts ---------------------------------------------------------------------------------------
function fitnessChart(title, rows, xlabel) {
  const box = h("div", { class: "chart" });
  const wrap = h("div", {}, title ? h("h3", {}, title) : null, box);
  if (!rows.length) {
    box.replaceChildren(empty("Nothing settled in this phase yet."));
    box.classList.remove("chart");
    return wrap;
  }
  const xs = rows.map((r) => r.generation);
  const data = [xs, rows.map((r) => r.best), rows.map((r) => r.median), rows.map((r) => r.q1), rows.map((r) => r.q3)];
  requestAnimationFrame(() => {
    if (typeof uPlot === "undefined") { box.textContent = "(chart library not loaded)"; return; }
    const width = Math.max(320, box.clientWidth || 480);
    const opts = {
      width, height: 230,
      scales: { x: { time: false } },
      axes: [{ label: xlabel, size: 40, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] },
             { label: "fitness", size: 56 }],
      cursor: { drag: { x: false, y: false } },
      series: [
        { label: xlabel },
        { label: "best", stroke: "#2563eb", width: 2, points: { show: rows.length < 60 } },
        { label: "median", stroke: "#f59e0b", width: 1.5 },
        { label: "25th percentile", stroke: "rgba(245,158,11,0.35)", width: 1 },
        { label: "75th percentile", stroke: "rgba(245,158,11,0.35)", width: 1 },
      ],
      bands: [{ series: [4, 3], fill: "rgba(245,158,11,0.18)" }],
      legend: { live: false },
    };
    const plot = new uPlot(opts, data, box);
    wrap._cleanup = () => plot.destroy();
  });
  return wrap;
}

function curvesChart(title, series) {
  // series: [{label, points: [[step, acc], ...]}]
  const box = h("div", { class: "chart" });
  const wrap = h("div", {}, h("h3", {}, title), box);
  const steps = [...new Set(series.flatMap((sr) => sr.points.map((p) => p[0])))].sort((a, b) => a - b);
  if (!steps.length) { box.replaceChildren(empty("No curves recorded.")); box.classList.remove("chart"); return wrap; }
  const palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#db2777"];
  const data = [steps];
  for (const sr of series) {
    const m = new Map(sr.points.map((p) => [p[0], p[1]]));
    data.push(steps.map((x) => (m.has(x) ? m.get(x) : null)));
  }
  requestAnimationFrame(() => {
    if (typeof uPlot === "undefined") return;
    const opts = {
      width: Math.max(320, box.clientWidth || 480), height: 240,
      scales: { x: { time: false } },
      axes: [{ label: "training step", size: 40 }, { label: "accuracy", size: 56 }],
      legend: { live: false },
      series: [{ label: "step" }, ...series.map((sr, i) => ({ label: sr.label, stroke: palette[i % palette.length], width: 1.5, spanGaps: true }))],
    };
    const plot = new uPlot(opts, data, box);
    wrap._cleanup = () => plot.destroy();
  });
  return wrap;
}

/* The paper's Fig. 6: two-class loss at x0 = 1 over y0 in (0, 1), minimum marked. */
function shapeSVG(shape, w, hgt, withAxes) {
  const pad = withAxes ? { l: 46, r: 10, t: 10, b: 30 } : { l: 2, r: 2, t: 2, b: 2 };
  const svg = s("svg", { class: "shape", width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: "img" });
  if (!shape || !shape.loss.some((v) => v !== null && v !== undefined)) {
    svg.appendChild(s("text", { x: 6, y: hgt / 2 + 4 }, shape ? "not finite over (0, 1)" : "no plot"));
    svg.appendChild(s("title", {}, "This loss is not finite for a two-class prediction (for example x in a denominator, and x = 0 for the other class), so it has no Fig. 6 curve."));
    return svg;
  }
  const [lo, hi] = shape.ylim;
  const X = (y0) => pad.l + y0 * (w - pad.l - pad.r);
  const Y = (v) => pad.t + (hi - v) / (hi - lo) * (hgt - pad.t - pad.b);
  const clampY = (v) => Math.max(-hgt, Math.min(2 * hgt, Y(v)));
  if (withAxes) {
    for (const t of [0, 0.25, 0.5, 0.75, 1]) {
      svg.appendChild(s("line", { class: "grid", x1: X(t), x2: X(t), y1: pad.t, y2: hgt - pad.b }));
      svg.appendChild(s("text", { x: X(t), y: hgt - pad.b + 14, "text-anchor": "middle" }, String(t)));
    }
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4;
      svg.appendChild(s("line", { class: "grid", x1: pad.l, x2: w - pad.r, y1: Y(v), y2: Y(v) }));
      svg.appendChild(s("text", { x: pad.l - 4, y: Y(v) + 4, "text-anchor": "end" }, Number(v.toPrecision(3)).toString()));
    }
    svg.appendChild(s("text", { x: (pad.l + w - pad.r) / 2, y: hgt - 2, "text-anchor": "middle" }, "y0: predicted probability of the true class"));
  }
  let seg = [];
  const flush = () => {
    if (seg.length > 1) svg.appendChild(s("polyline", { class: "curve", points: seg.join(" ") }));
    seg = [];
  };
  shape.y0.forEach((y0, i) => {
    const v = shape.loss[i];
    if (v === null || v === undefined) { flush(); return; }
    seg.push(`${X(y0).toFixed(1)},${clampY(v).toFixed(1)}`);
  });
  flush();
  if (shape.minimum) {
    const [m, mv] = shape.minimum;
    svg.appendChild(s("circle", { class: "min", cx: X(m), cy: clampY(mv), r: withAxes ? 4 : 2.5 }));
    if (withAxes) {
      const right = m > 0.6;  // label on the side with room
      svg.appendChild(s("text", { class: "minlabel", x: X(m) + (right ? -8 : 8), y: clampY(mv) - 8, "text-anchor": right ? "end" : "start" },
        "minimum at y0 = " + m.toFixed(3)));
    }
  }
  const tip = shape.minimum ? `minimum at y0 = ${shape.minimum[0].toFixed(3)}` : "no interior minimum";
  svg.appendChild(s("title", {}, "two-class loss over y0 (x0 = 1); " + tip));
  return svg;
}

// -- pages ----------------------------------------------------------------------------------------
function setNav(which) {
  for (const a of document.querySelectorAll("header.top nav a")) a.classList.toggle("active", a.id === "nav-" + which);
}
function setTitle(t) { document.title = t + " · GLO dashboard"; }

function schedulerCell(r) {
  const sc = r.scheduler || {};
  if (sc.alive) return h("span", {}, badge("alive", "alive"), " ", h("span", { class: "muted small" }, `pid ${sc.pid}` + (sc.host ? ` on ${sc.host}` : "")));
  if (sc.died) return h("span", { title: "the run says running, but no scheduler holds its lock: it crashed or was killed" }, badge("not running", "died"));
  return h("span", { class: "muted" }, "not running");
}
const kindBadge = (r) => (r.kind === "evaluation" ? [" ", badge("evaluation", "kind")] : null);

async function runsPage() {
  setNav("runs"); setTitle("Runs");
  const main = document.getElementById("main");
  main.replaceChildren(h("h1", {}, "Runs"), h("div", { class: "sub", id: "runs-sub" }, ""));
  const sections = new Sections(main);
  live(async () => {
    const data = await getJSON("/api/runs");
    document.getElementById("db-path").textContent = data.db;
    document.getElementById("runs-sub").textContent = `${data.runs.length} run(s) in this database, newest first.`;
    sections.set("runs", data.runs, (runs) => {
      if (!runs.length) return card(null, empty("No runs yet. Start one with: glo run CONFIG.toml --db " + data.db));
      const rows = runs.map((r) => {
        const e = r.evaluations;
        return h("tr", { "data-run": r.run_id },
          td([h("a", { href: runHref(r.run_id), class: "run-link" }, r.run_id), kindBadge(r), r.name ? h("div", { class: "muted small" }, r.name) : null]),
          td(r.task), td(r.backend),
          td(badge(r.status)),
          td(r.steady ? `${r.phase} / ${fmtNum(r.steady.trainings)} of ${fmtNum(r.steady.max_trainings)} trainings` : `${r.phase} / ${r.generation}`, "nowrap"),
          td(fmtNum(e.done), "num"), td(fmtNum(e.running), "num"), td(fmtNum(e.failed), "num"), td(fmtNum(e.cached), "num"),
          td(r.best ? [h("b", {}, fmtFit(r.best.fitness)), " ", h("a", { href: candHref(r.best.candidate_id) }, formula(r.best.short, r.best.infix))] : "-"),
          td(fmtRate(r.evaluations_per_hour), "num"), td(fmtSecs(r.eta_seconds), "num"),
          td(schedulerCell(r), "nowrap"));
      });
      return card(null, table(["run", "task", "backend", "status", "phase / gen", ["trained", "num"], ["in flight", "num"],
        ["failed", "num"], ["cached", "num"], "best", ["rate", "num"], ["time left", "num"], "scheduler"], rows, { id: "runs-table" }));
    });
  });
}

function runHeader(r) {
  const sc = r.scheduler || {};
  const wrap = h("div", {});
  append(wrap, [
    h("h1", {}, "Run ", h("span", { id: "run-id" }, r.run_id), " ", badge(r.status), kindBadge(r)),
    h("div", { class: "sub" },
      r.name ? [h("span", { id: "run-name" }, r.name), " · "] : null,
      `task ${r.task} · backend ${r.backend} · started ${fmtTime(r.created_at)}`,
      r.finished_at ? ` · finished ${fmtTime(r.finished_at)}` : ""),
  ]);
  if (r.message) wrap.appendChild(h("div", { class: "banner " + (r.status === "failed" ? "bad" : "warn") }, r.message));
  if (sc.died) {
    wrap.appendChild(h("div", { class: "banner bad", id: "scheduler-died" },
      "This run says it is running, but its scheduler is not alive (it crashed or was killed). Continue it with: glo run --resume " + r.run_id));
  }
  return wrap;
}

function runCounts(r) {
  const e = r.evaluations, sc = r.scheduler || {};
  const over = !r.expected_evaluations || r.settled > r.expected_evaluations;
  const pct = r.status === "finished" || over ? 100 : (100 * r.settled) / r.expected_evaluations;
  const bar = h("div", { class: "progress", title: `${r.settled} candidates settled` }, h("div", {}));
  bar.firstChild.style.width = pct.toFixed(1) + "%";
  const left = r.status === "finished" ? "done" : (r.eta_seconds && r.status === "running" ? fmtSecs(r.eta_seconds) : "-");
  const progressText = over
    ? `${fmtNum(r.settled)} candidates settled (past the config's estimate of about ${fmtNum(r.expected_evaluations)})`
    : `${fmtNum(r.settled)} of about ${fmtNum(r.expected_evaluations)} candidates settled`;
  return card("Progress",
    h("div", { class: "stats", id: "counts" },
      r.steady
        ? stat("phase / trainings", `${r.phase} / ${fmtNum(r.steady.trainings)} of ${fmtNum(r.steady.max_trainings)} (steady-state)`, "count-phase")
        : stat("phase / generation", `${r.phase} / ${r.generation}`, "count-phase"),
      stat("trained", fmtNum(e.done), "count-done"),
      stat("in flight", fmtNum(e.running), "count-running"),
      stat("failed", fmtNum(e.failed), "count-failed"),
      stat("cache hits", fmtNum(e.cached), "count-cached"),
      stat("settled by the search", fmtNum(e.resolved) + (e.filtered ? ` (${fmtNum(e.filtered)} by the filter)` : ""), "count-resolved"),
      r.generation0 ? stat("generation 0 trainable", `${fmtNum(r.generation0.trainable)} of ${fmtNum(r.generation0.members)}`, "count-gen0") : null,
      (r.trainings_per_budget || []).length > 1 ? stat("trainings per budget",
        r.trainings_per_budget.map((b) => `${fmtNum(b.trainings)} at ${fmtNum(b.steps)} steps`).join(", "), "count-budgets", true) : null,
      stat("jobs queued", fmtNum(e.queued), "count-queued"),
      stat("best fitness", r.best ? fmtFit(r.best.fitness) : "-", "best-fitness"),
      stat("rate", fmtRate(r.evaluations_per_hour), "rate", true),
      stat("elapsed / time left", `${fmtSecs(r.elapsed_seconds)} / ${left}`, "eta", true),
      stat("scheduler", sc.alive ? `alive, pid ${sc.pid}` : sc.died ? "not running (died)" : "not running", "scheduler", true)),
    r.best ? h("p", {}, "Best loss: ", h("a", { href: candHref(r.best.candidate_id), id: "best-link" }, formula(r.best.short, r.best.infix))) : null,
    bar,
    h("div", { class: "muted small" }, progressText + (sc.log ? ` · scheduler log: ${sc.log}` : "")));
}

function leaderboardCard(rows, fair) {
  if (!rows.length) return card("Leaderboard", empty("No trained loss yet."));
  const verdict = (r) => r.vs_tuned_ce
    ? h("span", { title: r.vs_tuned_ce.sentence, class: r.vs_tuned_ce.beats ? "beats" : "" }, r.vs_tuned_ce.verdict)
    : h("span", { class: "muted" }, "not evaluated");
  const trs = rows.map((r, i) => h("tr", {},
    td(String(i + 1), "num"),
    td(h("b", {}, fmtFit(r.fitness)), "num"),
    td(h("a", { href: candHref(r.candidate_id), class: "cand-link" }, formula(r.short, r.infix))),
    td(shapeSVG(r.shape, 120, 40, false)),
    td(`${r.phase} ${r.generation}`), td(r.origin),
    td(r.copies > 1 ? `${r.copies}×` : "", "num"),
    ...(fair ? [td(verdict(r))] : [])));
  const head = ["#", ["fitness", "num"], "loss f(x, y)", "two-class shape", "phase / gen", "made by", ["copies", "num"]];
  return card("Leaderboard: the best distinct losses",
    table(fair ? [...head, "beats ce at ce's best rate?"] : head, trs, { id: "leaderboard" }),
    h("p", { class: "muted small" }, "Shape: the loss of a two-class prediction over y0, the probability given to the true class (the paper's Fig. 6); the dot marks its minimum. Coefficients are rounded here; hover a formula for all digits."),
    h("p", { class: "muted small" }, fair
      ? "Beats ce at ce's best rate: from an evaluation with a learning-rate grid (each loss tested at its own rate, chosen on validation accuracy); hover for the rates and p."
      : "The fitness is validation accuracy at the run's one learning rate; whether a loss beats ce at ce's best rate is shown here once `glo evaluate RUN/CANDIDATE ce --lr-grid ...` has asked."));
}

function jobsCard(r) {
  const states = Object.entries(r.jobs || {}).sort();
  const parts = [h("p", { id: "job-states" }, states.length ? states.map(([k, n], i) => [i ? " · " : "", badge(k), " ", fmtNum(n)]) : "No jobs yet.")];
  if (r.held_jobs.length) {
    parts.push(h("h3", {}, "Held jobs"));
    parts.push(table(["job", "cluster id", "state", "hold reason", "code / subcode", "host", ["releases", "num"], ["evictions", "num"]],
      r.held_jobs.map((j) => h("tr", {},
        td(h("a", { href: jobHref(j.job_id), class: "job-link" }, "job " + j.job_id), "nowrap"),
        td(j.backend_job_id || "-", "mono"),
        td(j.state === "held" ? badge("held now", "held") : ["was held, now ", badge(j.state)]),
        td(h("span", { class: "hold-reason" }, j.hold_reason || "-")),
        td(`${j.hold_code ?? "-"} / ${j.hold_subcode ?? "-"}`, "num"),
        td(j.host || "-", "nowrap"), td(fmtNum(j.releases), "num"), td(fmtNum(j.evictions), "num"))), { id: "held-jobs" }));
  }
  const errs = r.errors;
  parts.push(h("h3", {}, "Last errors"));
  if (!errs.jobs.length && !errs.candidates.length) parts.push(empty("None."));
  if (errs.jobs.length) {
    parts.push(table(["job", "state", ["attempts", "num"], "when", "error"], errs.jobs.map((j) => h("tr", {},
      td(h("a", { href: jobHref(j.job_id) }, "job " + j.job_id), "nowrap"), td(badge(j.state)), td(fmtNum(j.attempts), "num"),
      td(fmtTime(j.at), "nowrap"), td(h("div", { class: "err" }, j.error)))), { id: "job-errors" }));
  }
  if (errs.candidates.length) {
    parts.push(h("h3", {}, "Candidates given up on"));
    parts.push(table(["candidate", "when", "reason"], errs.candidates.map((c) => h("tr", {},
      td(h("a", { href: candHref(c.candidate_id) }, formula(c.short, c.infix))), td(fmtTime(c.at), "nowrap"), td(h("div", { class: "err" }, c.error))))));
  }
  parts.push(h("details", { "data-key": "recent-jobs" }, h("summary", {}, "Latest jobs"),
    table(["job", "state", ["attempts", "num"], ["candidates", "num"], "host", "updated", "last error"], r.recent_jobs.map((j) => h("tr", {},
      td(h("a", { href: jobHref(j.job_id) }, "job " + j.job_id)), td(badge(j.state)), td(fmtNum(j.attempts), "num"),
      td(fmtNum(j.candidates), "num"), td(j.host || "-", "nowrap"), td(fmtTime(j.updated_at), "nowrap"), td(h("div", { class: "err" }, j.last_error)))))));
  return card("Jobs", parts);
}

function cacheCard(r) {
  const c = r.cache;
  const res = c.resolutions.length ? h("p", {}, "Settled by the search without training: ",
    c.resolutions.map((x, i) => [i ? " · " : "", h("b", {}, fmtNum(x.count)), " ", x.reason])) : h("p", { class: "muted" }, "Nothing settled by the search without training yet.");
  const hits = c.hits.length ? table(["cache hit", ["fitness", "num"], "answered by the training of"], c.hits.map((x) => h("tr", {},
    td(h("a", { href: candHref(x.candidate_id) }, formula(x.short, x.infix))), td(fmtFit(x.fitness), "num"),
    td(x.measured_by ? h("a", { href: candHref(x.measured_by) }, x.measured_by) : "-")))) : empty("No cache hits yet.");
  return card("Cache hits and resolutions",
    h("p", {}, h("b", {}, fmtNum(r.evaluations.cached)), " candidates took their fitness from the cache (the same function already trained with this budget)."),
    res, h("h3", {}, "Latest cache hits"), hits);
}

function configCard(r) {
  return card("Configuration",
    h("details", { "data-key": "config" }, h("summary", {}, "The run's effective config (defaults filled in)"),
      h("pre", { class: "light", id: "config" }, JSON.stringify(r.config, null, 2))));
}

function evaluationResultsCard(ev) {
  if (!ev) return null;
  if (ev.error) return card("Evaluation results", h("p", { class: "muted" }, ev.error));
  const rows = (ev.summary || []).map((x) => h("tr", {},
    td(formula(x.loss)), td(x.fraction === null || x.fraction === undefined ? "-" : String(x.fraction), "num"),
    td(fmtNum(x.n), "num"), td(fmtPM(x.mean, x.std), "num"),
    td(fmtP(x.welch_p_two), "num"), td(fmtP(x.welch_p_one), "num"), td(fmtP(x.paired_p_one), "num")));
  const series = (ev.curves || []).map((c) => ({ label: c.label, points: c.points }));
  const chosen = (ev.summary_chosen_rates || []).map((x) => h("tr", {},
    td(formula(x.loss)), td(x.learning_rate === null ? "-" : String(x.learning_rate) + (x.edge ? " (grid edge)" : ""), "num"),
    td(fmtNum(x.n), "num"), td(fmtPM(x.mean, x.std), "num"), td(fmtP(x.paired_p_one), "num")));
  return card("Evaluation results (test accuracy)",
    ev.learning_rate !== null && ev.learning_rate !== undefined ? h("h3", {}, `Every loss at the task's learning rate, ${ev.learning_rate}`) : null,
    rows.length ? table(["loss", ["fraction", "num"], ["n", "num"], ["mean ± sd", "num"], ["Welch p (two-sided)", "num"],
      ["Welch p (> baseline)", "num"], ["paired p (> baseline)", "num"]], rows, { id: "evaluation-stats" }) : empty("No finished cell yet."),
    ev.baseline ? h("p", { class: "muted small" }, `p-values against ${ev.baseline} with the same seeds and training-set fraction.`) : null,
    chosen.length ? h("h3", {}, "Each loss at its own learning rate (chosen on validation accuracy, selection seeds apart)") : null,
    chosen.length ? table(["loss", ["chosen rate", "num"], ["n", "num"], ["mean ± sd", "num"], ["paired p (> baseline at its rate)", "num"]],
      chosen, { id: "evaluation-chosen-rates" }) : null,
    series.length ? curvesChart("Test accuracy during training (mean over seeds)", series) : null);
}

async function runPage(id) {
  setNav("runs"); setTitle("Run " + id);
  const main = document.getElementById("main");
  main.replaceChildren();
  const sections = new Sections(main);
  live(async () => {
    const r = await getJSON("/api/run?" + q({ id }));
    const meta = document.getElementById("db-path");
    if (!meta.textContent) getJSON("/api/meta").then((m) => { meta.textContent = m.db; }).catch(() => {});
    sections.set("header", { r: [r.run_id, r.name, r.status, r.message, r.task, r.backend, r.created_at, r.finished_at, r.kind], d: (r.scheduler || {}).died }, () => runHeader(r));
    sections.set("counts", { e: r.evaluations, b: r.best, p: r.phase, g: r.generation, s: r.scheduler, rate: r.evaluations_per_hour && Math.round(r.evaluations_per_hour), eta: Math.round(r.eta_seconds || 0), el: Math.round(r.elapsed_seconds), x: r.expected_evaluations, st: r.settled, g0: r.generation0, tb: r.trainings_per_budget, ss: r.steady }, () => runCounts(r));
    if (r.kind === "evaluation") sections.set("evaluation", r.evaluation, evaluationResultsCard);
    else {
      sections.set("charts", r.generations, (g) => h("div", { class: "grid2" },
        card("Fitness per generation: discovery (genetic algorithm)", fitnessChart("", g.discovery || [], "generation")),
        card("Fitness per iteration: CMA-ES coefficients", fitnessChart("", g.cma || [], "iteration")),
        h("p", { class: "muted small span2" }, "Every settled candidate counts as the search saw it (invalid and failed ones with 0); the band spans the middle half of each generation.")));
    }
    if (r.kind !== "evaluation") sections.set("leaderboard", { l: r.leaderboard, f: r.fair_evidence }, () => leaderboardCard(r.leaderboard, r.fair_evidence));
    sections.set("jobs", { j: r.jobs, hj: r.held_jobs, e: r.errors, rj: r.recent_jobs }, () => jobsCard(r));
    sections.set("cache", { c: r.cache, n: r.evaluations.cached }, () => cacheCard(r));
    sections.set("config", r.config, () => configCard(r));
  });
}

function treeList(node) {
  const li = h("li", {}, node.coef !== null && node.coef !== undefined ? h("span", { class: "coef" }, Number(node.coef.toPrecision(6)) + " ×") : null,
    h("span", { class: "node" + (node.children.length ? "" : " leaf") }, node.label));
  if (node.children.length) li.appendChild(h("ul", {}, node.children.map(treeList)));
  return li;
}

function evaluationsTable(rows, withFunction) {
  return table(["task", ["steps", "num"], "seed", "status", ["fitness (val.)", "num"], ["test acc.", "num"], ["train s", "num"], "device", "first measured by"],
    rows.map((e) => h("tr", {},
      td(e.task), td(fmtNum(e.steps), "num"), td(e.seed_policy, "mono"), td(badge(e.status)),
      td(fmtFit(e.fitness), "num"), td(fmtFit(e.test_accuracy), "num"), td(e.train_seconds ? e.train_seconds.toFixed(1) : "-", "num"),
      td(e.device || "-"), td(e.candidate_uid ? h("a", { href: candHref(e.candidate_uid) }, e.candidate_uid) : "-"))));
}

function groupStatsTable(groups) {
  return table(["task", ["steps", "num"], ["n", "num"], ["validation acc. mean ± sd", "num"], ["test acc. mean ± sd", "num"], ["p vs ce (val.)", "num"], ["p vs ce (test)", "num"]],
    groups.map((g) => h("tr", {},
      td(g.task), td(fmtNum(g.budget.steps), "num"), td(fmtNum(g.n), "num"),
      td(fmtPM(g.validation.mean, g.validation.sd), "num"), td(fmtPM(g.test.mean, g.test.sd), "num"),
      td(g.is_baseline ? "baseline" : fmtP(g.p_validation), "num"), td(g.is_baseline ? "baseline" : fmtP(g.p_test), "num"))));
}

function curveSeries(evals) {
  return evals.filter((e) => Array.isArray(e.metrics.curve) && e.metrics.curve.length)
    .map((e) => ({ label: `${e.task} ${e.steps} steps ${e.seed_policy}`, points: e.metrics.curve }));
}

async function candidatePage(uid) {
  setNav("runs"); setTitle("Candidate " + uid);
  const main = document.getElementById("main");
  main.replaceChildren();
  const sections = new Sections(main);
  live(async () => {
    const c = await getJSON("/api/candidate?" + q({ uid }));
    sections.set("header", [c.candidate_id, c.status, c.fitness, c.short, c.infix], () => h("div", {},
      h("div", { class: "sub" }, h("a", { href: runHref(c.run_id) }, "← run " + c.run_id), c.run_name ? " (" + c.run_name + ")" : ""),
      h("h1", {}, "Candidate ", h("span", { id: "cand-id" }, c.candidate_id), " ", badge(c.status)),
      h("p", { class: "formula", id: "cand-formula" }, c.infix)));
    sections.set("facts", [c.fitness, c.status, c.error, c.parents, c.coefficients, c.canonical_key, c.generation, c.phase, c.origin, c.shape], () => h("div", { class: "grid2" },
      card("What it is", kv([
        ["fitness", h("b", { id: "cand-fitness" }, fmtFit(c.fitness))],
        ["status", c.status],
        ["made by", h("span", { id: "cand-origin" }, c.origin)],
        ["phase / generation", `${c.phase} / ${c.generation}`],
        ["parents", c.parents.length ? h("span", { id: "cand-parents" }, c.parents.map((p, i) => [i ? ", " : "",
          p.candidate_id ? h("a", { href: candHref(p.candidate_id), title: p.infix || "" }, p.search_id) : p.search_id,
          p.fitness !== null && p.fitness !== undefined ? h("span", { class: "muted small" }, ` (${fmtFit(p.fitness)})`) : null])) : "none (initial population)"],
        ["canonical key", h("span", { class: "mono", id: "cand-key" }, c.canonical_key)],
        ["coefficients", c.coefficients.length ? h("span", { class: "mono" }, "[" + c.coefficients.map((x) => Number(x.toPrecision(6))).join(", ") + "]") : "none"],
        ["error / reason", c.error ? h("div", { class: "err" }, c.error) : null],
        ["created", fmtTime(c.created_at)], ["settled", fmtTime(c.resolved_at)],
      ])),
      card("Two-class loss shape (Fig. 6)", shapeSVG(c.shape, 440, 260, true),
        h("p", { class: "muted small" }, "Loss of a two-class prediction at x0 = 1 over y0, the probability given to the true class."))));
    sections.set("tree", c.tree_view, (tv) => h("div", { class: "grid2" },
      card("Tree", tv ? h("ul", { class: "tree", id: "tree" }, treeList(tv)) : empty("This tree cannot be read.")),
      h("section", { class: "card" }, h("h2", {}, "Keras code (glo export)", c.keras ? h("button", { class: "copy", type: "button", onclick: (ev) => {
        navigator.clipboard && navigator.clipboard.writeText(c.keras).then(() => { ev.target.textContent = "copied"; }, () => {});
      } }, "copy") : null), c.keras ? h("pre", { id: "keras" }, c.keras) : empty("No code: this tree cannot be exported."))));
    sections.set("evals", [c.evaluation, c.same_function, c.evaluation_groups, c.evaluation_runs], () => {
      const parts = [];
      if (c.evaluation) {
        const e = c.evaluation;
        parts.push(card("The training its fitness came from", kv([
          ["task / budget", h("span", { class: "mono" }, `${e.task} ` + JSON.stringify(e.budget))],
          ["seed", e.seed_policy], ["status", badge(e.status)], ["fitness (validation accuracy)", fmtFit(e.fitness)],
          ["test accuracy", e.test_accuracy === null ? null : fmtFit(e.test_accuracy)],
          ["train / wall seconds", `${(e.train_seconds || 0).toFixed(1)} / ${(e.wall_seconds || 0).toFixed(1)}`],
          ["device", e.device], ["first measured by", e.candidate_uid ? h("a", { href: candHref(e.candidate_uid) }, e.candidate_uid) : null],
          ["final train loss", e.metrics.final_train_loss === undefined ? null : String(e.metrics.final_train_loss)],
          ["went non-finite at step", e.metrics.nonfinite_step === undefined ? null : String(e.metrics.nonfinite_step)],
          ["collapsed (fitness 0)", e.collapse_reason ? h("div", { class: "err", id: "eval-collapse" }, e.collapse_reason) : null],
        ])));
      } else parts.push(card("Training", empty(c.status === "pending" ? "Not trained yet." : "No training: the search settled this candidate itself.")));
      if (c.evaluation_runs && c.evaluation_runs.length) for (const ev of c.evaluation_runs) parts.push(evaluationResultsCard(ev));
      const multi = c.evaluation_groups.filter((g) => g.n >= 2);
      const curves = curveSeries(c.same_function);
      parts.push(card("Every training of this function",
        h("p", { class: "muted small" }, "Same canonical key, any run, task, budget or seed. Groups with several seeds are summarised; p-values compare with cross-entropy (x * log(y)) at the same task and budget (Welch's t-test)."),
        multi.length ? groupStatsTable(multi) : null,
        c.same_function.length ? evaluationsTable(c.same_function) : empty("None yet."),
        curves.length ? curvesChart("Validation accuracy during training", curves) : null));
      return h("div", { id: "evaluations" }, parts);
    });
    sections.set("jobs", c.jobs, (jobs) => card("Jobs that carried it", jobs.length ? table(["job", "state", ["attempts", "num"], "host", "hold reason", "last error"],
      jobs.map((j) => h("tr", {}, td(h("a", { href: jobHref(j.job_id) }, "job " + j.job_id)), td(badge(j.state)), td(fmtNum(j.attempts), "num"),
        td(j.host || "-"), td(j.hold_reason || "-"), td(h("div", { class: "err" }, j.last_error || ""))))) : empty("None (cache hit or settled by the search).")));
  });
}

async function jobPage(id) {
  setNav("runs"); setTitle("Job " + id);
  const main = document.getElementById("main");
  main.replaceChildren();
  const sections = new Sections(main);
  live(async () => {
    const j = await getJSON("/api/job?" + q({ id }));
    sections.set("job", j, () => h("div", {},
      h("div", { class: "sub" }, h("a", { href: runHref(j.run_id) }, "← run " + j.run_id)),
      h("h1", {}, "Job " + j.job_id + " ", badge(j.state)),
      card("State", kv([
        ["backend / cluster id", `${j.backend} / ${j.backend_job_id || "-"}`],
        ["attempts", String(j.attempts)],
        ["hold reason", j.hold_reason ? h("span", { id: "job-hold-reason", class: "hold-reason" }, j.hold_reason) : null],
        ["hold code / subcode", j.hold_code === null ? null : `${j.hold_code} / ${j.hold_subcode ?? "-"}`],
        ["host", j.host], ["evictions", String(j.evictions)], ["releases", String(j.releases)],
        ["bad nodes", j.bad_nodes.length ? j.bad_nodes.join(", ") : null],
        ["work dir", j.work_dir ? h("span", { class: "mono" }, j.work_dir) : null],
        ["created", fmtTime(j.created_at)], ["submitted", fmtTime(j.submitted_at)], ["started", fmtTime(j.started_at)],
        ["finished", fmtTime(j.finished_at)], ["updated", fmtTime(j.updated_at)],
        ["last error", j.last_error ? h("div", { class: "err", id: "job-error" }, j.last_error) : null],
      ])),
      card("Attempts", j.attempts_history.length ? table(["attempt", "cluster id", "host", "submitted", "started", "ended", "outcome", "exit",
        ["holds", "num"], ["releases", "num"], ["evictions", "num"], "what happened"], j.attempts_history.map((a) => h("tr", {},
        td(String(a.attempt), "num"), td(a.backend_job_id || "-", "mono"), td(a.host || "-", "nowrap"),
        td(fmtTime(a.submitted_at), "nowrap"), td(fmtTime(a.started_at), "nowrap"), td(fmtTime(a.ended_at), "nowrap"),
        td(a.outcome ? badge(a.outcome) : "in flight"),
        td(a.exit_signal !== null ? "signal " + a.exit_signal : a.exit_code !== null ? String(a.exit_code) : "-", "num"),
        td(fmtNum(a.holds), "num"), td(fmtNum(a.releases), "num"), td(fmtNum(a.evictions), "num"),
        td(h("div", { class: "attempt-notes" }, a.notes.map((n) => h("div", {}, fmtTime(n.at), " ", h("span", { class: "hold-reason" }, n.what))),
          a.error ? h("div", { class: "err" }, a.error) : null)))), { id: "job-attempts" }) : empty("Not submitted yet.")),
      card("Candidates it carries", table(["candidate", "status", ["fitness", "num"], "error"], j.candidates.map((c) => h("tr", {},
        td(h("a", { href: candHref(c.candidate_id) }, formula(c.infix))), td(badge(c.status)), td(fmtFit(c.fitness), "num"),
        td(c.error ? h("div", { class: "err" }, c.error) : "")))))));
  });
}

async function evaluationsPage() {
  setNav("evaluations"); setTitle("Evaluations");
  const main = document.getElementById("main");
  main.replaceChildren(h("h1", {}, "Evaluations"));
  const sections = new Sections(main);
  live(async () => {
    const d = await getJSON("/api/evaluations");
    document.getElementById("db-path").textContent = d.db || "";
    sections.set("runs", d.evaluation_runs, (runs) => runs && runs.length
      ? h("div", {}, runs.map((ev) => h("div", {}, h("h2", {}, "Evaluation run ", h("a", { href: runHref(ev.run_id) }, ev.run_id), " ", badge(ev.status || "")), evaluationResultsCard(ev))))
      : card("Evaluation runs (glo evaluate)", empty("No evaluation run in this database yet.")));
    sections.set("groups", [d.total_evaluations, d.groups], () => card("Repeated trainings of one function",
      h("p", { class: "muted small" }, `${fmtNum(d.total_evaluations)} trainings in the database (the fitness cache). Listed: every function trained with one task and budget under several seeds; p-values: Welch's t-test against cross-entropy at the same task and budget.`),
      d.groups.length ? table(["loss", "task", ["steps", "num"], ["n", "num"], ["validation acc. mean ± sd", "num"], ["test acc. mean ± sd", "num"], ["p vs ce (val.)", "num"], ["p vs ce (test)", "num"]],
        d.groups.map((g) => h("tr", {},
          td(g.candidate_id ? h("a", { href: candHref(g.candidate_id) }, formula(g.infix)) : formula(g.infix)),
          td(g.task), td(fmtNum(g.budget.steps), "num"), td(fmtNum(g.n), "num"),
          td(fmtPM(g.validation.mean, g.validation.sd), "num"), td(fmtPM(g.test.mean, g.test.sd), "num"),
          td(g.is_baseline ? "baseline" : fmtP(g.p_validation), "num"), td(g.is_baseline ? "baseline" : fmtP(g.p_test), "num"))), { id: "groups" })
        : empty("None yet: a search trains each function once; repeated seeds come from glo evaluate."),
      (() => { const series = d.groups.flatMap((g) => curveSeries(g.evaluations)); return series.length ? curvesChart("Curves", series.slice(0, 16)) : null; })()));
  });
}

function route() {
  const params = new URLSearchParams(location.search);
  switch (location.pathname) {
    case "/": return runsPage();
    case "/run": return params.get("id") ? runPage(params.get("id")) : showError("missing ?id=RUN_ID");
    case "/candidate": return params.get("uid") ? candidatePage(params.get("uid")) : showError("missing ?uid=RUN_ID/CANDIDATE");
    case "/job": return params.get("id") ? jobPage(params.get("id")) : showError("missing ?id=JOB_ID");
    case "/evaluations": return evaluationsPage();
    default: return showError("no such page: " + location.pathname);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  getJSON("/api/meta").then((m) => { document.getElementById("db-path").textContent = m.db; }).catch(() => {});
  route();
});
