// The runs table: every filter of GET /v1/workflows/runs (kept in the URL, so a filtered view
// can be shared), "load more" pages, and live updates while the tab is open.

import { call, sleep } from "./api.js";
import {
  announce, badge, formatDuration, formatTime, h, replace, runLink, table,
} from "./dom.js";

const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];
const RESOURCE_TYPES = ["server", "cluster", "vm"];
const TEXT_FILTERS = [
  ["resourceId", "Resource id", "srv_… (comma-separated)"],
  ["triggeredBy", "Triggered by", "user id"],
  ["projectId", "Project", "project id"],
];
const FILTER_KEYS = ["type", "status", "resourceType", "resourceId", "triggeredBy", "projectId",
  "since", "until"];
const REFRESH_MS = 3000;

export async function renderRuns(main, { query, signal }) {
  const types = await call("/v1/workflows/types", { signal }).then((r) => r.data).catch(() => []);
  const filters = Object.fromEntries(FILTER_KEYS.map((k) => [k, query.get(k) || ""]));
  const results = h("div", { id: "runs-results" });
  const summary = h("p", { id: "runs-summary", class: "summary" });
  const live = h("input", { type: "checkbox", id: "live", checked: true });
  replace(main,
    h("h1", {}, "Runs"),
    filterForm(filters, types),
    h("div", { class: "toolbar" },
      summary,
      h("label", { for: "live", class: "inline" }, live, " Live updates")),
    results);

  let rows = [];
  let cursor = null;
  let hasMore = false;
  const params = { ...filters, pageSize: 50 };

  const draw = () => {
    const more = hasMore
      ? h("button", { type: "button", id: "load-more", onclick: loadMore }, "Load more runs")
      : null;
    replace(results, runsTable(rows), more);
    replace(summary, `${rows.length} run${rows.length === 1 ? "" : "s"} shown` +
      (hasMore ? " (more match)" : ""));
  };

  async function loadMore() {
    const page = await call("/v1/workflows/runs", { params: { ...params, pageToken: cursor }, signal });
    rows = rows.concat(page.data);
    cursor = page.meta.pagination && page.meta.pagination.nextCursor;
    hasMore = Boolean(page.meta.pagination && page.meta.pagination.hasMore);
    draw();
    announce(`${page.data.length} more runs loaded.`);
  }

  const first = await call("/v1/workflows/runs", { params, signal });
  rows = first.data;
  cursor = first.meta.pagination && first.meta.pagination.nextCursor;
  hasMore = Boolean(first.meta.pagination && first.meta.pagination.hasMore);
  draw();

  // live: re-read what is shown, redraw only when something changed
  while (!signal.aborted) {
    await sleep(REFRESH_MS, signal);
    if (signal.aborted || !live.checked || document.hidden) continue;
    try {
      const size = Math.min(500, Math.max(50, rows.length));
      const page = await call("/v1/workflows/runs", { params: { ...params, pageSize: size }, signal });
      if (JSON.stringify(page.data) !== JSON.stringify(rows.slice(0, page.data.length))) {
        const focused = document.activeElement && document.activeElement.getAttribute("href");
        rows = page.data;
        hasMore = Boolean(page.meta.pagination && page.meta.pagination.hasMore);
        cursor = page.meta.pagination && page.meta.pagination.nextCursor;
        draw();
        if (focused) {
          const again = results.querySelector(`a[href="${CSS.escape(focused)}"]`);
          if (again) again.focus();
        }
      }
    } catch (err) {
      if (err.name === "AbortError") return;
      replace(summary, `Live update failed: ${err.message}`);
    }
  }
}

function runsTable(rows) {
  return table("Runs, newest first", [
    { label: "Run", cell: (r) => runLink(r.id) },
    { label: "Type", cell: (r) => r.type },
    { label: "Status", cell: (r) => badge(r.status) },
    { label: "Resource", cell: (r) => `${r.resourceType} ${r.resourceId || ""}` },
    { label: "Steps", cell: (r) => progress(r) },
    { label: "Created", cell: (r) => formatTime(r.createdAt), class: "time" },
    { label: "Duration", cell: (r) => formatDuration(r.durationMs) },
    { label: "Triggered by", cell: (r) => r.triggeredBy },
  ], rows, { empty: "No run matches these filters." });
}

function progress(run) {
  const p = run.progress || {};
  return `${p.completedSteps || 0}/${p.totalSteps || 0}` + (p.currentStep ? ` · ${p.currentStep}` : "");
}

function filterForm(filters, types) {
  const chosenStatus = new Set(filters.status.split(",").filter(Boolean));
  const chosenTypes = new Set(filters.type.split(",").filter(Boolean));
  const statusBoxes = STATUSES.map((status) => h("label", { class: "inline", for: `status-${status}` },
    h("input", {
      type: "checkbox", id: `status-${status}`, name: "status", value: status,
      checked: chosenStatus.has(status),
    }), ` ${status}`));
  const typeSelect = h("select", { id: "filter-type", name: "type", multiple: true, size: 4 },
    types.map((t) => h("option", { value: t.type || t.name, selected: chosenTypes.has(t.type || t.name) },
      t.type || t.name)));
  const resourceType = h("select", { id: "filter-resourceType", name: "resourceType" },
    h("option", { value: "" }, "any"),
    RESOURCE_TYPES.map((t) => h("option", { value: t, selected: filters.resourceType === t }, t)));
  const texts = TEXT_FILTERS.map(([name, label, hint]) => h("div", { class: "field" },
    h("label", { for: `filter-${name}` }, label),
    h("input", { type: "text", id: `filter-${name}`, name, value: filters[name], placeholder: hint })));
  const times = [["since", "Started from"], ["until", "Started until"]].map(([name, label]) =>
    h("div", { class: "field" },
      h("label", { for: `filter-${name}` }, label),
      h("input", { type: "datetime-local", id: `filter-${name}`, name, value: toLocal(filters[name]) })));

  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter runs" },
    h("fieldset", { class: "statuses" }, h("legend", {}, "Status"), statusBoxes),
    h("div", { class: "field" }, h("label", { for: "filter-type" }, "Workflow type"), typeSelect),
    h("div", { class: "field" }, h("label", { for: "filter-resourceType" }, "Resource type"), resourceType),
    texts, times,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Apply filters"),
      h("button", { type: "button", onclick: () => { window.location.hash = "#/runs"; } }, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const out = new URLSearchParams();
    const statuses = data.getAll("status");
    if (statuses.length) out.set("status", statuses.join(","));
    const chosen = Array.from(typeSelect.selectedOptions).map((o) => o.value);
    if (chosen.length) out.set("type", chosen.join(","));
    for (const key of ["resourceType", "resourceId", "triggeredBy", "projectId"]) {
      const value = String(data.get(key) || "").trim();
      if (value) out.set(key, value);
    }
    for (const key of ["since", "until"]) {
      const value = String(data.get(key) || "");
      if (value) out.set(key, new Date(value).toISOString());
    }
    const query = out.toString();
    window.location.hash = query ? `#/runs?${query}` : "#/runs";
  });
  return form;
}

function toLocal(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}T${pad(t.getHours())}:${pad(t.getMinutes())}`;
}
