// The depth chart: cumulative bid and ask quantity against price, drawn on a <canvas>.
// Invariants: pure drawing (no timers, no network); the canvas is sized to its CSS box times
// devicePixelRatio on every draw, so it stays sharp when the layout changes; the x range is
// symmetric around the mid so the spread sits in the middle; an empty side draws nothing.

const COLORS = {
  bid: "#2ebd85", bidFill: "rgba(46, 189, 133, 0.18)",
  ask: "#f6465d", askFill: "rgba(246, 70, 93, 0.18)",
  grid: "rgba(139, 152, 168, 0.12)", text: "#8b98a8", mid: "rgba(230, 237, 243, 0.35)",
};
const PAD = { left: 8, right: 64, top: 12, bottom: 24 };

/**
 * Draw ``bids``/``asks`` ([{price, total}], best first) on ``canvas``.
 * ``decimals``: price digits for the axis labels.
 */
export function drawDepth(canvas, bids, asks, { decimals = 2 } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const { width: cssWidth, height: cssHeight } = canvas.getBoundingClientRect();
  if (cssWidth < 50 || cssHeight < 50) return;
  canvas.width = Math.round(cssWidth * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, cssWidth, cssHeight);
  ctx.font = "11px ui-monospace, 'DejaVu Sans Mono', monospace";
  if (!bids.length && !asks.length) {
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = "center";
    ctx.fillText("no book", cssWidth / 2, cssHeight / 2);
    return;
  }
  const bestBid = bids.length ? bids[0].price : asks[0].price;
  const bestAsk = asks.length ? asks[0].price : bids[0].price;
  const mid = (bestBid + bestAsk) / 2;
  const farBid = bids.length ? mid - bids[bids.length - 1].price : 0;
  const farAsk = asks.length ? asks[asks.length - 1].price - mid : 0;
  // The nearer side's reach: one far-out level must not squash the chart (the other side's
  // further levels are cut at the edge).
  const reach = farBid > 0 && farAsk > 0 ? Math.min(farBid, farAsk) : Math.max(farBid, farAsk);
  const half = Math.max(reach, (bestAsk - bestBid) / 2 || mid * 1e-4);
  const lo = mid - half;
  const hi = mid + half;
  bids = bids.filter((level) => level.price >= mid - half);
  asks = asks.filter((level) => level.price <= mid + half);
  const maxTotal = Math.max(bids.length ? bids[bids.length - 1].total : 0,
    asks.length ? asks[asks.length - 1].total : 0, 1e-12) * 1.08;
  const plotW = cssWidth - PAD.left - PAD.right;
  const plotH = cssHeight - PAD.top - PAD.bottom;
  const x = (price) => PAD.left + ((price - lo) / (hi - lo)) * plotW;
  const y = (total) => PAD.top + plotH - (total / maxTotal) * plotH;

  // Grid and axes: five price ticks, four quantity ticks.
  ctx.strokeStyle = COLORS.grid;
  ctx.lineWidth = 1;
  ctx.fillStyle = COLORS.text;
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (let i = 0; i <= 4; i++) {
    const price = lo + ((hi - lo) * i) / 4;
    const px = Math.round(x(price)) + 0.5;
    ctx.beginPath(); ctx.moveTo(px, PAD.top); ctx.lineTo(px, PAD.top + plotH); ctx.stroke();
    const label = price.toFixed(decimals);
    ctx.textAlign = i === 0 ? "left" : i === 4 ? "right" : "center";
    ctx.fillText(label, px, PAD.top + plotH + 6);
  }
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  for (let i = 1; i <= 4; i++) {
    const total = (maxTotal * i) / 4;
    const py = Math.round(y(total)) + 0.5;
    ctx.beginPath(); ctx.moveTo(PAD.left, py); ctx.lineTo(PAD.left + plotW, py); ctx.stroke();
    ctx.fillText(formatQuantity(total), PAD.left + plotW + 6, py);
  }

  side(ctx, bids, x, y, mid, x(lo), PAD.top + plotH, COLORS.bid, COLORS.bidFill);
  side(ctx, asks, x, y, mid, x(hi), PAD.top + plotH, COLORS.ask, COLORS.askFill);

  // The mid price, dashed.
  ctx.setLineDash([4, 4]);
  ctx.strokeStyle = COLORS.mid;
  const mx = Math.round(x(mid)) + 0.5;
  ctx.beginPath(); ctx.moveTo(mx, PAD.top); ctx.lineTo(mx, PAD.top + plotH); ctx.stroke();
  ctx.setLineDash([]);
}

// One side as a step function from the mid outwards: flat at 0 until the best level, then
// up by each level's quantity; the last total runs on to the plot's edge.
function side(ctx, levels, x, y, mid, edgeX, floor, line, fill) {
  if (!levels.length) return;
  const path = new Path2D();
  path.moveTo(x(mid), floor);
  path.lineTo(x(levels[0].price), floor);
  let previous = 0;
  for (const level of levels) {
    path.lineTo(x(level.price), y(previous));
    path.lineTo(x(level.price), y(level.total));
    previous = level.total;
  }
  const outer = edgeX;
  path.lineTo(outer, y(previous));
  ctx.strokeStyle = line;
  ctx.lineWidth = 1.5;
  ctx.stroke(path);
  const area = new Path2D(path);
  area.lineTo(outer, floor);
  area.closePath();
  ctx.fillStyle = fill;
  ctx.fill(area);
}

function formatQuantity(value) {
  if (value >= 1000) return (value / 1000).toFixed(1) + "k";
  if (value >= 10) return value.toFixed(1);
  if (value >= 1) return value.toFixed(2);
  return value.toPrecision(2);
}
