/**
 * The per-peer rows of a scrape: the busiest remote peers by name, the rest
 * summed as "other" (as capPeers(peerTraffic(...)) in peerstats.ts), from
 * StatRows and PeerViews — without an object per peer or per counter for
 * the thousands of peers that are only summed.
 *
 * How it works:
 * 1) One pass over the rows chains each row to the others of its peer id
 *    (in dump order: a group per id, its first and last row, the next row
 *    of each row) and adds the bytes of the traffic counters to the id's
 *    rank.
 * 2) rankSteps orders the remote peers (vxlan and direct entries) by those
 *    bytes, then by subnet where it matters.
 * 3) The shown peers: trafficOf() over their rows, as Sums. The rest: each
 *    row added to the "other" row by its role, exactly (ExactSum).
 */
import {
  DIRECTIONS, OTHER, PATHS, emptyPaths, isRemote, rankSteps, roleOf, trafficOf,
  type CappedPeers, type Direction, type Path, type PeerEntry, type PeerTraffic, type Role, type Sum,
} from "../peerstats.js";
import type { Steps } from "./slices.js";
import { SumPair, counterName, type StatRows } from "./statrows.js";

/** Pause every this many rows or peers (each is well under a microsecond). */
const STEP = 2048;

/** The `limit` busiest remote peers of `peers` and the rest summed, from the counters in `rows`. */
export function* peerRowsSteps(peers: readonly PeerEntry[], rows: StatRows, limit: number): Steps<CappedPeers> {
  // 1) Rows by peer id, in dump order; traffic bytes by peer id.
  const roles = new Map<number, Role>();
  const role = (c: number): Role => {
    let r = roles.get(c);
    if (!r) roles.set(c, (r = roleOf(counterName(c))));
    return r;
  };
  // Each peer id seen gets a group: its first and last row, its traffic bytes.
  const group = new Map<number, number>();
  const head = new Int32Array(rows.length), tail = new Int32Array(rows.length), rank = new Float64Array(rows.length);
  const next = new Int32Array(rows.length).fill(-1);
  for (let r = 0; r < rows.length; r++) {
    if ((r & (STEP - 1)) === STEP - 1) yield;
    const id = rows.peerIds[r]!;
    let g = group.get(id);
    if (g === undefined) {
      group.set(id, (g = group.size));
      head[g] = r;
    } else next[tail[g]!] = r;
    tail[g] = r;
    if (role(rows.counters[r]!).kind === "traffic") rank[g] += rows.bytes[r]!;
  }
  const first = (id: number): number => {
    const g = group.get(id);
    return g === undefined ? -1 : head[g]!;
  };

  // 2) The remote peers, ranked.
  const remote: Array<PeerEntry & { kind: Path }> = [];
  for (let i = 0; i < peers.length; i++) {
    if ((i & (STEP - 1)) === STEP - 1) yield;
    const p = peers[i]!;
    if (isRemote(p)) remote.push(p);
  }
  const bytes = Float64Array.from(remote, (p) => {
    const g = group.get(p.id);
    return g === undefined ? 0 : rank[g]!;
  });
  yield;
  const order = yield* rankSteps(bytes, (i) => remote[i]!.prefix, limit);

  // 3) Series of their own for the shown; one sum for the rest.
  const shown: PeerTraffic[] = [];
  for (let k = 0; k < Math.min(limit, order.length); k++) {
    if ((k & 63) === 63) yield;
    const p = remote[order[k]!]!;
    const counters: Array<[string, Sum]> = [];
    for (let r = first(p.id); r >= 0; r = next[r]!) {
      counters.push([counterName(rows.counters[r]!), { packets: BigInt(rows.packets[r]!), bytes: BigInt(rows.bytes[r]!) }]);
    }
    shown.push(trafficOf(p, counters));
  }
  if (remote.length <= limit) return { shown, aggregated: 0 };
  // tx vxlan, tx direct, rx vxlan, rx direct.
  const traffic = Array.from({ length: 4 }, () => new SumPair());
  const slot = (d: Direction, p: Path): number => (d === "tx" ? 0 : 2) + (p === "vxlan" ? 0 : 1);
  const drops = new Map<string, SumPair>();
  for (let k = limit; k < order.length; k++) {
    if ((k & 1023) === 1023) yield;
    const p = remote[order[k]!]!;
    for (let r = first(p.id); r >= 0; r = next[r]!) {
      const x = role(rows.counters[r]!);
      if (x.kind === "traffic") traffic[slot(x.direction, x.path === "peer" ? p.kind : x.path)]!.add(rows, r);
      else {
        let d = drops.get(x.reason);
        if (!d) drops.set(x.reason, (d = new SumPair()));
        d.add(rows, r);
      }
    }
  }
  const other = { tx: emptyPaths(), rx: emptyPaths() };
  for (const d of DIRECTIONS) for (const p of PATHS) other[d][p] = traffic[slot(d, p)]!.value;
  return {
    shown,
    other: { subnet: OTHER, publicIP: OTHER, ...other, drops: new Map([...drops].map(([reason, s]) => [reason, s.value])) },
    aggregated: remote.length - limit,
  };
}

