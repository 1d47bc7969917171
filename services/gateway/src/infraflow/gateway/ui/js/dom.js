// Small DOM and formatting helpers. Elements are built with h(), never from HTML strings, so
// nothing the API returns can inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

/** An element: h("a", {href: "#/runs", class: "x"}, "text", child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

/** An SVG element (same signature as h). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  return fill(el, attrs, children);
}

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function parseTime(value) {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : new Date(t);
}

export function formatTime(value) {
  const t = value instanceof Date ? value : parseTime(value);
  if (!t) return "–";
  const pad = (n) => String(n).padStart(2, "0");
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ` +
    `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
}

export function formatDuration(ms) {
  if (typeof ms !== "number" || ms < 0 || Number.isNaN(ms)) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const sec = ms / 1000;
  if (sec < 60) return `${sec.toFixed(1)} s`;
  const min = Math.floor(sec / 60);
  if (min < 60) return `${min} min ${String(Math.floor(sec % 60)).padStart(2, "0")} s`;
  return `${Math.floor(min / 60)} h ${String(min % 60).padStart(2, "0")} min`;
}

export function percent(value) {
  return typeof value === "number" ? `${(value * 100).toFixed(1)} %` : "–";
}

/** A status as text in a badge: the word is always there, colour only adds to it. */
export function badge(status) {
  const value = status || "unknown";
  return h("span", { class: `badge status-${value.replace(/[^a-z_]/g, "")}` }, value);
}

/** A link to a run's page. */
export function runLink(runId, text) {
  return runId ? h("a", { href: `#/runs/${encodeURIComponent(runId)}` }, text ?? runId) : "–";
}

/** Announce a message to screen readers (and show it in the status line). */
export function announce(message) {
  const region = document.getElementById("announcer");
  if (region) replace(region, message);
}

/** A table from column specs [{label, cell: (row) => node|text, class?}] and rows. */
export function table(caption, columns, rows, { empty = "Nothing to show." } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)));
  const body = rows.length
    ? rows.map((row) => h("tr", {}, columns.map((c, i) =>
        i === 0 ? h("th", { scope: "row", class: c.class }, c.cell(row))
          : h("td", { class: c.class }, c.cell(row)))))
    : [h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty))];
  return h("table", {}, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, body));
}
