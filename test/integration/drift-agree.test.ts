/**
 * twill status and the reconcile agree on every drift case the drift tests
 * cause (one list of cases, both checked).
 *
 *   h1 [p1] bpf                   h2 [p1] kernel (flannel's route + neigh + FDB per peer)
 *     flannel.1 (external)          flannel.1 (vxlan id 1)
 *     eth0 192.168.50.11            eth0 192.168.50.12     (one L2 segment, leases in one directory)
 *
 * Both daemons run with --reconcile-period 3600, so nothing repairs behind
 * the test's back: the only reconcile after a case's drift is the one SIGHUP
 * asks for. For each case (CASES below, the drift.test.ts ones plus changed
 * entries):
 *   1) cause the drift on the node of the case's dataplane;
 *   2) `twill status --json` (the node's own flags, in its namespace) → D1,
 *      which must not be empty;
 *   3) SIGHUP the daemon (re-list + reconcile now) and take the `drift` of
 *      its next "reconcile repaired drift" log line → D2;
 *   4) driftKeys(D1) deep-equals driftKeys(D2): status said exactly what the
 *      reconcile then repaired;
 *   5) `twill status --json` shows no drift, and the pods reach each other
 *      both ways.
 * Each case prints D1 (and D2 when it differs) as a test diagnostic.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { TwillCluster, TWILL, type TwillNode } from "../lib/twill.js";
import { run } from "../lib/exec.js";
import { cidrNetwork } from "../lib/cluster.js";
import { ping } from "../lib/traffic.js";
import { getLinkMAC } from "../lib/linkmac.js";
import { PeerKind, encodeLpmKey, encodePeer } from "../../src/bpf/layout.js";
import { parseIP, parsePrefix } from "../../src/net/ip.js";
import { driftKeys, type Drift } from "../../src/dataplane/drift.js";
import type { NodeStatus } from "../../src/status.js";

/** How long the SIGHUP reconcile's log line may take to show. */
const REPAIR_LOG_MS = 5000;
const STALE_BPF = "10.244.250.0/24";
const STALE_KERNEL = "10.244.251.0/24";
const WRONG_MAC = "02:00:00:00:00:99";

const hex = (b: Buffer): string[] => [...b].map((x) => x.toString(16).padStart(2, "0"));
/** bpftool's `key hex` bytes of an IPv4 underlay address in twill_remotes: struct twill_ep_key, family (u32 LE, 4), addr (16 bytes). */
function remoteKeyHex(ip: string): string[] {
  const key = Buffer.alloc(20);
  key.writeUInt32LE(4, 0);
  Buffer.from(ip.split(".").map(Number)).copy(key, 4);
  return hex(key);
}

interface Ctx {
  tc: TwillCluster;
  /** The node the case breaks, and its one peer. */
  n: TwillNode;
  peer: TwillNode;
  /** The peer's subnet ("10.244.7.0/24"), the gateway address in it, its VTEP MAC. */
  peerSubnet: string;
  peerGw: string;
  peerMAC: string;
}

interface Case {
  name: string;
  dataplane: "bpf" | "kernel";
  cause(c: Ctx): Promise<unknown>;
}

const inNs = (c: Ctx, cmd: string, args: string[]) => run(cmd, args, { netns: c.n.host.netns });
const peersPin = (c: Ctx): string => join(c.n.pinDir, "maps", "twill_peers");

/** One list: what drift.test.ts causes, plus a changed entry in each dataplane. */
const CASES: Case[] = [
  {
    name: "a peer's entry deleted from the twill_peers trie",
    dataplane: "bpf",
    cause: (c) => run("bpftool", ["map", "delete", "pinned", peersPin(c), "key", "hex", ...hex(encodeLpmKey(parsePrefix(c.peerSubnet)))]),
  },
  {
    name: "a peer host's twill_remotes entry deleted",
    dataplane: "bpf",
    cause: (c) => run("bpftool", ["map", "delete", "pinned", join(c.n.pinDir, "maps", "twill_remotes"), "key", "hex", ...remoteKeyHex(c.peer.host.underlayIP)]),
  },
  {
    name: "a peer's entry overwritten with a wrong VTEP MAC",
    dataplane: "bpf",
    cause: async (c) => {
      const e = (await c.tc.maps(c.n)).peers.find((p) => p.prefix === c.peerSubnet)!;
      await run("bpftool", ["map", "update", "pinned", peersPin(c), "key", "hex", ...hex(encodeLpmKey(parsePrefix(c.peerSubnet))),
        "value", "hex", ...hex(encodePeer({ kind: PeerKind.Vxlan, remote: parseIP(e.remote!), vtepMAC: WRONG_MAC, vni: 1, id: e.id }))]);
    },
  },
  {
    name: `a stale trie entry for ${STALE_BPF}, which no lease has`,
    dataplane: "bpf",
    cause: (c) => run("bpftool", ["map", "update", "pinned", peersPin(c), "key", "hex", ...hex(encodeLpmKey(parsePrefix(STALE_BPF))),
      "value", "hex", ...hex(encodePeer({ kind: PeerKind.Vxlan, remote: parseIP("192.168.50.99"), vtepMAC: "02:00:00:00:00:98", vni: 1, id: 999 }))]),
  },
  {
    name: "flannel.1 deleted (bpf)",
    dataplane: "bpf",
    cause: (c) => inNs(c, "ip", ["link", "del", "flannel.1"]),
  },
  {
    name: "a peer's route deleted",
    dataplane: "kernel",
    cause: (c) => inNs(c, "ip", ["route", "del", c.peerSubnet, "dev", "flannel.1"]),
  },
  {
    name: "a peer's permanent neighbour deleted",
    dataplane: "kernel",
    cause: (c) => inNs(c, "ip", ["neigh", "del", c.peerGw, "dev", "flannel.1"]),
  },
  {
    name: "a peer's permanent neighbour with a wrong MAC",
    dataplane: "kernel",
    cause: (c) => inNs(c, "ip", ["neigh", "replace", c.peerGw, "lladdr", WRONG_MAC, "dev", "flannel.1", "nud", "permanent"]),
  },
  {
    name: "a peer's FDB entry deleted",
    dataplane: "kernel",
    cause: (c) => inNs(c, "bridge", ["fdb", "del", c.peerMAC, "dev", "flannel.1", "dst", c.peer.host.underlayIP, "self"]),
  },
  {
    name: `a stale route to ${STALE_KERNEL} in the cluster network`,
    dataplane: "kernel",
    cause: (c) => inNs(c, "ip", ["route", "add", STALE_KERNEL, "via", STALE_KERNEL.split("/")[0]!, "dev", "flannel.1", "onlink"]),
  },
  {
    name: "flannel.1 deleted (kernel)",
    dataplane: "kernel",
    cause: (c) => inNs(c, "ip", ["link", "del", "flannel.1"]),
  },
];

describe("twill status and the SIGHUP reconcile agree on each drift case", () => {
  let tc: TwillCluster;
  let h1: TwillNode, h2: TwillNode;
  before(async () => {
    tc = await TwillCluster.create({ hosts: 2, podsPerHost: 1, reconcileSeconds: 3600, nodes: [{ dataplane: "bpf" }, { dataplane: "kernel" }] });
    [h1, h2] = tc.nodes as [TwillNode, TwillNode];
  });
  after(async () => tc && (await tc.destroy()));

  const fail = async (msg: string): Promise<never> => assert.fail(`${msg}\n${await tc.diagnostics()}`);

  /** `twill status --json` with the daemon's own flags, in the node's namespace (exit 1 = drift); why not, when it cannot tell (exit 2). */
  async function tryStatus(n: TwillNode): Promise<NodeStatus | string> {
    const r = await run(process.execPath, [TWILL, "status", "--json", ...tc.args(n).slice(1)], { netns: n.host.netns, allowFail: true });
    return r.code > 1 ? `exited ${r.code}: ${r.stderr.trim()}` : (JSON.parse(r.stdout) as NodeStatus);
  }
  async function status(n: TwillNode): Promise<NodeStatus> {
    const s = await tryStatus(n);
    return typeof s === "string" ? fail(`twill status on ${n.host.name} ${s}`) : s;
  }

  /** The `drift` of each "reconcile repaired drift" line in the node's log, oldest first. */
  function repairLines(n: TwillNode): Drift[][] {
    const out: Drift[][] = [];
    for (const line of tc.log(n).split("\n")) {
      if (!line.includes('"reconcile repaired drift"')) continue;
      const rec = JSON.parse(line) as { msg?: string; drift?: Drift[] };
      if (rec.msg === "reconcile repaired drift") out.push(rec.drift ?? []);
    }
    return out;
  }

  /** SIGHUP, then the drift of the next "reconcile repaired drift" line. */
  async function sighupRepair(n: TwillNode): Promise<Drift[]> {
    const seen = repairLines(n).length;
    n.proc!.kill("SIGHUP");
    const t0 = performance.now();
    for (;;) {
      const lines = repairLines(n);
      if (lines.length > seen) return lines[seen]!;
      if (performance.now() - t0 > REPAIR_LOG_MS) return fail(`no "reconcile repaired drift" line on ${n.host.name} within ${REPAIR_LOG_MS} ms of SIGHUP`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async function podsReach(): Promise<string[]> {
    const [a, b] = [h1.host.pods[0]!, h2.host.pods[0]!];
    const fails: string[] = [];
    await Promise.all([[a, b], [b, a]].map(async ([x, y]) => {
      const r = await ping(x!.netns, y!.ip, { count: 2, intervalMs: 50, timeoutMs: 3000 });
      if (r.received === 0) fails.push(`${x!.name}@${x!.host.name} -> ${y!.name}@${y!.host.name} (${y!.ip})`);
    }));
    return fails;
  }

  test("healthy before the cases: no drift on either node, pods reach each other", async () => {
    for (const n of [h1, h2]) assert.deepEqual((await status(n)).drift, [], `${n.host.name} has drift before any case`);
    assert.deepEqual(await podsReach(), []);
  });

  for (const k of CASES) {
    test(`${k.dataplane}: ${k.name}`, async (t) => {
      const [n, peer] = k.dataplane === "bpf" ? [h1, h2] : [h2, h1];
      const peerSubnet = cidrNetwork(tc.subnet(peer));
      const peerMAC = await getLinkMAC(peer.host.netns, "flannel.1");
      await k.cause({ tc, n, peer, peerSubnet, peerGw: peerSubnet.split("/")[0]!, peerMAC });

      const s1 = await tryStatus(n);
      if (typeof s1 === "string") {
        // Status could not tell: still let the reconcile run, so the failure says what it repaired.
        const d2 = await sighupRepair(n);
        return fail(`${k.name}: twill status on ${n.host.name} ${s1}; the SIGHUP reconcile repaired ${JSON.stringify(d2)}`);
      }
      const d1 = s1.drift;
      t.diagnostic(`status D1: ${JSON.stringify(d1)}`);
      if (d1.length === 0) await fail(`${k.name}: twill status on ${n.host.name} shows no drift`);

      const d2 = await sighupRepair(n);
      const [k1, k2] = [driftKeys(d1), driftKeys(d2)];
      if (JSON.stringify(k1) !== JSON.stringify(k2)) t.diagnostic(`reconcile D2: ${JSON.stringify(d2)}`);
      assert.deepEqual(k2, k1, `${k.name}: status said ${JSON.stringify(d1)}, the reconcile repaired ${JSON.stringify(d2)}`);

      const again = await status(n);
      if (again.drift.length) await fail(`${k.name}: drift left after the repair: ${JSON.stringify(again.drift)}`);
      const lost = await podsReach();
      if (lost.length) await fail(`${k.name}: pods do not reach each other after the repair: ${lost.join(", ")}`);
    });
  }
});
