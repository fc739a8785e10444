/**
 * Percentiles of latency samples: nearest-rank on the sorted values (p99 of
 * 1,000 samples is the 990th smallest), so every number printed is a
 * latency that was actually measured. Empty input gives undefined.
 */

export interface Percentiles {
  readonly n: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

export function percentile(sorted: readonly number[], q: number): number {
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

export function percentiles(values: readonly number[]): Percentiles | undefined {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  return { n: v.length, p50: percentile(v, 0.5), p99: percentile(v, 0.99), max: v[v.length - 1]! };
}
