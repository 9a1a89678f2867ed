// "Replay run": choose the mode and a task to start from, read the dry run's drift report, confirm in
// the page (window.confirm does nothing in the sandboxed frame), trigger. The API decides and refuses
// on its own; the buttons only follow what the user may do.

import { ApiError, getJson, postJson, runUrl } from "./api.js";
import { badge, h, message, replace, short } from "./dom.js";
import { logIn } from "./host.js";

export function replayPanel({ dagId, runId, taskIds, canReplay, onTriggered }) {
  const mode = h(
    "select",
    { testid: "mode", "aria-label": "Replay mode" },
    h("option", { value: "pinned" }, "pinned: restore the recorded code and environment"),
    h("option", { value: "latest-code" }, "latest-code: current code; data, params and seeds pinned"),
  );
  const fromTask = h(
    "select",
    { testid: "from-task", "aria-label": "Start from task" },
    h("option", { value: "" }, "every task"),
    taskIds.map((id) => h("option", { value: id }, `${id} and downstream`)),
  );
  const planBox = h("div", { testid: "plan" });
  const confirmBox = h("div", { class: "confirm", testid: "confirm-box" });
  const outcome = h("div", { testid: "replay-outcome" });
  const button = h("button", { class: "primary", testid: "replay-button", disabled: true }, "Replay run…");
  let plan = null;
  let generation = 0;

  async function refreshPlan() {
    const mine = ++generation;
    plan = null;
    button.disabled = true;
    replace(confirmBox);
    replace(planBox, h("p", { class: "muted", testid: "plan-loading" }, "Planning the replay (dry run)…"));
    try {
      const answer = await loadPlan(dagId, runId, mode.value, fromTask.value, canReplay);
      if (mine !== generation) return; // the user changed the choice meanwhile
      plan = answer;
      replace(planBox, planView(answer, taskIds));
      button.disabled = !canReplay || answer.blocked;
    } catch (error) {
      if (mine !== generation) return;
      replace(planBox, errorView(error, "The replay cannot be planned"));
    }
  }

  button.addEventListener("click", () => {
    if (!plan) return;
    button.disabled = true;
    replace(confirmBox, confirmView(plan, fromTask.value, trigger, cancel));
  });

  function cancel() {
    replace(confirmBox);
    button.disabled = !canReplay || !plan || plan.blocked;
  }

  async function trigger(confirmButtons) {
    for (const b of confirmButtons) b.disabled = true;
    const body = { mode: mode.value };
    if (fromTask.value) body.from_task = fromTask.value;
    try {
      const answer = await postJson(runUrl(dagId, runId, "replay"), body);
      replace(confirmBox);
      replace(outcome, message("ok", "triggered", "Triggered the replay ", h("code", {}, answer.replay_run_id), ". It is followed below."));
      onTriggered(answer.replay_run_id);
      refreshPlan();
    } catch (error) {
      replace(confirmBox);
      replace(outcome, errorView(error, "Nothing was triggered"));
      button.disabled = !canReplay || !plan || plan.blocked;
    }
  }

  mode.addEventListener("change", refreshPlan);
  fromTask.addEventListener("change", refreshPlan);
  refreshPlan();

  return h(
    "section",
    { testid: "replay-panel" },
    h("h2", {}, "Replay run"),
    h(
      "div",
      { class: "controls" },
      h("label", {}, "Mode ", mode),
      h("label", {}, "Start from ", fromTask),
      button,
    ),
    canReplay
      ? null
      : h("p", { class: "muted", testid: "replay-denied" }, `You can read this run's pins and drift, but replaying needs permission to create runs of ${dagId}.`),
    confirmBox,
    outcome,
    planBox,
  );
}

// The read-only plan (a viewer may read it); where the server has no plan endpoint, the dry run.
async function loadPlan(dagId, runId, mode, fromTask, canReplay) {
  const query = new URLSearchParams({ mode });
  if (fromTask) query.set("from_task", fromTask);
  try {
    return await getJson(runUrl(dagId, runId, `plan?${query}`));
  } catch (error) {
    const noSuchRoute = error instanceof ApiError && (error.status === 405 || (error.status === 404 && error.message === "Not Found"));
    if (!noSuchRoute || !canReplay) throw error;
    const body = { mode, dry_run: true };
    if (fromTask) body.from_task = fromTask;
    return postJson(runUrl(dagId, runId, "replay"), body);
  }
}

function confirmView(plan, fromTask, onConfirm, onCancel) {
  const yes = h("button", { class: "primary", testid: "confirm-replay" }, "Confirm replay");
  const no = h("button", { testid: "cancel-replay" }, "Cancel");
  yes.addEventListener("click", () => onConfirm([yes, no]));
  no.addEventListener("click", onCancel);
  const scope = fromTask ? ` from task ${fromTask} on (the tasks upstream of it are reused, not re-run)` : "";
  return h(
    "div",
    { class: "panel", role: "dialog", "aria-label": "Confirm the replay" },
    h("p", {}, `Start a new run of ${plan.dag_id} that replays ${plan.original_run_id} in mode ${plan.mode}${scope}?`),
    yes,
    no,
  );
}

export function planView(plan, taskOrder = []) {
  const drift = plan.drift || [];
  const blocking = drift.filter((d) => d.blocking);
  let summary;
  if (plan.blocked) {
    summary = message("bad", "plan-summary", `A ${plan.mode} replay is refused: ${blocking.length} pin(s) no longer hold.`, plan.mode === "pinned" && blocking.every((d) => isCode(d.kind)) ? " The latest-code mode can replay it with the current code and environment." : "");
  } else if (drift.length) {
    summary = message("warn", "plan-summary", `${drift.length} change(s) since the run was recorded; the replay handles them as listed below.`);
  } else {
    summary = message("ok", "plan-summary", "Every pin holds: nothing changed since the run was recorded.");
  }
  return h(
    "div",
    { class: "panel", testid: "drift-report", "data-mode": plan.mode, "data-blocked": String(!!plan.blocked) },
    h("h3", {}, `Dry run (${plan.mode}${plan.from_task ? `, from ${plan.from_task}` : ""})`),
    summary,
    scopeView(plan, taskOrder),
    drift.length ? driftTable(drift, plan.mode) : null,
    notesView(plan),
  );
}

// Drift that a latest-code replay accepts (airflow_repro.core.replay.CODE_DRIFT).
const CODE_DRIFT = new Set([
  "task_added", "task_removed", "code_changed", "bundle_version_changed", "environment_changed", "secret_changed",
  "map_count_changed",
]);

function isCode(kind) {
  return CODE_DRIFT.has(kind);
}

function scopeView(plan, taskOrder) {
  const rank = (id) => (taskOrder.includes(id) ? taskOrder.indexOf(id) : taskOrder.length);
  const replayed = plan.replayed_tasks && [...plan.replayed_tasks].sort((a, b) => rank(a) - rank(b));
  const reused = plan.reused_tasks;
  if (!replayed && !reused) return null;
  return h(
    "ul",
    { class: "plain", testid: "plan-scope" },
    replayed ? h("li", { testid: "replayed-tasks" }, "Runs again: ", replayed.length ? replayed.join(", ") : "nothing") : null,
    reused && reused.length
      ? h("li", { testid: "reused-tasks" }, "Reuses the recorded outputs of: ", reused.map((t, i) => [i ? ", " : "", t.task_id, t.map_index >= 0 ? `[${t.map_index}]` : "", " at ", h("code", { title: t.commit_id }, short(t.commit_id))]))
      : null,
  );
}

function notesView(plan) {
  const notes = [].concat(plan.notes || []).filter(Boolean);
  return notes.length ? h("ul", { testid: "plan-notes" }, notes.map((n) => h("li", {}, typeof n === "string" ? n : n.detail || JSON.stringify(n)))) : null;
}

function driftTable(drift, mode) {
  return h(
    "table",
    { testid: "drift-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "Task"), h("th", {}, "What changed"), h("th", {}, "Replay"))),
    h("tbody", {}, drift.map((item) => driftRow(item, mode))),
  );
}

// What the replay does with a drift item: refuse it, leave it (a reused task does not run), restore
// the recorded code or environment (pinned mode), or run with what is current (latest-code).
function driftRow(item, mode) {
  let fate = "current used";
  if (item.blocking) fate = "refused";
  else if (item.reused) fate = "reused";
  else if (item.restorable && mode === "pinned") fate = "restored";
  return h(
    "tr",
    { testid: "drift-item", "data-kind": item.kind, "data-blocking": String(item.blocking) },
    h("td", {}, h("code", {}, item.task_id)),
    h(
      "td",
      {},
      h("div", {}, h("code", { class: "muted" }, item.kind), " ", item.detail),
      item.recorded || item.current ? h("div", { class: "muted" }, `recorded ${item.recorded ?? "—"} → now ${item.current ?? "—"}`) : null,
      item.changes && item.changes.length ? h("ul", {}, item.changes.map((c) => h("li", {}, c))) : null,
      item.diff ? h("details", {}, h("summary", {}, "code diff"), h("pre", { class: "diff mono" }, item.diff)) : null,
    ),
    h("td", {}, badge(fate, "drift-fate"), item.restore_note && (fate === "restored" || fate === "refused") ? h("div", { class: "muted" }, item.restore_note) : null),
  );
}

export function errorView(error, what) {
  const detail = error instanceof ApiError ? error.message : String(error);
  const body = error instanceof ApiError ? error.body : null;
  return h(
    "div",
    { testid: "api-error" },
    message("bad", "api-error-message", `${what}: `, detail),
    error instanceof ApiError && error.status === 401 ? h("button", { testid: "log-in", onclick: logIn }, "Log in again") : null,
    body && Array.isArray(body.drift) && body.drift.length ? driftTable(body.drift, body.mode) : null,
  );
}
