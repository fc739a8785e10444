/**
 * The benchmark's statistics, in one place: every number the report prints
 * that summarises several measurements comes from here.
 *
 * How it works — the rules:
 * - Repetitions are summarised as min / median / max. The median of an even
 *   count is the mean of the two middle values.
 * - Percentiles of many samples (latencies) are nearest-rank on the sorted
 *   values: p99 of 1,000 samples is the 990th smallest, so every percentile
 *   printed is a value that was actually measured. (sockperf's own
 *   percentiles are sockperf's; the report says so.)
 * - A ratio of two modes is median(mode) / median(baseline); the paired
 *   ratios divide repetition i of a mode by repetition i of the baseline (the
 *   two were measured back to back, so slow drift of the machine cancels) and
 *   are summarised as min / median / max too.
 * Empty input gives undefined, never NaN, so a missing measurement is visible
 * as "–" in the report.
 */

export interface Summary {
  readonly n: number;
  readonly min: number;
  readonly median: number;
  readonly max: number;
}

export interface Percentiles {
  readonly n: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

const finiteSorted = (values: readonly number[]): number[] => values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);

/** The nearest-rank q-percentile (0 < q ≤ 1) of sorted, non-empty values. */
export function percentile(sorted: readonly number[], q: number): number {
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

export function summarize(values: readonly number[]): Summary | undefined {
  const v = finiteSorted(values);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { n: v.length, min: v[0]!, median, max: v[v.length - 1]! };
}

/** p50 / p99 / max of latency samples (nearest rank). */
export function percentiles(values: readonly number[]): Percentiles | undefined {
  const v = finiteSorted(values);
  if (v.length === 0) return undefined;
  return { n: v.length, p50: percentile(v, 0.5), p99: percentile(v, 0.99), max: v[v.length - 1]! };
}

/** a / b, or undefined when either is missing or not finite, or b is 0. */
export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return undefined;
  return a / b;
}

/** median(values) / median(baseline), or undefined when either is missing or the baseline is 0. */
export function ratioOfMedians(values: readonly number[], baseline: readonly number[]): number | undefined {
  return ratio(summarize(values)?.median, summarize(baseline)?.median);
}

/** Per-repetition ratios a[rep] / b[rep] for the repetitions both have. */
export function pairedRatios(a: ReadonlyMap<number, number>, b: ReadonlyMap<number, number>): number[] {
  const out: number[] = [];
  for (const [rep, x] of a) {
    const r = ratio(x, b.get(rep));
    if (r !== undefined) out.push(r);
  }
  return out;
}
