/**
 * The embedded lease store: a directory laid out like flannel's etcd keys.
 *
 *   <dir>/config                          the network config JSON
 *   <dir>/subnets/10.244.1.0-24           one lease per file, named by its key,
 *   <dir>/subnets/10.244.2.0-24&fc00:...  holding flannel's LeaseAttrs JSON
 *   <dir>/subnets/.<key>.<random>.tmp     temp files (dotfiles are never read)
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
 *    Only regular files of at most MAX_LEASE_BYTES are read (saferead.ts:
 *    lstat, open O_NOFOLLOW|O_NONBLOCK, fstat the fd): a FIFO, device,
 *    socket, directory or symlink is never opened, a bigger file never read;
 *    each is an error (ERR_LEASE_FILE, naming the file and its kind or
 *    size), cached by its lstat stamp like a lease, so it costs one lstat
 *    per full validation and blocks nothing. Stamps are lstat's, not stat's
 *    (a symlink's own, never its target's).
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
 *    how long a lost event can hide a change. Stamps are synchronous
 *    lstat(2)s in slices of at most SLICE_MS (a thread-pool round trip
 *    costs more than the call, and lstat never waits on a file's content),
 *    yielding to the event loop between slices. Reads are the same:
 *    synchronous safe reads (saferead.ts: lstat, open O_NOFOLLOW|O_NONBLOCK,
 *    fstat, a read bounded by MAX_LEASE_BYTES) in slices of SLICE_MS — a
 *    FIFO or device is never opened blocking, so no file can hold the event
 *    loop, and a lease costs ~10 µs instead of five thread-pool round trips
 *    (measured, 3,000 files, machine loaded: 174 ms sync, 520 ms async 8 at
 *    a time). Lists, and the reads of the check after a create, run one at
 *    a time.
 *  - The cache survives restarts in an index file (dirindex.ts): the first
 *    full validation of a fresh process takes its entries from the index
 *    instead of reading the files, with the same stat + stamp check, so a
 *    file changed since the index was written (or too soon before it was
 *    read) is read again, and a missing or bad index only costs the reads.
 *    The index is rewritten after a list when the cache's leases changed,
 *    at most every INDEX_EVERY_MS, never when nothing changed (and only
 *    for directories of at least INDEX_MIN_LEASES: smaller ones list fast).
 *    The first write waits INDEX_EVERY_MS after the first list, so it does
 *    not compete with the daemon's start-up (encoding 100,000 leases takes
 *    a few hundred ms of the event loop).
 *  - A fresh start without an index reads every file: lstat, open, fstat,
 *    one read of the size fstat gave (a second read would only confirm the
 *    end), close; lease/parse.ts reads flannel's own text without
 *    JSON.parse. A file that readdir (getdents' d_type) says is regular
 *    skips the lstat in the reader threads: the lstat would only say the
 *    same, the fstat of what was opened decides either way, and the race it
 *    leaves (a file swapped between the look and the open) is the one the
 *    lstat left too. The syscalls are most of the cost (~7 µs a file; ~4 µs
 *    each on a paravirtualised 2-core VM: 100,000 lstats 0.45 s), so when
 *    a full validation has at least PARALLEL_MIN files to check or read
 *    (or READ_PARALLEL_MIN to read), they are shared out to READERS worker
 *    threads that do just that (readerThread: lstat(2) the files the cache
 *    or the index has an entry for, read the others the same careful way —
 *    a file that is not a regular one of at most MAX_LEASE_BYTES is left
 *    to this thread, which reports it), and post stamps and file bytes back
 *    in batches; this thread compares the stamps (a changed file is read
 *    after), parses and caches each batch as it comes. A file a reader
 *    could not read, and every file of a reader that failed, is read here, so errors are reported
 *    as for any read. The key order list() returns is kept up to date by
 *    binary insertion when a few names come or go, not re-sorted.
 *  - The check after a create does not trust the cache: it reads the
 *    directory's names (a lease's subnets are its key) and reads only the
 *    files whose key overlaps ours (an IPv4 key is checked from its text,
 *    without a lookup or a parse: 100,000 names cost ~10 ms after readdir).
 *  - Writes (atomicfile.ts): temp files have unpredictable names and are
 *    created with O_EXCL|O_NOFOLLOW, mode 0644 whatever the umask, and
 *    fsynced before the rename or link (the directory after). The
 *    directory and subnets/ are created 0755 whatever the umask: leases
 *    hold nothing secret (flannel's are readable by every node), and
 *    `twill status` may run unprivileged; only their writers must be
 *    trusted, and 0755 keeps other users from writing.
 * There are no TTLs here: a lease lives until deleted. Errors: bad config →
 * ERR_INVALID_CONFIG; a file in subnets/ that is not read → ERR_LEASE_FILE;
 * I/O → ERR_STORE (retryable).
 */
import { lstatSync, watch as fsWatch, type FSWatcher, type Stats } from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { makeDirs, syncDir, writeAtomic, writeExclusive, writeTemp } from "../atomicfile.js";
import { TwillError, isTwillError } from "../errors.js";
import { readRegularFile, readRegularFileSync } from "../saferead.js";
import { parseNetConfig } from "../config/netconf.js";
import { chooseSubnet, leasesOverlap } from "./allocate.js";
import { encodeIndex, loadIndex, saveIndex, type IndexEntry } from "./dirindex.js";
import { parseLease, parseLeaseKey, serializeLease, v4KeyOverlaps } from "./parse.js";
import type { LeaseSubnets } from "./parse.js";
import type { Lease, NetConfig } from "./types.js";
import type { AcquireOptions, ListResult } from "./source.js";

export type { AcquireOptions, ListResult } from "./source.js";

const MAX_TRIES = 30;
/** The biggest lease file read (flannel's are ~200 bytes); a bigger one is reported, not read. */
export const MAX_LEASE_BYTES = 64 * 1024;
/** The biggest network config read (flannel's are well under 1 KiB). */
const MAX_CONFIG_BYTES = 1024 * 1024;
/** Files and directories the store creates (see the design note). */
const FILE_MODE = 0o644;
const DIR_MODE = 0o755;
/** The longest a lost watch event can hide a change from list(). */
export const FULL_EVERY_MS = 10_000;
/** The longest list() holds the event loop before it yields. */
const SLICE_MS = 8;
/** More names than this coming or going between two lists: sort the key order again instead of inserting. */
const SORTED_EDITS = 256;
/** A list with at least this many files to check (stat) or read shares them out to reader threads. */
export const PARALLEL_MIN = 4000;
/** ... and the same for files to read (reads here are synchronous safe reads in slices, as cheap as a stat). */
export const READ_PARALLEL_MIN = PARALLEL_MIN;
/** Reader threads at most (and no more than the machine's CPUs). */
const READERS = 2;
/** Files per message from a reader thread. */
const READ_BATCH = 1000;
/** A file changed less than this (ms) before it was read may change again with the same stamp (coarse timestamps). */
const RACY_MS = 1000;
/** The index is written at most this often (ms). */
export const INDEX_EVERY_MS = 5000;
/** Directories with fewer leases get no index. */
export const INDEX_MIN_LEASES = 1000;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const turn = () => new Promise<void>((r) => setImmediate(r));

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
  /** Reader threads for big reads (default READERS, at most the CPUs); 0 or 1: none. */
  readonly readers?: number;
  /** Default PARALLEL_MIN. */
  readonly parallelMin?: number;
  /** Test hook: reader threads die after posting this many batches (of `readBatch` files). */
  readonly readerDiesAfter?: number;
  /** Test hook: files per reader batch; default READ_BATCH. */
  readonly readBatch?: number;
}

export class DirStore {
  readonly dir: string;
  readonly subnetsDir: string;
  /** subnetsDir and a separator: the prefix of every lease file's path. */
  private readonly filePrefix: string;
  /** Every lease file by name, as last read (list()'s cache). */
  private readonly cache = new Map<string, Entry>();
  /** The cache's names in order; undefined when many names came or went since it was made. */
  private sorted?: string[];
  /** Names inserted into or removed from `sorted` since it was last sorted. */
  private sortedEdits = 0;
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
  private readonly indexEveryMs: number;
  private readonly indexMinLeases: number;
  private readonly readers: number;
  private readonly parallelMin: number;
  private readonly readParallelMin: number;
  private readonly readerDiesAfter: number;
  private readonly readBatch: number;
  /** The cache's leases changed since the index was loaded or written. */
  private indexDirty = false;
  private indexSavedAt = -Infinity;
  private indexTimer?: NodeJS.Timeout;
  private indexSaving?: Promise<void>;
  /** What the store did, for tests and debugging: files read, index entries used, index files written. */
  readonly counts = { reads: 0, fromIndex: 0, indexWrites: 0 };

  /** What the reader threads did, for tests and debugging: files they read, threads that failed. */
  readonly parallel = { files: 0, failed: 0 };

  constructor(dir: string, opts: DirStoreOptions = {}) {
    this.dir = dir;
    this.subnetsDir = path.join(dir, "subnets");
    this.filePrefix = this.subnetsDir + path.sep;
    this.indexEveryMs = opts.indexEveryMs ?? INDEX_EVERY_MS;
    this.indexMinLeases = opts.indexMinLeases ?? INDEX_MIN_LEASES;
    this.readers = Math.min(opts.readers ?? READERS, availableParallelism());
    this.parallelMin = opts.parallelMin ?? PARALLEL_MIN;
    this.readParallelMin = Math.min(this.parallelMin, READ_PARALLEL_MIN);
    this.readerDiesAfter = opts.readerDiesAfter ?? Infinity;
    this.readBatch = opts.readBatch ?? READ_BATCH;
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
    let got: Awaited<ReturnType<typeof readRegularFile>>;
    try {
      got = await readRegularFile(file, MAX_CONFIG_BYTES);
    } catch (e) {
      throw storeError(errno(e) === "ENOENT" ? `network config ${file} not found` : `reading ${file}`, e);
    }
    if (!got.ok) throw new TwillError("ERR_STORE", `lease store: network config ${file} ${got.why}: not read`, { retryable: true });
    return parseNetConfig(got.text);
  }

  async writeConfig(text: string): Promise<void> {
    parseNetConfig(text); // refuse to store a config nobody can read
    await this.mkdirs();
    await this.atomicWrite(path.join(this.dir, "config"), text);
  }

  /** Every lease now (one list at a time; see the design note at the top). */
  list(): Promise<ListResult> {
    return this.serial(() => this.listNow());
  }

  /** Runs `fn` after every list (and serial read) before it, and before any after it. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.listing.then(fn);
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
    const out = this.result(); // also puts the key order in place, which the index is written in
    this.saveIndexSoon();
    return out;
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
    // With their types (getdents' d_type, no stat): a file readdir calls regular is read without an lstat first (the
    // reader's fstat of what it opened still decides, as after an lstat; anything else takes the lstat path and is refused).
    const names: string[] = [];
    let regular: Uint8Array;
    try {
      const ents = await fs.readdir(this.subnetsDir, { withFileTypes: true });
      regular = new Uint8Array(ents.length);
      for (const d of ents) {
        if (d.name.startsWith(".")) continue;
        regular[names.length] = d.isFile() ? 1 : 0;
        names.push(d.name);
      }
    } catch (e) {
      throw storeError(`listing ${this.subnetsDir}`, e);
    }
    if (this.cache.size > 0) {
      const live = new Set(names);
      for (const name of this.cache.keys()) if (!live.has(name)) this.drop(name);
    }
    const slicer = new Slicer();
    const tick = () => slicer.tick();
    // A fresh cache starts from the index: its entries are checked like the cache's, below.
    const seed = this.cache.size === 0 && names.length >= this.indexMinLeases && this.dirStamp
      ? await loadIndex(this.dir, this.dirStamp.ino, tick) : undefined;
    let seeded = 0;
    // Files with an entry (cached, or from the index) are checked by their stamp; the others are read.
    const check: string[] = [], entries: Entry[] = [], toRead: string[] = [], toReadRegular: number[] = [];
    for (let k = 0; k < names.length; k++) {
      const wait = slicer.tick();
      if (wait) await wait;
      const name = names[k]!;
      const e: Entry | undefined = this.cache.get(name) ?? seed?.get(name);
      if (e && !e.transient) {
        check.push(name);
        entries.push(e);
      } else {
        toRead.push(name);
        toReadRegular.push(regular[k]!);
      }
    }
    const changed: string[] = [];
    /** A checked file's stamp now (undefined: gone or unreadable): its entry stands (taken from the index), or it is read. */
    const verdict = (i: number, st: Stamp | undefined): void => {
      const name = check[i]!, e = entries[i]!;
      if (st && sameStamp(e, st) && e.ctimeMs + RACY_MS <= e.readAt) {
        if (this.cache.get(name) !== e) {
          this.adopt(name, e);
          seeded++;
        }
      } else {
        changed.push(name); // read below, which also reports a file gone or an error
      }
    };
    if ((check.length + toRead.length >= this.parallelMin || toRead.length >= this.readParallelMin) && this.readers > 1) {
      const reg = new Uint8Array(check.length + toRead.length);
      reg.set(toReadRegular, check.length);
      await this.inThreads([...check, ...toRead], check.length, verdict, reg);
    } else {
      const prefix = this.filePrefix;
      for (let i = 0; i < check.length; i++) {
        const wait = slicer.tick();
        if (wait) await wait;
        let st: Stats | undefined;
        try {
          st = lstatSync(prefix + check[i], { throwIfNoEntry: false });
        } catch {
          st = undefined;
        }
        verdict(i, st && stampOf(st));
      }
      await this.readMany(toRead);
    }
    await this.readMany(changed);
    if (seed) {
      this.counts.fromIndex += seeded;
      if (seeded !== seed.size) this.indexDirty = true; // it holds entries that are gone or changed
    }
    this.lastFull = performance.now();
    // The first index write waits a period after the first list (start-up is busy enough).
    if (this.indexSavedAt === -Infinity) this.indexSavedAt = this.lastFull;
  }

  /** Takes a verified index entry into the cache (it changes nothing the index holds). */
  private adopt(name: string, e: Entry): void {
    if (!this.cache.has(name)) this.sortedInsert(name);
    this.cache.set(name, e);
    this.last = undefined;
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
    // In key order (reads run concurrently: the cache's own order varies), from a copy of the order (the cache may change meanwhile).
    const order = this.sorted ? this.sorted.slice() : [...this.cache.keys()].sort();
    const indexed = function* (cache: Map<string, Entry>): Generator<[string, IndexEntry]> {
      for (const name of order) {
        const e = cache.get(name);
        if (e?.lease && !e.transient) yield [name, e as IndexEntry];
      }
    };
    this.indexSaving = encodeIndex(ino, indexed(this.cache), () => slicer.tick())
      .then((text) => saveIndex(this.dir, text))
      .then(() => { this.counts.indexWrites++; }, () => undefined) // a hint only (e.g. a read-only directory): the next change retries
      .finally(() => { this.indexSaving = undefined; });
  }

  /** Reads the named files again (what the watcher and our own writes saw change). */
  private async reread(names: Iterable<string>): Promise<void> {
    await this.readAll(names);
    // I/O errors are retried at every list.
    const again: string[] = [];
    for (const [name, e] of this.cache) if (e.transient) again.push(name);
    if (again.length) await this.readAll(again);
  }

  /** Reads `names` into the cache, in slices of SLICE_MS that yield to the event loop between them. */
  private async readAll(names: Iterable<string>): Promise<void> {
    let slice = performance.now();
    for (const name of names) {
      this.read(name);
      if (performance.now() - slice >= SLICE_MS) {
        await new Promise<void>((r) => setImmediate(r));
        slice = performance.now();
      }
    }
  }

  /** Reads the named files into the cache: here, or by reader threads when there are many (see the design note). */
  private async readMany(names: readonly string[]): Promise<void> {
    if (names.length >= this.readParallelMin && this.readers > 1) return this.inThreads(names, 0, () => undefined);
    await this.readAll(names);
  }

  /**
   * Shares `names` out to the reader threads: the first `statBelow` are
   * only stat(2)ed, their stamps handed to `onStat` (by index in `names`);
   * the others are read into the cache.
   */
  private inThreads(names: readonly string[], statBelow: number, onStat: (i: number, st: Stamp | undefined) => void, regular?: Uint8Array): Promise<void> {
    const threads = this.readers;
    const cut = (i: number) => Math.floor((i * names.length) / threads);
    return Promise.all(Array.from({ length: threads }, (_, i) =>
      this.readInThread(names.slice(cut(i), cut(i + 1)), Math.max(0, Math.min(cut(i + 1), statBelow) - cut(i)), (k, st) => onStat(cut(i) + k, st), regular?.slice(cut(i), cut(i + 1))))).then(() => undefined);
  }

  /**
   * Reads (or, the first `statBelow`, stats) `names` in a reader thread;
   * what it does not deliver is read here. Never rejects.
   */
  private readInThread(names: readonly string[], statBelow: number, onStat: (i: number, st: Stamp | undefined) => void, regular?: Uint8Array): Promise<void> {
    /** Files read by the thread; `left`: files it has not reported on yet (read or not). */
    const done = new Uint8Array(names.length);
    let left = names.length;
    return new Promise<void>((resolve) => {
      let worker: Worker | undefined;
      let finished = false;
      const finish = () => {
        if (finished) return;
        finished = true;
        void worker?.terminate();
        if (left > 0) this.parallel.failed++;
        // Whatever the thread did not deliver (it failed or died): read here, errors and all.
        void this.readAll(names.filter((_, i) => !done[i])).then(resolve, resolve);
      };
      try {
        worker = new Worker(`(${readerThread.toString()})()`, { eval: true, execArgv: [], workerData: { prefix: this.filePrefix, names, statBelow, regular, batch: this.readBatch, diesAfter: this.readerDiesAfter, maxBytes: MAX_LEASE_BYTES } });
      } catch {
        return finish(); // no thread: read it all here
      }
      worker.on("message", (m: ReaderBatch) => {
        if (finished) return;
        const st = m.stamps, bytes = Buffer.from(m.bytes);
        for (let i = 0, j = 0; i < m.count; i++, j += 5) {
          const at = m.from + i;
          left--;
          if (at < statBelow) {
            onStat(at, Number.isNaN(st[j]!) ? undefined : { ino: st[j]!, size: st[j + 1]!, mtimeMs: st[j + 2]!, ctimeMs: st[j + 3]! });
            done[at] = 1;
            continue;
          }
          if (Number.isNaN(st[j]!)) continue; // not read there: read here
          this.counts.reads++;
          this.parallel.files++;
          this.settle(names[at]!, st[j]!, st[j + 1]!, st[j + 2]!, st[j + 3]!, st[j + 4]!, bytes.toString("utf8", m.ends[i - 1] ?? 0, m.ends[i]));
          done[at] = 1;
        }
        if (m.last) finish();
      });
      worker.on("error", finish);
      worker.on("exit", finish);
    });
  }

  /**
   * Reads one lease file into the cache: only a regular file within
   * MAX_LEASE_BYTES (saferead.ts); anything else is cached as an
   * ERR_LEASE_FILE error with its stamp. Never rejects.
   */
  private read(name: string): void {
    const readAt = Date.now();
    this.counts.reads++;
    let got: ReturnType<typeof readRegularFileSync>;
    try {
      got = readRegularFileSync(this.filePrefix + name, MAX_LEASE_BYTES);
    } catch (e) {
      if (errno(e) === "ENOENT") this.drop(name); // deleted
      else this.put(name, { ...NO_STAMP, readAt, error: storeError(`reading lease ${name}`, e), transient: true });
      return;
    }
    const st = got.stat;
    if (got.ok) {
      this.settle(name, st.ino, st.size, st.mtimeMs, st.ctimeMs, readAt, got.text);
      return;
    }
    const error = new TwillError("ERR_LEASE_FILE", `lease file ${name} ${got.why}: skipped`);
    // One that changed under us is looked at again at the next list, whatever its stamp says.
    this.put(name, got.raced
      ? { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, readAt, error, transient: true }
      : { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, readAt, error });
  }

  /** Caches what a file held: the lease, or why it is not one. */
  private settle(name: string, ino: number, size: number, mtimeMs: number, ctimeMs: number, readAt: number, text: string): void {
    // One shape for every lease entry (the index's too): no spreads, they cost at 100,000 files.
    try {
      this.put(name, { ino, size, mtimeMs, ctimeMs, readAt, lease: parseLease(name, text) });
    } catch (e) {
      this.put(name, { ino, size, mtimeMs, ctimeMs, readAt, error: isTwillError(e) ? e : storeError(`parsing lease ${name}`, e) });
    }
  }

  private put(name: string, e: Entry): void {
    const old = this.cache.get(name);
    if (!old) this.sortedInsert(name);
    if (old?.lease || e.lease) this.indexDirty = true; // the index holds leases only
    this.last = undefined;
    this.cache.set(name, e);
  }

  private drop(name: string): void {
    const old = this.cache.get(name);
    if (!old) return;
    this.cache.delete(name);
    this.sortedRemove(name);
    this.last = undefined;
    if (old.lease) this.indexDirty = true;
  }

  /** Where `name` is or belongs in `sorted` (the first index whose name is not below it). */
  private static where(sorted: readonly string[], name: string): number {
    let lo = 0, hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted[mid]! < name) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** A new name in the key order: inserted while few names changed, else the order is dropped (and sorted again). */
  private sortedInsert(name: string): void {
    if (!this.sorted) return;
    if (++this.sortedEdits > SORTED_EDITS) this.sorted = undefined;
    else this.sorted.splice(DirStore.where(this.sorted, name), 0, name);
  }

  private sortedRemove(name: string): void {
    if (!this.sorted) return;
    const at = DirStore.where(this.sorted, name);
    if (++this.sortedEdits > SORTED_EDITS || this.sorted[at] !== name) this.sorted = undefined;
    else this.sorted.splice(at, 1);
  }

  /** The cached leases in key order (fresh arrays: the caller may change them). */
  private result(): ListResult {
    if (!this.last) {
      if (!this.sorted) {
        this.sorted = [...this.cache.keys()].sort();
        this.sortedEdits = 0;
      }
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
    // Most names are plain IPv4 keys: those are checked from their text (lo > hi: we hold no IPv4 subnet).
    const b = lease.subnet?.ip.bytes;
    const lo = b ? ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0 : 1;
    const hi = lease.subnet ? lo + 2 ** (32 - lease.subnet.len) - 1 : 0;
    for (const name of names) {
      const wait = slicer.tick();
      if (wait) await wait;
      if (name.startsWith(".") || name === lease.key || v4KeyOverlaps(name, lo, hi) === false) continue;
      let subnets: LeaseSubnets | undefined = this.cache.get(name)?.lease;
      if (!subnets) {
        try {
          subnets = parseLeaseKey(name);
        } catch {
          continue; // not a lease key: list() reports it, it holds no subnet
        }
      }
      if (!leasesOverlap(subnets, lease)) continue;
      await this.serial(async () => this.read(name)); // a key overlaps ours: is it a lease now? (not while a list reads)
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
      await this.atomicWrite(path.join(this.subnetsDir, lease.key), serializeLease(lease));
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
      makeDirs(this.subnetsDir, DIR_MODE); // fs.watch needs the directory
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
      makeDirs(this.subnetsDir, DIR_MODE);
    } catch (e) {
      throw storeError(`creating ${this.subnetsDir}`, e);
    }
  }

  private async atomicWrite(file: string, text: string): Promise<void> {
    try {
      await writeAtomic(file, text, FILE_MODE);
    } catch (e) {
      throw storeError(`writing ${file}`, e);
    }
  }

  /** Creates a lease only if its key is free; false when it exists. */
  private async create(lease: Lease): Promise<boolean> {
    const file = path.join(this.subnetsDir, lease.key);
    const text = serializeLease(lease);
    let tmp: string | undefined;
    try {
      tmp = await writeTemp(this.subnetsDir, lease.key, text, FILE_MODE);
      await fs.link(tmp, file);
      await syncDir(this.subnetsDir);
      return true;
    } catch (e) {
      if (tmp && errno(e) === "EEXIST") return false;
      if (tmp && ["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"].includes(errno(e) ?? "")) return this.createNoLink(file, text);
      throw storeError(`creating lease ${lease.key}`, e);
    } finally {
      this.dirty.add(lease.key);
      if (tmp) await fs.rm(tmp, { force: true });
    }
  }

  private async createNoLink(file: string, text: string): Promise<boolean> {
    try {
      await writeExclusive(file, text, FILE_MODE);
      await syncDir(this.subnetsDir);
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

/** What a reader thread posts: files from … from+count-1 of its names. */
interface ReaderBatch {
  readonly from: number;
  readonly count: number;
  /** ino, size, mtimeMs, ctimeMs, readAt per file (readAt 0 for a stat only); NaN: not read (or gone). */
  readonly stamps: Float64Array;
  /** The files' bytes, one after the other; file i ends at ends[i]. */
  readonly bytes: ArrayBuffer;
  readonly ends: Uint32Array;
  readonly last: boolean;
}

/**
 * A reader thread's whole program, sent to it as source text: so it uses
 * nothing of this module, only what it requires. It lstats its first
 * `statBelow` names, reads the others as saferead.ts does (lstat, open
 * O_NOFOLLOW|O_NONBLOCK, fstat, read up to the size, close: only a regular
 * file of at most maxBytes; any other is left to the store's thread, which
 * reports it), and posts ReaderBatches (bytes, not strings: they move to
 * the store's thread without a copy).
 */
function readerThread(): void {
  const { parentPort, workerData } = require("node:worker_threads") as typeof import("node:worker_threads");
  const { openSync, fstatSync, readSync, closeSync, lstatSync, constants } = require("node:fs") as typeof import("node:fs");
  const { prefix, names, statBelow, regular, batch, diesAfter, maxBytes } = workerData as { prefix: string; names: string[]; statBelow: number; regular?: Uint8Array; batch: number; diesAfter: number; maxBytes: number };
  const flags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;
  for (let from = 0; from < names.length || from === 0; from += batch) {
    if (from >= diesAfter * batch) throw new Error("a reader thread dies (test hook)");
    const count = Math.min(batch, names.length - from);
    const stamps = new Float64Array(5 * count);
    const ends = new Uint32Array(count);
    let buf = Buffer.allocUnsafe(256 * count + 16384);
    let used = 0;
    for (let i = 0; i < count; i++) {
      if (from + i < statBelow) { // a stamp only
        try {
          const st = lstatSync(prefix + names[from + i], { throwIfNoEntry: false });
          if (st) stamps.set([st.ino, st.size, st.mtimeMs, st.ctimeMs, 0], 5 * i);
          else stamps.fill(NaN, 5 * i, 5 * i + 5);
        } catch {
          stamps.fill(NaN, 5 * i, 5 * i + 5);
        }
        ends[i] = used;
        continue;
      }
      try {
        const readAt = Date.now();
        if (regular?.[from + i] !== 1) { // (readdir's type says regular: its lstat would say the same)
          const lst = lstatSync(prefix + names[from + i]);
          if (!lst.isFile() || lst.size > maxBytes) throw new Error("not a regular file within maxBytes"); // never opened
        }
        const fd = openSync(prefix + names[from + i], flags);
        try {
          const st = fstatSync(fd);
          if (!st.isFile() || st.size > maxBytes) throw new Error("not a regular file within maxBytes"); // swapped since the lstat (or readdir)
          let n = 0;
          for (;;) {
            if (buf.length - used - n < Math.max(st.size, 4096)) {
              const more = Buffer.allocUnsafe(2 * buf.length + st.size);
              buf.copy(more, 0, 0, used + n);
              buf = more;
            }
            const k = readSync(fd, buf, used + n, buf.length - used - n, null);
            n += k;
            if (n > maxBytes) throw new Error("more than maxBytes");
            if (k === 0 || (st.size > 0 && n >= st.size)) break;
          }
          stamps.set([st.ino, st.size, st.mtimeMs, st.ctimeMs, readAt], 5 * i);
          used += n;
        } finally {
          closeSync(fd);
        }
      } catch {
        stamps.fill(NaN, 5 * i, 5 * i + 5); // read (and reported) by the store's own thread
      }
      ends[i] = used;
    }
    const bytes = new ArrayBuffer(used);
    buf.copy(new Uint8Array(bytes), 0, 0, used);
    parentPort!.postMessage({ from, count, stamps, bytes, ends, last: from + count >= names.length }, [stamps.buffer, bytes, ends.buffer]);
  }
}
