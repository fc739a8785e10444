/**
 * A batch that deletes one lease and adds another for the same subnet leaves
 * the new entry in place, in both dataplanes.
 *
 *   fake kube-apiserver (sim/kubeapi.ts) in the router namespace, http://192.168.50.1:6443
 *   h1 twill bpf     ─┐ --kube-subnet-mgr, dual stack (10.244.0.0/16 + fc00::/48),
 *   h2 twill kernel  ─┘ --reconcile-period 3600 (only a SIGHUP reconciles)
 *   eth0 192.168.50.11 / .12, fd00:50::11 / ::12 (one L2 segment)
 *   B, C: Nodes on the API only (no host): their leases are peers of h1 and h2.
 *
 * The case: Node B is deleted and Node C comes up with B's podCIDR (another
 * public IP and VTEP MAC), in one step: the daemons are paused (SIGSTOP)
 * while the API deletes B and adds C, so each daemon reads the DELETED and
 * the ADDED event in one watch chunk and its watcher (one batch per tick)
 * hands them over as one batch; the test checks that from the daemon's
 * "peers changed" lines (one line, C's subnet upserted, not removed) and
 * prints them. Then, on both nodes, C's subnet entry
 * points to C's public IP and VTEP MAC (bpf: the pinned twill_peers map;
 * kernel: flannel's route, permanent neighbour and FDB entry, and B's FDB
 * entry gone), no reconcile had anything to repair, and a SIGHUP (re-list +
 * reconcile) leaves it so.
 *
 * Lease keys in Kubernetes are NOT node names here: a node's key is flannel's
 * etcd key of its pod CIDRs (formatLeaseKey, kubenode.ts), so two cases:
 *
 * - same key (B and C both have [v4, v6]): the watcher emits delete K, put K;
 *   the daemon keeps the last event of a key (apply(): `latest`), so the
 *   batch is one put, an upsert of changed peers. Order inside the batch
 *   cannot matter; this case checks the end state only (it passed before the
 *   fix as well).
 * - different keys (B has only the v4 podCIDR, key 10.244.61.0-24; C has v4
 *   and v6, key 10.244.61.0-24&fc00:0:0:61::-64): the batch is delete K_B,
 *   put K_C, both holding 10.244.61.0/24. This is the one the fix is for.
 *   Before d0f6b17, program() ran `upsert(up)` and then `remove(gone)`: up =
 *   [C's v4 + v6], gone = [B's v4], and remove(B's v4) deleted by subnet, so
 *   (bpf) the trie entry for 10.244.61.0/24 that the upsert had just written
 *   for C was deleted; (kernel) the route 10.244.61.0/24 via 10.244.61.0 and
 *   the neighbour 10.244.61.0, both keyed by the subnet's gateway and so the
 *   ones just written for C, were deleted (only B's FDB entry, keyed by B's
 *   MAC, was B's alone). C's v4 was then unreachable until the next full
 *   reconcile. Now program() merges the batch by subnet, the last change
 *   wins (remove B, upsert C → upsert C), and removes run before upserts.
 *   The check right after the batch (before any SIGHUP) is what catches it:
 *   a reconcile would re-add the entry and hide the bug, which is why the
 *   test also asserts that no "reconcile repaired drift" line appeared.
 *   (Had the events come the other way round, put K_C before delete K_B, in
 *   one batch, C would have clashed with B in the SubnetIndex and been
 *   rejected: that is the "deletes first within a batch" half of the fix.)
 *
 * The directory store: its keys are subnet-derived too (file names like
 * 10.244.62.0-24), and a directory has no change feed: every file change is
 * a resync (re-list, diff by key in reset(), removes into the index first,
 * then program() merges by subnet), never an event batch, so a dir variant
 * cannot make the event batch this test is about (and before d0f6b17 the
 * resync diffed by subnet, so it was never affected). Its different-key case
 * runs at the end anyway (last describe): the daemons are paused while B's
 * file is removed and C's written, so they see both in one resync.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TwillCluster, type TwillNode } from "../lib/twill.js";
import { FakeKubeProcess } from "../lib/fakekube-main.js";
import { runJson, waitFor } from "../lib/exec.js";

const A = "flannel.alpha.coreos.com";
const DUAL = { Network: "10.244.0.0/16", SubnetLen: 24, EnableIPv6: true, IPv6Network: "fc00::/48", IPv6SubnetLen: 64, Backend: { Type: "vxlan", VNI: 1 } };
const APPLY_MS = 5000;

interface Fake { name: string; v4: string; v6?: string; ip: string; ipv6?: string; mac: string }

/** A Node as twill/flannel annotate it: public IP(s) and VTEP MAC per family. */
function annotations(f: Fake): Record<string, string> {
  const data = JSON.stringify({ VNI: 1, VtepMAC: f.mac });
  return {
    [`${A}/kube-subnet-manager`]: "true", [`${A}/backend-type`]: "vxlan",
    [`${A}/backend-data`]: data, [`${A}/public-ip`]: f.ip,
    ...(f.v6 ? { [`${A}/backend-v6-data`]: data, [`${A}/public-ipv6`]: f.ipv6! } : {}),
  };
}

type Route = { dst: string; gateway?: string; dev?: string; flags?: string[] };
type Neigh = { dst: string; lladdr?: string; state?: string[] };
type Fdb = { mac: string; dst?: string; flags?: string[]; state?: string };

/** What the node programs for `subnet` (v4), as one comparable object; kernel: FDB entries only of the VTEP MACs `macs`. */
async function entryOf(tc: TwillCluster, n: TwillNode, subnet: string, macs: readonly string[]): Promise<Record<string, unknown>> {
  if (n.opts.dataplane !== "kernel") {
    const e = (await tc.maps(n)).peers.find((p) => p.prefix === subnet);
    return e ? { kind: e.kind, remote: e.remote, vtepMAC: e.vtepMAC } : {};
  }
  const gw = subnet.split("/")[0]!, ns = n.host.netns;
  const [routes, neighs, fdb] = await Promise.all([
    runJson<Route[]>("ip", ["-j", "-4", "route", "show", subnet], { netns: ns }),
    runJson<Neigh[]>("ip", ["-j", "-4", "neigh", "show", gw, "dev", "flannel.1"], { netns: ns }),
    runJson<Fdb[]>("bridge", ["-j", "fdb", "show", "dev", "flannel.1"], { netns: ns }),
  ]);
  return {
    route: routes.map((r) => `${r.dst} via ${r.gateway} dev ${r.dev}${(r.flags ?? []).includes("onlink") ? " onlink" : ""}`),
    neigh: neighs.map((x) => `${x.dst} lladdr ${x.lladdr} ${(x.state ?? []).join(",")}`),
    fdb: fdb.filter((x) => x.dst && macs.includes(x.mac)).map((x) => `${x.mac} dst ${x.dst}`).sort(),
  };
}

/** What `entryOf` must show for peer `c` on node `n` (kernel: C's FDB entry, and none of B's MAC). */
function want(n: TwillNode, c: Fake): Record<string, unknown> {
  if (n.opts.dataplane !== "kernel") return { kind: "vxlan", remote: c.ip, vtepMAC: c.mac };
  const gw = c.v4.split("/")[0]!;
  return {
    route: [`${c.v4} via ${gw} dev flannel.1 onlink`],
    neigh: [`${gw} lladdr ${c.mac} PERMANENT`],
    fdb: [`${c.mac} dst ${c.ip}`],
  };
}

/** Where `got` (an entryOf) fails to point C's subnet at C: wrong or missing route, neighbour, FDB entry or map entry. */
function notC(n: TwillNode, c: Fake, got: Record<string, unknown>): string | undefined {
  const w = want(n, c);
  if (n.opts.dataplane !== "kernel") return JSON.stringify(got) === JSON.stringify(w) ? undefined : `twill_peers ${c.v4} is ${JSON.stringify(got)}, want ${JSON.stringify(w)}`;
  const bad = (["route", "neigh"] as const).filter((k) => JSON.stringify(got[k]) !== JSON.stringify(w[k]));
  if (!(got.fdb as string[]).includes((w.fdb as string[])[0]!)) bad.push("fdb" as never);
  return bad.length ? `${bad.join(", ")} wrong: ${JSON.stringify(got)}, want ${JSON.stringify(w)}` : undefined;
}

/** Log lines with this msg, parsed, from the node's log (after `from` characters). */
function logLines(tc: TwillCluster, n: TwillNode, msg: string, from = 0): Record<string, unknown>[] {
  return tc.log(n).slice(from).split("\n").filter((l) => l.includes(`"msg":"${msg}"`)).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/**
 * The shared steps: `swap()` deletes B and adds C in one step; then on every
 * node, once the batch is applied, C's subnet points to C (checked before
 * any reconcile could have fixed it), nothing of B is left, and a SIGHUP
 * re-list + reconcile finds nothing to repair and keeps C's entry.
 */
async function swapAndCheck(t: { diagnostic(s: string): void }, tc: TwillCluster, b: Fake, c: Fake, swap: () => Promise<unknown>): Promise<void> {
  const fail = async (msg: string): Promise<never> => assert.fail(`${msg}\n${await tc.diagnostics()}`);
  const macs = [b.mac, c.mac];
  for (const n of tc.nodes) {
    await waitFor(async () => notC(n, b, await entryOf(tc, n, b.v4, macs)) === undefined && !JSON.stringify(await entryOf(tc, n, b.v4, macs)).includes(c.mac),
      { what: `B's entry on ${n.host.name}`, timeoutMs: APPLY_MS }).catch((e: Error) => fail(e.message));
  }
  const marks = new Map(tc.nodes.map((n) => [n, tc.log(n).length]));

  await swap();

  const wrong: string[] = [], leftovers: string[] = [];
  for (const n of tc.nodes) {
    const mark = marks.get(n)!;
    // The batch is applied when a "peers changed" line upserted C's subnet (program() logs after removes and upserts).
    const applied = () => logLines(tc, n, "peers changed", mark).some((l) => (l.upserted as string[] | undefined)?.includes(c.v4));
    await waitFor(async () => applied(), { what: `${n.host.name} applying the batch`, timeoutMs: APPLY_MS }).catch((e: Error) => fail(e.message));
    const changed = logLines(tc, n, "peers changed", mark).map((l) => ({ upserted: l.upserted, removed: l.removed }));
    t.diagnostic(`${n.host.name} (${n.opts.dataplane}): peers changed ${JSON.stringify(changed)}`);
    if (changed.length !== 1 || (changed[0]!.removed as string[]).includes(c.v4)) {
      await fail(`${n.host.name}: the delete of B and the add of C were not applied as one batch (the case under test): ${JSON.stringify(changed)}`);
    }
    const got = await entryOf(tc, n, c.v4, macs);
    const why = notC(n, c, got);
    if (why) wrong.push(`${n.host.name} (${n.opts.dataplane}) right after the batch: ${why}`);
    if (n.opts.dataplane === "kernel" && (got.fdb as string[]).some((f) => f.startsWith(b.mac))) {
      leftovers.push(`${n.host.name} (kernel) right after the batch: B's FDB entry ${b.mac} dst ${b.ip} is still there: ${JSON.stringify(got.fdb)}`);
    }
  }

  // A SIGHUP re-lists and reconciles: it must find nothing to repair, and C's entry stays.
  const repairs: string[] = [];
  for (const n of tc.nodes) {
    const runs = await tc.metric(n, "twill_reconcile_duration_seconds_count");
    n.proc!.kill("SIGHUP");
    await waitFor(async () => (await tc.metric(n, "twill_reconcile_duration_seconds_count")) > runs,
      { what: `the SIGHUP reconcile on ${n.host.name}`, timeoutMs: APPLY_MS }).catch((e: Error) => fail(e.message));
    for (const l of logLines(tc, n, "reconcile repaired drift", marks.get(n)!)) repairs.push(`${n.host.name} (${n.opts.dataplane}): ${JSON.stringify(l.drift)}`);
    const why = notC(n, c, await entryOf(tc, n, c.v4, macs));
    if (why) wrong.push(`${n.host.name} (${n.opts.dataplane}) after the SIGHUP reconcile: ${why}`);
  }
  if (repairs.length) t.diagnostic(`reconcile repaired drift after the batch: ${repairs.join("; ")}`);
  if (wrong.length) await fail(`C's subnet does not point to C:\n${wrong.join("\n")}\nrepairs: ${repairs.join("; ") || "none"}`);
  if (leftovers.length || repairs.length) {
    await fail(`the batch left drift behind:\n${[...leftovers, ...repairs.map((r) => `the SIGHUP reconcile repaired ${r}`)].join("\n")}`);
  }
}

describe("kube: Node B deleted and Node C with B's podCIDR in one watch batch (bpf and kernel node)", () => {
  let tc: TwillCluster;
  let kube: FakeKubeProcess;

  before(async () => {
    tc = await TwillCluster.create({ hosts: 2, ipv6: true, startNodes: false, reconcileSeconds: 3600, nodes: [{ dataplane: "bpf" }, { dataplane: "kernel" }] });
    kube = await FakeKubeProcess.start(tc.cluster.routerNetns, tc.nodes[0]!.host.gateway);
    for (const [i, n] of tc.nodes.entries()) {
      await kube.call("addNode", { name: n.host.name, podCIDRs: [`10.244.${i + 1}.0/24`, `fc00:0:0:${i + 1}::/64`], internalIP: n.host.underlayIP });
    }
    const netConf = join(tc.cluster.dir, "net-conf.json");
    writeFileSync(netConf, JSON.stringify(DUAL));
    tc.sourceArgs = () => ["--kube-subnet-mgr", "--kube-api-url", kube.url, "--net-config-path", netConf];
    await Promise.all(tc.nodes.map((n) => tc.start(n)));
  });
  after(async () => {
    await tc?.destroy();
    await kube?.stop();
  });

  const addNode = (f: Fake) => kube.call("addNode", { name: f.name, podCIDRs: [f.v4, ...(f.v6 ? [f.v6] : [])], internalIP: f.ip, annotations: annotations(f) });
  /**
   * One watch chunk: the daemons are stopped (SIGSTOP) while the API deletes
   * B and adds C, so both events wait in their sockets and are read, parsed
   * and batched in one tick when they continue (SIGCONT). Without the stop
   * the two events usually come in two batches (remove B, then upsert C),
   * which is not the case under test.
   */
  const swap = (b: Fake, c: Fake) => async () => {
    for (const n of tc.nodes) n.proc!.kill("SIGSTOP");
    try {
      await kube.call("deleteNode", b.name);
      await addNode(c);
      await new Promise((r) => setTimeout(r, 100)); // the events cross the router namespace
    } finally {
      for (const n of tc.nodes) n.proc!.kill("SIGCONT");
    }
  };

  test("same lease key (B and C both v4 + v6): C's entry in place, kept by a SIGHUP reconcile", async (t) => {
    const b: Fake = { name: "b1", v4: "10.244.60.0/24", v6: "fc00:0:0:60::/64", ip: "192.168.50.60", ipv6: "fd00:50::60", mac: "02:00:00:00:0b:60" };
    const c: Fake = { name: "c1", v4: b.v4, v6: b.v6, ip: "192.168.50.160", ipv6: "fd00:50::160", mac: "02:00:00:00:0c:60" };
    await addNode(b);
    await swapAndCheck(t, tc, b, c, swap(b, c));
  });

  test("different lease keys (B v4 only, C v4 + v6): C's entry in place, kept by a SIGHUP reconcile", async (t) => {
    const b: Fake = { name: "b2", v4: "10.244.61.0/24", ip: "192.168.50.61", mac: "02:00:00:00:0b:61" };
    const c: Fake = { name: "c2", v4: b.v4, v6: "fc00:0:0:61::/64", ip: "192.168.50.161", ipv6: "fd00:50::161", mac: "02:00:00:00:0c:61" };
    await addNode(b);
    await swapAndCheck(t, tc, b, c, swap(b, c));
  });
});

describe("dir store: B's lease file removed and C's written for the same subnet, seen in one resync", () => {
  let tc: TwillCluster;
  before(async () => {
    tc = await TwillCluster.create({ hosts: 2, ipv6: true, netConfig: DUAL, reconcileSeconds: 3600, nodes: [{ dataplane: "bpf" }, { dataplane: "kernel" }] });
  });
  after(async () => tc && (await tc.destroy()));

  const keyOf = (f: Fake): string => [f.v4, ...(f.v6 ? [f.v6] : [])].map((x) => x.replace("/", "-")).join("&");
  const write = (f: Fake): void => writeFileSync(join(tc.leaseDir, "subnets", keyOf(f)), JSON.stringify({
    PublicIP: f.ip, PublicIPv6: f.ipv6 ?? null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: f.mac },
    ...(f.v6 ? { BackendV6Data: { VNI: 1, VtepMAC: f.mac } } : {}),
  }));

  test("different lease keys (B v4 only, C v4 + v6): C's entry in place, kept by a SIGHUP reconcile", async (t) => {
    // Outside the first 100 free subnets the nodes pick their own leases from (allocate.ts FREE_CANDIDATES): no clash with theirs.
    const b: Fake = { name: "b3", v4: "10.244.250.0/24", ip: "192.168.50.62", mac: "02:00:00:00:0b:62" };
    const c: Fake = { name: "c3", v4: b.v4, v6: "fc00:0:0:ff62::/64", ip: "192.168.50.162", ipv6: "fd00:50::162", mac: "02:00:00:00:0c:62" };
    write(b);
    await swapAndCheck(t, tc, b, c, async () => {
      for (const n of tc.nodes) n.proc!.kill("SIGSTOP");
      try {
        rmSync(join(tc.leaseDir, "subnets", keyOf(b)));
        write(c);
      } finally {
        for (const n of tc.nodes) n.proc!.kill("SIGCONT");
      }
    });
  });
});
