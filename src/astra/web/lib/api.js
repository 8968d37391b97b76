// The gateway's REST and WebSocket API, with the signed-in key.
// Invariants: the key lives only in sessionStorage (this tab) and goes only to this origin;
// REST carries it in the x-astra-api-key header, WebSockets as their subprotocol (browsers
// cannot set headers on a WebSocket). Every non-2xx answer throws ApiError with the server's
// {code, message, parameter}. A 401 signs the tab out (the key was revoked or expired).

const KEY = "astra.apiKey";
const listeners = new Set();

export function getKey() { return sessionStorage.getItem(KEY); }
export function setKey(key) { sessionStorage.setItem(KEY, key); }
export function clearKey() { sessionStorage.removeItem(KEY); }
/** Called with no argument when a request answers 401 (signed out). */
export function onUnauthorized(fn) { listeners.add(fn); return () => listeners.delete(fn); }

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.message) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.code = (body && body.code) || "HTTP_" + status;
    this.parameter = body && body.parameter;
    this.body = body;
  }
}

function url(path, query) {
  const u = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") u.searchParams.set(name, value);
  }
  return u;
}

/** fetch ``path`` as JSON. ``key``: try this key instead of the stored one (sign-in). */
export async function api(method, path, { query, body, key } = {}) {
  const headers = { "x-astra-api-key": `Bearer ${key ?? getKey() ?? ""}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url(path, query), init);
  } catch (err) {
    throw new ApiError(0, { code: "NETWORK", message: `the gateway did not answer (${err})` });
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  if (!resp.ok) {
    if (resp.status === 401 && key === undefined) listeners.forEach((fn) => fn());
    throw new ApiError(resp.status, data);
  }
  return data;
}

export const get = (path, query) => api("GET", path, { query });
export const post = (path, body, query) => api("POST", path, { body, query });
export const del = (path, query) => api("DELETE", path, { query });

/**
 * A WebSocket on ``path`` (``/ws`` or ``/ws/...``) with ``query``, reconnecting with backoff.
 * onMessage(obj) for each JSON message; onState(state, detail) with "open", "reconnecting",
 * "closed" (for good: closed by us, or refused: revoked key, missing scope, whose detail is
 * the server's "CODE: message"). A revoked or expired key signs the tab out (through
 * onUnauthorized), as a REST 401 does.
 * Returns { close() }.
 */
export function stream(path, query, { onMessage, onState = () => {} }) {
  let ws = null;
  let stopped = false;
  let delay = 500;
  let timer = null;
  const target = url(path, query);
  target.protocol = location.protocol === "https:" ? "wss:" : "ws:";

  function connect() {
    ws = new WebSocket(target, [getKey() ?? ""]);
    let opened = false;
    ws.onopen = () => { opened = true; delay = 500; onState("open"); };
    ws.onmessage = (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch { return; }
      onMessage(msg);
    };
    ws.onclose = (event) => {
      if (stopped) return;
      // 1008 (the key was revoked or expired): ask over REST, whose 401 signs the tab out
      // (closing this stream) even on a page that makes no REST call of its own.
      if (event.code === 1008) {
        stopped = true;
        api("GET", "/openapi.json").catch(() => {});
        onState("closed", event.reason || `closed (${event.code})`);
        return;
      }
      if (!opened) explainRefusal();
      // Anything else (the gateway restarting, a network blip) is retried for as long as
      // the page is open, at most every 8 s: the page recovers once the gateway is back.
      onState("reconnecting", event.reason || `closed (${event.code})`);
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 8000);
    };
  }
  // A browser hides why a handshake was refused. The same URL as a plain GET is refused the
  // same way, with the server's JSON: a 401 signs the tab out (api() does); any other 4xx (a
  // scope the key lacks, an unknown market) ends the stream with the server's message
  // instead of retrying it. WEBSOCKET_UPGRADE_REQUIRED means the handshake itself would be
  // accepted; 408/429 and no answer at all are worth retrying.
  function explainRefusal() {
    api("GET", path, { query }).catch((err) => {
      const final = err.status >= 400 && err.status < 500 && err.status !== 408 &&
        err.status !== 429 && err.code !== "WEBSOCKET_UPGRADE_REQUIRED";
      if (stopped || !final) return;
      stopped = true;
      clearTimeout(timer);
      onState("closed", `${err.code}: ${err.message}`);
    });
  }

  connect();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      if (ws) ws.close(1000);
    },
  };
}
