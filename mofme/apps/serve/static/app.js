"use strict";
// The page of `mofme serve`: uploads each photo as its own job, polls its status, shows the result.
const $ = (selector, root = document) => root.querySelector(selector);
const POLL_MS = 300;
let limits = null;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const percent = (share) => `${Math.round(share * 100)}%`;

function figure(list, term, value) {
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = term;
  dd.textContent = value;
  list.append(dt, dd);
}

function metricsTable(table, metrics) {
  // the sidebar is narrow: the first column and the PSNR / gain columns only
  const keep = metrics.columns.map((c, i) => i === 0 || /PSNR|gain/i.test(c));
  const head = table.createTHead().insertRow();
  metrics.columns.filter((_, i) => keep[i]).forEach((column) => {
    const th = document.createElement("th");
    th.textContent = column;
    head.append(th);
  });
  const body = table.createTBody();
  for (const row of metrics.rows) {
    const tr = body.insertRow();
    row.filter((_, i) => keep[i]).forEach((cell) => { tr.insertCell().textContent = cell; });
  }
}

async function loadModel() {
  const info = await (await fetch("/api/model")).json();
  limits = info.limits;
  $("#model-name").textContent = info.title || info.name;
  $("#model-summary").textContent = info.summary || "";
  $("#limits").textContent = `PNG, JPEG, BMP, TIFF or WebP, ${info.limits_text}.`;
  const list = $("#model-figures");
  figure(list, "model", info.name);
  if (info.parameters != null) figure(list, "parameters", info.parameters.toLocaleString("en"));
  const config = info.config || {};
  if (config.num_experts) figure(list, "experts", `${config.num_experts}, top-${config.top_k} per token`);
  if (config.ffn) figure(list, "FFN", `${config.ffn}${config.modulation ? ` (${config.modulation})` : ""}`);
  if (config.router) figure(list, "router", config.router);
  if (info.metrics) {
    metricsTable($("#model-metrics"), info.metrics);
    $("#model-metrics-source").textContent = `PSNR (dB) on the built-in test split, from ${info.metrics_source}`;
  }
}

function addJob(name) {
  $("#empty")?.remove();
  const card = $("#job-template").content.firstElementChild.cloneNode(true);
  $(".job-name", card).textContent = name;
  $(".job-name", card).title = name;
  $("#results").prepend(card);
  return card;
}

function fail(card, message) {
  card.dataset.state = "failed";
  $(".job-status", card).textContent = "not restored";
  const error = $(".job-error", card);
  error.textContent = message;
  error.hidden = false;
}

function showRouting(card, status) {
  if (!status.routing_url) return;
  $(".routing-img", card).src = status.routing_url;
  $(".routing-top", card).textContent = status.routing.top
    .map((top, layer) => `layer ${layer}: ` + top.map(([e, share]) => `expert ${e} ${percent(share)}`).join(", "))
    .join(" · ");
  $(".routing", card).hidden = false;
}

function render(card, status) {
  card.dataset.state = status.state;
  card.dataset.jobId = status.id;
  const degraded = $(".degraded", card);  // the upload is decoded when its turn comes
  if (status.input_url && !degraded.getAttribute("src")) degraded.src = status.input_url;
  const progress = $(".job-progress", card);
  progress.value = status.tiles_total ? status.tiles_done / status.tiles_total : 0;
  const line = $(".job-status", card);
  if (status.state === "queued") line.textContent = `waiting: place ${status.queue_position} in the queue`;
  if (status.state === "running") line.textContent = `restoring: tile ${status.tiles_done} of ${status.tiles_total}`;
  if (status.state === "failed") fail(card, status.error);
  if (status.state !== "done") return;
  line.textContent = `${status.width} × ${status.height}, restored in ${status.seconds.toFixed(1)} s`;
  $(".restored", card).src = status.restored_url;
  const link = $(".download", card);
  link.href = status.restored_url;
  link.textContent = `Download the restored PNG (${status.width} × ${status.height})`;
  link.hidden = false;
  showRouting(card, status);
}

async function upload(file) {
  const card = addJob(file.name);
  if (limits && file.size > limits.max_upload_bytes) {
    return fail(card, `${file.name} is larger than this server's upload limit of ${limits.max_upload_bytes.toLocaleString("en")} bytes`);
  }
  const form = new FormData();
  form.append("file", file, file.name);
  let response;
  let status;
  try {
    response = await fetch("/api/jobs", { method: "POST", body: form });
    status = await response.json();
  } catch (error) {
    return fail(card, `the upload failed: ${error}`);
  }
  if (!response.ok) return fail(card, status.error || `the server answered ${response.status}`);
  while (status.state === "queued" || status.state === "running") {
    render(card, status);
    await sleep(POLL_MS);
    try {
      response = await fetch(`/api/jobs/${status.id}`);
      status = await response.json();
    } catch (error) {
      return fail(card, `lost the server: ${error}`);
    }
    if (!response.ok) return fail(card, status.error);
  }
  render(card, status);
}

function uploadAll(files) {
  for (const file of Array.from(files)) upload(file);
}

function setUpDrop() {
  const zone = $("#drop");
  const input = $("#file-input");
  input.addEventListener("change", () => { uploadAll(input.files); input.value = ""; });
  for (const name of ["dragover", "drop"]) window.addEventListener(name, (event) => event.preventDefault());
  zone.addEventListener("dragover", () => zone.classList.add("over"));
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    zone.classList.remove("over");
    uploadAll(event.dataTransfer.files);
  });
  zone.addEventListener("keydown", (event) => { if (event.key === "Enter") input.click(); });
}

setUpDrop();
loadModel().catch((error) => { $("#model-name").textContent = `model card unavailable: ${error}`; });
