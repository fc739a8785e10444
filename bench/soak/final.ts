/**
 * The end of the soak: each twill node's dataplane against the leases etcd
 * holds once the churn has stopped.
 *
 * How it works: read every lease under <prefix>/subnets/ with etcdctl;
 * per node, the expected peers are those leases.ts `expectedPeer` accepts
 * (real nodes, the anchor, the valid pool — never a bad-pool lease, never
 * the node's own), decided by each key's role in the plan, not by twill's
 * own validation. What the node holds is read as bench/scale/state.ts
 * reads it (bpf: the pinned twill_peers map; kernel: flannel's route +
 * permanent neighbour + FDB entry on flannel.1). Polled every second until
 * equal or CONVERGE_LIMIT_MS; the differences left are listed in words
 * (state.ts `differences`), with how many bad leases etcd still held.
 */
import { sleep } from "../lib/exec.js";
import { differences, pinnedPeers, programmedPeers } from "../scale/state.js";
import type { SoakCluster } from "./cluster.js";
import { ETCD_PREFIX, expectedPeer, keySlot, slotRole } from "./leases.js";

const CONVERGE_LIMIT_MS = 60_000;

export interface NodeComparison {
  readonly node: string;
  readonly dataplane: "bpf" | "kernel";
  readonly equal: boolean;
  /** Expected peers (leases in etcd that must be programmed on this node). */
  readonly expected: number;
  readonly programmed: number;
  /** From the churn's stop until equal (or the limit). */
  readonly convergedMs: number;
  readonly differences: readonly string[];
}

export interface FinalCheck {
  readonly leases: number;
  readonly badLeases: number;
  readonly nodes: readonly NodeComparison[];
}

async function etcdLeases(c: SoakCluster): Promise<{ key: string; value: string }[]> {
  const kv = await c.etcd.etcdctlJson<{ kvs?: { key: string; value: string }[] }>(["get", "--prefix", `${ETCD_PREFIX}/subnets/`]);
  return (kv.kvs ?? []).map((x) => ({ key: Buffer.from(x.key, "base64").toString(), value: Buffer.from(x.value, "base64").toString() }));
}

export async function compareWithEtcd(c: SoakCluster, stoppedAt: number): Promise<FinalCheck> {
  let leases = await etcdLeases(c);
  const nodes: NodeComparison[] = [];
  for (const s of c.twillNodes) {
    let last: NodeComparison | undefined;
    for (;;) {
      leases = await etcdLeases(c);
      const want = new Map<string, string>();
      for (const { key, value } of leases) {
        const e = expectedPeer(key, value, s.slot);
        if (e) want.set(e.prefix, e.signature);
      }
      const have = s.dataplane === "bpf" ? pinnedPeers(s.n.pinDir) : await programmedPeers(c.tc, s.n, "kernel");
      const diff = differences(want, have, 20);
      last = { node: s.name, dataplane: s.dataplane, equal: diff.length === 0, expected: want.size, programmed: have.size, convergedMs: Date.now() - stoppedAt, differences: diff };
      if (last.equal || Date.now() - stoppedAt > CONVERGE_LIMIT_MS) break;
      await sleep(1000);
    }
    nodes.push(last);
  }
  const badLeases = leases.filter((l) => slotRole(keySlot(l.key) ?? -1) === "bad").length;
  return { leases: leases.length, badLeases, nodes };
}
