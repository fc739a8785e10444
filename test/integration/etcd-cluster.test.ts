/**
 * A namespaced cluster whose leases live in a real etcd (TLS with client
 * certificates), written in flannel's exact keys and JSON:
 *
 *   etcd in the router namespace, https://192.168.50.1:2379 (CA, server and client certs made here)
 *   h1 twill bpf --fast-path  ─┐
 *   h2 twill bpf              ─┼─ --etcd-endpoints ... --etcd-cafile/certfile/keyfile
 *   h3 "stock flannel" node: kernel dataplane on a private lease dir; its lease
 *      is written into etcd with etcdctl, as flanneld would
 *
 * All pairs reach each other; an etcd lease whose TTL expires removes the
 * peer; etcd stopped for 10 s loses no ping and the nodes pick up changes
 * after it is back; a compaction is survived.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TwillCluster, DEFAULT_NET_CONFIG, type TwillNode } from "../lib/twill.js";
import { EtcdServer } from "../lib/etcd.js";
import { pingStream } from "../lib/traffic.js";
import { waitFor } from "../lib/exec.js";

const PREFIX = "/coreos.com/network";
const fakeLease = (ip: string, mac: string) => JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: mac } });

describe("leases in etcd (TLS), with a stock-flannel-style node", () => {
  let tc: TwillCluster;
  let etcd: EtcdServer;
  const h3dir = () => join(tc.cluster.dir, "h3-leases");
  const inMap = async (n: TwillNode, prefix: string) => (await tc.maps(n)).peers.some((p) => p.prefix === prefix && p.kind !== "cluster");

  before(async () => {
    tc = await TwillCluster.create({ hosts: 3, startNodes: false, nodes: [{ dataplane: "bpf", fastPath: true }, { dataplane: "bpf" }, { dataplane: "kernel" }] });
    etcd = await EtcdServer.start({ tls: true, netns: tc.cluster.routerNetns, host: tc.nodes[0]!.host.gateway });
    await etcd.etcdctl(["put", `${PREFIX}/config`, JSON.stringify(DEFAULT_NET_CONFIG)]);
    const tls = etcd.tls!;
    mkdirSync(join(h3dir(), "subnets"), { recursive: true });
    writeFileSync(join(h3dir(), "config"), JSON.stringify(DEFAULT_NET_CONFIG));
    tc.sourceArgs = (n) => n.host.name === "h3"
      ? ["--lease-dir", h3dir()]
      : ["--etcd-endpoints", etcd.endpoint, "--etcd-cafile", tls.ca, "--etcd-certfile", tls.clientCert, "--etcd-keyfile", tls.clientKey];
    await Promise.all(tc.nodes.map((n) => tc.start(n)));
    // h3 plays a stock flanneld: its lease goes into etcd by etcdctl; it learns the others from etcd.
    const [key] = readdirSync(join(h3dir(), "subnets")).filter((k) => !k.startsWith("."));
    await etcd.etcdctl(["put", `${PREFIX}/subnets/${key}`, readFileSync(join(h3dir(), "subnets", key!), "utf8")]);
    const kv = await etcd.etcdctlJson<{ kvs: { key: string; value: string }[] }>(["get", "--prefix", `${PREFIX}/subnets/`]);
    for (const { key: k, value } of kv.kvs) {
      const name = Buffer.from(k, "base64").toString().split("/").pop()!;
      if (name !== key) writeFileSync(join(h3dir(), "subnets", name), Buffer.from(value, "base64"));
    }
    for (const n of tc.nodes) await tc.addPod(n, "p1");
  });
  after(async () => {
    await tc?.destroy();
    await etcd?.destroy();
  });

  test("the leases are flannel's keys and JSON, with a 24 h etcd lease", async () => {
    const kv = await etcd.etcdctlJson<{ kvs: { key: string; value: string; lease?: unknown }[] }>(["get", "--prefix", `${PREFIX}/subnets/`]);
    assert.equal(kv.kvs.length, 3);
    for (const { key, value } of kv.kvs) {
      assert.match(Buffer.from(key, "base64").toString(), /^\/coreos\.com\/network\/subnets\/10\.244\.\d+\.0-24$/);
      const l = JSON.parse(Buffer.from(value, "base64").toString());
      assert.deepEqual(Object.keys(l), ["PublicIP", "PublicIPv6", "BackendType", "BackendData"]);
    }
    const withLease = (await etcd.etcdctl(["get", "--prefix", `${PREFIX}/subnets/`, "-w", "fields"])).stdout.match(/"Lease" : (\d+)/g) ?? [];
    const granted = await Promise.all(withLease.map((l) => l.match(/\d+/)![0]).filter((id) => id !== "0")
      .map(async (id) => Number(/granted with TTL\((\d+)s\)/.exec((await etcd.etcdctl(["lease", "timetolive", BigInt(id).toString(16)])).stdout)?.[1])));
    assert.equal(granted.length, 2, "the two twill nodes' leases are attached to etcd leases");
    for (const ttl of granted) assert.equal(ttl, 86400);
  });

  test("all pairs reach each other, the etcdctl-written node included (ICMP and TCP)", async () => {
    const f = [...(await tc.allPairs()), ...(await tc.allPairsTcp())];
    if (f.length) assert.fail(`${f.join("\n")}\n${await tc.diagnostics()}`);
  });

  test("a lease whose etcd TTL expires removes the peer", async () => {
    const n1 = tc.nodes[0]!;
    const grant = (await etcd.etcdctl(["lease", "grant", "3"])).stdout;
    const id = /lease ([0-9a-f]+) granted/.exec(grant)![1]!;
    await etcd.etcdctl(["put", "--lease", id, `${PREFIX}/subnets/10.244.240.0-24`, fakeLease("192.168.50.240", "02:00:00:00:02:40")]);
    await waitFor(() => inMap(n1, "10.244.240.0/24"), { what: "the short-lived lease in h1's map", timeoutMs: 2000 });
    const t0 = Date.now();
    await waitFor(async () => !(await inMap(n1, "10.244.240.0/24")), { what: "the expired lease gone from h1's map", timeoutMs: 8000 });
    console.log(`expired lease removed ${Date.now() - t0} ms after it was seen`);
  });

  test("etcd stopped for 10 s: no ping lost; changes flow again once it is back", async () => {
    const [p1, p2, p3] = tc.nodes.map((n) => n.host.pods[0]!);
    const s12 = pingStream(p1!.netns, p2!.ip, 10), s13 = pingStream(p1!.netns, p3!.ip, 10);
    await new Promise((r) => setTimeout(r, 300));
    await etcd.stop();
    await new Promise((r) => setTimeout(r, 10_000));
    await etcd.start();
    await new Promise((r) => setTimeout(r, 500));
    const [r12, r13] = await Promise.all([s12.stop(), s13.stop()]);
    console.log(`during the etcd outage: h1->h2 ${r12.received}/${r12.sent}, h1->h3 ${r13.received}/${r13.sent}`);
    assert.ok(r12.sent > 500 && r13.sent > 500);
    assert.deepEqual([r12.lost, r13.lost], [0, 0]);
    for (const n of tc.nodes) assert.equal(n.proc?.exitCode ?? null, null, `${n.host.name} exited:\n${tc.log(n).slice(-1500)}`);
    await etcd.etcdctl(["put", `${PREFIX}/subnets/10.244.241.0-24`, fakeLease("192.168.50.241", "02:00:00:00:02:41")]);
    for (const n of tc.nodes.slice(0, 2)) {
      await waitFor(() => inMap(n, "10.244.241.0/24"), { what: `${n.host.name} picks up a lease written after etcd came back`, timeoutMs: 10_000 });
    }
    await etcd.etcdctl(["del", `${PREFIX}/subnets/10.244.241.0-24`]);
  });

  test("a compaction is survived: later leases still arrive", async () => {
    for (let i = 0; i < 5; i++) await etcd.etcdctl(["put", `${PREFIX}/subnets/10.244.242.0-24`, fakeLease("192.168.50.242", `02:00:00:00:02:4${i}`)]);
    await etcd.etcdctl(["compact", String(await etcd.revision())]);
    await etcd.etcdctl(["put", `${PREFIX}/subnets/10.244.243.0-24`, fakeLease("192.168.50.243", "02:00:00:00:02:43")]);
    for (const n of tc.nodes.slice(0, 2)) {
      await waitFor(async () => (await inMap(n, "10.244.243.0/24")) && (await inMap(n, "10.244.242.0/24")), { what: `${n.host.name} after compaction`, timeoutMs: 10_000 });
    }
    assert.deepEqual(await tc.allPairs(), []);
  });
});
