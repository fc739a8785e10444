/**
 * Leases in etcd (v3 API), kept exactly as flanneld keeps them:
 *
 *   <prefix>/config                          the network config JSON
 *   <prefix>/subnets/10.244.1.0-24           flannel's LeaseAttrs JSON, each put
 *   <prefix>/subnets/10.244.1.0-24&fc00:...  with an etcd lease (TTL 24 h)
 *
 * How it works:
 *  1) acquire = list, chooseSubnet (allocate.ts: our PublicIP's lease, else
 *     the previous subnet, else one of the first 100 free), grant an etcd
 *     lease with the TTL, and write in one transaction:
 *       - a new or previous subnet: if the key's create revision is 0 (it
 *         does not exist, flannel's "version = 0") AND no key under
 *         subnets/ changed since our list (a range compare: mod_revision <
 *         list revision + 1). The second condition also covers two
 *         dual-stack keys sharing one family's subnet ("A&B" vs "C&B"),
 *         which a per-key check cannot see.
 *       - a reuse: if the key's mod revision is still the one we listed.
 *     A failed compare revokes the etcd lease, waits a short random time
 *     and starts again from a fresh list (bounded).
 *  2) Renewal as flanneld: `renewMargin` before expiry, grant a new etcd
 *     lease and put our lease again with it (the old etcd lease is left to
 *     expire, detached); on failure retry every minute. The put is a
 *     transaction "if the key exists": a deleted lease is not brought back
 *     (the watch reports the delete; flanneld exits on it). acquire,
 *     renewal and writeLease run one at a time, so a put can never attach
 *     our key to an etcd lease we already replaced.
 *  3) watch: one watch stream on `<prefix>/subnets/` (etcdclient.ts),
 *     starting right after the
 *     revision of the caller's last list(). Each response's events become
 *     one batch (responses arriving in the same tick are merged).
 *     Compaction (etcd cancels the watch with compact_revision) or a lost
 *     stream (error, end, etcd down): onError for the loss, then, once etcd
 *     answers again (probed with a count-only range, retried with backoff
 *     from 100 ms up to 5 s), onResync(); the watch restarts right after
 *     the revision of the first list() that *starts* after that onResync —
 *     so the daemon's snapshot and the events that follow meet exactly,
 *     and nothing falls between them. If nobody lists within
 *     `resyncWaitMs`, the watch starts after the probe's revision (which
 *     is not newer than any later list, so still nothing is lost).
 *     The first watch() before any list() waits the same way for that list.
 *  4) Errors: every etcd failure is ERR_STORE (retryable), naming the
 *     endpoints (userinfo redacted; a password is never in a message or a
 *     log line, and is refused over plain http:// without
 *     --allow-insecure-credentials: credentials.ts), what was being done
 *     and etcd's message; a bad config is
 *     ERR_INVALID_CONFIG; a bad lease value is returned (list) or
 *     delivered (watch) as an ERR_INVALID_LEASE, never thrown.
 *  5) etcd is reached through its JSON gateway by etcdclient.ts (no gRPC
 *     stack: the etcd3 package cost ~14 MiB of the daemon's idle RSS);
 *     lists alone speak gRPC to the same port, one hand-encoded Range call
 *     at a time over node:http2 (etcdclient.ts 5): etcd's gateway spends
 *     ~1.4 s marshalling 100,000 keys as JSON, its gRPC server ~0.3 s.
 *  6) Lists read only what changed. The last list is kept (every lease,
 *     parsed, with its mod_revision, at its revision R). The next list asks
 *     for the keys changed since (min_mod_revision R+1) in one request,
 *     keys and mod_revisions only (keys_only; the values of those no entry
 *     has at that mod_revision are read in a second request at the same
 *     revision, only when there are any), whose count says how many keys
 *     there are now: when that equals the kept (live) keys plus the new
 *     ones, no key was deleted, and the kept list
 *     with the changes applied IS the store at the new revision. When the
 *     count differs (keys were deleted), every key is read keys-only at
 *     the same revision (in pages): the keys etcd no longer has are gone,
 *     and no value but the changed ones is read. Only when that cannot
 *     tell (etcd is another cluster now: its cluster ID changed; the
 *     revision was compacted) is the list read in full, in pages
 *     (etcdclient.ts scan), and a value whose key and mod_revision are
 *     unchanged is not parsed again. At 100,000 leases a full read costs
 *     ~1 s here (decoding, parsing) and ~0.3 s of etcd's; reading the
 *     changes, ~0.2 s of etcd's (it still reads every key to filter them)
 *     and next to nothing here; reading every key without values, a key
 *     and a number each.
 *     acquire starts from the last list when it is under SNAPSHOT_REUSE_MS
 *     old (the daemon lists right before it acquires): its transaction's
 *     compares fail if anything changed since, and it then lists again.
 *     The watch keeps the kept list current (`adopt`): an event for a key
 *     of the list, after the list's revision, replaces its entry by the
 *     event's (the same parsed lease the caller holds, at the event's
 *     mod_revision) or, for a delete, leaves a tombstone; a put for a key
 *     the list does not have adds it as pending (kept by key, placed in
 *     the list's order by the next list; deleted again, it is forgotten).
 *     So under churn the kept list holds no second copy of the leases
 *     changed or created since (~20 MiB at 100,000 leases; a churn that
 *     replaces keys made every re-list read and parse the values of all the
 *     keys created since), and the next list still trusts no event: it
 *     reads every key changed since the list's revision, re-uses an entry
 *     only where etcd's mod_revision is the entry's, and counts: the
 *     entries that are not tombstones plus the keys it did not know must
 *     be etcd's count, else every key is read. A missed put is a changed
 *     key; a missed delete, a count that differs; a tombstone of a key the changes
 *     do not show is dropped (deleted since the list, not re-created); and a
 *     churning store's re-list (puts and deletes) needs no full read, and
 *     parses only what no event brought. Events arrive in revision order,
 *     so a tombstone newer than a read cannot hide an older delete from the
 *     count. Events keep coming while a list reads: an entry an event
 *     brought after the read's revision (a tombstone too: it carries the
 *     delete's revision) is newer than what etcd answered and stands as it
 *     is (a key created after the read is placed too), so a list is etcd's
 *     at its revision with the events since applied — what the caller
 *     holds too, having had those events. (Under churn — 200 events/s,
 *     10,000 leases — a list nearly always meets such entries; taken for
 *     mismatches they made it a full read.)
 *     acquire captures the chosen key's mod_revision when it chooses.
 */
import { readFileSync } from "node:fs";
import { posix } from "node:path";
import { EtcdCallError, EtcdClient, isLeaseNotFound, type Compare, type EtcdClientOptions, type KeyValue, type ScanOptions, type TextKeyValue, type WatchEvent } from "./etcdclient.js";
import { redactURL, refuseOverHttp } from "./credentials.js";
import { TwillError, errorMessage, isTwillError } from "../errors.js";
import { parseNetConfig } from "../config/netconf.js";
import { chooseSubnet } from "./allocate.js";
import { parseLease, parseLeaseKey, serializeLease } from "./parse.js";
import type { AcquireOptions, LeaseEvent, LeaseSource, ListResult, WatchHandlers } from "./source.js";
import type { Lease, NetConfig } from "./types.js";

export type EtcdLogLevel = "debug" | "info" | "warn" | "error";

export interface EtcdSourceOptions {
  /** --etcd-endpoints, e.g. ["http://127.0.0.1:2379"]; all http:// or all https://. */
  readonly endpoints: readonly string[];
  /** --etcd-prefix; default "/coreos.com/network". */
  readonly prefix?: string;
  /** --etcd-cafile, --etcd-certfile, --etcd-keyfile (PEM; used with https:// endpoints). */
  readonly cafile?: string;
  readonly certfile?: string;
  readonly keyfile?: string;
  /** --etcd-username / --etcd-password. */
  readonly username?: string;
  readonly password?: string;
  /** --allow-insecure-credentials: send username/password to http:// endpoints anyway (refused otherwise). */
  readonly allowInsecureCredentials?: boolean;
  /** --subnet-lease-renew-margin in minutes; default 60. */
  readonly renewMarginMinutes?: number;
  readonly onLog?: (level: EtcdLogLevel, msg: string, fields?: Record<string, unknown>) => void;

  // Test hooks (flanneld's values by default).
  /** TTL of our etcd lease; default 86400 (24 h). */
  readonly leaseTTLSeconds?: number;
  /** Overrides renewMarginMinutes. */
  readonly renewMarginSeconds?: number;
  /** Retry interval after a failed renewal; default 60000. */
  readonly renewRetryMs?: number;
  /** Cap of the watch's reconnect backoff; default 5000. */
  readonly watchBackoffMaxMs?: number;
  /** How long a (re)starting watch waits for the caller's list(); default 5000. */
  readonly resyncWaitMs?: number;
  /** Deadline of each etcd request (not the watch stream); default 15000. */
  readonly callTimeoutMs?: number;
  /** The clock, in ms since the epoch; default Date.now. */
  readonly now?: () => number;
  /** Keys per page of a full list; default etcdclient.ts's (10,000). */
  readonly listPageSize?: number;
}

/** Our lease and the etcd lease it is attached to. */
interface Own {
  lease: Lease;
  leaseId: string;
  /** ms since the epoch. */
  expiresAt: number;
}

/** One key under subnets/ as a list read it. */
interface Entry {
  /** The lease key (the etcd key without the subnets/ prefix). */
  readonly key: string;
  modRevision: string;
  /** The etcd lease the key is attached to ("0": none). */
  etcdLease: string;
  lease?: Lease;
  error?: TwillError;
  /** A delete event after the list's revision (a tombstone; see 6): the key is gone (modRevision: the delete's). */
  gone?: true;
  /** A put event after the list's revision for a key the list did not have (see 6): in byKey, not yet in entries. */
  pending?: true;
}

/** Every key under subnets/ at one revision, in key order (see 6). */
interface Snapshot {
  readonly revision: bigint;
  readonly clusterId: string;
  /** performance.now() when it was read. */
  readonly at: number;
  readonly entries: readonly Entry[];
  /** Every entry, and the pending ones (see Entry). */
  readonly byKey: Map<string, Entry>;
  /** How many entries are tombstones (`gone`). */
  gone: number;
  /** How many entries of byKey are pending (see Entry). */
  pending: number;
}

type WatchEnd =
  | { kind: "stopped" }
  | { kind: "compacted"; compactRevision: bigint }
  | { kind: "lost"; error: unknown };

const MAX_TRIES = 30;
/** acquire may start from a list this recent (ms); see 6. */
const SNAPSHOT_REUSE_MS = 1000;
/** Full reads cut short by a compaction (their pages are read at one revision) are retried this often. */
const SCAN_TRIES = 3;
const byKey = (a: Entry, b: Entry): number => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
const BACKOFF_MIN_MS = 100;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const utf8 = (s: string) => Buffer.from(s, "utf8");

/** The end of etcd's prefix range: the prefix with its last byte incremented. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // all 0xff: to the end of the keyspace
}

/** One watch's stop switch: stop() ends the stream and wakes any wait. */
class WatchControl {
  stopped = false;
  cancelStream: (() => void) | undefined;
  private readonly wakers = new Set<() => void>();
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.cancelStream?.();
    for (const w of [...this.wakers]) w();
  }
  /** Resolves after ms, or at once when stopped. */
  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopped) return resolve();
      const done = () => {
        clearTimeout(t);
        this.wakers.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wakers.add(done);
    });
  }
  onStop(fn: () => void): () => void {
    this.wakers.add(fn);
    return () => this.wakers.delete(fn);
  }
}

export class EtcdSource implements LeaseSource {
  readonly kind = "etcd";
  readonly prefix: string;
  private readonly client: EtcdClient;
  private readonly endpoints: string;
  private readonly configKey: string;
  private readonly subnetsPrefix: string;
  private readonly subnetsKey: Buffer;
  private readonly subnetsEnd: Buffer;
  private readonly ttlSeconds: number;
  private readonly marginMs: number;
  private readonly renewRetryMs: number;
  private readonly backoffMaxMs: number;
  private readonly resyncWaitMs: number;
  private readonly now: () => number;
  private readonly listPageSize: number | undefined;
  private readonly log: NonNullable<EtcdSourceOptions["onLog"]>;

  private own: Own | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  /** acquire, renew and writeLease, one at a time. */
  private ownQueue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private listSeq = 0;
  /** The last list (see 6); snapshots are read one at a time. */
  private snap: Snapshot | undefined;
  private snapping: Promise<unknown> = Promise.resolve();
  private listed: { seq: number; revision: bigint } | undefined;
  private readonly listListeners = new Set<(seq: number, revision: bigint) => void>();
  private readonly watches = new Set<WatchControl>();
  /** What lists did, for tests and debugging: full reads, reads of the changes only (and of those, how many also read values), values parsed. */
  readonly counts = { fullLists: 0, changeLists: 0, keyLists: 0, changeValueReads: 0, parsed: 0 };

  constructor(o: EtcdSourceOptions) {
    if (o.endpoints.length === 0) throw new TwillError("ERR_INVALID_FLAG", "--etcd-endpoints is empty");
    this.endpoints = redactURL(o.endpoints.join(",")); // for messages: no userinfo (credentials.ts)
    this.prefix = o.prefix ?? "/coreos.com/network";
    // flannel builds keys with Go's path.Join, which cleans the prefix ("//a/" → "/a")
    this.configKey = posix.join(this.prefix, "config");
    this.subnetsPrefix = posix.join(this.prefix, "subnets") + "/";
    this.subnetsKey = utf8(this.subnetsPrefix);
    this.subnetsEnd = prefixEnd(this.subnetsKey);
    this.ttlSeconds = o.leaseTTLSeconds ?? 24 * 3600;
    this.marginMs = o.renewMarginSeconds !== undefined ? o.renewMarginSeconds * 1000 : (o.renewMarginMinutes ?? 60) * 60_000;
    if (!(this.marginMs > 0 && this.marginMs < this.ttlSeconds * 1000)) {
      throw new TwillError("ERR_INVALID_FLAG", `--subnet-lease-renew-margin ${this.marginMs / 60_000} minutes is not between 0 and the lease TTL (${this.ttlSeconds / 60} minutes)`);
    }
    this.renewRetryMs = o.renewRetryMs ?? 60_000;
    this.backoffMaxMs = o.watchBackoffMaxMs ?? 5000;
    this.resyncWaitMs = o.resyncWaitMs ?? 5000;
    this.now = o.now ?? Date.now;
    this.listPageSize = o.listPageSize;
    this.log = o.onLog ?? (() => {});
    const options: EtcdClientOptions = {
      endpoints: o.endpoints, callTimeoutMs: o.callTimeoutMs ?? 15_000, ...this.credentials(o),
    };
    // As Go's clientv3: authenticate only when both are set; never over plain http unless allowed (credentials.ts).
    if (o.username && o.password) {
      const warn = refuseOverHttp(["--etcd-username/--etcd-password"], `--etcd-endpoints ${this.endpoints}`, !options.tls, o.allowInsecureCredentials === true);
      if (warn) this.log("warn", warn);
      Object.assign(options, { username: o.username, password: o.password });
    }
    else if (o.username || o.password) this.log("warn", "--etcd-username and --etcd-password go together; connecting without authentication");
    this.client = new EtcdClient(options);
  }

  /**
   * TLS material, chosen as Go's clientv3 does: https:// endpoints always use
   * TLS (the system's roots without a CA file), http:// never (the files are
   * ignored), endpoints without a scheme use TLS when files are given.
   */
  private credentials(o: EtcdSourceOptions): Pick<EtcdClientOptions, "tls" | "ca" | "cert" | "key"> {
    const https = o.endpoints.some((e) => /^https:\/\//i.test(e));
    const http = o.endpoints.some((e) => /^http:\/\//i.test(e));
    if (https && http) throw new TwillError("ERR_INVALID_FLAG", `--etcd-endpoints ${this.endpoints} mixes http:// and https://`);
    if (!!o.certfile !== !!o.keyfile) throw new TwillError("ERR_INVALID_FLAG", "--etcd-certfile and --etcd-keyfile go together");
    const files = !!(o.cafile || o.certfile);
    if (!https && (http || !files)) {
      if (files) this.log("warn", "TLS files are ignored: the etcd endpoints are http://", { endpoints: this.endpoints });
      return { tls: false };
    }
    const read = (flag: string, file: string | undefined): Buffer | undefined => {
      if (!file) return undefined;
      try {
        return readFileSync(file);
      } catch (e) {
        throw new TwillError("ERR_INVALID_FLAG", `${flag} ${file}: ${errorMessage(e)}`, { cause: e });
      }
    };
    const ca = read("--etcd-cafile", o.cafile);
    const cert = read("--etcd-certfile", o.certfile);
    const key = read("--etcd-keyfile", o.keyfile);
    // Without a CA file: the system's roots.
    return { tls: true, ...(ca && { ca }), ...(cert && { cert }), ...(key && { key }) };
  }

  /** Parsed leases the kept list holds (see 6), for tests and debugging. */
  get keptLeases(): number {
    let n = 0;
    for (const e of this.snap?.byKey.values() ?? []) if (e.lease) n++;
    return n;
  }

  /** How lists reach etcd: "grpc", "gateway" (where gRPC cannot be spoken), undefined before the first. */
  get listTransport(): "grpc" | "gateway" | undefined {
    return this.client.scanTransport;
  }

  // ---- errors ------------------------------------------------------------

  private storeError(what: string, e: unknown): TwillError {
    if (isTwillError(e)) return e;
    return new TwillError("ERR_STORE", `etcd ${this.endpoints}: ${what}: ${errorMessage(e)}`, { cause: e, retryable: true });
  }

  /** Runs one etcd request; any failure becomes ERR_STORE naming `what`. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new TwillError("ERR_STORE", `etcd ${this.endpoints}: ${what}: the lease source is closed`, { retryable: false });
    try {
      return await fn();
    } catch (e) {
      throw this.storeError(what, e);
    }
  }

  // ---- reading -----------------------------------------------------------

  async readConfig(): Promise<NetConfig> {
    const r = await this.call(`reading ${this.configKey}`, () => this.client.range(utf8(this.configKey)));
    const kv = r.kvs[0];
    if (!kv) {
      throw new TwillError("ERR_STORE", `etcd ${this.endpoints}: network config ${this.configKey} not found (write it with the etcd v3 API: etcdctl put ${this.configKey} '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}')`, { retryable: true });
    }
    return parseNetConfig(kv.value.toString("utf8"));
  }

  async list(): Promise<ListResult> {
    const seq = ++this.listSeq;
    const s = await this.snapshot();
    if (!this.listed || seq > this.listed.seq) this.listed = { seq, revision: s.revision };
    for (const l of [...this.listListeners]) l(seq, s.revision);
    return this.result(s);
  }

  /**
   * The leases and errors of a snapshot; our own lease carries its expiry when it is attached to our etcd lease.
   * A tombstone is not a lease.
   */
  private result(s: Snapshot): ListResult {
    const leases: Lease[] = [];
    const errors: ListResult["errors"] = [];
    const own = this.own;
    for (const e of s.entries) {
      if (e.gone) continue;
      if (!e.lease) errors.push({ key: e.key, error: e.error! });
      else if (own && e.key === own.lease.key && e.etcdLease === own.leaseId) leases.push({ ...e.lease, expiration: own.expiresAt });
      else leases.push(e.lease);
    }
    return { leases, errors };
  }

  /** The store now (see 6); one read at a time. */
  private snapshot(): Promise<Snapshot> {
    const run = this.snapping.then(() => this.call(`listing ${this.subnetsPrefix}`, async () => {
      const old = this.snap;
      const s = (old && (await this.changedSince(old))) ?? (await this.fullSnapshot(old));
      if (!this.closed) this.snap = s;
      return s;
    }));
    this.snapping = run.then(() => undefined, () => undefined); // (not holding the snapshot itself)
    return run;
  }

  /** `old` brought up to now from the keys changed since; undefined when that cannot tell (see 6). */
  private async changedSince(old: Snapshot): Promise<Snapshot | undefined> {
    const since = { minModRevision: old.revision + 1n, pageSize: 0 };
    // Keys and mod_revisions first (etcd's keys_only): what the watch brought needs no value.
    const { page, kvs: keys } = await this.readAll({ ...since, keysOnly: true });
    if (!page || page.clusterId !== old.clusterId || page.revision < old.revision) return undefined;
    const rev = page.revision;
    const keyOf = (kv: TextKeyValue) => kv.key.slice(this.subnetsPrefix.length);
    /** An event after the read brought e (see 6). */
    const afterRead = (e: Entry) => BigInt(e.modRevision) > rev;
    // The kept entry that stands for kv (see 6): at etcd's mod_revision, or brought by an event after the read (a tombstone too).
    const current = (kv: TextKeyValue): Entry | undefined => {
      const e = old.byKey.get(keyOf(kv));
      return e && ((!e.gone && e.modRevision === kv.modRevision) || afterRead(e)) ? e : undefined;
    };
    // Counted before anything is read or parsed.
    let addedCount = 0;
    for (const kv of keys) {
      const e = old.byKey.get(keyOf(kv));
      if (!e || e.gone) addedCount++;
    }
    // Keys were deleted that no event has told of yet, or an event after the read deleted one: which keys etcd
    // has, every key says — read keys-only at the same revision; no value but the changed ones is read.
    let all: TextKeyValue[] | undefined;
    if (old.byKey.size - old.gone + addedCount !== page.total) {
      try {
        all = (await this.readAll({ keysOnly: true, revision: rev, pageSize: this.listPageSize })).kvs;
      } catch (e) {
        if (isCompacted(e)) return undefined; // read in full at the current revision
        throw e;
      }
      if (all.length !== page.total) return undefined; // (not at one revision: cannot happen)
      this.counts.keyLists++;
    }
    let values: Map<string, TextKeyValue> | undefined;
    if (keys.some((kv) => !current(kv))) {
      try {
        const r = await this.readAll({ ...since, revision: rev });
        values = new Map(r.kvs.map((kv) => [kv.key, kv]));
      } catch (e) {
        if (isCompacted(e)) return undefined; // read in full at the current revision
        throw e;
      }
      this.counts.changeValueReads++;
    }
    const changed: Entry[] = [];
    for (const kv of keys) {
      const e = current(kv);
      const v = e ? undefined : values?.get(kv.key);
      if (!e && (!v || v.modRevision !== kv.modRevision)) return undefined; // (not at one revision: cannot happen)
      changed.push(e ?? this.entry(v!));
    }
    const at = performance.now();
    if (!all && changed.length === 0 && old.gone === 0 && old.pending === 0) {
      this.counts.changeLists++;
      return { ...old, revision: rev, at };
    }
    // The new list: the kept entries brought up to the read, less the tombstones (deleted since the read — an event's —
    // or since the last list and not created again), plus what the list did not have: new keys, and a key an event
    // created (again) after the read, which etcd's answer cannot show.
    const now = new Map(changed.map((e) => [e.key, e]));
    const placed: Entry[] = [];
    if (all) {
      // every key etcd has, in its order: a changed one's entry, else the kept one
      for (const kv of all) {
        const e = now.get(keyOf(kv)) ?? current(kv);
        if (!e) return undefined; // (not at one revision: cannot happen)
        if (!e.gone) placed.push(e);
      }
    } else {
      for (const e of old.entries) {
        const c = now.get(e.key) ?? e;
        if (!c.gone) placed.push(c);
      }
    }
    const map = new Map(placed.map((e) => [e.key, e]));
    const extra: Entry[] = [];
    if (all) {
      for (const e of old.byKey.values()) if (!map.has(e.key) && !e.gone && afterRead(e)) extra.push(e);
    } else {
      for (const e of changed) {
        const o = old.byKey.get(e.key);
        if (!e.gone && (!o || o.pending)) extra.push(e);
      }
      if (old.pending > 0) for (const e of old.byKey.values()) if (e.pending && !now.has(e.key) && afterRead(e)) extra.push(e);
    }
    for (const e of extra) map.set(e.key, e);
    const entries = extra.length === 0 ? placed : merge(placed, extra.sort(byKey));
    if (old.pending > 0) for (const e of entries) e.pending = undefined;
    this.counts.changeLists++;
    return { revision: rev, clusterId: page.clusterId, at, entries, byKey: map, gone: 0, pending: 0 };
  }

  /** A scan of the subnets prefix, its pages joined (the first page's header, every page's kvs). */
  private async readAll(o: ScanOptions): Promise<{ page?: { revision: bigint; clusterId: string; total: number }; kvs: TextKeyValue[] }> {
    let page: { revision: bigint; clusterId: string; total: number } | undefined;
    const kvs: TextKeyValue[] = [];
    for await (const p of this.client.scan(this.subnetsKey, this.subnetsEnd, o)) {
      page ??= p;
      for (const kv of p.kvs) kvs.push(kv);
    }
    return { page, kvs };
  }

  /** Every key, in pages; a value whose key and mod_revision are in `old` is not parsed again. */
  private async fullSnapshot(old: Snapshot | undefined): Promise<Snapshot> {
    for (let attempt = 1; ; attempt++) {
      try {
        let page: { revision: bigint; clusterId: string } | undefined;
        const entries: Entry[] = [];
        for await (const p of this.client.scan(this.subnetsKey, this.subnetsEnd, { pageSize: this.listPageSize })) {
          page ??= p;
          const known = old?.clusterId === p.clusterId ? old.byKey : undefined;
          for (const kv of p.kvs) {
            const was = known?.get(kv.key.slice(this.subnetsPrefix.length));
            entries.push(was && !was.gone && was.modRevision === kv.modRevision ? was : this.entry(kv));
          }
        }
        if (old?.pending) for (const e of entries) e.pending = undefined; // (only an old list's entries can be pending)
        this.counts.fullLists++;
        return { revision: page!.revision, clusterId: page!.clusterId, at: performance.now(), entries, byKey: new Map(entries.map((e) => [e.key, e])), gone: 0, pending: 0 };
      } catch (e) {
        // etcd compacted the revision the pages are read at: read again at the current one
        if (!isCompacted(e) || attempt >= SCAN_TRIES) throw e;
        this.log("debug", "a list was cut short by a compaction; reading it again", { attempt });
      }
    }
  }

  /** One key as a list entry: the lease parsed once, or why it is not one. */
  private entry(kv: TextKeyValue): Entry {
    const key = kv.key.slice(this.subnetsPrefix.length);
    this.counts.parsed++;
    try {
      return { key, modRevision: kv.modRevision, etcdLease: kv.lease, lease: parseLease(key, kv.value) };
    } catch (e) {
      return { key, modRevision: kv.modRevision, etcdLease: kv.lease, error: this.storeError(`parsing lease ${key}`, e) };
    }
  }

  private leaseKey(kv: KeyValue): string {
    return kv.key.toString("utf8").slice(this.subnetsPrefix.length);
  }

  /** parseLease; our own lease carries its expiry when it is attached to our etcd lease. */
  private parse(key: string, kv: KeyValue): Lease {
    const ours = this.own && this.own.lease.key === key && kv.lease === this.own.leaseId;
    return parseLease(key, kv.value.toString("utf8"), ours ? { expiration: this.own!.expiresAt } : {});
  }

  // ---- our lease ---------------------------------------------------------

  /** Runs fn after every earlier acquire/renew/writeLease has finished. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.ownQueue.then(fn, fn);
    this.ownQueue = run.catch(() => undefined);
    return run;
  }

  private async grant(): Promise<{ id: string; ttlSeconds: number }> {
    return this.call(`granting a ${this.ttlSeconds} s etcd lease`, () => this.client.leaseGrant(this.ttlSeconds));
  }

  /** Revokes an etcd lease we granted but did not use; best effort. */
  private async revoke(id: string): Promise<void> {
    try {
      await this.call(`revoking etcd lease ${id}`, () => this.client.leaseRevoke(id));
    } catch (e) {
      this.log("debug", "revoking an unused etcd lease failed (it will expire)", { leaseId: id, err: e });
    }
  }

  /** A transaction that puts `lease` with etcd lease `leaseId` if `compare` holds. */
  private putIf(lease: Lease, leaseId: string, compare: Compare[], what: string): Promise<boolean> {
    const key = utf8(this.subnetsPrefix + lease.key);
    return this.call(`${what} ${this.subnetsPrefix}${lease.key}`, () => this.client.putIf(compare, key, utf8(serializeLease(lease)), leaseId));
  }

  async acquire(opts: AcquireOptions): Promise<Lease> {
    const config = await this.readConfig();
    return this.exclusive(async () => {
      const choose = (snap: Snapshot) => chooseSubnet({
        config, leases: this.result(snap).leases, random: opts.random ?? Math.random,
        ...(opts.publicIP && { publicIP: opts.publicIP }),
        ...(opts.publicIPv6 && { publicIPv6: opts.publicIPv6 }),
        ...(opts.previous && { previous: opts.previous }),
      });
      for (let attempt = 0; attempt < MAX_TRIES; attempt++) {
        // The first attempt may start from a recent list (see 6), unless it would delete leases on its word.
        let snap = attempt === 0 && this.snap && performance.now() - this.snap.at < SNAPSHOT_REUSE_MS ? this.snap : undefined;
        let choice = snap && choose(snap);
        if (!snap || !choice || choice.stale.length > 0) {
          snap = await this.snapshot();
          choice = choose(snap);
        }
        // What the choice saw, taken now: a watch event may update the kept list's entry during the awaits below (see 6).
        const chosenRevision = snap.byKey.get(choice.key)?.modRevision ?? "0";
        for (const l of choice.stale) {
          this.log("info", "deleting our lease that does not fit the network config", { key: l.key });
          await this.call(`deleting ${this.subnetsPrefix}${l.key}`, () => this.client.deleteRange(utf8(this.subnetsPrefix + l.key)));
        }
        const lease: Lease = {
          key: choice.key,
          ...(choice.subnet && { subnet: choice.subnet }),
          ...(choice.ipv6Subnet && { ipv6Subnet: choice.ipv6Subnet }),
          ...(opts.publicIP && { publicIP: opts.publicIP }),
          ...(opts.publicIPv6 && { publicIPv6: opts.publicIPv6 }),
          backendType: opts.backendType ?? "vxlan",
          ...(opts.backendData && { backendData: opts.backendData }),
          ...(opts.backendV6Data && { backendV6Data: opts.backendV6Data }),
        };
        const key = utf8(this.subnetsPrefix + lease.key);
        const compare: Compare[] = choice.kind === "reuse"
          ? [{ key, target: "MOD", result: "EQUAL", value: chosenRevision }]
          : [
            { key, target: "CREATE", result: "EQUAL", value: "0" },
            { key: this.subnetsKey, rangeEnd: this.subnetsEnd, target: "MOD", result: "LESS", value: (snap.revision + 1n).toString() },
          ];
        const t0 = this.now();
        const grant = await this.grant();
        let ok: boolean;
        try {
          ok = await this.putIf(lease, grant.id, compare, choice.kind === "reuse" ? "reusing" : "creating");
        } catch (e) {
          await this.revoke(grant.id);
          throw e;
        }
        if (ok) {
          this.own = { lease, leaseId: grant.id, expiresAt: t0 + grant.ttlSeconds * 1000 };
          this.log("info", choice.kind === "reuse" ? "reusing the lease of our public IP" : choice.kind === "previous" ? "re-acquired our previous subnet" : "acquired a new subnet", {
            key: lease.key, etcdLease: grant.id, ttlSeconds: grant.ttlSeconds,
          });
          this.scheduleRenew();
          return { ...lease, expiration: this.own.expiresAt };
        }
        await this.revoke(grant.id);
        this.log("debug", "lost a race for a subnet; trying again", { key: lease.key, attempt });
        await sleep(Math.random() * Math.min(1000, 10 * 2 ** attempt));
      }
      throw new TwillError("ERR_LEASE_CONFLICT", `etcd ${this.endpoints}: gave up after ${MAX_TRIES} conflicting attempts to acquire a subnet`, { retryable: true });
    });
  }

  async writeLease(lease: Lease): Promise<void> {
    parseLeaseKey(lease.key);
    return this.exclusive(async () => {
      const own = this.own;
      if (own && own.lease.key !== lease.key) {
        throw new TwillError("ERR_LEASE_CONFLICT", `cannot write lease ${lease.key}: our lease is ${own.lease.key}`);
      }
      const key = utf8(this.subnetsPrefix + lease.key);
      const value = utf8(serializeLease(lease));
      const what = `writing ${this.subnetsPrefix}${lease.key}`;
      if (own) {
        try {
          await this.client.put(key, value, own.leaseId);
          own.lease = lease;
          this.scheduleRenew();
          return;
        } catch (e) {
          if (!isLeaseNotFound(e)) throw this.storeError(what, e);
          this.log("warn", "our etcd lease has expired; attaching a new one", { key: lease.key, etcdLease: own.leaseId });
        }
      }
      const t0 = this.now();
      const grant = await this.grant();
      try {
        await this.call(what, () => this.client.put(key, value, grant.id));
      } catch (e) {
        await this.revoke(grant.id);
        throw e;
      }
      this.own = { lease, leaseId: grant.id, expiresAt: t0 + grant.ttlSeconds * 1000 };
      this.scheduleRenew();
    });
  }

  private scheduleRenew(delayMs?: number): void {
    clearTimeout(this.renewTimer);
    const own = this.own;
    if (this.closed || !own) return;
    const delay = delayMs ?? Math.max(0, own.expiresAt - this.marginMs - this.now());
    this.renewTimer = setTimeout(() => void this.exclusive(() => this.renew()), delay);
    this.renewTimer.unref();
  }

  /** flanneld's RenewLease: a new etcd lease, our lease put again with it. */
  private async renew(): Promise<void> {
    const own = this.own;
    if (this.closed || !own) return;
    const path = this.subnetsPrefix + own.lease.key;
    try {
      const t0 = this.now();
      const grant = await this.grant();
      let ok: boolean;
      try {
        ok = await this.putIf(own.lease, grant.id, [{ key: utf8(path), target: "VERSION", result: "GREATER", value: "0" }], "renewing");
      } catch (e) {
        await this.revoke(grant.id);
        throw e;
      }
      if (!ok) {
        await this.revoke(grant.id);
        this.log("error", "our lease is gone from etcd; not renewing it", { key: own.lease.key });
        return;
      }
      own.leaseId = grant.id;
      own.expiresAt = t0 + grant.ttlSeconds * 1000;
      this.log("info", "lease renewed", { key: own.lease.key, etcdLease: grant.id, expires: new Date(own.expiresAt).toISOString() });
      this.scheduleRenew();
    } catch (e) {
      if (this.closed) return;
      this.log("error", `renewing our lease failed; trying again in ${this.renewRetryMs / 1000} s`, { key: own.lease.key, err: e });
      this.scheduleRenew(this.renewRetryMs);
    }
  }

  // ---- watching ----------------------------------------------------------

  watch(handlers: WatchHandlers): () => void {
    const ctl = new WatchControl();
    if (this.closed) return () => {};
    this.watches.add(ctl);
    // The daemon's handlers must not break the loop.
    const safe = <A extends unknown[]>(name: string, fn: (...a: A) => void) => (...a: A) => {
      try {
        fn(...a);
      } catch (e) {
        this.log("error", `lease watch: the ${name} handler threw`, { err: e });
      }
    };
    const h: WatchHandlers = {
      onEvents: safe("onEvents", (ev: readonly LeaseEvent[]) => handlers.onEvents(ev)),
      onResync: safe("onResync", () => handlers.onResync()),
      onError: safe("onError", (e: TwillError) => handlers.onError(e)),
    };
    void this.watchLoop(h, ctl)
      .catch((e) => h.onError(this.storeError("lease watch stopped", e)))
      .finally(() => this.watches.delete(ctl));
    return () => ctl.stop();
  }

  private async watchLoop(h: WatchHandlers, ctl: WatchControl): Promise<void> {
    let start = this.listed ? this.listed.revision + 1n : undefined;
    let resync = false;
    let backoff = BACKOFF_MIN_MS;
    const retryAfter = async (what: string, e: unknown) => {
      h.onError(this.storeError(what, e));
      await ctl.wait(backoff);
      backoff = Math.min(backoff * 2, this.backoffMaxMs);
    };
    while (!ctl.stopped) {
      if (start === undefined) {
        // Start after a list the caller has seen: see the design note, 3).
        let probe: bigint;
        try {
          probe = await this.currentRevision();
        } catch (e) {
          if (ctl.stopped) return;
          await retryAfter("reconnecting the lease watch", e);
          continue;
        }
        if (ctl.stopped) return;
        const afterSeq = resync ? this.listSeq : 0;
        if (resync) h.onResync();
        const listed = await this.nextList(afterSeq, ctl);
        if (ctl.stopped) return;
        if (listed === undefined) {
          this.log("warn", `no list() within ${this.resyncWaitMs} ms; watching from the current revision`, { revision: probe.toString() });
          if (!resync) h.onResync();
        }
        start = (listed ?? probe) + 1n;
        resync = false;
      }
      let createdAt: number | undefined;
      const end = await this.watchFrom(start, h, ctl, () => (createdAt = Date.now()));
      if (end.kind === "stopped" || ctl.stopped) return;
      // A watch that stayed up a while starts its retries afresh; one that keeps dying at once backs off.
      if (createdAt !== undefined && Date.now() - createdAt >= this.backoffMaxMs) backoff = BACKOFF_MIN_MS;
      start = undefined;
      resync = true;
      if (end.kind === "compacted") {
        this.log("warn", "lease watch fell behind etcd's compaction; re-listing", { compactRevision: end.compactRevision.toString() });
      } else {
        await retryAfter(`watching ${this.subnetsPrefix}`, end.error);
      }
    }
  }

  /** The store's revision now (a count-only range: cheap). */
  private async currentRevision(): Promise<bigint> {
    const r = await this.call(`reading the revision of ${this.subnetsPrefix}`, () =>
      this.client.range(this.subnetsKey, this.subnetsEnd, { countOnly: true }));
    return r.revision;
  }

  /** The revision of the first list() numbered above `afterSeq` to succeed; undefined on timeout or stop. */
  private nextList(afterSeq: number, ctl: WatchControl): Promise<bigint | undefined> {
    if (this.listed && this.listed.seq > afterSeq) return Promise.resolve(this.listed.revision);
    return new Promise((resolve) => {
      const done = (rev: bigint | undefined) => {
        clearTimeout(timer);
        this.listListeners.delete(listener);
        offStop();
        resolve(rev);
      };
      const listener = (seq: number, rev: bigint) => { if (seq > afterSeq) done(rev); };
      const timer = setTimeout(() => done(undefined), this.resyncWaitMs);
      const offStop = ctl.onStop(() => done(undefined));
      this.listListeners.add(listener);
    });
  }

  /** One watch stream from `start` until it is stopped, compacted or lost. */
  private watchFrom(start: bigint, h: WatchHandlers, ctl: WatchControl, onCreated: () => void): Promise<WatchEnd> {
    return new Promise<WatchEnd>((resolve) => {
      let done = false;
      let pending: LeaseEvent[] = [];
      const flush = () => {
        const batch = pending;
        pending = [];
        if (batch.length > 0 && !ctl.stopped) h.onEvents(batch);
      };
      const finish = (end: WatchEnd) => {
        if (done) return;
        done = true;
        ctl.cancelStream = undefined;
        if (end.kind !== "stopped") flush(); // what arrived before the end, in order
        cancel();
        resolve(end);
      };
      if (ctl.stopped) return resolve({ kind: "stopped" });
      const cancel = this.client.watch({ key: this.subnetsKey, rangeEnd: this.subnetsEnd, startRevision: start }, {
        data: (res) => {
          if (done) return;
          if (res.compactRevision !== 0n) return finish({ kind: "compacted", compactRevision: res.compactRevision });
          if (res.canceled) return finish({ kind: "lost", error: new Error(`etcd canceled the watch${res.cancelReason ? `: ${res.cancelReason}` : ""}`) });
          if (res.created) return onCreated();
          if (res.events.length === 0) return;
          if (pending.length === 0) setImmediate(() => { if (!done) flush(); });
          for (const ev of res.events) pending.push(this.toEvent(ev));
        },
        lost: (error) => finish({ kind: "lost", error }),
      });
      ctl.cancelStream = () => finish({ kind: "stopped" });
    });
  }

  private toEvent(ev: WatchEvent): LeaseEvent {
    const key = this.leaseKey(ev.kv);
    let out: LeaseEvent;
    if (ev.type === "delete") out = { type: "delete", key };
    else {
      try {
        out = { type: "put", key, lease: this.parse(key, ev.kv) };
      } catch (e) {
        out = { type: "put", key, error: this.storeError(`parsing lease ${key}`, e) };
      }
    }
    this.adopt(ev.kv, out);
    return out;
  }

  /**
   * Keeps the kept list current (see 6): an event for one of its keys after
   * its revision replaces the entry by the event's lease (or error), at the
   * event's mod_revision, or makes it a tombstone; a put for a key it does
   * not have adds a pending entry (a delete of which forgets it).
   */
  private adopt(kv: KeyValue, ev: LeaseEvent): void {
    const snap = this.snap;
    if (!snap || !/^[1-9][0-9]*$/.test(kv.modRevision) || BigInt(kv.modRevision) <= snap.revision) return;
    const e = snap.byKey.get(ev.key);
    if (!e) {
      // A key the list does not have: kept (pending) until the next list places it.
      if (ev.type === "put") {
        snap.byKey.set(ev.key, { key: ev.key, modRevision: kv.modRevision, etcdLease: kv.lease, lease: ev.lease, error: ev.error, pending: true });
        snap.pending++;
      }
      return;
    }
    if (ev.type === "delete" && e.pending) {
      // deleted again before a list placed it: forgotten, no tombstone
      snap.byKey.delete(ev.key);
      snap.pending--;
      return;
    }
    if (ev.type === "delete") {
      if (!e.gone) snap.gone++;
      e.gone = true;
      e.modRevision = kv.modRevision; // the delete's revision
      e.lease = e.error = undefined;
      return;
    }
    if (e.gone) snap.gone--;
    e.gone = undefined;
    e.modRevision = kv.modRevision;
    e.etcdLease = kv.lease;
    e.lease = ev.lease;
    e.error = ev.error;
  }

  // ---- closing -----------------------------------------------------------

  /** Stops renewing and watching and closes the client; our lease stays in etcd until it expires. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.snap = undefined;
    clearTimeout(this.renewTimer);
    for (const w of [...this.watches]) w.stop();
    this.client.close();
  }
}

/** etcd refused a read at a revision it has compacted away. */
const isCompacted = (e: unknown): boolean => e instanceof EtcdCallError && /compacted/.test(e.message);

/** Two key-ordered lists as one. */
function merge(a: readonly Entry[], b: readonly Entry[]): Entry[] {
  const out: Entry[] = [];
  let i = 0, j = 0;
  while (i < a.length && j < b.length) out.push(byKey(a[i]!, b[j]!) <= 0 ? a[i++]! : b[j++]!);
  while (i < a.length) out.push(a[i++]!);
  while (j < b.length) out.push(b[j++]!);
  return out;
}
