/**
 * A re-list that finds every lease as the events left it is not diffed
 * again; one that brings something the events did not is.
 *
 *   router ns: etcd, 192.168.50.1
 *   h1 192.168.50.11  twill --dataplane bpf, --reconcile-period 3600 (only a SIGHUP re-lists)
 *   peers: leases on etcd only (no host), public IPs 192.168.50.1xx
 *
 * After changes by event (a lease changed, one added, one deleted), a
 * SIGHUP re-list finds every lease as the events left it:
 * twill_lease_relists_total counts it "unchanged", and the dataplane keeps
 * the events' entries (and every other).
 * A re-list whose list holds an unparsable lease is diffed (the bad lease
 * is reported and the last good entry of its key stays), and once the
 * lease is good again by event, the next re-list is "unchanged" again.
 *
 * The lease directory has no change feed: every change of a file is a
 * re-list. With 20 leases, one lease changed or removed is "patched" (applied
 * as the event that would have brought it), never diffed whole, and the map
 * follows.
 * Everything is named with a per-run "rl" prefix and removed in `after`.
 */
import { test, after, before, describe } from "node:test";
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";
import { TwillCluster, DEFAULT_NET_CONFIG, type TwillNode } from "../lib/twill.js";
import { EtcdServer } from "../lib/etcd.js";
import { randomPrefix } from "../lib/cluster.js";
import { waitFor } from "../lib/exec.js";

const ETCD_PREFIX = "/coreos.com/network";
const key = (n: number) => `10.244.${n}.0-24`;
const prefix = (n: number) => `10.244.${n}.0/24`;
const mac = (n: number, gen: number) => `02:0b:00:00:${gen.toString(16).padStart(2, "0")}:${n.toString(16).padStart(2, "0")}`;
const lease = (n: number, gen = 0) => JSON.stringify({ PublicIP: `192.168.50.${100 + n}`, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: mac(n, gen) } });
const PEERS = [61, 62, 63, 64, 65];
const RESULTS = ["unchanged", "patched", "diffed"] as const;
type Result = (typeof RESULTS)[number];
const counts = async (tc: TwillCluster, n: TwillNode): Promise<Record<Result, number>> => ({
  unchanged: await tc.metric(n, "twill_lease_relists_total", { result: "unchanged" }),
  patched: await tc.metric(n, "twill_lease_relists_total", { result: "patched" }),
  diffed: await tc.metric(n, "twill_lease_relists_total", { result: "diffed" }),
});
/** The VTEP MAC node n's peers map holds for prefix p (undefined: no entry). */
const macIn = async (tc: TwillCluster, n: TwillNode, p: string) => (await tc.maps(n)).peers.find((e) => e.prefix === p && e.kind === "vxlan")?.vtepMAC;

describe("re-lists (etcd source): unchanged when the events brought everything, diffed otherwise", () => {
  let tc: TwillCluster;
  let etcd: EtcdServer;
  let h1: TwillNode;
  const put = async (n: number, value: string) => void (await etcd.etcdctl(["put", `${ETCD_PREFIX}/subnets/${key(n)}`, value]));
  const relists = async (result: Result) => tc.metric(h1, "twill_lease_relists_total", { result });
  const macInMap = (n: number) => macIn(tc, h1, prefix(n));
  const allAt = async (gens: Map<number, number>) => {
    for (const n of PEERS) assert.equal(await macInMap(n), mac(n, gens.get(n) ?? 0), `peer ${prefix(n)} in the map`);
  };
  /** SIGHUP and wait until the re-list is counted as `result`. */
  const relist = async (result: Result) => {
    const before = await counts(tc, h1);
    h1.proc!.kill("SIGHUP");
    await waitFor(async () => (await relists(result)) === before[result] + 1, { timeoutMs: 5000, intervalMs: 50, what: `a re-list counted ${result}` });
    const now = await counts(tc, h1);
    for (const other of RESULTS) if (other !== result) assert.equal(now[other], before[other], `the re-list is not counted ${other} too`);
  };

  before(async () => {
    tc = await TwillCluster.create({ prefix: randomPrefix("rl"), hosts: 1, startNodes: false, reconcileSeconds: 3600, nodes: [{ dataplane: "bpf" }] });
    h1 = tc.nodes[0]!;
    etcd = await EtcdServer.start({ prefix: "rlet", netns: tc.cluster.routerNetns, host: h1.host.gateway });
    await etcd.etcdctl(["put", `${ETCD_PREFIX}/config`, JSON.stringify(DEFAULT_NET_CONFIG)]);
    tc.sourceArgs = () => ["--etcd-endpoints", etcd.endpoint];
    for (const n of PEERS) await put(n, lease(n));
    await tc.start(h1);
    await waitFor(async () => (await macInMap(PEERS.at(-1)!)) !== undefined, { timeoutMs: 5000, intervalMs: 50, what: "the peers programmed" });
  });
  after(async () => {
    await tc?.destroy();
    await etcd?.destroy();
  });

  test("nothing changed since the start: the re-list is unchanged and the map stays", async () => {
    await relist("unchanged");
    await allAt(new Map());
  });

  test("after changes by event (a new VTEP MAC, a lease added, one deleted), the re-list is unchanged and keeps what the events wrote", async () => {
    await put(61, lease(61, 1));
    await put(66, lease(66));
    await etcd.etcdctl(["del", `${ETCD_PREFIX}/subnets/${key(65)}`]);
    await waitFor(async () => (await macInMap(61)) === mac(61, 1) && (await macInMap(66)) === mac(66, 0) && (await macInMap(65)) === undefined,
      { timeoutMs: 5000, intervalMs: 50, what: "the events applied" });
    await relist("unchanged");
    assert.equal(await macInMap(61), mac(61, 1));
    assert.equal(await macInMap(66), mac(66, 0));
    assert.equal(await macInMap(65), undefined, "the deleted lease stays gone");
    for (const n of [62, 63, 64]) assert.equal(await macInMap(n), mac(n, 0));
    // Back as it was, by event.
    await put(65, lease(65));
    await etcd.etcdctl(["del", `${ETCD_PREFIX}/subnets/${key(66)}`]);
    await waitFor(async () => (await macInMap(65)) === mac(65, 0) && (await macInMap(66)) === undefined, { timeoutMs: 5000, intervalMs: 50, what: "the events applied" });
  });

  test("an unparsable lease in the list: the re-list is diffed, the key keeps its last good entry; good again by event, the next is unchanged", async () => {
    await put(62, "{not json");
    await waitFor(async () => (await tc.metric(h1, "twill_lease_errors_total")) > 0, { timeoutMs: 5000, intervalMs: 50, what: "the bad lease reported" });
    await relist("diffed");
    await allAt(new Map([[61, 1]]));
    await put(62, lease(62, 2));
    await waitFor(async () => (await macInMap(62)) === mac(62, 2), { timeoutMs: 5000, intervalMs: 50, what: "the good lease applied" });
    // The first list after the bad one is diffed (a list with errors leaves no record to compare with), then the next is unchanged.
    await relist("diffed");
    await relist("unchanged");
    await allAt(new Map([[61, 1], [62, 2]]));
  });
});

describe("re-lists (lease directory): a file changed or removed is patched, not diffed whole", () => {
  const DIR_PEERS = Array.from({ length: 20 }, (_, i) => 61 + i);
  let tc: TwillCluster;
  let h1: TwillNode;
  /** Written as a store writer does: a dotfile, then rename (a reader never sees half a lease). */
  const write = (n: number, gen = 0) => {
    const dir = join(tc.leaseDir, "subnets"), tmp = join(dir, `.${key(n)}.tmp`);
    writeFileSync(tmp, lease(n, gen));
    renameSync(tmp, join(dir, key(n)));
  };
  before(async () => {
    tc = await TwillCluster.create({ prefix: randomPrefix("rm"), hosts: 1, startNodes: false, reconcileSeconds: 3600, nodes: [{ dataplane: "bpf" }] });
    h1 = tc.nodes[0]!;
    mkdirSync(join(tc.leaseDir, "subnets"), { recursive: true });
    for (const n of DIR_PEERS) write(n);
    await tc.start(h1);
    await waitFor(async () => (await macIn(tc, h1, prefix(DIR_PEERS.at(-1)!))) !== undefined, { timeoutMs: 5000, intervalMs: 50, what: "the peers programmed" });
  });
  after(async () => {
    await tc?.destroy();
  });

  test("one lease changed, then one removed: each re-list is patched (or unchanged), none diffed, and the map follows", async () => {
    const before = await counts(tc, h1);
    write(61, 3);
    await waitFor(async () => (await macIn(tc, h1, prefix(61))) === mac(61, 3), { timeoutMs: 5000, intervalMs: 50, what: "the changed lease applied" });
    rmSync(join(tc.leaseDir, "subnets", key(62)));
    await waitFor(async () => (await macIn(tc, h1, prefix(62))) === undefined, { timeoutMs: 5000, intervalMs: 50, what: "the removed lease applied" });
    const now = await counts(tc, h1);
    assert.ok(now.patched >= before.patched + 2, `two re-lists patched: ${JSON.stringify({ before, now })}`);
    assert.equal(now.diffed, before.diffed, "no re-list diffed whole");
    for (const n of DIR_PEERS.slice(2)) assert.equal(await macIn(tc, h1, prefix(n)), mac(n, 0), `peer ${prefix(n)} kept`);
  });
});
