/**
 * A BPF map by fd: lookup, update, delete, iterate, batch update.
 *
 * How it works: keys and values are Buffers of the map's exact sizes
 * (encoded by layout.ts). Iteration walks bpf_map_get_next_key from NULL.
 * Batch update sends many entries in one syscall where the kernel supports
 * it for the map type and falls back to one update per entry otherwise.
 * A missing key is `undefined`, never an exception.
 */
import { libbpf, check, closeFd, numPossibleCpus } from "./libbpf.js";

const ENOENT = 2;
export const BPF_ANY = 0;
const PERCPU_TYPES = new Set([5, 6, 10]); // PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH

export class BpfMap {
  private batchOk = true;
  constructor(
    readonly name: string,
    readonly fd: number,
    readonly keySize: number,
    readonly valueSize: number,
    readonly maxEntries: number,
    readonly type: number,
  ) {}

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

  update(key: Buffer, value: Buffer, flags = BPF_ANY): void {
    check(libbpf().update(this.fd, key, value, flags), "ERR_BPF_MAP", `update of ${this.name}`);
  }

  /** Deletes a key; returns false when it was not there. */
  delete(key: Buffer): boolean {
    const r = libbpf().del(this.fd, key);
    if (r === -ENOENT) return false;
    check(r, "ERR_BPF_MAP", `delete from ${this.name}`);
    return true;
  }

  keys(): Buffer[] {
    const out: Buffer[] = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      const r = libbpf().next_key(this.fd, prev, next);
      if (r === -ENOENT) break;
      check(r, "ERR_BPF_MAP", `iterating ${this.name}`);
      out.push(next);
      prev = next;
    }
    return out;
  }

  entries(): Array<[Buffer, Buffer]> {
    const out: Array<[Buffer, Buffer]> = [];
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v) out.push([k, v]);
    }
    return out;
  }

  /** Writes `count` entries packed back to back in `keys` / `values`. */
  updateBatch(keys: Buffer, values: Buffer, count: number): void {
    if (count === 0) return;
    if (this.batchOk) {
      const n = new Uint32Array([count]);
      const opts = Buffer.alloc(24);
      opts.writeBigUInt64LE(24n, 0);
      const r = libbpf().update_batch(this.fd, keys, values, n, opts);
      if (r === 0 && n[0] === count) return;
      if (r !== -22 && r !== -95 && r !== -524) check(r, "ERR_BPF_MAP", `batch update of ${this.name}`);
      this.batchOk = false; // EINVAL/EOPNOTSUPP/ENOTSUPP: the map type has no batch ops
    }
    for (let i = 0; i < count; i++) {
      this.update(keys.subarray(i * this.keySize, (i + 1) * this.keySize), values.subarray(i * this.valueSize, (i + 1) * this.valueSize));
    }
  }

  close(): void {
    closeFd(this.fd);
  }
}
