/**
 * Reading twill's per-peer packet counters (`twill maps --json`) as numbers,
 * and what moved between two snapshots, for tests that prove which path
 * carried their traffic.
 *
 * How it works: BpfState.counters holds every counter the build knows (as
 * decimal strings, summed over peers); perPeer only the ones that moved, by
 * peer id. A counter name the build does not know is an error, not a zero,
 * so a test cannot pass on a build that lacks the counter it asserts on.
 */
import type { BpfState } from "./twill.js";

export interface Count { packets: number; bytes: number }

/** Counter `name` summed over peers. Throws when the build has no such counter. */
export function total(s: BpfState, name: string): Count {
  const c = s.counters[name];
  if (!c) throw new Error(`twill maps has no counter "${name}" (this build knows: ${Object.keys(s.counters).join(", ")})`);
  return { packets: Number(c.packets), bytes: Number(c.bytes) };
}

/** Counter `name` of peer `peerId` (0: no peer). */
export function ofPeer(s: BpfState, peerId: number, name: string): Count {
  total(s, name); // the build must know it
  const c = s.perPeer[String(peerId)]?.[name];
  return { packets: Number(c?.packets ?? 0), bytes: Number(c?.bytes ?? 0) };
}

/** after − before of counter `name` (summed over peers, or of one peer). */
export function delta(before: BpfState, after: BpfState, name: string, peerId?: number): Count {
  const [b, a] = peerId === undefined ? [total(before, name), total(after, name)] : [ofPeer(before, peerId, name), ofPeer(after, peerId, name)];
  return { packets: a.packets - b.packets, bytes: a.bytes - b.bytes };
}

/** Sum of several counters' deltas. */
export function deltaSum(before: BpfState, after: BpfState, names: string[], peerId?: number): Count {
  return names.map((n) => delta(before, after, n, peerId)).reduce((x, y) => ({ packets: x.packets + y.packets, bytes: x.bytes + y.bytes }), { packets: 0, bytes: 0 });
}

/** "encap +123 pkts/4567 B, decap +..." for every counter that moved, for messages. */
export function moved(before: BpfState, after: BpfState, peerId?: number): string {
  const parts: string[] = [];
  for (const name of Object.keys(after.counters)) {
    const d = delta(before, after, name, peerId);
    if (d.packets || d.bytes) parts.push(`${name} +${d.packets} pkts/${d.bytes} B`);
  }
  return parts.join(", ") || "nothing moved";
}

/** The id of the peer entry for `prefix` ("10.244.2.0/24"). Throws when there is none. */
export function peerId(s: BpfState, prefix: string): number {
  const p = s.peers.find((x) => x.prefix === prefix);
  if (!p) throw new Error(`no peer entry for ${prefix} (have: ${s.peers.map((x) => `${x.prefix}=${x.kind}`).join(", ")})`);
  return p.id;
}
