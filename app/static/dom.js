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
