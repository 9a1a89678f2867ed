// A verification report (GET/POST .../verification) as the page shows it: the run's verdict, then per
// task its result and what differs (objects with their comparison, metrics, likely causes).

import { badge, bytes, h, short } from "./dom.js";

const MAX_OBJECTS = 20;

export function reportView(report) {
  return h(
    "div",
    { class: "report", testid: "report" },
    h(
      "p",
      {},
      "Verdict: ",
      badge(report.verdict, "verdict"),
      h("span", { class: "muted" }, ` verified ${report.verified_at || ""}`, toleranceText(report.tolerance)),
    ),
    h(
      "table",
      { testid: "report-tasks" },
      h("thead", {}, h("tr", {}, h("th", {}, "Task"), h("th", {}, "Result"), h("th", {}, "What differs"))),
      h("tbody", {}, (report.tasks || []).map(taskRow)),
    ),
  );
}

function toleranceText(tolerance) {
  if (!tolerance || (!tolerance.abs && !tolerance.rel)) return "";
  return ` (metric tolerance abs ${tolerance.abs}, rel ${tolerance.rel})`;
}

function taskRow(task) {
  const name = task.map_index >= 0 ? `${task.task_id}[${task.map_index}]` : task.task_id;
  return h(
    "tr",
    { testid: "report-task", "data-task": name, "data-status": task.status },
    h("td", {}, h("code", {}, name)),
    h("td", {}, badge(task.status, "task-status"), task.reused ? [" ", badge("reused", "task-reused")] : null),
    h("td", {}, differences(task)),
  );
}

function differences(task) {
  const items = [];
  if (task.reused) items.push(h("li", {}, "not re-run: its recorded outputs were reused"));
  const objects = task.objects || [];
  for (const object of objects.slice(0, MAX_OBJECTS)) items.push(objectItem(object));
  if (objects.length > MAX_OBJECTS) items.push(h("li", { class: "muted" }, `and ${objects.length - MAX_OBJECTS} more objects`));
  for (const metric of task.metrics || []) {
    items.push(h("li", { testid: "metric-diff" }, "metric ", h("code", {}, metric.name), `: ${metric.original} → ${metric.replay}`));
  }
  for (const cause of task.likely_causes || []) {
    items.push(h("li", { testid: "likely-cause" }, "likely cause: ", cause.detail || cause.kind));
  }
  if (!items.length) {
    const compared = task.objects_compared ? `${task.objects_compared} object(s) compared` : "nothing to compare";
    items.push(h("li", { class: "muted" }, task.status === "identical" ? `same content (${compared})` : compared));
  }
  return h("ul", { class: "plain" }, items);
}

function objectItem(object) {
  const comparison = object.comparison;
  const sizes =
    object.original && object.replay ? ` (${bytes(object.original.size)} → ${bytes(object.replay.size)})` : "";
  return h(
    "li",
    { testid: "object-diff" },
    h("code", {}, object.path),
    `: ${object.change.replaceAll("_", " ")}${sizes}`,
    comparison && comparison.summary ? h("div", { class: "muted", testid: "comparison" }, comparison.summary) : null,
    object.detail ? h("div", { class: "muted" }, object.detail) : null,
    object.original && !comparison ? h("div", { class: "muted" }, `hash ${short(object.original.content_hash)} → ${short(object.replay && object.replay.content_hash)}`) : null,
  );
}
