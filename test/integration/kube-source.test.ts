/**
 * KubeSource (--kube-subnet-mgr) against the simulated API server (sim/kubeapi.ts):
 *
 *   KubeSource ──(kubeapi.ts on node:http(s))──> FakeKube on 127.0.0.1:<random>
 *     acquire / writeLease / markReady  → PATCH /api/v1/nodes/<name>/status (recorded)
 *     list / watch                      → GET /api/v1/nodes[?watch=true&resourceVersion=N]
 *
 * No namespaces or root needed: only the API server is simulated; every
 * other piece (the HTTP client, list + watch, our conversion) is real.
 * Each test starts its own fake; temp files live under one per-run
 * directory, removed at the end.
 */
import { test, after, describe } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FakeKube, type Json } from "../../sim/kubeapi.js";
import { KubeSource, type KubeSourceOptions } from "../../src/lease/kubesource.js";
import { KubeClient } from "../../src/lease/kubeapi.js";
import type { LeaseEvent, WatchHandlers } from "../../src/lease/source.js";
import type { TwillError } from "../../src/errors.js";
import { isTwillError } from "../../src/errors.js";
import { formatIP, parseIP } from "../../src/net/ip.js";

const P = "flannel.alpha.coreos.com";
const MAC = "8e:d0:f8:0a:41:19";
const SMP = "application/strategic-merge-patch+json";
const dir = mkdtempSync(join(tmpdir(), `twill-kube-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function netConf(json: object = { Network: "10.244.0.0/16", Backend: { Type: "vxlan" } }): string {
  const p = join(dir, `net-conf-${++files}.json`);
  writeFileSync(p, JSON.stringify(json));
  return p;
}

/** The annotations flannel leaves on a node (IPv4 vxlan). */
function flannelAnnotations(publicIP: string, mac: string = MAC): Record<string, string> {
  return {
    [`${P}/kube-subnet-manager`]: "true",
    [`${P}/backend-type`]: "vxlan",
    [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${mac}"}`,
    [`${P}/public-ip`]: publicIP,
  };
}

const sources: KubeSource[] = [];
const fakes: FakeKube[] = [];
after(async () => {
  for (const s of sources) await s.close();
  for (const f of fakes) await f.close();
});

async function setup(more: Partial<KubeSourceOptions> = {}, via: "kubeconfig" | "url" = "kubeconfig"): Promise<{ fake: FakeKube; src: KubeSource }> {
  const fake = await FakeKube.start();
  fakes.push(fake);
  const kc = join(dir, `kubeconfig-${++files}`);
  fake.writeKubeconfig(kc); // http, no insecure-skip-tls-verify: must still work
  const src = new KubeSource({
    netConfigPath: netConf(),
    ...(via === "kubeconfig" ? { kubeconfigFile: kc } : { kubeApiUrl: fake.url }),
    nodeName: "n1", nodeNameSource: "NODE_NAME",
    retryMs: 50, backoffMinMs: 50, backoffMaxMs: 200,
    ...more,
  });
  sources.push(src);
  return { fake, src };
}

const offer = { publicIP: parseIP("192.168.0.1"), backendData: { vni: 1, vtepMAC: "aa:bb:cc:dd:ee:01" } };

async function until(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Records what a watch delivers. */
describe("list in pages", () => {
  /** n0001..n<count>, each with flannel's annotations and others a real node carries (CSI, kubeadm). */
  function addNodes(fake: FakeKube, count: number): void {
    for (let i = 1; i <= count; i++) {
      fake.addNode({
        name: `n${String(i).padStart(4, "0")}`, podCIDR: `10.${100 + (i >> 8)}.${i & 255}.0/24`,
        annotations: {
          ...flannelAnnotations(`192.168.${i >> 8}.${i & 255}`),
          "csi.volume.kubernetes.io/nodeid": JSON.stringify({ "ebs.csi.aws.com": `i-${i}` }),
          "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
        },
      });
    }
  }
  const lists = (fake: FakeKube) => fake.requests.filter((q) => q.method === "GET" && q.path === "/api/v1/nodes" && q.query.watch === undefined);
  const clients: KubeClient[] = [];
  /** A fake API with `count` nodes (addNodes) and a client that keeps flannel's annotations. */
  const serve = async (count: number) => {
    const fake = await FakeKube.start();
    fakes.push(fake);
    addNodes(fake, count);
    const rv = fake.resourceVersion;
    const c = await KubeClient.create({ kubeApiUrl: fake.url, keepAnnotations: `${P}/` });
    clients.push(c);
    return { fake, c, rv };
  };
  after(() => clients.forEach((c) => c.close()));

  test("1,201 nodes come in 3 pages of one snapshot, in name order, with flannel's annotations only", async () => {
    const { fake, c, rv } = await serve(1201);
    const list = await c.listNodes();
    const reqs = lists(fake);
    assert.deepEqual(reqs.map((q) => [q.query.limit, q.query.continue !== undefined]), [["500", false], ["500", true], ["500", true]]);
    assert.equal(list.items.length, 1201);
    assert.equal(list.resourceVersion, rv);
    assert.deepEqual(list.items.map((n) => n.metadata.name), Array.from({ length: 1201 }, (_, i) => `n${String(i + 1).padStart(4, "0")}`));
    const a = list.items[700]!.metadata.annotations!;
    assert.deepEqual(Object.keys(a).sort(), Object.keys(flannelAnnotations("192.168.2.189")).sort(), "only the annotations under the prefix are kept");
    assert.equal(a[`${P}/public-ip`], "192.168.2.189");
    // getNode and the watch keep the same annotations only.
    assert.deepEqual(Object.keys((await c.getNode("n0001")).metadata.annotations!).sort(), Object.keys(flannelAnnotations("192.168.0.1")).sort());
    const seen: string[][] = [];
    const stop = c.watchNodes(rv, 60, { event: (_t, n) => void seen.push(Object.keys(n.metadata.annotations ?? {})), status: () => {}, end: () => {} });
    await fake.waitForWatches(1);
    fake.annotate("n0002", { "node.alpha.kubernetes.io/ttl": "15", [`${P}/public-ip`]: "192.168.9.9" });
    await until("the watch event", () => seen.length === 1);
    assert.ok(seen[0]!.every((k) => k.startsWith(`${P}/`)), seen[0]!.join(", "));
    stop();
  });

  test("a node added and one deleted between two pages: the list is the first page's snapshot, the watch from its resourceVersion brings both", async () => {
    const { fake, c } = await serve(600);
    // Right before the second page is served, a node is added and another (on that page) deleted.
    fake.onRequest = (q) => {
      if (q.query.continue === undefined || fake.node("n0000")) return;
      fake.addNode({ name: "n0000", podCIDR: "10.99.0.0/24", annotations: flannelAnnotations("192.168.99.1") });
      fake.deleteNode("n0599");
    };
    const list = await c.listNodes();
    fake.onRequest = undefined;
    assert.equal(lists(fake).length, 2);
    const names = new Set(list.items.map((n) => n.metadata.name));
    assert.ok(!names.has("n0000") && names.has("n0599") && names.size === 600, "the list is the first page's snapshot");
    const events: string[] = [];
    const stop = c.watchNodes(list.resourceVersion, 60, { event: (type, n) => void events.push(`${type} ${n.metadata.name}`), status: () => {}, end: () => {} });
    await until("both changes as events", () => events.length >= 2);
    assert.deepEqual(events, ["ADDED n0000", "DELETED n0599"]);
    stop();
  });

  test("a continue token that expired starts the list again; expiring every time, the whole list is asked for at once", async () => {
    const { fake, c } = await serve(1100);
    fake.failNext({ method: "GET", path: /^\/api\/v1\/nodes$/, query: "continue", status: 410 });
    const list = await c.listNodes();
    assert.equal(list.items.length, 1100);
    assert.deepEqual(lists(fake).map((q) => q.query.continue !== undefined), [false, true, false, true, true], "page 1, page 2 (410), then pages 1-3 again");
    fake.requests.length = 0;
    fake.failNext({ method: "GET", path: /^\/api\/v1\/nodes$/, query: "continue", status: 410, count: 2 });
    const again = await c.listNodes();
    assert.equal(again.items.length, 1100);
    assert.deepEqual(lists(fake).map((q) => q.query.limit ?? "all"), ["500", "500", "500", "500", "all"], "two restarts, then one list of everything");
    fake.failNext({ method: "GET", path: /^\/api\/v1\/nodes$/, query: "continue", status: 503 });
    await assert.rejects(c.listNodes(), (e) => isTwillError(e, "ERR_STORE") && e.retryable && /list nodes: HTTP 503/.test(e.message), "other failures of a page are errors");
  });
});

function recorder() {
  const r = {
    batches: [] as LeaseEvent[][],
    resyncs: 0,
    errors: [] as TwillError[],
    get events(): LeaseEvent[] {
      return r.batches.flat();
    },
    handlers: {
      onEvents: (e) => void r.batches.push([...e]),
      onResync: () => void r.resyncs++,
      onError: (e) => void r.errors.push(e),
    } as WatchHandlers,
    /** The events after the first `from`, as "put key" / "delete key". */
    since(from: number): string[] {
      return r.events.slice(from).map((e) => `${e.type} ${e.key}${e.error ? " (error)" : ""}`);
    },
  };
  return r;
}

const listRequests = (fake: FakeKube) => fake.requests.filter((q) => q.method === "GET" && q.path === "/api/v1/nodes" && q.query.watch === undefined).length;

/**
 * A fake API with `nodes` annotated nodes (n<i>: 10.244.<i>.0/24, public IP
 * 192.168.0.<i>), a KubeSource on it and that source's watch, once the watch
 * request is open and the initial list has been delivered (onResync).
 */
async function watching(more: Partial<KubeSourceOptions> = {}, nodes = 1) {
  const { fake, src } = await setup(more);
  for (let i = 1; i <= nodes; i++) {
    fake.addNode({ name: `n${i}`, podCIDR: `10.244.${i}.0/24`, annotations: flannelAnnotations(`192.168.0.${i}`) });
  }
  const r = recorder();
  const stop = src.watch(r.handlers);
  await fake.waitForWatches(1);
  await until("initial resync", () => r.resyncs >= 1);
  return { fake, src, r, stop };
}

describe("acquire", () => {
  test("patches our node's annotations as flannel does: strategic merge on nodes/<name>/status", async () => {
    const { fake, src } = await setup();
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24" });
    const lease = await src.acquire(offer);
    assert.equal(lease.key, "10.244.1.0-24");
    assert.equal(formatIP(lease.publicIP!), "192.168.0.1");
    assert.deepEqual(lease.backendData, offer.backendData);
    assert.equal(fake.patches.length, 1);
    const p = fake.patches[0]!;
    assert.equal(p.path, "/api/v1/nodes/n1/status");
    assert.equal(p.contentType, SMP);
    assert.deepEqual(p.body, {
      metadata: {
        annotations: {
          [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`,
          [`${P}/backend-type`]: "vxlan",
          [`${P}/kube-subnet-manager`]: "true",
          [`${P}/public-ip`]: "192.168.0.1",
        },
      },
    });
    const n = fake.node("n1")!;
    assert.equal(n.metadata.annotations[`${P}/public-ip`], "192.168.0.1");
    assert.equal(n.metadata.annotations["node.alpha.kubernetes.io/ttl"], "0", "other annotations are kept");
    // Acquiring again (a restart) patches nothing: the node already says it all.
    assert.equal((await src.acquire(offer)).key, lease.key);
    assert.equal(fake.patches.length, 1);
    // writeLease writes every annotation again.
    await src.writeLease(lease);
    assert.equal(fake.patches.length, 2);
    assert.equal(fake.patches[1]!.contentType, SMP);
    assert.deepEqual(Object.keys((fake.patches[1]!.body as Json).metadata.annotations).length, 4);
  });

  test("dual stack through --kube-api-url", async () => {
    const { fake, src } = await setup({ netConfigPath: netConf({ Network: "10.244.0.0/16", EnableIPv6: true, IPv6Network: "fc00::/48", Backend: { Type: "vxlan" } }) }, "url");
    fake.addNode({ name: "n1", podCIDRs: ["10.244.1.0/24", "fc00:0:0:1::/64"] });
    const lease = await src.acquire({ ...offer, publicIPv6: parseIP("fd00::1"), backendV6Data: { vni: 1, vtepMAC: "aa:bb:cc:dd:ee:02" } });
    assert.equal(lease.key, "10.244.1.0-24&fc00:0:0:1::-64");
    assert.deepEqual((fake.patches[0]!.body as Json).metadata.annotations, {
      [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`,
      [`${P}/backend-type`]: "vxlan",
      [`${P}/backend-v6-data`]: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}`,
      [`${P}/kube-subnet-manager`]: "true",
      [`${P}/public-ip`]: "192.168.0.1",
      [`${P}/public-ipv6`]: "fd00::1",
    });
    assert.deepEqual((await src.list()).leases.map((l) => l.key), [lease.key]);
  });

  test("the VTEP MAC in our existing annotation is restored; public-ip-overwrite is honoured", async () => {
    const { fake, src } = await setup();
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24", annotations: { ...flannelAnnotations("192.168.0.99"), [`${P}/public-ip-overwrite`]: "203.0.113.5" } });
    const lease = await src.acquire(offer);
    assert.equal(lease.backendData!.vtepMAC, MAC, "the MAC peers already know");
    assert.equal(formatIP(lease.publicIP!), "203.0.113.5");
    assert.deepEqual(fake.patches.map((p) => p.body), [{ metadata: { annotations: { [`${P}/public-ip`]: "203.0.113.5" } } }]);
    // Our own node is listed under the same key with the same data: the daemon sees its lease intact.
    const own = (await src.list()).leases.find((l) => l.key === lease.key)!;
    assert.deepEqual(own, lease);
  });

  test("waits for the podCIDR, and gives up after podCIDRTimeoutMs", async () => {
    const { fake, src } = await setup();
    fake.addNode({ name: "n1" });
    const pending = src.acquire(offer);
    await until("acquire polled the node", () => fake.requests.filter((q) => q.path === "/api/v1/nodes/n1").length >= 2);
    fake.updateNode("n1", (n) => (n.spec = { podCIDR: "10.244.7.0/24", podCIDRs: ["10.244.7.0/24"] }));
    assert.equal((await pending).key, "10.244.7.0-24");

    const { fake: f2, src: s2 } = await setup({ podCIDRTimeoutMs: 300 });
    f2.addNode({ name: "n1" });
    await assert.rejects(s2.acquire(offer), (e) => isTwillError(e, "ERR_STORE") && /gave up after \d+ s: node n1 has no spec.podCIDR yet/.test(e.message));
    // a node that does not exist (yet) is waited for too, then named
    const { src: s3 } = await setup({ podCIDRTimeoutMs: 200, nodeName: "nope" });
    await assert.rejects(s3.acquire(offer), (e) => isTwillError(e, "ERR_STORE") && e.message.includes(`get node nope: HTTP 404: nodes "nope" not found`));
  });

  test("the node name comes from our pod (POD_NAME + POD_NAMESPACE) when NODE_NAME is unset", async () => {
    const { fake, src } = await setup({ nodeName: "container-hostname", nodeNameSource: "hostname", podName: "kube-flannel-ds-x7k2p", podNamespace: "kube-flannel" });
    fake.addNode({ name: "n2", podCIDR: "10.244.2.0/24" });
    fake.addPod("kube-flannel", "kube-flannel-ds-x7k2p", "n2");
    assert.equal((await src.acquire(offer)).key, "10.244.2.0-24");
    assert.ok(fake.requests.some((q) => q.path === "/api/v1/namespaces/kube-flannel/pods/kube-flannel-ds-x7k2p"));
    assert.equal(fake.patches[0]!.path, "/api/v1/nodes/n2/status");
    assert.equal(await src.nodeName(), "n2");
    // Our pod not found is not waited out (unlike our node): it is a misconfiguration.
    const { src: s2 } = await setup({ nodeName: "h", nodeNameSource: "hostname", podName: "gone", podNamespace: "kube-flannel" });
    const t0 = Date.now();
    await assert.rejects(s2.acquire(offer), (e) => isTwillError(e, "ERR_STORE") && e.message === `Kubernetes API: get pod kube-flannel/gone: HTTP 404: pods "gone" not found`);
    assert.ok(Date.now() - t0 < 1000);
  });

  test("a bad net-config file or kubeconfig is a clear error", async () => {
    const bad = new KubeSource({ netConfigPath: join(dir, "missing.json"), kubeApiUrl: "http://127.0.0.1:1", nodeName: "n1" });
    await assert.rejects(bad.readConfig(), (e) => isTwillError(e, "ERR_INVALID_CONFIG") && e.message.includes("missing.json (--net-config-path)"));
    const p = netConf({ Network: "10.244.0.0/33" });
    await assert.rejects(new KubeSource({ netConfigPath: p, nodeName: "n1" }).readConfig(), (e) => isTwillError(e, "ERR_INVALID_CONFIG") && e.message.includes(`(in ${p})`));
    const nokc = new KubeSource({ netConfigPath: netConf(), kubeconfigFile: join(dir, "no-kubeconfig"), nodeName: "n1" });
    await assert.rejects(nokc.list(), (e) => isTwillError(e, "ERR_INVALID_CONFIG") && e.message.startsWith(`Cannot load kubeconfig ${join(dir, "no-kubeconfig")}`));
  });
});

describe("markReady", () => {
  test("sets NetworkUnavailable=False with a strategic merge that keeps the other conditions", async () => {
    const { fake, src } = await setup({ now: () => new Date("2024-06-01T12:00:00.500Z") });
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24" });
    await src.acquire(offer);
    await src.markReady();
    const p = fake.patches.at(-1)!;
    assert.equal(p.path, "/api/v1/nodes/n1/status");
    assert.equal(p.contentType, SMP);
    assert.deepEqual(p.body, {
      status: {
        conditions: [{
          type: "NetworkUnavailable", status: "False",
          lastHeartbeatTime: "2024-06-01T12:00:00Z", lastTransitionTime: "2024-06-01T12:00:00Z",
          reason: "FlannelIsUp", message: "Flannel is running on this node",
        }],
      },
    });
    await src.markReady(); // again: merged by type, not appended
    const conds = fake.node("n1")!.status.conditions as Json[];
    assert.deepEqual(conds.map((c) => `${c.type}=${c.status}`), ["MemoryPressure=False", "Ready=True", "NetworkUnavailable=False"]);
  });
});

describe("list", () => {
  test("annotated nodes are leases keyed like flannel's etcd keys; unannotated nodes are skipped; bad ones are errors", async () => {
    const { fake, src } = await setup();
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24", annotations: flannelAnnotations("192.168.0.1", "aa:bb:cc:dd:ee:01") });
    fake.addNode({ name: "n2", podCIDR: "10.244.2.0/24", annotations: flannelAnnotations("192.168.0.2", "aa:bb:cc:dd:ee:02") });
    fake.addNode({ name: "n3", podCIDR: "10.244.3.0/24", annotations: { ...flannelAnnotations("192.168.0.3"), [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"zz"}` } });
    fake.addNode({ name: "n4", podCIDR: "10.244.4.0/24" }); // joined, flannel not started yet
    fake.addNode({ name: "n5", podCIDR: "10.244.5.0/24", annotations: { ...flannelAnnotations("192.168.0.5"), [`${P}/backend-type`]: "host-gw" } });
    const { leases, errors } = await src.list();
    assert.deepEqual(leases.map((l) => `${l.key} ${l.backendType} ${formatIP(l.publicIP!)} ${l.backendData?.vtepMAC ?? "-"}`), [
      "10.244.1.0-24 vxlan 192.168.0.1 aa:bb:cc:dd:ee:01",
      "10.244.2.0-24 vxlan 192.168.0.2 aa:bb:cc:dd:ee:02",
      "10.244.5.0-24 host-gw 192.168.0.5 -",
    ]);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.key, "10.244.3.0-24");
    assert.ok(isTwillError(errors[0]!.error, "ERR_INVALID_LEASE"));
    assert.ok(errors[0]!.error.message.startsWith(`Cannot parse node n3: annotation ${P}/backend-data: VtepMAC "zz" is not a MAC`), errors[0]!.error.message);
  });

  test("a start lists the nodes once: list(), the watch's first list and the next list() share it; nothing changed meanwhile is missed", async () => {
    const { fake, src } = await setup();
    for (let i = 2; i <= 4; i++) fake.addNode({ name: `n${i}`, podCIDR: `10.244.${i}.0/24`, annotations: flannelAnnotations(`192.168.0.${i}`) });
    const first = await src.list();
    // Changed after that list, before the watch starts: the watch (from the list's resourceVersion) brings it.
    fake.addNode({ name: "n5", podCIDR: "10.244.5.0/24", annotations: flannelAnnotations("192.168.0.5") });
    fake.deleteNode("n2");
    const r = recorder();
    const stop = src.watch(r.handlers);
    const again = await src.list();
    assert.deepEqual(again.leases.map((l) => l.key), first.leases.map((l) => l.key));
    await fake.waitForWatches(1);
    await until("n5 put and n2 deleted by the watch", () => r.since(0).includes("put 10.244.5.0-24") && r.since(0).includes("delete 10.244.2.0-24"));
    assert.equal(listRequests(fake), 1, "one list request for the three");
    // From then on list() reads the watch's cache; a 410 still re-lists with a real request.
    assert.deepEqual((await src.list()).leases.map((l) => l.key).sort(), ["10.244.3.0-24", "10.244.4.0-24", "10.244.5.0-24"]);
    assert.equal(listRequests(fake), 1);
    fake.expireWatches();
    await until("the re-list after 410", () => listRequests(fake) === 2);
    stop();
  });

  test("API failures are ERR_STORE errors naming the call", async () => {
    const { fake, src } = await setup();
    fake.failNext({ path: /^\/api\/v1\/nodes$/, status: 403 });
    await assert.rejects(src.list(), (e) => isTwillError(e, "ERR_STORE") && !e.retryable && e.message === "Kubernetes API: list nodes: HTTP 403: injected failure 403");
    fake.failNext({ path: /^\/api\/v1\/nodes$/, status: 503 });
    await assert.rejects(src.list(), (e) => isTwillError(e, "ERR_STORE") && e.retryable);
  });
});

describe("watch", () => {
  test("added, changed and deleted nodes become put/delete events; heartbeats are not events", async () => {
    const { fake, src } = await setup();
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24", annotations: flannelAnnotations("192.168.0.1") });
    fake.addNode({ name: "n4", podCIDR: "10.244.4.0/24" });
    const r = recorder();
    const stop = src.watch(r.handlers);
    await until("the initial list", () => r.resyncs >= 1 && r.events.length >= 1);
    assert.deepEqual(r.since(0), ["put 10.244.1.0-24"], "the initial list: n1 only (n4 is not annotated)");
    assert.equal(r.errors.length, 0);
    await fake.waitForWatches(1);

    let k = r.events.length;
    fake.addNode({ name: "n2", podCIDR: "10.244.2.0/24", annotations: flannelAnnotations("192.168.0.2") });
    await until("n2 added", () => r.events.length > k);
    assert.deepEqual(r.since(k), ["put 10.244.2.0-24"]);
    assert.equal(formatIP(r.events.at(-1)!.lease!.publicIP!), "192.168.0.2");

    k = r.events.length;
    fake.updateNode("n2", (n) => (n.status.conditions[1].lastHeartbeatTime = "2024-05-01T10:05:00Z")); // kubelet heartbeat
    fake.annotate("n4", { ...flannelAnnotations("192.168.0.4") }); // flannel/twill started on n4
    await until("n4 annotated", () => r.events.length > k);
    assert.deepEqual(r.since(k), ["put 10.244.4.0-24"], "the heartbeat is not an event");

    k = r.events.length;
    fake.annotate("n2", { [`${P}/public-ip`]: "192.168.0.22" });
    await until("n2 changed", () => r.events.length > k);
    assert.deepEqual(r.since(k), ["put 10.244.2.0-24"]);
    assert.equal(formatIP(r.events.at(-1)!.lease!.publicIP!), "192.168.0.22");

    k = r.events.length;
    const nb = r.batches.length;
    fake.updateNode("n2", (n) => (n.spec = { podCIDR: "10.244.12.0/24", podCIDRs: ["10.244.12.0/24"] })); // a node re-created with a new podCIDR
    await until("n2 moved", () => r.events.length >= k + 2);
    assert.deepEqual(r.since(k), ["delete 10.244.2.0-24", "put 10.244.12.0-24"]);
    assert.equal(r.batches.length, nb + 1, "delete and put in one batch");

    k = r.events.length;
    fake.annotate("n4", { [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"zz"}` });
    await until("n4 broken", () => r.events.length > k);
    assert.deepEqual(r.since(k), ["put 10.244.4.0-24 (error)"]);
    assert.ok(r.events.at(-1)!.error!.message.startsWith(`Cannot parse node n4: annotation ${P}/backend-data: VtepMAC "zz"`));

    k = r.events.length;
    fake.annotate("n4", { [`${P}/kube-subnet-manager`]: undefined });
    fake.deleteNode("n2");
    await until("n4 unannotated, n2 deleted", () => r.events.length >= k + 2);
    assert.deepEqual(r.since(k), ["delete 10.244.4.0-24", "delete 10.244.12.0-24"]);
    assert.equal(r.errors.length, 0);

    stop();
    await until("the watch connection closed", () => fake.openWatches === 0);
    k = r.events.length;
    fake.addNode({ name: "n9", podCIDR: "10.244.9.0/24", annotations: flannelAnnotations("192.168.0.9") });
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(r.events.length, k, "no events after stop()");
  });

  test("a dropped watch is resumed from its resourceVersion: no re-list, nothing missed", async () => {
    const { fake, r, stop } = await watching();
    const lists = listRequests(fake), resyncs = r.resyncs, k = r.events.length;
    assert.equal(fake.dropWatches("clean"), 1);
    fake.addNode({ name: "n2", podCIDR: "10.244.2.0/24", annotations: flannelAnnotations("192.168.0.2") }); // while no watch is open
    await until("n2 delivered after the resume", () => r.events.length > k);
    assert.deepEqual(r.since(k), ["put 10.244.2.0-24"]);
    const resumed = fake.requests.filter((q) => q.query.watch === "true").at(-1)!;
    assert.ok(Number(resumed.query.resourceVersion) > 0, "resumed from a resourceVersion");
    assert.equal(listRequests(fake), lists, "no re-list");
    assert.equal(r.resyncs, resyncs);
    assert.equal(r.errors.length, 0);
    stop();
  });

  test("an aborted watch connection is reported and the watch restarts (with onResync)", async () => {
    const { fake, r, stop } = await watching();
    const resyncs = r.resyncs;
    fake.failNext({ watch: true, status: 500 }); // the first reconnect fails too
    fake.dropWatches("abrupt");
    await until("error reported", () => r.errors.length >= 1);
    assert.ok(r.errors.every((e) => isTwillError(e, "ERR_STORE") && e.message.startsWith("Kubernetes API: watch nodes: ")), r.errors.map((e) => e.message).join("; "));
    await fake.waitForWatches(1);
    await until("onResync after the restart", () => r.resyncs > resyncs);
    const k = r.events.length;
    fake.addNode({ name: "n3", podCIDR: "10.244.3.0/24", annotations: flannelAnnotations("192.168.0.3") });
    await until("events flow again", () => r.events.length > k);
    assert.deepEqual(r.since(k), ["put 10.244.3.0-24"]);
    stop();
  });

  test("410 Gone: the watch re-lists, reports deletes it missed, and calls onResync", async () => {
    const { fake, r, stop } = await watching({}, 2);

    // An open watch is expired (the server's ERROR event with a 410 Status).
    let lists = listRequests(fake), resyncs = r.resyncs;
    assert.equal(fake.expireWatches(), 1);
    await until("re-listed and resynced", () => listRequests(fake) > lists && r.resyncs > resyncs);
    await fake.waitForWatches(1);

    // A resume from a compacted version: n2 was deleted meanwhile and the event is gone.
    lists = listRequests(fake);
    resyncs = r.resyncs;
    const k = r.events.length;
    fake.dropWatches("clean");
    fake.deleteNode("n2");
    fake.compact();
    await until("re-listed after 410", () => listRequests(fake) > lists && r.resyncs > resyncs);
    await until("the missed delete", () => r.events.length > k);
    assert.deepEqual(r.since(k), ["delete 10.244.2.0-24"]);
    assert.equal(r.errors.length, 0, "410 is not an error: the informer re-lists by itself");
    await fake.waitForWatches(1);
    const k2 = r.events.length;
    fake.annotate("n1", { [`${P}/public-ip`]: "192.168.0.11" });
    await until("recovered: events flow", () => r.events.length > k2);
    assert.deepEqual(r.since(k2), ["put 10.244.1.0-24"]);
    stop();
  });

  test("periodic onResync; list() is served from the watch's cache", async () => {
    const { fake, src, r, stop } = await watching({ resyncMs: 150 });
    const resyncs = r.resyncs;
    await until("two periodic resyncs", () => r.resyncs >= resyncs + 2, 2000);
    const lists = listRequests(fake);
    const k = r.events.length;
    fake.addNode({ name: "n2", podCIDR: "10.244.2.0/24", annotations: flannelAnnotations("192.168.0.2") });
    await until("n2 seen", () => r.events.length > k);
    assert.deepEqual((await src.list()).leases.map((l) => l.key), ["10.244.1.0-24", "10.244.2.0-24"]);
    assert.equal(listRequests(fake), lists, "list() did not fetch the nodes again");
    stop();
    await src.list();
    assert.equal(listRequests(fake), lists + 1, "after stop(), list() asks the API");
  });
});

describe("stop", () => {
  test("stop() during the informer's reconnect delay leaves no watch behind", async () => {
    const { fake, stop } = await watching();
    fake.dropWatches("clean"); // reconnects at once...
    await fake.waitForWatches(1);
    fake.dropWatches("clean"); // ...then after 1 s (no event in between)
    await new Promise((res) => setTimeout(res, 100));
    const watches = fake.requests.filter((q) => q.query.watch === "true").length;
    stop();
    await new Promise((res) => setTimeout(res, 1500));
    assert.equal(fake.requests.filter((q) => q.query.watch === "true").length, watches, "no watch request after stop()");
    assert.equal(fake.openWatches, 0);
  });
});

describe("watch: bookmarks and 410", () => {
  test("a bookmark moves the resourceVersion: the watch resumes from it, and a bookmark is not an event", async () => {
    const { fake, r, stop } = await watching();
    const first = fake.requests.filter((q) => q.query.watch === "true").at(-1)!;
    assert.equal(first.query.allowWatchBookmarks, "true");
    // Changes to nodes that are not leases move the version but make no event; then a bookmark says so.
    fake.addNode({ name: "n9" });
    fake.updateNode("n9", (n) => { n.metadata.labels.x = "y"; });
    const k = r.events.length;
    assert.equal(fake.bookmark(), 1);
    await new Promise((res) => setTimeout(res, 100));
    assert.equal(r.events.length, k, "a bookmark is no event");
    fake.dropWatches("clean");
    await until("resumed", () => fake.requests.filter((q) => q.query.watch === "true").length > 1);
    const resumed = fake.requests.filter((q) => q.query.watch === "true").at(-1)!;
    assert.equal(resumed.query.resourceVersion, fake.resourceVersion, "resumed from the bookmark's version");
    assert.equal(r.errors.length, 0);
    stop();
  });

  test("a 410 answer to the watch request re-lists (no error) and calls onResync", async () => {
    const { fake, r, stop } = await watching();
    const lists = listRequests(fake), resyncs = r.resyncs;
    fake.failNext({ watch: true, status: 410 });
    fake.dropWatches("clean");
    await until("re-listed and resynced", () => listRequests(fake) > lists && r.resyncs > resyncs);
    await fake.waitForWatches(1);
    assert.equal(r.errors.length, 0);
    stop();
  });
});

/** A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl. */
function makeCerts(): { ca: string; caCert: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string; otherCA: string } {
  const d = mkdtempSync(join(dir, "pki-"));
  const f = (n: string) => join(d, n);
  const ssl = (...a: string[]) => execFileSync("openssl", a, { stdio: "pipe" });
  for (const ca of ["ca", "other"]) ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=twill-test-${ca}`, "-keyout", f(`${ca}.key`), "-out", f(`${ca}.crt`));
  const leaf = (name: string, cn: string, ext: string) => {
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${cn}`, "-keyout", f(`${name}.key`), "-out", f(`${name}.csr`));
    writeFileSync(f(`${name}.ext`), ext + "\n");
    ssl("x509", "-req", "-in", f(`${name}.csr`), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial", "-days", "2", "-extfile", f(`${name}.ext`), "-out", f(`${name}.crt`));
  };
  leaf("server", "kube-apiserver", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth");
  leaf("client", "system:node:n1", "extendedKeyUsage=clientAuth");
  const r = (n: string) => readFileSync(f(n), "utf8");
  return { ca: f("ca.crt"), caCert: r("ca.crt"), serverCert: r("server.crt"), serverKey: r("server.key"), clientCert: r("client.crt"), clientKey: r("client.key"), otherCA: f("other.crt") };
}

describe("auth and TLS", () => {
  const pki = makeCerts();

  test("kubeconfig with a client certificate over TLS, the server verified with certificate-authority", async () => {
    const fake = await FakeKube.start({ tls: { cert: pki.serverCert, key: pki.serverKey, clientCA: pki.caCert } });
    fakes.push(fake);
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24" });
    const kc = join(dir, `kubeconfig-${++files}`);
    fake.writeKubeconfig(kc, { caFile: pki.ca, clientCert: pki.clientCert, clientKey: pki.clientKey });
    const src = new KubeSource({ netConfigPath: netConf(), kubeconfigFile: kc, nodeName: "n1", retryMs: 50 });
    sources.push(src);
    assert.equal((await src.acquire(offer)).key, "10.244.1.0-24");
    // A peer to watch: our own node is no event once acquired (as flannel).
    fake.addNode({ name: "n2", podCIDR: "10.244.2.0/24", annotations: flannelAnnotations("192.168.0.2") });
    const r = recorder();
    const stop = src.watch(r.handlers);
    await until("watching over TLS", () => r.resyncs >= 1 && r.events.length >= 1);
    stop();

    // Without the client certificate: 401 (not retryable); with another CA: the server is not trusted.
    const anon = join(dir, `kubeconfig-${++files}`);
    fake.writeKubeconfig(anon, { caFile: pki.ca });
    await assert.rejects((await KubeClient.create({ kubeconfigFile: anon })).listNodes(),
      (e) => isTwillError(e, "ERR_STORE") && !e.retryable && e.message === "Kubernetes API: list nodes: HTTP 401: Unauthorized");
    const wrongCA = join(dir, `kubeconfig-${++files}`);
    fake.writeKubeconfig(wrongCA, { caFile: pki.otherCA, clientCert: pki.clientCert, clientKey: pki.clientKey });
    await assert.rejects((await KubeClient.create({ kubeconfigFile: wrongCA })).listNodes(),
      (e) => isTwillError(e, "ERR_STORE") && /list nodes: .*(self.signed|unable to verify|certificate)/i.test(e.message));
  });

  test("tokenFile: a rotated token is read again after a 401, for calls and the watch", async () => {
    const fake = await FakeKube.start({ tokens: ["t1"] });
    fakes.push(fake);
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24", annotations: flannelAnnotations("192.168.0.1") });
    const tokenFile = join(dir, `token-${++files}`);
    writeFileSync(tokenFile, "t1\n");
    const kc = join(dir, `kubeconfig-${++files}`);
    fake.writeKubeconfig(kc, { tokenFile });
    // The fake serves plain http: the token goes there only with --allow-insecure-credentials.
    const src = new KubeSource({ netConfigPath: netConf(), kubeconfigFile: kc, nodeName: "n1", backoffMinMs: 50, backoffMaxMs: 200, allowInsecureCredentials: true });
    sources.push(src);
    assert.deepEqual((await src.list()).leases.map((l) => l.key), ["10.244.1.0-24"]);
    const r = recorder();
    const stop = src.watch(r.handlers);
    await fake.waitForWatches(1);
    // The kubelet rotates the token: only the new one is accepted from now on.
    writeFileSync(tokenFile, "t2\n");
    fake.setTokens(["t2"]);
    fake.dropWatches("clean");
    await fake.waitForWatches(1);
    const k = r.events.length;
    fake.addNode({ name: "n2", podCIDR: "10.244.2.0/24", annotations: flannelAnnotations("192.168.0.2") });
    await until("events with the new token", () => r.events.length > k);
    assert.equal(r.errors.length, 0, r.errors.map((e) => e.message).join("; "));
    await src.markReady();
    assert.equal(fake.node("n1")!.status.conditions.at(-1).type, "NetworkUnavailable");
    stop();
  });

  test("in-cluster: the service account's token and CA; the API over https", async () => {
    const fake = await FakeKube.start({ tokens: ["sa1"], tls: { cert: pki.serverCert, key: pki.serverKey } });
    fakes.push(fake);
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24", annotations: flannelAnnotations("192.168.0.1") });
    const sa = mkdtempSync(join(dir, "sa-"));
    writeFileSync(join(sa, "token"), "sa1");
    writeFileSync(join(sa, "ca.crt"), pki.caCert);
    writeFileSync(join(sa, "namespace"), "kube-flannel");
    const port = new URL(fake.url).port;
    const c = await KubeClient.create({ env: { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: port }, serviceAccountDir: sa });
    assert.equal(c.server, `https://127.0.0.1:${port}`);
    assert.equal((await c.listNodes()).items.length, 1);
    writeFileSync(join(sa, "token"), "sa2");
    fake.setTokens(["sa2"]);
    assert.equal((await c.getNode("n1")).metadata.name, "n1", "the rotated token is read after the 401");
    c.close();
    await assert.rejects(KubeClient.create({ env: {} }), (e) => isTwillError(e, "ERR_INVALID_CONFIG") && /KUBERNETES_SERVICE_HOST is unset/.test(e.message));
  });

  test("a JSON kubeconfig and $KUBECONFIG work; exec and auth-provider plugins are refused naming the field", async () => {
    const fake = await FakeKube.start({ tokens: ["tok"] });
    fakes.push(fake);
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24" });
    const kc = join(dir, `kubeconfig-${++files}.json`);
    fake.writeKubeconfig(kc, { json: true, token: "tok" });
    // Plain http: the token goes only with --allow-insecure-credentials.
    await assert.rejects(KubeClient.create({ kubeconfigFile: kc }), (e) => isTwillError(e, "ERR_INVALID_FLAG") && /--allow-insecure-credentials/.test(e.message) && !e.message.includes("tok\""));
    assert.equal((await (await KubeClient.create({ kubeconfigFile: kc, allowInsecureCredentials: true })).listNodes()).items.length, 1);
    const c = await KubeClient.create({ env: { KUBECONFIG: `${join(dir, "missing")}:${kc}` }, allowInsecureCredentials: true });
    assert.equal((await c.getNode("n1")).metadata.name, "n1");
    for (const [field, value] of [["exec", { command: "aws", apiVersion: "client.authentication.k8s.io/v1" }], ["auth-provider", { name: "gcp" }]] as const) {
      const bad = join(dir, `kubeconfig-${++files}.json`);
      const doc = JSON.parse(readFileSync(kc, "utf8"));
      doc.users[0].user = { [field]: value };
      writeFileSync(bad, JSON.stringify(doc));
      await assert.rejects(KubeClient.create({ kubeconfigFile: bad }),
        (e) => isTwillError(e, "ERR_INVALID_CONFIG") && e.message.includes(`users[fake].user.${field} is not supported`), field);
    }
  });
});

describe("node-public-ip annotations (flannel's GetStoredPublicIP)", () => {
  test("our node's node-public-ip(v6) annotations are returned; absent ones are not; a bad one is ERR_INVALID_IP naming it", async () => {
    const { fake, src } = await setup();
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24", annotations: { [`${P}/node-public-ip`]: "10.0.0.7", [`${P}/node-public-ipv6`]: "fd00::7" } });
    const got = await src.storedPublicIPs();
    assert.equal(formatIP(got.v4!), "10.0.0.7");
    assert.equal(formatIP(got.v6!), "fd00::7");

    const { fake: f2, src: s2 } = await setup();
    f2.addNode({ name: "n1", podCIDR: "10.244.1.0/24" });
    assert.deepEqual(await s2.storedPublicIPs(), {});

    const { fake: f3, src: s3 } = await setup();
    f3.addNode({ name: "n1", podCIDR: "10.244.1.0/24", annotations: { [`${P}/node-public-ip`]: "fd00::7" } });
    await assert.rejects(s3.storedPublicIPs(), (e) => isTwillError(e, "ERR_INVALID_IP") && e.message === `Cannot use node n1's annotation ${P}/node-public-ip: "fd00::7" is not an IPv4 address`);
  });

  test("the pinned address is the lease's public-ip (public-ip-overwrite still wins, as in flannel's AcquireLease)", async () => {
    const { fake, src } = await setup();
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24", annotations: { [`${P}/node-public-ip`]: "10.0.0.7" } });
    // The daemon passes the pinned address on as the public IP it found (daemon.ts start()).
    const pinned = await src.storedPublicIPs();
    const lease = await src.acquire({ ...offer, publicIP: pinned.v4 });
    assert.equal(formatIP(lease.publicIP!), "10.0.0.7");
    assert.equal(fake.node("n1")!.metadata.annotations[`${P}/public-ip`], "10.0.0.7");

    const { fake: f2, src: s2 } = await setup();
    f2.addNode({ name: "n1", podCIDR: "10.244.1.0/24", annotations: { [`${P}/node-public-ip`]: "10.0.0.7", [`${P}/public-ip-overwrite`]: "203.0.113.5" } });
    const l2 = await s2.acquire({ ...offer, publicIP: (await s2.storedPublicIPs()).v4 });
    assert.equal(formatIP(l2.publicIP!), "203.0.113.5");
  });
});

describe("two nodes with one podCIDR", () => {
  const at = (min: number) => `2024-05-01T10:${String(min).padStart(2, "0")}:00Z`;

  test("list: the node created first keeps it; the other is ERR_LEASE_CONFLICT naming both; overlapping podCIDRs too", async () => {
    const { fake, src } = await setup();
    // b is older than a: b keeps 10.244.1.0/24 although a sorts first by name.
    fake.addNode({ name: "a", podCIDR: "10.244.1.0/24", creationTimestamp: at(5), annotations: flannelAnnotations("192.168.0.1") });
    fake.addNode({ name: "b", podCIDR: "10.244.1.0/24", creationTimestamp: at(1), annotations: flannelAnnotations("192.168.0.2") });
    fake.addNode({ name: "c", podCIDR: "10.244.2.0/23", creationTimestamp: at(9), annotations: flannelAnnotations("192.168.0.3") });
    fake.addNode({ name: "d", podCIDR: "10.244.3.0/24", creationTimestamp: at(2), annotations: flannelAnnotations("192.168.0.4") });
    const { leases, errors } = await src.list();
    assert.deepEqual(leases.map((l) => `${l.key} ${formatIP(l.publicIP!)}`), ["10.244.1.0-24 192.168.0.2", "10.244.3.0-24 192.168.0.4"]);
    assert.deepEqual(errors.map((e) => `${e.key} ${e.error.code}`), ["node/a ERR_LEASE_CONFLICT", "node/c ERR_LEASE_CONFLICT"]);
    assert.equal(errors[0]!.error.message,
      `node a has podCIDR 10.244.1.0/24, already held by node b: ignored while b holds it (the node created first keeps it, then the first by name: b ${at(1)}, a ${at(5)})`);
    assert.match(errors[1]!.error.message, /^node c has podCIDR 10\.244\.2\.0\/23, already held by node d \(overlapping its 10\.244\.3\.0\/24\)/);
    // Same creationTimestamp: the name decides.
    const { fake: f2, src: s2 } = await setup();
    f2.addNode({ name: "y", podCIDR: "10.244.1.0/24", annotations: flannelAnnotations("192.168.0.1") });
    f2.addNode({ name: "x", podCIDR: "10.244.1.0/24", annotations: flannelAnnotations("192.168.0.2") });
    const l2 = await s2.list();
    assert.deepEqual(l2.leases.map((l) => formatIP(l.publicIP!)), ["192.168.0.2"]);
    assert.deepEqual(l2.errors.map((e) => e.key), ["node/y"]);
  });

  test("watch: the conflict is an error event, the holder's lease stays; once the holder is deleted the other takes over", async () => {
    const { fake, src } = await setup();
    fake.addNode({ name: "a", podCIDR: "10.244.1.0/24", creationTimestamp: at(1), annotations: flannelAnnotations("192.168.0.1") });
    const r = recorder();
    const stop = src.watch(r.handlers);
    await until("the initial list", () => r.resyncs >= 1 && r.events.length >= 1);
    await fake.waitForWatches(1);

    let k = r.events.length;
    fake.addNode({ name: "b", podCIDR: "10.244.1.0/24", creationTimestamp: at(2), annotations: flannelAnnotations("192.168.0.2") });
    await until("b added", () => r.events.length > k);
    assert.deepEqual(r.since(k), ["put node/b (error)"]);
    assert.ok(isTwillError(r.events.at(-1)!.error, "ERR_LEASE_CONFLICT"));
    assert.match(r.events.at(-1)!.error!.message, /^node b has podCIDR 10\.244\.1\.0\/24, already held by node a/);
    // b changing its annotations while it is denied is still only its conflict (no event for the shared key).
    k = r.events.length;
    fake.annotate("b", { [`${P}/public-ip`]: "192.168.0.22" });
    await new Promise((res) => setTimeout(res, 150));
    assert.deepEqual(r.since(k), [], "nothing about b changed that the daemon sees");

    k = r.events.length;
    fake.deleteNode("a");
    await until("a deleted, b takes over", () => r.events.length >= k + 3);
    assert.deepEqual(r.since(k), ["delete 10.244.1.0-24", "delete node/b", "put 10.244.1.0-24"]);
    assert.equal(formatIP(r.events.at(-1)!.lease!.publicIP!), "192.168.0.22");
    // In one batch, the put last: the daemon's last-event-per-key keeps b's lease.
    assert.deepEqual(r.batches.at(-1)!.map((e) => `${e.type} ${e.key}`), ["delete 10.244.1.0-24", "delete node/b", "put 10.244.1.0-24"]);
    assert.deepEqual((await src.list()).leases.map((l) => formatIP(l.publicIP!)), ["192.168.0.22"]);

    // An older node appearing later takes the subnet back (the rule survives restarts: creationTimestamp, not arrival).
    k = r.events.length;
    fake.addNode({ name: "z", podCIDR: "10.244.1.0/24", creationTimestamp: at(0), annotations: flannelAnnotations("192.168.0.9") });
    await until("z added", () => r.events.length >= k + 3);
    const last = r.batches.at(-1)!;
    assert.deepEqual(last.map((e) => `${e.type} ${e.key}${e.error ? " (error)" : ""}`).sort(), ["delete 10.244.1.0-24", "put 10.244.1.0-24", "put node/b (error)"]);
    assert.equal(last[0]!.type, "delete", "the delete of b's key before z's put of the same key");
    assert.equal(formatIP(last.find((e) => e.type === "put" && e.lease)!.lease!.publicIP!), "192.168.0.9");
    assert.equal(r.errors.length, 0);
    stop();
  });
});

describe("our own node after acquire (as flannel's LeaseWatcher: events for our subnet are dropped)", () => {
  test("changes of our node's annotations and its deletion are no events; list() keeps the lease we acquired", async () => {
    const { fake, src } = await setup();
    fake.addNode({ name: "n1", podCIDR: "10.244.1.0/24" });
    fake.addNode({ name: "n2", podCIDR: "10.244.2.0/24", annotations: flannelAnnotations("192.168.0.2") });
    const lease = await src.acquire(offer);
    const r = recorder();
    const stop = src.watch(r.handlers);
    await until("the initial list", () => r.resyncs >= 1 && r.events.length >= 1);
    await fake.waitForWatches(1);
    assert.deepEqual(r.since(0), ["put 10.244.2.0-24"], "our node is not a watched lease");

    // Someone rewrites our public-ip (or breaks our backend-data): flannel ignores it, so do we.
    fake.annotate("n1", { [`${P}/public-ip`]: "192.168.0.99" });
    fake.annotate("n1", { [`${P}/backend-data`]: "{" });
    // A peer's change after ours still arrives, so ours was seen and dropped.
    fake.annotate("n2", { [`${P}/public-ip`]: "192.168.0.22" });
    await until("n2 changed", () => r.events.length >= 2);
    assert.deepEqual(r.since(1), ["put 10.244.2.0-24"]);
    let listed = await src.list();
    assert.deepEqual(listed.leases.find((l) => l.key === lease.key), lease, "list() holds the acquired lease");
    assert.deepEqual(listed.errors, []);
    assert.equal(fake.patches.length, 1, "nothing rewritten (flannel does not patch after AcquireLease)");

    // Our node deleted: no event, we keep our lease (flanneld keeps running).
    fake.deleteNode("n1");
    fake.deleteNode("n2");
    await until("n2 deleted", () => r.events.length >= 3);
    assert.deepEqual(r.since(2), ["delete 10.244.2.0-24"]);
    listed = await src.list();
    assert.deepEqual(listed.leases, [lease]);

    // Another node with our podCIDR is a conflict in our view, whatever its age: we hold our subnet.
    fake.addNode({ name: "n0", podCIDR: "10.244.1.0/24", creationTimestamp: "2020-01-01T00:00:00Z", annotations: flannelAnnotations("192.168.0.5") });
    await until("n0 added", () => r.events.length >= 4);
    assert.deepEqual(r.since(3), ["put node/n0 (error)"]);
    assert.match(r.events.at(-1)!.error!.message, /already held by node n1: .*it is our own node's subnet/);
    listed = await src.list();
    assert.deepEqual(listed.leases, [lease]);
    assert.deepEqual(listed.errors.map((e) => `${e.key} ${e.error.code}`), ["node/n0 ERR_LEASE_CONFLICT"]);
    assert.equal(r.errors.length, 0);
    stop();
  });
});
