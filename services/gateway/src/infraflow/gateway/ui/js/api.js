// The REST API from the browser: the bearer token lives in sessionStorage (gone with the tab),
// errors come back as ApiError with the API's code and message, and a run's events are
// followed over Server-Sent Events read with fetch (EventSource cannot send a bearer token).

const TOKEN_KEY = "infraflow.token";
const TERMINAL_EVENTS = new Set(["run_completed", "run_failed", "run_cancelled"]);

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function signIn(value) {
  sessionStorage.setItem(TOKEN_KEY, value.trim());
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The token's claims, decoded for display only (the API verifies them on every call). */
export function claims() {
  const value = token();
  if (!value) return null;
  try {
    const payload = value.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), "="));
    return JSON.parse(json);
  } catch {
    return {};
  }
}

const WRITE_ROLES = ["super_admin", "provider_admin", "provider_operator"];
const TERMINATE_ROLES = ["super_admin", "provider_admin"];

/** What the signed-in user may do (the buttons shown); the API decides in the end. */
export function abilities(projectId) {
  const c = claims() || {};
  const roles = Array.isArray(c.roles) ? c.roles : String(c.roles || "").split(/\s+/);
  const projects = c.projects || {};
  const writer = roles.some((r) => WRITE_ROLES.includes(r));
  const acting = writer || ["admin", "member"].includes(projects[projectId]);
  return {
    subject: c.sub || "?",
    roles,
    projects: Object.keys(projects),
    act: acting,
    terminate: roles.some((r) => TERMINATE_ROLES.includes(r)),
  };
}

/** Call the API: resolves to {status, data, meta}; rejects with ApiError. */
export async function call(path, { method = "GET", params, body, signal } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Accept: "application/json", Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "UNREACHABLE", "The API cannot be reached; check your connection.");
  }
  let envelope;
  try {
    envelope = await response.json();
  } catch {
    throw new ApiError(response.status, "BAD_RESPONSE", `HTTP ${response.status} without JSON`);
  }
  if (envelope.success) return { status: response.status, data: envelope.data, meta: envelope.meta };
  const error = envelope.error || {};
  if (response.status === 401) window.dispatchEvent(new CustomEvent("infraflow:unauthorized"));
  throw new ApiError(response.status, error.code || "ERROR", error.message || "failed", error.details);
}

/**
 * Follow a run's events: onEvent({seq, event}) for each, until its terminal event or until
 * `signal` aborts. Streams where the gateway can, polls otherwise.
 */
export async function followEvents(runId, afterSeq, onEvent, signal) {
  let last = afterSeq;
  const seen = (item) => {
    last = Math.max(last, item.seq);
    onEvent(item);
    return TERMINAL_EVENTS.has(item.event && item.event.event);
  };
  for (let attempt = 0; attempt < 5 && !signal.aborted; attempt += 1) {
    try {
      const streamed = await stream(runId, last, seen, signal);
      if (streamed) return;
      break; // no SSE: poll
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status && err.status < 500) throw err;
      await sleep(500 * (attempt + 1), signal);
    }
  }
  while (!signal.aborted) {
    const page = await call(`/v1/workflows/runs/${encodeURIComponent(runId)}/events`, {
      params: { afterSeq: last }, signal,
    });
    for (const item of page.data || []) if (seen(item)) return;
    await sleep(1000, signal);
  }
}

async function stream(runId, afterSeq, seen, signal) {
  const url = `/v1/workflows/runs/${encodeURIComponent(runId)}/events?afterSeq=${afterSeq}`;
  const response = await fetch(url, {
    headers: { Accept: "text/event-stream", Authorization: `Bearer ${token()}` }, signal,
  });
  const type = response.headers.get("content-type") || "";
  if (!response.ok || !type.startsWith("text/event-stream")) {
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      const error = body.error || {};
      throw new ApiError(response.status, error.code || "ERROR", error.message || "failed");
    }
    return false;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let fields = {};
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return true;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).replace(/\r$/, "");
      buffer = buffer.slice(cut + 1);
      if (line === "") {
        if (data.length) {
          const event = JSON.parse(data.join("\n"));
          if (seen({ seq: Number(fields.id || 0), event })) {
            reader.cancel().catch(() => {});
            return true;
          }
        }
        fields = {};
        data = [];
      } else if (!line.startsWith(":")) {
        const at = line.indexOf(":");
        const name = at < 0 ? line : line.slice(0, at);
        const text = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
        if (name === "data") data.push(text);
        else fields[name] = text;
      }
    }
  }
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); });
  });
}
