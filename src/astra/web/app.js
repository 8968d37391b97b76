// The terminal's shell: sign-in, the hash router and the page lifecycle.
// Invariants: one page is mounted at a time; a page's mount(root, ctx) may return a cleanup
// function (close its WebSockets, timers), which runs before the next page mounts or on
// sign-out. Pages live in pages/<name>.js, loaded on first visit. Routes: #/<name>?<query>.

import { api, clearKey, getKey, onUnauthorized, setKey } from "./lib/api.js";
import { clear, errorText, h, toast } from "./lib/dom.js";

const PAGES = ["markets", "market", "trade", "orders", "otc", "venues", "keys"];
const root = document.getElementById("page");
let cleanup = null;
let mounted = 0; // increases on every navigation: a slow import must not mount a stale page

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [name, query = ""] = raw.split("?");
  return { name: PAGES.includes(name) ? name : "markets", params: new URLSearchParams(query) };
}

export function navigate(name, params = {}) {
  const query = new URLSearchParams(params).toString();
  location.hash = `#/${name}${query ? "?" + query : ""}`;
}

function runCleanup(fn) {
  if (!fn) return;
  try { fn(); } catch (err) { console.error(err); }
}

async function unmount() {
  runCleanup(cleanup);
  cleanup = null;
  clear(root);
}

async function show() {
  const turn = ++mounted;
  await unmount();
  if (!getKey()) return showSignIn();
  const hash = location.hash;
  const { name, params } = parseHash();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === name ||
      (name === "market" && link.dataset.page === "markets"));
  }
  root.dataset.page = name;
  let page;
  try {
    page = await import(`./pages/${name}.js`);
  } catch (err) {
    root.append(h("p", { class: "error" }, `page ${name} failed to load: ${err}`));
    return;
  }
  // The hash may have changed while the module loaded, its hashchange event not yet handled:
  // that event mounts the right page. Mounting this one now would let it take the new hash
  // for its own (pages compare location.hash to tell they were left).
  if (turn !== mounted || location.hash !== hash) return;
  // Each page mounts into its own node: a page left while it still loads writes into a
  // detached node, never into the next page; its cleanup runs as soon as its mount returns.
  const holder = h("div", { class: "page-root", "data-page": name });
  root.append(holder);
  try {
    const done = (await page.mount(holder, { params, navigate })) || null;
    if (turn !== mounted) runCleanup(done);
    else cleanup = done;
  } catch (err) {
    if (turn === mounted) holder.append(h("p", { class: "error", role: "alert" }, errorText(err)));
  }
}

function showSignIn(message = "") {
  document.getElementById("nav").hidden = true;
  document.getElementById("session").hidden = true;
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-in-error").textContent = message;
  document.getElementById("api-key").focus();
}

function showSignedIn() {
  document.getElementById("sign-in").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("session").hidden = false;
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("api-key");
  // The key as `astra serve` prints it may come with its header: keep the key itself.
  const key = input.value.trim().replace(/^x-astra-api-key:\s*/i, "").replace(/^bearer\s+/i, "");
  const error = document.getElementById("sign-in-error");
  error.textContent = "";
  // A header carries only printable ASCII: fetch() would fail with a misleading
  // "the gateway did not answer" on anything else pasted in.
  if (!/^[\x21-\x7e]+$/.test(key)) {
    error.textContent = "That is not an API key: a key is printable ASCII, with no spaces.";
    return;
  }
  try {
    await api("GET", "/openapi.json", { key }); // any valid key may read it
  } catch (err) {
    error.textContent = err.status === 401 ? "That key is not valid (unknown, revoked or " +
      "expired)." : errorText(err);
    return;
  }
  input.value = "";
  setKey(key);
  showSignedIn();
  show();
}

async function signOut(message) {
  clearKey();
  mounted++;
  await unmount();
  showSignIn(message);
}

document.getElementById("sign-in-form").addEventListener("submit", signIn);
document.getElementById("sign-out").addEventListener("click", () => signOut(""));
onUnauthorized(() => {
  toast("The API key was refused (revoked or expired): signed out.", "error");
  signOut("The API key was refused (revoked or expired). Sign in with another key.");
});
window.addEventListener("hashchange", () => { if (getKey()) show(); });

if (getKey()) showSignedIn();
show();
