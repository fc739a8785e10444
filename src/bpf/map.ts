/**
 * A BPF map by fd: lookup, update, delete, iterate, batch update and dump.
 *
 * How it works: keys and values are Buffers of the map's exact sizes
 * (encoded by layout.ts). 1) A dump (entries(), keys(), count()) reads the
 * map BATCH entries per syscall with BPF_MAP_LOOKUP_BATCH (hash maps since
 * 5.6; the LPM trie and arrays through the kernel's generic batch ops) and
 * falls back to bpf_map_get_next_key + lookup, two syscalls per entry, for
 * a map type without batch ops. 2) A batch update sends many entries in one
 * syscall the same way, falling back to one update per entry. 3) A map that
 * is full (ENOSPC from the LPM trie, E2BIG from a hash) is ERR_CAPACITY,
 * naming the map, its capacity and what did not fit; every other failure
 * is ERR_BPF_MAP. A missing key is `undefined`, never an exception.
 * 4) Dumps and batch updates that may be long run on libuv's thread pool
 * (koffi's `.async`) through onThreadPool(), which keeps every argument
 * referenced until the call returns: koffi hands the C side the Buffers'
 * memory and keeps no reference of its own, so a Buffer that only the
 * call's argument list held could be collected while the call waited in
 * the pool's queue (seen: libbpf reading a collected bpf_map_batch_opts as
 * garbage and refusing the batch with EINVAL: none of its entries was
 * written, and the caller had to write them again). The batch options are one
 * read-only Buffer, BATCH_OPTS, that lives as long as the module.
 */
import { readFileSync } from "node:fs";
import { release } from "node:os";
import { TwillError } from "../errors.js";
import { libbpf, check, closeFd, errnoName, numPossibleCpus } from "./libbpf.js";

const ENOENT = 2;
const E2BIG = 7;
const ENOSPC = 28;
/** The map type has no batch ops: EINVAL, EOPNOTSUPP, ENOTSUPP (the kernel's 524). */
const NO_BATCH = new Set([22, 95, 524]);
export const BPF_ANY = 0;
const PERCPU_TYPES = new Set([5, 6, 10]); // PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
const HASH_TYPES = new Set([1, 5, 9, 10]); // HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH
/** Entries per lookup-batch syscall: the buffers are BATCH × (key + value) bytes, reused. */
const BATCH = 4096;

/** True when a failed update means "the map is full". */
const isFull = (ret: number): boolean => ret === -ENOSPC || ret === -E2BIG;

/** True on kernels (6.4 and later) whose map memlock counts an LPM trie's and a non-preallocated hash's entries (BpfMap.memlock). */
export function memlockTracksEntries(kernel = release()): boolean {
  const [maj = 0, min = 0] = kernel.split(/[.-]/).map(Number);
  return maj > 6 || (maj === 6 && min >= 4);
}

/** A whole map at one moment (BpfMap.snapshot). */
export interface MapSnapshot {
  readonly bytes: Buffer;
  readonly count: number;
  entries(): Array<[Buffer, Buffer]>;
}

export class BpfMap {
  private batchUpdate = true;
  private batchLookup = true;
  constructor(
    readonly name: string,
    readonly fd: number,
    readonly keySize: number,
    readonly valueSize: number,
    readonly maxEntries: number,
    readonly type: number,
  ) {}

  /**
   * The kernel's memory use of the map, from /proc/self/fdinfo (one small
   * procfs read, no map walk). Since Linux 6.4 (map_mem_usage) it follows
   * the number of entries of an LPM trie and of a hash map without
   * preallocation, so an entry added or deleted behind our back changes it;
   * memlockTracksEntries() says whether this kernel does that.
   */
  memlock(): number {
    const m = /^memlock:\s*(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${this.fd}`, "latin1"));
    if (!m) throw new TwillError("ERR_BPF_MAP", `no memlock in the fdinfo of ${this.name}`);
    return Number(m[1]);
  }

  /** Bytes a lookup returns: per-CPU maps hold one 8-byte-aligned value per possible CPU. */
  get lookupSize(): number {
    return PERCPU_TYPES.has(this.type) ? Math.ceil(this.valueSize / 8) * 8 * numPossibleCpus() : this.valueSize;
  }

  lookup(key: Buffer): Buffer | undefined {
    const out = Buffer.alloc(this.lookupSize);
    const r = libbpf().lookup(this.fd, key, out);
    if (r === -ENOENT) return undefined;
    check(r, "ERR_BPF_MAP", `lookup in ${this.name}`);
    return out;
  }

  /**
   * Writes one entry. `what` names it in an error (e.g. the peer's subnet);
   * a full map throws ERR_CAPACITY.
   */
  update(key: Buffer, value: Buffer, flags = BPF_ANY, what?: string): void {
    const r = libbpf().update(this.fd, key, value, flags);
    if (isFull(r)) throw this.fullError(what ?? `key ${key.toString("hex")}`, -r);
    check(r, "ERR_BPF_MAP", `update of ${this.name}${what ? ` (${what})` : ""}`);
  }

  /** The error for entries that do not fit. */
  fullError(what: string, errno = ENOSPC): TwillError {
    const e = new TwillError(
      "ERR_CAPACITY",
      `${this.name} is full (capacity ${this.maxEntries} entries${this.name === "twill_peers" || this.name === "twill_remotes" ? ", --peer-capacity" : ""}): cannot add ${what} (${errnoName(errno)})`,
    );
    (e as { errno?: number }).errno = errno;
    return e;
  }

  /** Deletes a key; returns false when it was not there. */
  delete(key: Buffer): boolean {
    const r = libbpf().del(this.fd, key);
    if (r === -ENOENT) return false;
    check(r, "ERR_BPF_MAP", `delete from ${this.name}`);
    return true;
  }

  keys(): Buffer[] {
    return this.entries().map(([k]) => k);
  }

  /** How many entries the map holds (a dump without decoding). */
  count(): number {
    let n = 0;
    this.dump((_keys, _values, count) => (n += count));
    return n;
  }

  /**
   * Every entry in one Buffer, key then value, entry after entry (in the
   * kernel's walk order: for the same content, the same bytes). Comparing
   * two snapshots tells whether a map changed at the cost of one memcmp.
   */
  snapshot(): MapSnapshot {
    const parts: Buffer[] = [];
    const ks = this.keySize, vs = this.lookupSize;
    let count = 0;
    this.dump((keys, values, n) => {
      const out = Buffer.allocUnsafe(n * (ks + vs));
      interleave(keys, values, ks, vs, 0, n, out);
      parts.push(out);
      count += n;
    });
    return mapSnapshot(parts.length === 1 ? parts[0]! : Buffer.concat(parts), count, ks, vs);
  }

  /** Entries the last dumpAsync() found: the size of the next one's batch. */
  private lastCount = 0;

  /**
   * The whole map, keys and values each packed back to back, with the
   * kernel's walk on libuv's thread pool (koffi's async call): the event
   * loop runs while the kernel copies the map out. One batch as large as
   * `expect` entries (plus slack; default: what the last dump found) asks
   * for, so a trie's walk is one syscall — its batch token is a key, and a
   * walk split across yields restarts when that key is deleted meanwhile.
   * The result is the map at some moment during the call: changes made
   * meanwhile may or may not be in it.
   */
  async dumpAsync(expect = this.lastCount): Promise<{ keys: Buffer; values: Buffer; count: number }> {
    const ks = this.keySize, vs = this.lookupSize;
    if (!this.batchLookup) {
      const e = this.entries();
      return { keys: Buffer.concat(e.map(([k]) => k)), values: Buffer.concat(e.map(([, v]) => v)), count: e.length };
    }
    const want = Math.max(64, Math.min(this.maxEntries, Math.ceil(expect * 1.25) + 64));
    const keys = Buffer.alloc(want * ks), values = Buffer.alloc(want * vs);
    const token = Buffer.alloc(Math.max(ks, 8));
    const n = new Uint32Array(1);
    const kparts: Buffer[] = [], vparts: Buffer[] = [];
    let count = 0;
    for (let first = true; ; first = false) {
      n[0] = want;
      const r = await onThreadPool(libbpf().lookup_batch, this.fd, first ? null : token, token, keys, values, n, BATCH_OPTS);
      if (r < 0 && r !== -ENOENT) {
        if (first && NO_BATCH.has(-r)) {
          this.batchLookup = false;
          return this.dumpAsync(expect);
        }
        check(r, "ERR_BPF_MAP", `dumping ${this.name}`);
      }
      const got = n[0]!;
      // A map larger than the batch (grown since the last dump) takes another call; the buffers are reused.
      kparts.push(r === -ENOENT && first ? keys.subarray(0, got * ks) : Buffer.from(keys.subarray(0, got * ks)));
      vparts.push(r === -ENOENT && first ? values.subarray(0, got * vs) : Buffer.from(values.subarray(0, got * vs)));
      count += got;
      if (r === -ENOENT || got === 0) break;
    }
    this.lastCount = count;
    return { keys: kparts.length === 1 ? kparts[0]! : Buffer.concat(kparts), values: vparts.length === 1 ? vparts[0]! : Buffer.concat(vparts), count };
  }

  /**
   * snapshot() through dumpAsync(): the entries interleaved afterwards in
   * slices of BATCH, with `pause` between.
   */
  async snapshotAsync(expect?: number, pause?: () => Promise<void> | undefined): Promise<MapSnapshot> {
    const ks = this.keySize, vs = this.lookupSize;
    const { keys, values, count } = await this.dumpAsync(expect);
    const bytes = Buffer.allocUnsafe(count * (ks + vs));
    for (let i = 0; i < count; i += BATCH) {
      if (pause && i > 0) await pause();
      interleave(keys, values, ks, vs, i, Math.min(count, i + BATCH), bytes);
    }
    return mapSnapshot(bytes, count, ks, vs);
  }

  /** Every entry, as fresh Buffers (values of per-CPU maps: lookupSize bytes, one slot per CPU). */
  entries(): Array<[Buffer, Buffer]> {
    const out: Array<[Buffer, Buffer]> = [];
    const vs = this.lookupSize;
    this.dump((keys, values, count) => {
      // One copy per chunk; the entries are views into it.
      const k = Buffer.from(keys.subarray(0, count * this.keySize));
      const v = Buffer.from(values.subarray(0, count * vs));
      for (let i = 0; i < count; i++) out.push([k.subarray(i * this.keySize, (i + 1) * this.keySize), v.subarray(i * vs, (i + 1) * vs)]);
    });
    return out;
  }

  /**
   * Calls `chunk` with entries packed back to back (keySize / lookupSize
   * each), BATCH at most per call; the buffers are reused between calls.
   */
  dump(chunk: (keys: Buffer, values: Buffer, count: number) => void): void {
    const vs = this.lookupSize;
    if (this.batchLookup) {
      const keys = Buffer.alloc(BATCH * this.keySize);
      const values = Buffer.alloc(BATCH * vs);
      // The batch token is a key for the generic ops, a bucket number for hashes.
      const token = Buffer.alloc(Math.max(this.keySize, 8));
      const n = new Uint32Array(1);
      let first = true;
      for (;;) {
        n[0] = BATCH;
        const r = libbpf().lookup_batch(this.fd, first ? null : token, token, keys, values, n, BATCH_OPTS);
        if (r < 0 && r !== -ENOENT) {
          if (first && NO_BATCH.has(-r)) {
            this.batchLookup = false;
            break;
          }
          check(r, "ERR_BPF_MAP", `dumping ${this.name}`);
        }
        if (n[0]! > 0) chunk(keys, values, n[0]!);
        if (r === -ENOENT) return; // that was the last chunk
        first = false;
      }
    }
    // No batch ops for this map type: two syscalls per entry.
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      const r = libbpf().next_key(this.fd, prev, next);
      if (r === -ENOENT) break;
      check(r, "ERR_BPF_MAP", `iterating ${this.name}`);
      const v = this.lookup(next);
      if (v) chunk(next, v, 1);
      prev = next;
    }
  }

  /**
   * dump() for a hash map, awaiting `chunk` between syscalls (a hash's batch
   * token is a bucket number, so the walk survives changes in between; a
   * trie's is a key, which must not be deleted mid-walk: dump those at once).
   */
  async dumpSliced(chunk: (keys: Buffer, values: Buffer, count: number) => Promise<void>): Promise<void> {
    if (!HASH_TYPES.has(this.type) || !this.batchLookup) {
      const all: Array<[Buffer, Buffer, number]> = [];
      this.dump((k, v, n) => all.push([Buffer.from(k.subarray(0, n * this.keySize)), Buffer.from(v.subarray(0, n * this.lookupSize)), n]));
      for (const [k, v, n] of all) await chunk(k, v, n);
      return;
    }
    const keys = Buffer.alloc(BATCH * this.keySize);
    const values = Buffer.alloc(BATCH * this.lookupSize);
    const token = Buffer.alloc(Math.max(this.keySize, 8));
    const n = new Uint32Array(1);
    for (let first = true; ; first = false) {
      n[0] = BATCH;
      const r = libbpf().lookup_batch(this.fd, first ? null : token, token, keys, values, n, BATCH_OPTS);
      if (r < 0 && r !== -ENOENT) check(r, "ERR_BPF_MAP", `dumping ${this.name}`);
      if (n[0]! > 0) await chunk(keys, values, n[0]!);
      if (r === -ENOENT) return;
    }
  }

  /**
   * Writes `count` entries packed back to back in `keys` / `values`
   * (lookupSize bytes each: per CPU for per-CPU maps). A full
   * map throws ERR_CAPACITY once every entry that fits is written; `what(i)`
   * names entry i in the error.
   */
  updateBatch(keys: Buffer, values: Buffer, count: number, what?: (i: number) => string): void {
    if (count === 0) return;
    if (!this.batchUpdate) return this.updateRest(0, keys, values, count, what);
    const n = new Uint32Array([count]);
    this.afterBatch(libbpf().update_batch(this.fd, keys, values, n, BATCH_OPTS), n[0]!, keys, values, count, what);
  }

  /**
   * updateBatch() with the kernel's work on libuv's thread pool (koffi's
   * async call): the event loop, or a second batch into another map, runs
   * meanwhile. `keys` and `values` must not change until it resolves.
   */
  async updateBatchAsync(keys: Buffer, values: Buffer, count: number, what?: (i: number) => string): Promise<void> {
    if (count === 0) return;
    if (!this.batchUpdate) return this.updateRest(0, keys, values, count, what);
    const n = new Uint32Array([count]);
    const r = await onThreadPool(libbpf().update_batch, this.fd, keys, values, n, BATCH_OPTS);
    this.afterBatch(r, n[0]!, keys, values, count, what);
  }

  /** What a batch update's return asks for: nothing, the rest one by one (full map, or no batch support), or an error. */
  private afterBatch(r: number, done: number, keys: Buffer, values: Buffer, count: number, what?: (i: number) => string): void {
    if (r === 0 && done === count) return;
    let from = 0;
    if (r < 0 && NO_BATCH.has(-r) && done === 0) this.batchUpdate = false;
    else if (isFull(r)) from = done; // entries 0..done-1 are in; the rest go one by one
    else check(r, "ERR_BPF_MAP", `batch update of ${this.name}`);
    this.updateRest(from, keys, values, count, what);
  }

  /** Entries from..count-1 one by one; a full map throws ERR_CAPACITY after every entry that fits is in. */
  private updateRest(from: number, keys: Buffer, values: Buffer, count: number, what?: (i: number) => string): void {
    let full: { first: number; errno: number; count: number } | undefined;
    const vs = this.lookupSize; // per-CPU maps take one value per CPU, as a dump returns them
    for (let i = from; i < count; i++) {
      const r = libbpf().update(this.fd, keys.subarray(i * this.keySize, (i + 1) * this.keySize), values.subarray(i * vs, (i + 1) * vs), BPF_ANY);
      if (isFull(r)) {
        full ??= { first: i, errno: -r, count: 0 };
        full.count++;
        continue;
      }
      check(r, "ERR_BPF_MAP", `update of ${this.name}${what ? ` (${what(i)})` : ""}`);
    }
    if (full) {
      const first = what ? what(full.first) : `key ${keys.subarray(full.first * this.keySize, (full.first + 1) * this.keySize).toString("hex")}`;
      throw this.fullError(full.count > 1 ? `${full.count} of ${count} entries, the first ${first}` : first, full.errno);
    }
  }

  close(): void {
    closeFd(this.fd);
  }
}

/** A MapSnapshot of `count` entries of `ks` + `vs` bytes in `bytes`; entries() are views into it. */
function mapSnapshot(bytes: Buffer, count: number, ks: number, vs: number): MapSnapshot {
  const stride = ks + vs;
  return { bytes, count, entries: () => Array.from({ length: count }, (_, i): [Buffer, Buffer] => [bytes.subarray(i * stride, i * stride + ks), bytes.subarray(i * stride + ks, (i + 1) * stride)]) };
}

/**
 * Entries from..to of packed keys and values, written key then value into
 * `out` (a loop: two native copies per entry cost more than the bytes; a
 * small function of its own, so V8 optimizes it quickly and cheaply).
 */
function interleave(keys: Buffer, values: Buffer, ks: number, vs: number, from: number, to: number, out: Buffer): void {
  for (let i = from, o = from * (ks + vs); i < to; i++) {
    for (let j = 0, k = i * ks; j < ks; j++) out[o++] = keys[k + j]!;
    for (let j = 0, v = i * vs; j < vs; j++) out[o++] = values[v + j]!;
  }
}

/** struct bpf_map_batch_opts: sz, elem_flags, flags — one for every call (libbpf only reads it), never collected (see 4). */
const BATCH_OPTS = ((): Buffer => {
  const opts = Buffer.alloc(24);
  opts.writeBigUInt64LE(24n, 0);
  return opts;
})();

/** A koffi function's asynchronous form: the arguments, then a node-style callback. */
interface AsyncCallable {
  async(...args: unknown[]): void;
}

/**
 * Calls `fn(...args)` on libuv's thread pool and resolves with its return
 * value. `args` stays referenced by the callback until the call has
 * returned (see 4): koffi keeps no reference to the Buffers it hands to C.
 */
function onThreadPool(fn: AsyncCallable, ...args: unknown[]): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    fn.async(...args, (err: unknown, res: number) => {
      args.length = 0; // the arguments are referenced until here
      if (err) reject(err);
      else resolve(res);
    });
  });
}
