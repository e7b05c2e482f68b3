// A running rollout's panel, from GET /rollouts/{id}: status, step and percent, each arm's live figures, and the
// decisions with their figures. Rendering is tolerant: a field the server does not send (or sends in a shape not
// known here) shows as "—" rather than breaking the panel, and a 404 hides the panel (the rollout is gone).
import { api } from "./api.js";
import { DASH, el, text, when } from "./dom.js";

const TONE = { running: "info", promoted: "", promote: "", rolled_back: "bad", roll_back: "bad", aborted: "bad" };
const tone = (word) => (typeof word === "string" && word in TONE ? TONE[word] : "info");
const finite = (x) => typeof x === "number" && Number.isFinite(x);
const count = (x) => (finite(x) ? String(x) : DASH);
const ms = (x) => (finite(x) ? `${x < 10 ? x.toFixed(1) : Math.round(x)} ms` : DASH);
const rate = (x) => (finite(x) ? `${(100 * x).toFixed(1)}%` : DASH);
const share = (x) => (finite(x) ? `${x}%` : DASH);
const points = (x) => (finite(x) ? `${x >= 0 ? "+" : ""}${(100 * x).toFixed(2)} points` : DASH);

/** [low, high] from [low, high] or {low, high}; null when neither end is a number. */
function bounds(ci) {
  if (Array.isArray(ci) && ci.length === 2) return finite(ci[0]) && finite(ci[1]) ? ci : null;
  if (ci && typeof ci === "object") return finite(ci.low) && finite(ci.high) ? [ci.low, ci.high] : null;
  return null;
}

/** [[name, figures], …] from `arms` as {control: {…}, candidate: {…}} or as [{arm, …}, …]; figures under an arm's
 * `live` count as the arm's own. */
export function armsOf(rollout) {
  const arms = rollout && rollout.arms;
  let pairs = [];
  if (Array.isArray(arms)) pairs = arms.filter((a) => a && typeof a === "object").map((a) => [a.arm ?? a.name, a]);
  else if (arms && typeof arms === "object") pairs = Object.entries(arms).filter(([, a]) => a && typeof a === "object");
  return pairs.map(([name, a]) => [name, { ...a, ...(a.live && typeof a.live === "object" ? a.live : {}) }]);
}

function armRow(name, a) {
  const ci = bounds(a.metric_ci ?? a.acceptance_ci ?? a.ci);
  return el("tr", { "data-testid": "rollout-arm", dataset: { arm: text(name) } },
    el("th", { scope: "row" }, text(name)),
    el("td", {}, text(a.model)),
    el("td", { "data-testid": "arm-requests" }, count(a.requests)),
    el("td", { "data-testid": "arm-errors" }, count(a.errors)),
    el("td", { "data-testid": "arm-p50" }, ms(a.p50_ms)),
    el("td", { "data-testid": "arm-p99" }, ms(a.p99_ms)),
    el("td", { "data-testid": "arm-feedback" }, count(a.impressions_with_feedback ?? a.impressions)),
    el("td", { "data-testid": "arm-accepted" }, count(a.accepted)),
    el("td", { "data-testid": "arm-acceptance" }, rate(a.acceptance_rate ?? a.acceptance)),
    el("td", { "data-testid": "arm-ci" }, ci ? `[${rate(ci[0])}, ${rate(ci[1])}]` : DASH));
}

/** The test's figures in a line, when the decision carries them (figures.test: difference, ci, p_worse). */
function testLine(figures) {
  const t = figures && typeof figures === "object" ? figures.test : null;
  if (!t || typeof t !== "object") return "";
  const ci = bounds(t.ci);
  return `difference ${points(t.difference)}, interval ${ci ? `[${points(ci[0])}, ${points(ci[1])}]` : DASH}, ` +
         `p(worse) ${finite(t.p_worse) ? t.p_worse.toFixed(4) : DASH}`;
}

function decisionRow(d) {
  const figures = d.figures && typeof d.figures === "object" ? d.figures : null;
  return el("tr", { "data-testid": "rollout-decision", dataset: { action: text(d.action) } },
    el("td", {}, when(d.at)),
    el("td", {}, el("span", { class: `badge ${tone(d.action)}` }, text(d.action))),
    el("td", {}, text(d.step)),
    el("td", {}, share(d.percent)),
    el("td", { class: "reason" }, text(d.reason), d.cause ? el("span", { class: "hint" }, ` (cause: ${text(d.cause)})`) : ""),
    el("td", { class: "reason" }, figures
      ? el("details", {}, el("summary", { "data-testid": "decision-test" }, testLine(figures) || "figures"),
                      el("pre", { class: "figures" }, JSON.stringify(figures, null, 1)))
      : DASH));
}

const newestFirst = (decisions) => (decisions.every((d) => typeof d.at === "string")
  ? [...decisions].sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0)) : decisions);

/** The panel for one rollout object; pure, so a fixture can be rendered without a server. */
export function renderRollout(rollout) {
  const r = rollout && typeof rollout === "object" ? rollout : {};
  const status = typeof r.status === "string" ? r.status : null;
  const arms = armsOf(r);
  const control = arms.find(([n]) => n === "control");
  const candidate = typeof r.candidate === "string" ? r.candidate : (arms.find(([n]) => n === "candidate") || [])[1]?.model;
  const steps = Array.isArray(r.steps) && r.steps.every(finite) ? r.steps : null;
  const decisions = Array.isArray(r.decisions) ? r.decisions.filter((d) => d && typeof d === "object") : [];
  const id = text(r.id);
  return el("section", { class: "rollout", id: `rollout-${id}`, "data-testid": "rollout-panel", "aria-label": `Rollout ${id}` },
    el("header", {},
      el("h3", {}, `Rollout ${id}`, r.shadow === true ? el("span", { class: "hint" }, " (shadow)") : ""),
      el("span", { class: `badge ${tone(status)}`, "data-testid": "rollout-status" },
         status ?? DASH)),
    el("p", { class: "meta" },
      el("span", { "data-testid": "rollout-alias" }, text(r.alias)), ": ",
      el("span", {}, text(r.control ?? r.model ?? control?.[1].model)), " → ",
      el("span", { "data-testid": "rollout-candidate" }, text(candidate)), " · ",
      el("span", { "data-testid": "rollout-step" }, `step ${text(r.step)}`), " · ",
      el("span", { "data-testid": "rollout-percent" }, `${share(r.percent)} to the candidate`),
      steps ? el("span", {}, ` · steps ${steps.map(share).join(" → ")}`) : ""),
    el("div", { class: "progress", role: "progressbar", "aria-label": "the candidate's share of traffic",
                "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": finite(r.percent) ? r.percent : undefined },
       el("span", { style: `width:${finite(r.percent) ? Math.min(100, Math.max(0, r.percent)) : 0}%` })),
    arms.length
      ? el("div", { class: "table-wrap" }, el("table", { "data-testid": "rollout-arms" },
          el("thead", {}, el("tr", {}, ...["Arm", "Model", "Requests", "5xx", "p50", "p99", "With feedback", "Accepted",
                                             "Acceptance", "Interval"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, ...arms.map(([name, a]) => armRow(name, a)))))
      : el("p", { class: "hint", "data-testid": "rollout-arms" }, `Arms: ${DASH}`),
    el("h4", {}, "Decisions"),
    decisions.length
      ? el("div", { class: "table-wrap" }, el("table", { "data-testid": "rollout-decisions" },
          el("thead", {}, el("tr", {}, ...["At", "Action", "Step", "Percent", "Reason", "Figures"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, ...newestFirst(decisions).map(decisionRow))))
      : el("p", { class: "hint", "data-testid": "rollout-decisions" }, "No decision yet."));
}

/** Fills `slot` with the rollout's panel; hides it when the server no longer knows the rollout (404). */
export async function showRollout(slot, id) {
  try {
    const rollout = await api("GET", `/rollouts/${encodeURIComponent(String(id))}`);
    slot.replaceChildren(renderRollout({ id, ...rollout }));
    slot.hidden = false;
  } catch (err) {
    if (err.status === 404) { slot.replaceChildren(); slot.hidden = true; return; }
    slot.replaceChildren(el("p", { class: "error" }, `Rollout ${id}: ${err.message}`));
    slot.hidden = false;
  }
}
