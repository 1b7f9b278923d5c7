// What the pages share: talking to the API, the job's access kept in this browser, messages for people.
//
// The job's token (from the upload) or the email link's access value is kept in localStorage under
// "rekindle:job:<id>" and sent in a header (X-Job-Token, X-Job-Access), never in a URL.

const PREFIX = "rekindle:job:";

export function loadAccess(jobId) {
  try {
    return JSON.parse(localStorage.getItem(PREFIX + jobId) || "null") || {};
  } catch {
    return {};
  }
}

export function saveAccess(jobId, access) {
  try {
    localStorage.setItem(PREFIX + jobId, JSON.stringify({ ...loadAccess(jobId), ...access }));
  } catch {
    // Storage refused (private mode): the page still works while it stays open.
  }
  memory[jobId] = { ...(memory[jobId] || {}), ...access };
}

export function forgetAccess(jobId) {
  try {
    localStorage.removeItem(PREFIX + jobId);
  } catch {
    // nothing kept
  }
  delete memory[jobId];
}

const memory = {};

export function accessHeaders(jobId) {
  const access = { ...loadAccess(jobId), ...(memory[jobId] || {}) };
  const headers = {};
  if (access.token) headers["X-Job-Token"] = access.token;
  if (access.access) headers["X-Job-Access"] = access.access;
  return headers;
}

export function csrfToken() {
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
}

// One call to the API: { ok, status, body, retryAfter }. Never throws; status 0 means no answer.
export async function api(path, { method = "GET", json, form, jobId, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  if (jobId) Object.assign(init.headers, accessHeaders(jobId));
  if (method !== "GET") init.headers["X-CSRFToken"] = csrfToken();
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    return { ok: false, status: 0, body: null, retryAfter: null };
  }
  let body = null;
  if (response.status !== 204) {
    try {
      body = await response.json();
    } catch {
      body = null;
    }
  }
  const header = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  const detail = body && body.error && body.error.details && body.error.details.retry_after_seconds;
  const retryAfter = Number.isFinite(header) ? header : Number.isFinite(detail) ? detail : null;
  return { ok: response.ok, status: response.status, body, retryAfter };
}

function inMinutes(seconds) {
  const minutes = Math.max(1, Math.ceil((seconds || 60) / 60));
  return minutes === 1 ? "a minute" : `${minutes} minutes`;
}

// A sentence for the person about a failed call.
export function problemText(result) {
  const { status, body, retryAfter } = result;
  const code = body && body.error ? body.error.code : "";
  if (status === 0) return "We could not reach Rekindle. Check your connection and try again.";
  if (status === 503 && retryAfter) return `We are busy right now. Please try again in ${inMinutes(retryAfter)}.`;
  if (status === 503) return "Part of our service is not answering. Please try again in a few minutes.";
  if (status === 429) return `That was a lot of requests in a short time. Please try again in ${inMinutes(retryAfter)}.`;
  if (status === 413 || code === "file_too_large") return "This photo is too large for us.";
  if (body && body.error && body.error.message && status < 500) return body.error.message;
  return "Something went wrong on our side. Please try again in a moment.";
}

export function show(element, visible) {
  element.hidden = !visible;
}

export function megabytes(bytes) {
  return (bytes / 1_000_000).toFixed(bytes < 10_000_000 ? 1 : 0);
}
