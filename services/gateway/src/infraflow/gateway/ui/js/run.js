// One run: its summary, actions allowed to the signed-in user (retry from a step, cancel,
// terminate), the error, the step timeline and the event history, all kept live by the run's
// event stream until it ends.

import { abilities, call, followEvents, sleep } from "./api.js";
import {
  announce, badge, formatDuration, formatTime, h, replace, runLink, table,
} from "./dom.js";
import { attemptsTable, timeline } from "./timeline.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const RETRYABLE = new Set(["failed", "cancelled"]);
const CANCELLABLE = new Set(["pending", "running"]);

export async function renderRun(main, { args, signal }) {
  const [runId] = args;
  const path = `/v1/workflows/runs/${encodeURIComponent(runId)}`;
  let run = (await call(path, { signal })).data;
  const events = [];
  const head = h("section", { "aria-labelledby": "run-title" });
  const actions = h("section", { class: "actions-panel", "aria-label": "Actions" });
  const failure = h("section", { "aria-label": "Error" });
  const chart = h("section", { "aria-labelledby": "timeline-heading" });
  const eventList = h("section", { "aria-labelledby": "events-heading" });
  const title = h("h1", { id: "run-title", tabindex: "-1" }, `Run ${runId}`);
  replace(main, title, head, actions, failure, chart, eventList);

  const draw = () => {
    drawHead(head, run);
    drawActions(actions, run);
    drawError(failure, run);
    replace(chart,
      h("h2", { id: "timeline-heading" }, "Timeline"),
      timeline(run),
      h("details", {}, h("summary", {}, "Attempts as a table"), attemptsTable(run)),
      stepsTables(run));
    drawEvents(eventList, events);
  };
  draw();

  let lastSeq = 0;
  if (TERMINAL.has(run.status)) {
    const page = await call(`${path}/events`, { signal });
    events.push(...page.data);
    drawEvents(eventList, events);
    return;
  }
  // live: every event redraws the run; a ticker keeps running bars growing
  let dirty = false;
  const ticker = (async () => {
    while (!signal.aborted && !TERMINAL.has(run.status)) {
      await sleep(1000, signal);
      if (!dirty && !signal.aborted) draw();
    }
  })();
  // one read at a time, in order: a burst of events gives at most one more read
  let inflight = null;
  let again = false;
  const refresh = () => {
    if (inflight) {
      again = true;
      return inflight;
    }
    inflight = (async () => {
      dirty = true;
      try {
        do {
          again = false;
          const before = run.status;
          run = (await call(path, { signal })).data;
          draw();
          if (run.status !== before) announce(`Run ${runId} is now ${run.status}.`);
        } while (again && !signal.aborted);
      } finally {
        dirty = false;
        inflight = null;
      }
    })();
    return inflight;
  };
  await followEvents(runId, lastSeq, (item) => {
    lastSeq = item.seq;
    events.push(item);
    refresh().catch(() => {});
  }, signal);
  // the read model trails the log a little: wait for the terminal status
  for (let i = 0; i < 50 && !signal.aborted && !TERMINAL.has(run.status); i += 1) {
    await sleep(200, signal);
    await refresh();
  }
  await ticker;
}

function drawHead(section, run) {
  const p = run.progress || {};
  const total = p.totalSteps || 0;
  const done = p.completedSteps || 0;
  const field = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  replace(section,
    h("p", { class: "run-status" }, badge(run.status), " ",
      h("span", {}, `${run.type} on ${run.resourceType} ${run.resourceId || ""}`)),
    h("div", { class: "progress-line" },
      h("label", { for: "run-progress" }, `Steps ${done} of ${total}` + (p.currentStep ? ` · current: ${p.currentStep}` : "")),
      h("progress", { id: "run-progress", max: total || 1, value: done })),
    h("dl", { class: "facts" },
      field("Triggered by", run.triggeredBy),
      field("Created", formatTime(run.createdAt)),
      field("Started", formatTime(run.startedAt)),
      field("Completed", formatTime(run.completedAt)),
      field("Duration", formatDuration(run.durationMs)),
      field("Estimate", formatDuration(run.estimatedDuration)),
      run.waitingFor ? field("Waiting for", runLink(run.waitingFor)) : null,
      run.retryOf ? field("Retry of", runLink(run.retryOf)) : null,
      run.fromStep ? field("From step", run.fromStep) : null,
      (run.retries || []).length ? field("Retried as", (run.retries || []).map((r) => [runLink(r), " "])) : null));
}

function drawActions(section, run) {
  const me = abilities(run.projectId);
  const message = h("div", { "aria-live": "polite", id: "action-result" });
  const parts = [];
  if (me.act && RETRYABLE.has(run.status)) {
    const select = h("select", { id: "from-step", name: "fromStep" },
      h("option", { value: "" }, "the first step (run everything again)"),
      (run.steps || []).map((step) => h("option", { value: step.name }, step.name)));
    const form = h("form", { class: "inline-form", "aria-label": "Retry this run" },
      h("label", { for: "from-step" }, "Retry from"), select,
      h("button", { type: "submit", class: "primary" }, "Retry run"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = select.value ? { fromStep: select.value } : {};
      await act(message, async () => {
        const reply = await call(`/v1/workflows/runs/${encodeURIComponent(run.id)}/retry`, { method: "POST", body });
        announce(`Retry started: run ${reply.meta.workflowId}.`);
        window.location.hash = `#/runs/${encodeURIComponent(reply.meta.workflowId)}`;
      });
    });
    parts.push(form);
  }
  if (me.act && CANCELLABLE.has(run.status) && !run.cancelRequested) {
    parts.push(h("button", {
      type: "button", class: "danger", id: "cancel-run",
      onclick: () => confirmCancel(run, false, message),
    }, "Cancel run"));
    if (me.terminate) {
      parts.push(h("button", {
        type: "button", class: "danger", id: "terminate-run",
        onclick: () => confirmCancel(run, true, message),
      }, "Terminate (no compensation)"));
    }
  }
  if (run.cancelRequested && !TERMINAL.has(run.status)) {
    parts.push(h("p", {}, "Cancellation requested; the in-flight step is stopping and compensation will run."));
  }
  if (!parts.length) {
    const why = me.act ? "No action applies to a run that is " + run.status + "." :
      "Your role can only read this run.";
    parts.push(h("p", { class: "help" }, why));
  }
  // keep the user's place: only redraw when what is offered changes
  const key = JSON.stringify([run.status, run.cancelRequested, me.act, me.terminate, (run.steps || []).length]);
  if (section.dataset.key === key) return;
  section.dataset.key = key;
  replace(section, h("h2", { class: "visually-hidden" }, "Actions"), parts, message);
}

async function act(message, action) {
  replace(message);
  try {
    await action();
  } catch (err) {
    const fields = err.details && err.details.fields;
    replace(message, h("div", { class: "error", role: "alert" },
      h("strong", {}, err.code || "ERROR"), `: ${err.message}`,
      fields ? h("ul", {}, Object.entries(fields).map(([k, v]) => h("li", {}, `${k}: ${v}`))) : null));
  }
}

function confirmCancel(run, terminate, message) {
  const reason = h("input", { type: "text", id: "cancel-reason", name: "reason", maxlength: 1024 });
  const verb = terminate ? "Terminate" : "Cancel";
  const dialog = h("dialog", { "aria-labelledby": "cancel-title", class: "confirm" },
    h("form", { method: "dialog" },
      h("h2", { id: "cancel-title" }, `${verb} run ${run.id}?`),
      h("p", {}, terminate
        ? "The run stops at once; nothing it did is undone."
        : "The in-flight step is asked to stop, then completed steps are compensated."),
      h("label", { for: "cancel-reason" }, "Reason (optional)"), reason,
      h("div", { class: "actions" },
        h("button", { type: "submit", value: "confirm", class: "danger", id: "confirm-cancel" }, `${verb} run`),
        h("button", { type: "submit", value: "keep", id: "keep-run" }, "Keep it running"))));
  dialog.addEventListener("close", async () => {
    dialog.remove();
    if (dialog.returnValue !== "confirm") return;
    const body = { terminate };
    if (reason.value.trim()) body.reason = reason.value.trim();
    await act(message, async () => {
      await call(`/v1/workflows/runs/${encodeURIComponent(run.id)}/cancel`, { method: "POST", body });
      announce(`${verb} requested for run ${run.id}.`);
      replace(message, h("p", {}, `${verb} requested.`));
    });
  });
  document.body.append(dialog);
  dialog.showModal();
  reason.focus();
}

function drawError(section, run) {
  const error = run.error;
  if (!error) {
    replace(section);
    return;
  }
  replace(section,
    h("h2", {}, "Error"),
    h("div", { class: "error-details" },
      h("dl", { class: "facts" },
        h("dt", {}, "Code"), h("dd", {}, h("code", {}, error.code)),
        h("dt", {}, "Step"), h("dd", {}, error.step || "–"),
        h("dt", {}, "Message"), h("dd", {}, error.message)),
      error.details ? h("pre", {}, JSON.stringify(error.details, null, 2)) : null));
}

function stepsTables(run) {
  const columns = [
    { label: "Step", cell: (s) => s.name },
    { label: "Status", cell: (s) => badge(s.status) },
    { label: "Attempts", cell: (s) => (s.attempts || []).length },
    { label: "Duration", cell: (s) => formatDuration(s.durationMs) },
    { label: "Output", cell: (s) => (s.output && Object.keys(s.output).length ? h("code", {}, JSON.stringify(s.output)) : "") },
  ];
  return [
    table("Steps", columns, run.steps || []),
    (run.compensation || []).length ? table("Compensation", columns, run.compensation) : null,
  ];
}

function drawEvents(section, events) {
  replace(section,
    h("h2", { id: "events-heading" }, "Event history"),
    table(`${events.length} events, oldest first`, [
      { label: "#", cell: (e) => e.seq },
      { label: "Time", cell: (e) => formatTime(e.event.time) },
      { label: "Event", cell: (e) => h("code", {}, e.event.event) },
      { label: "Detail", cell: (e) => describe(e.event) },
    ], events, { empty: "No events yet." }));
}

/** One line about an event. */
export function describe(e) {
  const where = e.step ? `${e.phase === "compensation" ? "undo " : ""}${e.step} (attempt ${e.attempt})` : "";
  const error = e.error || {};
  switch (e.event) {
    case "run_created": return `${e.workflowType} by ${e.triggeredBy}` + (e.retryOf ? `, retry of ${e.retryOf}` : "");
    case "run_queued": return `queued behind ${e.waitingFor}`;
    case "step_scheduled": return `scheduled ${where} on ${e.executor}/${e.site}`;
    case "step_started": return `started ${where}`;
    case "step_succeeded": return `succeeded ${where}`;
    case "step_failed": return `failed ${where}: ${error.code}: ${error.message}${error.retryable ? " (will retry)" : ""}`;
    case "step_timed_out": return `timed out ${where} (${e.timeout})`;
    case "step_skipped": return `skipped ${e.step}, output kept from ${e.fromRun}`;
    case "compensation_started": return `compensating (${e.cause}): ${(e.steps || []).join(", ")}`;
    case "run_cancel_requested": return `cancel requested by ${e.requestedBy}${e.terminate ? " (terminate)" : ""}${e.reason ? `: ${e.reason}` : ""}`;
    case "run_failed": return `failed: ${error.code}: ${error.message}`;
    case "run_cancelled": return `cancelled${e.terminated ? " (terminated)" : ""}`;
    default: return e.event.replace(/^run_/, "").replace(/_/g, " ");
  }
}
