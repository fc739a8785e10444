/**
 * The daemon repairs drift by itself, within one --reconcile-period (1 s here).
 *
 *   bpf cluster:     h1 [p1] --fast-path   h2 [p1]   h3 [p1] --fast-path
 *   kernel cluster:  h1 [p1]               h2 [p1]   h3 [p1]    (--dataplane kernel)
 *   each: hosts on one underlay segment 192.168.50.0/24, leases in one directory.
 *
 * Each case breaks something by hand, from outside the daemon, the way
 * flannel users report it; shows the failure (traffic lost, or the state
 * gone); then waits for the repair (at most REPAIR_LIMIT_MS after the drift)
 * and prints how long it took.
 *
 * bpf
 *   - h2's entry deleted from h1's twill_peers trie (bpftool) → re-added;
 *   - h1's flannel.1 deleted → re-created, attached, configured: h1's pods
 *     reach both peers again, through the fast path too;
 *   - the pinned tcx links of h2's flannel.1 removed (h2 has no fast path, so
 *     its pod traffic needs to_overlay) → re-attached; the from_pod link of
 *     h1's pod veth removed → re-attached by the pod watcher, encap_fast moves;
 *   - while h1's daemon is down, h3's lease vanishes and h2's entry is
 *     deleted: the restarted daemon sweeps the stale entry and re-adds the
 *     missing one (then h3 comes back and is learnt again).
 * kernel (flannel's per-peer route, permanent neighbour, FDB entry)
 *   - each of h1's three entries for h2 deleted by hand, then flannel.1
 *     itself → all back, with the right values, for both peers.
 *
 * Drift is caused right after a reconcile finished (the count of
 * twill_reconcile_duration_seconds moved), so the failure can be observed
 * before the next run repairs it.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { existsSync, rmSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { join } from "node:path";
import { TwillCluster, type TwillNode } from "../lib/twill.js";
import { ping } from "../lib/traffic.js";
import { run, runJson } from "../lib/exec.js";

const RECONCILE_S = 1;
/** A repair must show within this long after the drift: one period, plus the run itself and our polling. */
const REPAIR_LIMIT_MS = 2500;

const reachable = async (from: string, to: string, waitS = 0.3): Promise<boolean> =>
  (await ping(from, to, { count: 1, waitS, timeoutMs: 2000 })).received === 1;
/**
 * The failure check right after drift: one ping, 0.2 s for the reply (a
 * working path answers in about a millisecond). Short, because a packet the
 * kernel queued waiting for a neighbour is sent when the repair lands.
 */
const broken = async (from: string, to: string): Promise<boolean> => !(await reachable(from, to, 0.2));

/**
 * Runs `fn` with the node's daemon stopped (SIGSTOP): the break a test makes
 * stays broken while it is checked (the dataplane forwards meanwhile, as
 * with a controller down), then the daemon resumes and repairs it.
 */
async function paused(n: TwillNode, fn: () => Promise<void>): Promise<void> {
  n.proc!.kill("SIGSTOP");
  try {
    await fn();
  } finally {
    n.proc!.kill("SIGCONT");
  }
}

/** Polls `cond` every 20 ms; returns the ms it took, or throws after `limitMs`. */
async function within(limitMs: number, what: string, cond: () => Promise<boolean>): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await cond().catch(() => false)) return performance.now() - t0;
    if (performance.now() - t0 > limitMs) throw new Error(`${what}: not within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** "10.244.7.1/24" (FLANNEL_SUBNET) → "10.244.7.0/24". */
const subnetOf = (tc: TwillCluster, n: TwillNode): string => tc.subnet(n).replace(/\.1\/(\d+)$/, ".0/$1");
/** "10.244.7.0/24" → "10.244.7.0". */
const netAddr = (subnet: string): string => subnet.split("/")[0]!;

/** Waits for the node's next full reconcile to finish, so drift caused now lasts about one period. */
async function afterReconcile(tc: TwillCluster, n: TwillNode): Promise<void> {
  const runs = await tc.metric(n, "twill_reconcile_duration_seconds_count");
  await within(3000, `a reconcile on ${n.host.name}`, async () => (await tc.metric(n, "twill_reconcile_duration_seconds_count")) > runs)
    .catch(async (e: Error) => assert.fail(`${e.message}\n${await tc.diagnostics()}`));
}

/**
 * bpftool's `key hex` bytes of IPv4 `subnet` in the twill_peers trie: struct
 * twill_lpm_key, prefixlen (u32 LE: 32 bits of family + the subnet's), family
 * (u32 LE, 4), addr (16 bytes, v4 in the first 4).
 */
function peerKeyHex(subnet: string): string[] {
  const key = Buffer.alloc(24);
  key.writeUInt32LE(32 + Number(subnet.split("/")[1]), 0);
  key.writeUInt32LE(4, 4);
  Buffer.from(netAddr(subnet).split(".").map(Number)).copy(key, 8);
  return [...key].map((b) => b.toString(16).padStart(2, "0"));
}
const peersMap = (n: TwillNode): string => join(n.pinDir, "maps", "twill_peers");

/** bpftool's `key hex` bytes of an IPv4 underlay address in twill_remotes: struct twill_ep_key, family (u32 LE, 4), addr (16 bytes). */
function remoteKeyHex(ip: string): string[] {
  const key = Buffer.alloc(20);
  key.writeUInt32LE(4, 0);
  Buffer.from(ip.split(".").map(Number)).copy(key, 4);
  return [...key].map((b) => b.toString(16).padStart(2, "0"));
}

/** Deletes a node's trie entry for `subnet` by hand, as someone with bpftool would. */
async function deletePeerEntry(n: TwillNode, subnet: string): Promise<void> {
  await run("bpftool", ["map", "delete", "pinned", peersMap(n), "key", "hex", ...peerKeyHex(subnet)]);
}

/**
 * Whether a node's trie has a peer entry for `subnet` (bpftool: fast, unlike
 * `twill maps`). An LPM lookup matches the longest prefix, so without the
 * entry it finds the cluster network's: the value's kind byte (struct
 * twill_peer.kind, offset 22) tells them apart (1 vxlan, 2 direct).
 */
async function hasPeerEntry(n: TwillNode, subnet: string): Promise<boolean> {
  const r = await run("bpftool", ["-j", "map", "lookup", "pinned", peersMap(n), "key", "hex", ...peerKeyHex(subnet)], { allowFail: true });
  if (r.code !== 0) return false;
  const kind = Number((JSON.parse(r.stdout) as { value: string[] }).value[22]);
  return kind === 1 || kind === 2;
}

interface LinkJson { ifname: string; ifindex: number; address: string }
async function link(n: TwillNode, name: string): Promise<LinkJson | undefined> {
  const r = await run("ip", ["-j", "link", "show", "dev", name], { netns: n.host.netns, allowFail: true });
  return r.code === 0 ? (JSON.parse(r.stdout) as LinkJson[])[0] : undefined;
}

/** Every pod on `from` reaches every pod on the `to` hosts; returns failures. */
async function podsReach(from: TwillNode, to: TwillNode[], waitS = 0.3): Promise<string[]> {
  const fails: string[] = [];
  await Promise.all(from.host.pods.flatMap((a) => to.flatMap((n) => n.host.pods.map(async (b) => {
    if (!(await reachable(a.netns, b.ip, waitS))) fails.push(`${a.name}@${from.host.name} -> ${b.name}@${n.host.name} (${b.ip})`);
  }))));
  return fails;
}

/**
 * Assertions whose failure message carries the cluster's diagnostics (maps,
 * links, routes, counters, logs), collected only when they fail: collecting
 * them takes long enough to skew the repair times otherwise.
 */
function checks(cluster: () => TwillCluster) {
  const fail = async (msg: string): Promise<never> => assert.fail(`${msg}\n${await cluster().diagnostics()}`);
  return {
    ok: async (cond: unknown, msg: string): Promise<void> => {
      if (!cond) await fail(msg);
    },
    same: async <T>(actual: T, expected: T, msg: string): Promise<void> => {
      if (!isDeepStrictEqual(actual, expected)) await fail(`${msg}: got ${JSON.stringify(actual)}, want ${JSON.stringify(expected)}`);
    },
    /** `within`, failing with the diagnostics. */
    within: (limitMs: number, what: string, cond: () => Promise<boolean>): Promise<number> =>
      within(limitMs, what, cond).catch((e: unknown) => fail(String(e instanceof Error ? e.message : e))),
  };
}

describe("bpf dataplane: drift is repaired", () => {
  let tc: TwillCluster;
  let n1: TwillNode, n2: TwillNode, n3: TwillNode;
  const c = checks(() => tc);
  const peerPrefixes = async (n: TwillNode): Promise<string[]> =>
    (await tc.maps(n)).peers.filter((p) => p.kind === "vxlan" || p.kind === "direct").map((p) => p.prefix).sort();

  before(async () => {
    tc = await TwillCluster.create({
      hosts: 3, podsPerHost: 1, reconcileSeconds: RECONCILE_S,
      nodes: [{ dataplane: "bpf", fastPath: true }, { dataplane: "bpf" }, { dataplane: "bpf", fastPath: true }],
    });
    [n1, n2, n3] = tc.nodes as [TwillNode, TwillNode, TwillNode];
  });
  after(async () => tc && (await tc.destroy()));

  test("a peer's entry deleted from the peers trie by hand is re-added", async () => {
    await c.same(await tc.allPairs(), [], "cluster not healthy before the test");
    const s2 = subnetOf(tc, n2);
    const repairsBefore = await tc.metric(n1, "twill_drift_repairs_total", { kind: "added" });
    const from = n1.host.pods[0]!.netns, to = n2.host.pods[0]!.ip;

    await afterReconcile(tc, n1);
    await paused(n1, async () => {
      await deletePeerEntry(n1, s2);
      const [present, isBroken] = await Promise.all([hasPeerEntry(n1, s2), broken(from, to)]);
      await c.ok(!present, `h1 still has ${s2} after bpftool delete`);
      await c.ok(isBroken, "h1 -> h2 still works without h2's map entry");
    });
    const t0 = performance.now();

    await c.within(REPAIR_LIMIT_MS, "h2's entry back in h1's map", () => hasPeerEntry(n1, s2));
    const ms = performance.now() - t0;
    await c.ok(await reachable(from, to), "h1 -> h2 not reachable after the entry came back");
    const entry = (await tc.maps(n1)).peers.find((p) => p.prefix === s2);
    await c.same([entry?.kind, entry?.remote, entry?.vtepMAC], ["vxlan", n2.host.underlayIP, (await link(n2, "flannel.1"))!.address],
      "re-added entry (kind, remote, VTEP MAC)");
    await c.ok((await tc.metric(n1, "twill_drift_repairs_total", { kind: "added" })) > repairsBefore, "the repair was not counted");
    console.log(`bpf: peer entry deleted -> re-added after ${ms.toFixed(0)} ms (period ${RECONCILE_S} s)`);
  });

  test("a sender's entry deleted from twill_remotes: its VXLAN falls back to the kernel (nothing lost), then BPF takes it again", async () => {
    const from = n2.host.pods[0]!.netns, to = n1.host.pods[0]!.ip;
    const key = remoteKeyHex(n2.host.underlayIP);
    const remotes = join(n1.pinDir, "maps", "twill_remotes");
    const has = async (): Promise<boolean> =>
      (await run("bpftool", ["map", "lookup", "pinned", remotes, "key", "hex", ...key], { allowFail: true })).code === 0;
    await c.ok(await has(), `h1's twill_remotes has no entry for h2 (${n2.host.underlayIP})`);

    // The counters first: reading them runs `twill maps` (a process), slow enough on a loaded
    // machine for the 1 s reconcile to restore the entry before the ping if read after the delete.
    const before = await tc.maps(n1);
    await afterReconcile(tc, n1);
    await paused(n1, async () => {
      await run("bpftool", ["map", "delete", "pinned", remotes, "key", "hex", ...key]);
      // Unknown to BPF now: the vxlan driver decapsulates it, as stock flannel would.
      await c.ok(await reachable(from, to), "h2 -> h1 broke without h1's remotes entry (the kernel path must carry it)");
      const mid = await tc.maps(n1);
      await c.ok(tc.counter(mid, "rx_unknown") > tc.counter(before, "rx_unknown"), "h2's VXLAN not counted as rx_unknown on h1");
    });
    const t0 = performance.now();
    await c.within(REPAIR_LIMIT_MS, "h2's entry back in h1's twill_remotes", has);
    const ms = performance.now() - t0;
    const back = await tc.maps(n1);
    await c.ok(await reachable(from, to), "h2 -> h1 after the repair");
    const after = await tc.maps(n1);
    const bpfRx = (m: typeof after): number => tc.counter(m, "decap") + tc.counter(m, "delivered");
    await c.ok(bpfRx(after) > bpfRx(back), "h1 does not strip h2's VXLAN in BPF again");
    console.log(`bpf: remotes entry deleted -> traffic on the kernel path, re-added after ${ms.toFixed(0)} ms`);
  });

  test("flannel.1 deleted is re-created with all peers re-programmed (fast path too)", async () => {
    const before = (await link(n1, "flannel.1"))!;
    const peersBefore = await peerPrefixes(n1);
    await c.same(peersBefore, [subnetOf(tc, n2), subnetOf(tc, n3)].sort(), "h1's peers before");

    await afterReconcile(tc, n1);
    // Paused while the break is made and seen (a loaded machine's 1 s reconcile could repair it first); the repair is timed from the resume.
    await paused(n1, async () => {
      await run("ip", ["link", "del", "flannel.1"], { netns: n1.host.netns });
      const lost = await podsReach(n1, [n2, n3], 0.2);
      await c.ok(lost.length === 2, `h1's pods still reach other hosts without flannel.1 (lost only: ${lost.join(", ")})`);
    });
    const t0 = performance.now();

    await c.within(REPAIR_LIMIT_MS, "flannel.1 re-created and h1's pods reaching h2 and h3", async () =>
      (await link(n1, "flannel.1")) !== undefined && (await podsReach(n1, [n2, n3])).length === 0);
    const ms = performance.now() - t0;
    const now = (await link(n1, "flannel.1"))!;
    await c.same(now.address, before.address, "the re-created device's VTEP MAC");
    await c.ok(now.ifindex !== before.ifindex, "flannel.1 was not re-created");
    await c.same(await peerPrefixes(n1), peersBefore, "h1's peers after the repair");
    const m = await tc.maps(n1);
    for (const role of ["to_overlay", "from_overlay"]) {
      await c.same(m.ids.links[`${role}-${now.ifindex}`]?.ifindex, now.ifindex, `${role} on the new flannel.1`);
    }
    // from_pod redirects into the device named in the config map: it must be the new one
    const fast = tc.counter(m, "encap_fast");
    await c.same(await podsReach(n1, [n2, n3]), [], "h1's pods after the repair");
    await c.ok(tc.counter(await tc.maps(n1), "encap_fast") >= fast + 2, "the fast path does not use the re-created device");
    await c.same(await tc.allPairs(), [], "all pairs after the repair");
    console.log(`bpf: flannel.1 deleted -> re-created, both peers reachable after ${ms.toFixed(0)} ms`);
  });

  test("flannel.1's pinned tcx links removed are re-attached", async () => {
    const from = n2.host.pods[0]!.netns;
    const dev = (await link(n2, "flannel.1"))!;
    const pin = (role: string): string => `${role}-${dev.ifindex}`;
    const ids = (await tc.maps(n2)).ids.links;
    const old = { to: ids[pin("to_overlay")]?.id, from: ids[pin("from_overlay")]?.id };
    await c.ok(old.to && old.from, `no pinned links on h2's flannel.1: ${JSON.stringify(ids)}`);

    await afterReconcile(tc, n2);
    await paused(n2, async () => {
      for (const role of ["to_overlay", "from_overlay"]) rmSync(join(n2.pinDir, "links", pin(role)));
      // the pin was the links' only holder: the programs are off the device
      await c.within(500, "the unpinned links released", async () =>
        (await run("bpftool", ["link", "show", "id", String(old.to)], { allowFail: true })).code !== 0);
      await c.ok(await broken(from, n1.host.pods[0]!.ip), "h2 -> h1 still works without to_overlay");
    });
    const t0 = performance.now();

    await c.within(REPAIR_LIMIT_MS, "to_overlay/from_overlay re-attached and h2's pods reaching h1 and h3", async () => {
      const l = (await tc.maps(n2)).ids.links;
      return l[pin("to_overlay")]?.ifindex === dev.ifindex && l[pin("from_overlay")]?.ifindex === dev.ifindex
        && (await podsReach(n2, [n1, n3])).length === 0;
    });
    const ms = performance.now() - t0;
    const l = (await tc.maps(n2)).ids.links;
    await c.ok(l[pin("to_overlay")]!.id !== old.to && l[pin("from_overlay")]!.id !== old.from, "the links were not re-created");
    console.log(`bpf: to_overlay/from_overlay links removed -> re-attached, traffic back after ${ms.toFixed(0)} ms`);
  });

  test("a pod veth's from_pod link removed is re-attached; the fast path counts again", async () => {
    const pod = n1.host.pods[0]!, to = n2.host.pods[0]!.ip;
    const veth = (await link(n1, pod.veth!))!;
    const name = `from_pod-${veth.ifindex}`;
    const old = (await tc.maps(n1)).ids.links[name];
    await c.ok(old, `no ${name} link on the fast-path node`);

    rmSync(join(n1.pinDir, "links", name));
    const t0 = performance.now();
    await c.within(500, "the unpinned from_pod link released", async () =>
      (await run("bpftool", ["link", "show", "id", String(old!.id)], { allowFail: true })).code !== 0);
    // without from_pod, pod traffic takes the stack (bridge -> route -> flannel.1 -> to_overlay)
    await c.ok(await reachable(pod.netns, to), "traffic broke without from_pod (the stack path should carry it)");

    await c.within(REPAIR_LIMIT_MS, `${name} re-attached and encap_fast moving`, async () => {
      const l = (await tc.maps(n1)).ids.links[name];
      if (!l || l.id === old!.id || l.ifindex !== veth.ifindex) return false;
      const before = tc.counter(await tc.maps(n1), "encap_fast");
      return (await reachable(pod.netns, to)) && tc.counter(await tc.maps(n1), "encap_fast") > before;
    });
    console.log(`bpf: from_pod link removed -> re-attached, encap_fast moving after ${(performance.now() - t0).toFixed(0)} ms (pod watcher period 1 s)`);
  });

  test("while the daemon is down: a vanished peer's stale entry is swept, a missing one re-added", async () => {
    const s2 = subnetOf(tc, n2), s3 = subnetOf(tc, n3);
    const key3 = s3.replace("/", "-");
    const lease3 = join(tc.leaseDir, "subnets", key3);
    const from = n1.host.pods[0]!.netns, to2 = n2.host.pods[0]!.ip, to3 = n3.host.pods[0]!.ip;
    await tc.stop(n1); // SIGTERM: the dataplane keeps forwarding
    await tc.stop(n3);
    rmSync(lease3); // h3 is gone for good
    await deletePeerEntry(n1, s2); // and h2's entry goes missing while nobody watches
    // the failure: h1 still forwards to the vanished h3, and no longer to h2
    await c.same(await peerPrefixes(n1), [s3], "h1's peers while its daemon is down");
    await c.ok(await reachable(from, to3), "h1 -> h3 (the stale entry) does not forward");
    await c.ok(await broken(from, to2), "h1 -> h2 works without its entry");

    const t0 = performance.now();
    await tc.start(n1); // returns once /readyz says ready: after the first full reconcile
    const ready = performance.now() - t0;
    await c.same(await peerPrefixes(n1), [s2], "h1's peers after the restart");
    await c.ok(await reachable(from, to2), "h1 -> h2 not back");
    await c.ok(await broken(from, to3), "h1 still forwards to h3, whose lease is gone");
    // the new process counts from 0: its first reconcile did both repairs
    await c.same(await tc.metric(n1, "twill_drift_repairs_total", { kind: "removed" }), 1, "repairs counted as removed");
    await c.same(await tc.metric(n1, "twill_drift_repairs_total", { kind: "added" }), 1, "repairs counted as added");
    console.log(`bpf: drift while down -> stale entry swept, missing one re-added by the first reconcile; ready ${ready.toFixed(0)} ms after start`);

    // h3 comes back with the subnet in its subnet file; h1 learns it again from the watch
    await tc.start(n3);
    await c.ok(existsSync(lease3), `h3 did not re-acquire ${key3}`);
    await c.within(REPAIR_LIMIT_MS, "h1 has h3 again", async () => (await peerPrefixes(n1)).includes(s3));
    await c.same(await tc.allPairs(), [], "all pairs after h3 returned");
  });
});

describe("kernel dataplane: hand-deleted route, neighbour, FDB entry and device come back", () => {
  let tc: TwillCluster;
  let n1: TwillNode, n2: TwillNode, n3: TwillNode;
  const c = checks(() => tc);

  before(async () => {
    tc = await TwillCluster.create({
      hosts: 3, podsPerHost: 1, reconcileSeconds: RECONCILE_S,
      nodes: [0, 1, 2].map(() => ({ dataplane: "kernel" as const })),
    });
    [n1, n2, n3] = tc.nodes as [TwillNode, TwillNode, TwillNode];
  });
  after(async () => tc && (await tc.destroy()));

  interface Entries { route?: string; neigh?: string; fdb?: string }
  /** h1's three entries for peer `n` as the kernel has them, each only when present with the right value. */
  async function entries(n: TwillNode): Promise<Entries> {
    const s = subnetOf(tc, n), gw = netAddr(s), pub = n.host.underlayIP;
    const mac = (await link(n, "flannel.1"))!.address;
    const ns = n1.host.netns;
    if (!(await link(n1, "flannel.1"))) return {};
    type R = { dst: string; gateway?: string; dev?: string; flags?: string[] };
    type N = { dst: string; lladdr?: string; state?: string[] };
    type F = { mac: string; dst?: string; flags?: string[]; state?: string };
    const [routes, neighs, fdb] = await Promise.all([
      runJson<R[]>("ip", ["-j", "-4", "route", "show", s], { netns: ns }),
      runJson<N[]>("ip", ["-j", "-4", "neigh", "show", gw, "dev", "flannel.1"], { netns: ns }),
      runJson<F[]>("bridge", ["-j", "fdb", "show", "dev", "flannel.1"], { netns: ns }),
    ]);
    const r = routes.some((x) => x.gateway === gw && x.dev === "flannel.1" && (x.flags ?? []).includes("onlink"));
    const nb = neighs.some((x) => x.lladdr === mac && (x.state ?? []).includes("PERMANENT"));
    const f = fdb.some((x) => x.mac === mac && x.dst === pub && (x.flags ?? []).includes("self") && x.state === "permanent");
    return {
      ...(r ? { route: `${s} via ${gw} dev flannel.1 onlink` } : {}),
      ...(nb ? { neigh: `${gw} lladdr ${mac} PERMANENT` } : {}),
      ...(f ? { fdb: `${mac} dst ${pub} self permanent` } : {}),
    };
  }
  const complete = (e: Entries): boolean => !!(e.route && e.neigh && e.fdb);

  /** Breaks one thing on h1 right after a reconcile, shows h1 -> h2 broken, measures the repair. */
  async function breakAndRepair(what: string, cmd: [string, string[]], missing: keyof Entries | "device"): Promise<void> {
    const from = n1.host.pods[0]!.netns, to = n2.host.pods[0]!.ip;
    const want = { h2: await entries(n2), h3: await entries(n3) };
    await c.ok(complete(want.h2) && complete(want.h3), `h1's entries not complete before: ${JSON.stringify(want)}`);
    await afterReconcile(tc, n1);
    // The daemon paused while the break is made and seen: on a loaded machine the 1 s reconcile
    // could otherwise repair it before the check saw it broken. The repair is timed from the resume.
    await paused(n1, async () => {
      await run(cmd[0], cmd[1], { netns: n1.host.netns });
      const [gone, dev, isBroken] = await Promise.all([entries(n2), link(n1, "flannel.1"), broken(from, to)]);
      if (missing === "device") await c.ok(dev === undefined, "flannel.1 still there");
      else await c.ok(gone[missing] === undefined, `${what}: the ${missing} entry is still there`);
      await c.ok(isBroken, `${what}: h1 -> h2 still works`);
    });
    const t0 = performance.now();

    await c.within(REPAIR_LIMIT_MS, `${what}: entries back and h1 -> h2 reachable`, async () =>
      complete(await entries(n2)) && complete(await entries(n3)) && (await reachable(from, to)));
    const ms = performance.now() - t0;
    await c.same({ h2: await entries(n2), h3: await entries(n3) }, want, "the entries after the repair");
    console.log(`kernel: ${what} -> back (${missing === "device" ? "device, and both peers' route, neighbour, FDB entry" : want.h2[missing]}) after ${ms.toFixed(0)} ms`);
  }

  test("the route to a peer's subnet", async () => {
    await breakAndRepair("route deleted", ["ip", ["route", "del", subnetOf(tc, n2), "dev", "flannel.1"]], "route");
  });

  test("the permanent neighbour entry of a peer's gateway", async () => {
    await breakAndRepair("neighbour deleted", ["ip", ["neigh", "del", netAddr(subnetOf(tc, n2)), "dev", "flannel.1"]], "neigh");
  });

  test("the FDB entry of a peer's VTEP MAC", async () => {
    const mac = (await link(n2, "flannel.1"))!.address;
    await breakAndRepair("FDB entry deleted", ["bridge", ["fdb", "del", mac, "dev", "flannel.1", "dst", n2.host.underlayIP, "self"]], "fdb");
  });

  test("the flannel.1 device", async () => {
    const before = (await link(n1, "flannel.1"))!;
    await breakAndRepair("flannel.1 deleted", ["ip", ["link", "del", "flannel.1"]], "device");
    await c.same((await link(n1, "flannel.1"))?.address, before.address, "the re-created device's VTEP MAC");
    await c.same(await tc.allPairs(), [], "all pairs after the device came back");
  });
});
