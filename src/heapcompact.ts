/**
 * V8 compaction, only while the old generation is fragmented.
 *
 *   const compact = heapCompactor();   // once
 *   compact();                          // at every periodic reconcile
 *
 * How it works: V8 frees dead objects of the old generation in place and
 * moves live ones (compaction) only when it judges a page worth it, which in
 * a heap this small (20-40 MiB) it rarely does. Under a steady stream of
 * lease events the holes add up: at 10,000 peers and 200 events/s the live
 * heap stayed at 20-36 MiB while the old space V8 kept committed grew 27 →
 * 36 MiB in 7 minutes, and the RSS with it (README, "Soak"). Compacting at
 * every full collection (node --compact-on-every-full-gc) keeps it flat but
 * pays a compaction pause at every one: a lease event's p99 went 14 → 39 ms.
 * So each call looks at old space once (v8.getHeapSpaceStatistics, a few
 * µs): when the bytes V8 holds free there are at least FRAGMENTED of what it
 * committed (and MIN_FREE), the full collections from now on compact; once
 * they are not, they stop compacting. The flag is V8's own, set at run time
 * (node:v8 setFlagsFromString: V8 reads it at every full collection), and
 * only when the verdict changes. A flag given on the command line wins: this
 * does nothing then.
 */
import v8 from "node:v8";

/** Free bytes in old space, as a share of what it committed, from which full collections compact. */
export const FRAGMENTED = 0.25;
/** ... and at least this many free bytes (a small heap is not worth a pause). */
export const MIN_FREE = 4 * 1024 * 1024;

export interface HeapCompactor {
  (): void;
  /** Whether full collections compact now. */
  readonly compacting: boolean;
  /** Times the verdict turned to compacting. */
  readonly turnedOn: number;
}

/** Whether old space (free, committed bytes) is fragmented enough to compact. */
export function fragmented(free: number, committed: number): boolean {
  return free >= MIN_FREE && free >= FRAGMENTED * committed;
}

export function heapCompactor(given = `${process.execArgv.join(" ")} ${process.env.NODE_OPTIONS ?? ""}`): HeapCompactor {
  const fixed = /--(no-)?compact[-_]on[-_]every[-_]full[-_]gc/.test(given);
  let on = false, turnedOn = 0;
  const f = (() => {
    if (fixed) return;
    const old = v8.getHeapSpaceStatistics().find((s) => s.space_name === "old_space");
    if (!old) return;
    const want = fragmented(old.space_available_size, old.space_size);
    if (want === on) return;
    v8.setFlagsFromString(want ? "--compact-on-every-full-gc" : "--no-compact-on-every-full-gc");
    on = want;
    if (on) turnedOn++;
  }) as HeapCompactor;
  Object.defineProperties(f, { compacting: { get: () => on }, turnedOn: { get: () => turnedOn } });
  return f;
}
