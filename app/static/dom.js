// Tiny DOM helpers shared by every part of the page.

export const $ = (selector, root = document) => root.querySelector(selector);

export const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
};

export const pct = (p) => (100 * p).toFixed(p >= 0.995 || p < 0.0001 ? 0 : 1) + "%";

/** What a missing or unknown value shows as. */
export const DASH = "—";

/** A string or number as text; anything else (null, an object of unknown shape) as DASH. */
export const text = (x) => ((typeof x === "string" && x !== "") || (typeof x === "number" && Number.isFinite(x)) ? String(x) : DASH);

/** An ISO-8601 time in the reader's locale; DASH when there is none, the string itself when it is not a time. */
export const when = (iso) => {
  if (typeof iso !== "string" || iso === "") return DASH;
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? iso : t.toLocaleString();
};
