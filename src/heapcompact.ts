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
 * opens a window: full collections compact (--compact-on-every-full-gc,
 * V8's own flag, set at run time with node:v8 setFlagsFromString). V8
 * reads that flag when a collection starts marking, and a full collection
 * comes every half-minute or so under churn and rarely when idle — so a
 * window that closed at the next period, as it first did, mostly saw no
 * full collection at all, or one that had begun marking before it opened
 * (at 10,000 peers and 200 events/s old space stayed at 32 MiB committed
 * for 19 MiB live). A window now stays open until it has done its work:
 * while it is open, a PerformanceObserver counts the full collections
 * (`fullCollections`: observing only then, so the many young-generation
 * collections cost nothing the rest of the time), and the first call
 * after one finds old space no longer fragmented, or after two (the second
 * began marking inside the window), closes it. So one or two compacting
 * collections per COOLDOWN_MS at most, and only while there are holes to
 * give back (measured at 10,000 peers, 200 events/s: compacting whenever a
 * quarter was free cost 15 % more CPU and a p99 of 24 ms against 16, one
 * 7-minute run each).
 * A re-list (every 30 periods) is the biggest single burst of garbage the
 * daemon makes: at 10,000 peers under 200 lease events/s the RSS stepped up
 * 5-15 MiB at each re-list and stayed there until the next window's
 * compacting collection, ~50 s later (the bench's 30-minute soak: RSS
 * 98-110 MiB between re-lists, 111-125 MiB in the ~50 s after each). So
 * after a re-list (`compactor.afterRelist()`) the old space is compacted
 * at once, by a full collection the daemon asks for (V8's gc(), exposed
 * at run time when node was not started with --expose-gc). It is not
 * incremental, so its pause grows with the heap: at 10,000 peers (old
 * space 28.5 MiB) it took 95 ms, once every 5 minutes, and the RSS fell
 * 104 → 95 MiB (scratch soak, heap statistics every 5 s). So it is forced
 * only while old space is at most FORCE_MAX_BYTES; above that a window
 * opens instead (no cooldown, no fragmentation test) and V8's next full
 * collection compacts.
 * A flag given on the command line wins: this does nothing then.
 */
import v8 from "node:v8";
import vm from "node:vm";
import { PerformanceObserver, constants, type PerformanceEntry } from "node:perf_hooks";

/** Free bytes in old space, as a share of what it committed, from which a window opens. */
export const FRAGMENTED = 0.3;
/** ... and at least this many free bytes (a small heap is not worth a pause). */
export const MIN_FREE = 6 * 1024 * 1024;
/** From the end of one window to the earliest start of the next. */
export const COOLDOWN_MS = 60_000;
/** After a re-list, the biggest old space (committed bytes) compacted at once; above it a window opens instead. */
export const FORCE_MAX_BYTES = 40 * 1024 * 1024;

/**
 * Called once a period; true when it opened a window (the full collections
 * until the next call compact). afterRelist(): compact now (see above);
 * "collected" when it ran a full collection, "window" when it opened a
 * window instead, "none" when a command-line flag rules.
 */
export type HeapCompactor = (() => boolean) & { afterRelist(): "collected" | "window" | "none" };

/** A full collection now (V8's gc()); false when none can be had. */
export type Collect = () => boolean;

let gc: (() => void) | null | undefined;
const v8Collect: Collect = () => {
  gc ??= findGc();
  if (!gc) return false;
  gc();
  return true;
};
function findGc(): (() => void) | null {
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === "function") return () => void exposed();
  try {
    // The flag exposes gc() to contexts made after it: one is made for this alone.
    v8.setFlagsFromString("--expose-gc");
    const fn: unknown = vm.runInNewContext("gc");
    return typeof fn === "function" ? () => void fn() : null;
  } catch {
    return null;
  }
}

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

/**
 * Counts full collections from the moment it is called until the returned
 * stop() (a PerformanceObserver of "gc" entries of the major kind).
 */
export type FullCollections = () => { count(): number; stop(): void };

const observeFullCollections: FullCollections = () => {
  let n = 0;
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) n++;
  });
  obs.observe({ entryTypes: ["gc"] });
  return { count: () => n, stop: () => obs.disconnect() };
};

/** `given`: the node flags (a compaction flag there wins); `now`, `oldSpace` and `fullCollections` for tests. */
export function heapCompactor(
  given = `${process.execArgv.join(" ")} ${process.env.NODE_OPTIONS ?? ""}`, now = () => performance.now(), oldSpace = v8OldSpace,
  fullCollections = observeFullCollections, collect: Collect = v8Collect,
): HeapCompactor {
  const fixed = /--(no-)?compact[-_]on[-_]every[-_]full[-_]gc/.test(given);
  let open: ReturnType<FullCollections> | undefined, closedAt = -Infinity;
  const isFragmented = (): boolean => {
    const old = oldSpace();
    return !!old && fragmented(old.free, old.committed);
  };
  const openWindow = (): void => {
    v8.setFlagsFromString("--compact-on-every-full-gc");
    open = fullCollections();
  };
  const closeWindow = (): void => {
    v8.setFlagsFromString("--no-compact-on-every-full-gc");
    open?.stop();
    open = undefined;
    closedAt = now();
  };
  const period = (): boolean => {
    if (fixed) return false;
    if (open) {
      // Open until a full collection compacted: one that left old space unfragmented, or the second (begun inside the window).
      const n = open.count();
      if (n === 0 || (n === 1 && isFragmented())) return false;
      closeWindow();
      return false;
    }
    if (now() - closedAt < COOLDOWN_MS || !isFragmented()) return false;
    openWindow();
    return true;
  };
  const afterRelist = (): "collected" | "window" | "none" => {
    if (fixed) return "none";
    const old = oldSpace();
    if (old && old.committed <= FORCE_MAX_BYTES) {
      v8.setFlagsFromString("--compact-on-every-full-gc");
      let ran = false;
      try {
        ran = collect();
      } finally {
        if (ran || !open) closeWindow(); // (an open window's work is done too; else the flag goes back)
      }
      if (ran) return "collected";
    }
    if (!open) openWindow();
    return "window";
  };
  return Object.assign(period, { afterRelist });
}
