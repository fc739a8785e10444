/**
 * Node-wide totals by counter name that never go down while the process
 * lives, although the entries of removed peers are deleted from the map.
 *
 * How it works: the controller deletes the counters of a peer that is gone,
 * and an entry deleted and re-created starts again from 0, so a plain sum
 * over the map would go down. MonotonicTotals keeps the last read and adds
 * every entry of it that has vanished or gone down since to a retired sum
 * of its counter (row by row when the two reads have the same keys in the
 * same order, as they do while no peer comes or goes; otherwise through an
 * index of the new read by counter and peer id); a total is the retired
 * sum plus the entries read now. Sums are exact (ExactSum), so rounding
 * cannot make a total go down either.
 */
import { COUNTERS } from "../bpf/layout.js";
import type { Sum } from "../peerstats.js";
import { runAtOnce, runSliced, type Breathe, type Steps } from "./slices.js";
import { SumPair, counterName, type StatRows } from "./statrows.js";

/** Row of each (counter, peer id) in a StatRows. */
type RowIndex = Map<number, Map<number, number>>;

/** True when `a` and `b` hold the same (peer id, counter) keys in the same order (a memcmp each). */
function sameKeys(a: StatRows, b: StatRows): boolean {
  const bytes = (x: Uint32Array, n: number) => Buffer.from(x.buffer, x.byteOffset, n * 4);
  return a.length === b.length && bytes(a.peerIds, a.length).equals(bytes(b.peerIds, b.length)) && bytes(a.counters, a.length).equals(bytes(b.counters, b.length));
}

export class MonotonicTotals {
  private last?: StatRows;
  private readonly retired = new Map<number, SumPair>();

  /** Folds in a fresh read of the map; returns the totals by counter name (every counter of enum twill_counter first). */
  update(rows: StatRows): Map<string, Sum> {
    return runAtOnce(this.steps(rows));
  }

  /** update(), yielding to the event loop every few ms (`breathe`, see breather()). */
  updateSliced(rows: StatRows, breathe: Breathe): Promise<Map<string, Sum>> {
    return runSliced(this.steps(rows), breathe);
  }

  /** The work of update(), pausing every few thousand rows. */
  private *steps(rows: StatRows): Steps<Map<string, Sum>> {
    const prev = this.last;
    if (prev && sameKeys(prev, rows)) {
      // The same entries in the same order (nothing added or deleted since): row by row.
      for (let r = 0; r < rows.length; r++) {
        if ((r & 8191) === 8191) yield;
        if (rows.packets[r]! < prev.packets[r]! || rows.bytes[r]! < prev.bytes[r]!) this.retire(prev, r);
      }
    } else if (prev) {
      const index: RowIndex = new Map();
      for (let r = 0; r < rows.length; r++) {
        if ((r & 2047) === 2047) yield;
        const c = rows.counters[r]!;
        let byId = index.get(c);
        if (!byId) index.set(c, (byId = new Map()));
        byId.set(rows.peerIds[r]!, r);
      }
      for (let r = 0; r < prev.length; r++) {
        if ((r & 2047) === 2047) yield;
        const cur = index.get(prev.counters[r]!)?.get(prev.peerIds[r]!);
        // Gone, or deleted and re-created since the last read: what it had counted stays counted.
        if (cur === undefined || rows.packets[cur]! < prev.packets[r]! || rows.bytes[cur]! < prev.bytes[r]!) this.retire(prev, r);
      }
    }
    this.last = rows;
    const now = new Map<number, SumPair>();
    for (let r = 0; r < rows.length; r++) {
      if ((r & 2047) === 2047) yield;
      this.sumOf(now, rows.counters[r]!).add(rows, r);
    }
    const numbers = new Set<number>([...COUNTERS.keys(), ...[...this.retired.keys(), ...now.keys()].sort((a, b) => a - b)]);
    const totals = new Map<string, Sum>();
    for (const c of numbers) {
      const a = this.retired.get(c), b = now.get(c);
      totals.set(counterName(c), {
        packets: (a?.packets.value ?? 0n) + (b?.packets.value ?? 0n),
        bytes: (a?.bytes.value ?? 0n) + (b?.bytes.value ?? 0n),
      });
    }
    return totals;
  }

  /** Row r of `rows` is gone (or restarted from 0): what it had counted is kept. */
  private retire(rows: StatRows, r: number): void {
    this.sumOf(this.retired, rows.counters[r]!).add(rows, r);
  }

  private sumOf(m: Map<number, SumPair>, counter: number): SumPair {
    let s = m.get(counter);
    if (!s) m.set(counter, (s = new SumPair()));
    return s;
  }
}
