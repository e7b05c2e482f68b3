// The server's status line and the model table with activate and delete.
import { refreshAliases } from "./aliases.js";
import { api, auth } from "./api.js";
import { $, el, pct } from "./dom.js";
import { showSuggestions } from "./predict.js";
import { state } from "./state.js";

export async function refreshInfo() {
  try {
    const info = await api("GET", "/info");
    auth.required = info.auth_required;
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

// A sampled corpus's held-out figures beside the count baseline's: what the network gains over counting.
export function heldOutOf(model) {
  const m = model.metrics || {};
  if (m.heldout_nll === undefined) return "";
  const mine = `NLL ${m.heldout_nll.toFixed(2)}, hit@3 ${pct(m.heldout_hit3)}, saves ${pct(m.heldout_keystroke_savings)}`;
  if (m.baseline_nll === undefined) return mine;
  return `${mine} · n-gram ${m.baseline_nll.toFixed(2)}, ${pct(m.baseline_hit3)}, ${pct(m.baseline_keystroke_savings)}`;
}

function metricOf(model) {
  const m = model.metrics || {};
  if (m.top1_agreement !== undefined) return `top-1 agreement ${pct(m.top1_agreement)}`;
  if (m.seq_acc !== undefined) return `exact match ${pct(m.seq_acc)}`;
  return "";
}

export async function refreshModels() {
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
      el("td", { "data-testid": "held-out" }, heldOutOf(m)),
      el("td", { class: "actions" },
        m.active ? el("span", { class: "badge", "data-testid": "active-badge" }, "active")
                 : el("button", { class: "ghost small", "data-testid": "activate", onclick: () => activate(m.id) }, "Activate"),
        !m.active && m.source !== "shipped"
          ? el("button", { class: "danger small", "data-testid": "delete", onclick: () => removeModel(m.id) }, "Delete") : ""))));
    error.textContent = "";
  } catch (err) { error.textContent = err.message; }
}

export async function activate(id) {
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

/** A new active model may change the vocabulary, the length and attention, so everything shown is asked again
 * (production moved, so the alias table too). */
export async function afterModelChange() {
  await refreshInfo();
  await Promise.all([refreshModels(), refreshAliases({ quiet: true })]);
  await showSuggestions();
}
