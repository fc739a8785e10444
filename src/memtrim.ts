/**
 * Freed malloc memory handed back to the kernel.
 *
 *   releaseFreedMemory();                    // now (the daemon: after every reconcile)
 *   const stop = trimAfterFullCollections(); // and after every full collection, until stop()
 *
 * How it works: glibc's malloc_trim(0) (through koffi; ~0.4 ms a call)
 * returns the pages of freed malloc memory to the kernel. Node's and V8's
 * native allocations (buffers, the GC's and the compiler's worker threads)
 * leave freed chunks spread over glibc's arenas, which glibc keeps
 * resident: measured at 10,000 peers under 200 lease events/s, 20-23 MiB
 * of the RSS was free malloc memory before the daemon trimmed after each
 * reconcile. A full (mark-compact) collection is the other big source: it
 * takes its marking worklists from malloc and frees them when it ends, so
 * after each of the long ones (28-35 ms at 10,000 peers, the compacting
 * ones and those after a re-list) 3-5 MiB more stayed resident until the
 * next reconcile's trim, up to a period later (scratch soak with heap
 * statistics every 5 s). So a PerformanceObserver of "gc" entries of the
 * major kind trims once after each full collection too: from a timer, not
 * from the observer's callback, and at most once every MIN_GAP_MS. Young
 * collections, many a second under churn, are only looked at (their
 * memory is V8's own pages, not malloc's); an idle node collects next to
 * never, so it trims next to never.
 * Where libc has no malloc_trim (musl) both do nothing.
 */
import koffi from "koffi";
import { PerformanceObserver, constants, type PerformanceEntry } from "node:perf_hooks";

/** The shortest time between two trims that follow full collections. */
export const MIN_GAP_MS = 1000;

/** malloc_trim(0) now; true when it ran (false where libc has none). */
export const releaseFreedMemory: () => boolean = (() => {
  try {
    const trim = koffi.load("libc.so.6").func("int malloc_trim(size_t pad)");
    return () => (trim(0), true);
  } catch {
    return () => false;
  }
})();

const isFull = (e: PerformanceEntry): boolean => (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR;

/**
 * Trims after every full collection (at most one trim per MIN_GAP_MS)
 * until the returned stop(). `trim` and `now` for tests.
 */
export function trimAfterFullCollections(trim = releaseFreedMemory, now = () => performance.now()): () => void {
  let last = -Infinity;
  let timer: NodeJS.Timeout | undefined;
  const obs = new PerformanceObserver((list) => {
    if (timer || !list.getEntries().some(isFull)) return;
    const wait = Math.max(0, last + MIN_GAP_MS - now());
    timer = setTimeout(() => {
      timer = undefined;
      last = now();
      trim();
    }, wait);
    timer.unref();
  });
  obs.observe({ entryTypes: ["gc"] });
  return () => {
    obs.disconnect();
    clearTimeout(timer);
    timer = undefined;
  };
}
