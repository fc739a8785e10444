/**
 * Is a node whole? What the fault checker asks after every fault, and what
 * the start-up records as the node's whole state.
 *
 * How it works: `baseline` reads, once the cluster is up, which tcx links
 * twill pinned on a bpf node (pin names "<role>-<ifindex>", mapped to the
 * device name of that ifindex: flannel.1, eth0, cni0, the pod's veth).
 * `problems` lists in words what is not back, empty when the node is whole:
 *   - the daemon process runs and /readyz answers "ready";
 *   - flannel.1 exists and is up;
 *   - bpf: every baseline link is pinned again on the device's current
 *     ifindex (a re-created flannel.1 has a new one), and the pinned
 *     twill_peers map holds every other real node with its VTEP MAC and
 *     public IP (read in this process, bench/scale/state.ts);
 *   - kernel: flannel's route, permanent neighbour and FDB entry for every
 *     other real node (bench/scale/state.ts).
 * `realPeers` is what each node must hold for the other real nodes, read
 * from their leases in etcd at start (the real leases never change).
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { runJson } from "../lib/exec.js";
import { pinnedPeers, programmedPeers } from "../scale/state.js";
import type { SoakCluster, SoakNode } from "./cluster.js";
import { etcdKey, expectedPeer } from "./leases.js";

interface LinkJson { ifname: string; ifindex: number; operstate?: string; flags?: string[] }

/** A pinned link as (role, device name). */
export interface PinnedLink { readonly role: string; readonly dev: string }

export interface NodeBaseline {
  readonly links: readonly PinnedLink[];
}

async function links(s: SoakNode): Promise<LinkJson[]> {
  return runJson<LinkJson[]>("ip", ["-j", "link", "show"], { netns: s.n.host.netns });
}

function pins(s: SoakNode): string[] {
  try {
    return readdirSync(join(s.n.pinDir, "links"));
  } catch {
    return [];
  }
}

/** The tcx links twill pinned on a bpf node, by device name (empty for kernel nodes). */
export async function baseline(s: SoakNode): Promise<NodeBaseline> {
  if (s.dataplane !== "bpf") return { links: [] };
  const byIndex = new Map((await links(s)).map((l) => [l.ifindex, l.ifname]));
  const out: PinnedLink[] = [];
  for (const name of pins(s)) {
    const m = /^(.+)-(\d+)$/.exec(name);
    const dev = m ? byIndex.get(Number(m[2])) : undefined;
    if (m && dev) out.push({ role: m[1]!, dev });
  }
  return { links: out.sort((a, b) => `${a.role}${a.dev}`.localeCompare(`${b.role}${b.dev}`)) };
}

/** prefix → signature every node must hold for each other real node. */
export async function realPeers(c: SoakCluster): Promise<Map<string, { prefix: string; signature: string }>> {
  const out = new Map<string, { prefix: string; signature: string }>();
  for (const s of c.nodes) {
    const value = (await c.etcd.etcdctl(["get", "--print-value-only", etcdKey(s.slot)])).stdout.trim();
    const e = expectedPeer(etcdKey(s.slot), value, -1);
    if (!e) throw new Error(`Cannot read ${s.name}'s lease from etcd: ${value || "(none)"}`);
    out.set(s.name, e);
  }
  return out;
}

/** What is not back on node `s`, in words; [] when the node is whole. */
export async function problems(c: SoakCluster, s: SoakNode, base: NodeBaseline, real: ReadonlyMap<string, { prefix: string; signature: string }>): Promise<string[]> {
  const out: string[] = [];
  const proc = s.n.proc;
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) out.push("the daemon is not running");
  else if (!(await c.tc.http(s.n, "/readyz")).startsWith("ready")) out.push("/readyz is not ready");
  const all = await links(s);
  const dev = all.find((l) => l.ifname === "flannel.1");
  if (!dev) out.push("flannel.1 is missing");
  else if (!(dev.flags ?? []).includes("UP")) out.push("flannel.1 is down");
  const want = [...real].filter(([name]) => name !== s.name).map(([, p]) => p);
  if (s.dataplane === "bpf") {
    const index = new Map(all.map((l) => [l.ifname, l.ifindex]));
    const have = new Set(pins(s));
    const missing = base.links.filter((l) => !have.has(`${l.role}-${index.get(l.dev) ?? "?"}`));
    if (missing.length) out.push(`links not pinned: ${missing.map((l) => `${l.role} on ${l.dev}`).join(", ")}`);
    let peers: Map<string, string> | undefined;
    try {
      peers = pinnedPeers(s.n.pinDir);
    } catch (e) {
      out.push(`cannot read twill_peers: ${(e as Error).message}`);
    }
    if (peers) for (const p of want) if (peers.get(p.prefix) !== p.signature) out.push(`twill_peers has ${p.prefix} as ${peers.get(p.prefix) ?? "nothing"}, want ${p.signature}`);
  } else if (dev) {
    const peers = await programmedPeers(c.tc, s.n, "kernel");
    for (const p of want) if (peers.get(p.prefix) !== p.signature) out.push(`kernel entries for ${p.prefix}: ${peers.get(p.prefix) ?? "incomplete"}, want ${p.signature}`);
  }
  return out;
}
