// The suggestions for the typed prefix (/topk) and, for a chosen one, the full /predict answer with attention.
import { api } from "./api.js";
import { $, el, pct } from "./dom.js";
import { state } from "./state.js";

let topkTicket = 0;

export async function showSuggestions() {
  $("#prefix").textContent = state.prefix.join("");
  const list = $("#suggestions");
  const detail = $("#detail");
  detail.hidden = true;
  const ticket = ++topkTicket;
  if (state.prefix.length === 0) { list.replaceChildren(); return; }
  try {
    const data = await api("GET", `/topk?prefix=${state.prefix.join(",")}&k=${state.k}`);
    if (ticket !== topkTicket) return;  // a newer key press won
    list.replaceChildren(...data.suggestions.map((s, i) => el("li", {
      class: "suggestion", tabindex: "0", "data-testid": "suggestion", dataset: { sequence: s.sequence.join(",") },
      onclick: () => choose(i, s), onkeydown: (e) => { if (e.key === "Enter") choose(i, s); } },
      el("span", { class: "seq" }, el("span", { class: "known" }, s.sequence.slice(0, data.prefix.length).join("")),
         s.sequence.slice(data.prefix.length).join("")),
      el("span", { class: "bar", title: pct(s.probability) }, el("span", { style: `width:${(100 * s.probability).toFixed(1)}%` })),
      el("span", { class: "prob" }, pct(s.probability)))));
  } catch (err) {
    if (ticket === topkTicket) list.replaceChildren(el("li", { class: "error" }, err.message));
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
