// The console's shell: sign-in, the hash router (#/runs, #/runs/<id>, #/metrics, #/servers,
// #/clusters, #/vms) and the header. Each view gets an AbortSignal that fires when the user
// leaves it, which stops its timers and event streams.

import { ApiError, abilities, call, signIn, signOut, token } from "./api.js";
import { announce, h, replace } from "./dom.js";
import { renderMetrics } from "./metrics.js";
import { renderClusters, renderServers, renderVms } from "./resources.js";
import { renderRun } from "./run.js";
import { renderRuns } from "./runs.js";

const ROUTES = [
  [/^runs$/, renderRuns, "runs", "Runs"],
  [/^runs\/([^/]+)$/, renderRun, "runs", "Run"],
  [/^metrics$/, renderMetrics, "metrics", "Metrics"],
  [/^servers$/, renderServers, "servers", "Servers"],
  [/^clusters$/, renderClusters, "clusters", "Clusters"],
  [/^vms$/, renderVms, "vms", "VMs"],
];

let current = null;
let signingIn = false; // a refused token during sign-in is reported by the form itself

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { path: decodeURIComponent(path), query: new URLSearchParams(query) };
}

function route() {
  if (window.location.hash && !window.location.hash.startsWith("#/")) return; // in-page anchor
  if (current) current.abort();
  current = new AbortController();
  const main = document.getElementById("main");
  if (!token()) {
    renderSignIn(main);
    return;
  }
  renderWho();
  const { path, query } = parseHash();
  const match = ROUTES.find(([pattern]) => pattern.test(path));
  if (!match) {
    window.location.replace("#/runs");
    return;
  }
  const [pattern, view, nav, title] = match;
  document.title = `${title} · Infraflow console`;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const args = path.match(pattern).slice(1).map(decodeURIComponent);
  // each visit renders into its own element: a view still finishing a request after the user
  // moved on writes into a detached element, never over the next page
  const root = h("div", { class: "view" });
  replace(main, root);
  const signal = current.signal;
  Promise.resolve(view(root, { args, query, signal })).catch((err) => {
    if (signal.aborted || (err && err.name === "AbortError")) return;
    replace(root, h("h1", {}, title), errorBox(err));
  });
}

/** An error from the API, shown with its code and message. */
export function errorBox(err) {
  const code = err instanceof ApiError ? err.code : "ERROR";
  const fields = err instanceof ApiError && err.details && err.details.fields;
  return h("div", { class: "error", role: "alert" },
    h("strong", {}, code), ": ", err.message || String(err),
    fields ? h("ul", {}, Object.entries(fields).map(([k, v]) => h("li", {}, `${k}: ${v}`))) : null);
}

function renderWho() {
  const who = document.getElementById("who");
  const me = abilities();
  replace(who,
    h("span", { class: "subject" }, me.subject),
    me.roles.length ? h("span", { class: "roles" }, ` (${me.roles.join(", ")})`) : null,
    h("button", {
      type: "button", class: "link", onclick: () => {
        signOut();
        announce("Signed out.");
        route();
      },
    }, "Sign out"));
}

function renderSignIn(main, message) {
  replace(document.getElementById("who"));
  document.title = "Sign in · Infraflow console";
  const error = h("div", { id: "signin-error", "aria-live": "assertive" });
  if (message) replace(error, h("p", { class: "error", role: "alert" }, message));
  const input = h("textarea", {
    id: "token", name: "token", rows: 4, required: true, autocomplete: "off",
    spellcheck: "false", "aria-describedby": "token-help signin-error",
  });
  const form = h("form", { class: "signin", novalidate: true },
    h("h1", {}, "Sign in"),
    h("label", { for: "token" }, "Bearer token"),
    h("p", { id: "token-help", class: "help" },
      "Paste the JWT you use for the API. It is kept in this tab only and sent to this server."),
    input,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) {
      replace(error, h("p", { class: "error", role: "alert" }, "Enter a token."));
      input.focus();
      return;
    }
    signIn(value);
    signingIn = true;
    try {
      await call("/v1/workflows/types");
    } catch (err) {
      signOut();
      replace(error, errorBox(err));
      input.focus();
      return;
    } finally {
      signingIn = false;
    }
    announce("Signed in.");
    if (!window.location.hash.startsWith("#/")) window.location.hash = "#/runs";
    route();
  });
  replace(main, form);
  input.focus();
}

window.addEventListener("infraflow:unauthorized", () => {
  if (signingIn) return;
  if (current) current.abort();
  signOut();
  renderSignIn(document.getElementById("main"), "Your token was refused or has expired; sign in again.");
});
window.addEventListener("hashchange", route);
document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  document.getElementById("main").focus();
});
route();
