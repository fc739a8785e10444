/**
 * twill_stats as a scrape reads it: one row per (peer id, counter) in typed
 * arrays, the per-CPU values summed as Numbers — no object per entry.
 *
 * Why: at 10,000 peers the map holds ~30,000 entries. As objects (a Sum and
 * two BigInts each, a Map per peer) they live through the whole sliced
 * scrape, are promoted to V8's old generation, and come back as
 * mark-compact pauses of 10 ms and more. Four typed arrays are four objects.
 *
 * Numbers are exact below 2^53 (8 PiB): each per-CPU u64 is read as two u32
 * halves, the halves summed separately, then joined. One (peer, counter)
 * entry beyond 8 PiB is rounded (Prometheus stores float64 anyway). Sums
 * over many entries that must never go down use ExactSum.
 */
import { COUNTERS, STAT, STAT_KEY } from "../bpf/layout.js";

const field = (s: { fields: readonly { name: string; offset: number }[] }, name: string): number => s.fields.find((f) => f.name === name)!.offset;
const KEY_PEER_ID = field(STAT_KEY, "peer_id");
const KEY_COUNTER = field(STAT_KEY, "counter");
const VAL_PACKETS = field(STAT, "packets");
const VAL_BYTES = field(STAT, "bytes");
/** Bytes between two CPUs' values of a per-CPU map (values are 8-byte aligned). */
const CPU_STRIDE = Math.ceil(STAT.size / 8) * 8;

/** Counter number of a name: its index in enum twill_counter, or n for "counter_<n>" (a counter this build does not know). */
export function counterNumber(name: string): number {
  const i = (COUNTERS as readonly string[]).indexOf(name);
  if (i >= 0) return i;
  const m = /^counter_(\d+)$/.exec(name);
  if (!m) throw new Error(`Cannot number counter ${JSON.stringify(name)}: not in enum twill_counter`);
  return Number(m[1]);
}

/** Name of a counter number ("counter_<n>" for one this build does not know). */
export const counterName = (n: number): string => COUNTERS[n] ?? `counter_${n}`;

export class StatRows {
  length = 0;
  peerIds: Uint32Array;
  /** enum twill_counter. */
  counters: Uint32Array;
  packets: Float64Array;
  bytes: Float64Array;

  constructor(capacity = 256) {
    this.peerIds = new Uint32Array(capacity);
    this.counters = new Uint32Array(capacity);
    this.packets = new Float64Array(capacity);
    this.bytes = new Float64Array(capacity);
  }

  /** Rows from (peer id, counter name, packets, bytes) tuples (tests, fakes). */
  static of(entries: Iterable<readonly [number, string, number, number]>): StatRows {
    const r = new StatRows();
    for (const [id, name, packets, bytes] of entries) r.push(id, counterNumber(name), packets, bytes);
    return r;
  }

  push(peerId: number, counter: number, packets: number, bytes: number): void {
    if (this.length === this.peerIds.length) this.grow(this.length * 2);
    const i = this.length++;
    this.peerIds[i] = peerId;
    this.counters[i] = counter;
    this.packets[i] = packets;
    this.bytes[i] = bytes;
  }

  /**
   * Appends `count` entries of a twill_stats dump chunk (keys `ks` bytes
   * apart, values `vs` bytes apart: one STAT per CPU), summed over `ncpu`.
   */
  addDump(keys: Buffer, values: Buffer, count: number, ks: number, vs: number, ncpu: number): void {
    if (this.length + count > this.peerIds.length) this.grow(Math.max(this.length + count, this.length * 2));
    for (let i = 0; i < count; i++) {
      const r = this.length++;
      this.peerIds[r] = keys.readUInt32LE(i * ks + KEY_PEER_ID);
      this.counters[r] = keys.readUInt32LE(i * ks + KEY_COUNTER);
      this.packets[r] = sumCpus(values, i * vs + VAL_PACKETS, ncpu);
      this.bytes[r] = sumCpus(values, i * vs + VAL_BYTES, ncpu);
    }
  }

  private grow(capacity: number): void {
    const re = <T extends Uint32Array | Float64Array>(a: T, make: (n: number) => T): T => {
      const b = make(capacity);
      b.set(a.subarray(0, this.length));
      return b;
    };
    this.peerIds = re(this.peerIds, (n) => new Uint32Array(n));
    this.counters = re(this.counters, (n) => new Uint32Array(n));
    this.packets = re(this.packets, (n) => new Float64Array(n));
    this.bytes = re(this.bytes, (n) => new Float64Array(n));
  }
}

/** The u64 at `at` of each CPU's value, summed: low and high halves apart, so exact below 2^53. */
function sumCpus(values: Buffer, at: number, ncpu: number): number {
  let lo = 0, hi = 0;
  for (let c = 0, o = at; c < ncpu; c++, o += CPU_STRIDE) {
    lo += values.readUInt32LE(o);
    hi += values.readUInt32LE(o + 4);
  }
  return hi < 2 ** 21 ? hi * 2 ** 32 + lo : Number((BigInt(hi) << 32n) + BigInt(lo));
}

/**
 * A sum of non-negative integer Numbers, exact at any size: a Number part,
 * moved into a BigInt before it would pass 2^53.
 */
export class ExactSum {
  private small = 0;
  private big = 0n;

  add(v: number): void {
    if (this.small + v > Number.MAX_SAFE_INTEGER) {
      this.big += BigInt(this.small);
      this.small = 0;
    }
    this.small += v;
  }

  get value(): bigint {
    return this.big + BigInt(this.small);
  }
}

/** Exact sums of the packets and bytes of some rows. */
export class SumPair {
  readonly packets = new ExactSum();
  readonly bytes = new ExactSum();

  /** Adds row r of `rows`. */
  add(rows: StatRows, r: number): void {
    this.packets.add(rows.packets[r]!);
    this.bytes.add(rows.bytes[r]!);
  }

  get value(): { packets: bigint; bytes: bigint } {
    return { packets: this.packets.value, bytes: this.bytes.value };
  }
}
