/**
 * Watching nodes: an informer (list + watch) turned into LeaseEvents.
 *
 * How it works:
 *  1) @kubernetes/client-node's informer (ListWatch, what makeInformer
 *     builds; see KubeClient.nodeInformer) lists the nodes, then watches from
 *     the list's resourceVersion; a dropped watch is resumed from the last
 *     resourceVersion seen; a 410 Gone (the version was compacted away)
 *     makes it list again, and it diffs the new list against its cache, so
 *     nodes deleted meanwhile still come out as deletes.
 *  2) Each node callback is converted (kubenode.ts) and compared with what
 *     we last reported for that node: a changed lease is a put; a node whose
 *     lease key changed (new podCIDR) is a delete of the old key, then a put;
 *     a node that stops being a lease (deleted, annotations removed) is a
 *     delete. Updates that change nothing in the lease (status heartbeats)
 *     produce nothing, as flannel's handleUpdateLeaseEvent.
 *  3) Events of one tick are delivered as one batch. Every completed list
 *     (the first, after a 410, after a restart) and every `resyncMs` adds an
 *     onResync after the batch: the daemon re-lists and diffs.
 *  4) The informer stops on any other error (connection refused, 5xx, 403):
 *     we report it (onError) and start it again after a backoff that
 *     doubles from backoffMinMs to backoffMaxMs and resets once a list
 *     succeeds or an event arrives; each restart is followed by onResync.
 *  5) snapshot() is the informer's cache once it has listed: list() reads
 *     it instead of fetching every node again for every event batch.
 */
import { TwillError, isTwillError } from "../errors.js";
import type { Logger } from "../log.js";
import { apiError, type KubeClient, type NodeInformer, type V1Node } from "./kubeapi.js";
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

export class NodeWatch {
  private informer?: NodeInformer;
  private stopped = false;
  private listed = false;
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
    const o = this.o;
    const inf = o.client.nodeInformer(async () => {
      const list = await o.client.listNodes();
      this.listed = true;
      this.backoffMs = o.backoffMinMs;
      this.requestResync(); // delivered after the informer has applied this list
      return list;
    }, () => this.stopped);
    inf.on("add", (n) => this.changed(n));
    inf.on("update", (n) => this.changed(n));
    inf.on("delete", (n) => this.gone(n));
    inf.on("error", (e) => this.failed(e));
    this.informer = inf;
    inf.start().catch((e) => this.failed(e));
    if (o.resyncMs > 0) {
      this.resyncTimer = setInterval(() => this.requestResync(), o.resyncMs);
      this.resyncTimer.unref();
    }
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.restartTimer);
    clearInterval(this.resyncTimer);
    void this.informer?.stop();
  }

  /** The informer's nodes, once it has listed them; undefined before. */
  snapshot(): readonly V1Node[] | undefined {
    return this.listed && !this.stopped ? this.informer!.list() : undefined;
  }

  private failed(e: unknown): void {
    if (this.stopped) return; // stop() aborts the watch, which reports an error
    const err = apiError("watch nodes", e);
    this.call(() => this.o.handlers.onError(err));
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.o.backoffMaxMs);
    this.o.log.warn("node watch failed; restarting", { err, delayMs: delay });
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      if (this.stopped) return;
      this.requestResync(); // events may have been missed while it was down
      this.informer!.start().catch((e2) => this.failed(e2));
    }, delay);
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
