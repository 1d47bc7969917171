// Hand-drawn SVG charts (no library, no build step). Each returns a <figure> whose caption
// names what it shows and whose <details> holds the same numbers as a table.

import { h, s, table } from "./dom.js";

const STATUS_ORDER = ["completed", "failed", "cancelled", "running", "pending"];

function figure(id, title, svg, dataTable, note) {
  return h("figure", { class: "chart", "aria-labelledby": `${id}-caption` },
    h("figcaption", { id: `${id}-caption` }, h("strong", {}, title), note ? ` ${note}` : ""),
    svg,
    h("details", {}, h("summary", {}, `${title}: the numbers`), dataTable));
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return value;
}

/** Stacked columns: [{label, values: {status: n}}] over time. */
export function stackedColumns(id, title, buckets, { note } = {}) {
  const width = 960;
  const height = 260;
  const left = 44;
  const bottom = 36;
  const top = 12;
  const max = niceMax(Math.max(0, ...buckets.map((b) => STATUS_ORDER.reduce((n, k) => n + (b.values[k] || 0), 0))));
  const plotH = height - top - bottom;
  const slot = (width - left - 8) / Math.max(1, buckets.length);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", "aria-label": `${title} (chart; the numbers follow in a table)` });
  for (let i = 0; i <= 4; i += 1) {
    const value = (max * i) / 4;
    const y = top + plotH - (plotH * i) / 4;
    svg.append(s("line", { x1: left, x2: width - 8, y1: y, y2: y, class: "grid" }),
      s("text", { x: left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, String(Math.round(value * 10) / 10)));
  }
  const every = Math.max(1, Math.ceil(buckets.length / 12));
  buckets.forEach((bucket, i) => {
    let y = top + plotH;
    const x = left + i * slot + slot * 0.15;
    for (const status of STATUS_ORDER) {
      const n = bucket.values[status] || 0;
      if (!n) continue;
      const hgt = (n / max) * plotH;
      y -= hgt;
      svg.append(s("rect", { x, y, width: slot * 0.7, height: hgt, class: `bar status-${status}` },
        s("title", {}, `${bucket.label}: ${n} ${status}`)));
    }
    if (i % every === 0) {
      svg.append(s("text", { x: x + slot * 0.35, y: height - bottom + 16, class: "tick", "text-anchor": "middle" }, bucket.short));
    }
  });
  const rows = buckets.map((b) => ({ label: b.label, ...b.values }));
  return figure(id, title, h("div", { class: "chart-box" }, svg, statusLegend()),
    table(title, [{ label: "Bucket", cell: (r) => r.label },
      ...STATUS_ORDER.map((k) => ({ label: k, cell: (r) => r[k] || 0 }))], rows), note);
}

/** Horizontal grouped bars: [{label, values: [{name, value, text}]}]. */
export function groupedBars(id, title, groups, { names, max, unit = "", note } = {}) {
  const width = 960;
  const left = 200;
  const barH = 14;
  const gap = 10;
  const groupH = names.length * barH + gap;
  const height = 24 + groups.length * groupH + 8;
  const top = 20;
  const scaleMax = max || niceMax(Math.max(0, ...groups.flatMap((g) => g.values.map((v) => v.value || 0))));
  const x = (v) => left + (Math.max(0, v) / scaleMax) * (width - left - 150);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", "aria-label": `${title} (chart; the numbers follow in a table)` });
  for (let i = 0; i <= 4; i += 1) {
    const value = (scaleMax * i) / 4;
    svg.append(s("line", { x1: x(value), x2: x(value), y1: top - 4, y2: height - 4, class: "grid" }),
      s("text", { x: x(value), y: 12, class: "tick", "text-anchor": "middle" }, `${Math.round(value * 100) / 100}${unit}`));
  }
  groups.forEach((group, gi) => {
    const y0 = top + gi * groupH;
    svg.append(s("text", { x: 4, y: y0 + (names.length * barH) / 2 + 4, class: "label" }, group.label));
    if (group.values.every((v) => v.value === null || v.value === undefined)) {
      svg.append(s("text", { x: left + 4, y: y0 + (names.length * barH) / 2 + 4, class: "value" }, group.empty || "no data"));
    }
    group.values.forEach((v, vi) => {
      const y = y0 + vi * barH;
      if (v.value === null || v.value === undefined) return;
      svg.append(s("rect", { x: left, y, width: Math.max(1, x(v.value) - left), height: barH - 3, class: `bar series-${vi}` },
        s("title", {}, `${group.label} ${v.name}: ${v.text}`)),
      s("text", { x: x(v.value) + 4, y: y + barH - 5, class: "value" }, `${v.name} ${v.text}`));
    });
  });
  const legend = h("p", { class: "legend" }, names.map((n, i) => h("span", { class: "legend-item" },
    h("span", { class: `swatch series-${i}`, "aria-hidden": "true" }), n)));
  const rows = groups.map((g) => Object.fromEntries([["label", g.label], ...g.values.map((v) => [v.name, v.text])]));
  return figure(id, title, h("div", { class: "chart-box" }, svg, names.length > 1 ? legend : null),
    table(title, [{ label: "Type", cell: (r) => r.label }, ...names.map((n) => ({ label: n, cell: (r) => r[n] || "–" }))], rows),
    note);
}

function statusLegend() {
  return h("p", { class: "legend" }, STATUS_ORDER.map((k) => h("span", { class: "legend-item" },
    h("span", { class: `swatch status-${k}`, "aria-hidden": "true" }), k)));
}
