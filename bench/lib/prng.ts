/**
 * One seeded PRNG (mulberry32) for the soak (one seed replays the same
 * fault schedule and lease events) and the fuzz tests (a seed replays a
 * run exactly; test/lib/prng.ts re-exports it, as test/lib/twill.ts does
 * bench/lib/twill.ts: the benchmark imports nothing from test/).
 *
 * How it works: a 32-bit state advanced by a constant and mixed; each call
 * returns a float in [0, 1). `pick` and `between` are the two draws the
 * soak needs.
 */
export type Rand = () => number;

export function mulberry32(seed: number): Rand {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One element of a non-empty list, uniformly. */
export function pick<T>(rand: Rand, items: readonly T[]): T {
  if (items.length === 0) throw new Error("Cannot pick from an empty list");
  return items[Math.floor(rand() * items.length)]!;
}

/** Uniform in [lo, hi). */
export function between(rand: Rand, lo: number, hi: number): number {
  return lo + rand() * (hi - lo);
}

/** The same items in a random order (Fisher–Yates). */
export function shuffled<T>(rand: Rand, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** A fresh random 32-bit seed (printed, so the run can be replayed with --seed). */
export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 32) >>> 0;
}
