// The alias table (GET /aliases) with each alias's history in an expandable row (GET /aliases/{name}/history), and
// the panel of any running rollout an alias shows. Reads are open, so no key is asked for. Refreshed every few
// seconds while the tab is visible, and at once after the page's own activations.
import { api } from "./api.js";
import { $, DASH, el, text, when } from "./dom.js";
import { showRollout } from "./rollout.js";

const REFRESH_MS = 5000;
const HISTORY_LIMIT = 50;
const expanded = new Set();  // alias names whose history row is open; kept across refreshes
const movedListeners = [];
let productionGeneration = null;
let ticket = 0;

/** The alias's running rollout's id: GET /aliases gives {id, step, percent, candidate, shadow} or null. */
function rolloutId(alias) {
  return typeof alias.rollout === "object" ? alias.rollout.id : alias.rollout;
}

/** Calls fn when a refresh finds production moved by someone else (another tab, a job, a rollout); a callback, so
 * this module need not import the parts that react to it. */
export function onProductionMoved(fn) { movedListeners.push(fn); }

const historyId = (name) => `alias-history-${name}`;

function historyTable(name, moves) {
  if (moves instanceof Error) return el("p", { class: "error" }, moves.message);
  return el("table", { class: "history", "data-testid": "alias-history", "aria-label": `History of ${name}, newest first` },
    el("thead", {}, el("tr", {}, ...["At", "Model", "Previous", "Generation", "Reason", "Actor"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...moves.map((m) => el("tr", { "data-testid": "alias-move", dataset: { generation: text(m.generation) } },
      el("td", {}, when(m.at)),
      el("td", { "data-testid": "move-model" }, m.model === null ? "(deleted)" : text(m.model)),
      el("td", { "data-testid": "move-previous" }, text(m.previous)),
      el("td", {}, text(m.generation)),
      el("td", { class: "reason" }, text(m.reason)),
      el("td", { "data-testid": "move-actor" }, text(m.actor))))),
    moves.length >= HISTORY_LIMIT ? el("caption", { class: "hint" }, `the latest ${HISTORY_LIMIT} moves`) : "");
}

function toggle(name) {
  if (expanded.has(name)) expanded.delete(name); else expanded.add(name);
  return refreshAliases({ quiet: true });
}

function aliasRows(alias, moves) {
  const open = expanded.has(alias.name);
  const row = el("tr", { "data-testid": "alias-row", dataset: { alias: alias.name } },
    el("td", {}, el("span", { class: "title" }, alias.name)),
    el("td", { "data-testid": "alias-model" }, text(alias.model)),
    el("td", { "data-testid": "alias-generation" }, text(alias.generation)),
    el("td", {}, when(alias.updated_at)),
    el("td", { "data-testid": "alias-public" }, alias.public === true ? "yes" : alias.public === false ? "no" : DASH),
    el("td", { "data-testid": "alias-rollout" },
      alias.rollout ? el("a", { href: `#rollout-${rolloutId(alias)}` }, text(rolloutId(alias))) : DASH),
    el("td", { class: "actions" }, el("button", {
      class: "ghost small", "data-testid": "alias-history-toggle", "aria-expanded": open ? "true" : "false",
      "aria-controls": historyId(alias.name), onclick: () => toggle(alias.name) }, open ? "Hide history" : "History")));
  const detail = el("tr", { class: "history-row", id: historyId(alias.name), hidden: !open },
    el("td", { colspan: 7 }, open && moves ? historyTable(alias.name, moves) : ""));
  return [row, detail];
}

/** Asks for the aliases (and the open histories and running rollouts) again; `quiet` when the caller made the
 * change itself, so that a production move is not reported back to it. */
export async function refreshAliases({ quiet = false } = {}) {
  const mine = ++ticket;
  const error = $('[data-for="aliases"]');
  try {
    const aliases = await api("GET", "/aliases");
    const histories = await Promise.all(aliases.map((a) => (expanded.has(a.name)
      ? api("GET", `/aliases/${encodeURIComponent(a.name)}/history?limit=${HISTORY_LIMIT}`).catch((err) => err) : null)));
    const slots = aliases.filter((a) => a.rollout).map((a) => {
      const slot = el("div", { class: "rollout-slot", hidden: true });
      return [slot, showRollout(slot, rolloutId(a))];
    });
    await Promise.all(slots.map(([, shown]) => shown));
    if (mine !== ticket) return;  // a newer refresh won
    const focused = document.activeElement && document.activeElement.closest("#aliases-table [data-alias]");
    $("#aliases-table tbody").replaceChildren(...aliases.flatMap((a, i) => aliasRows(a, histories[i])));
    if (focused) {  // the rows are new: keep a keyboard user's place on the same alias's button
      const again = $(`#aliases-table [data-alias="${CSS.escape(focused.dataset.alias)}"] button`);
      if (again) again.focus();
    }
    $("#rollouts").replaceChildren(...slots.map(([slot]) => slot));
    error.textContent = "";
    const production = aliases.find((a) => a.name === "production");
    const moved = production && productionGeneration !== null && production.generation !== productionGeneration;
    if (production) productionGeneration = production.generation;
    if (moved && !quiet) for (const fn of movedListeners) fn();
  } catch (err) {
    if (mine === ticket) error.textContent = err.message;
  }
}

export function startAliasRefresh() {
  setInterval(() => { if (!document.hidden) refreshAliases(); }, REFRESH_MS);
}
