/**
 * Watching nodes: list + watch (client-go's reflector, done by hand) turned
 * into LeaseEvents.
 *
 * How it works:
 *  1) List the nodes (kubeapi.ts keeps only the fields twill reads; the
 *     first time, the list the caller has just fetched when it offers one:
 *     `firstList`, kubesource.ts 9), apply the list to our cache, then watch
 *     from the list's resourceVersion with bookmarks on. Every event and
 *     bookmark moves our resourceVersion on; a watch that ends cleanly
 *     (the server's timeoutSeconds, a dropped connection closed properly)
 *     is resumed from it, without a re-list.
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
 *  7) Two nodes with one podCIDR (or overlapping ones): kubeclaims.ts
 *     decides who holds it, the same on every node and across restarts. The
 *     holder is the lease; the other is reported as an ERR_LEASE_CONFLICT
 *     error under the key node/<name> (never under the shared lease key, so
 *     that nothing said about it can touch the holder's lease). A change of
 *     one node re-decides the nodes that share its subnets; the deletes of
 *     such a change are emitted before its puts, so a batch where the holder
 *     goes and the next node takes the subnet ends with that node's put.
 *  8) Our own node, once acquired (`own`), is not a watched lease: as
 *     flannel's LeaseWatcher, which drops every event for our subnet, its
 *     changes and its deletion produce no event (they are logged), and it
 *     holds our subnet first in our view. resolveNodes, for list(), puts the
 *     acquired lease in its place.
 */
import { TwillError, isTwillError } from "../errors.js";
import type { Logger } from "../log.js";
import { apiError, KubeHttpError, type KubeClient, type V1Node, type V1NodeList, type WatchEventType } from "./kubeapi.js";
import { SubnetClaims } from "./kubeclaims.js";
import { conflictError, nodeClaim, nodeName, nodeToLease, tryNodeLeaseKey, type AnnotationNames, type Families, type NodeLike } from "./kubenode.js";
import { serializeLease } from "./parse.js";
import type { LeaseEvent, ListResult, WatchHandlers } from "./source.js";
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
  /** Our node and the lease we acquired from it (8); undefined before acquire. */
  readonly own?: () => OwnNode | undefined;
  /** A list just fetched by the caller, for the first list instead of fetching it again (taken once; later lists fetch). */
  readonly firstList?: () => V1NodeList | undefined;
}

/** Our node, once its lease is acquired. */
export interface OwnNode {
  readonly name: string;
  readonly lease: Lease;
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

/** Our node's claim: the subnets of the lease we acquired, first in our view. */
function ownClaim(own: OwnNode, created = "") {
  return { name: own.name, created, subnets: [own.lease.subnet, own.lease.ipv6Subnet].filter((p) => p !== undefined), own: true };
}

/** A node's entry as reported: its own (nodeEntry), or a conflict when another node holds its podCIDR (7). */
function reportedEntry(n: NodeLike, entry: NodeEntry | undefined, claims: SubnetClaims): NodeEntry | undefined {
  const d = claims.denial(nodeName(n));
  return d ? { key: `node/${nodeName(n)}`, error: conflictError(n, d) } : entry;
}

/**
 * Every node as a ListResult, conflicts decided (7), sorted by node name;
 * with `own`, our node is the acquired lease whatever the node says now (8).
 */
export function resolveNodes(nodes: readonly V1Node[], names: AnnotationNames, families: Families, own?: OwnNode): ListResult {
  const claims = new SubnetClaims();
  const result: ListResult = { leases: [], errors: [] };
  const sorted = [...nodes].sort((a, b) => nodeName(a).localeCompare(nodeName(b)));
  const entries = sorted.map((n) => (nodeName(n) === own?.name ? undefined : nodeEntry(n, names, families)));
  const all = sorted.flatMap((n, i) => {
    if (nodeName(n) === own?.name) return [];
    const c = nodeClaim(n, names, families, entries[i]?.lease);
    return c ? [c] : [];
  });
  claims.setAll(own ? [ownClaim(own), ...all] : all);
  sorted.forEach((n, i) => {
    const e = nodeName(n) === own?.name ? { key: own!.lease.key, lease: own!.lease } : reportedEntry(n, entries[i], claims);
    if (e?.lease) result.leases.push(e.lease);
    else if (e?.error) result.errors.push({ key: e.key, error: e.error });
  });
  if (own && !nodes.some((n) => nodeName(n) === own.name)) result.leases.push(own.lease);
  return result;
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
  /** What we last reported for each node (its key and signature). */
  private readonly known = new Map<string, { key: string; sig: string }>();
  /** Each node's own entry (before conflicts), for re-deciding it when another node changes. */
  private readonly entries = new Map<string, { node: V1Node; entry?: NodeEntry }>();
  private readonly claims = new SubnetClaims();
  /** Our node as it was when we last logged a difference from our acquired lease (8). */
  private ownSeen?: string;
  private queue: LeaseEvent[] = [];
  private resyncPending = false;
  private flushScheduled = false;
  /** Whether the first list (firstList) has been asked for. */
  private firstTaken = false;
  private backoffMs: number;
  private restartTimer?: NodeJS.Timeout;
  private resyncTimer?: NodeJS.Timeout;

  constructor(private readonly o: NodeWatchOptions) {
    this.backoffMs = o.backoffMinMs;
  }

  start(): void {
    this.ownAcquired();
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
    let list = this.firstTaken ? undefined : this.o.firstList?.();
    this.firstTaken = true;
    try {
      list ??= await this.o.client.listNodes();
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
    const own = this.o.own?.();
    if (own && name === own.name) return this.ownChanged(n, own);
    const entry = nodeEntry(n, this.o.names, this.o.families);
    this.entries.set(name, { node: n, ...(entry && { entry }) });
    this.report(this.claims.set(name, nodeClaim(n, this.o.names, this.o.families, entry?.lease)));
  }

  private gone(n: V1Node): void {
    this.backoffMs = this.o.backoffMinMs;
    const name = nodeName(n);
    const own = this.o.own?.();
    if (own && name === own.name) {
      this.o.log.warn("our node was deleted from the API; ignored, as flannel does: our lease and the dataplane stay as they are", { node: name });
      this.ownSeen = undefined;
      return;
    }
    this.entries.delete(name);
    this.report(this.claims.set(name, undefined));
  }

  /** 8): our lease is acquired (now, or before the watch started): our node is ours from now on. */
  ownAcquired(): void {
    const own = this.o.own?.();
    if (!own || this.stopped) return;
    const n = this.cache.get(own.name);
    if (n) this.ownChanged(n, own);
    else this.report(this.claims.set(own.name, ownClaim(own)).filter((x) => x !== own.name));
  }

  /** 8): our node holds our subnet; a change that differs from our lease is logged once, not reported. */
  private ownChanged(n: V1Node, own: OwnNode): void {
    if (this.known.has(own.name) || this.entries.has(own.name)) {
      // Seen as a peer before we acquired: it is ours now (no event; the daemon holds our key).
      this.known.delete(own.name);
      this.entries.delete(own.name);
    }
    this.report(this.claims.set(own.name, ownClaim(own, n.metadata.creationTimestamp)).filter((x) => x !== own.name));
    const e = nodeEntry(n, this.o.names, this.o.families);
    const sig = e ? signature(e) : "not a lease";
    if (sig === serializeLease(own.lease) || sig === this.ownSeen) return;
    this.ownSeen = sig;
    this.o.log.info("our node's flannel annotations differ from our lease; ignored, as flannel does (restart to take them)", { node: own.name, now: e?.error?.message ?? sig });
  }

  /**
   * Reports what changed for `names` (3, 7): first the deletes of keys they
   * leave, then their puts.
   */
  private report(names: readonly string[]): void {
    const puts: LeaseEvent[] = [];
    for (const name of names) {
      const prev = this.known.get(name);
      const cur = this.entries.get(name);
      const next = cur && reportedEntry(cur.node, cur.entry, this.claims);
      if (prev && (!next || next.key !== prev.key)) this.emit({ type: "delete", key: prev.key });
      if (!next) {
        this.known.delete(name);
        continue;
      }
      const sig = signature(next);
      if (!prev || prev.key !== next.key || prev.sig !== sig) {
        puts.push({ type: "put", key: next.key, ...(next.lease && { lease: next.lease }), ...(next.error && { error: next.error }) });
      }
      this.known.set(name, { key: next.key, sig });
    }
    for (const p of puts) this.emit(p);
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
