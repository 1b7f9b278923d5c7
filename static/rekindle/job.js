// The job page: the original, every version with live progress, the before/after slider, another
// version, keeping one, animating it, the preview video, buying and downloading the HD video, deleting.
//
// State comes from GET /api/v1/jobs/{id}; live changes from its Server-Sent Events
// (GET /api/v1/jobs/{id}/events), read with fetch so the access travels in a header. When the stream
// cannot be opened or breaks, the page polls GET /api/v1/jobs/{id} instead.
import { accessHeaders, api, forgetAccess, loadAccess, problemText, saveAccess, show } from "./common.js";

const root = document.getElementById("job");
const jobId = root.dataset.jobId;
const base = `/api/v1/jobs/${jobId}`;
const $ = (id) => document.getElementById(id);

const IN_FLIGHT = new Set(["queued", "running"]);
const POLL_MS = 2000;

let job = null;
let comparing = null; // the restore shown in the slider
let following = false;
let pollTimer = null;
let refreshTimer = null;
let returningFromCheckout = "";

// --- Messages ------------------------------------------------------------------------

function notice(text) {
  $("notice").textContent = text;
  show($("notice"), Boolean(text));
}

const STATES = {
  loading: ["Opening your photo…", "One moment."],
  nolink: [
    "Open the link from your email",
    "This page shows a photo only to whoever holds its link. Open the link in the email we sent you, on this device.",
  ],
  badlink: ["This link does not work", "It may have been copied only in part. Open the link from your email again."],
  expired: [
    "This link has expired",
    "Links in our emails work for a limited time. We can email a new one to the address the photo was uploaded with.",
  ],
  gone: [
    "These photos are no longer here",
    "They were deleted, by you or after the time we keep photos. Nothing of them is left on Rekindle.",
  ],
  deleted: ["Your photos are deleted", "The original, every version and every video are gone from Rekindle."],
  notfound: ["There is no photo here", "Check the address, or upload a photo."],
};

function showState(name) {
  const [title, text] = STATES[name];
  $("state-title").textContent = title;
  $("state-text").textContent = text;
  show($("resend-form"), name === "expired");
  show($("state-home"), name !== "loading" && name !== "expired");
  show($("state"), true);
  show($("job-view"), false);
  stopFollowing();
}

// --- Reading the job -------------------------------------------------------------------

function inFlight(data) {
  return (
    data.restore_attempts.some((a) => IN_FLIGHT.has(a.status)) ||
    data.animation_attempts.some((a) => IN_FLIGHT.has(a.status) || IN_FLIGHT.has(a.hd_status))
  );
}

// Paid for but its HD run not made yet (the payment is being confirmed): worth asking again.
function awaitingHd(data) {
  const waitingForPayment = returningFromCheckout === "success" && !data.animation_attempts.some((a) => a.hd_paid);
  return waitingForPayment || data.animation_attempts.some((a) => a.hd_paid && !a.hd_status);
}

async function refresh() {
  const result = await api(base, { jobId });
  if (result.status === 404) {
    const access = loadAccess(jobId);
    const hadAccess = access.token || access.access || access.deleted;
    forgetAccess(jobId);
    showState(hadAccess ? "gone" : "nolink");
    return;
  }
  if (!result.ok) {
    notice(problemText(result));
    schedulePoll();
    return;
  }
  job = result.body;
  render();
  if (inFlight(job)) follow();
  else if (awaitingHd(job)) schedulePoll();
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 150);
}

function schedulePoll() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(refresh, POLL_MS);
}

function stopFollowing() {
  clearTimeout(pollTimer);
  following = false;
}

// --- Live events ------------------------------------------------------------------------

function knownAttempt(event) {
  if (!job) return null;
  if (event.kind === "restore") return job.restore_attempts.find((a) => a.id === event.id) || null;
  if (event.kind === "animate_preview") return job.animation_attempts.find((a) => a.id === event.id) || null;
  if (event.kind === "animate_hd") return job.animation_attempts.find((a) => a.id === event.parent) || null;
  return null;
}

function onAttemptEvent(event) {
  const attempt = knownAttempt(event);
  if (!attempt) return scheduleRefresh();
  const hd = event.kind === "animate_hd";
  const status = hd ? attempt.hd_status : attempt.status;
  if (status !== event.status) return scheduleRefresh(); // a new state brings new files: read the job again
  if (hd) attempt.hd_progress = event.progress;
  else attempt.progress = event.progress;
  render();
}

function onJobEvent(event) {
  if (job && (event.selected_restore !== job.selected_restore || event.latest_animation !== job.latest_animation)) {
    scheduleRefresh();
  }
}

async function follow() {
  if (following) return;
  following = true;
  clearTimeout(pollTimer);
  let ended = false;
  try {
    const response = await fetch(`${base}/events`, {
      headers: { Accept: "text/event-stream", ...accessHeaders(jobId) },
      credentials: "same-origin",
      cache: "no-store",
    });
    if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (!data) continue;
        const payload = JSON.parse(data);
        if (name === "attempt") onAttemptEvent(payload);
        else if (name === "job") onJobEvent(payload);
        else if (name === "end") ended = payload.reason;
      }
    }
  } catch {
    ended = false;
  }
  following = false;
  if (ended === "deleted") return showState("gone");
  if (ended) return refresh(); // settled (or timed out): the final state, with its files
  // The stream failed or broke off: poll the job instead until nothing is in flight.
  schedulePoll();
}

// --- Rendering ----------------------------------------------------------------------------

function item(list, template, id) {
  let li = list.querySelector(`:scope > li[data-id="${id}"]`);
  if (!li) {
    li = $(template).content.firstElementChild.cloneNode(true);
    li.dataset.id = id;
    list.append(li);
  }
  return li;
}

function setSrc(element, url) {
  // Presigned URLs change on every read: keep what is showing as long as it is the same file.
  const key = url ? url.split("?")[0] : "";
  if (element.dataset.key !== key) {
    element.dataset.key = key;
    if (url) element.src = url;
    else element.removeAttribute("src");
  }
}

function stateText(attempt, doing) {
  switch (attempt.status) {
    case "queued":
      return attempt.error ? attempt.error.message : "Waiting for its turn…";
    case "running":
      return `${doing}… ${attempt.progress}%`;
    case "succeeded":
      return "Ready.";
    case "canceled":
      return "Canceled.";
    default:
      return attempt.error ? attempt.error.message : "This did not work.";
  }
}

function renderProgress(li, attempt, doing, name) {
  li.querySelector(".attempt-state").textContent = stateText(attempt, doing);
  const bar = li.querySelector(".attempt-bar");
  bar.value = attempt.status === "succeeded" ? 100 : attempt.progress;
  bar.setAttribute("aria-label", `Progress of ${name}`);
  show(bar, IN_FLIGHT.has(attempt.status));
  const error = li.querySelector(".attempt-error");
  const failed = attempt.status === "failed" || attempt.status === "canceled";
  error.textContent = failed && attempt.error ? attempt.error.message : "";
  show(error, failed && Boolean(attempt.error));
  li.querySelector(".attempt-state").hidden = failed && Boolean(attempt.error);
  const engine = li.querySelector(".attempt-engine");
  engine.textContent = attempt.engine_label ? `Made by: ${attempt.engine_label}` : "";
  show(engine, attempt.status === "succeeded" && Boolean(attempt.engine_label));
  li.classList.toggle("failed", failed);
  show(li.querySelector(".act-retry"), failed);
}

function succeededRestores() {
  return job.restore_attempts.filter((a) => a.status === "succeeded");
}

function renderCompare() {
  const done = succeededRestores();
  if (!done.some((a) => a.id === comparing)) {
    comparing = (done.find((a) => a.id === job.selected_restore) || done[done.length - 1] || {}).id || null;
  }
  const shown = done.find((a) => a.id === comparing);
  setSrc($("original"), job.original_url);
  setSrc($("before"), job.original_url);
  show($("original-only"), !shown);
  show($("compare"), Boolean(shown));
  show($("compare-help"), Boolean(shown));
  if (shown) {
    setSrc($("after"), shown.result_url);
    const number = job.restore_attempts.indexOf(shown) + 1;
    $("after").alt = `The restored photo, version ${number}`;
  }
}

function renderVersions() {
  const list = $("versions");
  job.restore_attempts.forEach((attempt, index) => {
    const name = `version ${index + 1}`;
    const li = item(list, "tpl-version", attempt.id);
    li.querySelector(".attempt-name").textContent = `Version ${index + 1}`;
    renderProgress(li, attempt, "Restoring", name);
    const img = li.querySelector(".thumb-img");
    const ready = attempt.status === "succeeded";
    if (ready) setSrc(img, attempt.result_url);
    img.alt = `Restored photo, ${name}`;
    show(img, ready);
    const kept = attempt.id === job.selected_restore;
    show(li.querySelector(".act-compare"), ready && attempt.id !== comparing);
    show(li.querySelector(".act-keep"), ready && !kept);
    show(li.querySelector(".kept"), ready && kept);
    li.classList.toggle("is-kept", kept);
    // The visible words first (what a voice-control user says), then which version it is.
    for (const button of li.querySelectorAll("button")) labelFor(button, name);
  });
}

function labelFor(button, name) {
  if (!button.dataset.text) button.dataset.text = button.textContent.trim();
  button.setAttribute("aria-label", `${button.dataset.text} (${name})`);
}

function renderHd(li, attempt) {
  const hd = li.querySelector(".hd");
  show(hd, attempt.status === "succeeded");
  const buy = li.querySelector(".act-buy");
  const state = li.querySelector(".hd-state");
  const bar = li.querySelector(".hd-bar");
  const download = li.querySelector(".act-download");
  const paid = attempt.hd_paid;
  show(buy, !paid);
  let text = "";
  if (paid && attempt.hd_status === "succeeded") text = "Your HD video is ready.";
  else if (paid && attempt.hd_status === "running") text = `Payment received, your HD video is being made… ${attempt.hd_progress}%`;
  else if (paid && attempt.hd_status === "failed") text = attempt.hd_error ? attempt.hd_error.message : "We could not make the HD video yet; we will try again.";
  else if (paid) text = "Payment received, your HD video is being made.";
  else if (returningFromCheckout === "success") text = "Payment received. Your HD video is made as soon as the bank confirms it.";
  state.textContent = text;
  show(state, Boolean(text));
  bar.value = attempt.hd_progress;
  bar.setAttribute("aria-label", "Progress of the HD video");
  show(bar, paid && IN_FLIGHT.has(attempt.hd_status));
  show(download, Boolean(attempt.hd_result_url));
  if (attempt.hd_result_url) download.href = attempt.hd_result_url;
}

function renderAnimations() {
  const list = $("animations");
  job.animation_attempts.forEach((attempt, index) => {
    const name = `video ${index + 1}`;
    const li = item(list, "tpl-animation", attempt.id);
    const version = job.restore_attempts.findIndex((r) => r.id === attempt.restore_id) + 1;
    li.querySelector(".attempt-name").textContent = `Video ${index + 1}${version ? ` (of version ${version})` : ""}`;
    renderProgress(li, attempt, "Animating", name);
    const video = li.querySelector(".preview-video");
    const ready = attempt.status === "succeeded" && Boolean(attempt.preview_url);
    if (ready) {
      if (attempt.thumbnail_url && !video.poster) video.poster = attempt.thumbnail_url;
      setSrc(video, attempt.preview_url);
      video.setAttribute("aria-label", `Preview of ${name}`);
    }
    show(video, ready);
    renderHd(li, attempt);
    for (const button of li.querySelectorAll("button")) labelFor(button, name);
  });
}

function render() {
  show($("state"), false);
  show($("job-view"), true);
  renderCompare();
  renderVersions();
  renderAnimations();
  const kept = job.restore_attempts.find((a) => a.id === job.selected_restore && a.status === "succeeded");
  $("animate-button").disabled = !kept;
}

// --- Actions -----------------------------------------------------------------------------------

async function act(button, call) {
  button.disabled = true;
  notice("");
  const result = await call();
  button.disabled = false;
  if (!result.ok) {
    if (result.status === 404) return refresh();
    notice(problemText(result));
    return result;
  }
  await refresh();
  return result;
}

function attemptOf(li, list) {
  return list.find((a) => a.id === li.dataset.id);
}

$("versions").addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button || !job) return;
  const attempt = attemptOf(button.closest("li"), job.restore_attempts);
  if (!attempt) return;
  if (button.classList.contains("act-compare")) {
    comparing = attempt.id;
    render();
    $("compare-range").focus();
  } else if (button.classList.contains("act-keep")) {
    comparing = attempt.id;
    act(button, () => api(`${base}/select-restore`, { method: "POST", jobId, json: { restore_id: attempt.id } }));
  } else if (button.classList.contains("act-retry")) {
    const parameters = { ...attempt.parameters };
    act(button, () => api(`${base}/restore`, { method: "POST", jobId, json: { parameters } }));
  }
});

$("restore-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const parameters = { denoise: Number($("strength").value) };
  const seed = $("seed").value.trim();
  if (seed) parameters.seed = Number(seed);
  act($("restore-submit"), () => api(`${base}/restore`, { method: "POST", jobId, json: { parameters } }));
});

$("strength").addEventListener("input", () => {
  $("strength-value").textContent = $("strength").value;
});

$("animate-button").addEventListener("click", () => {
  act($("animate-button"), () =>
    api(`${base}/animate`, { method: "POST", jobId, json: { restore_id: job.selected_restore } }),
  );
});

const PAYMENTS_OFF = "Payments are switched off on this server, so the HD video cannot be bought here.";

async function buy(button, li, attempt) {
  const message = li.querySelector(".hd-message");
  const say = (text) => {
    message.textContent = text;
    show(message, Boolean(text));
  };
  if (root.dataset.payments !== "on") return say(PAYMENTS_OFF);
  button.disabled = true;
  say("Taking you to the payment page…");
  const result = await api(`${base}/animations/${attempt.id}/checkout`, { method: "POST", jobId, json: {} });
  button.disabled = false;
  if (result.ok && result.body && result.body.checkout_url) {
    window.location.assign(result.body.checkout_url);
    return;
  }
  const code = result.body && result.body.error ? result.body.error.code : "";
  if (code === "already_paid") {
    say("");
    return refresh();
  }
  if (code === "billing_disabled" || result.status === 404) return say(PAYMENTS_OFF);
  if (code === "payment_provider_unavailable") {
    return say("The payment service is not answering right now. Please try again in a few minutes.");
  }
  say(problemText(result));
}

$("animations").addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button || !job) return;
  const li = button.closest("li");
  const attempt = attemptOf(li, job.animation_attempts);
  if (!attempt) return;
  if (button.classList.contains("act-buy")) buy(button, li, attempt);
  else if (button.classList.contains("act-retry")) {
    const json = { restore_id: attempt.restore_id, parameters: { ...attempt.parameters } };
    act(button, () => api(`${base}/animate`, { method: "POST", jobId, json }));
  }
});

// A slider the keyboard can move (it is a range input) that moves the line between the two photos.
function moveLine() {
  const value = Number($("compare-range").value);
  $("compare").style.setProperty("--position", `${value}%`);
  $("compare-range").setAttribute("aria-valuetext", `${value}% restored, ${100 - value}% original`);
}
$("compare-range").addEventListener("input", moveLine);
moveLine();

$("delete-button").addEventListener("click", () => $("delete-dialog").showModal());
$("delete-dialog").addEventListener("close", async () => {
  if ($("delete-dialog").returnValue !== "delete") return;
  const result = await api(base, { method: "DELETE", jobId });
  if (result.ok || result.status === 404) {
    // Only the fact is kept, so this page says so when opened again here.
    forgetAccess(jobId);
    saveAccess(jobId, { deleted: true });
    job = null;
    showState("deleted");
    $("state-title").focus();
    return;
  }
  notice(problemText(result));
});

$("resend-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("resend-form").querySelector("button");
  button.disabled = true;
  const result = await api(`${base}/send-link`, { method: "POST", json: {} });
  if (result.ok) {
    $("state-text").textContent = result.body.message;
    show($("resend-form"), false);
  } else {
    button.disabled = false;
    notice(problemText(result));
  }
});

// --- Start ---------------------------------------------------------------------------------------

function start() {
  $("state-title").tabIndex = -1;
  if (!jobId) return showState("notfound");
  // The email link's access value (and Stripe's return marks) leave the address at once: the access
  // goes to this browser's storage, so it is in no later URL, bookmark or history entry.
  const url = new URL(window.location.href);
  const access = url.searchParams.get("access");
  const linkState = root.dataset.linkState;
  if (access && linkState === "valid") saveAccess(jobId, { access });
  returningFromCheckout = url.searchParams.get("checkout") || (url.searchParams.get("session_id") ? "success" : "");
  for (const name of ["access", "checkout", "session_id"]) url.searchParams.delete(name);
  window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  if (returningFromCheckout === "cancel") notice("The payment was canceled: nothing was charged.");
  if (access && linkState === "expired") return showState("expired");
  if (access && linkState === "invalid") return showState("badlink");
  if (!access && loadAccess(jobId).deleted) return showState("deleted");
  showState("loading");
  refresh();
}

start();
