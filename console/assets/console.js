// framefusion console: every view is rendered from the JSON API (/api/...), with the bearer
// token /api/login issued (kept in this tab's sessionStorage).
"use strict";

const view = document.getElementById("view");
let timer = null;

function token() { return sessionStorage.getItem("framefusion-token"); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["authorization"] = "Bearer " + token();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) { sessionStorage.removeItem("framefusion-token"); }
  const type = response.headers.get("content-type") || "";
  if (!response.ok) {
    let code = "internal", message = response.statusText;
    if (type.includes("json")) {
      const body = await response.json();
      if (body.error) { code = body.error.code; message = body.error.message; }
    }
    throw new ApiError(response.status, code, message);
  }
  return type.includes("json") ? response.json() : response.blob();
}

// an image the API returns, shown through an object URL (an <img src> cannot send the token)
async function showImage(img, path) {
  try {
    const blob = await api(path);
    img.src = URL.createObjectURL(blob);
    img.dataset.loaded = "true";
  } catch (e) {
    img.alt = "no preview: " + e.message;
    img.dataset.loaded = "error";
  }
}

function fmt(v, digits = 2) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function statusBadge(status) { return el("span", { class: "status " + status }, status); }

function failure(e) { return el("p", { class: "error", id: "view-error" }, e.code ? `${e.code}: ${e.message}` : String(e)); }

function stop() { if (timer) { clearTimeout(timer); timer = null; } }

// --- login ---------------------------------------------------------------------------------
function loginView() {
  document.getElementById("nav").hidden = true;
  const error = el("p", { class: "error", id: "login-error" });
  const form = el("form", { id: "login-form" },
    el("h2", {}, "Log in"),
    el("label", { for: "user" }, "User"), el("input", { type: "text", id: "user", autocomplete: "username" }),
    el("label", { for: "password" }, "Password"), el("input", { type: "password", id: "password", autocomplete: "current-password" }),
    el("div", {}, el("button", { type: "submit", id: "login-button" }, "Log in")),
    error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const user = document.getElementById("user").value;
    const password = document.getElementById("password").value;
    try {
      const body = await api("/api/login", { method: "POST", headers: { authorization: "Basic " + btoa(user + ":" + password) } });
      sessionStorage.setItem("framefusion-token", body.token);
      location.hash = "#/runs";
      route();
    } catch (e) { error.textContent = `${e.code}: ${e.message}`; }
  });
  view.replaceChildren(form);
}

// --- runs ----------------------------------------------------------------------------------
function progressCells(run) {
  const p = run.progress;
  const s = run.summary;
  const videos = p ? `${p.skipped + p.done}/${p.total}` : (s ? `${s.videos}/${s.videos}` : "-");
  const rows = s ? `${s.ok_rows} ok / ${s.error_rows} error (${s.error_videos} videos failed, ${s.no_row_videos || 0} without rows)` : (p ? `${p.rows} rows, ${p.failed} videos failed, ${p.no_rows} without rows` : "-");
  const rate = p ? `${fmt(p.videos_per_s)} videos/s` : (s && s.elapsed_s > 0 ? `${fmt(s.processed / s.elapsed_s)} videos/s` : "-");
  const eta = p && p.eta_s !== null && run.status === "running" ? `${Math.round(p.eta_s)} s` : "-";
  return [el("td", { class: "videos" }, videos), el("td", { class: "rows" }, rows), el("td", {}, rate), el("td", {}, eta)];
}

async function runsView() {
  const table = el("table", { id: "runs" },
    el("tr", {}, ["run", "status", "target", "output", "videos", "rows", "throughput", "ETA", "elapsed"].map((h) => el("th", {}, h))));
  const body = el("div", {}, el("h2", {}, "Runs"), table);
  view.replaceChildren(body);
  const load = async () => {
    try {
      const { runs } = await api("/api/runs");
      table.querySelectorAll("tr.run").forEach((r) => r.remove());
      if (runs.length === 0) table.append(el("tr", { class: "run" }, el("td", { colspan: 9 }, "No runs yet: submit one.")));
      for (const run of runs) {
        table.append(el("tr", { class: "run", "data-id": run.id, "data-status": run.status },
          el("td", {}, el("a", { href: `#/run/${encodeURIComponent(run.id)}` }, run.id)),
          el("td", {}, statusBadge(run.status)),
          el("td", {}, run.target || "-"),
          el("td", {}, run.output),
          progressCells(run),
          el("td", {}, run.elapsed_s === null ? "-" : `${fmt(run.elapsed_s, 1)} s`)));
      }
      if (runs.some((r) => r.status === "running")) timer = setTimeout(load, 1000);
    } catch (e) { body.append(failure(e)); }
  };
  await load();
}

async function runView(id) {
  const body = el("div", { id: "run", "data-id": id });
  view.replaceChildren(body);
  const load = async () => {
    let run;
    try { run = await api(`/api/runs/${encodeURIComponent(id)}`); } catch (e) { body.replaceChildren(failure(e)); return; }
    const p = run.progress;
    const ratio = p && p.total > 0 ? (p.skipped + p.done) / p.total : (run.summary ? 1 : 0);
    const operators = Object.entries(run.operator_seconds || {});
    body.replaceChildren(
      el("h2", {}, `Run ${run.id}`),
      el("p", {}, "Status: ", el("span", { id: "run-status", class: "status " + run.status }, run.status),
        run.status === "running" ? el("button", { id: "cancel-button", type: "button", onclick: async () => {
          await api(`/api/runs/${encodeURIComponent(id)}/cancel`, { method: "POST" }); } }, "Cancel") : null),
      el("p", { id: "run-progress" }, el("span", { class: "bar" }, el("span", { style: `width:${Math.round(ratio * 100)}%` })), " ",
        p ? `${p.skipped + p.done}/${p.total} videos (${p.skipped} done earlier, ${p.failed} with errors, ${p.no_rows} without rows), ${p.rows} rows, ${fmt(p.videos_per_s)} videos/s` +
          (p.eta_s !== null && run.status === "running" ? `, ETA ${Math.round(p.eta_s)} s` : "") : ""),
      run.error ? el("p", { class: "error", id: "run-error" }, `${run.error.code}: ${run.error.message}`) : null,
      el("p", {}, "Output: ", el("code", {}, run.output), " · target: ", run.target || "-", " · ",
        el("a", { id: "shots-link", href: `#/shots/${encodeURIComponent(id)}` }, "shot browser")),
      el("h3", {}, "Seconds per operator"),
      operators.length ? el("table", { id: "run-operators" }, el("tr", {}, el("th", {}, "operator"), el("th", {}, "seconds")),
        operators.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, fmt(v))))) :
        el("p", {}, run.target && run.target !== "embedded" ? "Counted by the cluster's executors (their /metrics)." : "-"),
      el("h3", {}, "Job"), el("pre", { id: "run-sql" }, run.sql),
      el("h3", {}, "Provenance (_SUCCESS)"), el("pre", { id: "run-summary" }, run.summary ? JSON.stringify(run.summary, null, 2) : "not committed yet"),
      el("h3", {}, "Error rows"), el("div", { id: "errors" }, run.status === "running" ? "after the run" : "loading..."));
    if (run.status === "running") { timer = setTimeout(load, 1000); return; }
    loadErrors(id);
  };
  await load();
}

async function loadErrors(id) {
  const box = document.getElementById("errors");
  let result;
  try { result = await api(`/api/runs/${encodeURIComponent(id)}/errors`); } catch (e) { box.replaceChildren(failure(e)); return; }
  if (result.rows.length === 0) { box.replaceChildren(el("p", {}, "No error rows.")); return; }
  const keys = result.columns.filter((c) => ["path", "start_s", "end_s", "error"].includes(c));
  const detail = el("pre", { id: "error-detail", hidden: "" });
  const table = el("table", { id: "error-rows" }, el("tr", {}, keys.map((k) => el("th", {}, k))),
    result.rows.map((row) => el("tr", { class: "error-row", onclick: () => {
      detail.hidden = false;
      detail.textContent = Object.entries(row).map(([k, v]) => `${k}: ${fmt(v)}`).join("\n");
    } }, keys.map((k) => el("td", {}, k === "error" ? String(row[k] || "").slice(0, 80) : fmt(row[k]))))));
  box.replaceChildren(el("p", {}, `${result.total} error rows (click one for its message)`), table, detail);
}

// --- shot browser --------------------------------------------------------------------------
async function shotsView(id, predicate) {
  const filter = el("input", { type: "text", id: "filter", placeholder: "a SQL predicate over the manifest's columns, e.g. motion_score > 0.5", value: predicate || "" });
  const clips = el("div", { id: "clips" });
  const info = el("p", { id: "clips-info" });
  const form = el("form", { id: "filter-form" }, filter, " ", el("button", { type: "submit", id: "filter-button" }, "Filter"));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); location.hash = `#/shots/${encodeURIComponent(id)}?where=${encodeURIComponent(filter.value)}`; });
  view.replaceChildren(el("h2", {}, `Shots of ${id}`), el("p", {}, el("a", { href: `#/run/${encodeURIComponent(id)}` }, "back to the run")), form, info, clips);
  let result;
  try {
    result = await api(`/api/runs/${encodeURIComponent(id)}/clips?limit=60&where=${encodeURIComponent(predicate || "")}`);
  } catch (e) { info.replaceChildren(failure(e)); return; }
  info.textContent = `${result.total} rows match; showing ${result.rows.length}.`;
  for (const row of result.rows) {
    const img = el("img", { class: "sheet", alt: `${row.path} ${fmt(row.start_s)}-${fmt(row.end_s)}` });
    const hasRange = row.start_s !== undefined && row.end_s !== undefined && row.start_s !== null && row.end_s !== null;
    const query = hasRange ? `start_s=${row.start_s}&end_s=${row.end_s}` : "at_s=0";
    const url = `/api/preview?path=${encodeURIComponent(row.path)}&${query}`;
    const captionKey = captionColumn(row);
    const fields = Object.entries(row).filter(([k]) => !["run_id", captionKey].includes(k));
    const caption = captionKey ? el("p", { class: "caption" }, fmt(row[captionKey])) : "";
    const card = el("div", { class: "clip", onclick: () => openPreview(row, url) }, img, caption,
      el("dl", {}, fields.map(([k, v]) => [el("dt", {}, k), el("dd", {}, fmt(v, 3))])));
    clips.append(card);
    showImage(img, `${url}&frames=4&size=160`);
  }
}

// The column holding a clip's caption (`caption`, or a name with "caption" in it), if any.
function captionColumn(row) {
  const keys = Object.keys(row);
  return keys.find((k) => k === "caption") || keys.find((k) => /caption/i.test(k));
}

function openPreview(row, url) {
  const modal = document.getElementById("preview");
  const img = document.getElementById("preview-image");
  img.removeAttribute("src");
  delete img.dataset.loaded;
  document.getElementById("preview-title").textContent = `${row.path} ${fmt(row.start_s)} s - ${fmt(row.end_s)} s`;
  const captionKey = captionColumn(row);
  document.getElementById("preview-caption").textContent = captionKey ? fmt(row[captionKey]) : "";
  modal.hidden = false;
  showImage(img, `${url}&frames=9&size=320`);
}
document.getElementById("preview-close").addEventListener("click", () => { document.getElementById("preview").hidden = true; });

// --- submit --------------------------------------------------------------------------------
async function submitView() {
  const select = el("select", { id: "target" });
  const error = el("p", { class: "error", id: "submit-error" });
  const form = el("form", { id: "submit-form" },
    el("h2", {}, "Submit a job"),
    el("label", { for: "sql" }, "Job (SQL; the last statement is the query whose rows the manifest holds)"),
    el("textarea", { id: "sql", spellcheck: "false" }),
    el("label", { for: "output" }, "Output (a folder or s3:// prefix; empty: a new folder under the server's runs)"),
    el("input", { type: "text", id: "output" }),
    el("label", { for: "target" }, "Target"), select,
    el("div", {}, el("button", { type: "submit", id: "submit-button" }, "Run")), error);
  view.replaceChildren(form);
  try {
    const { targets } = await api("/api/targets");
    for (const t of targets) select.append(el("option", { value: t.name }, t.url ? `${t.name} (${t.url})` : t.name));
  } catch (e) { error.textContent = `${e.code}: ${e.message}`; }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const body = { sql: document.getElementById("sql").value, target: select.value, output: document.getElementById("output").value };
      const { id } = await api("/api/runs", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      location.hash = `#/run/${encodeURIComponent(id)}`;
    } catch (e) { error.textContent = `${e.code}: ${e.message}`; }
  });
}

// --- clusters ------------------------------------------------------------------------------
async function clustersView() {
  const body = el("div", { id: "clusters" }, el("h2", {}, "Clusters"));
  view.replaceChildren(body);
  let result;
  try { result = await api("/api/clusters"); } catch (e) { body.append(failure(e)); return; }
  if (result.clusters.length === 0) body.append(el("p", {}, "No clusters configured (serve --cluster NAME=df://host:port)."));
  for (const c of result.clusters) {
    body.append(el("section", { class: "cluster", "data-name": c.name },
      el("h3", {}, `${c.name} `, el("code", {}, c.url), " ", el("span", { class: "status " + (c.reachable ? "succeeded" : "failed") }, c.reachable ? "reachable" : "unreachable")),
      c.error ? el("p", { class: "error" }, c.error) : null,
      el("p", {}, `${c.executors.length} executors, ${c.slots} slots, ${c.running_jobs} jobs and ${c.running_tasks} tasks running`),
      el("table", { class: "executors" }, el("tr", {}, ["executor", "address", "slots", "last heartbeat"].map((h) => el("th", {}, h))),
        c.executors.map((e) => el("tr", { class: "executor" }, el("td", {}, e.id), el("td", {}, `${e.host}:${e.port}`), el("td", {}, e.slots),
          el("td", {}, e.last_heartbeat_ms === null ? "-" : new Date(e.last_heartbeat_ms).toISOString())))),
      el("table", { class: "jobs" }, el("tr", {}, ["job", "name", "status", "stages done", "tasks running"].map((h) => el("th", {}, h))),
        c.jobs.map((j) => el("tr", {}, el("td", {}, j.id), el("td", {}, j.name), el("td", {}, j.status), el("td", {}, `${j.completed_stages}/${j.stages}`), el("td", {}, j.running_tasks))))));
  }
}

// --- routing -------------------------------------------------------------------------------
function route() {
  stop();
  const hash = location.hash || "#/runs";
  if (hash === "#/logout") { sessionStorage.removeItem("framefusion-token"); location.hash = "#/runs"; return; }
  if (!token()) { loginView(); return; }
  document.getElementById("nav").hidden = false;
  const [path, query] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  if (parts[0] === "run" && parts[1]) runView(parts[1]);
  else if (parts[0] === "shots" && parts[1]) shotsView(parts[1], params.get("where"));
  else if (parts[0] === "submit") submitView();
  else if (parts[0] === "clusters") clustersView();
  else runsView();
}
window.addEventListener("hashchange", route);
route();
