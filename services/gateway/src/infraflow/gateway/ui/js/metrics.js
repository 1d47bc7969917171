// Metrics: totals, runs per time bucket by status, duration percentiles per type and success
// rates, from GET /v1/workflows/metrics (refreshed every few seconds).

import { call, sleep } from "./api.js";
import { formatDuration, h, percent, replace, table } from "./dom.js";
import { groupedBars, stackedColumns } from "./charts.js";

const WINDOWS = {
  hour: { label: "Last hour, per minute", bucket: "minute", ms: 3600e3, step: 60e3 },
  day: { label: "Last 24 hours, per hour", bucket: "hour", ms: 24 * 3600e3, step: 3600e3 },
  week: { label: "Last 7 days, per day", bucket: "day", ms: 7 * 24 * 3600e3, step: 24 * 3600e3 },
};
const REFRESH_MS = 5000;

export async function renderMetrics(main, { query, signal }) {
  const windowKey = WINDOWS[query.get("window")] ? query.get("window") : "day";
  const select = h("select", { id: "metrics-window", name: "window" },
    Object.entries(WINDOWS).map(([key, w]) => h("option", { value: key, selected: key === windowKey }, w.label)));
  select.addEventListener("change", () => { window.location.hash = `#/metrics?window=${select.value}`; });
  const body = h("div", { id: "metrics-body" });
  replace(main, h("h1", {}, "Metrics"),
    h("div", { class: "toolbar" }, h("label", { for: "metrics-window" }, "Window"), select),
    body);
  const spec = WINDOWS[windowKey];
  let last = "";
  while (!signal.aborted) {
    const now = Date.now();
    const since = new Date(Math.floor((now - spec.ms) / spec.step) * spec.step);
    const data = (await call("/v1/workflows/metrics", {
      params: { since: since.toISOString(), bucket: spec.bucket }, signal,
    })).data;
    const key = JSON.stringify(data);
    if (key !== last) {
      last = key;
      replace(body, view(data, since, now, spec));
    }
    await sleep(REFRESH_MS, signal);
  }
}

function view(data, since, now, spec) {
  const types = Object.entries(data.byType || {}).sort(([a], [b]) => a.localeCompare(b));
  const tile = (label, value) => h("div", { class: "tile" }, h("span", { class: "tile-label" }, label),
    h("span", { class: "tile-value" }, value));
  return [
    h("section", { class: "tiles", "aria-label": "Totals" },
      tile("Runs", String(data.total || 0)),
      tile("In flight", String(data.inFlight || 0)),
      tile("Success rate", percent(data.successRate)),
      tile("Retries", String(data.retries || 0))),
    stackedColumns("runs-per-bucket", `Runs per ${spec.bucket} by status`, buckets(data.buckets || [], since, now, spec),
      { note: `(${spec.label.toLowerCase()}, by start time)` }),
    groupedBars("durations", "Duration percentiles per type",
      types.map(([name, t]) => ({
        label: name,
        empty: "no completed run",
        values: ["p50", "p95", "p99"].map((k) => {
          const ms = (t.durationMs || {})[k];
          return { name: k, value: typeof ms === "number" ? ms / 1000 : null, text: formatDuration(ms) };
        }),
      })), { names: ["p50", "p95", "p99"], unit: " s", note: "(completed runs)" }),
    groupedBars("success", "Success rate per type",
      types.map(([name, t]) => ({
        label: name,
        values: [{ name: "success", value: typeof t.successRate === "number" ? t.successRate * 100 : null, text: `${percent(t.successRate)} of ${t.count}` }],
      })), { names: ["success"], max: 100, unit: " %", note: "(completed of finished runs)" }),
    table("Top error codes", [
      { label: "Code", cell: (r) => h("code", {}, r.code) },
      { label: "Runs", cell: (r) => r.count },
    ], data.topErrorCodes || [], { empty: "No errors in this window." }),
  ];
}

/** Every bucket of the window (the API may leave out empty ones), oldest first. */
function buckets(items, since, now, spec) {
  const byStart = new Map(items.map((b) => [Math.floor(Date.parse(b.start) / spec.step) * spec.step, b]));
  const out = [];
  for (let t = since.getTime(); t <= now; t += spec.step) {
    const bucket = byStart.get(t);
    const date = new Date(t);
    const pad = (n) => String(n).padStart(2, "0");
    const short = spec.bucket === "day" ? `${pad(date.getMonth() + 1)}-${pad(date.getDate())}` : `${pad(date.getHours())}:${pad(date.getMinutes())}`;
    out.push({ label: date.toLocaleString(), short, values: bucket ? bucket.byStatus || {} : {} });
  }
  return out;
}
