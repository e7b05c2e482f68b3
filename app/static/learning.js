// The Learning card: production's learning policy (GET /learning), the current cycle and the last outcomes
// (GET /learning/cycles), and acceptance over time per model (GET /learning/acceptance) drawn on a canvas. Reads
// are open, so no key is asked for. Refreshed every few seconds while the tab is visible; tolerant of figures the
// server does not send (they show as "—").
import { api } from "./api.js";
import { $, DASH, el, pct, text, when } from "./dom.js";

const REFRESH_MS = 5000;
const OUTCOMES = 6;
const COLOURS = ["#3358d4", "#1a7f4b", "#c0362c", "#b7791f", "#7b3fb0", "#0f7c8c"];
const TONE = { promoted: "", rolled_back: "bad", refused: "bad", failed: "bad", aborted: "bad", cancelled: "bad" };
const finite = (x) => typeof x === "number" && Number.isFinite(x);
const share = (x) => (finite(x) ? pct(x) : DASH);
let width = "hour";

function policyLine(p) {
  if (!p || typeof p !== "object") return DASH;
  const fresh = p.state && finite(p.state.new_events) ? `; ${p.state.new_events} new events since the last cycle` : "";
  if (!p.enabled) return `Off for ${text(p.alias)}: nothing is learned from usage (PUT /learning to turn it on)${fresh}.`;
  const hours = finite(p.max_interval_s) ? `${+(p.max_interval_s / 3600).toFixed(2)} h` : DASH;
  const blocked = p.state && p.state.blocked ? ` Blocked: ${p.state.blocked}` : "";
  return `On for ${text(p.alias)}: a cycle after ${text(p.min_feedback)} new events, or ${hours} with any${fresh}.${blocked}`;
}

/** Usage hit@3, the alias's model → the candidate, from a cycle's gate figures. */
function usageHit(cycle) {
  const usage = cycle && cycle.gate && cycle.gate.usage;
  if (!usage || !usage.control || !usage.candidate) return DASH;
  return `${share(usage.control.hit3)} → ${share(usage.candidate.hit3)}`;
}

function current(cycle) {
  if (!cycle) return el("p", { class: "meta", id: "learning-current", "data-testid": "learning-current" }, "No cycle is running.");
  const job = cycle.job && typeof cycle.job === "object" ? cycle.job : null;
  const progress = job && job.progress && finite(job.progress.step)
    ? `, step ${job.progress.step}${finite(job.progress.total_steps) ? ` of ${job.progress.total_steps}` : ""}` : "";
  const what = cycle.status === "training" ? `training (job ${text(cycle.job_id)}: ${job ? text(job.status) : DASH}${progress})`
    : cycle.status === "rolling_out" ? `rolling out (rollout ${text(cycle.rollout_id)}; usage hit@3 ${usageHit(cycle)})`
      : text(cycle.status);
  return el("p", { class: "meta", id: "learning-current", "data-testid": "learning-current", dataset: { status: text(cycle.status) } },
    el("span", { class: "badge info" }, `cycle #${text(cycle.number)}`), ` ${text(cycle.trigger)}, ${what}; started ${when(cycle.created_at)}`);
}

function outcomes(cycles) {
  const ended = cycles.filter((c) => c && c.status === "ended").slice(0, OUTCOMES);
  if (!ended.length) return el("p", { class: "hint", "data-testid": "learning-outcomes" }, "No cycle has ended yet.");
  return el("table", { "data-testid": "learning-outcomes", "aria-label": "The last cycles' outcomes, newest first" },
    el("thead", {}, el("tr", {}, ...["Cycle", "Ended", "Trigger", "Outcome", "Usage hit@3", "Why"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...ended.map((c) => el("tr", { "data-testid": "learning-outcome", dataset: { outcome: text(c.outcome) } },
      el("td", {}, `#${text(c.number)}`),
      el("td", {}, when(c.ended_at)),
      el("td", {}, text(c.trigger)),
      el("td", {}, el("span", { class: `badge ${TONE[c.outcome] ?? "info"}` }, text(c.outcome))),
      el("td", {}, usageHit(c)),
      el("td", { class: "reason" }, text(c.reason))))));
}

/** Acceptance per model over the buckets, one line each, y from 0 to 1; returns the legend's entries. */
function drawAcceptance(canvas, series) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 10;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#e3e6eb"; ctx.lineWidth = 1;
  ctx.font = "11px system-ui"; ctx.fillStyle = "#667085";
  for (const y of [0, 0.5, 1]) {
    const at = h - pad - (h - 2 * pad) * y;
    ctx.beginPath(); ctx.moveTo(pad + 30, at); ctx.lineTo(w - pad, at); ctx.stroke();
    ctx.fillText(`${100 * y}%`, pad, at + 4);
  }
  const buckets = [...new Set(series.flatMap((s) => (s.points || []).map((p) => p.at)))].sort();
  const left = pad + 36;
  const x = (at) => left + (w - left - pad) * (buckets.length > 1 ? buckets.indexOf(at) / (buckets.length - 1) : 0.5);
  return series.map((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const points = (s.points || []).filter((p) => finite(p.acceptance));
    ctx.strokeStyle = colour; ctx.fillStyle = colour; ctx.lineWidth = 2; ctx.beginPath();
    points.forEach((p, j) => { const y = h - pad - (h - 2 * pad) * p.acceptance; if (j) ctx.lineTo(x(p.at), y); else ctx.moveTo(x(p.at), y); });
    ctx.stroke();
    for (const p of points) ctx.fillRect(x(p.at) - 2, h - pad - (h - 2 * pad) * p.acceptance - 2, 4, 4);
    const n = points.reduce((a, p) => a + p.impressions, 0), taken = points.reduce((a, p) => a + p.accepted, 0);
    return el("li", { "data-testid": "acceptance-model", dataset: { model: text(s.model) } },
      el("span", { class: "swatch", style: `background:${colour}` }), ` ${text(s.model)}: ${n ? pct(taken / n) : DASH} of ${n}`);
  });
}

export async function refreshLearning() {
  const error = $('[data-for="learning"]');
  try {
    const [policy, cycles, acceptance] = await Promise.all([
      api("GET", "/learning"), api("GET", "/learning/cycles?limit=20"), api("GET", `/learning/acceptance?width=${width}`)]);
    const list = Array.isArray(cycles) ? cycles : [];
    $("#learning-policy").textContent = policyLine(policy);
    $("#learning-current").replaceWith(current(list.find((c) => c && c.status !== "ended")));
    $("#learning-outcomes").replaceChildren(outcomes(list));
    const legend = drawAcceptance($("#acceptance-chart"), (acceptance && Array.isArray(acceptance.series)) ? acceptance.series : []);
    $("#acceptance-legend").replaceChildren(...(legend.length ? legend : [el("li", { class: "hint" }, "No feedback in this window.")]));
    error.textContent = "";
  } catch (err) {
    error.textContent = err.message;
  }
}

export function buildLearning() {
  $("#acceptance-width").addEventListener("change", (event) => { width = event.target.value; refreshLearning(); });
}

export function startLearningRefresh() {
  setInterval(() => { if (!document.hidden) refreshLearning(); }, REFRESH_MS);
}
