/**
 * Horizontal bar charts as standalone SVG, written by hand (no dependency).
 *
 * How it works: one chart shows one metric. Each row is a mode (or, for
 * grouped charts, a group with one bar per series); the bar is the median,
 * the whisker spans min–max, and the median (with an optional note such as
 * the ratio to the baseline) is printed at the bar's end.
 * An optional dashed line marks the baseline's median (kernel-vxlan), so
 * "better than flannel" is visible at a glance. The axis is linear from 0,
 * or logarithmic when values span orders of magnitude (the control plane).
 */

export interface Bar {
  readonly label: string;
  readonly min: number;
  readonly median: number;
  readonly max: number;
  readonly color: string;
  /** Printed after the value, e.g. "0.83×". */
  readonly note?: string;
}

export interface Group {
  readonly label: string;
  readonly bars: readonly Bar[];
}

export interface ChartSpec {
  readonly title: string;
  readonly subtitle: string;
  readonly unit: string;
  readonly groups: readonly Group[];
  readonly digits: number;
  /** Draw a dashed reference line at this value. */
  readonly baseline?: { value: number; label: string };
  readonly log?: boolean;
}

const W = 820;
const LEFT = 170;
const RIGHT = 150;
const BAR_H = 18;
const BAR_GAP = 4;
const GROUP_GAP = 12;
const TOP = 70;

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function fmt(v: number, digits: number): string {
  if (!Number.isFinite(v)) return "–";
  if (Math.abs(v) >= 1000 && digits === 0) return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
  return v.toFixed(digits);
}

/** 1, 2, 5 × 10^k ticks covering [0, max]. */
function linearTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / 5;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  const ticks: number[] = [];
  for (let t = 0; t <= max + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  if (ticks[ticks.length - 1]! < max) ticks.push(Number((ticks[ticks.length - 1]! + step).toPrecision(12)));
  return ticks;
}

function logTicks(min: number, max: number): number[] {
  const lo = Math.floor(Math.log10(Math.max(min, 1e-9)));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(max, min * 10))));
  const ticks: number[] = [];
  for (let e = lo; e <= hi; e++) ticks.push(10 ** e);
  return ticks;
}

export function barChart(spec: ChartSpec): string {
  const bars = spec.groups.flatMap((g) => g.bars).filter((b) => Number.isFinite(b.median));
  const finite = (v: number | undefined): v is number => v !== undefined && Number.isFinite(v);
  const maxV = Math.max(1e-9, ...bars.map((b) => (finite(b.max) ? b.max : b.median)), finite(spec.baseline?.value) ? spec.baseline!.value : 0);
  const positive = bars.map((b) => (finite(b.min) && b.min > 0 ? b.min : b.median)).filter((v) => v > 0);
  const minV = positive.length ? Math.min(...positive) : maxV / 10;
  const ticks = spec.log ? logTicks(minV, maxV) : linearTicks(maxV);
  const lo = spec.log ? ticks[0]! : 0;
  const hi = ticks[ticks.length - 1]!;
  const plotW = W - LEFT - RIGHT;
  const x = (v: number): number => {
    if (!Number.isFinite(v)) return LEFT;
    const f = spec.log ? (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) : (v - lo) / (hi - lo);
    return LEFT + Math.max(0, Math.min(1, f)) * plotW;
  };
  const rowsH = spec.groups.reduce((h, g) => h + g.bars.length * (BAR_H + BAR_GAP) + GROUP_GAP, 0);
  const H = TOP + rowsH + 44;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<title>${esc(spec.title)}</title>`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="12" y="22" font-size="15" font-weight="bold" fill="#222">${esc(spec.title)}</text>`);
  out.push(`<text x="12" y="40" fill="#555">${esc(spec.subtitle)}</text>`);
  const axisY = TOP + rowsH;
  for (const t of ticks) {
    const tx = x(t);
    out.push(`<line x1="${tx.toFixed(1)}" y1="${TOP - 6}" x2="${tx.toFixed(1)}" y2="${axisY}" stroke="#e6e6e6"/>`);
    out.push(`<text x="${tx.toFixed(1)}" y="${axisY + 16}" text-anchor="middle" fill="#555">${esc(fmt(t, t < 1 && t > 0 ? 2 : t % 1 ? 1 : 0))}</text>`);
  }
  out.push(`<text x="${LEFT + plotW / 2}" y="${axisY + 34}" text-anchor="middle" fill="#333">${esc(spec.unit)}${spec.log ? " (log scale)" : ""}</text>`);
  if (spec.baseline && Number.isFinite(spec.baseline.value)) {
    const bx = x(spec.baseline.value);
    out.push(`<line x1="${bx.toFixed(1)}" y1="${TOP - 6}" x2="${bx.toFixed(1)}" y2="${axisY}" stroke="#d32f2f" stroke-dasharray="5,4" stroke-width="1.2"/>`);
    out.push(`<text x="${bx.toFixed(1)}" y="${TOP - 10}" text-anchor="middle" fill="#d32f2f" font-size="11">${esc(spec.baseline.label)}</text>`);
  }
  let y = TOP;
  for (const g of spec.groups) {
    const gh = g.bars.length * (BAR_H + BAR_GAP);
    const multi = g.bars.length > 1;
    out.push(`<text x="${LEFT - 8}" y="${(y + gh / 2 + 4).toFixed(1)}" text-anchor="end" fill="#222" font-weight="${multi ? "bold" : "normal"}">${esc(g.label)}</text>`);
    for (const b of g.bars) {
      const cy = y + BAR_H / 2;
      if (Number.isFinite(b.median)) {
        const x0 = x(lo), x1 = x(b.median);
        out.push(`<rect x="${x0.toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(1, x1 - x0).toFixed(1)}" height="${BAR_H}" fill="${b.color}" rx="2"><title>${esc(`${g.label} ${b.label}: median ${fmt(b.median, spec.digits)}, min ${fmt(b.min, spec.digits)}, max ${fmt(b.max, spec.digits)} ${spec.unit}`)}</title></rect>`);
        if (Number.isFinite(b.min) && Number.isFinite(b.max)) {
          const a = x(b.min), c = x(b.max);
          out.push(`<line x1="${a.toFixed(1)}" y1="${cy}" x2="${c.toFixed(1)}" y2="${cy}" stroke="#222" stroke-width="1.2"/>`);
          for (const e of [a, c]) out.push(`<line x1="${e.toFixed(1)}" y1="${cy - 5}" x2="${e.toFixed(1)}" y2="${cy + 5}" stroke="#222" stroke-width="1.2"/>`);
        }
        const tx = Math.max(x1, Number.isFinite(b.max) ? x(b.max) : x1) + 6;
        const note = b.note ? ` <tspan fill="#777">${esc(b.note)}</tspan>` : "";
        out.push(`<text x="${tx.toFixed(1)}" y="${cy + 4}" fill="#222" stroke="#fff" stroke-width="3" paint-order="stroke">${esc(fmt(b.median, spec.digits))}${multi ? ` <tspan fill="#777">${esc(b.label)}</tspan>` : ""}${note}</text>`);
      } else {
        out.push(`<text x="${LEFT + 6}" y="${cy + 4}" fill="#999">not measured${multi ? ` (${esc(b.label)})` : ""}</text>`);
      }
      y += BAR_H + BAR_GAP;
    }
    y += GROUP_GAP;
  }
  out.push(`<line x1="${LEFT}" y1="${TOP - 6}" x2="${LEFT}" y2="${axisY}" stroke="#999"/>`);
  out.push("</svg>");
  return out.join("\n") + "\n";
}
