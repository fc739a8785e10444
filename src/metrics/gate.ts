/**
 * The gate in front of /metrics: a bound on what scrapes can cost, however
 * many clients ask.
 *
 * How it works:
 *  1) Slots: at most `slots` /metrics requests are in flight at once
 *     (waiting or being collected); `enter()` returns undefined beyond that,
 *     and the server answers 503 at once, without collecting anything.
 *  2) One collection at a time, never two overlapping, and at most one
 *     started per `minIntervalMs` (a collection reads every pinned map, ~100
 *     ms of CPU at 10,000 peers, in slices: metrics.ts). A request joins the
 *     next collection that has not started yet, or schedules one, so every
 *     answer comes from a collection that began after the request arrived —
 *     never a stale copy — and requests arriving together share one
 *     collection. The cost is therefore at most one map walk per
 *     `minIntervalMs` (DEFAULT_SCRAPE_INTERVAL_MS, 1 s), whatever the
 *     number of clients; a client scraping faster waits for it.
 */

/** At most one collection starts per this many ms. */
export const DEFAULT_SCRAPE_INTERVAL_MS = 1000;
/** /metrics requests in flight at once. */
export const DEFAULT_SCRAPE_SLOTS = 4;

export class ScrapeGate {
  private inFlight = 0;
  private lastStart = Number.NEGATIVE_INFINITY;
  /** A collection scheduled but not started: new requests join it. */
  private next: Promise<string> | undefined;
  /** The collection running now. */
  private running: Promise<string> | undefined;

  constructor(
    private readonly collect: () => Promise<string>,
    readonly slots = DEFAULT_SCRAPE_SLOTS,
    readonly minIntervalMs = DEFAULT_SCRAPE_INTERVAL_MS,
  ) {}

  /** Requests in flight now. */
  get busy(): number {
    return this.inFlight;
  }

  /** The text of a collection begun after this call; undefined when every slot is taken. */
  enter(): Promise<string> | undefined {
    if (this.inFlight >= this.slots) return undefined;
    this.inFlight++;
    const p = this.next ?? this.schedule();
    return p.finally(() => { this.inFlight--; });
  }

  private schedule(): Promise<string> {
    const run = async (): Promise<string> => {
      if (this.running) await this.running.catch(() => {});
      const wait = this.lastStart + this.minIntervalMs - performance.now();
      if (wait > 0) await new Promise<void>((r) => setTimeout(r, wait));
      if (this.next === p) this.next = undefined; // from now on, a request needs a later collection
      this.lastStart = performance.now();
      const r = this.collect();
      this.running = r;
      try {
        return await r;
      } finally {
        if (this.running === r) this.running = undefined;
      }
    };
    // run() starts in a later microtask, so `next` is set before it can clear it.
    const p: Promise<string> = Promise.resolve().then(run);
    this.next = p;
    return p;
  }
}
