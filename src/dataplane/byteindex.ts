/**
 * An index from fixed-size byte keys to slot numbers, for keys that live in
 * an arena Buffer (slot × size): the bpf dataplane's shadow finds a map key
 * without making a string or an object per entry.
 *
 * How it works: open addressing with linear probing over an Int32Array of
 * slots (EMPTY, or TOMB for a removed one), kept at most half full; a key's
 * hash is murmur3 over its 32-bit words. A lookup hashes the bytes where they are
 * (a map dump, a batch being written) and compares them with the arena's.
 * Nothing here allocates per key, so 100,000 entries cost 1 MiB of table
 * and no garbage.
 */

const EMPTY = -1;
const TOMB = -2;

export class ByteIndex {
  private table = new Int32Array(16).fill(EMPTY);
  private live = 0;
  private filled = 0;

  /** `arena()` gives the Buffer that holds slot s's key at s × size (it may be replaced as it grows). */
  constructor(private readonly size: number, private readonly arena: () => Buffer) {}

  get count(): number {
    return this.live;
  }

  /** The hash of the key at buf[at..] (for findHashed / addHashed: one hash for a lookup and the insert after it). */
  hash(buf: Buffer, at: number): number {
    // murmur3 (32 bit) over the key's little-endian words: a quarter of the steps of a byte-wise hash.
    let h = this.size;
    const words = this.size & ~3;
    for (let i = 0; i < words; i += 4) {
      const o = at + i;
      let k = buf[o]! | (buf[o + 1]! << 8) | (buf[o + 2]! << 16) | (buf[o + 3]! << 24);
      k = Math.imul(k, 0xcc9e2d51);
      k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
      h ^= k;
      h = Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64;
    }
    for (let i = words; i < this.size; i++) h = Math.imul(h ^ buf[at + i]!, 0x01000193); // a tail, for sizes not a multiple of 4
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  }

  private same(buf: Buffer, at: number, slot: number): boolean {
    const a = this.arena(), o = slot * this.size;
    for (let i = 0; i < this.size; i++) if (a[o + i] !== buf[at + i]) return false;
    return true;
  }

  /** The slot of the key at buf[at..]; -1 when none. */
  find(buf: Buffer, at: number): number {
    return this.findHashed(buf, at, this.hash(buf, at));
  }

  /** find() with the key's hash already known. */
  findHashed(buf: Buffer, at: number, h: number): number {
    const t = this.table, mask = t.length - 1;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const s = t[i]!;
      if (s === EMPTY) return -1;
      if (s >= 0 && this.same(buf, at, s)) return s;
    }
  }

  /**
   * The slot of the key at buf[at..] if it is in the index; otherwise adds
   * `slot` for it (its key must be in the arena by the time anything else
   * reads it) and returns -1. One hash, one probe: a first start does this
   * once per peer for each map.
   */
  findOrAdd(buf: Buffer, at: number, slot: number): number {
    if ((this.filled + 1) * 2 > this.table.length) this.rehash(Math.max(16, this.live * 4));
    const h = this.hash(buf, at);
    const t = this.table, mask = t.length - 1;
    let tomb = -1;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const s = t[i]!;
      if (s === EMPTY) {
        if (tomb >= 0) i = tomb;
        else this.filled++;
        t[i] = slot;
        this.live++;
        return -1;
      }
      if (s === TOMB) {
        if (tomb < 0) tomb = i;
      } else if (this.same(buf, at, s)) return s;
    }
  }

  /** Makes room for `n` keys without a rehash on the way. */
  reserve(n: number): void {
    if ((n + this.filled - this.live) * 2 > this.table.length) this.rehash(n * 2);
  }

  /** Adds `slot`, whose key is already in the arena (and not in the index). */
  add(slot: number): void {
    this.addHashed(slot, this.hash(this.arena(), slot * this.size));
  }

  /** add() with the key's hash already known. */
  addHashed(slot: number, h: number): void {
    if ((this.filled + 1) * 2 > this.table.length) this.rehash(Math.max(16, this.live * 4));
    const t = this.table, mask = t.length - 1;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const s = t[i]!;
      if (s < 0) {
        if (s === EMPTY) this.filled++;
        t[i] = slot;
        this.live++;
        return;
      }
    }
  }

  /** Removes `slot` (its key still in the arena). */
  remove(slot: number): void {
    const t = this.table, mask = t.length - 1;
    const a = this.arena();
    for (let i = this.hash(a, slot * this.size) & mask; ; i = (i + 1) & mask) {
      const s = t[i]!;
      if (s === EMPTY) return;
      if (s === slot) {
        t[i] = TOMB;
        this.live--;
        return;
      }
    }
  }

  private rehash(want: number): void {
    let cap = 16;
    while (cap < want) cap *= 2;
    const old = this.table;
    this.table = new Int32Array(cap).fill(EMPTY);
    this.live = this.filled = 0;
    for (let i = 0; i < old.length; i++) if (old[i]! >= 0) this.add(old[i]!);
  }
}
