/**
 * What a node's dataplane holds, read from outside: per peer subnet its
 * VTEP MAC and public IP, and the raw counts.
 *
 * How it works: bpf — the pinned twill_peers map, read from this process
 * (entries of kind vxlan; `twill maps --json` for the counts right after ready); kernel — flannel's three entries per peer on
 * flannel.1: the permanent neighbour <subnet>.0 → VTEP MAC, the FDB entry
 * VTEP MAC → public IP and the route <subnet>; a peer counts only when all
 * three are there. Comparison with etcd uses leases.ts's peerSignature.
 */
import { runJson } from "../lib/exec.js";
import { kernelStateCounts } from "../lib/traffic.js";
import type { TwillCluster, TwillNode } from "../lib/twill.js";
import { openPinnedMaps } from "../../src/bpf/loader.js";
import { decodeLpmKey, decodePeer, PeerKind } from "../../src/bpf/layout.js";
import { formatIP, formatPrefix } from "../../src/net/ip.js";
import { peerSignature } from "./leases.js";
import type { ScaleMode, StartResult } from "./types.js";

/** prefix → "<VTEP MAC> <public IP>" of every peer programmed. */
export async function programmedPeers(tc: TwillCluster, n: TwillNode, mode: ScaleMode): Promise<Map<string, string>> {
  if (mode === "bpf") return pinnedPeers(n.pinDir);
  const netns = n.host.netns;
  const [neigh, fdb, routes] = await Promise.all([
    runJson<Array<{ dst: string; lladdr?: string }>>("ip", ["-j", "neigh", "show", "dev", "flannel.1", "nud", "permanent"], { netns }),
    runJson<Array<{ mac: string; dst?: string }>>("bridge", ["-j", "fdb", "show", "dev", "flannel.1"], { netns }),
    runJson<Array<{ dst: string }>>("ip", ["-j", "route", "show", "dev", "flannel.1"], { netns }),
  ]);
  const remoteOf = new Map(fdb.filter((f) => f.dst).map((f) => [f.mac.toLowerCase(), f.dst!]));
  const routed = new Set(routes.map((r) => r.dst));
  const out = new Map<string, string>();
  for (const e of neigh) {
    const prefix = `${e.dst}/24`;
    const mac = (e.lladdr ?? "-").toLowerCase();
    if (routed.has(prefix)) out.set(prefix, peerSignature(mac, remoteOf.get(mac) ?? "-"));
  }
  return out;
}

/** prefix → "<VTEP MAC> <public IP>" of every vxlan entry of the pinned twill_peers map under pinDir. */
export function pinnedPeers(pinDir: string): Map<string, string> {
  const maps = openPinnedMaps(pinDir);
  try {
    const out = new Map<string, string>();
    for (const [k, v] of maps.twill_peers.entries()) {
      const p = decodePeer(v);
      if (p.kind === PeerKind.Vxlan) out.set(formatPrefix(decodeLpmKey(k)), peerSignature(p.vtepMAC ?? "-", p.remote ? formatIP(p.remote) : "-"));
    }
    return out;
  } finally {
    for (const m of Object.values(maps)) m.close();
  }
}

/** The counts checked right after the node turned ready. */
export async function programmedCounts(tc: TwillCluster, n: TwillNode, mode: ScaleMode): Promise<StartResult["programmed"]> {
  if (mode === "bpf") {
    const m = await tc.maps(n);
    return { entries: m.peers.filter((p) => p.kind === "vxlan").length };
  }
  const k = await kernelStateCounts(n.host.netns, "flannel.1");
  return { entries: Math.min(k.routes, k.neighbours, k.fdb), routes: k.routes, neighbours: k.neighbours, fdb: k.fdb };
}

/**
 * Peers programmed, counted without starting a process (bpf: the pinned map,
 * read from this process; kernel: one `ip` for the routes on flannel.1) —
 * for waits during a memory measurement, where a `node` child would add
 * its own kernel objects to what is measured.
 */
export async function quietPeerCount(n: TwillNode, mode: ScaleMode): Promise<number> {
  if (mode === "kernel") {
    return (await runJson<unknown[]>("ip", ["-j", "route", "show", "dev", "flannel.1"], { netns: n.host.netns })).length;
  }
  const maps = openPinnedMaps(n.pinDir);
  try {
    return maps.twill_peers.entries().filter(([, v]) => decodePeer(v).kind === PeerKind.Vxlan).length;
  } finally {
    for (const m of Object.values(maps)) m.close();
  }
}

/** Up to `limit` differences between what etcd holds and what is programmed, in words. */
export function differences(want: ReadonlyMap<string, string>, have: ReadonlyMap<string, string>, limit = 8): string[] {
  const out: string[] = [];
  let count = 0;
  for (const [p, s] of want) {
    const h = have.get(p);
    if (h === s) continue;
    if (count++ < limit) out.push(h === undefined ? `${p} missing (want ${s})` : `${p} is ${h}, want ${s}`);
  }
  for (const [p, h] of have) {
    if (want.has(p)) continue;
    if (count++ < limit) out.push(`${p} stale (${h})`);
  }
  if (count > limit) out.push(`… ${count - limit} more`);
  return out;
}
