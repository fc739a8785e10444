/**
 * Small Markdown helpers the report modules share: number formats and tables.
 *
 * How it works: every formatter turns a missing or non-finite value into
 * "–", so an unmeasured number is visible as such and never as NaN.
 */

/** A number with `digits` decimals (thousands separated when digits = 0). */
export function f(v: number | undefined, digits: number): string {
  if (v === undefined || !Number.isFinite(v)) return "–";
  if (digits === 0 && Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  return v.toFixed(digits);
}

/** A ratio: "0.83×". */
export function x(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? "–" : `${v.toFixed(2)}×`;
}

export function bytes(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return "–";
  if (Math.abs(v) >= 1024 * 1024) return `${(v / 1024 / 1024).toFixed(1)} MiB`;
  if (Math.abs(v) >= 1024) return `${(v / 1024).toFixed(1)} KiB`;
  return `${v.toFixed(0)} B`;
}

/** A markdown table; `align` has one letter per column, l or r (default: first column left, the rest right). */
export function table(head: string[], rows: string[][], align?: string): string {
  const line = (c: string[]): string => `| ${c.join(" | ")} |`;
  const a = align ?? "l" + "r".repeat(head.length - 1);
  return [line(head), line(head.map((_h, i) => (a[i] === "l" ? "---" : "---:"))), ...rows.map(line)].join("\n");
}
