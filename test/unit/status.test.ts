/**
 * The drift rules without a kernel: the diff the daemon's reconcile and
 * `twill status` share (dataplane/bpfdiff.ts, dataplane/kerneldiff.ts), and
 * status's rows built from that drift.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { peerRows } from "../../src/status.js";
import { bpfImage, diffBpf, type Dump } from "../../src/dataplane/bpfdiff.js";
import { BpfImage } from "../../src/dataplane/bpfimage.js";
import { diffKernel, type KernelTables } from "../../src/dataplane/kerneldiff.js";
import { driftCounts, driftKeys } from "../../src/dataplane/drift.js";
import { encodeEpKey, encodeLpmKey, encodePeer, encodeRemote, PeerKind } from "../../src/bpf/layout.js";
import { parseIP, parsePrefix } from "../../src/net/ip.js";
import type { Peer } from "../../src/dataplane/types.js";

const P = (s: string) => parsePrefix(s);
const peer = (subnet: string, ip: string, mac: string, direct = false): Peer => ({ subnet: P(subnet), publicIP: parseIP(ip), vtepMAC: mac, vni: 1, direct });
const want = [
  { peer: peer("10.244.2.0/24", "192.168.50.12", "02:00:00:00:00:02"), lease: "10.244.2.0-24" },
  { peer: peer("10.244.3.0/24", "192.168.50.13", "02:00:00:00:00:03"), lease: "10.244.3.0-24" },
  { peer: peer("10.244.4.0/24", "192.168.50.14", "02:00:00:00:00:04"), lease: "10.244.4.0-24" },
];
/** Entries as a map dump: key then value, back to back. */
const dump = (entries: Array<[Buffer, Buffer]>): Dump => ({ bytes: Buffer.concat(entries.flat()), count: entries.length });
const entry = (subnet: string, kind: PeerKind, remote?: string, mac?: string, vni = 1, id = 1): [Buffer, Buffer] =>
  [encodeLpmKey(P(subnet)), encodePeer({ kind, ...(remote ? { remote: parseIP(remote) } : {}), ...(mac ? { vtepMAC: mac } : {}), vni, id })];

test("bpf: ok, changed (MAC, VNI), missing, stale; LOCAL and CLUSTER entries; remotes", async () => {
  const image = await bpfImage({ peers: want.map((w) => w.peer), own: [P("10.244.1.0/24")], networks: [P("10.244.0.0/16")] });
  const seen = {
    peers: dump([
      entry("10.244.1.0/24", PeerKind.Local, undefined, undefined, 0, 0),
      entry("10.244.2.0/24", PeerKind.Vxlan, "192.168.50.12", "02:00:00:00:00:02", 1, 7),
      entry("10.244.3.0/24", PeerKind.Vxlan, "192.168.50.13", "02:00:00:00:00:99", 2, 2),
      entry("10.244.9.0/24", PeerKind.Direct, "192.168.50.19", undefined, 0, 3),
    ]),
    remotes: dump(["192.168.50.12", "192.168.50.13", "192.168.50.99"].map((ip): [Buffer, Buffer] => [encodeEpKey(parseIP(ip)), Buffer.alloc(8)])),
  };
  const r = await diffBpf(image, seen);
  assert.deepEqual(driftKeys(r.drift), [
    "changed 10.244.3.0/24", "missing 10.244.0.0/16", "missing 10.244.4.0/24", "stale 10.244.9.0/24", "stale 192.168.50.99",
  ], "the remote of the missing peer is its drift, not one more");
  assert.match(r.drift.find((d) => d.kind === "changed")!.detail, /VTEP MAC is 02:00:00:00:00:99, the lease says 02:00:00:00:00:03; VNI is 2, the lease says 1/);
  // The repair: a peer whose only difference is its id is rewritten without being drift.
  const written = r.writeSlots.map((s) => image.peer[s]);
  assert.deepEqual(written.filter((p) => p).map((p) => p!.subnet.ip.bytes[2]).sort(), [2, 3, 4]);
  assert.deepEqual(r.writeSlots.filter((s) => !image.peer[s]).map((s) => image.kind[s]), [PeerKind.Cluster]);
  assert.deepEqual(r.deleteAt, [3 * (24 + 32)], "the fourth entry of the dump");
  assert.equal(r.writeRemotes.length, 1, "but it is repaired");
  assert.equal(r.deleteRemotesAt.length, 1);
  assert.deepEqual(driftCounts(r.drift), { added: 2, updated: 1, removed: 2 });

  const rows = peerRows(want, r.drift, (s) => (s === "10.244.3.0/24" ? { path: "vxlan", publicIP: "192.168.50.13", vtepMAC: "02:00:00:00:00:99" } : undefined));
  assert.deepEqual(rows.map((x) => [x.subnet, x.state]), [
    ["10.244.2.0/24", "ok"], ["10.244.3.0/24", "changed"], ["10.244.4.0/24", "missing"], ["10.244.9.0/24", "stale"],
  ]);
  assert.equal(rows[1]!.vtepMAC, "02:00:00:00:00:99", "a changed row shows what is programmed");
});

test("bpf: with the exact bytes known (the daemon's shadow) an equal entry is not decoded, nothing to do; slices yield", async () => {
  let pauses = 0;
  const pause = async () => { pauses++; };
  const image = new BpfImage();
  await image.sync({ peers: want.map((w) => w.peer), own: [], networks: [] }, { exact: true, pause });
  const value = (i: number) => image.vals.subarray(i * 32, (i + 1) * 32);
  const seen = {
    peers: dump(want.map((w) => [encodeLpmKey(w.peer.subnet), value(image.slotOf(encodeLpmKey(w.peer.subnet), 0))] as [Buffer, Buffer])),
    remotes: dump(want.map((w) => [encodeEpKey(w.peer.publicIP), encodeRemote(image.idAt(image.remoteFirst(image.remoteOfKey(encodeEpKey(w.peer.publicIP), 0))))] as [Buffer, Buffer])),
  };
  const r = await diffBpf(image, seen, pause);
  assert.deepEqual([r.drift, r.writeSlots, r.deleteAt, r.writeRemotes], [[], [], [], []]);
  assert.equal(pauses, 0, "three entries fit in one slice");
  // A remote whose value names another subnet's id is rewritten, silently.
  const other = { ...seen, remotes: dump(want.map((w) => [encodeEpKey(w.peer.publicIP), encodeRemote(99)] as [Buffer, Buffer])) };
  const r2 = await diffBpf(image, other);
  assert.deepEqual([r2.drift.length, r2.writeRemotes.length], [0, 3]);
});

test("bpf image: ids stay with their subnet, a new key takes the next one, the version moves only on change; adoption keeps ids", async () => {
  const image = new BpfImage();
  const peers = want.map((w) => w.peer);
  await image.sync({ peers, own: [P("10.244.1.0/24")], networks: [P("10.244.0.0/16")] }, { exact: true });
  const slotOf = (p: Peer) => image.slotOf(encodeLpmKey(p.subnet), 0);
  const ids = peers.map((p) => image.idAt(slotOf(p)));
  assert.deepEqual([...new Set(ids)].length, 3, "three distinct ids");
  assert.ok(ids.every((id) => id > 0));
  const v = image.version;
  await image.sync({ peers: [...peers], own: [P("10.244.1.0/24")], networks: [P("10.244.0.0/16")] }, { exact: true });
  assert.equal(image.version, v, "the same peers again change nothing");
  // A changed lease for the same subnet keeps the id; a removed one frees its slot and its address.
  const moved = { ...peers[0]!, vtepMAC: "02:00:00:00:00:aa" };
  await image.sync({ peers: [moved, peers[1]!], own: [P("10.244.1.0/24")], networks: [P("10.244.0.0/16")] }, { exact: true });
  assert.notEqual(image.version, v);
  assert.equal(image.idAt(slotOf(moved)), ids[0]);
  assert.equal(image.size, 4);
  assert.equal(image.remoteCount, 2);
  // Adopting a map's dump keeps the ids; new keys continue above them.
  const live = Array.from({ length: image.top }, (_, s) => s).filter((s) => image.live[s]);
  const bytes = Buffer.concat(live.flatMap((s) => [image.keys.subarray(s * 24, (s + 1) * 24), image.vals.subarray(s * 32, (s + 1) * 32)]));
  const again = new BpfImage();
  again.adopt(bytes, image.size);
  await again.sync({ peers: [moved, peers[1]!, peers[2]!], own: [P("10.244.1.0/24")], networks: [P("10.244.0.0/16")] }, { exact: true });
  const slot2 = (p: Peer) => again.slotOf(encodeLpmKey(p.subnet), 0);
  assert.equal(again.idAt(slot2(moved)), ids[0]);
  assert.equal(again.idAt(slot2(peers[1]!)), ids[1]);
  assert.ok(again.idAt(slot2(peers[2]!)) > Math.max(ids[0]!, ids[1]!), "a new key takes an id above every adopted one");
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
  const r = diffKernel(t, want.map((w) => w.peer));
  assert.deepEqual(driftKeys(r.drift), [
    "changed 10.244.3.0/24", "changed 10.244.4.0/24", "stale 10.244.7.0/24", "stale 10.244.8.0/24", "stale fdb 02:00:00:00:00:77",
  ], "the all-zeros FDB entry is not flannel's: neither drift nor deleted");
  assert.match(r.drift.find((d) => d.subject === "10.244.3.0/24")!.detail, /FDB entry 02:00:00:00:00:03 goes to 192\.168\.50\.99, the lease says PublicIP 192\.168\.50\.13/);
  assert.match(r.drift.find((d) => d.subject === "10.244.4.0/24")!.detail, /no route 10\.244\.4\.0\/24 via 10\.244\.4\.0 dev flannel\.1 onlink/);
  // The repair: only the wrong entries are re-applied; stale routes go first, other leftovers last.
  assert.deepEqual(r.work.map((w) => [w.peer.subnet.ip.bytes[2], w.entries.map((e) => e.op.kind), w.fresh]), [[3, ["fdb"], false], [4, ["route"], false]]);
  assert.deepEqual(r.before.map((o) => o.kind), ["route"]);
  assert.deepEqual(r.after.map((o) => o.kind).sort(), ["fdb", "fdb", "neigh"]);
  assert.ok(r.after.every((o) => o.action === "del") && !r.after.some((o) => o.kind === "fdb" && o.mac === "00:00:00:00:00:00"));

  const rows = peerRows(want, r.drift, () => undefined);
  assert.deepEqual(rows.map((x) => [x.subnet, x.state]), [
    ["10.244.2.0/24", "ok"], ["10.244.3.0/24", "changed"], ["10.244.4.0/24", "changed"], ["10.244.7.0/24", "stale"], ["10.244.8.0/24", "stale"],
  ]);
});

test("kernel: a peer with none of its entries is missing and fresh; a direct peer is one route via its PublicIP", () => {
  const t: KernelTables = {
    family: 4, device: "flannel.1", underlay: "eth0", network: P("10.244.0.0/16"), own: P("10.244.1.0/24"),
    routes: [], underlayRoutes: [{ dst: P("10.244.5.0/24"), gateway: parseIP("192.168.50.15"), dev: "eth0", flags: [] }], neighs: [], fdb: [],
  };
  const r = diffKernel(t, [peer("10.244.2.0/24", "192.168.50.12", "02:00:00:00:00:02"), peer("10.244.5.0/24", "192.168.50.15", "02:00:00:00:00:05", true)]);
  assert.deepEqual(driftKeys(r.drift), ["missing 10.244.2.0/24"]);
  assert.deepEqual(r.work.map((w) => [w.entries.length, w.fresh]), [[3, true]]);
});
