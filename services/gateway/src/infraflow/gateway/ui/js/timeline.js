// A run's step timeline as SVG: one row per step (then one per compensation step), a bar per
// attempt from start to end, the wait before it started (dispatch, queue) and the backoff
// before a retry drawn as their own segments, on a shared time axis. Every bar carries a
// <title>; the attempts table next to it is the same data for screen readers and keyboards.

import { formatDuration, formatTime, h, parseTime, s, table, badge } from "./dom.js";

const WIDTH = 960;
const LABEL = 190;
const ROW = 30;
const BAR = 16;
const AXIS = 26;

/** Segments of one step: waits, attempts and backoffs, with times in ms since epoch. */
function segments(step, now, phase) {
  const out = [];
  const attempts = step.attempts || [];
  let previousEnd = null;
  for (const a of attempts) {
    const scheduled = parseTime(a.scheduledAt);
    const started = parseTime(a.startedAt);
    const ended = parseTime(a.completedAt);
    if (previousEnd && scheduled && scheduled > previousEnd) {
      out.push({ kind: "backoff", from: previousEnd, to: scheduled, label: `backoff before attempt ${a.attempt}` });
    }
    if (scheduled && (started || !ended)) {
      const to = started || ended || now;
      if (to > scheduled) out.push({ kind: "wait", from: scheduled, to, label: `attempt ${a.attempt} waiting for an agent` });
    }
    if (started) {
      const to = ended || now;
      const error = a.error ? ` · ${a.error.code}: ${a.error.message}` : "";
      out.push({
        kind: `attempt status-${a.status}`,
        from: started, to,
        label: `${phase}${step.name} · attempt ${a.attempt} · ${a.status} · ${formatDuration(to - started)}${error}`,
      });
    }
    previousEnd = ended || previousEnd;
  }
  return out;
}

export function timeline(run, now = new Date()) {
  const start = parseTime(run.createdAt) || now;
  const end = parseTime(run.completedAt) || now;
  const rows = [];
  const started = parseTime(run.startedAt);
  rows.push({
    name: "run",
    segments: [
      started && started > start
        ? { kind: "queued", from: start, to: started, label: `queued / waiting for the resource · ${formatDuration(started - start)}` }
        : null,
      { kind: `run status-${run.status}`, from: started || start, to: end, label: `run ${run.status} · ${formatDuration(end - (started || start))}` },
    ].filter(Boolean),
  });
  for (const step of run.steps || []) {
    rows.push({ name: step.name, status: step.status, segments: segments(step, now, "") });
  }
  for (const step of run.compensation || []) {
    rows.push({ name: step.name, status: step.status, compensation: true, segments: segments(step, now, "compensation ") });
  }
  let last = end;
  for (const row of rows) for (const seg of row.segments) if (seg.to > last) last = seg.to;
  const span = Math.max(1, last - start);
  const x = (t) => LABEL + ((t - start) / span) * (WIDTH - LABEL - 10);
  const height = AXIS + rows.length * ROW + 8;

  const svg = s("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`, class: "timeline", role: "img",
    "aria-labelledby": "timeline-title timeline-desc", preserveAspectRatio: "xMinYMin meet",
  },
  s("title", { id: "timeline-title" }, `Timeline of run ${run.id}`),
  s("desc", { id: "timeline-desc" },
    `${rows.length - 1} steps over ${formatDuration(span)}; the attempts table below lists the same data.`));

  for (let i = 0; i <= 5; i += 1) {
    const t = start.getTime() + (span * i) / 5;
    const px = x(t);
    svg.append(
      s("line", { x1: px, x2: px, y1: AXIS - 6, y2: height - 4, class: "grid" }),
      s("text", { x: px, y: 14, class: "tick", "text-anchor": i === 0 ? "start" : i === 5 ? "end" : "middle" },
        `+${formatDuration(t - start.getTime())}`));
  }
  rows.forEach((row, i) => {
    const y = AXIS + i * ROW;
    const group = s("g", { class: row.compensation ? "row compensation" : "row" });
    group.append(s("text", { x: 4, y: y + ROW / 2 + 4, class: "label" },
      row.status && row.status !== "pending" ? `${row.name} (${row.status})` : row.name));
    if (row.status === "skipped") {
      group.append(s("text", { x: LABEL + 4, y: y + ROW / 2 + 4, class: "note" }, "skipped: output kept from the original run"));
    }
    for (const seg of row.segments) {
      const x0 = x(seg.from);
      const w = Math.max(3, x(seg.to) - x0);
      const thin = seg.kind === "wait" || seg.kind === "backoff" || seg.kind === "queued";
      const h0 = thin ? BAR / 2 : BAR;
      group.append(s("rect", {
        x: x0, y: y + (ROW - h0) / 2, width: w, height: h0, rx: 2,
        class: `seg ${seg.kind}`,
      }, s("title", {}, seg.label)));
    }
    svg.append(group);
  });
  return h("figure", { class: "timeline-figure" },
    svg,
    h("figcaption", {},
      legend(),
      ` From ${formatTime(start)} to ${run.completedAt ? formatTime(end) : "now"}.`));
}

function legend() {
  const item = (kind, text) => h("span", { class: "legend-item" },
    h("span", { class: `swatch ${kind}`, "aria-hidden": "true" }), text);
  return h("span", { class: "legend" },
    item("status-succeeded", "succeeded"), item("status-failed", "failed"),
    item("status-running", "running"), item("status-timed_out", "timed out"),
    item("wait", "waiting for an agent"), item("backoff", "retry backoff"),
    item("queued", "queued"), item("compensation-swatch", "compensation"));
}

/** Every attempt as a table: the timeline's data, readable without the picture. */
export function attemptsTable(run) {
  const rows = [];
  for (const [phase, steps] of [["", run.steps || []], ["compensation: ", run.compensation || []]]) {
    for (const step of steps) {
      const attempts = step.attempts || [];
      if (!attempts.length) rows.push({ step: `${phase}${step.name}`, status: step.status });
      for (const a of attempts) rows.push({ step: `${phase}${step.name}`, ...a });
    }
  }
  return table("Attempts", [
    { label: "Step", cell: (r) => r.step },
    { label: "Attempt", cell: (r) => r.attempt || "–" },
    { label: "Status", cell: (r) => badge(r.status) },
    { label: "Scheduled", cell: (r) => formatTime(r.scheduledAt) },
    { label: "Started", cell: (r) => formatTime(r.startedAt) },
    { label: "Ended", cell: (r) => formatTime(r.completedAt) },
    { label: "Took", cell: (r) => (r.startedAt && r.completedAt ? formatDuration(parseTime(r.completedAt) - parseTime(r.startedAt)) : "–") },
    { label: "Error", cell: (r) => (r.error ? `${r.error.code}: ${r.error.message}` : "") },
  ], rows);
}
