// Everything the page does to the Airflow UI around it, in one place. The tab's iframe is sandboxed
// ("allow-scripts allow-same-origin allow-forms allow-downloads"): no popups, no top navigation. These
// escapes work through the same-origin parent; if Airflow ever tightens the sandbox they throw, and the
// page falls back to links inside its own frame.

const enc = encodeURIComponent;

export const UI_ROUTE = "airflow-repro";

function host() {
  try {
    return window.parent !== window && window.parent.document ? window.parent : null;
  } catch {
    return null; // cross-origin or sandboxed without allow-same-origin
  }
}

export function hostDocument() {
  const parent = host();
  return parent ? parent.document : null;
}

// The Airflow UI's address of a page (relative to its <base href>, so base_url sub-paths hold).
export function uiUrl(path) {
  const parent = host();
  return new URL(path, parent ? parent.document.baseURI : new URL("../../", document.baseURI)).href;
}

export function runPagePath(dagId, runId) {
  return `dags/${enc(dagId)}/runs/${enc(runId)}/plugin/${UI_ROUTE}`;
}

// This page for another run, inside the frame: the fallback of every navigation.
export function framePageUrl(dagId, runId) {
  return `run.html?dag_id=${enc(dagId)}&run_id=${enc(runId)}`;
}

// Show another run's Reproducibility tab: the UI navigates (no reload); else this frame does.
export function openRun(dagId, runId) {
  const parent = host();
  const url = uiUrl(runPagePath(dagId, runId));
  try {
    if (!parent) throw new Error("not inside the Airflow UI");
    parent.history.pushState({}, "", url);
    parent.dispatchEvent(new parent.PopStateEvent("popstate", { state: {} }));
    return "host";
  } catch {
    window.location.assign(framePageUrl(dagId, runId));
    return "frame";
  }
}

// An outside address (lakeFS, MLflow) in a new tab: <a target=_blank> is blocked in the sandbox.
export function openExternal(event, url) {
  const parent = host();
  if (!parent) return; // the link's own default applies
  try {
    parent.open(url, "_blank", "noopener");
    event.preventDefault();
  } catch {
    // the browser follows the link itself
  }
}

// Airflow's login, coming back to where the user is.
export function logIn() {
  const parent = host();
  const back = parent ? parent.location.href : window.location.href;
  const url = uiUrl(`api/v2/auth/login?next=${enc(back)}`);
  try {
    if (!parent) throw new Error("not inside the Airflow UI");
    parent.open(url, "_self");
  } catch {
    window.location.assign(url);
  }
}
