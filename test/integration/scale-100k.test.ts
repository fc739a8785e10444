/**
 * 100,000 peers in the embedded lease directory, for correctness only
 * (speed is `make bench`):
 *
 *   leases/subnets/ ── 100,000 lease files (10.0.0.0/8 in /26s) ──▶ h1 twill (bpf)
 *                                                                    └ /sys/fs/bpf/<prefix>/h1/maps/twill_peers
 *
 * The node starts with the default --peer-capacity and must program every
 * lease: the pinned peers trie holds 100,000 VXLAN entries plus our own
 * subnet and the cluster network, each with the lease's underlay address
 * and VTEP MAC (checked by the project's own map reader), and twill_remotes
 * one entry per peer address. Before --peer-capacity the trie stopped at
 * 65,536 entries and the rest were silently not programmed.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { TwillCluster, type TwillNode } from "../lib/twill.js";
import { spawnIn, waitFor } from "../lib/exec.js";
import { serializeLease } from "../../src/lease/parse.js";
import { parseIP } from "../../src/net/ip.js";
import { openPinnedMaps } from "../../src/bpf/loader.js";
import { readPeerEntries } from "../../src/peerstats.js";

const PEERS = 100_000;
const NET_CONFIG = { Network: "10.0.0.0/8", SubnetLen: 26, Backend: { Type: "vxlan", VNI: 1, Port: 8472 } };
const hex = (n: number) => n.toString(16).padStart(2, "0");
/** Peer i (1..PEERS): subnet 10.x.y.z/26 (the i-th /26), underlay 172.(16+i/65536).y.z, a MAC from i. */
const peer = (i: number) => {
  const a = i * 64;
  return {
    key: `10.${(a >> 16) & 255}.${(a >> 8) & 255}.${a & 255}-26`,
    prefix: `10.${(a >> 16) & 255}.${(a >> 8) & 255}.${a & 255}/26`,
    publicIP: `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    mac: `02:5c:00:${hex(i >> 16)}:${hex((i >> 8) & 255)}:${hex(i & 255)}`,
  };
};

describe(`${PEERS.toLocaleString("en")} peers in the lease directory, bpf dataplane`, () => {
  let tc: TwillCluster;
  let n: TwillNode;

  before(async () => {
    tc = await TwillCluster.create({ hosts: 1, startNodes: false, netConfig: NET_CONFIG, reconcileSeconds: 30 });
    n = tc.nodes[0]!;
    // The lease files as DirStore writes them (serializeLease: flannel's LeaseAttrs JSON),
    // written directly: 100,000 temp files + renames would only slow the setup down.
    const dir = join(tc.leaseDir, "subnets");
    for (let i = 1; i <= PEERS; i++) {
      const p = peer(i);
      writeFileSync(join(dir, p.key), serializeLease({
        key: p.key, publicIP: parseIP(p.publicIP), backendType: "vxlan", backendData: { vni: 1, vtepMAC: p.mac },
      }));
    }
  });
  after(async () => {
    await tc?.destroy();
  });

  test("every lease is programmed with the default --peer-capacity", async () => {
    n.proc = spawnIn(n.host.netns, process.execPath, tc.args(n), { logFile: n.logFile });
    const proc = n.proc;
    await waitFor(async () => proc.exitCode !== null || (await tc.http(n, "/readyz")).startsWith("ready"),
      { timeoutMs: 60_000, intervalMs: 200, what: "twill ready with 100,000 peers" });
    assert.equal(proc.exitCode, null, `twill exited:\n${tc.log(n).slice(-3000)}`);
    // What the daemon says it spent (no timing assert: correctness only).
    const times = new Map<string, number>();
    for (const line of tc.log(n).split("\n")) {
      const m = /"time":"([^"]+)".*"msg":"([^"]+)"/.exec(line);
      if (m && !times.has(m[2]!)) times.set(m[2]!, Date.parse(m[1]!));
    }
    const t0 = Math.min(...times.values());
    console.log(`start → ${[...times].map(([msg, t]) => `${msg} +${t - t0} ms`).join(", ")}`);

    const maps = openPinnedMaps(n.pinDir);
    try {
      assert.ok(maps.twill_peers.maxEntries >= PEERS + 2, `twill_peers holds at most ${maps.twill_peers.maxEntries} entries`);
      const entries = readPeerEntries(maps.twill_peers);
      const byKind = new Map<string, number>();
      for (const e of entries) byKind.set(e.kind, (byKind.get(e.kind) ?? 0) + 1);
      assert.deepEqual(Object.fromEntries(byKind), { vxlan: PEERS, local: 1, cluster: 1 },
        `twill_peers: ${entries.length} entries; log:\n${tc.log(n).split("\n").filter((l) => /ERR_|error|warn/i.test(l)).slice(-20).join("\n")}`);
      const got = new Map(entries.map((e) => [e.prefix, e]));
      for (let i = 1; i <= PEERS; i++) {
        const p = peer(i);
        const e = got.get(p.prefix);
        assert.ok(e && e.remote === p.publicIP && e.vtepMAC === p.mac && e.vni === 1,
          `peer ${i} (${p.prefix}): programmed as ${JSON.stringify(e)}, want ${p.publicIP} ${p.mac}`);
      }
      assert.equal(maps.twill_remotes.count(), PEERS, "one twill_remotes entry per peer underlay address");
    } finally {
      for (const m of Object.values(maps)) m.close();
    }
  });
});
