// The Reproducibility tab of a DAG run: what was recorded per task, the replays of the run and their
// verdicts, and "Replay run". Opened by Airflow as run.html?dag_id=...&run_id=... in a sandboxed iframe.

import { ApiError, airflowRunUrl, contextUrl, getJson, postJson, runUrl } from "./api.js";
import { badge, bytes, digest, h, message, replace, short } from "./dom.js";
import { framePageUrl, logIn, openExternal, openRun } from "./host.js";
import { errorView, replayPanel } from "./replay.js";
import { followHostTheme } from "./theme.js";
import { reportView } from "./verdict.js";

const FINISHED = new Set(["success", "failed"]);
const POLL_MS = 2000;
const POLL_MAX_MS = 30000;

// Calls step until it answers true, waiting longer each time (a tab left open polls slowly); a step
// that fails unexpectedly is tried again.
function poll(step, delay = POLL_MS) {
  step().catch(() => false).then((done) => {
    if (!done) setTimeout(() => poll(step, Math.min(delay * 1.5, POLL_MAX_MS)), delay);
  });
}

const app = document.getElementById("app");
const query = new URLSearchParams(window.location.search);
const dagId = query.get("dag_id");
const runId = query.get("run_id");

followHostTheme();
main().catch((error) => replace(app, errorView(error, "The Reproducibility tab failed")));

async function main() {
  if (!dagId || !runId) {
    replace(app, message("bad", "bad-page", "This page needs ?dag_id=...&run_id=...: open it from a DAG run's Reproducibility tab."));
    return;
  }
  const [recorded, context] = await Promise.allSettled([getJson(runUrl(dagId, runId, "manifest")), getJson(contextUrl(dagId))]);
  if (recorded.status === "rejected") return replace(app, notShown(recorded.reason));
  const ctx = context.status === "fulfilled" ? context.value : { can_replay: false, links: {} };
  const doc = recorded.value;
  const states = await taskStates();
  const replayOf = replayedRun(doc);
  const replaysBox = h("section", { testid: "replays" });
  replace(
    app,
    header(doc),
    replayOf ? replaySummary(replayOf, ctx) : null,
    tasksView(doc, states, ctx.links || {}),
    replayPanel({
      dagId,
      runId,
      taskIds: [...new Set(doc.tasks.map((t) => t.task_id))],
      canReplay: !!ctx.can_replay,
      onTriggered: () => followReplays(replaysBox, ctx),
    }),
    replaysBox,
  );
  followReplays(replaysBox, ctx);
}

// -- the states a run cannot be shown in ----------------------------------------------------------------
function notShown(error) {
  if (error instanceof ApiError && error.status === 401) {
    return message("warn", "session-expired", "Your Airflow session has expired. ", h("button", { testid: "log-in", onclick: logIn }, "Log in again"));
  }
  if (error instanceof ApiError && error.status === 403) {
    return message("bad", "forbidden", `You may not read the runs of ${dagId}; ask an Airflow admin for access.`);
  }
  if (error instanceof ApiError && error.status === 404 && error.message.startsWith("no recorded run")) {
    return h(
      "section",
      { testid: "unrecorded" },
      h("h2", {}, "This run was not recorded"),
      h("p", {}, `airflow-repro recorded nothing for run ${runId} of ${dagId}: it has no @repro_task tasks, or none of them has run yet. There is nothing to show or replay.`),
      h("p", { class: "muted" }, error.message),
    );
  }
  return errorView(error, "This run cannot be shown");
}

// -- the recorded run ------------------------------------------------------------------------------------
function header(doc) {
  return h(
    "section",
    { testid: "run-header" },
    h("h2", {}, "Recorded run ", h("code", {}, doc.run_id)),
    h(
      "p",
      { class: "muted" },
      `${doc.tasks.length} task(s) recorded in repository ${doc.repository} at `,
      h("code", { title: doc.ref }, doc.ref),
      " (head commit ",
      digest(doc.head_commit),
      ") ",
      doc.closed ? badge("closed", "run-closed") : badge("running", "run-open"),
    ),
  );
}

async function taskStates() {
  try {
    const answer = await getJson(airflowRunUrl(dagId, runId, "/taskInstances?limit=1000"));
    return new Map(answer.task_instances.map((ti) => [key(ti.task_id, ti.map_index), ti.state || "none"]));
  } catch {
    return new Map(); // Airflow's own API refused: the states are shown as unknown
  }
}

const key = (taskId, mapIndex) => `${taskId}[${mapIndex ?? -1}]`;

function tasksView(doc, states, links) {
  const recorded = new Set(doc.tasks.map((t) => key(t.task_id, t.map_index)));
  const unrecorded = [...states.entries()].filter(([k]) => !recorded.has(k));
  return h(
    "section",
    {},
    h("h2", {}, "Pins per task"),
    h(
      "table",
      { testid: "tasks" },
      h(
        "thead",
        {},
        h("tr", {}, ["Task", "Status", "Commit", "MLflow run", "Environment", "Seed", "Inputs (at commit)", "Outputs"].map((t) => h("th", {}, t))),
      ),
      h(
        "tbody",
        {},
        doc.tasks.map((t) => taskRow(t, states.get(key(t.task_id, t.map_index)), doc, links)),
        unrecorded.map(([k, state]) => h("tr", { testid: "unrecorded-task" }, h("td", {}, h("code", {}, k.replace("[-1]", ""))), h("td", {}, badge(state)), h("td", { colspan: 6, class: "muted" }, "not recorded"))),
      ),
    ),
  );
}

function taskRow(task, state, doc, links) {
  const m = task.manifest;
  const name = task.map_index >= 0 ? `${task.task_id}[${task.map_index}]` : task.task_id;
  return h(
    "tr",
    { testid: "task-row", "data-task": name },
    h("td", {}, h("code", {}, name), m.replay ? replayNote(m.replay) : null),
    h("td", {}, badge(state || "unknown", "task-state")),
    h("td", { testid: "commit" }, commitLink(doc.repository, task.commit_id, links)),
    h("td", { testid: "mlflow" }, mlflowLink(m.tracking || {}, links)),
    h("td", { testid: "environment" }, environment(m.environment)),
    h("td", { testid: "seed" }, m.parameters && m.parameters.seed !== null && m.parameters.seed !== undefined ? h("code", {}, String(m.parameters.seed)) : h("span", { class: "muted" }, "none")),
    h("td", { testid: "inputs" }, list(m.inputs, inputItem)),
    h("td", { testid: "outputs" }, list(m.outputs, (o) => h("span", { title: o.content_hash }, h("code", {}, o.path), ` · ${bytes(o.size)}`))),
  );
}

function replayNote(replay) {
  const parts = [`replay (${replay.mode})`];
  if (replay.code) parts.push(`code ${replay.code}`);
  if (replay.environment) parts.push(`environment ${replay.environment}`);
  const reused = replay.reused_from;
  return h(
    "div",
    { class: "muted" },
    parts.join(", "),
    reused ? [" ", badge("reused", "reused"), ` from ${reused.run_id || ""} at `, h("code", {}, short(reused.commit_id))] : null,
  );
}

function list(items, render) {
  if (!items || !items.length) return h("span", { class: "muted" }, "none");
  return h("ul", { class: "plain" }, items.map((item) => h("li", {}, render(item))));
}

function inputItem(input) {
  const where = `${input.repository}@${input.ref}:${input.path} resolved to commit ${input.commit_id}`;
  return h("span", { title: where }, h("code", {}, input.name || input.path), " at ", h("code", {}, short(input.commit_id)), ` · ${bytes(input.size)}`);
}

function environment(env) {
  if (!env) return h("span", { class: "muted" }, "none");
  const detail = env.kind === "image" ? env.image : env.kind === "lockfile" ? env.lockfile : `${env.distributions ?? "?"} distributions`;
  return h("div", {}, h("span", {}, `${env.kind} `), digest(env.digest, "environment-digest"), h("div", { class: "muted" }, [detail, env.python].filter(Boolean).join(" · ")));
}

function external(url, text, testid) {
  return h("a", { href: url, rel: "noopener", testid, onclick: (event) => openExternal(event, url) }, text);
}

function commitLink(repository, commitId, links) {
  const text = h("code", { title: commitId }, short(commitId));
  if (!links.lakefs_ui_url) return text;
  return external(`${links.lakefs_ui_url}/repositories/${encodeURIComponent(repository)}/commits/${encodeURIComponent(commitId)}`, text, "commit-link");
}

function mlflowLink(tracking, links) {
  if (!tracking.mlflow_run_id) return h("span", { class: "muted" }, "none");
  const text = h("code", { title: tracking.mlflow_run_id }, short(tracking.mlflow_run_id));
  if (!links.mlflow_ui_url || !tracking.mlflow_experiment_id) return text;
  const url = `${links.mlflow_ui_url}/#/experiments/${encodeURIComponent(tracking.mlflow_experiment_id)}/runs/${encodeURIComponent(tracking.mlflow_run_id)}`;
  return external(url, text, "mlflow-link");
}

// -- a replay: which run it replays, in which mode, its verdict ------------------------------------------
function replayedRun(doc) {
  const info = doc.tasks.map((t) => t.manifest.replay).find(Boolean);
  if (info) return info.of_run_id;
  const marker = runId.lastIndexOf("__of__");
  return runId.startsWith("replay__") && marker > 0 ? runId.slice(marker + 6) : null;
}

function replaySummary(originalRunId, ctx) {
  const box = h("div", { testid: "this-replay-status" });
  const section = h(
    "section",
    { class: "panel", testid: "replay-of" },
    h("h2", {}, "This run is a replay"),
    h("p", {}, "It replays ", runButton(originalRunId, "original-link"), "."),
    box,
  );
  poll(async () => {
    let entry = null;
    try {
      const answer = await getJson(runUrl(dagId, originalRunId, "replays"));
      entry = answer.replays.find((r) => r.replay_run_id === runId) || null;
    } catch (error) {
      replace(box, errorView(error, "Its replay record cannot be read"));
      return true;
    }
    return replayDetails(box, entry || { replay_run_id: runId, state: null, mode: "?" }, ctx);
  });
  return section;
}

function runButton(otherRunId, testid) {
  return h("a", { href: framePageUrl(dagId, otherRunId), testid, onclick: (event) => { event.preventDefault(); openRun(dagId, otherRunId); } }, h("code", {}, otherRunId));
}

// -- the replays of this run, followed until they finish --------------------------------------------------
function followReplays(box, ctx) {
  box.dataset.following = String(Number(box.dataset.following || 0) + 1);
  const mine = box.dataset.following;
  const rows = new Map();
  poll(async () => {
    if (box.dataset.following !== mine) return true; // a newer follower took over
    let answer;
    try {
      answer = await getJson(runUrl(dagId, runId, "replays"));
    } catch (error) {
      replace(box, h("h2", {}, "Replays"), errorView(error, "The replays cannot be listed"));
      return true;
    }
    if (!rows.size) replace(box, h("h2", {}, "Replays of this run"));
    if (!answer.replays.length) {
      replace(box, h("h2", {}, "Replays of this run"), h("p", { class: "muted", testid: "no-replays" }, "Not replayed yet."));
      return true;
    }
    box.querySelector('[data-testid="no-replays"]')?.remove();
    let pending = false;
    const initial = rows.size === 0;
    for (const entry of [...answer.replays].reverse()) {
      let row = rows.get(entry.replay_run_id);
      if (!row) {
        row = { el: h("div", { class: "panel", testid: "replay", "data-run": entry.replay_run_id }), done: false };
        rows.set(entry.replay_run_id, row);
        // newest first: the first listing appends newest to oldest, a later new replay goes on top
        if (initial || !box.children[1]) box.append(row.el);
        else box.insertBefore(row.el, box.children[1]);
      }
      if (row.done) continue;
      row.done = await replayDetails(row.el, entry, ctx, true);
      pending ||= !row.done;
    }
    return !pending;
  });
}

// Renders a replay's state and verdict into el; true once nothing more will change without the user.
async function replayDetails(el, entry, ctx, withLink = false) {
  const finished = FINISHED.has(entry.state);
  let report = null;
  let missing = null;
  if (finished) {
    try {
      report = await getJson(runUrl(dagId, entry.replay_run_id, "verification"));
    } catch (error) {
      missing = error;
    }
  }
  const head = h(
    "p",
    {},
    withLink ? runButton(entry.replay_run_id, "replay-link") : h("code", {}, entry.replay_run_id),
    ` · mode ${entry.mode}`,
    entry.created_at ? ` · created ${entry.created_at}` : "",
    " · ",
    badge(entry.state || "unknown", "replay-state"),
    entry.drift_count ? ` · ${entry.drift_count} drift item(s)` : "",
  );
  if (report) {
    replace(el, head, reportView(report));
    return true;
  }
  if (!finished) {
    const waiting = entry.state === null ? "Airflow has no run of this id (not created yet, or deleted); this page keeps looking." : "Not finished: this page follows it.";
    replace(el, head, h("p", { class: "muted", testid: "replay-waiting" }, waiting));
    return false;
  }
  const unverified = missing instanceof ApiError && missing.status === 404;
  const verify = h("button", { class: "primary", testid: "verify-button", disabled: !ctx.can_replay || !unverified }, "Verify");
  const result = h("div", {});
  verify.addEventListener("click", async () => {
    verify.disabled = true;
    replace(result, h("p", { class: "muted" }, "Comparing the replay with the original…"));
    try {
      replace(el, head, reportView(await postJson(runUrl(dagId, entry.replay_run_id, "verification"), {})));
    } catch (error) {
      replace(result, errorView(error, "Not verified"));
      verify.disabled = false;
    }
  });
  replace(el, head, unverified ? h("p", {}, badge("not verified", "verdict-missing"), " ", verify) : errorView(missing, "The verification cannot be read"), result);
  return true;
}
