"use strict";
// The page: a predictive keypad over /topk and /predict, a training form over /jobs with live progress from
// /jobs/{id}/events, and the model table. Plain JavaScript, no build step, no network beyond this server.

const state = { prefix: [], seqLength: 5, vocab: 10, attention: false, k: 5, apiKey: null, authRequired: false,
                topkTicket: 0, streams: new Map(), jobs: new Map() };
const $ = (selector, root = document) => root.querySelector(selector);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
};
const pct = (p) => (100 * p).toFixed(p >= 0.995 || p < 0.0001 ? 0 : 1) + "%";

class ApiError extends Error {
  constructor(status, body) { super((body && body.message) || `HTTP ${status}`); this.status = status; this.body = body; }
}

function authHeaders() { return state.apiKey ? { Authorization: `Bearer ${state.apiKey}` } : {}; }

async function api(method, path, body, { management = false } = {}) {
  if (management && state.authRequired && !state.apiKey && !(await askKey())) throw new ApiError(401, { message: "an API key is needed" });
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  if (response.status === 401 && management) {
    state.apiKey = null;
    if (await askKey()) return api(method, path, body, { management });
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function askKey() {
  const dialog = $("#key-dialog");
  const input = $("#key-input");
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const ok = dialog.returnValue === "ok" && input.value.trim() !== "";
      if (ok) state.apiKey = input.value.trim();
      resolve(ok);
      if (ok) refreshJobs();
    }, { once: true });
    dialog.showModal();
  });
}

// ---------------------------------------------------------------- status and models
async function refreshInfo() {
  try {
    const info = await api("GET", "/info");
    state.authRequired = info.auth_required;
    const ready = await fetch("/readyz").then((r) => r.json());
    $("#ready").textContent = ready.status === "ready" ? `model ${ready.model} · ${ready.device}` : `not ready: ${ready.reason}`;
    if (info.active_model) {
      const h = info.active_model.hyperparameters;
      state.seqLength = h.seq_length; state.vocab = h.vocab_size; state.attention = h.attention;
    }
  } catch (err) {
    $("#ready").textContent = `unreachable: ${err.message}`;
  }
}

function calibrationOf(model) {
  const m = model.metrics || {};
  if (m.calibration_tv_mean === undefined) return "";
  const start = m.calibration_tv_start_mean !== undefined ? `, start digits ${m.calibration_tv_start_mean.toFixed(3)}` : "";
  return `TV ${m.calibration_tv_mean.toFixed(3)}${start}`;
}

function metricOf(model) {
  const m = model.metrics || {};
  if (m.top1_agreement !== undefined) return `top-1 agreement ${pct(m.top1_agreement)}`;
  if (m.seq_acc !== undefined) return `exact match ${pct(m.seq_acc)}`;
  return "";
}

async function refreshModels() {
  const tbody = $("#models-table tbody");
  const error = $('[data-for="models"]');
  try {
    const models = await api("GET", "/models");
    tbody.replaceChildren(...models.map((m) => el("tr", { dataset: { model: m.id }, "data-testid": "model-row" },
      el("td", {}, el("span", { class: "title" }, m.name && m.name !== m.id ? `${m.id} (${m.name})` : m.id)),
      el("td", {}, new Date(m.created_at).toLocaleString()),
      el("td", {}, `${m.hyperparameters.attention ? "attention" : "plain"}, ${m.source}`),
      el("td", {}, metricOf(m)),
      el("td", { "data-testid": "calibration" }, calibrationOf(m)),
      el("td", { class: "actions" },
        m.active ? el("span", { class: "badge", "data-testid": "active-badge" }, "active")
                 : el("button", { class: "ghost small", "data-testid": "activate", onclick: () => activate(m.id) }, "Activate"),
        !m.active && m.source !== "shipped"
          ? el("button", { class: "danger small", "data-testid": "delete", onclick: () => removeModel(m.id) }, "Delete") : ""))));
    error.textContent = "";
  } catch (err) { error.textContent = err.message; }
}

async function activate(id) {
  try {
    await api("POST", `/models/${encodeURIComponent(id)}/activate`, undefined, { management: true });
    $('[data-for="models"]').textContent = "";
  } catch (err) { $('[data-for="models"]').textContent = err.message; }
  await afterModelChange();
}

async function removeModel(id) {
  if (!confirm(`Delete model ${id}?`)) return;
  try { await api("DELETE", `/models/${encodeURIComponent(id)}`, undefined, { management: true }); }
  catch (err) { $('[data-for="models"]').textContent = err.message; }
  await refreshModels();
}

async function afterModelChange() {
  await refreshInfo();
  await refreshModels();
  await showSuggestions();
}

// ---------------------------------------------------------------- keypad
function buildKeypad() {
  const pad = $("#keypad");
  for (const d of [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]) {
    pad.append(el("button", { type: "button", "data-testid": `digit-${d}`, onclick: () => press(d) }, String(d)));
  }
  $("#backspace").addEventListener("click", backspace);
  $("#clear").addEventListener("click", clearPrefix);
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select, dialog")) return;
    if (/^[0-9]$/.test(event.key)) { press(Number(event.key)); event.preventDefault(); }
    else if (event.key === "Backspace") { backspace(); event.preventDefault(); }
    else if (event.key === "Escape") clearPrefix();
  });
}

function press(digit) {
  if (digit >= state.vocab || state.prefix.length >= state.seqLength) return;
  state.prefix.push(digit);
  showSuggestions();
}
function backspace() { state.prefix.pop(); showSuggestions(); }
function clearPrefix() { state.prefix = []; showSuggestions(); }

async function showSuggestions() {
  $("#prefix").textContent = state.prefix.join("");
  const list = $("#suggestions");
  const detail = $("#detail");
  detail.hidden = true;
  const ticket = ++state.topkTicket;
  if (state.prefix.length === 0) { list.replaceChildren(); return; }
  try {
    const data = await api("GET", `/topk?prefix=${state.prefix.join(",")}&k=${state.k}`);
    if (ticket !== state.topkTicket) return;  // a newer key press won
    list.replaceChildren(...data.suggestions.map((s, i) => el("li", {
      class: "suggestion", tabindex: "0", "data-testid": "suggestion", dataset: { sequence: s.sequence.join(",") },
      onclick: () => choose(i, s), onkeydown: (e) => { if (e.key === "Enter") choose(i, s); } },
      el("span", { class: "seq" }, el("span", { class: "known" }, s.sequence.slice(0, data.prefix.length).join("")),
         s.sequence.slice(data.prefix.length).join("")),
      el("span", { class: "bar", title: pct(s.probability) }, el("span", { style: `width:${(100 * s.probability).toFixed(1)}%` })),
      el("span", { class: "prob" }, pct(s.probability)))));
  } catch (err) {
    if (ticket === state.topkTicket) list.replaceChildren(el("li", { class: "error" }, err.message));
  }
}

async function choose(index, suggestion) {
  document.querySelectorAll(".suggestion").forEach((node, i) => node.classList.toggle("chosen", i === index));
  const detail = $("#detail");
  try {
    const p = await api("POST", "/predict", { prefix: state.prefix, attention: state.attention });
    const rows = [el("p", {}, "Chosen: ", el("b", { class: "seq" }, suggestion.sequence.join(" ")), ` (${pct(suggestion.probability)}). `,
                    "Greedy answer: ", el("b", { class: "seq", "data-testid": "prediction-sequence" }, p.sequence.join(" ")),
                    ` with probability ${pct(p.probability)}.`)];
    rows.push(el("table", {}, el("tr", {}, el("th", {}, "token"), ...p.steps.map((s) => el("td", {}, s.token))),
                               el("tr", {}, el("th", {}, "p"), ...p.steps.map((s) => el("td", {}, pct(s.probability))))));
    if (p.attention) {
      rows.push(el("p", {}, "Attention: which prefix position each generated token looked at"));
      rows.push(el("table", { class: "heat", "data-testid": "attention" },
        el("tr", {}, el("th", {}, ""), ...p.prefix.map((t) => el("th", {}, t))),
        ...p.attention.map((row, i) => el("tr", {}, el("th", {}, p.steps[i].token),
          ...row.map((w) => el("td", { style: `background: rgba(51, 88, 212, ${0.15 + 0.85 * w})`, title: w.toFixed(3) }, w.toFixed(2)))))));
    }
    detail.replaceChildren(...rows);
    detail.hidden = false;
  } catch (err) {
    detail.replaceChildren(el("p", { class: "error" }, err.message));
    detail.hidden = false;
  }
}

// ---------------------------------------------------------------- training
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
    model: { attention: form.elements.attention.checked, embedding_dim: num("embedding_dim"), hidden_dim: num("hidden_dim") },
    training: { recipe: v("recipe"), seed: num("seed") },
    activate: v("activate"),
  };
  for (const name of ["steps", "batch_size", "learning_rate", "teacher_forcing_ratio"]) {  // blank: the recipe's
    if (v(name) !== "") body.training[name] = num(name);
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
  body.dataset = { sequences };
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
  const card = el("div", { class: `job ${job.status}`, "data-testid": "job", dataset: { job: job.id } },
    el("header", {}, el("span", { class: "title" }, job.name || job.id), el("span", { class: "meta", "data-testid": "job-status" }, job.status)),
    el("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "data-testid": "job-progress" }, el("span")),
    el("div", { class: "meta", "data-testid": "job-meta" }),
    el("canvas", { width: "600", height: "160", "aria-label": "loss and accuracy curves" }),
    el("div", { class: "meta reason" }),
    el("div", { class: "actions" }));
  return card;
}

function upsertJob(job) {
  state.jobs.set(job.id, job);
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

function drawCurves(canvas, history) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 8;
  ctx.clearRect(0, 0, w, h);
  const points = (history || []).filter((pt) => pt.loss !== null);
  if (points.length < 2) return;
  const maxStep = points[points.length - 1].step, minStep = points[0].step;
  const maxLoss = Math.max(...points.map((pt) => pt.loss));
  const x = (step) => pad + (w - 2 * pad) * (step - minStep) / Math.max(1, maxStep - minStep);
  const line = (values, colour) => {
    ctx.strokeStyle = colour; ctx.lineWidth = 2; ctx.beginPath();
    values.forEach(([step, y], i) => (i ? ctx.lineTo(x(step), y) : ctx.moveTo(x(step), y)));
    ctx.stroke();
  };
  line(points.map((pt) => [pt.step, h - pad - (h - 2 * pad) * (pt.loss / (maxLoss || 1))]), "#c0362c");
  const acc = points.filter((pt) => pt.accuracy !== null && pt.accuracy !== undefined);
  if (acc.length) line(acc.map((pt) => [pt.step, h - pad - (h - 2 * pad) * pt.accuracy]), "#1a7f4b");
  ctx.font = "13px system-ui";
  ctx.fillStyle = "#c0362c"; ctx.fillText("loss", w - 110, h / 2);
  ctx.fillStyle = "#1a7f4b"; ctx.fillText("accuracy", w - 75, h / 2);
}

async function cancelJob(id) {
  try { upsertJob(await api("POST", `/jobs/${id}/cancel`, undefined, { management: true })); }
  catch (err) { $(`[data-job="${id}"] .reason`).textContent = err.message; }
}

async function follow(id) {
  // fetch, not EventSource: EventSource cannot send the Authorization header an API key needs.
  if (state.streams.has(id)) return;
  const controller = new AbortController();
  state.streams.set(id, controller);
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
    state.streams.delete(id);
  }
}

async function refreshJobs() {
  if (state.authRequired && !state.apiKey) {
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
}

async function main() {
  buildKeypad();
  $("#train-form").addEventListener("submit", submitJob);
  $("#load-corpus").addEventListener("click", loadDefaultCorpus);
  await refreshInfo();
  await Promise.all([refreshModels(), refreshJobs()]);
}

main();
