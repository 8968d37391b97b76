// Small DOM helpers: element builder, number/time formats, toasts, venue colours.

/** h("div", {class: "x", "data-testid": "y", onclick: fn}, child, "text", [more]) */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name === "text") {
      node.textContent = value;
    } else if (name === "value") {
      node.value = value;
    } else if (name === "style" && typeof value === "object") {
      // CSSOM, not a style attribute: allowed by the page's Content-Security-Policy.
      for (const [prop, v] of Object.entries(value)) node.style.setProperty(prop, v);
    } else {
      node.setAttribute(name, value === true ? "" : value);
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

export function clear(node) { while (node.firstChild) node.firstChild.remove(); return node; }

/** A price or quantity: up to ``digits`` decimals, trailing zeros trimmed, never 1e-7. */
export function num(value, digits = 8) {
  if (value === undefined || value === null || value === "") return "";
  const x = Number(value);
  if (!Number.isFinite(x)) return String(value);
  return x.toLocaleString("en-US", { maximumFractionDigits: digits, useGrouping: true });
}

export function time(ms) {
  if (!ms) return "";
  const d = new Date(Number(ms));
  return d.toISOString().slice(11, 23);
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" },
    message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/** An error as one line: "CODE: message (parameter)". */
export function errorText(err) {
  const where = err.parameter ? ` (${err.parameter})` : "";
  return err.code ? `${err.code}: ${err.message}${where}` : String(err);
}

const VENUE_ORDER = ["SIM", "SIM2", "SIM3", "BINANCE", "COINBASE", "OKX", "HUOBI", "KUCOIN",
  "KRAKEN", "ASTER"];
const PALETTE = ["#4f8cff", "#f5a524", "#c06cf0", "#f0b90b", "#3773f5", "#9aa4b2", "#2ca6e0",
  "#23af91", "#8d5ff0", "#e9677b"];

/** A stable colour per venue code (the same on every page and in the legend). */
export function venueColor(code) {
  let i = VENUE_ORDER.indexOf(code);
  if (i < 0) i = [...code].reduce((a, c) => a + c.charCodeAt(0), 0) % PALETTE.length;
  return PALETTE[i % PALETTE.length];
}

export function venueTag(code) {
  return h("span", { class: "venue-tag", style: { "--venue": venueColor(code) } }, code);
}
