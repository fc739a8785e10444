/**
 * The daemon on the Kubernetes source, end to end in the control plane:
 *
 *   Daemon (no start(): no devices) ──apply/resync──> FakeDataplane (records)
 *      │ watch + list
 *   KubeSource ──HTTP──> FakeKube on 127.0.0.1:<random> (sim/kubeapi.ts)
 *
 * The daemon is set up as start() leaves it (config, our acquired lease, a
 * dataplane), with the source's watch wired as start() wires it; what it
 * logs, counts (twill_lease_errors_total) and programs is checked. No root,
 * no namespaces: only the API server is simulated.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FakeKube } from "../../sim/kubeapi.js";
import { KubeSource } from "../../src/lease/kubesource.js";
import { Daemon, type DaemonOptions } from "../../src/daemon.js";
import { createLogger } from "../../src/log.js";
import { formatIP, formatPrefix, parseIP } from "../../src/net/ip.js";
import type { Lease, NetConfig } from "../../src/lease/types.js";
import type { LeaseEvent } from "../../src/lease/source.js";
import type { Dataplane, Peer, SyncResult } from "../../src/dataplane/types.js";
import type { Metrics } from "../../src/metrics.js";

const P = "flannel.alpha.coreos.com";
const dir = mkdtempSync(join(tmpdir(), `twill-kubed-${process.pid}-`));
const cleanup: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
  rmSync(dir, { recursive: true, force: true });
});

const ann = (ip: string, mac: string) => ({
  [`${P}/kube-subnet-manager`]: "true", [`${P}/backend-type`]: "vxlan",
  [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${mac}"}`, [`${P}/public-ip`]: ip,
});

class FakeDataplane implements Dataplane {
  readonly kind = "bpf" as const;
  readonly log: string[] = [];
  setup = async () => ({});
  async upsert(peers: readonly Peer[]): Promise<void> {
    for (const p of peers) this.log.push(`upsert ${formatPrefix(p.subnet)} ${p.publicIP ? formatIP(p.publicIP) : ""}`);
  }
  async remove(peers: readonly Peer[]): Promise<void> {
    for (const p of peers) this.log.push(`remove ${formatPrefix(p.subnet)}`);
  }
  reconcile = async (): Promise<SyncResult> => ({ added: 0, updated: 0, removed: 0, drift: [] });
  check = async () => [];
  close = async (): Promise<void> => {};
  teardown = async (): Promise<void> => {};
}

interface Internals {
  dp: Dataplane; config: NetConfig; own: Lease; ready: boolean; stopped: boolean; metrics: Metrics;
  known: Map<string, Peer[]>;
  apply(events: readonly LeaseEvent[]): Promise<void>;
  serialize(fn: () => Promise<void>): Promise<void>;
  resync(full: boolean): Promise<void>;
}

async function until(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A daemon on node n1 (10.244.1.0/24) of a fake API, started as start() would leave it. */
async function cluster(nodes: (fake: FakeKube) => void) {
  const fake = await FakeKube.start();
  cleanup.push(() => fake.close());
  const netConfigPath = join(dir, `net-conf-${cleanup.length}.json`);
  writeFileSync(netConfigPath, JSON.stringify({ Network: "10.244.0.0/16", Backend: { Type: "vxlan" } }));
  const lines: string[] = [];
  const log = createLogger("info", {}, (l) => lines.push(l));
  const source = new KubeSource({ netConfigPath, kubeApiUrl: fake.url, nodeName: "n1", retryMs: 50, backoffMinMs: 50, backoffMaxMs: 200, log });
  cleanup.push(() => source.close());
  fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24", creationTimestamp: "2024-05-01T10:00:00Z" });
  nodes(fake);
  const dp = new FakeDataplane();
  const d = new Daemon({ source, dataplane: "bpf", reconcileSeconds: 10, healthzPort: 0, version: "test" } as unknown as DaemonOptions, log) as unknown as Internals;
  const config = await source.readConfig();
  const own = await source.acquire({ publicIP: parseIP("192.168.0.1"), backendData: { vni: 1, vtepMAC: "aa:bb:cc:dd:ee:01" } });
  Object.assign(d, { dp, config, own });
  let batches = 0;
  const stopWatch = source.watch({
    onEvents: (events) => void d.serialize(() => d.apply(events)).then(() => batches++),
    onResync: () => void d.resync(false),
    onError: () => {},
  });
  cleanup.push(stopWatch);
  await d.resync(true);
  d.ready = true;
  await fake.waitForWatches(1);
  const errorsCounted = async (code: string) =>
    (await d.metrics.leaseErrors.get()).values.find((v) => v.labels.code === code)?.value ?? 0;
  const peer = (key: string) => d.known.get(key)?.map((p) => formatIP(p.publicIP!)).join(",");
  return { fake, source, d, dp, lines, errorsCounted, peer, batches: () => batches };
}

test("a duplicate podCIDR: logged, counted and kept out; the other node's lease once the holder is deleted", async () => {
  const { fake, d, dp, lines, errorsCounted, peer, batches } = await cluster((f) => {
    f.addNode({ name: "old", podCIDR: "10.244.2.0/24", creationTimestamp: "2024-05-01T10:01:00Z", annotations: ann("192.168.0.2", "aa:bb:cc:dd:ee:02") });
    f.addNode({ name: "new", podCIDR: "10.244.2.0/24", creationTimestamp: "2024-05-01T10:02:00Z", annotations: ann("192.168.0.3", "aa:bb:cc:dd:ee:03") });
  });
  assert.equal(peer("10.244.2.0-24"), "192.168.0.2", "the node created first holds the subnet");
  const rejected = lines.filter((l) => l.includes('"msg":"lease rejected"'));
  assert.equal(rejected.length, 1, lines.join("\n"));
  assert.match(rejected[0]!, /"key":"node\/new","code":"ERR_LEASE_CONFLICT","reason":"node new has podCIDR 10.244.2.0\/24, already held by node old/);
  assert.equal(await errorsCounted("ERR_LEASE_CONFLICT"), 1);

  const b = batches();
  fake.deleteNode("old");
  await until("the delete applied", () => batches() > b && peer("10.244.2.0-24") === "192.168.0.3");
  assert.ok(!dp.log.includes("remove 10.244.2.0/24"), `the subnet moved without a gap: ${dp.log.join("; ")}`);
  assert.equal(dp.log.at(-1), "upsert 10.244.2.0/24 192.168.0.3");
  // A full re-list agrees and reports nothing new.
  await d.resync(true);
  assert.equal(peer("10.244.2.0-24"), "192.168.0.3");
  assert.equal(await errorsCounted("ERR_LEASE_CONFLICT"), 1);
});

test("our node's annotations changed or the node deleted: the daemon neither rewrites nor stops (as flanneld)", async () => {
  const { fake, d, lines, errorsCounted, peer, batches } = await cluster((f) => {
    f.addNode({ name: "n2", podCIDR: "10.244.2.0/24", annotations: ann("192.168.0.2", "aa:bb:cc:dd:ee:02") });
  });
  const patches = fake.patches.length;
  fake.annotate("n1", { [`${P}/public-ip`]: "192.168.0.99", [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:99"}` });
  fake.annotate("n2", { [`${P}/public-ip`]: "192.168.0.22" }); // a later peer event: ours was seen by then
  await until("n2's change applied", () => peer("10.244.2.0-24") === "192.168.0.22");
  assert.equal(fake.patches.length, patches, "our annotations were not rewritten");
  assert.ok(lines.some((l) => l.includes("our node's flannel annotations differ from our lease; ignored")), lines.join("\n"));

  fake.deleteNode("n1");
  const b = batches();
  fake.annotate("n2", { [`${P}/public-ip`]: "192.168.0.23" });
  await until("n2's second change applied", () => batches() > b && peer("10.244.2.0-24") === "192.168.0.23");
  await d.resync(true);
  assert.equal(d.stopped, false, "the daemon stopped");
  assert.equal(d.ready, true);
  assert.equal(await errorsCounted("ERR_LEASE_CONFLICT"), 0);
  assert.ok(!lines.some((l) => l.includes("ERR_LEASE_LOST") || l.includes('"msg":"lease rejected"')), lines.join("\n"));
  assert.ok(lines.some((l) => l.includes("our node was deleted from the API; ignored")));
});
