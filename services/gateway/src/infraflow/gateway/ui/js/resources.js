// Servers, clusters and VMs from the gateway's cache: state, what they are, and their last
// run (a link to its page). Clusters and VMs belong to a project, chosen on the page.

import { abilities, call, sleep } from "./api.js";
import { badge, formatTime, h, replace, runLink, table } from "./dom.js";

const REFRESH_MS = 5000;

async function listAll(path, signal) {
  const items = [];
  let token = null;
  do {
    const page = await call(path, { params: { pageSize: 500, pageToken: token }, signal });
    items.push(...page.data);
    token = page.meta.pagination && page.meta.pagination.hasMore ? page.meta.pagination.nextCursor : null;
  } while (token && items.length < 5000);
  return items;
}

async function live(body, load, draw, signal) {
  let last = "";
  while (!signal.aborted) {
    try {
      const items = await load();
      const runs = await lastRuns(items, signal).catch(() => new Map());
      const key = JSON.stringify([items, [...runs.values()].map((r) => [r.id, r.status])]);
      if (key !== last) {
        last = key;
        replace(body, draw(items, runs));
      }
    } catch (err) {
      if (err.name === "AbortError") return;
      replace(body, h("div", { class: "error", role: "alert" }, h("strong", {}, err.code || "ERROR"), `: ${err.message}`));
    }
    await sleep(REFRESH_MS, signal);
  }
}

/** The last runs of these resources (one list query), by run id. */
async function lastRuns(items, signal) {
  const ids = [...new Set(items.map((r) => r.id))].slice(0, 100);
  if (!ids.length) return new Map();
  const page = await call("/v1/workflows/runs", { params: { resourceId: ids.join(","), pageSize: 500 }, signal });
  return new Map(page.data.map((run) => [run.id, run]));
}

function lastRunColumn(runs) {
  return {
    label: "Last run",
    cell: (r) => {
      const run = runs.get(r.lastRunId);
      if (!r.lastRunId) return "–";
      if (!run) return h("span", { class: "last-run" }, runLink(r.lastRunId));
      const text = [run.type, h("span", { class: "visually-hidden" }, ` run ${run.id}`)];
      return h("span", { class: "last-run" }, runLink(r.lastRunId, text), badge(run.status));
    },
  };
}
const activeRun = { label: "Running now", cell: (r) => runLink(r.activeRunId) };

export async function renderServers(main, { signal }) {
  const body = h("div", {});
  replace(main, h("h1", {}, "Servers"), body);
  await live(body, () => listAll("/v1/servers", signal), (items, runs) => table(`${items.length} servers`, [
    { label: "Server", cell: (r) => h("span", {}, h("span", { class: "name" }, r.name || r.id), h("br"), h("code", {}, r.id)) },
    { label: "State", cell: (r) => badge(r.state) },
    { label: "Power", cell: (r) => r.powerState || "–" },
    { label: "Site", cell: (r) => r.site || "–" },
    { label: "Hardware", cell: (r) => [r.vendor, r.model].filter(Boolean).join(" ") || "–" },
    { label: "Project", cell: (r) => r.projectId || "–" },
    lastRunColumn(runs), activeRun,
    { label: "Observed", cell: (r) => formatTime(r.observedAt || r.updatedAt), class: "time" },
  ], items, { empty: "No servers registered." }), signal);
}

function projectPicker(kind, query) {
  const known = abilities().projects;
  const project = query.get("project") || known[0] || "";
  const input = h("input", { type: "text", id: "project", name: "project", value: project, list: "known-projects", required: true });
  const form = h("form", { class: "toolbar", "aria-label": "Choose a project" },
    h("label", { for: "project" }, "Project"), input,
    h("datalist", { id: "known-projects" }, known.map((p) => h("option", { value: p }))),
    h("button", { type: "submit" }, `Show ${kind}`));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    window.location.hash = `#/${kind}?project=${encodeURIComponent(input.value.trim())}`;
  });
  return { form, project };
}

export async function renderClusters(main, { query, signal }) {
  const { form, project } = projectPicker("clusters", query);
  const body = h("div", {});
  replace(main, h("h1", {}, "Clusters"), form, body);
  if (!project) {
    replace(body, h("p", {}, "Choose a project to see its clusters."));
    return;
  }
  const path = `/v1/projects/${encodeURIComponent(project)}/clusters`;
  await live(body, () => listAll(path, signal), (items, runs) => table(`${items.length} clusters in ${project}`, [
    { label: "Cluster", cell: (r) => h("span", {}, h("span", { class: "name" }, r.name || r.id), h("br"), h("code", {}, r.id)) },
    { label: "State", cell: (r) => badge(r.state) },
    { label: "Phase", cell: (r) => r.phase || "–" },
    { label: "Workers", cell: (r) => r.workers ?? "–" },
    { label: "Version", cell: (r) => r.version || "–" },
    { label: "Template", cell: (r) => r.template || "–" },
    lastRunColumn(runs), activeRun,
  ], items, { empty: "No clusters in this project." }), signal);
}

export async function renderVms(main, { query, signal }) {
  const { form, project } = projectPicker("vms", query);
  const body = h("div", {});
  replace(main, h("h1", {}, "Virtual machines"), form, body);
  if (!project) {
    replace(body, h("p", {}, "Choose a project to see its VMs."));
    return;
  }
  const path = `/v1/projects/${encodeURIComponent(project)}/vms`;
  await live(body, () => listAll(path, signal), (items, runs) => table(`${items.length} VMs in ${project}`, [
    { label: "VM", cell: (r) => h("span", {}, h("span", { class: "name" }, r.name || r.id), h("br"), h("code", {}, r.id)) },
    { label: "State", cell: (r) => badge(r.state) },
    { label: "Phase", cell: (r) => r.phase || "–" },
    { label: "CPU", cell: (r) => r.cpu ?? "–" },
    { label: "Memory", cell: (r) => (r.memoryGiB ? `${r.memoryGiB} GiB` : "–") },
    { label: "Image", cell: (r) => r.image || "–" },
    lastRunColumn(runs), activeRun,
  ], items, { empty: "No VMs in this project." }), signal);
}
