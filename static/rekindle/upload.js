// The upload page: choose or drop a photo, see it before sending, check it, send it, go to its page.
import { api, megabytes, problemText, saveAccess } from "./common.js";

const form = document.getElementById("upload-form");
const input = document.getElementById("image");
const drop = document.getElementById("drop");
const preview = document.getElementById("preview");
const previewImg = document.getElementById("preview-img");
const previewName = document.getElementById("preview-name");
const email = document.getElementById("email");
const consent = document.getElementById("consent");
const submit = document.getElementById("submit");
const status = document.getElementById("form-status");
const errors = {
  image: document.getElementById("image-error"),
  email: document.getElementById("email-error"),
  consent: document.getElementById("consent-error"),
};

const maxBytes = Number(form.dataset.maxBytes);
const accepted = form.dataset.accept.split(",");
let previewUrl = null;

function setError(name, message) {
  errors[name].textContent = message;
  const field = { image: input, email, consent }[name];
  if (message) field.setAttribute("aria-invalid", "true");
  else field.removeAttribute("aria-invalid");
}

// The photo's own first bytes, as the server decides by content and not by name.
async function looksLikeImage(file) {
  const head = new Uint8Array(await file.slice(0, 12).arrayBuffer());
  const starts = (...bytes) => bytes.every((byte, i) => head[i] === byte);
  return (
    starts(0xff, 0xd8, 0xff) || // JPEG
    starts(0x89, 0x50, 0x4e, 0x47) || // PNG
    (starts(0x52, 0x49, 0x46, 0x46) && head[8] === 0x57 && head[9] === 0x45) || // WebP (RIFF....WEBP)
    starts(0x49, 0x49, 0x2a, 0x00) ||
    starts(0x4d, 0x4d, 0x00, 0x2a) || // TIFF
    starts(0x42, 0x4d) // BMP
  );
}

async function checkImage(file) {
  if (!file) return "Choose a photo to send.";
  if (file.size > maxBytes) {
    return `This file is ${megabytes(file.size)} MB; photos can be up to ${form.dataset.maxMegabytes} MB.`;
  }
  if ((file.type && !accepted.includes(file.type)) || !(await looksLikeImage(file))) {
    return "This is not a photo we can read. Send a JPEG, PNG, WebP, TIFF or BMP image.";
  }
  return "";
}

async function chosen(file) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  status.textContent = "";
  const problem = await checkImage(file);
  setError("image", problem);
  if (!file || problem) {
    preview.hidden = true;
    return;
  }
  previewName.textContent = `${file.name} (${megabytes(file.size)} MB)`;
  // Browsers cannot show TIFF: the name is enough then.
  if (file.type === "image/tiff") {
    previewImg.hidden = true;
  } else {
    previewUrl = URL.createObjectURL(file);
    previewImg.src = previewUrl;
    previewImg.hidden = false;
  }
  preview.hidden = false;
}

input.addEventListener("change", () => chosen(input.files[0]));

for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("dragging"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  const files = event.dataTransfer && event.dataTransfer.files;
  if (!files || !files.length) return;
  const transfer = new DataTransfer();
  transfer.items.add(files[0]);
  input.files = transfer.files;
  chosen(files[0]);
});

const FIELD_OF_SERVER_ERROR = { invalid_image: "image", image_too_large: "image", unsupported_media_type: "image" };

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = input.files[0];
  const imageProblem = await checkImage(file);
  setError("image", imageProblem);
  setError("email", email.validity.valid && email.value ? "" : "Enter the email address we should write to.");
  setError("consent", consent.checked ? "" : "Please agree to how we process and keep your photo.");
  const firstBad = [input, email, consent].find((field) => field.getAttribute("aria-invalid") === "true");
  if (firstBad) {
    firstBad.focus();
    return;
  }

  submit.disabled = true;
  status.textContent = "Sending your photo…";
  const result = await api(form.action, { method: "POST", form: new FormData(form) });
  if (result.ok) {
    saveAccess(result.body.id, { token: result.body.token });
    status.textContent = "Sent. Opening its page…";
    window.location.assign(`/j/${result.body.id}`);
    return;
  }
  submit.disabled = false;
  status.textContent = "";
  const code = result.body && result.body.error ? result.body.error.code : "";
  const fields = (result.body && result.body.error && result.body.error.details.fields) || {};
  if (result.status === 413 || result.status === 415 || FIELD_OF_SERVER_ERROR[code] || fields.image) {
    setError("image", result.status === 413 ? `This photo is too large; the limit is ${form.dataset.maxMegabytes} MB.` : problemText(result));
    input.focus();
  } else if (fields.email) {
    setError("email", "Enter a valid email address.");
    email.focus();
  } else {
    status.textContent = problemText(result);
  }
});
