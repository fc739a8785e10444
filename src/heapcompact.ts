/**
 * V8 compaction, only while the old generation is fragmented.
 *
 *   const compact = heapCompactor();   // once
 *   if (compact()) …                    // at every periodic reconcile: true when a window opened
 *
 * How it works: V8 frees dead objects of the old generation in place and
 * moves live ones (compaction) only when it judges a page worth it, which in
 * a heap this small (20-40 MiB) it rarely does. Under a steady stream of
 * lease events the holes add up: at 10,000 peers and 200 events/s the live
 * heap stayed at 20-36 MiB while the old space V8 kept committed grew 27 →
 * 36 MiB in 7 minutes, and the RSS with it (README, "Soak"). Compacting at
 * every full collection (node --compact-on-every-full-gc) keeps it flat but
 * pays a compaction pause at every one: a lease event's p99 went 14 → 39 ms.
 * So compaction is rationed. Each call (the daemon's 10 s period) looks at
 * old space once (v8.getHeapSpaceStatistics, a few µs). When the bytes V8
 * holds free there are at least FRAGMENTED of what it committed (and at
 * least MIN_FREE), and the last window closed COOLDOWN_MS ago or more, it
 * opens a window: the full collections until the next call compact
 * (--compact-on-every-full-gc, V8's own flag, set at run time with
 * node:v8 setFlagsFromString: V8 reads it at every full collection). The
 * next call closes it, whatever happened. So at most one period in every
 * COOLDOWN_MS + one compacts, and only while there are holes to give
 * back (measured at 10,000 peers, 200 events/s: compacting whenever a
 * quarter was free cost 15 % more CPU and a p99 of 24 ms against 16, one
 * 7-minute run each).
 * A flag given on the command line wins: this does nothing then.
 */
import v8 from "node:v8";

/** Free bytes in old space, as a share of what it committed, from which a window opens. */
export const FRAGMENTED = 0.3;
/** ... and at least this many free bytes (a small heap is not worth a pause). */
export const MIN_FREE = 6 * 1024 * 1024;
/** From the end of one window to the earliest start of the next. */
export const COOLDOWN_MS = 60_000;

/** Called once a period; true when it opened a window (the full collections until the next call compact). */
export type HeapCompactor = () => boolean;

/** Whether old space (free, committed bytes) is fragmented enough to compact. */
export function fragmented(free: number, committed: number): boolean {
  return free >= MIN_FREE && free >= FRAGMENTED * committed;
}

/** Old space now: free and committed bytes. */
export type OldSpace = () => { free: number; committed: number } | undefined;

const v8OldSpace: OldSpace = () => {
  const s = v8.getHeapSpaceStatistics().find((x) => x.space_name === "old_space");
  return s && { free: s.space_available_size, committed: s.space_size };
};

/** `given`: the node flags (a compaction flag there wins); `now` and `oldSpace` for tests. */
export function heapCompactor(given = `${process.execArgv.join(" ")} ${process.env.NODE_OPTIONS ?? ""}`, now = () => performance.now(), oldSpace = v8OldSpace): HeapCompactor {
  const fixed = /--(no-)?compact[-_]on[-_]every[-_]full[-_]gc/.test(given);
  let on = false, closedAt = -Infinity;
  return () => {
    if (fixed) return false;
    if (on) {
      v8.setFlagsFromString("--no-compact-on-every-full-gc");
      on = false;
      closedAt = now();
      return false;
    }
    if (now() - closedAt < COOLDOWN_MS) return false;
    const old = oldSpace();
    if (!old || !fragmented(old.free, old.committed)) return false;
    v8.setFlagsFromString("--compact-on-every-full-gc");
    on = true;
    return true;
  };
}
