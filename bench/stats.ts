/**
 * Summary statistics for benchmark samples: min / median / max of a list,
 * and ratios against a baseline measured in the same run.
 *
 * How it works: every number the report prints comes from here, so the
 * rules are in one place — the median of an even count is the mean of the
 * two middle values; a ratio is median(mode) / median(baseline); the paired
 * ratios divide repetition i of a mode by repetition i of the baseline (the
 * two were measured back to back, so slow drift of the machine cancels) and
 * are summarised as min / median / max too. Empty input gives undefined,
 * never NaN, so a missing measurement is visible as "–" in the report.
 */

export interface Summary {
  readonly n: number;
  readonly min: number;
  readonly median: number;
  readonly max: number;
}

/** The q-quantile (0..1) of sorted values, linear between neighbours. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function summarize(values: readonly number[]): Summary | undefined {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  return { n: v.length, min: v[0]!, median: quantile(v, 0.5), max: v[v.length - 1]! };
}

/** median(values) / median(baseline), or undefined when either is missing or the baseline is 0. */
export function ratioOfMedians(values: readonly number[], baseline: readonly number[]): number | undefined {
  const a = summarize(values);
  const b = summarize(baseline);
  if (!a || !b || b.median === 0) return undefined;
  return a.median / b.median;
}

/** Per-repetition ratios a[rep] / b[rep] for the repetitions both have. */
export function pairedRatios(a: ReadonlyMap<number, number>, b: ReadonlyMap<number, number>): number[] {
  const out: number[] = [];
  for (const [rep, x] of a) {
    const y = b.get(rep);
    if (y !== undefined && y !== 0 && Number.isFinite(x) && Number.isFinite(y)) out.push(x / y);
  }
  return out;
}
