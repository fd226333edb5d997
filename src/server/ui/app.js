// Floe's web UI: pages drawn from the REST API (api/openapi.yaml), nothing else. Data from the
// server is only ever set as text (never parsed as HTML), and the page sends its API token, kept
// for the browser tab in sessionStorage, as a bearer token with each call.

const TOKEN_KEY = "floe.token";
const HEALTH_EVERY_MS = 5000;
const main = document.getElementById("main");

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { headers, credentials: "omit" });
  const body = await response.json().catch(() => null);
  if (response.status === 401) {
    needsToken = true;
    showLogin();
    throw new ApiError(401, "this server needs an API token");
  }
  if (!response.ok) {
    const message = body?.error?.message ?? body?.result ?? `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, String(message));
  }
  return body;
}

// Set by a 401: the health poll waits for a token rather than knock (and be audited) every 5 s.
let needsToken = false;

function showLogin() {
  const form = document.getElementById("login");
  if (!form.hidden) return;
  form.hidden = false;
  document.getElementById("token").focus();
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = document.getElementById("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  needsToken = false;
  document.getElementById("login").hidden = true;
  render();
});

// ---------------------------------------------------------------------------------------------
// DOM helpers: elements built from text, never from HTML strings.

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, String(value));
  }
  node.append(...children);
  return node;
}

function showError(error) {
  main.replaceChildren(el("p", { class: "error", text: error.message }));
}

// ---------------------------------------------------------------------------------------------
// The scheduler's health, on every page.

async function refreshHealth() {
  const health = document.getElementById("health");
  try {
    const s = await api("/scheduler");
    const queued = (s.ready ?? 0) + (s.delayed ?? 0);
    health.textContent =
      `scheduler: ${s.running ?? 0} running · ${queued} queued · ${s.waiting ?? 0} waiting for data` +
      (s.pausedPipelines?.length ? ` · paused: ${s.pausedPipelines.join(", ")}` : "");
  } catch (error) {
    health.textContent = error.status === 401 ? "" : `scheduler: ${error.message}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Pages

async function pipelinesPage() {
  const pipelines = await api("/pipelines");
  const rows = pipelines.map((p) =>
    el(
      "tr",
      {},
      el("td", {}, el("a", { href: `#/pipelines/${encodeURIComponent(p.name)}`, text: p.name })),
      el("td", { text: p.description ?? "" }),
      el("td", { text: p.timezone }),
      el("td", { text: String(p.jobs.length) }),
      el("td", { text: p.version ?? "" }),
    ),
  );
  main.replaceChildren(
    el("h1", { text: "Pipelines" }),
    pipelines.length === 0
      ? el("p", { class: "muted", text: "No pipelines yet: upload one with POST /binaries/{app}." })
      : el(
          "table",
          { class: "list" },
          el("thead", {}, el("tr", {}, ...["pipeline", "description", "timezone", "jobs", "version"].map((h) => el("th", { text: h })))),
          el("tbody", {}, ...rows),
        ),
  );
}

/// A date `days` before or after `base`, as YYYY-MM-DD (UTC).
function isoDay(base, days) {
  const d = new Date(base.getTime() + days * 86400000);
  return d.toISOString().slice(0, 10);
}

async function pipelinePage(name, query) {
  const pipeline = await api(`/pipelines/${encodeURIComponent(name)}`);
  const today = new Date();
  const from = query.get("from") ?? isoDay(today, -7);
  const to = query.get("to") ?? isoDay(today, 1);

  const fromInput = el("input", { id: "from", value: from, "aria-label": "from (inclusive)" });
  const toInput = el("input", { id: "to", value: to, "aria-label": "to (exclusive)" });
  const show = el("button", {
    type: "button",
    text: "Show",
    onclick: () => {
      const q = new URLSearchParams({ from: fromInput.value.trim(), to: toInput.value.trim() });
      location.hash = `#/pipelines/${encodeURIComponent(name)}?${q}`;
    },
  });
  const details = el("section", { class: "details", id: "details", hidden: "" });
  const gridSection = el("section", { id: "grid-section" }, el("p", { class: "muted", text: "Loading the grid…" }));

  main.replaceChildren(
    el("h1", { text: pipeline.name }),
    pipeline.description ? el("p", { class: "muted", text: pipeline.description }) : null,
    el("p", { class: "muted", text: `timezone ${pipeline.timezone} · starts ${pipeline.start}` }),
    el("h2", { text: "Jobs" }),
    dag(pipeline, details),
    el("h2", { text: "Partitions" }),
    el("div", { class: "controls" }, el("label", { for: "from", text: "from" }), fromInput, el("label", { for: "to", text: "to" }), toInput, show),
    gridSection,
    details,
  );

  try {
    const q = new URLSearchParams({ from, to });
    const asked = performance.now();
    const grid = await api(`/pipelines/${encodeURIComponent(name)}/grid?${q}`);
    const answered = performance.now();
    gridSection.replaceChildren(...partitionGrid(grid, details));
    // Laid out, as a user would see it: the figures benches/ui.rs reads.
    void gridSection.offsetHeight;
    const drawn = performance.now();
    const shown = document.getElementById("grid");
    shown.dataset.fetchMs = (answered - asked).toFixed(1);
    shown.dataset.drawMs = (drawn - answered).toFixed(1);
    shown.dataset.pageMs = drawn.toFixed(1);
  } catch (error) {
    gridSection.replaceChildren(el("p", { class: "error", text: error.message }));
  }
}

// The job graph: sources on the left, each job one column right of everything it reads.
function dag(pipeline, details) {
  const sources = new Set(pipeline.sources.map((s) => s.name));
  const jobs = new Map(pipeline.jobs.map((j) => [j.name, j]));
  const column = new Map();
  for (const s of sources) column.set(s, 0);
  // `jobs` come in execution order, so every input's column is known before its reader's.
  for (const job of pipeline.jobs) {
    column.set(job.name, 1 + Math.max(0, ...job.inputs.map((i) => column.get(i) ?? 0)));
  }
  const byColumn = [];
  for (const [node, c] of column) (byColumn[c] ??= []).push(node);
  const width = 190, height = 46, gapX = 60, gapY = 18;
  const position = new Map();
  byColumn.forEach((nodes, c) =>
    nodes.forEach((node, r) => position.set(node, { x: 10 + c * (width + gapX), y: 10 + r * (height + gapY) })),
  );
  const svgWidth = 20 + byColumn.length * (width + gapX) - gapX;
  const svgHeight = 20 + Math.max(...byColumn.map((n) => n.length)) * (height + gapY) - gapY;
  const root = svg("svg", { class: "dag", width: svgWidth, height: svgHeight, role: "img", "aria-label": `the jobs of ${pipeline.name}` });
  for (const job of pipeline.jobs) {
    const to = position.get(job.name);
    for (const input of job.inputs) {
      const from = position.get(input);
      if (!from) continue;
      const x1 = from.x + width, y1 = from.y + height / 2, x2 = to.x, y2 = to.y + height / 2;
      root.append(svg("path", { d: `M${x1},${y1} C${x1 + gapX / 2},${y1} ${x2 - gapX / 2},${y2} ${x2},${y2}` }));
    }
  }
  for (const [node, { x, y }] of position) {
    const job = jobs.get(node);
    const group = svg(
      "g",
      { class: job ? "node job" : "node source", transform: `translate(${x},${y})`, "data-node": node },
      svg("rect", { width, height }),
      svg("text", { x: 8, y: 18, text: node }),
      svg("text", { class: "sub", x: 8, y: 36, text: job ? `${job.kind} · ${job.grain}` : "source" }),
    );
    if (job) {
      group.setAttribute("tabindex", "0");
      const select = () => {
        root.querySelectorAll(".selected").forEach((n) => n.classList.remove("selected"));
        group.classList.add("selected");
        showJob(job, details);
      };
      group.addEventListener("click", select);
      group.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && select());
    }
    root.append(group);
  }
  return root;
}

function definitionList(pairs) {
  return el("dl", {}, ...pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
}

function showJob(job, details) {
  details.hidden = false;
  details.replaceChildren(
    el("h2", { text: `Job ${job.name}` }),
    definitionList([
      ["kind", job.kind],
      ["grain", job.grain],
      ["reads", job.inputs.join(", ")],
      ["retries", job.retries],
      ["timeout", job.timeout],
      ["fingerprint", job.fingerprint],
    ]),
    el("pre", { class: "definition", text: job.definition ?? "" }),
  );
}

// One row per job, one cell per partition, each as wide as its hours, so rows of every grain
// share one time axis and a DST day shows 23 or 25 hours wide.
function partitionGrid(grid, details) {
  const legend = el("div", { class: "legend" }, ...grid.states.map((s) => el("span", { class: `state-${s}`, text: s.replaceAll("_", " ") })));
  const rows = [];
  let cellCount = 0;
  for (const job of grid.jobs) {
    rows.push(el("div", { class: "job" }, el("span", { text: job.job }), el("small", { text: job.grain })));
    const row = el("div", { class: "row", "data-job": job.job });
    for (const cell of job.cells) {
      const hours = (Date.parse(cell.end) - Date.parse(cell.start)) / 3600000;
      const button = el("button", {
        type: "button",
        class: `cell state-${cell.state}`,
        "data-state": cell.state,
        "data-label": cell.label,
        "data-hours": String(hours),
        title: `${job.job} ${cell.label}: ${cell.state.replaceAll("_", " ")}` + (cell.attempts ? ` (${cell.attempts} attempts)` : ""),
        "aria-label": `${job.job} ${cell.label} ${cell.state}`,
      });
      button.style.flexGrow = String(hours);
      button.addEventListener("click", () => {
        document.querySelectorAll(".cell.selected").forEach((c) => c.classList.remove("selected"));
        button.classList.add("selected");
        showCell(grid, job, cell, details);
      });
      row.append(button);
      cellCount += 1;
    }
    rows.push(row);
  }
  const summary = el("p", { class: "muted", text: `${cellCount} partitions from ${grid.from} to ${grid.to} (${grid.timezone}); server time ${grid.now}` });
  return [legend, el("div", { class: "grid", id: "grid" }, ...rows), summary];
}

function showCell(grid, job, cell, details) {
  details.hidden = false;
  details.replaceChildren(
    el("h2", { text: `${job.job} · ${cell.label}` }),
    definitionList([
      ["state", cell.state.replaceAll("_", " ")],
      ["window", `${cell.start} – ${cell.end} (${(Date.parse(cell.end) - Date.parse(cell.start)) / 3600000} h)`],
      ["attempts", cell.attempts],
      ["started", cell.startedAt],
      ["finished", cell.finishedAt],
      ["waiting for data since", cell.waitingSince],
      ["retry at", cell.retryAt],
      ["error", cell.error],
    ]),
  );
  if (cell.state === "succeeded") {
    const preview = el("div", { id: "preview" }, el("p", { class: "muted", text: "Loading the result…" }));
    details.append(preview);
    const q = new URLSearchParams({ from: cell.start, to: cell.end, limit: "20" });
    api(`/pipelines/${encodeURIComponent(grid.pipeline)}/jobs/${encodeURIComponent(job.job)}/results?${q}`)
      .then((result) => preview.replaceChildren(resultTable(result)))
      .catch((error) => preview.replaceChildren(el("p", { class: "error", text: error.message })));
  }
}

// The first rows of a result, as a table.
function resultTable(result) {
  const rows = result.rows ?? [];
  if (rows.length === 0) return el("p", { class: "muted", text: "The result has no rows." });
  const columns = Object.keys(rows[0]);
  const text = (value) => (value === null || value === undefined ? "" : typeof value === "object" ? JSON.stringify(value) : String(value));
  return el(
    "div",
    {},
    el("p", { class: "muted", text: `${rows.length} of ${result.total} rows` }),
    el(
      "table",
      { class: "list" },
      el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", { text: c })))),
      el("tbody", {}, ...rows.map((row) => el("tr", {}, ...columns.map((c) => el("td", { text: text(row[c]) }))))),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Routing: #/ and #/pipelines/{name}?from=&to=

async function render() {
  try {
    const [path, search] = location.hash.slice(1).split("?");
    const query = new URLSearchParams(search ?? "");
    // A malformed escape (`%E0`) throws here, shown as the page's error.
    const parts = (path || "/").split("/").filter(Boolean).map(decodeURIComponent);
    // `.` and `..` would be resolved by the browser's URL parser into another path.
    if (parts.some((part) => part === "." || part === "..")) throw new Error(`No page at ${location.hash}`);
    if (parts.length === 0) await pipelinesPage();
    else if (parts[0] === "pipelines" && parts.length === 2) await pipelinePage(parts[1], query);
    else main.replaceChildren(el("p", { class: "error", text: `No page at ${location.hash}` }));
  } catch (error) {
    showError(error);
  }
  refreshHealth();
}

window.addEventListener("hashchange", render);
setInterval(() => needsToken || refreshHealth(), HEALTH_EVERY_MS);
render();
