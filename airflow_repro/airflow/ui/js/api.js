// The page's calls: the /repro REST API and Airflow's own, with the UI's session cookie (the iframe is
// same-origin). Every URL is relative to this page (<base>/repro/ui/run.html), so an [api] base_url
// sub-path holds.

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

const REPRO = "../api/v1/dags";
const AIRFLOW = "../../api/v2/dags";

const enc = encodeURIComponent;

export function runUrl(dagId, runId, tail) {
  return `${REPRO}/${enc(dagId)}/runs/${enc(runId)}/${tail}`;
}

export function airflowRunUrl(dagId, runId, tail = "") {
  return `${AIRFLOW}/${enc(dagId)}/dagRuns/${enc(runId)}${tail}`;
}

export function contextUrl(dagId) {
  return `context/dags/${enc(dagId)}`;
}

export async function getJson(url) {
  return request(url, { method: "GET" });
}

// State-changing calls are same-origin JSON requests: the API refuses cross-site cookie POSTs.
export async function postJson(url, body) {
  return request(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function request(url, init) {
  let response;
  try {
    response = await fetch(url, { ...init, credentials: "same-origin", headers: { Accept: "application/json", ...init.headers } });
  } catch (error) {
    throw new ApiError(0, `the Airflow API server cannot be reached (${error.message}); try again`, null);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, describe(response, body), body);
  return body;
}

// The API's own message: {"detail": "..."} or FastAPI's list of {loc, msg}.
export function describe(response, body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${e.msg}`).join("; ");
  }
  return `${response.status} ${response.statusText || "error"}`;
}
