/**
 * Work in slices that let the event loop in: a /metrics scrape at 10,000
 * peers is ~100 ms of CPU, and the daemon must keep answering /healthz and
 * applying lease events meanwhile.
 *
 * How it works: long work is written once, as a generator (`Steps`) that
 * yields every few hundred items. runAtOnce() drives it without pausing
 * (`twill status`, tests); runSliced() awaits a breather between steps,
 * and the breather yields to the event loop (setImmediate) once SLICE_MS
 * have passed since the last yield. One breather per scrape, shared by all
 * of its stages, so the clock carries over from one stage to the next.
 */

/** The longest a sliced job holds the event loop before it yields. */
export const SLICE_MS = 4;

/**
 * A breather: yields to the event loop when the slice is spent, or would be
 * by work expected to take `reserveMs` (Infinity: yield now, so that long
 * work starts a slice of its own).
 */
export type Breathe = (reserveMs?: number) => Promise<void>;

/** Yields to the event loop (setImmediate) once `sliceMs` have passed since the last yield. */
export function breather(sliceMs = SLICE_MS): Breathe {
  let since = performance.now();
  return async (reserveMs = 0) => {
    if (performance.now() - since + reserveMs < sliceMs) return;
    await new Promise<void>((r) => setImmediate(r));
    since = performance.now();
  };
}

/** Work that pauses at each `yield` (a point where it may let the event loop in), returning T. */
export type Steps<T> = Generator<void, T, void>;

/** Runs `steps` to the end without pausing. */
export function runAtOnce<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** Runs `steps`, calling `breathe` at each pause. */
export async function runSliced<T>(steps: Steps<T>, breathe: Breathe): Promise<T> {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    await breathe();
  }
}

/** Elements compared between two pauses of sortSteps (~0.1 ms at 10,000 peers). */
const SORT_STEP = 1024;

/**
 * Sorts `a` in place, stably (as Array.prototype.sort), pausing every
 * SORT_STEP elements: runs of SORT_STEP sorted by the built-in sort, then
 * merged pairwise (bottom-up merge sort). Returns `a`.
 */
export function* sortSteps<T>(a: T[], cmp: (x: T, y: T) => number): Steps<T[]> {
  const n = a.length;
  if (n <= SORT_STEP) return a.sort(cmp);
  let src = a.slice(), dst = new Array<T>(n);
  for (let lo = 0; lo < n; lo += SORT_STEP) {
    const run = src.slice(lo, lo + SORT_STEP).sort(cmp);
    for (let i = 0; i < run.length; i++) src[lo + i] = run[i]!;
    yield;
  }
  let moved = 0;
  for (let width = SORT_STEP; width < n; width *= 2) {
    for (let lo = 0; lo < n; lo += 2 * width) {
      const mid = Math.min(lo + width, n), hi = Math.min(lo + 2 * width, n);
      let i = lo, j = mid, k = lo;
      while (k < hi) {
        // Stable: on a tie the left run's element goes first.
        dst[k++] = j >= hi || (i < mid && cmp(src[i]!, src[j]!) <= 0) ? src[i++]! : src[j++]!;
        if (++moved === SORT_STEP) {
          moved = 0;
          yield;
        }
      }
    }
    [src, dst] = [dst, src];
  }
  for (let i = 0; i < n; i++) a[i] = src[i]!;
  return a;
}
