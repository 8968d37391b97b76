// API keys: list (never a secret), create (the token shown once), revoke (with a confirm step).
// Invariants:
// - The token of a new key lives only in the one-time box until it is dismissed or the page
//   unmounts; the list is re-read from GET /api-keys, which never carries a secret.
// - Revoking takes two clicks (Revoke, then Confirm) on the same row.
// - A key without the admin scope gets 403 from every route here: the page says so, and
//   which scope is needed, instead of an empty list.

import { api, get, post } from "../lib/api.js";
import { clear, errorText, h, toast } from "../lib/dom.js";

const SCOPES = [
  ["read", "market data, history, market streams"],
  ["trade", "orders, fills, balances, positions"],
  ["otc", "request / accept quotes, converts"],
  ["admin", "manage API keys"],
];

// Short in the table (month-day hour:minute, UTC); the full time is the cell's title.
const when = (ms) => ms ? new Date(ms).toISOString().slice(5, 16).replace("T", " ") : "";
const whenCell = (ms, none) => h("td", { class: "mono muted", title: ms ?
  new Date(ms).toISOString() : "" }, when(ms) || none);

export async function mount(root) {
  const here = location.hash;
  let keys;
  try {
    keys = (await get("/api-keys")).keys;
    if (location.hash !== here) return null; // navigated away meanwhile
  } catch (err) {
    if (err.status !== 403) throw err;
    root.append(h("section", { class: "panel keys-forbidden", "data-testid": "keys-forbidden",
      role: "alert" },
    h("h1", {}, "API keys need the admin scope"),
    h("p", {}, "The key you signed in with cannot list, create or revoke API keys."),
    h("p", { class: "error mono" }, errorText(err)),
    h("p", { class: "muted" }, "Sign in with a key that has the ", h("code", {}, "admin"),
      " scope, or on the gateway's host run ", h("code", {}, "astra keys list"), ".")));
    return null;
  }

  const listBody = h("tbody", { "data-testid": "keys-list" });
  const secretBox = h("section", { class: "panel keys-secret", "data-testid": "keys-secret",
    hidden: true });
  const errorLine = h("p", { class: "error", role: "alert", "data-testid": "keys-error" });
  const labelInput = h("input", { id: "keys-label", "data-testid": "keys-label",
    placeholder: "trading bot", autocomplete: "off" });
  const scopeBoxes = SCOPES.map(([scope, what]) => h("label", { class: "tt-check keys-scope" },
    h("input", { type: "checkbox", value: scope, checked: scope === "read",
      "data-testid": `keys-scope-${scope}` }), " ", h("b", {}, scope), " ",
    h("span", { class: "muted" }, what)));
  const expiryInput = h("input", { id: "keys-expiry", type: "datetime-local",
    "data-testid": "keys-expiry" });
  const ipsInput = h("textarea", { id: "keys-allow-ips", rows: 2, "data-testid": "keys-allow-ips",
    placeholder: "10.0.0.0/8, 192.168.1.7/32 (empty: any address)" });
  const showRevoked = h("input", { type: "checkbox", id: "keys-show-revoked",
    "data-testid": "keys-show-revoked" });

  const form = h("form", { class: "panel keys-form", "data-testid": "keys-form",
    autocomplete: "off" },
  h("h2", {}, "Create a key"),
  h("label", { for: "keys-label" }, "Label"), labelInput,
  h("label", {}, "Scopes"), h("div", { class: "keys-scopes", "data-field": "scopes" },
    scopeBoxes),
  h("label", { for: "keys-expiry" }, "Expires (optional, your local time)"), expiryInput,
  h("label", { for: "keys-allow-ips" }, "IP allow-list (optional CIDRs)"), ipsInput,
  h("button", { type: "submit", class: "primary", "data-testid": "keys-create" },
    "Create key"),
  errorLine);

  root.append(
    h("div", { class: "tr-toolbar" }, h("h1", {}, "API keys"),
      h("span", { class: "muted" }, "Keys are stored hashed: a secret is shown once, when " +
        "the key is created.")),
    secretBox,
    h("div", { class: "keys-layout" }, form,
      h("section", { class: "panel" }, h("div", { class: "tt-head" }, h("h2", {}, "Keys"),
        h("label", { class: "tt-check", for: "keys-show-revoked" }, showRevoked,
          " show revoked")),
      h("div", { class: "keys-table" }, h("table", { class: "data" }, h("thead", {},
        h("tr", {}, h("th", {}, "Key id"),
        h("th", {}, "Label"), h("th", {}, "Scopes"), h("th", {}, "Created"),
        h("th", {}, "Expires"), h("th", {}, "Allowed IPs"), h("th", {}, "Last used"),
        h("th", {}, "Status"), h("th", {}, ""))), listBody)))));

  function render() {
    const rows = keys.filter((k) => showRevoked.checked || !k.revokedAt);
    clear(listBody).append(...(rows.length ? rows.map(row)
      : [h("tr", {}, h("td", { colspan: 9, class: "muted tr-empty" }, "No keys"))]));
  }

  function row(k) {
    const expired = k.expiresAt && k.expiresAt <= Date.now();
    const status = k.revokedAt ? "revoked" : expired ? "expired" : "active";
    const actions = h("td", { class: "keys-actions" });
    const revokeBtn = h("button", { type: "button", class: "small danger",
      "data-testid": "keys-revoke", onclick: () => confirmStep() }, "Revoke");
    function confirmStep() {
      clear(actions).append(h("span", { class: "warn" }, "Revoke for good? "),
        h("button", { type: "button", class: "small danger keys-confirm",
          "data-testid": "keys-revoke-confirm", onclick: () => revoke(k) }, "Confirm"),
        h("button", { type: "button", class: "small", "data-testid": "keys-revoke-cancel",
          onclick: () => clear(actions).append(revokeBtn) }, "Cancel"));
    }
    if (status !== "revoked") actions.append(revokeBtn);
    return h("tr", { "data-testid": "keys-row", "data-key-id": k.keyId,
      class: status === "active" ? "" : "keys-inactive" },
    h("td", { class: "mono" }, k.keyId), h("td", {}, k.label || ""),
    h("td", {}, k.scopes.map((s) => h("span", { class: `keys-chip keys-chip-${s}` }, s))),
    whenCell(k.createdAt, ""), whenCell(k.expiresAt, "never"),
    h("td", { class: "mono muted" }, k.allowIps.length ? k.allowIps.join(", ") : "any"),
    whenCell(k.lastUsedAt, "never"),
    h("td", {}, h("span", { class: `state keys-${status}`, "data-testid": "keys-status" },
      status)),
    actions);
  }

  async function reload() {
    keys = (await get("/api-keys")).keys;
    render();
  }

  async function revoke(k) {
    try {
      await api("DELETE", `/api-keys/${encodeURIComponent(k.keyId)}`);
      toast(`Key ${k.keyId} revoked: its sessions are closed`, "ok");
    } catch (err) {
      toast(errorText(err), "error");
    }
    await reload();
  }

  function showSecret(created) {
    const token = h("input", { class: "mono keys-token", readonly: true,
      "data-testid": "keys-secret-token", value: created.token });
    const copyNote = h("span", { class: "muted", "data-testid": "keys-copy-note" });
    const copy = async () => {
      try {
        if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
        await navigator.clipboard.writeText(created.token);
        copyNote.textContent = "Copied.";
      } catch {
        // Plain http: no clipboard API. Select the text for Ctrl+C instead.
        token.focus();
        token.select();
        copyNote.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
      }
    };
    secretBox.hidden = false;
    clear(secretBox).append(
      h("div", { class: "tt-head" }, h("h2", {}, `New key ${created.keyId}`),
        h("span", { class: "state keys-active" }, created.scopes.join(" · "))),
      h("p", { class: "warn keys-warning" }, "Copy this token now: it is shown only this " +
        "once and cannot be read again. Anyone holding it has this key's access."),
      h("div", { class: "row keys-token-row" }, token,
        h("button", { type: "button", class: "primary", "data-testid": "keys-copy",
          onclick: copy }, "Copy"),
        h("button", { type: "button", "data-testid": "keys-secret-dismiss",
          onclick: () => { clear(secretBox); secretBox.hidden = true; } }, "I saved it")),
      copyNote);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorLine.textContent = "";
    for (const node of form.querySelectorAll(".invalid")) node.classList.remove("invalid");
    const body = {
      label: labelInput.value.trim(),
      scopes: scopeBoxes.map((l) => l.querySelector("input")).filter((b) => b.checked)
        .map((b) => b.value),
    };
    if (expiryInput.value) body.expiresAt = new Date(expiryInput.value).getTime();
    const ips = ipsInput.value.split(/[\s,]+/).filter(Boolean);
    if (ips.length) body.allowIps = ips;
    try {
      const created = await post("/api-keys", body);
      showSecret(created);
      form.reset();
      await reload();
    } catch (err) {
      errorLine.textContent = errorText(err);
      const target = { scopes: ".keys-scopes", expiresAt: "#keys-expiry",
        allowIps: "#keys-allow-ips", label: "#keys-label" }[err.parameter];
      if (target) form.querySelector(target).classList.add("invalid");
    }
  });
  showRevoked.addEventListener("change", render);
  render();

  return () => clear(secretBox);
}
