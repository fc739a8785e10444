/**
 * `twill status`'s drift rules without a kernel: map entries (bpf) and
 * flannel's kernel entries compared with the peers the leases want.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { bpfActual, comparePeers, kernelActual, type KernelTables } from "../../src/status.js";
import { parseIP, parsePrefix } from "../../src/net/ip.js";
import type { Peer } from "../../src/dataplane/types.js";

const P = (s: string) => parsePrefix(s);
const peer = (subnet: string, ip: string, mac: string, direct = false): Peer => ({ subnet: P(subnet), publicIP: parseIP(ip), vtepMAC: mac, vni: 1, direct });
const want = [
  { peer: peer("10.244.2.0/24", "192.168.50.12", "02:00:00:00:00:02"), lease: "10.244.2.0-24" },
  { peer: peer("10.244.3.0/24", "192.168.50.13", "02:00:00:00:00:03"), lease: "10.244.3.0-24" },
  { peer: peer("10.244.4.0/24", "192.168.50.14", "02:00:00:00:00:04"), lease: "10.244.4.0-24" },
];

test("bpf: ok, changed (MAC, VNI), missing, stale; own LOCAL and CLUSTER entries checked", () => {
  const entries = [
    { prefix: "10.244.1.0/24", kind: "local", vni: 0, id: 0 },
    { prefix: "10.244.2.0/24", kind: "vxlan", remote: "192.168.50.12", vtepMAC: "02:00:00:00:00:02", vni: 1, id: 1 },
    { prefix: "10.244.3.0/24", kind: "vxlan", remote: "192.168.50.13", vtepMAC: "02:00:00:00:00:99", vni: 2, id: 2 },
    { prefix: "10.244.9.0/24", kind: "direct", remote: "192.168.50.19", vni: 0, id: 3 },
  ];
  const b = bpfActual(entries, [P("10.244.1.0/24")], [P("10.244.0.0/16")]);
  assert.deepEqual(b.drift.map((d) => [d.kind, d.subject]), [["missing", "10.244.0.0/16"]], "no CLUSTER entry");
  const c = comparePeers(want, b.actual, "twill_peers");
  assert.deepEqual(c.rows.map((r) => [r.subnet, r.state]), [
    ["10.244.2.0/24", "ok"], ["10.244.3.0/24", "changed"], ["10.244.4.0/24", "missing"], ["10.244.9.0/24", "stale"],
  ]);
  const changed = c.rows.find((r) => r.state === "changed")!;
  assert.equal(changed.vtepMAC, "02:00:00:00:00:99", "a changed row shows what is programmed");
  assert.match(changed.detail!, /VTEP MAC is 02:00:00:00:00:99, the lease says 02:00:00:00:00:03; VNI is 2, the lease says 1/);
  assert.deepEqual(c.drift.map((d) => d.kind).sort(), ["changed", "missing", "stale"]);
});

test("kernel: flannel's three entries per peer; wrong FDB destination, missing route, stale route, neighbour and FDB entry", () => {
  const dev = "flannel.1";
  const route = (dst: string, gw: string, d = dev) => ({ dst: P(dst), gateway: parseIP(gw), dev: d, flags: d === dev ? ["onlink"] : [] });
  const t: KernelTables = {
    family: 4, device: dev, underlay: "eth0", network: P("10.244.0.0/16"), own: P("10.244.1.0/24"),
    routes: [
      route("10.244.2.0/24", "10.244.2.0"), route("10.244.3.0/24", "10.244.3.0"), route("10.244.8.0/24", "10.244.8.0"),
      { dst: P("10.244.1.0/24"), dev, flags: [], protocol: "kernel" },
    ],
    underlayRoutes: [{ dst: P("192.168.50.0/24"), dev: "eth0", flags: [], protocol: "kernel" }],
    neighs: [
      { dst: parseIP("10.244.2.0"), lladdr: "02:00:00:00:00:02", state: ["PERMANENT"] },
      { dst: parseIP("10.244.3.0"), lladdr: "02:00:00:00:00:03", state: ["PERMANENT"] },
      { dst: parseIP("10.244.4.0"), lladdr: "02:00:00:00:00:04", state: ["PERMANENT"] },
      { dst: parseIP("10.244.7.0"), lladdr: "02:00:00:00:00:07", state: ["PERMANENT"] },
    ],
    fdb: [
      { mac: "02:00:00:00:00:02", dst: parseIP("192.168.50.12"), flags: ["self"], state: "permanent" },
      { mac: "02:00:00:00:00:03", dst: parseIP("192.168.50.99"), flags: ["self"], state: "permanent" },
      { mac: "02:00:00:00:00:04", dst: parseIP("192.168.50.14"), flags: ["self"], state: "permanent" },
      { mac: "02:00:00:00:00:77", dst: parseIP("192.168.50.77"), flags: ["self"], state: "permanent" },
      { mac: "00:00:00:00:00:00", dst: parseIP("192.168.50.1"), flags: ["self"], state: "permanent" },
    ],
  };
  const k = kernelActual(t, want.map((w) => w.peer));
  const c = comparePeers(want, k.actual, dev);
  assert.deepEqual(c.rows.map((r) => [r.subnet, r.state, r.publicIP ?? "-"]), [
    ["10.244.2.0/24", "ok", "192.168.50.12"],
    ["10.244.3.0/24", "changed", "192.168.50.99"],
    ["10.244.4.0/24", "changed", "192.168.50.14"],
    ["10.244.8.0/24", "stale", "-"],
  ]);
  assert.match(c.rows[1]!.detail!, /public IP is 192\.168\.50\.99, the lease says 192\.168\.50\.13/);
  assert.match(c.rows[2]!.detail!, /no route 10\.244\.4\.0\/24 dev flannel\.1/);
  assert.deepEqual(k.drift.map((d) => [d.kind, d.subject]), [["stale", "10.244.7.0/24"], ["stale", "fdb 02:00:00:00:00:77"]]);
});
