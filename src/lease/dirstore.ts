/**
 * The embedded lease store: a directory laid out like flannel's etcd keys.
 *
 *   <dir>/config                          the network config JSON
 *   <dir>/subnets/10.244.1.0-24           one lease per file, named by its key,
 *   <dir>/subnets/10.244.2.0-24&fc00:...  holding flannel's LeaseAttrs JSON
 *   <dir>/subnets/.<key>.<pid>.<n>.tmp    temp files (dotfiles are never read)
 *
 * How it works:
 *  - Every write goes to a dotfile first, so a reader never sees a partial
 *    lease: an update is temp + rename(2) (atomic replace); a creation is
 *    temp + link(2), which fails with EEXIST when the key exists — the
 *    O_CREAT|O_EXCL of a directory, and the equivalent of flannel's
 *    "create if version = 0" etcd transaction. (Where link(2) is not
 *    supported we fall back to open(O_CREAT|O_EXCL) + write.)
 *  - acquire = list, chooseSubnet (allocate.ts), create; on EEXIST list
 *    again and retry (bounded). Exclusive create covers two nodes picking
 *    the same key; it does not cover two dual-stack keys sharing a subnet
 *    ("A&B" vs "A&C"). So after creating, we list again and give the
 *    subnet up (delete, retry) if any other lease overlaps ours. This is
 *    safe: of two overlapping creators, the later one's check runs after
 *    the earlier one's create, so at least one of them sees the other and
 *    yields; if both yield, each waits a random, growing backoff before it
 *    picks again, so ties do not repeat forever.
 *  - list() never throws for a bad lease file: it returns it in `errors`.
 *  - list() is incremental (100,000 leases cost a full read once, not at
 *    every list): every lease read is cached with its file's stamp (inode,
 *    size, mtime, ctime, in ns). A full validation stats every file and
 *    re-reads only those whose stamp changed (or that changed too soon
 *    before they were read to trust the stamp: the racy-git rule). Between
 *    full validations the store's own fs.watch on subnets/ names the files
 *    that changed, and only those are read again; before trusting it, list()
 *    lets the event loop turn twice, so every event of a change that
 *    completed before the call has been read. A full validation runs on
 *    the first list, when the watcher is not running or failed, when the
 *    directory changed but no event said so (lost events: inotify's queue
 *    overflows silently), and at least every FULL_EVERY_MS, which bounds
 *    how long a lost event can hide a change. Reads are synchronous
 *    syscalls in slices of at most SLICE_MS (a thread-pool round trip per
 *    file costs more than the read), yielding to the event loop between
 *    slices. Lists run one at a time.
 *  - The cache survives restarts in an index file (dirindex.ts): the first
 *    full validation of a fresh process takes its entries from the index
 *    instead of reading the files, with the same stat + stamp check, so a
 *    file changed since the index was written (or too soon before it was
 *    read) is read again, and a missing or bad index only costs the reads.
 *    The index is rewritten after a list when the cache's leases changed,
 *    at most every INDEX_EVERY_MS, never when nothing changed (and only
 *    for directories of at least INDEX_MIN_LEASES: smaller ones list fast).
 *  - The check after a create does not trust the cache: it reads the
 *    directory's names (a lease's subnets are its key) and reads only the
 *    files whose key overlaps ours.
 * There are no TTLs here: a lease lives until deleted. Errors: bad config →
 * ERR_INVALID_CONFIG; I/O → ERR_STORE (retryable).
 */
import { closeSync, fstatSync, mkdirSync, openSync, readSync, statSync, watch as fsWatch, type FSWatcher, type Stats } from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { TwillError, isTwillError } from "../errors.js";
import { parseNetConfig } from "../config/netconf.js";
import { chooseSubnet, leasesOverlap } from "./allocate.js";
import { encodeIndex, loadIndex, saveIndex, type IndexEntry } from "./dirindex.js";
import { parseLease, parseLeaseKey, serializeLease } from "./parse.js";
import type { LeaseSubnets } from "./parse.js";
import type { Lease, NetConfig } from "./types.js";
import type { AcquireOptions, ListResult } from "./source.js";

export type { AcquireOptions, ListResult } from "./source.js";

const MAX_TRIES = 30;
/** The longest a lost watch event can hide a change from list(). */
export const FULL_EVERY_MS = 10_000;
/** The longest list() holds the event loop before it yields. */
const SLICE_MS = 8;
/** A file changed less than this (ms) before it was read may change again with the same stamp (coarse timestamps). */
const RACY_MS = 1000;
/** The index is written at most this often (ms). */
export const INDEX_EVERY_MS = 5000;
/** Directories with fewer leases get no index. */
export const INDEX_MIN_LEASES = 1000;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const turn = () => new Promise<void>((r) => setImmediate(r));
let tmpCounter = 0;

/** What identifies one version of a file (times in ms with a fraction: sub-µs resolution; numbers, not
 * bigints: 100,000 BigIntStats cost more in garbage collection than the stat calls). */
interface Stamp { readonly ino: number; readonly size: number; readonly mtimeMs: number; readonly ctimeMs: number }
const stampOf = (st: Stats): Stamp => ({ ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs });
const sameStamp = (a: Stamp | undefined, b: Stamp): boolean =>
  !!a && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;
const NO_STAMP: Stamp = { ino: -1, size: -1, mtimeMs: -1, ctimeMs: -1 };

/** One lease file as last read: its stamp then, and the lease or why it is not one. */
interface Entry extends Stamp {
  /** Date.now() when it was read. */
  readonly readAt: number;
  readonly lease?: Lease;
  readonly error?: TwillError;
  /** An I/O error: read again at the next list, whatever the stamp says. */
  readonly transient?: boolean;
}

/** Yields to the event loop once SLICE_MS have passed since the last yield. */
class Slicer {
  private since = performance.now();
  /** A promise to await when it is time to yield (undefined otherwise: `await` costs even then). */
  tick(): Promise<void> | undefined {
    if (performance.now() - this.since < SLICE_MS) return undefined;
    return turn().then(() => { this.since = performance.now(); });
  }
}

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;

function storeError(what: string, e: unknown): TwillError {
  if (isTwillError(e)) return e;
  return new TwillError("ERR_STORE", `lease store: ${what}: ${(e as Error).message ?? String(e)}`, { cause: e, retryable: true });
}

export interface DirStoreOptions {
  /** Default INDEX_EVERY_MS. */
  readonly indexEveryMs?: number;
  /** Default INDEX_MIN_LEASES; Infinity: no index. */
  readonly indexMinLeases?: number;
}

export class DirStore {
  readonly dir: string;
  readonly subnetsDir: string;
  /** Every lease file by name, as last read (list()'s cache). */
  private readonly cache = new Map<string, Entry>();
  /** The cache's names in order; undefined when a name came or went. */
  private sorted?: string[];
  /** The last result, while nothing changed. */
  private last?: ListResult;
  /** Names the watcher (or our own writes) saw change since the last list. */
  private dirty = new Set<string>();
  /** The next list must stat every file: no watcher yet, a failed one, an event without a name. */
  private needFull = true;
  private lastFull = -Infinity;
  private dirStamp?: Stamp;
  private watcher?: FSWatcher;
  private listing: Promise<unknown> = Promise.resolve();
  private buf = Buffer.alloc(16384);
  private readonly indexEveryMs: number;
  private readonly indexMinLeases: number;
  /** The cache's leases changed since the index was loaded or written. */
  private indexDirty = false;
  private indexSavedAt = -Infinity;
  private indexTimer?: NodeJS.Timeout;
  private indexSaving?: Promise<void>;
  /** What the store did, for tests and debugging: files read, index entries used, index files written. */
  readonly counts = { reads: 0, fromIndex: 0, indexWrites: 0 };

  constructor(dir: string, opts: DirStoreOptions = {}) {
    this.dir = dir;
    this.subnetsDir = path.join(dir, "subnets");
    this.indexEveryMs = opts.indexEveryMs ?? INDEX_EVERY_MS;
    this.indexMinLeases = opts.indexMinLeases ?? INDEX_MIN_LEASES;
  }

  /** Stops the store's own watcher and index timer (list() keeps working, every list then stats every file). */
  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.needFull = true;
    clearTimeout(this.indexTimer);
    this.indexTimer = undefined;
  }

  /** Resolves when no index write is under way (one that fails is given up: the next change retries). */
  async idle(): Promise<void> {
    while (this.indexSaving) await this.indexSaving;
  }

  async readConfig(): Promise<NetConfig> {
    const file = path.join(this.dir, "config");
    let text: string;
    try {
      text = await fs.readFile(file, "utf8");
    } catch (e) {
      throw storeError(errno(e) === "ENOENT" ? `network config ${file} not found` : `reading ${file}`, e);
    }
    return parseNetConfig(text);
  }

  async writeConfig(text: string): Promise<void> {
    parseNetConfig(text); // refuse to store a config nobody can read
    await this.atomicWrite(path.join(this.dir, "config"), text, this.dir);
  }

  /** Every lease now (one list at a time; see the design note at the top). */
  list(): Promise<ListResult> {
    const run = this.listing.then(() => this.listNow());
    this.listing = run.catch(() => undefined);
    return run;
  }

  private async listNow(): Promise<ListResult> {
    let dirStat: Stats;
    try {
      dirStat = await fs.stat(this.subnetsDir);
    } catch (e) {
      if (errno(e) !== "ENOENT") throw storeError(`listing ${this.subnetsDir}`, e);
      this.forget();
      return { leases: [], errors: [] };
    }
    if (this.dirStamp && dirStat.ino !== this.dirStamp.ino) this.forget(); // subnets/ was replaced
    this.startWatcher();
    // Two turns of the event loop: the watcher has read the events of every
    // change that completed before this call (the first turn may end the
    // poll phase that was running when we were called).
    await turn();
    await turn();
    const stamp = stampOf(await fs.stat(this.subnetsDir).catch(() => dirStat));
    const dirChanged = !sameStamp(this.dirStamp, stamp);
    const dirty = this.dirty;
    const full = this.needFull || !this.watcher || performance.now() - this.lastFull > FULL_EVERY_MS || (dirChanged && dirty.size === 0);
    this.dirty = new Set();
    this.needFull = false;
    this.dirStamp = stamp;
    try {
      if (full) await this.validateAll();
      else await this.reread(dirty);
    } catch (e) {
      this.needFull = true; // a validation cut short: do it again
      throw e;
    }
    this.saveIndexSoon();
    return this.result();
  }

  /** Drops the cache and the watcher (the directory is gone or was replaced). */
  private forget(): void {
    this.cache.clear();
    this.sorted = this.last = undefined;
    this.dirStamp = undefined;
    this.close();
  }

  /** Starts the store's own watcher on subnets/ (after a failure, the next list tries again). */
  private startWatcher(): void {
    if (this.watcher) return;
    try {
      const w = fsWatch(this.subnetsDir, { persistent: false }, (_event, name) => {
        if (name === null) this.needFull = true;
        else if (!String(name).startsWith(".")) this.dirty.add(String(name));
      });
      w.on("error", () => {
        w.close();
        if (this.watcher === w) this.close();
      });
      this.watcher = w;
      this.needFull = true; // what changed before it started, it did not see
    } catch {
      this.watcher = undefined; // e.g. out of inotify watches: every list is a full one
    }
  }

  /** Stats every file; reads those that are new, changed, or changed too close to their last read. */
  private async validateAll(): Promise<void> {
    let names: string[];
    try {
      names = (await fs.readdir(this.subnetsDir)).filter((n) => !n.startsWith("."));
    } catch (e) {
      throw storeError(`listing ${this.subnetsDir}`, e);
    }
    const live = new Set(names);
    for (const name of this.cache.keys()) if (!live.has(name)) this.drop(name);
    const slicer = new Slicer();
    const tick = () => slicer.tick();
    // A fresh cache starts from the index: its entries are checked like the cache's, below.
    const seed = this.cache.size === 0 && names.length >= this.indexMinLeases && this.dirStamp
      ? await loadIndex(this.dir, this.dirStamp.ino, tick) : undefined;
    let seeded = 0;
    const prefix = this.subnetsDir + path.sep;
    for (const name of names) {
      const wait = slicer.tick();
      if (wait) await wait;
      const cached = this.cache.get(name);
      const e: Entry | undefined = cached ?? seed?.get(name);
      if (e && !e.transient) {
        let st: Stats | undefined;
        try {
          st = statSync(prefix + name, { throwIfNoEntry: false });
        } catch {
          st = undefined; // read below, which reports the error
        }
        if (st && sameStamp(e, stampOf(st)) && e.ctimeMs + RACY_MS <= e.readAt) {
          if (!cached) {
            this.adopt(name, e);
            seeded++;
          }
          continue;
        }
      }
      this.read(name);
    }
    if (seed) {
      this.counts.fromIndex += seeded;
      if (seeded !== seed.size) this.indexDirty = true; // it holds entries that are gone or changed
    }
    this.lastFull = performance.now();
  }

  /** Takes a verified index entry into the cache (it changes nothing the index holds). */
  private adopt(name: string, e: Entry): void {
    this.cache.set(name, e);
    this.sorted = this.last = undefined;
  }

  /** Writes the index now or, within INDEX_EVERY_MS of the last write, when that has passed. */
  private saveIndexSoon(): void {
    if (!this.indexDirty || this.indexSaving || this.indexTimer || this.cache.size < this.indexMinLeases || !this.dirStamp) return;
    const wait = this.indexSavedAt + this.indexEveryMs - performance.now();
    if (wait > 0) {
      this.indexTimer = setTimeout(() => {
        this.indexTimer = undefined;
        this.saveIndexSoon();
      }, wait).unref();
      return;
    }
    this.indexDirty = false; // a change from here on is written next time
    this.indexSavedAt = performance.now();
    const slicer = new Slicer();
    const ino = this.dirStamp.ino;
    const indexed = function* (cache: Map<string, Entry>): Generator<[string, IndexEntry]> {
      for (const [name, e] of cache) if (e.lease && !e.transient) yield [name, e as IndexEntry];
    };
    this.indexSaving = encodeIndex(ino, indexed(this.cache), () => slicer.tick())
      .then((text) => saveIndex(this.dir, text))
      .then(() => { this.counts.indexWrites++; }, () => undefined) // a hint only (e.g. a read-only directory): the next change retries
      .finally(() => { this.indexSaving = undefined; });
  }

  /** Reads the named files again (what the watcher and our own writes saw change). */
  private async reread(names: Iterable<string>): Promise<void> {
    const slicer = new Slicer();
    for (const name of names) {
      await slicer.tick();
      this.read(name);
    }
    // I/O errors are retried at every list.
    for (const [name, e] of this.cache) if (e.transient) this.read(name);
  }

  /** Reads one lease file into the cache (synchronous: open, fstat, read, close). */
  private read(name: string): void {
    const file = path.join(this.subnetsDir, name);
    const readAt = Date.now();
    this.counts.reads++;
    let fd: number;
    try {
      fd = openSync(file, "r");
    } catch (e) {
      if (errno(e) === "ENOENT") this.drop(name); // deleted
      else this.put(name, { ...NO_STAMP, readAt, error: storeError(`reading lease ${name}`, e), transient: true });
      return;
    }
    let stamp: Stamp;
    let text: string;
    try {
      stamp = stampOf(fstatSync(fd));
      let n = 0;
      for (;;) {
        if (n === this.buf.length) this.buf = Buffer.concat([this.buf, Buffer.alloc(this.buf.length)]);
        const k = readSync(fd, this.buf, n, this.buf.length - n, null);
        if (k === 0) break;
        n += k;
      }
      text = this.buf.toString("utf8", 0, n);
    } catch (e) {
      this.put(name, { ...NO_STAMP, readAt, error: storeError(`reading lease ${name}`, e), transient: true });
      return;
    } finally {
      closeSync(fd);
    }
    try {
      this.put(name, { ...stamp, readAt, lease: parseLease(name, text) });
    } catch (e) {
      this.put(name, { ...stamp, readAt, error: isTwillError(e) ? e : storeError(`parsing lease ${name}`, e) });
    }
  }

  private put(name: string, e: Entry): void {
    const old = this.cache.get(name);
    if (!old) this.sorted = undefined;
    if (old?.lease || e.lease) this.indexDirty = true; // the index holds leases only
    this.last = undefined;
    this.cache.set(name, e);
  }

  private drop(name: string): void {
    const old = this.cache.get(name);
    if (!old) return;
    this.cache.delete(name);
    this.sorted = this.last = undefined;
    if (old.lease) this.indexDirty = true;
  }

  /** The cached leases in key order (fresh arrays: the caller may change them). */
  private result(): ListResult {
    if (!this.last) {
      this.sorted ??= [...this.cache.keys()].sort();
      const out: ListResult = { leases: [], errors: [] };
      for (const key of this.sorted) {
        const e = this.cache.get(key)!;
        if (e.lease) out.leases.push(e.lease);
        else out.errors.push({ key, error: e.error! });
      }
      this.last = out;
    }
    return { leases: this.last.leases.slice(), errors: this.last.errors.slice() };
  }

  /**
   * Whether a lease other than `lease` overlaps it, from the directory as it
   * is now (not the cache): names first, then only the files whose key overlaps.
   */
  private async overlapped(lease: Lease): Promise<boolean> {
    let names: string[];
    try {
      names = await fs.readdir(this.subnetsDir);
    } catch (e) {
      throw storeError(`listing ${this.subnetsDir}`, e);
    }
    const slicer = new Slicer();
    for (const name of names) {
      if (name.startsWith(".") || name === lease.key) continue;
      await slicer.tick();
      let subnets: LeaseSubnets | undefined = this.cache.get(name)?.lease;
      if (!subnets) {
        try {
          subnets = parseLeaseKey(name);
        } catch {
          continue; // not a lease key: list() reports it, it holds no subnet
        }
      }
      if (!leasesOverlap(subnets, lease)) continue;
      this.read(name); // a key overlaps ours: is it a lease now?
      const now = this.cache.get(name)?.lease;
      if (now && leasesOverlap(now, lease)) return true;
    }
    return false;
  }

  /** Finds or creates our lease; see the design note at the top. */
  async acquire(opts: AcquireOptions = {}): Promise<Lease> {
    const config = await this.readConfig();
    await this.mkdirs();
    for (let attempt = 0; attempt < MAX_TRIES; attempt++) {
      const { leases } = await this.list();
      const choice = chooseSubnet({ config, leases, random: opts.random ?? Math.random, ...pick(opts, "publicIP", "publicIPv6", "previous") });
      for (const l of choice.stale) await this.deleteLease(l.key);
      const lease: Lease = {
        key: choice.key,
        ...pick(choice, "subnet", "ipv6Subnet"),
        ...pick(opts, "publicIP", "publicIPv6", "backendData", "backendV6Data"),
        backendType: opts.backendType ?? "vxlan",
      };
      if (choice.kind === "reuse") {
        await this.writeLease(lease);
        return lease;
      }
      if (!(await this.create(lease))) continue; // someone took the key: look again
      if (await this.overlapped(lease)) {
        await this.deleteLease(lease.key); // lost (or tied) a race on one family's subnet
        await sleep(Math.random() * Math.min(1000, 5 * 2 ** attempt)); // random backoff breaks ties
        continue;
      }
      return lease;
    }
    throw new TwillError("ERR_LEASE_CONFLICT", `lease store: gave up after ${MAX_TRIES} conflicting attempts to acquire a subnet`, { retryable: true });
  }

  /** Writes (creates or replaces) a lease atomically. */
  async writeLease(lease: Lease): Promise<void> {
    parseLeaseKey(lease.key);
    await this.mkdirs();
    try {
      await this.atomicWrite(path.join(this.subnetsDir, lease.key), serializeLease(lease), this.subnetsDir);
    } finally {
      this.dirty.add(lease.key); // the next list reads it, whatever the watcher has seen yet
    }
  }

  /** Deletes a lease; a missing one is not an error. */
  async deleteLease(key: string): Promise<void> {
    parseLeaseKey(key); // a key, not a path
    try {
      await fs.unlink(path.join(this.subnetsDir, key));
    } catch (e) {
      if (errno(e) !== "ENOENT") throw storeError(`deleting lease ${key}`, e);
    } finally {
      this.dirty.add(key);
    }
  }

  /** Calls onChange (debounced) after leases are added, changed or removed. Returns stop(). */
  watch(onChange: () => void, opts: { debounceMs?: number; onError?: (e: TwillError) => void } = {}): () => void {
    const debounceMs = opts.debounceMs ?? 100;
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const fire = () => {
      if (stopped) return;
      clearTimeout(timer);
      timer = setTimeout(() => { if (!stopped) onChange(); }, debounceMs);
    };
    let watcher: FSWatcher;
    try {
      mkdirSync(this.subnetsDir, { recursive: true }); // fs.watch needs the directory
      watcher = fsWatch(this.subnetsDir, (_event, name) => {
        if (name === null || !String(name).startsWith(".")) fire();
      });
    } catch (e) {
      throw storeError(`watching ${this.subnetsDir}`, e);
    }
    watcher.on("error", (e) => opts.onError?.(storeError(`watching ${this.subnetsDir}`, e)));
    return () => {
      stopped = true;
      clearTimeout(timer);
      watcher.close();
    };
  }

  private async mkdirs(): Promise<void> {
    try {
      await fs.mkdir(this.subnetsDir, { recursive: true });
    } catch (e) {
      throw storeError(`creating ${this.subnetsDir}`, e);
    }
  }

  private tempPath(dir: string, name: string): string {
    return path.join(dir, `.${name}.${process.pid}.${tmpCounter++}.tmp`);
  }

  private async atomicWrite(file: string, text: string, dir: string): Promise<void> {
    const tmp = this.tempPath(dir, path.basename(file));
    try {
      await fs.writeFile(tmp, text, { flag: "wx" });
      await fs.rename(tmp, file);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw storeError(`writing ${file}`, e);
    }
  }

  /** Creates a lease only if its key is free; false when it exists. */
  private async create(lease: Lease): Promise<boolean> {
    const file = path.join(this.subnetsDir, lease.key);
    const text = serializeLease(lease);
    const tmp = this.tempPath(this.subnetsDir, lease.key);
    try {
      await fs.writeFile(tmp, text, { flag: "wx" });
      await fs.link(tmp, file);
      return true;
    } catch (e) {
      if (errno(e) === "EEXIST") return false;
      if (["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"].includes(errno(e) ?? "")) return this.createNoLink(file, text);
      throw storeError(`creating lease ${lease.key}`, e);
    } finally {
      this.dirty.add(lease.key);
      await fs.rm(tmp, { force: true });
    }
  }

  private async createNoLink(file: string, text: string): Promise<boolean> {
    try {
      await fs.writeFile(file, text, { flag: "wx" });
      return true;
    } catch (e) {
      if (errno(e) === "EEXIST") return false;
      throw storeError(`creating ${file}`, e);
    }
  }
}

/** The defined properties of `o` among `keys` (so optional fields stay absent, not undefined). */
function pick<T extends object, K extends keyof T>(o: T, ...keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}
