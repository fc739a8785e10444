/**
 * Where leases come from: the one interface the daemon uses, implemented by
 * the embedded directory store (dirsource.ts), etcd (etcdsource.ts) and the
 * Kubernetes API (kubesource.ts).
 *
 * How it works: a source hands out typed Leases only (parsed once, at its
 * edge, by lease/parse.ts; a bad entry is reported with its key and error,
 * never thrown). `watch` delivers changes in batches of LeaseEvents, in
 * order; when the source cannot deliver exact events (a lost watch, etcd
 * compaction, a 410 Gone, or a store with no change feed) it calls
 * `onResync` instead, and the daemon re-lists and diffs (flannel's
 * Reset(snapshot)), so a missed event can never leave stale state. Our own
 * lease is renewed by the source until close(); if it is lost, the source
 * reports a delete event for its key.
 */
import type { IP } from "../net/ip.js";
import type { TwillError } from "../errors.js";
import type { Lease, NetConfig, VxlanLeaseData } from "./types.js";
import type { LeaseSubnets } from "./parse.js";

export interface AcquireOptions {
  readonly publicIP?: IP;
  readonly publicIPv6?: IP;
  /** The subnets in our subnet file from a previous run. */
  readonly previous?: LeaseSubnets;
  /** Default "vxlan". */
  readonly backendType?: string;
  readonly backendData?: VxlanLeaseData;
  readonly backendV6Data?: VxlanLeaseData;
  readonly random?: () => number;
}

export interface ListResult {
  readonly leases: Lease[];
  /** Entries that could not be parsed, by key. */
  readonly errors: { key: string; error: TwillError }[];
}

export interface LeaseEvent {
  readonly type: "put" | "delete";
  readonly key: string;
  /** The new value of a put that parsed. */
  readonly lease?: Lease;
  /** A put whose value did not parse. */
  readonly error?: TwillError;
}

export interface WatchHandlers {
  /** A batch of changes, in order. */
  onEvents(events: readonly LeaseEvent[]): void;
  /** Events may have been missed: re-list and diff. */
  onResync(): void;
  /** A failure the source will retry by itself (logged and counted by the daemon). */
  onError(e: TwillError): void;
}

export interface LeaseSource {
  /** "dir", "etcd" or "kube", for logs and metrics. */
  readonly kind: string;
  /** The network config. */
  readConfig(): Promise<NetConfig>;
  /** Every lease now. */
  list(): Promise<ListResult>;
  /** Acquires our lease (reusing ours when there is one) and keeps it alive until close(). */
  acquire(opts: AcquireOptions): Promise<Lease>;
  /**
   * Kubernetes: the public addresses our node's node-public-ip /
   * node-public-ipv6 annotations pin (flannel's GetStoredPublicIP); they
   * override --public-ip(v6) and choose the interface. Other sources: absent.
   */
  storedPublicIPs?(): Promise<{ v4?: IP; v6?: IP }>;
  /** Writes our lease again (after someone overwrote it). */
  writeLease(lease: Lease): Promise<void>;
  /** Starts delivering changes; returns stop(). */
  watch(handlers: WatchHandlers): () => void;
  /** Stops renewing and watching; leaves the lease in place. */
  close(): Promise<void>;
}
