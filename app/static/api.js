// Requests to this server: JSON in and out, errors carrying the server's message, and the API key, asked for
// in a dialog before the first management action and kept in this module's memory only (never in storage).
import { $ } from "./dom.js";

export const auth = { key: null, required: false };
const keyListeners = [];

export class ApiError extends Error {
  constructor(status, body) { super((body && body.message) || `HTTP ${status}`); this.status = status; this.body = body; }
}

export function authHeaders() { return auth.key ? { Authorization: `Bearer ${auth.key}` } : {}; }

/** Calls fn after a key is entered; a callback, so this module need not import the parts that react to it. */
export function onKeyEntered(fn) { keyListeners.push(fn); }

export async function api(method, path, body, { management = false } = {}) {
  if (management && auth.required && !auth.key && !(await askKey())) throw new ApiError(401, { message: "an API key is needed" });
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  if (response.status === 401 && management) {
    auth.key = null;
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
      if (ok) auth.key = input.value.trim();
      resolve(ok);
      if (ok) for (const fn of keyListeners) fn();
    }, { once: true });
    dialog.showModal();
  });
}
