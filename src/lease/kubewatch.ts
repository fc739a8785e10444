/**
 * Watching nodes: list + watch (client-go's reflector, done by hand) turned
 * into LeaseEvents.
 *
 * How it works:
 *  1) List the nodes (kubeapi.ts keeps only the fields twill reads), apply
 *     the list to our cache, then watch from the list's resourceVersion with
 *     bookmarks on. Every event and bookmark moves our resourceVersion on;
 *     a watch that ends cleanly (the server's timeoutSeconds, a dropped
 *     connection closed properly) is resumed from it, without a re-list.
 *  2) A 410 Gone (an ERROR event with a 410 Status, or a 410 answer: our
 *     version was compacted away) re-lists; the new list is diffed against
 *     the cache, so nodes deleted meanwhile still come out as deletes. It is
 *     not an error: it is how the API asks for a re-list.
 *  3) Each node change is converted (kubenode.ts) and compared with what we
 *     last reported for that node: a changed lease is a put; a node whose
 *     lease key changed (new podCIDR) is a delete of the old key, then a put;
 *     a node that stops being a lease (deleted, annotations removed) is a
 *     delete. Updates that change nothing in the lease (status heartbeats)
 *     produce nothing, as flannel's handleUpdateLeaseEvent.
 *  4) Events of one tick are delivered as one batch. Every completed list
 *     (the first, after a 410, after a restart) and every `resyncMs` adds an
 *     onResync after the batch: the daemon re-lists and diffs.
 *  5) Any other failure (connection refused or reset, 5xx, 403, another
 *     ERROR event): we report it (onError) and list + watch again after a
 *     backoff that doubles from backoffMinMs to backoffMaxMs and resets once
 *     a list succeeds or an event arrives; each restart is followed by
 *     onResync. A watch that ends at once with nothing in it also waits the
 *     backoff before it is resumed, so a server that closes every watch
 *     cannot make us spin.
 *  6) snapshot() is the cache once it has listed: list() reads it instead
 *     of fetching every node again for every event batch.
 */
import { TwillError, isTwillError } from "../errors.js";
import type { Logger } from "../log.js";
import { apiError, KubeHttpError, type KubeClient, type V1Node, type WatchEventType } from "./kubeapi.js";
import { nodeName, nodeToLease, tryNodeLeaseKey, type AnnotationNames, type Families } from "./kubenode.js";
import { serializeLease } from "./parse.js";
import type { LeaseEvent, WatchHandlers } from "./source.js";
import type { Lease } from "./types.js";

export interface NodeWatchOptions {
  readonly client: KubeClient;
  readonly names: AnnotationNames;
  readonly families: Families;
  readonly handlers: WatchHandlers;
  /** Periodic onResync; 0 = never. */
  readonly resyncMs: number;
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
  readonly log: Logger;
}

/** A node as a lease source entry: its key, and the lease or why it is unreadable. */
export interface NodeEntry {
  readonly key: string;
  readonly lease?: Lease;
  readonly error?: TwillError;
}

/** undefined = the node is not a lease (yet). */
export function nodeEntry(n: V1Node, names: AnnotationNames, families: Families): NodeEntry | undefined {
  try {
    const lease = nodeToLease(n, names, families);
    return lease && { key: lease.key, lease };
  } catch (e) {
    const error = isTwillError(e) ? e : new TwillError("ERR_INVALID_LEASE", `Cannot parse node ${nodeName(n)}: ${(e as Error).message}`, { cause: e });
    return { key: tryNodeLeaseKey(n, families) ?? `node/${nodeName(n)}`, error };
  }
}

const signature = (e: NodeEntry): string => (e.lease ? serializeLease(e.lease) : `error: ${e.error!.message}`);

/** The server ends a watch after a random 5 to 10 minutes, as client-go asks. */
const watchTimeoutSeconds = () => 300 + Math.floor(Math.random() * 300);

export class NodeWatch {
  private stopped = false;
  private listed = false;
  /** The nodes as last listed/watched, by name. */
  private readonly cache = new Map<string, V1Node>();
  private resourceVersion = "";
  private cancelWatch?: () => void;
  private readonly known = new Map<string, { key: string; sig: string }>();
  private queue: LeaseEvent[] = [];
  private resyncPending = false;
  private flushScheduled = false;
  private backoffMs: number;
  private restartTimer?: NodeJS.Timeout;
  private resyncTimer?: NodeJS.Timeout;

  constructor(private readonly o: NodeWatchOptions) {
    this.backoffMs = o.backoffMinMs;
  }

  start(): void {
    void this.listThenWatch();
    if (this.o.resyncMs > 0) {
      this.resyncTimer = setInterval(() => this.requestResync(), this.o.resyncMs);
      this.resyncTimer.unref();
    }
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.restartTimer);
    clearInterval(this.resyncTimer);
    this.cancelWatch?.();
    this.cancelWatch = undefined;
  }

  /** The cached nodes, once listed; undefined before. */
  snapshot(): readonly V1Node[] | undefined {
    return this.listed && !this.stopped ? [...this.cache.values()] : undefined;
  }

  /** 1), 2): list, diff against the cache, watch. */
  private async listThenWatch(): Promise<void> {
    if (this.stopped) return;
    let list;
    try {
      list = await this.o.client.listNodes();
    } catch (e) {
      return this.failed(e);
    }
    if (this.stopped) return;
    this.listed = true;
    this.backoffMs = this.o.backoffMinMs;
    const seen = new Set<string>();
    for (const n of list.items) {
      seen.add(n.metadata.name);
      const old = this.cache.get(n.metadata.name);
      this.cache.set(n.metadata.name, n);
      if (!old || old.metadata.resourceVersion !== n.metadata.resourceVersion) this.changed(n);
    }
    for (const [name, n] of [...this.cache]) {
      if (seen.has(name)) continue;
      this.cache.delete(name);
      this.gone(n);
    }
    this.resourceVersion = list.resourceVersion;
    this.requestResync(); // after the batch of this list
    this.watch();
  }

  private watch(): void {
    if (this.stopped) return;
    const t0 = Date.now();
    let events = 0;
    this.cancelWatch = this.o.client.watchNodes(this.resourceVersion, watchTimeoutSeconds(), {
      event: (type: WatchEventType, n: V1Node) => {
        events++;
        if (n.metadata.resourceVersion) this.resourceVersion = n.metadata.resourceVersion;
        if (type === "BOOKMARK") return;
        if (type === "DELETED") {
          this.cache.delete(n.metadata.name);
          this.gone(n);
        } else {
          this.cache.set(n.metadata.name, n);
          this.changed(n);
        }
      },
      status: (code, message) => {
        this.cancelWatch = undefined;
        if (code === 410) return this.relist(message);
        this.failed(new KubeHttpError(code, message));
      },
      end: (error) => {
        this.cancelWatch = undefined;
        if (this.stopped) return;
        if (error instanceof KubeHttpError && error.status === 410) return this.relist(error.message);
        if (error) return this.failed(error);
        // A clean end: resume from our resourceVersion (at once, unless it ended at once, empty).
        if (events > 0 || Date.now() - t0 >= 1000) return this.watch();
        this.later(() => this.watch());
      },
    });
  }

  private relist(why: string): void {
    if (this.stopped) return;
    this.o.log.info("node watch: resourceVersion gone; re-listing", { why });
    void this.listThenWatch();
  }

  /** Runs fn after the current backoff, and doubles it. */
  private later(fn: () => void): void {
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.o.backoffMaxMs);
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      if (!this.stopped) fn();
    }, delay);
  }

  private failed(e: unknown): void {
    if (this.stopped) return;
    const err = apiError("watch nodes", e);
    this.call(() => this.o.handlers.onError(err));
    this.o.log.warn("node watch failed; restarting", { err, delayMs: this.backoffMs });
    this.later(() => {
      this.requestResync(); // events may have been missed while it was down
      void this.listThenWatch();
    });
  }

  private changed(n: V1Node): void {
    this.backoffMs = this.o.backoffMinMs;
    const name = nodeName(n);
    const prev = this.known.get(name);
    const next = nodeEntry(n, this.o.names, this.o.families);
    if (prev && (!next || next.key !== prev.key)) this.emit({ type: "delete", key: prev.key });
    if (!next) {
      this.known.delete(name);
      return;
    }
    const sig = signature(next);
    if (!prev || prev.key !== next.key || prev.sig !== sig) {
      this.emit({ type: "put", key: next.key, ...(next.lease && { lease: next.lease }), ...(next.error && { error: next.error }) });
    }
    this.known.set(name, { key: next.key, sig });
  }

  private gone(n: V1Node): void {
    this.backoffMs = this.o.backoffMinMs;
    const name = nodeName(n);
    const prev = this.known.get(name);
    if (!prev) return;
    this.known.delete(name);
    this.emit({ type: "delete", key: prev.key });
  }

  private emit(ev: LeaseEvent): void {
    this.queue.push(ev);
    this.schedule();
  }

  private requestResync(): void {
    this.resyncPending = true;
    this.schedule();
  }

  /** One batch per tick: after the informer's synchronous callbacks for a list or an event. */
  private schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      if (this.stopped) return;
      const events = this.queue;
      this.queue = [];
      if (events.length) this.call(() => this.o.handlers.onEvents(events));
      if (this.resyncPending) {
        this.resyncPending = false;
        this.call(() => this.o.handlers.onResync());
      }
    });
  }

  /** A throwing handler must not break the informer. */
  private call(f: () => void): void {
    try {
      f();
    } catch (e) {
      this.o.log.error("lease watch handler threw", { err: e });
    }
  }
}
