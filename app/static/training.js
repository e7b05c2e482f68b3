// The training form, the job cards and their live progress from /jobs/{id}/events.
import { api, ApiError, auth, authHeaders } from "./api.js";
import { drawCurves } from "./charts.js";
import { $, el, pct } from "./dom.js";
import { activate, afterModelChange, refreshModels } from "./models.js";

const streams = new Map();  // job id -> AbortController: one progress stream per job

function showFieldErrors(form, error) {
  form.querySelectorAll(".error").forEach((node) => { node.textContent = ""; });
  form.querySelectorAll(".invalid").forEach((node) => node.classList.remove("invalid"));
  if (!error) return;
  const fields = (error.body && error.body.fields) || [{ field: "form", message: error.message }];
  for (const f of fields) {
    let key = f.field;
    if (key === "body" || key.startsWith("dataset")) key = /^dataset|sequences/.test(f.message) || key.startsWith("dataset") ? "dataset" : "form";
    if (/^training\.prefix_lengths/.test(f.message)) key = "form";
    const slot = form.querySelector(`[data-for="${key}"]`) || form.querySelector('[data-for="form"]');
    let message = f.message.replace(/dataset\.sequences\[(\d+)\]/, (_, i) => `line ${Number(i) + 1}`);
    const at = /^dataset\.sequences\[(\d+)\](?:\[(\d+)\])?/.exec(f.field || "");
    if (at) message = `line ${Number(at[1]) + 1}${at[2] === undefined ? "" : `, item ${Number(at[2]) + 1}`}: ${message}`;
    slot.textContent = message;
    const input = slot.closest("label") ? slot.closest("label").querySelector("input, select") : (key === "dataset" ? $("#sequences") : null);
    if (input) input.classList.add("invalid");
  }
}

function readForm(form) {
  const v = (name) => form.elements[name].value.trim();
  const num = (name) => Number(v(name));
  const body = {
    model: { attention: form.elements.attention.checked },
    training: { recipe: v("recipe"), seed: num("seed") },
    activate: v("activate"),
  };
  for (const name of ["steps", "batch_size", "learning_rate", "teacher_forcing_ratio"]) {  // blank: the recipe's
    if (v(name) !== "") body.training[name] = num(name);
  }
  for (const name of ["embedding_dim", "hidden_dim"]) {  // blank: the width the corpus calls for
    if (v(name) !== "") body.model[name] = num(name);
  }
  if (v("target_accuracy")) body.training.target_accuracy = num("target_accuracy");
  if (v("name")) body.name = v("name");
  if (form.elements.source.value === "random") { body.dataset = { generator: "random" }; return body; }
  const sequences = [];
  const lines = v("sequences").split(/\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    const tokens = line.split(/[\s,]+/);
    if (tokens.some((t) => !/^\d+$/.test(t))) throw new ApiError(422, { fields: [{ field: "dataset", message: `line ${i + 1}: "${line}" is not a list of digits` }] });
    sequences.push(tokens.map(Number));
  }
  if (!sequences.length) throw new ApiError(422, { fields: [{ field: "dataset", message: "paste at least one sequence, or choose the random generator" }] });
  body.dataset = { sequences, frequencies: v("frequencies") };
  return body;
}

async function submitJob(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const button = $("#train-submit");
  button.disabled = true;
  try {
    const body = readForm(form);
    const job = await api("POST", "/jobs", body, { management: true });
    showFieldErrors(form, null);
    upsertJob(job);
    follow(job.id);
  } catch (err) {
    showFieldErrors(form, err);
  } finally {
    button.disabled = false;
  }
}

function jobCard(job) {
  return el("div", { class: `job ${job.status}`, "data-testid": "job", dataset: { job: job.id } },
    el("header", {}, el("span", { class: "title" }, job.name || job.id), el("span", { class: "meta", "data-testid": "job-status" }, job.status)),
    el("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "data-testid": "job-progress" }, el("span")),
    el("div", { class: "meta", "data-testid": "job-meta" }),
    el("canvas", { width: "600", height: "160", "aria-label": "loss and accuracy curves" }),
    el("div", { class: "meta reason" }),
    el("div", { class: "actions" }));
}

function upsertJob(job) {
  const container = $("#jobs");
  let card = container.querySelector(`[data-job="${job.id}"]`);
  if (!card) { card = jobCard(job); container.prepend(card); }
  card.className = `job ${job.status}`;
  const p = job.progress;
  const fraction = job.status === "succeeded" ? 1 : (p.fraction || 0);
  const bar = $('[data-testid="job-progress"]', card);
  bar.setAttribute("aria-valuenow", String(Math.round(100 * fraction)));
  bar.firstChild.style.width = `${(100 * fraction).toFixed(1)}%`;
  $('[data-testid="job-status"]', card).textContent = job.status;
  const parts = [`step ${p.step}/${p.total_steps}`];
  if (p.loss !== null && p.loss !== undefined) parts.push(`loss ${p.loss.toFixed(4)}`);
  if (p.accuracy !== null && p.accuracy !== undefined) parts.push(`accuracy ${pct(p.accuracy)}`);
  if (job.status === "running" && p.eta_seconds !== null) parts.push(`ETA ${Math.ceil(p.eta_seconds)} s`);
  $('[data-testid="job-meta"]', card).textContent = parts.join(" · ");
  $(".reason", card).textContent = job.error ? `error: ${job.error}` : (job.activation_reason || "");
  drawCurves($("canvas", card), job.history);
  const actions = $(".actions", card);
  actions.replaceChildren();
  if (job.status === "queued" || job.status === "running") {
    actions.append(el("button", { class: "danger small", "data-testid": "cancel", onclick: () => cancelJob(job.id) }, "Cancel"));
  } else if (job.status === "succeeded" && job.model_id && !job.activated) {
    actions.append(el("button", { class: "ghost small", "data-testid": "activate-job-model", onclick: () => activate(job.model_id) }, `Activate ${job.model_id}`));
  }
}

async function cancelJob(id) {
  try { upsertJob(await api("POST", `/jobs/${id}/cancel`, undefined, { management: true })); }
  catch (err) { $(`[data-job="${id}"] .reason`).textContent = err.message; }
}

async function follow(id) {
  // fetch, not EventSource: EventSource cannot send the Authorization header an API key needs.
  if (streams.has(id)) return;
  const controller = new AbortController();
  streams.set(id, controller);
  try {
    const response = await fetch(`/jobs/${id}/events`, { headers: authHeaders(), signal: controller.signal });
    if (!response.ok) throw new ApiError(response.status, null);
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
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data) continue;
        const job = JSON.parse(data);
        upsertJob(job);
        if (/^event: end/m.test(block)) {
          await refreshModels();
          if (job.activated) await afterModelChange();
        }
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") console.warn("progress stream ended:", err.message);
  } finally {
    streams.delete(id);
  }
}

export async function refreshJobs() {
  if (auth.required && !auth.key) {
    $("#jobs").replaceChildren(el("p", { class: "hint" }, "Enter the API key (on your first training or management action) to see jobs."));
    return;
  }
  try {
    const jobs = await api("GET", "/jobs");
    $("#jobs").replaceChildren();
    for (const job of jobs.slice(0, 5).reverse()) {
      upsertJob(job);
      if (job.status === "queued" || job.status === "running") follow(job.id);
    }
  } catch (err) {
    $("#jobs").replaceChildren(el("p", { class: "error" }, err.message));
  }
}

async function loadDefaultCorpus() {
  const form = $("#train-form");
  form.elements.source.value = "corpus";
  const corpus = await api("GET", "/info/corpus");
  $("#sequences").value = corpus.sequences.map((s) => s.join(" ")).join("\n");
  form.elements.frequencies.value = corpus.frequencies || "sampled";
}

export function buildTraining() {
  $("#train-form").addEventListener("submit", submitJob);
  $("#load-corpus").addEventListener("click", loadDefaultCorpus);
}
