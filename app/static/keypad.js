// The phone-style keypad: on-screen digits plus keyboard digits, Backspace and Escape.
import { $, el } from "./dom.js";
import { showSuggestions } from "./predict.js";
import { state } from "./state.js";

export function buildKeypad() {
  const pad = $("#keypad");
  for (const d of [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]) {
    pad.append(el("button", { type: "button", "data-testid": `digit-${d}`, onclick: () => press(d) }, String(d)));
  }
  $("#backspace").addEventListener("click", backspace);
  $("#clear").addEventListener("click", clearPrefix);
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select, dialog")) return;  // typing into the form is not for the keypad
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
